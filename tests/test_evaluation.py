"""COCO evaluation per class set, mask IoU given true boxes, tables and the `eval` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from mxr.evaluation import (
    coco_evaluate,
    encode_masks,
    evaluate,
    outputs_to_coco,
)
from mxr.report import format_table


@pytest.fixture(scope="module")
def val_ds(shapesx_root: Path):  # noqa: ANN201
    from mxr.data.coco import CocoInstances

    return CocoInstances(
        shapesx_root / "val",
        shapesx_root / "annotations/instances_val.json",
        split="annotations/split.json",
        masks="all",
    )


def _perfect_outputs(ds, only_labels=None):  # noqa: ANN001, ANN202
    outputs, ids = [], []
    for i in range(len(ds)):
        _, t = ds[i]
        keep = torch.ones(len(t["labels"]), dtype=torch.bool)
        if only_labels is not None:
            keep = torch.tensor([int(lab) in only_labels for lab in t["labels"]], dtype=torch.bool)
        outputs.append(
            {
                "boxes": t["boxes"][keep],
                "labels": t["labels"][keep],
                "scores": torch.ones(int(keep.sum())),
                "masks": t["masks"][keep].float()[:, None],
            }
        )
        ids.append(int(t["image_id"]))
    return outputs, ids


def _sets(ds) -> dict[str, list[int]]:  # noqa: ANN001
    a, b = list(ds.a_cat_ids), list(ds.b_cat_ids)
    return {"A": a, "B": b, "all": a + b}


def test_encode_masks_round_trips_through_rle() -> None:
    probs = torch.zeros(2, 1, 8, 10)
    probs[0, 0, 2:5, 3:7] = 0.9
    probs[1, 0, 0, 0] = 0.5  # not > 0.5: background
    rles = encode_masks(probs)
    assert isinstance(rles[0]["counts"], str) and rles[0]["size"] == [8, 10]
    rles[0]["counts"] = rles[0]["counts"].encode()
    assert (mask_util.decode(rles[0]) == (probs[0, 0] > 0.5).numpy()).all()
    assert mask_util.area(rles[0]) == 12
    assert encode_masks(torch.zeros(0, 1, 8, 10)) == []


def test_one_rle_encoder_for_results_and_generated_data() -> None:
    """ShapesX's annotation files and the evaluation's results write masks with the same encoder,
    and it writes what pycocotools writes for one mask at a time (generated files stay the same)."""
    from mxr.data.coco import encode_rle
    from mxr.data.shapesx import _encode

    rng = torch.Generator().manual_seed(0)
    masks = (torch.rand(3, 9, 7, generator=rng) > 0.6).numpy()
    rles = encode_rle(masks)
    for m, rle in zip(masks, rles, strict=True):
        ref = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        assert rle == {"size": [9, 7], "counts": ref["counts"].decode("ascii")}
        assert _encode(m) == rle
    assert encode_masks(torch.from_numpy(masks).float()) == rles
    with pytest.raises(ValueError, match=r"\(N, H, W\).*\(9, 7\)"):
        encode_rle(masks[0])


def test_ground_truth_as_predictions_scores_100_on_every_set(val_ds) -> None:  # noqa: ANN001
    outputs, ids = _perfect_outputs(val_ds)
    results = outputs_to_coco(outputs, ids, val_ds.label_to_cat_id)
    assert results[0]["bbox"][2] > 0 and "segmentation" in results[0]
    json.dumps(results)  # JSON-ready
    res = coco_evaluate(val_ds.coco, results, _sets(val_ds), image_ids=val_ds.image_ids)
    for s in ("A", "B", "all"):
        for task in ("segm", "bbox"):
            assert res[s][task]["AP"] == pytest.approx(100.0), (s, task)
            assert res[s][task]["AP75"] == pytest.approx(100.0)


def test_sets_are_scored_separately(val_ds) -> None:  # noqa: ANN001
    outputs, ids = _perfect_outputs(val_ds, only_labels=set(val_ds.a_labels))
    results = outputs_to_coco(outputs, ids, val_ds.label_to_cat_id)
    res = coco_evaluate(val_ds.coco, results, _sets(val_ds), image_ids=val_ds.image_ids)
    assert res["A"]["segm"]["AP"] == pytest.approx(100.0)
    assert res["B"]["segm"]["AP"] == 0.0  # B has ground truth but no detections
    assert 0 < res["all"]["segm"]["AP"] < 100
    # no detections at all: 0 where there is ground truth, None for an empty set
    empty = coco_evaluate(val_ds.coco, [], {"A": list(val_ds.a_cat_ids), "none": []})
    assert empty["A"]["bbox"]["AP"] == 0.0 and empty["none"]["segm"]["AP"] is None


def _noisy_results(ds, seed: int) -> list[dict]:  # noqa: ANN001
    """The ground truth as detections, some dropped, moved, shifted, relabelled, randomly scored."""
    g = torch.Generator().manual_seed(seed)
    outputs, ids = _perfect_outputs(ds)
    for out in outputs:
        n = len(out["labels"])
        out["boxes"] = out["boxes"] + 3 * torch.randn(n, 4, generator=g)
        out["scores"] = torch.rand(n, generator=g)
        flip = torch.rand(n, generator=g) < 0.2
        out["labels"] = torch.where(flip, torch.randint(1, 5, (n,), generator=g), out["labels"])
        out["masks"] = torch.roll(out["masks"], int(torch.randint(-3, 4, (1,), generator=g)), -1)
        keep = torch.rand(n, generator=g) > 0.2
        out.update({k: v[keep] for k, v in out.items()})
    return outputs_to_coco(outputs, ids, ds.label_to_cat_id)


@pytest.mark.parametrize("seed", [0, 1])
def test_each_set_scores_as_cocoeval_restricted_to_it(val_ds, seed: int) -> None:  # noqa: ANN001
    """One COCOeval pass over every category, read per set, gives what COCOeval itself summarises
    with params.catIds = that set, to the last digit (every set, task, statistic; on 3 images)."""
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    results, sets = _noisy_results(val_ds, seed), _sets(val_ds)
    image_ids = sorted(val_ds.image_ids)[1:]
    res = coco_evaluate(val_ds.coco, results, sets, image_ids=image_ids)
    fractional = 0  # statistics other than None, 0 and 100: something to get wrong
    for task in ("segm", "bbox"):
        drop = "bbox" if task == "segm" else "segmentation"
        for name, ids in sets.items():
            dts = [{k: v for k, v in r.items() if k != drop} for r in results]  # loadRes edits them
            with contextlib.redirect_stdout(io.StringIO()):
                e = COCOeval(val_ds.coco, val_ds.coco.loadRes(dts), iouType=task)
                e.params.imgIds, e.params.catIds = image_ids, sorted(ids)
                e.evaluate()
                e.accumulate()
                e.summarize()
            ref = [None if v < 0 else round(100 * float(v), 3) for v in e.stats[:6]]
            assert list(res[name][task].values()) == ref, (name, task)
            fractional += sum(v not in (None, 0.0, 100.0) for v in ref)
    assert fractional >= 12  # of 36


def test_scoring_leaves_polygon_ground_truth_as_it_was() -> None:
    """COCOeval turns the ground truth's polygons into RLEs in place; the evaluation scores a copy,
    so a dataset evaluated once still reads its masks (real COCO annotations are polygons)."""
    import copy

    from pycocotools.coco import COCO

    coco = COCO()
    square = [[2.0, 2.0, 12.0, 2.0, 12.0, 12.0, 2.0, 12.0]]
    coco.dataset = {
        "images": [{"id": 1, "width": 16, "height": 16, "file_name": "a.png"}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": square,
                         "area": 100.0, "bbox": [2.0, 2.0, 10.0, 10.0], "iscrowd": 0}],
    }  # fmt: skip
    coco.createIndex()
    before = copy.deepcopy(coco.dataset)
    rle = mask_util.frPyObjects(square, 16, 16)[0]
    dt = {"image_id": 1, "category_id": 1, "bbox": [2.0, 2.0, 10.0, 10.0], "score": 0.9,
          "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}}  # fmt: skip
    res = coco_evaluate(coco, [dt], {"A": [1], "B": [2]})
    assert res["A"]["segm"]["AP"] == 100.0 and res["B"]["bbox"]["AP"] is None
    assert coco.dataset == before and coco.anns[1]["segmentation"] == square


def test_format_table_has_a_row_per_set_and_task(val_ds) -> None:  # noqa: ANN001
    outputs, ids = _perfect_outputs(val_ds)
    res = coco_evaluate(
        val_ds.coco, outputs_to_coco(outputs, ids, val_ds.label_to_cat_id), _sets(val_ds)
    )
    res["B"]["segm"]["APs"] = None
    table = format_table(res)
    lines = table.splitlines()
    assert lines[0].startswith("| set | task | AP | AP50 | AP75")
    assert len(lines) == 2 + 6
    assert "| B | mask | 100.0 | 100.0 | 100.0 | — |" in table
    plain = format_table(res, markdown=False).splitlines()
    assert plain[0].split() == ["set", "task", "AP", "AP50", "AP75", "APs", "APm", "APl"]
    assert any(line.split()[:3] == ["B", "mask", "100.0"] for line in plain)


def test_evaluate_runs_a_model_and_measures_mask_iou_given_boxes(val_ds, trained_run) -> None:  # noqa: ANN001
    model = trained_run.model.train()  # the session's model: other tests leave it in eval mode
    res = evaluate(model, val_ds, batch_size=3, progress=False, mask_iou=True)
    assert set(res) == {"A", "B", "all"}
    assert all(0 <= res[s]["mask_iou"]["mIoU"] <= 100 for s in res)
    assert model.training  # mode restored
    img, t = val_ds[0]
    model.eval()
    (probs,) = model.masks_for_boxes([img], [t["boxes"]], [t["labels"]])
    assert probs.shape == (len(t["boxes"]), *img.shape[-2:])
    assert 0 <= float(probs.min()) and float(probs.max()) <= 1
    # one shared backbone pass gives the same detections and masks as the two separate calls
    dets, (shared,) = model.detect_and_mask_boxes([img], [t["boxes"]], [t["labels"]])
    (ref,) = model([img])
    for k in ("boxes", "labels", "scores", "masks"):
        torch.testing.assert_close(dets[0][k], ref[k])
    torch.testing.assert_close(shared, probs)
    model.train()


# --- mask IoU given true boxes: known answers ------------------------------------------------------
# Two 16 x 16 images, class "a" (category 7, label 1) in set A, "b" (category 9, label 2) in set B.
# Per instance: (image, category, XYXY box, true mask rows, true mask columns). The stub model below
# predicts the left half of each given box, so by hand (pixels counted; "box" = the filled box):
#   a in image 1: box 4x4 = true mask (16 px); prediction cols 0:2 (8 px)  IoU 8/16 = 1/2, box 1
#   b in image 1: true cols 9:12 (12 px) of box cols 8:12; prediction cols 8:10 (8 px): 4 px shared,
#                 IoU 4/16 = 1/4, box 12/16 = 3/4
#   a in image 2: true cols 2:8 (24 px) of box cols 2:10 (32 px); prediction cols 2:6 (16 px)
#                 IoU 16/24 = 2/3, box 24/32 = 3/4
KNOWN_INSTANCES = [
    (1, 7, (0, 0, 4, 4), (0, 4), (0, 4)),
    (1, 9, (8, 8, 12, 12), (8, 12), (9, 12)),
    (2, 7, (2, 2, 10, 6), (2, 6), (2, 8)),
]
KNOWN_IOU = [0.5, 0.25, 2 / 3]
KNOWN_BOX_IOU = [1.0, 0.75, 0.75]


@pytest.fixture
def known_ds(tmp_path: Path):  # noqa: ANN201
    """A CocoInstances over ``KNOWN_INSTANCES`` (black PNGs, RLE masks), every mask loaded."""
    from PIL import Image

    from mxr.data.coco import CocoInstances, encode_rle

    anns = []
    for k, (image_id, cat, (x0, y0, x1, y1), rows, cols) in enumerate(KNOWN_INSTANCES):
        mask = np.zeros((1, 16, 16), dtype=np.uint8)
        mask[0, rows[0] : rows[1], cols[0] : cols[1]] = 1
        anns.append(
            {
                "id": k + 1,
                "image_id": image_id,
                "category_id": cat,
                "iscrowd": 0,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": float(mask.sum()),
                "segmentation": encode_rle(mask)[0],
            }
        )
    for image_id in (1, 2):
        Image.new("RGB", (16, 16)).save(tmp_path / f"{image_id}.png")
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 16, "height": 16} for i in (1, 2)],
        "categories": [{"id": 7, "name": "a"}, {"id": 9, "name": "b"}],
        "annotations": anns,
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return CocoInstances(tmp_path, tmp_path / "ann.json", split=["a"], masks="all")


class LeftHalfMasks(torch.nn.Module):
    """A stand-in for an mxr model given true boxes: it detects nothing and, for each given XYXY box,
    predicts probability 0.9 on the box's left half and 0.5 (not foreground: not > 0.5) on the rest."""

    def detect_and_mask_boxes(self, images, boxes, labels, *, detect=True):  # noqa: ANN001, ANN201
        detections, masks = [], []
        for image, b in zip(images, boxes, strict=True):
            h, w = image.shape[-2:]
            probs = torch.zeros(len(b), h, w)
            for k, (x0, y0, x1, y1) in enumerate(b.round().long().tolist()):
                probs[k, y0:y1, x0:x1] = 0.5
                probs[k, y0:y1, x0 : (x0 + x1) // 2] = 0.9
            masks.append(probs)
            detections.append(
                {
                    "boxes": torch.zeros(0, 4),
                    "labels": torch.zeros(0, dtype=torch.long),
                    "scores": torch.zeros(0),
                    "masks": torch.zeros(0, 1, h, w),
                }
            )
        return (detections if detect else None), masks


def test_mask_iou_given_true_boxes_known_answers(known_ds) -> None:  # noqa: ANN001
    """eval.json's mIoU per set, the per-instance records (galleries, failure cases, probes) and
    their means are the hand-counted IoUs above: a set's mIoU is the mean over its instances, and
    "all" the mean over every instance (not the mean of the two sets' means, 41.667)."""
    from mxr.evaluation import instance_ious, mean_iou

    model = LeftHalfMasks()
    records: list = []
    res = evaluate(model, known_ds, batch_size=2, progress=False, mask_iou=True, records=records)
    assert res["A"]["mask_iou"]["mIoU"] == 58.333  # (1/2 + 2/3) / 2
    assert res["B"]["mask_iou"]["mIoU"] == 25.0
    assert res["all"]["mask_iou"]["mIoU"] == 47.222  # (1/2 + 1/4 + 2/3) / 3
    assert res["A"]["segm"]["AP"] == 0.0 and res["B"]["bbox"]["AP"] == 0.0  # nothing detected
    expected = [  # (dataset index, instance, label, IoU, box IoU)
        (0, 0, 1, KNOWN_IOU[0], KNOWN_BOX_IOU[0]),
        (0, 1, 2, KNOWN_IOU[1], KNOWN_BOX_IOU[1]),
        (1, 0, 1, KNOWN_IOU[2], KNOWN_BOX_IOU[2]),
    ]
    for got in (records, instance_ious(model, known_ds)):
        assert [(r.index, r.instance, r.label) for r in got] == [e[:3] for e in expected]
        assert [r.iou for r in got] == pytest.approx([e[3] for e in expected])
        assert [r.box_iou for r in got] == pytest.approx([e[4] for e in expected])
    assert mean_iou(records, [1]) == pytest.approx(7 / 12)
    assert mean_iou(records, [1], box=True) == pytest.approx(0.875)
    assert mean_iou(records, [1, 2]) == pytest.approx(17 / 36)
    # a lower threshold takes the 0.5 half as foreground too: the prediction is the filled box
    low = evaluate(model, known_ds, progress=False, mask_iou=True, mask_threshold=0.4)
    assert [low[s]["mask_iou"]["mIoU"] for s in ("A", "B", "all")] == [87.5, 75.0, 83.333]


def test_cli_eval_prints_table_and_writes_json(trained_run, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    import shutil

    from mxr.cli import main

    ckpt = tmp_path / "last.pt"
    shutil.copy(trained_run.checkpoint, ckpt)
    assert main(["eval", "--checkpoint", str(ckpt), "--split", "test", "--no-progress"]) == 0
    assert "| A | mask |" in capsys.readouterr().out
    res = json.loads((tmp_path / "eval_test.json").read_text())  # the val eval.json is kept apart
    assert set(res) == {"A", "B", "all"} and set(res["A"]) == {"segm", "bbox", "mask_iou"}
    out = tmp_path / "e.json"
    assert main(["eval", "--checkpoint", str(ckpt), "--out", str(out), "--no-progress",
                 "--no-mask-iou"]) == 0  # fmt: skip
    assert set(json.loads(out.read_text())["B"]) == {"segm", "bbox"}
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "nope.pt")]) == 2  # a user's mistake
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mxr eval: error: ") and "nope.pt" in err
