#!/usr/bin/env bash
# The transformer_warmup study (conf/experiment/transformer_warmup.yaml has the design), in resumable parts, as two
# studies with a report each. Every run: 6 layers x width 32, batch 16 x 64 characters, 1,000 steps (2.75 epochs), Adam
# betas (0.9, 0.99) unless named, linear decay to 0; LR = lr_ref[task] x lr_mult, lr_mult a factor 2 apart; 5 seeds.
# lm (SWEEP/lm): Post-LN (lr 0.002-0.032) and Pre-LN (0.004-0.064) LMs, lr_mult 0.25,0.5,1,2,4:
#   lm_linear     adam, linear warm-up over 2 / 5 / 10 % x 2 tasks x 5 LRs x 5 seeds                 150 jobs
#   lm_none       adam and radam without warm-up x 2 tasks x 5 LRs x 5 seeds                         100 jobs
#   lm_untuned    adam, untuned linear warm-up (2 / (1 - 0.99) = 200 steps) x 2 tasks x 5 x 5          50 jobs
#   lm_matched    adam, mean-matched control of the 10 % warm-up (flat LR) x 2 tasks x 5 x 5          50 jobs
#   lm_edge_linear  adam, linear warm-up over 2 %, Post-LN, one LR below the grid (lr_mult 0.125) x 5 seeds   5 jobs
#   lm_edge_none    adam without warm-up, Post-LN and Pre-LN, lr_mult 0.125 x 5 seeds                     10 jobs
#                 (the two edge parts: the arms whose best LR was the grid's smallest in the published run)
#   365 jobs, ~1.7 h (cost below).
# bert (SWEEP/bert): bert_mlm (Post-LN), the same arms on 4 LRs (lr 0.001-0.008, lr_mult 0.5,1,2,4), plus RMSProp
# (alpha 0.99, no betas) without and with the 10 % warm-up on 5 LRs (lr 0.00025-0.004, lr_ref.bert_mlm=0.001):
#   bert_linear   adam, linear warm-up over 2 / 5 / 10 % x 4 LRs x 5 seeds                             60 jobs
#   bert_none     adam and radam without warm-up x 4 LRs x 5 seeds                                     40 jobs
#   bert_untuned  adam, untuned linear warm-up (200 steps) x 4 x 5                                     20 jobs
#   bert_matched  adam, mean-matched control of the 10 % warm-up x 4 x 5                               20 jobs
#   bert_rmsprop_none     rmsprop without warm-up x 5 LRs x 5 seeds                                    25 jobs
#   bert_rmsprop_linear   rmsprop, linear warm-up over 10 % x 5 LRs x 5 seeds                          25 jobs
#   190 jobs, ~55 min.
# confirm (SWEEP/confirm, not part of all): the headline comparison on fresh seeds 5-14, its cells fixed in advance
# from the lm and bert results (the 10 % warm-up and no warm-up, each at its best LR there: Post-LN 0.008 / 0.004,
# Pre-LN 0.016 / 0.004, BERT 0.004 / 0.002), so that the LR is not selected on the data it is tested on; with 10 pairs
# the exact sign-flip test can reject (smallest p 2/1024):
#   linear        adam, linear warm-up over 10 %, Post-LN and Pre-LN at lr_mult 1 x 10 seeds                20 jobs
#   none_postln   adam without warm-up, Post-LN at lr_mult 0.5 x 10 seeds                                    10 jobs
#   none_preln    adam without warm-up, Pre-LN at lr_mult 0.25 x 10 seeds                                    10 jobs
#   bert_linear   adam, linear warm-up over 10 %, BERT at lr_mult 2 x 10 seeds                               10 jobs
#   bert_none     adam without warm-up, BERT at lr_mult 1 x 10 seeds                                         10 jobs
#   60 jobs, ~18 min.
# Cost, measured as the CPU time (user + sys) of 2-job joblib sweeps of these parts at hardware.threads=1, on this
# 2-core VM while other studies shared it: an LM run 31-32 s, a BERT run 34 s, plus ~17 s per part (launcher, worker
# start-up); a run's wall time equals its CPU time when its job has a core to itself. So lm = 365 x 32 s / 2 jobs
# + 6 parts ~ 5,950 s (1.7 h) and bert = 190 x 34 s / 2 + 6 parts ~ 3,300 s (55 min) on 2 otherwise idle cores.
# Pilots (seed 0, 1,000 steps): see the preset's lr_ref comments for where each arm trains and where it stalls.
# Then python -m bench.report over each study's folder.
# Usage: bash scripts/study_transformer_warmup.sh [lm|bert|all|confirm] [Hydra overrides for every part] (not task, optimizer,
# warmup, warmup.fraction, lr_mult or seed: the parts set those). SWEEP=DIR picks the folder (rerun with the same
# SWEEP to resume: finished jobs are skipped); PYTHON=... the interpreter.
STUDY=transformer_warmup
PARTS=(lm bert confirm)
source "$(dirname "$0")/study_lib.sh"  # set -euo pipefail, cd to the root, PY, DIR, WANDB_MODE, part(), start
NO_LENGTH=(warmup.fraction=null)
BERT=(task=bert_mlm lr_mult=0.5,1,2,4)
CONFIRM=(seed=5,6,7,8,9,10,11,12,13,14)
RMSPROP=(task=bert_mlm optimizer=rmsprop '~optimizer.betas' lr_ref.bert_mlm=0.001 lr_mult=0.25,0.5,1,2,4)
if [ "$WHAT" = lm ] || [ "$WHAT" = all ]; then
  part lm/lm_linear "$@"
  part lm/lm_none optimizer=adam,radam warmup=none "${NO_LENGTH[@]}" "$@"
  part lm/lm_untuned warmup=untuned_linear "${NO_LENGTH[@]}" "$@"
  part lm/lm_matched warmup=mean_matched "${NO_LENGTH[@]}" "$@"
  part lm/lm_edge_linear task=lm_postln warmup.fraction=0.02 lr_mult=0.125 "$@"
  part lm/lm_edge_none task=lm_postln,lm_preln warmup=none "${NO_LENGTH[@]}" lr_mult=0.125 "$@"
  "$PY" -m bench.report "$DIR/lm"
fi
if [ "$WHAT" = bert ] || [ "$WHAT" = all ]; then
  part bert/bert_linear "${BERT[@]}" "$@"
  part bert/bert_none "${BERT[@]}" optimizer=adam,radam warmup=none "${NO_LENGTH[@]}" "$@"
  part bert/bert_untuned "${BERT[@]}" warmup=untuned_linear "${NO_LENGTH[@]}" "$@"
  part bert/bert_matched "${BERT[@]}" warmup=mean_matched "${NO_LENGTH[@]}" "$@"
  part bert/bert_rmsprop_none "${RMSPROP[@]}" warmup=none "${NO_LENGTH[@]}" "$@"
  part bert/bert_rmsprop_linear "${RMSPROP[@]}" warmup.fraction=0.1 "$@"
  "$PY" -m bench.report "$DIR/bert"
fi
if [ "$WHAT" = confirm ]; then
  part confirm/linear task=lm_postln,lm_preln warmup.fraction=0.1 lr_mult=1 "${CONFIRM[@]}" "$@"
  part confirm/none_postln task=lm_postln warmup=none "${NO_LENGTH[@]}" lr_mult=0.5 "${CONFIRM[@]}" "$@"
  part confirm/none_preln task=lm_preln warmup=none "${NO_LENGTH[@]}" lr_mult=0.25 "${CONFIRM[@]}" "$@"
  part confirm/bert_linear task=bert_mlm warmup.fraction=0.1 lr_mult=2 "${CONFIRM[@]}" "$@"
  part confirm/bert_none task=bert_mlm warmup=none "${NO_LENGTH[@]}" lr_mult=1 "${CONFIRM[@]}" "$@"
  "$PY" -m bench.report "$DIR/confirm"
fi
echo "[transformer_warmup] finished in $(( $(date +%s) - start )) s"
