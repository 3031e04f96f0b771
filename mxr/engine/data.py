"""What the loop reads: the datasets a config names, and the batches of every iteration.

The order of training images is a function of ``(train.seed, epoch)`` only, so a resumed run sees
the same batches as an uninterrupted one; each rank takes its share of each global batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mxr.config import FILE_EMBEDDING_INPUTS, Config, DataConfig, ModelConfig
from mxr.engine.dist import DistInfo


def _resolve_split(data_cfg: DataConfig) -> Any:
    split = data_cfg.split
    if isinstance(split, str) and split not in ("voc", "nonvoc"):
        return str(data_cfg.path("split"))
    if isinstance(split, tuple):
        return list(split)
    return split


def build_dataset(
    data_cfg: DataConfig, which: str, *, seed: int = 0, keep_coco: bool = True
) -> Any:
    """The ``train``, ``val`` or ``test`` dataset a :class:`DataConfig` names.

    ``train`` loads masks of set A only (``data.train_masks="A"``) or of every class (``"all"``, the
    oracle), with flips and empty images skipped as configured; ``val``/``test`` load every mask and
    no augmentation. It only reads: :func:`prepare_data` generates a missing ShapesX root.
    ``keep_coco=False`` frees the parsed annotation file once indexed (``dataset.coco`` is then
    ``None``): what :func:`train` does with the training set, which COCOeval never reads.
    """
    from mxr.data import CocoInstances

    if which not in ("train", "val", "test"):
        raise ValueError(f"dataset {which!r} is not valid; expected one of 'train', 'val', 'test'")
    ann = data_cfg.path(f"{which}_annotations")
    if not ann.is_file():
        raise FileNotFoundError(
            f"data.{which}_annotations: annotation file not found: {ann} (data.root={data_cfg.root!r})"
        )
    train = which == "train"
    return CocoInstances(
        data_cfg.path(f"{which}_images"),
        ann,
        split=_resolve_split(data_cfg),
        masks=data_cfg.train_masks if train else "all",
        train=train,
        flip_prob=data_cfg.flip_prob if train else 0.0,
        seed=seed,
        skip_empty=data_cfg.skip_empty_train if train else False,
        keep_coco=keep_coco,
    )


def prepare_data(data_cfg: DataConfig) -> None:
    """Generate ShapesX at ``data.root`` when ``data.generate`` is true and an annotation file of
    ``train``/``val``/``test`` is missing: the one place data is generated (:func:`train` calls it
    on rank 0 before any process reads; ``mxr eval`` before it loads)."""
    names = ("train_annotations", "val_annotations", "test_annotations")
    if data_cfg.generate and not all(data_cfg.path(n).is_file() for n in names):
        from mxr.data import ensure_shapesx

        ensure_shapesx(data_cfg.root)


def class_embedding_for(cfg: Config, dataset: Any) -> Tensor | None:
    """The ``(C, E)`` class embedding τ reads for ``transfer_input="embed"`` / ``"cls+embed"``: the
    file ``model.class_embedding`` (relative to ``data.root`` unless absolute) aligned to the
    dataset's labels by category name; ``None`` for every other input (``randn`` draws its own)."""
    from mxr.data.embedding import load_class_embedding

    m = cfg.model
    if m.mask_head != "transfer" or m.transfer_input not in FILE_EMBEDDING_INPUTS:
        return None
    path = Path(m.class_embedding)
    if not path.is_absolute():
        path = Path(cfg.data.root) / path
    return load_class_embedding(path, dataset.class_names)


def model_config_for(model_cfg: ModelConfig, dataset: Any) -> ModelConfig:
    """Fill ``num_classes`` / ``mask_classes`` left as ``None`` from the dataset, and resolve sizes."""
    changes: dict[str, Any] = {}
    if model_cfg.num_classes is None:
        changes["num_classes"] = int(dataset.num_classes)
    if model_cfg.mask_classes is None:
        changes["mask_classes"] = tuple(int(c) for c in dataset.mask_labels)
    return dataclasses.replace(model_cfg, **changes).resolved()


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order of ``n`` training images in ``epoch``: a permutation fixed by ``(seed, epoch)``."""
    g = torch.Generator()
    g.manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g).tolist()


def orientation_groups(dataset: Any) -> list[int]:
    """Per training index, ``1`` for a landscape image (width ≥ height) and ``0`` for a portrait one,
    from ``dataset.image_sizes`` (``(height, width)`` per index, as the annotation file gives them)."""
    sizes = getattr(dataset, "image_sizes", None)
    if sizes is None or any(s is None for s in sizes):
        raise ValueError(
            "train.aspect_ratio_grouping=true needs the height and width of every training image "
            f"('height'/'width' in the annotation file's images); {type(dataset).__name__} lacks "
            "them; set train.aspect_ratio_grouping=false"
        )
    return [int(w >= h) for h, w in sizes]


def batches_per_epoch(
    n: int, global_batch: int, batch_size: int | None = None, groups: Sequence[int] | None = None
) -> int:
    """Global batches per epoch: ``n // global_batch``, or with ``groups`` (one group id per image,
    batches of ``batch_size`` images of one group per process) ``Σ_g ⌊n_g / batch_size⌋ //
    processes``: the same for every epoch, whatever the order."""
    if groups is None:
        per_epoch = n // global_batch
    else:
        counts: dict[int, int] = {}
        for g in groups:
            counts[g] = counts.get(g, 0) + 1
        per_epoch = sum(c // batch_size for c in counts.values()) // (global_batch // batch_size)
    if per_epoch == 0:
        raise ValueError(
            f"the training set has {n} images, fewer than one global batch of {global_batch} "
            "(train.batch_size × processes)"
            + ("" if groups is None else " of one orientation per process")
        )
    return per_epoch


def epoch_batches(
    n: int,
    global_batch: int,
    seed: int,
    epoch: int,
    *,
    batch_size: int | None = None,
    groups: Sequence[int] | None = None,
) -> list[list[int]]:
    """The global batches of ``epoch``, a pure function of ``(seed, epoch)``: consecutive slices of
    :func:`epoch_order` (last partial one dropped), or with ``groups`` (aspect-ratio grouping, as
    Detectron and torchvision's reference do) the same order dealt into one buffer per group, each
    full buffer of ``batch_size`` becoming one process's share; ``global_batch / batch_size``
    consecutive shares make a global batch, and what is left at the end of the epoch is dropped."""
    order = epoch_order(n, seed, epoch)
    per_epoch = batches_per_epoch(n, global_batch, batch_size, groups)
    if groups is None:
        return [order[b * global_batch : (b + 1) * global_batch] for b in range(per_epoch)]
    shares, buffers = [], {}
    for i in order:
        buf = buffers.setdefault(groups[i], [])
        buf.append(i)
        if len(buf) == batch_size:
            shares.append(buf)
            buffers[groups[i]] = []
    k = global_batch // batch_size
    return [sum(shares[b * k : (b + 1) * k], []) for b in range(per_epoch)]


def batch_indices(
    n: int,
    global_batch: int,
    seed: int,
    iteration: int,
    *,
    batch_size: int | None = None,
    groups: Sequence[int] | None = None,
) -> tuple[int, list[int]]:
    """``(epoch, image indices)`` of the global batch of ``iteration`` (0-based); last partial batch
    of each epoch dropped. ``groups``/``batch_size``: aspect-ratio grouping (:func:`epoch_batches`)."""
    per_epoch = batches_per_epoch(n, global_batch, batch_size, groups)
    epoch, b = divmod(iteration, per_epoch)
    if groups is None:
        order = epoch_order(n, seed, epoch)
        return epoch, order[b * global_batch : (b + 1) * global_batch]
    return epoch, epoch_batches(n, global_batch, seed, epoch, batch_size=batch_size, groups=groups)[
        b
    ]


class _EpochItems(torch.utils.data.Dataset):
    """``dataset[(epoch, index)]`` = ``dataset[index]`` in ``epoch`` (``set_epoch`` first), so that
    one loader, whose worker processes live for the whole run, serves every epoch."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


class _RankBatches:
    """This rank's ``[(epoch, index), ...]`` batch of every iteration in ``start..stop-1``, built one
    epoch at a time (a batch sampler for :class:`_EpochItems`)."""

    def __init__(self, n: int, *, start: int, stop: int, batch_size: int, info: DistInfo,
                 seed: int, groups: Sequence[int] | None) -> None:  # fmt: skip
        self.n, self.start, self.stop, self.bs, self.info = n, start, stop, batch_size, info
        self.seed, self.groups = seed, groups

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        gb, r = self.bs * self.info.world_size, self.info.rank
        per_epoch = batches_per_epoch(self.n, gb, self.bs, self.groups)
        it = self.start
        while it < self.stop:
            epoch = it // per_epoch
            batches = epoch_batches(
                self.n, gb, self.seed, epoch, batch_size=self.bs, groups=self.groups
            )
            for i in range(it, min(self.stop, (epoch + 1) * per_epoch)):
                idx = batches[i - epoch * per_epoch]
                yield [(epoch, j) for j in idx[r * self.bs : (r + 1) * self.bs]]
                it = i + 1


def _iterate_batches(
    dataset: Any,
    *,
    start: int,
    stop: int,
    batch_size: int,
    info: DistInfo,
    seed: int,
    num_workers: int,
    groups: Sequence[int] | None = None,
    pin_memory: bool = False,
) -> Iterator[tuple[int, list[Tensor], list[dict[str, Tensor]]]]:
    """Yield ``(iteration, images, targets)`` for iterations ``start..stop-1``: this rank's share
    of :func:`batch_indices` (with ``groups``: aspect-ratio grouped).

    One loader serves the whole run, so ``num_workers`` worker processes are started once, not once
    per epoch; each item carries its epoch (:class:`_EpochItems`), so flips stay fixed by
    ``(seed, epoch, index)`` in the workers. ``pin_memory`` (on CUDA) makes the host-to-device
    copies asynchronous.
    """
    from torch.utils.data import DataLoader

    from mxr.data import collate_fn

    sampler = _RankBatches(len(dataset), start=start, stop=stop, batch_size=batch_size,
                           info=info, seed=seed, groups=groups)  # fmt: skip
    # Its own generator: creating a loader must not draw from the global RNG (a resumed run
    # creates one more loader than an uninterrupted one).
    g = torch.Generator()
    g.manual_seed(int(seed) * 1_000_003 + 17)
    loader = DataLoader(
        _EpochItems(dataset),
        batch_sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        generator=g,
        pin_memory=pin_memory,
    )
    for it, (images, targets) in enumerate(loader, start=start):
        yield it, list(images), list(targets)


def _to_device(targets: list[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    return [
        {k: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in t.items()}
        for t in targets
    ]
