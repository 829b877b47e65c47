#!/usr/bin/env bash
# The GPU check, ready for the day a GPU is lent (about 5 minutes on one H100): torch.cuda facts, throughput rows a-e
# at length 128, a 10-trial RTE search at the default budget in bf16, and the same with two workers sharing the GPU.
# Results go to $OUT (the device tool's folder) or benchmarks/results/, as *-gpu.* files; see benchmarks/gpu_check.py.
#
#   here:           benchmarks/gpu_prepare.sh
#   on the GPU:     bash benchmarks/gpu_check.sh                       (the device call carries .gpu_carry)
#   on the CPU:     bash benchmarks/gpu_check.sh --dry-run --out /tmp/x   (tests/test_gpu_check.py does)
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=${CARRY:-.gpu_carry}
PYTHON=${PYTHON:-python3}
if [ -d "$CARRY/wheels" ]; then  # the tested versions, ahead of whatever the machine's image holds
  site=$(mktemp -d)
  "$PYTHON" -m pip install --quiet --no-index --no-deps --target "$site" "$CARRY"/wheels/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" benchmarks/gpu_check.py --carry "$CARRY" "$@"
