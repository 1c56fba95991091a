#!/usr/bin/env bats
# SPEC "Command line": ckptfs cp [options] SOURCE[:PATH] DEST copies a file or directory of
# the tree or of a view with no mount.  What it writes must equal what a read through a
# mount of the same checkpoint with the same options returns (cmp / diff -r against the
# mount); errors are one line and exit status 1, and never leave a partial file.

load helpers

teardown() {
    unmount_ckpt
}

# LeakSanitizer does not run everywhere (ptrace, some sandboxes): cp is checked for leaks
# where a run that leaks nothing passes with it on.
setup_file() {
    CP_LEAKS=0
    if ASAN_OPTIONS=detect_leaks=1 "$CKPTFS" --version >/dev/null 2>&1; then
        CP_LEAKS=1
    fi
    export CP_LEAKS
}

cp_ck() {
    ASAN_OPTIONS=detect_leaks=${CP_LEAKS:-0} "$CKPTFS" cp "$@"
}

# same_as_mount DEST PATH: DEST (file or directory) equals PATH under the mount.
same_as_mount() {
    if [ -d "$MNT/$2" ]; then
        diff -r "$MNT/$2" "$1"
    else
        cmp "$MNT/$2" "$1"
    fi
}

@test "cp: the whole tree and every kind of view equal the mount's bytes (dcp_single)" {
    mount_ckpt "$FIX/dcp_single"
    local out
    out=$(test_tmp)
    cp_ck "$FIX/dcp_single:" "$out/"
    same_as_mount "$out/dcp_single" ""
    # DEST that does not exist yet is the copy's name
    cp_ck "$FIX/dcp_single:model/layers" "$out/layers-copy"
    same_as_mount "$out/layers-copy" model/layers
    local p
    for p in .ckptfs/model.pt .ckptfs/model.safetensors .ckptfs/metadata.json \
        model/layers/0.pt model/layers/0.safetensors model/embed/weight.npy model.pt step; do
        cp_ck "$FIX/dcp_single:$p" "$out/one"
        same_as_mount "$out/one" "$p"
        rm "$out/one"
    done
    # a view directory: what /.ckptfs lists
    cp_ck "$FIX/dcp_single:.ckptfs" "$out"
    same_as_mount "$out/.ckptfs" .ckptfs
    # the copied archive is a torch.save file torch reads like the view
    py_check "$BATS_PY/check_pt.py" "$MNT" "$FIX/dcp_single.manifest.json" \
        --src "$FIX/dcp_single" --file "$out/.ckptfs/model.pt" /
    # no temporary files left behind
    [ -z "$(find "$out" -name '*.ckptfs-*')" ]
}

@test "cp: sharded, zstd and safetensors sources, whole trees and views" {
    local out name src
    for name in dcp_dtensor_ws4 dcp_zstd dcp_fsdp2_optim hf_llama_sharded; do
        src=$FIX/$name
        mount_ckpt "$src"
        out=$(test_tmp)
        cp_ck "$src:" "$out/tree"
        same_as_mount "$out/tree" ""
        cp_ck "$src:.ckptfs/model.pt" "$out/model.pt"
        same_as_mount "$out/model.pt" .ckptfs/model.pt
        cp_ck "$src:.ckptfs/model.safetensors" "$out/"
        same_as_mount "$out/model.safetensors" .ckptfs/model.safetensors
        unmount_ckpt
    done
    mount_ckpt "$FIX/st_single/model.safetensors"
    out=$(test_tmp)
    cp_ck "$FIX/st_single/model.safetensors:" "$out/tree"
    same_as_mount "$out/tree" ""
}

@test "cp: -o npy and -o flat copy what those mounts show" {
    mount_ckpt "$FIX/dcp_single" -o npy
    local out
    out=$(test_tmp)
    cp_ck -o npy "$FIX/dcp_single:model" "$out/m"
    same_as_mount "$out/m" model
    ls "$out/m/embed" | grep -qx weight.npy
    unmount_ckpt
    mount_ckpt "$FIX/dcp_dtensor_ws4" -o flat
    cp_ck -o flat,cache=4K "$FIX/dcp_dtensor_ws4:" "$out/flat"
    same_as_mount "$out/flat" ""
}

@test "cp: progress on a terminal, silence otherwise" {
    local out
    out=$(test_tmp)
    run cp_ck "$FIX/dcp_single:.ckptfs/model.pt" "$out/a.pt"
    [ "$status" -eq 0 ]
    [ -z "$output" ]
    command -v script >/dev/null || skip "script(1) is not installed"
    ASAN_OPTIONS=detect_leaks=${CP_LEAKS:-0} \
        script -qec "$CKPTFS cp $FIX/dcp_single: $out/b" "$out/typescript" >/dev/null
    grep -q '100%' "$out/typescript"
    grep -q 'ETA' "$out/typescript"
    grep -q '/s' "$out/typescript"
}

@test "cp: bad SOURCE, bad PATH, bad options: one line, exit 1, nothing written" {
    local out
    out=$(test_tmp)
    run cp_ck "$out/nothing-here:x" "$out/d"
    [ "$status" -eq 1 ]
    [ "${#lines[@]}" -eq 1 ]
    [[ "$output" == ckptfs:* ]]
    run cp_ck "$FIX/dcp_single:model/no/such/key" "$out/d"
    [ "$status" -eq 1 ]
    [ "${#lines[@]}" -eq 1 ]
    [[ "$output" == *"model/no/such/key"*"No such file"* ]]
    run cp_ck -o cache=lots "$FIX/dcp_single:" "$out/d"
    [ "$status" -eq 1 ]
    [ "${#lines[@]}" -eq 1 ]
    run cp_ck -o rw "$FIX/dcp_single:" "$out/d"
    [ "$status" -eq 1 ]
    run cp_ck -o no_such_option "$FIX/dcp_single:" "$out/d"
    [ "$status" -eq 1 ]
    [ "${#lines[@]}" -eq 1 ]
    run cp_ck "$FIX/dcp_single:step"
    [ "$status" -eq 1 ]
    # the parent of DEST is missing
    run cp_ck "$FIX/dcp_single:step" "$out/no/such/dir/step"
    [ "$status" -eq 1 ]
    [ "${#lines[@]}" -eq 1 ]
    [ -z "$(ls -A "$out")" ]
    # a directory where a file goes: that file fails, naming DEST; the others are copied
    mkdir -p "$out/meta/name"
    run cp_ck "$FIX/dcp_single:meta" "$out/"
    [ "$status" -eq 1 ]
    [[ "$output" == *"$out/meta/name: Is a directory"* ]]
    [ -f "$out/meta/lrs" ]
    [ -z "$(find "$out" -name '*.ckptfs-*')" ]
}

@test "cp: an unreadable key fails alone: no partial file under its name, the rest copied" {
    local src out
    src=$(copy_fixture dcp_single_perfile)
    out=$(test_tmp)
    # the data file of one key cut short: that key reads EIO
    local victim
    victim=$("$PY" "$BATS_PY/dcp_storage.py" "$src" | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
print(d["model.embed.weight"][0][0])')
    truncate -s 100 "$src/$victim"
    run cp_ck "$src:model" "$out/m"
    [ "$status" -eq 1 ]
    [[ "$output" == *"model/embed/weight"*"Input/output error"* ]]
    [ ! -e "$out/m/embed/weight" ]
    [ -z "$(find "$out" -name '*.ckptfs-*')" ]
    mount_ckpt "$FIX/dcp_single_perfile"
    cmp "$out/m/layers/0/attn/wq/weight" "$MNT/model/layers/0/attn/wq/weight"
    cmp "$out/m/ints" "$MNT/model/ints"
    # an existing file is replaced only by a complete copy
    echo old >"$out/w"
    run cp_ck "$src:model/embed/weight" "$out/w"
    [ "$status" -eq 1 ]
    [ "$(cat "$out/w")" = old ]
}

@test "cp: SOURCE paths holding ':' and DEST semantics like cp(1)" {
    local d out
    d=$(test_tmp)
    out=$(test_tmp)
    cp -r "$FIX/dcp_single" "$d/step:100"
    mount_ckpt "$FIX/dcp_single"
    cp_ck "$d/step:100:model/embed" "$out/"
    same_as_mount "$out/embed" model/embed
    cp_ck "$d/step:100" "$out/whole"
    same_as_mount "$out/whole" ""
    # into an existing directory: its last component, again (overwrites)
    cp_ck "$d/step:100:model/embed" "$out/"
    same_as_mount "$out/embed" model/embed
    # -r is accepted, as cp users type it
    cp_ck -r "$FIX/dcp_single:meta" "$out/meta"
    same_as_mount "$out/meta" meta
}
