#!/usr/bin/env bats
# SPEC "Object storage": s3://BUCKET/PREFIX sources against a real S3 server, a throwaway
# single-node Ceph RGW on loopback started by scripts/ceph-s3.sh for this file alone.
# Fixtures are uploaded with curl (its own SigV4, not ours) and judged by the manifests'
# sha256 and the independent Python readers, as the local tests are.

load helpers

BUCKET=ckptfs-test

setup_file() {
    local need
    for need in ceph-mon ceph-osd radosgw radosgw-admin monmaptool curl; do
        command -v "$need" >/dev/null || skip "$need is not installed (Debian: ceph-mon ceph-osd radosgw ceph-common curl)"
    done
    export CEPH_DIR="$BATS_FILE_TMPDIR/ceph"
    scripts/ceph-s3.sh start "$CEPH_DIR" >/dev/null 3>&- || {
        tail -n 20 "$CEPH_DIR"/log/*.log "$CEPH_DIR"/log/*.out >&2 2>/dev/null
        return 1
    }
    # shellcheck disable=SC1091
    . "$CEPH_DIR/env"
    export CEPH_S3_ENDPOINT CEPH_S3_ACCESS CEPH_S3_SECRET
    s3_put_bucket "$BUCKET"
    local entry
    for entry in "${ALL_FIXTURES[@]}"; do
        s3_upload_dir "$FIX/${entry%% *}" "$BUCKET" "fx/${entry%% *}"
    done
    # a sharded safetensors prefix without its index
    local f
    for f in "$FIX"/hf_llama_sharded/*.safetensors; do
        s3_put "$f" "$BUCKET" "fx/hf_noindex/${f##*/}"
    done
    # bigger than the read blocks and the smallest cache, for the fault tests
    "$PY" scripts/gen_dcp.py --out "$BATS_FILE_TMPDIR/big" --size 32M --tensors 2 --layout single >/dev/null
    s3_upload_dir "$BATS_FILE_TMPDIR/big" "$BUCKET" big
}

teardown_file() {
    [ -n "${CEPH_DIR:-}" ] && scripts/ceph-s3.sh stop "$CEPH_DIR" 3>&-
    return 0
}

setup() {
    export AWS_ACCESS_KEY_ID=$CEPH_S3_ACCESS AWS_SECRET_ACCESS_KEY=$CEPH_S3_SECRET
    export AWS_SHARED_CREDENTIALS_FILE=/nonexistent AWS_CONFIG_FILE=/nonexistent
    unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_REGION AWS_DEFAULT_REGION
}

teardown() {
    unmount_ckpt
    # RGW back for the next test, whatever this one did to it
    if [ -n "${CEPH_DIR:-}" ] && ! curl -s -o /dev/null --max-time 2 "$CEPH_S3_ENDPOINT/"; then
        scripts/ceph-s3.sh start-rgw "$CEPH_DIR" 3>&-
    fi
}

# curl with the test user's keys: curl's own SigV4, independent of ckptfs's.
s3_curl() {
    curl -sS --fail --max-time 30 --user "$CEPH_S3_ACCESS:$CEPH_S3_SECRET" \
        --aws-sigv4 "aws:amz:us-east-1:s3" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}

s3_put_bucket() {
    s3_curl -X PUT "$CEPH_S3_ENDPOINT/$1" >/dev/null
}

# s3_put FILE BUCKET KEY
s3_put() {
    s3_curl -T "$1" "$CEPH_S3_ENDPOINT/$2/$3" >/dev/null
}

# s3_upload_dir DIR BUCKET PREFIX: every file under DIR, keys relative to it.
s3_upload_dir() {
    local f
    while IFS= read -r -d '' f; do
        s3_put "$f" "$2" "$3/${f#"$1"/}"
    done < <(find "$1" -type f -print0)
}

mount_s3() {
    local src=$1
    shift
    mount_ckpt "$src" -o "endpoint=$CEPH_S3_ENDPOINT" "$@"
}

# check_s3 NAME [check_manifest.py options...]  (no --src: mtimes are the objects')
check_s3() {
    local name=$1
    shift
    py_check "$BATS_PY/check_manifest.py" "$MNT" "$FIX/$name.manifest.json" "$@"
}

@test "s3: every fixture reads back through s3:// with the manifests' sha256" {
    local entry name src
    for entry in "${ALL_FIXTURES[@]}"; do
        name=${entry%% *}
        src=${entry#* }
        # a single .safetensors file is one object: s3://BUCKET/PREFIX/model.safetensors
        [ "$src" = "$name" ] || src="$name/${src#*/}"
        mount_s3 "s3://$BUCKET/fx/$src"
        check_s3 "$name"
        unmount_ckpt
    done
}

@test "s3: virtual-hosted addressing (-o addressing=virtual, BUCKET.localhost)" {
    mount_ckpt "s3://$BUCKET/fx/dcp_dtensor_ws4" -o "endpoint=http://localhost:${CEPH_S3_ENDPOINT##*:},addressing=virtual"
    check_s3 dcp_dtensor_ws4
}

@test "s3: a sharded safetensors prefix without its index" {
    mount_s3 "s3://$BUCKET/fx/hf_noindex"
    check_s3 hf_llama_sharded
}

@test "s3: views (.npy, DIR.safetensors, /.ckptfs) over s3://" {
    mount_s3 "s3://$BUCKET/fx/dcp_dtensor_ws4"
    py_check "$BATS_PY/check_views.py" "$MNT" "$FIX/dcp_dtensor_ws4.manifest.json" --npy --safetensors --metadata-json
    unmount_ckpt
    mount_s3 "s3://$BUCKET/fx/hf_llama_sharded"
    py_check "$BATS_PY/check_views.py" "$MNT" "$FIX/hf_llama_sharded.manifest.json" --npy --safetensors
    unmount_ckpt
    mount_s3 "s3://$BUCKET/fx/hf_llama_sharded" -o flat
    check_s3 hf_llama_sharded --flat
}

@test "s3: a 32 MiB checkpoint through a 4M cache, 4 readers at once (evicted, read ahead, refetched)" {
    mount_s3 "s3://$BUCKET/big" -o cache=4M
    run "$PY" - "$MNT" "$BATS_FILE_TMPDIR/big.sha256.json" <<'PY'
import hashlib, json, os, random, sys, threading
mnt, want = sys.argv[1], json.load(open(sys.argv[2]))
bad = []
def reader(seed):
    rnd = random.Random(seed)
    keys = list(want) * 2
    rnd.shuffle(keys)
    for fqn in keys:
        h = hashlib.sha256()
        with open(os.path.join(mnt, *fqn.split(".")), "rb") as f:
            while True:
                b = f.read(rnd.choice([4096, 65536, 1 << 20, 3 << 20]))
                if not b:
                    break
                h.update(b)
        if h.hexdigest() != want[fqn]:
            bad.append(fqn)
ts = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print("mismatches:", bad)
sys.exit(1 if bad else 0)
PY
    [ "$status" -eq 0 ] || { echo "$output" >&2; false; }
}

@test "s3: mount refused with one line: wrong secret (403), missing bucket, missing prefix" {
    AWS_SECRET_ACCESS_KEY=wrong-secret run_ckptfs_refusal -o "endpoint=$CEPH_S3_ENDPOINT" "s3://$BUCKET/fx/dcp_single"
    expect_refusal "403"
    run_ckptfs_refusal -o "endpoint=$CEPH_S3_ENDPOINT" "s3://no-such-bucket-ckptfs/fx/dcp_single"
    expect_refusal "NoSuchBucket"
    run_ckptfs_refusal -o "endpoint=$CEPH_S3_ENDPOINT" "s3://$BUCKET/fx/no_such_prefix"
    expect_refusal "no objects"
    run_ckptfs_refusal -o "endpoint=$CEPH_S3_ENDPOINT" "s3://$BUCKET/fx/st_single/missing.safetensors"
    expect_refusal "no objects"
}

@test "s3: credentials from ~/.aws/credentials with -o profile= and AWS_PROFILE" {
    local d
    d=$(test_tmp)
    printf '[other]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$CEPH_S3_ACCESS" "$CEPH_S3_SECRET" >"$d/credentials"
    printf '[profile other]\nregion = us-east-1\n' >"$d/config"
    unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
    export AWS_SHARED_CREDENTIALS_FILE=$d/credentials AWS_CONFIG_FILE=$d/config
    mount_s3 "s3://$BUCKET/fx/dcp_single" -o profile=other
    check_s3 dcp_single
    unmount_ckpt
    AWS_PROFILE=other mount_s3 "s3://$BUCKET/fx/dcp_single"
    check_s3 dcp_single
    unmount_ckpt
    # no credentials at all: anonymous requests, which RGW refuses
    run_ckptfs_refusal -o "endpoint=$CEPH_S3_ENDPOINT" "s3://$BUCKET/fx/dcp_single"
    expect_refusal "403"
}

# The blocks of a file of the big checkpoint that a read at OFFSET needs.
read_at() { # FILE OFFSET COUNT
    dd if="$1" bs=4096 skip="$(($2 / 4096))" count="$(($3 / 4096))" status=none | sha256sum | cut -d' ' -f1
}

@test "s3: an object overwritten behind the mount gives EIO, never mixed bytes" {
    mount_s3 "s3://$BUCKET/big" -o cache=4M
    local key="$MNT/model/layers/0/attn/wq/weight"
    [ -f "$key" ]
    # the first MiB is fetched now; the rest is not
    dd if="$key" of=/dev/null bs=4096 count=1 status=none
    # the same name, other bytes: a different ETag
    local data
    data=$(cd "$BATS_FILE_TMPDIR/big" && ls __*.distcp | head -n 1)
    head -c 1000000 /dev/urandom >"$BATS_FILE_TMPDIR/junk"
    cat "$BATS_FILE_TMPDIR/big/$data" >>"$BATS_FILE_TMPDIR/junk"
    s3_put "$BATS_FILE_TMPDIR/junk" "$BUCKET" "big/$data"
    run dd if="$key" of=/dev/null bs=1M skip=8 count=1 status=none
    [ "$status" -ne 0 ]
    [[ "$output" == *"Input/output error"* ]]
    # whole-file reads fail too: no mix of cached old and new bytes
    run cat "$key"
    [ "$status" -ne 0 ]
    grep -q "changed since mount" "$CKPT_LOG"
    grep -q "412" "$CKPT_LOG"
    kill -0 "$CKPT_PID"
    unmount_ckpt
    s3_put "$BATS_FILE_TMPDIR/big/$data" "$BUCKET" "big/$data"
}

@test "s3: RGW stopped mid-read gives EIO, the daemon lives, reads work again once it is back" {
    mount_s3 "s3://$BUCKET/big" -o cache=4M
    local key="$MNT/model/layers/0/attn/wk/weight"
    want=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["model.layers.0.attn.wk.weight"])' "$BATS_FILE_TMPDIR/big.sha256.json")
    dd if="$key" of=/dev/null bs=4096 count=1 status=none
    scripts/ceph-s3.sh stop-rgw "$CEPH_DIR" 3>&-
    run dd if="$key" of=/dev/null bs=1M skip=10 count=2 status=none
    [ "$status" -ne 0 ]
    [[ "$output" == *"Input/output error"* ]]
    kill -0 "$CKPT_PID"
    grep -q "after 5 tries" "$CKPT_LOG"
    grep -q "key model.layers.0.attn.wk.weight: .*the store did not answer" "$CKPT_LOG"
    scripts/ceph-s3.sh start-rgw "$CEPH_DIR" 3>&-
    got=$(sha256sum <"$key" | cut -d' ' -f1)
    [ "$got" = "$want" ]
}

# ---- writes (-o rw) against s3://, judged after a fresh download ----

RM=tests/bats/read_metadata.py

# s3_keys BUCKET PREFIX: the keys under PREFIX/, one a line (Python's XML parser).
s3_keys() {
    # curl signs the query as given: names sorted, values fully encoded
    s3_curl "$CEPH_S3_ENDPOINT/$1?list-type=2&max-keys=1000&prefix=${2//\//%2F}%2F" |
        "$PY" -c 'import sys, xml.etree.ElementTree as E
ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
for c in E.fromstring(sys.stdin.read()).iter(ns + "Contents"):
    print(c.find(ns + "Key").text)'
}

# s3_download BUCKET PREFIX DIR: a fresh copy of every object under PREFIX/ into DIR.
s3_download() {
    local k
    mkdir -p "$3"
    while IFS= read -r k; do
        mkdir -p "$3/$(dirname "${k#"$2"/}")"
        s3_curl -o "$3/${k#"$2"/}" "$CEPH_S3_ENDPOINT/$1/$k"
    done < <(s3_keys "$1" "$2")
}

# every object under the prefix is .metadata or a file the metadata references
only_referenced() {
    "$PY" - "$1" <<'PY'
import json, os, subprocess, sys
d = sys.argv[1]
j = json.loads(subprocess.run(["/usr/bin/python3", "tests/bats/read_metadata.py", "--json", d],
                              capture_output=True, check=True).stdout)
used = {c["storage"]["file"] for k in j["keys"].values() for c in k["chunks"]}
extra = sorted(set(os.listdir(d)) - used - {".metadata"})
sys.exit("unreferenced objects left: %s" % extra if extra else 0)
PY
}

@test "s3 write: patch, cp, new .npy, unlink and rename, judged after a fresh download" {
    s3_upload_dir "$FIX/dcp_dtensor_ws4" "$BUCKET" w/edit
    mount_s3 "s3://$BUCKET/w/edit" -o rw
    head -c 10 /dev/urandom >"$BATS_TEST_TMPDIR/patch"
    cat "$MNT/row_sharded" >"$BATS_TEST_TMPDIR/orig"
    dd if="$BATS_TEST_TMPDIR/patch" of="$MNT/row_sharded" bs=1 seek=90 conv=notrunc status=none
    head -c 384 /dev/urandom >"$BATS_TEST_TMPDIR/grid"
    cp "$BATS_TEST_TMPDIR/grid" "$MNT/grid"
    "$PY" -c 'import numpy as np, sys
np.save(sys.argv[1] + "/extra.npy", np.arange(12, dtype=np.float32).reshape(3, 4))' "$MNT"
    rm "$MNT/tiny_rows"
    mv "$MNT/replicated" "$MNT/moved"
    unmount_ckpt
    local d=$BATS_TEST_TMPDIR/dl
    s3_download "$BUCKET" w/edit "$d"
    check_ckpt "$d"
    "$PY" - "$BATS_TEST_TMPDIR" <<'PY'
import sys
t = sys.argv[1]
b = bytearray(open(t + "/orig", "rb").read())
b[90:100] = open(t + "/patch", "rb").read()
open(t + "/want", "wb").write(b)
PY
    [ "$(key_sha "$d" row_sharded)" = "$(sha256sum <"$BATS_TEST_TMPDIR/want" | cut -d' ' -f1)" ]
    [ "$(key_sha "$d" grid)" = "$(sha256sum <"$BATS_TEST_TMPDIR/grid" | cut -d' ' -f1)" ]
    want_extra=$("$PY" -c 'import numpy as np, hashlib; print(hashlib.sha256(np.arange(12, dtype="<f4").tobytes()).hexdigest())')
    [ "$(key_sha "$d" extra)" = "$want_extra" ]
    "$PY" - "$d" "$FIX/dcp_dtensor_ws4.manifest.json" <<'PY'
import json, subprocess, sys
got = json.loads(subprocess.run(["/usr/bin/python3", "tests/bats/read_metadata.py", "--sha256", sys.argv[1]],
                                capture_output=True, check=True).stdout)
man = json.load(open(sys.argv[2]))
assert "tiny_rows" not in got and "replicated" not in got, sorted(got)
assert got["moved"] == man["replicated"]["sha256"]
for k in man:
    if k not in ("row_sharded", "grid", "tiny_rows", "replicated"):
        assert got[k] == man[k]["sha256"], k
PY
    only_referenced "$d"
    # and the store serves it back the same way
    mount_s3 "s3://$BUCKET/w/edit"
    cmp "$MNT/row_sharded" "$BATS_TEST_TMPDIR/want"
    [ -f "$MNT/moved" ] && [ ! -e "$MNT/tiny_rows" ]
}

@test "s3 write: -o rw,create on an empty prefix; a 12 MiB key goes up as a multipart upload" {
    mount_s3 "s3://$BUCKET/w/fresh" -o rw,create
    [ -z "$(ls "$MNT")" ]
    mkdir -p "$MNT/model"
    "$PY" -c 'import numpy as np, sys
np.save(sys.argv[1] + "/model/w.npy", np.arange(6, dtype=np.int64).reshape(2, 3))
np.save(sys.argv[1] + "/model/big.npy", np.arange(3 << 20, dtype=np.float32).reshape(3072, 1024))' "$MNT"
    unmount_ckpt
    local d=$BATS_TEST_TMPDIR/dl
    s3_download "$BUCKET" w/fresh "$d"
    check_ckpt "$d"
    [ "$(key_sha "$d" model.w)" = "$("$PY" -c 'import numpy as np, hashlib; print(hashlib.sha256(np.arange(6, dtype="<i8").tobytes()).hexdigest())')" ]
    [ "$(key_sha "$d" model.big)" = "$("$PY" -c 'import numpy as np, hashlib; print(hashlib.sha256(np.arange(3 << 20, dtype="<f4").tobytes()).hexdigest())')" ]
    # a multipart object's ETag is "MD5-PARTS"
    local obj
    obj=$(cd "$d" && ls -S __ckptfs_*.distcp | head -n 1)
    s3_curl -I "$CEPH_S3_ENDPOINT/$BUCKET/w/fresh/$obj" | grep -qi '^etag: "[0-9a-f]*-[0-9]*"'
    only_referenced "$d"
}

@test "s3 write: a concurrent commit from a second writer is refused, nothing lost" {
    s3_upload_dir "$FIX/dcp_single" "$BUCKET" w/race
    mount_s3 "s3://$BUCKET/w/race" -o rw
    local a_mnt=$MNT a_pid=$CKPT_PID a_log=$CKPT_LOG
    MNT= CKPT_PID= CKPT_LOG=
    mount_s3 "s3://$BUCKET/w/race" -o rw
    local b_mnt=$MNT b_pid=$CKPT_PID b_log=$CKPT_LOG
    # A commits first
    printf 'AAAA' | dd of="$a_mnt/model/u8" bs=1 conv=notrunc status=none
    # B still holds the .metadata A replaced: its commit must be refused
    run sh -c "printf 'BBBB' | dd of='$b_mnt/model/u8' bs=1 conv=notrunc status=none"
    [ "$status" -ne 0 ]
    grep -q "another writer" "$b_log"
    unmount_ckpt
    MNT=$a_mnt CKPT_PID=$a_pid CKPT_LOG=$a_log
    unmount_ckpt
    local d=$BATS_TEST_TMPDIR/dl
    s3_download "$BUCKET" w/race "$d"
    check_ckpt "$d"
    [ "$("$PY" "$RM" --tensor model.u8 "$d" | head -c 4)" = AAAA ]
    only_referenced "$d"
}

daemon_died() {
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$CKPT_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$CKPT_PID" 2>/dev/null && return 1
    wait "$CKPT_PID" 2>/dev/null || true
    CKPT_PID=
    fusermount3 -u -z "$MNT" 2>/dev/null || true
    MNT=
    return 0
}

@test "s3 write: a daemon killed after every step of a commit leaves the old or the new checkpoint" {
    local fqn=model.embed.weight path=model/embed/weight n state seen="" d want old new
    head -c 16 /dev/urandom >"$BATS_TEST_TMPDIR/patch"
    "$PY" "$RM" --tensor "$fqn" "$FIX/dcp_single_perfile" >"$BATS_TEST_TMPDIR/orig"
    old=$(sha256sum <"$BATS_TEST_TMPDIR/orig" | cut -d' ' -f1)
    "$PY" - "$BATS_TEST_TMPDIR" <<'PY'
import sys
d = sys.argv[1]
b = bytearray(open(d + "/orig", "rb").read())
b[64:80] = open(d + "/patch", "rb").read()
open(d + "/want", "wb").write(b)
PY
    new=$(sha256sum <"$BATS_TEST_TMPDIR/want" | cut -d' ' -f1)
    for ((n = 1; n <= 12; n++)); do
        s3_upload_dir "$FIX/dcp_single_perfile" "$BUCKET" "w/crash$n"
        CKPTFS_CRASH_AFTER_WRITES=$n mount_s3 "s3://$BUCKET/w/crash$n" -o rw
        dd if="$BATS_TEST_TMPDIR/patch" of="$MNT/$path" bs=16 seek=4 conv=notrunc status=none 2>/dev/null || true
        local died=0
        daemon_died && died=1
        [ "$died" = 1 ] || unmount_ckpt
        d=$BATS_TEST_TMPDIR/dl$n
        s3_download "$BUCKET" "w/crash$n" "$d"
        check_ckpt "$d"
        got=$(key_sha "$d" "$fqn")
        if [ "$got" = "$old" ]; then state=old; elif [ "$got" = "$new" ]; then state=new; else
            echo "N=$n: $fqn is neither old nor new" >&2
            false
        fi
        seen="$seen $state"
        [ "$died" = 1 ] || break
    done
    echo "# states by N:$seen" >&3
    [ "$died" = 0 ]
    [[ "$seen" =~ ^(\ old)+(\ new)+$ ]]
    # the surviving commit removed the data object only the old state used
    only_referenced "$d"
}
