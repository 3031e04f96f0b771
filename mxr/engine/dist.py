"""Devices and processes: the device a config names, the ``torchrun`` job (DDP), worker pools."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mxr.report import cpu_count


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


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()


def leave_process_group(info: DistInfo) -> None:
    """Destroy the process group this module created. Called on every rank right after the last
    barrier, so all ranks shut NCCL down together; rank 0 then evaluates alone, with no group (a
    group torn down by ranks 1..N while rank 0 still holds it may block or hang in NCCL's finalise)."""
    if info.created and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
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
