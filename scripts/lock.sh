#!/usr/bin/env bash
# Refresh requirements/lock.txt: the newest releases that pyproject.toml's ranges (all extras) allow
# with torch 2.13.0, resolved by pip-tools' pip-compile. torch itself is left out of the lock (the
# set-up installs it first, CPU or CUDA build). After refreshing: scripts/setup.sh, then record the
# golden run again (.venv/bin/python tests/golden/record.py) and run scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-tools/bin/pip-compile ]; then
  "$PY" -m venv .venv-tools
  .venv-tools/bin/python -m pip install -q pip-tools
fi
CUSTOM_COMPILE_COMMAND="scripts/lock.sh" .venv-tools/bin/pip-compile --quiet --upgrade --all-extras \
  --strip-extras --unsafe-package torch --no-emit-index-url --no-emit-find-links \
  --output-file requirements/lock.txt pyproject.toml requirements/torch.in
echo "wrote requirements/lock.txt"
