"""Writes a safetensors checkpoint of awkward floating-point values, and its manifest, for
the dtype-conversion and statistics tests.

usage: make_special_values.py OUT.safetensors OUT.manifest.json

Keys (all in one file, so /.ckptfs/model.safetensors, DIR.safetensors and /.ckptfs/hf all
see them):
  vals.f32       NaNs with payloads and both signs, +-inf, +-0, float32 subnormals,
                 float16 subnormals and their ties, bfloat16/float16 ties (odd and even),
                 65504, 65519.99, 65520 (rounds to inf in float16), 3.4e38, 1e38,
                 float32 max, then 20000 random bit patterns and 2000 normal values
  vals.f64       the same kinds for float64, plus values that round twice (through
                 float32) and ones beyond float32's range
  vals.f16_all   every one of the 65536 float16 bit patterns, shape [256, 256]
  vals.bf16_all  every bfloat16 bit pattern, shape [256, 256]
  vals.i32, vals.c64, vals.mask   never converted
  vals.zero_d    a 0-d float32
  vals.moderate  10000 float32 around 1e3 with NaNs, zeros and float32 subnormals but no inf
                 (so mean, std and l2 are finite numbers to compare)
  vals.inf_only  [1, inf, 2]: one kind of infinity
"""
import hashlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_format  # noqa: E402


def f32_values(rng):
    bits = [0x7fc00000, 0xffc00000, 0x7fc00001, 0x7f800001, 0xff812345, 0x7fbfffff,
            0x7f800000, 0xff800000, 0x00000000, 0x80000000, 0x00000001, 0x807fffff,
            0x00400000]
    fixed = np.array(bits, dtype=np.uint32).view(np.float32)
    specials = np.array([
        2.0 ** -24, 2.0 ** -25, 1.5 * 2.0 ** -25, 2.0 ** -25 * (1 + 2.0 ** -20), 3 * 2.0 ** -25,
        2.0 ** -14, 2.0 ** -14 - 2.0 ** -25, 2.0 ** -14 - 2.0 ** -24, 2.0 ** -126, 2.0 ** -127,
        1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 1 + 2.0 ** -11 + 2.0 ** -23,
        1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 1 + 2.0 ** -8 - 2.0 ** -23, -(1 + 3 * 2.0 ** -8),
        65504.0, 65519.99, 65520.0, -65520.0, 65536.0, 1e5, 1e38, 3.4e38,
        float(np.finfo(np.float32).max), -float(np.finfo(np.float32).max),
        3.3895314e38, 3.3961775e38, 0.1, -0.1, 1 / 3.0, 1.0, -2.0,
    ], dtype=np.float32)
    rand_bits = rng.integers(0, 2 ** 32, size=20000, dtype=np.uint64).astype(np.uint32)
    normal = rng.standard_normal(2000).astype(np.float32) * np.float32(1000)
    return np.concatenate([fixed, specials, rand_bits.view(np.float32), normal])


def f64_values(rng):
    bits = [0x7ff8000000000000, 0xfff8000000000001, 0x7ff0000000000001, 0x7ff0000000000000,
            0xfff0000000000000, 0, 0x8000000000000000, 1, 0x000fffffffffffff]
    fixed = np.array(bits, dtype=np.uint64).view(np.float64)
    specials = np.array([
        1 + 2.0 ** -11 + 2.0 ** -30, 1 + 2.0 ** -11 + 2.0 ** -40, 1 + 2.0 ** -8 + 2.0 ** -40,
        65520.0 - 2.0 ** -20, 65519.99, 1e300, -1e300, 1e-300, 3.5e38, 3.4028235677973366e38,
        2.0 ** -149, 2.0 ** -150, 1.5 * 2.0 ** -150, 2.0 ** -25 * (1 + 2.0 ** -40), 0.1, 1 / 3.0,
    ], dtype=np.float64)
    rand_bits = rng.integers(0, 2 ** 63, size=10000, dtype=np.uint64) * np.uint64(2)
    rand_bits |= rng.integers(0, 2, size=10000, dtype=np.uint64)
    # mostly exponents near float32's and float16's range, where rounding happens
    near = rng.standard_normal(5000) * np.exp2(rng.integers(-160, 140, size=5000))
    return np.concatenate([fixed, specials, rand_bits.view(np.float64), near])


def moderate(rng):
    v = (rng.standard_normal(10000) * 1e3 + 5e3).astype(np.float32)
    v[::97] = np.nan
    v[5::101] = 0
    v[7::211] = np.float32(1e-40)  # a float32 subnormal
    return v


def main():
    out, man = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(20261201)
    all16 = np.arange(65536, dtype=np.uint32).astype(np.uint16).reshape(256, 256)
    entries = [
        ("vals.bf16_all", "bfloat16", [256, 256], all16.tobytes()),
        ("vals.c64", "complex64", [3], np.array([1 + 2j, np.nan, 3e38j], np.complex64).tobytes()),
        ("vals.f16_all", "float16", [256, 256], all16.tobytes()),
        ("vals.f32", "float32", None, f32_values(rng).tobytes()),
        ("vals.f64", "float64", None, f64_values(rng).tobytes()),
        ("vals.i32", "int32", [5], np.array([-2 ** 31, 2 ** 31 - 1, 0, 7, -7], np.int32).tobytes()),
        ("vals.mask", "bool", [4], np.array([1, 0, 1, 1], np.uint8).tobytes()),
        ("vals.zero_d", "float32", [], np.array(65520.0, np.float32).tobytes()),
        ("vals.moderate", "float32", None, moderate(rng).tobytes()),
        ("vals.inf_only", "float32", None, np.array([1, np.inf, 2], np.float32).tobytes()),
    ]
    size = {"float32": 4, "float64": 8}
    tensors, manifest = [], {}
    for name, dt, shape, raw in entries:
        if shape is None:
            shape = [len(raw) // size[dt]]
        tensors.append((name, st_format.ST_CODE[dt], shape, raw))
        manifest[name] = {"kind": "tensor", "dtype": dt, "shape": shape, "nbytes": len(raw),
                          "sha256": hashlib.sha256(raw).hexdigest(), "chunks": 1}
    with open(out, "wb") as f:
        f.write(st_format.build(tensors, {"format": "pt"}))
    with open(man, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
