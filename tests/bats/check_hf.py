"""Checks /.ckptfs/hf of a ckptfs mount (SPEC "Views for frameworks") with the independent
safetensors reader st_format.py, written from SPEC.md and the HuggingFace layout alone.

usage: check_hf.py MOUNT MANIFEST [--shard BYTES] [--prefix P] [--extra DIR]
                   [--min-shards N] [--dtype T]

- the keys shown are the manifest's tensors (under P., named without it) whose dtype
  safetensors can name; every other key under P. is listed in __metadata__["ckptfs.skipped"]
  of the first shard (and in the index's metadata when there is one);
- one shard: exactly `model.safetensors` and no index; more: `model-%05d-of-%05d.safetensors`
  for K = 1..N and `model.safetensors.index.json` whose weight_map names every tensor's shard
  and whose metadata.total_size is the sum of the tensor bytes;
- each shard parses, its regions tile its data, it holds exactly the tensors the index maps
  to it, with the manifest's dtype, shape and bytes (sha256), and it is at most BYTES long
  unless it holds a single tensor; tensors follow each other in name order across shards;
- --extra DIR: DIR's regular, non-dot files appear with their bytes, except the names the
  generated layout uses or could use (model.safetensors, the index, model-N-of-M shards);
- --dtype T: floating tensors are stored as T (their bytes are then not the manifest's and
  are checked by check_dtype.py instead); only dtypes and shapes are checked here;
- the directory lists exactly these files, and `/.ckptfs` lists `hf`.
"""
import argparse
import hashlib
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_names  # noqa: E402
import st_format  # noqa: E402

FLOATING = {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"}
ELEM = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
SHARD_RE = re.compile(r"^model-(\d+)-of-(\d+)\.safetensors$")


class Problems(list):
    def add(self, msg):
        self.append(msg)
        print("PROBLEM: " + msg, flush=True)


def reserved(name):
    if name in ("model.safetensors", "model.safetensors.index.json"):
        return True
    return re.match(r"^model-\d+-of-\d+\.safetensors$", name) is not None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mount")
    ap.add_argument("manifest")
    ap.add_argument("--shard", type=int, default=5 << 30)
    ap.add_argument("--prefix")
    ap.add_argument("--extra")
    ap.add_argument("--min-shards", type=int, default=1)
    ap.add_argument("--dtype")
    a = ap.parse_args()
    manifest = ckpt_names.load_manifest(a.manifest)
    probs = Problems()
    hf = os.path.join(a.mount, ".ckptfs", "hf")

    want, skipped = {}, set()
    for fqn, e in manifest.items():
        name = fqn
        if a.prefix:
            if not fqn.startswith(a.prefix + "."):
                continue
            name = fqn[len(a.prefix) + 1:]
        if e["kind"] == "tensor" and e["dtype"] in st_format.ST_CODE and name != "__metadata__":
            e = dict(e)
            if a.dtype and e["dtype"] in FLOATING:
                e["dtype"] = a.dtype
                e["nbytes"] = ckpt_names.numel(e["shape"]) * ELEM[a.dtype]
                e["sha256"] = None
            want[name] = e
        else:
            skipped.add(name)

    if "hf" not in os.listdir(os.path.join(a.mount, ".ckptfs")):
        probs.add("/.ckptfs does not list hf")
    listed = os.listdir(hf)
    shards = sorted(n for n in listed if n == "model.safetensors" or SHARD_RE.match(n))
    extra_want = {}
    if a.extra:
        for n in os.listdir(a.extra):
            p = os.path.join(a.extra, n)
            if n.startswith(".") or reserved(n) or not os.path.isfile(p):
                continue
            with open(p, "rb") as f:
                extra_want[n] = f.read()

    index = None
    if "model.safetensors.index.json" in listed:
        with open(os.path.join(hf, "model.safetensors.index.json"), "rb") as f:
            index = json.load(f)
    if len(shards) == 1:
        if shards != ["model.safetensors"]:
            probs.add("one shard must be model.safetensors, not %r" % shards)
        if index is not None:
            probs.add("an index beside a single model.safetensors")
    else:
        n = len(shards)
        names = ["model-%05d-of-%05d.safetensors" % (k, n) for k in range(1, n + 1)]
        if shards != names:
            probs.add("shards %r, want %r" % (shards, names))
        if index is None:
            probs.add("%d shards and no model.safetensors.index.json" % n)
    if len(shards) < a.min_shards:
        probs.add("%d shards, want at least %d" % (len(shards), a.min_shards))
    expect_listing = set(shards) | set(extra_want)
    if index is not None:
        expect_listing.add("model.safetensors.index.json")
    if set(listed) != expect_listing:
        probs.add("hf lists %r, want %r" % (sorted(listed), sorted(expect_listing)))

    seen, order, total = {}, [], 0
    for k, shard in enumerate(shards):
        path = os.path.join(hf, shard)
        with open(path, "rb") as f:
            blob = f.read()
        if os.path.getsize(path) != len(blob):
            probs.add("%s: stat size %d, read %d bytes" % (shard, os.path.getsize(path), len(blob)))
        try:
            meta, tensors, spans, data_len = st_format.parse(blob, shard)
        except (ValueError, KeyError, TypeError) as e:
            probs.add("%s: not a valid safetensors file: %s" % (shard, e))
            continue
        if len(blob) > a.shard and len(tensors) > 1:
            probs.add("%s: %d bytes > hf_shard %d with %d tensors" % (shard, len(blob), a.shard,
                                                                     len(tensors)))
        pos = 0
        for begin, end in sorted(spans):
            if begin != pos:
                probs.add("%s: regions leave a gap or overlap at %d" % (shard, begin))
            pos = end
        if pos != data_len:
            probs.add("%s: %d data bytes, tensors cover %d" % (shard, data_len, pos))
        header_skipped = set()
        if "ckptfs.skipped" in meta:
            header_skipped = {s["name"] for s in json.loads(meta["ckptfs.skipped"])}
        if k == 0 and header_skipped != skipped:
            probs.add("%s: skipped %r, want %r" % (shard, sorted(header_skipped), sorted(skipped)))
        # the data order, from the header's offsets
        hdr = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])
        hdr.pop("__metadata__", None)
        order += sorted(hdr, key=lambda nm: hdr[nm]["data_offsets"][0])
        for name, (code, shape, raw) in tensors.items():
            if name in seen:
                probs.add("%s in %s and %s" % (name, seen[name], shard))
            seen[name] = shard
            e = want.get(name)
            if e is None:
                probs.add("%s: unexpected tensor %s" % (shard, name))
                continue
            total += len(raw)
            if code != st_format.ST_CODE[e["dtype"]] or shape != e["shape"]:
                probs.add("%s: %s is %s%r, want %s%r" % (shard, name, code, shape,
                                                         st_format.ST_CODE[e["dtype"]], e["shape"]))
            if len(raw) != e["nbytes"]:
                probs.add("%s: %s has %d bytes, want %d" % (shard, name, len(raw), e["nbytes"]))
            elif e["sha256"] and hashlib.sha256(raw).hexdigest() != e["sha256"]:
                probs.add("%s: %s bytes differ from the manifest" % (shard, name))
    missing = set(want) - set(seen)
    if missing:
        probs.add("tensors in no shard: %r" % sorted(missing))
    if order != sorted(order, key=lambda s: s.encode()):
        probs.add("tensors are not laid out in name order")

    if index is not None:
        wm = index.get("weight_map", {})
        if wm != seen:
            diff = sorted(k for k in set(wm) | set(seen) if wm.get(k) != seen.get(k))
            probs.add("weight_map disagrees with the shards on %r" % diff[:10])
        if index.get("metadata", {}).get("total_size") != total:
            probs.add("total_size %r, want %d" % (index.get("metadata", {}).get("total_size"), total))
        isk = {s["name"] for s in index.get("metadata", {}).get("ckptfs.skipped", [])}
        if isk != skipped:
            probs.add("index skipped %r, want %r" % (sorted(isk), sorted(skipped)))

    for n, data in extra_want.items():
        with open(os.path.join(hf, n), "rb") as f:
            if f.read() != data:
                probs.add("hf_dir file %s: bytes differ" % n)

    print("checked %d shards, %d tensors, %d skipped, %d extra files"
          % (len(shards), len(seen), len(skipped), len(extra_want)))
    sys.exit(1 if probs else 0)


if __name__ == "__main__":
    main()
