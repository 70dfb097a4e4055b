#!/usr/bin/env bash
# Issue 14's lab experiment on one H200 (docs/EXPERIMENT_GPU.md, "To run"), as two self-contained calls
# of at most 10 minutes each (a device machine does not stay warm between calls):
#
#   bash scripts/experiment_gpu.sh base         # the gpu preset's base model, seed 0, measured on a validation split
#   bash scripts/experiment_gpu.sh experiment   # base, bias, CDPO, GRPO for seeds 0 1 2 on held-out test sets
#
# Extra options go to the command (e.g. --set warm_steps=1200). The run goes to $WORK (default
# /tmp/videothinker-MODE); the light results (reports, plots, metrics, predictions, logs, phase times;
# no frames, no weights) are packed into ONE file, $OUT/MODE.tgz ($OUT brings back at most 8 files).
# A command stopped by its guard (GUARD seconds, default 570) still packs what it finished; rerunning
# on the same machine resumes. With KEEP_MODEL=1, mode base also packs the base model (weights in
# bfloat16, so that a 4-block model stays under $OUT's 16 MiB a file) into $OUT/base-model.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?usage: experiment_gpu.sh base|experiment [options]}
shift
WORK=${WORK:-/tmp/videothinker-$MODE}
RESULTS=${OUT:-runs}
GUARD=${GUARD:-570}
SEEDS=${SEEDS:-0 1 2}  # mode experiment: the seeds (e.g. SEEDS=3, a validation replicate)
mkdir -p "$WORK" "$RESULTS"
SECONDS=0
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$WORK/gpu.txt"
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    | tee -a "$WORK/gpu.txt"
case $MODE in
  base)
    timeout "$GUARD" env PYTHONPATH=src python -m videothinker.cli lab base-model --preset gpu --seed 0 \
        --out "$WORK/seed-0" "$@" 2>&1 | tee "$WORK/base-model.log" ;;
  experiment)
    timeout "$GUARD" env PYTHONPATH=src python -m videothinker.cli demo --preset gpu --seeds $SEEDS --jobs 3 \
        --out "$WORK" "$@" 2>&1 | tee "$WORK/demo.log" ;;
  *) echo "unknown mode $MODE (base or experiment)" >&2; exit 2 ;;
esac
echo "$MODE: exit ${PIPESTATUS[0]}, $((SECONDS / 60))m $((SECONDS % 60))s" | tee "$WORK/time.txt"
tar -C "$WORK" -czf "$RESULTS/$MODE.tgz" --exclude='./lab' --exclude='./*/lab' --exclude='*.safetensors' \
    --exclude='checkpoint-*' --exclude='.final.tmp' --exclude='corpus.txt' .
ls -la "$RESULTS/$MODE.tgz"
FINAL="$WORK/seed-0/models/warm-start/final"
if [ "$MODE" = base ] && [ "${KEEP_MODEL:-0}" = 1 ] && [ -d "$FINAL" ]; then
  rm -rf "$WORK/base-model" && cp -r "$FINAL" "$WORK/base-model" && cp "$WORK/seed-0/demo.json" "$WORK/base-model/"
  python - "$WORK/base-model" <<'PY'
import sys
from pathlib import Path
from safetensors.torch import load_file, save_file
import torch
for path in Path(sys.argv[1]).glob("*.safetensors"):
    tensors = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in load_file(path).items()}
    save_file(tensors, path, metadata={"format": "pt"})
PY
  tar -C "$WORK" -czf "$RESULTS/base-model.tgz" base-model && ls -la "$RESULTS/base-model.tgz"
fi
