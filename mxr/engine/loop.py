"""The training loop, after Detectron2's ``SimpleTrainer``: :func:`train` builds the
:class:`TrainParts`, then each iteration of the :class:`TrainLoop` runs the :class:`TrainStep`, the
:class:`MetricsWriter` and the ``Checkpointer``; :func:`train` returns a :class:`TrainResult`."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from mxr.config import Config, TrainConfig, save_config
from mxr.engine.checkpoint import Checkpointer, TrainParts
from mxr.engine.data import (
    build_dataset,
    class_embedding_for,
    iterate_batches,
    model_config_for,
    orientation_groups,
    prepare_data,
)
from mxr.engine.dist import (
    DistInfo,
    barrier,
    broadcast_buffers,
    init_distributed,
    leave_process_group,
    resolve_device,
    wrap_ddp,
)
from mxr.engine.stagewise import load_detector
from mxr.files import write_text_atomic
from mxr.model.build import build_model

LOSS_TERMS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
Callback = Callable[[int, dict[str, float]], None]
#: One iteration's ``(0-based iteration, images, targets)``, as :func:`iterate_batches` yields it.
Batch = tuple[int, list[torch.Tensor], list[dict[str, Any]]]


class StopTraining(Exception):
    """Raise it from a :func:`train` callback to stop there as SIGINT does (checkpoint saved, no
    evaluation, re-raised; ignored at the last iteration; other ranks stop one iteration later)."""


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss term is NaN or infinite; the last good checkpoint is left untouched."""


def lr_factor(iteration: int, train_cfg: TrainConfig) -> float:
    """Multiplier of ``train.lr`` at 0-based ``iteration``: linear warm-up, then step decay."""
    factor = 1.0
    if iteration < train_cfg.warmup_iters:
        alpha = iteration / train_cfg.warmup_iters
        factor = train_cfg.warmup_factor * (1 - alpha) + alpha
    steps = sum(iteration >= round(f * train_cfg.iterations) for f in train_cfg.lr_steps)
    return factor * train_cfg.gamma**steps


def parameter_groups(model: nn.Module, train_cfg: TrainConfig) -> list[Any]:
    """The trainable parameters; with ``bias_lr_factor`` ≠ 1 or ``weight_decay_bias`` set (Detectron:
    biases at 2× lr, no decay) two groups, the weights (the logged lr) then every ``*.bias``."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if train_cfg.bias_lr_factor == 1.0 and train_cfg.weight_decay_bias is None:
        return [p for _, p in named]
    wd_bias = train_cfg.weight_decay_bias
    bias = {
        "lr": train_cfg.lr * train_cfg.bias_lr_factor,
        "weight_decay": train_cfg.weight_decay if wd_bias is None else wd_bias,
    }
    groups = [
        {"params": [p for n, p in named if not n.endswith(".bias")]},
        {"params": [p for n, p in named if n.endswith(".bias")], **bias},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, train_cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's) or AdamW (``momentum`` is then beta1), with weight decay."""
    params = parameter_groups(model, train_cfg)
    kw = {"lr": train_cfg.lr, "weight_decay": train_cfg.weight_decay}
    if train_cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, betas=(train_cfg.momentum, 0.999), **kw)
    return torch.optim.SGD(params, momentum=train_cfg.momentum, **kw)


def build_scheduler(optimizer: torch.optim.Optimizer, train_cfg: TrainConfig) -> LambdaLR:
    """A per-iteration ``LambdaLR`` following :func:`lr_factor`."""
    return LambdaLR(optimizer, lambda it: lr_factor(it, train_cfg))


def amp_enabled(train_cfg: TrainConfig, device: torch.device) -> bool:
    """Mixed precision (float16 autocast + GradScaler) runs on CUDA only."""
    return bool(train_cfg.amp) and device.type == "cuda"


class NonFiniteGuard:
    """A NaN/inf loss stops training at once; under AMP (GradScaler would skip such a step anyway)
    the update is skipped, and training stops after ``limit`` such iterations in a row."""

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
        tail = f"; training stopped, the last good checkpoint is {last}"
        if not self.amp:
            raise NonFiniteLossError(f"non-finite loss at iteration {iteration}: {detail}{tail}")
        if len(self.run) >= self.limit:
            counts = Counter(k for _, names in self.run for k in names)
            raise NonFiniteLossError(
                f"non-finite loss under AMP in {len(self.run)} iterations in a row "
                f"(iterations {self.run[0][0]}-{iteration}, train.max_nonfinite_iters={self.limit}): "
                + ", ".join(f"{k} in {n}" for k, n in counts.items())
                + f" (last: {detail}){tail}"
            )
        if self.verbose:
            print(
                f"\nnon-finite loss at iteration {iteration} under AMP ({detail}): step skipped "
                f"({len(self.run)} in a row; stopping at train.max_nonfinite_iters={self.limit})",
                file=sys.stderr,
            )
        return True


class _StopRequest:
    """SIGINT/SIGTERM (main thread only) or a callback's :class:`StopTraining`, as a flag."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.by_callback: StopTraining | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None or self.by_callback is not None

    def _handler(self, signum: int, frame: Any) -> None:
        self.signum = signum

    @contextmanager
    def installed(self) -> Iterator[_StopRequest]:
        old = {}
        if threading.current_thread() is threading.main_thread():
            old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


class TrainStep:
    """One iteration: forward (autocast under AMP), the loss terms and the stop flag all-reduced
    over ranks (every rank decides alike), the non-finite guard, backward and the update."""

    def __init__(
        self,
        net: nn.Module,
        parts: TrainParts,
        cfg: TrainConfig,
        guard: NonFiniteGuard,
        info: DistInfo,
    ) -> None:
        """``net``: ``parts.model``, or its DDP wrapper with several processes."""
        self.net, self.parts, self.cfg, self.guard, self.info = net, parts, cfg, guard, info

    def __call__(
        self, iteration: int, images: list[torch.Tensor], targets: list[dict[str, Any]], stop: bool
    ) -> tuple[dict[str, float], bool, bool]:
        """``(loss terms, skipped, stop requested on any rank)`` for 0-based ``iteration``."""
        parts = self.parts
        with torch.autocast("cuda", dtype=torch.float16) if parts.amp else nullcontext():
            loss_dict = self.net(images, targets)
        loss = sum(loss_dict.values())
        values = torch.stack([v.detach().float() for v in loss_dict.values()])
        values = torch.cat([values, torch.tensor([float(stop)], device=values.device)])
        if self.info.world_size > 1:
            dist.all_reduce(values)
            values[:-1] /= self.info.world_size
        vals = values.tolist()
        terms = dict(zip(loss_dict, vals[:-1], strict=True))
        skip = self.guard.skip(iteration + 1, terms)
        parts.optimizer.zero_grad(set_to_none=True)
        if not skip:
            parts.scaler.scale(loss).backward()
            if self.cfg.clip_grad_norm is not None:
                parts.scaler.unscale_(parts.optimizer)
                torch.nn.utils.clip_grad_norm_(parts.model.parameters(), self.cfg.clip_grad_norm)
            parts.scaler.step(parts.optimizer)
            parts.scaler.update()
        parts.scheduler.step()
        return terms, skip, vals[-1] > 0


class MetricsWriter:
    """Every ``log_every`` iterations and at the last, on rank 0: a ``metrics.jsonl`` record (the
    means over the window's finite steps, ``skipped_nonfinite``), the bar's losses, the callback."""

    def __init__(
        self, path: Path, cfg: TrainConfig, info: DistInfo, bar: Any, callback: Callback | None
    ) -> None:
        self.path, self.cfg, self.info, self.bar, self.callback = path, cfg, info, bar, callback
        self.window: dict[str, float] = {}
        self.n, self.steps, self.t0 = 0, 0, time.perf_counter()

    def add(self, it: int, lr: float, terms: dict[str, float], skipped: bool, now: float) -> Any:
        """Count iteration ``it`` (1-based); a :class:`StopTraining` the callback raised, or None."""
        if not skipped:  # a skipped (non-finite) step is counted, not averaged
            for k, v in [("loss", sum(terms.values())), *terms.items()]:
                self.window[k] = self.window.get(k, 0.0) + v
            self.n += 1
        self.steps += 1
        if it % self.cfg.log_every and it != self.cfg.iterations:
            return None
        record = {"iter": it, "lr": lr, **{k: v / self.n for k, v in self.window.items()}}
        if self.steps > self.n:
            record["skipped_nonfinite"] = self.steps - self.n
        record["time"] = (now - self.t0) / self.steps
        self.window, self.n, self.steps, self.t0 = {}, 0, 0, now
        if not self.info.is_main:
            return None
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.bar.set_postfix(
            loss=f"{record.get('loss', math.nan):.3f}", mask=f"{record.get('loss_mask', 0):.3f}"
        )
        try:
            if self.callback is not None:
                self.callback(it, record)
        except StopTraining as e:
            return e
        return None


def _start(cfg: Config, ckpt: Checkpointer, out: Path, resume: bool, info: DistInfo) -> int:
    """Seed every RNG, resume when asked; write the config, and the metrics up to ``start``."""
    seed = cfg.train.seed + info.rank
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    start = ckpt.restore() if resume and ckpt.path.is_file() else 0
    if info.is_main:
        save_config(cfg, out / "config.yaml")
        path = out / "metrics.jsonl"
        if start == 0:
            write_text_atomic(path, "")
        elif path.exists():
            keep = []
            for line in path.read_text().splitlines():
                with suppress(ValueError):  # blank, or cut short by a kill: dropped
                    if json.loads(line)["iter"] <= start:
                        keep.append(line)
            write_text_atomic(path, "".join(k + "\n" for k in keep))
    return start


def _stop(it: int, total: int, ckpt: Checkpointer, stopper: _StopRequest, info: DistInfo) -> None:
    """Leave the loop at iteration ``it``: save, then raise."""
    ckpt.save(it)
    barrier(info)
    if stopper.by_callback is not None:  # the callback's caller tells the user
        raise stopper.by_callback
    if info.is_main:
        print(
            f"\nstopped at iteration {it}/{total}; checkpoint saved to {ckpt.path}; continue "
            "with --resume",
            file=sys.stderr,
        )
    if stopper.signum == signal.SIGTERM:
        raise SystemExit(128 + signal.SIGTERM)
    raise KeyboardInterrupt(f"training stopped at iteration {it}")


def build_parts(
    cfg: Config, train_ds: Any, device: torch.device, resuming: bool = False
) -> TrainParts:
    """The model (on ``device``), optimizer, scheduler and GradScaler of a run. The detector of
    ``train.init_from`` is loaded unless ``resuming`` (the checkpoint holds it), and frozen
    before the optimizer is built when ``train.trainable`` is ``"mask"``."""
    model = build_model(cfg.model, class_embedding=class_embedding_for(cfg, train_ds)).to(device)
    init_from = None
    if cfg.train.init_from and not resuming:
        init_from = load_detector(model, cfg.train.init_from)
    if cfg.train.trainable == "mask":
        model.freeze_detector()
    optimizer = build_optimizer(model, cfg.train)
    amp = amp_enabled(cfg.train, device)
    return TrainParts(
        model=model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg.train),
        scaler=torch.amp.GradScaler("cuda", enabled=amp),
        amp=amp,
        init_from=init_from,
    )


def _to_device(targets: list[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    def move(v: Any) -> Any:
        return v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v

    return [{k: move(v) for k, v in t.items()} for t in targets]


@dataclass
class TrainLoop:
    """What each iteration calls: the step, the metrics writer (and its progress bar), the
    checkpointer; ``device``: where the batches go."""

    step: TrainStep
    writer: MetricsWriter
    checkpointer: Checkpointer
    cfg: TrainConfig
    info: DistInfo
    device: torch.device

    def run(self, batches: Iterable[Batch], start: int) -> tuple[int, list[float]]:
        """Iterations ``start..train.iterations-1`` of ``batches``; the last iteration done and each
        step's seconds. A stop request (signal or callback) saves the checkpoint and raises."""
        tc, step, writer, ckpt = self.cfg, self.step, self.writer, self.checkpointer
        it, step_times, stopper = start, [], _StopRequest()
        step.parts.model.train()
        with stopper.installed():
            t_last = time.perf_counter()
            for it0, images, targets in batches:
                images = [im.to(self.device, non_blocking=True) for im in images]
                targets = _to_device(targets, self.device)
                lr = step.parts.optimizer.param_groups[0]["lr"]
                terms, skipped, stop = step(it0, images, targets, stopper.requested)
                it, now = it0 + 1, time.perf_counter()
                step_times.append(now - t_last)
                t_last = now
                stopper.by_callback = writer.add(it, lr, terms, skipped, now) or stopper.by_callback
                writer.bar.update(1)
                if it % tc.checkpoint_every == 0 or it == tc.iterations:
                    ckpt.save(it)
                if not stop and self.info.world_size == 1:
                    stop = stopper.requested
                if stop and it < tc.iterations:
                    writer.bar.close()
                    _stop(it, tc.iterations, ckpt, stopper, self.info)
        return it, step_times


@dataclass
class TrainResult:
    """What :func:`train` returns. ``iteration``: the last one done; ``train_time_s``: the loop's
    seconds; ``step_time_s``: the median step's (None when no step ran); ``eval``: the evaluation
    (``eval.json``; None without ``eval_split`` and on ranks other than 0); ``model``: unwrapped,
    in train mode. The run's files are in ``out_dir``: :attr:`checkpoint`, :attr:`metrics`,
    :attr:`config` and :attr:`eval_path` name them."""

    out_dir: Path
    iteration: int
    train_time_s: float
    step_time_s: float | None
    eval: dict[str, Any] | None = field(repr=False)
    model: nn.Module = field(repr=False)

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def metrics(self) -> Path:
        return self.out_dir / "metrics.jsonl"

    @property
    def config(self) -> Path:
        return self.out_dir / "config.yaml"

    @property
    def eval_path(self) -> Path | None:
        return self.out_dir / "eval.json" if self.eval is not None else None


def train(
    cfg: Config,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    callback: Callback | None = None,
    eval_split: str | None = "val",
) -> TrainResult:
    """Train the model ``cfg`` describes (``num_classes`` / ``mask_classes`` may be ``None``: from
    the data) and evaluate it on ``eval_split``; see :mod:`mxr.engine` for the files.

    ``resume`` continues from ``out_dir/last.pt`` (same model section). ``callback(iteration,
    record)`` runs on rank 0 after each logged iteration and may raise :class:`StopTraining`.
    After SIGINT or SIGTERM: ``KeyboardInterrupt`` or ``SystemExit(143)``, once the checkpoint is
    saved.
    """
    from tqdm.auto import tqdm

    out, tc = Path(out_dir), cfg.train
    info = init_distributed(tc.device)
    try:
        device = resolve_device(tc.device)
        if device.type == "cuda" and info.world_size > 1:
            device = torch.device("cuda", info.local_rank)
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            prepare_data(cfg.data)  # rank 0 generates; the others wait at the barrier
        barrier(info)
        train_ds = build_dataset(cfg.data, "train", seed=tc.seed, keep_coco=False)
        cfg = dataclasses.replace(cfg, model=model_config_for(cfg.model, train_ds))
        if info.is_main:  # sets A and B by name (a random data.split records what it drew)
            write_text_atomic(out / "split.json", json.dumps(train_ds.split_names, indent=2))
        parts = build_parts(cfg, train_ds, device, resuming=resume and (out / "last.pt").is_file())
        ckpt = Checkpointer(out / "last.pt", cfg, info, parts)
        start = _start(cfg, ckpt, out, resume, info)
        bar = tqdm(
            total=tc.iterations,
            initial=start,
            desc="train",
            disable=not (progress and info.is_main),
        )
        writer = MetricsWriter(out / "metrics.jsonl", tc, info, bar, callback)
        guard = NonFiniteGuard(
            amp=parts.amp, limit=tc.max_nonfinite_iters, checkpoint=ckpt.path, verbose=info.is_main
        )
        step = TrainStep(wrap_ddp(parts.model, device, info), parts, tc, guard, info)
        batches = iterate_batches(
            train_ds,
            start=start,
            stop=tc.iterations,
            batch_size=tc.batch_size,
            info=info,
            seed=tc.seed,
            num_workers=cfg.data.num_workers,
            pin_memory=device.type == "cuda",
            groups=orientation_groups(train_ds) if tc.aspect_ratio_grouping else None,
        )
        loop = TrainLoop(step, writer, ckpt, tc, info, device)
        t_train = time.perf_counter()
        it, step_times = loop.run(batches, start)
        bar.close()
        if it == start and start < tc.iterations:
            raise RuntimeError("no training batch was produced")
        if start >= tc.iterations and info.is_main and not ckpt.path.exists():
            ckpt.save(it)
        train_time = time.perf_counter() - t_train
        results = predictions = None
        if eval_split is not None:  # every rank infers on its share; rank 0 gathers
            from mxr.evaluation import predict, score_predictions

            ds = build_dataset(cfg.data, eval_split, seed=tc.seed)
            broadcast_buffers(parts.model, info)  # rank 0's BatchNorm statistics, as saved
            predictions = predict(
                parts.model,
                ds,
                device=device,
                progress=progress,
                info=info,
                mask_iou=True,
                batch_size=max(tc.batch_size, 8),
            )
        barrier(info)
        leave_process_group(info)  # every rank together, before rank 0's long COCOeval
        if predictions is not None:  # rank 0; no collective after this: the group is gone
            results = score_predictions(predictions, ds)
            write_text_atomic(out / "eval.json", json.dumps(results, indent=2))
        return TrainResult(
            out_dir=out,
            iteration=it,
            train_time_s=train_time,
            step_time_s=float(np.median(step_times)) if step_times else None,
            eval=results,
            model=parts.model,
        )
    finally:
        leave_process_group(info)
