#!/usr/bin/env bats
# SPEC "The tree" naming rules on keys built to hit each of them: escaping of '%' and '/',
# empty components, '.'/'..' as flat names, keys that are also directories (NAME.tensor,
# NAME.bytes), non-ASCII names sorted as bytes.

load helpers

teardown() {
    unmount_ckpt
}

# renamed_dcp FIXTURE: a copy of FIXTURE with awkward FQNs; sets SRC and MANIFEST.
renamed_dcp() {
    local dir
    dir=$(test_tmp)
    SRC=$dir/$1
    MANIFEST=$dir/$1.manifest.json
    "$PY" "$BATS_PY/make_fixture.py" renamed-dcp "$FIX/$1" "$FIX/$1.manifest.json" \
        "$SRC" "$MANIFEST"
}

# odd_safetensors: a safetensors file whose keys hit every rule; sets SRC and MANIFEST.
odd_safetensors() {
    local dir
    dir=$(test_tmp)
    SRC=$dir/odd.safetensors
    MANIFEST=$dir/odd.manifest.json
    "$PY" "$BATS_PY/make_fixture.py" odd-safetensors "$SRC" "$MANIFEST"
}

check_names() {
    py_check "$BATS_PY/check_manifest.py" "$MNT" "$MANIFEST" --src "$SRC" "$@"
}

@test "names: DCP keys that are also directories, %, /, empty component (dcp_single)" {
    renamed_dcp dcp_single
    mount_ckpt "$SRC"
    # The rules spelled out, beside the general check.
    [ -f "$MNT/step.bytes" ]
    [ -f "$MNT/step/lrs" ]
    [ -f "$MNT/model/i8.tensor" ]
    [ -f "$MNT/model/i8/m" ]
    [ -f "$MNT/m%25d%2Fl/u8" ]
    [ -f "$MNT/model/%/i3" ]
    [ "$(getfattr_fqn "$MNT/step.bytes")" = step ]
    [ "$(getfattr_fqn "$MNT/m%25d%2Fl/u8")" = "m%d/l.u8" ]
    check_names
}

@test "names: the same on zstd items (dcp_zstd)" {
    renamed_dcp dcp_zstd
    mount_ckpt "$SRC"
    check_names
}

@test "names: -o flat escapes % and / in whole FQNs (renamed dcp_single)" {
    renamed_dcp dcp_single
    mount_ckpt "$SRC" -o flat
    [ -f "$MNT/m%25d%2Fl.u8" ]
    [ -f "$MNT/model..i3" ]
    [ -f "$MNT/step" ]
    [ -f "$MNT/step.lrs" ]
    check_names --flat
}

@test "names: safetensors keys hitting every escaping and collision rule" {
    odd_safetensors
    mount_ckpt "$SRC"
    [ -f "$MNT/a.tensor" ]
    [ -f "$MNT/a/b.tensor" ]
    [ -f "$MNT/a/b/c" ]
    [ -f "$MNT/%.tensor" ]
    [ -f "$MNT/%/%.tensor" ]
    [ -f "$MNT/%/%/%" ]
    [ -f "$MNT/x/%25" ]
    [ -f "$MNT/x/%2525" ]
    [ -f "$MNT/g/%" ]
    [ -f "$MNT/s%2Ft/u" ]
    check_names
}

@test "names: safetensors keys, -o flat ('' as %, '.' as %2E, '..' as %2E%2E)" {
    odd_safetensors
    mount_ckpt "$SRC" -o flat
    [ -f "$MNT/%" ]
    [ -f "$MNT/%2E" ]
    [ -f "$MNT/%2E%2E" ]
    [ -f "$MNT/..h" ]
    [ -f "$MNT/s%2Ft.u" ]
    check_names --flat
}

@test "names: a lookup of an unescaped or wrong name is ENOENT" {
    odd_safetensors
    mount_ckpt "$SRC"
    [ ! -e "$MNT/a/b/c.tensor" ]
    [ ! -e "$MNT/x/%" ]
    [ ! -e "$MNT/s" ]
    [ ! -e "$MNT/a.bytes" ]
    run stat "$MNT/%2E"
    [ "$status" -ne 0 ]
}

getfattr_fqn() {
    "$PY" -c 'import os, sys; print(os.getxattr(sys.argv[1], "user.ckpt.fqn").decode())' "$1"
}
