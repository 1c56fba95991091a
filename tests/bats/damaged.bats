#!/usr/bin/env bats
# Damaged checkpoints beyond errors.bats (missing, truncated, zeroed headers) and cli.bats
# (unreadable .metadata): bytes flipped where nothing but a cross-check notices, an item that
# describes more than it holds, metadata that points at the wrong bytes, chunks that do not
# tile their tensor, and hostile .metadata files that must be refused before any large
# allocation.  SPEC "Errors": a bad .metadata refuses the mount with one line; any other
# damage is EIO for the keys it touches alone, every other key reads its exact bytes, the
# daemon keeps serving and its log names the key and the file.

load helpers

teardown() {
    unmount_ckpt
}

# check_damage NAME SRC LOG_TEXT --bad FQN...: mounts the damaged copy SRC of fixture NAME;
# the --bad keys read EIO, every other key its manifest bytes (twice over); the log holds
# LOG_TEXT; the daemon is still there.
check_damage() {
    local name=$1 src=$2 logtext=$3
    shift 3
    mount_ckpt "$src"
    py_check "$BATS_PY/check_damaged.py" "$MNT" "$FIX/$name.manifest.json" "$src" "$@" \
        --log "$CKPT_LOG" --expect-in-log "$logtext"
    kill -0 "$CKPT_PID"
    mountpoint -q "$MNT"
}

damage() {
    "$PY" "$BATS_PY/damage.py" "$@"
}

edit_metadata() {
    "$PY" "$BATS_PY/metadata_edit.py" "$@"
}

@test "zip local header: data/0's extra-field length off by one (would shift every byte)" {
    local src file
    src=$(copy_fixture dcp_single_perfile)
    file=$(damage "$src" model.embed.weight local-extra)
    check_damage dcp_single_perfile "$src" "$file" --bad model.embed.weight
}

@test "zip central directory: a bit flipped in data/0's local header offset (shared shard)" {
    local src file
    src=$(copy_fixture dcp_single)
    file=$(damage "$src" model.layers.0.mlp.w1.weight cd-offset)
    check_damage dcp_single "$src" "$file" --bad model.layers.0.mlp.w1.weight
}

@test "zstd frame: a flipped byte that still decodes, to wrong data/0 bytes (zip CRC-32)" {
    command -v zstd >/dev/null || skip "the zstd tool is needed to find such a byte"
    local src
    src=$(copy_fixture dcp_zstd)
    damage "$src" model.embed.weight zstd-literal >/dev/null
    check_damage dcp_zstd "$src" "CRC-32" --bad model.embed.weight
}

@test "data.pkl describes more bytes than data/0 holds (CRC-32s consistent)" {
    local src
    src=$(copy_fixture dcp_single_perfile)
    damage "$src" model.embed.weight pkl-offset >/dev/null
    check_damage dcp_single_perfile "$src" "describes" --bad model.embed.weight
}

@test ".metadata points an item 64 bytes into the wrong place of its shard" {
    local src file off len
    src=$(copy_fixture dcp_single)
    read -r file off len < <("$PY" -c '
import sys; sys.path.insert(0, "tests/bats"); import dcp_storage
print(*dcp_storage.items_by_fqn(sys.argv[1])["model.i32"][0])' "$src")
    edit_metadata "$src" item-range model.i32 $((off + 64)) "$len"
    # model.i32 alone is damaged; its neighbours in the same shard are not
    check_damage dcp_single "$src" "$file" --bad model.i32
}

@test ".metadata gives an item a length past the end of its shard" {
    local src file off len size
    src=$(copy_fixture dcp_single)
    read -r file off len < <("$PY" -c '
import sys; sys.path.insert(0, "tests/bats"); import dcp_storage
print(*dcp_storage.items_by_fqn(sys.argv[1])["model.ints"][0])' "$src")
    size=$(stat -c %s "$src/$file")
    edit_metadata "$src" item-range model.ints "$off" $((size - off + 1))
    check_damage dcp_single "$src" "$file" --bad model.ints
}

@test "chunks leave a gap (row_sharded chunk 1 one row short)" {
    local src
    src=$(copy_fixture dcp_dtensor_ws4)
    edit_metadata "$src" chunk-size row_sharded 1 0 2
    check_damage dcp_dtensor_ws4 "$src" row_sharded --bad row_sharded
}

@test "chunks overlap (row_sharded chunk 1 moved up a row)" {
    local src
    src=$(copy_fixture dcp_dtensor_ws4)
    edit_metadata "$src" chunk-offset row_sharded 1 0 2
    check_damage dcp_dtensor_ws4 "$src" row_sharded --bad row_sharded
}

@test "a chunk reaches past the shape (grid chunk 3 moved right)" {
    local src
    src=$(copy_fixture dcp_dtensor_ws4)
    edit_metadata "$src" chunk-offset grid 3 1 7
    check_damage dcp_dtensor_ws4 "$src" grid --bad grid
}

@test "a chunk with 2^40 rows in a 33-row tensor" {
    local src
    src=$(copy_fixture dcp_dtensor_ws4)
    edit_metadata "$src" chunk-size i64_rows 0 0 1099511627776
    check_damage dcp_dtensor_ws4 "$src" i64_rows --bad i64_rows
}

@test "a chunk whose size does not match its item (col_sharded chunk 0 one column narrower)" {
    local src
    src=$(copy_fixture dcp_dtensor_ws4)
    # the tiling still has a gap, and the item's own size disagrees: either way EIO
    edit_metadata "$src" chunk-size col_sharded 0 1 2
    check_damage dcp_dtensor_ws4 "$src" col_sharded --bad col_sharded
}

# ---- hostile .metadata: refused at once, in one line, without a large allocation

# refuse_metadata PYTHON_EXPR: writes the bytes the expression gives as .metadata of a copy
# of dcp_single and expects the mount to be refused in one line naming .metadata.
refuse_metadata() {
    local src
    src=$(copy_fixture dcp_single)
    "$PY" -c 'import sys; open(sys.argv[1], "wb").write(eval(sys.argv[2]))' \
        "$src/.metadata" "$1"
    run_ckptfs_refusal "$src"
    expect_refusal .metadata
}

@test "refuse: .metadata nests 100,000 MARKs" {
    refuse_metadata 'b"\x80\x04" + b"(" * 100000 + b"."'
}

@test "refuse: .metadata nests lists 100,000 deep" {
    refuse_metadata 'b"\x80\x04" + b"]" * 100000 + b"a" * 99999 + b"."'
}

@test "refuse: .metadata announces a 2^62-byte string" {
    refuse_metadata 'b"\x80\x04\x8d" + (1 << 62).to_bytes(8, "little") + b"abc."'
}

@test "refuse: .metadata announces a 2^60-byte frame" {
    refuse_metadata 'b"\x80\x04\x95" + (1 << 60).to_bytes(8, "little") + b"N."'
}

@test "refuse: .metadata is a pickle of something else (a list of a million Nones)" {
    refuse_metadata 'b"\x80\x04](" + b"N" * 1000000 + b"e."'
}

@test "refuse: .metadata is a FIFO (once hung the mount)" {
    local src
    src=$(copy_fixture dcp_single)
    rm "$src/.metadata"
    mkfifo "$src/.metadata"
    run_ckptfs_refusal "$src"
    expect_refusal .metadata
}

@test "a data file that is a FIFO: its keys EIO, the mount does not hang" {
    local src
    src=$(copy_fixture dcp_dtensor_ws4)
    rm "$src/__1_1.distcp"
    mkfifo "$src/__1_1.distcp"
    mount_ckpt "$src"
    # check_damaged.py counts a missing or short file as damage; a FIFO has size 0
    py_check "$BATS_PY/check_damaged.py" "$MNT" "$FIX/dcp_dtensor_ws4.manifest.json" "$src" \
        --log "$CKPT_LOG" --expect-in-log __1_1.distcp
    kill -0 "$CKPT_PID"
}
