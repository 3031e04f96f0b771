"""Random A/B splits (the paper's Figure 3): ``data.split: {random: n, seed: s}`` draws n classes
for set A, a pure function of the categories, n and s; ``{random: n, trial: t}`` replays the
paper's own COCO splits; both are checked when the config is read, recorded with it, and reported
by ``mxr data check``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tiny_config

from mxr import cli
from mxr.config import (
    PAPER_RANDOM_SPLIT_SIZES,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from mxr.data.splits import random_set_a, resolve_split

REPO = Path(__file__).resolve().parents[1]
COCO_IDS = [  # COCO's 80 category ids (1..90 with gaps), in the order of its annotation files
    i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
]


# ---- the draw ----------------------------------------------------------------------------------
def test_a_seeded_split_is_a_pure_function_of_the_categories_n_and_seed() -> None:
    ids = list(range(1, 31))
    a = random_set_a(ids, {"random": 12, "seed": 3})
    assert len(a) == len(set(a)) == 12 and set(a) <= set(ids) and list(a) == sorted(a)
    assert random_set_a(list(reversed(ids)), {"random": 12, "seed": 3}) == a  # order-free
    assert random_set_a(ids, {"random": 12, "seed": 4}) != a
    # The documented rule: the first n of default_rng(seed).permutation over the ids sorted.
    expect = sorted(ids[i] for i in np.random.default_rng(3).permutation(30)[:12])
    assert list(a) == expect
    # One seed, growing n: classes are added to A, none swapped out.
    assert set(random_set_a(ids, {"random": 6, "seed": 3})) < set(a)


def test_trial_replays_the_papers_script_draw_for_draw() -> None:
    """split_coco_dataset_randsplits.py: np.random.seed(3); for 5 trials, for N_A in 20..60:
    np.random.choice(80, N_A, replace=False) indexes the 80 categories (in file order)."""
    rng = np.random.RandomState(3)
    for trial in range(1, 6):
        for n in (20, 30, 40, 50, 60):
            inds = rng.choice(80, n, replace=False)
            a = random_set_a(COCO_IDS, {"random": n, "trial": trial})
            assert a == tuple(sorted(COCO_IDS[i] for i in inds)), (n, trial)
    # E1_A20B60 pinned (train, boat, traffic light, ..., book, teddy bear): numpy keeps the
    # legacy RandomState stream fixed, so this must never change.
    first = (7, 9, 10, 14, 15, 32, 39, 40, 51, 53, 56, 60, 61, 63, 65, 70, 73, 76, 84, 88)
    assert random_set_a(COCO_IDS, {"random": 20, "trial": 1}) == first


def test_a_paper_trial_needs_cocos_80_categories() -> None:
    with pytest.raises(ValueError, match=r"data\.split=\{random: 20, trial: 1\}.*80 categories"):
        random_set_a(range(1, 31), {"random": 20, "trial": 1})


# ---- the config ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("{random: 0, seed: 1}", "random=0 is not an integer >= 1"),
        ("{random: 2.5, seed: 1}", "random=2.5"),
        ("{random: true, seed: 1}", "random=True"),
        ("{random: 20, seed: -1}", "seed=-1 is not an integer >= 0"),
        ("{random: 20, seed: abc}", "seed='abc'"),
        ("{random: 20, sed: 1}", "unknown key(s) 'sed'"),
        ("{seed: 1}", "'random', the number of classes in A, is missing"),
        ("{random: 20}", "exactly one of 'seed' and 'trial'"),
        ("{random: 20, seed: 1, trial: 1}", "exactly one of 'seed' and 'trial'"),
        ("{random: 20, trial: 6}", "trial=6 is not one of the paper's trials 1..5"),
        ("{random: 25, trial: 1}", "20, 30, 40, 50 or 60 classes in A, not 25"),
    ],
)
def test_a_bad_random_split_is_one_line_naming_data_split(value: str, why: str) -> None:
    with pytest.raises(ValueError) as e:
        load_config(None, [f"data.split={value}"])
    msg = str(e.value)
    assert msg.startswith("data.split=") and why in msg and "expected {random:" in msg
    assert "\n" not in msg


def test_too_many_a_classes_for_the_dataset_names_data_split(shapesx_root: Path) -> None:
    from mxr.engine.data import build_dataset

    cfg = tiny_config(shapesx_root, ["data.split={random: 30, seed: 0}"])  # ShapesX has 30
    with pytest.raises(ValueError, match=r"data\.split=.*leaves set B empty.*1\.\.29") as e:
        build_dataset(cfg.data, "train")
    assert "\n" not in str(e.value)


def test_a_random_split_round_trips_through_the_run_files(tmp_path: Path) -> None:
    cfg = load_config(None, ["data.split={seed: 3, random: 20}"])  # any key order, one recorded
    assert cfg.data.split == {"random": 20, "seed": 3}
    d = config_to_dict(cfg)
    d["data"]["split"]["seed"] = 99  # a copy: the frozen config keeps its own
    assert cfg.data.split["seed"] == 3
    save_config(cfg, tmp_path / "config.yaml")  # what a run (and its checkpoint) records
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["data"]["split"] == {
        "random": 20,
        "seed": 3,
    }
    assert load_config(tmp_path / "config.yaml") == cfg
    assert config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg


# ---- the dataset ---------------------------------------------------------------------------------
def test_a_dataset_with_a_random_split_trains_masks_of_the_drawn_classes(
    shapesx_root: Path, tmp_path: Path
) -> None:
    from mxr.engine.data import build_dataset, model_config_for

    cfg = tiny_config(shapesx_root, ["data.split={random: 24, seed: 1}"])
    ds = build_dataset(cfg.data, "train")
    cats = json.loads((shapesx_root / "annotations" / "instances_train.json").read_text())
    a_ids = random_set_a([c["id"] for c in cats["categories"]], {"random": 24, "seed": 1})
    assert ds.a_cat_ids == a_ids and len(ds.a_labels) == 24 and len(ds.b_labels) == 6
    assert ds.mask_labels == ds.a_labels
    assert model_config_for(cfg.model, ds).mask_classes == ds.a_labels  # what the loss sees
    names = ds.split_names
    assert names["A"] == [ds.class_names[i] for i in ds.a_labels] and len(names["B"]) == 6
    # This seed puts an end member of its family in B: tau must extrapolate (data/README.md).
    assert "beads-5" in names["B"]
    # Only A instances carry masks.
    for i in range(len(ds)):
        _, target = ds[i]
        drawn = [int(label) in ds.a_labels for label in target["labels"]]
        assert target["has_mask"].tolist() == drawn
        assert target["masks"].shape[0] == sum(drawn)

    # Written down as a split file, the drawn split reads back as data.split: the same set A.
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps(names))
    assert resolve_split(str(split_file), cats["categories"]) == (ds.a_cat_ids, ds.b_cat_ids)


# ---- mxr data check ------------------------------------------------------------------------------
def test_data_check_reports_the_random_split(
    shapesx_root: Path, capsys: pytest.CaptureFixture
) -> None:
    ann = str(shapesx_root / "annotations" / "instances_val.json")
    assert cli.main(["data", "check", ann, "--split", "{random: 12, seed: 3}"]) == 0
    out = capsys.readouterr().out
    assert "Split {random: 12, seed: 3}: 12 categories in A, 18 in B" in out
    assert "Random split: 12 of 30 classes drawn for A with seed 3" in out
    cats = json.loads(Path(ann).read_text())["categories"]
    a, b = resolve_split({"random": 12, "seed": 3}, cats)
    name = {c["id"]: c["name"] for c in cats}
    assert f"Set A (12): {', '.join(name[i] for i in a)}" in out
    assert f"Set B (18): {', '.join(name[i] for i in b)}" in out


def test_data_check_refuses_a_bad_random_split(
    shapesx_root: Path, capsys: pytest.CaptureFixture
) -> None:
    ann = str(shapesx_root / "annotations" / "instances_val.json")
    assert cli.main(["data", "check", ann, "--split", "{random: 30, seed: 3}"]) == 1
    assert "data.split={random: 30, seed: 3} is not valid" in capsys.readouterr().out
    assert cli.main(["data", "check", ann, "--split", "{random: 3"]) == 2  # not YAML: one line
    err = capsys.readouterr().err.strip()
    assert err.startswith("mxr data check: error: --split '{random: 3' is not a YAML mapping")
    assert "\n" not in err


# ---- the sweep's configs -------------------------------------------------------------------------
@pytest.mark.parametrize("head", ["transfer_mlp", "agnostic"])
def test_randsplit_configs_are_the_voc_configs_with_a_paper_split(head: str) -> None:
    cfg = config_to_dict(load_config(REPO / "configs" / "coco" / "randsplit" / f"{head}.yaml"))
    voc = config_to_dict(load_config(REPO / "configs" / "coco" / f"voc2nonvoc_{head}.yaml"))
    assert cfg["data"].pop("split") == {"random": 20, "trial": 1}
    voc["data"].pop("split")
    assert cfg == voc
    # Every split of the README's loop is a valid override of it.
    for n in PAPER_RANDOM_SPLIT_SIZES:
        for trial in range(1, 6):
            path = REPO / "configs" / "coco" / "randsplit" / f"{head}.yaml"
            split = load_config(path, [f"data.split={{random: {n}, trial: {trial}}}"]).data.split
            assert split == {"random": n, "trial": trial}


def test_data_check_names_the_papers_split_on_real_coco(
    coco_sample: Path, capsys: pytest.CaptureFixture
) -> None:
    ann = str(coco_sample / "annotations" / "instances_val2017.json")
    assert [c["id"] for c in json.loads(Path(ann).read_text())["categories"]] == COCO_IDS
    assert cli.main(["data", "check", ann, "--split", "{random: 20, trial: 1}"]) == 0
    out = capsys.readouterr().out
    assert "Random split: the paper's COCO split E1_A20B60 (trial 1 of 5)" in out
    assert "Set A (20): train, boat, traffic light, parking meter, bench, tie, " in out
