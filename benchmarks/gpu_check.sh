#!/usr/bin/env bash
# GPU check of the COCO path on real COCO 2017 images on a machine with a CUDA GPU (meant to take
# about 5 minutes; not yet timed on a GPU):
#   1. model_speed_coco.py on CUDA with AMP: stock MaskRCNN vs transfer (no MLP) vs transfer+MLP
#      (light, paper) at 800x1333, resnet50_fpn: images/s and peak memory;
#   2. a 100-iteration AMP training of configs/coco/voc2nonvoc_transfer_mlp.yaml (resnet50_fpn at
#      800x1333) on the real sample, then its A / B / all evaluation on val2017;
#   3. with two GPUs or more: a 2-process NCCL training (torchrun) of 10 iterations, then 10 more
#      with --resume (20 in all), AMP on;
#   4. GPU-safety paths on one GPU: float32 proposals under float16 autocast, --resume on CUDA,
#      mxr eval without the backbone weights file;
#   5. the stage-wise protocol on one GPU (AMP): 10 iterations of the stage-1 detector
#      (configs/coco/stagewise/detector_voc2nonvoc.yaml), 10 of stage 2 on it (voc2nonvoc_transfer,
#      the mask branch alone: every detector tensor must come out unchanged and the checkpoint must
#      record the detector's sha256) and 5 of the GloVe row (voc2nonvoc_glove); then the stage-2
#      checkpoint evaluated on val2017 by torchrun --nproc_per_node=1 (the sharded path) and by
#      plain mxr eval, which must agree.
# Without a GPU it says so and runs a tiny CPU version of steps 1, 2 and 5 instead (about a
# minute on 2 cores), exit 0.
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

# Fails unless stage 2 ($2) left every detector tensor of stage 1 ($1) as it was and records it.
check_frozen() {
  "$PY" - "$1" "$2" <<'EOF'
import sys
import torch
from mxr.engine.checkpoint import load_checkpoint, model_from_checkpoint
from mxr.engine.stagewise import file_sha256
detector_path, stage2_path = sys.argv[1:3]
detector, stage2 = load_checkpoint(detector_path), load_checkpoint(stage2_path)
record = stage2.get("init_from") or {}
if record.get("sha256") != file_sha256(detector_path):
    sys.exit(f"gpu_check: {stage2_path} does not record the detector {detector_path}: {record}")
prefixes = tuple(model_from_checkpoint(stage2, device="cpu").detector_modules())
keys = [k for k in stage2["model"] if k.startswith(prefixes)]
changed = [k for k in keys if not torch.equal(stage2["model"][k], detector["model"][k])]
if not keys or changed:
    sys.exit(f"gpu_check: stage 2 changed {len(changed)} of the detector's {len(keys)} tensors: {changed[:3]}")
print(f"  stage 2 left the detector's {len(keys)} tensors unchanged; it records {record['path']} (sha256 {record['sha256'][:12]})")
EOF
}

# Fails unless two eval JSONs ($1, $2) report the same figures, numbers to within $3.
check_same_eval() {
  "$PY" - "$1" "$2" "$3" <<'EOF'
import json, sys
def leaves(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaves(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from leaves(v, f"{path}/{i}")
    else:
        yield path, node
a, b = (dict(leaves(json.load(open(p)))) for p in sys.argv[1:3])
tol = float(sys.argv[3])
if a.keys() != b.keys():
    sys.exit(f"gpu_check: the two evaluations report different figures: {sorted(a.keys() ^ b.keys())[:3]}")
numbers = [k for k in a if isinstance(a[k], (int, float)) and isinstance(b[k], (int, float))]
other = [k for k in a if k not in numbers and a[k] != b[k]]
worst = max((abs(a[k] - b[k]), k) for k in numbers) if numbers else (0.0, "")
if other or worst[0] > tol:
    sys.exit(f"gpu_check: torchrun's evaluation differs from mxr eval's: {other[:3] or worst}")
print(f"  torchrun --nproc_per_node=1 mxr eval = mxr eval: {len(numbers)} figures, largest difference {worst[0]:.3g} (allowed {tol:g})")
EOF
}

# Step 5: stage 1, stage 2 and the GloVe row on it, then the stage-2 checkpoint's evaluation through
# torchrun and without. Arguments: the iterations of stage 1 and 2, of the GloVe row, the allowed
# difference between the evaluations, then the --set overrides every run shares; sw_eval: extra
# options of both evaluations.
stagewise_check() {
  local iters=$1 glove_iters=$2 tol=$3
  shift 3
  local sets=("$@") sw=configs/coco/stagewise log="$out/stagewise.log"
  : >"$log"
  echo "  stage 1: $sw/detector_voc2nonvoc.yaml, $iters iterations (output: $log)"
  "$PY" -m mxr train --config $sw/detector_voc2nonvoc.yaml --out "$out/sw_detector" --no-eval \
    --no-progress --set "${sets[@]}" train.iterations="$iters" >>"$log"
  check_losses "$out/sw_detector"
  echo "  stage 2 on it: $sw/voc2nonvoc_transfer.yaml, $iters iterations"
  "$PY" -m mxr train --config $sw/voc2nonvoc_transfer.yaml --out "$out/sw_transfer" --no-eval \
    --no-progress --set "${sets[@]}" train.iterations="$iters" \
    train.init_from="$out/sw_detector/last.pt" >>"$log"
  check_losses "$out/sw_transfer"
  check_frozen "$out/sw_detector/last.pt" "$out/sw_transfer/last.pt"
  echo "  the GloVe row on it: $sw/voc2nonvoc_glove.yaml, $glove_iters iterations"
  "$PY" -m mxr train --config $sw/voc2nonvoc_glove.yaml --out "$out/sw_glove" --no-eval \
    --no-progress --set "${sets[@]}" train.iterations="$glove_iters" \
    train.init_from="$out/sw_detector/last.pt" >>"$log"
  check_losses "$out/sw_glove"
  check_frozen "$out/sw_detector/last.pt" "$out/sw_glove/last.pt"
  echo "  the stage-2 checkpoint on val2017: torchrun --nproc_per_node=1 -m mxr eval, then mxr eval"
  "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m mxr eval \
    --checkpoint "$out/sw_transfer/last.pt" --split val --out "$out/sw_eval_torchrun.json" \
    --no-progress ${sw_eval[@]+"${sw_eval[@]}"} >>"$log" 2>&1
  "$PY" -m mxr eval --checkpoint "$out/sw_transfer/last.pt" --split val \
    --out "$out/sw_eval_single.json" --no-progress ${sw_eval[@]+"${sw_eval[@]}"} >>"$log" 2>&1
  check_same_eval "$out/sw_eval_torchrun.json" "$out/sw_eval_single.json" "$tol"
}

ngpu=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$ngpu" = "0" ]; then
  size=${GPU_CHECK_CPU_SIZE:-96}
  echo "gpu_check: no CUDA GPU found: running the CPU fallback instead (tiny backbone at ${size}px, 1 iteration; no GPU figures)"
  "$PY" benchmarks/model_speed_coco.py --device cpu --backbone tiny --size "$size" --max-size "$size" \
    --iters 1 --warmup 0 --variants "transfer (no MLP)" --json "$out/speed_cpu.json"
  tiny=(data.root="$sample" data.num_workers=0 model.backbone=tiny model.backbone_weights=null
        model.min_size="$size" model.max_size="$size" model.fpn_channels=32 model.box_fc_dim=64
        model.mask_head_channels=16 model.mlp_form=light model.rpn_pre_nms_top_n_train=200
        model.rpn_post_nms_top_n_train=100 model.box_batch_size_per_image=32
        train.batch_size=2 train.warmup_iters=1 train.checkpoint_every=2 train.log_every=1
        train.device=cpu train.amp=false)
  "$PY" -m mxr train --config "$config" --out "$out/train_cpu" --no-eval --no-progress --set \
    "${tiny[@]}" train.iterations=2 >/dev/null
  check_losses "$out/train_cpu"
  echo "== stage-wise: stage 1, stage 2 and the GloVe row on it, 2 iterations each; sharded evaluation"
  # Short evaluations on a CPU: 10 detections per image, no true-box mask IoU (tests/
  # test_sharded_eval.py checks its sharding); one process each, so equal to the last digit.
  sw_eval=(--no-mask-iou)
  stagewise_check 2 2 0 "${tiny[@]}" model.box_detections_per_img=10
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
from mxr.config import ModelConfig
from mxr.model.build import build_model
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

echo "== 5. stage-wise on one GPU (AMP): stage 1, stage 2 and the GloVe row on it, then the stage-2"
echo "      checkpoint's sharded evaluation (torchrun, 1 process) against mxr eval"
sw_eval=()
stagewise_check 10 5 0.1 "${r50[@]}" train.batch_size=2 train.warmup_iters=5 \
  train.checkpoint_every=10 train.log_every=5
echo "gpu_check: passed in $(( $(date +%s) - start )) s; figures in $out/"
