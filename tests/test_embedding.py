"""τ from a fixed class embedding: the file loader, the ShapesX embedding, randn, checkpoints."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_config

from mxr.config import ModelConfig, config_to_dict
from mxr.data.embedding import (
    embedding_from_word_vectors,
    load_class_embedding,
    read_embedding_file,
)
from mxr.data.shapesx import FAMILIES, class_embedding, class_names, default_split
from mxr.engine.checkpoint import model_from_checkpoint
from mxr.engine.data import class_embedding_for
from mxr.engine.loop import train
from mxr.model.build import build_model
from mxr.model.transfer import randn_embedding

NAMES = ["__background__", "cat", "dog", "traffic light"]


def write(tmp_path, table, name="emb.json"):
    path = tmp_path / name
    path.write_text(json.dumps(table))
    return path


def cfg(**kw) -> ModelConfig:
    base = dict(
        num_classes=4,
        mask_classes=(1, 2),
        min_size=64,
        max_size=64,
        mask_head="transfer",
        mlp_fusion=False,
        box_batch_size_per_image=32,
    )
    base.update(kw)
    return ModelConfig(**base)


# -------------------------------------------------------------------------------- file loader
def test_json_embedding_is_aligned_by_name_with_a_zero_background_row(tmp_path):
    path = write(tmp_path, {"dog": [2.0, 3.0], "traffic light": [4, 5], "cat": [0.5, 1.0]})
    emb = load_class_embedding(path, NAMES)
    assert emb.dtype == torch.float32 and emb.shape == (4, 2)
    assert emb.tolist() == [[0.0, 0.0], [0.5, 1.0], [2.0, 3.0], [4.0, 5.0]]


def test_npy_embedding_reads_its_names_file(tmp_path):
    np.save(tmp_path / "glove.npy", np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    (tmp_path / "glove.names.txt").write_text("traffic light\ncat\ndog\n")
    emb = load_class_embedding(tmp_path / "glove.npy", NAMES)
    assert emb[1:].tolist() == [[3.0, 4.0], [5.0, 6.0], [1.0, 2.0]]


def test_missing_class_names_the_file_and_the_class(tmp_path):
    path = write(tmp_path, {"cat": [1.0], "dog": [2.0]})
    with pytest.raises(ValueError, match=r"emb\.json.*'traffic light'"):
        load_class_embedding(path, NAMES)


def test_length_mismatch_names_the_file_and_the_class(tmp_path):
    path = write(tmp_path, {"cat": [1.0, 2.0], "dog": [2.0], "traffic light": [1.0, 1.0]})
    with pytest.raises(ValueError, match=r"emb\.json: class 'dog' has 1 numbers; expected 2"):
        load_class_embedding(path, NAMES)


@pytest.mark.parametrize(
    "content, match",
    [
        ("not json", "malformed JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"cat": ["x"]}', "cat"),
    ],
)
def test_malformed_files_are_refused_with_the_file_named(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as e:
        read_embedding_file(path)
    assert "bad.json" in str(e.value)


def test_missing_file_and_missing_names_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_class_embedding(tmp_path / "nope.json", NAMES)
    np.save(tmp_path / "v.npy", np.zeros((3, 2)))
    with pytest.raises(FileNotFoundError, match=r"v\.names\.txt"):
        read_embedding_file(tmp_path / "v.npy")


def test_word_vectors_average_the_words_of_a_multi_word_name(tmp_path):
    glove = tmp_path / "glove.txt"
    glove.write_text("cat 1 0\ndog 0 1\ntraffic 2 2\nlight 0 4\nunused 9 9\n")
    table = embedding_from_word_vectors(glove, ["cat", "dog", "traffic light"])
    assert table == {"cat": [1.0, 0.0], "dog": [0.0, 1.0], "traffic light": [1.0, 3.0]}
    with pytest.raises(ValueError, match="'zebra'"):
        embedding_from_word_vectors(glove, ["zebra"])


def test_config_requires_the_file_for_embed():
    with pytest.raises(ValueError, match="model.class_embedding is required"):
        ModelConfig(transfer_input="embed")
    ModelConfig(transfer_input="randn")  # draws its own vectors: no file


# -------------------------------------------------------------------------------- ShapesX embedding
def test_shapesx_embedding_comes_from_the_names_and_orders_the_members():
    table = class_embedding()
    assert list(table) == class_names() and all(len(v) == 2 * len(FAMILIES) for v in table.values())
    for name in default_split()["B"]:  # every B member sits halfway between its two A neighbours
        family, k = name.rsplit("-", 1)
        lo, hi, mid = (np.array(table[f"{family}-{j}"]) for j in (int(k) - 1, int(k) + 1, int(k)))
        np.testing.assert_allclose((lo + hi) / 2, mid)
    assert table["fork-1"] != table["taper-1"]  # families differ


def test_generated_shapesx_ships_the_embedding_and_ensure_restores_it(shapesx_root, tmp_path):
    path = shapesx_root / "annotations" / "class_embedding.json"
    assert json.loads(path.read_text()) == class_embedding()
    from mxr.data.shapesx import ensure_shapesx

    copy = tmp_path / "copy"
    shutil.copytree(shapesx_root, copy)
    (copy / "annotations" / "class_embedding.json").unlink()
    ensure_shapesx(copy)  # data from before the file existed gets it, nothing regenerated
    assert (
        json.loads((copy / "annotations" / "class_embedding.json").read_text()) == class_embedding()
    )


# -------------------------------------------------------------------------------- model
def test_randn_is_fixed_by_init_seed_and_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    a = build_model(cfg(transfer_input="randn", randn_dim=7, init_seed=3))
    assert torch.equal(torch.get_rng_state(), before)
    b = build_model(cfg(transfer_input="randn", randn_dim=7, init_seed=3))
    c = build_model(cfg(transfer_input="randn", randn_dim=7, init_seed=4))
    ea = a.roi_heads.class_embedding
    assert ea.shape == (4, 7) and torch.equal(ea, b.roi_heads.class_embedding)
    assert torch.equal(ea, randn_embedding(4, 7, 3))
    assert not torch.equal(ea, c.roi_heads.class_embedding)
    assert abs(float(randn_embedding(100, 50, 0).std()) - 1.0) < 0.05  # N(0, 1)


def test_embedding_is_a_buffer_never_a_parameter_and_sets_tau_input_width():
    emb = torch.randn(4, 5)
    model = build_model(cfg(transfer_input="embed", class_embedding="e.json"), class_embedding=emb)
    heads = model.roi_heads
    assert "roi_heads.class_embedding" in model.state_dict()
    assert all(p is not heads.class_embedding for p in model.parameters())
    assert heads.mask_predictor.transfer.mlp[0].in_features == 5
    both = build_model(
        cfg(transfer_input="cls+embed", class_embedding="e.json", box_fc_dim=32),
        class_embedding=emb,
    )
    assert both.roi_heads.mask_predictor.transfer.mlp[0].in_features == 32 + 5
    with pytest.raises(ValueError, match="needs the class embedding"):
        build_model(cfg(transfer_input="embed", class_embedding="e.json"))
    with pytest.raises(ValueError, match=r"expected \(4, E\)"):
        build_model(cfg(transfer_input="embed", class_embedding="e.json"), class_embedding=emb[:3])


def _b_mask(model, features, label):
    heads = model.roi_heads
    x = heads.mask_head(features)
    classes = torch.full((x.shape[0],), label, dtype=torch.int64)
    return heads.mask_predictor(x, classes, heads.read_transfer_input)


@torch.no_grad()
def test_a_b_class_mask_changes_when_and_only_when_its_own_row_changes():
    b = 3  # not in mask_classes (1, 2)
    emb = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    model = build_model(
        cfg(transfer_input="embed", class_embedding="e.json"), class_embedding=emb
    ).eval()
    features = torch.randn(2, model.config.fpn_channels, 14, 14)
    before = _b_mask(model, features, b)
    model.roi_heads.class_embedding[1] += 1.0  # another class's row
    model.roi_heads.class_embedding[0] -= 1.0  # the background's
    assert torch.equal(_b_mask(model, features, b), before)
    model.roi_heads.class_embedding[b] += 0.5  # its own row
    assert not torch.allclose(_b_mask(model, features, b), before)


def test_engine_reads_the_file_relative_to_data_root_and_checkpoint_is_self_contained(
    shapesx_root, tmp_path
):
    root = tmp_path / "data"
    shutil.copytree(shapesx_root, root)
    config = tiny_config(
        root,
        [
            "model.transfer_input=embed",
            "model.class_embedding=annotations/class_embedding.json",
            "train.iterations=2",
        ],
    )
    summary = train(config, tmp_path / "run", progress=False, eval_split=None)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    stored = ckpt["model"]["roi_heads.class_embedding"]
    names = ["__background__", *class_names()]
    table = class_embedding()
    assert stored[1:].tolist() == [table[n] for n in names[1:]] and not stored[0].any()
    (root / "annotations" / "class_embedding.json").unlink()  # evaluation elsewhere: no file
    model = model_from_checkpoint(tmp_path / "run" / "last.pt")
    assert torch.equal(model.roi_heads.class_embedding, stored)
    assert summary.iteration == 2 and summary.eval is None  # eval_split=None
    rebuilt = build_model(model.config, class_embedding=stored)
    rebuilt.load_state_dict(ckpt["model"])
    assert config_to_dict(config)["model"]["class_embedding"] == "annotations/class_embedding.json"
    with pytest.raises(FileNotFoundError, match="class_embedding.json"):
        class_embedding_for(config, type("D", (), {"class_names": names})())


@pytest.mark.parametrize("transfer_input", ["embed", "randn", "cls+embed"])
def test_the_training_panel_offers_the_embedding_inputs(transfer_input):
    from mxr.course.choices import config_from_choices, run_name

    c = config_from_choices({"mask_head": "transfer", "transfer_input": transfer_input})
    assert c.model.transfer_input == transfer_input
    if transfer_input != "randn":
        assert c.model.class_embedding == "annotations/class_embedding.json"
    assert run_name({"transfer_input": transfer_input}) != run_name({"transfer_input": "cls+box"})


def test_a_training_image_without_instances_gives_finite_losses():
    # reachable with data.skip_empty_train=false: the mask loss must see no RoI of that image
    model = build_model(cfg(mask_head="transfer", transfer_input="randn"))
    model.train()
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    box = torch.tensor([[4.0, 4.0, 40.0, 40.0]])
    mask = torch.zeros(1, 64, 64, dtype=torch.uint8)
    mask[0, 8:36, 8:36] = 1
    targets = [
        {"boxes": box, "labels": torch.tensor([1]), "masks": mask},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
         "masks": torch.zeros(0, 64, 64, dtype=torch.uint8)},
    ]  # fmt: skip
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
