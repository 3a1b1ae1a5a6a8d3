#!/usr/bin/env bash
# The goyal_fashion study (conf/experiment/goyal_fashion.yaml) in four resumable parts, all in one sweep folder:
#   tune      batch 32, no warm-up, LR 0.0125..0.4 (factor 2) x task.norm ghost/none x 3 seeds: 36 jobs, and
#             tune/low, LR 0.003125 and 0.00625 (without norm the optimum was on the first grid's low edge): 12 jobs
#   baseline  k = 1 (batch 32) at the tuned eta0 of each norm, 5 seeds: 10 jobs
#   large     k = 2..32 x warm-up none/constant/linear x 5 seeds, ghost BN, LR k x eta0: 75 jobs
#   nonorm    k = 8 and 32 x the three warm-ups x 5 seeds without normalisation, LR k x eta0(none): 30 jobs
# then scripts/goyal_table.py (Goyal's Table 1 shape) and python -m bench.report over the whole folder.
# Usage: bash scripts/study_goyal_fashion.sh [Hydra overrides for every part] (not batch.size, warmup, optimizer.lr,
# task.norm or seed: the parts set those). SWEEP=DIR picks the folder; run it again with the same SWEEP to resume:
# finished jobs are skipped (same config = same record). PYTHON=... picks the interpreter (default .venv/bin/python).
STUDY=goyal_fashion
source "$(dirname "$0")/study_lib.sh"  # set -euo pipefail, cd to the root, PY, DIR, WANDB_MODE, part(), start
part tune batch.size=32 warmup=none optimizer.lr=0.0125,0.025,0.05,0.1,0.2,0.4 task.norm=ghost,none seed=0,1,2 "$@"
part tune/low batch.size=32 warmup=none optimizer.lr=0.003125,0.00625 task.norm=ghost,none seed=0,1,2 "$@"
ETA_GHOST=$("$PY" scripts/goyal_table.py pick "$DIR/tune" --norm ghost)
ETA_NONE=$("$PY" scripts/goyal_table.py pick "$DIR/tune" --norm none)
echo "[goyal_fashion] eta0 (best mean validation accuracy at batch 32): ghost BN $ETA_GHOST, no norm $ETA_NONE"
part baseline batch.size=32 warmup=none "optimizer.lr=$ETA_GHOST" task.norm=ghost "$@"
part baseline_none batch.size=32 warmup=none "optimizer.lr=$ETA_NONE" task.norm=none "$@"
part large "optimizer.lr=$ETA_GHOST" "$@"
part nonorm batch.size=256,1024 "optimizer.lr=$ETA_NONE" task.norm=none "$@"
echo "[goyal_fashion] all parts finished in $(( $(date +%s) - start )) s"
"$PY" scripts/goyal_table.py table "$DIR" --out "$DIR/report"
"$PY" -m bench.report "$DIR" --out "$DIR/report"
