#!/usr/bin/env bash
# The gpu preset of `videothinker demo` (3 seeds at once) on one H100 / H200 machine that has torch,
# transformers, pillow, matplotlib, rich and pyyaml but no PyAV, no network and no installed package.
#
#   bash scripts/demo_gpu.sh [RESULTS_DIR] [extra demo options, e.g. --set rl.grpo.max_steps=80]
#
# The run itself (lab frames, model weights: a few GB) goes to $WORK (default /tmp/videothinker-gpu);
# the light results (report.md per seed and aggregated, plots, metrics.json, predictions.jsonl,
# training logs, phase times) are copied to RESULTS_DIR (default $OUT/gpu, else runs/gpu).
# Rerunning the same command resumes: finished phases are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${1:-${OUT:-runs}/gpu}
shift || true
WORK=${WORK:-/tmp/videothinker-gpu}
SECONDS=0
PYTHONPATH=src python -m videothinker.cli demo --preset gpu --seeds 0 1 2 --jobs 3 --out "$WORK" "$@"
echo "demo finished in $((SECONDS / 60))m $((SECONDS % 60))s"
mkdir -p "$RESULTS"
tar -C "$WORK" -cf - --exclude='./seed-*/lab' --exclude='*.safetensors' --exclude='checkpoint-*' \
    --exclude='.final.tmp' . | tar -C "$RESULTS" -xf -
echo "results in $RESULTS (aggregate: $RESULTS/report.md)"
