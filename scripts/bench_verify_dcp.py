#!/usr/bin/python3
"""Read a DCP checkpoint back without torch and check every key against a sha256 list.

    bench_verify_dcp.py DIR [SUMS.json]

SUMS.json defaults to DIR.sha256.json ({fqn: sha256}, as gen_dcp.py writes) and may also be a
torch fixture manifest ({fqn: {"sha256": ...}}).  Exit status 0 when every key matches.

This is a second, independent reading of the format (Python pickle + zipfile + numpy), so that
gen_dcp.py's output is checked by something that also reads real torch checkpoints
(tests/fixtures/torch-2.11), before and apart from ckptfs.
"""
import collections
import hashlib
import io
import json
import os
import pickle
import sys
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_dcp as g  # noqa: E402  (registers the torch stand-in modules)

# dtype name -> numpy dtype holding its bits; storage class name -> dtype name
NP_BITS = {"float32": "<f4", "float64": "<f8", "float16": "<f2", "bfloat16": "<u2", "int8": "i1",
           "int16": "<i2", "int32": "<i4", "int64": "<i8", "uint8": "u1", "bool": "u1",
           "complex64": "<c8", "complex128": "<c16", "float8_e4m3fn": "u1", "float8_e5m2": "u1",
           "uint16": "<u2", "uint32": "<u4", "uint64": "<u8"}
STORAGES = {"FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
            "BFloat16Storage": "bfloat16", "CharStorage": "int8", "ShortStorage": "int16",
            "IntStorage": "int32", "LongStorage": "int64", "ByteStorage": "uint8", "BoolStorage": "bool",
            "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128"}


class _Props:
    def __setstate__(self, state):
        self.dtype = state[0]


class _Plain:
    """Any dataclass-like object: BUILD with a dict state."""


class _Dtype(str):
    pass


class _Size(tuple):
    pass


class _StorageClass:
    def __init__(self, dtype):
        self.dtype = dtype


def _rebuild(storage, storage_offset, size, stride, *rest):
    dtype = storage[0]
    if len(rest) >= 3 and isinstance(rest[2], _Dtype):   # _rebuild_tensor_v3: dtype is an argument
        dtype = str(rest[2])
    return ("tensor", dtype, storage[1], storage_offset, tuple(size), tuple(stride))


class _MetaUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch" and name == "Size":
            return lambda t=(): _Size(t)
        if module == "torch":
            return _Dtype(name)
        if module == "torch.serialization" and name == "_get_layout":
            return lambda n: n
        if name == "_MEM_FORMAT_ENCODING":
            return lambda v: v
        if name == "TensorProperties":
            return _Props
        if module.startswith("torch.distributed.checkpoint"):
            return type(name, (_Plain,), {})
        if module == "pathlib":
            return lambda *parts: os.path.join(*parts) if parts else ""
        raise pickle.UnpicklingError("unexpected global %s.%s" % (module, name))


class _ItemUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor_v3"):
            return _rebuild
        if module == "torch" and name in STORAGES:
            return _StorageClass(STORAGES[name])
        if module == "torch.storage" and name == "UntypedStorage":
            return _StorageClass("uint8")
        if module == "torch":
            return _Dtype(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError("unexpected global %s.%s in an item" % (module, name))

    def persistent_load(self, pid):
        _, cls, key, _, numel = pid
        return (cls.dtype, key, numel)


def decode(raw, transforms, zstd):
    for t in reversed(list(transforms or [])):
        if not t.startswith("stream.zstd"):
            raise ValueError("unknown transform %s" % t)
        raw = zstd.decompress(raw)
    return raw


def chunk_array(item_bytes):
    """The chunk's elements as an ndarray of its dtype's bits, from one torch.save archive."""
    zf = zipfile.ZipFile(io.BytesIO(item_bytes))
    names = {n.split("/", 1)[1]: n for n in zf.namelist()}
    kind, dtype, key, storage_offset, size, stride = _ItemUnpickler(io.BytesIO(zf.read(names["data.pkl"]))).load()
    np_dtype = np.dtype(NP_BITS[dtype])
    storage = np.frombuffer(zf.read(names["data/" + key]), dtype=np_dtype)
    if not size:
        return storage[storage_offset:storage_offset + 1].reshape(()), dtype
    strides = tuple(s * np_dtype.itemsize for s in stride)
    view = np.lib.stride_tricks.as_strided(storage[storage_offset:] if storage.size else storage,
                                           shape=size, strides=strides) if all(size) else \
        np.empty(size, dtype=np_dtype)
    return view, dtype


def read_checkpoint(path):
    """Yields (fqn, bytes) for every key, tensors as C-order element bytes."""
    with open(os.path.join(path, ".metadata"), "rb") as f:
        md = _MetaUnpickler(f).load()
    zstd = g.Zstd()
    by_fqn = collections.defaultdict(list)
    for idx, info in md.storage_data.items():
        by_fqn[idx.fqn].append((getattr(idx, "index", None), info))

    def raw(info):
        with open(os.path.join(path, info.relative_path), "rb") as f:
            f.seek(info.offset)
            data = f.read(info.length)
        return decode(data, getattr(info, "transform_descriptors", None), zstd)

    for fqn, entry in md.state_dict_metadata.items():
        if not hasattr(entry, "chunks"):
            yield fqn, raw(by_fqn[fqn][0][1])
            continue
        dtype = str(entry.properties.dtype)
        full = np.zeros(tuple(entry.size), dtype=NP_BITS[dtype])
        infos = dict(by_fqn[fqn])
        for i, chunk in enumerate(entry.chunks):
            arr, _ = chunk_array(raw(infos[i]))
            region = tuple(slice(o, o + s) for o, s in zip(chunk.offsets, chunk.sizes))
            full[region] = arr.reshape(tuple(chunk.sizes))
        yield fqn, np.ascontiguousarray(full).tobytes()


def main(argv):
    if not argv or len(argv) > 2:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    path = argv[0].rstrip("/")
    with open(argv[1] if len(argv) > 1 else path + ".sha256.json") as f:
        sums = {k: (v["sha256"] if isinstance(v, dict) else v) for k, v in json.load(f).items()}
    seen, bad = set(), 0
    for fqn, data in read_checkpoint(path):
        seen.add(fqn)
        if hashlib.sha256(data).hexdigest() != sums.get(fqn):
            print("MISMATCH %s (%d bytes)" % (fqn, len(data)))
            bad += 1
    for fqn in sorted(set(sums) - seen):
        print("MISSING %s" % fqn)
        bad += 1
    print("%s: %d keys, %d bad" % (path, len(seen), bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
