#!/usr/bin/python3
"""Seeds tests/fuzz/corpus/<target>/ from the torch 2.11 fixtures.

Run from the repository root with /usr/bin/python3 (numpy for the .npy seeds):
    /usr/bin/python3 tests/fuzz/make_corpus.py
Files are named by the sha1 of their content, as libFuzzer names its own, so
running it again adds nothing twice."""
import hashlib
import io
import os
import struct
import sys
import zipfile

import numpy as np

FIX = "tests/fixtures/torch-2.11"
OUT = "tests/fuzz/corpus"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def put(target, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def dcp_dirs():
    for name in sorted(os.listdir(FIX)):
        p = os.path.join(FIX, name)
        if os.path.isfile(os.path.join(p, ".metadata")):
            yield p


def metadata_seeds():
    for d in dcp_dirs():
        m = read(os.path.join(d, ".metadata"))
        put("fuzz_pickle", m)
        put("fuzz_dcp_metadata", m)


def item_seeds():
    # one file per item: each shard file of a *_perfile checkpoint is one item
    for d in dcp_dirs():
        if not d.endswith("_perfile"):
            continue
        for f in sorted(os.listdir(d)):
            if not f.endswith(".distcp"):
                continue
            item = read(os.path.join(d, f))
            put("fuzz_zip", item)
            with zipfile.ZipFile(io.BytesIO(item)) as z:
                for n in z.namelist():
                    if n.endswith("/data.pkl"):
                        put("fuzz_pickle", z.read(n))
    # zstd items: the shard is a run of frames; cut it at each frame magic
    blob = read(os.path.join(FIX, "dcp_zstd", "__0_0.distcp"))
    starts = []
    i = blob.find(ZSTD_MAGIC)
    while i >= 0:
        starts.append(i)
        i = blob.find(ZSTD_MAGIC, i + 1)
    starts.append(len(blob))
    for a, b in zip(starts, starts[1:]):
        if b - a <= 8192:
            put("fuzz_zip", blob[a:b])


def safetensors_seeds():
    files = [os.path.join(FIX, "st_single", "model.safetensors")]
    files += [os.path.join(FIX, "dcp_hf", f) for f in sorted(os.listdir(os.path.join(FIX, "dcp_hf")))
              if f.endswith(".safetensors")]
    for p in files:
        data = read(p)
        put("fuzz_safetensors", data)
    # a bigger real header, with the data region cut down to zeros that fit
    p = os.path.join(FIX, "hf_llama_sharded", "model-00001-of-00004.safetensors")
    data = read(p)
    n = struct.unpack("<Q", data[:8])[0]
    put("fuzz_safetensors", data[: 8 + n])
    # ck_st_parse_json takes byte 0 as the data-region size selector
    for p in files:
        data = read(p)
        n = struct.unpack("<Q", data[:8])[0]
        put("fuzz_safetensors", b"\x0c" + data[8: 8 + n])


def npy_seeds():
    arrays = [
        np.zeros((32, 16), "<f4"), np.zeros((), "<f8"), np.zeros((0, 4), "<i8"),
        np.zeros((3,), "|u1"), np.zeros((2, 3, 4), "<u2"), np.zeros((5,), "|b1"),
        np.zeros((2, 2), "<c8"), np.zeros((7, 1, 1, 1, 2), "<f2"), np.zeros((1,), "|i1"),
        np.zeros((3, 5), "<i4"),
    ]
    for a in arrays:
        for version in ((1, 0), (2, 0)):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, a, version=version)
            put("fuzz_npy", buf.getvalue()[:256])
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros((2, 3), "<f4", order="F"), version=(1, 0))
    put("fuzz_npy", buf.getvalue()[:256])
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros((4,), [("a", "<f4")]), version=(3, 0))
    put("fuzz_npy", buf.getvalue()[:256])


def geometry_seeds():
    # see fuzz_geometry.c for the byte layout: mode, ndim, dtype, shape, chunks, ranges
    seeds = [
        bytes([0, 2, 2, 10, 4, 1, 3, 0, 0]) + bytes(40),          # 10x4 rows cut at 3
        bytes([0, 2, 1, 9, 6, 2, 3, 0, 0, 0, 0, 0, 0, 0, 1, 4]) + bytes(40),
        bytes([0, 3, 0, 4, 5, 6, 1, 2, 1, 3, 1, 1]) + bytes(60),
        bytes([0, 0, 2]) + bytes(40),                             # 0-d
        bytes([1, 2, 2, 4, 4, 2, 0, 2, 0, 4, 2, 4, 0, 2, 4]) + bytes(40),  # raw: two halves
        bytes([2, 1, 0, 0x80 | 40, 1, 0]) + bytes(40),            # 2^40 elements, one chunk
        bytes([5, 2, 3, 3, 3, 1, 5, 0, 0]) + bytes(40),           # damaged tiling
    ]
    for s in seeds:
        put("fuzz_geometry", s)


def main():
    if not os.path.isdir(FIX):
        sys.exit("run from the repository root")
    metadata_seeds()
    item_seeds()
    safetensors_seeds()
    npy_seeds()
    geometry_seeds()
    for t in sorted(os.listdir(OUT)):
        print(t, len(os.listdir(os.path.join(OUT, t))))


if __name__ == "__main__":
    main()
