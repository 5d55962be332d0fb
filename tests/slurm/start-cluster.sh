#!/usr/bin/env bash
# Start a one-node SLURM (slurmctld + slurmd + munge) on this machine, as root,
# to try profiles/slurm on a laptop and for the integration test. Needs the
# Debian packages slurm-wlm and munge (apt-get install -y slurm-wlm munge).
# The node advertises one scheduling-only GPU (gres gpu:1, no device), so a rule
# with resources gpu=1 is submitted with a GPU request and GPU jobs queue.
# Stop with tests/slurm/stop-cluster.sh.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "start-cluster.sh: run as root" >&2; exit 1; }
command -v slurmctld >/dev/null || { echo "start-cluster.sh: install slurm-wlm and munge first" >&2; exit 1; }

STATE=${SLURM_STATE_DIR:-/var/tmp/linecube-slurm}
HOST=$(hostname)
CPUS=$(nproc)
MEM=$(( $(awk '/MemAvailable/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))

mkdir -p "$STATE"/{state,spool,log} /run/munge /etc/slurm
chown -R slurm:slurm "$STATE" 2>/dev/null || chown -R slurm "$STATE"
chown munge:munge /run/munge
[ -f /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
munge -n | unmunge >/dev/null

cat > /etc/slurm/slurm.conf <<CONF
ClusterName=linecube
SlurmctldHost=$HOST
SlurmUser=slurm
AuthType=auth/munge
CryptoType=crypto/munge
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MinJobAge=300
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
DefMemPerCPU=1000
GresTypes=gpu
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL Default=NO MaxTime=INFINITE State=UP
CONF
echo "NodeName=$HOST Name=gpu File=/dev/null" > /etc/slurm/gres.conf

"$(dirname "$0")/stop-cluster.sh" --quiet || true
/usr/sbin/slurmctld
/usr/sbin/slurmd
for _ in $(seq 1 50); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed)'; then
    echo "SLURM up: $(sinfo -h -o '%P %D %T %c cpus %m MB %G')"
    exit 0
  fi
  sleep 0.2
done
echo "start-cluster.sh: the node did not become idle; see $STATE/log/" >&2
sinfo >&2 || true
exit 1
