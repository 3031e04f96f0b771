"""ipywidgets front-ends over pure functions.

Every widget here is a thin shell: the work (drawing, building a config, tabulating runs) is done by a
plain function in this module or in :mod:`mxr.viz` that returns data, an image or a Figure, and that
function has its own tests. An error inside an ipywidgets callback is only shown in the widget's
output area (nbval cannot see it), so the callbacks stay a few lines long.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import torch
from matplotlib.figure import Figure

from mxr.viz import draw_instances


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """A matplotlib Figure as PNG bytes (for an ``ipywidgets.Image``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def image_png(image: torch.Tensor, scale: int = 1) -> bytes:
    """A uint8 ``(3, H, W)`` image as PNG bytes, enlarged ``scale`` times (nearest neighbour)."""
    from PIL import Image

    array = image.detach().cpu().permute(1, 2, 0).numpy()
    pil = Image.fromarray(array)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- dataset browser


def sample_summary(ds: Any, index: int, class_names: Sequence[str] | None = None) -> str:
    """One line about dataset item ``index``: image id, and each instance as ``name [A|B]``.

    Instances of set A carry ``+mask`` when the dataset gives their mask.
    """
    _check_index(ds, index)
    _, target = ds[index]
    names = list(class_names) if class_names is not None else list(ds.class_names)
    a_set = set(getattr(ds, "a_labels", range(len(names))))
    has_mask = target.get("has_mask")
    parts = []
    for i, label in enumerate(int(x) for x in target["labels"]):
        name = names[label] if 0 <= label < len(names) else str(label)
        part = f"{name} [{'A' if label in a_set else 'B'}]"
        if has_mask is not None and bool(has_mask[i]):
            part += "+mask"
        parts.append(part)
    n_a = sum(1 for x in target["labels"].tolist() if x in a_set)
    head = (
        f"image {index + 1}/{len(ds)} (id {int(target['image_id'])}): "
        f"{len(parts)} instances, {n_a} A, {len(parts) - n_a} B"
    )
    return head + (" - " + ", ".join(parts) if parts else "")


def render_sample(ds: Any, index: int, class_names: Sequence[str] | None = None) -> torch.Tensor:
    """Dataset item ``index`` drawn with boxes, masks and ``name [A|B]`` labels: uint8 ``(3, H, W)``."""
    _check_index(ds, index)
    image, target = ds[index]
    names = list(class_names) if class_names is not None else list(ds.class_names)
    return draw_instances(image, target, names, getattr(ds, "a_labels", None))


def _check_index(ds: Any, index: int) -> None:
    if not 0 <= int(index) < len(ds):
        raise IndexError(f"index={index} is out of range; the dataset has {len(ds)} images")


def dataset_browser(ds: Any, class_names: Sequence[str] | None = None, scale: int = 3) -> Any:
    """A slider over the dataset's images showing boxes, masks and A/B colouring.

    Args:
        ds: a :class:`mxr.data.CocoInstances` (anything with ``__len__``, ``__getitem__``,
            ``class_names`` and ``a_labels``).
        class_names: label names (index = label); default ``ds.class_names``.
        scale: on-screen enlargement of the (small) images.

    Returns:
        An ``ipywidgets.VBox``; its ``.slider``, ``.image`` and ``.caption`` attributes are the parts.
    """
    import ipywidgets as w

    if len(ds) == 0:
        raise ValueError("dataset_browser: the dataset has no images")
    slider = w.IntSlider(
        value=0, min=0, max=len(ds) - 1, description="image", continuous_update=False
    )
    image = w.Image(format="png")
    caption = w.HTML()
    legend = w.HTML(
        "<span style='color:#ff8c00'>&#9632;</span> set A (masks in training) &nbsp; "
        "<span style='color:#00c8ff'>&#9632;</span> set B (boxes only)"
    )

    def update(change: Any = None) -> None:
        index = int(slider.value)
        image.value = image_png(render_sample(ds, index, class_names), scale=scale)
        caption.value = f"<code>{sample_summary(ds, index, class_names)}</code>"

    slider.observe(update, names="value")
    update()
    box = w.VBox([slider, image, legend, caption])
    box.slider, box.image, box.caption = slider, image, caption
    return box
