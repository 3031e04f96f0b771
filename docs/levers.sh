#!/bin/bash
# The levers of issue 25's mIoU stretch, each measured on validation under the stage-wise protocol:
# per lever, the control (agnostic + MLP) and τ(cls) + MLP trained on a detector, scored on val
# (train's final evaluation is on val: <run>/eval.json). Baselines are the published ablation's
# runs (runs/results/shapesx_sw/<row>/seed<k>/, val scores in eval_val.json).
#
#   bash docs/levers.sh            # seed 0 of every lever, then seeds 1, 2 of zeroinit and mask1600
#   python docs/levers.py          # the table in docs/results.md, from what has finished
#
# Two streams side by side, one thread each; a finished run (its eval.json) is skipped, so a
# stopped script picks up where it stopped. About 2 hours on 2 cores.
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
SW=runs/results/shapesx_sw
OUT=runs/levers
[ -f $SW/detector/seed0/last.pt ] || { echo "levers.sh: $SW/detector/seed0/last.pt not found: run 'python -m mxr ablate --preset shapesx' first" >&2; exit 2; }

train() {  # out config overrides...
  local out=$1 cfg=$2; shift 2
  [ -f "$out/eval.json" ] && return
  mkdir -p "$(dirname "$out")"
  local t0=$SECONDS
  if $PY -m mxr train --config "$cfg" --out "$out" --resume --no-progress --set "$@" > "$out.log" 2>&1; then
    echo "done $out $((SECONDS - t0)) s"
  else
    echo "FAILED $out (see $out.log)"
  fi
}
row() {  # lever seed detector row overrides...
  local lever=$1 k=$2 det=$3 r=$4; shift 4
  train $OUT/$lever/$r/seed$k $SW/$r/seed$k/config.yaml train.init_from=$det "$@"
}
detector() {  # lever seed overrides...
  local lever=$1 k=$2; shift 2
  train $OUT/$lever/detector/seed$k $SW/detector/seed$k/config.yaml "$@"
}

stream_a() {  # the member cue made ambiguous per instance; the detector's budget ×2
  [ -f data/shapesx_jit06/manifest.json ] ||
    $PY -m mxr data shapesx --out data/shapesx_jit06 --cap-jitter 0.6 > $OUT/jit06_data.log 2>&1
  detector jit06 0 data.root=data/shapesx_jit06
  for r in agnostic_mlp transfer_cls_mlp; do
    row jit06 0 $OUT/jit06/detector/seed0/last.pt $r data.root=data/shapesx_jit06
  done
  detector det4800 0 train.iterations=4800
  for r in agnostic_mlp transfer_cls_mlp; do row det4800 0 $OUT/det4800/detector/seed0/last.pt $r; done
}
stream_b() {  # τ zero-init; the mask branch's budget ×2; Detectron's box-predictor init
  row zeroinit 0 $SW/detector/seed0/last.pt transfer_cls_mlp model.transfer_zero_init=true
  for r in agnostic_mlp transfer_cls_mlp; do
    row mask1600 0 $SW/detector/seed0/last.pt $r train.iterations=1600
  done
  detector detectron 0 model.box_predictor_init=detectron
  for r in agnostic_mlp transfer_cls_mlp; do
    row detectron 0 $OUT/detectron/detector/seed0/last.pt $r model.box_predictor_init=detectron
  done
  for k in 1 2; do
    row zeroinit $k $SW/detector/seed$k/last.pt transfer_cls_mlp model.transfer_zero_init=true
    for r in agnostic_mlp transfer_cls_mlp; do
      row mask1600 $k $SW/detector/seed$k/last.pt $r train.iterations=1600
    done
  done
}
mkdir -p $OUT
stream_a > $OUT/stream_a.log 2>&1 &
stream_b > $OUT/stream_b.log 2>&1 &
wait
cat $OUT/stream_a.log $OUT/stream_b.log
