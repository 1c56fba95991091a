#!/usr/bin/env bats
# SPEC "Object storage": s3://BUCKET/PREFIX sources against a real S3 server, a throwaway
# single-node Ceph RGW on loopback started by scripts/ceph-s3.sh for this file alone.
# Fixtures are uploaded with curl (its own SigV4, not ours) and judged by the manifests'
# sha256 and the independent Python readers, as the local tests are.

load helpers

BUCKET=ckptfs-test

setup_file() {
    local need
    for need in ceph-mon ceph-osd radosgw radosgw-admin monmaptool; do
        command -v "$need" >/dev/null || skip "$need is not installed (Debian: ceph-mon ceph-osd radosgw ceph-common)"
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

@test "s3: a 32 MiB checkpoint through a 4M cache (blocks evicted, read ahead, refetched)" {
    mount_s3 "s3://$BUCKET/big" -o cache=4M
    run "$PY" - "$MNT" "$BATS_FILE_TMPDIR/big.sha256.json" <<'PY'
import hashlib, json, os, sys
mnt, want = sys.argv[1], json.load(open(sys.argv[2]))
bad = 0
for rnd in range(2):
    for fqn, sha in want.items():
        p = os.path.join(mnt, *fqn.split("."))
        if hashlib.sha256(open(p, "rb").read()).hexdigest() != sha:
            print("MISMATCH", fqn); bad += 1
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
    scripts/ceph-s3.sh start-rgw "$CEPH_DIR" 3>&-
    got=$(sha256sum <"$key" | cut -d' ' -f1)
    [ "$got" = "$want" ]
}
