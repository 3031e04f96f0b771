"""τ's inputs have one home: ``mxr.model.transfer.TRANSFER_INPUTS``. Config checks, the model, the
engine, the course panel and the README read it, so a new input is one entry there."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from mxr.config import ModelConfig
from mxr.engine.checkpoint import model_from_checkpoint
from mxr.engine.loop import train
from mxr.model.transfer import TRANSFER_INPUTS, TransferInput

#: Inputs no config file names: one whose embedding is a file, one drawn from the seed.
NEW_INPUTS = [
    TransferInput("box+embed", ("box", "embed"), "box weights and class embedding", "file"),
    TransferInput("cls+randn", ("cls", "embed"), "cls weights and a random vector", "randn"),
]


@pytest.mark.parametrize("new", NEW_INPUTS, ids=lambda t: t.name)
def test_a_new_input_registered_in_one_place_builds_trains_and_evaluates(
    new, shapesx_root, tmp_path, monkeypatch
):
    monkeypatch.setitem(TRANSFER_INPUTS, new.name, new)  # the one place
    root = tmp_path / "data"
    shutil.copytree(shapesx_root, root)
    overrides = [
        f"model.transfer_input={new.name}",
        "model.randn_dim=5",
        "train.iterations=1",
        "train.checkpoint_every=1",
    ]
    if new.reads_file:
        overrides.append("model.class_embedding=annotations/class_embedding.json")
    config = tiny_config(root, overrides)  # config checks accept it
    summary = train(config, tmp_path / "run", progress=False)  # build, one step, evaluate on val
    assert summary.iteration == 1
    assert summary.eval["B"]["segm"]["AP"] is not None  # evaluated, B classes included

    model = model_from_checkpoint(tmp_path / "run" / "last.pt")  # no embedding file needed
    heads, d = model.roi_heads, model.config.box_fc_dim
    e = 12 if new.reads_file else 5  # ShapesX's class embedding, or model.randn_dim
    assert heads.transfer_input == new.name and heads.class_embedding.shape[1] == e
    assert heads.mask_predictor.transfer.mlp[0].in_features == new.width(d, e)
    w = heads.box_predictor
    det = {"box": w.bbox_pred.weight.view(-1, 4 * d), "cls": w.cls_score.weight}[new.parts[0]]
    rows = torch.cat([det[:3], heads.class_embedding[:3]], dim=1)  # τ's input for labels 0..2
    assert torch.equal(heads.read_transfer_input(torch.arange(3)), rows)

    from mxr.course.choices import config_from_choices
    from mxr.course.widgets import training_panel

    panel = training_panel()
    panel.transfer_input.value = new.name  # the panel's menu offers it
    assert new.description in panel.transfer_input.label
    chosen = config_from_choices(panel.choices()).model
    assert chosen.transfer_input == new.name
    assert (chosen.class_embedding is not None) == new.reads_file


def test_config_lists_the_registered_inputs_and_asks_for_the_file_an_input_reads():
    with pytest.raises(ValueError) as e:
        ModelConfig(transfer_input="mask")
    assert "model.transfer_input" in str(e.value)
    assert all(repr(name) in str(e.value) for name in TRANSFER_INPUTS)
    for name, t in TRANSFER_INPUTS.items():
        if t.reads_file:
            with pytest.raises(ValueError, match="model.class_embedding is required"):
                ModelConfig(transfer_input=name)
        else:
            ModelConfig(transfer_input=name)


def test_the_inputs_keep_their_names_parts_and_embedding_source():
    got = {k: (t.parts, t.embedding) for k, t in TRANSFER_INPUTS.items()}
    assert got == {
        "cls": (("cls",), None),
        "box": (("box",), None),
        "cls+box": (("cls", "box"), None),
        "embed": (("embed",), "file"),
        "randn": (("embed",), "randn"),
        "cls+embed": (("cls", "embed"), "file"),
    }
    assert TRANSFER_INPUTS["cls+box"].width(1024) == 5120  # the paper's w_det
    assert TRANSFER_INPUTS["cls+embed"].width(1024, 300) == 1324


@pytest.mark.parametrize(
    ("parts", "embedding"), [(("cls", "mask"), None), (("embed",), None), (("cls",), "file")]
)
def test_an_inconsistent_input_is_refused_when_it_is_defined(parts, embedding):
    with pytest.raises(ValueError, match="transfer input 'bad'"):
        TransferInput("bad", parts, "bad", embedding)


def test_the_readme_layout_names_every_input():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(i for i, s in enumerate(readme.splitlines()) if s.strip().startswith("transfer.py"))
    words = set(re.findall(r"[\w+]+", " ".join(readme.splitlines()[line : line + 2])))
    assert set(TRANSFER_INPUTS) <= words, sorted(words)
