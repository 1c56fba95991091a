#!/usr/bin/env bats
# Real torch 1.13 (Debian 12's python3-torch) as an independent producer and consumer:
# checkpoints it writes at test time (one process; 4 ranks over gloo with row, column and
# uneven 2-D ShardedTensors; both single_file_per_rank settings; bf16, complex, bool, 0-d,
# empty, transposed, non-tensor values) read exactly through mounts, and the same checkpoints
# edited through -o rw load back in torch 1.13 with the new values and everything else as it
# was.  An edited torch 2.11 fixture keeps torch 2.11's layout (metadata_kept.py compares the
# pickles with stand-in classes).  One writer: the directory lock, and commits refused over a
# .metadata someone else replaced.

load helpers

T113=tests/bats/torch113.py
KEPT=tests/bats/metadata_kept.py
NAMES="single single_perfile ws4 ws4_perfile"

setup_file() {
    cd "$BATS_TEST_DIRNAME/../.." || return 1
    if ! /usr/bin/python3 -c 'import torch, numpy' 2>/dev/null; then
        echo "/usr/bin/python3 has no torch: install python3-torch (scripts/install-deps.sh)" >&2
        return 1
    fi
    # once per file: the 4-rank run costs a few seconds
    export GEN="$BATS_FILE_TMPDIR/t113"
    /usr/bin/python3 "$T113" gen "$GEN" >&2
}

teardown() {
    unmount_ckpt
}

# run_ok CMD...: runs CMD, printing its output when it fails.
run_ok() {
    run "$@"
    if [ "$status" -ne 0 ]; then
        printf '%s\n' "$output" >&2
        return 1
    fi
}

@test "torch 1.13: every key of 1-process and 4-rank checkpoints reads exactly; .bytes files load with torch.load" {
    for n in $NAMES; do
        mount_ckpt "$GEN/$n"
        run_ok "$PY" "$BATS_PY/check_manifest.py" "$MNT" "$GEN/$n.manifest.json" --src "$GEN/$n"
        run_ok "$PY" "$T113" bytes "$MNT" "$GEN/$n"
        unmount_ckpt
    done
}

@test "torch 1.13: checkpoints edited through -o rw (patch, cp over, new .npy, torch.save over a bytes key, unlink, rename) load in torch 1.13" {
    local tmp
    tmp=$(test_tmp)
    for n in $NAMES; do
        cp -a "$GEN/$n" "$tmp/$n"
        mount_ckpt "$tmp/$n" -o rw
        run_ok "$PY" "$T113" edit "$MNT" "$GEN/$n"
        unmount_ckpt
        # torch 1.13 itself: new values, old ones elsewhere, requires_grad & co kept
        run_ok "$PY" "$T113" verify "$GEN/$n" "$tmp/$n"
        # the stand-in reader: every entry and item well formed (items read with zipfile)
        run_ok "$PY" "$BATS_PY/read_metadata.py" --check "$tmp/$n"
        # and the pickle: torch 1.13's class paths, no storage_meta/version, planner_data None
        local e="$GEN/$n.edits.json" patch repl unl from to new bytes
        read -r patch repl unl from to new bytes < <("$PY" -c '
import json, sys; e = json.load(open(sys.argv[1]))
print(e["patch"], e["replace"], e["unlink"], e["rename"][0], e["rename"][1], e["new"], e["bytes"])' "$e")
        run_ok "$PY" "$KEPT" "$GEN/$n" "$tmp/$n" --changed "$patch,$repl,$bytes" \
            --removed "$unl,$from" --new "$to,$new"
        grep -q "torch.distributed._shard.checkpoint.metadata" "$tmp/$n/.metadata"
        run grep -q "torch.distributed.checkpoint.metadata" "$tmp/$n/.metadata"
        [ "$status" -ne 0 ]
    done
}

@test "torch 1.13: a tensor added to a checkpoint of bytes entries only loads in torch 1.13" {
    local tmp
    tmp=$(test_tmp)
    cp -a "$GEN/bytes_only" "$tmp/c"
    mount_ckpt "$tmp/c" -o rw
    "$PY" -c 'import numpy as np, sys; np.save(sys.argv[1], np.arange(4, dtype=np.float32))' "$MNT/w.npy"
    unmount_ckpt
    run_ok "$PY" - "$tmp/c" <<'PYEOF'
import sys
sys.path.insert(0, "tests/bats")
import torch, torch113
md, sd = torch113.load_all(sys.argv[1])
ok = (sd["step"] == 5 and sd["name"] == "bytes only" and torch.equal(sd["w"], torch.arange(4.0))
      and not md.state_dict_metadata["w"].properties.requires_grad and md.planner_data is None)
sys.exit(0 if ok else "loaded %r" % (sd,))
PYEOF
}

@test "torch 2.11: an edited fixture keeps its class paths, properties, planner_data and storage_meta" {
    local tmp
    tmp=$(test_tmp)
    cp -a "$FIX/dcp_single" "$tmp/single"
    mount_ckpt "$tmp/single" -o rw
    printf '\000\000\200\077' | dd of="$MNT/model/embed/weight" bs=1 seek=8 conv=notrunc 2>/dev/null
    "$PY" -c 'import numpy as np, sys; np.save(sys.argv[1], np.ones((2, 2), np.int64))' \
        "$MNT/model/layers/0/added.npy"
    unmount_ckpt
    run_ok "$PY" "$KEPT" "$FIX/dcp_single" "$tmp/single" --changed model.embed.weight \
        --new model.layers.0.added
    # the new key's planner path follows its siblings': ('model', 'layers', '0', 'added')
    run_ok "$PY" - "$tmp/single" <<'PYEOF'
import sys
sys.path.insert(0, "tests/bats")
import metadata_kept
md, _ = metadata_kept.load(sys.argv[1])
got = metadata_kept.fields(md)["planner_data"]["model.layers.0.added"]
sys.exit(0 if got == ("model", "layers", "0", "added") else "planner path %r" % (got,))
PYEOF

    cp -a "$FIX/dcp_dtensor_ws4" "$tmp/ws4"
    mount_ckpt "$tmp/ws4" -o rw
    printf '\000\000\200\077' | dd of="$MNT/row_sharded" bs=1 seek=100 conv=notrunc 2>/dev/null
    rm "$MNT/grid"
    unmount_ckpt
    run_ok "$PY" "$KEPT" "$FIX/dcp_dtensor_ws4" "$tmp/ws4" --changed row_sharded --removed grid
}

@test "torch 2.x: planner_data None or missing, transform_descriptors=None and unknown fields survive a commit" {
    local tmp
    tmp=$(test_tmp)
    cp -a "$FIX/dcp_single" "$tmp/orig"
    # what other torch versions (or planners) write, on a real 2.11 checkpoint
    "$PY" "$BATS_PY/metadata_edit.py" "$tmp/orig" planner-none model.i8
    "$PY" "$BATS_PY/metadata_edit.py" "$tmp/orig" planner-drop model.u8
    "$PY" "$BATS_PY/metadata_edit.py" "$tmp/orig" td-none
    "$PY" "$BATS_PY/metadata_edit.py" "$tmp/orig" extra-field future_field "kept as is"
    cp -a "$tmp/orig" "$tmp/c"
    mount_ckpt "$tmp/c" -o rw
    printf '\000\000\200\077' | dd of="$MNT/model/embed/weight" bs=1 seek=8 conv=notrunc 2>/dev/null
    mv "$MNT/model/i32" "$MNT/model/i32b"
    mv "$MNT/model/i8" "$MNT/model/i8b"
    mv "$MNT/model/u8" "$MNT/model/u8b"
    unmount_ckpt
    run_ok "$PY" "$KEPT" "$tmp/orig" "$tmp/c" --changed model.embed.weight \
        --removed model.i32,model.i8,model.u8 --new model.i32b,model.i8b,model.u8b
    run_ok "$PY" - "$tmp/c" <<'PYEOF'
import sys
sys.path.insert(0, "tests/bats")
import metadata_kept as mk
f = mk.fields(mk.load(sys.argv[1])[0])
pd = f["planner_data"]
tds = {mk.fields(v).get("transform_descriptors", "absent") for v in f["storage_data"].values()}
# a renamed key whose entry was None or missing keeps it so; one with a path gets a new one
ok = (pd["model.i8b"] is None and "model.u8b" not in pd and pd["model.i32b"] == ("model", "i32b")
      and f["future_field"] == "kept as is" and tds == {None} and list(f)[-1] == "future_field")
sys.exit(0 if ok else "planner_data %r, transform_descriptors %r, fields %r" % (pd, tds, list(f)))
PYEOF
}

@test "one writer: a second -o rw mount is refused with one line; the lock dies with its holder" {
    local tmp
    tmp=$(test_tmp)
    cp -a "$GEN/single" "$tmp/c"
    mount_ckpt "$tmp/c" -o rw
    mkdir "$tmp/m2"
    run "$CKPTFS" -o rw "$tmp/c" "$tmp/m2" -f
    [ "$status" -eq 1 ]
    [ "${#lines[@]}" -eq 1 ]
    [[ "$output" == *"already mounted read-write"* ]]
    run mountpoint -q "$tmp/m2"
    [ "$status" -ne 0 ]
    # readers are not writers: a read-only mount beside it is fine
    local first_mnt=$MNT first_pid=$CKPT_PID first_log=$CKPT_LOG
    mount_ckpt "$tmp/c"
    [ -f "$MNT/w" ]
    unmount_ckpt
    # kill -9 the writer: no lock is left behind
    kill -9 "$first_pid"
    wait "$first_pid" 2>/dev/null || true
    fusermount3 -u -z "$first_mnt" 2>/dev/null || true
    run grep -Eq "$SANITIZER_RE" "$first_log"
    [ "$status" -ne 0 ]
    mount_ckpt "$tmp/c" -o rw
    [ -f "$MNT/w" ]
}

@test "one writer: a commit over a .metadata someone else replaced is refused, nothing overwritten, pending bytes kept" {
    local tmp
    tmp=$(test_tmp)
    cp -a "$GEN/single" "$tmp/c"
    mount_ckpt "$tmp/c" -o rw
    # another writer re-saves .metadata (same content, a new file, as torch's rename does)
    cp "$tmp/c/.metadata" "$tmp/other" && mv "$tmp/other" "$tmp/c/.metadata"
    local before
    before=$(cd "$tmp/c" && ls -la --time-style=full-iso . && sha256sum .metadata __*)
    run dd if=/dev/zero of="$MNT/w" bs=8 count=1 conv=notrunc
    [ "$status" -ne 0 ]
    grep -q "commit refused: .*/.metadata was replaced since ckptfs read it" "$CKPT_LOG"
    # the edit is not lost: the mount still serves it
    [ "$(head -c 8 "$MNT/w" | od -An -tx1 | tr -d ' \n')" = 0000000000000000 ]
    # a later commit is refused the same way, and overwrites nothing either
    run rm "$MNT/cplx"
    [ "$status" -ne 0 ]
    [ -f "$MNT/cplx" ]
    unmount_ckpt
    [ "$(grep -c "commit refused" "$CKPT_LOG")" -ge 3 ]
    [ "$(cd "$tmp/c" && ls -la --time-style=full-iso . && sha256sum .metadata __*)" = "$before" ]
    # what is on disk is still the checkpoint as torch wrote it
    mount_ckpt "$tmp/c"
    run_ok "$PY" "$BATS_PY/check_manifest.py" "$MNT" "$GEN/single.manifest.json"
}
