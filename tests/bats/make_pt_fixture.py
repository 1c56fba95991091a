#!/usr/bin/python3
"""Writes a DCP checkpoint whose planner_data exercises every nesting rule of the .pt views.

usage: make_pt_fixture.py OUT_DIR      (also writes OUT_DIR.manifest.json, fixture format)

The checkpoint is written with scripts/gen_dcp.py's torch stand-ins and item writer (the
layout torch's FileSystemWriter produces); its bytes entries are real torch.save archives of
the objects (this python's torch).  What it holds:
- planner paths with int elements (lists, padded with None), nested dicts, and paths whose
  last element holds dots ("layers.0.w" under "model", so DIR.pt splits inside an element);
- a key with no planner_data (flat) and one whose planner path does not spell its FQN
  (placed by that path in model.pt, flat in the DIR.pt views below it);
- two keys whose paths collide (a value where the other needs a dict): the second is left out;
- tensors stored whole, as row bands (CRC from the items), and as column bands (CRC read);
- bytes entries: int, float, str, bytes, None, tuple, list, dict with int keys,
  OrderedDict, nested containers, tensors (a view into a storage, a transposed Parameter,
  one storage twice), and one holding another class (not inlinable: left out).
"""
import collections
import hashlib
import io
import json
import os
import pickle
import shutil
import sys
import uuid

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import gen_dcp as g  # noqa: E402


def main():
    out = os.path.abspath(sys.argv[1])
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    rng = np.random.default_rng(12)
    items = g.ItemWriter(rng)
    f = open(os.path.join(out, "__0_0.distcp"), "wb")
    pos = [0]
    sdm, planner, storage, manifest = {}, {}, {}, {}

    def put(value, data, archive=None):
        if archive is None:
            length = items.write(f, value, data)
        else:
            f.write(archive)
            length = len(archive)
        info = g._StorageInfo("__0_0.distcp", pos[0], length)
        pos[0] += length
        return info

    def tensor(fqn, arr, dtype, path, rows=1, cols=1):
        """arr: numpy array of the element bytes' type; split into rows x cols chunks."""
        shape = arr.shape
        chunks = []
        rsz, csz = shape[0] // rows, shape[1] // cols if len(shape) > 1 else 0
        for i in range(rows):
            for j in range(cols):
                if len(shape) == 2:
                    piece = np.ascontiguousarray(arr[i * rsz:(i + 1) * rsz, j * csz:(j + 1) * csz])
                    off = (i * rsz, j * csz)
                else:
                    piece = np.ascontiguousarray(arr[i * rsz:(i + 1) * rsz])
                    off = (i * rsz,)
                value = g._Tensor(g._Storage(dtype, piece.size), piece.shape)
                storage[g.MetadataIndex(fqn, off, len(chunks))] = put(
                    value, piece.reshape(-1).view(np.uint8))
                chunks.append(g.ChunkStorageMetadata(g.Size(off), g.Size(piece.shape)))
        sdm[fqn] = g.TensorStorageMetadata(g.TensorProperties(g.TORCH_DTYPE[dtype]),
                                           g.Size(shape), chunks)
        if path is not None:
            planner[fqn] = path
        data = np.ascontiguousarray(arr).tobytes()
        manifest[fqn] = {"kind": "tensor", "dtype": dtype, "shape": list(shape),
                         "nbytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def obj(fqn, value, path):
        buf = io.BytesIO()
        torch.save(value, buf)
        archive = buf.getvalue()
        storage[g.MetadataIndex(fqn)] = put(None, None, archive)
        sdm[fqn] = g.BytesStorageMetadata()
        if path is not None:
            planner[fqn] = path
        manifest[fqn] = {"kind": "bytes", "nbytes": len(archive),
                         "sha256": hashlib.sha256(archive).hexdigest()}

    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    bf16 = lambda *s: rng.integers(0, 1 << 16, s, dtype=np.uint16)  # noqa: E731
    tensor("model.layers.0.w", f32(8, 6), "float32", ("model", "layers.0.w"), rows=4)
    tensor("model.layers.1.w", f32(6, 8), "float32", ("model", "layers.1.w"), cols=2)
    tensor("model.embed", bf16(16, 4), "bfloat16", ("model", "embed"), rows=2, cols=2)
    tensor("lst.0", f32(5), "float32", ("lst", 0))
    tensor("lst.2.a", f32(3, 2), "float32", ("lst", 2, "a"))
    tensor("opt.state.0.exp_avg", f32(4), "float32", ("opt", "state", 0, "exp_avg"))
    tensor("opt.state.0.step", f32(1), "float32", ("opt", "state", 0, "step"))
    tensor("flat.key", f32(2, 2), "float32", None)
    tensor("weird.name", f32(3), "float32", ("not", "the", "fqn"))
    tensor("c", f32(2), "float32", ("c",))
    tensor("c.d", f32(2), "float32", ("c", "d"))      # collides with "c": left out
    obj("opt.groups", [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 1], "fused": None}],
        ("opt", "groups"))
    obj("meta.od", collections.OrderedDict([("b", 1), ("a", "x")]), ("meta", "od"))
    obj("meta.intkeys", {1: "one", 2: None, "n": -(2 ** 40), 3: True}, ("meta", "intkeys"))
    obj("meta.blob", b"\x00\xff bytes \x80", ("meta", "blob"))
    obj("meta.text", "h\u00e9llo \u2603", ("meta", "text"))
    obj("meta.nested", {"a": [[1, 2], (3, (4, 5.5)), {"z": []}], "e": ()}, ("meta", "nested"))
    obj("step", 1000, ("step",))
    obj("rng", {"state": torch.arange(6, dtype=torch.uint8)[1:5], "seed": 7}, ("rng",))
    obj("param", torch.nn.Parameter(torch.ones(2, 3).t()), ("param",))  # strided, a Parameter
    obj("shared", [torch.zeros(4, dtype=torch.int64)] * 2, ("shared",))  # one storage, twice
    obj("odd", {"x": collections.Counter("aab")}, ("odd",))   # a class: left out
    f.close()
    meta = g.Metadata(sdm, planner, storage,
                      g.StorageMeta(out, str(uuid.UUID(bytes=rng.bytes(16), version=4))))
    with open(os.path.join(out, ".metadata"), "wb") as mf:
        pickle.dump(meta, mf, protocol=4)
    with open(out + ".manifest.json", "w") as mf:
        json.dump(manifest, mf, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
