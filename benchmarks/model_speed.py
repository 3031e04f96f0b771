"""Speed and memory of every mask-head variant against stock torchvision MaskRCNN, side by side.

    python benchmarks/model_speed.py                         # tiny @128 and resnet50_fpn @320, CPU
    python benchmarks/model_speed.py --backbones resnet50_fpn --size 800 --max-size 1333 --batch 2  # GPU

All models share the backbone, sizes, heads and inputs; the timings of the variants are interleaved
(round-robin over iterations) so drift in machine load hits them alike. Prints the median time of a
training step (forward + backward + SGD step) and of inference, the ratios to stock, the parameter
count, and memory: peak allocated on CUDA; on CPU the bytes of tensors saved for backward plus
parameters and gradients (the part of a training step's memory that depends on the model).
Finally the large-vocabulary check: a transfer step vs a class-agnostic step at 3001 classes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mxr.config import ModelConfig
from mxr.model.backbone import NO_WEIGHTS
from mxr.model.build import build_model, build_stock_maskrcnn, count_parameters
from mxr.model.transfer import TRANSFER_INPUTS

VARIANTS = {
    "stock MaskRCNN": None,
    "agnostic": dict(mask_head="agnostic", mlp_fusion=False),
    "class": dict(mask_head="class", mlp_fusion=False),
    "transfer cls+box 2L": dict(mask_head="transfer", mlp_fusion=False),
    # τ from a fixed class embedding (a 300-d GloVe-sized table, here random) and from randn
    "transfer embed 2L": dict(
        mask_head="transfer", mlp_fusion=False, transfer_input="embed", class_embedding="x.json"
    ),
    "transfer randn 2L": dict(
        mask_head="transfer", mlp_fusion=False, transfer_input="randn", randn_dim=300
    ),
    "transfer+MLP light": dict(mask_head="transfer", mlp_fusion=True, mlp_form="light"),
    "transfer+MLP paper": dict(mask_head="transfer", mlp_fusion=True, mlp_form="paper"),
}


def make_inputs(batch: int, size: int, num_classes: int, device: torch.device, seed: int = 0):
    """``batch`` images ``(3, size, size)`` with 6 objects each, half of them of set-A classes."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(batch):
        n = 6
        xy = torch.rand(n, 2, generator=g) * size * 0.6
        wh = (0.1 + torch.rand(n, 2, generator=g) * 0.3) * size
        boxes = torch.cat([xy, xy + wh], 1).round()
        labels = torch.randint(1, num_classes, (n,), generator=g)
        masks = torch.zeros(n, size, size, dtype=torch.uint8)
        for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
            masks[i, y0:y1, x0:x1] = 1
        images.append(torch.rand(3, size, size, generator=g).to(device))
        targets.append(
            {"boxes": boxes.to(device), "labels": labels.to(device), "masks": masks.to(device)}
        )
    return images, targets


def model_cfg(backbone: str, size: int, max_size: int, num_classes: int, **kw) -> ModelConfig:
    a = tuple(range(1, max(2, num_classes // 2)))
    return ModelConfig(
        num_classes=num_classes,
        mask_classes=a,
        backbone=backbone,
        min_size=size,
        max_size=max_size,
        # Timing needs no ImageNet file: resnet50_fpn from scratch on purpose (same layers, BN).
        backbone_weights=NO_WEIGHTS if backbone == "resnet50_fpn" else None,
        **kw,
    )


def build(name: str, variant: dict | None, cfg_kw: dict, device: torch.device):
    if variant is None:
        return build_stock_maskrcnn(model_cfg(**cfg_kw, mask_head="class", mlp_fusion=False)).to(
            device
        )
    cfg = model_cfg(**cfg_kw, **variant)
    emb = None
    if TRANSFER_INPUTS[cfg.transfer_input].reads_file:  # what engine.class_embedding_for reads
        emb = torch.randn(cfg.num_classes, 300, generator=torch.Generator().manual_seed(0))
    return build_model(cfg, class_embedding=emb).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step(model, opt, images, targets, device) -> float:
    model.train()
    sync(device)
    t0 = time.perf_counter()
    loss = sum(model(images, targets).values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sync(device)
    return time.perf_counter() - t0


@torch.no_grad()
def infer(model, images, device) -> float:
    model.eval()
    sync(device)
    t0 = time.perf_counter()
    model(images)
    sync(device)
    return time.perf_counter() - t0


def train_memory(model, images, targets, device) -> int:
    """Bytes: CUDA peak of one step, or on CPU saved-for-backward tensors + params + grads."""
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        sum(model(images, targets).values()).backward()
        return torch.cuda.max_memory_allocated(device)
    saved = 0

    def pack(t):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = sum(model(images, targets).values())
    loss.backward()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return saved + 2 * params


def bench_backbone(args, backbone: str, size: int, device: torch.device) -> None:
    max_size = args.max_size or size
    cfg_kw = dict(backbone=backbone, size=size, max_size=max_size, num_classes=args.num_classes)
    images, targets = make_inputs(args.batch, size, args.num_classes, device)
    models = {name: build(name, v, cfg_kw, device) for name, v in VARIANTS.items()}
    opts = {n: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for n, m in models.items()}
    times = {n: {"train": [], "infer": []} for n in models}
    # Inference first, on the freshly built models: their box branches are identical (same seed), so
    # every variant segments the same detections. Training afterwards makes them diverge.
    for it in range(args.warmup + args.iters):
        for n, m in models.items():
            ti = infer(m, images, device)
            if it >= args.warmup:
                times[n]["infer"].append(ti)
    for it in range(args.warmup + args.iters):
        for n, m in models.items():
            torch.manual_seed(it)
            tt = train_step(m, opts[n], images, targets, device)
            if it >= args.warmup:
                times[n]["train"].append(tt)
    print(
        f"\n## {backbone} @ {size}x{max_size}, batch {args.batch}, {args.num_classes} classes, {device}"
    )
    print(f"median of {args.iters} interleaved iterations after {args.warmup} warm-up\n")
    print(
        "| variant | params (M) | train step (s) | × stock | inference (s) | × stock | train memory (MB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = {k: statistics.median(v) for k, v in times["stock MaskRCNN"].items()}
    for n, m in models.items():
        tr, inf = statistics.median(times[n]["train"]), statistics.median(times[n]["infer"])
        mem = train_memory(m, images, targets, device) / 2**20
        print(
            f"| {n} | {count_parameters(m) / 1e6:.2f} | {tr:.4f} | {tr / base['train']:.3f} | "
            f"{inf:.4f} | {inf / base['infer']:.3f} | {mem:.0f} |"
        )
    if device.type == "cuda":
        print("\nimages/s (train | inference):")
        for n in models:
            tr, inf = statistics.median(times[n]["train"]), statistics.median(times[n]["infer"])
            print(f"  {n}: {args.batch / tr:.2f} | {args.batch / inf:.2f}")


def bench_large_vocab(args, device: torch.device) -> None:
    num_classes, size = 3001, 128
    cfg_kw = dict(backbone="tiny", size=size, max_size=size, num_classes=num_classes)
    images, targets = make_inputs(args.batch, size, num_classes, device, seed=1)
    models = {
        "agnostic": build("agnostic", dict(mask_head="agnostic", mlp_fusion=False), cfg_kw, device),
        "transfer cls+box 2L": build(
            "t", dict(mask_head="transfer", mlp_fusion=False), cfg_kw, device
        ),
    }
    opts = {n: torch.optim.SGD(m.parameters(), lr=1e-4) for n, m in models.items()}
    times = {n: [] for n in models}
    for it in range(args.warmup + args.iters):
        for n, m in models.items():
            torch.manual_seed(it)
            t = train_step(m, opts[n], images, targets, device)
            if it >= args.warmup:
                times[n].append(t)
    a, t = statistics.median(times["agnostic"]), statistics.median(times["transfer cls+box 2L"])
    print(f"\n## large vocabulary: tiny @ {size}, {num_classes} classes, batch {args.batch}")
    print(f"agnostic step {a:.4f} s, transfer step {t:.4f} s, ratio {t / a:.3f} (target <= 1.1)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="+", default=["tiny", "resnet50_fpn"])
    p.add_argument("--size", type=int, nargs="+", default=None, help="min_size per backbone")
    p.add_argument("--max-size", type=int, default=None)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--num-classes", type=int, default=16)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--skip-large-vocab", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    sizes = args.size or [128 if b == "tiny" else 320 for b in args.backbones]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}")
    for b, s in zip(args.backbones, sizes, strict=False):
        bench_backbone(args, b, s, device)
    if not args.skip_large_vocab:
        bench_large_vocab(args, device)


if __name__ == "__main__":
    main()
