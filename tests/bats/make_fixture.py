"""Builds checkpoints with awkward key names, and damaged copies, for the integration tests.

usage:
  make_fixture.py renamed-dcp SRC_DIR SRC_MANIFEST OUT_DIR OUT_MANIFEST
      A copy of a real DCP checkpoint whose .metadata has some FQNs replaced by names of
      the same length (so the pickle's framing stays valid): a bytes key that is also a
      directory (step + step.lrs), a tensor that is also a directory (model.i8 +
      model.i8.m), '%' and '/' in a component, and an empty component.
  make_fixture.py odd-safetensors OUT_FILE OUT_MANIFEST
      A safetensors file whose keys exercise every escaping and collision rule of SPEC.md.
  make_fixture.py relpath DIR OLD NEW
      Replaces the storage path OLD by NEW (same length) in DIR/.metadata.
"""
import hashlib
import json
import os
import random
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_format  # noqa: E402

DCP_RENAMES = [
    ("meta.lrs", "step.lrs"),
    ("model.mask", "model.i8.m"),
    ("model.u8", "m%d/l.u8"),
    ("model.i32", "model..i3"),
]


def replace_in_metadata(path, pairs):
    with open(path, "rb") as f:
        blob = f.read()
    for old, new in pairs:
        o, n = old.encode(), new.encode()
        if len(o) != len(n):
            raise ValueError("%r and %r differ in length" % (old, new))
        # Pickle strings are length-prefixed: the quoted form must be found whole.
        if blob.count(o) < 1:
            raise ValueError("%r not in %s" % (old, path))
        blob = blob.replace(o, n)
    os.chmod(path, 0o644)
    with open(path, "wb") as f:
        f.write(blob)


def renamed_dcp(src, src_manifest, out, out_manifest):
    shutil.copytree(src, out)
    for name in os.listdir(out):
        os.chmod(os.path.join(out, name), 0o644)
    os.chmod(out, 0o755)
    replace_in_metadata(os.path.join(out, ".metadata"), DCP_RENAMES)
    with open(src_manifest) as f:
        manifest = json.load(f)
    for old, new in DCP_RENAMES:
        manifest[new] = manifest.pop(old)
    with open(out_manifest, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


# Every rule of SPEC "The tree": '%', '/', empty components (leading, inner, trailing, the
# empty FQN), '.'/'..' as whole flat names, keys that are also directories (at the root and
# deeper, and '%' both as a directory and a file), and non-ASCII names (sorted as bytes).
ODD_KEYS = [
    ("a", "float32", [2]),
    ("a.b", "int32", [3]),
    ("a.b.c", "uint8", [5]),
    ("a.B", "int8", [1]),
    ("p%q.r%2F", "float16", [2, 2]),
    ("s/t.u", "bfloat16", [3]),
    ("e..f", "float64", [1]),
    ("g.", "int64", [2]),
    ("x.%", "float32", []),
    ("x.%25", "float32", [1]),
    ("", "uint8", [4]),
    (".", "int16", [2]),
    ("..", "uint8", [1]),
    ("..h", "float32", [2, 1]),
    ("\u00fcn\u00ef.c\u00f6d\u00e9", "float32", [3]),
    ("zz.empty", "float32", [0, 3]),
    ("Z.upper", "bool", [4]),
]

ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8,
            "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1}


def odd_safetensors(out_file, out_manifest):
    rng = random.Random(7)
    tensors, manifest = [], {}
    for name, dtype, shape in ODD_KEYS:
        n = ITEMSIZE[dtype]
        for d in shape:
            n *= d
        raw = bytes(rng.randrange(2) for _ in range(n)) if dtype == "bool" else \
            bytes(rng.randrange(256) for _ in range(n))
        tensors.append((name, st_format.ST_CODE[dtype], shape, raw))
        manifest[name] = {"kind": "tensor", "dtype": dtype, "shape": shape, "nbytes": n,
                          "sha256": hashlib.sha256(raw).hexdigest()}
    with open(out_file, "wb") as f:
        f.write(st_format.build(tensors, {"format": "pt"}))
    with open(out_manifest, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


def main():
    cmd = sys.argv[1]
    if cmd == "renamed-dcp":
        renamed_dcp(*sys.argv[2:6])
    elif cmd == "odd-safetensors":
        odd_safetensors(*sys.argv[2:4])
    elif cmd == "relpath":
        replace_in_metadata(os.path.join(sys.argv[2], ".metadata"), [(sys.argv[3], sys.argv[4])])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
