#!/usr/bin/env bash
# The suite against the newest releases that pyproject.toml's ranges allow (not the lock), in its own
# environment (.venv-latest): run it before refreshing the lock to see what an upstream release
# changes. It is not part of CI. The golden test compares to its tolerance there and says why.
set -euo pipefail
cd "$(dirname "$0")/.."
export MTDNN_VENV=.venv-latest MTDNN_LOCK=
scripts/setup.sh
echo "versions that differ from requirements/lock.txt:"
.venv-latest/bin/python -m pip freeze --exclude-editable | tr 'A-Z_' 'a-z-' | sort \
  | comm -13 <(grep -E '^[A-Za-z0-9._-]+==' requirements/lock.txt | tr 'A-Z_' 'a-z-' | sort) - | grep -v '^torch==' || true
exec scripts/test.sh "$@"
