#!/usr/bin/env bash
# Stop the cluster started by scripts/slurm/up.sh: slurmd, slurmctld, slurmdbd,
# MariaDB, munged, in that order, each by its PID file. Idempotent; prints nothing
# when nothing runs. The state folder is kept (remove it yourself for a clean start).
# Env: SLURM_STATE_DIR (default /tmp/warmup-bench-slurm), as for up.sh.
set -uo pipefail

ST="${SLURM_STATE_DIR:-/tmp/warmup-bench-slurm}"

log() { printf '[slurm-down] %s\n' "$*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(id -u)" = 0 ] || { echo "[slurm-down] ERROR: must run as root" >&2; exit 1; }

pid_alive() {
    local pid
    [ -r "$1" ] || return 1
    pid=$(tr -dc '0-9' <"$1")
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
    echo "$pid"
}

# stop NAME PIDFILE: SIGTERM, wait up to 30 s, then SIGKILL.
stop() {
    local name=$1 file=$2 pid t
    t=$(now)
    pid=$(pid_alive "$file" "$name") || { rm -f "$file"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 60); do
        [ -d "/proc/$pid" ] || break
        sleep 0.5
    done
    if [ -d "/proc/$pid" ]; then
        kill -KILL "$pid" 2>/dev/null || true
        log "$name: killed (pid $pid) after $(since "$t")s"
    else
        log "$name: stopped (pid $pid, $(since "$t")s)"
    fi
    rm -f "$file"
}

# Cancel jobs still known to the controller so that no job step outlives slurmd.
if pid_alive "$ST/run/slurmctld.pid" slurmctld >/dev/null \
    && [ -n "$(squeue -h -o %F 2>/dev/null)" ]; then
    mapfile -t jobs < <(squeue -h -o %F 2>/dev/null | sort -u)
    scancel --full --quiet "${jobs[@]}" 2>/dev/null || true
    for _ in $(seq 20); do
        [ -z "$(squeue -h -t R,CG,S,CF -o %i 2>/dev/null)" ] && break
        sleep 0.5
    done
    log "jobs: cancelled"
fi

stop slurmd "$ST/run/slurmd.pid"
stop slurmctld "$ST/run/slurmctld.pid"
stop slurmdbd "$ST/run/slurmdbd.pid"
stop mariadbd "$ST/mysql/mariadbd.pid"
stop munged "$ST/munge/munged.pid"
exit 0
