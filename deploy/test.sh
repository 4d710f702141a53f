#!/usr/bin/env bash
# The whole test suite: set-up, lint (ruff), types (mypy, strict on the pure core), then pytest over
# unit, integration (real ZooKeeper and sshd) and lab (namespaces, real kernel, qemu) tests.
# Extra arguments go to pytest, e.g. `deploy/test.sh tests/unit -k planner`.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
bash deploy/setup.sh
echo "== ruff"
.venv/bin/ruff check controller node_hook tests deploy
echo "== mypy"
.venv/bin/mypy --strict controller/core
.venv/bin/mypy controller node_hook
echo "== pytest"
set +e
.venv/bin/python -m pytest -ra --durations=15 "${@:-tests}"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit $rc
