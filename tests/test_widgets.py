"""mxr.widgets: the pure functions behind the notebook widgets, and the widgets' wiring."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from mxr.data import CocoInstances  # noqa: E402
from mxr.widgets import (  # noqa: E402
    dataset_browser,
    image_png,
    render_sample,
    sample_summary,
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
