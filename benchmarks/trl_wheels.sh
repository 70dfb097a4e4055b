#!/usr/bin/env bash
# The wheels benchmarks/trl_image_grpo.py needs on the GPU machine, downloaded here into .whl/
# (ignored by .gitignore; never commit them). That machine (Python 3.12, no network) has torch,
# transformers, accelerate, pandas, pyarrow, fsspec, xxhash, huggingface-hub, pyyaml, psutil, jinja2
# and tqdm, but not TRL or datasets; of their needs it lacks only dill and multiprocess:
#
#   trl 1.16.0            0.9 MiB   (Requires-Dist: accelerate datasets pandas pyarrow transformers ...)
#   datasets 5.2.0        0.6 MiB   (pyarrow>=24 as declared, pandas, dill<0.4.2, multiprocess<0.70.20,
#                                    fsspec<=2026.9.0, xxhash, huggingface-hub>=1.31)
#   dill 0.4.1            0.1 MiB
#   multiprocess 0.70.19  0.1 MiB   (py312 wheel)
#   total                 1.8 MiB
#
# pandas is not optional (trl/trainer/grpo_trainer.py imports it at module level) but is there.
# datasets 5.2 declares pyarrow>=24; the benchmark's use of it ran here with pyarrow 21 (TRL's floor)
# and transformers 5.17 + huggingface-hub 1.33, as on the GPU machine. With --pyarrow this also
# fetches pyarrow 26.0.1 (52.5 MiB; 54.3 MiB in all, which with the ~6 MiB working tree stays under
# the 64 MiB a call carries); pandas 3.1.1 (11.5 MiB) no longer fits beside it.
#
# Usage, here:   bash benchmarks/trl_wheels.sh [--pyarrow]
# There (carry .whl), before the benchmark. The folder must have "site-packages" in its path:
# dill (datasets' fingerprinting) pickles by value every module outside such a path, and
# Dataset.from_dict then fails with "Can't pickle <class 'MonthDayNano'>".
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site-packages .whl/*.whl && export PYTHONPATH=/tmp/site-packages:src || exit;
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=(trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19)
if [[ "${1:-}" == "--pyarrow" ]]; then
    wheels+=(pyarrow==26.0.1)
fi
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${wheels[@]}"
ls -l .whl
du -ch .whl/*.whl | tail -1
