# Shared start of the scripts/study_*.sh scripts; source it after setting STUDY (the experiment preset's name):
#   STUDY=gan_warmup; source "$(dirname "$0")/study_lib.sh"
# It stops on the first error, moves to the repository root, and sets
#   PY     the interpreter: $PYTHON, default .venv/bin/python (scripts/setup.sh makes it)
#   DIR    the sweep folder: $SWEEP, default multirun/$STUDY/<UTC time>; rerunning into it skips finished jobs
#   start  the start time, for the closing "finished in N s" line
# and exports WANDB_MODE=offline unless set. A script with parts sets PARTS=(name ...) before sourcing: the first
# argument then picks one of them or all (the default) into WHAT, and is shifted off; any other word stops the script
# with one error line naming the allowed ones (exit 2) before anything runs.
# part NAME OVERRIDES... runs one resumable part of the study:
#   python -m bench -m experiment=$STUDY hydra.sweep.dir=$DIR/NAME report=false OVERRIDES...
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DIR=${SWEEP:-multirun/$STUDY/$(date -u +%Y-%m-%d_%H-%M-%S)}
export WANDB_MODE=${WANDB_MODE:-offline}
if [ -n "${PARTS+x}" ]; then
  WHAT=${1:-all}
  if [[ " ${PARTS[*]} all " != *" $WHAT "* ]]; then
    echo "error: unknown part '$WHAT' of $STUDY; allowed: ${PARTS[*]} all" >&2
    exit 2
  fi
  shift $(( $# > 0 ? 1 : 0 ))
fi
echo "[$STUDY] sweep directory: $DIR"
part() { local name=$1; shift; echo "[$STUDY] part $name: $*"; "$PY" -m bench -m "experiment=$STUDY" "hydra.sweep.dir=$DIR/$name" report=false "$@"; }
start=$(date +%s)
