"""The probes that bound what τ can transfer: neighbours in weight space and the interpolation probe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from mxr.course.probes import (
    b_weight_guesses,
    interpolation_probe,
    neighbour_hits,
    ridge_map,
    wdet_distance_from_adjacent,
)
from mxr.data.shapesx import class_names, default_split
from mxr.engine.data import build_dataset, model_config_for
from mxr.model.build import build_model

NAMES = [f"{f}-{k}" for f in ("f", "g") for k in (1, 2, 3, 4)]
B = ["f-2", "g-3"]


def test_neighbour_hits_finds_adjacent_members_and_checks_shapes() -> None:
    # rows: a family direction plus the member index along a shared axis
    w = torch.stack([torch.tensor([5.0 * (f == "f"), 5.0 * (f == "g"), float(k)])
                     for f, k in (n.split("-") for n in NAMES) for k in [int(k)]])  # fmt: skip
    assert neighbour_hits(w, NAMES, B) == (4, 4)
    shuffled = w[[0, 5, 2, 7, 4, 1, 6, 3]]  # B rows now look like the other family's members
    assert neighbour_hits(shuffled, NAMES, B)[1] < 4
    with pytest.raises(ValueError, match="8 class names"):
        neighbour_hits(w[:5], NAMES, B)


def test_ridge_map_recovers_a_linear_relation() -> None:
    g = torch.Generator().manual_seed(0)
    m, x = torch.randn(3, 6, generator=g), torch.randn(10, 6, generator=g)
    y = x @ m.T + 0.5
    torch.testing.assert_close(ridge_map(x[:8], y[:8], x[8:], 1e-9), y[8:], atol=1e-3, rtol=1e-3)


@pytest.fixture
def oracle(shapesx_root: Path):  # noqa: ANN201
    cfg = tiny_config(shapesx_root, ["model.mask_head=class"])
    val = build_dataset(cfg.data, "val")
    return build_model(model_config_for(cfg.model, val)).eval(), val


def test_guesses_are_built_from_set_a_only(oracle) -> None:  # noqa: ANN001
    model, _ = oracle
    names, b_names = class_names(), default_split()["B"]
    pred = model.roi_heads.mask_predictor
    torch.manual_seed(0)
    with (
        torch.no_grad()
    ):  # w_det (cls) of rank 5, so B's rows lie in the span of A's; w_seg linear in it
        cls = model.roi_heads.box_predictor.cls_score.weight
        cls.copy_(torch.randn(cls.shape[0], 5) @ torch.randn(5, cls.shape[1]))
        proj = torch.randn(cls.shape[1], pred.weight.shape[1] + 1)
        y = cls @ proj
        pred.weight.copy_(y[:, :-1])
        pred.bias.copy_(y[:, -1])
    guesses = b_weight_guesses(model, names, b_names, ridge=1e-9)
    b = [names.index(n) + 1 for n in b_names]
    fork4 = names.index("fork-4") + 1
    assert guesses["own weights (trained with B masks)"] is None
    torch.testing.assert_close(guesses["mean of the adjacent A members"][0],
                               (y[fork4 - 1] + y[fork4 + 1]) / 2)  # fmt: skip
    # a linear relation that holds on A is found from the A pairs alone and carries to B
    torch.testing.assert_close(guesses["linear map from w_det (cls)"], y[b], atol=1e-3, rtol=1e-3)
    dist = wdet_distance_from_adjacent(model, names, b_names)
    assert set(dist) == {"cls", "box", "cls+box"} and all(v > 0 for v in dist.values())


def test_interpolation_probe_scores_each_guess_and_restores_the_weights(oracle) -> None:  # noqa: ANN001
    from mxr.evaluation import instance_ious, mean_iou

    model, val = oracle
    names, b_names = class_names(), default_split()["B"]
    before = model.roi_heads.mask_predictor.weight.detach().clone()
    rows = interpolation_probe(model, val, names, b_names)
    assert [r["guess"] for r in rows] == list(b_weight_guesses(model, names, b_names))
    torch.testing.assert_close(model.roi_heads.mask_predictor.weight, before)
    a = [names.index(n) + 1 for n in names if n not in b_names]
    own = 100 * mean_iou(instance_ious(model, val), a)
    assert all(r["A"] == pytest.approx(own) for r in rows)  # only B's weights are replaced


def test_interpolation_probe_needs_a_class_specific_head(shapesx_root: Path) -> None:
    cfg = tiny_config(shapesx_root, ["model.mask_head=agnostic"])
    val = build_dataset(cfg.data, "val")
    model = build_model(model_config_for(cfg.model, val)).eval()
    with pytest.raises(ValueError, match="class-specific mask head"):
        interpolation_probe(model, val, class_names(), default_split()["B"])


def test_plot_interpolation_probe_draws_one_bar_per_guess() -> None:
    from mxr.course.figures import plot_interpolation_probe

    rows = [{"guess": g, "B": b, "A": 82.0} for g, b in
            [("own weights (trained with B masks)", 80.8), ("mean of the adjacent A members", 79.1),
             ("linear map from w_det (cls)", 73.1)]]  # fmt: skip
    ax = plot_interpolation_probe(rows).axes[0]
    assert len(ax.patches) == 3 and [p.get_width() for p in ax.patches] == [80.8, 79.1, 73.1]
    # the w_det bars stay apart from both set colours (A's orange is the dashed A line)
    from matplotlib.colors import to_rgb

    from mxr.report import SET_COLOURS

    w_det = to_rgb(ax.patches[2].get_facecolor()[:3])
    for s in ("A", "B"):
        assert sum(abs(a - b) for a, b in zip(w_det, to_rgb(SET_COLOURS[s]), strict=True)) > 0.6
    assert ax.get_title() and ax.get_xlabel() and ax.get_legend() is not None
    with pytest.raises(ValueError, match="rows is empty"):
        plot_interpolation_probe([])


def test_the_class_embedding_guess_interpolates_a_structured_oracle(oracle) -> None:  # noqa: ANN001
    from mxr.data.embedding import embedding_rows
    from mxr.data.shapesx import class_embedding

    model, _ = oracle
    names, b_names = class_names(), default_split()["B"]
    emb = embedding_rows(class_embedding(), ["__background__", *names])
    pred = model.roi_heads.mask_predictor
    with torch.no_grad():  # mask weights linear in the embedding: the map fitted on A carries to B
        proj = torch.randn(12, pred.weight.shape[1] + 1, generator=torch.Generator().manual_seed(1))
        y = emb @ proj
        pred.weight.copy_(y[:, :-1])
        pred.bias.copy_(y[:, -1])
    guesses = b_weight_guesses(model, names, b_names, ridge=1e-9, embedding=emb)
    b = [names.index(n) + 1 for n in b_names]
    got = guesses["linear map from the class embedding"]
    torch.testing.assert_close(got, y[b], atol=1e-3, rtol=1e-3)
    assert "linear map from the class embedding" not in b_weight_guesses(model, names, b_names)


def test_transfer_input_rows_read_what_tau_reads(shapesx_root: Path) -> None:
    from mxr.course.probes import transfer_input_rows

    cfg = tiny_config(shapesx_root, ["model.transfer_input=randn", "model.randn_dim=5"])
    val = build_dataset(cfg.data, "val")
    model = build_model(model_config_for(cfg.model, val)).eval()
    torch.testing.assert_close(transfer_input_rows(model), model.roi_heads.class_embedding)
    agn = tiny_config(shapesx_root, ["model.mask_head=agnostic"])
    assert transfer_input_rows(build_model(model_config_for(agn.model, val))) is None


def test_family_labels_lists_a_family_in_member_order() -> None:
    from mxr.course.probes import family_labels

    names = class_names()
    labels = family_labels(names, "fork-4")
    assert [names[i - 1] for i in labels] == [f"fork-{k}" for k in range(1, 6)]
    with pytest.raises(ValueError, match="'spoon-2' is not in names"):
        family_labels(names, "spoon-2")


def _forced_masks(model, full: list[int], empty: list[int]) -> None:  # noqa: ANN001
    """Class-specific mask weights that fill the whole box for ``full`` and nothing for ``empty``."""
    pred = model.roi_heads.mask_predictor
    with torch.no_grad():
        pred.weight[full + empty] = 0.0
        pred.bias[full] = 20.0
        pred.bias[empty] = -20.0


def test_member_sweep_segments_one_box_as_each_forced_class(oracle) -> None:  # noqa: ANN001
    from mxr.course.probes import member_sweep

    model, val = oracle
    _forced_masks(model, full=[2], empty=[3])
    image, target = val[0]
    box = target["boxes"][0]
    probs = member_sweep(model, image, box, [2, 3, 5])
    assert probs.shape == (3, *image.shape[-2:])
    x0, y0, x1, y1 = (int(v) for v in box.round())
    inside = (slice(y0 + 1, y1 - 1), slice(x0 + 1, x1 - 1))
    assert probs[0][inside].min() > 0.99 and probs[1].max() < 0.01  # the label decides the mask
    one = model.masks_for_boxes([image], [box[None]], [torch.tensor([5])])[0][0]
    torch.testing.assert_close(probs[2], one)  # the same masks as the mask branch's own
    with pytest.raises(ValueError, match="labels is empty"):
        member_sweep(model, image, box, [])
    with pytest.raises(ValueError, match="expected one XYXY box"):
        member_sweep(model, image, torch.zeros(2, 4), [2])


def test_member_sweep_ious_score_own_class_against_its_neighbours(oracle) -> None:  # noqa: ANN001
    from mxr.course.probes import member_sweep_ious, summarise_member_sweep

    model, val = oracle
    names, b_names = class_names(), default_split()["B"]
    b = [names.index(n) + 1 for n in b_names]
    a = [i for i in range(1, len(names) + 1) if i not in b]
    _forced_masks(model, full=b, empty=a)  # B's own mask: its box; every A member's: empty
    rows = member_sweep_ious(model, val, names, b_names)
    n_b = sum(int(torch.isin(val[i][1]["labels"], torch.tensor(b)).sum()) for i in range(len(val)))
    assert len(rows) == n_b > 0
    assert all(r["class"] in b_names and r["own"] > 0.3 for r in rows)
    assert all(r["neighbours"] and max(r["neighbours"]) == 0.0 for r in rows)
    summary = summarise_member_sweep(rows)
    assert summary["own_wins"] == 1.0 and summary["neighbour"] == 0.0 and summary["objects"] == n_b
    _forced_masks(model, full=a, empty=b)  # now the neighbours' masks win everywhere
    assert summarise_member_sweep(member_sweep_ious(model, val, names, b_names))["own_wins"] == 0.0
    with pytest.raises(ValueError, match="rows is empty"):
        summarise_member_sweep([])


def test_plot_member_sweep_draws_a_row_per_model_and_scores_each_mask() -> None:
    from mxr.course.figures import plot_member_sweep

    image = torch.rand(3, 40, 40)
    truth = torch.zeros(40, 40, dtype=torch.bool)
    truth[10:30, 10:30] = True
    full, empty = truth.float(), torch.zeros(40, 40)
    sweeps = {"τ(cls+box)": torch.stack([empty, full]), "τ(embed)": torch.stack([full, empty])}
    box = torch.tensor([10.0, 10.0, 30.0, 30.0])
    fig = plot_member_sweep(sweeps, image, box, ["f-1", "f-2"], b_names=["f-2"], truth=truth)
    assert len(fig.axes) == 2 * 3
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[1:3] == ["f-1 [A]\nIoU 0", "f-2 [B]\nIoU 100"]
    assert fig.axes[0].get_ylabel() == "τ(cls+box)" and fig.axes[3].get_ylabel() == "τ(embed)"
    with pytest.raises(ValueError, match="expected \\(3, H, W\\)"):
        plot_member_sweep(sweeps, image, box, ["f-1", "f-2", "f-3"])


def test_plot_transfer_rows_marks_published_rows_runs_and_the_control() -> None:
    from mxr.course.figures import plot_transfer_rows

    def row(miou: float, ap75: float) -> dict:
        return {"B": {"mask_iou": {"mIoU": miou, "mIoU_std": 1.0},
                      "segm": {"AP75": ap75, "AP75_std": 2.0}}}  # fmt: skip

    published = {"agnostic_mlp": row(73.5, 8.8), "transfer_embed_mlp": row(79.5, 13.0)}
    runs = {"agnostic_mlp": row(73.0, 9.0), "transfer_randn": row(64.0, 2.0)}
    labels = {
        "agnostic_mlp": "control",
        "transfer_embed_mlp": "τ(embed)",
        "transfer_randn": "τ(randn)",
    }
    fig = plot_transfer_rows(labels, published, runs)
    miou, ap75 = fig.axes[:2]
    pairs = zip(miou.get_yticks(), miou.get_yticklabels(), strict=True)
    ticks = {float(y): t.get_text() for y, t in pairs}
    assert ticks == {2.0: "control", 1.0: "τ(embed)", 0.0: "τ(randn)"}  # first row on top
    assert len(miou.containers) == 2 and len(miou.collections) >= 2  # 2 published, 2 runs
    assert miou.get_xlim()[0] == pytest.approx(61.0)  # the mIoU axis spans the values, not from 0
    assert ap75.get_xlim()[0] == 0.0
    assert [ln.get_xdata()[0] for ln in miou.lines if ln.get_linestyle() == "--"] == [73.5]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(legend) == 3 and "this notebook's run" in legend
    only_published = plot_transfer_rows(labels, published)  # no run drawn: no run in the legend
    legend = [t.get_text() for t in only_published.legends[0].get_texts()]
    assert len(legend) == 2 and "this notebook's run" not in legend
    with pytest.raises(ValueError, match="labels is empty"):
        plot_transfer_rows({}, published)
    with pytest.raises(ValueError, match="published rows, notebook runs, or both"):
        plot_transfer_rows(labels)


def test_distance_from_adjacent_is_zero_for_an_embedding_that_interpolates() -> None:
    from mxr.course.probes import distance_from_adjacent
    from mxr.data.shapesx import class_embedding

    names, b_names = class_names(), default_split()["B"]
    table = class_embedding()  # the ideal embedding: each member halfway between its neighbours
    rows = torch.tensor([[0.0] * len(table[names[0]])] + [table[n] for n in names])
    assert distance_from_adjacent(rows, names, b_names) == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    noisy = rows + 0.1 * torch.randn(rows.shape, generator=g)
    shuffled = rows[torch.cat([torch.tensor([0]), 1 + torch.randperm(len(names), generator=g)])]
    near, far = (distance_from_adjacent(x, names, b_names) for x in (noisy, shuffled))
    assert 0 < near < 0.5 < far
