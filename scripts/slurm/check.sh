#!/usr/bin/env bash
# Smoke test of the cluster from scripts/slurm/up.sh.
#  1. `sbatch --wrap hostname` in partition debug must end COMPLETED in sacct.
#  2. (skipped with --quick) a requeueable batch job is sent USR2 with scancel, the
#     way a preemption reaches submitit; its trap requeues it, and the second run
#     must finish COMPLETED. Prints how long the requeue took.
# Exits non-zero on any failure.
set -euo pipefail

PARTITION=debug
QUICK=
[ "${1:-}" = "--quick" ] && QUICK=1

log() { printf '[slurm-check] %s\n' "$*"; }
fail() { printf '[slurm-check] FAIL: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

command -v sbatch >/dev/null || fail "sbatch not found: run scripts/slurm/up.sh first"
scontrol ping 2>/dev/null | grep -q 'is UP' || fail "slurmctld is not up: run scripts/slurm/up.sh"

WORK=$(mktemp -d /tmp/warmup-bench-slurm-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# acct_state JOBID: the job's state as sacct reports it (last allocation).
acct_state() { sacct -n -X -P -j "$1" -o State 2>/dev/null | tail -n 1 | awk '{print $1}'; }
job_state() { squeue -h -j "$1" -o %T 2>/dev/null | head -n 1; }

# wait_state JOBID WANT SECONDS: wait until sacct says WANT; fail early on an
# end state that is not WANT.
wait_state() {
    local id=$1 want=$2 limit=$3 t0 s
    t0=$(date +%s)
    while :; do
        s=$(acct_state "$id")
        [ "$s" = "$want" ] && return 0
        case "$s" in
            FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE)
                [ -z "$(job_state "$id")" ] && fail "job $id ended $s, wanted $want" ;;
        esac
        [ $(($(date +%s) - t0)) -lt "$limit" ] \
            || fail "job $id not $want after ${limit}s (sacct: '${s:-none}', squeue: '$(job_state "$id")')"
        sleep 0.5
    done
}

# ---------------------------------------------------------------- 1. sbatch + sacct
t=$(now)
id=$(sbatch --parsable -p "$PARTITION" -o "$WORK/hostname-%j.out" --wrap hostname) \
    || fail "sbatch refused the job"
id=${id%%;*}
wait_state "$id" COMPLETED 120
out=$(cat "$WORK/hostname-$id.out" 2>/dev/null || true)
[ -n "$out" ] || fail "job $id wrote no output"
log "sbatch --wrap hostname: job $id COMPLETED in sacct, printed '$out' ($(since "$t")s)"

[ -n "$QUICK" ] && { log "ok (quick)"; exit 0; }

# ---------------------------------------------------------------- 2. USR2 -> requeue
cat >"$WORK/requeue.sh" <<'EOF'
#!/bin/bash
if [ "${SLURM_RESTART_COUNT:-0}" -ge 1 ]; then
    echo "run ${SLURM_RESTART_COUNT}: done"
    exit 0
fi
requeue() { echo "got USR2"; scontrol requeue "$SLURM_JOB_ID"; exit 0; }
trap requeue USR2
echo "run 0: sleeping"
sleep 120 &
wait
echo "run 0: not signalled"
exit 1
EOF
t=$(now)
id=$(sbatch --parsable -p "$PARTITION" --requeue --open-mode=append \
    -o "$WORK/requeue-%j.out" "$WORK/requeue.sh") || fail "sbatch refused the requeue job"
id=${id%%;*}
t0=$(date +%s)
until grep -q 'run 0: sleeping' "$WORK/requeue-$id.out" 2>/dev/null; do
    [ $(($(date +%s) - t0)) -lt 60 ] || fail "requeue job $id did not start (squeue: '$(job_state "$id")')"
    sleep 0.5
done
ts=$(now)
scancel --batch --signal=USR2 "$id" || fail "scancel --signal=USR2 $id failed"
# Wait for the second run to start, then to finish.
t0=$(date +%s)
until [ "$(scontrol show job "$id" 2>/dev/null | grep -o 'Restarts=[0-9]*' | cut -d= -f2)" -ge 1 ] 2>/dev/null \
    && [ "$(job_state "$id")" = RUNNING ] || grep -q 'done' "$WORK/requeue-$id.out" 2>/dev/null; do
    [ $(($(date +%s) - t0)) -lt 180 ] \
        || fail "job $id not restarted 180s after USR2 (squeue: '$(job_state "$id")')"
    sleep 0.5
done
requeue_s=$(since "$ts")
wait_state "$id" COMPLETED 120
grep -q 'run 1: done' "$WORK/requeue-$id.out" || fail "job $id did not rerun: $(cat "$WORK/requeue-$id.out")"
log "scancel --signal=USR2: job $id requeued, restarted ${requeue_s}s after the signal, COMPLETED ($(since "$t")s)"
log "ok"
