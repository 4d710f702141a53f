#!/usr/bin/env bash
# The demo: installs what it needs (deploy/setup.sh), then builds a 4-host namespace cluster with a local
# ZooKeeper, real sshd and kernel rules, fails two hosts, heals them and tears everything down.
# Options go to deploy/lab/demo.py (e.g. --backend xt_cluster, --keep).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
bash deploy/setup.sh
exec .venv/bin/python deploy/lab/demo.py "$@"
