"""Speed at the paper's scale: real COCO images at 800x1333, resnet50_fpn, stock vs Mask^X heads.

    python benchmarks/model_speed_coco.py                      # CPU: 1 image, 2 timed iterations
    python benchmarks/model_speed_coco.py --device cuda --amp --batch 2 --iters 20 --warmup 5

The images and their annotations come from the real COCO 2017 sample (``--root``, default
``MXR_COCO_SAMPLE`` or ``../shared/coco-tiny`` beside the repository): the first ``--batch`` val2017
images holding both VOC (set A) and non-VOC (set B) instances, at the paper's scale (shorter side 800,
longer at most 1333). Every model gets the same images and targets (a mask for every instance):
stock torchvision ``MaskRCNN`` (class-specific masks, mask loss on every class) and the Mask^X heads
with ``mask_classes`` = the 20 VOC classes (mask loss on set A only, as in the paper): transfer
(``cls+box``, 2-layer LeakyReLU τ, stop-grad) without MLP, and with the MLP in its ``light`` and
``paper`` forms. Same backbone, sizes and seeds; iterations are interleaved (round-robin) so machine
load hits every model alike. ``box_score_thresh=0`` so that inference masks the full 100 detections
per image even with untrained weights. Prints the median training step (forward + backward + SGD)
and inference time, the ratios to stock, images/s and, on CUDA, the peak memory of each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from mxr.config import ModelConfig
from mxr.data.coco import CocoInstances
from mxr.data.splits import VOC_CAT_IDS
from mxr.model.backbone import NO_WEIGHTS
from mxr.model.build import build_model, build_stock_maskrcnn, count_parameters

REPO = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, dict | None] = {
    "stock MaskRCNN": None,
    "transfer (no MLP)": dict(mask_head="transfer", mlp_fusion=False),
    "transfer+MLP light": dict(mask_head="transfer", mlp_fusion=True, mlp_form="light"),
    "transfer+MLP paper": dict(mask_head="transfer", mlp_fusion=True, mlp_form="paper"),
}


def default_root() -> Path:
    """``MXR_COCO_SAMPLE``, else ``../shared/coco-tiny`` beside the repository."""
    value = os.environ.get("MXR_COCO_SAMPLE")
    return Path(value) if value else REPO.parent / "shared" / "coco-tiny"


def real_batch(root: Path, n: int, device: torch.device) -> tuple[list, list, CocoInstances]:
    """The first ``n`` val2017 images (by id) with both set-A and set-B instances, and their targets
    (boxes, labels, a mask per instance)."""
    ds = CocoInstances(
        root / "val2017",
        root / "annotations" / "instances_val2017.json",
        split="voc",
        masks="all",
    )
    a = set(ds.a_labels)
    images, targets = [], []
    for i in range(len(ds)):
        image, target = ds[i]
        labels = set(target["labels"].tolist())
        if labels & a and labels - a:
            images.append(image.to(device))
            targets.append(
                {k: target[k].to(device) for k in ("boxes", "labels", "masks", "has_mask")}
            )
        if len(images) == n:
            break
    return images, targets, ds


def model_cfg(args: argparse.Namespace, ds: CocoInstances, **kw) -> ModelConfig:
    return ModelConfig(
        num_classes=ds.num_classes,
        mask_classes=tuple(ds.a_labels),
        backbone=args.backbone,
        # Timing needs no ImageNet file: the same layers from scratch, on purpose.
        backbone_weights=NO_WEIGHTS if args.backbone == "resnet50_fpn" else None,
        min_size=args.size,
        max_size=args.max_size,
        box_score_thresh=0.0,
        **kw,
    )


def build(variant: dict | None, args: argparse.Namespace, ds, device: torch.device):
    if variant is None:
        return build_stock_maskrcnn(model_cfg(args, ds, mask_head="class", mlp_fusion=False)).to(
            device
        )
    return build_model(model_cfg(args, ds, **variant)).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.float16) if amp else nullcontext()


def train_step(model, opt, scaler, images, targets, device, amp: bool) -> float:
    model.train()
    sync(device)
    t0 = time.perf_counter()
    with autocast(device, amp):
        loss = sum(model(images, targets).values())
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    sync(device)
    return time.perf_counter() - t0


@torch.no_grad()
def infer(model, images, device, amp: bool) -> tuple[float, int]:
    model.eval()
    sync(device)
    t0 = time.perf_counter()
    with autocast(device, amp):
        out = model(images)
    sync(device)
    return time.perf_counter() - t0, sum(len(o["boxes"]) for o in out)


def peak_memory(model, opt, scaler, images, targets, device, amp: bool) -> tuple[float, float]:
    """CUDA peak allocated (MiB) of one training step and of one inference."""
    torch.cuda.reset_peak_memory_stats(device)
    train_step(model, opt, scaler, images, targets, device, amp)
    train_peak = torch.cuda.max_memory_allocated(device) / 2**20
    torch.cuda.reset_peak_memory_stats(device)
    infer(model, images, device, amp)
    return train_peak, torch.cuda.max_memory_allocated(device) / 2**20


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=None, help="the COCO sample (see above)")
    p.add_argument("--backbone", default="resnet50_fpn")
    p.add_argument("--size", type=int, default=800, help="shorter side (default 800)")
    p.add_argument("--max-size", type=int, default=1333, help="longer side at most (default 1333)")
    p.add_argument("--batch", type=int, default=1, help="images per step (default 1)")
    p.add_argument("--iters", type=int, default=2, help="timed iterations (default 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first (default 1)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="float16 autocast + GradScaler (CUDA)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    if "stock MaskRCNN" not in args.variants:
        args.variants = ["stock MaskRCNN", *args.variants]
    device = torch.device(args.device)
    amp = bool(args.amp and device.type == "cuda")
    root = args.root or default_root()
    if not (root / "annotations" / "instances_val2017.json").is_file():
        raise SystemExit(
            f"model_speed_coco: no COCO sample at {root} (set MXR_COCO_SAMPLE or --root)"
        )
    images, targets, ds = real_batch(root, args.batch, device)
    shapes = [tuple(i.shape[1:]) for i in images]
    n_inst = [len(t["labels"]) for t in targets]
    n_a = [int(torch.isin(t["labels"].cpu(), torch.tensor(ds.a_labels)).sum()) for t in targets]
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}, amp {amp}"
    )
    print(
        f"{len(images)} real val2017 image(s) {shapes} (H, W) from {root.name}/, "
        f"{sum(n_inst)} instances ({sum(n_a)} of set A = VOC, {len(VOC_CAT_IDS)} classes); "
        f"{args.backbone} at {args.size}x{args.max_size}, {ds.num_classes - 1} classes"
    )
    models = {n: build(VARIANTS[n], args, ds, device) for n in args.variants}
    opts = {n: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for n, m in models.items()}
    scalers = {n: torch.amp.GradScaler(device.type, enabled=amp) for n in models}
    times = {n: {"train": [], "infer": []} for n in models}
    dets: dict[str, int] = {}
    # Inference first, on the freshly built models: their box branches are identical (same seed), so
    # every variant masks the same detections. Training afterwards makes them diverge.
    for it in range(args.warmup + args.iters):
        for n, m in models.items():
            t, dets[n] = infer(m, images, device, amp)
            if it >= args.warmup:
                times[n]["infer"].append(t)
    for it in range(args.warmup + args.iters):
        for n, m in models.items():
            torch.manual_seed(it)
            t = train_step(m, opts[n], scalers[n], images, targets, device, amp)
            if it >= args.warmup:
                times[n]["train"].append(t)
    memory = {}
    if device.type == "cuda":
        for n, m in models.items():
            memory[n] = peak_memory(m, opts[n], scalers[n], images, targets, device, amp)
    base = {k: statistics.median(v) for k, v in times["stock MaskRCNN"].items()}
    print(
        f"\nmedian of {args.iters} interleaved iteration(s) after {args.warmup} warm-up; "
        f"{dets['stock MaskRCNN']} detections masked per inference\n"
    )
    header = "| variant | params (M) | train step (s) | × stock | inference (s) | × stock | train img/s | infer img/s |"
    if memory:
        header += " train peak (MiB) | infer peak (MiB) |"
    print(header)
    print("|---|" + "---:|" * (header.count("|") - 2))
    rows = {}
    for n, m in models.items():
        tr, inf = statistics.median(times[n]["train"]), statistics.median(times[n]["infer"])
        row = {
            "params_M": count_parameters(m) / 1e6,
            "train_s": tr,
            "train_ratio": tr / base["train"],
            "infer_s": inf,
            "infer_ratio": inf / base["infer"],
            "train_images_per_s": len(images) / tr,
            "infer_images_per_s": len(images) / inf,
        }
        line = (
            f"| {n} | {row['params_M']:.2f} | {tr:.3f} | {row['train_ratio']:.3f} | {inf:.3f} | "
            f"{row['infer_ratio']:.3f} | {row['train_images_per_s']:.2f} | "
            f"{row['infer_images_per_s']:.2f} |"
        )
        if memory:
            row["train_peak_MiB"], row["infer_peak_MiB"] = memory[n]
            line += f" {memory[n][0]:.0f} | {memory[n][1]:.0f} |"
        rows[n] = row
        print(line)
    t = rows.get("transfer (no MLP)")
    if t:
        verdict = "met" if max(t["train_ratio"], t["infer_ratio"]) <= 1.05 else "NOT met"
        print(
            f"\ntarget: transfer without MLP <= 1.05x stock: train {t['train_ratio']:.3f}x, "
            f"inference {t['infer_ratio']:.3f}x -> {verdict}"
        )
    summary = {
        "device": str(device),
        "amp": amp,
        "images": shapes,
        "size": [args.size, args.max_size],
        "iters": args.iters,
        "variants": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
