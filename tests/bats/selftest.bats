#!/usr/bin/env bats
# Tests of the tests, with no daemon: the Python reference reader (ref_tree.py) reads every
# fixture to the manifest's bytes, and check_manifest.py accepts the tree SPEC describes,
# built as a plain directory, and rejects it once it is damaged.  A green integration test
# then means the checker really looked.

load helpers

need_user_xattrs() {
    local f
    f=$(test_tmp)/x
    : >"$f"
    "$PY" -c 'import os, sys; os.setxattr(sys.argv[1], "user.t", b"1")' "$f" 2>/dev/null ||
        skip "this temp filesystem has no user xattrs"
}

# ref NAME [--flat]: the reference tree of fixture NAME; sets REF and REF_SRC.
ref() {
    local name=$1
    shift
    REF=$(test_tmp)/tree
    REF_SRC=$(fixture_src "$name")
    "$PY" "$BATS_PY/ref_tree.py" "$REF_SRC" "$FIX/$name.manifest.json" "$REF" "$@"
}

check_ref() {
    local name=$1
    shift
    "$PY" "$BATS_PY/check_manifest.py" "$REF" "$FIX/$name.manifest.json" --src "$REF_SRC" \
        --unsorted-ok --no-direct "$@"
}

@test "selftest: the Python reference reader agrees with every manifest" {
    local entry name
    for entry in "${ALL_FIXTURES[@]}"; do
        name=${entry%% *}
        "$PY" "$BATS_PY/ref_tree.py" "$(fixture_src "$name")" "$FIX/$name.manifest.json"
    done
}

@test "selftest: path rules of SPEC's examples" {
    "$PY" - <<'PY'
import sys
sys.path.insert(0, "tests/bats")
from ckpt_names import escape, tree_layout
m = lambda *keys: {k: {"kind": "tensor"} for k in keys}
files, dirs = tree_layout(m("model.layers.0.attn.wq.weight"))
assert list(files) == ["model/layers/0/attn/wq/weight"], files
files, dirs = tree_layout(m("a", "a.b"))
assert sorted(files) == ["a.tensor", "a/b"], files
assert dirs[""] == ["a", "a.tensor"], dirs
files, _ = tree_layout({"s": {"kind": "bytes"}, "s.x": {"kind": "tensor"}})
assert sorted(files) == ["s.bytes", "s/x"], files
assert escape("") == "%" and escape(".") == "%2E" and escape("..") == "%2E%2E"
assert escape("a%b/c") == "a%25b%2Fc"
files, _ = tree_layout(m("a..b", "c."))
assert sorted(files) == ["a/%/b", "c/%"], files
files, _ = tree_layout(m("x/y.z", "p%q"), flat=True)
assert sorted(files) == ["p%25q", "x%2Fy.z"], files
PY
}

@test "selftest: check_manifest accepts reference trees (tree and flat)" {
    need_user_xattrs
    ref dcp_dtensor_ws4
    check_ref dcp_dtensor_ws4
    ref dcp_single --flat
    check_ref dcp_single --flat
    ref hf_llama_sharded
    check_ref hf_llama_sharded
}

@test "selftest: check_manifest rejects a flipped byte" {
    need_user_xattrs
    ref dcp_dtensor_ws4
    printf '\x55' | dd of="$REF/row_sharded" bs=1 seek=100 conv=notrunc 2>/dev/null
    run check_ref dcp_dtensor_ws4
    [ "$status" -eq 1 ]
    [[ "$output" == *"row_sharded: sha256"* ]]
}

@test "selftest: check_manifest rejects an extra file, a missing file, a wrong name" {
    need_user_xattrs
    ref dcp_single
    : >"$REF/model/extra"
    run check_ref dcp_single
    [ "$status" -eq 1 ]
    [[ "$output" == *"extra ['extra']"* ]]
    rm "$REF/model/extra"
    mv "$REF/model/layers/0/norm/weight" "$REF/model/layers/0/norm/weight.tensor"
    run check_ref dcp_single
    [ "$status" -eq 1 ]
    [[ "$output" == *"missing ['weight']"* ]]
}

@test "selftest: check_manifest rejects wrong or missing xattrs, wrong size" {
    need_user_xattrs
    ref dcp_single
    "$PY" -c 'import os, sys; os.setxattr(sys.argv[1], "user.ckpt.shape", b"[32, 16]")' \
        "$REF/model/embed/weight"
    "$PY" -c 'import os, sys; os.removexattr(sys.argv[1], "user.ckpt.kind")' "$REF/step"
    truncate -s 9 "$REF/model/i8"
    run check_ref dcp_single
    [ "$status" -eq 1 ]
    [[ "$output" == *"user.ckpt.shape = '[32, 16]'"* ]]
    [[ "$output" == *"step: getxattr user.ckpt.kind"* ]]
    [[ "$output" == *"model/i8: size 9, want 10"* ]]
    [[ "$output" == *"model/i8: mtime"* ]]
}

@test "selftest: check_damaged finds the keys a missing shard touches" {
    local src
    src=$(copy_fixture dcp_dtensor_ws4)
    rm "$src/__1_1.distcp"
    run "$PY" - "$src" <<'PY'
import sys
sys.path.insert(0, "tests/bats")
import check_damaged
print(" ".join(sorted(check_damaged.damaged_keys(sys.argv[1], []))))
PY
    [ "$status" -eq 0 ]
    [ "$output" = "col_sharded grid replicated row_sharded tiny_rows" ]
}
