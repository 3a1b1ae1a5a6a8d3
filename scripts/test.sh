#!/usr/bin/env bash
# The test command: set up .venv, start a local single-node Slurm when this is a root Debian
# machine (for the cluster tests), run the whole test suite, stop Slurm again.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
slurm=""
if [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] && [ -f scripts/slurm/up.sh ]; then
  if bash scripts/slurm/up.sh; then slurm=1; else echo "[test] local Slurm did not start: the Slurm tests will say so"; fi
fi
export WANDB_MODE=offline
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
[ -n "$slurm" ] && bash scripts/slurm/down.sh
exit $rc
