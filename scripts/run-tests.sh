#!/usr/bin/env bash
# The test command behind `make test`: lint and types, then every test tier.
# A run that executes no test is a failure, not a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check netdiag tests || exit 1
.venv/bin/mypy || exit 1
.venv/bin/python -m pytest -q --durations=20 "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "run-tests: pytest collected no tests — that is a failure, not a pass" >&2
  exit 1
fi
exit $rc
