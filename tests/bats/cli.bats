#!/usr/bin/env bats
# Command line and refusals (SPEC "Command line", "Errors"): a SOURCE that is not a
# readable checkpoint is exit status 1 and one line naming the file, before any mount.

load helpers

teardown() {
    unmount_ckpt
}

@test "--help prints usage and the ckptfs options, exit 0" {
    need_ckptfs
    run env ASAN_OPTIONS=detect_leaks=0 timeout 20 "$CKPTFS" --help
    [ "$status" -eq 0 ]
    [[ "$output" == *SOURCE* ]]
    [[ "$output" == *MOUNTPOINT* ]]
    [[ "$output" == *cache=* ]]
    [[ "$output" == *flat* ]]
    [[ "$output" == *npy* ]]
}

@test "--version prints a version, exit 0" {
    need_ckptfs
    run env ASAN_OPTIONS=detect_leaks=0 timeout 20 "$CKPTFS" --version
    [ "$status" -eq 0 ]
    [[ "${lines[0]}" =~ ckptfs.*[0-9]+\.[0-9]+ ]]
}

@test "no arguments: usage, non-zero exit" {
    need_ckptfs
    run env ASAN_OPTIONS=detect_leaks=0 timeout 20 "$CKPTFS"
    [ "$status" -ne 0 ]
    [ -n "$output" ]
}

@test "refuse: SOURCE does not exist" {
    local dir
    dir=$(test_tmp)
    run_ckptfs_refusal "$dir/no_such_checkpoint"
    expect_refusal no_such_checkpoint
}

@test "refuse: an empty directory (no -o rw,create)" {
    local dir
    dir=$(test_tmp)
    mkdir "$dir/empty_ckpt"
    run_ckptfs_refusal "$dir/empty_ckpt"
    expect_refusal empty_ckpt
}

@test "refuse: a directory that is no checkpoint" {
    local dir
    dir=$(test_tmp)
    mkdir "$dir/notes"
    echo hello >"$dir/notes/readme.txt"
    run_ckptfs_refusal "$dir/notes"
    expect_refusal notes
}

@test "refuse: a plain text file" {
    local dir
    dir=$(test_tmp)
    echo "not a checkpoint" >"$dir/model.txt"
    run_ckptfs_refusal "$dir/model.txt"
    expect_refusal model.txt
}

@test "refuse: .metadata is garbage" {
    local src
    src=$(copy_fixture dcp_single)
    head -c 4908 /dev/urandom >"$src/.metadata"
    run_ckptfs_refusal "$src"
    expect_refusal .metadata
}

@test "refuse: .metadata is text" {
    local src
    src=$(copy_fixture dcp_dtensor_ws4)
    echo "this is not a pickle" >"$src/.metadata"
    run_ckptfs_refusal "$src"
    expect_refusal .metadata
}

@test "refuse: .metadata truncated to half" {
    local src
    src=$(copy_fixture dcp_single)
    truncate -s 2454 "$src/.metadata"
    run_ckptfs_refusal "$src"
    expect_refusal .metadata
}

@test "refuse: .metadata truncated to its last byte but one" {
    local src
    src=$(copy_fixture dcp_fsdp2_optim)
    truncate -s 8568 "$src/.metadata"
    run_ckptfs_refusal "$src"
    expect_refusal .metadata
}

@test "refuse: .metadata empty" {
    local src
    src=$(copy_fixture dcp_zstd)
    : >"$src/.metadata"
    run_ckptfs_refusal "$src"
    expect_refusal .metadata
}

@test "refuse: a storage path that is absolute (/etc//passwd)" {
    local src
    src=$(copy_fixture dcp_single)
    "$PY" "$BATS_PY/make_fixture.py" relpath "$src" __0_0.distcp /etc//passwd
    run_ckptfs_refusal "$src"
    expect_refusal /etc//passwd .metadata
}

@test "refuse: a storage path with .." {
    local src
    src=$(copy_fixture dcp_single)
    "$PY" "$BATS_PY/make_fixture.py" relpath "$src" __0_0.distcp ../__0_0.dcp
    cp "$src/__0_0.distcp" "$src/../__0_0.dcp"
    run_ckptfs_refusal "$src"
    expect_refusal ../__0_0.dcp .metadata
}

@test "refuse: a data file that is a symlink leaving SOURCE" {
    local src
    src=$(copy_fixture dcp_single)
    rm "$src/__0_0.distcp"
    ln -s "$(realpath "$FIX/dcp_single/__0_0.distcp")" "$src/__0_0.distcp"
    run_ckptfs_refusal "$src"
    expect_refusal __0_0.distcp
}

@test "refuse: safetensors whose header length runs past the end" {
    local dir
    dir=$(test_tmp)
    "$PY" -c 'import struct,sys; open(sys.argv[1],"wb").write(struct.pack("<Q", 1 << 40) + b"{}")' \
        "$dir/bad.safetensors"
    run_ckptfs_refusal "$dir/bad.safetensors"
    expect_refusal bad.safetensors
}

@test "refuse: safetensors whose header is not JSON" {
    local dir
    dir=$(test_tmp)
    "$PY" -c 'import struct,sys; open(sys.argv[1],"wb").write(struct.pack("<Q", 8) + b"{nojson!")' \
        "$dir/bad.safetensors"
    run_ckptfs_refusal "$dir/bad.safetensors"
    expect_refusal bad.safetensors
}

@test "refuse: safetensors file truncated inside its data" {
    local dir
    dir=$(test_tmp)
    cp "$FIX/st_single/model.safetensors" "$dir/model.safetensors"
    chmod u+w "$dir/model.safetensors"
    truncate -s 900 "$dir/model.safetensors"
    run_ckptfs_refusal "$dir/model.safetensors"
    expect_refusal model.safetensors
}

@test "refuse: sharded safetensors whose index names a missing shard" {
    local src
    src=$(copy_fixture hf_llama_sharded)
    rm "$src/model-00002-of-00004.safetensors"
    run_ckptfs_refusal "$src"
    expect_refusal model-00002-of-00004.safetensors
}

# read_size.h: requests as large as a reply spliced through a pipe of pipe-max-size can be,
# and the mount's read-ahead window (which the kernel caps at 128 KiB) opened to two of them.
@test "root: the mount asks max_read as large as a spliced reply fits the pipe, read-ahead twice that" {
    [ "$(id -u)" -eq 0 ] || skip "only root may set a mount's read-ahead"
    local pipe_max want
    pipe_max=$(cat /proc/sys/fs/pipe-max-size)
    # the largest power of two from 128 KiB to 1 MiB with 18 pages and a header to spare
    want=$((1 << 20))
    while [ "$want" -gt $((128 << 10)) ] && [ $((want + 18 * 4096 + 16)) -gt "$pipe_max" ]; do
        want=$((want / 2))
    done
    mount_ckpt "$FIX/dcp_single"
    local dev
    dev=$(mountpoint -d "$MNT")
    grep -q " $MNT .*max_read=$want" /proc/self/mountinfo
    py_check "$BATS_PY/check_manifest.py" "$MNT" "$FIX/dcp_single.manifest.json" --src "$FIX/dcp_single"
    # a missing or read-only /sys (chroots, some containers) is the one excuse
    local ro_sys=0
    [ -w "/sys/class/bdi/$dev/read_ahead_kb" ] || ro_sys=1
    [ "$ro_sys" = 1 ] || [ "$(cat "/sys/class/bdi/$dev/read_ahead_kb")" -eq $((2 * want / 1024)) ]
    ! grep -q "cannot widen the mount's read-ahead" "$CKPT_LOG"
    unmount_ckpt
    # copied replies are not bound by the pipe: the largest request
    mount_ckpt "$FIX/dcp_single" -o nosplice
    dev=$(mountpoint -d "$MNT")
    grep -q " $MNT .*max_read=1048576" /proc/self/mountinfo
    [ "$ro_sys" = 1 ] || [ "$(cat "/sys/class/bdi/$dev/read_ahead_kb")" -eq 2048 ]
    [ "$ro_sys" = 0 ] || skip "/sys is read-only here: max_read checked, read-ahead not"
}
