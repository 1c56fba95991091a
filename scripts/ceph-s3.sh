#!/usr/bin/env bash
# A throwaway single-node Ceph with an S3 endpoint, for the object-storage tests and bench.
#
#   scripts/ceph-s3.sh start DIR   # prints "endpoint=http://127.0.0.1:PORT access=... secret=..."
#   scripts/ceph-s3.sh stop DIR
#   scripts/ceph-s3.sh stop-rgw DIR / start-rgw DIR   # for fault tests: RGW alone
#
# One mon, one OSD on the memstore object store, no mgr, RGW's beast frontend on a free
# loopback port, auth none, pools of size 1.  Everything (config, data, logs, PIDs) lives
# under DIR, which must be empty or missing; nothing is installed or started elsewhere and
# every daemon is stopped by the PID recorded at its start.  DIR/env holds the endpoint and
# keys as shell assignments (CEPH_S3_ENDPOINT, CEPH_S3_ACCESS, CEPH_S3_SECRET).
set -euo pipefail

die() { echo "ceph-s3: $*" >&2; exit 1; }

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits up to $2 tenths of a second for "$1" (a command) to succeed.
wait_for() {
    local i
    for ((i = 0; i < $2; i++)); do
        if eval "$1" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

ceph_cmd() { timeout 20 ceph -c "$DIR/ceph.conf" "$@"; }

# Stops one daemon by its recorded PID: SIGTERM, then SIGKILL after a grace period (the
# OSD and RGW sometimes ignore SIGTERM while they wait on the mon).
stop_pid() {
    local f=$DIR/run/$1.pid pid i
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

start_rgw() {
    # shellcheck disable=SC1091
    . "$DIR/env"
    radosgw -c "$DIR/ceph.conf" -n client.rgw -f >>"$DIR/log/rgw.out" 2>&1 </dev/null &
    echo $! >"$DIR/run/rgw.pid"
    wait_for "curl -s -o /dev/null --max-time 1 $CEPH_S3_ENDPOINT/" 300 ||
        die "RGW did not answer on $CEPH_S3_ENDPOINT (see $DIR/log)"
}

start() {
    [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ] && die "$DIR is not empty"
    mkdir -p "$DIR"/{run,log,mon/a,osd/0}
    DIR=$(cd "$DIR" && pwd)
    local mon_port rgw_port fsid t0
    t0=$(date +%s.%N)
    mon_port=$(free_port)
    rgw_port=$(free_port)
    fsid=$(cat /proc/sys/kernel/random/uuid)
    cat >"$DIR/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
mon allow pool size one = true
mon allow pool delete = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon max pg per osd = 1000
paxos propose interval = 0.01
mon osd full ratio = 0.99
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
pid file = $DIR/run/\$name.daemon-pid
mon data = $DIR/mon/\$id
osd data = $DIR/osd/\$id
osd objectstore = memstore
memstore device bytes = 4294967296
keyring = /dev/null
[client]
log file = $DIR/log/client.log
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw dns name = localhost
rgw enable usage log = false
rgw thread pool size = 64
CONF
    cat >"$DIR/env" <<ENV
CEPH_S3_ENDPOINT=http://127.0.0.1:$rgw_port
CEPH_S3_ACCESS=CKPTFSTESTACCESS0001
CEPH_S3_SECRET=ckptfs-test-secret-0000000000000000000001
ENV
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$DIR/monmap" >/dev/null
    ceph-mon -c "$DIR/ceph.conf" --mkfs -i a --monmap "$DIR/monmap" >>"$DIR/log/mkfs.out" 2>&1 ||
        die "ceph-mon --mkfs failed (see $DIR/log)"
    ceph-mon -c "$DIR/ceph.conf" -i a -f >>"$DIR/log/mon.out" 2>&1 </dev/null &
    echo $! >"$DIR/run/mon.pid"
    local id
    id=$(ceph_cmd osd create) || die "the mon does not answer (see $DIR/log)"
    [ "$id" = 0 ] || die "unexpected OSD id $id"
    ceph-osd -c "$DIR/ceph.conf" -i 0 --mkfs >>"$DIR/log/mkfs.out" 2>&1 ||
        die "ceph-osd --mkfs failed (see $DIR/log)"
    ceph-osd -c "$DIR/ceph.conf" -i 0 -f >>"$DIR/log/osd.out" 2>&1 </dev/null &
    echo $! >"$DIR/run/osd.pid"
    wait_for "ceph_cmd osd stat | grep -q '1 up'" 300 || die "the OSD did not come up (see $DIR/log)"
    start_rgw
    # shellcheck disable=SC1091
    . "$DIR/env"
    radosgw-admin -c "$DIR/ceph.conf" user create --uid=ckptfs --display-name=ckptfs \
        --access-key="$CEPH_S3_ACCESS" --secret-key="$CEPH_S3_SECRET" >/dev/null ||
        die "radosgw-admin user create failed"
    echo "S3 ready in $(/usr/bin/python3 -c "import time; print(round(time.time()-$t0,2))") s" >"$DIR/log/ready"
    echo "endpoint=$CEPH_S3_ENDPOINT access=$CEPH_S3_ACCESS secret=$CEPH_S3_SECRET"
}

stop() {
    [ -d "$DIR/run" ] || return 0
    # RGW and the OSD first: a mon stopped first leaves them waiting for it.
    stop_pid rgw
    stop_pid osd
    stop_pid mon
}

[ $# -eq 2 ] || die "usage: $0 start|stop|stop-rgw|start-rgw DIR"
DIR=$2
case $1 in
start) start ;;
stop) stop ;;
stop-rgw) stop_pid rgw ;;
start-rgw) DIR=$(cd "$DIR" && pwd); start_rgw ;;
*) die "usage: $0 start|stop|stop-rgw|start-rgw DIR" ;;
esac
