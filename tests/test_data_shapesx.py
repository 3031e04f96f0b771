"""ShapesX generator: determinism, COCO validity, the split file and the manifest."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from mxr.data.coco import CocoInstances
from mxr.data.shapesx import (
    DESIGNS,
    class_names,
    class_slots,
    default_split,
    ensure_shapesx,
    generate_shapesx,
    read_manifest,
)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _gen(root: Path, seed: int = 0, **kw) -> Path:
    return generate_shapesx(
        root, train=4, val=2, test=2, seed=seed, image_size=64, progress=False, **kw
    )


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a, b = _files(_gen(tmp_path / "a")), _files(_gen(tmp_path / "b"))
    assert a.keys() == b.keys()
    assert a == b
    assert "annotations/split.json" in a and "manifest.json" in a and "train/000001.png" in a


def test_different_seed_gives_different_images(tmp_path: Path) -> None:
    a, b = _files(_gen(tmp_path / "a", seed=0)), _files(_gen(tmp_path / "b", seed=1))
    assert a["train/000001.png"] != b["train/000001.png"]
    assert a["annotations/instances_train.json"] != b["annotations/instances_train.json"]


def test_annotations_load_through_pycocotools(tmp_path: Path) -> None:
    root = _gen(tmp_path / "sx")
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(root / "annotations" / f"instances_{split}.json"))
        assert len(coco.imgs) == n
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == class_names()
        assert coco.anns, "every split should have objects"
        for ann in coco.anns.values():
            assert isinstance(ann["segmentation"]["counts"], str)
            mask = coco.annToMask(ann)
            assert mask.shape == (64, 64)
            assert int(mask.sum()) == ann["area"]
            ys, xs = np.nonzero(mask)  # the box is the mask's (amodal) extent
            assert ann["bbox"] == [
                xs.min(),
                ys.min(),
                xs.max() + 1 - xs.min(),
                ys.max() + 1 - ys.min(),
            ]
            assert 0.0 <= ann["visible_fraction"] < 1.0  # default design: every object is occluded


def test_split_file_and_manifest(tmp_path: Path) -> None:
    root = _gen(tmp_path / "sx")
    split = json.loads((root / "annotations" / "split.json").read_text())
    assert split == default_split()
    assert len(split["A"]) >= 20 and len(split["B"]) == 6
    assert set(split["A"]) | set(split["B"]) == set(class_names())
    assert not set(split["A"]) & set(split["B"])
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["design"] == "hue-cap"
    assert manifest["counts"]["train"]["images"] == 4
    assert manifest["params"]["slab"] == "tail" and manifest["params"]["cue_cap"]
    ds = CocoInstances(
        root / "train",
        root / "annotations" / "instances_train.json",
        split="annotations/split.json",
    )
    assert [ds.class_names[i] for i in ds.b_labels] == split["B"]


def test_designs_and_parameter_overrides(tmp_path: Path) -> None:
    for design in DESIGNS:
        root = _gen(tmp_path / design, design=design)
        assert json.loads((root / "manifest.json").read_text())["design"] == design
    root = _gen(tmp_path / "custom", objects_per_image=(1, 1))
    data = json.loads((root / "annotations" / "instances_train.json").read_text())
    assert len(data["annotations"]) <= 4
    with pytest.raises(ValueError, match="unknown ShapesX parameter"):
        _gen(tmp_path / "bad", colour_per_class=True)
    with pytest.raises(ValueError, match="design"):
        _gen(tmp_path / "bad2", design="nope")


def test_ensure_generates_only_when_missing(tmp_path: Path) -> None:
    root = tmp_path / "sx"
    ensure_shapesx(root, train=2, val=1, test=1, image_size=64, progress=False)
    manifest = (root / "manifest.json").read_bytes()
    ensure_shapesx(root, train=9, val=9, test=9, image_size=64, progress=False)  # exists: untouched
    assert (root / "manifest.json").read_bytes() == manifest
    assert len(list((root / "train").glob("*.png"))) == 2


def test_classes_are_dealt_in_balanced_blocks_with_b_in_every_run() -> None:
    names, b = class_names(), set(default_split()["B"])
    slots = class_slots(0, 1, 0, 60)
    assert sorted(slots[:30]) == list(range(30)) and sorted(slots[30:]) == list(range(30))
    assert all(sum(names[c] in b for c in slots[i : i + 5]) == 1 for i in range(0, 60, 5))
    assert class_slots(0, 1, 28, 5) == slots[28:33]  # a window depends only on its blocks
    assert class_slots(1, 1, 0, 30) != slots[:30]


def test_test_split_has_its_own_seed(tmp_path: Path) -> None:
    a = _files(_gen(tmp_path / "a"))
    b = _files(_gen(tmp_path / "b", test_seed=5))
    assert (
        a["train/000001.png"] == b["train/000001.png"]
        and a["val/000001.png"] == b["val/000001.png"]
    )
    assert a["test/000001.png"] != b["test/000001.png"]
    assert json.loads(a["manifest.json"])["test_seed"] == 1  # default: seed + 1
    assert json.loads(b["manifest.json"])["test_seed"] == 5
    assert json.loads(b["annotations/instances_test.json"])["info"]["seed"] == 5


def test_ensure_regenerates_data_of_an_older_version(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    root = _gen(tmp_path / "sx")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["version"] = 0
    (root / "manifest.json").write_text(json.dumps(manifest))
    ensure_shapesx(root, train=3, val=1, test=1, image_size=64, progress=False)
    assert "version 0; regenerating" in capsys.readouterr().out
    assert len(list((root / "train").glob("*.png"))) == 3
    (root / "manifest.json").write_text('{"generator": "mxr.data.shapesx", "vers')  # cut short
    ensure_shapesx(root, train=2, val=1, test=1, image_size=64, progress=False)
    assert "version unreadable; regenerating" in capsys.readouterr().out
    assert read_manifest(root)["counts"]["train"]["images"] == 2


def test_read_manifest_names_the_file_and_the_command(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"manifest\.json: ShapesX manifest .*mxr data shapesx"
    ):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("[]")
    with pytest.raises(ValueError, match="manifest.json: top level is list"):
        read_manifest(tmp_path)


def test_hue_cap_cues_name_the_family_and_the_member() -> None:
    """Paint hue follows the family; the near-white cap grows with the member index k."""
    import colorsys

    from mxr.data.shapesx import render_image, resolve_design

    params = resolve_design("hue-cap", clutter=(0, 0), distractor_slabs=(0, 0), noise_std=0.0)
    params["objects_per_image"] = (1, 1)
    caps, hues = {}, {}
    for cat in (0, 4, 10, 14):  # fork-1, fork-5, ring-1, ring-5
        img, objs = render_image(np.random.default_rng(cat), 128, params, [cat])
        px = img[objs[0]["mask"]].astype(float)
        white = (px > 225).all(axis=1)
        caps[cat] = int(white.sum())
        paint = px[(px.max(axis=1) - px.min(axis=1)) > 60]  # saturated pixels: the paint
        hues[cat] = np.median([colorsys.rgb_to_hsv(*(p / 255))[0] for p in paint])
    assert caps[4] > caps[0] and caps[14] > caps[10]  # deeper cap for k = 5 than k = 1
    assert abs(hues[0] - 0.0) < 0.06 or abs(hues[0] - 1.0) < 0.06  # fork: hue 0
    assert abs(hues[10] - 2 / 6) < 0.06 and abs(hues[14] - 2 / 6) < 0.06  # ring: hue 2/6


def test_cap_jitter_blurs_the_member_cue_and_is_recorded(tmp_path: Path) -> None:
    """cap_jitter > 0 makes the cap depth vary between instances of one member (so neighbouring
    members' caps overlap); 0 keeps every instance's cap the same; the manifest records it."""
    from mxr.data.shapesx import render_image, resolve_design

    def cap_areas(jitter: float, cat: int) -> list[int]:
        params = resolve_design(
            "hue-cap", clutter=(0, 0), distractor_slabs=(0, 0), noise_std=0.0,
            radius=(12.0, 12.0), cap_jitter=jitter,
        )  # fmt: skip
        params["objects_per_image"] = (1, 1)
        areas = []
        for seed in range(12):
            img, objs = render_image(np.random.default_rng(seed), 128, params, [cat])
            areas.append(int((img[objs[0]["mask"]] > 225).all(axis=1).sum()))
        return areas

    exact, jittered = cap_areas(0.0, 2), cap_areas(0.8, 2)  # fork-3
    assert max(exact) - min(exact) <= 0.1 * np.mean(exact)  # one depth, up to rotation's pixels
    assert max(jittered) - min(jittered) > 0.4 * np.mean(exact)
    assert max(cap_areas(0.8, 1)) > min(jittered)  # some fork-2 cap is deeper than a fork-3 cap
    with pytest.raises(ValueError, match="cap_jitter=-1 is not valid"):
        resolve_design("hue-cap", cap_jitter=-1)
    root = _gen(tmp_path / "j", cap_jitter=0.6)
    assert read_manifest(root)["params"]["cap_jitter"] == 0.6
