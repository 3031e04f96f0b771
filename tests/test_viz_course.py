"""The course figures (walkthrough, weight PCA, per-class bars, AP comparison) return Figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mxr.course.analysis import group_separation, pca_project  # noqa: E402
from mxr.course.figures import (
    anchors_at,
    plot_anchors,
    plot_ap_comparison,
    plot_box_sets,
    plot_class_bars,
    plot_feature_maps,
    plot_loss_terms,
    plot_maps_grid,
    plot_rpn_targets,
    plot_weight_pca,
)
from mxr.report import SET_COLOURS

IMAGE = torch.rand(3, 32, 32)


def _grid_anchors(stride: int, size: int) -> torch.Tensor:
    """Square anchors of one size centred on a stride grid over the 32 px image: ``(N, 4)``."""
    c = torch.arange(stride / 2, 32, stride)
    cy, cx = torch.meshgrid(c, c, indexing="ij")
    centres = torch.stack([cx.flatten(), cy.flatten()], 1)
    return torch.cat([centres - size / 2, centres + size / 2], 1)


def _rectangles(ax) -> list[list[float]]:  # noqa: ANN001
    """The XYXY corners of the rectangles drawn on ``ax``, in drawing order."""
    out = []
    for p in ax.patches:
        (x, y), w, h = p.get_xy(), p.get_width(), p.get_height()
        out.append([float(x), float(y), float(x + w), float(y + h)])
    return out


def test_feature_maps_one_panel_per_level_plus_image() -> None:
    feats = {
        "0": torch.rand(1, 8, 8, 8),
        "1": torch.rand(1, 8, 4, 4),
        "pool": torch.rand(1, 8, 2, 2),
    }
    fig = plot_feature_maps(feats, IMAGE)
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.images]  # the colour bars hold no image
    assert [ax.get_title() for ax in panels] == [
        "input (32, 32)",
        "'0': (8, 8, 8), stride 4",
        "'1': (8, 4, 4), stride 8",
        "'pool': (8, 2, 2), stride 16",
    ]
    shown = (IMAGE.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert (panels[0].images[0].get_array() == shown).all()  # the input as it is
    for ax, fmap in zip(panels[1:], feats.values(), strict=True):  # each map: its channel L2 norm
        norm = torch.sqrt((fmap[0] ** 2).sum(0)).numpy()
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), norm, rtol=1e-6)
    with pytest.raises(ValueError, match="expected \\(B, C, H, W\\)"):
        plot_feature_maps({"0": torch.rand(8, 8)})


def test_anchors_at_picks_the_nearest_location_only() -> None:
    anchors = torch.cat([_grid_anchors(8, 10), _grid_anchors(8, 20)])
    sel = anchors_at(anchors, (15.0, 15.0))
    assert sel.shape == (2, 4)  # both sizes at the single nearest centre
    centres = (sel[:, :2] + sel[:, 2:]) / 2
    assert torch.allclose(centres, torch.tensor([[12.0, 12.0], [12.0, 12.0]])) or torch.allclose(
        centres, torch.tensor([[20.0, 20.0], [20.0, 20.0]])
    )
    fig = plot_anchors(IMAGE, [_grid_anchors(8, 10), _grid_anchors(16, 20)], ["0", "1"])
    assert fig.axes[0].get_title() == "level '0': 16 anchors\nsize ≈ 10 px"
    assert fig.axes[1].get_title() == "level '1': 4 anchors\nsize ≈ 20 px"
    # the image centre (16, 16) is equally near four centres; the first nearest is drawn, whole
    assert _rectangles(fig.axes[0]) == [[7.0, 7.0, 17.0, 17.0]]  # centre (12, 12), size 10
    assert _rectangles(fig.axes[1]) == [[-2.0, -2.0, 18.0, 18.0]]  # centre (8, 8), size 20
    assert fig.axes[1].get_xlim() == (-4.0, 34.0)  # widened to show the anchor past the edge
    with pytest.raises(ValueError, match="names"):
        plot_anchors(IMAGE, [_grid_anchors(8, 10)], ["0", "1"])


def test_rpn_targets_counts_in_legend() -> None:
    anchors = _grid_anchors(4, 6)  # 64 anchors
    labels = torch.zeros(64)
    labels[:3] = 1
    labels[3:10] = -1
    sampled = torch.zeros(64, dtype=torch.bool)
    sampled[:20] = True
    fig = plot_rpn_targets(IMAGE, anchors, labels, torch.tensor([[1.0, 1.0, 9.0, 9.0]]), sampled)
    left, right = fig.axes
    # left: the true box, then the three positive anchors (the first three of the grid)
    assert _rectangles(left) == [[1.0, 1.0, 9.0, 9.0], *anchors[:3].tolist()]
    # right: a dot at the centre of each neutral anchor, then of each sampled negative
    centres = ((anchors[:, :2] + anchors[:, 2:]) / 2).numpy()
    neutral, negatives = right.collections
    assert (neutral.get_offsets() == centres[3:10]).all()
    assert (negatives.get_offsets() == centres[10:20]).all()
    legend_text = " ".join(t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts())
    assert "positive anchors (3)" in legend_text
    assert "neutral centres (7)" in legend_text
    assert "(10 of 54)" in legend_text  # sampled negatives of all negatives
    with pytest.raises(ValueError, match="labels"):
        plot_rpn_targets(IMAGE, anchors, labels[:5], torch.zeros(0, 4))


def test_box_sets_and_maps_grid() -> None:
    boxes = torch.tensor([[float(i), 1.0, 10.0 + i, 12.0] for i in range(5)])
    fig = plot_box_sets(IMAGE, {"before": boxes, "after": boxes[:2]}, max_boxes=3)
    assert fig.axes[0].get_title() == "before\n5 boxes (3 drawn)"
    assert fig.axes[1].get_title() == "after\n2 boxes (2 drawn)"
    assert _rectangles(fig.axes[0]) == boxes[:3].tolist()  # the first max_boxes, where they are
    assert _rectangles(fig.axes[1]) == boxes[:2].tolist()
    rows = {
        "rgb": torch.rand(3, 3, 7, 7),
        "mask": torch.rand(3, 28, 28),
        "logits": torch.randn(3, 28, 28),
    }
    fig = plot_maps_grid(rows, col_titles=["a", "b", "c"])
    cells = [ax for ax in fig.axes if ax.images]
    assert len(cells) == 9 and len(fig.axes) == 9 + 2  # 3 × 3 maps + a colour bar per grey row
    assert [ax.get_title() for ax in cells[:3]] == ["a", "b", "c"]
    assert [ax.get_ylabel() for ax in cells[::3]] == ["rgb", "mask", "logits"]
    lim = float(rows["logits"].abs().max())
    for i, (name, maps) in enumerate(rows.items()):  # row i, column j: map j of that row
        for j in range(3):
            im = cells[3 * i + j].images[0]
            want = maps[j].permute(1, 2, 0) if name == "rgb" else maps[j]
            np.testing.assert_allclose(np.asarray(im.get_array()), want.numpy(), rtol=1e-6)
            # RGB and 0..1 masks on a fixed 0..1 scale; signed logits on one symmetric scale
            assert im.get_clim() == pytest.approx((-lim, lim) if name == "logits" else (0, 1))
    with pytest.raises(ValueError, match="same positive number"):
        plot_maps_grid({"x": torch.rand(2, 4, 4), "y": torch.rand(3, 4, 4)})


def test_pca_project_recovers_the_dominant_direction() -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(-1, 1, 20)
    x = t[:, None] * torch.tensor([3.0, 0.0, 4.0]) + 0.01 * torch.randn(20, 3, generator=g)
    coords, explained = pca_project(x, 2)
    assert coords.shape == (20, 2) and explained.shape == (2,)
    assert float(explained[0]) > 0.99
    assert abs(torch.corrcoef(torch.stack([coords[:, 0], t]))[0, 1]) > 0.999
    again, _ = pca_project(x, 2)
    assert torch.equal(coords, again)
    with pytest.raises(ValueError, match="k=5"):
        pca_project(x, 5)


def test_group_separation_and_weight_pca() -> None:
    g = torch.Generator().manual_seed(0)
    groups = ["a"] * 5 + ["b"] * 5
    x = torch.randn(10, 6, generator=g) * 0.1
    x[5:] += 5.0
    assert group_separation(x, groups) > 5
    assert group_separation(torch.ones(10, 6) + torch.arange(10.0)[:, None] % 2, groups) < 1.5
    names = [f"{gr}-{i}" for i, gr in enumerate(groups)]
    fig = plot_weight_pca(
        {"w_det": x, "w_seg": x[:, :4]},
        names,
        groups,
        list(range(10)),
        [i % 5 == 2 for i in range(10)],
    )
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [
        "w_det: by family",
        "w_det: by member",
        "w_seg: by family",
        "w_seg: by member",
    ]
    is_b = torch.tensor([i % 5 == 2 for i in range(10)])
    for ax, w in zip(panels, [x, x, x[:, :4], x[:, :4]], strict=True):
        coords, explained = pca_project(w, 2)
        assert ax.get_xlabel() == f"PC1 ({100 * float(explained[0]):.0f} % of variance)"
        # every class is one point at its PCA coordinates; the B classes are the big stars
        points = torch.cat([torch.tensor(c.get_offsets()) for c in ax.collections]).float()
        stars = torch.cat(
            [torch.tensor(c.get_offsets()) for c in ax.collections if c.get_sizes()[0] == 160]
        ).float()
        assert len(points) == 10
        np.testing.assert_allclose(sorted(points.tolist()), sorted(coords.tolist()), atol=1e-6)
        np.testing.assert_allclose(sorted(stars.tolist()), sorted(coords[is_b].tolist()), atol=1e-6)
        assert [t.get_text() for t in ax.texts] == ["a-2", "b-7"]  # the B classes are named
    assert all(ax.get_legend() is None for ax in fig.axes)  # one legend, below the panels
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b"]
    close = torch.zeros(10, 6)  # two B classes on nearly the same spot: their labels move apart
    close[2, 0], close[7, 0], close[:, 1] = 0.01, 0.0, torch.arange(10.0)
    close[7, 1] = close[2, 1]
    fig = plot_weight_pca(
        {"w": close}, names, groups, list(range(10)), [i % 5 == 2 for i in range(10)]
    )
    offsets = [t.xyann for t in fig.axes[0].texts]
    assert offsets[0] != offsets[1]
    with pytest.raises(ValueError, match="rows for"):
        plot_weight_pca({"w": x[:3]}, names, groups, list(range(10)), [False] * 10)


def test_class_bars_ap_comparison_and_loss_terms() -> None:
    names = ["__background__", "x", "y", "z"]
    series = {"with": torch.tensor([0.1, 2.0, 0.5, 1.0]), "without": torch.tensor([0, 1, 3, 0.2])}
    fig = plot_class_bars(series, names, [1, 2], "norm")
    assert [ax.get_title() for ax in fig.axes] == ["with", "without"]
    colours = ["#d3d3d3", SET_COLOURS["A"], SET_COLOURS["A"], SET_COLOURS["B"]]  # bg, x, y; z: B
    for ax, values in zip(fig.axes, series.values(), strict=True):
        assert [p.get_height() for p in ax.patches] == pytest.approx(values.tolist())
        assert [matplotlib.colors.to_hex(p.get_facecolor()) for p in ax.patches] == colours
        assert ax.get_ylim() == pytest.approx((0.0, 3.3))  # one scale: the largest value + 10 %
    no_bg = plot_class_bars({"n": series["with"]}, names, [1, 2], "norm", background=False)
    assert [p.get_height() for p in no_bg.axes[0].patches] == pytest.approx([2.0, 0.5, 1.0])
    assert [t.get_text() for t in no_bg.axes[0].get_xticklabels()] == ["x", "y", "z"]
    with pytest.raises(ValueError, match="expected \\(4,\\)"):
        plot_class_bars({"bad": torch.rand(3)}, names, [1], "norm")
    result = {
        s: {"segm": {"AP": 10.0 * i, "AP75": 5.0}, "mask_iou": {"mIoU": 50.0}}
        for i, s in enumerate(("A", "B", "all"))
    }
    fig = plot_ap_comparison({"run1": result, "run2": result})
    assert len(fig.axes) == 3
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [0.0, 0.0, 10.0, 10.0]  # A bars of both runs, then B bars
    assert [p.get_height() for p in fig.axes[1].patches] == [5.0] * 4  # AP75
    assert [p.get_height() for p in fig.axes[2].patches] == [50.0] * 4  # mIoU
    assert [ax.get_title() for ax in fig.axes] == ["mask AP", "mask AP75", "mask mIoU"]
    assert fig.axes[2].get_ylim() == pytest.approx((48.0, 52.0))  # where the data is, not from 0
    assert fig.axes[0].get_ylim() == pytest.approx((0.0, 12.0))  # 0 to 10, 2-point margins
    fig = plot_loss_terms({"loss_mask": torch.tensor(0.7), "loss_classifier": 1.2})
    ax = fig.axes[0]
    assert [p.get_width() for p in ax.patches] == pytest.approx([0.7, 1.2])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["loss_mask", "loss_classifier"]
    assert ax.get_title() == "Losses of one step" and ax.get_xlim()[1] == pytest.approx(1.5)


def test_plot_images_side_by_side() -> None:
    from mxr.course.figures import plot_images

    as_uint8 = (IMAGE * 255).round().to(torch.uint8)
    fig = plot_images({"gt": IMAGE, "pred": as_uint8}, title="t")
    assert [ax.get_title() for ax in fig.axes] == ["gt", "pred"]
    for ax in fig.axes:  # a float image in [0, 1] and its uint8 version show the same pixels
        assert (ax.images[0].get_array() == as_uint8.permute(1, 2, 0).numpy()).all()
    with pytest.raises(ValueError, match="expected \\(3, H, W\\)"):
        plot_images({"bad": torch.rand(32, 32)})


def test_run_key_counts_what_decides_the_weights(shapesx_root, tmp_path) -> None:  # noqa: ANN001
    import dataclasses

    from conftest import tiny_config

    from mxr.engine.run_key import run_key
    from mxr.errors import MissingFileError

    cfg = tiny_config(shapesx_root)
    key = run_key(cfg)
    assert len(key) == 64 and run_key(tiny_config(shapesx_root)) == key
    # logging and checkpointing do not change what a run learns; the seed and the data do
    assert (
        run_key(tiny_config(shapesx_root, ["train.log_every=3", "train.checkpoint_every=2"])) == key
    )
    assert run_key(tiny_config(shapesx_root, ["train.seed=1"])) != key
    assert run_key(tiny_config(shapesx_root, ["data.flip_prob=0.0"])) != key
    # the same generated data at another path (a moved clone) is the same data ...
    moved = tmp_path / "moved"
    shutil.copytree(shapesx_root, moved)
    assert run_key(tiny_config(moved)) == key
    # ... other data there is not
    manifest = json.loads((moved / "manifest.json").read_text())
    (moved / "manifest.json").write_text(json.dumps({**manifest, "seed": 7}))
    assert run_key(tiny_config(moved)) != key
    # a stage-2 run's detector counts by its bytes, wherever it was copied
    det_a, det_b, det_c = (tmp_path / n for n in ("a.pt", "b.pt", "c.pt"))
    det_a.write_bytes(b"detector"), det_b.write_bytes(b"detector"), det_c.write_bytes(b"other")

    def stage2(path: Path):  # noqa: ANN202
        return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from=str(path)))

    assert run_key(stage2(det_a)) == run_key(stage2(det_b)) != run_key(stage2(det_c))
    with pytest.raises(MissingFileError, match="train.init_from: .*missing.pt not found"):
        run_key(stage2(tmp_path / "missing.pt"))


def test_two_names_for_one_config_share_one_run(shapesx_root, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from conftest import tiny_config

    from mxr.course.runs import runs_dir, train_or_load
    from mxr.engine.run_key import run_key

    monkeypatch.setenv("MXR_RUNS", str(tmp_path / "course"))
    cfg = tiny_config(shapesx_root, ["train.iterations=2"])
    first = train_or_load("a", cfg, progress=False)
    again = train_or_load("b", cfg, progress=False)
    assert first.origin == "trained" and again.origin == "cached"
    assert first.out_dir == again.out_dir == runs_dir() / run_key(cfg)[:12]
    assert again.eval == first.eval
    other = train_or_load("a", tiny_config(shapesx_root, ["train.iterations=2", "train.seed=1"]))
    assert other.out_dir != first.out_dir and other.origin == "trained"


def test_an_interrupted_run_is_not_taken_for_a_finished_one(
    shapesx_root, tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    from conftest import tiny_config

    import mxr.engine.loop
    from mxr.course.runs import train_or_load

    monkeypatch.setenv("MXR_RUNS", str(tmp_path / "course"))
    cfg = tiny_config(shapesx_root, ["train.iterations=2"])
    real_train = mxr.engine.loop.train

    def interrupted(cfg, out_dir, **kw):  # noqa: ANN001, ANN202
        real_train(cfg, out_dir, **{**kw, "eval_split": None})
        raise KeyboardInterrupt  # stopped before its evaluation

    monkeypatch.setattr(mxr.engine.loop, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_or_load("run", cfg, progress=False)
    monkeypatch.setattr(mxr.engine.loop, "train", real_train)
    done = train_or_load("run", cfg, progress=False)  # resumed at its end: only evaluated
    assert not done.cached and train_or_load("run", cfg, progress=False).cached
    (done.out_dir / "eval.json").write_text('{"A": {"segm"')  # cut short by a stop mid-write
    again = train_or_load("run", cfg, progress=False)
    assert not again.cached
    assert json.loads((done.out_dir / "eval.json").read_text()) == again.eval


def test_course_config_takes_train_overrides_including_the_length() -> None:
    from mxr.course.runs import course_config

    base = course_config("oracle")
    longer = course_config("oracle", iterations=3 * base.train.iterations, seed=1)
    assert longer.train.iterations == 3 * base.train.iterations and longer.train.seed == 1
    assert longer.train.checkpoint_every == longer.train.iterations  # sized from the new length
    assert course_config("oracle", warmup_iters=5).train.warmup_iters == 5


# ----------------------------------------------------------------- what the detector calls each object
def _det(boxes: list, labels: list, scores: list) -> dict:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.long),
        "scores": torch.tensor(scores, dtype=torch.float32),
    }


# Two true objects: class 2 (a B class, say) at the left, class 1 at the right.
TRUTH = {
    "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]),
    "labels": torch.tensor([2, 1]),
}
# On the left object the top-scoring detection says 3 (a neighbour), a weaker one says 2; the right
# object is found with its own class; one detection covers nothing.
DETECTIONS = _det(
    [[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30], [50, 50, 60, 60]],
    [2, 3, 1, 4],
    [0.35, 0.6, 0.9, 0.7],
)


def test_box_confusion_takes_the_top_scoring_overlapping_detection() -> None:
    from mxr.course.analysis import box_confusion

    m = box_confusion([DETECTIONS], [TRUTH], num_classes=5, iou=0.5, score=0.3)
    assert m.shape == (5, 5) and int(m.sum()) == 3
    assert int(m[2, 3]) == 1 and int(m[2, 2]) == 0  # called by its neighbour, the higher score
    assert int(m[1, 1]) == 1 and int(m[0, 4]) == 1  # own class; a detection on no object
    high = box_confusion([DETECTIONS], [TRUTH], num_classes=5, score=0.8)
    assert int(high[2, 0]) == 1 and int(high[1, 1]) == 1 and int(high[0].sum()) == 0  # missed
    # at IoU 0.95 the neighbour's box (IoU 0.9) no longer claims the object, the own-class one does
    strict = box_confusion([DETECTIONS], [TRUTH], num_classes=5, iou=0.95, score=0.3)
    assert int(strict[2, 2]) == 1 and int(strict[0, 3]) == 1
    with pytest.raises(ValueError, match="1 predictions for 2 targets"):
        box_confusion([DETECTIONS], [TRUTH, TRUTH], num_classes=5)
    with pytest.raises(ValueError, match="label 4 is not valid"):
        box_confusion([DETECTIONS], [TRUTH], num_classes=4, score=0.0)


def test_confusion_outcomes_sum_rows_by_what_the_objects_were_called() -> None:
    from mxr.course.analysis import confusion_outcomes

    m = torch.zeros(5, 5, dtype=torch.long)
    m[2, 2], m[2, 3], m[2, 4], m[2, 0], m[1, 2] = 1, 5, 2, 7, 9
    assert confusion_outcomes(m, [2], {2: [1, 3]}) == {
        "own": 1,
        "related": 5,
        "other": 2,
        "missed": 7,
    }
    assert confusion_outcomes(m, [1, 2], {})["other"] == 9 + 5 + 2  # nothing related
    with pytest.raises(ValueError, match="label 0 is not valid"):
        confusion_outcomes(m, [0], {})


def test_plot_confusion_marks_sets_and_counts() -> None:
    from mxr.course.analysis import box_confusion
    from mxr.course.figures import plot_confusion
    from mxr.report import SET_COLOURS

    names = ["bg", "a1", "b2", "a3", "a4"]
    m = box_confusion([DETECTIONS], [TRUTH], num_classes=5, score=0.3)
    fig = plot_confusion(m, names, a_labels=[1, 3, 4], title="t")
    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows == ["no object", "a1 [A]", "b2 [B]"]  # only rows with a count
    cols = ax.get_xticklabels()
    assert cols[0].get_text() == "missed" and cols[2].get_text() == "b2 [B]"
    assert cols[2].get_color() == SET_COLOURS["B"] and cols[1].get_color() == SET_COLOURS["A"]
    assert sorted(t.get_text() for t in ax.texts) == ["1", "1", "1"]
    assert len(ax.patches) == 1  # the one B row is outlined
    with pytest.raises(ValueError, match="expected \\(5, 5\\)"):
        plot_confusion(m[:4, :4], names, [1])
    with pytest.raises(ValueError, match="all zeros"):
        plot_confusion(torch.zeros(5, 5, dtype=torch.long), names, [1])


def test_plot_overlaps_ground_truth_vs_detections() -> None:
    from mxr.course.figures import plot_overlaps

    names = ["bg", "a1", "b2", "a3", "a4"]
    fig = plot_overlaps(TRUTH, DETECTIONS, names, a_labels=[1, 3, 4], score=0.3)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["b2 [B]", "a1 [A]"]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "a1 [A] 0.90",
        "a4 [A] 0.70",
        "a3 [A] 0.60",
        "b2 [B] 0.35",
    ]  # detections by score
    cells = {t.get_text(): t.get_color() for t in ax.texts}
    assert cells == {"1.00": "darkgreen", "0.90": "red"}  # the neighbour's overlap is wrong
    empty = plot_overlaps(TRUTH, _det([], [], []), names, [1, 3, 4])
    assert empty.axes[0].get_ylabel() == "no detection"
    with pytest.raises(ValueError, match="no instance"):
        plot_overlaps(
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}, DETECTIONS, names, [1]
        )


def test_mask_holes_finds_enclosed_background_only() -> None:
    from mxr.course.analysis import mask_holes

    ring = torch.zeros(9, 9, dtype=torch.bool)
    ring[2:7, 2:7] = True
    ring[4, 4] = False  # a one-pixel hole
    holes = mask_holes(ring)
    assert holes.sum() == 1 and bool(holes[4, 4])
    fork = ring.clone()
    fork[4, 4:7] = False  # the gap opens to the outside: no hole
    assert mask_holes(fork).sum() == 0
    diagonal = torch.eye(5, dtype=torch.bool) | torch.eye(5, dtype=torch.bool).flip(1)
    assert mask_holes(diagonal).sum() == 0  # background joined through the border
    with pytest.raises(ValueError, match="expected \\(H, W\\)"):
        mask_holes(torch.zeros(1, 3, 3, dtype=torch.bool))


def test_transfer_order_figure_draws_each_input_where_its_numbers_put_it() -> None:
    from mxr.course.figures import transfer_order_figure

    def row(label, sigma, dist, miou):  # noqa: ANN001, ANN202
        return {
            "label": label,
            "sigma": sigma,
            "distance": [dist, dist] if dist is not None else [None, None],
            "distance_mean": dist,
            "B_mIoU": [miou - 1, miou + 1],
            "B_mIoU_mean": miou,
            "B_mIoU_std": 1.414,
        }

    rows = [
        row("noisy 0.5", 0.5, 0.6, 78.0),
        row("ideal", 0.0, 0.0, 80.0),
        row("w_det: cls", None, 0.62, 76.0),
        row("control", None, None, 78.1),
    ]
    fig = transfer_order_figure(rows)
    ax = fig.axes[0]
    curve = ax.lines[0]  # the embedding's curve, in order of σ
    assert list(curve.get_xdata()) == [0.0, 0.6] and list(curve.get_ydata()) == [80.0, 78.0]
    control = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(control) == 1 and list(control[0].get_ydata()) == [78.1, 78.1]
    texts = [t.get_text() for t in ax.texts]
    assert {"noisy 0.5", "ideal", "w_det: cls", " control"} <= set(texts)
    with pytest.raises(ValueError, match="rows is empty"):
        transfer_order_figure([])
