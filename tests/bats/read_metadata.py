#!/usr/bin/python3
"""An independent reader of a DCP checkpoint directory, for judging what ckptfs writes.

Nothing of ckptfs (and nothing of torch) is used: `.metadata` is read by Python's own
unpickler with every global replaced by a stand-in class that records its constructor
arguments and BUILD state (custom Unpickler.find_class), items are opened with `zipfile`
(after `zstd -d` for `stream.zstd/1` items), and `data.pkl` is unpickled the same way.

usage:
  read_metadata.py --check [--metadata-only] DIR
      Checks the structure torch needs: exact class paths, TensorProperties' tuple state,
      torch.Size values, one storage entry per chunk whose MetadataIndex matches the chunk
      (fqn, offset, index), chunks that tile each tensor; unless --metadata-only, every
      entry lies inside an existing file, every item is a valid zip (testzip() is None)
      whose data.pkl unpickles to a tensor of the chunk's size and dtype, with contiguous
      strides and 64-byte aligned data for items in files ckptfs wrote (__ckptfs_*).
      Prints one line per problem; exit status 1 if any.
  read_metadata.py --json DIR            Keys, dtypes, shapes, chunks and storage as JSON.
  read_metadata.py --tensor FQN DIR      The key's bytes (tensor: row-major elements
                                         assembled from its chunks; bytes: the payload)
                                         to stdout.
  read_metadata.py --sha256 DIR          {fqn: sha256 of those bytes} as JSON.
"""
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

MD = "torch.distributed.checkpoint.metadata"
FS = "torch.distributed.checkpoint.filesystem"
# torch 1.13 (torch.distributed._shard.checkpoint): its metadata classes, TensorProperties and
# its memory-format enum live elsewhere, and it writes no storage_meta or version
MD_113 = "torch.distributed._shard.checkpoint.metadata"
FS_113 = "torch.distributed._shard.checkpoint.filesystem"
PROPS_113 = "torch.distributed._shard.sharded_tensor.metadata"

# torch dtype name -> (element size, legacy storage class or None)
DTYPES = {
    "float64": (8, "DoubleStorage"), "float32": (4, "FloatStorage"), "float16": (2, "HalfStorage"),
    "bfloat16": (2, "BFloat16Storage"), "complex64": (8, "ComplexFloatStorage"),
    "complex128": (16, "ComplexDoubleStorage"), "complex32": (4, None),
    "int8": (1, "CharStorage"), "int16": (2, "ShortStorage"), "int32": (4, "IntStorage"),
    "int64": (8, "LongStorage"), "uint8": (1, "ByteStorage"), "bool": (1, "BoolStorage"),
    "uint16": (2, None), "uint32": (4, None), "uint64": (8, None),
    "float8_e4m3fn": (1, None), "float8_e5m2": (1, None), "float8_e4m3fnuz": (1, None),
    "float8_e5m2fnuz": (1, None), "float8_e8m0fnu": (1, None), "float4_e2m1fn_x2": (1, None),
}
STORAGE_TO_DTYPE = {v[1]: k for k, v in DTYPES.items() if v[1]}


class Stub:
    path = "?"

    def __init__(self, *args, **kwargs):
        self.args = args
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return "%s%r" % (self.path, self.args)


class StubUnpickler(pickle.Unpickler):
    def __init__(self, f, persistent=False):
        super().__init__(f)
        self._classes = {}
        self._persistent = persistent

    def find_class(self, module, name):
        key = module + "." + name
        if key not in self._classes:
            self._classes[key] = type(name, (Stub,), {"path": key})
        return self._classes[key]

    def persistent_load(self, pid):
        if not self._persistent:
            raise pickle.UnpicklingError("unexpected persistent id in .metadata")
        return ("persid", pid)


def path_of(obj):
    return getattr(obj, "path", None) if isinstance(obj, Stub) else None


def fields(obj):
    st = obj.state
    if isinstance(st, tuple) and len(st) == 2 and isinstance(st[1], dict):
        st = {**(st[0] or {}), **st[1]}
    return st if isinstance(st, dict) else {}


def size_of(v):
    """A torch.Size stand-in (REDUCE(torch.Size, (tuple,))) -> tuple of ints, else None."""
    if path_of(v) == "torch.Size" and len(v.args) == 1 and isinstance(v.args[0], tuple):
        if all(isinstance(x, int) and not isinstance(x, bool) for x in v.args[0]):
            return v.args[0]
    return None


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


class Problems:
    def __init__(self):
        self.lines = []

    def add(self, msg):
        self.lines.append(msg)


def load(ckpt):
    with open(os.path.join(ckpt, ".metadata"), "rb") as f:
        return StubUnpickler(f).load()


def parse(ckpt, probs):
    """-> {fqn: dict(kind, dtype, shape, chunks=[dict(offsets, sizes, storage)], path)}"""
    md = load(ckpt)
    v113 = path_of(md) == MD_113 + ".Metadata"
    MD, FS = (MD_113, FS_113) if v113 else (globals()["MD"], globals()["FS"])
    PROPS, MEMFMT = (PROPS_113, "MEM_FORMAT_ENCODING") if v113 else (MD, "_MEM_FORMAT_ENCODING")
    if path_of(md) != MD + ".Metadata":
        probs.add("root is %s, not %s.Metadata" % (path_of(md), MD))
        return {}
    f = fields(md)
    keys = {}
    sdm = f.get("state_dict_metadata")
    if not isinstance(sdm, dict):
        probs.add("state_dict_metadata is not a dict")
        return {}
    for fqn, v in sdm.items():
        if not isinstance(fqn, str):
            probs.add("key %r is not a str" % (fqn,))
            continue
        p = path_of(v)
        if p == MD + ".BytesStorageMetadata":
            keys[fqn] = {"kind": "bytes", "chunks": [{"storage": None}]}
            continue
        if p != MD + ".TensorStorageMetadata":
            probs.add("%s: value is %s" % (fqn, p))
            continue
        tf = fields(v)
        props = tf.get("properties")
        dtype = None
        if path_of(props) != PROPS + ".TensorProperties":
            probs.add("%s: properties is %s" % (fqn, path_of(props)))
        else:
            st = props.state
            if not (isinstance(st, tuple) and len(st) == 5):
                probs.add("%s: TensorProperties state is not a 5-tuple: %r" % (fqn, st))
            else:
                dt, layout, rg, mf, pin = st
                dp = path_of(dt)
                if isinstance(dt, type) and issubclass(dt, Stub):
                    dp = dt.path
                if not dp or not dp.startswith("torch.") or dp[6:] not in DTYPES:
                    probs.add("%s: dtype is %r" % (fqn, dt))
                else:
                    dtype = dp[6:]
                if not (path_of(layout) == "torch.serialization._get_layout"
                        and layout.args == ("torch.strided",)):
                    probs.add("%s: layout is %r" % (fqn, layout))
                if not isinstance(rg, bool) or not isinstance(pin, bool):
                    probs.add("%s: requires_grad/pin_memory not bools" % fqn)
                # the enum as Python < 3.11 pickles it, MEM(0), or as 3.11 does,
                # getattr(MEM, 'TORCH_CONTIGUOUS_FORMAT')
                enum = PROPS + "." + MEMFMT
                if not ((path_of(mf) == enum and mf.args == (0,)) or
                        (path_of(mf) == "builtins.getattr" and len(mf.args) == 2 and
                         getattr(mf.args[0], "path", None) == enum and
                         mf.args[1] == "TORCH_CONTIGUOUS_FORMAT")):
                    probs.add("%s: memory format is %r" % (fqn, mf))
        shape = size_of(tf.get("size"))
        if shape is None:
            probs.add("%s: size is not a torch.Size" % fqn)
            continue
        chunks = []
        for c in tf.get("chunks") or []:
            if path_of(c) != MD + ".ChunkStorageMetadata":
                probs.add("%s: chunk is %s" % (fqn, path_of(c)))
                continue
            cf = fields(c)
            o, s = size_of(cf.get("offsets")), size_of(cf.get("sizes"))
            if o is None or s is None or len(o) != len(shape) or len(s) != len(shape):
                probs.add("%s: chunk offsets/sizes are not torch.Size of rank %d" % (fqn, len(shape)))
                continue
            chunks.append({"offsets": list(o), "sizes": list(s), "storage": None})
        keys[fqn] = {"kind": "tensor", "dtype": dtype, "shape": list(shape), "chunks": chunks}

    sd = f.get("storage_data")
    if not isinstance(sd, dict):
        probs.add("storage_data is not a dict")
        sd = {}
    for mi, si in sd.items():
        if path_of(mi) != MD + ".MetadataIndex" or path_of(si) != FS + "._StorageInfo":
            probs.add("storage_data entry %s -> %s" % (path_of(mi), path_of(si)))
            continue
        mf_, sf = fields(mi), fields(si)
        fqn = mf_.get("fqn")
        k = keys.get(fqn)
        if k is None:
            probs.add("storage_data names unknown key %r" % (fqn,))
            continue
        storage = {
            "file": sf.get("relative_path"), "offset": sf.get("offset"),
            "length": sf.get("length"), "transforms": sf.get("transform_descriptors"),
        }
        if not isinstance(storage["file"], str) or not all(
                isinstance(storage[x], int) and storage[x] >= 0 for x in ("offset", "length")):
            probs.add("%s: _StorageInfo lacks path/offset/length: %r" % (fqn, sf))
            continue
        t = storage["transforms"]
        if t is not None and not (isinstance(t, list) and all(isinstance(x, str) for x in t)):
            probs.add("%s: transform_descriptors is %r" % (fqn, t))
        if k["kind"] == "bytes":
            if mf_.get("index") is not None or mf_.get("offset") is not None:
                probs.add("%s: bytes MetadataIndex has offset/index" % fqn)
            if k["chunks"][0]["storage"] is not None:
                probs.add("%s: two storage entries" % fqn)
            k["chunks"][0]["storage"] = storage
            continue
        idx, off = mf_.get("index"), size_of(mf_.get("offset"))
        if not isinstance(idx, int) or not 0 <= idx < len(k["chunks"]):
            probs.add("%s: MetadataIndex.index %r out of range" % (fqn, idx))
            continue
        if off is None or list(off) != k["chunks"][idx]["offsets"]:
            probs.add("%s: MetadataIndex.offset %r differs from chunk %d's offsets" % (fqn, off, idx))
        if k["chunks"][idx]["storage"] is not None:
            probs.add("%s: chunk %d has two storage entries" % (fqn, idx))
        k["chunks"][idx]["storage"] = storage

    pd = f.get("planner_data")
    for fqn, k in keys.items():
        for i, c in enumerate(k["chunks"]):
            if c["storage"] is None:
                probs.add("%s: chunk %d has no storage entry" % (fqn, i))
        path = pd.get(fqn) if isinstance(pd, dict) else None
        if isinstance(path, tuple):
            k["planner_path"] = list(path)
            if ".".join(str(x) for x in path) != fqn:
                probs.add("%s: planner_data path %r does not join to the key" % (fqn, path))
        if k["kind"] == "tensor":
            check_tiling(fqn, k, probs)
    if f.get("version") != "1.0.0" and not (v113 and "version" not in f):
        probs.add("version is %r" % (f.get("version"),))
    sm = f.get("storage_meta")
    if sm is not None and path_of(sm) != MD + ".StorageMeta":
        probs.add("storage_meta is %s" % path_of(sm))
    return keys


def check_tiling(fqn, k, probs):
    shape, chunks = k["shape"], k["chunks"]
    total = 0
    for c in chunks:
        for o, s, d in zip(c["offsets"], c["sizes"], shape):
            if o + s > d:
                probs.add("%s: chunk at %r exceeds shape %r" % (fqn, c["offsets"], shape))
        total += numel(c["sizes"])
    if total != numel(shape):
        probs.add("%s: chunks hold %d of %d elements" % (fqn, total, numel(shape)))
    if len(chunks) <= 512:
        for i in range(len(chunks)):
            for j in range(i + 1, len(chunks)):
                a, b = chunks[i], chunks[j]
                if numel(a["sizes"]) and numel(b["sizes"]) and all(
                        ao < bo + bs and bo < ao + as_ for ao, as_, bo, bs in
                        zip(a["offsets"], a["sizes"], b["offsets"], b["sizes"])):
                    probs.add("%s: chunks %d and %d overlap" % (fqn, i, j))


def item_bytes(ckpt, st):
    """The item's archive bytes after undoing its transforms."""
    with open(os.path.join(ckpt, st["file"]), "rb") as f:
        f.seek(st["offset"])
        raw = f.read(st["length"])
    if len(raw) != st["length"]:
        raise ValueError("%s ends before offset %d + length %d" % (st["file"], st["offset"], st["length"]))
    for t in reversed(st["transforms"] or []):
        if t in ("stream.zstd/1", "stream.zstd"):
            raw = subprocess.run(["zstd", "-d", "-c", "-q"], input=raw, stdout=subprocess.PIPE,
                                 check=True).stdout
        else:
            raise ValueError("unknown transform %r" % t)
    return raw


def member(z, suffix):
    for n in z.namelist():
        if n.endswith("/" + suffix):
            return n
    return None


def tensor_item(data):
    """-> dict(dtype, size, stride, storage_offset, data0 bytes, data0_offset)"""
    z = zipfile.ZipFile(io.BytesIO(data))
    bad = z.testzip()
    if bad is not None:
        raise ValueError("zip member %s has a bad CRC" % bad)
    pkl = member(z, "data.pkl")
    if pkl is None:
        raise ValueError("no data.pkl")
    obj = StubUnpickler(io.BytesIO(z.read(pkl)), persistent=True).load()
    p = path_of(obj)
    if p not in ("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3"):
        raise ValueError("data.pkl is %s" % p)
    a = obj.args
    pid = a[0]
    if not (isinstance(pid, tuple) and pid[0] == "persid" and pid[1][0] == "storage"):
        raise ValueError("data.pkl's storage is %r" % (pid,))
    _, stype, skey, _loc, scount = pid[1]
    spath = stype.path if isinstance(stype, type) else path_of(stype)
    if p.endswith("_v3"):
        dt = a[6]
        dpath = dt.path if isinstance(dt, type) else path_of(dt)
        dtype = dpath[6:] if dpath and dpath.startswith("torch.") else None
        if spath != "torch.storage.UntypedStorage":
            raise ValueError("_rebuild_tensor_v3 over %s" % spath)
    else:
        dtype = STORAGE_TO_DTYPE.get(spath.split(".")[-1]) if spath else None
    d0 = member(z, "data/" + str(skey))
    if d0 is None:
        raise ValueError("no data/%s member" % skey)
    info = z.getinfo(d0)
    # where the member's data starts inside the archive
    hdr = data[info.header_offset:info.header_offset + 30]
    data_off = info.header_offset + 30 + int.from_bytes(hdr[26:28], "little") + \
        int.from_bytes(hdr[28:30], "little")
    return {"dtype": dtype, "size": list(a[2]), "stride": list(a[3]), "storage_offset": a[1],
            "data0": z.read(d0), "data0_offset": data_off, "storage_count": scount,
            "untyped": p.endswith("_v3")}


def contiguous_strides(size):
    st, acc = [], 1
    for d in reversed(size):
        st.append(acc)
        acc *= d
    return list(reversed(st))


def check_items(ckpt, keys, probs):
    for fqn, k in keys.items():
        for i, c in enumerate(k["chunks"]):
            st = c["storage"]
            if st is None:
                continue
            path = os.path.join(ckpt, st["file"])
            if not os.path.isfile(path):
                probs.add("%s: chunk %d: file %s does not exist" % (fqn, i, st["file"]))
                continue
            if st["offset"] + st["length"] > os.path.getsize(path):
                probs.add("%s: chunk %d: [%d, +%d) passes the end of %s (%d bytes)" % (
                    fqn, i, st["offset"], st["length"], st["file"], os.path.getsize(path)))
                continue
            ours = os.path.basename(st["file"]).startswith("__ckptfs_")
            try:
                data = item_bytes(ckpt, st)
                if k["kind"] == "bytes":
                    z = zipfile.ZipFile(io.BytesIO(data))
                    if z.testzip() is not None:
                        raise ValueError("bad CRC")
                    pkl = member(z, "data.pkl")
                    StubUnpickler(io.BytesIO(z.read(pkl)), persistent=True).load()
                    continue
                it = tensor_item(data)
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                probs.add("%s: chunk %d (%s @%d): %s" % (fqn, i, st["file"], st["offset"], e))
                continue
            if it["dtype"] != k["dtype"]:
                probs.add("%s: chunk %d holds %s, metadata says %s" % (fqn, i, it["dtype"], k["dtype"]))
            if it["size"] != c["sizes"]:
                probs.add("%s: chunk %d item size %r, chunk size %r" % (fqn, i, it["size"], c["sizes"]))
            es = DTYPES.get(k["dtype"], (1, None))[0]
            n = numel(c["sizes"])
            if n:
                last = it["storage_offset"] + sum((d - 1) * s for d, s in zip(it["size"], it["stride"]))
                if (last + 1) * es > len(it["data0"]):
                    probs.add("%s: chunk %d addresses past data/0" % (fqn, i))
            if ours:
                if it["stride"] != contiguous_strides(it["size"]) or it["storage_offset"] != 0:
                    probs.add("%s: chunk %d: ckptfs item is not contiguous: stride %r offset %d" % (
                        fqn, i, it["stride"], it["storage_offset"]))
                if len(it["data0"]) != n * es:
                    probs.add("%s: chunk %d: data/0 holds %d bytes, want %d" % (
                        fqn, i, len(it["data0"]), n * es))
                want_count = n * es if it["untyped"] else n
                if it["storage_count"] != want_count:
                    probs.add("%s: chunk %d: storage count %r, want %d" % (
                        fqn, i, it["storage_count"], want_count))
                if it["data0_offset"] % 64:
                    probs.add("%s: chunk %d: data/0 starts at %d, not 64-byte aligned" % (
                        fqn, i, it["data0_offset"]))


def key_bytes(ckpt, k):
    if k["kind"] == "bytes":
        return item_bytes(ckpt, k["chunks"][0]["storage"])
    import numpy as np
    es = DTYPES[k["dtype"]][0]
    vt = np.dtype("V%d" % es)
    out = np.zeros(tuple(k["shape"]), dtype=vt)
    for c in k["chunks"]:
        it = tensor_item(item_bytes(ckpt, c["storage"]))
        buf = np.frombuffer(it["data0"], dtype=vt)
        if numel(c["sizes"]) == 0:
            continue
        view = np.lib.stride_tricks.as_strided(
            buf[it["storage_offset"]:], shape=tuple(it["size"]),
            strides=tuple(s * es for s in it["stride"]))
        sl = tuple(slice(o, o + s) for o, s in zip(c["offsets"], c["sizes"]))
        out[sl] = view
    return np.ascontiguousarray(out).tobytes()


def main(argv):
    args = argv[1:]
    if len(args) >= 2 and args[0] == "--check":
        metadata_only = "--metadata-only" in args
        ckpt = args[-1]
        probs = Problems()
        keys = parse(ckpt, probs)
        if not metadata_only:
            check_items(ckpt, keys, probs)
        for line in probs.lines:
            print(line)
        return 1 if probs.lines else 0
    if len(args) == 2 and args[0] == "--json":
        probs = Problems()
        keys = parse(args[1], probs)
        json.dump({"keys": keys, "problems": probs.lines}, sys.stdout, indent=1, sort_keys=True)
        print()
        return 1 if probs.lines else 0
    if len(args) == 3 and args[0] == "--tensor":
        keys = parse(args[2], Problems())
        sys.stdout.buffer.write(key_bytes(args[2], keys[args[1]]))
        return 0
    if len(args) == 2 and args[0] == "--sha256":
        keys = parse(args[1], Problems())
        json.dump({fqn: hashlib.sha256(key_bytes(args[1], k)).hexdigest() for fqn, k in keys.items()},
                  sys.stdout, indent=1, sort_keys=True)
        print()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
