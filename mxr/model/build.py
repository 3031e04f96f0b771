"""``build_model(cfg)``: torchvision's Mask R-CNN with FPN, with the Mask^X R-CNN mask branch."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import (
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    TwoMLPHead,
)
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign

from mxr.config import ModelConfig
from mxr.errors import UserInputError
from mxr.model.backbone import build_backbone
from mxr.model.heads import build_mask_predictor
from mxr.model.roi_heads import MaskXRoIHeads
from mxr.model.rpn import Float32RegionProposalNetwork
from mxr.model.transfer import TRANSFER_INPUTS, randn_embedding

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
#: ``build_model(cfg, backbone_weights=FROM_CHECKPOINT)``: the backbone layout ``cfg`` names, without
#: reading ``cfg.backbone_weights``: every weight is about to be loaded from a checkpoint.
FROM_CHECKPOINT = "<backbone weights from the checkpoint>"


def _parts(cfg: ModelConfig, backbone_weights: str | Path | None):
    """Backbone, RPN (box arithmetic in float32), transform and the box/mask modules shared by
    Mask^X and stock Mask R-CNN, created in this order (it fixes the seeded weights)."""
    c = cfg.fpn_channels
    load = backbone_weights != FROM_CHECKPOINT
    weights = backbone_weights if load else cfg.backbone_weights
    backbone = build_backbone(cfg.backbone, c, weights, load=load)
    levels = list(backbone.body.return_layers.values())
    n_maps = len(levels) + 1  # + "pool"
    if len(sizes := cfg.anchor_sizes) != n_maps:
        raise UserInputError(
            f"model.anchor_sizes={sizes!r} is not valid for backbone {cfg.backbone!r}; "
            f"expected {n_maps} sizes (one per FPN level)"
        )
    anchors = AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * n_maps)
    pre = dict(training=cfg.rpn_pre_nms_top_n_train, testing=cfg.rpn_pre_nms_top_n_test)
    post = dict(training=cfg.rpn_post_nms_top_n_train, testing=cfg.rpn_post_nms_top_n_test)
    rpn = Float32RegionProposalNetwork(
        anchors,
        RPNHead(c, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=cfg.rpn_batch_size_per_image,
        positive_fraction=0.5,
        pre_nms_top_n=pre,
        post_nms_top_n=post,
        nms_thresh=0.7,
    )
    mean, std = list(IMAGE_MEAN), list(IMAGE_STD)
    transform = GeneralizedRCNNTransform(cfg.min_size, cfg.max_size, mean, std)
    if cfg.box_head == "4conv1fc":  # torchvision's v2 recipe: 4 conv+BN layers, then one fc
        box_head = FastRCNNConvFCHead(
            (c, 7, 7), [c] * 4, [cfg.box_fc_dim], norm_layer=nn.BatchNorm2d
        )
    else:  # the original Mask R-CNN head: two fc layers on the flattened 7x7 RoI features
        box_head = TwoMLPHead(c * 7 * 7, cfg.box_fc_dim)
    # box_predictor_init="detectron" draws as Detectron (and the paper's code) do; torchvision's
    # default (uniform, ~0.036 std at D=256) is mostly never trained away and would dominate w_det
    box_predictor = FastRCNNPredictor(cfg.box_fc_dim, cfg.num_classes)
    if cfg.box_predictor_init == "detectron":
        for layer, sigma in ((box_predictor.cls_score, 0.01), (box_predictor.bbox_pred, 0.001)):
            nn.init.normal_(layer.weight, std=sigma)
            nn.init.zeros_(layer.bias)
    box_parts = dict(
        box_roi_pool=MultiScaleRoIAlign(levels, 7, 2),
        box_head=box_head,
        box_predictor=box_predictor,
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=cfg.box_batch_size_per_image,
        positive_fraction=cfg.box_positive_fraction,
        bbox_reg_weights=None,
        score_thresh=cfg.box_score_thresh,
        nms_thresh=0.5,
        detections_per_img=cfg.box_detections_per_img,
        mask_roi_pool=MultiScaleRoIAlign(levels, 14, 2),
        mask_head=MaskRCNNHeads(c, [cfg.mask_head_channels] * cfg.mask_head_convs, 1),
    )
    return backbone, rpn, transform, box_parts


def _check_ready(cfg: ModelConfig) -> ModelConfig:
    if cfg.num_classes is None or cfg.mask_classes is None:
        raise ValueError(
            "model.num_classes and model.mask_classes must be set before building "
            f"(got num_classes={cfg.num_classes!r}, mask_classes={cfg.mask_classes!r}); "
            "the engine fills them from the dataset"
        )
    return cfg.resolved()


def _class_embedding(cfg: ModelConfig, given: Tensor | None) -> Tensor | None:
    """The ``(C, E)`` embedding τ reads, by where its transfer input's embedding comes from:
    ``given`` (a file: ``embed``, ``cls+embed``), drawn from ``cfg.init_seed`` (``randn``), or
    ``None`` (no embedding)."""
    source = TRANSFER_INPUTS[cfg.transfer_input].embedding
    if cfg.mask_head != "transfer" or source is None:
        return None
    if source == "randn":
        return randn_embedding(cfg.num_classes, cfg.randn_dim, cfg.init_seed)
    if given is None:
        raise ValueError(
            f"model.transfer_input={cfg.transfer_input!r} needs the class embedding tensor "
            f"(C, E); load it with mxr.engine.data.class_embedding_for (file: {cfg.class_embedding})"
        )
    if given.ndim != 2 or given.shape[0] != cfg.num_classes:
        raise ValueError(
            f"class embedding of shape {tuple(given.shape)} is not valid; expected "
            f"({cfg.num_classes}, E): one row per label, background included"
        )
    return given


class MaskXRCNN(MaskRCNN):
    """Mask R-CNN (torchvision's inputs and outputs) with a class-agnostic, class-specific or
    weight-transfer mask branch; ``self.config`` keeps the resolved :class:`ModelConfig`."""

    def __init__(
        self,
        cfg: ModelConfig,
        backbone_weights: str | Path | None = None,
        class_embedding: Tensor | None = None,
    ) -> None:
        cfg = _check_ready(cfg)
        embedding = _class_embedding(cfg, class_embedding)
        backbone, rpn, transform, parts = _parts(cfg, backbone_weights or cfg.backbone_weights)
        dim = 0 if embedding is None else embedding.shape[1]  # E
        roi_heads = MaskXRoIHeads(
            mask_predictor=build_mask_predictor(cfg, dim),
            mask_classes=cfg.mask_classes,
            transfer_input=cfg.transfer_input,
            stop_grad=cfg.stop_grad,
            class_embedding=embedding,
            **parts,
        )
        GeneralizedRCNN.__init__(self, backbone, rpn, roi_heads, transform)
        self.config = cfg
        self.detector_frozen = False

    def detector_modules(self) -> dict[str, nn.Module]:
        """The detector: ``{state-dict prefix: module}`` for backbone + FPN, RPN, box head and box
        predictor (everything but the mask branch and the parameter-free RoI poolers)."""
        return {
            "backbone.": self.backbone,
            "rpn.": self.rpn,
            "roi_heads.box_head.": self.roi_heads.box_head,
            "roi_heads.box_predictor.": self.roi_heads.box_predictor,
        }

    def freeze_detector(self) -> None:
        """Stage 2 of the paper's protocol: the detector's weights stop learning (``requires_grad``
        off, so an optimizer built afterwards leaves them out), its BatchNorm layers stay in eval
        mode, and a training forward runs it without an autograd graph and returns ``loss_mask``
        alone. Inference is unchanged."""
        for module in self.detector_modules().values():
            module.requires_grad_(False)
        self.detector_frozen = True
        self.roi_heads.mask_only = True
        self.train(self.training)

    def train(self, mode: bool = True) -> MaskXRCNN:
        """``nn.Module.train``; a frozen detector's backbone and box head keep eval mode (their
        BatchNorm statistics are the detector's). The RPN keeps training mode: it samples the
        training proposals the mask branch learns on."""
        super().train(mode)
        if mode and self.detector_frozen:
            for prefix, module in self.detector_modules().items():
                if prefix != "rpn.":
                    module.eval()
        return self

    def forward(self, images, targets=None):
        """torchvision's contract; with a frozen detector in training, the detector (transform,
        backbone, RPN) runs under ``no_grad`` and only the mask loss is returned."""
        if not (self.training and self.detector_frozen):
            return super().forward(images, targets)
        if targets is None:
            raise ValueError("targets are required in training mode")
        with torch.no_grad():
            image_list, targets = self.transform(images, targets)
            features = self.backbone(image_list.tensors)
            proposals, _ = self.rpn(image_list, features, targets)
        _, losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
        return losses

    @torch.no_grad()
    def masks_for_boxes(
        self, images: list[Tensor], boxes: list[Tensor], labels: list[Tensor]
    ) -> list[Tensor]:
        """The mask branch alone on given boxes and classes: per ``(3, H, W)`` image in [0, 1], its
        ``(N, 4)`` XYXY pixel boxes and ``(N,)`` classes -> ``(N, H, W)`` probabilities."""
        return self.detect_and_mask_boxes(images, boxes, labels, detect=False)[1]

    @torch.no_grad()
    def detect_and_mask_boxes(
        self,
        images: list[Tensor],
        boxes: list[Tensor],
        labels: list[Tensor],
        *,
        detect: bool = True,
    ) -> tuple[list[dict[str, Tensor]] | None, list[Tensor]]:
        """``(self(images) or None, self.masks_for_boxes(...))`` with one backbone pass (eval)."""
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels, strict=True)]
        image_list, targets_t = self.transform(list(images), targets)
        features = self.backbone(image_list.tensors)
        detections = None
        if detect:
            proposals, _ = self.rpn(image_list, features)
            detections, _ = self.roi_heads(features, proposals, image_list.image_sizes)
            detections = self.transform.postprocess(detections, image_list.image_sizes, sizes)
        classes = torch.cat(list(labels)) if len(labels) else torch.zeros(0, dtype=torch.int64)
        probs = self.roi_heads.roi_mask_probs(
            features, [t["boxes"] for t in targets_t], classes, image_list.image_sizes
        )
        per_image = zip(
            probs[:, None].float().split([len(b) for b in boxes]), boxes, sizes, strict=True
        )
        return detections, [
            paste_masks_in_image(p, b.float(), size, padding=1)[:, 0]
            if len(b)
            else torch.zeros((0, *size), device=p.device)
            for p, b, size in per_image
        ]


def build_model(
    cfg: ModelConfig,
    backbone_weights: str | Path | None = None,
    *,
    class_embedding: Tensor | None = None,
) -> MaskXRCNN:
    """The model ``cfg`` describes, seeded by ``cfg.init_seed`` (the global RNG is untouched); never
    downloads. ``backbone_weights`` (default ``cfg.backbone_weights``): a local backbone state dict;
    ``class_embedding`` ``(C, E)``: the embedding a transfer input that reads a file (``embed``,
    ``cls+embed``) holds, kept as a buffer."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)
        return MaskXRCNN(cfg, backbone_weights, class_embedding)


#: ModelConfig fields that are MaskRCNN keyword arguments of the same name and meaning, passed as
#: they are to the stock model (a test checks that no other shared name is left out).
STOCK_SETTINGS = (
    "min_size",
    "max_size",
    "rpn_pre_nms_top_n_train",
    "rpn_pre_nms_top_n_test",
    "rpn_post_nms_top_n_train",
    "rpn_post_nms_top_n_test",
    "rpn_batch_size_per_image",
    "box_score_thresh",
    "box_detections_per_img",
    "box_batch_size_per_image",
    "box_positive_fraction",
)


def build_stock_maskrcnn(cfg: ModelConfig) -> MaskRCNN:
    """torchvision's own ``MaskRCNN`` with the same backbone, sizes and heads (a class-specific mask
    predictor over all classes): the reference for benchmarks and the walkthrough notebook."""
    cfg = _check_ready(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)
        backbone, rpn, _, parts = _parts(cfg, cfg.backbone_weights)
        ch = cfg.mask_head_channels
        modules = ("box_roi_pool", "box_head", "box_predictor", "mask_roi_pool", "mask_head")
        return MaskRCNN(
            backbone,
            num_classes=None,
            rpn_anchor_generator=rpn.anchor_generator,
            rpn_head=rpn.head,
            mask_predictor=MaskRCNNPredictor(ch, ch, cfg.num_classes),
            image_mean=list(IMAGE_MEAN),
            image_std=list(IMAGE_STD),
            **{k: parts[k] for k in modules},
            **{k: getattr(cfg, k) for k in STOCK_SETTINGS},
        )


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
