#!/usr/bin/env bats
# DCP checkpoints in the safetensors serialization format (FileSystemWriter(serialization_
# format=SerializationFormat.SAFETENSORS) of torch >= 2.8, and NeMo AutoModel's backport):
# tests/fixtures/dcp-safetensors, made by its generator to the writers' byte layout.  Every key
# reads exactly (fixture manifests, and an independent reader of the files); damage to a
# header or to .metadata gives EIO for the keys it touches alone; -o rw is refused.

load helpers

STFIX=tests/fixtures/dcp-safetensors
ST_FIXTURES=(dcp_st_nemo dcp_st_nemo_ws4 dcp_st_torch)

teardown() {
    unmount_ckpt
}

# copy_st NAME: a writable copy of an st fixture; prints its path.
copy_st() {
    local dir
    dir=$(test_tmp) || return 1
    cp -r "$STFIX/$1" "$dir/$1"
    chmod -R u+w "$dir/$1"
    echo "$dir/$1"
}

damage() {
    "$PY" "$BATS_PY/st_dcp_damage.py" "$@"
}

# check_st_damage NAME SRC LOG_NEEDLE [--bad FQN...]: mounts SRC (a damaged copy of NAME):
# the --bad keys and those whose items pass their file's end fail with EIO, every other key
# reads its manifest bytes, the log names LOG_NEEDLE, the daemon keeps serving.
check_st_damage() {
    local name=$1 src=$2 needle=$3
    shift 3
    mount_ckpt "$src"
    py_check "$BATS_PY/check_damaged.py" "$MNT" "$STFIX/$name.manifest.json" "$src" "$@" \
        --log "$CKPT_LOG" --expect-in-log "$needle"
    kill -0 "$CKPT_PID"
    mountpoint -q "$MNT"
}

# keys_of NAME [FILE]: every tensor key of fixture NAME (with FILE: those with an item there).
keys_of() {
    "$PY" - "$STFIX/$1" "${2:-}" <<'PY'
import sys
sys.path.insert(0, "tests/bats")
import dcp_storage
src, only = sys.argv[1], sys.argv[2]
md = dcp_storage.load_metadata(src)
kinds = dcp_storage._field(md, "state_dict_metadata")
for fqn, items in sorted(dcp_storage.items_by_fqn(src).items()):
    if type(kinds[fqn]).__name__ == "BytesStorageMetadata":
        continue
    if not only or any(rel == only for rel, _, _ in items):
        print(fqn)
PY
}

bad_args() {
    local k
    for k in "$@"; do
        printf -- '--bad\n%s\n' "$k"
    done
}

@test "dcp-safetensors: the independent reader finds every key's manifest bytes in the files" {
    local name
    for name in "${ST_FIXTURES[@]}"; do
        run py_check "$BATS_PY/dcp_st_reader.py" "$STFIX/$name" "$STFIX/$name.manifest.json"
        [ "$status" -eq 0 ] || { printf '%s\n' "$output" >&2; false; }
    done
}

@test "dcp-safetensors: the generator writes exactly the committed fixtures" {
    local dir name f
    dir=$(test_tmp)
    run env PYTHONDONTWRITEBYTECODE=1 "$PY" "$STFIX/gen_dcp_safetensors.py" "$dir"
    [ "$status" -eq 0 ] || { printf '%s\n' "$output" >&2; false; }
    for name in "${ST_FIXTURES[@]}"; do
        cmp "$dir/$name.manifest.json" "$STFIX/$name.manifest.json"
        for f in "$STFIX/$name"/.metadata "$STFIX/$name"/*.distcp; do
            cmp "$f" "$dir/$name/$(basename "$f")"
        done
        [ "$(ls -A "$dir/$name" | wc -l)" -eq "$(ls -A "$STFIX/$name" | wc -l)" ]
    done
}

@test "dcp-safetensors: every key of every fixture reads exactly through a mount (tree, bytes, xattrs, sub-ranges)" {
    local name
    for name in "${ST_FIXTURES[@]}"; do
        mount_ckpt "$STFIX/$name"
        py_check "$BATS_PY/check_manifest.py" "$MNT" "$STFIX/$name.manifest.json" --src "$STFIX/$name"
        unmount_ckpt
    done
}

@test "dcp-safetensors: -o flat and -o npy mounts read exactly too" {
    mount_ckpt "$STFIX/dcp_st_nemo_ws4" -o flat
    py_check "$BATS_PY/check_manifest.py" "$MNT" "$STFIX/dcp_st_nemo_ws4.manifest.json" --flat
    unmount_ckpt
    mount_ckpt "$STFIX/dcp_st_torch" -o npy
    py_check "$BATS_PY/check_manifest.py" "$MNT" "$STFIX/dcp_st_torch.manifest.json" --npy-names
}

@test "dcp-safetensors: views (.npy, DIR.safetensors) and metadata.json on the NeMo layout" {
    mount_ckpt "$STFIX/dcp_st_nemo"
    "$PY" - "$MNT" "$STFIX/dcp_st_nemo.manifest.json" <<'PY'
import hashlib, json, sys
import numpy as np
sys.path.insert(0, "tests/bats")
import st_format
mnt, manifest = sys.argv[1], json.load(open(sys.argv[2]))
a = np.load(mnt + "/model/embed/weight.npy")
assert a.shape == (8, 5) and a.dtype == np.float32, (a.shape, a.dtype)
assert hashlib.sha256(a.tobytes()).hexdigest() == manifest["model.embed.weight"]["sha256"]
meta, tensors, _, _ = st_format.parse(open(mnt + "/model/layers.safetensors", "rb").read())
code, shape, raw = tensors["0.attn.wq"]
assert (code, shape) == ("BF16", [4, 6]), (code, shape)
assert hashlib.sha256(raw).hexdigest() == manifest["model.layers.0.attn.wq"]["sha256"]
md = json.load(open(mnt + "/.ckptfs/metadata.json"))
chunk = md["keys"]["model.embed.weight"]["chunks"][0]
assert chunk["format"] == "raw", chunk  # read above, so found in its safetensors blob
PY
}

@test "dcp-safetensors: -o rw is refused with one line naming the format, and nothing changes" {
    local name src before
    for name in dcp_st_nemo dcp_st_torch; do
        src=$(copy_st "$name")
        before=$(cd "$src" && find . -type f -exec sha256sum {} + | sort)
        run_ckptfs_refusal -o rw "$src"
        expect_refusal "$src"
        [[ "${lines[0]}" == *"safetensors serialization format"* ]] || { echo "${lines[0]}" >&2; false; }
        [ "$(cd "$src" && find . -type f -exec sha256sum {} + | sort)" = "$before" ]
    done
}

@test "damaged: header length past the end of the file (NeMo, ws4 rank 3): its keys EIO, logged" {
    local src
    src=$(copy_st dcp_st_nemo_ws4)
    damage "$src" header-len __3_0.distcp 0 100000
    mapfile -t bad < <(bad_args $(keys_of dcp_st_nemo_ws4 __3_0.distcp))
    [ "${#bad[@]}" -ge 4 ]
    check_st_damage dcp_st_nemo_ws4 "$src" "safetensors header" "${bad[@]}"
}

@test "damaged: a header's data_offsets pass the file's end (ws4 rank 2): its keys EIO, others intact" {
    local src at b e
    src=$(copy_st dcp_st_nemo_ws4)
    read -r at b e < <(damage "$src" blob-at __2_0.distcp grid)
    damage "$src" header-text __2_0.distcp "$at" "\"grid\":{\"dtype\":\"I32\",\"shape\":[3,2],\"data_offsets\":[$b,$e]" \
        "\"grid\":{\"dtype\":\"I32\",\"shape\":[3,2],\"data_offsets\":[$b,${e//?/9}]"
    mapfile -t bad < <(bad_args $(keys_of dcp_st_nemo_ws4 __2_0.distcp))
    [ "${#bad[@]}" -ge 4 ]
    check_st_damage dcp_st_nemo_ws4 "$src" "pass the end" "${bad[@]}"
}

@test "damaged: .metadata points a tensor 8 bytes past its bytes in the blob: that key EIO" {
    local src rel off len
    src=$(copy_st dcp_st_nemo)
    read -r rel off len < <("$PY" -c 'import sys; sys.path.insert(0, "tests/bats"); import dcp_storage; print(*dcp_storage.items_by_fqn(sys.argv[1])["model.i32"][0])' "$src")
    "$PY" "$BATS_PY/metadata_edit.py" "$src" item-range model.i32 $((off + 8)) "$len"
    check_st_damage dcp_st_nemo "$src" "neither the tensor's bytes" --bad model.i32
}

@test "damaged: the header says I32 where .metadata says float32: that key EIO" {
    local src at b e
    src=$(copy_st dcp_st_nemo)
    read -r at b e < <(damage "$src" blob-at __0_0.distcp model.embed.weight)
    damage "$src" header-text __0_0.distcp "$at" '"model.embed.weight":{"dtype":"F32"' '"model.embed.weight":{"dtype":"I32"'
    check_st_damage dcp_st_nemo "$src" "header says int32" --bad model.embed.weight
}

@test "damaged: the header gives a chunk another shape of the same size: that key EIO" {
    local src at b e
    src=$(copy_st dcp_st_nemo)
    read -r at b e < <(damage "$src" blob-at __0_0.distcp model.embed.weight)
    damage "$src" header-text __0_0.distcp "$at" '"model.embed.weight":{"dtype":"F32","shape":[8,5]' \
        '"model.embed.weight":{"dtype":"F32","shape":[5,8]'
    check_st_damage dcp_st_nemo "$src" "shape [5,8]" --bad model.embed.weight
}

@test "damaged: DCP_SHARDING_INFO saves a chunk at other offsets than .metadata (ws4): that key EIO" {
    local src at b e
    src=$(copy_st dcp_st_nemo_ws4)
    read -r at b e < <(damage "$src" blob-at __1_0.distcp row_sharded)
    damage "$src" header-text __1_0.distcp "$at" '\"row_sharded\": {\"saved_offsets\": [3, 0]}' \
        '\"row_sharded\": {\"saved_offsets\": [4, 0]}'
    check_st_damage dcp_st_nemo_ws4 "$src" "saves it at offsets [4,0]" --bad row_sharded
}

@test "damaged: a zstd transform recorded on a tensor in a safetensors blob: that key EIO" {
    local src
    src=$(copy_st dcp_st_nemo_ws4)
    damage "$src" transforms col_sharded stream.zstd/1
    check_st_damage dcp_st_nemo_ws4 "$src" "transform" --bad col_sharded
}

@test "damaged: torch layout, the blob after rank 0's bytes entries cut short: its tensors EIO, bytes entries intact" {
    local src at b e
    src=$(copy_st dcp_st_torch)
    read -r at b e < <(damage "$src" blob-at __0_0.distcp model.b)
    [ "$at" -gt 0 ]
    damage "$src" header-len __0_0.distcp "$at" -16
    mapfile -t bad < <(bad_args $(keys_of dcp_st_torch __0_0.distcp))
    check_st_damage dcp_st_torch "$src" "safetensors header" "${bad[@]}"
    # the bytes entries stored before the blob still read as torch.save archives
    [ "$(sha256sum <"$MNT/step" | cut -c1-64)" = "$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["step"]["sha256"])' "$STFIX/dcp_st_torch.manifest.json")" ]
}

@test "damaged: a tensor item past the end of its file: that key EIO" {
    local src
    src=$(copy_st dcp_st_nemo)
    "$PY" "$BATS_PY/metadata_edit.py" "$src" item-range model.ids 100000 40
    check_st_damage dcp_st_nemo "$src" "before the item's end" --bad model.ids
}

@test "dcp-safetensors: real torch loads the bytes entries and the .npy views through the mount" {
    "$PY" -c 'import torch' 2>/dev/null || skip "python3-torch is not installed"
    mount_ckpt "$STFIX/dcp_st_torch"
    "$PY" - "$MNT" "$STFIX/dcp_st_torch.manifest.json" <<'PY'
import hashlib, json, sys
import numpy as np
import torch
mnt, manifest = sys.argv[1], json.load(open(sys.argv[2]))
assert torch.load(mnt + "/step") == 1000
assert torch.load(mnt + "/meta/name") == "run-7"
for fqn, want in manifest.items():
    if want["kind"] != "tensor":
        continue
    path = mnt + "/" + fqn.replace(".", "/") + ".npy"
    a = np.load(path)
    if want["dtype"] == "bfloat16":  # NumPy has none: the view holds <u2, torch reinterprets
        t = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    else:
        t = torch.from_numpy(a)
    assert str(t.dtype) == "torch." + want["dtype"], (fqn, t.dtype)
    assert list(t.shape) == want["shape"], (fqn, t.shape)
    raw = t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
    assert hashlib.sha256(raw).hexdigest() == want["sha256"], fqn
PY
}
