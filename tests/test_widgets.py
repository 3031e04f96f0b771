"""mxr.course.widgets: the pure functions behind the notebook widgets, and the widgets' wiring."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from mxr.course.widgets import (  # noqa: E402
    MASK_HEAD_CHOICES,
    InstanceIoU,
    RunLog,
    box_masks,
    compare_models,
    comparison_chart,
    comparison_rows,
    comparison_table,
    config_from_choices,
    dataset_browser,
    default_choices,
    describe_choices,
    detection_counts,
    failure_cases,
    failure_figure,
    html_table,
    image_bytes,
    instance_ious,
    iou_distribution_figure,
    ious_by_label,
    jpeg,
    loss_figure,
    mask_iou,
    mean_iou,
    render_sample,
    run_groups,
    run_name,
    sample_summary,
    score_threshold_viewer,
    split_table_rows,
    training_panel,
)
from mxr.data import CocoInstances  # noqa: E402

PNG_MAGIC = b"\x89PNG"


@pytest.fixture(scope="module")
def ds(shapesx_root: Path) -> CocoInstances:
    return CocoInstances(
        shapesx_root / "val",
        shapesx_root / "annotations" / "instances_val.json",
        split="annotations/split.json",
    )


def test_render_sample_shape_and_summary_names_sets(ds: CocoInstances) -> None:
    out = render_sample(ds, 0)
    image, target = ds[0]
    assert out.dtype == torch.uint8 and out.shape == image.shape
    text = sample_summary(ds, 0)
    assert text.startswith(f"image 1/{len(ds)} (id {int(target['image_id'])})")
    n = len(target["labels"])
    assert f"{n} instances" in text
    assert text.count("[A]") + text.count("[B]") == n
    assert text.count("+mask") == int(target["has_mask"].sum())


def test_render_sample_bad_index_names_range(ds: CocoInstances) -> None:
    with pytest.raises(IndexError, match=f"has {len(ds)} images"):
        render_sample(ds, len(ds))


def test_image_bytes_scales_and_encodes_png_or_jpeg() -> None:
    import io

    from PIL import Image

    image = torch.zeros(3, 10, 12, dtype=torch.uint8)
    image[0, :5] = 255  # the top half red: enlarged with nearest neighbour, it stays pure red
    png = image_bytes(image, scale=2)
    assert png.startswith(PNG_MAGIC)
    decoded = Image.open(io.BytesIO(png))
    assert decoded.size == (24, 20) and decoded.getpixel((0, 9)) == (255, 0, 0)
    assert decoded.getpixel((0, 10)) == (0, 0, 0)
    jpg = image_bytes(image.permute(1, 2, 0).numpy(), "jpeg", quality=90)
    assert jpg.startswith(b"\xff\xd8") and Image.open(io.BytesIO(jpg)).size == (12, 10)


def test_dataset_browser_slider_updates_image_and_caption(ds: CocoInstances) -> None:
    box = dataset_browser(ds)
    assert box.slider.max == len(ds) - 1
    first = box.image.value
    assert bytes(first).startswith(PNG_MAGIC)
    box.slider.value = 1
    assert "image 2/" in box.caption.value
    assert box.image.value != first


# ----------------------------------------------------------------------------- training panel


def _fake_eval(a: float, b: float) -> dict:
    def part(ap: float) -> dict:
        stats = {k: ap for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
        return {"segm": stats, "bbox": dict(stats), "mask_iou": {"mIoU": ap + 10}}

    return {"A": part(a), "B": part(b), "all": part((a + b) / 2)}


def test_config_from_choices_sets_model_and_budget() -> None:
    cfg = config_from_choices(
        {
            "mask_head": "transfer",
            "transfer_input": "cls",
            "structure": "1-layer",
            "stop_grad": False,
            "mlp_fusion": False,
            "iterations": 40,
        }
    )
    m = cfg.model
    assert (m.mask_head, m.transfer_input, m.transfer_layers) == ("transfer", "cls", 1)
    assert (m.stop_grad, m.mlp_fusion) == (False, False)
    assert cfg.train.iterations == 40 and cfg.train.checkpoint_every == 40
    # one sizing rule with course_config: log_every = max(1, min(configured 10, iterations // 4))
    assert cfg.train.warmup_iters <= 4 and cfg.train.log_every == 10
    relu = config_from_choices({"structure": "2-layer ReLU"}).model
    assert (relu.transfer_layers, relu.transfer_activation) == (2, "relu")


def test_config_from_choices_agnostic_and_oracle() -> None:
    agnostic = config_from_choices({"mask_head": "agnostic", "mlp_fusion": True})
    assert agnostic.model.mask_head == "agnostic" and agnostic.model.mlp_fusion
    assert agnostic.data.train_masks == "A"
    oracle = config_from_choices({"mask_head": "oracle", "mlp_fusion": False})
    assert oracle.model.mask_head == "class" and oracle.data.train_masks == "all"


@pytest.mark.parametrize(
    ("choices", "match"),
    [
        ({"mask_head": "deep"}, "mask_head='deep' is not valid; expected one of 'agnostic'"),
        ({"transfer_input": "box+cls"}, "transfer_input='box\\+cls' is not valid"),
        ({"structure": "3-layer"}, "structure='3-layer' is not valid"),
        ({"iterations": 0}, "iterations=0 is not valid; expected a positive integer"),
        ({"lr": 0.1}, "unknown choice\\(s\\) 'lr'"),
        ({"seed": -1}, "seed=-1 is not valid; expected an integer >= 0"),
    ],
)
def test_bad_choices_name_the_field(choices: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        config_from_choices(choices)


def test_run_name_and_label_follow_the_choices() -> None:
    names = {
        run_name({"mask_head": h, "mlp_fusion": m, "stop_grad": s})
        for h in MASK_HEAD_CHOICES
        for m in (True, False)
        for s in (True, False)
    }
    # stop-grad only matters for transfer: 2 (agnostic) + 2 (oracle) + 4 (transfer)
    assert len(names) == 8
    choices = {"mask_head": "transfer", "transfer_input": "cls+box", "stop_grad": False}
    assert describe_choices({**choices, "iterations": 6}) == (
        "transfer cls+box 2-layer LeakyReLU no stop-grad +MLP (6 it)"
    )


def test_runlog_comparison_table_and_chart() -> None:
    first = RunLog(choices=default_choices(), eval=_fake_eval(30.0, 20.0), seconds=12.3)
    pending = RunLog(choices=default_choices())
    second = RunLog(
        choices={**default_choices(), "mask_head": "agnostic"},
        eval=_fake_eval(25.0, 5.0),
        cached=True,
    )
    runs = [first, pending, second]
    rows = comparison_rows(runs)
    assert [r[0] for r in rows] == ["1", "3"]  # the unevaluated run is left out, numbers kept
    assert rows[0][2:] == ["30.0", "20.0", "40.0", "30.0", "12"]
    assert rows[1][-1] == "cached"
    table = comparison_table(runs)
    assert table.splitlines()[0].startswith("| # | run | mask AP A | mask AP B")
    fig = comparison_chart(runs)
    assert len(fig.axes) == 2
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [30.0, 25.0, 20.0, 5.0]  # set A bars, then set B bars
    assert fig.axes[0].get_legend() is not None and fig.axes[0].get_title()


def test_split_table_rows_and_html_escape() -> None:
    rows = split_table_rows(_fake_eval(30.0, 20.0))
    assert [r[0] for r in rows] == ["A", "B", "all"]
    assert rows[1] == ["B", "20.0", "20.0", "20.0", "30.0"]
    html = html_table(["a<b"], [["x&y"]], caption="c")
    assert "a&lt;b" in html and "x&amp;y" in html and "<caption" in html


def test_loss_figure_plots_records_and_waits_when_empty() -> None:
    records = [{"iter": i, "loss": 2.0 / i, "loss_mask": 0.7} for i in range(1, 5)]
    fig = loss_figure(records, "t")
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.lines] == ["loss", "loss_mask"]
    assert list(ax.lines[0].get_xdata()) == [1, 2, 3, 4]
    assert ax.get_xlabel() == "iteration" and ax.get_title() == "t"
    empty = loss_figure([])
    assert not empty.axes[0].lines and "waiting" in empty.axes[0].texts[0].get_text()
    import mxr.course.viz

    assert loss_figure is mxr.course.viz.loss_figure  # the one loss curve, also the panel's


def test_training_panel_wires_button_to_training(monkeypatch: pytest.MonkeyPatch) -> None:
    import mxr.course

    seen: dict = {}

    def fake_train_or_load(name, cfg, progress=True, callback=None):
        seen["name"], seen["cfg"] = name, cfg
        for it in (1, 2, 3):
            callback(it, {"iter": it, "loss": 1.0 / it, "loss_mask": 0.5})
        return {
            "model": None,
            "eval": _fake_eval(30, 10),
            "out_dir": "x",
            "metrics": "m",
            "cached": False,
        }

    monkeypatch.setattr(mxr.course, "train_or_load", fake_train_or_load)
    panel = training_panel()
    panel.min_plot_interval_s = 0.0
    panel.mask_head.value = "agnostic"
    assert panel.stop_grad.disabled and panel.transfer_input.disabled
    before = panel.plot.value
    panel.train_button.click()  # trains in a background thread
    assert panel.wait(timeout=60) is panel.runs[0]
    assert seen["cfg"].model.mask_head == "agnostic"
    assert seen["name"] == run_name(panel.choices())
    assert len(panel.runs) == 1 and len(panel.runs[0].records) == 3
    assert panel.plot.value != before
    assert ">A<" in panel.table.value and ">B<" in panel.table.value
    assert "30.0" in panel.comparison.value and bytes(panel.chart.value).startswith(PNG_MAGIC)
    log = panel.run(mask_head="oracle", iterations=5)
    assert panel.mask_head.value == "oracle" and log.choices["iterations"] == 5
    assert len(panel.runs) == 2 and "#2" not in panel.comparison.value  # table numbers, no '#'
    assert not panel.train_button.disabled


def test_training_panel_error_shown_in_status(monkeypatch: pytest.MonkeyPatch) -> None:
    import mxr.course

    def broken(name, cfg, progress=True, callback=None):
        raise FileNotFoundError("no data in <data/shapesx>")

    monkeypatch.setattr(mxr.course, "train_or_load", broken)
    panel = training_panel()
    panel.train_button.click()  # the button swallows the error and shows it
    with pytest.raises(FileNotFoundError):
        panel.wait(timeout=60)  # ... and wait() hands it to whoever waits for the training
    shown = panel.status.value
    assert "Training failed: FileNotFoundError: no data in &lt;data/shapesx&gt;" in shown
    assert not panel.runs and panel.table.value == ""  # nothing half-finished is shown as a run
    assert not panel.train_button.disabled  # the learner can fix the cause and press it again
    with pytest.raises(FileNotFoundError, match="no data in"):
        panel.run()

    def works(name, cfg, progress=True, callback=None):
        callback(1, {"iter": 1, "loss": 1.0})
        return {"model": None, "eval": _fake_eval(30, 10), "out_dir": "x", "metrics": "m",
                "cached": False}  # fmt: skip

    monkeypatch.setattr(mxr.course, "train_or_load", works)
    panel.train_button.click()  # after the failure, the same panel trains normally
    panel.wait(timeout=60)
    assert len(panel.runs) == 1 and panel.status.value.startswith("Done:")


@pytest.fixture
def course_env(shapesx_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The course layer pointed at the tiny data, smoke budget, runs cached under a fresh folder
    (returned: runs land in ``<it>/smoke/<run name>``)."""
    monkeypatch.setenv("MXR_BUDGET", "smoke")
    monkeypatch.setenv("MXR_DATA", str(shapesx_root))
    monkeypatch.setenv("MXR_RUNS", str(tmp_path))
    return tmp_path


@pytest.mark.slow
def test_training_panel_real_run(course_env: Path) -> None:
    tmp_path = course_env
    panel = training_panel()
    log = panel.run(iterations=2, mlp_fusion=False)
    assert [r["iter"] for r in log.records] == [1, 2] and not log.cached
    assert set(log.eval) == {"A", "B", "all"}
    again = panel.run()
    assert again.cached and [r["iter"] for r in again.records] == [1, 2]
    assert (tmp_path / "smoke" / run_name(log.choices) / "last.pt").is_file()


def test_panel_default_and_variant_choices_are_the_course_variants() -> None:
    # the panel opens on τ(embed)+MLP; every notebook variant is reachable from the panel's menu,
    # as the same run (same_run_config) as the notebooks' course_config(variant)
    from mxr.config import config_to_dict
    from mxr.course import NOTEBOOK_VARIANTS, VARIANT_CHOICES, course_config, same_run_config

    assert default_choices()["transfer_input"] == "embed" and default_choices()["seed"] == 0
    assert set(NOTEBOOK_VARIANTS) <= set(VARIANT_CHOICES)
    for variant, choices in VARIANT_CHOICES.items():
        panel_cfg = config_to_dict(config_from_choices(choices))
        assert same_run_config(panel_cfg, config_to_dict(course_config(variant))), variant
    assert not same_run_config(
        config_to_dict(config_from_choices(VARIANT_CHOICES["transfer_mlp"])),
        config_to_dict(course_config("transfer_embed_mlp")),
    )


@pytest.mark.parametrize("iterations", [1, 7, 12, 40, 800])
def test_panel_sizes_logging_with_course_configs_rule(iterations: int) -> None:
    from mxr.course import course_config

    panel = config_from_choices({"iterations": iterations}).train
    course = course_config("transfer_embed_mlp", iterations=iterations).train
    assert (panel.log_every, panel.warmup_iters, panel.checkpoint_every) == (
        course.log_every,
        course.warmup_iters,
        course.checkpoint_every,
    )
    assert panel.log_every == max(1, min(10, iterations // 4))


def test_panel_seed_control_sets_the_config_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    import mxr.course

    seen: dict = {}

    def fake(name, cfg, progress=True, callback=None):
        seen["name"], seen["seed"] = name, cfg.train.seed
        callback(1, {"iter": 1, "loss": 1.0})
        return {"model": None, "eval": _fake_eval(30, 10), "out_dir": "x", "metrics": "m",
                "cached": False}  # fmt: skip

    monkeypatch.setattr(mxr.course, "train_or_load", fake)
    panel = training_panel()
    assert panel.seed.value == 0
    panel.seed.value = 2
    assert panel.choices()["seed"] == 2
    log = panel.run()
    assert seen["seed"] == 2 and log.seed == 2 and seen["name"].endswith("-seed2")
    assert config_from_choices({"seed": 5}).train.seed == 5
    assert run_name({"seed": 0}) != run_name({"seed": 1})
    assert log.label.endswith(", seed 2")
    panel.run(seed=3)
    assert seen["seed"] == 3 and panel.seed.value == 3


def test_panel_offers_every_transfer_input_with_its_meaning() -> None:
    from mxr.model.transfer import TRANSFER_INPUTS

    panel = training_panel()
    assert panel.transfer_input.value == "embed"  # the default
    for k in TRANSFER_INPUTS:
        panel.transfer_input.value = k  # an input the menu lacks raises a TraitError
        assert panel.choices()["transfer_input"] == k
        assert config_from_choices(panel.choices()).model.transfer_input == k
    assert {"embed", "randn"} <= set(TRANSFER_INPUTS)
    panel.transfer_input.value = "randn"
    assert "control" in panel.transfer_input.label
    panel.transfer_input.value = "embed"
    assert "embedding" in panel.transfer_input.label


def test_comparison_groups_seeds_of_one_config_as_mean_and_std() -> None:
    base = default_choices()

    def run(seed: int, a: float, b: float, **extra) -> RunLog:
        return RunLog(choices={**base, **extra, "seed": seed}, eval=_fake_eval(a, b), seconds=10.0)

    runs = [
        run(0, 30.0, 20.0),
        run(0, 25.0, 5.0, mask_head="agnostic"),
        run(1, 99.0, 99.0),  # replaced by the retrained seed 1 below
        run(1, 34.0, 24.0),
        RunLog(choices={**base, "seed": 2}),  # not evaluated: left out
    ]
    rows = comparison_rows(runs)
    assert len(rows) == 2  # two configs, however many seeds
    assert rows[0][0] == "1, 4" and rows[1][0] == "2"
    assert "seeds 0, 1 (mean ± std)" in rows[0][1] and "seed 0" in rows[1][1]
    # mask AP A: 30 and 34 -> 32.0 ± 2.8 (sample std); B: 20 and 24; mIoU = AP + 10
    assert rows[0][2:6] == ["32.0 ± 2.8", "22.0 ± 2.8", "42.0 ± 2.8", "32.0 ± 2.8"]
    assert rows[1][2:6] == ["25.0", "5.0", "35.0", "15.0"]  # one seed: the value alone
    assert [len(g) for g in run_groups(runs)] == [2, 1]
    fig = comparison_chart(runs)
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == [32.0, 25.0, 22.0, 5.0]
    assert len(ax.containers) == 2 + 2  # the bars of A and B, an error bar per several-seed group
    assert [t.get_text() for t in ax.get_xticklabels()] == ["#1,4", "#2"]
    # the other head with the same seed is its own config
    assert RunLog(choices={**base, "mask_head": "oracle"}).config_key != runs[0].config_key
    assert runs[0].config_key == runs[3].config_key


def test_runlog_from_variant_uses_the_course_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import mxr.course
    from mxr.config import config_to_dict

    seen: dict = {}
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"iter": 4, "loss": 1.5}\n')

    def fake(name, cfg, progress=True, callback=None):
        seen["name"], seen["cfg"] = name, cfg
        return {"model": None, "eval": _fake_eval(30, 10), "out_dir": "x", "metrics": metrics,
                "cached": True}  # fmt: skip

    monkeypatch.setattr(mxr.course, "train_or_load", fake)
    log = RunLog.from_variant("agnostic_mlp")
    assert seen["name"] == "agnostic_mlp"
    assert config_to_dict(seen["cfg"]) == config_to_dict(mxr.course.course_config("agnostic_mlp"))
    assert log.label == "agnostic_mlp, seed 0" and log.cached and log.mask_ap("B") == 10
    assert log.records == [{"iter": 4, "loss": 1.5}]
    reused = RunLog(choices=default_choices(), eval=_fake_eval(1, 1), seconds=3.0, adopted=True)
    assert (log.origin, reused.origin) == ("cached", "adopted")
    assert [r[-1] for r in comparison_rows([log, reused])] == ["cached", "reused"]
    assert log.config_key == RunLog(choices={"mask_head": "agnostic"}).config_key
    with pytest.raises(ValueError, match="variant='agnostic_deep' is not valid"):
        RunLog.from_variant("agnostic_deep")


def test_comparison_seed_chart_shows_mean_and_each_seed() -> None:
    from mxr.course.widgets import comparison_seed_chart

    per_seed = {
        "agnostic_mlp": {"mIoU": [73.0, 74.0, 72.0], "AP75": [11.0, 9.0, 5.0]},
        "oracle": {"mIoU": [80.0, 80.0, 80.0], "AP75": [13.0, 11.0, 6.0]},
    }
    fig = comparison_seed_chart(per_seed, ["agnostic_mlp", "oracle"])
    assert len(fig.axes) == 2
    means = [line.get_ydata()[0] for line in fig.axes[0].lines]
    assert means == pytest.approx([73.0, 80.0])
    seeds = [c for c in fig.axes[1].collections]
    assert len(seeds) == 3 and [list(c.get_offsets()[:, 1]) for c in seeds][2] == [5.0, 6.0]
    low, high = fig.axes[0].get_ylim()
    assert 60 < low < 72 and high > 80  # fitted to the values, not from 0
    with pytest.raises(ValueError, match="rows \\['transfer_mlp'\\] not in per_seed"):
        comparison_seed_chart(per_seed, ["transfer_mlp"])


@pytest.mark.slow
def test_stop_button_stops_a_background_training_early(course_env: Path) -> None:
    import threading

    from mxr.engine import load_checkpoint

    tmp_path = course_env
    panel = training_panel()
    first_record, pressed = threading.Event(), threading.Event()
    draw = panel._draw

    def draw_and_hold(log: RunLog, force: bool = False) -> None:
        draw(log, force)
        if log.records and not first_record.is_set():
            first_record.set()  # the training thread is at its first logged iteration ...
            pressed.wait(timeout=120)  # ... and goes on once Stop was pressed

    panel._draw = draw_and_hold
    thread = panel.start(iterations=40, mlp_fusion=False)  # log_every = 10
    assert first_record.wait(timeout=300), "no logged iteration"
    assert thread.is_alive() and panel.training  # this thread is free while it trains
    assert panel.stop_button.disabled is False and panel.train_button.disabled is True
    panel.stop_button.click()
    pressed.set()
    log = panel.wait(timeout=300)
    assert log is panel.last and log.stopped_at == 10 and log.eval is None
    assert [r["iter"] for r in log.records] == [10]
    assert not panel.runs and panel.status.value.startswith("Stopped:")
    assert not panel.training and not panel.train_button.disabled and panel.stop_button.disabled
    run_dir = tmp_path / "smoke" / run_name(log.choices)
    assert load_checkpoint(run_dir / "last.pt")["iteration"] == 10
    assert not (run_dir / "eval.json").exists()


# ----------------------------------------------------------------------------- inspecting masks


def test_box_masks_and_mask_iou() -> None:
    m = box_masks(torch.tensor([[1.0, 2.0, 4.0, 3.0]]), 5, 6)
    assert m.shape == (1, 5, 6) and int(m.sum()) == 3 and bool(m[0, 2, 1:4].all())
    a = torch.zeros(2, 4, 4, dtype=torch.bool)
    b = torch.zeros(2, 4, 4, dtype=torch.bool)
    a[0, :2] = True  # 8 px
    b[0, 1:3] = True  # 8 px, 4 shared
    assert mask_iou(a, b).tolist() == [pytest.approx(4 / 12), 1.0]  # two empty masks agree


def test_failure_cases_mean_iou_and_by_label() -> None:
    rs = [
        InstanceIoU(0, 0, 2, 0.9, 0.5),
        InstanceIoU(0, 1, 1, 0.1, 0.4),
        InstanceIoU(1, 0, 2, 0.3, 0.2),
    ]
    assert [r.iou for r in failure_cases(rs, 2)] == [0.1, 0.3]
    assert ious_by_label(rs) == {1: [0.1], 2: [0.9, 0.3]}
    assert mean_iou(rs, [2]) == pytest.approx(0.6)
    assert mean_iou(rs, [2], box=True) == pytest.approx(0.35)
    assert mean_iou(rs, [7]) is None


def test_detection_counts_split_a_b() -> None:
    preds = [{"scores": torch.tensor([0.9, 0.4, 0.2]), "labels": torch.tensor([1, 2, 1])}]
    assert detection_counts(preds, [0.1, 0.5], a_labels=[1]) == {"A": [2, 1], "B": [1, 0]}


@pytest.fixture(scope="module")
def val_all(shapesx_root: Path) -> CocoInstances:
    return CocoInstances(
        shapesx_root / "val",
        shapesx_root / "annotations" / "instances_val.json",
        split="annotations/split.json",
        masks="all",
    )


def test_instance_ious_cover_every_masked_instance(
    trained_run: dict, val_all: CocoInstances
) -> None:
    model = trained_run["model"].cpu().eval()
    rs = instance_ious(model, val_all)
    n = sum(len(val_all[i][1]["labels"]) for i in range(len(val_all)))
    assert len(rs) == n and all(0.0 <= r.iou <= 1.0 and 0.0 < r.box_iou <= 1.0 for r in rs)
    assert {r.label for r in rs} & set(val_all.b_labels)  # B instances are scored too
    fig = iou_distribution_figure({"m1": rs, "m2": rs}, val_all.class_names, val_all.a_labels)
    assert len(fig.axes) == 2 and fig.axes[0].get_ylabel() == "mask IoU" and fig.legends
    fails = failure_figure(model, val_all, failure_cases(rs, 3))
    assert len(fails.axes) == 6 and "IoU" in fails.axes[0].get_title()


def test_compare_models_and_threshold_viewer(trained_run: dict, val_all: CocoInstances) -> None:
    model = trained_run["model"].cpu().eval()
    fig = compare_models({"a": model, "b": model}, val_all, [0, 1], score_thresh=0.0)
    assert len(fig.axes) == 2 * 3
    assert [ax.get_title() for ax in fig.axes[:3]] == ["ground truth", "a", "b"]
    viewer = score_threshold_viewer(model, val_all, [0, 1], score_thresh=0.5)
    first = viewer.image.value
    assert bytes(first).startswith(PNG_MAGIC) and len(viewer.predictions) == 2
    viewer.slider.value = 0.05
    assert viewer.image.value != first or all(len(p["scores"]) == 0 for p in viewer.predictions)
    with pytest.raises(ValueError, match="indices is empty"):
        score_threshold_viewer(model, val_all, [])


def test_published_results(tmp_path: Path) -> None:
    from mxr.course import published_results

    assert published_results(tmp_path / "absent.json") is None
    p = tmp_path / "r.json"
    p.write_text('{"rows": {"agnostic": {"A": {"segm": {"AP": 1.0}}}}}')
    assert published_results(p)["rows"]["agnostic"]["A"]["segm"]["AP"] == 1.0
    for text, why in (("[]", "top level is list"), ("{", "malformed JSON"), ("{}", "'rows'")):
        p.write_text(text)
        with pytest.raises(ValueError, match=f"r.json: .*{why}.*'rows' mapping"):
            published_results(p)


def test_jpeg_of_figure() -> None:
    fig = loss_figure([{"iter": 1, "loss": 1.0}])
    img = jpeg(fig, quality=70)
    assert img.format == "jpeg" and img.data.startswith(b"\xff\xd8")


def test_gallery_instances_first_per_class_in_order() -> None:
    from mxr.course.widgets import gallery_instances

    rs = [InstanceIoU(i, 0, lab, 0.5, 0.5) for i, lab in enumerate([2, 1, 2, 2, 1])]
    assert [r.index for r in gallery_instances(rs, [2, 1], per_class=2)] == [0, 2, 1, 4]
    assert gallery_instances(rs, [7]) == []
    with pytest.raises(ValueError, match="per_class=0"):
        gallery_instances(rs, [1], per_class=0)


def test_model_gallery_shows_the_same_instances_per_model(
    trained_run: dict, val_all: CocoInstances
) -> None:
    from mxr.course.widgets import model_gallery

    model = trained_run["model"].cpu().eval()
    rs = instance_ious(model, val_all)
    labels = sorted({r.label for r in rs})[:2]
    fig = model_gallery({"m1": model, "m2": model}, val_all, labels, {"m1": rs, "m2": rs})
    assert len(fig.axes) == 2 * 2 * 2  # rows x models x per_class
    assert [t.get_text() for t in fig.texts][-2:] == ["m1", "m2"]  # a header per model block
    titles = [ax.get_title() for ax in fig.axes]  # row by row: m1's two tiles, then m2's
    assert titles[0].startswith("IoU") and titles[:2] == titles[2:4]  # the same instances
    with pytest.raises(ValueError, match="same models"):
        model_gallery({"m1": model}, val_all, labels, {"m2": rs})
    with pytest.raises(ValueError, match="'m2' is not scored"):
        model_gallery({"m1": model, "m2": model}, val_all, labels, {"m1": rs, "m2": rs[:0]})
    with pytest.raises(ValueError, match="labels is empty"):
        model_gallery({"m1": model}, val_all, [], {"m1": rs})
    with pytest.raises(ValueError, match="label 10000 is not valid"):
        model_gallery({"m1": model}, val_all, [10_000], {"m1": rs})
    absent = next(x for x in range(1, val_all.num_classes) if x not in {r.label for r in rs})
    fig = model_gallery({"m1": model}, val_all, [labels[0], absent], {"m1": rs})
    assert "no instance" in fig.axes[2].texts[0].get_text()  # the absent class's row says so
