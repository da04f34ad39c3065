#!/usr/bin/env bash
# GPU check (see benchmarks/gpu_check.py). On a machine without the harness's Python
# dependencies (a bare GPU box), put wheels for pydantic and its few dependencies in .wheels/:
#   pip download -d .wheels --only-binary=:all: --python-version 3.12 pydantic
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if ! "$PY" -c "import pydantic" 2>/dev/null && [ -d .wheels ]; then
  "$PY" -m pip install -q --no-index --find-links .wheels pydantic
fi
export MLFLOW_DISABLE_TELEMETRY=true PYTHONUNBUFFERED=1
"$PY" benchmarks/gpu_check.py "$@"
# populations on the GPU (issue 15): the same 64 random configurations per quick space, one trial
# per process vs K = 8 and 32 members per process, one worker on GPU 0 (skipped without CUDA)
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  "$PY" benchmarks/population.py --devices 0 --workers 1 --ks 1,8,32 --trials 64
fi
