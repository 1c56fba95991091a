#!/usr/bin/env bats
# Damaged data files (SPEC "Errors"): a read that touches a chunk ckptfs cannot read fails
# with EIO for that file alone; every other key keeps reading its exact bytes; the daemon
# keeps serving and the log names the file.

load helpers

teardown() {
    unmount_ckpt
}

# check_damage NAME SRC FILE_FOR_LOG [--bad FQN...]: mounts the damaged copy SRC of
# fixture NAME and checks every key (check_damaged.py), then that the daemon still runs.
check_damage() {
    local name=$1 src=$2 logname=$3
    shift 3
    mount_ckpt "$src"
    py_check "$BATS_PY/check_damaged.py" "$MNT" "$FIX/$name.manifest.json" "$src" "$@" \
        --log "$CKPT_LOG" --expect-in-log "$logname"
    kill -0 "$CKPT_PID"
    mountpoint -q "$MNT"
}

# item_of SRC FQN: "FILE OFFSET LENGTH" of the first item of FQN (from .metadata).
item_of() {
    "$PY" - "$1" "$2" <<'PY'
import sys
sys.path.insert(0, "tests/bats")
import dcp_storage
rel, off, length = dcp_storage.items_by_fqn(sys.argv[1])[sys.argv[2]][0]
print(rel, off, length)
PY
}

@test "missing shard file (dcp_dtensor_ws4): its keys EIO, others intact" {
    local src
    src=$(copy_fixture dcp_dtensor_ws4)
    rm "$src/__1_1.distcp"
    check_damage dcp_dtensor_ws4 "$src" __1_1.distcp
}

@test "missing item file (dcp_dtensor_ws4_perfile): its key EIO, others intact" {
    local src
    src=$(copy_fixture dcp_dtensor_ws4_perfile)
    rm "$src/__2_3.distcp"
    check_damage dcp_dtensor_ws4_perfile "$src" __2_3.distcp
}

@test "truncated shard (dcp_dtensor_ws4 __0_1 to half): its keys EIO, others intact" {
    local src
    src=$(copy_fixture dcp_dtensor_ws4)
    truncate -s 3218 "$src/__0_1.distcp"
    check_damage dcp_dtensor_ws4 "$src" __0_1.distcp
}

@test "truncated single data file (dcp_single): keys past the cut EIO, keys before intact" {
    local src
    src=$(copy_fixture dcp_single)
    truncate -s 20000 "$src/__0_0.distcp"
    check_damage dcp_single "$src" __0_0.distcp
}

@test "truncated zstd data file (dcp_zstd): keys past the cut EIO, keys before intact" {
    local src
    src=$(copy_fixture dcp_zstd)
    truncate -s 9000 "$src/__0_0.distcp"
    check_damage dcp_zstd "$src" __0_0.distcp
}

@test "bad archive: an item's ZIP end records zeroed (dcp_single_perfile)" {
    local src file off len
    src=$(copy_fixture dcp_single_perfile)
    read -r file off len < <(item_of "$src" model.embed.weight)
    # The last 100 bytes of the item hold the central directory's end: zero them.
    dd if=/dev/zero of="$src/$file" bs=1 seek=$((off + len - 100)) count=100 conv=notrunc \
        2>/dev/null
    check_damage dcp_single_perfile "$src" "$file" --bad model.embed.weight
}

@test "bad zstd frame: an item's frame header zeroed (dcp_zstd)" {
    local src file off len
    src=$(copy_fixture dcp_zstd)
    read -r file off len < <(item_of "$src" model.layers.0.mlp.w1.weight)
    dd if=/dev/zero of="$src/$file" bs=1 seek="$off" count=8 conv=notrunc 2>/dev/null
    check_damage dcp_zstd "$src" "$file" --bad model.layers.0.mlp.w1.weight
}

@test "bad zstd frame in a bytes entry (dcp_zstd step)" {
    local src file off len
    src=$(copy_fixture dcp_zstd)
    read -r file off len < <(item_of "$src" step)
    dd if=/dev/zero of="$src/$file" bs=1 seek="$off" count=8 conv=notrunc 2>/dev/null
    check_damage dcp_zstd "$src" "$file" --bad step
}
