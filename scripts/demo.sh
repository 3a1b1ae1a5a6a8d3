#!/usr/bin/env bash
# The main job: set up the environment, run the demo sweep (experiment=demo: 180 jobs, ~5-8 minutes on 2 CPU cores),
# print the summary table and the figure paths. Usage: bash scripts/demo.sh [extra Hydra overrides]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_MODE=${WANDB_MODE:-offline}  # the demo never needs the network
SWEEP="multirun/demo/$(date -u +%Y-%m-%d_%H-%M-%S)"
echo "[demo] sweep directory: $SWEEP"
start=$(date +%s)
# report=false: the report is printed below, once, after the sweep (the callback would print it too)
.venv/bin/python -m bench -m experiment=demo "hydra.sweep.dir=$SWEEP" report=false "$@"
echo "[demo] sweep finished in $(( $(date +%s) - start )) s"
.venv/bin/python -m bench.report "$SWEEP"
