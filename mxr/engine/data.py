"""What the loop reads: the datasets a config names, and the batches of every iteration, a function
of ``(train.seed, epoch)`` only (so a resumed run sees the same ones), shared out among the ranks."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mxr.config import REPO_ROOT, Config, DataConfig, ModelConfig
from mxr.engine.dist import DistInfo
from mxr.errors import MissingFileError, UserInputError
from mxr.model.transfer import TRANSFER_INPUTS


def build_dataset(
    data_cfg: DataConfig, which: str, *, seed: int = 0, keep_coco: bool = True
) -> Any:
    """The ``train`` (masks of ``data.train_masks``, flips, empty images skipped as configured),
    ``val`` or ``test`` (every mask, no augmentation) dataset; it only reads (see
    :func:`prepare_data`). ``keep_coco=False`` frees the parsed annotation file once indexed."""
    from mxr.data.coco import CocoInstances

    if which not in ("train", "val", "test"):
        raise UserInputError(
            f"dataset {which!r} is not valid; expected one of 'train', 'val', 'test'"
        )
    ann = data_cfg.path(f"{which}_annotations")
    if not ann.is_file():
        raise MissingFileError(
            f"data.{which}_annotations: annotation file not found: {ann} (data.root={data_cfg.root!r})"
        )
    split = data_cfg.split  # "voc"/"nonvoc", a file of class names, or the names themselves
    if isinstance(split, str) and split not in ("voc", "nonvoc"):
        split = str(data_cfg.path("split"))
    elif isinstance(split, tuple):
        split = list(split)
    train = which == "train"
    return CocoInstances(
        data_cfg.path(f"{which}_images"),
        ann,
        split=split,
        masks=data_cfg.train_masks if train else "all",
        train=train,
        flip_prob=data_cfg.flip_prob if train else 0.0,
        seed=seed,
        skip_empty=data_cfg.skip_empty_train if train else False,
        keep_coco=keep_coco,
    )


def prepare_data(data_cfg: DataConfig) -> None:
    """Generate ShapesX at ``data.root`` when ``data.generate`` and an annotation file is missing."""
    names = ("train_annotations", "val_annotations", "test_annotations")
    if data_cfg.generate and not all(data_cfg.path(n).is_file() for n in names):
        from mxr.data.shapesx import ensure_shapesx

        ensure_shapesx(data_cfg.root)


def class_embedding_for(cfg: Config, dataset: Any) -> Tensor | None:
    """The ``(C, E)`` class embedding τ reads when ``transfer_input`` reads a file (``"embed"``,
    ``"cls+embed"``), aligned to the dataset's labels by name; ``None`` for the other inputs.

    ``model.class_embedding`` is a path: absolute, as is; relative, under ``data.root`` (a file made
    with the data) or, when not there, under the repository root (a file shipped with mxr, such as
    ``configs/coco/glove_coco.npy``). FileNotFoundError names every place looked in."""
    from mxr.data.embedding import load_class_embedding

    m = cfg.model
    if m.mask_head != "transfer" or not TRANSFER_INPUTS[m.transfer_input].reads_file:
        return None
    name = Path(m.class_embedding)  # an absolute class_embedding replaces the root
    places = [Path(cfg.data.root) / name, *([] if name.is_absolute() else [REPO_ROOT / name])]
    path = next((p for p in places if p.is_file()), None)
    if path is None:
        raise MissingFileError(
            f"model.class_embedding={m.class_embedding!r}: class embedding file not found; looked "
            f"for {' and '.join(map(str, places))} (relative: under data.root, then the repository)"
        )
    return load_class_embedding(path, dataset.class_names)


def model_config_for(model_cfg: ModelConfig, dataset: Any) -> ModelConfig:
    """Fill ``num_classes`` / ``mask_classes`` left as ``None`` from the dataset, and resolve sizes."""
    m = model_cfg
    num = int(dataset.num_classes) if m.num_classes is None else m.num_classes
    mask = tuple(int(c) for c in dataset.mask_labels) if m.mask_classes is None else m.mask_classes
    return dataclasses.replace(m, num_classes=num, mask_classes=mask).resolved()


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order of ``n`` training images in ``epoch``: a permutation fixed by ``(seed, epoch)``."""
    g = torch.Generator()
    g.manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g).tolist()


def orientation_groups(dataset: Any) -> list[int]:
    """Per training index, ``1`` for a landscape image (width ≥ height), ``0`` for a portrait one."""
    sizes = getattr(dataset, "image_sizes", None)
    if sizes is None or any(s is None for s in sizes):
        raise UserInputError(
            "train.aspect_ratio_grouping=true needs the height and width of every training image "
            f"('height'/'width' in the annotation file's images); {type(dataset).__name__} lacks "
            "them; set train.aspect_ratio_grouping=false"
        )
    return [int(w >= h) for h, w in sizes]


def batches_per_epoch(
    n: int, global_batch: int, batch_size: int | None = None, groups: Sequence[int] | None = None
) -> int:
    """Global batches per epoch: ``n // global_batch``, or with ``groups`` (a group id per image)
    ``Σ_g ⌊n_g / batch_size⌋ // processes``, whatever the order."""
    if groups is None:
        per_epoch = n // global_batch
    else:
        shares = sum(c // batch_size for c in Counter(groups).values())
        per_epoch = shares // (global_batch // batch_size)
    if per_epoch == 0:
        raise UserInputError(
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
    """The global batches of ``epoch``: slices of :func:`epoch_order` or, with ``groups`` (as in
    Detectron), that order dealt into one buffer per group, each full one a process's share."""
    order = epoch_order(n, seed, epoch)
    per_epoch = batches_per_epoch(n, global_batch, batch_size, groups)
    if groups is None:
        return [order[b * global_batch : (b + 1) * global_batch] for b in range(per_epoch)]
    shares, buffers = [], defaultdict(list)
    for i in order:
        buffers[groups[i]].append(i)
        if len(buffers[groups[i]]) == batch_size:
            shares.append(buffers.pop(groups[i]))
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
    """``(epoch, image indices)`` of the global batch of 0-based ``iteration``."""
    epoch, b = divmod(iteration, batches_per_epoch(n, global_batch, batch_size, groups))
    batches = epoch_batches(n, global_batch, seed, epoch, batch_size=batch_size, groups=groups)
    return epoch, batches[b]


class _EpochItems(torch.utils.data.Dataset):
    """``dataset[(epoch, index)]`` = ``dataset[index]`` in ``epoch``: one loader serves every epoch."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


def _rank_batches(
    n: int, start: int, stop: int, bs: int, info: DistInfo, seed: int, groups: Sequence[int] | None
) -> Iterator[list[tuple[int, int]]]:
    """This rank's ``[(epoch, index), ...]`` of each iteration ``start..stop-1`` (batch sampler)."""
    gb, r = bs * info.world_size, info.rank
    per_epoch = batches_per_epoch(n, gb, bs, groups)
    it = start
    while it < stop:
        epoch = it // per_epoch
        batches = epoch_batches(n, gb, seed, epoch, batch_size=bs, groups=groups)
        for i in range(it, min(stop, (epoch + 1) * per_epoch)):
            yield [(epoch, j) for j in batches[i - epoch * per_epoch][r * bs : (r + 1) * bs]]
            it = i + 1


def iterate_batches(
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
    """Yield ``(iteration, images, targets)`` for iterations ``start..stop-1``, this rank's share of
    :func:`batch_indices`, from one loader whose workers start once."""
    from torch.utils.data import DataLoader

    from mxr.data.coco import collate_fn

    sampler = _rank_batches(len(dataset), start, stop, batch_size, info, seed, groups)
    g = torch.Generator()  # not the global RNG: a resumed run creates one loader more
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
