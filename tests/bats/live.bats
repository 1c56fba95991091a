#!/usr/bin/env bats
# Live checkpoints (SPEC "Live checkpoints"): a read-only mount of a checkpoint that is
# saved again in place, as torch does it, while readers read it.  Every read is one
# version's bytes in full, or EIO; never a mix.  Files opened after the new .metadata
# appeared read the new version.  The versions are written by scripts/gen_dcp.py (no
# torch needed) with different seeds: same file names and sizes, different bytes.

load helpers


teardown() {
    unmount_ckpt
}


# check_sums MNT SUMS: every key's file, opened now, hashes to SUMS's sha256.
check_sums() {
    "$PY" - "$1" "$2" <<'EOF2'
import hashlib, json, os, sys
mnt, sums = sys.argv[1], json.load(open(sys.argv[2]))
bad = 0
for fqn, want in sorted(sums.items()):
    with open(os.path.join(mnt, *fqn.split(".")), "rb") as f:
        got = hashlib.sha256(f.read()).hexdigest()
    if got != want:
        print("PROBLEM: %s reads %s, want %s" % (fqn, got, want))
        bad += 1
sys.exit(1 if bad else 0)
EOF2
}

# live_case MODE LAYOUT: re-saves a mounted checkpoint 5 times (versions v1, v0, v1, v0,
# v1) while two reader processes read it; then every file opened afresh reads v1.
live_case() {
    local mode=$1 layout=$2 d pids=() p rc=0
    d=$(test_tmp)
    gen "$d/v0" --size 1M --tensors 4 --layout "$layout" --seed 1
    gen "$d/v1" --size 1M --tensors 4 --layout "$layout" --seed 2
    cp -r "$d/v0" "$d/ckpt"
    mount_ckpt "$d/ckpt"
    check_sums "$MNT" "$d/v0.sha256.json"
    for p in 1 2; do
        timeout -k 5 300 "$PY" "$BATS_PY/live_read.py" "$MNT" "$d/stop" \
            "$d/v0.sha256.json" "$d/v1.sha256.json" >"$d/reader$p.log" 2>&1 3>&- &
        pids+=($!)
    done
    timeout -k 5 120 "$PY" "$BATS_PY/live_rewrite.py" "$d/ckpt" 5 "$mode" "$d/v0" "$d/v1" \
        >"$d/rewrite.log" 2>&1 || rc=$?
    touch "$d/stop"
    for p in "${pids[@]}"; do
        wait "$p" || rc=$?
    done
    cat "$d"/reader*.log "$d/rewrite.log"
    [ "$rc" -eq 0 ]
    # the new state, for files opened from now on
    check_sums "$MNT" "$d/v1.sha256.json"
    # a changed data file is logged once per state that pinned it
    local files changes
    files=$(find "$d/v0" -name '*.distcp' | wc -l)
    changes=$(grep -c 'data file' "$CKPT_LOG" || true)
    echo "change lines: $changes"
    [ "$changes" -le $((files * 6)) ]
    grep "ckptfs:" "$CKPT_LOG" | head -40
}

@test "live: torch-style re-save, data files truncated and rewritten in place: one version or EIO, never a mix" {
    live_case truncate row8
}

@test "live: re-save with new data files renamed over the old: one version or EIO, never a mix" {
    live_case newfile row8
}

@test "live: zstd-compressed items rewritten in place: one version or EIO, never a mix" {
    live_case truncate zstd
}

@test "live: a new .metadata that does not parse keeps the old state, logged once" {
    local d
    d=$(test_tmp)
    gen "$d/v0" --size 256K --tensors 2 --layout single --seed 1
    cp -r "$d/v0" "$d/ckpt"
    mount_ckpt "$d/ckpt"
    check_sums "$MNT" "$d/v0.sha256.json"
    # half a .metadata, as a writer that writes it in place would leave it for a while
    head -c 100 "$d/v0/.metadata" >"$d/ckpt/.metadata.tmp"
    mv "$d/ckpt/.metadata.tmp" "$d/ckpt/.metadata"
    check_sums "$MNT" "$d/v0.sha256.json"
    check_sums "$MNT" "$d/v0.sha256.json"
    [ "$(grep -c 'changed but cannot be opened' "$CKPT_LOG")" -eq 1 ]
    # once whole again it is read (same data: same bytes)
    cp "$d/v0/.metadata" "$d/ckpt/.metadata.tmp"
    mv "$d/ckpt/.metadata.tmp" "$d/ckpt/.metadata"
    check_sums "$MNT" "$d/v0.sha256.json"
    grep -q 'new checkpoint state' "$CKPT_LOG"
}

@test "live: a data file rewritten without a new .metadata gives EIO for its keys alone" {
    local d
    d=$(test_tmp)
    gen "$d/v0" --size 1M --tensors 4 --layout row8 --seed 1
    gen "$d/v1" --size 1M --tensors 4 --layout row8 --seed 2
    cp -r "$d/v0" "$d/ckpt"
    mount_ckpt "$d/ckpt"
    # (nothing read before: pages the kernel kept would rightly still give the old bytes)
    # rank 3's file rewritten in place with the other version's bytes (same size)
    cp "$d/v1/__3_0.distcp" "$d/ckpt/__3_0.distcp"
    "$PY" - "$MNT" "$d/v0.sha256.json" <<'EOF2'
import errno, hashlib, json, os, sys
mnt, sums = sys.argv[1], json.load(open(sys.argv[2]))
eio = 0
for fqn, want in sorted(sums.items()):
    try:
        with open(os.path.join(mnt, *fqn.split(".")), "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
    except OSError as e:
        assert e.errno == errno.EIO, (fqn, e)
        eio += 1
        continue
    # only keys with no chunk in rank 3's file read (every row8 tensor has one there)
    assert got == want, fqn
print("EIO keys:", eio)
assert eio >= 4, eio
EOF2
    [ "$(grep -c '__3_0.distcp was rewritten in place' "$CKPT_LOG")" -eq 1 ]
}

@test "live: a re-save that changes every tensor's shape: files opened after it read the new sizes and bytes" {
    local d
    d=$(test_tmp)
    gen "$d/v0" --size 1M --tensors 4 --layout row8 --seed 1
    gen "$d/v1" --size 2M --tensors 4 --layout row8 --seed 2
    cp -r "$d/v0" "$d/ckpt"
    mount_ckpt "$d/ckpt"
    check_sums "$MNT" "$d/v0.sha256.json"
    stat -c %s "$MNT/model/layers/0/attn/wq/weight" >/dev/null
    # a reader of the old state keeps its file open across the re-save, then reads it to its
    # (old, smaller) end and stats it, which sets the kernel's idea of the size
    "$PY" - "$MNT" "$d/v0.sha256.json" "$d/v1.sha256.json" "$BATS_PY/live_rewrite.py" "$d" <<'EOF2'
import hashlib, json, os, subprocess, sys
mnt, v0, v1, rewrite, d = sys.argv[1:]
v0, v1 = json.load(open(v0)), json.load(open(v1))
path = lambda k: os.path.join(mnt, *k.split("."))
tensors = sorted(k for k in v0 if k != "step")
old = {k: open(path(k), "rb") for k in tensors}
subprocess.run([sys.executable, rewrite, d + "/ckpt", "1", "truncate", d + "/v0", d + "/v1"],
               check=True, stdout=subprocess.DEVNULL)
def fresh():
    for k in tensors:
        got = hashlib.sha256(open(path(k), "rb").read()).hexdigest()
        assert got == v1[k], ("fresh", k)
fresh()                      # opened while the old files are open
for k, f in old.items():
    try:
        data = f.read()      # the old state's bytes, or EIO: its files were rewritten
        assert hashlib.sha256(data).hexdigest() == v0[k], ("old", k, len(data))
    except OSError as e:
        assert e.errno == 5, e
    os.fstat(f.fileno())
    f.close()
fresh()                      # opened after they closed: the page cache is the new state's
fresh()
EOF2
    check_sums "$MNT" "$d/v1.sha256.json"
}

@test "live: a .safetensors file replaced while mounted: files opened after it read the new file" {
    local d
    d=$(test_tmp)
    cp "$FIX/st_single/model.safetensors" "$d/model.safetensors"
    mount_ckpt "$d/model.safetensors"
    py_check "$BATS_PY/check_manifest.py" "$MNT" "$FIX/st_single.manifest.json"
    "$PY" "$BATS_PY/make_fixture.py" odd-safetensors "$d/new.safetensors" "$d/odd.manifest.json"
    mv "$d/new.safetensors" "$d/model.safetensors"
    cat "$MNT/.ckptfs/metadata.json" >/dev/null # an open: the new state is read
    py_check "$BATS_PY/check_manifest.py" "$MNT" "$d/odd.manifest.json"
    grep -q 'new checkpoint state' "$CKPT_LOG"
}
