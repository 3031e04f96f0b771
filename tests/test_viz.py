"""Drawing helpers return images and Figures of the right shape."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mxr.course.figures import draw_instances, plot_loss_curve, show_samples  # noqa: E402
from mxr.data.coco import CocoInstances  # noqa: E402
from mxr.report import A_COLOURS, B_COLOURS


@pytest.fixture
def ds(shapesx_root: Path) -> CocoInstances:
    return CocoInstances(
        shapesx_root / "train",
        shapesx_root / "annotations" / "instances_train.json",
        split="annotations/split.json",
    )


def test_draw_instances_target_colours_a_and_b(ds: CocoInstances) -> None:
    image = torch.zeros(3, 40, 50)
    target = {
        "boxes": torch.tensor([[2.0, 2.0, 20.0, 20.0], [25.0, 5.0, 45.0, 35.0]]),
        "labels": torch.tensor([ds.a_labels[0], ds.b_labels[0]]),
        "masks": torch.zeros(1, 40, 50, dtype=torch.uint8),
        "has_mask": torch.tensor([True, False]),
    }
    target["masks"][0, 5:15, 5:15] = 1
    out = draw_instances(image, target, ds.class_names, ds.a_labels)
    assert out.dtype == torch.uint8 and out.shape == (3, 40, 50)
    assert tuple(out[:, 10, 10].tolist()) != (0, 0, 0)  # the A mask is painted
    assert tuple(out[:, 2, 10].tolist()) == A_COLOURS[0]  # A box edge in the A colour
    assert tuple(out[:, 35, 35].tolist()) == B_COLOURS[0]  # B box edge in the B colour


def test_draw_instances_prediction_threshold() -> None:
    pred = {
        "boxes": torch.tensor([[1.0, 1.0, 10.0, 10.0], [12.0, 12.0, 28.0, 28.0]]),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.9, 0.1]),
        "masks": torch.rand(2, 1, 30, 30),
    }
    out = draw_instances(torch.rand(3, 30, 30), pred, ["__background__", "a", "b"], a_labels=[1])
    assert out.shape == (3, 30, 30) and out.dtype == torch.uint8
    base = draw_instances(
        torch.zeros(3, 30, 30), {**pred, "scores": torch.tensor([0.0, 0.0])}, ["bg", "a", "b"]
    )
    assert int(base.sum()) == 0  # nothing above the threshold: the image is returned unchanged


def test_show_samples_figure(ds: CocoInstances) -> None:
    fig = show_samples(ds, [0, 1, 2], ncols=2)
    assert isinstance(fig, Figure)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 3
    assert all(ax.get_title().startswith("image id ") and " B" in ax.get_title() for ax in images)
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
    from mxr.course.figures import label_upscale

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
        "set B (boxes only)",
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
