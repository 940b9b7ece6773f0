#!/usr/bin/env bash
# Set up a virtual environment in .venv with mtdnn and everything it needs (idempotent).
# torch is pinned first: the CPU wheel of torch 2.13.0 (a looser requirement pulls a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${MTDNN_TORCH_VERSION:-2.13.0}"
python -m pip install -q -e ".[test,plots,serve,onnx,adapters]"
python -c "import mtdnn, torch, transformers; print('mtdnn', mtdnn.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
