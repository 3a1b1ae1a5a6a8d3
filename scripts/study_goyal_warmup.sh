#!/usr/bin/env bash
# The explanation test of conf/experiment/goyal_warmup.yaml (its header has the design): both parts into one sweep
# directory, then one report over it. 90 jobs, about 21 minutes on 2 free CPU cores.
# Usage: bash scripts/study_goyal_warmup.sh [Hydra overrides for both parts, e.g. seed=0]
# (not batch.size, warmup or warmup.steps: the parts set those). SWEEP=DIR picks the folder; rerunning into the same
# folder skips the finished jobs. PYTHON=... picks the interpreter (default .venv/bin/python, from scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SWEEP=${SWEEP:-multirun/goyal_warmup/$(date -u +%Y-%m-%d_%H-%M-%S)}
echo "[study] sweep directory: $SWEEP"
start=$(date +%s)
# part 1, the preset's grid: linear warm-up of 10 / 50 / 200 steps at k = 4 and 16, with and without BatchNorm (60 jobs)
"$PY" -m bench -m experiment=goyal_warmup "hydra.sweep.dir=$SWEEP/warmup" report=false "$@"
# part 2, no warm-up at k = 1, 4, 16 (30 jobs); warmup.steps=null replaces the preset's sweep of lengths,
# which would run every no-warm-up job three times over
"$PY" -m bench -m experiment=goyal_warmup warmup=none warmup.steps=null batch.size=16,64,256 "hydra.sweep.dir=$SWEEP/no_warmup" report=false "$@"
echo "[study] both parts finished in $(( $(date +%s) - start )) s"
"$PY" -m bench.report "$SWEEP"
