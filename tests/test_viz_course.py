"""The course figures (walkthrough, weight PCA, per-class bars, AP comparison) return Figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mxr.course.viz import (  # noqa: E402
    anchors_at,
    group_separation,
    pca_project,
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
from mxr.engine.loop import TrainResult  # noqa: E402

IMAGE = torch.rand(3, 32, 32)


def _grid_anchors(stride: int, size: int) -> torch.Tensor:
    """Square anchors of one size centred on a stride grid over the 32 px image: ``(N, 4)``."""
    c = torch.arange(stride / 2, 32, stride)
    cy, cx = torch.meshgrid(c, c, indexing="ij")
    centres = torch.stack([cx.flatten(), cy.flatten()], 1)
    return torch.cat([centres - size / 2, centres + size / 2], 1)


def test_feature_maps_one_panel_per_level_plus_image() -> None:
    feats = {
        "0": torch.rand(1, 8, 8, 8),
        "1": torch.rand(1, 8, 4, 4),
        "pool": torch.rand(1, 8, 2, 2),
    }
    fig = plot_feature_maps(feats, IMAGE)
    assert isinstance(fig, Figure)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0].startswith("input") and "stride 4" in titles[1] and "stride 16" in titles[3]
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
    assert "16 anchors" in fig.axes[0].get_title() and "4 anchors" in fig.axes[1].get_title()
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
    legend_text = " ".join(t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts())
    assert "positive anchors (3)" in legend_text
    assert "neutral centres (7)" in legend_text
    assert "(10 of 54)" in legend_text  # sampled negatives of all negatives
    with pytest.raises(ValueError, match="labels"):
        plot_rpn_targets(IMAGE, anchors, labels[:5], torch.zeros(0, 4))


def test_box_sets_and_maps_grid() -> None:
    boxes = torch.tensor([[1.0, 1.0, 10.0, 10.0]] * 5)
    fig = plot_box_sets(IMAGE, {"before": boxes, "after": boxes[:2]}, max_boxes=3)
    assert "5 boxes (3 drawn)" in fig.axes[0].get_title()
    fig = plot_maps_grid(
        {
            "rgb": torch.rand(3, 3, 7, 7),
            "mask": torch.rand(3, 28, 28),
            "logits": torch.randn(3, 28, 28),
        },
        col_titles=["a", "b", "c"],
    )
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 9 + 2  # 3 × 3 maps + a colour bar for each non-RGB row
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
    assert len([ax for ax in fig.axes if ax.get_title()]) == 4
    assert "% of variance" in fig.axes[0].get_xlabel()
    with pytest.raises(ValueError, match="rows for"):
        plot_weight_pca({"w": x[:3]}, names, groups, list(range(10)), [False] * 10)


def test_class_bars_ap_comparison_and_loss_terms() -> None:
    names = ["__background__", "x", "y", "z"]
    fig = plot_class_bars({"with": torch.rand(4), "without": torch.rand(4)}, names, [1, 2], "norm")
    assert [ax.get_title() for ax in fig.axes] == ["with", "without"]
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
    fig = plot_loss_terms({"loss_mask": torch.tensor(0.7), "loss_classifier": 1.2})
    ax = fig.axes[0]
    assert [p.get_width() for p in ax.patches] == pytest.approx([0.7, 1.2])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["loss_mask", "loss_classifier"]
    assert ax.get_title() == "Losses of one step" and ax.get_xlim()[1] == pytest.approx(1.5)


def test_plot_images_side_by_side() -> None:
    from mxr.course.viz import plot_images

    fig = plot_images({"gt": IMAGE, "pred": (IMAGE * 255).to(torch.uint8)}, title="t")
    assert [ax.get_title() for ax in fig.axes] == ["gt", "pred"]
    with pytest.raises(ValueError, match="expected \\(3, H, W\\)"):
        plot_images({"bad": torch.rand(32, 32)})


def test_a_cached_run_is_reused_only_for_the_same_model_data_and_train() -> None:
    from mxr.config import config_to_dict
    from mxr.course import course_config, same_run_config

    wanted = config_to_dict(course_config("transfer_mlp"))
    stored = {k: dict(v) for k, v in wanted.items()}
    stored["model"] = {**wanted["model"], "num_classes": 31, "fpn_channels": 64}  # resolved
    assert same_run_config(stored, wanted)
    other = config_to_dict(course_config("agnostic_mlp"))  # same train/data, another mask head
    assert not same_run_config(stored, other)
    assert not same_run_config({**stored, "data": {**stored["data"], "flip_prob": 0.0}}, wanted)
    assert not same_run_config({**stored, "train": {**stored["train"], "seed": 1}}, wanted)
    # a run stored before a field existed counts as that field's default ...
    older = {
        **stored,
        "model": {k: v for k, v in stored["model"].items() if k != "transfer_zero_init"},
    }
    assert same_run_config(older, wanted)
    # ... and so does not match a run that asks for another value
    zero_init = config_to_dict(course_config("transfer_mlp"))
    zero_init["model"]["transfer_zero_init"] = True
    assert not same_run_config(older, zero_init)


def _ablation_twin(trained_run: TrainResult, ablation: Path) -> Path:
    """A copy of the session's finished ``trained_run`` laid out as an ablation run
    (``<ablation>/agnostic/seed0`` with its ``result.json``): a twin of ``tiny_config(root)``."""
    import shutil

    twin = ablation / "agnostic" / "seed0"
    shutil.copytree(trained_run.out_dir, twin)
    (twin / "result.json").write_text("{}")
    return twin


def test_a_finished_ablation_run_of_the_same_config_is_adopted_not_retrained(
    shapesx_root, trained_run, tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    import json

    from conftest import tiny_config

    from mxr.course import train_or_load

    cfg = tiny_config(shapesx_root)  # trained_run's config: reuse that training, do not repeat it
    twin = _ablation_twin(trained_run, tmp_path / "abl")
    monkeypatch.setenv("MXR_ABLATION", str(tmp_path / "abl"))
    monkeypatch.setenv("MXR_RUNS", str(tmp_path / "course"))
    res = train_or_load("run", cfg, progress=False)
    assert (res["out_dir"] / "last.pt").read_bytes() == (twin / "last.pt").read_bytes()
    assert res["adopted"] and not res["cached"]
    assert json.loads((res["out_dir"] / "eval.json").read_text()) == res["eval"]  # on val
    other = tiny_config(shapesx_root, ["train.iterations=2", "train.seed=1"])
    res2 = train_or_load("other", other, progress=False)  # no twin: trained here
    assert not res2["adopted"]
    assert (res2["out_dir"] / "last.pt").read_bytes() != (twin / "last.pt").read_bytes()
    res3 = train_or_load("same-as-other", other, progress=False)  # another notebook run's twin
    assert (res3["out_dir"] / "last.pt").read_bytes() == (res2["out_dir"] / "last.pt").read_bytes()
    # the run records its data's manifest, so the same data at another path (a moved clone) is
    # still this run's data: reloaded, not trained again
    from mxr.course import DATA_MANIFEST

    manifest = (shapesx_root / "manifest.json").read_text()
    assert (res2["out_dir"] / DATA_MANIFEST).read_text() == manifest
    (res2["out_dir"] / DATA_MANIFEST).unlink()  # as a run trained before runs recorded their data
    assert train_or_load("other", other, progress=False)["cached"]  # same path: reused ...
    assert (res2["out_dir"] / DATA_MANIFEST).read_text() == manifest  # ... and now recorded
    moved = tmp_path / "moved" / "shapesx"
    shutil.copytree(shapesx_root, moved)
    res4 = train_or_load(
        "other", tiny_config(moved, ["train.iterations=2", "train.seed=1"]), progress=False
    )
    assert res4["cached"]


def test_a_moved_clone_keeps_its_runs_while_the_data_manifest_is_the_same(tmp_path) -> None:
    import dataclasses
    import json

    from mxr.config import save_config
    from mxr.course import course_config, record_data, same_run

    def at(root: Path, seed: int = 0):  # noqa: ANN202
        root.mkdir(parents=True, exist_ok=True)
        (root / "manifest.json").write_text(json.dumps({"generator": "shapesx", "seed": seed}))
        return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(root)))

    cfg = course_config("transfer_mlp")
    old_clone, new_clone, run = tmp_path / "old", tmp_path / "new", tmp_path / "run"
    trained = at(old_clone / "data" / "shapesx")
    run.mkdir()
    save_config(trained, run / "config.yaml")
    wanted = at(new_clone / "data" / "shapesx")
    assert same_run(run, trained) and not same_run(run, wanted)  # nothing recorded: by path
    record_data(run, trained)
    shutil.rmtree(old_clone)  # the clone moved: its old path is gone
    assert same_run(run, wanted)
    other_seed = dataclasses.replace(wanted, train=dataclasses.replace(wanted.train, seed=1))
    assert not same_run(run, other_seed)  # the rest of the config still counts
    assert not same_run(run, at(new_clone / "data" / "shapesx", seed=1))  # other data there
    assert not same_run(tmp_path / "no-run", wanted)


def test_an_interrupted_retraining_is_not_taken_for_a_finished_run(
    shapesx_root, trained_run, tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    import json

    from conftest import tiny_config

    import mxr.engine
    from mxr.course import train_or_load

    monkeypatch.setenv("MXR_ABLATION", str(tmp_path / "abl"))
    monkeypatch.setenv("MXR_RUNS", str(tmp_path / "course"))
    _ablation_twin(trained_run, tmp_path / "abl")  # the first run is finished without training
    first = tiny_config(shapesx_root)
    done = train_or_load("run", first, progress=False)
    out = done["out_dir"]
    assert done["adopted"] and (out / "eval.json").is_file()
    changed = tiny_config(shapesx_root, ["train.iterations=2", "train.seed=1"])
    real_train = mxr.engine.train

    def interrupted(cfg, out_dir, **kw):  # noqa: ANN001, ANN202
        real_train(cfg, out_dir, **{**kw, "eval_split": None})
        raise KeyboardInterrupt  # stopped before its evaluation

    monkeypatch.setattr(mxr.engine, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_or_load("run", changed, progress=False)
    assert not (out / "eval.json").exists()  # the old run's evaluation is gone
    monkeypatch.setattr(mxr.engine, "train", real_train)
    assert not train_or_load("run", changed, progress=False)["cached"]
    assert train_or_load("run", changed, progress=False)["cached"]
    (out / "eval.json").write_text('{"A": {"segm"')  # cut short by a stop mid-write
    again = train_or_load("run", changed, progress=False)
    assert not again["cached"] and json.loads((out / "eval.json").read_text()) == again["eval"]


def test_run_origin_names_where_a_run_came_from() -> None:
    from mxr.course import run_origin

    assert run_origin({"cached": True}) == "cached"
    assert run_origin({"cached": False, "adopted": True}) == "adopted"
    assert run_origin({"cached": False, "adopted": False}) == "trained"


def test_course_config_takes_train_overrides_including_the_length() -> None:
    from mxr.course import course_config

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
    from mxr.course.viz import box_confusion

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
    from mxr.course.viz import confusion_outcomes

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
    from mxr.course.viz import SET_COLOURS, box_confusion, plot_confusion

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
    from mxr.course.viz import plot_overlaps

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
    from mxr.course.viz import mask_holes

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
