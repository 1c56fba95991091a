"""Checks the torch.save views of a ckptfs mount: DIR.pt and /.ckptfs/model.pt.

usage: check_pt.py MOUNT MANIFEST [--src CKPT_DIR] [--torch [--expect-torch]] [--root-only]
                   [--file PATH DIR]

Reads every view with an independent reader (Python's zipfile, which verifies every CRC-32,
and pickle with stub globals; none of ckptfs and no torch), and checks:
- the archive: members archive/data.pkl, byteorder, version, archive/data/N..., each
  member's data at a multiple of 64 (from its local header), no member compressed;
- data.pkl names only the globals torch's weights_only unpickler allows;
- the state dict: keys under DIR nested as the checkpoint's planner_data says
  (torch.distributed.checkpoint's _traverse.set_element: str -> dict key, int -> list
  index; keys without planner_data flat by FQN; DIR's components taken off the front),
  each tensor contiguous with the manifest's dtype, shape and sha256, each bytes entry the
  object its payload holds;
--torch: also torch.load (this python's torch) of each view whose dtypes it knows, with
  weights_only=True where its unpickler can read every value, and mmap=True if it has it,
  giving the same tensors.
--file PATH DIR: check one archive file (e.g. a copy) as the view of DIR.
"""
import argparse
import collections
import hashlib
import io
import json
import os
import pickle
import struct
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ALLOWED_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("collections", "OrderedDict"), ("torch.storage", "UntypedStorage"),
    ("_codecs", "encode"),
}
STORAGE_DTYPE = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "ComplexHalfStorage": "complex32",
}


class Problems(list):
    def add(self, msg):
        self.append(msg)
        print("PROBLEM: " + msg, flush=True)


class Tensor:
    def __init__(self, key, dtype, offset, size, stride):
        self.key, self.dtype, self.offset = key, dtype, offset
        self.size, self.stride = tuple(size), tuple(stride)


class DType:
    def __init__(self, name):
        self.name = name


def rebuild_v2(storage, offset, size, stride, requires_grad, hooks, *rest):
    return Tensor(storage[0], storage[1], offset, size, stride)


def rebuild_v3(storage, offset, size, stride, requires_grad, hooks, dtype, *rest):
    return Tensor(storage[0], dtype.name, offset, size, stride)


class ViewUnpickler(pickle.Unpickler):
    def __init__(self, f, probs, where):
        super().__init__(f)
        self.probs, self.where = probs, where

    def find_class(self, module, name):
        allowed = (module, name) in ALLOWED_GLOBALS or (
            module == "torch" and (name in STORAGE_DTYPE or name.islower()))
        if not allowed:
            self.probs.add("%s: data.pkl names %s.%s, not allowed by weights_only"
                           % (self.where, module, name))
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return rebuild_v2
        if (module, name) == ("torch._utils", "_rebuild_tensor_v3"):
            return rebuild_v3
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return rebuild_parameter
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("_codecs", "encode"):
            import codecs
            return codecs.encode
        if module == "torch" and name in STORAGE_DTYPE:
            return STORAGE_DTYPE[name]
        if module == "torch":
            return DType(name)
        return ("untyped", module, name)

    def persistent_load(self, pid):
        kind, cls, key, location, count = pid
        dtype = cls if isinstance(cls, str) else None
        return (key, dtype)


def rebuild_parameter(data, requires_grad, hooks, *rest):
    return data


class PTensor:
    """A tensor inside a bytes entry: its storage's bytes as the payload holds them."""

    def __init__(self, data, dtype, offset, size, stride):
        self.data, self.dtype, self.offset = data, dtype, offset
        self.size, self.stride = tuple(size), tuple(stride)


class PayloadUnpickler(pickle.Unpickler):
    """A bytes entry's data.pkl: plain values, bytes, OrderedDict and tensors only (else
    not inlinable)."""

    def __init__(self, f, z):
        super().__init__(f)
        self.z = z

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("_codecs", "encode"):  # how protocol 2 writes bytes
            import codecs
            return codecs.encode
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda st, off, size, stride, *r: PTensor(st[0], st[1], off, size, stride)
        if (module, name) == ("torch._utils", "_rebuild_tensor_v3"):
            return lambda st, off, size, stride, rg, h, dt, *r: PTensor(st[0], dt.name, off,
                                                                        size, stride)
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPE:
            return STORAGE_DTYPE[name]
        if module == "torch" and name.islower():
            return DType(name)
        if (module, name) == ("torch.storage", "UntypedStorage"):
            return None
        raise pickle.UnpicklingError("not inlinable: %s.%s" % (module, name))

    def persistent_load(self, pid):
        kind, cls, key, location, count = pid
        name = [n for n in self.z.namelist() if n.endswith("/data/" + key)][0]
        return (self.z.read(name), cls)


def payload_object(path):
    """(True, obj) for an inlinable bytes entry, (False, None) otherwise."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        name = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
        return True, PayloadUnpickler(io.BytesIO(z.read(name)), z).load()
    except (pickle.UnpicklingError, IndexError, zipfile.BadZipFile):
        return False, None


def planner_paths(src):
    if not src or not os.path.exists(os.path.join(src, ".metadata")):
        return {}
    import dcp_storage
    meta = dcp_storage.load_metadata(src)
    try:
        pd = dcp_storage._field(meta, "planner_data") or {}
    except ValueError:
        return {}
    return {k: tuple(v) for k, v in pd.items() if isinstance(v, (tuple, list))}


def rel_path(fqn, path, depth):
    """The key's path inside a directory `depth` components deep (see view_pt_nest.h)."""
    if path and depth == 0:
        return tuple(path)  # what DCP's own loader does with it
    if not path or ".".join(str(p) for p in path) != fqn:
        return (fqn.split(".", depth)[depth] if depth else fqn,)
    out, skip = [], depth
    for p in path:
        comps = 1 if isinstance(p, int) else p.count(".") + 1
        if skip >= comps:
            skip -= comps
            continue
        if skip:
            p = p.split(".", skip)[skip]
            skip = 0
        out.append(p)
    return tuple(out)


class Collide(Exception):
    pass


def set_element(root, path, value):
    """torch.distributed.checkpoint._traverse.set_element, refusing collisions."""
    cur = root
    for i in range(1, len(path)):
        prev, key = path[i - 1], path[i]
        default = {} if isinstance(key, str) else []
        if isinstance(cur, dict):
            if prev not in cur:
                cur[prev] = default
            cur = cur[prev]
        else:
            while len(cur) <= prev:
                cur.append(None)
            if cur[prev] is None:
                cur[prev] = default
            cur = cur[prev]
        if not isinstance(cur, (dict, list)) or (isinstance(cur, list) and isinstance(key, str)):
            raise Collide()
    key = path[-1]
    if isinstance(cur, list):
        while len(cur) <= key:
            cur.append(None)
        if cur[key] is not None:
            raise Collide()
    elif key in cur:
        raise Collide()
    cur[key] = value


def files_under(mnt, d):
    for root, dirs, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            yield p, os.getxattr(p, "user.ckpt.fqn").decode(), \
                os.getxattr(p, "user.ckpt.kind").decode()


def expected_dict(mnt, d, depth, manifest, paths):
    exp = {}
    for p, fqn, kind in sorted(files_under(mnt, d), key=lambda t: t[1]):
        if kind == "bytes":
            ok, obj = payload_object(p)
            if not ok:
                continue
            leaf = ("obj", obj)
        else:
            leaf = ("tensor", fqn)
        try:
            set_element(exp, rel_path(fqn, paths.get(fqn), depth), leaf)
        except Collide:
            pass
    return exp


def read_archive(view, probs):
    """(state dict with Tensor leaves, {storage key: bytes}) or None."""
    try:
        z = zipfile.ZipFile(view)
        bad = z.testzip()  # reads every member and checks its CRC-32
    except (OSError, zipfile.BadZipFile) as e:
        probs.add("%s: not a zip archive: %s" % (view, e))
        return None
    if bad is not None:
        probs.add("%s: member %s fails its CRC-32" % (view, bad))
    names = z.namelist()
    for want in ("archive/data.pkl", "archive/byteorder", "archive/version"):
        if want not in names:
            probs.add("%s: no member %s (has %s)" % (view, want, names[:6]))
            return None
    if z.read("archive/byteorder") != b"little":
        probs.add("%s: byteorder is %r" % (view, z.read("archive/byteorder")))
    z.data_at = {}  # member -> (offset, size): read raw, so damage shows beside a bad CRC
    with open(view, "rb") as f:
        for info in z.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                probs.add("%s: %s is compressed" % (view, info.filename))
            f.seek(info.header_offset)
            lfh = f.read(30)
            if lfh[:4] != b"PK\x03\x04":
                probs.add("%s: no local header for %s" % (view, info.filename))
                continue
            nlen, xlen = struct.unpack_from("<HH", lfh, 26)
            start = info.header_offset + 30 + nlen + xlen
            z.data_at[info.filename] = (start, info.file_size)
            if start % 64:
                probs.add("%s: %s data at %d, not 64-byte aligned" % (view, info.filename, start))
    sd = ViewUnpickler(io.BytesIO(z.read("archive/data.pkl")), probs, view).load()
    return sd, z


def tensor_problem(t, fqn, z, manifest):
    m = manifest.get(fqn)
    if not m or m["kind"] != "tensor":
        return "is a tensor, manifest says %r" % (m,)
    if t.dtype != m["dtype"]:
        return "dtype %s, want %s" % (t.dtype, m["dtype"])
    if list(t.size) != m["shape"]:
        return "shape %s, want %s" % (list(t.size), m["shape"])
    stride, s = [], 1
    for n in reversed(t.size):
        stride.insert(0, s)
        s *= max(n, 1)
    if t.offset != 0 or list(t.stride) != stride:
        return "not contiguous: offset %d stride %s" % (t.offset, t.stride)
    start, size = z.data_at.get("archive/data/%s" % t.key, (0, -1))
    if size < 0:
        return "no record archive/data/%s" % t.key
    with open(z.filename, "rb") as f:
        f.seek(start)
        data = f.read(size)
    if len(data) != m["nbytes"] or hashlib.sha256(data).hexdigest() != m["sha256"]:
        return "bytes differ from the manifest (%d bytes)" % len(data)
    return None


def compare(got, exp, where, z, manifest, probs, tensors):
    if isinstance(exp, dict):
        if not isinstance(got, dict):
            probs.add("%s: %r, want a dict" % (where, type(got)))
            return
        if list(got.keys()) != list(exp.keys()) and set(got.keys()) != set(exp.keys()):
            probs.add("%s: keys %s, want %s" % (where, sorted(map(str, got))[:8],
                                               sorted(map(str, exp))[:8]))
        for k in exp:
            if k in got:
                compare(got[k], exp[k], "%s[%r]" % (where, k), z, manifest, probs, tensors)
    elif isinstance(exp, list):
        if not isinstance(got, list) or len(got) != len(exp):
            probs.add("%s: %r, want a list of %d" % (where, type(got), len(exp)))
            return
        for i, e in enumerate(exp):
            compare(got[i], e, "%s[%d]" % (where, i), z, manifest, probs, tensors)
    elif exp is None:
        if got is not None:
            probs.add("%s: %r, want None" % (where, got))
    elif exp[0] == "tensor":
        if not isinstance(got, Tensor):
            probs.add("%s: %r, want tensor %s" % (where, got, exp[1]))
            return
        err = tensor_problem(got, exp[1], z, manifest)
        if err:
            probs.add("%s (%s): %s" % (where, exp[1], err))
        tensors[where] = exp[1]
    else:
        err = obj_problem(got, exp[1], z)
        if err:
            probs.add("%s: %s" % (where, err))


def obj_problem(got, want, z):
    """Why the inlined object got differs from the payload's object want, or None."""
    if isinstance(want, PTensor):
        if not isinstance(got, Tensor):
            return "%r, want a tensor" % (got,)
        if (got.dtype, got.offset, got.size, got.stride) != \
                (want.dtype, want.offset, want.size, want.stride):
            return "tensor %r, want %r" % ((got.dtype, got.offset, got.size, got.stride),
                                           (want.dtype, want.offset, want.size, want.stride))
        start, size = z.data_at.get("archive/data/%s" % got.key, (0, -1))
        with open(z.filename, "rb") as f:
            f.seek(start)
            data = f.read(size) if size >= 0 else None
        return None if data == want.data else "storage bytes differ from the payload's"
    if type(got) is not type(want):
        return "%r, want %r" % (got, want)
    if isinstance(want, dict):
        if list(got) != list(want):
            return "keys %r, want %r" % (list(got), list(want))
        for k in want:
            err = obj_problem(got[k], want[k], z)
            if err:
                return "[%r]: %s" % (k, err)
        return None
    if isinstance(want, (list, tuple)):
        if len(got) != len(want):
            return "%r, want %r" % (got, want)
        for i, (g, w) in enumerate(zip(got, want)):
            err = obj_problem(g, w, z)
            if err:
                return "[%d]: %s" % (i, err)
        return None
    return None if got == want else "%r, want %r" % (got, want)


def has_plain_only(exp):
    """True if torch 1.13's weights_only unpickler reads every value (no float, no bytes)."""
    if isinstance(exp, dict):
        return all(has_plain_only(v) for v in exp.values())
    if isinstance(exp, list):
        return all(has_plain_only(v) for v in exp)
    if exp is None or exp[0] == "tensor":
        return True

    def plain(o):
        if isinstance(o, PTensor):
            return True
        if isinstance(o, (float, bytes)):
            return False
        if isinstance(o, (list, tuple)):
            return all(plain(x) for x in o)
        if isinstance(o, dict):
            return all(plain(k) and plain(v) for k, v in o.items())
        return True
    return plain(exp[1])


def torch_check(view, exp, tensors, manifest, probs):
    import inspect
    import torch
    dts = {manifest[f]["dtype"] for f in tensors.values()}
    if any(not isinstance(getattr(torch, d, None), torch.dtype) for d in dts):
        return 0
    kwargs = [{}]
    if has_plain_only(exp):
        kwargs.append({"weights_only": True})
    if "mmap" in inspect.signature(torch.load).parameters:
        kwargs.append({"mmap": True, "weights_only": True})
    for kw in kwargs:
        try:
            sd = torch.load(view, **kw)
        except Exception as e:  # noqa: BLE001
            probs.add("%s: torch.load(%s) failed: %s" % (view, kw, str(e)[-200:]))
            continue
        for where, fqn in tensors.items():
            t = eval("sd" + where[len("sd"):], {"sd": sd})  # noqa: S307 (our own paths)
            t = t.contiguous()
            if t.dtype == torch.bfloat16:
                t = t.view(torch.int16)
            data = t.numpy().tobytes() if t.numel() else b""
            if hashlib.sha256(data).hexdigest() != manifest[fqn]["sha256"]:
                probs.add("%s: torch.load(%s)%s differs from the manifest" % (view, kw, where))
    return len(kwargs)


def check_view(view, d, depth, args, manifest, paths, probs):
    exp = expected_dict(args.mount, d, depth, manifest, paths)
    got = read_archive(view, probs)
    if got is None:
        return
    sd, z = got
    tensors = {}
    compare(sd, exp, "sd", z, manifest, probs, tensors)
    loads = torch_check(view, exp, tensors, manifest, probs) if args.torch else 0
    if args.expect_torch and view.endswith("/.ckptfs/model.pt") and loads == 0:
        probs.add("%s: torch.load was not tried" % view)
    print("%s: %d tensors, %d keys at top, %d torch loads"
          % (view, len(tensors), len(exp), loads), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mount")
    ap.add_argument("manifest")
    ap.add_argument("--src")
    ap.add_argument("--torch", action="store_true")
    ap.add_argument("--root-only", action="store_true")
    ap.add_argument("--file", nargs=2, metavar=("PATH", "DIR"))
    ap.add_argument("--expect-torch", action="store_true",
                    help="fail unless torch.load read model.pt (its dtypes are all known)")
    args = ap.parse_args()
    with open(args.manifest) as f:
        manifest = json.load(f)
    paths = planner_paths(args.src)
    probs = Problems()
    mnt = args.mount.rstrip("/")
    if args.file:
        rel = args.file[1].strip("/")
        d = mnt + "/" + rel if rel else mnt
        depth = len(os.path.relpath(d, mnt).split(os.sep)) if d != mnt else 0
        check_view(args.file[0], d, depth, args, manifest, paths, probs)
    else:
        check_view(mnt + "/.ckptfs/model.pt", mnt, 0, args, manifest, paths, probs)
        if not args.root_only:
            for root, dirs, files in os.walk(mnt):
                for dname in dirs:
                    d = os.path.join(root, dname)
                    depth = len(os.path.relpath(d, mnt).split(os.sep))
                    check_view(d + ".pt", d, depth, args, manifest, paths, probs)
    if probs:
        print("%d problems" % len(probs))
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
