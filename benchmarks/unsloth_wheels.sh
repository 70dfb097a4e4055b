#!/usr/bin/env bash
# The wheels benchmarks/trl_image_grpo.py --peers trl,unsloth needs on the GPU machine, downloaded
# here into .whl/ (ignored by .gitignore; never commit them). Unsloth 2026.10.9 pins transformers
# <= 5.17 (the GPU machine has 5.17), TRL <= 1.15 and datasets < 5, so this set replaces
# trl_wheels.sh's (TRL 1.16, datasets 5.2): both peers then run TRL 1.15.
#
# Of Unsloth's needs the GPU machine lacks these (it has torch, torchvision, triton, transformers,
# accelerate, peft, huggingface-hub, pandas, pyarrow, xxhash, typer, rich, protobuf, sentencepiece,
# einops and pillow). bitsandbytes and xformers are left out: Unsloth imports without them and uses
# them only for 4-bit loading and its xformers attention, neither of which the benchmark asks for.
#
#   unsloth 2026.10.9       27.3 MiB   unsloth_zoo 2026.10.9   2.8 MiB
#   diffusers 0.42.1         6.1 MiB   hf_transfer 0.1.9       3.4 MiB   torchao 0.18.0   3.2 MiB
#   pydantic (+ core, annotated_types, typing_inspection)      2.7 MiB
#   trl 1.15.0, datasets 4.8.4, dill, multiprocess, tyro, docstring_parser, shtab, typeguard, msgspec,
#   json5, nest_asyncio, structlog, cut_cross_entropy, pytz, tzdata                  3.0 MiB
#   total                   49 MiB (with the ~6 MiB working tree, under the 64 MiB a call carries)
#
# On this CPU machine the set imports (`import unsloth; from unsloth import FastVisionModel; from trl
# import GRPOTrainer`) with transformers 5.17 and huggingface-hub 1.33 beside it, and the benchmark
# runs up to loading the model: Unsloth's CPU backend refuses vision models ("vision / audio models
# are not supported on the CPU backend yet"), so the Unsloth peer runs only on a GPU.
#
# Usage, here:   bash benchmarks/unsloth_wheels.sh
# There (carry .whl), before the benchmark (the folder must have "site-packages" in its path, see
# trl_wheels.sh):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site-packages .whl/*.whl && export PYTHONPATH=/tmp/site-packages:src || exit;
#   python3 benchmarks/trl_image_grpo.py --peers trl,unsloth --out $OUT/peers_image_grpo.json
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=(
    unsloth==2026.10.9 unsloth_zoo==2026.10.9 trl==1.15.0 datasets==4.8.4 dill==0.4.0
    multiprocess==0.70.18 tyro==1.0.17 docstring_parser==0.18.0 shtab==1.13.0 typeguard==4.6.1
    msgspec==0.23.0 json5==0.17.3 nest_asyncio==1.6.0 structlog==26.1.0 cut_cross_entropy==25.1.1
    hf_transfer==0.1.9 torchao==0.18.0 pytz==2026.6 tzdata==2026.6 pydantic==2.14.4
    pydantic_core==2.50.5 annotated_types==0.8.0 typing_inspection==0.4.5 diffusers==0.42.1
)
rm -rf .whl
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl "${wheels[@]}"
ls -l .whl
du -ch .whl/*.whl | tail -1
