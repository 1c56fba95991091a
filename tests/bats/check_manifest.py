"""Checks a read-only ckptfs mount against a fixture manifest, independently of the C code.

usage: check_manifest.py MOUNT MANIFEST [--src SOURCE] [--flat] [--npy-names] [--seed N]

For every manifest key: the file sits where SPEC.md's path rules put it (ckpt_names.py),
is a regular file of size nbytes whose bytes hash to the manifest's sha256, carries the
user.ckpt.* xattrs, and answers random sub-range reads (page cache, O_DIRECT, concurrent
threads, ranges across chunk boundaries and past EOF) with the same bytes as a whole read.
The tree holds nothing but the manifest keys and every directory lists its children sorted.
With --src, mtimes must be the checkpoint's.  Prints one line per problem; exit 1 if any.
"""
import argparse
import concurrent.futures
import errno
import hashlib
import json
import os
import random
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_names  # noqa: E402


class Problems:
    def __init__(self):
        self.lines = []

    def add(self, msg):
        self.lines.append(msg)
        print("PROBLEM: " + msg, flush=True)


def source_mtime_range(src):
    """The checkpoint's mtime may be taken from SOURCE or any file directly in it."""
    times = [os.stat(src).st_mtime]
    if os.path.isdir(src):
        for name in os.listdir(src):
            times.append(os.stat(os.path.join(src, name)).st_mtime)
    return min(times) - 1, max(times) + 1


def check_listing(mnt, dirs, files, probs, want_sorted=True):
    """Walks the mount: every directory lists exactly the expected names, sorted."""
    seen_dirs = set()
    stack = [""]
    while stack:
        rel = stack.pop()
        seen_dirs.add(rel)
        path = os.path.join(mnt, rel) if rel else mnt
        try:
            names = os.listdir(os.fsencode(path))
        except OSError as e:
            probs.add("listdir %r: %s" % (rel or "/", e))
            continue
        names = [os.fsdecode(n) for n in names]
        want = dirs.get(rel)
        if want is None:
            probs.add("unexpected directory %r" % rel)
            continue
        if want_sorted and names != sorted(names, key=lambda s: s.encode()):
            probs.add("directory %r not listed sorted: %r" % (rel or "/", names))
        if sorted(names) != sorted(want):
            extra = sorted(set(names) - set(want))
            missing = sorted(set(want) - set(names))
            probs.add("directory %r: extra %r, missing %r" % (rel or "/", extra, missing))
        for n in names:
            child = n if rel == "" else rel + "/" + n
            try:
                st = os.lstat(os.path.join(mnt, child))
            except OSError as e:
                probs.add("lstat %r: %s" % (child, e))
                continue
            if stat.S_ISDIR(st.st_mode):
                if child in files:
                    probs.add("%r should be a file, is a directory" % child)
                stack.append(child)
            elif child in dirs:
                probs.add("%r should be a directory" % child)
    for d in dirs:
        if d not in seen_dirs:
            probs.add("directory %r not reached by listing" % d)


def chunk_entries(value):
    """user.ckpt.chunks is JSON with one entry per chunk: a list, or an object holding one."""
    doc = json.loads(value)
    if isinstance(doc, dict):
        for k in ("chunks", "items"):
            if isinstance(doc.get(k), list):
                return doc[k]
        raise ValueError("no chunk list in %r" % value[:200])
    if not isinstance(doc, list):
        raise ValueError("not a JSON list: %r" % value[:200])
    return doc


def check_xattrs(path, rel, fqn, entry, src, probs):
    def get(name):
        try:
            return os.getxattr(path, name).decode()
        except OSError as e:
            probs.add("%s: getxattr %s: %s" % (rel, name, e))
            return None

    try:
        listed = set(os.listxattr(path))
    except OSError as e:
        probs.add("%s: listxattr: %s" % (rel, e))
        listed = set()
    want = ["user.ckpt.fqn"]
    if get("user.ckpt.fqn") not in (None, fqn):
        probs.add("%s: user.ckpt.fqn = %r, want %r" % (rel, get("user.ckpt.fqn"), fqn))
    if entry["kind"] == "bytes":
        want.append("user.ckpt.kind")
        kind = get("user.ckpt.kind")
        if kind is not None and kind != "bytes":
            probs.add("%s: user.ckpt.kind = %r, want 'bytes'" % (rel, kind))
    else:
        want += ["user.ckpt.dtype", "user.ckpt.shape", "user.ckpt.chunks"]
        if "user.ckpt.kind" in listed:
            try:
                if os.getxattr(path, "user.ckpt.kind") == b"bytes":
                    probs.add("%s: a tensor says user.ckpt.kind = bytes" % rel)
            except OSError as e:
                probs.add("%s: listed user.ckpt.kind but getxattr: %s" % (rel, e))
        dtype = get("user.ckpt.dtype")
        if dtype is not None and dtype != entry["dtype"]:
            probs.add("%s: user.ckpt.dtype = %r, want %r" % (rel, dtype, entry["dtype"]))
        shape = get("user.ckpt.shape")
        want_shape = "[" + ",".join(str(d) for d in entry["shape"]) + "]"
        if shape is not None and shape != want_shape:
            probs.add("%s: user.ckpt.shape = %r, want %r" % (rel, shape, want_shape))
        raw = get("user.ckpt.chunks")
        if raw is not None:
            check_chunks_xattr(rel, raw, entry, src, probs)
    for name in want:
        if name not in listed:
            probs.add("%s: listxattr lacks %s (has %s)" % (rel, name, sorted(listed)))


def check_chunks_xattr(rel, raw, entry, src, probs):
    try:
        chunks = chunk_entries(raw)
    except ValueError as e:
        probs.add("%s: user.ckpt.chunks: %s" % (rel, e))
        return
    if "chunks" in entry and len(chunks) != entry["chunks"]:
        probs.add("%s: user.ckpt.chunks has %d entries, manifest %d"
                  % (rel, len(chunks), entry["chunks"]))
    if not chunks and ckpt_names.numel(entry["shape"]) > 0:
        probs.add("%s: user.ckpt.chunks is empty" % rel)
    # Where the entries use SPEC's words, the hyper-rectangles must tile the tensor.
    shape = entry["shape"]
    if all(isinstance(c, dict) and isinstance(c.get("offsets"), list)
           and isinstance(c.get("sizes"), list) for c in chunks) and chunks:
        total = 0
        for c in chunks:
            off, size = c["offsets"], c["sizes"]
            if len(off) != len(shape) or len(size) != len(shape) or any(
                    o < 0 or s < 0 or o + s > d for o, s, d in zip(off, size, shape)):
                probs.add("%s: chunk %r outside shape %r" % (rel, c, shape))
            total += ckpt_names.numel(size)
        if total != ckpt_names.numel(shape):
            probs.add("%s: chunks cover %d elements, tensor has %d"
                      % (rel, total, ckpt_names.numel(shape)))
    if src and os.path.isdir(src):
        for c in chunks:
            if not isinstance(c, dict):
                continue
            name = c.get("file", c.get("relative_path", c.get("path")))
            if isinstance(name, str) and not os.path.exists(os.path.join(src, name)):
                probs.add("%s: chunk names file %r, not in SOURCE" % (rel, name))


def pread_all(fd, off, n):
    """pread that retries short reads, as a reader that wants n bytes would."""
    out = bytearray()
    while len(out) < n:
        b = os.pread(fd, n - len(out), off + len(out))
        if not b:
            break
        out += b
    return bytes(out)


def range_plan(entry, size, rng):
    """Sub-ranges to read: around every row boundary (where chunks of sharded tensors
    meet), byte-by-byte for small files, random ones, and ones running past EOF."""
    ranges = []
    shape = entry.get("shape") or []
    if shape and shape[0] > 1 and size:
        row = size // shape[0]
        for k in range(1, shape[0]):
            ranges.append((k * row - 1, 2))
            ranges.append((max(0, k * row - 5), row + 7))
    if size <= 600:
        ranges += [(i, 1) for i in range(size)]
    for _ in range(40):
        off = rng.randrange(0, size + 1)
        ranges.append((off, rng.randrange(1, max(2, size - off + 64))))
    ranges += [(0, size + 4096), (max(0, size - 3), 100), (size, 10), (size + 12345, 7)]
    return ranges


def check_ranges(path, rel, whole, entry, rng, probs, direct=True):
    size = len(whole)
    plan = range_plan(entry, size, rng)
    flags = [("cached", 0)]
    # O_DIRECT on FUSE sends each read to the daemon at exactly its offset and length.
    if direct:
        flags.append(("O_DIRECT", os.O_DIRECT))
    for label, extra in flags:
        try:
            fd = os.open(path, os.O_RDONLY | extra)
        except OSError as e:
            if extra and e.errno == errno.EINVAL:
                continue
            probs.add("%s: open (%s): %s" % (rel, label, e))
            continue
        try:
            bad = 0
            for off, n in plan:
                if label == "cached":
                    # Drop cached pages so the read reaches the daemon at this offset.
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                got = pread_all(fd, off, n)
                if got != whole[off:off + n]:
                    bad += 1
                    if bad <= 3:
                        probs.add("%s: %s pread(off=%d, n=%d) gave %d bytes differing from the "
                                  "whole-file read" % (rel, label, off, n, len(got)))
            # Odd-sized sequential reads, as a streaming reader does.
            os.lseek(fd, 0, os.SEEK_SET)
            seq = bytearray()
            while True:
                b = os.read(fd, 4093)
                if not b:
                    break
                seq += b
            if bytes(seq) != whole:
                probs.add("%s: %s sequential 4093-byte reads differ" % (rel, label))
        except OSError as e:
            probs.add("%s: %s read: %s" % (rel, label, e))
        finally:
            os.close(fd)


def check_key(mnt, rel, fqn, entry, src, mrange, rng, probs, direct=True):
    path = os.path.join(mnt, rel)
    try:
        st = os.stat(path)
    except OSError as e:
        probs.add("%s (key %r): stat: %s" % (rel, fqn, e))
        return None
    if not stat.S_ISREG(st.st_mode):
        probs.add("%s: not a regular file (mode %o)" % (rel, st.st_mode))
        return None
    if st.st_size != entry["nbytes"]:
        probs.add("%s: size %d, want %d" % (rel, st.st_size, entry["nbytes"]))
    if not st.st_mode & stat.S_IRUSR:
        probs.add("%s: not readable (mode %o)" % (rel, st.st_mode))
    if mrange and not mrange[0] <= st.st_mtime <= mrange[1]:
        probs.add("%s: mtime %s is not the checkpoint's (%s..%s)"
                  % (rel, st.st_mtime, mrange[0], mrange[1]))
    try:
        with open(path, "rb") as f:
            whole = f.read()
    except OSError as e:
        probs.add("%s: read: %s" % (rel, e))
        return None
    digest = hashlib.sha256(whole).hexdigest()
    if digest != entry["sha256"]:
        probs.add("%s: sha256 %s, want %s (%d bytes read)" % (rel, digest, entry["sha256"],
                                                              len(whole)))
        return None
    check_xattrs(path, rel, fqn, entry, src, probs)
    check_ranges(path, rel, whole, entry, rng, probs, direct)
    return whole


def check_concurrent(mnt, files, wholes, seed, probs):
    """Many threads reading random ranges of many files at once."""
    keys = sorted(k for k in wholes if wholes[k])
    if not keys:
        return

    def worker(i):
        rng = random.Random(seed * 1000 + i)
        bad = []
        for _ in range(60):
            rel = rng.choice(keys)
            whole = wholes[rel]
            off = rng.randrange(0, len(whole))
            n = rng.randrange(1, len(whole) - off + 1)
            fd = os.open(os.path.join(mnt, rel), os.O_RDONLY)
            try:
                got = pread_all(fd, off, n)
            finally:
                os.close(fd)
            if got != whole[off:off + n]:
                bad.append("%s: concurrent pread(off=%d, n=%d) differs" % (rel, off, n))
        return bad

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
        for bad in ex.map(worker, range(16)):
            for msg in bad[:3]:
                probs.add(msg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mount")
    ap.add_argument("manifest")
    ap.add_argument("--src")
    ap.add_argument("--flat", action="store_true")
    ap.add_argument("--npy-names", action="store_true",
                    help="only check the listing, as -o npy shows it")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--unsorted-ok", action="store_true",
                    help="for the self-test on a plain directory, whose order is the disk's")
    ap.add_argument("--no-direct", action="store_true",
                    help="for the self-test: a disk filesystem wants aligned O_DIRECT reads")
    args = ap.parse_args()

    manifest = ckpt_names.load_manifest(args.manifest)
    files, dirs = ckpt_names.tree_layout(manifest, flat=args.flat, npy=args.npy_names)
    probs = Problems()
    root = os.stat(args.mount)
    if not stat.S_ISDIR(root.st_mode):
        probs.add("mount root is not a directory")
    check_listing(args.mount, dirs, files, probs, want_sorted=not args.unsorted_ok)
    mrange = source_mtime_range(args.src) if args.src else None
    if mrange:
        for d in dirs:
            m = os.stat(os.path.join(args.mount, d)).st_mtime
            if d and not mrange[0] <= m <= mrange[1]:
                probs.add("directory %r: mtime %s is not the checkpoint's" % (d, m))
    if args.npy_names:
        return finish(probs, len(files))
    rng = random.Random(args.seed)
    wholes = {}
    for rel in sorted(files):
        whole = check_key(args.mount, rel, files[rel], manifest[files[rel]], args.src,
                          mrange, rng, probs, direct=not args.no_direct)
        if whole is not None:
            wholes[rel] = whole
    check_concurrent(args.mount, files, wholes, args.seed, probs)
    return finish(probs, len(files))


def finish(probs, n):
    if probs.lines:
        print("%d problems over %d keys" % (len(probs.lines), n))
        return 1
    print("ok: %d keys" % n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
