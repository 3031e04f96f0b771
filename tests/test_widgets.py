"""mxr.course.widgets: the pure functions behind the notebook widgets, and the widgets' wiring."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from mxr.course.analysis import detection_counts, failure_cases, run_groups
from mxr.course.choices import (
    MASK_HEAD_CHOICES,
    config_from_choices,
    default_choices,
    describe_choices,
    run_name,
)
from mxr.course.figures import (
    compare_models,
    comparison_chart,
    failure_figure,
    image_bytes,
    iou_distribution_figure,
    jpeg,
    loss_figure,
    render_sample,
)
from mxr.course.runs import CourseRun
from mxr.course.widgets import (
    COMPARISON_HEADER,
    SPLIT_TABLE_HEADER,
    RunLog,
    comparison_rows,
    comparison_table,
    dataset_browser,
    html_table,
    sample_summary,
    score_threshold_viewer,
    split_table_rows,
    training_panel,
)
from mxr.data.coco import CocoInstances  # noqa: E402
from mxr.engine.loop import TrainResult  # noqa: E402
from mxr.evaluation import InstanceIoU, box_masks, instance_ious, ious_by_label, mask_iou, mean_iou

PNG_MAGIC = b"\x89PNG"


@pytest.fixture(scope="module")
def ds(shapesx_root: Path) -> CocoInstances:
    return CocoInstances(
        shapesx_root / "val",
        shapesx_root / "annotations" / "instances_val.json",
        split="annotations/split.json",
    )


class TwoImages:
    """What the drawing functions read of a dataset: two grey 40 x 60 images (id 10: an A and a B
    instance, both with a mask; id 11: a B instance without one), classes a (set A) and b (set B)."""

    class_names = ["__background__", "a", "b"]
    a_labels = (1,)

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image = torch.full((3, 40, 60), GREY)
        if index == 1:
            return image, {
                "boxes": torch.tensor([[30.0, 2.0, 58.0, 38.0]]),
                "labels": torch.tensor([2]),
                "masks": torch.zeros(0, 40, 60),
                "has_mask": torch.tensor([False]),
                "image_id": torch.tensor(11),
            }
        masks = torch.zeros(2, 40, 60, dtype=torch.uint8)
        masks[0, 20:34, 8:26] = 1  # centre (y 27, x 17)
        masks[1, 20:34, 40:54] = 1  # centre (y 27, x 47)
        return image, {
            "boxes": torch.tensor([[2.0, 2.0, 28.0, 38.0], [32.0, 2.0, 58.0, 38.0]]),
            "labels": torch.tensor([1, 2]),
            "masks": masks,
            "has_mask": torch.tensor([True, True]),
            "image_id": torch.tensor(10),
        }


# A mask is painted at alpha 0.45 (torchvision's draw_segmentation_masks): int(0.55 * image +
# 0.45 * colour). On grey 100: set A's (255, 140, 0) -> (169, 118, 55); set B's (30, 144, 255)
# -> (68, 119, 169).
GREY = 100 / 255
A_ON_GREY, B_ON_GREY, PLAIN_GREY = [169, 118, 55], [68, 119, 169], [100, 100, 100]


def test_render_sample_paints_each_mask_in_its_set_colour() -> None:
    ds = TwoImages()
    out = render_sample(ds, 0)
    assert out[:, 27, 17].tolist() == A_ON_GREY and out[:, 27, 47].tolist() == B_ON_GREY
    assert out[:, 36, 17].tolist() == PLAIN_GREY  # in the A box, off its mask
    assert render_sample(ds, 1)[:, 27, 47].tolist() == PLAIN_GREY  # no mask, nothing painted
    assert sample_summary(ds, 0) == (
        "image 1/2 (id 10): 2 instances, 1 A, 1 B - a [A]+mask, b [B]+mask"
    )
    assert sample_summary(ds, 1) == "image 2/2 (id 11): 1 instances, 0 A, 1 B - b [B]"


def _pred(boxes: list, labels: list, scores: list, masks: torch.Tensor | None = None) -> dict:
    n = len(labels)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.long),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "masks": torch.zeros(n, 1, 40, 60) if masks is None else masks,
    }


# Detections on TwoImages (scores exact in binary): image 10, a B detection at 0.875 with the true B
# mask and an A detection at 0.25; image 11, an A detection at 0.75.
B_MASK = torch.zeros(2, 1, 40, 60)
B_MASK[0, 0, 20:34, 40:54] = 0.9
PREDICTIONS = [
    _pred([[32.0, 2.0, 58.0, 38.0], [2.0, 2.0, 28.0, 38.0]], [2, 1], [0.875, 0.25], B_MASK),
    _pred([[4.0, 4.0, 20.0, 20.0]], [1], [0.75]),
]


def test_compare_models_draws_each_models_detections_above_the_threshold() -> None:
    from mxr.report import A_COLOURS, B_COLOURS

    ds = TwoImages()
    fig = compare_models({"m": None}, ds, [0, 1], 0.5, predictions={"m": PREDICTIONS})
    assert [ax.get_title() for ax in fig.axes] == ["ground truth", "m", "", ""]
    assert [ax.get_ylabel() for ax in fig.axes[::2]] == ["image id 10", "image id 11"]
    gt, det, gt1, det1 = (torch.from_numpy(ax.images[0].get_array().copy()) for ax in fig.axes)
    assert gt.shape == (80, 120, 3)  # drawn at twice the size
    assert gt[54, 34].tolist() == A_ON_GREY and gt[54, 94].tolist() == B_ON_GREY

    def has(image: torch.Tensor, colour: tuple) -> bool:
        return bool((image == torch.tensor(colour, dtype=torch.uint8)).all(-1).any())

    # image 10: the B detection (0.875) with its mask; the A one (0.25) is not drawn at all
    assert det[54, 94].tolist() == B_ON_GREY and det[54, 34].tolist() == PLAIN_GREY
    assert has(det, B_COLOURS[0]) and not has(det, A_COLOURS[0])
    assert has(det1, A_COLOURS[0]) and not has(det1, B_COLOURS[0])  # image 11: the A one (0.75)
    assert has(gt1, B_COLOURS[0]) and gt1[54, 94].tolist() == PLAIN_GREY  # B box, no mask


def test_threshold_figure_counts_the_detections_kept() -> None:
    from mxr.course.figures import threshold_figure

    fig = threshold_figure(TwoImages(), [0, 1], PREDICTIONS, 0.5)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["image id 10: 1 kept", "image id 11: 1 kept"]
    curve = fig.axes[2]
    lines = {line.get_label(): line for line in curve.lines}
    thresholds = [i / 20 for i in range(1, 20)]  # 0.05 ... 0.95
    assert list(lines["set A classes"].get_xdata()) == thresholds
    # A: scores 0.25 and 0.75; B: 0.875 (kept where score >= threshold)
    assert list(lines["set A classes"].get_ydata()) == [2] * 5 + [1] * 10 + [0] * 4
    assert list(lines["set B classes"].get_ydata()) == [1] * 17 + [0] * 2
    assert list(lines["threshold"].get_xdata()) == [0.5, 0.5]
    at_quarter = threshold_figure(TwoImages(), [0], PREDICTIONS[:1], 0.25)
    assert at_quarter.axes[0].get_title() == "image id 10: 2 kept"


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
    assert first == image_bytes(render_sample(ds, 0), scale=3)  # the drawn sample, 3x
    box.slider.value = 1
    assert box.caption.value == f"<code>{sample_summary(ds, 1)}</code>"
    assert box.image.value == image_bytes(render_sample(ds, 1), scale=3)


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
    assert rows[0][2:] == ["30.0", "20.0", "20.0", "40.0", "30.0", "12"]
    assert rows[1][-1] == "cached"
    table = comparison_table(runs)
    assert table.splitlines()[0].startswith("| # | run | mask AP A | mask AP B | mask AP75 B |")
    fig = comparison_chart(runs)
    assert len(fig.axes) == 2
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [30.0, 25.0, 20.0, 5.0]  # set A bars, then set B bars
    assert [p.get_height() for p in fig.axes[1].patches] == [40.0, 35.0, 30.0, 15.0]  # mIoU
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == [first.group_label, second.group_label]  # runs by name
    low, high = fig.axes[0].get_ylim()  # the axis starts where the data is: 5 - 3.75, 30 + 3.75
    assert (low, high) == pytest.approx((1.25, 33.75))
    assert fig.axes[0].get_legend() is not None and fig.axes[0].get_title()


def test_split_table_rows_and_html_escape() -> None:
    rows = split_table_rows(_fake_eval(30.0, 20.0))
    assert [r[0] for r in rows] == ["A", "B", "all"]
    assert rows[1] == ["B", "20.0", "20.0", "20.0", "20.0", "30.0"]
    html = html_table(["a<b"], [["x&y"]], caption="c")
    assert "a&lt;b" in html and "x&amp;y" in html and "<caption" in html


def test_split_table_rows_show_mask_ap75() -> None:
    # every metric distinct, so each cell shows which key it was read from
    def part(offset: float) -> dict:
        segm = {"AP": 40.0 + offset, "AP50": 60.0 + offset, "AP75": 33.0 + offset}
        return {"segm": segm, "bbox": {"AP": 50.0 + offset}, "mask_iou": {"mIoU": 70.0 + offset}}

    rows = split_table_rows({"A": part(0.0), "B": part(-20.0)})  # no "all": its row is left out
    assert SPLIT_TABLE_HEADER == [
        "set",
        "mask AP",
        "mask AP50",
        "mask AP75",
        "box AP",
        "mask mIoU (true boxes)",
    ]
    assert rows == [
        ["A", "40.0", "60.0", "33.0", "50.0", "70.0"],
        ["B", "20.0", "40.0", "13.0", "30.0", "50.0"],
    ]
    ap75 = dict(zip(SPLIT_TABLE_HEADER, rows[1], strict=True))["mask AP75"]
    assert ap75 == "13.0"
    no_iou = split_table_rows({"B": {k: v for k, v in part(0.0).items() if k != "mask_iou"}})
    assert no_iou == [["B", "40.0", "60.0", "33.0", "50.0", "—"]]


def test_loss_figure_plots_records_and_waits_when_empty() -> None:
    records = [{"iter": i, "loss": 2.0 / i, "loss_mask": 0.7} for i in range(1, 5)]
    fig = loss_figure(records, "t")
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.lines] == ["loss", "loss_mask"]
    assert list(ax.lines[0].get_xdata()) == [1, 2, 3, 4]
    assert list(ax.lines[0].get_ydata()) == [2.0, 1.0, 2.0 / 3, 0.5]
    assert list(ax.lines[1].get_ydata()) == [0.7] * 4
    assert ax.get_xlabel() == "iteration" and ax.get_title() == "t"
    empty = loss_figure([])
    assert not empty.axes[0].lines and "waiting" in empty.axes[0].texts[0].get_text()


def test_training_panel_wires_button_to_training(monkeypatch: pytest.MonkeyPatch) -> None:
    import mxr.course.widgets

    seen: dict = {}

    def fake_train_or_load(name, cfg, progress=True, callback=None, reuse=True):
        seen["name"], seen["cfg"] = name, cfg
        for it in (1, 2, 3):
            callback(it, {"iter": it, "loss": 1.0 / it, "loss_mask": 0.5})
        return CourseRun(None, _fake_eval(30, 10), Path("x"), Path("m"), cached=False)

    monkeypatch.setattr(mxr.course.widgets, "train_or_load", fake_train_or_load)
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
    assert ">mask AP75<" in panel.table.value
    assert "30.0" in panel.comparison.value and bytes(panel.chart.value).startswith(PNG_MAGIC)
    log = panel.run(mask_head="oracle", iterations=5)
    assert panel.mask_head.value == "oracle" and log.choices["iterations"] == 5
    assert len(panel.runs) == 2 and "#2" not in panel.comparison.value  # table numbers, no '#'
    assert not panel.train_button.disabled


def test_training_panel_error_shown_in_status(monkeypatch: pytest.MonkeyPatch) -> None:
    import mxr.course.widgets

    def broken(name, cfg, progress=True, callback=None, reuse=True):
        raise FileNotFoundError("no data in <data/shapesx>")

    monkeypatch.setattr(mxr.course.widgets, "train_or_load", broken)
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

    def works(name, cfg, progress=True, callback=None, reuse=True):
        callback(1, {"iter": 1, "loss": 1.0})
        return CourseRun(None, _fake_eval(30, 10), Path("x"), Path("m"), cached=False)

    monkeypatch.setattr(mxr.course.widgets, "train_or_load", works)
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
    assert (
        Path(log.out_dir).parent == tmp_path / "smoke" and (Path(log.out_dir) / "last.pt").is_file()
    )


def test_panel_default_and_variant_choices_are_the_course_variants() -> None:
    # the panel opens on τ(embed)+MLP; every notebook variant is reachable from the panel's menu,
    # as the same config as the notebooks' course_config(variant), so the same cached run
    from mxr.config import config_to_dict
    from mxr.course.choices import choices_of
    from mxr.course.prime import NOTEBOOK_VARIANTS
    from mxr.course.runs import course_config

    assert default_choices()["transfer_input"] == "embed" and default_choices()["seed"] == 0
    assert choices_of("transfer_embed_mlp") == {
        k: v for k, v in default_choices().items() if k not in ("iterations", "seed")
    }
    for variant in NOTEBOOK_VARIANTS:
        panel_cfg = config_from_choices(choices_of(variant))
        assert config_to_dict(panel_cfg) == config_to_dict(course_config(variant)), variant
    assert choices_of("transfer_mlp_nostopgrad")["stop_grad"] is False
    assert choices_of("transfer_mlp_e2e")["protocol"] == "end to end"
    assert choices_of("agnostic") == {
        "mask_head": "agnostic",
        "mlp_fusion": False,
        "protocol": "stage-wise",
    }


@pytest.mark.parametrize("iterations", [1, 7, 12, 40, 800])
def test_panel_sizes_logging_with_course_configs_rule(iterations: int) -> None:
    from mxr.course.runs import course_config

    panel = config_from_choices({"iterations": iterations}).train
    course = course_config("transfer_embed_mlp", iterations=iterations).train
    assert (panel.log_every, panel.warmup_iters, panel.checkpoint_every) == (
        course.log_every,
        course.warmup_iters,
        course.checkpoint_every,
    )
    assert panel.log_every == max(1, min(10, iterations // 4))


def test_panel_seed_control_sets_the_config_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    import mxr.course.widgets

    seen: dict = {}

    def fake(name, cfg, progress=True, callback=None, reuse=True):
        seen["name"], seen["seed"] = name, cfg.train.seed
        callback(1, {"iter": 1, "loss": 1.0})
        return CourseRun(None, _fake_eval(30, 10), Path("x"), Path("m"), cached=False)

    monkeypatch.setattr(mxr.course.widgets, "train_or_load", fake)
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
    assert rows[0][2:7] == ["32.0 ± 2.8", "22.0 ± 2.8", "22.0 ± 2.8", "42.0 ± 2.8", "32.0 ± 2.8"]
    assert rows[1][2:7] == ["25.0", "5.0", "5.0", "35.0", "15.0"]  # one seed: the value alone
    assert [len(g) for g in run_groups(runs)] == [2, 1]
    fig = comparison_chart(runs)
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == [32.0, 25.0, 22.0, 5.0]
    assert len(ax.containers) == 2 + 2  # the bars of A and B, an error bar per several-seed group
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        runs[0].group_label,
        runs[1].group_label,
    ]
    # the other head with the same seed is its own config
    assert RunLog(choices={**base, "mask_head": "oracle"}).config_key != runs[0].config_key
    assert runs[0].config_key == runs[3].config_key


def test_runlog_from_variant_uses_the_course_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import mxr.course.widgets
    from mxr.config import config_to_dict
    from mxr.course.runs import course_config

    seen: dict = {}
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"iter": 4, "loss": 1.5}\n')

    def fake(name, cfg, progress=True, callback=None, reuse=True):
        seen["name"], seen["cfg"] = name, cfg
        return CourseRun(None, _fake_eval(30, 10), Path("x"), Path(metrics), cached=True)

    monkeypatch.setattr(mxr.course.widgets, "train_or_load", fake)
    log = RunLog.from_variant("agnostic_mlp")
    assert seen["name"] == "agnostic_mlp"
    assert config_to_dict(seen["cfg"]) == config_to_dict(course_config("agnostic_mlp"))
    assert log.label == "agnostic_mlp, seed 0" and log.cached and log.mask_ap("B") == 10
    assert log.records == [{"iter": 4, "loss": 1.5}]
    trained = RunLog(choices=default_choices(), eval=_fake_eval(1, 1), seconds=3.0)
    assert (log.origin, trained.origin) == ("cached", "trained")
    assert [r[-1] for r in comparison_rows([log, trained])] == ["cached", "3"]
    assert log.config_key == RunLog(choices={"mask_head": "agnostic"}).config_key
    with pytest.raises(ValueError, match="variant='agnostic_deep' is not valid"):
        RunLog.from_variant("agnostic_deep")


def test_comparison_seed_chart_shows_mean_and_each_seed() -> None:
    from mxr.course.figures import comparison_seed_chart

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

    from mxr.engine.checkpoint import load_checkpoint

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
    run_dir = Path(log.out_dir)
    assert run_dir.parent == tmp_path / "smoke"
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


def test_iou_distribution_figure_plots_each_class_median_and_box_guess() -> None:
    from mxr.report import SET_COLOURS

    rs = [
        InstanceIoU(0, 0, 2, 0.9, 0.5),
        InstanceIoU(0, 1, 1, 0.1, 0.4),
        InstanceIoU(1, 0, 2, 0.3, 0.2),
        InstanceIoU(1, 1, 2, 0.5, 0.8),
    ]
    other = [InstanceIoU(0, 0, 2, 0.6, 0.1), InstanceIoU(0, 1, 1, 0.2, 0.3)]
    fig = iou_distribution_figure({"m1": rs, "m2": other}, ["bg", "a", "b"], a_labels=[1])
    assert [ax.get_title() for ax in fig.axes] == [
        "m1: mask IoU given the true box, per class",
        "m2: mask IoU given the true box, per class",
    ]
    # per class (label order: a at x 0, b [B] at x 1): the median line of its IoUs (width 0.6),
    # its box in its set's colour and a diamond at the mean IoU of "mask = box"
    for ax, medians, diamonds in (
        (fig.axes[0], [0.1, 0.5], [0.4, 0.5]),  # b: IoUs 0.9, 0.3, 0.5; boxes 0.5, 0.2, 0.8
        (fig.axes[1], [0.2, 0.6], [0.3, 0.1]),
    ):
        assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b [B]"]
        lines = [ln for ln in ax.lines if len(ln.get_xdata()) == 2]
        got = {
            float(ln.get_xdata()[0]) + 0.3: float(ln.get_ydata()[0])
            for ln in lines
            if float(ln.get_xdata()[1] - ln.get_xdata()[0]) == pytest.approx(0.6)
        }
        assert got == pytest.approx({0.0: medians[0], 1.0: medians[1]})
        colours = [matplotlib.colors.to_hex(p.get_facecolor()) for p in ax.patches]
        assert colours == [SET_COLOURS["A"], SET_COLOURS["B"]]
        xs, ys = ax.collections[-1].get_offsets().T.tolist()
        assert xs == [0.0, 1.0] and ys == pytest.approx(diamonds)
        assert ax.get_ylim() == (0.0, 1.0)


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
    trained_run: TrainResult, val_all: CocoInstances
) -> None:
    from mxr.course.figures import crop_box
    from mxr.report import SET_RGB

    model = trained_run.model.cpu().eval()
    rs = instance_ious(model, val_all)
    n = sum(len(val_all[i][1]["labels"]) for i in range(len(val_all)))
    assert len(rs) == n and all(0.0 <= r.iou <= 1.0 and 0.0 < r.box_iou <= 1.0 for r in rs)
    assert {r.label for r in rs} & set(val_all.b_labels)  # B instances are scored too
    fig = iou_distribution_figure({"m1": rs, "m2": rs}, val_all.class_names, val_all.a_labels)
    assert len(fig.axes) == 2 and fig.axes[0].get_ylabel() == "mask IoU" and fig.legends
    cases = failure_cases(rs, 3)
    fails = failure_figure(model, val_all, cases)
    assert len(fails.axes) == 6  # a column per case: true mask above, prediction below
    for col, r in enumerate(cases):
        top = fails.axes[2 * col]  # drawn column by column
        s = "A" if r.label in val_all.a_labels else "B"
        name = val_all.class_names[r.label]
        assert top.get_title() == f"{name} [{s}]\nIoU {r.iou:.2f}"
        # the top tile: the crop around the true box, its true mask painted in the set's colour
        # at alpha 0.55 (int(0.45 * image + 0.55 * colour)), the rest of the crop as it is
        image, target = val_all[r.index]
        x0, y0, x1, y1 = crop_box(target["boxes"][r.instance], *image.shape[-2:])
        pixels = (image * 255).round()[:, y0:y1, x0:x1]
        k = int(target["has_mask"][: r.instance].sum())
        mask = target["masks"][k, y0:y1, x0:x1].bool()
        assert mask.any()
        colour = torch.tensor(SET_RGB[s], dtype=torch.float32)[:, None, None]
        want = torch.where(mask, (0.45 * pixels + 0.55 * colour).to(torch.uint8), pixels)
        tile = torch.from_numpy(top.images[0].get_array().copy()).permute(2, 0, 1)
        assert tile.tolist() == want.to(torch.uint8).tolist()


def test_compare_models_and_threshold_viewer(
    trained_run: TrainResult, val_all: CocoInstances
) -> None:
    from mxr.course.figures import threshold_figure
    from mxr.report import figure_png

    model = trained_run.model.cpu().eval()
    fig = compare_models({"a": model, "b": model}, val_all, [0, 1], score_thresh=0.0)
    assert len(fig.axes) == 2 * 3
    assert [ax.get_title() for ax in fig.axes[:3]] == ["ground truth", "a", "b"]
    viewer = score_threshold_viewer(model, val_all, [0, 1], score_thresh=0.5)
    first = viewer.image.value
    assert bytes(first).startswith(PNG_MAGIC) and len(viewer.predictions) == 2
    assert first == figure_png(threshold_figure(val_all, [0, 1], viewer.predictions, 0.5))
    viewer.slider.value = 0.05  # redrawn at the new threshold from the same predictions
    assert viewer.image.value == figure_png(
        threshold_figure(val_all, [0, 1], viewer.predictions, 0.05)
    )
    with pytest.raises(ValueError, match="indices is empty"):
        score_threshold_viewer(model, val_all, [])


def test_published_results(tmp_path: Path) -> None:
    from mxr.course.runs import published_results

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
    from mxr.course.analysis import gallery_instances

    rs = [InstanceIoU(i, 0, lab, 0.5, 0.5) for i, lab in enumerate([2, 1, 2, 2, 1])]
    assert [r.index for r in gallery_instances(rs, [2, 1], per_class=2)] == [0, 2, 1, 4]
    assert gallery_instances(rs, [7]) == []
    with pytest.raises(ValueError, match="per_class=0"):
        gallery_instances(rs, [1], per_class=0)


def test_model_gallery_shows_the_same_instances_per_model(
    trained_run: TrainResult, val_all: CocoInstances
) -> None:
    from mxr.course.figures import model_gallery

    model = trained_run.model.cpu().eval()
    rs = instance_ious(model, val_all)
    labels = sorted({r.label for r in rs})[:2]
    fig = model_gallery({"m1": model, "m2": model}, val_all, labels, {"m1": rs, "m2": rs})
    assert len(fig.axes) == 2 * 3 * 2  # rows x (ground truth + models) x per_class
    assert [t.get_text() for t in fig.texts][-3:] == ["ground truth", "m1", "m2"]  # block headers
    titles = [ax.get_title() for ax in fig.axes]  # row by row: the truth's tiles, m1's, m2's
    # a model's tile: the IoU (0-100) of the first two instances of its row's class
    want = []
    for label in labels:
        shown = [f"IoU {100 * r.iou:.0f}" for r in rs if r.label == label][:2]
        want += ["", ""] + 2 * (shown + [""] * (2 - len(shown)))
    assert titles == want
    # the ground truth's first tile is the true mask of the row's first instance, overlaid
    from mxr.course.analysis import set_of
    from mxr.course.figures import _overlay, crop_box
    from mxr.evaluation import instances_with_mask
    from mxr.report import SET_RGB

    first = next(r for r in rs if r.label == labels[0])
    image, target = val_all[first.index]
    true_mask = target["masks"][instances_with_mask(target).index(first.instance)] > 0.5
    colour = SET_RGB[set_of(first.label, val_all.a_labels)]
    crop = crop_box(target["boxes"][first.instance], *image.shape[-2:])
    drawn = fig.axes[0].images[0].get_array()
    assert (drawn == _overlay(image, true_mask, colour, crop)).all()
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
    assert "no instance" in fig.axes[4].texts[0].get_text()  # the absent class's row says so


def test_prime_trains_each_config_once() -> None:
    # two names for one config are one run folder: prime must not train it in two processes at once
    import json

    from mxr.config import config_to_dict
    from mxr.course.prime import distinct_runs, notebook_runs
    from mxr.course.runs import course_config

    def key(cfg) -> str:  # noqa: ANN001
        return json.dumps(config_to_dict(cfg), sort_keys=True, default=str)

    a, b = course_config("agnostic"), course_config("oracle")
    assert [n for n, _ in distinct_runs([("x", a), ("y", b), ("z", a)])] == ["x = z", "y"]
    runs, jobs = notebook_runs(), distinct_runs(notebook_runs())
    assert (
        len({key(c) for _, c in jobs}) == len(jobs) < len(runs)
    )  # the panel's default is a variant
    assert {key(c) for _, c in jobs} == {key(c) for _, c in runs}
    assert "transfer_embed_mlp = panel-" in " ".join(n for n, _ in jobs)


def test_comparison_rows_read_mask_ap75_of_set_b() -> None:
    ev = _fake_eval(30.0, 20.0)
    ev["B"]["segm"]["AP75"] = 17.5  # unlike every other B metric
    ev["A"]["segm"]["AP75"] = 99.0  # set A's AP75 is not a column
    (row,) = comparison_rows([RunLog(choices=default_choices(), eval=ev, seconds=1.0)])
    assert dict(zip(COMPARISON_HEADER, row, strict=True))["mask AP75 B"] == "17.5"
    assert "99.0" not in row
