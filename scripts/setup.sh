#!/usr/bin/env bash
# Set up a virtual environment with mtdnn and everything the demo and the tests need (idempotent).
# torch is pinned first: the CPU wheel of torch 2.13.0 (a looser requirement pulls a multi-GB CUDA
# build). Every other package is installed at the exact version of requirements/lock.txt (a
# constraints file made by scripts/lock.sh from pyproject.toml's ranges), so a fresh clone computes
# what the golden test recorded, whatever was released since.
#   MTDNN_VENV=DIR      the environment's folder (default .venv)
#   MTDNN_LOCK=         empty: no lock, the newest releases the ranges allow (scripts/test-latest.sh)
#   MTDNN_TORCH_VERSION the torch release to install first (default 2.13.0)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${MTDNN_VENV:-.venv}
LOCK=${MTDNN_LOCK-requirements/lock.txt}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${MTDNN_TORCH_VERSION:-2.13.0}"
if [ -n "$LOCK" ]; then
  python -m pip install -q -c "$LOCK" -e ".[test,plots,serve,onnx,adapters]"
else  # the newest releases, torch kept at the installed build (an upgrade would pull a CUDA build)
  TORCH_PIN="$(mktemp)"
  python -c "import torch; print('torch==' + torch.__version__)" > "$TORCH_PIN"
  python -m pip install -q --upgrade --upgrade-strategy eager -c "$TORCH_PIN" -e ".[test,plots,serve,onnx,adapters]"
  rm -f "$TORCH_PIN"
fi
python -c "import mtdnn, torch, transformers; print('mtdnn', mtdnn.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
