#!/usr/bin/env bash
# The GAN warm-up study (conf/experiment/gan_warmup.yaml has the design), in resumable parts, two studies:
# Adam (beta1 = 0.5), no decay, batch 64, 2000 steps, evaluated every 100 steps; every metric is the mean over the
# last 5 evaluations (train.average_last=5) and each evaluation also scores D on held-out real and generated samples.
#   ring (task=gan_ring), 10 seeds, LR 3e-4 / 1e-3 / 3e-3 / 1e-2 / 3e-2:
#     ring/warmup   linear warm-up on G, D or both x over 2 / 10 / 30 % of training                   450 jobs
#     ring/none     no warm-up (the baseline every arm is paired with)                                 50 jobs
#     ring/ttur     no warm-up, D at 2x and 4x G's LR (two time scales, Heusel et al. 2017)          100 jobs
#   dcgan (task=dcgan_digits), 8 seeds, LR 2e-4 / 5.5e-4 / 1.5e-3 / 4e-3 (x2.7 apart), FD against its real-vs-real floor:
#     dcgan/warmup  linear warm-up over 10 % on G, D or both                                            96 jobs
#     dcgan/none    no warm-up                                                                          32 jobs
#     dcgan/ttur    no warm-up, D at 2x and 4x G's LR                                                   64 jobs
#   (8 seeds, not 5, and 4 LRs, not 5: with 5 seeds the exact sign-flip p is at least 2/2^5 = 0.0625, so no paired
#   comparison could reject; with 8 it can go to 0.008, below 0.05 after Holm over the 5 arms)
# then python -m bench.report over SWEEP/ring and SWEEP/dcgan.
# Cost, measured with pilots of these settings (2 joblib jobs of 1 thread; bash `time` over the sweep) on this 2-core
# machine while other studies kept its load average at 5-6:
#   ring   20 jobs in 270 s, 180 CPU-s: ~8.3 CPU-s per job after ~15 s of start-up (each job's own wall 17-28 s under that load)
#   dcgan   6 jobs in 271 s, 204 CPU-s: ~31 CPU-s per job (each job's own wall 62-99 s under that load)
# On 2 free cores (2 jobs at a time, ~1 CPU-s per s each): ring 600 jobs ~45 min, dcgan 192 jobs ~50 min, each well
# under 2 h. Under the pilots' load (a third of the machine) they took 13.5 s and 45 s per job of sweep time, i.e. ring
# ~2.3 h and dcgan ~2.4 h: run each study on a machine without other sweeps, or expect that.
# Usage: bash scripts/study_gan_warmup.sh [ring|dcgan|all] [Hydra overrides for every part] (not task, warmup,
# warmup.fraction, task.warmup_on, task.lr_mult.discriminator, optimizer.lr or seed: the parts set those).
# SWEEP=DIR picks the folder (rerun with the same SWEEP to resume: finished jobs are skipped); PYTHON=... the interpreter.
STUDY=gan_warmup
PARTS=(ring dcgan)
source "$(dirname "$0")/study_lib.sh"  # set -euo pipefail, cd to the root, PY, DIR, WANDB_MODE, part(), start
NONE=(warmup=none warmup.fraction=null task.warmup_on=both)   # the warm-up target means nothing without a warm-up
DCGAN=(task=dcgan_digits optimizer.lr=2e-4,5.5e-4,1.5e-3,4e-3 seed=0,1,2,3,4,5,6,7)
if [ "$WHAT" = ring ] || [ "$WHAT" = all ]; then
  part ring/warmup "$@"
  part ring/none "${NONE[@]}" "$@"
  part ring/ttur "${NONE[@]}" task.lr_mult.discriminator=2,4 "$@"
  "$PY" -m bench.report "$DIR/ring"
fi
if [ "$WHAT" = dcgan ] || [ "$WHAT" = all ]; then
  part dcgan/warmup "${DCGAN[@]}" warmup.fraction=0.1 "$@"
  part dcgan/none "${DCGAN[@]}" "${NONE[@]}" "$@"
  part dcgan/ttur "${DCGAN[@]}" "${NONE[@]}" task.lr_mult.discriminator=2,4 "$@"
  "$PY" -m bench.report "$DIR/dcgan"
fi
echo "[gan_warmup] finished in $(( $(date +%s) - start )) s"
