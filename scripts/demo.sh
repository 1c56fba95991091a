#!/usr/bin/env bash
# Mounts a real PyTorch 2.11 checkpoint at ./mnt with build/ckptfs, shows what a user sees,
# and leaves it mounted.
#
# usage: scripts/demo.sh [SOURCE]   (default: the 4-rank sharded DTensor checkpoint)
set -euo pipefail
cd "$(dirname "$0")/.."

FIX=tests/fixtures/torch-2.11
SRC=${1:-$FIX/dcp_dtensor_ws4}
[ -e "$SRC" ] || SRC=$FIX/dcp_single
BIN=${CKPTFS:-build/ckptfs}
MNT=mnt
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

if [ ! -x "$BIN" ]; then
    echo "demo: $BIN is not built; run: make" >&2
    exit 1
fi

# A previous demo's mount (alive, or left behind by a killed daemon) goes first.
mkdir -p "$MNT"
if grep -qs " $(pwd)/$MNT " /proc/self/mounts; then
    echo "demo: unmounting the previous ./$MNT"
    fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT"
fi

run() {
    echo
    echo "\$ $*"
    "$@"
}

echo "demo: mounting $SRC at ./$MNT"
# Without -f ckptfs daemonizes once the mount is up, as a user would run it.
"$BIN" "$SRC" "$MNT"
for _ in $(seq 100); do
    mountpoint -q "$MNT" && break
    sleep 0.1
done
if ! mountpoint -q "$MNT"; then
    echo "demo: ckptfs did not mount $SRC within 10 s" >&2
    exit 1
fi

if command -v tree >/dev/null 2>&1; then
    run tree "$MNT"
else
    echo
    echo "\$ find $MNT | sort"
    find "$MNT" | sort
fi
run ls -l "$MNT"

# The tensor the rest of the demo looks into: the first float32 one in path order (its
# numbers print readably), else the first tensor of any dtype.
tensor=$("$PY" - "$MNT" <<'PY'
import os, sys
found = []
for root, dirs, files in os.walk(sys.argv[1]):
    for f in files:
        p = os.path.join(root, f)
        try:
            shape = os.getxattr(p, "user.ckpt.shape").decode()
            dtype = os.getxattr(p, "user.ckpt.dtype").decode()
        except OSError:
            continue
        if shape != "[]" and os.path.getsize(p):
            found.append((dtype != "float32", p))
print(min(found)[1] if found else "")
PY
)
if [ -z "$tensor" ]; then
    echo "demo: no tensor file found under $MNT" >&2
    exit 1
fi

if command -v getfattr >/dev/null 2>&1; then
    run getfattr -d "$tensor"
else
    echo "(getfattr not installed: apt-get install attr)"
fi
if command -v hexdump >/dev/null 2>&1; then
    run hexdump -C -n 64 "$tensor"
else
    run od -A x -t x1z -N 64 "$tensor"
fi

echo
echo "\$ $PY   # the file is the tensor's raw C-order little-endian bytes"
"$PY" - "$tensor" <<'PY'
import os, sys
import numpy as np
p = sys.argv[1]
dtype = os.getxattr(p, "user.ckpt.dtype").decode()
shape = tuple(int(x) for x in os.getxattr(p, "user.ckpt.shape").decode().strip("[]").split(",") if x)
# NumPy has no bfloat16/float8: view those as same-width unsigned integers.
np_dtype = {"bfloat16": "<u2", "float8_e4m3fn": "u1", "float8_e5m2": "u1", "bool": "?"}.get(
    dtype, dtype)
a = np.fromfile(p, dtype=np_dtype).reshape(shape)
print(">>> a = np.fromfile(%r, dtype=%r).reshape(%r)" % (p, np_dtype, shape))
print(a)
npy = p + ".npy"
if os.path.exists(npy):
    b = np.load(npy, mmap_mode="r")
    print(">>> np.load(%r, mmap_mode='r')  # the .npy view: dtype and shape included" % npy)
    print(b.dtype, b.shape, "same bytes:", bytes(a.tobytes()) == bytes(np.ascontiguousarray(b).tobytes()))
PY

echo
echo "demo: $SRC is mounted at ./$MNT (read-only). Unmount with: fusermount3 -u $MNT"
