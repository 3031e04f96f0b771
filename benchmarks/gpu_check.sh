#!/usr/bin/env bash
# GPU check of the COCO path on real COCO 2017 images, in under 5 minutes on a machine with a CUDA GPU:
#   1. model_speed_coco.py on CUDA with AMP: stock MaskRCNN vs transfer (no MLP) vs transfer+MLP
#      (light, paper) at 800x1333, resnet50_fpn: images/s and peak memory;
#   2. a 100-iteration AMP training of configs/coco/voc2nonvoc_transfer_mlp.yaml (resnet50_fpn at
#      800x1333) on the real sample, then its A / B / all evaluation on val2017;
#   3. with two GPUs or more: a 2-process NCCL training (torchrun) of 10 iterations, then 10 more
#      with --resume (20 in all), AMP on.
# Without a GPU it says so and runs a tiny CPU version of steps 1 and 2 instead (seconds), exit 0.
#
# Usage: benchmarks/gpu_check.sh [OUT_DIR]        (default runs/gpu_check; figures in OUT_DIR/*.json)
# Env:   MXR_COCO_SAMPLE  the real COCO sample (default ../shared/coco-tiny beside the repository)
#        PYTHON           the interpreter (default .venv/bin/python, else python3)
#        GPU_CHECK_CPU_SIZE  image side of the CPU fallback (default 96)
# The resnet50_fpn runs start from scratch on purpose (model.backbone_weights=none-i-know): the
# check measures speed and that the pipeline runs, not accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
out=${1:-runs/gpu_check}
sample=${MXR_COCO_SAMPLE:-$repo/../shared/coco-tiny}
if [ ! -f "$sample/annotations/instances_val2017.json" ]; then
  echo "gpu_check: no COCO sample at $(basename "$sample")/ (set MXR_COCO_SAMPLE); nothing checked" >&2
  exit 2
fi
export MXR_COCO_SAMPLE=$sample
mkdir -p "$out"
config=configs/coco/voc2nonvoc_transfer_mlp.yaml
start=$(date +%s)

# Fails the check unless every logged loss of a run is finite; prints the first and last loss.
check_losses() {
  "$PY" - "$1" <<'EOF'
import json, math, sys
records = [json.loads(line) for line in open(sys.argv[1] + "/metrics.jsonl") if line.strip()]
losses = [r for r in records if "loss" in r]
bad = [(r["iter"], k) for r in losses for k, v in r.items() if k.startswith("loss") and not math.isfinite(v)]
if not losses or bad:
    sys.exit(f"gpu_check: {sys.argv[1]}: no finite losses ({bad[:3]} non-finite)")
print(f"  losses finite over {len(losses)} logged iterations: {losses[0]['loss']:.3f} -> {losses[-1]['loss']:.3f} (iteration {losses[-1]['iter']})")
EOF
}

ngpu=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$ngpu" = "0" ]; then
  size=${GPU_CHECK_CPU_SIZE:-96}
  echo "gpu_check: no CUDA GPU found: running the CPU fallback instead (tiny backbone at ${size}px, 1 iteration; no GPU figures)"
  "$PY" benchmarks/model_speed_coco.py --device cpu --backbone tiny --size "$size" --max-size "$size" \
    --iters 1 --warmup 0 --variants "transfer (no MLP)" --json "$out/speed_cpu.json"
  "$PY" -m mxr train --config "$config" --out "$out/train_cpu" --no-eval --no-progress --set \
    data.root="$sample" data.num_workers=0 model.backbone=tiny model.backbone_weights=null \
    model.min_size="$size" model.max_size="$size" model.fpn_channels=32 model.box_fc_dim=64 \
    model.mask_head_channels=16 model.mlp_form=light model.rpn_pre_nms_top_n_train=200 \
    model.rpn_post_nms_top_n_train=100 model.box_batch_size_per_image=32 \
    train.iterations=2 train.batch_size=2 train.warmup_iters=1 train.checkpoint_every=2 \
    train.log_every=1 train.device=cpu train.amp=false >/dev/null
  check_losses "$out/train_cpu"
  echo "gpu_check: CPU fallback passed in $(( $(date +%s) - start )) s; run this script on a machine with a CUDA GPU for the GPU figures"
  exit 0
fi

"$PY" -c "import torch; print('gpu_check:', torch.cuda.device_count(), 'x', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
r50=(data.root="$sample" model.backbone=resnet50_fpn model.backbone_weights=none-i-know
     data.num_workers=4 train.device=cuda train.amp=true train.log_every=10)

echo "== 1. speed at 800x1333 on CUDA with AMP (batch 2)"
"$PY" benchmarks/model_speed_coco.py --device cuda --amp --batch 2 --iters 10 --warmup 3 \
  --json "$out/speed_cuda_amp.json"

echo "== 2. 100-iteration AMP training on the real sample, then evaluation on val2017"
"$PY" -m mxr train --config "$config" --out "$out/train100" --no-progress --set "${r50[@]}" \
  train.iterations=100 train.batch_size=2 train.warmup_iters=20 train.checkpoint_every=100
check_losses "$out/train100"

if [ "$ngpu" -ge 2 ]; then
  echo "== 3. 2-process NCCL training (torchrun), 10 iterations, then --resume to 20 (AMP)"
  torchrun=("$PY" -m torch.distributed.run --standalone --nproc_per_node=2 -m mxr train)
  "${torchrun[@]}" --config "$config" --out "$out/ddp" --no-eval --no-progress --set "${r50[@]}" \
    train.iterations=10 train.batch_size=2 train.warmup_iters=5 train.checkpoint_every=10
  "${torchrun[@]}" --config "$config" --out "$out/ddp" --no-eval --no-progress --resume --set "${r50[@]}" \
    train.iterations=20 train.batch_size=2 train.warmup_iters=5 train.checkpoint_every=10
  check_losses "$out/ddp"
  "$PY" -c "import torch,sys; c=torch.load(sys.argv[1], map_location='cpu', weights_only=False); assert c['iteration']==20, c['iteration']; print('  resumed run ended at iteration', c['iteration'])" "$out/ddp/last.pt"
else
  echo "== 3. skipped: 2-process NCCL and --resume runs need two GPUs ($ngpu found)"
fi

echo "== 4. GPU-safety paths of the COCO recipe on one GPU (AMP): float32 proposals, the frozen-BN"
echo "      layout from a weights file, --resume on CUDA, mxr eval without that file"
"$PY" - <<'EOF'
import torch
from mxr import ModelConfig, build_model
from mxr.model.backbone import NO_WEIGHTS
cfg = ModelConfig(num_classes=81, mask_classes=tuple(range(1, 21)), backbone="resnet50_fpn",
                  backbone_weights=NO_WEIGHTS, min_size=800, max_size=1333)
m = build_model(cfg).cuda().train()
images = [torch.rand(3, 800, 1216, device="cuda")]
targets = [{"boxes": torch.tensor([[100.0, 120.0, 600.0, 700.0]], device="cuda"),
            "labels": torch.tensor([1], device="cuda")}]
with torch.autocast("cuda", dtype=torch.float16):
    il, targets = m.transform(images, targets)
    feats = m.backbone(il.tensors)
    boxes, losses = m.rpn(il, feats, targets)
assert next(iter(feats.values())).dtype == torch.float16
assert all(b.dtype == torch.float32 for b in boxes), [b.dtype for b in boxes]
print("  RPN proposals under CUDA float16 autocast:", boxes[0].dtype, "| losses", {k: v.dtype for k, v in losses.items()})
EOF
"$PY" -c "import sys, torch, torchvision; torch.save(torchvision.models.resnet50(weights=None).state_dict(), sys.argv[1])" "$out/r50_stand_in.pth"
w=(data.root="$sample" model.backbone=resnet50_fpn model.backbone_weights="$out/r50_stand_in.pth"
   data.num_workers=4 train.device=cuda train.amp=true train.log_every=5 train.batch_size=2
   train.warmup_iters=5 train.checkpoint_every=10)
"$PY" -m mxr train --config "$config" --out "$out/resume1" --no-eval --no-progress --set "${w[@]}" train.iterations=10
"$PY" -m mxr train --config "$config" --out "$out/resume1" --no-eval --no-progress --resume --set "${w[@]}" train.iterations=20
check_losses "$out/resume1"
rm "$out/r50_stand_in.pth"  # the checkpoint must evaluate without the backbone file
"$PY" -m mxr eval --checkpoint "$out/resume1/last.pt" --split val --out "$out/eval_without_weights.json" \
  --no-progress --no-mask-iou >/dev/null
echo "  mxr eval of the resumed checkpoint without the backbone file: $out/eval_without_weights.json"
echo "gpu_check: passed in $(( $(date +%s) - start )) s; figures in $out/"
