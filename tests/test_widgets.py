"""mxr.widgets: the pure functions behind the notebook widgets, and the widgets' wiring."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from mxr.data import CocoInstances  # noqa: E402
from mxr.widgets import (  # noqa: E402
    MASK_HEAD_CHOICES,
    RunLog,
    comparison_chart,
    comparison_rows,
    comparison_table,
    config_from_choices,
    dataset_browser,
    default_choices,
    describe_choices,
    html_table,
    image_png,
    loss_figure,
    render_sample,
    run_name,
    sample_summary,
    split_table_rows,
    training_panel,
)

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


def test_image_png_scales() -> None:
    import io

    from PIL import Image

    png = image_png(torch.zeros(3, 10, 12, dtype=torch.uint8), scale=2)
    assert png.startswith(PNG_MAGIC)
    assert Image.open(io.BytesIO(png)).size == (24, 20)


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
    assert cfg.train.warmup_iters <= 4 and cfg.train.log_every == 2
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
    assert describe_choices({"mask_head": "transfer", "stop_grad": False, "iterations": 6}) == (
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
    panel.train_button.click()
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
        raise FileNotFoundError("no data here")

    monkeypatch.setattr(mxr.course, "train_or_load", broken)
    panel = training_panel()
    panel.train_button.click()  # the button swallows the error and shows it
    assert "no data here" in panel.status.value and not panel.runs
    with pytest.raises(FileNotFoundError):
        panel.run()


@pytest.mark.slow
def test_training_panel_real_run(
    shapesx_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MXR_BUDGET", "smoke")
    monkeypatch.setenv("MXR_DATA", str(shapesx_root))
    monkeypatch.setenv("MXR_RUNS", str(tmp_path))
    panel = training_panel()
    log = panel.run(iterations=2, mlp_fusion=False)
    assert [r["iter"] for r in log.records] == [1, 2] and not log.cached
    assert set(log.eval) == {"A", "B", "all"}
    again = panel.run()
    assert again.cached and [r["iter"] for r in again.records] == [1, 2]
    assert (tmp_path / "smoke" / run_name(log.choices) / "last.pt").is_file()
