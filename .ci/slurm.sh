#!/usr/bin/env bash
# A real single-node Slurm cluster for the tests, from Debian's packages, without systemd.
#
#   .ci/slurm.sh start    install if missing, configure, start; does nothing if already running
#   .ci/slurm.sh status   exit 0 if our cluster answers
#   .ci/slurm.sh stop     stop the daemons this script started (its pid files), nothing else
#
# submitit reads job states through sacct, so accounting is real too: slurmdbd on a private
# MariaDB (own data dir, socket and port). Everything lives in $MTBENCH_SLURM_DIR (default
# /tmp/mtbench-slurm); munge gets its own key and socket. Free ports are picked at start, so a
# Slurm or MariaDB already on this machine is left alone. Clients find the configuration through
# /etc/slurm/slurm.conf, a link created only when no such file exists (removed again by stop).
set -eEuo pipefail  # -E: a failure inside a function also triggers start's clean-up

DIR=${MTBENCH_SLURM_DIR:-/tmp/mtbench-slurm}
CONF=$DIR/etc/slurm.conf
LINK=/etc/slurm/slurm.conf
export SLURM_CONF=$CONF
PACKAGES=(munge mariadb-server slurmctld slurmd slurmdbd slurm-client)
DAEMONS=(slurmd slurmctld slurmdbd mariadb munged)  # stop order

log() { echo "slurm.sh: $*" >&2; }

alive() { [[ -s $DIR/run/$1.pid ]] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null; }

running() {
    for d in "${DAEMONS[@]}"; do alive "$d" || return 1; done
    sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds
    local limit=$1 what=$2 end=$((SECONDS + $1)); shift 2
    while ((SECONDS < end)); do timeout 10 "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    log "$what did not come up within ${limit}s; logs in $DIR/log:"; tail -n 20 "$DIR"/{log,munge,mysql}/*.log >&2 || true
    return 1
}

free_ports() {  # free_ports N: N distinct free TCP ports
    python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))' "$1"
}

install() {
    local missing=()
    for p in "${PACKAGES[@]}"; do  # removed packages keep a "deinstall ... config-files" status
        dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed$' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]}"
    apt-get update -qq
    # policy-rc.d keeps the packages' own services from starting: we start the daemons ourselves
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

configure() {
    rm -rf "$DIR"
    mkdir -p "$DIR"/{etc,run,log,munge,mysql,state,spool}
    chmod 755 "$DIR" "$DIR"/{etc,run,log}
    local host cpus node db_port ctld_port slurmd_port dbd_port
    host=$(hostname -s)
    cpus=$(nproc)
    # the machine as slurmd sees it (CPUs, sockets, cores, memory), so the node is never drained
    node=$(slurmd -C | head -n 1 | sed 's/^NodeName=[^ ]* //')
    read -r db_port ctld_port slurmd_port dbd_port < <(free_ports 4)
    echo "$db_port" > "$DIR/etc/db_port"

    chown munge:munge "$DIR/munge" && chmod 755 "$DIR/munge"  # clients need to reach the socket
    runuser -u munge -- mungekey --create --keyfile "$DIR/munge/munge.key"

    cat > "$CONF" <<EOF
# Written by .ci/slurm.sh: one node, no cgroups, everything in $DIR.
ClusterName=mtbench
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: a requeued job may start again after 10 s instead of 120
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
# the tests cancel jobs and wait for time limits: keep every grace period short
KillWait=5
MinJobAge=10
InactiveLimit=0
MessageTimeout=10
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
AccountingStoragePass=$DIR/munge/munge.socket
NodeName=$host NodeAddr=127.0.0.1 $node State=UNKNOWN
# up to 4 jobs share each core, so a 3-job array runs at once on a 2-core machine
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
    cat > "$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
DbdHost=$host
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=mtbench
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/etc/slurmdbd.conf"
    echo "cluster on $cpus CPU(s); ports: mariadb $db_port, slurmctld $ctld_port, slurmd $slurmd_port, slurmdbd $dbd_port" \
        > "$DIR/etc/README"
}

start_mariadb() {
    chown mysql:mysql "$DIR/mysql"
    mariadb-install-db --no-defaults --user=mysql --datadir="$DIR/mysql/data" --auth-root-authentication-method=normal \
        --skip-test-db > "$DIR/log/mariadb-install.log" 2>&1
    # setsid: the daemons must outlive this script and the CI shell's process group
    setsid mariadbd --no-defaults --user=mysql --datadir="$DIR/mysql/data" --socket="$DIR/mysql/mysql.sock" \
        --port="$(cat "$DIR/etc/db_port")" --bind-address=127.0.0.1 --pid-file="$DIR/mysql/mariadb.pid" \
        --log-error="$DIR/mysql/mariadb.log" --innodb-lock-wait-timeout=900 \
        --skip-name-resolve < /dev/null > /dev/null 2>&1 &
    ln -sf "$DIR/mysql/mariadb.pid" "$DIR/run/mariadb.pid"
    wait_for 30 MariaDB mariadb --no-defaults -S "$DIR/mysql/mysql.sock" -u root -e 'select 1'
    mariadb --no-defaults -S "$DIR/mysql/mysql.sock" -u root -e \
        "create user 'slurm'@'127.0.0.1' identified by 'mtbench'; grant all on slurm_acct_db.* to 'slurm'@'127.0.0.1';"
}

start() {
    if running; then log "already running ($(cat "$DIR/etc/README"))"; return 0; fi
    stop 2>/dev/null || true  # leftovers of a half-started cluster
    trap 'trap - ERR; log "start failed: stopping what was started"; stop' ERR
    install
    configure
    runuser -u munge -- munged --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
    ln -sf "$DIR/munge/munged.pid" "$DIR/run/munged.pid"
    start_mariadb
    slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
    sacctmgr -i add cluster mtbench >/dev/null
    slurmctld
    slurmd
    if [[ ! -e $LINK && ! -L $LINK ]]; then
        mkdir -p /etc/slurm && ln -s "$CONF" "$LINK"
    elif [[ $(readlink "$LINK") != "$CONF" ]]; then
        log "$LINK belongs to another cluster: export SLURM_CONF=$CONF to use this one"
    fi
    wait_for 30 "the idle node" sh -c 'sinfo -h -o %t | grep -qx idle'
    log "started: $(cat "$DIR/etc/README")"
}

stop() {
    for d in "${DAEMONS[@]}"; do
        if alive "$d"; then
            local pid; pid=$(cat "$DIR/run/$d.pid")
            kill "$pid"
            for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        fi
        rm -f "$DIR/run/$d.pid"
    done
    if [[ -L $LINK && $(readlink "$LINK") == "$CONF" ]]; then rm -f "$LINK"; fi
    log "stopped"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) running ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
