#!/bin/bash
# A behaviour-preserving change's before/after check: a seeded 100-iteration train + eval, end to
# end (transfer_mlp) and stage-wise (transfer_cls_mlp on the seed-0 detector of the published
# ablation), then a digest of every loss record, the eval JSON and every tensor of last.pt.
# Run it on two checkouts (each with its .venv); equal lines mean equal outputs and weights.
#
#   bash benchmarks/behaviour_digest.sh OUT [DETECTOR]
#
# DETECTOR defaults to runs/results/shapesx_sw/detector/seed0/last.pt (python -m mxr ablate
# --preset shapesx writes it); pass the same file to both checkouts.
set -euo pipefail
OUT=${1:?usage: behaviour_digest.sh OUT [DETECTOR]}
cd "$(dirname "$0")/.."
DET=$(realpath "${2:-runs/results/shapesx_sw/detector/seed0/last.pt}")
[ -f "$DET" ] || { echo "behaviour_digest.sh: detector checkpoint $DET not found" >&2; exit 2; }
rm -rf "$OUT" && mkdir -p "$OUT"
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
$PY -m mxr train --config configs/shapesx/transfer_mlp.yaml --set train.iterations=100 \
  --out "$OUT/e2e" --no-progress > "$OUT/e2e.log" 2>&1
$PY -m mxr train --config configs/shapesx/transfer_cls_mlp.yaml --set train.iterations=100 \
  train.trainable=mask "train.init_from=$DET" --out "$OUT/sw" --no-progress > "$OUT/sw.log" 2>&1
$PY - "$OUT" <<'PY'
import hashlib, json, sys

import torch

out = sys.argv[1]
for run in ("e2e", "sw"):
    d = f"{out}/{run}"
    losses = [{k: v for k, v in json.loads(line).items() if k != "time"} for line in open(f"{d}/metrics.jsonl")]
    ev = json.load(open(f"{d}/eval.json"))
    ck = torch.load(f"{d}/last.pt", map_location="cpu", weights_only=False)
    h = hashlib.sha256()
    for k, t in sorted(ck["model"].items()):
        h.update(k.encode())
        h.update(t.cpu().numpy().tobytes())
    print(run, "losses", hashlib.sha256(json.dumps(losses).encode()).hexdigest()[:16],
          "eval", hashlib.sha256(json.dumps(ev, sort_keys=True).encode()).hexdigest()[:16],
          "weights", h.hexdigest()[:16])
PY
