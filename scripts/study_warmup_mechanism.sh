#!/usr/bin/env bash
# The warm-up mechanism study (conf/experiment/warmup_mechanism.yaml has the design), in resumable parts, one sweep folder:
#   mlp_warm          MLP without norm: sgd, adam x 6 LRs x warm-up 20/80/320 steps x 5 seeds             180 jobs
#   mlp_none          MLP without norm, no warm-up: sgd, adam, rmsprop, gi_adam, radam x 6 LRs x 5 seeds   150 jobs
#   mlp_rmsprop_warm  MLP without norm: rmsprop x 6 LRs x warm-up 80 steps x 5 seeds                        30 jobs
#   resnet_warm       BatchNorm ResNet, sgd, 2 epochs: 5 LRs (0.1-1.6) x warm-up 20/200 steps x 5 seeds      50 jobs
#   resnet_none       the same without warm-up                                                              25 jobs
# then python -m bench.report over the folder. Not yet run: its cost on this machine is to be measured (estimate from
# the throughput in docs/vision.md: about 1 h on 2 cores).
# Usage: bash scripts/study_warmup_mechanism.sh [Hydra overrides for every part] (not optimizer, lr_mult, warmup,
# warmup.steps, task.model, task.norm or seed: the parts set those). SWEEP=DIR picks the folder (rerun to resume);
# PYTHON=... the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DIR=${SWEEP:-multirun/warmup_mechanism/$(date -u +%Y-%m-%d_%H-%M-%S)}
export WANDB_MODE=${WANDB_MODE:-offline}
echo "[warmup_mechanism] sweep directory: $DIR"
part() { local name=$1; shift; echo "[warmup_mechanism] part $name: $*"; "$PY" -m bench -m experiment=warmup_mechanism "hydra.sweep.dir=$DIR/$name" report=false "$@"; }
NONE=(warmup=none warmup.steps=null)
RESNET=(task.model=resnet task.norm=batch optimizer=sgd train.epochs=2 lr_mult=1,2,4,8,16 diagnostics.sharpness.every=200 diagnostics.sharpness.iters=8 diagnostics.sharpness.batch=64)  # Hessian-vector products through convolutions are slow on this CPU
start=$(date +%s)
part mlp_warm "$@"
part mlp_none optimizer=sgd,adam,rmsprop,gi_adam,radam "${NONE[@]}" "$@"
part mlp_rmsprop_warm optimizer=rmsprop warmup.steps=80 "$@"
part resnet_warm "${RESNET[@]}" warmup.steps=20,200 "$@"
part resnet_none "${RESNET[@]}" "${NONE[@]}" "$@"
echo "[warmup_mechanism] all parts finished in $(( $(date +%s) - start )) s"
"$PY" -m bench.report "$DIR"
