#!/usr/bin/env bats
# Nothing outside SOURCE is ever opened (SPEC "Errors"): storage paths and data files that
# would lead out of the checkpoint directory are refused at mount, in one line naming the
# path.  cli.bats covers an absolute path, a leading "..", and a data file that is an
# absolute symlink out; this file covers the other ways out (and one way that stays in).
# The .metadata files are rewritten with metadata_edit.py (stand-in classes, same globals).

load helpers

teardown() {
    unmount_ckpt
}

# relpath SRC PATH: every item of every key of dcp_single now lives in PATH.
relpath_all() {
    local src=$1 rel=$2 fqn
    for fqn in $("$PY" -c '
import json, sys
print(" ".join(json.load(open(sys.argv[1]))))' "$FIX/dcp_single.manifest.json"); do
        "$PY" "$BATS_PY/metadata_edit.py" "$src" relpath "$fqn" "$rel"
    done
}

# outside: a directory beside the test's SOURCE holding a copy of dcp_single's shard, so a
# path that gets out would find real data there (and reading it would "work").
outside_dir() {
    local dir
    dir=$(test_tmp)
    cp "$FIX/dcp_single/__0_0.distcp" "$dir/__0_0.distcp"
    chmod u+w "$dir/__0_0.distcp"
    echo "$dir"
}

@test "refuse: a storage path with .. inside it (d/../__0_0.distcp, lexically inside)" {
    local src
    src=$(copy_fixture dcp_single)
    mkdir "$src/d"
    "$PY" "$BATS_PY/metadata_edit.py" "$src" relpath model.i8 d/../__0_0.distcp
    run_ckptfs_refusal "$src"
    expect_refusal "d/../__0_0.distcp"
}

@test "refuse: a storage path that climbs out and back in (../NAME/__0_0.distcp)" {
    local src
    src=$(copy_fixture dcp_single)
    "$PY" "$BATS_PY/metadata_edit.py" "$src" relpath model.i8 "../$(basename "$src")/__0_0.distcp"
    run_ckptfs_refusal "$src"
    expect_refusal "__0_0.distcp"
}

@test "refuse: an absolute storage path that points into SOURCE itself" {
    local src
    src=$(copy_fixture dcp_single)
    "$PY" "$BATS_PY/metadata_edit.py" "$src" relpath model.i8 "$(realpath "$src")/__0_0.distcp"
    run_ckptfs_refusal "$src"
    expect_refusal "__0_0.distcp"
}

@test "refuse: a storage path with a NUL byte (__0_0.distcp\\0/../../etc/passwd)" {
    local src
    src=$(copy_fixture dcp_single)
    "$PY" - "$src" <<'PY'
import pickle, sys
sys.path.insert(0, "tests/bats")
import metadata_edit as m
path = sys.argv[1] + "/.metadata"
md = m.Loader(open(path, "rb")).load()
for info in m.field(md, "storage_data").values():
    m.set_field(info, "relative_path", "__0_0.distcp\0/../../../etc/passwd")
pickle.dump(md, open(path, "wb"), protocol=4)
PY
    run_ckptfs_refusal "$src"
    expect_refusal .metadata
}

@test "refuse: a data file that is a relative symlink climbing out (../OUT/__0_0.distcp)" {
    local src out
    src=$(copy_fixture dcp_single)
    out=$(outside_dir)
    rm "$src/__0_0.distcp"
    ln -s "$(realpath --relative-to="$src" "$out")/__0_0.distcp" "$src/__0_0.distcp"
    run_ckptfs_refusal "$src"
    expect_refusal __0_0.distcp
}

@test "refuse: a storage directory that is a symlink out (d -> OUT, path d/__0_0.distcp)" {
    local src out
    src=$(copy_fixture dcp_single)
    out=$(outside_dir)
    ln -s "$out" "$src/d"
    relpath_all "$src" d/__0_0.distcp
    run_ckptfs_refusal "$src"
    expect_refusal d/__0_0.distcp
}

@test "refuse: a storage directory that is a relative symlink out (d -> ../OUT)" {
    local src out
    src=$(copy_fixture dcp_single)
    out=$(outside_dir)
    ln -s "$(realpath --relative-to="$src" "$out")" "$src/d"
    relpath_all "$src" d/__0_0.distcp
    run_ckptfs_refusal "$src"
    expect_refusal d/__0_0.distcp
}

@test "refuse: .metadata that is a symlink out of SOURCE" {
    local src out
    src=$(copy_fixture dcp_single)
    out=$(test_tmp)
    mv "$src/.metadata" "$out/.metadata"
    ln -s "$out/.metadata" "$src/.metadata"
    run_ckptfs_refusal "$src"
    expect_refusal .metadata
}

@test "refuse: a safetensors shard that is a symlink out of a model directory" {
    local src out
    src=$(test_tmp)/hf
    cp -r "$FIX/hf_llama_sharded" "$src"
    chmod -R u+w "$src"
    out=$(test_tmp)
    mv "$src/model-00002-of-00004.safetensors" "$out/"
    ln -s "$out/model-00002-of-00004.safetensors" "$src/model-00002-of-00004.safetensors"
    run_ckptfs_refusal "$src"
    expect_refusal model-00002-of-00004.safetensors
}

@test "refuse: a safetensors index whose weight_map names ../OUT/x.safetensors" {
    local src out rel
    src=$(test_tmp)/hf
    cp -r "$FIX/hf_llama_sharded" "$src"
    chmod -R u+w "$src"
    out=$(test_tmp)
    cp "$src/model-00004-of-00004.safetensors" "$out/x.safetensors"
    rel=$(realpath --relative-to="$src" "$out")/x.safetensors
    "$PY" - "$src/model.safetensors.index.json" "$rel" <<'PY'
import json, sys
path, rel = sys.argv[1:3]
idx = json.load(open(path))
for k, v in idx["weight_map"].items():
    if v == "model-00004-of-00004.safetensors":
        idx["weight_map"][k] = rel
json.dump(idx, open(path, "w"))
PY
    rm "$src/model-00004-of-00004.safetensors"
    run_ckptfs_refusal "$src"
    expect_refusal x.safetensors index.json
}

@test "a data file that is a symlink staying inside SOURCE is followed (reads match)" {
    local src
    src=$(copy_fixture dcp_single)
    mkdir "$src/real"
    mv "$src/__0_0.distcp" "$src/real/__0_0.distcp"
    ln -s real/__0_0.distcp "$src/__0_0.distcp"
    mount_ckpt "$src"
    check_mounted dcp_single
}

@test "a storage path in a subdirectory of SOURCE (sub/dir/__0_0.distcp) reads" {
    local src
    src=$(copy_fixture dcp_single)
    mkdir -p "$src/sub/dir"
    mv "$src/__0_0.distcp" "$src/sub/dir/__0_0.distcp"
    relpath_all "$src" sub/dir/__0_0.distcp
    mount_ckpt "$src"
    check_mounted dcp_single
}
