#!/usr/bin/env bash
# The warm-up mechanism study (conf/experiment/warmup_mechanism.yaml has the design), in resumable parts, one sweep folder.
# MLP without normalisation, 3 epochs (1,287 steps); LR = lr_ref x lr_mult; warm-up none or linear over 20/80/320 steps:
#   mlp_sgd_warm       sgd, lr 0.1-0.57 (6, sqrt(2) apart) x warm-up 20/80/320 x 5 seeds                   90 jobs
#   mlp_sgd_none       the same without warm-up                                                           30 jobs
#   mlp_adam_warm      adam, lr 0.004-0.512 (6) x warm-up 20/80/320 x 5 seeds                               90 jobs
#   mlp_adaptive_none  adam, gi_adam, radam without warm-up on the same grid x 5 seeds                      90 jobs
#   mlp_rmsprop_none   rmsprop at lr 0.001 and 0.008 without warm-up x 5 seeds                             10 jobs
#   mlp_rmsprop_warm   the same with an 80-step warm-up                                                     10 jobs
# BatchNorm ResNet, SGD, 2 epochs (858 steps), sharpness every 100 steps:
#   resnet_warm        lr 0.4/0.8/1.6 x warm-up 20/200 steps x 5 seeds                                      30 jobs
#   resnet_none        the same without warm-up                                                             15 jobs
# then python -m bench.report over the folder. The README of results/warmup_mechanism has the measured wall time.
# Usage: bash scripts/study_warmup_mechanism.sh [Hydra overrides for every part] (not optimizer, lr_mult, warmup,
# warmup.steps, task.model, task.norm or seed: the parts set those). SWEEP=DIR picks the folder (rerun to resume);
# PYTHON=... the interpreter.
STUDY=warmup_mechanism
source "$(dirname "$0")/study_lib.sh"  # set -euo pipefail, cd to the root, PY, DIR, WANDB_MODE, part(), start
NONE=(warmup=none warmup.steps=null)
ADAM_LR=(lr_mult=2,8,32,64,128,256)
RESNET=(task.model=resnet task.norm=batch optimizer=sgd train.epochs=2 lr_mult=4,8,16 diagnostics.sharpness.every=100 diagnostics.sharpness.iters=10 diagnostics.sharpness.batch=64)  # Hessian-vector products through convolutions are slow on this CPU
part mlp_sgd_warm "$@"
part mlp_sgd_none "${NONE[@]}" "$@"
part mlp_adam_warm optimizer=adam "${ADAM_LR[@]}" "$@"
part mlp_adaptive_none optimizer=adam,gi_adam,radam "${ADAM_LR[@]}" "${NONE[@]}" "$@"
part mlp_rmsprop_none optimizer=rmsprop lr_mult=0.5,4 "${NONE[@]}" "$@"
part mlp_rmsprop_warm optimizer=rmsprop lr_mult=0.5,4 warmup.steps=80 "$@"
part resnet_warm "${RESNET[@]}" warmup.steps=20,200 "$@"
part resnet_none "${RESNET[@]}" "${NONE[@]}" "$@"
echo "[warmup_mechanism] all parts finished in $(( $(date +%s) - start )) s"
"$PY" -m bench.report "$DIR"
