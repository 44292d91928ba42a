#!/usr/bin/env bash
# One prepared GPU check for a lent H200 (< 5 minutes). First every correctness check: the Triton SSD with D and z
# at chunk 64 and 128 and d_state 64 and 128, the gated RMSNorm, and a backbone training step, Triton vs reference.
# If any fails it names them and exits 1 without timing anything. Then bf16 timings: SSD fwd+bwd at L = 1k … 64k
# against the PyTorch chunked SSD and SDPA, a backbone training step, the planner's batched beam search.
# Run from the repository root:   bash benchmarks/gpu_check.sh
# Needs torch (CUDA) and triton; earthcast itself need not be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${TRITON_INTERPRET:-}" ]; then
  echo "gpu_check: TRITON_INTERPRET is set, so Triton would interpret the kernels; unset it to check and time them" >&2
  exit 2
fi

# earthcast maps earthcast.models -> models/ etc. (setuptools package-dir), so plain PYTHONPATH is not enough.
# An editable install without dependencies and without build isolation works offline; if it cannot run,
# gpu_check.py loads the packages from the pyproject mapping itself.
if ! python -c "import earthcast.models.backbone" >/dev/null 2>&1; then
  pip install --quiet --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
    || echo "gpu_check: editable install failed; falling back to loading earthcast from the source tree"
fi

export PYTHONUNBUFFERED=1
exec timeout 300 python benchmarks/gpu_check.py "$@"
