"""Checks the framework views of a ckptfs mount (SPEC "Views for frameworks").

usage: check_views.py MOUNT MANIFEST [--npy] [--safetensors] [--metadata-json] [--npy-listed]

--npy:            PATH.npy for every tensor loads with numpy.load(mmap_mode="r") to the
                  manifest's dtype (NumPy descr; same-width unsigned where NumPy has none),
                  shape and bytes, and is a v1.0 file whose data starts at a multiple of 64.
--npy-listed:     the same, for a mount with -o npy, whose tree lists the .npy names.
--safetensors:    DIR.safetensors for every directory holding tensors, and
                  /.ckptfs/model.safetensors, parse (st_format.py) to exactly the tensors
                  under DIR, named relative to DIR, with the manifest's dtype/shape/bytes.
--metadata-json:  /.ckptfs/metadata.json is JSON that names every key.
"""
import argparse
import hashlib
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_names  # noqa: E402
import st_format  # noqa: E402

NPY_DESCR = {
    "float64": "<f8", "float32": "<f4", "float16": "<f2", "bfloat16": "<u2",
    "float8_e4m3fn": "|u1", "float8_e5m2": "|u1", "float8_e4m3fnuz": "|u1",
    "float8_e5m2fnuz": "|u1", "complex64": "<c8", "complex128": "<c16",
    "int64": "<i8", "int32": "<i4", "int16": "<i2", "int8": "|i1",
    "uint64": "<u8", "uint32": "<u4", "uint16": "<u2", "uint8": "|u1", "bool": "|b1",
}


class Problems(list):
    def add(self, msg):
        self.append(msg)
        print("PROBLEM: " + msg, flush=True)


def check_npy_file(path, fqn, entry, probs):
    try:
        with open(path, "rb") as f:
            head = f.read(10)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        probs.add("%s: %s" % (path, e))
        return
    if head[:8] != b"\x93NUMPY\x01\x00":
        probs.add("%s: not a NumPy v1.0 file: %r" % (path, head[:8]))
        return
    (hlen,) = struct.unpack_from("<H", head, 8)
    if (10 + hlen) % 64:
        probs.add("%s: data starts at %d, not a multiple of 64" % (path, 10 + hlen))
    if size != 10 + hlen + entry["nbytes"]:
        probs.add("%s: size %d, want header %d + %d data bytes"
                  % (path, size, 10 + hlen, entry["nbytes"]))
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # numpy raises several kinds; any of them is the finding
        probs.add("%s: numpy.load(mmap_mode='r'): %s: %s" % (path, type(e).__name__, e))
        return
    want = np.dtype(NPY_DESCR[entry["dtype"]])
    if arr.dtype != want:
        probs.add("%s: dtype %s, want %s" % (path, arr.dtype.str, want.str))
    if list(arr.shape) != entry["shape"]:
        probs.add("%s: shape %r, want %r" % (path, arr.shape, entry["shape"]))
    if arr.flags["F_CONTIGUOUS"] and not arr.flags["C_CONTIGUOUS"]:
        probs.add("%s: fortran_order" % path)
    digest = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
    if digest != entry["sha256"]:
        probs.add("%s: data sha256 differs from the manifest" % path)


def check_npy(mount, manifest, listed, probs):
    files, _ = ckpt_names.tree_layout(manifest, npy=listed)
    n = 0
    for rel, fqn in sorted(files.items()):
        entry = manifest[fqn]
        if entry["kind"] != "tensor":
            continue
        path = os.path.join(mount, rel if listed else rel + ".npy")
        check_npy_file(path, fqn, entry, probs)
        n += 1
    return n


def dir_prefixes(manifest):
    """{directory path in the mount: FQN prefix} for every directory of the tree."""
    out = {}
    for fqn in manifest:
        raw = fqn.split(".")
        esc = [ckpt_names.escape(c) for c in raw]
        for i in range(1, len(raw)):
            out["/".join(esc[:i])] = ".".join(raw[:i])
    return out


def check_st_file(path, want, probs):
    """want: {name: manifest entry}; the file must hold exactly these tensors."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        probs.add("%s: %s" % (path, e))
        return
    try:
        _, tensors, spans, data_len = st_format.parse(blob, path)
    except (ValueError, KeyError, TypeError) as e:
        probs.add("%s: not a valid safetensors file: %s" % (path, e))
        return
    if set(tensors) != set(want):
        probs.add("%s: tensors %r, want %r" % (path, sorted(tensors), sorted(want)))
    spans.sort()
    pos = 0
    for begin, end in spans:
        if begin != pos:
            probs.add("%s: data_offsets leave a gap or overlap at %d" % (path, begin))
            break
        pos = end
    if pos != data_len:
        probs.add("%s: %d data bytes, tensors cover %d" % (path, data_len, pos))
    for name, entry in want.items():
        if name not in tensors:
            continue
        code, shape, raw = tensors[name]
        if code != st_format.ST_CODE[entry["dtype"]]:
            probs.add("%s: %s dtype %s, want %s" % (path, name, code,
                                                   st_format.ST_CODE[entry["dtype"]]))
        if shape != entry["shape"]:
            probs.add("%s: %s shape %r, want %r" % (path, name, shape, entry["shape"]))
        if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
            probs.add("%s: %s bytes differ from the manifest" % (path, name))


def check_safetensors(mount, manifest, probs):
    tensors = {k: v for k, v in manifest.items() if v["kind"] == "tensor"}
    n = 0
    for d, prefix in sorted(dir_prefixes(manifest).items()):
        want = {fqn[len(prefix) + 1:]: e for fqn, e in tensors.items()
                if fqn.startswith(prefix + ".")}
        if not want:
            continue  # a directory of bytes entries only: SPEC says nothing of its view
        check_st_file(os.path.join(mount, d + ".safetensors"), want, probs)
        n += 1
    check_st_file(os.path.join(mount, ".ckptfs", "model.safetensors"), tensors, probs)
    return n + 1


def collect_strings(doc, out):
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.add(k)
            collect_strings(v, out)
    elif isinstance(doc, list):
        for v in doc:
            collect_strings(v, out)
    elif isinstance(doc, str):
        out.add(doc)


def check_metadata_json(mount, manifest, probs):
    path = os.path.join(mount, ".ckptfs", "metadata.json")
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        probs.add("%s: %s" % (path, e))
        return
    strings = set()
    collect_strings(doc, strings)
    for fqn, entry in manifest.items():
        if fqn not in strings:
            probs.add("metadata.json does not name key %r" % fqn)
        elif entry["kind"] == "tensor" and entry["dtype"] not in strings:
            probs.add("metadata.json does not name dtype %r" % entry["dtype"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mount")
    ap.add_argument("manifest")
    ap.add_argument("--npy", action="store_true")
    ap.add_argument("--npy-listed", action="store_true")
    ap.add_argument("--safetensors", action="store_true")
    ap.add_argument("--metadata-json", action="store_true")
    args = ap.parse_args()
    manifest = ckpt_names.load_manifest(args.manifest)
    probs = Problems()
    counts = []
    if args.npy or args.npy_listed:
        counts.append("%d .npy" % check_npy(args.mount, manifest, args.npy_listed, probs))
    if args.safetensors:
        counts.append("%d .safetensors" % check_safetensors(args.mount, manifest, probs))
    if args.metadata_json:
        check_metadata_json(args.mount, manifest, probs)
        counts.append("metadata.json")
    if probs:
        print("%d problems (%s)" % (len(probs), ", ".join(counts)))
        return 1
    print("ok: " + ", ".join(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
