#!/usr/bin/env bats
# SPEC: -o dtype= (views converted with torch's rounding, checked against real torch 1.13's
# Tensor.to) and PATH.stats (checked against numpy), on the fixtures and on a checkpoint of
# awkward values built here (make_special_values.py: NaN payloads, inf, subnormals, ties,
# values past float16's range, every float16 and bfloat16 bit pattern).

load helpers

teardown() {
    unmount_ckpt
}

special() {
    SPECIAL_DIR=$(test_tmp)
    "$PY" "$BATS_PY/make_special_values.py" "$SPECIAL_DIR/special.safetensors" \
        "$SPECIAL_DIR/special.manifest.json"
}

@test "dtype: bfloat16, float16, float32 views of awkward values equal torch's .to()" {
    special
    local t
    for t in bfloat16 float16 float32; do
        mount_ckpt "$SPECIAL_DIR/special.safetensors" -o "dtype=$t,hf_shard=64K"
        py_check "$BATS_PY/check_dtype.py" "$MNT" "$SPECIAL_DIR/special.manifest.json" --dtype "$t"
        unmount_ckpt
    done
}

@test "dtype: DCP fixtures (float64/32/16, bfloat16, float8, sharded, zstd) equal torch's .to()" {
    local name t
    for name in dcp_single dcp_zstd dcp_dtensor_ws4 dcp_hf; do
        for t in bfloat16 float16; do
            mount_ckpt "$FIX/$name" -o "dtype=$t"
            py_check "$BATS_PY/check_dtype.py" "$MNT" "$FIX/$name.manifest.json" --dtype "$t"
            unmount_ckpt
        done
    done
    mount_ckpt "$FIX/hf_llama_sharded" -o dtype=float32
    py_check "$BATS_PY/check_dtype.py" "$MNT" "$FIX/hf_llama_sharded.manifest.json" --dtype float32
}

@test "dtype: hf/ with dtype and tiny shards is still consistent; a bad dtype is refused" {
    mount_ckpt "$FIX/hf_llama_sharded" -o dtype=float32,hf_shard=8K
    py_check "$BATS_PY/check_hf.py" "$MNT" "$FIX/hf_llama_sharded.manifest.json" --shard 8192 \
        --min-shards 2 --dtype float32
    unmount_ckpt
    local d
    d=$(test_tmp)
    mkdir "$d/mnt"
    run "$CKPTFS" -o dtype=int8 "$FIX/dcp_single" "$d/mnt"
    [ "$status" -eq 1 ]
    [ "${#lines[@]}" -eq 1 ]
    [[ "$output" == *"dtype=int8"* ]]
    run mountpoint -q "$d/mnt"
    [ "$status" -ne 0 ]
}

@test "stats: PATH.stats of awkward values and of every fixture's tensors match numpy" {
    special
    mount_ckpt "$SPECIAL_DIR/special.safetensors"
    py_check "$BATS_PY/check_stats.py" "$MNT" "$SPECIAL_DIR/special.manifest.json"
    unmount_ckpt
    local name
    for name in dcp_single dcp_zstd dcp_dtensor_ws4 dcp_fsdp2_optim hf_llama_sharded; do
        mount_ckpt "$FIX/$name"
        py_check "$BATS_PY/check_stats.py" "$MNT" "$FIX/$name.manifest.json"
        unmount_ckpt
    done
    mount_ckpt "$FIX/st_single/model.safetensors"
    py_check "$BATS_PY/check_stats.py" "$MNT" "$FIX/st_single.manifest.json"
}

@test "stats: concurrent first readers all get the one result; -o dtype does not change it" {
    mount_ckpt "$FIX/dcp_dtensor_ws4" -o dtype=float16
    local d i pids=()
    d=$(test_tmp)
    for i in 1 2 3 4 5 6 7 8; do
        cat "$MNT/row_sharded.stats" >"$d/$i" &
        pids+=($!)
    done
    wait "${pids[@]}" # not a bare wait: the daemon is a child of this shell too
    for i in 2 3 4 5 6 7 8; do
        cmp "$d/1" "$d/$i"
    done
    grep -q '"dtype":"float32"' "$d/1"
    [ "$(stat -c %s "$MNT/row_sharded.stats")" -eq "$(stat -c %s "$d/1")" ]
    # views of views and of non-tensors are not answered
    [ ! -e "$MNT/row_sharded.stats.stats" ]
    [ ! -e "$MNT/nope.stats" ]
    unmount_ckpt
    mount_ckpt "$FIX/dcp_dtensor_ws4"
    cmp "$d/1" "$MNT/row_sharded.stats"
}

@test "stats, dtype, hf: an unreadable key fails alone (EIO), everything else still reads" {
    local src
    src=$(copy_fixture dcp_dtensor_ws4)
    # row_sharded's chunks no longer tile it (chunk 1 a row short): the key is unreadable
    "$PY" "$BATS_PY/metadata_edit.py" "$src" chunk-size row_sharded 1 0 2
    mount_ckpt "$src" -o dtype=bfloat16,hf_shard=1K
    run cat "$MNT/row_sharded.stats"
    [ "$status" -ne 0 ]
    [[ "$output" == *"Input/output error"* ]]
    run cat "$MNT/row_sharded.npy"
    [ "$status" -ne 0 ]
    # left out of the HuggingFace directory, with the reason
    grep -q 'row_sharded' "$MNT/.ckptfs/hf/model-00001-of-"*.safetensors
    "$PY" -c 'import json, sys
ix = json.load(open(sys.argv[1]))
assert "row_sharded" not in ix["weight_map"], "row_sharded in weight_map"
assert "col_sharded" in ix["weight_map"], "col_sharded missing"
assert "row_sharded" in [s["name"] for s in ix["metadata"]["ckptfs.skipped"]], ix["metadata"]' \
        "$MNT/.ckptfs/hf/model.safetensors.index.json"
    cat "$MNT/.ckptfs/hf/"* >/dev/null
    cat "$MNT/col_sharded.stats" "$MNT/grid.npy" >/dev/null
    kill -0 "$CKPT_PID"
}
