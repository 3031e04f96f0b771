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
from mxr.model.backbone import build_backbone
from mxr.model.heads import (
    AgnosticMaskPredictor,
    ClassMaskPredictor,
    MaskPredictor,
    TransferMaskPredictor,
)
from mxr.model.roi_heads import MaskXRoIHeads
from mxr.model.rpn import Float32RegionProposalNetwork
from mxr.model.transfer import randn_embedding, transfer_input_dim, uses_embedding

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def build_mask_predictor(cfg: ModelConfig, embedding_dim: int = 0) -> MaskPredictor:
    """The mask predictor named by ``cfg.mask_head`` (``cfg`` resolved: head sizes filled in);
    ``embedding_dim`` is the class embedding's width ``E`` when τ reads one."""
    common = dict(mlp_fusion=cfg.mlp_fusion, mlp_form=cfg.mlp_form, mlp_channels=cfg.mlp_channels)
    c = cfg.mask_head_channels
    if cfg.mask_head == "agnostic":
        return AgnosticMaskPredictor(c, **common)
    if cfg.mask_head == "class":
        return ClassMaskPredictor(c, cfg.num_classes, **common)
    return TransferMaskPredictor(
        c,
        transfer_input_dim(cfg.transfer_input, cfg.box_fc_dim, embedding_dim),
        transfer_layers=cfg.transfer_layers,
        transfer_activation=cfg.transfer_activation,
        transfer_zero_init=cfg.transfer_zero_init,
        **common,
    )


def _box_predictor(cfg: ModelConfig) -> FastRCNNPredictor:
    """torchvision's box predictor; ``box_predictor_init="detectron"`` draws its weights as Detectron
    (and the paper's code) do: N(0, 0.01) for the classifier, N(0, 0.001) for the box regressor, zero
    biases. torchvision keeps nn.Linear's default (uniform, about 0.036 std for D=256), and most of
    that random part is never trained away, so it would dominate the w_det that τ reads."""
    predictor = FastRCNNPredictor(cfg.box_fc_dim, cfg.num_classes)
    if cfg.box_predictor_init == "detectron":
        nn.init.normal_(predictor.cls_score.weight, std=0.01)
        nn.init.normal_(predictor.bbox_pred.weight, std=0.001)
        nn.init.zeros_(predictor.cls_score.bias)
        nn.init.zeros_(predictor.bbox_pred.bias)
    return predictor


#: ``build_model(cfg, backbone_weights=FROM_CHECKPOINT)``: the backbone layout ``cfg`` names
#: (frozen BatchNorm and stages when ``cfg.backbone_weights`` is a file), without reading that file:
#: every weight is about to be loaded from a checkpoint, which then evaluates on any machine.
FROM_CHECKPOINT = "<backbone weights from the checkpoint>"


def _parts(cfg: ModelConfig, backbone_weights: str | Path | None):
    """Backbone, RPN (anchors, decoding and filtering in float32 under autocast), transform and the
    box/mask modules shared by Mask^X and stock Mask R-CNN."""
    c = cfg.fpn_channels
    load = backbone_weights != FROM_CHECKPOINT
    weights = backbone_weights if load else cfg.backbone_weights
    backbone = build_backbone(cfg.backbone, c, weights, load=load)
    levels = list(backbone.body.return_layers.values())
    n_maps = len(levels) + 1  # + "pool"
    if len(sizes := cfg.anchor_sizes) != n_maps:
        raise ValueError(
            f"model.anchor_sizes={sizes!r} is not valid for backbone {cfg.backbone!r}; "
            f"expected {n_maps} sizes (one per FPN level)"
        )
    anchors = AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * n_maps)
    rpn = Float32RegionProposalNetwork(
        anchors,
        RPNHead(c, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=cfg.rpn_batch_size_per_image,
        positive_fraction=0.5,
        pre_nms_top_n=dict(
            training=cfg.rpn_pre_nms_top_n_train, testing=cfg.rpn_pre_nms_top_n_test
        ),
        post_nms_top_n=dict(
            training=cfg.rpn_post_nms_top_n_train, testing=cfg.rpn_post_nms_top_n_test
        ),
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
    box_parts = dict(
        box_roi_pool=MultiScaleRoIAlign(levels, 7, 2),
        box_head=box_head,
        box_predictor=_box_predictor(cfg),
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
    """The ``(C, E)`` class embedding τ reads: ``given`` (``embed``, ``cls+embed``; loaded from
    ``model.class_embedding`` by :func:`mxr.engine.class_embedding_for`), drawn from
    ``cfg.init_seed`` (``randn``), or ``None`` when τ reads detection weights only."""
    if cfg.mask_head != "transfer" or not uses_embedding(cfg.transfer_input):
        return None
    if cfg.transfer_input == "randn":
        return randn_embedding(cfg.num_classes, cfg.randn_dim, cfg.init_seed)
    if given is None:
        raise ValueError(
            f"model.transfer_input={cfg.transfer_input!r} needs the class embedding tensor "
            f"(C, E); load it with mxr.engine.class_embedding_for (file: {cfg.class_embedding})"
        )
    if given.ndim != 2 or given.shape[0] != cfg.num_classes:
        raise ValueError(
            f"class embedding of shape {tuple(given.shape)} is not valid; expected "
            f"({cfg.num_classes}, E): one row per label, background included"
        )
    return given


class MaskXRCNN(MaskRCNN):
    """Mask R-CNN (torchvision's inputs and outputs) whose mask branch is class-agnostic,
    class-specific or weight transfer; build it with :func:`build_model`. ``self.config`` keeps the
    resolved :class:`ModelConfig`."""

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

    @torch.no_grad()
    def masks_for_boxes(
        self, images: list[Tensor], boxes: list[Tensor], labels: list[Tensor]
    ) -> list[Tensor]:
        """Mask probabilities for given boxes and classes (the mask branch alone: the detector's
        own boxes and classes bypassed), pasted into the images: per ``(3, H, W)`` image in [0, 1],
        its ``(N, 4)`` XYXY boxes in pixels and ``(N,)`` classes -> ``(N, H, W)`` in [0, 1]."""
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
        """``(self(images), self.masks_for_boxes(images, boxes, labels))`` with one backbone pass
        (eval mode); the detections are ``None`` when ``detect`` is false."""
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
        probs = self.roi_heads.masks_for_boxes(
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
    """Build the model a :class:`ModelConfig` describes; never downloads anything. Construction is
    seeded by ``cfg.init_seed`` and leaves the global RNG untouched. ``backbone_weights`` (or
    ``cfg.backbone_weights``) names a local state dict for the backbone.
    ``class_embedding`` ``(C, E)`` is τ's fixed input for ``transfer_input="embed"`` /
    ``"cls+embed"`` (``"randn"`` draws its own from ``cfg.init_seed``); it becomes a buffer.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)
        return MaskXRCNN(cfg, backbone_weights, class_embedding)


def build_stock_maskrcnn(cfg: ModelConfig) -> MaskRCNN:
    """torchvision's own ``MaskRCNN`` with the same backbone, sizes and heads (a class-specific mask
    predictor over all classes): the reference for benchmarks and the walkthrough notebook."""
    cfg = _check_ready(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)
        backbone, rpn, _, parts = _parts(cfg, cfg.backbone_weights)
        modules = ("box_roi_pool", "box_head", "box_predictor", "mask_roi_pool", "mask_head")
        # these ModelConfig fields are MaskRCNN's keyword arguments of the same names
        same = ("min_size", "max_size", "rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test")
        same += ("rpn_post_nms_top_n_train", "rpn_post_nms_top_n_test", "rpn_batch_size_per_image")
        same += ("box_score_thresh", "box_detections_per_img", "box_batch_size_per_image")
        return MaskRCNN(
            backbone,
            num_classes=None,
            rpn_anchor_generator=rpn.anchor_generator,
            rpn_head=rpn.head,
            mask_predictor=MaskRCNNPredictor(
                cfg.mask_head_channels, cfg.mask_head_channels, cfg.num_classes
            ),
            image_mean=list(IMAGE_MEAN),
            image_std=list(IMAGE_STD),
            **{k: parts[k] for k in modules},
            **{k: getattr(cfg, k) for k in same},
        )


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
