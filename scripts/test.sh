#!/usr/bin/env bash
# Set everything up (scripts/setup.sh: the locked versions), then run the test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec "${MTDNN_VENV:-.venv}/bin/python" -m pytest tests -q "$@"
