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
    assert tuple(out[:, 2, 20].tolist()) == A_COLOURS[0]  # A box top edge in the A colour
    assert tuple(out[:, 50, 55].tolist()) == B_COLOURS[0]  # B box bottom edge in the B colour


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
    assert out[:, 60:80, 78].eq(100).all()  # ... nor its box's right edge (x = 78)
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


def test_labels_of_boxes_at_one_corner_are_stacked_not_overlapped() -> None:
    # two detections of one object, the same box: the second label goes below the first
    from mxr.course.figures import _draw_labels

    box = torch.tensor([[4.0, 4.0, 60.0, 60.0]] * 2)
    red, green = (255, 0, 0), (0, 255, 0)
    out = _draw_labels(
        torch.zeros(3, 64, 64, dtype=torch.uint8), box, ["a 0.9", "b 0.8"], [red, green], 10
    )
    rows = {}
    for name, colour in (("red", red), ("green", green)):
        hit = (out.permute(1, 2, 0) == torch.tensor(colour, dtype=torch.uint8)).all(-1)
        rows[name] = set(hit.any(1).nonzero().flatten().tolist())
    assert rows["red"] and rows["green"] and not rows["red"] & rows["green"]
    assert min(rows["green"]) > max(rows["red"])  # stacked downwards
