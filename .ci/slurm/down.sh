#!/usr/bin/env bash
# Stop what .ci/slurm/up.sh started: cancel the jobs, then slurmd, slurmctld and munged, each by
# the pid it recorded. slurmd in a register back-off ignores SIGTERM, so it gets SIGKILL after 15 s.
# With --daemons-only: only the SLURM daemons, jobs and munged untouched (used by up.sh).
set -uo pipefail

stop() {  # stop PIDFILE NAME: SIGTERM, wait up to 15 s, then SIGKILL
  local file=$1 name=$2 pid
  [ -s "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null && grep -q "$name" "/proc/$pid/comm" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "slurm-down: $name ($pid) ignored SIGTERM for 15 s; SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null
    fi
  fi
  rm -f "$file"
}

if ! grep -q "^# hippo_dask CI" /etc/slurm/slurm.conf 2>/dev/null; then
  exit 0  # not the SLURM up.sh set up: leave it alone
fi
if [ "${1:-}" != "--daemons-only" ] && command -v scancel >/dev/null; then
  scancel --user=root 2>/dev/null || true
  for _ in $(seq 1 100); do   # up to 10 s for the jobs to end
    [ -z "$(squeue -h -u root 2>/dev/null)" ] && break
    sleep 0.1
  done
fi
stop /run/hippo-slurmd.pid slurmd
stop /run/hippo-slurmctld.pid slurmctld
if [ "${1:-}" != "--daemons-only" ]; then
  stop /run/hippo-munged.pid munged
  echo "slurm-down: SLURM stopped"
fi
exit 0
