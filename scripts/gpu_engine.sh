#!/usr/bin/env bash
# The decode engine's GPU checks and benchmarks (docs/PERFORMANCE.md §2), in parts that each fit one
# device call of at most 10 minutes on one H200 (torch, transformers, accelerate there; no PyAV, no
# network, no installed package: the code runs from src/). Raw JSON and logs go to $OUT (or runs/gpu).
#
#   bash scripts/gpu_engine.sh 1   # GPU tests (graph replay == eager, fused == simple, 3 families; the shared
#                                  # prompt on SDPA's CUDA kernels); the fused step's kernels by kind and each
#                                  # decode-attention kernel alone (WITH_DECODE=1: then part 5 too; WITH_COMPILED=1:
#                                  # the compiled layer's kernels with matmul and with flex attention)
#   bash scripts/gpu_engine.sh 5   # ms per decode step: simple, fused (SDPA or matmul attention), compiled,
#                                  # generate; the floor (DECODE_PATHS=...: fewer paths)
#   bash scripts/gpu_engine.sh 2   # one CDPO step, 256 tokens (bf16) and the paper setting (fp32 masters, 768):
#                                  # lean, shared prompt (split and dense attention), the reference code's way,
#                                  # each policy pass profiled (kernels by kind, forward/backward, the floor);
#                                  # ANCHOR=1: also the anchor's third model; PAPER_ONLY=1: the paper setting alone
#   bash scripts/gpu_engine.sh 3   # videothinker train, paper CDPO preset (3B, random init): as it runs (the
#                                  # fused step), with the shared prompt, and with it 12 of 36 layers or none
#                                  # recomputing; RUNS=... (benchmarks/train_e2e.py lists the runs)
#   bash scripts/gpu_engine.sh 4   # TRL's GRPOTrainer (PEERS=trl,unsloth: and Unsloth's) vs videothinker on
#                                  # the image task (wheels in .whl/: trl_wheels.sh, or unsloth_wheels.sh);
#                                  # OURS_SET='key=value ...': settings for ours (e.g. grpo.share_prompt=true)
#   bash scripts/gpu_engine.sh q   # where one call is all a session gets (under 10 minutes): the paper preset as
#                                  # it runs and with the shared prompt without recompute (decode as it runs, or
#                                  # compiled whole); three decode paths; the decode GPU tests
#   bash scripts/gpu_engine.sh r   # one call: the paper preset before the speed work and as it runs now, compiled,
#                                  # and compiled with 12 of 36 layers recomputing; decode_breakdown.py
#   bash scripts/gpu_engine.sh u   # Unsloth's video GRPO path against ours on trl_image_grpo.py's video task
#                                  # (--frames 8; wheels in .whl/: unsloth_wheels.sh; about 6 minutes)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${OUT:-runs/gpu}")  # absolute: parts 1 and 2 run from benchmarks/
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1  # absolute: parts 1 and 2 run from benchmarks/
part=${1:?which part: 1, 2, 3, 4, 5, q, r or u}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv > "$OUT/gpu_$part.txt"
install_wheels() {  # the peers' wheels (carried in .whl/) into a side folder; PYTHONPATH=/tmp/site-packages:src
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site-packages .whl/*.whl
}
case "$part" in
1)
    python -m pytest -p no:cacheprovider -m gpu tests/models/test_engine.py tests/models/test_decode_fused.py \
        tests/rl/test_memory.py tests/rl/test_shared_prompt.py 2>&1 | tee "$OUT/gpu_tests.txt"
    (cd benchmarks && python decode_breakdown.py --out "$OUT/decode_breakdown.json") 2>&1 \
        | tee "$OUT/decode_breakdown.txt"
    [[ "${WITH_COMPILED:-0}" == 1 ]] && (cd benchmarks && for attention in matmul flex; do
        python decode_breakdown.py --compiled --attention $attention \
            --out "$OUT/decode_breakdown_compiled_$attention.json"; done) 2>&1 \
        | tee "$OUT/decode_breakdown_compiled.txt"
    [[ "${WITH_DECODE:-0}" == 1 ]] && bash "$0" 5
    ;;
5)
    (cd benchmarks && python decode.py --t1 32 --t2 160 --repeats 2 ${DECODE_PATHS:+--paths "$DECODE_PATHS"} \
        --out "$OUT/decode.json") 2>&1 | tee "$OUT/decode.txt"
    ;;
2)
    [[ "${PAPER_ONLY:-0}" == 1 ]] || (cd benchmarks && python cdpo_step.py --repeats 2 \
        --paths lean,shared,naive,reference_code --out "$OUT/cdpo_step_engine.json") 2>&1 \
        | tee "$OUT/cdpo_step_engine.txt"
    (cd benchmarks && python cdpo_step.py --master-fp32 --completion-tokens 768 --repeats 2 \
        --paths "${PAPER_PATHS:-lean,shared,shared_dense,reference_code}" ${ANCHOR:+--anchor} --profile \
        --out "$OUT/cdpo_step_paper.json") 2>&1 | tee "$OUT/cdpo_step_paper.txt"
    ;;
3)
    python benchmarks/train_e2e.py \
        --runs "${RUNS:-3b_fp32_master,3b_fp32_master_shared,3b_fp32_master_shared_ckpt12,3b_fp32_master_shared_nockpt}" \
        --steps 3 --out "$OUT/train_e2e" \
        2>&1 | tee "$OUT/train_e2e.txt"
    ;;
4)
    install_wheels || exit 1
    sets=()
    for item in ${OURS_SET:-}; do sets+=(--set "$item"); done
    PYTHONPATH=/tmp/site-packages:src python benchmarks/trl_image_grpo.py --peers "${PEERS:-trl}" \
        "${sets[@]}" --out "$OUT/trl_image_grpo.json" \
        2>&1 | tee "$OUT/trl_image_grpo.txt"
    ;;
r)
    RUNS=3b_fp32_master_before,3b_fp32_master,3b_fp32_master_shared_compiled_matmul,3b_fp32_master_shared_ckpt12_compiled_matmul \
        timeout 420 bash "$0" 3
    (cd benchmarks && timeout 140 python decode_breakdown.py --out "$OUT/decode_breakdown.json") 2>&1 \
        | tee "$OUT/decode_breakdown.txt"
    (cd "$OUT" && tar czf all.tgz --exclude=all.tgz .)  # a call returns at most 8 files
    ;;
u)
    install_wheels || exit 1
    PYTHONPATH=/tmp/site-packages:src timeout 580 python benchmarks/trl_image_grpo.py --peers unsloth \
        --frames 8 --steps 4 --peer-timeout "${PEER_TIMEOUT:-420}" --set grpo.share_prompt=true --set rollout.fused_step=true \
        --set rollout.compile=true --out "$OUT/unsloth_video.json" 2>&1 | tee "$OUT/unsloth_video.txt"
    ;;
q)
    RUNS=3b_fp32_master,3b_fp32_master_shared_nockpt,3b_fp32_master_shared_nockpt_compiled \
        timeout 320 bash "$0" 3
    DECODE_PATHS=engine_graph_fused,engine_graph_fused_compiled,engine_graph_fused_matmul timeout 150 bash "$0" 5
    timeout 100 python -m pytest -p no:cacheprovider -m gpu tests/models/test_engine.py \
        tests/models/test_decode_fused.py 2>&1 | tee "$OUT/gpu_tests.txt"
    ;;
*)
    echo "unknown part $part" >&2
    exit 2
    ;;
esac
