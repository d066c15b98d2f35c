#!/usr/bin/env bash
# The test command behind `make test`: every tier, and a run that executes no test is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -q "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "run-tests: pytest collected no tests — that is a failure, not a pass" >&2
  exit 1
fi
exit $rc
