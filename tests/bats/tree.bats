#!/usr/bin/env bats
# Every fixture checkpoint mounted read-only: paths, sizes, bytes, xattrs, listings,
# sub-range reads, stat (SPEC "The tree", "Extended attributes").

load helpers

teardown() {
    unmount_ckpt
}

# check_fixture NAME [ckptfs options...]: mount fixture NAME, check it, unmount.
check_fixture() {
    local name=$1
    shift
    mount_ckpt "$(fixture_src "$name")" "$@"
    local flat=()
    [[ " $* " == *" flat "* ]] && flat=(--flat)
    check_mounted "$name" "${flat[@]}"
}

@test "tree: dcp_single (one data file, every dtype, strided, 0-d, empty, bytes)" {
    check_fixture dcp_single
}

@test "tree: dcp_single_perfile (one data file per item)" {
    check_fixture dcp_single_perfile
}

@test "tree: dcp_zstd (stream.zstd/1 transform on every item)" {
    check_fixture dcp_zstd
}

@test "tree: dcp_dtensor_ws4 (4 ranks, sharded DTensors)" {
    check_fixture dcp_dtensor_ws4
}

@test "tree: dcp_dtensor_ws4_perfile" {
    check_fixture dcp_dtensor_ws4_perfile
}

@test "tree: dcp_fsdp2_optim (FSDP2 model + AdamW state)" {
    check_fixture dcp_fsdp2_optim
}

@test "tree: st_single (one .safetensors file)" {
    check_fixture st_single
}

@test "tree: hf_llama_sharded (safetensors shards + index)" {
    check_fixture hf_llama_sharded
}

@test "tree: dcp_hf (HuggingFaceStorageWriter, DCP_SHARDING_INFO)" {
    check_fixture dcp_hf
}

@test "flat: dcp_single -o flat" {
    check_fixture dcp_single -o flat
}

@test "flat: dcp_zstd -o flat" {
    check_fixture dcp_zstd -o flat
}

@test "flat: dcp_dtensor_ws4 -o flat" {
    check_fixture dcp_dtensor_ws4 -o flat
}

@test "flat: dcp_fsdp2_optim -o flat" {
    check_fixture dcp_fsdp2_optim -o flat
}

@test "flat: st_single -o flat" {
    check_fixture st_single -o flat
}

@test "flat: hf_llama_sharded -o flat" {
    check_fixture hf_llama_sharded -o flat
}

@test "flat: dcp_hf -o flat" {
    check_fixture dcp_hf -o flat
}

@test "cache: -o cache=4K (every chunk evicted at once) still reads every key right" {
    check_fixture dcp_zstd -o cache=4K
    unmount_ckpt
    check_fixture dcp_dtensor_ws4_perfile -o cache=4K
}

@test "cache: -o cache=1M with libfuse's -s (single-threaded)" {
    check_fixture dcp_fsdp2_optim -o cache=1M -s
}

@test "stat: root and directories are directories, keys are regular files" {
    mount_ckpt "$FIX/dcp_single"
    [ -d "$MNT" ]
    [ -d "$MNT/model/layers/0" ]
    [ -f "$MNT/model/embed/weight" ]
    [ -f "$MNT/step" ]
    [ "$(stat -c %s "$MNT/model/embed/weight")" = 2048 ]
    [ "$(stat -c %F "$MNT/model/embed/weight")" = "regular file" ]
    [ "$(stat -c %F "$MNT/model")" = directory ]
    # mtime is the checkpoint's, not 1970 and not "now".
    [ "$(stat -c %Y "$MNT/model/embed/weight")" -gt 1000000000 ]
    run stat "$MNT/no/such/key"
    [ "$status" -ne 0 ]
    [[ "$output" == *"No such file"* ]]
}

@test "read-only: writes fail with EROFS" {
    mount_ckpt "$FIX/dcp_single"
    local f=$MNT/model/embed/weight
    run bash -c "echo x > '$f'"
    [ "$status" -ne 0 ]
    [[ "$output" == *"Read-only file system"* ]]
    run touch "$MNT/new_file"
    [ "$status" -ne 0 ]
    [[ "$output" == *"Read-only file system"* ]]
    run touch "$f"
    [ "$status" -ne 0 ]
    [[ "$output" == *"Read-only file system"* ]]
    run mkdir "$MNT/newdir"
    [[ "$output" == *"Read-only file system"* ]]
    run rm -f "$f"
    [[ "$output" == *"Read-only file system"* ]]
    run mv "$MNT/step" "$MNT/step2"
    [[ "$output" == *"Read-only file system"* ]]
    py_check - "$f" "$MNT" <<'PY'
import errno, os, sys
f, mnt = sys.argv[1], sys.argv[2]
def erofs(what, fn):
    try:
        fn()
    except OSError as e:
        assert e.errno == errno.EROFS, "%s: %s" % (what, e)
        return
    raise AssertionError("%s succeeded on a read-only mount" % what)
erofs("open O_WRONLY", lambda: os.open(f, os.O_WRONLY))
erofs("open O_RDWR", lambda: os.open(f, os.O_RDWR))
erofs("truncate", lambda: os.truncate(f, 0))
erofs("create", lambda: os.open(mnt + "/x.npy", os.O_WRONLY | os.O_CREAT, 0o644))
erofs("setxattr", lambda: os.setxattr(f, "user.ckpt.dtype", b"int8"))
erofs("chmod", lambda: os.chmod(f, 0o600))
PY
    # Nothing changed.
    [ "$(stat -c %s "$f")" = 2048 ]
    [ -f "$MNT/step" ]
}

@test "dd: sub-ranges read with dd equal the same slice of the whole file" {
    mount_ckpt "$FIX/dcp_dtensor_ws4"
    local f=$MNT/row_sharded whole
    whole=$(test_tmp)/whole
    cat "$f" >"$whole"
    [ "$(stat -c %s "$whole")" = 280 ]
    local s c s_c
    # Rows are 28 bytes; shard boundaries sit at rows 3, 6 and 9.
    for s_c in 0:280 83:2 84:28 80:100 150:200 279:1 279:50 300:10; do
        s=${s_c%%:*}
        c=${s_c##*:}
        cmp <(dd if="$f" bs=1 skip="$s" count="$c" 2>/dev/null) \
            <(dd if="$whole" bs=1 skip="$s" count="$c" 2>/dev/null)
    done
}

@test "getfattr -d shows user.ckpt.dtype, shape, fqn, chunks" {
    command -v getfattr >/dev/null || skip "getfattr not installed (package attr)"
    mount_ckpt "$FIX/dcp_dtensor_ws4"
    run getfattr --absolute-names -d "$MNT/col_sharded"
    [ "$status" -eq 0 ]
    [[ "$output" == *'user.ckpt.dtype="bfloat16"'* ]]
    [[ "$output" == *'user.ckpt.shape="[6,10]"'* ]]
    [[ "$output" == *'user.ckpt.fqn="col_sharded"'* ]]
    [[ "$output" == *'user.ckpt.chunks='* ]]
    run getfattr --absolute-names -n user.ckpt.kind --only-values "$MNT/epoch"
    [ "$status" -eq 0 ]
    [ "$output" = bytes ]
    run getfattr --absolute-names -n user.ckpt.no_such_attr "$MNT/col_sharded"
    [ "$status" -ne 0 ]
}

@test "daemon mode: no -f, relative SOURCE, fusermount3 -u ends the daemon" {
    need_ckptfs
    local dir ckptfs_abs
    dir=$(test_tmp)
    ckptfs_abs=$(realpath "$CKPTFS")
    cp -r "$FIX/dcp_single" "$dir/src"
    mkdir "$dir/mnt"
    (cd "$dir" && ASAN_OPTIONS=detect_leaks=0 "$ckptfs_abs" src "$dir/mnt" </dev/null \
        >"$dir/log" 2>&1 3>&-)
    MNT=$dir/mnt
    mountpoint -q "$MNT" || { cat "$dir/log"; false; }
    local pid=
    local p cmd
    for p in /proc/[0-9]*; do
        cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
        if [[ "$cmd" == *ckptfs*" $dir/mnt"* ]]; then
            pid=${p#/proc/}
        fi
    done
    [ -n "$pid" ]
    [ "$(sha256sum <"$MNT/model/embed/weight" | cut -d' ' -f1)" = \
        33f71a48db8315000739447a441ce4284e2143539b92a48e04a76812bbec1226 ]
    fusermount3 -u "$MNT"
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        false
    fi
    if grep -Eq "$SANITIZER_RE" "$dir/log"; then
        cat "$dir/log"
        false
    fi
    MNT=
}

# mount.h: st_blksize sizes readers' buffers.  Files ask for 1 MiB pieces (cp, dd, Python's
# io); directories say 4 KiB, so that glibc's readdir keeps its 32 KiB getdents buffer and the
# kernel does not allocate a 1 MiB reply buffer for every READDIRPLUS of a walk.
@test "tree: st_blksize is 1 MiB for files and 4 KiB for directories" {
    mount_ckpt "$FIX/dcp_single"
    local f
    f=$(find "$MNT" -type f -not -path "$MNT/.ckptfs/*" | head -1)
    [ -n "$f" ]
    [ "$(stat -c %o "$f")" -eq 1048576 ]
    [ "$(stat -c %o "$MNT")" -eq 4096 ]
    [ "$(stat -c %o "$(dirname "$f")")" -eq 4096 ]
}
