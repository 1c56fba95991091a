"""A second, independent reader of the fixture checkpoints, in Python, that writes the tree
SPEC.md says ckptfs shows as a plain directory (files + user.ckpt.* xattrs).

It exists so the integration tests can test themselves: check_manifest.py must accept the
reference tree and reject a damaged one, so a pass against the daemon means something.
It also reads every key's bytes without ckptfs and compares them with the manifest.

usage: ref_tree.py SOURCE MANIFEST OUTDIR [--flat]     (OUTDIR must not exist)
       ref_tree.py SOURCE MANIFEST                     (only compare bytes with the manifest)
"""
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_names  # noqa: E402
import dcp_storage  # noqa: E402
import st_format  # noqa: E402

ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1,
            "float8_e5m2": 1, "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint64": 8,
            "uint32": 4, "uint16": 2, "uint8": 1, "bool": 1, "complex64": 8, "complex128": 16}


class _ArchiveUnpickler(dcp_storage._StubUnpickler):
    def persistent_load(self, pid):
        return pid


def undo_transforms(raw, transforms):
    for t in reversed(transforms or []):
        if t.startswith("stream.zstd"):
            raw = subprocess.run(["zstd", "-d", "-c", "-q"], input=raw, check=True,
                                 stdout=subprocess.PIPE).stdout
        else:
            raise ValueError("unknown transform %r" % t)
    return raw


def chunk_array(archive, itemsize):
    """The chunk's elements in C order, as an array of itemsize-byte opaque elements."""
    z = zipfile.ZipFile(io.BytesIO(archive))
    names = z.namelist()
    pkl = next(n for n in names if n.endswith("/data.pkl"))
    rebuild = _ArchiveUnpickler(io.BytesIO(z.read(pkl))).load()
    args = rebuild.args
    pid, storage_offset, size, stride = args[0], args[1], tuple(args[2]), tuple(args[3])
    key = pid[2]
    prefix = pkl[: -len("data.pkl")]
    storage = np.frombuffer(z.read(prefix + "data/" + key), dtype="V%d" % itemsize)
    if 0 in size:
        return np.zeros(size, dtype=storage.dtype)
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:], shape=size, strides=[s * itemsize for s in stride])
    return np.ascontiguousarray(view)


def read_dcp(src, manifest):
    meta = dcp_storage.load_metadata(src)
    sdm = dcp_storage._field(meta, "state_dict_metadata")
    by_index = {}
    for index, info in dcp_storage._field(meta, "storage_data").items():
        fqn = dcp_storage._field(index, "fqn")
        by_index[(fqn, dcp_storage._field(index, "index"))] = info
    out = {}
    for fqn, md in sdm.items():
        entry = manifest[fqn]
        if entry["kind"] == "bytes":
            info = by_index[(fqn, None)]
            out[fqn] = read_item(src, info)
            continue
        itemsize = ITEMSIZE[entry["dtype"]]
        shape = tuple(entry["shape"])
        full = np.zeros(shape, dtype="V%d" % itemsize)
        for i, chunk in enumerate(dcp_storage._field(md, "chunks")):
            offs = tuple(dcp_storage._field(chunk, "offsets").args[0])
            arr = chunk_array(read_item(src, by_index[(fqn, i)]), itemsize)
            full[tuple(slice(o, o + s) for o, s in zip(offs, arr.shape))] = arr
        out[fqn] = full.tobytes()
    return out


def read_item(src, info):
    f = dcp_storage._field
    with open(os.path.join(src, f(info, "relative_path")), "rb") as fh:
        fh.seek(f(info, "offset"))
        raw = fh.read(f(info, "length"))
    return undo_transforms(raw, f(info, "transform_descriptors"))


def read_safetensors(src, manifest):
    paths = [src] if os.path.isfile(src) else sorted(
        os.path.join(src, n) for n in os.listdir(src) if n.endswith(".safetensors"))
    pieces = {}
    for p in paths:
        with open(p, "rb") as fh:
            meta, tensors, _, _ = st_format.parse(fh.read(), p)
        sharding = json.loads(meta.get("DCP_SHARDING_INFO", "{}"))
        for name, (code, shape, raw) in tensors.items():
            offs = sharding.get(name, {}).get("saved_offsets", [0] * len(shape))
            pieces.setdefault(name, []).append((offs, shape, raw))
    out = {}
    for fqn, entry in manifest.items():
        itemsize = ITEMSIZE[entry["dtype"]]
        full = np.zeros(tuple(entry["shape"]), dtype="V%d" % itemsize)
        for offs, shape, raw in pieces[fqn]:
            arr = np.frombuffer(raw, dtype="V%d" % itemsize).reshape(shape)
            full[tuple(slice(o, o + s) for o, s in zip(offs, shape))] = arr
        out[fqn] = full.tobytes()
    return out


def read_checkpoint(src, manifest):
    if os.path.isdir(src) and os.path.exists(os.path.join(src, ".metadata")):
        return read_dcp(src, manifest)
    return read_safetensors(src, manifest)


def write_tree(out_dir, manifest, contents, flat):
    files, dirs = ckpt_names.tree_layout(manifest, flat=flat)
    os.mkdir(out_dir)
    for d in sorted(dirs):
        if d:
            os.makedirs(os.path.join(out_dir, d), exist_ok=True)
    for rel, fqn in files.items():
        path = os.path.join(out_dir, rel)
        with open(path, "wb") as fh:
            fh.write(contents[fqn])
        entry = manifest[fqn]
        os.setxattr(path, "user.ckpt.fqn", fqn.encode())
        if entry["kind"] == "bytes":
            os.setxattr(path, "user.ckpt.kind", b"bytes")
            continue
        os.setxattr(path, "user.ckpt.dtype", entry["dtype"].encode())
        os.setxattr(path, "user.ckpt.shape",
                    ("[" + ",".join(map(str, entry["shape"])) + "]").encode())
        # The reference tree does not model sharding: one whole-tensor chunk, or as many
        # opaque entries as the manifest counts.
        chunks = [{"offsets": [0] * len(entry["shape"]), "sizes": entry["shape"]}]
        if entry.get("chunks", 1) != 1:
            chunks = [{"index": i} for i in range(entry["chunks"])]
        os.setxattr(path, "user.ckpt.chunks", json.dumps(chunks).encode())


def stamp_mtimes(out_dir, src):
    """Gives every entry the checkpoint's mtime, as ckptfs does."""
    t = os.stat(src).st_mtime
    for root, dirnames, filenames in os.walk(out_dir, topdown=False):
        for n in filenames + dirnames:
            os.utime(os.path.join(root, n), (t, t))


def main():
    src, manifest_path = sys.argv[1], sys.argv[2]
    manifest = ckpt_names.load_manifest(manifest_path)
    contents = read_checkpoint(src, manifest)
    bad = 0
    for fqn, entry in manifest.items():
        got = hashlib.sha256(contents.get(fqn, b"")).hexdigest()
        if fqn not in contents or got != entry["sha256"]:
            print("reference reader disagrees with manifest on %r" % fqn)
            bad += 1
    if set(contents) != set(manifest):
        print("keys differ: %r" % sorted(set(contents) ^ set(manifest)))
        bad += 1
    if bad:
        return 1
    if len(sys.argv) > 3:
        write_tree(sys.argv[3], manifest, contents, "--flat" in sys.argv[4:])
        stamp_mtimes(sys.argv[3], src)
    print("ok: %d keys" % len(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
