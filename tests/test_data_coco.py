"""CocoInstances on a tiny COCO-format file with real COCO category ids and names."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from PIL import Image

from mxr.data.coco import CocoInstances, collate_fn
from mxr.data.splits import VOC_CAT_IDS, resolve_split

H, W = 24, 32
CATEGORIES = [  # real COCO 2017 ids and names: three VOC classes, three non-VOC
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 2, "name": "bicycle", "supercategory": "vehicle"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 18, "name": "dog", "supercategory": "animal"},
    {"id": 25, "name": "giraffe", "supercategory": "animal"},
    {"id": 59, "name": "pizza", "supercategory": "food"},
]


def _rle(x0: int, y0: int, x1: int, y1: int) -> dict:
    m = np.zeros((H, W), dtype=np.uint8, order="F")
    m[y0:y1, x0:x1] = 1
    r = mask_utils.encode(m)
    return {"size": [H, W], "counts": r["counts"].decode()}


def _coco() -> dict:
    anns = [
        # image 1: a person (polygon), a giraffe (RLE), a crowd of people, a zero-width car box
        {
            "id": 11,
            "image_id": 1,
            "category_id": 1,
            "bbox": [2, 3, 8, 10],
            "area": 80.0,
            "iscrowd": 0,
            "segmentation": [[2, 3, 10, 3, 10, 13, 2, 13]],
        },
        {
            "id": 12,
            "image_id": 1,
            "category_id": 25,
            "bbox": [14, 4, 10, 12],
            "area": 120.0,
            "iscrowd": 0,
            "segmentation": _rle(14, 4, 24, 16),
        },
        {
            "id": 13,
            "image_id": 1,
            "category_id": 1,
            "bbox": [0, 0, 6, 6],
            "area": 36.0,
            "iscrowd": 1,
            "segmentation": _rle(0, 0, 6, 6),
        },
        {
            "id": 14,
            "image_id": 1,
            "category_id": 3,
            "bbox": [5, 5, 0, 4],
            "area": 0.0,
            "iscrowd": 0,
            "segmentation": [[5, 5, 5, 5, 5, 9]],
        },
        # image 2: a dog (RLE) and a pizza (polygon)
        {
            "id": 21,
            "image_id": 2,
            "category_id": 18,
            "bbox": [1, 1, 5, 5],
            "area": 25.0,
            "iscrowd": 0,
            "segmentation": _rle(1, 1, 6, 6),
        },
        {
            "id": 22,
            "image_id": 2,
            "category_id": 59,
            "bbox": [20, 10, 6, 6],
            "area": 36.0,
            "iscrowd": 0,
            "segmentation": [[20, 10, 26, 10, 26, 16, 20, 16]],
        },
        # image 3: no annotations
    ]
    images = [{"id": i, "file_name": f"img{i}.png", "width": W, "height": H} for i in (1, 2, 3)]
    return {"images": images, "annotations": anns, "categories": copy.deepcopy(CATEGORIES)}


def write_coco(root: Path, data: dict | None = None) -> tuple[Path, Path]:
    """Write the tiny dataset under ``root``; returns (image_dir, ann_file)."""
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in (1, 2, 3):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(
            image_dir / f"img{i}.png"
        )
    ann_file = root / "instances.json"
    ann_file.write_text(json.dumps(data if data is not None else _coco()))
    return image_dir, ann_file


@pytest.fixture
def coco_files(tmp_path: Path) -> tuple[Path, Path]:
    return write_coco(tmp_path)


def test_labels_classes_and_targets(coco_files: tuple[Path, Path]) -> None:
    ds = CocoInstances(*coco_files, split="voc")
    assert ds.num_classes == 7
    assert ds.class_names == [
        "__background__",
        "person",
        "bicycle",
        "car",
        "dog",
        "giraffe",
        "pizza",
    ]
    assert ds.label_to_cat_id == {1: 1, 2: 2, 3: 3, 4: 18, 5: 25, 6: 59}
    assert ds.cat_id_to_label[59] == 6
    assert ds.a_cat_ids == (1, 2, 3, 18) and ds.b_cat_ids == (25, 59)
    assert ds.a_labels == (1, 2, 3, 4) and ds.b_labels == (5, 6) and ds.mask_labels == ds.a_labels
    assert len(ds) == 3 and ds.image_ids == [1, 2, 3]
    image, target = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, H, W)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    # crowd (13) and zero-width (14) are left out: person then giraffe
    assert target["labels"].tolist() == [1, 5]
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == [[2, 3, 10, 13], [14, 4, 24, 16]]
    assert (
        target["image_id"].dtype == torch.int64
        and target["image_id"].shape == ()
        and int(target["image_id"]) == 1
    )
    assert target["area"].tolist() == [80.0, 120.0]
    assert ds.num_dropped_boxes == 1
    assert ds.coco.anns[13]["iscrowd"] == 1  # still in ds.coco for COCOeval


def test_b_masks_not_decoded_with_masks_A(
    coco_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = CocoInstances(*coco_files, split="voc", masks="A")
    decoded: list[int] = []
    original = CocoInstances._decode

    def spy(self, ann, h, w):
        decoded.append(ann["id"])
        return original(self, ann, h, w)

    monkeypatch.setattr(CocoInstances, "_decode", spy)
    _, target = ds[0]
    assert decoded == [11]  # the person only; the giraffe (B) is never decoded
    assert target["masks"].shape == (1, H, W) and target["masks"].dtype == torch.uint8
    assert target["has_mask"].tolist() == [True, False]
    assert int(target["masks"][0].sum()) > 0
    _, target = ds[1]  # a dog (A) and a pizza (B)
    assert target["has_mask"].tolist() == [True, False] and target["masks"].shape == (1, H, W)


def test_oracle_decodes_every_mask(coco_files: tuple[Path, Path]) -> None:
    ds = CocoInstances(*coco_files, split="voc", masks="all")
    assert ds.mask_labels == (1, 2, 3, 4, 5, 6)
    _, target = ds[0]
    assert target["masks"].shape == (2, H, W) and target["has_mask"].tolist() == [True, True]
    assert int(target["masks"][1].sum()) == 120  # the giraffe's RLE rectangle


def test_empty_images_kept_or_skipped(coco_files: tuple[Path, Path]) -> None:
    kept = CocoInstances(*coco_files)
    _, target = kept[2]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["masks"].shape == (0, H, W) and target["has_mask"].shape == (0,)
    skipped = CocoInstances(*coco_files, skip_empty=True)
    assert skipped.image_ids == [1, 2]


def test_flip_moves_boxes_and_masks_together_deterministically(
    coco_files: tuple[Path, Path],
) -> None:
    plain = CocoInstances(*coco_files, masks="all")
    flipped = CocoInstances(*coco_files, masks="all", train=True, flip_prob=1.0)
    (im0, t0), (im1, t1) = plain[0], flipped[0]
    assert torch.equal(im1, im0.flip(-1))
    assert torch.equal(t1["masks"], t0["masks"].flip(-1))
    assert t1["boxes"].tolist() == [[W - 10, 3, W - 2, 13], [W - 24, 4, W - 14, 16]]
    for box, mask in zip(t1["boxes"], t1["masks"], strict=True):  # each box still bounds its mask
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [
            xs.min().item(),
            ys.min().item(),
            xs.max().item() + 1,
            ys.max().item() + 1,
        ]

    half = CocoInstances(*coco_files, train=True, flip_prob=0.5, seed=3)
    other = CocoInstances(*coco_files, train=True, flip_prob=0.5, seed=3)
    decisions = {}
    for epoch in range(6):
        half.set_epoch(epoch)
        other.set_epoch(epoch)
        decisions[epoch] = [half.flips(i) for i in range(3)]
        assert decisions[epoch] == [other.flips(i) for i in range(3)]
        assert torch.equal(half[0][1]["boxes"], other[0][1]["boxes"])
    assert len({tuple(v) for v in decisions.values()}) > 1  # the epoch changes the flips
    half.set_epoch(2)
    assert [half.flips(i) for i in range(3)] == decisions[2]  # resumable
    assert not CocoInstances(*coco_files, train=False, flip_prob=1.0).flips(0)  # evaluation: never


def test_collate_fn(coco_files: tuple[Path, Path]) -> None:
    ds = CocoInstances(*coco_files)
    images, targets = collate_fn([ds[0], ds[1]])
    assert isinstance(images, list) and len(images) == 2 and len(targets) == 2
    assert int(targets[1]["image_id"]) == 2


def test_voc_and_nonvoc_splits() -> None:
    assert len(VOC_CAT_IDS) == 20
    assert resolve_split("voc", CATEGORIES) == ((1, 2, 3, 18), (25, 59))
    assert resolve_split("nonvoc", CATEGORIES) == ((25, 59), (1, 2, 3, 18))
    assert resolve_split(None, CATEGORIES) == ((1, 2, 3, 18, 25, 59), ())
    assert resolve_split(["dog", 59], CATEGORIES) == ((18, 59), (1, 2, 3, 25))
    renamed = [{"id": 1, "name": "fork-1"}, {"id": 2, "name": "fork-2"}]
    with pytest.raises(ValueError, match="fork-1"):  # not COCO ids: voc would be silently wrong
        resolve_split("voc", renamed)


def test_split_file_relative_to_root(tmp_path: Path, coco_files: tuple[Path, Path]) -> None:
    (tmp_path / "split.json").write_text(json.dumps({"A": ["person", "giraffe"], "B": ["dog"]}))
    assert resolve_split("split.json", CATEGORIES, root=tmp_path)[0] == (1, 25)
    ds = CocoInstances(*coco_files, split="split.json")  # found beside the annotation file
    assert ds.a_labels == (1, 5)


def test_unknown_split_category_names_it(tmp_path: Path, coco_files: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match="'zebra'") as e:
        CocoInstances(*coco_files, split=["person", "zebra"])
    assert "instances.json" in str(e.value)
    with pytest.raises(ValueError, match="99"):
        resolve_split([1, 99], CATEGORIES)
    bad = tmp_path / "split_bad.json"
    bad.write_text(json.dumps({"A": ["person", "unicorn"]}))
    with pytest.raises(ValueError, match="unicorn") as e:
        resolve_split(str(bad), CATEGORIES)
    assert "split_bad.json" in str(e.value)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        resolve_split("nope.json", CATEGORIES)
    with pytest.raises(ValueError, match="'voc', 'nonvoc'"):
        resolve_split("vocc", CATEGORIES)
    for text, why in (("{", "malformed JSON"), ("[]", "top level is list"), ("{}", "field 'A'")):
        bad.write_text(text)
        with pytest.raises(ValueError, match=rf"split_bad\.json: {why}.*split file \{{\"A\""):
            resolve_split(str(bad), CATEGORIES)


def test_missing_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.json"):
        CocoInstances(tmp_path, tmp_path / "missing.json")


def test_malformed_json(tmp_path: Path) -> None:
    image_dir, ann_file = write_coco(tmp_path)
    ann_file.write_text('{"images": [')
    with pytest.raises(ValueError, match="instances.json.*malformed JSON"):
        CocoInstances(image_dir, ann_file)


@pytest.mark.parametrize("field", ["bbox", "category_id", "image_id"])
def test_annotation_missing_field(tmp_path: Path, field: str) -> None:
    data = _coco()
    del data["annotations"][4][field]  # annotation id 21
    image_dir, ann_file = write_coco(tmp_path, data)
    with pytest.raises(ValueError, match=f"instances.json.*annotation id 21.*'{field}'"):
        CocoInstances(image_dir, ann_file)


def test_missing_segmentation_only_matters_for_mask_classes(tmp_path: Path) -> None:
    data = _coco()
    del data["annotations"][5]["segmentation"]  # id 22, pizza: set B under "voc"
    image_dir, ann_file = write_coco(tmp_path, data)
    CocoInstances(image_dir, ann_file, split="voc", masks="A")[1]  # fine: B masks are not needed
    with pytest.raises(ValueError, match="annotation id 22.*'segmentation'"):
        CocoInstances(image_dir, ann_file, split="voc", masks="all")


def test_missing_or_broken_image(coco_files: tuple[Path, Path]) -> None:
    image_dir, ann_file = coco_files
    ds = CocoInstances(image_dir, ann_file)
    (image_dir / "img2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"img2\.png.*image id 2"):
        ds[1]
    (image_dir / "img3.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"img3\.png.*image id 3.*not a readable image"):
        ds[2]


def test_bad_choices() -> None:
    with pytest.raises(ValueError, match="masks"):
        CocoInstances(".", "x.json", masks="B")


def test_loader_error_points_at_data_check(tmp_path: Path) -> None:
    data = _coco()
    for a in data["annotations"]:
        if a["id"] in (21, 22):  # dog (A under "voc") and pizza (B)
            del a["segmentation"]
    image_dir, ann_file = write_coco(tmp_path, data)
    with pytest.raises(ValueError, match=r"annotation id 21: .*'segmentation'") as e:
        CocoInstances(image_dir, ann_file, split="voc", masks="A")  # the pizza (B) needs none
    assert "more problem" not in str(e.value)
    with pytest.raises(ValueError) as e:
        CocoInstances(image_dir, ann_file, split="voc", masks="all")
    msg = str(e.value)
    assert "annotation id 21: missing required field 'segmentation'" in msg
    assert (
        "and 1 more problem(s)" in msg and "data check" in msg and "--split voc --masks all" in msg
    )


def test_repr_names_the_annotation_file_relative_to_the_working_directory(
    coco_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    images, ann = coco_files
    ds = CocoInstances(images, ann.resolve(), split="voc")
    monkeypatch.chdir(ann.parent.parent)
    text = repr(ds)
    assert f"ann_file='{Path(ann.parent.name) / ann.name}'" in text
    assert str(ann.parent.parent.resolve()) not in text  # no machine path
    assert text.startswith(f"CocoInstances({len(ds)} images")
