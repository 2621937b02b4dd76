#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the Slurm executor's tests: Debian's
# slurm-wlm and munge (installed with apt-get when missing), a configuration with
# slurmctld and slurmd on localhost (select/cons_tres, proctrack/linuxproc, task/none,
# no accounting), and the three daemons started. Idempotent: a cluster that already
# answers `sinfo` is left as it is.
#
# Needs root. Anywhere it cannot run (not root, no apt, the daemons do not start) it
# says why and exits 0: the tests that need Slurm then say they were skipped, unless
# RUNYARD_REQUIRE_SLURM=1 makes them fail.
#
# Environment: SLURM_CONF_DIR (default /etc/slurm), SLURM_PARTITION (default `debug`).
set -uo pipefail

CONF_DIR=${SLURM_CONF_DIR:-/etc/slurm}
PARTITION=${SLURM_PARTITION:-debug}

say() { echo "setup-slurm: $*" >&2; }

if sinfo -h -o '%P %a' 2>/dev/null | grep -q "^${PARTITION}\*\? up" \
    && sinfo -h -o '%P %a' 2>/dev/null | grep -q "^held down"; then
    say "a Slurm cluster already answers (partition ${PARTITION} up, held down)"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    say "not root: cannot install or start Slurm; the Slurm tests will be skipped"
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get install -y -q slurm-wlm munge >/tmp/runyard-slurm-apt.log 2>&1 \
        || { apt-get update -q >>/tmp/runyard-slurm-apt.log 2>&1 \
            && apt-get install -y -q slurm-wlm munge >>/tmp/runyard-slurm-apt.log 2>&1; }; }; then
        say "apt-get could not install slurm-wlm and munge (see /tmp/runyard-slurm-apt.log); the Slurm tests will be skipped"
        exit 0
    fi
fi

node=$(hostname -s)
cpus=$(nproc)
# Slurm's memory figure in MiB, a little under the machine's so slurmd accepts it.
memory=$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)

mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge
chown -R munge:munge /run/munge /var/lib/munge /var/log/munge /etc/munge 2>/dev/null || true
chmod 0700 /etc/munge 2>/dev/null || true
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi

cat >"$CONF_DIR/slurm.conf" <<EOF
# Written by runyard's scripts/setup-slurm.sh: one node, for tests.
ClusterName=runyard
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
# Jobs go from submitted to running within a second or so, and ended jobs stay
# visible to scontrol for five minutes.
SchedulerParameters=sched_interval=1
MessageTimeout=10
MinJobAge=300
KillWait=10
NodeName=${node} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
PartitionName=${PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
# Down on purpose: jobs submitted to it stay PENDING (reason PartitionDown), for the
# tests of a run Slurm holds.
PartitionName=held Nodes=ALL Default=NO MaxTime=INFINITE State=DOWN
EOF

start() {
    local name=$1; shift
    if pgrep -x "$name" >/dev/null; then
        return 0
    fi
    "$@" || say "$name did not start"
}

if pgrep -x slurmctld >/dev/null; then
    # Running with an older configuration: read this one.
    scontrol reconfigure >/dev/null 2>&1 || say "scontrol reconfigure failed"
fi
start munged runuser -u munge -- /usr/sbin/munged
# A fresh controller state (-c): jobs of an earlier cluster on this machine are gone.
start slurmctld /usr/sbin/slurmctld -c
start slurmd /usr/sbin/slurmd

for _ in $(seq 1 60); do
    if sinfo -h -o '%P %a %t' 2>/dev/null | grep -Eq "^${PARTITION}\*? up (idle|mix|alloc)"; then
        scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
        say "Slurm is up: partition ${PARTITION}, node ${node}, ${cpus} CPUs"
        exit 0
    fi
    sleep 1
done
say "Slurm did not come up within 60 s; the Slurm tests will be skipped. sinfo says:"
sinfo 2>&1 | sed 's/^/  /' >&2
tail -5 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log 2>/dev/null | sed 's/^/  /' >&2
exit 0
