"""Training engine: SGD (or AdamW) with warm-up and step decay, checkpoints, resume, DDP via ``torchrun``.

``train(cfg, out_dir)`` (or ``python -m mxr train --config FILE --out DIR``) writes into ``out_dir``:

* ``config.yaml`` — the resolved config (``model.num_classes`` / ``mask_classes`` filled in);
* ``metrics.jsonl`` — one JSON object per logged iteration: ``iter`` (iterations done), ``lr``, the
  mean of ``loss`` and of each loss term over the iterations since the previous record, and ``time``
  (mean seconds per iteration, data loading included);
* ``last.pt`` — the latest checkpoint (every ``train.checkpoint_every`` iterations, at the end, and on
  SIGINT/SIGTERM), written atomically; it loads with ``torch.load(path, weights_only=True)``;
* ``eval.json`` — COCO mask/box AP on sets A, B and all of the validation split, at the end.

Determinism: the order of training images is a function of ``(train.seed, epoch)`` only, and the
checkpoint holds every RNG state, so an interrupted and resumed run ends with the same weights, bit
for bit on CPU, as an uninterrupted one.

Multi-GPU: ``torchrun --nproc_per_node=K -m mxr train ...``. Each process takes ``train.batch_size``
images of each global batch of ``K × batch_size``; gradients are averaged by
``DistributedDataParallel``; only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from mxr.config import (
    FILE_EMBEDDING_INPUTS,
    Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from mxr.report import cpu_count, read_metrics  # noqa: F401  (re-exported; home: mxr.report)

LOSS_TERMS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
Callback = Callable[[int, dict[str, float]], None]


class StopTraining(Exception):
    """Raise it from a :func:`train` callback to stop training after that (logged) iteration, as
    SIGINT does: ``train`` saves the checkpoint of that iteration (so ``resume=True`` continues it),
    skips the evaluation and re-raises this exception. Raised at the last iteration, it is ignored
    (the run is finished). With several processes, rank 0's request stops every rank one iteration
    later (the other ranks raise ``KeyboardInterrupt``, as after a signal)."""


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss term is NaN or infinite; the last good checkpoint is left untouched."""


# --------------------------------------------------------------------------------------------------
# devices and processes
# --------------------------------------------------------------------------------------------------
def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available else ``cpu``; ``"cuda"`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"train.device={name!r} but no CUDA device is available; use 'cpu' or 'auto'"
        )
    return device


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created: bool = False  # this module initialised the process group (and destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str = "auto") -> DistInfo:
    """Join the ``torchrun`` job described by ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, if any.

    The backend is NCCL when the job trains on CUDA, gloo otherwise.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = resolve_device(device_name).type == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, created=True)


def _barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()


def _leave_process_group(info: DistInfo) -> None:
    """Destroy the process group this module created. Called on every rank right after the last
    barrier, so all ranks shut NCCL down together; rank 0 then evaluates alone, with no group (a
    group torn down by ranks 1..N while rank 0 still holds it may block or hang in NCCL's finalise)."""
    if info.created and dist.is_initialized():
        dist.destroy_process_group()


def _wrap_ddp(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """``DistributedDataParallel`` over ``model`` when the job has several processes (its
    BatchNorms become SyncBatchNorm on CUDA); ``model`` itself otherwise.

    ``find_unused_parameters`` is off: every parameter takes part in every step (a rank whose
    images hold no set-A instance still runs the mask branch on zero RoIs, which gives its
    parameters zero gradients), so DDP need not walk the graph after each forward. Gradients are
    views into the all-reduce buckets (``gradient_as_bucket_view``): one copy less per step.
    """
    if info.world_size <= 1:
        return model
    net: nn.Module = model
    if device.type == "cuda":  # batch statistics over the global batch (CUDA only)
        net = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(
        net,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=False,
        gradient_as_bucket_view=True,
    )


def _amp_enabled(train_cfg: TrainConfig, device: torch.device) -> bool:
    """Mixed precision (float16 autocast + GradScaler) runs on CUDA only."""
    return bool(train_cfg.amp) and device.type == "cuda"


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
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
    no augmentation. A missing ShapesX root is generated when ``data.generate`` is true.
    ``keep_coco=False`` frees the parsed annotation file once indexed (``dataset.coco`` is then
    ``None``): what :func:`train` does with the training set, which COCOeval never reads.
    """
    from mxr.data import CocoInstances

    if which not in ("train", "val", "test"):
        raise ValueError(f"dataset {which!r} is not valid; expected one of 'train', 'val', 'test'")
    ann = data_cfg.path(f"{which}_annotations")
    if not ann.is_file() and data_cfg.generate:
        from mxr.data import ensure_shapesx

        ensure_shapesx(data_cfg.root)
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


# --------------------------------------------------------------------------------------------------
# optimisation
# --------------------------------------------------------------------------------------------------
def lr_factor(iteration: int, train_cfg: TrainConfig) -> float:
    """Multiplier of ``train.lr`` at 0-based ``iteration``: linear warm-up, then step decay."""
    factor = 1.0
    if iteration < train_cfg.warmup_iters:
        alpha = iteration / train_cfg.warmup_iters
        factor = train_cfg.warmup_factor * (1 - alpha) + alpha
    steps = sum(iteration >= round(f * train_cfg.iterations) for f in train_cfg.lr_steps)
    return factor * train_cfg.gamma**steps


def parameter_groups(model: nn.Module, train_cfg: TrainConfig) -> list[Any]:
    """The optimizer's parameters: every trainable one in one group, or with ``bias_lr_factor`` ≠ 1
    or ``weight_decay_bias`` set (Detectron's default: biases at 2× lr, no weight decay) two groups,
    the weights first (its lr is the logged one), then every ``*.bias`` at ``bias_lr_factor × lr``
    with ``weight_decay_bias``."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if train_cfg.bias_lr_factor == 1.0 and train_cfg.weight_decay_bias is None:
        return [p for _, p in named]
    wd_bias = train_cfg.weight_decay_bias
    groups = [
        {"params": [p for n, p in named if not n.endswith(".bias")]},
        {
            "params": [p for n, p in named if n.endswith(".bias")],
            "lr": train_cfg.lr * train_cfg.bias_lr_factor,
            "weight_decay": train_cfg.weight_decay if wd_bias is None else wd_bias,
        },
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, train_cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (``train.optimizer="sgd"``, the paper's) or AdamW (``"adamw"``, ``momentum``
    is then beta1) with weight decay, over every trainable parameter (:func:`parameter_groups`)."""
    params = parameter_groups(model, train_cfg)
    if train_cfg.optimizer == "adamw":
        return torch.optim.AdamW(
            params,
            lr=train_cfg.lr,
            betas=(train_cfg.momentum, 0.999),
            weight_decay=train_cfg.weight_decay,
        )
    return torch.optim.SGD(
        params, lr=train_cfg.lr, momentum=train_cfg.momentum, weight_decay=train_cfg.weight_decay
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, train_cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration ``LambdaLR`` following :func:`lr_factor`."""

    def factor(it: int) -> float:
        return lr_factor(it, train_cfg)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Every RNG state the training uses, as tensors and plain types (``weights_only``-loadable)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    keys = npst["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` atomically: a temporary file, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`train` (``weights_only=True``: no arbitrary pickles).

    Raises ``FileNotFoundError`` naming the file, and ``ValueError`` ``"<path>: not an mxr
    checkpoint (<reason>)"`` for a file that is empty, truncated, not written by ``torch.save``,
    holding pickled objects (refused by ``weights_only``) or lacking model/config/iteration.
    """
    import warnings

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")

    def refuse(reason: str) -> ValueError:
        return ValueError(f"{path}: not an mxr checkpoint ({reason})")

    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        raise refuse("the file is empty")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised as one line that names the file
        msg = str(e)
        if "Weights only load failed" in msg:  # never repeat torch's advice to drop weights_only
            name = msg.split("GLOBAL ", 1)[1].split()[0] if "GLOBAL " in msg else ""
            held = f"pickled objects ({name})" if name else "pickled objects"
            raise refuse(f"it holds {held} that weights_only loading refuses") from e
        if not head.startswith((b"PK\x03\x04", b"\x80")):  # zip (torch >= 1.6) or legacy pickle
            raise refuse("it is not a file written by torch.save") from e
        first = msg.strip().splitlines()[0].split(". ")[0] if msg.strip() else type(e).__name__
        raise refuse(f"the file is truncated or corrupt: {first}") from e
    if not isinstance(ckpt, dict):
        raise refuse(f"it holds a {type(ckpt).__name__}, not a dict; expected one from `mxr train`")
    missing = [k for k in ("model", "config", "iteration") if k not in ckpt]
    if missing:
        raise refuse(f"it lacks {', '.join(missing)}; expected one from `mxr train`")
    return ckpt


def model_from_checkpoint(
    ckpt: dict[str, Any] | str | Path, *, device: str | torch.device = "cpu"
) -> nn.Module:
    """Rebuild the model of a checkpoint (from its stored config) and load its weights; eval mode.

    The backbone is built in the layout the config names without reading ``model.backbone_weights``
    (the checkpoint holds every weight), so a checkpoint evaluates on a machine without that file.
    """
    from mxr.model import build_model
    from mxr.model.build import FROM_CHECKPOINT

    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    cfg = config_from_dict(ckpt["config"], where="checkpoint config")
    emb = ckpt["model"].get("roi_heads.class_embedding")  # τ's fixed input travels in the file
    model = build_model(cfg.model, FROM_CHECKPOINT, class_embedding=emb)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


def _resume(
    path: Path,
    cfg: Config,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    info: DistInfo,
) -> int:
    """Restore model, optimizer, scheduler, scaler and RNG states from checkpoint ``path``; the
    iteration to continue from. The model config must match the checkpoint's.

    The file is loaded to the CPU whatever device the model is on: ``load_state_dict`` copies the
    weights and the optimizer state onto each parameter's device, and the saved RNG states must stay
    CPU tensors (``torch.set_rng_state`` takes a CPU ByteTensor; numpy's keys go through ``.numpy()``).
    """
    ckpt = load_checkpoint(path, map_location="cpu")
    saved = config_from_dict(ckpt["config"], where=f"{path} (config)")
    if _model_dict(saved.model) != _model_dict(cfg.model):
        a, b = _model_dict(saved.model), _model_dict(cfg.model)
        diff = [k for k in a if a[k] != b[k]]
        raise ValueError(
            f"--resume: the model config differs from the checkpoint {path} in "
            f"{', '.join(f'model.{k} ({a[k]!r} saved, {b[k]!r} now)' for k in diff)}"
        )
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    start = int(ckpt["iteration"])
    if info.world_size == int(ckpt.get("world_size", 1)) and info.is_main:
        set_rng_state(ckpt["rng"])
    elif info.world_size == int(ckpt.get("world_size", 1)):
        torch.manual_seed(cfg.train.seed + info.rank + 7919 * start)
    return start


class _NonFiniteGuard:
    """What a NaN/inf loss does. Without AMP: stop at once (:class:`NonFiniteLossError`). Under AMP,
    where GradScaler would skip such a step anyway, skip it (no backward, no update; the schedule
    moves on) and stop only after ``limit`` non-finite iterations in a row, naming the terms and the
    iterations. ``terms`` are the (all-reduced) loss values, so every rank decides alike."""

    def __init__(self, *, amp: bool, limit: int, checkpoint: Path, verbose: bool) -> None:
        self.amp, self.limit, self.checkpoint, self.verbose = amp, limit, checkpoint, verbose
        self.run: list[tuple[int, list[str]]] = []  # the current run of non-finite iterations

    def skip(self, iteration: int, terms: dict[str, float]) -> bool:
        """Whether to skip the update of ``iteration`` (1-based); raises when training must stop."""
        bad = {k: v for k, v in terms.items() if not math.isfinite(v)}
        if not bad:
            self.run.clear()
            return False
        self.run.append((iteration, list(bad)))
        detail = ", ".join(f"{k}={v}" for k, v in bad.items())
        last = self.checkpoint if self.checkpoint.exists() else "none"
        if not self.amp:
            raise NonFiniteLossError(
                f"non-finite loss at iteration {iteration}: {detail}; training stopped, the "
                f"last good checkpoint is {last}"
            )
        if len(self.run) >= self.limit:
            counts: dict[str, int] = {}
            for _, names in self.run:
                for k in names:
                    counts[k] = counts.get(k, 0) + 1
            raise NonFiniteLossError(
                f"non-finite loss under AMP in {len(self.run)} iterations in a row "
                f"(iterations {self.run[0][0]}-{iteration}, train.max_nonfinite_iters={self.limit}): "
                + ", ".join(f"{k} in {n}" for k, n in counts.items())
                + f" (last: {detail}); training stopped, the last good checkpoint is {last}"
            )
        if self.verbose:
            print(
                f"\nnon-finite loss at iteration {iteration} under AMP ({detail}): step skipped "
                f"({len(self.run)} in a row; stopping at train.max_nonfinite_iters={self.limit})",
                file=sys.stderr,
            )
        return True


# --------------------------------------------------------------------------------------------------
# signals
# --------------------------------------------------------------------------------------------------
class _StopRequest:
    """Turns SIGINT/SIGTERM (main thread only) or a callback's :class:`StopTraining` into a flag the
    loop reads between iterations."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.by_callback: StopTraining | None = None
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None or self.by_callback is not None

    def _handler(self, signum: int, frame: Any) -> None:
        self.signum = signum

    @contextmanager
    def installed(self) -> Iterator[_StopRequest]:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        try:
            yield self
        finally:
            for s, h in self._old.items():
                signal.signal(s, h)
            self._old.clear()


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------
def _model_dict(cfg: ModelConfig) -> dict[str, Any]:
    return config_to_dict(Config(model=cfg))["model"]


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Keep only records up to ``iteration`` (the resumed checkpoint's) in ``metrics.jsonl``."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        if line.strip() and json.loads(line)["iter"] <= iteration:
            keep.append(line)
    path.write_text("".join(k + "\n" for k in keep))


def train(
    cfg: Config,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    callback: Callback | None = None,
    eval_split: str | None = "val",
) -> dict[str, Any]:
    """Train the model ``cfg`` describes and evaluate it; see the module docstring for the files.

    Args:
        cfg: the experiment; ``model.num_classes`` / ``mask_classes`` may be ``None`` (from the data).
        out_dir: where config, metrics, checkpoint and evaluation go (created).
        resume: continue from ``out_dir/last.pt`` when it exists (the model section must match).
        progress: show a tqdm bar with the running losses (rank 0 only).
        callback: ``callback(iteration, record)`` after each logged iteration, ``record`` being the
            dict appended to ``metrics.jsonl`` (for live plots). Rank 0 only. It may raise
            :class:`StopTraining` to stop the run there (checkpoint saved, no evaluation).
        eval_split: ``"val"`` / ``"test"`` to evaluate at the end, ``None`` to skip.

    Returns:
        ``{"out_dir", "checkpoint", "metrics", "config", "iteration", "train_time_s",
        "step_time_s", "eval", "eval_path", "model"}``: ``eval`` is the
        :func:`mxr.evaluation.evaluate` dict (or ``None``), ``model`` the trained model (unwrapped
        from DDP, train mode, on the training device).

    Raises:
        NonFiniteLossError: a loss term became NaN/inf (names the iteration and the term).
        KeyboardInterrupt: after SIGINT, once the checkpoint is saved; ``SystemExit(143)`` for SIGTERM.
        StopTraining: the callback raised it (re-raised once the checkpoint is saved).
    """
    from tqdm.auto import tqdm

    from mxr.model import build_model

    out = Path(out_dir)
    tc = cfg.train
    info = init_distributed(tc.device)
    try:
        device = resolve_device(tc.device)
        if device.type == "cuda" and info.world_size > 1:
            device = torch.device("cuda", info.local_rank)
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
        ckpt_path, metrics_path = out / "last.pt", out / "metrics.jsonl"

        train_ds = build_dataset(cfg.data, "train", seed=tc.seed, keep_coco=False)
        cfg = dataclasses.replace(cfg, model=model_config_for(cfg.model, train_ds))

        model = build_model(cfg.model, class_embedding=class_embedding_for(cfg, train_ds))
        model = model.to(device)
        optimizer = build_optimizer(model, tc)
        scheduler = build_scheduler(optimizer, tc)
        use_amp = _amp_enabled(tc, device)
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

        start = 0
        torch.manual_seed(tc.seed + info.rank)
        random.seed(tc.seed + info.rank)
        np.random.seed((tc.seed + info.rank) % 2**32)
        if resume and ckpt_path.is_file():
            start = _resume(ckpt_path, cfg, model, optimizer, scheduler, scaler, info)
        if info.is_main:
            save_config(cfg, out / "config.yaml")
            if start == 0:
                metrics_path.write_text("")
            else:
                _truncate_metrics(metrics_path, start)

        net = _wrap_ddp(model, device, info)
        guard = _NonFiniteGuard(
            amp=use_amp, limit=tc.max_nonfinite_iters, checkpoint=ckpt_path, verbose=info.is_main
        )

        def checkpoint(iteration: int) -> None:
            if not info.is_main:
                return
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if use_amp else None,
                "iteration": iteration,
                "config": config_to_dict(cfg),
                "rng": rng_state(),
                "world_size": info.world_size,
                "mxr_version": _version(),
            }
            save_checkpoint(ckpt_path, state)

        total = tc.iterations
        bar = tqdm(
            total=total, initial=start, desc="train", disable=not (progress and info.is_main)
        )
        window: dict[str, float] = {}
        window_n, window_steps, window_t0 = 0, 0, time.perf_counter()
        step_times: list[float] = []
        t_train = time.perf_counter()
        it = start
        model.train()
        stopper = _StopRequest()
        with stopper.installed():
            t_last = time.perf_counter()
            for it0, images, targets in _iterate_batches(
                train_ds,
                start=start,
                stop=total,
                batch_size=tc.batch_size,
                info=info,
                seed=tc.seed,
                num_workers=cfg.data.num_workers,
                groups=orientation_groups(train_ds) if tc.aspect_ratio_grouping else None,
                pin_memory=device.type == "cuda",
            ):
                images = [im.to(device, non_blocking=True) for im in images]
                targets = _to_device(targets, device)
                lr = optimizer.param_groups[0]["lr"]
                amp_ctx = torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext()
                with amp_ctx:
                    loss_dict = net(images, targets)
                names = list(loss_dict)
                loss = sum(loss_dict[k] for k in names)
                values = torch.stack([loss_dict[k].detach().float() for k in names])
                values = torch.cat(
                    [
                        values,
                        torch.tensor([float(stopper.requested)], device=values.device),
                    ]
                )
                if info.world_size > 1:
                    dist.all_reduce(values)
                    values[:-1] /= info.world_size
                vals = values.tolist()
                stop_requested = vals[-1] > 0
                skip = guard.skip(it0 + 1, dict(zip(names, vals, strict=False)))
                optimizer.zero_grad(set_to_none=True)
                if not skip:
                    scaler.scale(loss).backward()
                    if tc.clip_grad_norm is not None:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_grad_norm)
                    scaler.step(optimizer)
                    scaler.update()
                scheduler.step()
                it = it0 + 1

                now = time.perf_counter()
                step_times.append(now - t_last)
                t_last = now
                if not skip:  # a skipped (non-finite) step is counted, not averaged
                    window["loss"] = window.get("loss", 0.0) + sum(vals[:-1])
                    for k, v in zip(names, vals, strict=False):
                        window[k] = window.get(k, 0.0) + v
                    window_n += 1
                window_steps += 1
                if it % tc.log_every == 0 or it == total:
                    record: dict[str, float] = {"iter": it, "lr": lr}
                    record.update({k: window[k] / window_n for k in window})
                    if window_steps > window_n:
                        record["skipped_nonfinite"] = window_steps - window_n
                    record["time"] = (now - window_t0) / window_steps
                    if info.is_main:
                        with metrics_path.open("a") as f:
                            f.write(json.dumps(record) + "\n")
                        bar.set_postfix(
                            loss=f"{record.get('loss', math.nan):.3f}",
                            mask=f"{record.get('loss_mask', 0):.3f}",
                        )
                        if callback is not None:
                            try:
                                callback(it, record)
                            except StopTraining as e:
                                stopper.by_callback = e
                    window, window_n, window_steps, window_t0 = {}, 0, 0, now
                bar.update(1)
                if it % tc.checkpoint_every == 0 or it == total:
                    checkpoint(it)
                if not stop_requested and info.world_size == 1:
                    stop_requested = stopper.requested
                if stop_requested and it < total:
                    checkpoint(it)
                    _barrier(info)
                    bar.close()
                    if info.is_main and stopper.by_callback is None:  # the callback's caller tells
                        print(
                            f"\nstopped at iteration {it}/{total}; checkpoint saved to {ckpt_path}; "
                            "continue with --resume",
                            file=sys.stderr,
                        )
                    if stopper.by_callback is not None:
                        raise stopper.by_callback
                    if stopper.signum == signal.SIGTERM:
                        raise SystemExit(128 + signal.SIGTERM)
                    raise KeyboardInterrupt(f"training stopped at iteration {it}")
        bar.close()
        if it == start and start < total:
            raise RuntimeError("no training batch was produced")
        if start >= total and info.is_main and not ckpt_path.exists():
            checkpoint(it)
        train_time = time.perf_counter() - t_train
        _barrier(info)
        _leave_process_group(info)  # every rank together, before rank 0's long evaluation

        results, eval_path = None, None
        if eval_split is not None and info.is_main:
            from mxr.evaluation import evaluate

            ds = build_dataset(cfg.data, eval_split, seed=tc.seed)
            results = evaluate(
                model,
                ds,
                device=device,
                batch_size=max(tc.batch_size, 8),
                progress=progress,
                mask_iou=True,
            )
            eval_path = out / "eval.json"
            eval_path.write_text(json.dumps(results, indent=2))
        # No collective after evaluation: the group is gone, the other ranks have left.
        return {
            "out_dir": str(out),
            "checkpoint": str(ckpt_path),
            "metrics": str(metrics_path),
            "config": str(out / "config.yaml"),
            "iteration": it,
            "train_time_s": train_time,
            "step_time_s": float(np.median(step_times)) if step_times else None,
            "eval": results,
            "eval_path": str(eval_path) if eval_path else None,
            "model": model,
        }
    finally:
        if info.created and dist.is_initialized():
            dist.destroy_process_group()


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def in_processes(
    fn: Callable[[Any], Any], items: Sequence[Any], jobs: int, threads: int | None = None
) -> Iterator[tuple[Any, Any]]:
    """Run ``fn(item)`` for every item in ``jobs`` worker processes (spawned, so safe with torch),
    each with ``threads`` torch threads (default: CPUs // jobs); yield ``(item, result)`` as each
    finishes. ``fn`` must be a module-level function and the items picklable.

    On a few CPU cores, small-convolution trainings scale poorly across threads: two one-thread
    runs side by side finish sooner than the same two one after the other with two threads each.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = threads or max(1, cpu_count() // jobs)
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(
        jobs, mp_context=ctx, initializer=_set_threads, initargs=(threads,)
    ) as pool:
        futures = {pool.submit(fn, item): item for item in items}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def _version() -> str:
    from mxr import __version__

    return __version__


# --------------------------------------------------------------------------------------------------
# command line: python -m mxr train
# --------------------------------------------------------------------------------------------------
def _run_cli(args: argparse.Namespace) -> int:
    overrides = [o for group in (args.set or []) for o in group]
    cfg = load_config(args.config, overrides)
    try:
        summary = train(
            cfg,
            args.out,
            resume=args.resume,
            progress=not args.no_progress,
            eval_split=None if args.no_eval else "val",
        )
    except KeyboardInterrupt:
        return 130
    if summary["eval"] is not None and int(os.environ.get("RANK", "0")) == 0:
        from mxr.report import format_table

        print(format_table(summary["eval"]))
        print(f"wrote {summary['eval_path']}", file=sys.stderr)
    return 0


def add_subparser(sub: Any) -> None:
    """Register ``train``: ``--config FILE [--set key=value ...] --out DIR [--resume]``."""
    p = sub.add_parser(
        "train",
        help="train a model from a config file (single process or torchrun)",
        description=(
            "Train Mask^X R-CNN. DIR receives metrics.jsonl, last.pt, config.yaml and eval.json. "
            "Multi-GPU: torchrun --nproc_per_node=K -m mxr train ..."
        ),
    )
    p.add_argument("--config", help="a YAML or TOML config (default: the built-in defaults)")
    p.add_argument(
        "--set",
        nargs="+",
        action="append",
        metavar="KEY=VALUE",
        help="override config fields, e.g. --set train.iterations=200 model.mlp_fusion=false",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from DIR/last.pt if it exists")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run_cli)
