"""mxr.data.sample.ensure_coco_sample: a COCO-2017-layout sample with real category ids, valid and reproducible."""

from __future__ import annotations

import json
from pathlib import Path

from mxr.data.coco import CocoInstances
from mxr.data.sample import COCO_SAMPLE_CATEGORIES, ensure_coco_sample
from mxr.data.splits import VOC_CAT_IDS
from mxr.data.validate import validate_dataset


def test_coco_sample_layout_split_and_validity(tmp_path: Path) -> None:
    root = ensure_coco_sample(tmp_path / "s", train=6, val=3, seed=1, size=64)
    for split, n in (("train2017", 6), ("val2017", 3)):
        ann = root / "annotations" / f"instances_{split}.json"
        report = validate_dataset(ann, root / split)
        assert report.ok, str(report)
        assert len(json.loads(ann.read_text())["images"]) == n
    ds = CocoInstances(
        root / "val2017", root / "annotations" / "instances_val2017.json", split="voc", masks="all"
    )
    assert set(ds.a_cat_ids) == {c["id"] for c in COCO_SAMPLE_CATEGORIES} & set(VOC_CAT_IDS)
    assert len(ds.a_cat_ids) == 4 and len(ds.b_cat_ids) == 4
    image, target = ds[0]
    assert image.shape == (3, 64, 64) and len(target["masks"]) == len(target["labels"]) >= 1


def test_coco_sample_is_reproducible_and_reused(tmp_path: Path) -> None:
    a = ensure_coco_sample(tmp_path / "a", train=3, val=2, seed=5, size=64)
    b = ensure_coco_sample(tmp_path / "b", train=3, val=2, seed=5, size=64)
    ann = "annotations/instances_train2017.json"
    assert (a / ann).read_text() == (b / ann).read_text()
    stamp = (a / ann).stat().st_mtime_ns
    ensure_coco_sample(tmp_path / "a", train=3, val=2, seed=5, size=64)
    assert (a / ann).stat().st_mtime_ns == stamp  # present with the same parameters: not rewritten
    (a / "manifest.json").write_text('{"params": {"train"')  # cut short: generated again
    ensure_coco_sample(tmp_path / "a", train=3, val=2, seed=5, size=64)
    assert (a / ann).read_text() == (b / ann).read_text()
    assert (a / "manifest.json").read_text() == (b / "manifest.json").read_text()
