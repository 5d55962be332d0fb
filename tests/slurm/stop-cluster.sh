#!/usr/bin/env bash
# Stop the one-node SLURM started by start-cluster.sh (munge is left running).
STATE=${SLURM_STATE_DIR:-/var/tmp/linecube-slurm}
for d in slurmd slurmctld; do
  if [ -f "$STATE/$d.pid" ]; then kill "$(cat "$STATE/$d.pid")" 2>/dev/null || true; fi
  pkill -x "$d" 2>/dev/null || true
done
sleep 0.5
[ "${1:-}" = "--quiet" ] || echo "SLURM stopped"
