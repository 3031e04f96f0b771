"""Drawing helpers return images and Figures of the right shape."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mxr.course.figures import draw_instances, label_upscale, plot_loss_curve, show_samples
from mxr.data.coco import CocoInstances  # noqa: E402
from mxr.report import A_COLOURS, B_COLOURS


@pytest.fixture
def ds(shapesx_root: Path) -> CocoInstances:
    return CocoInstances(
        shapesx_root / "train",
        shapesx_root / "annotations" / "instances_train.json",
        split="annotations/split.json",
    )


def _has_colour(image: torch.Tensor, colour: tuple[int, int, int]) -> bool:
    """Whether some pixel of a uint8 ``(3, H, W)`` image is exactly ``colour``."""
    return bool((image.permute(1, 2, 0) == torch.tensor(colour, dtype=torch.uint8)).all(-1).any())


# draw_instances paints a mask with torchvision's draw_segmentation_masks at alpha 0.45:
# pixel = int(0.55 * image + 0.45 * colour). On grey 100 with A_COLOURS[0] = (255, 140, 0):
# (55 + 114.75, 55 + 63, 55 + 0) -> (169, 118, 55).
GREY = 100 / 255


def test_draw_instances_target_colours_a_and_b(ds: CocoInstances) -> None:
    image = torch.full((3, 60, 70), GREY)
    target = {
        "boxes": torch.tensor([[2.0, 2.0, 40.0, 50.0], [44.0, 5.0, 68.0, 50.0]]),
        "labels": torch.tensor([ds.a_labels[0], ds.b_labels[0]]),
        "masks": torch.zeros(1, 60, 70, dtype=torch.uint8),  # the A instance's only
        "has_mask": torch.tensor([True, False]),
    }
    target["masks"][0, 24:40, 10:30] = 1
    out = draw_instances(image, target, ds.class_names, ds.a_labels)
    assert out.dtype == torch.uint8 and out.shape == (3, 60, 70)
    assert out[:, 32, 20].tolist() == [169, 118, 55]  # the A mask's centre: A colour at 0.45
    assert out[:, 45, 20].tolist() == [100, 100, 100]  # in the A box, off its mask: the image
    assert out[:, 32, 55].tolist() == [100, 100, 100]  # the B box has no mask: nothing painted
    assert tuple(out[:, 30, 2].tolist()) == A_COLOURS[0]  # A box left edge in the A colour
    assert tuple(out[:, 30, 68].tolist()) == B_COLOURS[0]  # B box right edge in the B colour


def test_draw_instances_draws_only_predictions_above_the_threshold() -> None:
    # four detections, one below the threshold; each gets the next colour of its set's palette
    pred = {
        "boxes": torch.tensor(
            [
                [1.0, 1.0, 40.0, 40.0],
                [42.0, 1.0, 78.0, 40.0],
                [1.0, 42.0, 40.0, 78.0],
                [42.0, 42.0, 78.0, 78.0],
            ]
        ),
        "labels": torch.tensor([1, 2, 1, 1]),
        "scores": torch.tensor([0.9, 0.8, 0.6, 0.1]),
        "masks": torch.zeros(4, 1, 80, 80),
    }
    for k, (x, y) in enumerate([(20, 28), (60, 28), (20, 68), (60, 68)]):
        pred["masks"][k, 0, y - 4 : y + 4, x - 6 : x + 6] = 0.9
    names = ["__background__", "a", "b"]
    out = draw_instances(torch.full((3, 80, 80), GREY), pred, names, a_labels=[1])
    drawn = [A_COLOURS[0], B_COLOURS[0], A_COLOURS[1]]  # the three with score >= 0.5
    assert [_has_colour(out, c) for c in (*drawn, A_COLOURS[2])] == [True, True, True, False]
    grey = torch.tensor([100.0] * 3)
    for (x, y), colour in zip([(20, 28), (60, 28), (20, 68)], drawn, strict=True):
        blended = (0.55 * grey + 0.45 * torch.tensor(colour, dtype=torch.float32)).int()
        assert out[:, y, x].tolist() == blended.tolist()  # each kept mask in its colour
    assert out[:, 68, 60].tolist() == [100, 100, 100]  # the score-0.1 mask is not painted
    three = {k: v[:3] for k, v in pred.items()}  # ... nor its box or label: the same picture
    assert torch.equal(out, draw_instances(torch.full((3, 80, 80), GREY), three, names, [1]))
    at_01 = draw_instances(torch.full((3, 80, 80), GREY), pred, names, [1], score_thresh=0.05)
    assert _has_colour(at_01, A_COLOURS[2]) and at_01[:, 68, 60].tolist() != [100, 100, 100]
    none = {**pred, "scores": torch.zeros(4)}
    blank = draw_instances(torch.zeros(3, 80, 80), none, names)
    assert int(blank.sum()) == 0  # nothing above the threshold: the image is returned unchanged


def test_show_samples_figure(ds: CocoInstances) -> None:
    fig = show_samples(ds, [0, 1, 2], ncols=2)
    assert isinstance(fig, Figure)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 3
    for ax, index in zip(images, [0, 1, 2], strict=True):  # each panel: its sample, drawn
        image, target = ds[index]
        up = label_upscale(*image.shape[-2:])
        drawn = draw_instances(image, target, ds.class_names, ds.a_labels, upscale=up)
        assert (ax.images[0].get_array() == drawn.permute(1, 2, 0).numpy()).all()
        n_a = sum(int(x) in ds.a_labels for x in target["labels"])
        n_b = len(target["labels"]) - n_a
        assert ax.get_title() == f"image id {int(target['image_id'])}: {n_a} A, {n_b} B"
    texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert any("set A" in t for t in texts) and any("set B" in t for t in texts)
    with pytest.raises(ValueError, match="indices"):
        show_samples(ds, [])


def test_plot_loss_curve(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    rows = [
        {"iter": i, "lr": 0.01, "loss": 2.0 / i, "loss_classifier": 1.0 / i, "loss_mask": 0.5 / i}
        for i in range(1, 6)
    ]
    rows.append({"eval": True, "segm_AP_B": 0.1})  # no "iter": skipped
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    fig = plot_loss_curve(path)
    ax = fig.axes[0]
    assert {line.get_label() for line in ax.lines} == {"loss", "loss_classifier", "loss_mask"}
    for line in ax.lines:  # each curve is its key's values at the logged iterations
        assert list(line.get_xdata()) == [1, 2, 3, 4, 5]
        assert list(line.get_ydata()) == [r[line.get_label()] for r in rows[:5]]
    assert ax.get_xlabel() == "iteration" and ax.get_ylabel().startswith("loss")
    assert ax.get_title() == f"Training losses ({tmp_path.name})" and ax.get_yscale() == "log"
    assert ax.get_legend() is not None
    assert [
        line.get_label() for line in plot_loss_curve(path, keys=["loss_mask"]).axes[0].lines
    ] == ["loss_mask"]
    path.write_text('{"iter": 1, "loss": 1}\n{broken\n{"iter": 3, "loss": 1}\n')
    with pytest.raises(ValueError, match="line 2"):
        plot_loss_curve(path)


def test_draw_instances_upscale_enlarges_the_picture_and_keeps_colours() -> None:
    image = torch.zeros(3, 30, 40)
    target = {"boxes": torch.tensor([[2.0, 2.0, 20.0, 20.0]]), "labels": torch.tensor([1])}
    out = draw_instances(image, target, ["bg", "a"], a_labels=[1], upscale=3)
    assert out.shape == (3, 90, 120)
    assert tuple(out[:, 45, 6].tolist()) == A_COLOURS[0]  # the left box edge, at 3x
    assert tuple(out[:, 45, 30].tolist()) == (0, 0, 0)  # inside the box, below the label
    assert label_upscale(128, 128) == 2 and label_upscale(480, 640) == 1
    with pytest.raises(ValueError, match="upscale"):
        draw_instances(image, target, ["bg", "a"], upscale=0)


def test_set_bars_and_legend_use_the_one_palette() -> None:
    from mxr.course.figures import set_legend
    from mxr.report import SET_COLOURS, set_bars

    fig = Figure()
    ax = fig.add_subplot(1, 1, 1)
    at = set_bars(
        ax, ["r1", "r2"], {"A": [3.0, 4.0], "B": [1.0, 2.0]}, {"A": [0.5, 0.5], "B": [0, 0]}
    )
    assert at == {"A": [-0.2, 0.8], "B": [0.2, 1.2]}  # A left of B in each group of width 0.8
    assert [p.get_height() for p in ax.patches] == [3.0, 4.0, 1.0, 2.0]
    assert [matplotlib.colors.to_hex(p.get_facecolor()) for p in ax.patches[::2]] == [
        SET_COLOURS["A"],
        SET_COLOURS["B"],
    ]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["r1", "r2"]
    assert len(ax.containers) == 4  # two bar containers and their error bars
    set_legend(fig)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "set A (masks in training)",
        "set B (boxes only in training)",
    ]


def test_figure_png_is_what_a_saved_figure_is(tmp_path: Path) -> None:
    from mxr.report import figure_png

    fig = Figure(figsize=(2, 1))
    fig.add_subplot(1, 1, 1).plot([0, 1])
    png = figure_png(fig, dpi=50)
    fig.savefig(tmp_path / "f.png", dpi=50)
    assert png.startswith(b"\x89PNG") and png == (tmp_path / "f.png").read_bytes()


def _label_patch(out: torch.Tensor, colour: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (inclusive) of the label patch drawn in ``colour``: the rows with 8 or
    more pixels of it and the columns with 4 or more (a 1-px leader line of the colour adds at most
    one pixel to a row or column outside the patch)."""
    hit = (out.permute(1, 2, 0) == torch.tensor(colour, dtype=torch.uint8)).all(-1)
    rows = (hit.sum(1) >= 8).nonzero().flatten()
    cols = (hit.sum(0) >= 4).nonzero().flatten()
    assert len(rows) and len(cols), f"no label patch of colour {colour}"
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def _label_height(size: int = 10) -> int:
    from PIL import Image, ImageDraw, ImageFont

    from mxr.course.figures import _LABEL_FONT

    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox(
        (0, 0), "a [A] 0.90", font=ImageFont.truetype(_LABEL_FONT, size)
    )
    return box[3] - box[1] + 2


def _hue(colour: tuple[int, int, int]) -> float:
    import colorsys

    return 360 * colorsys.rgb_to_hsv(*(c / 255 for c in colour))[0]


def test_set_palettes_are_the_legends_colours() -> None:
    # the legend says A is orange and B blue: every instance colour keeps to its set's hue
    from mxr.report import SET_RGB

    assert A_COLOURS[0] == SET_RGB["A"] and B_COLOURS[0] == SET_RGB["B"]
    assert all(190 <= _hue(c) <= 240 for c in B_COLOURS), [round(_hue(c)) for c in B_COLOURS]
    assert all(_hue(c) <= 50 or _hue(c) >= 320 for c in A_COLOURS)
    assert len(set(B_COLOURS)) == len(B_COLOURS) and len(set(A_COLOURS)) == len(A_COLOURS)


def test_every_b_label_is_drawn_in_a_b_colour() -> None:
    # six B detections (the palette cycles past its end): boxes and label patches all in B's blues;
    # the old palette's third colour was green, and its label read as a third set
    boxes = [
        [8.0 + 84 * (k % 3), 30.0 + 120 * (k // 3), 70.0 + 84 * (k % 3), 90.0 + 120 * (k // 3)]
        for k in range(6)
    ]
    pred = {
        "boxes": torch.tensor(boxes),
        "labels": torch.full((6,), 2),
        "scores": torch.linspace(0.9, 0.6, 6),
    }
    out = draw_instances(torch.full((3, 256, 256), GREY), pred, ["bg", "a", "b"], a_labels=[1])
    colours, counts = out.permute(1, 2, 0).reshape(-1, 3).unique(dim=0, return_counts=True)
    major = {tuple(c) for c in colours[counts >= 40].tolist()}  # not the text's anti-aliasing
    assert major - {(100, 100, 100), (0, 0, 0), (255, 255, 255)} == set(B_COLOURS)
    for k, colour in enumerate([*B_COLOURS, *B_COLOURS[:2]]):
        # each label rests on its box's top-left corner, in the box's colour (the patch's bottom
        # row is its padding, under the text)
        x0, y0 = int(boxes[k][0]), int(boxes[k][1])
        patch = {tuple(out[:, y0 - 1, x].tolist()) for x in range(x0, x0 + 40)}
        assert patch == {colour}


def test_a_label_sits_above_the_box_it_names_not_on_it() -> None:
    from mxr.course.figures import _draw_labels

    red = (255, 0, 0)
    box = torch.tensor([[30.0, 50.0, 100.0, 110.0]])
    out = _draw_labels(torch.zeros(3, 128, 128, dtype=torch.uint8), box, ["a [A] 0.90"], [red], 10)
    x0, y0, x1, y1 = _label_patch(out, red)
    assert (x0, y1) == (30, 49) and y1 - y0 + 1 == _label_height()  # on the box's top-left corner
    # no room above (the box at the image's top): below it, still off the object
    box = torch.tensor([[30.0, 0.0, 100.0, 60.0]])
    out = _draw_labels(torch.zeros(3, 128, 128, dtype=torch.uint8), box, ["a [A] 0.90"], [red], 10)
    assert _label_patch(out, red)[:2] == (30, 61)


def test_labels_of_one_objects_detections_never_overlap() -> None:
    # four detections of one object at the image's bottom (notebook 05's image 53 at score >= 0.05
    # stacked four labels on top of each other there): four whole patches, apart, none on the box
    from mxr.course.figures import _draw_labels

    boxes = torch.tensor(
        [
            [30.0, 96.0, 110.0, 127.0],
            [32.0, 98.0, 112.0, 127.0],
            [28.0, 95.0, 108.0, 126.0],
            [31.0, 97.0, 111.0, 127.0],
        ]
    )
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    texts = ["a [A] 0.90", "b [B] 0.80", "c [A] 0.30", "d [A] 0.06"]
    out = _draw_labels(torch.zeros(3, 128, 128, dtype=torch.uint8), boxes, texts, colours, 10)
    patches = [_label_patch(out, c) for c in colours]
    for _, y0, _, y1 in patches:
        assert y1 - y0 + 1 == _label_height()  # the whole patch shows: none drawn over another
    assert patches[0][::3] == (30, 95)  # the first on its box's corner, above the object
    assert patches[2][::3] == (28, 84)  # the third stacked on it (the others go beside the box)
    for i, a in enumerate(patches):
        for b in patches[i + 1 :]:
            assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], (a, b)


def test_place_labels_keeps_labels_apart_and_in_the_image() -> None:
    from mxr.course.figures import _place_labels

    g = torch.Generator().manual_seed(0)
    corners = torch.rand(14, 2, generator=g) * 200
    boxes = torch.cat([corners, corners + 10 + torch.rand(14, 2, generator=g) * 50], 1)
    rects = _place_labels(boxes.tolist(), [(70.0, 14.0)] * 14, 256, 256)
    for i, (x, y, w, h) in enumerate(rects):
        assert 0 <= x <= 256 - w and 0 <= y <= 256 - h and (w, h) == (70.0, 14.0)
        for x2, y2, w2, h2 in rects[i + 1 :]:
            assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y
    # a lone box with room all round: its label rests on its top-left corner
    assert _place_labels([[40.0, 60.0, 120.0, 150.0]], [(70.0, 14.0)], 256, 256) == [
        (40.0, 46.0, 70.0, 14.0)
    ]
