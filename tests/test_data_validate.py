"""validate_dataset and the `python -m mxr data` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_data_coco import _coco, write_coco  # tests/ is on sys.path (pytest rootdir conftest)

from mxr.cli import main
from mxr.data.validate import validate_dataset
from mxr.errors import UserInputError


def test_clean_dataset_is_ok(tmp_path: Path) -> None:
    image_dir, ann_file = write_coco(tmp_path)
    report = validate_dataset(ann_file, image_dir)
    assert report.ok, report.format()
    assert report.counts["images"] == 3 and report.counts["annotations"] == 6
    assert report.counts["crowd"] == 1 and report.counts["zero_size_boxes"] == 1
    assert report.counts["images_without_annotations"] == 1
    assert any("zero-size" in w for w in report.warnings)
    assert "OK" in report.format()


def test_reports_every_problem_at_once(tmp_path: Path) -> None:
    data = _coco()
    del data["annotations"][0]["bbox"]  # id 11: missing field
    data["annotations"][1]["category_id"] = 999  # id 12: unknown category
    data["annotations"][4]["image_id"] = 42  # id 21: unknown image
    data["annotations"][5]["segmentation"] = {
        "size": [5, 5],
        "counts": "abc",
    }  # id 22: wrong RLE size
    data["annotations"][3]["bbox"] = [1, 2, -3, 4]  # id 14: negative width
    data["images"][2]["file_name"] = "gone.png"  # image 3: missing file
    image_dir, ann_file = write_coco(tmp_path, data)
    (image_dir / "img2.png").write_bytes(b"not an image")
    report = validate_dataset(ann_file, image_dir)
    assert not report.ok
    text = "\n".join(report.problems)
    for expected in (
        "annotation id 11: missing required field 'bbox'",
        "annotation id 12: category_id=999",
        "annotation id 21: image_id=42",
        "annotation id 22: field 'segmentation' has RLE size [5, 5] but the image is [24, 32]",
        "annotation id 14: field 'bbox' has negative width/height",
        "gone.png: image file not found (image id 3)",
        "img2.png: not a readable image (image id 2)",
    ):
        assert expected in text, f"{expected!r} not in:\n{text}"
    assert report.counts["problems"] == len(report.problems) == 7
    assert report.counts["missing_images"] == 1 and report.counts["unreadable_images"] == 1
    formatted = report.format()
    assert "7 problem(s)" in formatted and "NOT OK" in formatted


def test_missing_and_malformed_files_are_problems_not_exceptions(tmp_path: Path) -> None:
    report = validate_dataset(tmp_path / "nope.json", tmp_path)
    assert not report.ok and "nope.json: annotation file not found" in report.problems[0]
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    report = validate_dataset(bad, tmp_path)
    assert not report.ok and "malformed JSON" in report.problems[0]
    bad.write_text(json.dumps({"images": {}, "categories": []}))
    report = validate_dataset(bad, None)
    assert any("'images' is dict" in p for p in report.problems)
    assert any("'annotations' is missing" in p for p in report.problems)


def test_cli_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image_dir, ann_file = write_coco(tmp_path / "good")
    assert main(["data", "check", str(ann_file), "--images", str(image_dir)]) == 0
    assert "OK: no problems found" in capsys.readouterr().out

    data = _coco()
    data["annotations"][0]["category_id"] = 7
    data["images"][0]["file_name"] = "missing.png"
    image_dir, ann_file = write_coco(tmp_path / "bad", data)
    assert main(["data", "check", str(ann_file), "--images", str(image_dir)]) == 1
    out = capsys.readouterr().out
    assert "2 problem(s)" in out and "missing.png" in out and "category_id=7" in out

    assert main(["data", "check", str(tmp_path / "absent.json"), "--images", str(image_dir)]) == 1
    out = capsys.readouterr().out
    assert "absent.json: annotation file not found" in out and "Traceback" not in out
    broken = tmp_path / "broken.json"
    broken.write_text("[1, 2")
    assert main(["data", "check", str(broken)]) == 1
    assert "malformed JSON" in capsys.readouterr().out


def test_cli_shapesx_and_check_generated_data(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "sx"
    args = [
        "data",
        "shapesx",
        "--out",
        str(out),
        "--train",
        "3",
        "--val",
        "1",
        "--test",
        "1",
        "--seed",
        "2",
        "--image-size",
        "64",
    ]
    assert main(args) == 0
    assert "images/s" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["seed"] == 2
    for split in ("train", "val", "test"):
        report = validate_dataset(out / "annotations" / f"instances_{split}.json", out / split)
        assert report.ok, report.format()
    capsys.readouterr()
    assert main(["data", "shapesx", "--out", str(out), "--train", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mxr data shapesx: error: ") and len(err.strip().splitlines()) == 1


def test_generated_shapesx_passes_check(shapesx_root: Path) -> None:
    report = validate_dataset(
        shapesx_root / "annotations" / "instances_val.json", shapesx_root / "val"
    )
    assert report.ok and report.counts["images"] == 4


def _mutations() -> dict[str, dict]:
    """Copies of the tiny dataset, each broken (or partially labelled) in one way."""

    def mutate(edit) -> dict:
        data = _coco()
        edit(data)
        return data

    anns = lambda d: {a["id"]: a for a in d["annotations"]}  # noqa: E731
    return {
        "clean": _coco(),
        "B box-only (giraffe, pizza)": mutate(
            lambda d: [anns(d)[i].pop("segmentation") for i in (12, 22)]
        ),
        "A mask missing (dog)": mutate(lambda d: anns(d)[21].pop("segmentation")),
        "crowd without mask": mutate(lambda d: anns(d)[13].pop("segmentation")),
        "zero-size A box without mask": mutate(lambda d: anns(d)[14].pop("segmentation")),
        "bad polygon on B": mutate(lambda d: anns(d)[22].update(segmentation=[[1, 2, 3]])),
        "iscrowd 2": mutate(lambda d: anns(d)[11].update(iscrowd=2)),
        "duplicate annotation id": mutate(lambda d: anns(d)[22].update(id=21)),
        "unknown category": mutate(lambda d: anns(d)[22].update(category_id=90)),
        "image without width": mutate(lambda d: d["images"][0].pop("width")),
        "bbox of 3 numbers": mutate(lambda d: anns(d)[21].update(bbox=[1, 1, 5])),
        "category id as list": mutate(lambda d: anns(d)[21].update(category_id=[18])),
        "category id not an integer": mutate(lambda d: d["categories"][5].update(id="pizza")),
        "RLE counts not covering the image": mutate(
            lambda d: anns(d)[22].update(segmentation={"size": [24, 32], "counts": [3, 3]})
        ),
    }


@pytest.mark.parametrize(
    "split,masks", [(None, "A"), ("voc", "A"), ("voc", "all"), ("nonvoc", "A")]
)
def test_checker_accepts_exactly_what_the_loader_accepts(
    tmp_path: Path, split: str | None, masks: str
) -> None:
    from mxr.data.coco import CocoInstances

    verdicts = {}
    for name, data in _mutations().items():
        image_dir, ann_file = write_coco(tmp_path / name.replace(" ", "_"), data)
        report = validate_dataset(ann_file, None, split=split, masks=masks)
        try:
            CocoInstances(image_dir, ann_file, split=split, masks=masks)
            loads, error = True, ""
        except ValueError as e:
            loads, error = False, str(e)
        assert report.ok == loads, f"{name} (split={split}, masks={masks}): {report}\n{error}"
        if not loads:  # the loader names the checker's first problem
            assert error.startswith(report.problems[0]), (error, report.problems)
        verdicts[name] = loads
    # The partially labelled copy loads exactly when its box-only classes are outside the mask set.
    assert verdicts["B box-only (giraffe, pizza)"] == (split == "voc" and masks == "A")
    assert verdicts["A mask missing (dog)"] == (split == "nonvoc")
    assert verdicts["clean"] and verdicts["crowd without mask"]
    assert verdicts["zero-size A box without mask"]  # the loader drops that box: no mask needed
    assert not verdicts["bad polygon on B"] and not verdicts["iscrowd 2"]


@pytest.mark.parametrize("counts", [[3, 3], [1.5, 766.5], ["a"], [-1, 769]])
def test_loader_and_checker_refuse_bad_rle_run_lengths_alike(tmp_path: Path, counts: list) -> None:
    """Formerly ``data check`` took any list as RLE counts and the loader accepted the file, then
    failed (or decoded garbage) reading the item; now both refuse the file, with the same line."""
    from mxr.data.coco import CocoInstances

    data = _coco()
    data["annotations"][1]["segmentation"] = {"size": [24, 32], "counts": counts}  # id 12, giraffe
    image_dir, ann_file = write_coco(tmp_path / "bad", data)
    report = validate_dataset(ann_file, image_dir)
    assert len(report.problems) == 1, report.format()
    assert (
        "annotation id 12: field 'segmentation' has RLE counts that are not run lengths"
        in (report.problems[0])
    )
    with pytest.raises(ValueError) as e:
        CocoInstances(image_dir, ann_file)
    assert str(e.value) == report.problems[0]
    # Run lengths that cover the image (an uncompressed RLE, as COCO's crowd regions) pass both.
    data["annotations"][1]["segmentation"]["counts"] = [10, 758]
    image_dir, ann_file = write_coco(tmp_path / "good", data)
    assert validate_dataset(ann_file, image_dir).ok
    _, target = CocoInstances(image_dir, ann_file, masks="all")[0]
    assert int(target["masks"][1].sum()) == 758


def test_loader_error_is_the_first_line_of_data_check(tmp_path: Path) -> None:
    """Beyond the segmentation: a category without an integer id, a missing list, a bad split."""
    from mxr.data.coco import CocoInstances

    cases = {
        "category id": (lambda d: d["categories"][0].update(id="one"), None),
        "no images list": (lambda d: d.pop("images"), None),
        "split file missing": (lambda d: None, "nope.json"),
    }
    for name, (edit, split) in cases.items():
        data = _coco()
        edit(data)
        image_dir, ann_file = write_coco(tmp_path / name.replace(" ", "_"), data)
        report = validate_dataset(ann_file, split=split)
        with pytest.raises((ValueError, FileNotFoundError)) as e:
            CocoInstances(image_dir, ann_file, split=split)
        assert str(e.value).startswith(report.problems[0]), (name, report.problems)
    assert issubclass(e.type, FileNotFoundError)  # a missing split file, as before
    assert issubclass(e.type, UserInputError)  # and the user's mistake: one line in the CLI


def test_check_options_for_a_partially_labelled_set(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = _coco()
    for a in data["annotations"]:
        if a["category_id"] in (25, 59):  # giraffe, pizza: set B under "voc"
            del a["segmentation"]
    image_dir, ann_file = write_coco(tmp_path, data)
    args = ["data", "check", str(ann_file), "--images", str(image_dir)]
    assert main(args) == 1  # default: every class is in A, as the loader's default
    out = capsys.readouterr().out
    assert "annotation id 12: missing required field 'segmentation'" in out
    assert "category 'giraffe' is in the mask set: every category" in out
    assert main([*args, "--split", "voc"]) == 0
    out = capsys.readouterr().out
    assert "Split 'voc': 4 categories in A, 2 in B; masks='A'" in out and "OK" in out
    assert main([*args, "--split", "voc", "--masks", "all"]) == 1
    assert "2 problem(s)" in capsys.readouterr().out
    assert main([*args, "--split", "vocc"]) == 1
    out = capsys.readouterr().out
    assert "split='vocc' is not valid" in out and "no segmentation requirement was checked" in out
    (tmp_path / "split.json").write_text(json.dumps({"A": ["person", "car", "dog", "bicycle"]}))
    assert main([*args, "--split", "split.json"]) == 0  # found beside the file, as the loader does
    with pytest.raises(SystemExit):
        main([*args, "--masks", "B"])
    assert "invalid choice: 'B'" in capsys.readouterr().err


def test_a_split_of_the_wrong_type_is_a_problem_not_a_type_error(tmp_path: Path) -> None:
    from mxr.data.coco import CocoInstances

    image_dir, ann_file = write_coco(tmp_path)
    expected = "split=5 is not valid; expected None, 'voc', 'nonvoc', a path or a list"
    report = validate_dataset(ann_file, image_dir, split=5)  # raised TypeError (len of an int)
    assert not report.ok and report.problems[0].startswith(expected)
    with pytest.raises(ValueError, match=r"^split=5 is not valid"):
        CocoInstances(image_dir, ann_file, split=5)
