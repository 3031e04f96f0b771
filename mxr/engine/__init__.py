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
