#!/usr/bin/env bash
# Set everything up (scripts/setup.sh: the locked versions), then run the test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
# the data folder: $MTDNN_DATA_DIR, else ../shared/data beside the clone where it exists
# (mtdnn itself reads only --data-dir, $MTDNN_DATA_DIR and ./data)
if [ -z "${MTDNN_DATA_DIR:-}" ] && [ -d ../shared/data ]; then export MTDNN_DATA_DIR="$(cd ../shared/data && pwd)"; fi
scripts/setup.sh
# transformers 4.x beside the environment, for the one test of pipeline("question-answering"),
# which transformers 5 removed (requirements/qa-pipeline.txt); MTDNN_QA_PIPELINE_PATH= skips it
QA_PIPELINE=.venv-qa-pipeline
if [ -z "${MTDNN_QA_PIPELINE_PATH+set}" ]; then
  if [ ! -f "$QA_PIPELINE/.complete" ]; then
    rm -rf "$QA_PIPELINE"
    "${MTDNN_VENV:-.venv}/bin/python" -m pip install -q --no-deps --target "$QA_PIPELINE" -r requirements/qa-pipeline.txt
    touch "$QA_PIPELINE/.complete"
  fi
  export MTDNN_QA_PIPELINE_PATH="$PWD/$QA_PIPELINE"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec "${MTDNN_VENV:-.venv}/bin/python" -m pytest tests -q "$@"
