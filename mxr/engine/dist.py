"""Devices and processes: the device a config names, the ``torchrun`` job (DDP), worker pools."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mxr.errors import UserInputError


# --- the machine ----------------------------------------------------------------------------------
def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available else ``cpu``; ``"cuda"`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        msg = f"train.device={name!r} but no CUDA device is available; use 'cpu' or 'auto'"
        raise UserInputError(msg)
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
    """Join the ``torchrun`` job of ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, if any: NCCL when the
    job trains on CUDA, gloo otherwise."""
    if dist.is_available() and dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
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


def gather_to_main(obj: Any, info: DistInfo) -> list[Any] | None:
    """Every rank's picklable ``obj`` in rank order on rank 0, ``None`` on the others (a collective:
    every rank calls it); ``[obj]`` in a single process."""
    if info.world_size <= 1:
        return [obj]
    gathered: list[Any] | None = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast_buffers(model: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) into every rank's ``model``. DDP sends
    them at the start of each forward, so after the last step each rank holds its own update; rank
    0's are the checkpoint's. A collective: every rank calls it."""
    if info.world_size <= 1:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def leave_process_group(info: DistInfo) -> None:
    """Destroy the process group this module created, on every rank together after the last
    barrier (a group torn down by ranks 1..N while rank 0 still holds it may hang in NCCL)."""
    if info.created and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """``DistributedDataParallel`` over ``model`` with several processes. ``find_unused_parameters``
    is off: a rank without set-A instances still runs the mask branch, on zero RoIs."""
    if info.world_size <= 1:
        return model
    cuda = device.type == "cuda"  # batch statistics over the global batch on CUDA only
    net = nn.SyncBatchNorm.convert_sync_batchnorm(model) if cuda else model
    ids = [device.index] if cuda else None
    return nn.parallel.DistributedDataParallel(
        net, device_ids=ids, find_unused_parameters=False, gradient_as_bucket_view=True
    )


def in_processes(
    fn: Callable[[Any], Any], items: Sequence[Any], jobs: int, threads: int | None = None
) -> Iterator[tuple[Any, Any]]:
    """Run module-level ``fn(item)`` for every picklable item in ``jobs`` spawned processes of
    ``threads`` torch threads (default: CPUs // jobs); yield ``(item, result)`` as each ends."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = threads or max(1, cpu_count() // jobs)  # small trainings scale poorly over threads
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(
        jobs, mp_context=ctx, initializer=torch.set_num_threads, initargs=(threads,)
    ) as pool:
        futures = {pool.submit(fn, item): item for item in items}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
