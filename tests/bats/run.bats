#!/usr/bin/env bats
# A training run as one mount (README "Run directories"): SOURCE holds checkpoints in
# subdirectories; each complete one is a directory of the mount with its own tree and
# views, appearing and going as steps are written and removed, without remounting.

load helpers

teardown() {
    unmount_ckpt
}

# listing DIR: names as readdir gives them (the mount's own order), one line.
listing() {
    "$PY" -c 'import os, sys; print(" ".join(os.listdir(sys.argv[1])))' "$1"
}

# check_step MNT_DIR FIXTURE SRC_DIR: the step's tree against the fixture's manifest.
check_step() {
    py_check "$BATS_PY/check_manifest.py" "$1" "$FIX/$2.manifest.json" --src "$3"
}

@test "run: each checkpoint subdirectory is a directory of the mount, in natural order, bytes as the manifests say" {
    local run
    run=$(test_tmp)/run
    mkdir "$run"
    cp -r "$FIX/dcp_single" "$run/step_1000"
    cp -r "$FIX/hf_llama_sharded" "$run/step_2000"
    cp -r "$FIX/dcp_dtensor_ws4" "$run/step_10000"
    mkdir "$run/notes" "$run/step_3000"        # not checkpoints (yet)
    echo hello >"$run/notes/README"
    cp -r "$FIX/dcp_single" "$run/.hidden"     # hidden names are not steps
    ln -s step_1000 "$run/latest"              # nor are symlinks
    mount_ckpt "$run"
    [ "$(listing "$MNT")" = "step_1000 step_2000 step_10000" ]
    check_step "$MNT/step_1000" dcp_single "$run/step_1000"
    check_step "$MNT/step_2000" hf_llama_sharded "$run/step_2000"
    check_step "$MNT/step_10000" dcp_dtensor_ws4 "$run/step_10000"
    # each step has its own views
    "$PY" - "$MNT/step_1000" "$FIX/dcp_single.manifest.json" <<'EOF2'
import json, sys, numpy as np
mnt, manifest = sys.argv[1], json.load(open(sys.argv[2]))
md = json.load(open(mnt + "/.ckptfs/metadata.json"))
assert sorted(md["keys"]) == sorted(manifest), sorted(md["keys"])
w = np.load(mnt + "/model/embed/weight.npy")
raw = open(mnt + "/model/embed/weight", "rb").read()
assert w.tobytes() == raw and list(w.shape) == manifest["model.embed.weight"]["shape"]
with open(mnt + "/model.safetensors", "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    header = json.loads(f.read(n))
assert "embed.weight" in header, sorted(header)
EOF2
    [ ! -e "$MNT/notes" ]
    [ ! -e "$MNT/latest" ]
    [ ! -e "$MNT/.hidden" ]
    [ ! -e "$MNT/.ckptfs" ]
}

@test "run: a step appears once its .metadata is written and goes when removed, without remounting" {
    local run
    run=$(test_tmp)/run
    mkdir "$run"
    cp -r "$FIX/dcp_single" "$run/step_1000"
    mount_ckpt "$run"
    [ "$(listing "$MNT")" = "step_1000" ]
    cat "$MNT/step_1000/model/embed/weight" >/dev/null
    # a save in progress: data files first, .metadata last (by rename, as torch does)
    mkdir "$run/step_2000"
    cp "$FIX/dcp_dtensor_ws4/"*.distcp "$run/step_2000/"
    [ "$(listing "$MNT")" = "step_1000" ]
    cp "$FIX/dcp_dtensor_ws4/.metadata" "$run/step_2000/.metadata.tmp"
    mv "$run/step_2000/.metadata.tmp" "$run/step_2000/.metadata"
    [ "$(listing "$MNT")" = "step_1000 step_2000" ]
    check_step "$MNT/step_2000" dcp_dtensor_ws4 "$run/step_2000"
    # removed: gone from the listing, and nothing under it opens any more
    rm -rf "$run/step_1000"
    [ "$(listing "$MNT")" = "step_2000" ]
    run cat "$MNT/step_1000/model/embed/weight"
    [ "$status" -ne 0 ]
    run ls "$MNT/step_1000"
    [ "$status" -ne 0 ]
    # and back again, with other contents under the same name
    cp -r "$FIX/dcp_zstd" "$run/step_1000"
    [ "$(listing "$MNT")" = "step_1000 step_2000" ]
    check_step "$MNT/step_1000" dcp_zstd "$run/step_1000"
    check_step "$MNT/step_2000" dcp_dtensor_ws4 "$run/step_2000"
}

@test "run: a step whose checkpoint cannot be opened is logged once and not shown" {
    local run
    run=$(test_tmp)/run
    mkdir "$run"
    cp -r "$FIX/dcp_single" "$run/step_1000"
    mkdir "$run/step_2000"
    echo "not a pickle" >"$run/step_2000/.metadata"
    mount_ckpt "$run"
    run ls "$MNT/step_2000"
    [ "$status" -ne 0 ]
    run ls "$MNT/step_2000"
    [ "$status" -ne 0 ]
    [ "$(listing "$MNT")" = "step_1000" ]
    [ "$(grep -c 'step_2000' "$CKPT_LOG")" -eq 1 ]
    grep 'step_2000' "$CKPT_LOG" | grep -q 'not shown until it changes'
    check_step "$MNT/step_1000" dcp_single "$run/step_1000"
    # fixed: shown again
    cp "$FIX/dcp_single/.metadata" "$run/step_2000/.metadata.tmp"
    cp "$FIX/dcp_single/__0_0.distcp" "$run/step_2000/"
    mv "$run/step_2000/.metadata.tmp" "$run/step_2000/.metadata"
    [ "$(listing "$MNT")" = "step_1000 step_2000" ]
    check_step "$MNT/step_2000" dcp_single "$run/step_2000"
}

@test "run: 200 steps mount and list without any being opened" {
    local run i
    run=$(test_tmp)/run
    mkdir "$run"
    for ((i = 1; i <= 200; i++)); do
        cp -r "$FIX/dcp_single" "$run/step_$((i * 100))"
    done
    mount_ckpt "$run"
    [ "$("$PY" -c 'import os, sys; print(len(os.listdir(sys.argv[1])))' "$MNT")" = 200 ]
    ls -l "$MNT" >/dev/null
    # an opened step keeps descriptors of its directory and data files: none yet
    local fds
    fds=$(ls "/proc/$CKPT_PID/fd" | wc -l)
    echo "daemon descriptors: $fds"
    [ "$fds" -lt 40 ]
    cmp "$MNT/step_15000/model/embed/weight" "$MNT/step_100/model/embed/weight"
    check_step "$MNT/step_20000" dcp_single "$run/step_20000"
    # using 60 steps one after the other keeps at most 16 idle ones open (2 descriptors each)
    for ((i = 1; i <= 60; i++)); do
        cmp "$MNT/step_$((i * 100))/model/embed/weight" "$MNT/step_20000/model/embed/weight"
    done
    fds=$(ls "/proc/$CKPT_PID/fd" | wc -l)
    echo "daemon descriptors after 60 steps: $fds"
    [ "$fds" -lt 60 ]
    # a step closed that way opens again when used
    check_step "$MNT/step_100" dcp_single "$run/step_100"
}

@test "run: -o rw on a run directory is refused with one line" {
    local run
    run=$(test_tmp)/run
    mkdir "$run"
    cp -r "$FIX/dcp_single" "$run/step_1000"
    run_ckptfs_refusal -o rw "$run"
    expect_refusal "run directory"
}

@test "run: a step re-saved in place is a live checkpoint: files opened after its new .metadata read the new save" {
    local d run
    d=$(test_tmp)
    run=$d/run
    mkdir "$run"
    timeout -k 5 120 "$PY" scripts/gen_dcp.py --out "$d/v0" --size 256K --tensors 2 --layout row8 --seed 1
    timeout -k 5 120 "$PY" scripts/gen_dcp.py --out "$d/v1" --size 256K --tensors 2 --layout row8 --seed 2
    cp -r "$d/v0" "$run/step_1"
    cp -r "$FIX/dcp_single" "$run/step_2"
    mount_ckpt "$run"
    sums() {
        "$PY" - "$1" "$2" <<'EOF2'
import hashlib, json, os, sys
mnt, sums = sys.argv[1], json.load(open(sys.argv[2]))
for fqn, want in sums.items():
    got = hashlib.sha256(open(os.path.join(mnt, *fqn.split(".")), "rb").read()).hexdigest()
    assert got == want, fqn
EOF2
    }
    sums "$MNT/step_1" "$d/v0.sha256.json"
    "$PY" "$BATS_PY/live_rewrite.py" "$run/step_1" 1 truncate "$d/v0" "$d/v1"
    sums "$MNT/step_1" "$d/v1.sha256.json"
    check_step "$MNT/step_2" dcp_single "$run/step_2"
    grep 'new checkpoint state' "$CKPT_LOG" | grep -q step_1
}

@test "run: a safetensors step written in place is shown once its file is whole" {
    local run n
    run=$(test_tmp)/run
    mkdir "$run"
    cp -r "$FIX/dcp_single" "$run/step_1"
    mkdir "$run/step_2"
    n=$(stat -c %s "$FIX/st_single/model.safetensors")
    head -c $((n / 2)) "$FIX/st_single/model.safetensors" >"$run/step_2/model.safetensors"
    mount_ckpt "$run"
    run ls "$MNT/step_2"
    [ "$status" -ne 0 ]
    [ "$(listing "$MNT")" = "step_1" ]
    # the rest of the file, written to the same inode
    tail -c +$((n / 2 + 1)) "$FIX/st_single/model.safetensors" >>"$run/step_2/model.safetensors"
    [ "$(listing "$MNT")" = "step_1 step_2" ]
    check_step "$MNT/step_2" st_single "$run/step_2"
}
