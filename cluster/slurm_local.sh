#!/usr/bin/env bash
# Install and start a one-node SLURM cluster on this machine, for trying the workflow's
# `profiles/slurm` profile without a real cluster.
#
#   sudo cluster/slurm_local.sh            # install (apt-get), configure, start; no-op when already up
#   SLURM_ACCOUNTING=0 cluster/slurm_local.sh   # lighter: no slurmdbd/MariaDB (use the squeue status fallback)
#   cluster/slurm_local.sh --status        # print the cluster's state and exit
#   cluster/slurm_local.sh --stop          # stop slurmd/slurmctld/slurmdbd (to switch modes: --stop, then start)
#
# What it sets up (Debian/Ubuntu packages, no systemd needed; daemons are started directly):
#   munge            authentication (the key the package generated, /etc/munge/munge.key)
#   MariaDB+slurmdbd job accounting, so `sacct` (the executor plugin's default status command) and
#                    `sacctmgr` (its account check) work; account $SLURM_ACCOUNT holds root and the
#                    user who ran sudo
#   slurmctld+slurmd one node (this host, CPUs and memory from `slurmd -C`, GPUs from /dev/nvidia*)
#                    in one partition, $SLURM_PARTITION (default `debug`), the default partition
#
# Config goes to /etc/slurm (the packages' compiled-in default), so no SLURM_CONF is needed:
# SLURM drops SLURM_CONF inside job steps, and the snakemake jobstep plugin strips SLURM_* variables
# before its nested `srun`, so a config elsewhere would need an srun wrapper.
#
# Daemon logs: /var/log/slurm/{slurmctld,slurmd,slurmdbd}.log, /var/log/munge/munged.log.
# Stop the SLURM daemons: cluster/slurm_local.sh --stop (by their pid files; munged and MariaDB stay).
set -euo pipefail

PARTITION="${SLURM_PARTITION:-debug}"
ACCOUNT="${SLURM_ACCOUNT:-demo}"
ACCOUNTING="${SLURM_ACCOUNTING:-1}"
CLUSTER="${SLURM_CLUSTER_NAME:-local}"
# Memory kept back from SLURM for the OS and the snakemake main process (MB).
RESERVED_MB="${SLURM_RESERVED_MB:-1024}"
DB_PASSWORD="${SLURM_DB_PASSWORD:-slurmdbd-local}"
ETC=/etc/slurm
HOST="$(hostname -s)"

log() { printf '[slurm_local] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2; shift 2
    for _ in $(seq "$secs"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    die "$what did not come up within ${secs}s (see /var/log/slurm/ and /var/log/mysql/)"
}

node_ready() {
    local state
    state="$(sinfo -h -p "$PARTITION" -N -o %T 2>/dev/null | head -1)"
    [[ "$state" =~ ^(idle|mixed|allocated|completing)$ ]]
}

accounting_ready() {
    [[ "$ACCOUNTING" != 1 ]] && return 0
    [[ -n "$(sacctmgr -n -P show assoc where user=root account="$ACCOUNT" format=account 2>/dev/null)" ]]
}

cluster_up() {
    scontrol ping 2>/dev/null | grep -q "is UP" && node_ready && accounting_ready
}

running() { pgrep -x "$1" >/dev/null; }

case "${1:-}" in
    --status)
        scontrol ping || true
        sinfo || true
        [[ "$ACCOUNTING" == 1 ]] && sacctmgr -n show assoc format=cluster,account,user || true
        if cluster_up; then echo "slurm: UP"; exit 0; else echo "slurm: DOWN"; exit 1; fi
        ;;
    --stop)
        for f in /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid; do
            [[ -s "$f" ]] || continue
            pid="$(cat "$f")"
            kill "$pid" 2>/dev/null || continue
            for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
            log "stopped $(basename "$f" .pid) (pid $pid)"
        done
        exit 0
        ;;
    "") ;;
    *) die "unknown argument $1 (use --status or --stop)" ;;
esac

# --- 0. Already running: nothing to do (a changed script's config applies on the next start) -------------------------------------------------------------
if command -v scontrol >/dev/null && cluster_up; then
    log "SLURM already up: partition '$PARTITION' on $HOST$([[ $ACCOUNTING == 1 ]] && echo ", account '$ACCOUNT'"). Nothing to do."
    exit 0
fi
[[ $EUID -eq 0 ]] || die "run as root (apt-get, /etc/slurm, daemons): sudo $0"

# --- 1. Packages -----------------------------------------------------------------------------------
PKGS=(slurm-wlm munge)
[[ "$ACCOUNTING" == 1 ]] && PKGS+=(slurmdbd mariadb-server)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
    log "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. munge --------------------------------------------------------------------------------------
[[ -s /etc/munge/munge.key ]] || { mungekey --create --force 2>/dev/null || /usr/sbin/create-munge-key -f; }
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
if ! running munged; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
fi
wait_for 20 munged bash -c 'munge -n | unmunge'

# --- 3. Configuration ------------------------------------------------------------------------------
# Write a file only when its content changes; report whether anything changed.
CHANGED=0
put() {  # put PATH MODE OWNER < content
    local path=$1 mode=$2 owner=$3 tmp
    tmp="$(mktemp)"; cat >"$tmp"
    if [[ -f "$path" ]] && cmp -s "$tmp" "$path"; then rm -f "$tmp"; return 0; fi
    install -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$tmp" "$path"; rm -f "$tmp"
    log "wrote $path"; CHANGED=1
}

# This machine's size, as slurmd sees it; keep RESERVED_MB back for the OS.
read -r CPUS MEM_MB < <(slurmd -C | awk '/^NodeName/ {for (i = 1; i <= NF; i++) {split($i, kv, "=");
    if (kv[1] == "CPUs") c = kv[2]; if (kv[1] == "RealMemory") m = kv[2]}} END {print c, m}')
NODE_MEM=$((MEM_MB - RESERVED_MB))
shopt -s nullglob; GPU_DEVS=(/dev/nvidia[0-9]*); shopt -u nullglob
N_GPUS=${#GPU_DEVS[@]}
GRES_NODE=""; GRES_TYPES=""
if ((N_GPUS)); then GRES_NODE="Gres=gpu:$N_GPUS"; GRES_TYPES="GresTypes=gpu"; fi

install -d -o slurm -g slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
if [[ "$ACCOUNTING" == 1 ]]; then
    STORAGE="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations"
else
    STORAGE="AccountingStorageType=accounting_storage/none"
fi

put "$ETC/slurm.conf" 0644 root:root <<EOF
# Written by cluster/slurm_local.sh: a one-node cluster on $HOST.
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# No cgroups needed (works in containers): track processes through /proc.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
# Cores and memory are consumable: jobs share the node by their --cpus-per-task / --mem.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
$GRES_TYPES
$STORAGE
JobCompType=jobcomp/none
# Finished jobs stay visible to squeue for 5 minutes (the plugin's squeue fallback needs >= 120 s).
MinJobAge=300
ReturnToService=2
SchedulerType=sched/backfill
MpiDefault=none
MailProg=/bin/true
NodeName=$HOST CPUs=$CPUS RealMemory=$NODE_MEM $GRES_NODE State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

if ((N_GPUS)); then
    put "$ETC/gres.conf" 0644 root:root <<EOF
# Written by cluster/slurm_local.sh
Name=gpu File=/dev/nvidia[0-$((N_GPUS - 1))]
EOF
fi

# --- 4. Accounting: MariaDB + slurmdbd -------------------------------------------------------------
if [[ "$ACCOUNTING" == 1 ]]; then
    install -d -o mysql -g mysql /run/mysqld
    if ! mysqladmin ping >/dev/null 2>&1; then
        log "starting MariaDB"
        setsid -f mysqld_safe >/dev/null 2>&1 </dev/null
        wait_for 60 MariaDB mysqladmin ping
    fi
    mysql -u root <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
    put "$ETC/slurmdbd.conf" 0600 slurm:slurm <<EOF
# Written by cluster/slurm_local.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
EOF
    if ! running slurmdbd; then
        log "starting slurmdbd"
        /usr/sbin/slurmdbd
    fi
    wait_for 60 slurmdbd sacctmgr -n show cluster
    if [[ -z "$(sacctmgr -n -P show cluster where cluster="$CLUSTER" format=cluster)" ]]; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
fi

# --- 5. slurmctld + slurmd -------------------------------------------------------------------------
if running slurmctld && ((CHANGED)); then
    log "configuration changed: scontrol reconfigure"
    scontrol reconfigure || true
fi
if ! running slurmctld; then
    log "starting slurmctld"
    /usr/sbin/slurmctld
fi
wait_for 60 slurmctld bash -c 'scontrol ping | grep -q "is UP"'
if ! running slurmd; then
    log "starting slurmd"
    /usr/sbin/slurmd
fi
for _ in $(seq 30); do node_ready && break; sleep 1; done
# A node left DOWN/DRAINED by an earlier configuration: bring it back.
if ! node_ready; then
    log "node $HOST is $(sinfo -h -N -o %T | head -1): resuming it"
    scontrol update nodename="$HOST" state=resume 2>/dev/null || true
    wait_for 30 "node $HOST" node_ready
fi

# --- 6. Account and users (after slurmctld registered the cluster) --------------------------------
if [[ "$ACCOUNTING" == 1 ]]; then
    if [[ -z "$(sacctmgr -n -P show account where name="$ACCOUNT" format=account)" ]]; then
        sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="workflow demo" organization=local >/dev/null
    fi
    for u in root ${SUDO_USER:-}; do
        if [[ -z "$(sacctmgr -n -P show assoc where user="$u" account="$ACCOUNT" format=account)" ]]; then
            sacctmgr -i add user "$u" account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
        fi
    done
    wait_for 30 "account $ACCOUNT" accounting_ready
fi

log "SLURM up: partition '$PARTITION' = $HOST ($CPUS CPUs, $NODE_MEM MB$(((N_GPUS)) && echo ", $N_GPUS GPUs"))$([[ $ACCOUNTING == 1 ]] && echo ", account '$ACCOUNT' (sacct works)" || echo ", no accounting (use --slurm-status-command squeue)")."
