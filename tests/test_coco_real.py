"""The COCO path on real COCO 2017 data: the sample of 80 train + 80 val images, one per category.

Found through ``MXR_COCO_SAMPLE`` (default ``../shared/coco-tiny`` beside the repository); every test
here is skipped, with the reason, when it is absent. The sample is read-only: copies go to tmp_path.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
import yaml
from conftest import TINY_MODEL  # tests/ is on sys.path (pytest rootdir conftest)

from mxr.cli import main
from mxr.config import load_config
from mxr.data.coco import CocoInstances
from mxr.data.splits import VOC_CAT_IDS
from mxr.data.validate import validate_dataset
from mxr.engine.loop import TrainResult
from mxr.evaluation import coco_evaluate

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train2017", "val2017")


def _ann(root: Path, split: str) -> Path:
    return root / "annotations" / f"instances_{split}.json"


def _box_only_b(root: Path, split: str, out: Path) -> tuple[Path, dict]:
    """A copy of ``split`` whose non-VOC (set B) annotations have no segmentation: a partially
    labelled set, as a researcher's own data would be."""
    data = json.loads(_ann(root, split).read_text())
    for a in data["annotations"]:
        if a["category_id"] not in VOC_CAT_IDS:
            del a["segmentation"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data))
    return out, data


# --------------------------------------------------------------------------------------------------
# data check
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", SPLITS)
def test_data_check_passes_on_the_real_sample(
    coco_sample: Path, split: str, capsys: pytest.CaptureFixture
) -> None:
    args = ["data", "check", str(_ann(coco_sample, split)), "--images", str(coco_sample / split)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "OK: no problems found" in out and "images=80" in out and "categories=80" in out
    for coco_split, masks in (("voc", "A"), ("nonvoc", "A"), ("voc", "all")):
        report = validate_dataset(
            _ann(coco_sample, split), coco_sample / split, split=coco_split, masks=masks
        )
        assert report.ok, report.format()
        assert report.counts["crowd"] > 0  # the real files' crowd RLEs pass
        assert report.counts["mask_categories"] == {"A": 20 if coco_split == "voc" else 60}.get(
            masks, 80
        )


def test_data_check_on_a_box_only_b_copy(
    coco_sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ann, data = _box_only_b(coco_sample, "val2017", tmp_path / "instances_boxonlyB.json")
    n_box_only = sum("segmentation" not in a for a in data["annotations"])
    assert n_box_only == 390  # the 388 + 2 crowd B annotations of val2017
    base = ["data", "check", str(ann), "--images", str(coco_sample / "val2017")]
    assert main([*base, "--split", "voc"]) == 0  # set A = VOC: B may be box-only
    out = capsys.readouterr().out
    assert "OK: no problems found" in out and f"without_segmentation={n_box_only}" in out
    ds = CocoInstances(coco_sample / "val2017", ann, split="voc", masks="A")  # the loader agrees
    assert len(ds) == 80
    # Where the loader would need B masks, both refuse, on the same first annotation.
    assert main([*base, "--split", "voc", "--masks", "all"]) == 1
    out = capsys.readouterr().out
    assert "388 problem(s)" in out and "NOT OK" in out
    first = next(line for line in out.splitlines() if "missing required field" in line)
    with pytest.raises(ValueError) as e:
        CocoInstances(coco_sample / "val2017", ann, split="voc", masks="all")
    assert first.strip("- ").split(" (")[0] in str(e.value)
    assert main(base) == 1  # the default: every class needs masks, as the loader's default

    # An A-class (VOC) annotation without its segmentation: reported with file, id and field.
    broken = copy.deepcopy(data)
    victim = next(
        a for a in broken["annotations"] if a["category_id"] == 18 and not a["iscrowd"]
    )  # a dog
    del victim["segmentation"]
    broken_file = tmp_path / "instances_missingA.json"
    broken_file.write_text(json.dumps(broken))
    assert main(["data", "check", str(broken_file), "--split", "voc"]) == 1
    out = capsys.readouterr().out
    assert "1 problem(s)" in out
    assert (
        f"{broken_file}: annotation id {victim['id']}: missing required field 'segmentation' "
        "(category 'dog' is in the mask set" in out
    )
    with pytest.raises(ValueError, match=rf"annotation id {victim['id']}: .*'segmentation'"):
        CocoInstances(coco_sample / "val2017", broken_file, split="voc", masks="A")


# --------------------------------------------------------------------------------------------------
# the loader, on every image
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("image_split", SPLITS)
def test_loader_targets_match_pycocotools(coco_sample: Path, image_split: str) -> None:
    """split voc / nonvoc x masks A / all, over every image of the split."""
    reference: dict[int, np.ndarray] = {}  # pycocotools' annToMask per annotation id, computed once
    for split in ("voc", "nonvoc"):
        for masks in ("A", "all"):
            _check_loader(coco_sample, image_split, split, masks, reference)
    n_masked = sum(1 for _ in reference)
    assert n_masked == sum(
        1
        for a in json.loads(_ann(coco_sample, image_split).read_text())["annotations"]
        if not a["iscrowd"]
    )  # with masks="all" every non-crowd instance was decoded and compared


def _check_loader(
    root: Path, image_split: str, split: str, masks: str, reference: dict[int, np.ndarray]
) -> None:
    ds = CocoInstances(root / image_split, _ann(root, image_split), split=split, masks=masks)
    coco = ds.coco
    voc = set(VOC_CAT_IDS)
    where = f"{image_split} split={split} masks={masks}"
    # A/B membership follows the COCO ids.
    assert set(ds.a_cat_ids) == {c for c in coco.cats if (c in voc) == (split == "voc")}, where
    assert set(ds.a_cat_ids) | set(ds.b_cat_ids) == set(coco.cats) and len(coco.cats) == 80
    assert len(ds.a_cat_ids) == (20 if split == "voc" else 60)
    assert {ds.label_to_cat_id[x] for x in ds.a_labels} == set(ds.a_cat_ids)
    assert len(ds) == 80 and ds.num_dropped_boxes == 0
    n_crowd = 0
    for index in range(len(ds)):
        image, target = ds[index]
        image_id = int(target["image_id"])
        info = coco.imgs[image_id]
        h, w = info["height"], info["width"]
        assert image.shape == (3, h, w)
        anns = list(coco.imgToAnns[image_id])
        kept = [a for a in anns if not a["iscrowd"]]
        n_crowd += len(anns) - len(kept)
        # Crowd annotations are kept out of the training targets.
        assert len(target["labels"]) == len(kept), (where, image_id)
        cat_ids = [ds.label_to_cat_id[int(x)] for x in target["labels"]]
        assert cat_ids == [a["category_id"] for a in kept]
        # Boxes are XYXY pixels inside the image, from COCO's XYWH.
        boxes = target["boxes"]
        assert boxes.dtype == torch.float32 and boxes.shape == (len(kept), 4)
        assert bool((boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all())
        assert bool((boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all())
        assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())
        for box, a in zip(boxes.tolist(), kept, strict=True):
            x, y, bw, bh = a["bbox"]
            expected = [max(0, x), max(0, y), min(w, x + bw), min(h, y + bh)]
            assert np.allclose(box, expected, atol=1e-3), (a["id"], box, a["bbox"])
        # Masks: exactly the mask-set instances, each equal to pycocotools' annToMask.
        in_mask_set = [masks == "all" or a["category_id"] in set(ds.a_cat_ids) for a in kept]
        assert target["has_mask"].tolist() == in_mask_set, (where, image_id)
        with_mask = [a for a, m in zip(kept, in_mask_set, strict=True) if m]
        assert target["masks"].shape == (len(with_mask), h, w)
        assert target["masks"].dtype == torch.uint8
        for mask, a in zip(target["masks"], with_mask, strict=True):
            if a["id"] not in reference:
                reference[a["id"]] = coco.annToMask(a)
            assert np.array_equal(mask.numpy(), reference[a["id"]]), (where, a["id"])
    assert n_crowd == {"train2017": 6, "val2017": 11}[image_split]  # the README's counts


@pytest.mark.slow
def test_crowd_regions_are_ignored_by_cocoeval(coco_sample: Path) -> None:
    """As on full COCO: the evaluation's ground truth keeps the crowd RLEs, and a detection on a crowd
    region is neither a true nor a false positive."""
    ds = CocoInstances(
        coco_sample / "val2017", _ann(coco_sample, "val2017"), split="voc", masks="all"
    )
    coco = ds.coco
    crowd = [a for a in coco.anns.values() if a["iscrowd"]]
    assert len(crowd) == 11 and {a["category_id"] in VOC_CAT_IDS for a in crowd} == {True, False}

    def result(a: dict, score: float) -> dict:
        rle = coco.annToRLE(a)  # compressed, also for the crowds' uncompressed RLE
        rle = {"size": rle["size"], "counts": rle["counts"].decode()}
        return {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": score,
            "segmentation": rle,
        }

    perfect = [result(a, 0.9) for a in coco.anns.values() if not a["iscrowd"]]
    on_crowds = [result(a, 1.0) for a in crowd]  # ranked first: would be false positives
    sets = {"A": list(ds.a_cat_ids), "B": list(ds.b_cat_ids), "all": sorted(coco.cats)}
    scores = coco_evaluate(coco, perfect + on_crowds, sets, image_ids=ds.image_ids)
    for s in sets:
        for task in ("segm", "bbox"):
            assert scores[s][task]["AP"] == 100.0, (s, task, scores[s][task])
    # Without the crowd annotations in the ground truth, the same detections cost precision.
    stripped = copy.copy(coco)
    stripped.dataset = {
        **coco.dataset,
        "annotations": [a for a in coco.dataset["annotations"] if not a["iscrowd"]],
    }
    stripped.createIndex()
    worse = coco_evaluate(stripped, perfect + on_crowds, sets, image_ids=ds.image_ids)
    assert all(worse[s]["segm"]["AP"] < 100.0 for s in sets)


# --------------------------------------------------------------------------------------------------
# a short training from the paper's config, then `mxr eval`
# --------------------------------------------------------------------------------------------------
def _real_overrides(root: Path, iterations: int = 3) -> list[str]:
    """The paper's COCO config shrunk to a CPU test: tiny backbone at 96-128 px, a few iterations."""
    return [
        *TINY_MODEL,
        "model.backbone_weights=null",  # the tiny backbone starts from scratch
        "model.min_size=96",
        "model.max_size=128",
        f"data.root={root}",
        "data.num_workers=0",
        f"train.iterations={iterations}",
        "train.batch_size=2",
        "train.lr=0.01",
        "train.warmup_iters=1",
        f"train.checkpoint_every={iterations}",
        "train.log_every=1",
        "train.device=cpu",
        "train.amp=false",
    ]


def _stored_model(result: TrainResult) -> dict:
    """The model section of the config a run stored."""
    return yaml.safe_load(result.config.read_text())["model"]


def _train_and_eval(
    root: Path, out: Path, extra: list[str], capsys: pytest.CaptureFixture
) -> TrainResult:
    from mxr.engine.loop import train
    from mxr.files import read_metrics

    cfg = load_config(
        REPO / "configs" / "coco" / "voc2nonvoc_transfer_mlp.yaml", [*_real_overrides(root), *extra]
    )
    assert cfg.data.split == "voc" and cfg.data.train_masks == "A"  # the paper's setting, kept
    assert cfg.model.mask_head == "transfer" and cfg.model.mlp_fusion
    result = train(cfg, out, progress=False, eval_split=None)  # scored below by `mxr eval`
    losses = [r for r in read_metrics(result.metrics) if "loss" in r]
    assert len(losses) == 3
    for record in losses:
        for k, v in record.items():
            if k.startswith("loss"):
                assert np.isfinite(v), (k, record)
    assert losses[-1]["loss_mask"] > 0  # the mask loss saw set-A RoIs of the real images
    # `mxr eval` on the real val split: the A / B / all table, the same numbers.
    eval_json = out / "eval_cli.json"
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(result.checkpoint),
                "--split",
                "val",
                "--out",
                str(eval_json),
                "--no-progress",
                "--no-mask-iou",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "val: 80 images" in printed
    for s in ("A", "B", "all"):
        for task in ("mask", "box"):
            assert f"| {s} | {task} |" in printed
    cli = json.loads(eval_json.read_text())
    assert set(cli) == {"A", "B", "all"}
    for s in ("A", "B", "all"):
        for task in ("segm", "bbox"):
            ap = cli[s][task]["AP"]
            assert ap is not None and 0.0 <= ap <= 100.0  # every set has ground truth on val
    return result


@pytest.mark.slow
def test_short_training_and_eval_on_real_coco(
    coco_sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    result = _train_and_eval(coco_sample, tmp_path / "run", [], capsys)
    assert _stored_model(result)["transfer_input"] == "cls+box"


def _embed_available() -> bool:
    from mxr.config import ModelConfig

    try:
        ModelConfig(transfer_input="embed", class_embedding="embedding.json")
    except ValueError:
        return False
    return True


@pytest.mark.slow
def test_short_training_with_a_class_embedding_on_real_coco(
    coco_sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    if not _embed_available():
        pytest.skip("transfer_input='embed' not available")
    names = [c["name"] for c in json.loads(_ann(coco_sample, "val2017").read_text())["categories"]]
    rng = np.random.default_rng(0)
    embedding = tmp_path / "embedding.json"
    embedding.write_text(
        json.dumps({n: [round(float(v), 4) for v in rng.normal(size=8)] for n in names})
    )
    result = _train_and_eval(
        coco_sample,
        tmp_path / "run",
        ["model.transfer_input=embed", f"model.class_embedding={embedding}"],
        capsys,
    )
    model = _stored_model(result)
    assert model["transfer_input"] == "embed" and model["class_embedding"] == str(embedding)


def test_real_sample_images_are_what_the_annotations_say(coco_sample: Path) -> None:
    """Real-world details the README names: several image sizes, multi-part polygons, tiny objects."""
    data = json.loads(_ann(coco_sample, "val2017").read_text())
    sizes = {(i["width"], i["height"]) for i in data["images"]}
    assert len(sizes) > 5
    polys = [a for a in data["annotations"] if not a["iscrowd"]]
    assert any(len(a["segmentation"]) > 1 for a in polys)  # multi-part polygons
    assert min(a["area"] for a in polys) < 32 * 32  # COCO's "small" objects
    crowd = [a for a in data["annotations"] if a["iscrowd"]]
    assert all(isinstance(a["segmentation"]["counts"], list) for a in crowd)  # uncompressed RLE
    for a in crowd:  # each crowd RLE decodes to a region inside its box
        h, w = a["segmentation"]["size"]
        m = mask_utils.decode(mask_utils.frPyObjects(a["segmentation"], h, w))
        ys, xs = np.nonzero(m)
        x, y, bw, bh = a["bbox"]
        assert len(xs) > 0 and xs.min() >= x - 1 and xs.max() <= x + bw + 1
        assert ys.min() >= y - 1 and ys.max() <= y + bh + 1
