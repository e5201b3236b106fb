#!/usr/bin/env bash
# One device call: install, run every test on the GPU (CUDA-marked tests included), then
# every benchmark, writing logs and JSON under $OUT (or ./gpu-out). Usage:
#   bash scripts/gpu_check.sh [tests|bench|all] [pytest -k expression]
set -uo pipefail
out="${OUT:-gpu-out}"; mkdir -p "$out"
what="${1:-all}"; filter="${2:-}"
python -m pip install -q --no-deps --no-build-isolation -e . > "$out/pip.log" 2>&1 || tail -5 "$out/pip.log"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used --format=csv,noheader
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
if [ "$what" = tests ] || [ "$what" = all ]; then
  python -m pytest -q -p no:cacheprovider ${filter:+-k "$filter"} -m "not slow" -rfE \
    > "$out/pytest-cuda.log" 2>&1
  echo "pytest exit $?"; tail -25 "$out/pytest-cuda.log"
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  for name in ${BENCHES:-generators linear sparse_backward}; do
    echo "== bench $name"
    timeout "${BENCH_TIMEOUT:-240}" python -m randfx.bench "$name" --json "$out/bench-$name.json" \
      > "$out/bench-$name.log" 2>&1
    echo "exit $?"; tail -40 "$out/bench-$name.log"
  done
fi
