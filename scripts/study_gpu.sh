#!/usr/bin/env bash
# The CDPO study's GPU calls (docs/EXPERIMENT_GPU.md, "Bounded repulsion"): `videothinker study` on one
# H200, self-contained within one device call of at most 10 minutes:
#
#   bash scripts/study_gpu.sh configs/study/val_grid.yaml --seeds 3 --split val
#   bash scripts/study_gpu.sh configs/study/test_chosen.yaml --seeds 1000 1001 1002 1003 1004 --split test
#
# Extra options go to `videothinker study` (JOBS tasks at once, default 6; preset gpu from the packaged
# base, TEST_SCENES scenes per evaluation set, default 200). The run goes to $WORK; the light results
# (study.md/json, metrics, predictions, training logs; no frames, no weights) are packed into ONE file,
# $OUT/study.tgz. A command stopped by its guard (GUARD seconds, default 560) still packs what finished.
set -uo pipefail
cd "$(dirname "$0")/.."
VARIANTS=${1:?usage: study_gpu.sh VARIANTS.yaml [study options]}
shift
WORK=${WORK:-/tmp/videothinker-study}
RESULTS=${OUT:-runs}
GUARD=${GUARD:-560}
mkdir -p "$WORK" "$RESULTS"
SECONDS=0
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$WORK/gpu.txt"
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    | tee -a "$WORK/gpu.txt"
timeout "$GUARD" env PYTHONPATH=src VIDEOTHINKER_PROGRESS=0 python -m videothinker.cli study --preset gpu \
    --set base_model=packaged --set "test_scenes=${TEST_SCENES:-200}" --jobs "${JOBS:-6}" \
    --variants "$VARIANTS" --out "$WORK" "$@" 2>&1 | tee "$WORK/study.log"
echo "study: exit ${PIPESTATUS[0]}, $((SECONDS / 60))m $((SECONDS % 60))s" | tee "$WORK/time.txt"
if [ ! -f "$WORK/study.md" ]; then  # stopped by the guard: report what finished
  PYTHONPATH=src python -m videothinker.cli study --report-only --preset gpu --variants "$VARIANTS" \
      --out "$WORK" "$@" >> "$WORK/study.log" 2>&1
fi
tar -C "$WORK" -czf "$RESULTS/study.tgz" --exclude='./*/lab' --exclude='./*/balanced/lab' \
    --exclude='*.safetensors' --exclude='checkpoint-*' --exclude='.final.tmp' --exclude='optimizer*.pt' \
    --exclude='*/models' --exclude='*/final' .
ls -la "$RESULTS/study.tgz"
