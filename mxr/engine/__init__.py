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
``DistributedDataParallel``; only rank 0 writes files (and generates missing ShapesX data).

The pieces, one module each: :mod:`~mxr.engine.dist` (devices, the ``torchrun`` job, worker pools),
:mod:`~mxr.engine.data` (datasets from a config, the batches of every iteration),
:mod:`~mxr.engine.checkpoint` (save, load, resume) and :mod:`~mxr.engine.loop` (the step, the
metrics writer, :func:`train`).
"""

from mxr.engine.checkpoint import (
    Checkpointer,
    _resume,
    load_checkpoint,
    model_from_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from mxr.engine.data import (
    _iterate_batches,
    batch_indices,
    batches_per_epoch,
    build_dataset,
    class_embedding_for,
    epoch_batches,
    epoch_order,
    model_config_for,
    orientation_groups,
    prepare_data,
)
from mxr.engine.dist import DistInfo, in_processes, init_distributed, resolve_device
from mxr.engine.loop import (
    LOSS_TERMS,
    MetricsWriter,
    NonFiniteLossError,
    StopTraining,
    TrainStep,
    _NonFiniteGuard,
    build_optimizer,
    build_scheduler,
    lr_factor,
    parameter_groups,
    train,
)
from mxr.report import cpu_count, read_metrics  # re-exported; their home is mxr.report

__all__ = [
    "LOSS_TERMS", "Checkpointer", "DistInfo", "MetricsWriter", "NonFiniteLossError", "StopTraining",
    "TrainStep", "_NonFiniteGuard", "_iterate_batches", "_resume", "batch_indices",
    "batches_per_epoch", "build_dataset", "build_optimizer", "build_scheduler",
    "class_embedding_for", "cpu_count", "epoch_batches", "epoch_order", "in_processes",
    "init_distributed", "load_checkpoint", "lr_factor", "model_config_for", "model_from_checkpoint",
    "orientation_groups", "parameter_groups", "prepare_data", "read_metrics", "resolve_device",
    "rng_state", "save_checkpoint", "set_rng_state", "train",
]  # fmt: skip
