#!/usr/bin/env bash
# The lr_batch_fashion study (conf/experiment/lr_batch_fashion.yaml has the design), in resumable parts:
#   coarse/epochs      sgd, adam x 8 batches x 9 LRs (factor 2) x seed 0, 4 epochs                      144 jobs
#   coarse/steps       the same at 400 steps                                                           144 jobs
#   coarse/sde         adam with batch=sde (Malladi et al.'s betas and eps), 4 epochs                   72 jobs
#   refined/<part>     per optimizer x regime: 5 LRs sqrt(2) apart around each batch's coarse best x 3 seeds 120 jobs each (600)
#   noise/<optimizer>  the gradient noise scale B_simple (diagnostics=noise_scale, every 25 steps) at batch 256, 4 epochs,
#                      at the refined pass's best grid LR there (sgd 0.1, adam 0.004) x 3 seeds                      6 jobs
# then one report per pass: python -m bench.report SWEEP/coarse, SWEEP/refined and SWEEP/noise.
# Usage: bash scripts/study_lr_batch_fashion.sh [coarse|refined|noise|all] [Hydra overrides for every part]
# SWEEP=DIR picks the folder (rerun with the same SWEEP to resume: finished jobs are skipped); PYTHON=... the interpreter.
STUDY=lr_batch_fashion
PARTS=(coarse refined noise)
source "$(dirname "$0")/study_lib.sh"  # set -euo pipefail, cd to the root, PY, DIR, WANDB_MODE, part(), start
STEPS=(train.epochs=null train.steps=400)
if [ "$WHAT" = coarse ] || [ "$WHAT" = all ]; then
  part coarse/epochs optimizer=sgd,adam "$@"
  part coarse/steps optimizer=sgd,adam "${STEPS[@]}" "$@"
  part coarse/sde optimizer=adam batch=sde "$@"
  "$PY" -m bench.report "$DIR/coarse"
fi
if [ "$WHAT" = refined ] || [ "$WHAT" = all ]; then
  REFINED=(lr_mult=0.5,0.7071,1,1.4142,2 seed=0,1,2)
  part refined/sgd_epochs optimizer=sgd "${REFINED[@]}" "$("$PY" scripts/lr_centres.py "$DIR/coarse/epochs" --optimizer sgd)" "$@"
  part refined/adam_epochs optimizer=adam "${REFINED[@]}" "$("$PY" scripts/lr_centres.py "$DIR/coarse/epochs" --optimizer adam)" "$@"
  part refined/sgd_steps optimizer=sgd "${REFINED[@]}" "${STEPS[@]}" "$("$PY" scripts/lr_centres.py "$DIR/coarse/steps" --optimizer sgd)" "$@"
  part refined/adam_steps optimizer=adam "${REFINED[@]}" "${STEPS[@]}" "$("$PY" scripts/lr_centres.py "$DIR/coarse/steps" --optimizer adam)" "$@"
  part refined/sde optimizer=adam batch=sde "${REFINED[@]}" "$("$PY" scripts/lr_centres.py "$DIR/coarse/sde" --optimizer adam)" "$@"
  "$PY" -m bench.report "$DIR/refined"
fi
if [ "$WHAT" = noise ] || [ "$WHAT" = all ]; then
  NOISE=(batch.size=256 lr_mult=1 seed=0,1,2 diagnostics=noise_scale diagnostics.noise_scale.every=25)
  part noise/sgd optimizer=sgd "lr_centre={256:0.5}" "${NOISE[@]}" "$@"    # 0.2 x 0.5 = 0.1
  part noise/adam optimizer=adam "lr_centre={256:2}" "${NOISE[@]}" "$@"    # 0.002 x 2 = 0.004
  "$PY" -m bench.report "$DIR/noise"
fi
echo "[lr_batch_fashion] finished in $(( $(date +%s) - start )) s"
