#!/usr/bin/env bats
# Small defects found by hostile input (issue 11): an index naming a shard outside SOURCE, a
# .metadata that is a symlink staying inside SOURCE, duplicate FQNs and FQNs holding a NUL,
# and statfs's namemax against the longest name the mount serves.  Every refusal is exit
# status 1 and one line that says what is wrong.

load helpers

teardown() {
    unmount_ckpt
}

# same_length_replace FILE OLD NEW: replaces every OLD by NEW (same length, python bytes
# literals) in FILE, so a pickle's length prefixes stay valid.
same_length_replace() {
    "$PY" - "$@" <<'PY'
import ast, sys
path, old, new = sys.argv[1], ast.literal_eval(sys.argv[2]), ast.literal_eval(sys.argv[3])
assert len(old) == len(new), (old, new)
blob = open(path, "rb").read()
assert old in blob, old
open(path, "wb").write(blob.replace(old, new))
PY
}

# hf_copy: a writable copy of hf_llama_sharded; prints its path.
hf_copy() {
    local src
    src=$(test_tmp)/hf
    cp -r "$FIX/hf_llama_sharded" "$src"
    chmod -R u+w "$src"
    echo "$src"
}

# index_point SRC SHARD NEW: every weight_map entry naming SHARD now names NEW.
index_point() {
    "$PY" - "$1/model.safetensors.index.json" "$2" "$3" <<'PY'
import json, sys
path, shard, new = sys.argv[1:4]
idx = json.load(open(path))
for k, v in idx["weight_map"].items():
    if v == shard:
        idx["weight_map"][k] = new
json.dump(idx, open(path, "w"))
PY
}

@test "refuse: an index naming a shard by a relative path out of SOURCE says it is outside" {
    local src out rel
    src=$(hf_copy)
    out=$(test_tmp)
    cp "$src/model-00004-of-00004.safetensors" "$out/x.safetensors"
    rel=$(realpath --relative-to="$src" "$out")/x.safetensors
    index_point "$src" model-00004-of-00004.safetensors "$rel"
    rm "$src/model-00004-of-00004.safetensors"
    run_ckptfs_refusal "$src"
    expect_refusal "model.safetensors.index.json"
    [[ "${lines[0]}" == *"$rel"*"outside"* ]] || { echo "${lines[0]}" >&2; false; }
    [[ "${lines[0]}" != *missing* ]]
}

@test "refuse: an index naming a shard by an absolute path says it is outside, even one into SOURCE" {
    local src abs
    src=$(hf_copy)
    abs=$(realpath "$src")/model-00004-of-00004.safetensors
    index_point "$src" model-00004-of-00004.safetensors "$abs"
    run_ckptfs_refusal "$src"
    expect_refusal "model.safetensors.index.json"
    [[ "${lines[0]}" == *"outside"* ]] || { echo "${lines[0]}" >&2; false; }
}

@test "an index naming a missing shard inside SOURCE still says it is missing" {
    local src
    src=$(hf_copy)
    rm "$src/model-00003-of-00004.safetensors"
    run_ckptfs_refusal "$src"
    expect_refusal "model-00003-of-00004.safetensors"
    [[ "${lines[0]}" == *missing* ]] || { echo "${lines[0]}" >&2; false; }
}

@test ".metadata that is a relative symlink staying inside SOURCE is followed, as data files are" {
    local src
    src=$(copy_fixture dcp_single)
    mkdir "$src/meta"
    mv "$src/.metadata" "$src/meta/real.metadata"
    ln -s meta/real.metadata "$src/.metadata"
    mount_ckpt "$src"
    check_mounted dcp_single
}

@test "refuse: .metadata that is a relative symlink climbing out of SOURCE" {
    local src out
    src=$(copy_fixture dcp_single)
    out=$(test_tmp)
    mv "$src/.metadata" "$out/.metadata"
    ln -s "$(realpath --relative-to="$src" "$out")/.metadata" "$src/.metadata"
    run_ckptfs_refusal "$src"
    expect_refusal .metadata
    [[ "${lines[0]}" == *"leaves the checkpoint directory"* ]] || { echo "${lines[0]}" >&2; false; }
}

@test "refuse: .metadata with one FQN twice in state_dict_metadata names the key" {
    local src
    src=$(copy_fixture dcp_single)
    # model.u8 becomes a second model.i8 everywhere (same length)
    same_length_replace "$src/.metadata" "b'model.u8'" "b'model.i8'"
    run_ckptfs_refusal "$src"
    expect_refusal .metadata
    [[ "${lines[0]}" == *"model.i8"*"twice"* ]] || { echo "${lines[0]}" >&2; false; }
}

@test "refuse: .metadata with a NUL inside an FQN says so" {
    local src
    src=$(copy_fixture dcp_single)
    same_length_replace "$src/.metadata" "b'model.u8'" "b'mod\\x00l.u8'"
    run_ckptfs_refusal "$src"
    expect_refusal .metadata
    [[ "${lines[0]}" == *"NUL"* ]] || { echo "${lines[0]}" >&2; false; }
}

# st_file OUT JSON_HEADER_TEXT DATA_BYTES: a safetensors file with exactly this header text.
st_file() {
    "$PY" - "$@" <<'PY'
import struct, sys
out, header, nbytes = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
header += b" " * ((8 - len(header) % 8) % 8)
open(out, "wb").write(struct.pack("<Q", len(header)) + header + bytes(nbytes))
PY
}

@test "refuse: a safetensors header naming one tensor twice names it" {
    local dir
    dir=$(test_tmp)
    st_file "$dir/m.safetensors" \
        '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}' 16
    run_ckptfs_refusal "$dir/m.safetensors"
    expect_refusal m.safetensors
    [[ "${lines[0]}" == *"'w'"*"twice"* ]] || { echo "${lines[0]}" >&2; false; }
}

@test "refuse: a safetensors header whose tensor name holds an escaped NUL (a\\u0000b)" {
    local dir
    dir=$(test_tmp)
    # cJSON would decode the name to "a": the file must not mount as if it were "a"
    st_file "$dir/m.safetensors" \
        '{"a\u0000b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}' 16
    run_ckptfs_refusal "$dir/m.safetensors"
    expect_refusal m.safetensors
    [[ "${lines[0]}" == *"NUL"* ]] || { echo "${lines[0]}" >&2; false; }
}

@test "a name with an escaped backslash before u0000 (a\\\\u0000) is an ordinary name" {
    local dir
    dir=$(test_tmp)
    st_file "$dir/m.safetensors" '{"a\\u0000":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}' 8
    mount_ckpt "$dir/m.safetensors" -o flat
    [ -f "$MNT/a\\u0000" ]
}

@test "statfs: namemax is 255 for ordinary names, and fits the longest name and its view" {
    local dir long dirname got
    mount_ckpt "$FIX/dcp_single"
    got=$("$PY" -c 'import os, sys; print(os.statvfs(sys.argv[1]).f_namemax)' "$MNT")
    [ "$got" -eq 255 ] || { echo "namemax $got" >&2; false; }
    unmount_ckpt
    dir=$(test_tmp)
    long=$(printf 'x%.0s' $(seq 300))
    dirname=$(printf 'd%.0s' $(seq 280))
    "$PY" - "$dir/m.safetensors" "$long" "$dirname" <<'PY'
import os, sys
sys.path.insert(0, "tests/bats")
import st_format
out, long, d = sys.argv[1:4]
blob = st_format.build([("a." + long, "F32", [2], bytes(8)), (d + ".w", "U8", [1], b"\x07")])
open(out, "wb").write(blob)
PY
    mount_ckpt "$dir/m.safetensors"
    got=$("$PY" -c 'import os, sys; print(os.statvfs(sys.argv[1]).f_namemax)' "$MNT")
    # the longest: the 300-character tensor file's .npy view
    [ "$got" -eq 304 ] || { echo "namemax $got, want 304" >&2; false; }
    [ "$(stat -c %s "$MNT/a/$long")" -eq 8 ]
    [ -f "$MNT/a/$long.npy" ]
    [ -f "$MNT/$dirname.safetensors" ]
    [ "$(od -An -tu1 "$MNT/$dirname/w" | tr -d ' ')" = 7 ]
}
