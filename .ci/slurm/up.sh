#!/usr/bin/env bash
# Install (Debian packages) and start a single-node SLURM on localhost for the `slurm` tests.
# Needs root and Debian's package archive; fails loudly otherwise. Idempotent: does nothing when
# the node is already idle. Stop it with .ci/slurm/down.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
marker="# hippo_dask CI"
fail() { echo "slurm-up: $*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
  fail "installing and starting SLURM needs root (apt-get, munged, slurmctld, slurmd). Run 'sudo make test', or run the tests without SLURM: 'make test-no-slurm'."
fi
if [ -e /etc/slurm/slurm.conf ] && ! grep -q "^$marker" /etc/slurm/slurm.conf; then
  fail "/etc/slurm/slurm.conf exists and was not written by hippo_dask's CI; refusing to replace a real SLURM configuration. Run the tests without SLURM: 'make test-no-slurm'."
fi

packages=(slurmctld slurmd slurm-client munge)
if ! dpkg-query -W -f='${Status}\n' "${packages[@]}" 2>/dev/null | grep -c "install ok installed" | grep -qx "${#packages[@]}"; then
  command -v apt-get >/dev/null || fail "apt-get not found: SLURM's Debian packages cannot be installed here."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${packages[@]}" >/tmp/hippo-slurm-apt.log 2>&1 || {
    apt-get update -q >>/tmp/hippo-slurm-apt.log 2>&1 &&
    apt-get install -y -q --no-install-recommends "${packages[@]}" >>/tmp/hippo-slurm-apt.log 2>&1
  } || { tail -20 /tmp/hippo-slurm-apt.log >&2; fail "apt-get install ${packages[*]} failed (log above, full log /tmp/hippo-slurm-apt.log)."; }
fi

if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
  echo "slurm-up: SLURM already up (node idle)"; exit 0
fi

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
{ echo "$marker"; cat "$here/slurm.conf"; } > /etc/slurm/slurm.conf

# munge: a key, then the daemon as the munge user (it refuses to run as root).
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
if ! munge -n </dev/null >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --force
  cp /run/munge/munged.pid /run/hippo-munged.pid   # down.sh stops only the munged started here
fi

# A daemon left over from a bad stop keeps the node DOWN: end it by its pid file first.
"$here/down.sh" --daemons-only >/dev/null 2>&1 || true
# Detached from make's output (setsid, own log files), or the caller's pipe never closes.
setsid slurmctld -D -i </dev/null >/var/log/slurm/slurmctld.out 2>&1 &
echo $! > /run/hippo-slurmctld.pid
setsid slurmd -D -N localhost </dev/null >/var/log/slurm/slurmd.out 2>&1 &
echo $! > /run/hippo-slurmd.pid

for _ in $(seq 1 600); do   # up to 60 s; about 10 s here (slurmctld settles first)
  if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
    echo "slurm-up: SLURM up: $(sinfo -h -o '%P %D %T %c CPUs %m MB')"; exit 0
  fi
  sleep 0.1
done
echo "--- sinfo ---" >&2; sinfo >&2 || true
echo "--- slurmctld log ---" >&2; tail -20 /var/log/slurm/slurmctld.log >&2 || true
echo "--- slurmd log ---" >&2; tail -20 /var/log/slurm/slurmd.log >&2 || true
fail "the SLURM node did not become idle within 60 s (logs above)."
