#!/usr/bin/env bats
# SPEC "Writes" (-o rw), through real mounts on copies of the fixtures: patches of sharded
# tensors, cp over a tensor, EFBIG, new keys from .npy files, xattrs and plain files,
# unlink, rename of files and directories, -o rw,create, zstd kept, failing commits,
# spilled write buffers.  After every commit the checkpoint is judged by
# read_metadata.py (Python's pickle with stand-in classes + zipfile, no C code of ours)
# and remounted read-only to compare bytes.

load helpers

RM=tests/bats/read_metadata.py

TINY=

teardown() {
    unmount_ckpt
    if [ -n "$TINY" ]; then
        umount "$TINY" 2>/dev/null || true
    fi
}

manifest_sha() {
    "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]["sha256"])' \
        "$FIX/$1.manifest.json" "$2"
}

# ours DIR: storage entries that live in files ckptfs wrote.
count_ours() {
    "$PY" - "$1" <<'EOF'
import json, subprocess, sys
j = json.loads(subprocess.run(["/usr/bin/python3", "tests/bats/read_metadata.py", "--json", sys.argv[1]],
                              capture_output=True, check=True).stdout)
print(sum(1 for k in j["keys"].values() for c in k["chunks"]
          if c["storage"]["file"].startswith("__ckptfs_")))
EOF
}

@test "write: dd conv=notrunc patches a slice of a row-sharded tensor; only its chunk is rewritten" {
    src=$(copy_fixture dcp_dtensor_ws4)
    [ "$(key_sha "$src" row_sharded)" = "$(manifest_sha dcp_dtensor_ws4 row_sharded)" ]
    "$PY" "$RM" --tensor row_sharded "$src" >"$BATS_TEST_TMPDIR/orig"
    # 10 bytes from byte 90 (row 3, mid-element): rows 3..5 are chunk 1
    head -c 10 /dev/urandom >"$BATS_TEST_TMPDIR/patch"
    "$PY" - "$BATS_TEST_TMPDIR" <<'EOF'
import sys
d = sys.argv[1]
b = bytearray(open(d + "/orig", "rb").read())
b[90:100] = open(d + "/patch", "rb").read()
open(d + "/want", "wb").write(b)
EOF
    mount_ckpt "$src" -o rw
    dd if="$BATS_TEST_TMPDIR/patch" of="$MNT/row_sharded" bs=1 seek=90 conv=notrunc status=none
    # reads see the patch at once, before and after the commit at close
    cmp "$MNT/row_sharded" "$BATS_TEST_TMPDIR/want"
    unmount_ckpt
    check_ckpt "$src"
    [ "$(count_ours "$src")" = 1 ]
    [ "$(key_sha "$src" row_sharded)" = "$(sha256sum <"$BATS_TEST_TMPDIR/want" | cut -d' ' -f1)" ]
    same_except "$src" dcp_dtensor_ws4 row_sharded
    mount_ckpt "$src"
    cmp "$MNT/row_sharded" "$BATS_TEST_TMPDIR/want"
}

@test "write: a patch across the 2-D grid rewrites the four chunks it touches and no other" {
    src=$(copy_fixture dcp_dtensor_ws4)
    "$PY" "$RM" --tensor grid "$src" >"$BATS_TEST_TMPDIR/orig"
    # grid is 8x12 float32 on a 2x2 mesh: elements (3,5)..(3,6) and (4,5)..(4,6)
    "$PY" - "$BATS_TEST_TMPDIR" <<'EOF'
import sys, struct
d = sys.argv[1]
b = bytearray(open(d + "/orig", "rb").read())
for r in (3, 4):
    off = (r * 12 + 5) * 4
    b[off:off + 8] = struct.pack("<2f", 100.5 + r, -7.25 - r)
open(d + "/want", "wb").write(b)
EOF
    mount_ckpt "$src" -o rw
    "$PY" - "$MNT/grid" "$BATS_TEST_TMPDIR/want" <<'EOF'
import os, sys
want = open(sys.argv[2], "rb").read()
fd = os.open(sys.argv[1], os.O_WRONLY)
for r in (3, 4):
    off = (r * 12 + 5) * 4
    os.pwrite(fd, want[off:off + 8], off)
os.close(fd)
EOF
    unmount_ckpt
    check_ckpt "$src"
    [ "$(count_ours "$src")" = 4 ]
    mount_ckpt "$src"
    cmp "$MNT/grid" "$BATS_TEST_TMPDIR/want"
    cmp "$MNT/col_sharded" <("$PY" "$RM" --tensor col_sharded "$FIX/dcp_dtensor_ws4")
    unmount_ckpt
    same_except "$src" dcp_dtensor_ws4 grid
}

@test "write: pending bytes are visible to other handles, fsync commits while open" {
    src=$(copy_fixture dcp_single)
    mount_ckpt "$src" -o rw
    f="$MNT/model/layers/0/attn/wq/weight"
    before=$(ls "$src" | grep -c __ckptfs_ || true)
    [ "$before" = 0 ]
    "$PY" - "$f" "$src" <<'EOF'
import os, sys
f, src = sys.argv[1], sys.argv[2]
w = os.open(f, os.O_WRONLY)
os.pwrite(w, b"\x11\x22\x33\x44", 8)
r = os.open(f, os.O_RDONLY)
assert os.pread(r, 4, 8) == b"\x11\x22\x33\x44", "another handle does not see the write"
assert not any(n.startswith("__ckptfs_") for n in os.listdir(src)), "committed before fsync"
os.fsync(w)
assert any(n.startswith("__ckptfs_") for n in os.listdir(src)), "fsync did not commit"
assert os.pread(r, 4, 8) == b"\x11\x22\x33\x44"
os.close(w)
os.close(r)
EOF
    unmount_ckpt
    check_ckpt "$src"
    mount_ckpt "$src"
    f="$MNT/model/layers/0/attn/wq/weight"
    [ "$(od -An -tx1 -j8 -N4 "$f" | tr -d ' ')" = 11223344 ]
}

@test "write: cp over a tensor keeps its dtype and shape; more bytes than its size is EFBIG" {
    src=$(copy_fixture dcp_single)
    mount_ckpt "$src" -o rw
    f="$MNT/model/embed/weight"
    size=$(stat -c %s "$f")
    [ "$size" = 2048 ]
    head -c "$size" /dev/urandom >"$BATS_TEST_TMPDIR/new"
    cp "$BATS_TEST_TMPDIR/new" "$f"
    cmp "$f" "$BATS_TEST_TMPDIR/new"
    [ "$(getfattr --only-values -n user.ckpt.dtype "$f")" = float32 ]
    [ "$(getfattr --only-values -n user.ckpt.shape "$f")" = "[32,16]" ]
    # one byte too many
    head -c $((size + 1)) /dev/urandom >"$BATS_TEST_TMPDIR/big"
    run cp "$BATS_TEST_TMPDIR/big" "$f"
    [ "$status" -ne 0 ]
    [[ "$output" == *"too large"* ]]
    run "$PY" -c 'import os,sys,errno
fd = os.open(sys.argv[1], os.O_WRONLY)
try:
    os.pwrite(fd, b"x", int(sys.argv[2]))
except OSError as e:
    sys.exit(0 if e.errno == errno.EFBIG else 3)
sys.exit(4)' "$f" "$size"
    [ "$status" -eq 0 ]
    # truncating a tensor by name cannot leave it short
    run truncate -s 100 "$f"
    [ "$status" -ne 0 ]
    unmount_ckpt
    check_ckpt "$src"
    mount_ckpt "$src"
    f="$MNT/model/embed/weight"
    cmp "$f" "$BATS_TEST_TMPDIR/new"
    [ "$(getfattr --only-values -n user.ckpt.shape "$f")" = "[32,16]" ]
}

@test "write: a new X.npy becomes key X with the header's dtype and shape" {
    src=$(copy_fixture dcp_single)
    mount_ckpt "$src" -o rw
    mkdir "$MNT/extra"
    "$PY" -c 'import numpy as np, sys
a = (np.arange(15, dtype=np.float16).reshape(3, 5) * 1.5)
np.save(sys.argv[1] + "/extra/w.npy", a)
np.save(sys.argv[1] + "/model/b.npy", np.array([[1, -2], [3, -4]], dtype=np.int64))
np.save(sys.argv[1] + "/scalar0.npy", np.float64(2.5))' "$MNT"
    [ -f "$MNT/extra/w" ]
    [ "$(getfattr --only-values -n user.ckpt.shape "$MNT/extra/w")" = "[3,5]" ]
    unmount_ckpt
    check_ckpt "$src"
    same_except "$src" dcp_single
    mount_ckpt "$src"
    [ "$(getfattr --only-values -n user.ckpt.dtype "$MNT/extra/w")" = float16 ]
    [ "$(getfattr --only-values -n user.ckpt.shape "$MNT/model/b")" = "[2,2]" ]
    [ "$(getfattr --only-values -n user.ckpt.shape "$MNT/scalar0")" = "[]" ]
    "$PY" -c 'import numpy as np, sys
m = sys.argv[1]
a = np.fromfile(m + "/extra/w", dtype=np.float16).reshape(3, 5)
assert (a == np.arange(15, dtype=np.float16).reshape(3, 5) * 1.5).all()
b = np.load(m + "/model/b.npy")
assert b.dtype == np.int64 and b.tolist() == [[1, -2], [3, -4]], b
assert np.fromfile(m + "/scalar0", dtype=np.float64).tolist() == [2.5]' "$MNT"
}

@test "write: np.save over an existing key's .npy view replaces the key" {
    src=$(copy_fixture dcp_single)
    mount_ckpt "$src" -o rw
    "$PY" -c 'import numpy as np, sys
np.save(sys.argv[1] + "/model/embed/weight.npy", np.full((2, 3), 7, dtype=np.int32))' "$MNT"
    unmount_ckpt
    check_ckpt "$src"
    same_except "$src" dcp_single model.embed.weight
    mount_ckpt "$src"
    [ "$(getfattr --only-values -n user.ckpt.shape "$MNT/model/embed/weight")" = "[2,3]" ]
    [ "$(getfattr --only-values -n user.ckpt.dtype "$MNT/model/embed/weight")" = int32 ]
}

@test "write: a new file with user.ckpt.dtype/shape set before writing becomes that tensor" {
    src=$(copy_fixture dcp_dtensor_ws4)
    mount_ckpt "$src" -o rw
    f="$MNT/typed"
    touch "$f"
    setfattr -n user.ckpt.dtype -v bfloat16 "$f"
    setfattr -n user.ckpt.shape -v "[4,8]" "$f"
    [ "$(stat -c %s "$f")" = 64 ]
    [ "$(getfattr --only-values -n user.ckpt.dtype "$f")" = bfloat16 ]
    head -c 64 /dev/urandom >"$BATS_TEST_TMPDIR/data"
    dd if="$BATS_TEST_TMPDIR/data" of="$f" conv=notrunc status=none
    run dd if=/dev/zero of="$f" bs=1 count=1 seek=64 conv=notrunc status=none
    [ "$status" -ne 0 ]
    # a bad dtype name is refused
    run setfattr -n user.ckpt.dtype -v notatype "$MNT/typed"
    [ "$status" -ne 0 ]
    # a committed key keeps its type
    run setfattr -n user.ckpt.dtype -v int8 "$MNT/row_sharded"
    [ "$status" -ne 0 ]
    setfattr -n user.ckpt.dtype -v float32 "$MNT/row_sharded"
    unmount_ckpt
    check_ckpt "$src"
    mount_ckpt "$src"
    f="$MNT/typed"
    [ "$(getfattr --only-values -n user.ckpt.dtype "$f")" = bfloat16 ]
    [ "$(getfattr --only-values -n user.ckpt.shape "$f")" = "[4,8]" ]
    cmp "$f" "$BATS_TEST_TMPDIR/data"
}

@test "write: any other new file becomes a 1-D uint8 tensor of what was written" {
    src=$(copy_fixture dcp_single)
    mount_ckpt "$src" -o rw
    printf 'hello, checkpoint\n' >"$MNT/notes"
    mkdir -p "$MNT/a/b"
    head -c 70000 /dev/urandom >"$BATS_TEST_TMPDIR/blob"
    cp "$BATS_TEST_TMPDIR/blob" "$MNT/a/b/blob"
    touch "$MNT/empty"
    [ "$(ls "$MNT/a")" = b ]
    unmount_ckpt
    check_ckpt "$src"
    mount_ckpt "$src"
    [ "$(cat "$MNT/notes")" = "hello, checkpoint" ]
    [ "$(getfattr --only-values -n user.ckpt.dtype "$MNT/notes")" = uint8 ]
    [ "$(getfattr --only-values -n user.ckpt.shape "$MNT/notes")" = "[18]" ]
    cmp "$MNT/a/b/blob" "$BATS_TEST_TMPDIR/blob"
    [ "$(getfattr --only-values -n user.ckpt.shape "$MNT/empty")" = "[0]" ]
}

@test "write: unlink removes a key and the data files only it used" {
    src=$(copy_fixture dcp_single_perfile)
    file=$("$PY" - "$src" <<'EOF'
import json, subprocess, sys
j = json.loads(subprocess.run(["/usr/bin/python3", "tests/bats/read_metadata.py", "--json", sys.argv[1]],
                              capture_output=True, check=True).stdout)
print(j["keys"]["model.u8"]["chunks"][0]["storage"]["file"])
EOF
)
    [ -f "$src/$file" ]
    mount_ckpt "$src" -o rw
    rm "$MNT/model/u8"
    [ ! -e "$MNT/model/u8" ]
    [ ! -e "$src/$file" ]
    run rm "$MNT/model/u8"
    [ "$status" -ne 0 ]
    # emptying a directory keeps it until rmdir
    rm "$MNT/model/layers/1/attn/wq/weight"
    [ -d "$MNT/model/layers/1/attn/wq" ]
    rmdir "$MNT/model/layers/1/attn/wq"
    [ ! -e "$MNT/model/layers/1/attn/wq" ]
    rm -r "$MNT/meta"
    [ ! -e "$MNT/meta" ]
    unmount_ckpt
    check_ckpt "$src"
    same_except "$src" dcp_single_perfile model.u8 model.layers.1.attn.wq.weight meta.name meta.lrs
    mount_ckpt "$src"
    [ ! -e "$MNT/model/u8" ]
    [ ! -e "$MNT/meta" ]
    [ -f "$MNT/model/i8" ]
}

@test "write: rename a file and a whole directory" {
    src=$(copy_fixture dcp_single)
    mount_ckpt "$src" -o rw
    mv "$MNT/model/embed/weight" "$MNT/model/emb_w"
    mv "$MNT/model/layers/0" "$MNT/model/layers/7"
    mkdir "$MNT/moved"
    mv "$MNT/model/layers/1" "$MNT/moved/one"
    [ -f "$MNT/model/layers/7/attn/wq/weight" ]
    [ ! -e "$MNT/model/layers/0" ]
    run mv -T "$MNT/model/i8" "$MNT/model/layers"
    [ "$status" -ne 0 ]
    unmount_ckpt
    check_ckpt "$src"
    "$PY" - "$src" "$FIX/dcp_single.manifest.json" <<'EOF'
import json, subprocess, sys
got = json.loads(subprocess.run(["/usr/bin/python3", "tests/bats/read_metadata.py", "--sha256", sys.argv[1]],
                                capture_output=True, check=True).stdout)
man = json.load(open(sys.argv[2]))
def moved(k):
    if k == "model.embed.weight":
        return "model.emb_w"
    if k.startswith("model.layers.0."):
        return "model.layers.7." + k[len("model.layers.0."):]
    if k.startswith("model.layers.1."):
        return "moved.one." + k[len("model.layers.1."):]
    return k
want = {moved(k): v["sha256"] for k, v in man.items()}
assert got == want, (sorted(set(got) ^ set(want)), [k for k in want if got.get(k) != want[k]])
EOF
    mount_ckpt "$src"
    [ -f "$MNT/moved/one/attn/wq/weight" ]
    [ -f "$MNT/model/emb_w" ]
}

@test "write: -o rw,create on an empty directory builds a new checkpoint" {
    dir=$(test_tmp)/fresh
    mkdir "$dir"
    mount_ckpt "$dir" -o rw,create
    [ -f "$dir/.metadata" ]
    [ -z "$(ls "$MNT")" ]
    mkdir -p "$MNT/model/layers"
    "$PY" -c 'import numpy as np, sys
np.save(sys.argv[1] + "/model/layers/w.npy", np.arange(12, dtype=np.float32).reshape(4, 3))' "$MNT"
    printf 'xyz' >"$MNT/model/tag"
    unmount_ckpt
    check_ckpt "$dir"
    mount_ckpt "$dir"
    [ "$(getfattr --only-values -n user.ckpt.shape "$MNT/model/layers/w")" = "[4,3]" ]
    [ "$(cat "$MNT/model/tag")" = xyz ]
    unmount_ckpt
    # a directory that does not exist yet is created
    mount_ckpt "$(test_tmp)/ckpt" -o rw,create
    [ -z "$(ls "$MNT")" ]
}

@test "write: a zstd checkpoint stays zstd after a patch, new keys too" {
    src=$(copy_fixture dcp_zstd)
    "$PY" "$RM" --tensor model.embed.weight "$src" >"$BATS_TEST_TMPDIR/orig"
    mount_ckpt "$src" -o rw
    printf '\x01\x02\x03\x04' | dd of="$MNT/model/embed/weight" bs=1 seek=40 conv=notrunc status=none
    printf 'abc' >"$MNT/model/newkey"
    unmount_ckpt
    check_ckpt "$src"
    "$PY" - "$src" <<'EOF'
import json, subprocess, sys
j = json.loads(subprocess.run(["/usr/bin/python3", "tests/bats/read_metadata.py", "--json", sys.argv[1]],
                              capture_output=True, check=True).stdout)
for fqn in ("model.embed.weight", "model.newkey"):
    st = j["keys"][fqn]["chunks"][0]["storage"]
    assert st["file"].startswith("__ckptfs_"), (fqn, st)
    assert st["transforms"] == ["stream.zstd/1"], (fqn, st)
EOF
    same_except "$src" dcp_zstd model.embed.weight
    "$PY" - "$BATS_TEST_TMPDIR/orig" "$BATS_TEST_TMPDIR/want" <<'EOF'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
b[40:44] = b"\x01\x02\x03\x04"
open(sys.argv[2], "wb").write(b)
EOF
    mount_ckpt "$src"
    cmp "$MNT/model/embed/weight" "$BATS_TEST_TMPDIR/want"
    [ "$(cat "$MNT/model/newkey")" = abc ]
}

@test "write: a commit that fails (ENOSPC) fails the close and leaves the checkpoint as it was" {
    src=$(copy_fixture dcp_single)
    cp "$src/.metadata" "$BATS_TEST_TMPDIR/metadata.before"
    CKPTFS_FAIL_AFTER_WRITES=1 mount_ckpt "$src" -o rw
    run dd if=/dev/zero of="$MNT/model/embed/weight" bs=16 count=1 conv=notrunc status=none
    [ "$status" -ne 0 ]
    [[ "$output" == *"No space left"* ]]
    cmp "$src/.metadata" "$BATS_TEST_TMPDIR/metadata.before"
    [ -z "$(ls "$src" | grep __ckptfs_ || true)" ]
    # the dropped patch is gone from the mount too
    [ "$(sha256sum <"$MNT/model/embed/weight" | cut -d' ' -f1)" = "$(manifest_sha dcp_single model.embed.weight)" ]
    grep -q "commit failed" "$CKPT_LOG"
    unmount_ckpt
    cmp "$src/.metadata" "$BATS_TEST_TMPDIR/metadata.before"
    same_except "$src" dcp_single
}

@test "write: write buffers beyond -o cache= spill to SOURCE and leave nothing there" {
    src=$(copy_fixture dcp_single)
    mount_ckpt "$src" -o rw,cache=256K
    head -c $((3 * 1024 * 1024 + 123)) /dev/urandom >"$BATS_TEST_TMPDIR/big"
    "$PY" - "$BATS_TEST_TMPDIR/big" "$MNT/big" "$src" <<'EOF'
import os, sys
data = open(sys.argv[1], "rb").read()
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT, 0o644)
# out of order, so pages go to the spill file and come back
step = 200000
offs = list(range(0, len(data), step))
for o in offs[1::2] + offs[0::2]:
    os.pwrite(fd, data[o:o + step], o)
r = os.open(sys.argv[2], os.O_RDONLY)
got = b"".join(os.pread(r, 1 << 20, o) for o in range(0, len(data), 1 << 20))
assert got == data, "pending bytes read back wrong"
assert not [n for n in os.listdir(sys.argv[3]) if n.startswith(".ckptfs-spill")]
os.close(fd)
os.close(r)
EOF
    cmp "$MNT/big" "$BATS_TEST_TMPDIR/big"
    unmount_ckpt
    check_ckpt "$src"
    [ -z "$(ls -A "$src" | grep -v -e '^__' -e '^\.metadata$' || true)" ]
    mount_ckpt "$src"
    cmp "$MNT/big" "$BATS_TEST_TMPDIR/big"
}

@test "write: bad .npy content fails the close and adds nothing" {
    src=$(copy_fixture dcp_single)
    cp "$src/.metadata" "$BATS_TEST_TMPDIR/metadata.before"
    mount_ckpt "$src" -o rw
    run "$PY" -c 'import sys
f = open(sys.argv[1] + "/bad.npy", "wb")
f.write(b"not an npy file at all")
try:
    f.close()
except OSError as e:
    sys.exit(0)
sys.exit(5)' "$MNT"
    [ "$status" -eq 0 ]
    [ ! -e "$MNT/bad.npy" ]
    [ ! -e "$MNT/bad" ]
    cmp "$src/.metadata" "$BATS_TEST_TMPDIR/metadata.before"
}

@test "write: read-only mounts refuse writes; views stay read-only on rw mounts" {
    src=$(copy_fixture dcp_single)
    mount_ckpt "$src"
    run sh -c "printf x > '$MNT/model/i8'"
    [ "$status" -ne 0 ]
    run touch "$MNT/newfile"
    [ "$status" -ne 0 ]
    unmount_ckpt
    mount_ckpt "$src" -o rw
    run sh -c "printf x >> '$MNT/model/i8.npy'"
    [ "$status" -ne 0 ]
    run rm "$MNT/model/i8.npy"
    [ "$status" -ne 0 ]
    unmount_ckpt
    same_except "$src" dcp_single
}

@test "write: readers during commits see the old or the new bytes, never a mix" {
    src=$(copy_fixture dcp_dtensor_ws4)
    mount_ckpt "$src" -o rw
    "$PY" - "$MNT" "$FIX/dcp_dtensor_ws4.manifest.json" <<'EOF2'
import hashlib, json, os, sys, threading
mnt, man = sys.argv[1], json.load(open(sys.argv[2]))
rows, grid = mnt + "/row_sharded", mnt + "/grid"
stop = threading.Event()
errors = []

def reader():
    # row_sharded spans 4 chunks in 4 files: one read must come from one state
    while not stop.is_set():
        fd = os.open(rows, os.O_RDONLY)
        b = os.pread(fd, 280, 0)
        os.close(fd)
        if len(b) != 280 or len(set(b)) != 1:
            errors.append("torn read of row_sharded: %r" % sorted(set(b)))
        g = open(grid, "rb").read()
        if hashlib.sha256(g).hexdigest() != man["grid"]["sha256"]:
            errors.append("grid changed while row_sharded was committed")

w = os.open(rows, os.O_WRONLY)
os.pwrite(w, bytes([0]) * 280, 0)
os.fsync(w)
threads = [threading.Thread(target=reader) for _ in range(3)]
for t in threads:
    t.start()
for k in range(1, 60):
    os.pwrite(w, bytes([k]) * 280, 0)
    os.fsync(w)
os.close(w)
stop.set()
for t in threads:
    t.join()
if errors:
    sys.exit("; ".join(sorted(set(errors))[:5]))
EOF2
    unmount_ckpt
    check_ckpt "$src"
    [ "$(key_sha "$src" row_sharded)" = "$(head -c 280 /dev/zero | tr '\0' '\073' | sha256sum | cut -d' ' -f1)" ]
    # sixty commits, one data file left
    [ "$(ls "$src" | grep -c __ckptfs_)" = 1 ]
}

@test "write: a full disk (real ENOSPC on a small tmpfs) fails the close, the checkpoint is untouched" {
    dir=$(test_tmp)/tiny
    mkdir "$dir"
    if ! mount -t tmpfs -o size=160k tmpfs "$dir" 2>/dev/null; then
        skip "cannot mount a tmpfs here (needs root)"
    fi
    TINY=$dir
    cp -r "$FIX/dcp_single" "$dir/ck"
    chmod -R u+w "$dir/ck"
    cp "$dir/ck/.metadata" "$BATS_TEST_TMPDIR/metadata.before"
    mount_ckpt "$dir/ck" -o rw
    head -c 150000 /dev/urandom >"$BATS_TEST_TMPDIR/big"
    run cp "$BATS_TEST_TMPDIR/big" "$MNT/big"
    [ "$status" -ne 0 ]
    [[ "$output" == *"No space left"* ]]
    cmp "$dir/ck/.metadata" "$BATS_TEST_TMPDIR/metadata.before"
    [ -z "$(ls -A "$dir/ck" | grep ckptfs || true)" ]
    [ ! -e "$MNT/big" ]
    # the mount still works and a small commit fits
    printf 'abcd' | dd of="$MNT/model/u8" conv=notrunc status=none
    unmount_ckpt
    check_ckpt "$dir/ck"
    same_except "$dir/ck" dcp_single model.u8
}

@test "write: large new files stream to data files of their own; any write order commits exact bytes" {
    src=$(copy_fixture dcp_single)
    mount_ckpt "$src" -o rw,cache=256K
    "$PY" - "$MNT" "$BATS_TEST_TMPDIR" <<'EOF2'
import os, sys
import numpy as np
mnt, tmp = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(3)
a = rng.random((700, 1000), dtype=np.float32)            # 2.8 MB: streamed
np.save(tmp + "/a.npy", a)
open(tmp + "/a.raw", "wb").write(a.tobytes())
# np.save: the header is its own write, then the payload
np.save(mnt + "/model/saved.npy", a * 2)
# the header and a little payload first, then the rest backwards
data = open(tmp + "/a.npy", "rb").read()
fd = os.open(mnt + "/back.npy", os.O_WRONLY | os.O_CREAT, 0o644)
os.pwrite(fd, data[:4096], 0)
step = 300000
for o in reversed(range(4096, len(data), step)):
    os.pwrite(fd, data[o:o + step], o)
# overwrite a stretch already written, with the same bytes then the final ones
os.pwrite(fd, b"\0" * 5000, 200000)
os.pwrite(fd, data[200000:205000], 200000)
os.close(fd)
# the header rewritten to another shape after the payload: committed by copying
b = a.reshape(1000, 700)
fd = os.open(mnt + "/reshaped.npy", os.O_WRONLY | os.O_CREAT, 0o644)
os.pwrite(fd, data, 0)
hdr = np.lib.format.header_data_from_array_1_0(b)
import io
h = io.BytesIO(); np.lib.format.write_array_header_1_0(h, hdr)
assert len(h.getvalue()) == 128
os.pwrite(fd, h.getvalue(), 0)
os.close(fd)
# renamed to a plain name while open: a 1-D uint8 key of the whole file
fd = os.open(mnt + "/plain.npy", os.O_WRONLY | os.O_CREAT, 0o644)
os.pwrite(fd, data, 0)
os.rename(mnt + "/plain.npy", mnt + "/plain")
os.close(fd)
EOF2
    cp "$BATS_TEST_TMPDIR/a.npy" "$MNT/copied.npy"
    cmp "$MNT/copied" "$BATS_TEST_TMPDIR/a.raw"
    # streamed items sit in files of their own
    [ "$(ls "$src" | grep -c '^__ckptfs_.*_p[0-9]*\.distcp$')" -ge 3 ]
    [ -z "$(ls -A "$src" | grep -v -e '^__' -e '^\.metadata$' || true)" ]
    unmount_ckpt
    check_ckpt "$src"
    same_except "$src" dcp_single
    mount_ckpt "$src"
    "$PY" - "$MNT" "$BATS_TEST_TMPDIR" <<'EOF2'
import sys
import numpy as np
mnt, tmp = sys.argv[1], sys.argv[2]
a = np.load(tmp + "/a.npy")
data = open(tmp + "/a.npy", "rb").read()
for name, want in (("copied", a), ("back", a), ("model/saved", a * 2), ("reshaped", a.reshape(1000, 700))):
    got = np.load(mnt + "/" + name + ".npy")
    assert got.dtype == want.dtype and got.shape == want.shape and (got == want).all(), name
assert open(mnt + "/plain", "rb").read() == data
EOF2
}

# wr_paths.c: write-only handles skip the kernel's page cache (direct I/O); read-write ones
# keep it, so a shared writable mmap of a file being written still works.
@test "write: O_WRONLY handles write around the page cache, O_RDWR ones can be mmapped and read back" {
    local src blob
    src=$(test_tmp)/new
    blob=$(test_tmp)/blob
    head -c $((3 * (1 << 20) + 12345)) /dev/urandom >"$blob"
    mount_ckpt "$src" -o rw,create
    run "$PY" - "$MNT" "$blob" <<'PY'
import mmap, os, sys
mnt, blob = sys.argv[1], sys.argv[2]
data = open(blob, "rb").read()
# write-only: unaligned pieces, one left as a hole and filled last, through one handle
fd = os.open(os.path.join(mnt, "wo"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
step = 777777
for at in range(0, len(data), step):
    if at != step:
        os.pwrite(fd, data[at:at + step], at)
os.pwrite(fd, data[step:2 * step], step)
try:
    os.read(fd, 1)
    sys.exit("a write-only handle was readable")
except OSError:
    pass
os.close(fd)
with open(os.path.join(mnt, "wo"), "rb") as f:
    assert f.read() == data, "wo: bytes differ after close"
# read-write: sized, mmapped shared, written through the map, read back through the fd
fd = os.open(os.path.join(mnt, "rw"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(fd, 1 << 20)
m = mmap.mmap(fd, 1 << 20, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[:] = data[:1 << 20]
m.flush()
assert os.pread(fd, 1 << 20, 0) == data[:1 << 20], "rw: read back differs"
m.close()
os.close(fd)
print("ok")
PY
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    [ "${lines[-1]}" = ok ]
    unmount_ckpt
    check_ckpt "$src"
    mount_ckpt "$src"
    cmp "$MNT/wo" "$blob"
    cmp "$MNT/rw" <(head -c $((1 << 20)) "$blob")
}
