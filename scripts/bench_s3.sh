#!/usr/bin/env bash
# Object-storage rows of `make bench` (run by scripts/bench.sh, or alone): a checkpoint in a
# throwaway local Ceph RGW (scripts/ceph-s3.sh), read whole through a fresh `ckptfs s3://`
# mount, against one `curl` GET per object in sequence, `aws s3 cp --recursive` into a tmpfs,
# and ckptfs over an s3fs mount of the same bucket; plus the first-byte latency of a 4 KiB
# read from a fresh mount.  Prints a markdown table (also build/bench/results-s3.md).
#
#   S3_SIZE=1G (tensor bytes, row8 layout)  RUNS=3 (best of)  CKPTFS=build/ckptfs
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
S3_SIZE=${S3_SIZE:-1G}
RUNS=${RUNS:-3}
CKPTFS=${CKPTFS:-$ROOT/build/ckptfs}
DATA=${BENCH_DATA:-$ROOT/build/bench-data}
OUT=$ROOT/build/bench
PY=/usr/bin/python3
BUCKET=ckptfs-bench
mkdir -p "$DATA" "$OUT"
log() { echo "bench-s3: $*" >&2; }

for need in ceph-mon ceph-osd radosgw curl; do
    command -v "$need" >/dev/null || { log "$need missing: object-storage rows skipped"; exit 0; }
done
[ -x "$CKPTFS" ] || { log "$CKPTFS is not built"; exit 0; }

CK="$DATA/s3-$S3_SIZE"
if [ ! -f "$CK.sha256.json" ]; then
    log "generating $CK"
    "$PY" scripts/gen_dcp.py --out "$CK" --size "$S3_SIZE" --layout row8 >&2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ckptfs-bench-s3.XXXXXX")
MNT=$WORK/mnt
S3FS_MNT=$WORK/s3fs
mkdir -p "$MNT" "$S3FS_MNT"
PIDS=()
cleanup() {
    local m
    for m in "$MNT" "$S3FS_MNT"; do mountpoint -q "$m" && fusermount3 -u "$m" 2>/dev/null; done
    local p
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    scripts/ceph-s3.sh stop "$WORK/ceph" || true
    rm -rf "$WORK"
}
trap cleanup EXIT

scripts/ceph-s3.sh start "$WORK/ceph" >/dev/null
# shellcheck disable=SC1091
. "$WORK/ceph/env"
READY=$(cat "$WORK/ceph/log/ready")
export AWS_ACCESS_KEY_ID=$CEPH_S3_ACCESS AWS_SECRET_ACCESS_KEY=$CEPH_S3_SECRET AWS_DEFAULT_REGION=us-east-1
S3C=(curl -sS --fail --user "$CEPH_S3_ACCESS:$CEPH_S3_SECRET" --aws-sigv4 "aws:amz:us-east-1:s3"
     -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")
"${S3C[@]}" -X PUT "$CEPH_S3_ENDPOINT/$BUCKET" >/dev/null
FILES=()
for f in "$CK"/.metadata "$CK"/*.distcp; do
    FILES+=("${f##*/}")
    "${S3C[@]}" -T "$f" "$CEPH_S3_ENDPOINT/$BUCKET/ck/${f##*/}" >/dev/null
done
BYTES=$(cat "$CK"/.metadata "$CK"/*.distcp | wc -c)
mapfile -t KEYS < <("$PY" -c 'import json, sys; print("\n".join(k.replace(".", "/") for k in sorted(json.load(open(sys.argv[1])))))' "$CK.sha256.json")
TENSOR_BYTES=$(du -cb "$CK"/*.distcp | tail -1 | cut -f1)

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.6f", b - a }'; }
best() { printf '%s\n' "$@" | sort -g | head -n 1; }
gbps() { awk -v b="$1" -v t="$2" 'BEGIN { if (t > 0) printf "%.2f GB/s", b / t / 1e9; else print "n/a" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { awk -v r="$1" -v m="$2" 'BEGIN { print (r != "n/a" && r + 0 >= m + 0) ? "PASS" : "FAIL" }'; }

wait_mount() { # MNT PID
    local i
    for i in $(seq 600); do
        mountpoint -q "$1" && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}
mount_ck() { # SRC [opts...]
    local src=$1
    shift
    "$CKPTFS" "$@" "$src" "$MNT" -f </dev/null >>"$WORK/ckptfs.log" 2>&1 &
    CK_PID=$!
    PIDS+=("$CK_PID")
    wait_mount "$MNT" "$CK_PID"
}
umount_ck() { fusermount3 -u "$MNT"; wait "$CK_PID" 2>/dev/null || true; }
read_keys() { (cd "$MNT" && cat "${KEYS[@]}" >/dev/null); }

# ckptfs s3:// (a fresh mount each round; the mount itself is not timed)
T_CK=() T_CURL=() T_AWS=() T_STACK=() T_FIRST=()
for r in $(seq "$RUNS"); do
    log "round $r"
    t0=$(now)
    for f in "${FILES[@]}"; do "${S3C[@]}" -o /dev/null "$CEPH_S3_ENDPOINT/$BUCKET/ck/$f"; done
    T_CURL+=("$(since "$t0")")
    mount_ck "s3://$BUCKET/ck" -o "endpoint=$CEPH_S3_ENDPOINT"
    t0=$(now)
    read_keys
    T_CK+=("$(since "$t0")")
    umount_ck
    mount_ck "s3://$BUCKET/ck" -o "endpoint=$CEPH_S3_ENDPOINT"
    t0=$(now)
    dd if="$MNT/${KEYS[0]}" of=/dev/null bs=4096 count=1 status=none
    T_FIRST+=("$(since "$t0")")
    umount_ck
    if command -v aws >/dev/null && [ -d /dev/shm ]; then
        dst=$(mktemp -d /dev/shm/ckptfs-bench-aws.XXXXXX)
        t0=$(now)
        aws --endpoint-url "$CEPH_S3_ENDPOINT" s3 cp --recursive --quiet "s3://$BUCKET/ck" "$dst" && T_AWS+=("$(since "$t0")")
        rm -rf "$dst"
    fi
    if command -v s3fs >/dev/null; then
        printf '%s:%s\n' "$CEPH_S3_ACCESS" "$CEPH_S3_SECRET" >"$WORK/s3fs.passwd"
        chmod 600 "$WORK/s3fs.passwd"
        s3fs "$BUCKET" "$S3FS_MNT" -f -o "url=$CEPH_S3_ENDPOINT,use_path_request_style,passwd_file=$WORK/s3fs.passwd" \
            </dev/null >>"$WORK/s3fs.log" 2>&1 &
        S3FS_PID=$!
        PIDS+=("$S3FS_PID")
        if wait_mount "$S3FS_MNT" "$S3FS_PID" && mount_ck "$S3FS_MNT/ck"; then
            t0=$(now)
            read_keys && T_STACK+=("$(since "$t0")")
            umount_ck
        fi
        fusermount3 -u "$S3FS_MNT" 2>/dev/null || true
        wait "$S3FS_PID" 2>/dev/null || true
    fi
done

ck=$(best "${T_CK[@]}")
curl_t=$(best "${T_CURL[@]}")
first=$(best "${T_FIRST[@]}")
rows=()
rows+=("| read whole, fresh s3:// mount | $(gbps "$TENSOR_BYTES" "$ck") | curl GET per object, in sequence $(gbps "$BYTES" "$curl_t") | $(ratio "$(awk -v a="$TENSOR_BYTES" -v t="$ck" 'BEGIN{print a/t}')" "$(awk -v a="$BYTES" -v t="$curl_t" 'BEGIN{print a/t}')") | >= 1.5 | $(verdict "$(ratio "$(awk -v a="$TENSOR_BYTES" -v t="$ck" 'BEGIN{print a/t}')" "$(awk -v a="$BYTES" -v t="$curl_t" 'BEGIN{print a/t}')")" 1.5) |")
if [ "${#T_AWS[@]}" -gt 0 ]; then
    aws_t=$(best "${T_AWS[@]}")
    rr=$(ratio "$(awk -v a="$TENSOR_BYTES" -v t="$ck" 'BEGIN{print a/t}')" "$(awk -v a="$BYTES" -v t="$aws_t" 'BEGIN{print a/t}')")
    rows+=("| read whole, fresh s3:// mount | $(gbps "$TENSOR_BYTES" "$ck") | aws s3 cp --recursive to tmpfs $(gbps "$BYTES" "$aws_t") | $rr | >= 1.0 | $(verdict "$rr" 1.0) |")
else
    rows+=("| read whole, fresh s3:// mount | - | aws s3 cp: awscli not installed | - | >= 1.0 | SKIP |")
fi
if [ "${#T_STACK[@]}" -gt 0 ]; then
    st=$(best "${T_STACK[@]}")
    rr=$(ratio "$st" "$ck")
    rows+=("| read whole, fresh s3:// mount | $(gbps "$TENSOR_BYTES" "$ck") | ckptfs over s3fs $(gbps "$TENSOR_BYTES" "$st") | $rr | >= 2.0 | $(verdict "$rr" 2.0) |")
else
    rows+=("| read whole, fresh s3:// mount | - | ckptfs over s3fs: s3fs not installed or failed | - | >= 2.0 | SKIP |")
fi
rows+=("| first byte: 4 KiB read of one tensor, fresh mount | $(awk -v t="$first" 'BEGIN { printf "%.1f ms", t * 1000 }') | - | - | - | - |")

{
    echo "## ckptfs on object storage"
    echo
    echo "S3_SIZE=$S3_SIZE ($(awk -v b="$TENSOR_BYTES" 'BEGIN { printf "%.2f GB", b / 1e9 }') in ${#FILES[@]} objects, row8 layout), best of $RUNS, $(date -u +%Y-%m-%d);"
    echo "a local single-node Ceph RGW 16 (memstore, beast on 127.0.0.1; $READY); load average $(cut -d' ' -f1 /proc/loadavg) at the end."
    echo
    echo "| measure | measured | baseline (same run) | ratio | target | result |"
    echo "| --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${rows[@]}"
} | tee "$OUT/results-s3.md"
