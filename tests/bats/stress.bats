#!/usr/bin/env bats
# Concurrent load (issue 6): many reader processes, random ranges over every key of several
# checkpoints mounted at once, each read checked against the whole-file bytes, which are
# checked against the manifests' sha256 first (stress_read.py).  The daemons are the ASan/
# UBSan build (build/san/ckptfs by default): any sanitizer report in a log fails the test
# (unmount_ckpt), and so does a daemon that died or logged a read error for a sound key.
#
# STRESS_SECONDS (default 20) sets how long the readers run; STRESS_PROCS (default 8) how
# many there are.

load helpers

SECONDS_=${STRESS_SECONDS:-20}
PROCS=${STRESS_PROCS:-8}

# Every daemon this test started: "MNT|PID|LOG|SRC".
MOUNTS=()

# mount_one NAME SRC [options...]: mounts and remembers it; prints MNT=MANIFEST for
# stress_read.py into the MANIFEST_ARGS array.
MANIFEST_ARGS=()
mount_one() {
    local name=$1 src=$2
    shift 2
    mount_ckpt "$src" "$@" || return 1
    MOUNTS+=("$MNT|$CKPT_PID|$CKPT_LOG|$CKPT_SRC")
    MANIFEST_ARGS+=("$MNT=$FIX/$name.manifest.json")
    MNT='' CKPT_PID='' CKPT_LOG=''
}

teardown() {
    local rc=0 entry
    for entry in "${MOUNTS[@]}"; do
        IFS='|' read -r MNT CKPT_PID CKPT_LOG CKPT_SRC <<<"$entry"
        unmount_ckpt || rc=1
    done
    MOUNTS=()
    return "$rc"
}

# every daemon still running and still a mountpoint
all_alive() {
    local entry m p l s
    for entry in "${MOUNTS[@]}"; do
        IFS='|' read -r m p l s <<<"$entry"
        if ! kill -0 "$p" 2>/dev/null || ! mountpoint -q "$m"; then
            echo "the daemon for $s (pid $p) is gone; its log:" >&2
            cat "$l" >&2
            return 1
        fi
    done
}

# no daemon logged a failed read (sound checkpoints only)
no_read_errors() {
    local entry m p l s
    for entry in "${MOUNTS[@]}"; do
        IFS='|' read -r m p l s <<<"$entry"
        if grep -q "ckptfs: key " "$l"; then
            echo "the daemon for $s logged read errors:" >&2
            cat "$l" >&2
            return 1
        fi
    done
}

@test "stress: parallel readers x random ranges over 8 checkpoints mounted at once" {
    local name
    for name in dcp_single dcp_zstd dcp_dtensor_ws4 dcp_dtensor_ws4_perfile dcp_fsdp2_optim \
                hf_llama_sharded st_single dcp_hf; do
        mount_one "$name" "$(fixture_src "$name")"
    done
    # the same zstd checkpoint with a cache too small for its chunks: every read decodes
    # again, evicting what other readers still hold
    mount_one dcp_zstd "$FIX/dcp_zstd" -o cache=4K
    # and one daemon that runs single-threaded
    mount_one dcp_dtensor_ws4 "$FIX/dcp_dtensor_ws4" -s
    run timeout -k 10 $((SECONDS_ + 240)) "$PY" "$BATS_PY/stress_read.py" --procs "$PROCS" \
        --seconds "$SECONDS_" "${MANIFEST_ARGS[@]}"
    echo "$output"
    [ "$status" -eq 0 ]
    all_alive
    no_read_errors
}

@test "stress: readers on damaged checkpoints: bad keys keep failing with EIO, the rest exact" {
    local a b c
    a=$(copy_fixture dcp_single_perfile)
    "$PY" "$BATS_PY/damage.py" "$a" model.embed.weight local-extra >/dev/null
    b=$(copy_fixture dcp_dtensor_ws4)
    "$PY" "$BATS_PY/metadata_edit.py" "$b" chunk-size row_sharded 1 0 2
    mount_one dcp_single_perfile "$a"
    mount_one dcp_dtensor_ws4 "$b"
    if command -v zstd >/dev/null; then
        c=$(copy_fixture dcp_zstd)
        "$PY" "$BATS_PY/damage.py" "$c" model.embed.weight zstd-literal >/dev/null
        mount_one dcp_zstd "$c" -o cache=4K
    fi
    run timeout -k 10 $((SECONDS_ / 2 + 240)) "$PY" "$BATS_PY/stress_read.py" \
        --procs "$PROCS" --seconds $((SECONDS_ / 2)) --seed 2 \
        --bad model.embed.weight --bad row_sharded "${MANIFEST_ARGS[@]}"
    echo "$output"
    [ "$status" -eq 0 ]
    all_alive
}

@test "stress: readers on every key of a read-write mount while 2 writers commit other keys" {
    "$CKPTFS" --help 2>&1 | grep -q -- "-o rw " || skip "this ckptfs has no -o rw"
    local src w1 w2 rc=0
    src=$(copy_fixture dcp_single)
    mount_one dcp_single "$src" -o rw
    local m=${MOUNTS[0]%%|*}
    timeout -k 10 $((SECONDS_ + 240)) "$PY" "$BATS_PY/stress_write.py" \
        "$m/model/layers/0/mlp/w1/weight" "$SECONDS_" 1 </dev/null 3>&- &
    w1=$!
    timeout -k 10 $((SECONDS_ + 240)) "$PY" "$BATS_PY/stress_write.py" \
        "$m/model/embed/weight" "$SECONDS_" 2 </dev/null 3>&- &
    w2=$!
    run timeout -k 10 $((SECONDS_ + 240)) "$PY" "$BATS_PY/stress_read.py" --procs "$PROCS" \
        --seconds "$SECONDS_" --seed 3 --exclude model.layers.0.mlp.w1.weight \
        --exclude model.embed.weight "${MANIFEST_ARGS[@]}"
    echo "$output"
    wait "$w1" || rc=1
    wait "$w2" || rc=1
    [ "$status" -eq 0 ]
    [ "$rc" -eq 0 ]
    all_alive
}
