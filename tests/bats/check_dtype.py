"""Checks the `-o dtype=T` views of a ckptfs mount against real torch's Tensor.to(T).

usage: check_dtype.py MOUNT MANIFEST --dtype T [--seed N]

For every tensor of the manifest:
- its raw file is untouched (sha256 = the manifest's);
- the expected view bytes are torch's own `torch.tensor(raw).to(T)` for floating dtypes
  (float8 sources, which torch 1.13 lacks, are decoded here from the format's definition to
  float32 first, which is exact), and the raw bytes for every other dtype;
- PATH.npy says the converted dtype in user.ckpt.dtype (the raw file keeps the stored one);
- PATH.npy, /.ckptfs/model.safetensors, every top-level DIR.safetensors, the tensors of
  /.ckptfs/hf and those of /.ckptfs/model.pt (loaded by torch.load) hold exactly those bytes, under the converted dtype's name and size; NaN must
  stay NaN (torch's own NaN bits differ between its code paths, so only NaN-ness is
  compared there), every other element must be bit-identical;
- reads of the converted .npy views at random offsets and lengths (unaligned to elements)
  equal the same bytes of the whole file.
"""
import argparse
import hashlib
import json
import os
import random
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_names  # noqa: E402
import st_format  # noqa: E402

TORCH = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
         "bfloat16": torch.bfloat16}
FLOAT8 = {"float8_e4m3fn": (4, 3, 7, "fn"), "float8_e5m2": (5, 2, 15, "ieee")}
NUMPY_INT = {"int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8,
             "uint8": np.uint8, "bool": np.bool_, "complex64": np.complex64}
NPY = {"float32": "<f4", "float16": "<f2", "bfloat16": "<u2"}


class Problems(list):
    def add(self, msg):
        self.append(msg)
        print("PROBLEM: " + msg, flush=True)


def decode_f8(raw, fmt):
    ebits, mbits, bias, kind = fmt
    out = np.empty(len(raw), np.float32)
    for i, b in enumerate(raw):
        s, e, m = b >> 7, (b >> mbits) & ((1 << ebits) - 1), b & ((1 << mbits) - 1)
        if kind == "fn" and e == 15 and m == 7:
            v = float("nan")
        elif kind == "ieee" and e == (1 << ebits) - 1:
            v = float("nan") if m else float("inf")
        elif e:
            v = ((1 << mbits) + m) * 2.0 ** (e - bias - mbits)
        else:
            v = m * 2.0 ** (1 - bias - mbits)
        out[i] = -v if s else v
    return torch.from_numpy(out)


def source_tensor(raw, dtype):
    if dtype in ("float32", "float64", "float16"):
        return torch.from_numpy(np.frombuffer(raw, {"float32": np.float32, "float64": np.float64,
                                                     "float16": np.float16}[dtype]).copy())
    if dtype == "bfloat16":
        return torch.from_numpy(np.frombuffer(raw, np.int16).copy()).view(torch.bfloat16)
    if dtype in FLOAT8:
        return decode_f8(raw, FLOAT8[dtype])
    return None


def expected(raw, dtype, target):
    """(bytes, nan mask or None) of the view of a tensor stored as dtype."""
    t = source_tensor(raw, dtype)
    if t is None:
        return raw, None
    w = t.to(TORCH[target])
    mask = w.float().isnan().numpy()
    if target == "bfloat16":
        b = w.view(torch.int16).numpy().tobytes()
    else:
        b = w.numpy().tobytes()
    return b, mask


def same(got, want, mask, target):
    if mask is None:
        return got == want
    if len(got) != len(want):
        return False
    size = {"float32": 4, "float16": 2, "bfloat16": 2}[target]
    ints = {4: np.uint32, 2: np.uint16}[size]
    g = np.frombuffer(got, ints)
    w = np.frombuffer(want, ints)
    if target == "bfloat16":
        gf = torch.from_numpy(g.astype(np.int32).astype(np.int16)).view(torch.bfloat16).float()
        gnan = gf.isnan().numpy()
    else:
        gnan = np.isnan(np.frombuffer(got, {"float32": np.float32, "float16": np.float16}[target]))
    return bool(np.array_equal(gnan, mask) and np.array_equal(g[~mask], w[~mask]))


def st_tensors(path, probs):
    with open(path, "rb") as f:
        blob = f.read()
    try:
        return st_format.parse(blob, path)[1]
    except (ValueError, KeyError, TypeError) as e:
        probs.add("%s: %s" % (path, e))
        return {}


def flatten(obj, prefix, out):
    """{dotted path: tensor} of a nested state dict (dicts and lists, as dcp_to_torch_save
    nests them)."""
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flatten(v, "%s.%s" % (prefix, k) if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            flatten(v, "%s.%d" % (prefix, i) if prefix else str(i), out)


def check_pt(path, want, target, probs):
    """/.ckptfs/model.pt loaded by torch itself: every tensor of the checkpoint, converted
    ones in the target dtype with torch's .to() bytes, the others as stored."""
    try:
        sd = torch.load(path)
    except Exception as exc:  # noqa: BLE001 - any refusal is a problem to report
        probs.add("%s: torch.load: %s" % (path, exc))
        return
    got = {}
    flatten(sd, "", got)
    converted = 0
    for fqn, (b, mask, code, e) in want.items():
        t = got.get(fqn)
        if t is None:
            if e["dtype"] in TORCH or e["dtype"] in FLOAT8 or e["dtype"] in NUMPY_INT:
                probs.add("%s: %s missing" % (path, fqn))
            continue
        if mask is not None and t.dtype != TORCH[target]:
            probs.add("%s: %s is %s, want %s" % (path, fqn, t.dtype, target))
            continue
        if list(t.shape) != e["shape"]:
            probs.add("%s: %s has shape %r, want %r" % (path, fqn, list(t.shape), e["shape"]))
            continue
        t = t.contiguous()
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        if not same(raw, b, mask, target):
            probs.add("%s: %s bytes differ from torch's .to(%s)" % (path, fqn, target))
        converted += mask is not None
    if converted == 0 and any(m is not None for _, m, _, _ in want.values()):
        probs.add("%s: no converted tensor found" % path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mount")
    ap.add_argument("manifest")
    ap.add_argument("--dtype", required=True, choices=sorted(NPY))
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    manifest = ckpt_names.load_manifest(a.manifest)
    files, _ = ckpt_names.tree_layout(manifest)
    path_of = {fqn: p for p, fqn in files.items()}
    probs = Problems()
    rng = random.Random(a.seed)
    want = {}
    for fqn, e in sorted(manifest.items()):
        if e["kind"] != "tensor":
            continue
        with open(os.path.join(a.mount, path_of[fqn]), "rb") as f:
            raw = f.read()
        if hashlib.sha256(raw).hexdigest() != e["sha256"]:
            probs.add("%s: raw file changed under -o dtype" % fqn)
            continue
        b, mask = expected(raw, e["dtype"], a.dtype)
        code = st_format.ST_CODE.get(a.dtype if mask is not None else e["dtype"])
        want[fqn] = (b, mask, code, e)

    nconv = 0
    for fqn, (b, mask, code, e) in want.items():
        p = os.path.join(a.mount, path_of[fqn] + ".npy")
        with open(p, "rb") as f:
            whole = f.read()
        (hlen,) = struct.unpack_from("<H", whole, 8)
        header = whole[10:10 + hlen].decode("latin1")
        shown = os.getxattr(p, "user.ckpt.dtype").decode()
        if shown != (a.dtype if mask is not None else e["dtype"]):
            probs.add("%s: user.ckpt.dtype %s" % (p, shown))
        if os.getxattr(os.path.join(a.mount, path_of[fqn]), "user.ckpt.dtype").decode() != e["dtype"]:
            probs.add("%s: the raw file's user.ckpt.dtype changed" % fqn)
        if mask is not None:
            nconv += 1
            if "'descr': '%s'" % NPY[a.dtype] not in header:
                probs.add("%s: npy header %r, want descr %s" % (p, header, NPY[a.dtype]))
        if not same(whole[10 + hlen:], b, mask, a.dtype):
            probs.add("%s: npy data differ from torch's .to(%s)" % (p, a.dtype))
            continue
        if mask is None or not len(whole):
            continue
        fd = os.open(p, os.O_RDONLY)
        try:
            for _ in range(40):
                off = rng.randrange(len(whole))
                n = rng.randrange(1, min(len(whole) - off, 70000) + 1)
                if os.pread(fd, n, off) != whole[off:off + n]:
                    probs.add("%s: pread(%d, %d) differs from the whole file" % (p, off, n))
                    break
        finally:
            os.close(fd)

    def check_st(path, prefix):
        tensors = st_tensors(path, probs)
        for fqn, (b, mask, code, e) in want.items():
            if code is None or not fqn.startswith(prefix):
                continue
            name = fqn[len(prefix):]
            if name not in tensors:
                probs.add("%s: %s missing" % (path, name))
                continue
            c, shape, raw = tensors[name]
            if c != code or shape != e["shape"]:
                probs.add("%s: %s is %s%r, want %s%r" % (path, name, c, shape, code, e["shape"]))
            elif not same(raw, b, mask, a.dtype):
                probs.add("%s: %s bytes differ from torch's .to(%s)" % (path, name, a.dtype))

    check_st(os.path.join(a.mount, ".ckptfs", "model.safetensors"), "")
    for top in sorted({fqn.split(".")[0] for fqn in want if "." in fqn}):
        check_st(os.path.join(a.mount, ckpt_names.escape(top) + ".safetensors"), top + ".")
    hf = os.path.join(a.mount, ".ckptfs", "hf")
    merged = {}
    for n in sorted(os.listdir(hf)):
        if n.endswith(".safetensors"):
            merged.update(st_tensors(os.path.join(hf, n), probs))
    for fqn, (b, mask, code, e) in want.items():
        if code is None:
            continue
        if fqn not in merged:
            probs.add("hf: %s missing" % fqn)
        elif merged[fqn][0] != code or not same(merged[fqn][2], b, mask, a.dtype):
            probs.add("hf: %s differs from torch's .to(%s)" % (fqn, a.dtype))
    check_pt(os.path.join(a.mount, ".ckptfs", "model.pt"), want, a.dtype, probs)
    print("checked %d tensors (%d converted) to %s" % (len(want), nconv, a.dtype))
    sys.exit(1 if probs else 0)


if __name__ == "__main__":
    main()
