#!/usr/bin/env bash
# Set everything up, then train MT-DNN on RTE, MRPC, STS-B, CoLA and SST-2 with the embedded
# MiniLM encoder (about 10 minutes on 2 CPU cores) and print each task's dev metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
# the data folder: $MTDNN_DATA_DIR, else ../shared/data beside the clone where it exists
# (mtdnn itself reads only --data-dir, $MTDNN_DATA_DIR and ./data)
if [ -z "${MTDNN_DATA_DIR:-}" ] && [ -d ../shared/data ]; then export MTDNN_DATA_DIR="$(cd ../shared/data && pwd)"; fi
scripts/setup.sh
exec .venv/bin/mtdnn train --config configs/demo.yaml "$@"
