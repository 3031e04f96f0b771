"""Behaviour of the Mask^X R-CNN model (issue: the model, every variant of the paper)."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch
from torchvision.models import resnet18
from torchvision.models.detection import MaskRCNN

from mxr.config import ModelConfig
from mxr.model.build import build_model, build_stock_maskrcnn

SIZE = 64
A = (1, 2, 3, 4)


def cfg(**kw) -> ModelConfig:
    base = dict(
        num_classes=9, mask_classes=A, min_size=SIZE, max_size=SIZE, box_batch_size_per_image=64
    )
    base.update(kw)
    return ModelConfig(**base)


def make_batch(labels_per_image=((1, 6), (2, 7)), mask_form="all", seed=0):
    """Images with square objects; masks for every instance ("all"), for A only ("A") or flagged."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for labels in labels_per_image:
        img = torch.rand(3, SIZE, SIZE, generator=g)
        boxes, masks = [], []
        for k, _ in enumerate(labels):
            x0, y0 = 4 + 28 * (k % 2), 6 + 24 * (k // 2)
            boxes.append([x0, y0, x0 + 24, y0 + 22])
            m = torch.zeros(SIZE, SIZE, dtype=torch.uint8)
            m[y0 + 2 : y0 + 20, x0 + 3 : x0 + 21] = 1
            masks.append(m)
            img[:, y0 : y0 + 22, x0 : x0 + 24] *= 0.3
        lab = torch.tensor(labels, dtype=torch.int64)
        masks = torch.stack(masks)
        in_a = torch.isin(lab, torch.tensor(A))
        t = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": lab}
        if mask_form == "all":
            t["masks"] = masks
        elif mask_form == "A":
            t["masks"] = masks[in_a]
        elif mask_form == "flag":
            t["masks"], t["has_mask"] = masks[in_a], in_a
        images.append(img)
        targets.append(t)
    return images, targets


def losses_of(model, images, targets, seed=0):
    torch.manual_seed(seed)
    model.train()
    return model(images, targets)


VARIANTS = [
    dict(mask_head="agnostic", mlp_fusion=False),
    dict(mask_head="agnostic", mlp_fusion=True),
    dict(mask_head="agnostic", mlp_fusion=False, mask_head_convs=8),
    dict(mask_head="class", mlp_fusion=False),
    dict(mask_head="transfer", transfer_input="cls", transfer_layers=1, mlp_fusion=False),
    dict(
        mask_head="transfer",
        transfer_input="box",
        transfer_layers=2,
        transfer_activation="relu",
        mlp_fusion=False,
    ),
    dict(mask_head="transfer", transfer_input="cls+box", mlp_fusion=True),
    # The paper's MLP (one FC from the 28x28xC features to 784 logits) at C=16: 9.8 M weights
    # instead of 39 M at tiny's C=64; the form, not its size, is what this step checks.
    dict(
        mask_head="transfer",
        transfer_input="cls+box",
        mlp_fusion=True,
        mlp_form="paper",
        mask_head_channels=16,
    ),
    dict(mask_head="transfer", stop_grad=False),
    dict(mask_head="transfer", box_head="4conv1fc", box_positive_fraction=0.5),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
def test_every_variant_trains_a_step_and_predicts_masks_for_every_class(variant):
    model = build_model(cfg(**variant))
    images, targets = make_batch()
    losses = losses_of(model, images, targets)
    assert set(losses) == {
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
        "loss_objectness",
        "loss_rpn_box_reg",
    }
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for o in out:
        assert set(o) == {"boxes", "labels", "scores", "masks"}
        n = o["boxes"].shape[0]
        assert o["masks"].shape == (n, 1, SIZE, SIZE)
        assert o["masks"].min() >= 0 and o["masks"].max() <= 1
    # Masks for B classes too: force the predictor to segment a B class directly.
    heads = model.roi_heads
    feats = torch.randn(3, heads.mask_head[-1][0].out_channels, 14, 14)
    logits = heads.mask_predictor(feats, torch.tensor([1, 6, 8]), heads.read_transfer_input)
    assert logits.shape == (3, 28, 28)


def test_mask_loss_ignores_b_instances_and_all_b_batch_gives_zero_loss_and_no_mask_gradient():
    model = build_model(cfg(mask_head="transfer", mlp_fusion=True))
    images, targets = make_batch(labels_per_image=((5, 6), (7, 8)), mask_form="A")
    for t in targets:
        assert t["masks"].shape[0] == 0
    losses = losses_of(model, images, targets)
    assert losses["loss_mask"].item() == 0.0
    model.zero_grad()
    losses["loss_mask"].backward(retain_graph=True)
    mask_params = list(model.roi_heads.mask_head.parameters()) + list(
        model.roi_heads.mask_predictor.parameters()
    )
    for p in mask_params:
        assert p.grad is None or torch.count_nonzero(p.grad) == 0
    # box and class losses still see the B instances
    assert losses["loss_classifier"].item() > 0 and losses["loss_box_reg"].item() > 0


@pytest.mark.parametrize("form", ["A", "flag"])
def test_masks_for_a_only_equal_masks_for_all(form):
    model = build_model(cfg(mask_head="class", mlp_fusion=False))
    images, t_all = make_batch(labels_per_image=((1, 6, 2, 7),), mask_form="all")
    _, t_part = make_batch(labels_per_image=((1, 6, 2, 7),), mask_form=form)
    l_all = losses_of(model, images, t_all)["loss_mask"]
    l_part = losses_of(model, images, t_part)["loss_mask"]
    assert l_all.item() > 0
    assert torch.equal(l_all, l_part)


def test_mask_loss_uses_only_a_rois():
    """B instances with masks given do not change the loss: their masks are never a target."""
    model = build_model(cfg(mask_head="class", mlp_fusion=False))
    images, targets = make_batch(labels_per_image=((1, 6),), mask_form="all")
    base = losses_of(model, images, targets)["loss_mask"]
    targets[0]["masks"][1] = 1 - targets[0]["masks"][1]  # corrupt the B instance's mask
    assert torch.equal(base, losses_of(model, images, targets)["loss_mask"])


def test_wrong_number_of_masks_is_a_clear_error():
    model = build_model(cfg())
    images, targets = make_batch(labels_per_image=((1, 2, 6),), mask_form="all")
    targets[0]["masks"] = targets[0]["masks"][:1]
    with pytest.raises(ValueError, match="masks"):
        losses_of(model, images, targets)


@pytest.mark.parametrize("stop_grad", [True, False])
def test_stop_grad_blocks_mask_loss_from_detection_weights(stop_grad):
    model = build_model(cfg(mask_head="transfer", transfer_input="cls+box", stop_grad=stop_grad))
    images, targets = make_batch(labels_per_image=((1, 6), (2, 7)))
    loss_mask = losses_of(model, images, targets)["loss_mask"]
    bp = model.roi_heads.box_predictor
    params = [bp.cls_score.weight, bp.bbox_pred.weight]
    tau = list(model.roi_heads.mask_predictor.transfer.parameters())
    grads = torch.autograd.grad(loss_mask, params + tau, allow_unused=True)
    g_cls, g_box = grads[0], grads[1]
    for g in grads[2:]:
        assert g is not None and torch.count_nonzero(g) > 0, "τ must always receive gradient"
    if stop_grad:
        for g in (g_cls, g_box):
            assert g is None or torch.count_nonzero(g) == 0
    else:
        for c in (1, 2):  # A classes present in the batch
            assert torch.count_nonzero(g_cls[c]) > 0
            assert torch.count_nonzero(g_box[4 * c : 4 * c + 4]) > 0
        for c in (6, 7, 0):  # B classes and background: the mask loss never asks for them
            assert torch.count_nonzero(g_cls[c]) == 0


def test_each_class_mask_weights_come_from_its_own_detection_weights():
    model = build_model(cfg(mask_head="transfer", transfer_input="cls", mlp_fusion=False)).eval()
    heads = model.roi_heads
    feats = torch.randn(2, heads.mask_head[-1][0].out_channels, 14, 14)
    classes = torch.arange(1, 9)
    with torch.no_grad():
        before = heads.mask_predictor.class_logits(feats, classes, heads.read_transfer_input)
        heads.box_predictor.cls_score.weight[3] += 0.5
        after = heads.mask_predictor.class_logits(feats, classes, heads.read_transfer_input)
    changed = [(after[:, k] != before[:, k]).any().item() for k in range(8)]
    assert changed == [c == 3 for c in classes.tolist()]


def test_detectron_box_predictor_init_draws_small_weights_and_zero_biases():
    plain = build_model(cfg()).roi_heads.box_predictor
    small = build_model(cfg(box_predictor_init="detectron")).roi_heads.box_predictor
    assert plain.cls_score.weight.std() > 0.02  # nn.Linear's default, ~0.036 for D=256
    assert 0.008 < small.cls_score.weight.std() < 0.012
    assert 0.0008 < small.bbox_pred.weight.std() < 0.0012
    assert small.cls_score.bias.abs().sum() == 0 and small.bbox_pred.bias.abs().sum() == 0


@pytest.mark.parametrize("layers", [1, 2])
def test_zero_init_tau_ignores_directions_its_training_inputs_never_span(layers):
    from mxr.model.transfer import WeightTransfer

    torch.manual_seed(0)
    tau = WeightTransfer(16, 8, layers=layers, zero_init=True)
    assert tau.mlp[0].weight.abs().sum() == 0
    x_a = torch.zeros(5, 16)
    x_a[:, :5] = torch.randn(5, 5)  # "set A" spans the first 5 coordinates only
    opt = torch.optim.SGD(tau.parameters(), lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        ((tau(x_a) - torch.randn(5, 8)) ** 2).mean().backward()
        opt.step()
    x_b = torch.randn(1, 16)
    inside = x_b.clone()
    inside[:, 5:] = 0
    with torch.no_grad():
        assert tau.mlp[0].weight.abs().sum() > 0  # it learned
        torch.testing.assert_close(tau(x_b), tau(inside))  # the unseen part maps to nothing
        # a default-initialised τ turns the unseen part into noise
        plain = WeightTransfer(16, 8, layers=layers)
        assert not torch.allclose(plain(x_b), plain(inside))


def test_mlp_fusion_adds_one_class_agnostic_term_to_every_class():
    model = build_model(cfg(mask_head="transfer", mlp_fusion=True)).eval()
    heads = model.roi_heads
    pred = heads.mask_predictor
    assert abs(pred.mlp.fc.weight.std().item() - 0.001) < 0.0002
    feats = torch.randn(2, heads.mask_head[-1][0].out_channels, 14, 14)
    classes = torch.arange(0, 9)
    with torch.no_grad():
        pred.mlp.fc.weight.normal_(std=0.05)  # make the term visible
        fused = pred.class_logits(feats, classes, heads.read_transfer_input)
        mlp = pred.mlp
        pred.mlp = None
        fcn = pred.class_logits(feats, classes, heads.read_transfer_input)
        pred.mlp = mlp
    term = fused - fcn  # (R, K, 28, 28)
    assert term.shape[-2:] == (28, 28)
    assert term.abs().max() > 1e-3
    torch.testing.assert_close(term, term[:, :1].expand_as(term), rtol=0, atol=1e-5)


@pytest.mark.parametrize("head", ["agnostic", "class", "transfer"])
def test_state_dict_has_no_duplicates_and_save_load_reproduces_outputs(head):
    model = build_model(cfg(mask_head=head, mlp_fusion=head == "transfer")).eval()
    sd = model.state_dict()
    ptrs = [v.data_ptr() for v in sd.values() if v.numel() > 0]
    assert len(ptrs) == len(set(ptrs)), "a tensor is stored twice in the state dict"
    if head == "transfer":
        assert not any("transfer" in k and ("cls_score" in k or "bbox_pred" in k) for k in sd)
    buf = io.BytesIO()
    torch.save(sd, buf)
    other = build_model(cfg(mask_head=head, mlp_fusion=head == "transfer", init_seed=123)).eval()
    buf.seek(0)
    other.load_state_dict(torch.load(buf, weights_only=True))
    images, _ = make_batch()
    with torch.no_grad():
        a, b = model(images), other(images)
    for x, y in zip(a, b, strict=True):
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_seeded_construction_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(7)
    state = torch.get_rng_state()
    m1, m2 = build_model(cfg()), build_model(cfg())
    assert torch.equal(torch.get_rng_state(), state)
    for (k, v), (_, w) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(v, w), k
    m3 = build_model(cfg(init_seed=1))
    assert not torch.equal(
        m1.roi_heads.box_predictor.cls_score.weight, m3.roi_heads.box_predictor.cls_score.weight
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("backbone", "vgg"),
        ("mask_head", "fancy"),
        ("transfer_input", "mask"),
        ("transfer_layers", 3),
        ("transfer_activation", "gelu"),
        ("mlp_form", "huge"),
        ("stop_grad", "yes"),
        ("transfer_zero_init", 1),
        ("num_classes", 1),
        ("mask_classes", (0, 1)),
        ("mask_classes", (1, 9)),
        ("min_size", 0),
        ("box_head", "3fc"),
        ("box_predictor_init", "xavier"),
        ("box_positive_fraction", 0.0),
        ("box_positive_fraction", 1.5),
    ],
)
def test_invalid_config_values_name_field_value_and_choices(field, value):
    with pytest.raises(ValueError) as e:
        cfg(**{field: value})
    msg = str(e.value)
    assert f"model.{field}" in msg and repr(value) in msg and "expected" in msg


def test_unresolved_config_cannot_be_built():
    with pytest.raises(ValueError, match="num_classes"):
        build_model(ModelConfig())


def test_backbone_weights_load_from_a_local_file(tmp_path):
    net = resnet18(weights=None)
    with torch.no_grad():
        net.conv1.weight.fill_(0.25)
    path = tmp_path / "r18.pth"
    torch.save(net.state_dict(), path)
    model = build_model(cfg(backbone="resnet18_fpn"), backbone_weights=path)
    assert torch.all(model.backbone.body.conv1.weight == 0.25)
    assert not model.backbone.body.conv1.weight.requires_grad  # stem frozen with pretrained weights
    same = build_model(
        dataclasses.replace(cfg(backbone="resnet18_fpn"), backbone_weights=str(path))
    )
    assert torch.equal(same.backbone.body.layer4[0].conv1.weight, net.layer4[0].conv1.weight)


def test_backbone_weights_that_do_not_fit_are_a_clear_error(tmp_path):
    tiny = build_model(cfg())
    path = tmp_path / "tiny.pth"
    torch.save(tiny.backbone.body.state_dict(), path)
    with pytest.raises(ValueError, match=r"tiny\.pth.*does not fit"):
        build_model(cfg(backbone="resnet18_fpn"), backbone_weights=path)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_model(cfg(), backbone_weights=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth"):
        build_model(cfg(), backbone_weights=bad)


def test_large_vocabulary_transfer_step():
    model = build_model(cfg(num_classes=3001, mask_classes=tuple(range(1, 1001)), mlp_fusion=False))
    images, targets = make_batch(labels_per_image=((1, 2000), (3, 2500)))
    losses = losses_of(model, images, targets)
    assert losses["loss_mask"].item() > 0


def test_stock_maskrcnn_uses_the_same_parts():
    stock = build_stock_maskrcnn(cfg(mask_head="class", mlp_fusion=False))
    assert type(stock) is MaskRCNN
    ours = build_model(cfg(mask_head="class", mlp_fusion=False))
    # same seed, same parts: every weight but the mask predictor's is identical
    s, o = stock.state_dict(), ours.state_dict()
    shared = [k for k in s if not k.startswith("roi_heads.mask_predictor.")]
    assert len(shared) > 50 and all(torch.equal(s[k], o[k]) for k in shared)
    images, targets = make_batch()
    ls, lo = losses_of(stock, images, targets), losses_of(ours, images, targets)
    assert set(ls) == set(lo)
    for k in ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"):
        assert torch.equal(ls[k], lo[k]), k  # the RPN and box branch compute the same thing


def test_stock_maskrcnn_takes_every_shared_setting():
    # every ModelConfig field that is also a MaskRCNN keyword reaches the stock model; the four
    # left out are parts built from the config (a backbone, the heads) or filled from the data
    import inspect

    from mxr.config import ModelConfig
    from mxr.model.build import STOCK_SETTINGS

    keywords = set(inspect.signature(MaskRCNN.__init__).parameters)
    keywords |= set(inspect.signature(MaskRCNN.__mro__[1].__init__).parameters)  # FasterRCNN
    shared = keywords & {f.name for f in dataclasses.fields(ModelConfig)}
    built = {"backbone", "box_head", "mask_head", "num_classes"}
    assert shared - built == set(STOCK_SETTINGS)
    c = cfg(mask_head="class", mlp_fusion=False, box_positive_fraction=0.5, box_score_thresh=0.2)
    stock, ours = build_stock_maskrcnn(c), build_model(c)
    for model in (stock, ours):
        assert model.roi_heads.fg_bg_sampler.positive_fraction == 0.5
        assert model.roi_heads.score_thresh == 0.2


def test_masks_for_boxes_are_the_masks_inference_gives_those_boxes():
    """The RoI heads answer "masks for these boxes and classes": for the detector's own boxes and
    classes they are exactly the masks inference returns (before pasting)."""
    torch.manual_seed(0)
    model = build_model(cfg(mask_head="transfer", transfer_input="cls+box", mlp_fusion=True)).eval()
    images, _ = make_batch()
    with torch.no_grad():
        image_list, _ = model.transform(images)
        features = model.backbone(image_list.tensors)
        proposals, _ = model.rpn(image_list, features)
        dets, _ = model.roi_heads(features, proposals, image_list.image_sizes)
        boxes = [d["boxes"] for d in dets]
        labels = torch.cat([d["labels"] for d in dets])
        probs = model.roi_heads.roi_mask_probs(features, boxes, labels, image_list.image_sizes)
    assert sum(len(b) for b in boxes) > 0
    assert probs.shape == (len(labels), 28, 28)
    torch.testing.assert_close(probs, torch.cat([d["masks"][:, 0] for d in dets]))
