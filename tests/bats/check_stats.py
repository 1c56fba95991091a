"""Checks PATH.stats of every tensor of a ckptfs mount against numpy on the same values.

usage: check_stats.py MOUNT MANIFEST

The values are the tensor's raw file (its sha256 checked against the manifest first),
decoded here: bfloat16 from its bits, float8 from the format's definition.  Expected:
- counts (numel, nan, pos_inf, neg_inf, zeros) exact; min and max exact (numpy's nanmin,
  nanmax; integers and bool as exact integers);
- mean, std (population, ddof=0) and l2_norm = sqrt(sum x^2) of the non-NaN values to a
  relative 1e-9 (mean: or 1e-12 of the largest magnitude, where it cancels); a value that
  is not finite is the string "nan", "inf" or "-inf"; min, max, mean and std are null when
  no element is a number; where numpy itself overflows on values far from inf (float64
  near 1e308) that field is not compared;
- complex: the same of |z| ("of": "abs"), nan = a NaN part, pos_inf = an infinite part;
- dtype and shape are the manifest's.
"""
import hashlib
import json
import math
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_names  # noqa: E402

INTS = {"int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8,
        "uint64": np.uint64, "uint32": np.uint32, "uint16": np.uint16, "uint8": np.uint8,
        "bool": np.uint8}
FLOATS = {"float64": np.float64, "float32": np.float32, "float16": np.float16}
F8 = {"float8_e4m3fn": (4, 3, 7, "fn"), "float8_e5m2": (5, 2, 15, "ieee")}


class Problems(list):
    def add(self, msg):
        self.append(msg)
        print("PROBLEM: " + msg, flush=True)


def decode(raw, dtype):
    if dtype in FLOATS:
        return np.frombuffer(raw, FLOATS[dtype]).astype(np.float64)
    if dtype == "bfloat16":
        return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if dtype in F8:
        ebits, mbits, bias, kind = F8[dtype]
        out = []
        for b in raw:
            s, e, m = b >> 7, (b >> mbits) & ((1 << ebits) - 1), b & ((1 << mbits) - 1)
            if (kind == "fn" and e == 15 and m == 7) or (kind == "ieee" and e == 31 and m):
                v = math.nan
            elif kind == "ieee" and e == 31:
                v = math.inf
            else:
                v = ((1 << mbits) + m) * 2.0 ** (e - bias - mbits) if e else m * 2.0 ** (1 - bias - mbits)
            out.append(-v if s else v)
        return np.array(out, np.float64)
    if dtype == "complex64":
        return np.frombuffer(raw, np.complex64).astype(np.complex128)
    if dtype == "complex128":
        return np.frombuffer(raw, np.complex128)
    if dtype in INTS:
        a = np.frombuffer(raw, INTS[dtype])
        return (a != 0).astype(np.uint8) if dtype == "bool" else a
    return None


def num(v):
    if v is None:
        return None
    if isinstance(v, str):
        return {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[v]
    return float(v)


def close(got, want, tol, scale=0.0):
    if math.isnan(want):
        return math.isnan(got)
    if math.isinf(want):
        return got == want
    return abs(got - want) <= tol * max(abs(want), scale)


def expect(a, dtype):
    """The stats numpy gives, in the JSON's terms."""
    w = {"numel": int(a.size)}
    if dtype in INTS:
        w.update(nan=0, pos_inf=0, neg_inf=0, zeros=int(np.count_nonzero(a == 0)))
        if a.size:
            ints = [int(x) for x in a]
            w.update(min=min(ints), max=max(ints), mean=math.fsum(ints) / len(ints),
                     exact=True)
        x = a.astype(np.float64)
    elif np.iscomplexobj(a):
        nan = np.isnan(a.real) | np.isnan(a.imag)
        inf = (np.isinf(a.real) | np.isinf(a.imag)) & ~nan
        w.update(nan=int(nan.sum()), pos_inf=int(inf.sum()), neg_inf=0,
                 zeros=int(np.count_nonzero(a == 0)))
        x = np.abs(a[~nan])
    else:
        nan = np.isnan(a)
        w.update(nan=int(nan.sum()), pos_inf=int(np.count_nonzero(a == np.inf)),
                 neg_inf=int(np.count_nonzero(a == -np.inf)), zeros=int(np.count_nonzero(a == 0)))
        x = a[~nan]
    if x.size == 0:
        w.update(min=None, max=None, mean=None, std=None, l2=0.0)
        return w
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if "exact" not in w:
            w.update(min=float(x.min()), max=float(x.max()), mean=float(np.mean(x)))
        w.update(std=float(np.std(x)), l2=float(np.sqrt(np.sum(x * x))),
                 scale=float(np.max(np.abs(x))))
    return w


def check(fqn, e, got, a, probs):
    w = expect(a, e["dtype"])
    if got.get("dtype") != e["dtype"] or got.get("shape") != e["shape"]:
        probs.add("%s: dtype/shape %r %r" % (fqn, got.get("dtype"), got.get("shape")))
    for k in ("numel", "nan", "pos_inf", "neg_inf", "zeros"):
        if got.get(k) != w[k]:
            probs.add("%s: %s = %r, numpy says %r" % (fqn, k, got.get(k), w[k]))
    if got.get("std_ddof") != 0:
        probs.add("%s: std_ddof %r" % (fqn, got.get("std_ddof")))
    if (got.get("of") == "abs") != bool(np.iscomplexobj(a)):
        probs.add("%s: 'of' is %r" % (fqn, got.get("of")))
    if w["min"] is None:
        for k in ("min", "max", "mean", "std"):
            if got.get(k) is not None:
                probs.add("%s: %s = %r, want null (no number)" % (fqn, k, got.get(k)))
        return
    inf_free = w["pos_inf"] == 0 and w["neg_inf"] == 0
    for k in ("min", "max"):
        g = got.get(k)
        if w.get("exact"):
            if not isinstance(g, int) or g != w[k]:
                probs.add("%s: %s = %r, want exactly %r" % (fqn, k, g, w[k]))
        elif np.iscomplexobj(a) and math.isfinite(w[k]):
            # |z| is rounded by the libm's hypot here and by numpy's own SIMD formula
            # (hi * sqrt(1 + (lo/hi)^2)): they may differ in the last bits
            if not isinstance(num(g), float) or not close(num(g), w[k], 1e-15):
                probs.add("%s: %s = %r, numpy says %r" % (fqn, k, g, w[k]))
        elif num(g) != w[k]:
            probs.add("%s: %s = %r, numpy says %r" % (fqn, k, g, w[k]))
    for k, key, tol in (("mean", "mean", 1e-12), ("std", "std", 1e-9), ("l2", "l2_norm", 1e-9)):
        want = w[k]
        if inf_free and not math.isfinite(want):
            continue  # numpy overflowed where the true value is finite: nothing to compare
        g = num(got.get(key))
        # a mean near 0 cancels: judged against the largest magnitude instead
        if g is None or not close(g, want, tol, w["scale"] if k == "mean" else 0):
            probs.add("%s: %s = %r, numpy says %r" % (fqn, key, got.get(key), want))


def main():
    warnings.simplefilter("ignore", RuntimeWarning)  # NaN casts while decoding
    mount, man = sys.argv[1], sys.argv[2]
    manifest = ckpt_names.load_manifest(man)
    files, _ = ckpt_names.tree_layout(manifest)
    probs = Problems()
    n = 0
    for path, fqn in sorted(files.items()):
        e = manifest[fqn]
        if e["kind"] != "tensor":
            if os.path.exists(os.path.join(mount, path + ".stats")):
                probs.add("%s: a bytes entry has a .stats view" % fqn)
            continue
        with open(os.path.join(mount, path), "rb") as f:
            raw = f.read()
        if hashlib.sha256(raw).hexdigest() != e["sha256"]:
            probs.add("%s: raw bytes differ from the manifest" % fqn)
            continue
        a = decode(raw, e["dtype"])
        if a is None:
            continue
        with open(os.path.join(mount, path + ".stats"), "rb") as f:
            text = f.read()
        if os.path.getsize(os.path.join(mount, path + ".stats")) != len(text):
            probs.add("%s.stats: stat size differs from the bytes read" % path)
        try:
            got = json.loads(text)
        except ValueError as err:
            probs.add("%s.stats: not JSON: %s" % (path, err))
            continue
        check(fqn, e, got, a, probs)
        n += 1
    print("checked %d .stats views" % n)
    sys.exit(1 if probs else 0)


if __name__ == "__main__":
    main()
