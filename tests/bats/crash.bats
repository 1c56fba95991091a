#!/usr/bin/env bats
# SPEC "Writes": a daemon killed with SIGKILL at any instant of a commit leaves a checkpoint
# that mounts and reads as the old or the new state, never a torn one.
#
# CKPTFS_CRASH_AFTER_WRITES=N (a test hook, planner/commit.c) makes the daemon kill itself
# right after the N-th write/fsync/rename/unlink syscall of a commit.  For N = 1, 2, ...
# each test changes a fresh copy of a fixture, lets the commit kill the daemon, then mounts
# the directory read-only and checks: the changed keys are all-old or all-new (sha256),
# every other key is unchanged, the independent reader (read_metadata.py) accepts the
# checkpoint.  The loop ends at the first N the commit survives (the commit's steps + 1),
# which must give the new state; the states seen must go old..old, new..new.

load helpers

RM=tests/bats/read_metadata.py

teardown() {
    unmount_ckpt
}

# Waits for the daemon to be gone (killed by its own hook); 0 if it died.
daemon_died() {
    local i
    for ((i = 0; i < 40; i++)); do
        kill -0 "$CKPT_PID" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$CKPT_PID" 2>/dev/null; then
        return 1
    fi
    wait "$CKPT_PID" 2>/dev/null || true
    CKPT_PID=
    fusermount3 -u -z "$MNT" 2>/dev/null || true
    MNT=
    return 0
}

sha_of() {
    sha256sum <"$1" | cut -d' ' -f1
}

# state_of DIR FQN OLD_SHA NEW_SHA: prints old/new, or fails.
state_of() {
    local got
    got=$("$PY" "$RM" --tensor "$2" "$1" | sha256sum | cut -d' ' -f1)
    if [ "$got" = "$3" ]; then
        echo old
    elif [ "$got" = "$4" ]; then
        echo new
    else
        echo "key $2 is neither old nor new ($got)" >&2
        return 1
    fi
}

# crash_loop FIXTURE FQN PATH OFFSET: patches 16 bytes of key FQN (file PATH in the mount)
# at OFFSET with dd, N = 1, 2, ... until the commit survives.
crash_loop() {
    local name=$1 fqn=$2 path=$3 offset=$4
    local old new seen="" n state src
    head -c 16 /dev/urandom >"$BATS_TEST_TMPDIR/patch"
    "$PY" "$RM" --tensor "$fqn" "$FIX/$name" >"$BATS_TEST_TMPDIR/orig"
    old=$(sha_of "$BATS_TEST_TMPDIR/orig")
    "$PY" - "$BATS_TEST_TMPDIR" "$offset" <<'EOF'
import sys
d, off = sys.argv[1], int(sys.argv[2])
b = bytearray(open(d + "/orig", "rb").read())
b[off:off + 16] = open(d + "/patch", "rb").read()
open(d + "/want", "wb").write(b)
EOF
    new=$(sha_of "$BATS_TEST_TMPDIR/want")
    for ((n = 1; n <= 40; n++)); do
        src=$(copy_fixture "$name")
        CKPTFS_CRASH_AFTER_WRITES=$n mount_ckpt "$src" -o rw
        dd if="$BATS_TEST_TMPDIR/patch" of="$MNT/$path" bs=16 seek=$((offset / 16)) \
            conv=notrunc status=none 2>/dev/null || true
        if daemon_died; then
            state=$(state_of "$src" "$fqn" "$old" "$new")
            mount_ckpt "$src"
            [ "$(sha_of "$MNT/$path")" = "$([ "$state" = old ] && echo "$old" || echo "$new")" ]
            unmount_ckpt
        else
            unmount_ckpt
            state=$(state_of "$src" "$fqn" "$old" "$new")
            [ "$state" = new ]
            seen="$seen $state"
            break
        fi
        run "$PY" "$RM" --check "$src"
        if [ "$status" -ne 0 ]; then
            echo "N=$n: $output" >&2
            return 1
        fi
        same_except "$src" "$name" "$fqn"
        seen="$seen $state"
    done
    echo "states by N:$seen" >&3
    [ "$n" -le 40 ]
    # old first, then new, and both seen
    [[ "$seen" =~ ^(\ old)+(\ new)+$ ]]
}

@test "crash: patch of a sharded tensor (dcp_dtensor_ws4), killed after every step" {
    crash_loop dcp_dtensor_ws4 row_sharded row_sharded 112
}

@test "crash: patch whose old data file becomes garbage (dcp_single_perfile), killed after every step" {
    crash_loop dcp_single_perfile model.embed.weight model/embed/weight 64
}

@test "crash: patch of a zstd checkpoint, killed after every step" {
    crash_loop dcp_zstd model.layers.0.mlp.w1.weight model/layers/0/mlp/w1/weight 32
}

@test "crash: a directory rename, killed after every step, is all-old or all-new" {
    local n src seen=""
    for ((n = 1; n <= 20; n++)); do
        src=$(copy_fixture dcp_single)
        CKPTFS_CRASH_AFTER_WRITES=$n mount_ckpt "$src" -o rw
        mv "$MNT/model/layers" "$MNT/model/blocks" 2>/dev/null || true
        local died=0
        daemon_died && died=1
        [ "$died" = 1 ] || unmount_ckpt
        run "$PY" "$RM" --json "$src"
        [ "$status" -eq 0 ]
        local state
        state=$("$PY" -c 'import json,sys
keys = json.loads(sys.stdin.read())["keys"]
old = [k for k in keys if k.startswith("model.layers.")]
new = [k for k in keys if k.startswith("model.blocks.")]
print("old" if old and not new else "new" if new and not old else "torn")' <<<"$output")
        [ "$state" != torn ]
        run "$PY" "$RM" --check "$src"
        [ "$status" -eq 0 ]
        seen="$seen $state"
        [ "$died" = 1 ] || break
    done
    echo "states by N:$seen" >&3
    [[ "$seen" =~ ^(\ old)+(\ new)+$ ]]
}

@test "crash: debris of a killed commit is removed by the next commit" {
    src=$(copy_fixture dcp_single)
    # killed after the data file's fsync: an unreferenced __ckptfs_ file stays behind
    CKPTFS_CRASH_AFTER_WRITES=2 mount_ckpt "$src" -o rw
    printf 'abcd' | dd of="$MNT/model/i8" conv=notrunc status=none 2>/dev/null || true
    daemon_died
    [ -n "$(ls "$src" | grep __ckptfs_ || true)" ]
    mount_ckpt "$src" -o rw
    # the mount reads the old state
    [ "$(sha256sum <"$MNT/model/i8" | cut -d' ' -f1)" = \
      "$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["model.i8"]["sha256"])' "$FIX/dcp_single.manifest.json")" ]
    printf 'wxyz' | dd of="$MNT/model/u8" conv=notrunc status=none
    unmount_ckpt
    run "$PY" "$RM" --check "$src"
    [ "$status" -eq 0 ]
    # only the second commit's file is left
    [ "$(ls "$src" | grep -c __ckptfs_)" = 1 ]
    [ -z "$(ls -A "$src" | grep ckptfs-tmp || true)" ]
}

@test "crash: cp of a large new .npy (streamed in place), killed after every step" {
    local n src seen="" state
    "$PY" -c 'import numpy as np, sys
np.save(sys.argv[1], np.random.default_rng(5).random((600, 1000), dtype=np.float32))' \
        "$BATS_TEST_TMPDIR/big.npy"
    tail -c +129 "$BATS_TEST_TMPDIR/big.npy" >"$BATS_TEST_TMPDIR/big.raw"
    for ((n = 1; n <= 40; n++)); do
        src=$(copy_fixture dcp_single)
        CKPTFS_CRASH_AFTER_WRITES=$n mount_ckpt "$src" -o rw
        cp "$BATS_TEST_TMPDIR/big.npy" "$MNT/big.npy" 2>/dev/null || true
        local died=0
        daemon_died && died=1
        [ "$died" = 1 ] || unmount_ckpt
        run "$PY" "$RM" --check "$src"
        [ "$status" -eq 0 ]
        same_except "$src" dcp_single
        if "$PY" "$RM" --json "$src" | grep -q '"big"'; then
            [ "$("$PY" "$RM" --tensor big "$src" | sha256sum)" = "$(sha256sum <"$BATS_TEST_TMPDIR/big.raw")" ]
            state=new
        else
            state=old
        fi
        seen="$seen $state"
        [ "$died" = 1 ] || break
    done
    echo "states by N:$seen" >&3
    [[ "$seen" =~ ^(\ old)+(\ new)+$ ]]
    # the surviving commit left only what its metadata names
    [ "$(ls "$src" | grep -c '^__ckptfs_')" = 1 ]
    [ -z "$(ls -A "$src" | grep ckptfs-tmp || true)" ]
}
