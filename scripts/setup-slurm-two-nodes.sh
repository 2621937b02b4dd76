#!/usr/bin/env bash
# A second Slurm node on this machine, for the tests of runs over two nodes: run as
# root after scripts/setup-slurm.sh. Node `vm2` (SLURM_NODE2) is a slurmd in
#   - its own network namespace `rynode2`: a veth pair, ry-h on the host (a port of
#     the bridge ry-br, which holds this node's address 10.77.0.1/24) and ry-n
#     (10.77.0.2/24) inside, with a default route through 10.77.0.1, so vm2 reaches
#     every address of this node;
#   - its own UTS namespace (hostname vm2);
#   - its own mount namespace, where /etc/hosts (/etc/netns/rynode2/hosts: `vm` is
#     10.77.0.1 there, `vm2` 10.77.0.2), /etc/resolv.conf (no DNS), slurmd's spool
#     directory and pid file are its own.
# Its job steps inherit all of that. slurm.conf changes: SlurmctldHost and this node's
# NodeAddr become 10.77.0.1 (reachable from both nodes), `debug` and `held` name this
# node instead of ALL (jobs that name no partition run as before), and a block adds
# node vm2 and partition `two` (both nodes). This node's name still resolves to
# 127.0.0.1 here (/etc/hosts is left as it is, but for a `10.77.0.2 vm2` line), so a
# rank 0 on this node that ranks on vm2 must reach listens on 10.77.0.1:
# MASTER_ADDR=10.77.0.1.
#
# Idempotent. Prints `setup-slurm-two-nodes: partition two up: vm, vm2` on success;
# anything missing or failing is said on stderr, the one-node configuration is put
# back (slurm.conf.one-node), and it exits 0 all the same: the two-node tests then say
# they were skipped.
#
# Running scripts/setup-slurm.sh afterwards leaves both clusters as they are (it sees
# `debug` up and `held` down and stops); when it does write its one-node
# configuration again (no controller was running), run this script again.
#
# Environment: SLURM_CONF_DIR (default /etc/slurm), SLURM_NODE2 (default vm2).
set -uo pipefail

CONF_DIR=${SLURM_CONF_DIR:-/etc/slurm}
CONF=$CONF_DIR/slurm.conf
NODE2=${SLURM_NODE2:-vm2}
NETNS=rynode2
HOST_BR=ry-br
HOST_IF=ry-h
NS_IF=ry-n
HOST_IP=10.77.0.1
NODE2_IP=10.77.0.2
PART=two
# vm2's slurmd runs as this name (a link to slurmd), so `pgrep -x slurmd`, which
# setup-slurm.sh uses to see whether this node's slurmd runs, does not count it.
SLURMD2=/usr/local/sbin/slurmd-$NODE2
SPOOL2=/var/spool/slurmd-$NODE2
PID2=/run/slurmd-$NODE2.pid
LOG2=/var/log/slurm/slurmd-$NODE2.log
BEGIN="# BEGIN runyard two nodes, written by setup-slurm-two-nodes.sh"
END="# END runyard two nodes"

say() { echo "setup-slurm-two-nodes: $*" >&2; }
node=$(hostname -s)

two_up() {
    sinfo -h -p "$PART" -o '%a %n %t' 2>/dev/null | awk -v a="$node" -v b="$NODE2" '
        $1 == "up" && ($3 ~ /^(idle|mix|alloc)$/) { ok[$2] = 1 }
        END { exit !(ok[a] && ok[b]) }'
}

one_up() {
    sinfo -h -o '%P %a %t' 2>/dev/null | grep -Eq '^debug\*? up (idle|mix|alloc)'
}

# Whether vm2's slurmd runs (its pid file names a live slurmd-vm2).
# Whether vm2's slurmd runs: its pid file names a live slurmd-vm2 (a killed one may
# stay a zombie a while, until this machine's pid 1 reaps it).
node2_running() {
    local pid state
    pid=$(cat "$PID2" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "slurmd-$NODE2" ] || return 1
    state=$(sed 's/.*) //' /proc/"$pid"/stat 2>/dev/null | cut -d' ' -f1)
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

if two_up && node2_running; then
    echo "setup-slurm-two-nodes: partition $PART up: $node, $NODE2"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    say "not root: cannot make a network namespace or start a slurmd; the two-node tests will be skipped"
    exit 0
fi
if ! grep -q "^# Written by runyard's scripts/setup-slurm.sh" "$CONF" 2>/dev/null; then
    say "$CONF was not written by scripts/setup-slurm.sh; left alone, the two-node tests will be skipped"
    exit 0
fi
for tool in ip unshare nsenter; do
    if ! command -v "$tool" >/dev/null; then
        say "no '$tool' here; the two-node tests will be skipped"
        exit 0
    fi
done

# --- The network namespace -------------------------------------------------------
if ! ip netns list 2>/dev/null | grep -qw "$NETNS"; then
    ip netns add "$NETNS" || { say "ip netns add $NETNS failed; the two-node tests will be skipped"; exit 0; }
fi
# This node's address for vm2 sits on a bridge, not on the veth pair, so that it
# stays while the namespace is gone: the controller is at that address (for
# setup-slurm.sh too, whose `sinfo` must keep answering).
if ! ip link show "$HOST_BR" >/dev/null 2>&1; then
    if ! ip link add "$HOST_BR" type bridge forward_delay 0; then
        say "could not make the bridge $HOST_BR; the two-node tests will be skipped"
        exit 0
    fi
fi
if ! ip link show "$HOST_IF" >/dev/null 2>&1; then
    # A namespace from an earlier try may hold a stale end of the pair.
    ip -n "$NETNS" link del "$NS_IF" >/dev/null 2>&1 || true
    if ! ip link add "$HOST_IF" type veth peer name "$NS_IF" netns "$NETNS"; then
        say "could not make the veth pair $HOST_IF/$NS_IF; the two-node tests will be skipped"
        exit 0
    fi
fi
ip addr replace "$HOST_IP/24" dev "$HOST_BR" \
    && ip link set "$HOST_BR" up \
    && ip link set "$HOST_IF" master "$HOST_BR" \
    && ip link set "$HOST_IF" up \
    && ip -n "$NETNS" link set lo up \
    && ip -n "$NETNS" addr replace "$NODE2_IP/24" dev "$NS_IF" \
    && ip -n "$NETNS" link set "$NS_IF" up \
    && ip -n "$NETNS" route replace default via "$HOST_IP" \
    || { say "could not set up the addresses of $HOST_BR/$HOST_IF/$NS_IF; the two-node tests will be skipped"; exit 0; }

# Names as seen from vm2 (bound over /etc/hosts in its mount namespace below, and by
# `ip netns exec $NETNS` for commands run by hand): this node is at $HOST_IP there.
mkdir -p /etc/netns/"$NETNS"
cat >/etc/netns/"$NETNS"/hosts <<EOF
# Written by runyard's scripts/setup-slurm-two-nodes.sh: /etc/hosts for node $NODE2.
127.0.0.1 localhost
$HOST_IP $node
$NODE2_IP $NODE2
EOF
# No name server answers from inside the namespace (the host does not forward its
# packets): a local one that refuses at once, instead of each lookup of a name or
# address missing from hosts waiting 10 s (gloo's rendezvous looks addresses up).
cat >/etc/netns/"$NETNS"/resolv.conf <<EOF
# Written by runyard's scripts/setup-slurm-two-nodes.sh: no DNS for node $NODE2.
nameserver 127.0.0.1
options timeout:1 attempts:1
EOF
# And vm2's name from this node (for tools; Slurm itself uses NodeAddr).
if ! grep -Eq "^[[:space:]]*$NODE2_IP[[:space:]]+$NODE2([[:space:]]|\$)" /etc/hosts; then
    echo "$NODE2_IP $NODE2" >>/etc/hosts || say "could not add $NODE2 to /etc/hosts"
fi

# The one-node cluster must answer (with this script's configuration, the controller
# is at $HOST_IP, on the bridge made above).
for _ in $(seq 1 15); do
    one_up && break
    sleep 1
done
if ! one_up; then
    say "the one-node cluster is not up (run scripts/setup-slurm.sh first); the two-node tests will be skipped"
    exit 0
fi

# Put the one-node configuration back (used when a later step fails).
BACKUP=$CONF_DIR/slurm.conf.one-node
restore() {
    say "$*; putting the one-node cluster back, the two-node tests will be skipped"
    stop_node2
    if [ -s "$BACKUP" ] && grep -q "^$BEGIN" "$CONF"; then
        cp "$BACKUP" "$CONF"
        restart_controller
    fi
    for _ in $(seq 1 30); do
        one_up && break
        sleep 1
    done
    scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
    one_up || say "the one-node cluster did not come back: run scripts/setup-slurm.sh"
    exit 0
}

# Slurm 22.05 learns of a node added to (or taken from) slurm.conf only when the
# controller restarts (its state, jobs included, is kept); slurmd rereads it on
# reconfigure.
restart_controller() {
    local pid
    pid=$(cat /run/slurmctld.pid 2>/dev/null)
    if [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = slurmctld ]; then
        kill "$pid"
        for _ in $(seq 1 30); do
            [ -d /proc/"$pid" ] || break
            sleep 0.5
        done
    fi
    /usr/sbin/slurmctld || return 1
    for _ in $(seq 1 30); do
        scontrol ping 2>/dev/null | grep -q UP && break
        sleep 0.5
    done
    scontrol reconfigure >/dev/null 2>&1 || say "scontrol reconfigure failed"
}

stop_node2() {
    local pid
    node2_running || return 0
    pid=$(cat "$PID2")
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 40); do
        [ -d /proc/"$pid" ] || break
        sleep 0.5
    done
}

# --- The configuration -------------------------------------------------------------
# The one-node configuration, to put back if a step below fails.
grep -q "^$BEGIN" "$CONF" || cp "$CONF" "$BACKUP"
cpus=$(nproc)
memory=$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
new=$(mktemp)
sed -e "/^$BEGIN/,/^$END/d" \
    -e "s/^SlurmctldHost=$node(127\.0\.0\.1)/SlurmctldHost=$node($HOST_IP)/" \
    -e "s/^NodeName=$node NodeAddr=127\.0\.0\.1 /NodeName=$node NodeAddr=$HOST_IP /" \
    -e "s/^\(PartitionName=[^ ]* Nodes=\)ALL /\1$node /" \
    "$CONF" >"$new"
cat >>"$new" <<EOF
$BEGIN
# Node $NODE2: a slurmd in network namespace $NETNS on this machine.
NodeName=$NODE2 NodeAddr=$NODE2_IP CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=$PART Nodes=$node,$NODE2 Default=NO MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
$END
EOF
if ! grep -q "^SlurmctldHost=$node($HOST_IP)" "$new" || ! grep -q "^NodeName=$node NodeAddr=$HOST_IP " "$new"; then
    rm -f "$new"
    say "$CONF has no SlurmctldHost=$node(127.0.0.1) or NodeName=$node NodeAddr=127.0.0.1 line to change; the two-node tests will be skipped"
    exit 0
fi
changed=0
if ! cmp -s "$new" "$CONF"; then
    cat "$new" >"$CONF"
    changed=1
fi
rm -f "$new"

if [ "$changed" = 1 ] || ! scontrol show node "$NODE2" >/dev/null 2>&1; then
    restart_controller || restore "slurmctld did not start again"
fi

# --- vm2's slurmd --------------------------------------------------------------------
ln -sf /usr/sbin/slurmd "$SLURMD2"
mkdir -p "$SPOOL2" /var/log/slurm
started=0
if ! node2_running; then
    : >"$PID2"
    : >>"$LOG2"
    # /run/slurmd.pid and /var/spool/slurmd are this node's: vm2's slurmd gets its
    # own in its mount namespace (slurmd kills the process its pid file names).
    [ -e /run/slurmd.pid ] || : >/run/slurmd.pid
    # Not `ip netns exec`: it mounts a sysfs of the namespace over /sys, which hides
    # /sys/fs/cgroup, and slurmd does not start without it.
    nsenter --net=/run/netns/"$NETNS" unshare --mount --propagation private --uts sh -c "
        hostname $NODE2 &&
        mount --bind /etc/netns/$NETNS/hosts /etc/hosts &&
        mount --bind /etc/netns/$NETNS/resolv.conf /etc/resolv.conf &&
        mount --bind $SPOOL2 /var/spool/slurmd &&
        mount --bind $PID2 /run/slurmd.pid &&
        exec $SLURMD2 -N $NODE2 -L $LOG2" \
        || restore "the slurmd of $NODE2 did not start (see $LOG2)"
    started=1
fi

up=0
for _ in $(seq 1 30); do
    if node2_running && two_up; then
        up=1
        break
    fi
    scontrol update nodename="$NODE2" state=resume >/dev/null 2>&1 || true
    sleep 1
done
if [ "$up" = 0 ]; then
    say "node $NODE2 did not come up within 30 s. sinfo says:"
    sinfo 2>&1 | sed 's/^/  /' >&2
    tail -5 "$LOG2" /var/log/slurm/slurmctld.log 2>/dev/null | sed 's/^/  /' >&2
    restore "node $NODE2 is not up"
fi
# A step over both nodes (a second or so), once a slurmd was started: the controller
# can call a node idle that does not answer yet.
if [ "$started" = 1 ]; then
    out=$(timeout 30 srun --partition="$PART" --nodes=2 --ntasks-per-node=1 --job-name=two-node-check hostname 2>&1)
    if ! grep -qx "$NODE2" <<<"$out" || ! grep -qx "$node" <<<"$out"; then
        say "a job step over $node and $NODE2 failed: $(echo "$out" | tr '\n' ' ')"
        tail -5 "$LOG2" 2>/dev/null | sed 's/^/  /' >&2
        restore "node $NODE2 does not run job steps"
    fi
fi
echo "setup-slurm-two-nodes: partition $PART up: $node, $NODE2"
exit 0
