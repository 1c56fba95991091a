#!/usr/bin/env bats
# Framework views through a real mount (SPEC "Views for frameworks"), checked by a small
# reader written here from the formats alone (struct + json + numpy), stricter than
# check_views.py: header padding and alignment, data regions that tile the data with no
# gap, the __metadata__ of left-out keys, every directory's view (bytes-only ones too),
# sub-range and concurrent reads, metadata.json's chunks, names that need escaping, a
# dtype safetensors cannot name, a real key named like a view, and unreadable data.

load helpers

teardown() {
    unmount_ckpt
}

# views_py MODE MOUNT MANIFEST [options]: runs the checker below.
#   MODE all:    every tensor's PATH.npy, every directory's DIR.safetensors,
#                /.ckptfs/model.safetensors, /.ckptfs/metadata.json, lookups that must fail
#   MODE listed: the -o npy listing (every tensor listed as NAME.npy) and those files load
# options: --flat (mounted with -o flat), --src SOURCE, --kind dcp|safetensors|dcp_hf
views_py() {
    py_check - "$@" <<'PY'
import argparse, concurrent.futures, errno, hashlib, json, os, random, stat, struct, sys
import numpy as np
sys.path.insert(0, "tests/bats")
import ckpt_names

# FORMATS.md: NumPy descr (same-width unsigned where NumPy lacks the type) and the
# safetensors dtype codes; a dtype missing from ST must be left out of .safetensors views.
NPY = {"float64": "<f8", "float32": "<f4", "float16": "<f2", "bfloat16": "<u2",
       "float8_e4m3fn": "|u1", "float8_e5m2": "|u1", "complex64": "<c8", "complex128": "<c16",
       "int64": "<i8", "int32": "<i4", "int16": "<i2", "int8": "|i1", "uint64": "<u8",
       "uint32": "<u4", "uint16": "<u2", "uint8": "|u1", "bool": "|b1", "qint8": "|i1"}
ST = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
      "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "complex64": "C64",
      "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint64": "U64",
      "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL"}

ap = argparse.ArgumentParser()
ap.add_argument("mode")
ap.add_argument("mount")
ap.add_argument("manifest")
ap.add_argument("--flat", action="store_true")
ap.add_argument("--src")
ap.add_argument("--kind")
args = ap.parse_args()
man = ckpt_names.load_manifest(args.manifest)
mnt = args.mount
problems = []


def bad(msg):
    problems.append(msg)
    print("PROBLEM: " + msg, flush=True)


def read_all(path):
    with open(path, "rb") as f:
        blob = f.read()
        size = os.fstat(f.fileno()).st_size
    if size != len(blob):
        bad("%s: stat size %d, read %d bytes" % (path, size, len(blob)))
    return blob


def check_ranges(path, blob, rng, n=40):
    """pread at random offsets and lengths (across regions, past EOF) == slices of blob,
    through the page cache and with O_DIRECT (which hands the daemon each exact range)."""
    for extra in (0, os.O_DIRECT):
        fd = os.open(path, os.O_RDONLY | extra)
        try:
            for _ in range(n):
                off = rng.randrange(len(blob) + 16)
                ln = rng.choice([1, 7, 64, 4096, 131072, len(blob) + 1])
                got = os.pread(fd, ln, off)
                if got != blob[off:off + ln]:
                    return bad("%s: pread(%d, %d) flags %#x differs from the whole read"
                               % (path, off, ln, extra))
        finally:
            os.close(fd)


def check_npy(path, entry):
    if "sha256" not in entry:
        # data torch never loaded (a test's rewritten dtype): the header alone
        # O_DIRECT so the read is not widened to a page that holds data
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            blob = os.pread(fd, 10, 0)
            (hlen,) = struct.unpack_from("<H", blob, 8)
            hdr = os.pread(fd, hlen, 10).decode("latin-1")
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        want = "'descr': '%s'" % NPY[entry["dtype"]]
        if blob[:8] != b"\x93NUMPY\x01\x00" or want not in hdr or \
                size != 10 + hlen + entry["nbytes"]:
            bad("%s: header %r, size %d" % (path, hdr, size))
        return
    blob = read_all(path)
    if blob[:8] != b"\x93NUMPY\x01\x00":
        return bad("%s: not a NumPy 1.0 file" % path)
    (hlen,) = struct.unpack_from("<H", blob, 8)
    if (10 + hlen) % 64 or blob[9 + hlen:10 + hlen] != b"\n":
        bad("%s: header of %d bytes is not 64-aligned or lacks its newline" % (path, 10 + hlen))
    if len(blob) != 10 + hlen + entry["nbytes"]:
        bad("%s: %d bytes, want %d + %d" % (path, len(blob), 10 + hlen, entry["nbytes"]))
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if arr.dtype != np.dtype(NPY[entry["dtype"]]) or list(arr.shape) != entry["shape"]:
        bad("%s: %s %r, want %s %r" % (path, arr.dtype.str, arr.shape, NPY[entry["dtype"]],
                                       entry["shape"]))
    if hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest() != entry["sha256"]:
        bad("%s: data differs from the manifest" % path)
    if blob[10 + hlen:] != np.ascontiguousarray(arr).tobytes():
        bad("%s: numpy's array is not the file's data" % path)


def check_safetensors(path, want, rng):
    """want: {name: manifest entry} of every key under the directory.  Tensors with a
    safetensors dtype must be in the file, everything else in __metadata__'s skipped list."""
    blob = read_all(path)
    if len(blob) < 8:
        return bad("%s: %d bytes" % (path, len(blob)))
    (n,) = struct.unpack_from("<Q", blob, 0)
    if n > len(blob) - 8:
        return bad("%s: header length %d past the end" % (path, n))
    if (8 + n) % 8:
        bad("%s: data starts at %d, not a multiple of 8" % (path, 8 + n))
    text = blob[8:8 + n].decode("utf-8")
    if text.rstrip(" ") != text.strip() or not text.startswith("{"):
        bad("%s: header is not JSON padded with trailing spaces" % path)
    hdr = json.loads(text)
    meta = hdr.pop("__metadata__", None)
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        return bad("%s: __metadata__ %r is not a map of strings" % (path, meta))
    if meta.get("format") != "pt":
        bad("%s: __metadata__ format %r, want 'pt'" % (path, meta.get("format")))
    data = blob[8 + n:]
    spans = sorted((t["data_offsets"][0], t["data_offsets"][1], name) for name, t in hdr.items())
    pos = 0
    for b, e, name in spans:
        if not (isinstance(b, int) and isinstance(e, int)) or b != pos or e < b:
            bad("%s: %s data_offsets [%r, %r], want to start at %d" % (path, name, b, e, pos))
        pos = e
    if pos != len(data):
        bad("%s: tensors cover %d of %d data bytes" % (path, pos, len(data)))
    keep = {k: v for k, v in want.items() if v["kind"] == "tensor" and v["dtype"] in ST}
    skip = set(want) - set(keep)
    if set(hdr) != set(keep):
        bad("%s: tensors %r, want %r" % (path, sorted(hdr), sorted(keep)))
    listed = json.loads(meta["ckptfs.skipped"]) if "ckptfs.skipped" in meta else []
    names = {s["name"] for s in listed}
    if names != skip or not all(s.get("reason") for s in listed):
        bad("%s: skipped %r, want %r with reasons" % (path, sorted(names), sorted(skip)))
    for name, e in keep.items():
        t = hdr.get(name)
        if t is None:
            continue
        b, en = t["data_offsets"]
        if t["dtype"] != ST[e["dtype"]] or t["shape"] != e["shape"] or en - b != e["nbytes"]:
            bad("%s: %s is %s %r (%d bytes), want %s %r (%d)" % (
                path, name, t["dtype"], t["shape"], en - b, ST[e["dtype"]], e["shape"],
                e["nbytes"]))
        elif "sha256" in e and hashlib.sha256(data[b:en]).hexdigest() != e["sha256"]:
            bad("%s: %s bytes differ from the manifest" % (path, name))
    check_ranges(path, blob, rng)
    return blob


def check_metadata_json(path):
    doc = json.loads(read_all(path))
    if args.kind and doc.get("kind") != args.kind:
        bad("metadata.json: kind %r, want %r" % (doc.get("kind"), args.kind))
    if not isinstance(doc.get("source"), str) or "version" not in doc:
        bad("metadata.json: no source/version")
    keys = doc.get("keys", {})
    if set(keys) != set(man):
        bad("metadata.json: keys differ: extra %r missing %r" % (
            sorted(set(keys) - set(man)), sorted(set(man) - set(keys))))
    root = None
    if args.src:
        root = args.src if os.path.isdir(args.src) else os.path.dirname(args.src)
    for fqn, e in man.items():
        k = keys.get(fqn)
        if k is None:
            continue
        if k.get("kind") != e["kind"]:
            bad("metadata.json: %s kind %r" % (fqn, k.get("kind")))
            continue
        if e["kind"] == "bytes":
            places = [k]
        else:
            if k.get("dtype") != e["dtype"] or k.get("shape") != e["shape"] or \
                    k.get("nbytes") != e["nbytes"]:
                bad("metadata.json: %s is %r %r %r" % (fqn, k.get("dtype"), k.get("shape"),
                                                      k.get("nbytes")))
            places = k.get("chunks", [])
            if "chunks" in e and len(places) != e["chunks"]:
                bad("metadata.json: %s has %d chunks, manifest %d" % (fqn, len(places),
                                                                      e["chunks"]))
            # chunks lie inside the tensor and their volumes add up to it
            vol = 0
            for c in places:
                v = 1
                for o, s, d in zip(c["offsets"], c["sizes"], e["shape"]):
                    if o + s > d:
                        bad("metadata.json: %s chunk %r outside %r" % (fqn, c, e["shape"]))
                    v *= s
                if len(c["offsets"]) != len(e["shape"]) or len(c["sizes"]) != len(e["shape"]):
                    bad("metadata.json: %s chunk rank differs: %r" % (fqn, c))
                vol += v
            numel = 1
            for d in e["shape"]:
                numel *= d
            if vol != numel:
                bad("metadata.json: %s chunks cover %d of %d elements" % (fqn, vol, numel))
        for c in places:
            if not isinstance(c.get("file"), str) or not isinstance(c.get("offset"), int) or \
                    not isinstance(c.get("length"), int) or not isinstance(c.get("transforms"), list):
                bad("metadata.json: %s place %r lacks file/offset/length/transforms" % (fqn, c))
                continue
            if root is not None:
                f = os.path.join(root, c["file"])
                if not os.path.isfile(f) or c["offset"] + c["length"] > os.path.getsize(f):
                    bad("metadata.json: %s: [%d, +%d) is not inside %s" % (
                        fqn, c["offset"], c["length"], f))


def under(files, d):
    """{name relative to directory d: entry} for every key under d ('' = root)."""
    depth = len(d.split("/")) if d else 0
    out = {}
    for rel, fqn in files.items():
        if d == "" or rel.startswith(d + "/"):
            out[".".join(fqn.split(".")[depth:])] = man[fqn]
    return out


def expect_enoent(rel):
    try:
        os.stat(os.path.join(mnt, rel))
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENOTDIR):
            bad("stat %s: %s, want ENOENT" % (rel, e))
        return
    bad("%s exists, should not" % rel)


rng = random.Random(11)
files, dirs = ckpt_names.tree_layout(man, flat=args.flat, npy=args.mode == "listed")
tensors = {rel: fqn for rel, fqn in files.items() if man[fqn]["kind"] == "tensor"}

if args.mode == "listed":
    for d, names in dirs.items():
        got = sorted(os.listdir(os.path.join(mnt, d) if d else mnt))
        if got != sorted(names):
            bad("-o npy: %r lists %r, want %r" % (d or "/", got, sorted(names)))
    for rel, fqn in tensors.items():
        check_npy(os.path.join(mnt, rel), man[fqn])
        if not rel.endswith(".npy"):
            bad("-o npy: tensor %s listed without .npy" % rel)
        elif not os.path.isfile(os.path.join(mnt, rel[:-4])):
            bad("-o npy: the raw name %s is not reachable" % rel[:-4])
else:
    for rel, fqn in tensors.items():
        check_npy(os.path.join(mnt, rel + ".npy"), man[fqn])
    nst = 0
    for d in dirs:
        if d:
            check_safetensors(os.path.join(mnt, d + ".safetensors"), under(files, d), rng)
            nst += 1
    whole = check_safetensors(os.path.join(mnt, ".ckptfs/model.safetensors"),
                              under(files, ""), rng)
    check_metadata_json(os.path.join(mnt, ".ckptfs/metadata.json"))
    # /.ckptfs lists its views (at least these); each listed name must stat
    listed = os.listdir(os.path.join(mnt, ".ckptfs"))
    if not {"hf", "metadata.json", "model.pt", "model.safetensors"} <= set(listed) or \
            not all(os.path.exists(os.path.join(mnt, ".ckptfs", n)) for n in listed):
        bad("/.ckptfs lists %r" % listed)
    if not stat.S_ISDIR(os.stat(os.path.join(mnt, ".ckptfs")).st_mode):
        bad("/.ckptfs is not a directory")
    # views are answered by lookup, never listed
    for d, names in dirs.items():
        got = sorted(os.listdir(os.path.join(mnt, d) if d else mnt))
        if got != sorted(names):
            bad("%r lists %r, want %r" % (d or "/", got, sorted(names)))
    # names that are no view: a directory's .npy, a file's .safetensors, bytes keys' .npy
    for rel, fqn in files.items():
        if man[fqn]["kind"] == "bytes":
            expect_enoent(rel + ".npy")
        expect_enoent(rel + ".safetensors")
    for d in dirs:
        if d:
            expect_enoent(d + ".npy")
    for rel in (".safetensors", ".ckptfs/nothing", ".ckptfs/model.safetensors.npy",
                "no-such-key.npy", "no-such-dir.safetensors"):
        expect_enoent(rel)
    # many threads reading the whole-checkpoint view at once agree with one reader
    if whole:
        path = os.path.join(mnt, ".ckptfs/model.safetensors")

        def worker(seed):
            r = random.Random(seed)
            fd = os.open(path, os.O_RDONLY)
            try:
                for _ in range(30):
                    off = r.randrange(len(whole))
                    ln = r.randrange(1, 70000)
                    if os.pread(fd, ln, off) != whole[off:off + ln]:
                        return "pread(%d, %d)" % (off, ln)
            finally:
                os.close(fd)
            return None

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            for res in ex.map(worker, range(16)):
                if res:
                    bad("concurrent %s differs" % res)
    print("checked %d .npy, %d DIR.safetensors, model.safetensors, metadata.json"
          % (len(tensors), nst))

if problems:
    print("%d problems" % len(problems))
    sys.exit(1)
print("ok")
PY
}

# check_views NAME KIND [ckptfs options...]: mounts fixture NAME and checks every view.
check_views() {
    local name=$1 kind=$2
    shift 2
    mount_ckpt "$(fixture_src "$name")" "$@"
    local flat=()
    [[ " $* " == *" flat "* ]] && flat=(--flat)
    views_py all "$MNT" "$FIX/$name.manifest.json" --src "$CKPT_SRC" --kind "$kind" "${flat[@]}"
}

@test "views: dcp_single (every dtype, strided, 0-d, empty, bytes-only directory)" {
    check_views dcp_single dcp
}

@test "views: dcp_single_perfile" {
    check_views dcp_single_perfile dcp
}

@test "views: dcp_zstd (data regions decoded from zstd items)" {
    check_views dcp_zstd dcp
}

@test "views: dcp_dtensor_ws4 (tensors reassembled from shards)" {
    check_views dcp_dtensor_ws4 dcp
}

@test "views: dcp_dtensor_ws4_perfile" {
    check_views dcp_dtensor_ws4_perfile dcp
}

@test "views: dcp_fsdp2_optim (optimizer state, many bytes keys)" {
    check_views dcp_fsdp2_optim dcp
}

@test "views: st_single (a .safetensors file as SOURCE)" {
    check_views st_single safetensors
}

@test "views: hf_llama_sharded (safetensors shards + index)" {
    check_views hf_llama_sharded safetensors
}

@test "views: dcp_hf (HuggingFaceStorageWriter, keys split over files)" {
    check_views dcp_hf dcp_hf
}

@test "views: -o flat (only the root, names are whole FQNs)" {
    check_views dcp_single dcp -o flat
}

@test "views: -o npy lists NAME.npy for tensors, and they load (dcp_single)" {
    mount_ckpt "$FIX/dcp_single" -o npy
    views_py listed "$MNT" "$FIX/dcp_single.manifest.json"
}

@test "views: -o npy on hf_llama_sharded and on dcp_dtensor_ws4" {
    mount_ckpt "$FIX/hf_llama_sharded" -o npy
    views_py listed "$MNT" "$FIX/hf_llama_sharded.manifest.json"
    unmount_ckpt
    mount_ckpt "$FIX/dcp_dtensor_ws4" -o npy
    views_py listed "$MNT" "$FIX/dcp_dtensor_ws4.manifest.json"
}

@test "views: names that need escaping ('%', '/', empty, '.', '..', NAME.tensor, non-ASCII)" {
    local dir
    dir=$(test_tmp)
    py_check "$BATS_PY/make_fixture.py" odd-safetensors "$dir/odd.safetensors" "$dir/odd.json"
    mount_ckpt "$dir/odd.safetensors"
    views_py all "$MNT" "$dir/odd.json" --src "$dir/odd.safetensors" --kind safetensors
    # a view's names are the FQN suffixes, unescaped: s/t.u lives in directory s%2Ft
    run "$PY" -c '
import json, struct, sys
b = open(sys.argv[1] + "/s%2Ft.safetensors", "rb").read()
n = struct.unpack_from("<Q", b)[0]
print(sorted(k for k in json.loads(b[8:8 + n]) if k != "__metadata__"))' "$MNT"
    [ "$status" -eq 0 ]
    [ "$output" = "['u']" ]
}

@test "views: keys renamed in a DCP checkpoint (bytes/tensor that are also directories)" {
    local dir
    dir=$(test_tmp)
    py_check "$BATS_PY/make_fixture.py" renamed-dcp "$FIX/dcp_single" \
        "$FIX/dcp_single.manifest.json" "$dir/ck" "$dir/ck.json"
    mount_ckpt "$dir/ck"
    views_py all "$MNT" "$dir/ck.json" --src "$dir/ck" --kind dcp
}

@test "views: a dtype safetensors cannot name is left out and listed in __metadata__" {
    local dir
    dir=$(test_tmp)
    cp -r "$FIX/dcp_single" "$dir/ck"
    chmod -R u+w "$dir/ck"
    # model.u8 becomes a qint8 tensor (same element size): the 5-byte pickle string
    # 'uint8' -> 'qint8', and the manifest says so
    "$PY" - "$dir/ck/.metadata" "$FIX/dcp_single.manifest.json" "$dir/ck.json" <<'PY'
import json, sys
blob = open(sys.argv[1], "rb").read()
assert blob.count(b"\x8c\x05uint8") == 1
open(sys.argv[1], "wb").write(blob.replace(b"\x8c\x05uint8", b"\x8c\x05qint8"))
man = json.load(open(sys.argv[2]))
man["model.u8"]["dtype"] = "qint8"
del man["model.u8"]["sha256"]  # torch never loaded it as qint8
json.dump(man, open(sys.argv[3], "w"))
PY
    mount_ckpt "$dir/ck"
    views_py all "$MNT" "$dir/ck.json" --src "$dir/ck" --kind dcp
    run "$PY" -c '
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack_from("<Q", b)[0]
meta = json.loads(b[8:8 + n])["__metadata__"]
print([s for s in json.loads(meta["ckptfs.skipped"]) if s["name"] == "u8"])' \
        "$MNT/model.safetensors"
    [ "$status" -eq 0 ]
    [[ "$output" == *"'u8'"*"qint8"* ]]
    [ "$(getfattr --only-values -n user.ckpt.dtype "$MNT/model/u8.npy")" = qint8 ]
}

@test "views: a real key named like a view wins over the view" {
    local dir
    dir=$(test_tmp)
    "$PY" - "$dir/k.safetensors" "$dir/k.json" <<'PY'
import hashlib, json, sys
sys.path.insert(0, "tests/bats")
import st_format
w, wn = bytes(range(8)), bytes(range(100, 112))
open(sys.argv[1], "wb").write(st_format.build(
    [("w", "U8", [8], w), ("w.npy", "U8", [12], wn)], {"format": "pt"}))
json.dump({"w": {"kind": "tensor", "dtype": "uint8", "shape": [8], "nbytes": 8,
                 "sha256": hashlib.sha256(w).hexdigest()},
           "w.npy": {"kind": "tensor", "dtype": "uint8", "shape": [12], "nbytes": 12,
                     "sha256": hashlib.sha256(wn).hexdigest()}}, open(sys.argv[2], "w"))
PY
    mount_ckpt "$dir/k.safetensors" -o flat
    # /w.npy is the key w.npy (12 raw bytes), not the .npy view of w
    [ "$(stat -c %s "$MNT/w.npy")" -eq 12 ]
    cmp <(printf '\144\145\146\147\150\151\152\153\154\155\156\157') "$MNT/w.npy"
    # the view of w.npy itself is still there
    "$PY" -c 'import numpy as np, sys; a = np.load(sys.argv[1]); assert list(a) == list(range(100, 112))' \
        "$MNT/w.npy.npy"
}

@test "views: unreadable data fails only the reads that touch it" {
    local dir
    dir=$(test_tmp)
    cp -r "$FIX/dcp_single_perfile" "$dir/ck"
    chmod -R u+w "$dir/ck"
    mount_ckpt "$dir/ck"
    # metadata.json says which file holds model.embed.weight; truncate that file
    local file
    file=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["keys"]["model.embed.weight"]["chunks"][0]["file"])' \
        "$MNT/.ckptfs/metadata.json")
    [ -n "$file" ]
    unmount_ckpt
    truncate -s 100 "$dir/ck/$file"
    mount_ckpt "$dir/ck"
    run cat "$MNT/model/embed/weight.npy"
    [ "$status" -ne 0 ]
    [[ "$output" == *"Input/output error"* ]]
    run cat "$MNT/.ckptfs/model.safetensors"
    [ "$status" -ne 0 ]
    # the header and the other tensors of the same view still read
    "$PY" - "$MNT/.ckptfs/model.safetensors" "$FIX/dcp_single_perfile.manifest.json" <<'PY'
import hashlib, json, os, struct, sys
man = json.load(open(sys.argv[2]))
# O_DIRECT: each read reaches the daemon as asked, not widened to the page cache's pages
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
(n,) = struct.unpack("<Q", os.pread(fd, 8, 0))
hdr = json.loads(os.pread(fd, n, 8))
hdr.pop("__metadata__")
ok = 0
for name, t in hdr.items():
    b, e = t["data_offsets"]
    if name == "model.embed.weight":
        try:
            os.pread(fd, e - b, 8 + n + b)
        except OSError:
            continue
        raise SystemExit("reading model.embed.weight did not fail")
    assert hashlib.sha256(os.pread(fd, e - b, 8 + n + b)).hexdigest() == man[name]["sha256"], name
    ok += 1
assert ok == len(hdr) - 1, ok
PY
    "$PY" -c 'import numpy as np, sys; np.load(sys.argv[1])' "$MNT/model/layers/0/norm/weight.npy"
}

@test "views: are read-only, and .ckptfs is not listed at the root" {
    mount_ckpt "$FIX/dcp_single"
    run "$PY" -c '
import errno, os, sys
m = sys.argv[1]
for p in ("model/embed/weight.npy", "model.safetensors", ".ckptfs/metadata.json"):
    try:
        os.open(os.path.join(m, p), os.O_WRONLY)
    except OSError as e:
        assert e.errno in (errno.EACCES, errno.EROFS, errno.EPERM), (p, e)
    else:
        raise SystemExit(p + " opened for writing")
assert ".ckptfs" not in os.listdir(m)
print("ok")' "$MNT"
    [ "$status" -eq 0 ]
    [ "$output" = ok ]
}
