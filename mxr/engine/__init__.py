"""Training engine: SGD (or AdamW) with warm-up and step decay, checkpoints, resume, DDP via ``torchrun``.

``train(cfg, out_dir)`` (``python -m mxr train``) writes ``config.yaml`` (the resolved config),
``metrics.jsonl`` (per logged iteration: ``iter``, ``lr``, the mean ``loss`` and terms, ``time`` per
iteration), ``last.pt`` (atomic, ``weights_only``-loadable; every ``train.checkpoint_every``
iterations, at the end and on SIGINT/SIGTERM), ``split.json`` (sets A and B by name, as a split file)
and ``eval.json`` (mask/box AP on sets A, B, all).
The image order depends on ``(train.seed, epoch)`` only and the checkpoint holds every RNG state: a
resumed run ends bit-identical on CPU. Under ``torchrun`` each process takes ``train.batch_size``
images of each global batch and rank 0 alone writes. Modules: ``dist`` (devices, processes),
``data`` (datasets, batches), ``checkpoint`` and ``loop`` (the step, the metrics writer, ``train``).
"""

from mxr.engine.checkpoint import (
    Checkpointer,
    load_checkpoint,
    model_from_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from mxr.engine.data import (
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
    build_optimizer,
    build_scheduler,
    lr_factor,
    parameter_groups,
    train,
)
from mxr.report import cpu_count, read_metrics  # re-exported; their home is mxr.report

__all__ = [
    "LOSS_TERMS", "Checkpointer", "DistInfo", "MetricsWriter", "NonFiniteLossError", "StopTraining",
    "TrainStep", "batch_indices",
    "batches_per_epoch", "build_dataset", "build_optimizer", "build_scheduler",
    "class_embedding_for", "cpu_count", "epoch_batches", "epoch_order", "in_processes",
    "init_distributed", "load_checkpoint", "lr_factor", "model_config_for", "model_from_checkpoint",
    "orientation_groups", "parameter_groups", "prepare_data", "read_metrics", "resolve_device",
    "rng_state", "save_checkpoint", "set_rng_state", "train",
]  # fmt: skip
