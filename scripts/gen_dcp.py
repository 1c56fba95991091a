#!/usr/bin/python3
"""Write a real PyTorch Distributed Checkpoint (FileSystemWriter layout) without torch.

Run with /usr/bin/python3 (numpy required).  The output is what torch.distributed.checkpoint.save
writes: a `.metadata` pickle (protocol 4) naming torch's own classes, and `__<rank>_0.distcp` data
files, each a concatenation of torch.save archives (one per chunk).  Beside DIR it writes
DIR.sha256.json = {fqn: sha256 of the key's bytes} (a tensor's C-order element bytes; a bytes
entry's stored payload), the ground truth a mount must reproduce.

    gen_dcp.py --out DIR --size 1G [--dtype float32|bfloat16|float16]
               [--layout single|row8|col8|grid4x2|zstd|fsdp512] [--tensors N | --keys N] [--seed S]
               [--plain DIR2]      # also write each key's bytes to DIR2/<fqn as a path>
               [--cols N]          # tensors N columns wide (tall tensors for row10k layouts)
               [--meta-only]       # .metadata and hole-filled data files only (metadata scale):
                                   #   --layout fsdp512 --tensors 2000 --meta-only: 1,024,000
                                   #   chunks in 512 files, as FSDP on 512 ranks writes them

Every tensor is 2-D with both dimensions divisible by 8, so every layout splits it evenly.  A
tensor's contents depend only on (seed, its index, its shape, dtype): the same arguments with a
different --layout give the same sha256 per key.

--layout fsdp512 writes every tensor in 512 row chunks, chunk r in rank r's file __r_0.distcp, as
FSDP on 512 ranks saves them; with --meta-only (for mount-time and memory figures) only
`.metadata` is real, the data files are holes of the right sizes and no DIR.sha256.json is written.
"""
import argparse
import collections
import ctypes
import ctypes.util
import hashlib
import io
import json
import os
import pathlib
import pickle
import shutil
import struct
import sys
import types
import uuid
import zlib

import numpy as np

# ----------------------------------------------------------------------------- torch stand-ins
# pickle writes a class or function by its __module__/__qualname__ and checks that importing that
# name gives the same object back.  Registering small stand-in modules under torch's names makes
# the stock pickler emit exactly the globals torch itself writes, with no torch installed.


def _module(name):
    mod = sys.modules.get(name)
    if mod is None:
        mod = types.ModuleType(name)
        sys.modules[name] = mod
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(_module(parent), child, mod)
    return mod


def _place(obj, module, qualname):
    obj.__module__ = module
    obj.__qualname__ = qualname
    obj.__name__ = qualname
    setattr(_module(module), qualname, obj)
    return obj


MD = "torch.distributed.checkpoint.metadata"
FS = "torch.distributed.checkpoint.filesystem"


class Size(tuple):
    """torch.Size: pickled as REDUCE(torch.Size, (tuple_of_ints,))."""

    def __reduce__(self):
        return (Size, (tuple(self),))


class DType:
    """A torch dtype: pickled as the global `torch <name>`."""

    __module__ = "torch"

    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        return self.name


def _get_layout(name):
    raise RuntimeError("stand-in only")


class Layout:
    def __reduce__(self):
        return (_get_layout, ("torch.strided",))


class _MEM_FORMAT_ENCODING:
    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        return (_MEM_FORMAT_ENCODING, (self.value,))


class TensorProperties:
    # torch's TensorProperties.__getstate__ returns this tuple, so BUILD gets a tuple state
    def __init__(self, dtype):
        self.dtype = dtype

    def __getstate__(self):
        return (self.dtype, STRIDED, False, CONTIGUOUS_FORMAT, False)


class TensorStorageMetadata:
    def __init__(self, properties, size, chunks):
        self.properties, self.size, self.chunks = properties, size, chunks


class ChunkStorageMetadata:
    def __init__(self, offsets, sizes):
        self.offsets, self.sizes = offsets, sizes


class BytesStorageMetadata:
    pass


class MetadataIndex:
    # torch sets fqn, index, then offset only when there is one (bytes entries have none)
    def __init__(self, fqn, offset=None, index=None):
        self.fqn = fqn
        self.index = index
        if offset is not None:
            self.offset = Size(offset)


class _StorageInfo:
    # torch's __getstate__ drops None fields, so transform_descriptors is absent without transforms
    def __init__(self, relative_path, offset, length, transform_descriptors=None):
        self.relative_path, self.offset, self.length = relative_path, offset, length
        if transform_descriptors is not None:
            self.transform_descriptors = transform_descriptors


class StorageMeta:
    def __init__(self, checkpoint_id, save_id):
        self.checkpoint_id, self.save_id, self.load_id, self.modules = checkpoint_id, save_id, None, []


class Metadata:
    def __init__(self, state_dict_metadata, planner_data, storage_data, storage_meta):
        self.state_dict_metadata = state_dict_metadata
        self.planner_data = planner_data
        self.storage_data = storage_data
        self.storage_meta = storage_meta
        self.version = "1.0.0"


def _rebuild_tensor_v2(*args):
    raise RuntimeError("stand-in only")


class _TypedStorageClass:
    pass


_place(Size, "torch", "Size")
_place(_get_layout, "torch.serialization", "_get_layout")
_place(_MEM_FORMAT_ENCODING, MD, "_MEM_FORMAT_ENCODING")
for _cls in (TensorProperties, TensorStorageMetadata, ChunkStorageMetadata, BytesStorageMetadata,
             MetadataIndex, StorageMeta, Metadata):
    _place(_cls, MD, _cls.__name__)
_place(_StorageInfo, FS, "_StorageInfo")
_place(_rebuild_tensor_v2, "torch._utils", "_rebuild_tensor_v2")

STRIDED = Layout()
CONTIGUOUS_FORMAT = _MEM_FORMAT_ENCODING(0)

# dtype name -> (numpy storage dtype, element size, torch storage class name)
DTYPES = {
    "float32": (np.float32, 4, "FloatStorage"),
    "bfloat16": (np.uint16, 2, "BFloat16Storage"),
    "float16": (np.float16, 2, "HalfStorage"),
}
TORCH_DTYPE = {}
STORAGE_CLASS = {}
for _name, (_np, _es, _storage) in DTYPES.items():
    TORCH_DTYPE[_name] = DType(_name)
    setattr(_module("torch"), _name, TORCH_DTYPE[_name])
    STORAGE_CLASS[_name] = _place(type(_storage, (_TypedStorageClass,), {}), "torch", _storage)

# ----------------------------------------------------------------------------- torch.save items
# Byte layout of torch's PyTorchStreamWriter (caffe2/serialize/inline_container.cc), read off
# tests/fixtures/torch-2.11: stored members with data descriptors, an `FB` extra field padding each
# member's data to 64 bytes, a central directory without extras, then zip64 EOCD + locator + EOCD.
ALIGN = 64
ZIP32_MAX = 0xFFFFFFFF


class _Storage:
    def __init__(self, dtype_name, numel):
        self.cls, self.numel = STORAGE_CLASS[dtype_name], numel


class _Tensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, tuple(shape)

    def __reduce__(self):
        stride, acc = [], 1
        for d in reversed(self.shape):
            stride.append(acc)
            acc *= d
        return (_rebuild_tensor_v2, (self.storage, 0, self.shape, tuple(reversed(stride)), False,
                                     collections.OrderedDict()))


class _ItemPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", obj.cls, "0", "cpu", obj.numel)
        return None


def _data_pkl(value):
    buf = io.BytesIO()
    _ItemPickler(buf, protocol=2).dump(value)
    return buf.getvalue()


class ItemWriter:
    """Writes one torch.save archive to a binary stream, returning its length."""

    def __init__(self, rng):
        self.rng = rng

    def write(self, out, value, data=None):
        records = [("data.pkl", _data_pkl(value)), (".format_version", b"1"),
                   (".storage_alignment", b"64"), ("byteorder", b"little")]
        if data is not None:
            records.append(("data/0", data))
        records.append(("version", b"3\n"))
        sizes_hash = 0
        for _, r in records:
            sizes_hash = (sizes_hash * 1000003 + memoryview(r).nbytes) % (10 ** 20)
        serial = "%020d%020d" % (int(self.rng.integers(0, 2 ** 63)), sizes_hash)
        records.append((".data/serialization_id", serial.encode()))

        pos, central = 0, []
        for name, payload in records:
            full = ("archive/" + name).encode()
            size = memoryview(payload).nbytes
            if size >= ZIP32_MAX - 4096 or pos >= ZIP32_MAX - 4096:
                raise ValueError("a chunk of %d bytes needs zip64 members; use more --tensors" % size)
            start = pos + 30 + len(full) + 4
            pad = (-start) % ALIGN
            header = struct.pack("<IHHHHHIIIHH", 0x04034B50, 0, 0x0808, 0, 0, 0, 0, 0, 0, len(full), pad + 4)
            out.write(header + full + b"FB" + struct.pack("<H", pad) + b"Z" * pad)
            out.write(payload)
            crc = zlib.crc32(payload) & 0xFFFFFFFF
            out.write(struct.pack("<IIII", 0x08074B50, crc, size, size))
            central.append((full, crc, size, pos))
            pos = start + pad + size + 16

        cd_start = pos
        for full, crc, size, offset in central:
            rec = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0, 0, 0x0808, 0, 0, 0, crc, size, size,
                              len(full), 0, 0, 0, 0, 0, offset) + full
            out.write(rec)
            pos += len(rec)
        cd_size = pos - cd_start
        n = len(central)
        out.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 0x031E, 0x2D, 0, 0, n, n, cd_size, cd_start))
        out.write(struct.pack("<IIQI", 0x07064B50, 0, pos, 1))
        out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, cd_size, cd_start, 0))
        return pos + 56 + 20 + 22


# ----------------------------------------------------------------------------- zstd (libzstd)
class Zstd:
    """One-shot compression into a single frame without a content size, as torch's streaming
    ZStandard extension writes it."""

    ZSTD_c_compressionLevel = 100
    ZSTD_c_contentSizeFlag = 200
    ZSTD_c_nbWorkers = 400

    def __init__(self, level=3, workers=0):
        lib = None
        for cand in filter(None, [ctypes.util.find_library("zstd"), "libzstd.so.1"]):
            try:
                lib = ctypes.CDLL(cand)
                break
            except OSError:
                pass
        if lib is None:
            raise RuntimeError("libzstd not found (apt-get install libzstd1)")
        lib.ZSTD_createCCtx.restype = ctypes.c_void_p
        lib.ZSTD_freeCCtx.argtypes = [ctypes.c_void_p]
        lib.ZSTD_CCtx_setParameter.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.ZSTD_CCtx_setParameter.restype = ctypes.c_size_t
        lib.ZSTD_compress2.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                                       ctypes.c_size_t]
        lib.ZSTD_compress2.restype = ctypes.c_size_t
        lib.ZSTD_compressBound.argtypes = [ctypes.c_size_t]
        lib.ZSTD_compressBound.restype = ctypes.c_size_t
        lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
        lib.ZSTD_isError.restype = ctypes.c_uint
        self.lib = lib
        self.cctx = lib.ZSTD_createCCtx()
        lib.ZSTD_CCtx_setParameter(self.cctx, self.ZSTD_c_compressionLevel, level)
        lib.ZSTD_CCtx_setParameter(self.cctx, self.ZSTD_c_contentSizeFlag, 0)
        if workers:
            # a libzstd built without threads refuses this; compression then stays single-threaded
            lib.ZSTD_CCtx_setParameter(self.cctx, self.ZSTD_c_nbWorkers, workers)

    def compress(self, data):
        src = memoryview(data)
        cap = self.lib.ZSTD_compressBound(src.nbytes)
        dst = ctypes.create_string_buffer(cap)
        srcbuf = (ctypes.c_char * src.nbytes).from_buffer_copy(src) if src.readonly else \
            (ctypes.c_char * src.nbytes).from_buffer(src)
        n = self.lib.ZSTD_compress2(self.cctx, dst, cap, srcbuf, src.nbytes)
        if self.lib.ZSTD_isError(n):
            raise RuntimeError("zstd compression failed")
        return memoryview(dst)[:n]

    def decompress(self, data):
        """All frames of data, which may carry no content size (hence the streaming API)."""
        lib = self.lib

        class Buf(ctypes.Structure):
            _fields_ = [("ptr", ctypes.c_void_p), ("size", ctypes.c_size_t), ("pos", ctypes.c_size_t)]

        lib.ZSTD_createDCtx.restype = ctypes.c_void_p
        lib.ZSTD_freeDCtx.argtypes = [ctypes.c_void_p]
        lib.ZSTD_decompressStream.argtypes = [ctypes.c_void_p, ctypes.POINTER(Buf), ctypes.POINTER(Buf)]
        lib.ZSTD_decompressStream.restype = ctypes.c_size_t
        src = ctypes.create_string_buffer(bytes(data), len(data))
        inb = Buf(ctypes.cast(src, ctypes.c_void_p), len(data), 0)
        dctx = lib.ZSTD_createDCtx()
        out, step = bytearray(), 1 << 22
        dst = ctypes.create_string_buffer(step)
        try:
            while True:
                outb = Buf(ctypes.cast(dst, ctypes.c_void_p), step, 0)
                r = lib.ZSTD_decompressStream(dctx, ctypes.byref(outb), ctypes.byref(inb))
                if lib.ZSTD_isError(r):
                    raise RuntimeError("bad zstd frame")
                out += dst.raw[:outb.pos]
                if inb.pos == inb.size and outb.pos < step:
                    if r != 0:
                        raise RuntimeError("truncated zstd frame")
                    return bytes(out)
        finally:
            lib.ZSTD_freeDCtx(dctx)


# ----------------------------------------------------------------------------- the checkpoint
LAYOUTS = {
    # name: (mesh rows, mesh cols) splitting a tensor's (rows, cols)
    "single": (1, 1),
    "zstd": (1, 1),
    "row8": (8, 1),
    "col8": (1, 8),
    "grid4x2": (4, 2),
    # FSDP-style many small row shards: 10,000 chunks per tensor in 8 data files, listed in
    # .metadata in row order or shuffled (the load planner must not depend on the order)
    "row10k": (10000, 1),
    "row10k_shuffled": (10000, 1),
    # FSDP on 512 ranks: every tensor in 512 row shards, shard r in rank r's file (512 files)
    "fsdp512": (512, 1),
}
# layouts with one data file per rank, however many ranks (MAX_FILES does not apply)
FILE_PER_RANK = {"fsdp512"}
# at most this many data files; chunks are dealt to them in contiguous runs, as ranks hold them
MAX_FILES = 8
LAYER_PARTS = ["attn.wq.weight", "attn.wk.weight", "attn.wv.weight", "attn.wo.weight",
               "mlp.w1.weight", "mlp.w2.weight", "mlp.w3.weight", "norm.weight"]
FILL_BLOCK = 8 << 20  # elements generated per numpy call: bounds the float32 scratch buffer


def parse_size(text):
    text = text.strip().upper().rstrip("B").rstrip("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in "KMGT" else text
    return int(float(number) * mult)


def tensor_shape(nbytes, esize, cols=None):
    """Rows x cols, both multiples of 8, holding about nbytes; cols a power of two up to 4096
    (or as given: --cols 1024 makes tall tensors, enough rows for 10,000 row chunks)."""
    numel = max(nbytes // esize, 64)
    if cols is None:
        cols = 4096
        while cols > 8 and numel // cols < 64:
            cols //= 2
    rows = max(8, (numel // cols) // 8 * 8)
    return rows, cols


def fill_tensor(seed, index, shape, dtype_name):
    """Values uniform in [-1, 1), like a freshly initialised weight; generated in blocks."""
    np_dtype, _, _ = DTYPES[dtype_name]
    numel = shape[0] * shape[1]
    out = np.empty(numel, dtype=np_dtype)
    rng = np.random.default_rng([seed, index])
    scratch = np.empty(min(numel, FILL_BLOCK), dtype=np.float32)
    for start in range(0, numel, FILL_BLOCK):
        n = min(FILL_BLOCK, numel - start)
        block = scratch[:n]
        rng.random(out=block, dtype=np.float32)
        block *= 2.0
        block -= 1.0
        if dtype_name == "float32":
            out[start:start + n] = block
        elif dtype_name == "float16":
            out[start:start + n] = block.astype(np.float16)
        else:  # bfloat16: round-to-nearest-even of the float32's top half
            bits = block.view(np.uint32)
            rounded = bits + (0x7FFF + ((bits >> 16) & 1))
            out[start:start + n] = (rounded >> 16).astype(np.uint16)
    return out.reshape(shape)


def key_names(count, many_keys, deep=False):
    if many_keys and deep:
        # one key per directory: `find` and `ls -lR` walk about `count` directories
        return ["model.layers.%d.w" % i for i in range(count)]
    if many_keys:
        # 100 keys per directory so that `find` walks a realistic tree, not one huge directory
        return ["model.layers.%d.w%d" % (i // 100, i % 100) for i in range(count)]
    return ["model.layers.%d.%s" % (i // len(LAYER_PARTS), LAYER_PARTS[i % len(LAYER_PARTS)])
            for i in range(count)]


def split(extent, parts):
    """parts pieces covering extent, the first ones one longer when it does not divide."""
    parts = min(parts, extent)
    step, extra = divmod(extent, parts)
    out, at = [], 0
    for p in range(parts):
        n = step + (1 if p < extra else 0)
        out.append((at, n))
        at += n
    return out


def write_plain(root, fqn, data):
    path = os.path.join(root, *fqn.split("."))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def generate(args):
    out = os.path.abspath(args.out)
    many_keys = args.keys is not None
    count = args.keys if many_keys else args.tensors
    _, esize, _ = DTYPES[args.dtype]
    if args.size is None:
        args.size = count * 256 if many_keys else 1 << 30
    if not count:
        count = max(1, -(-args.size // (64 << 20)))
    shape = tensor_shape(args.size // count, esize, args.cols)
    mesh_rows, mesh_cols = LAYOUTS[args.layout]
    ranks = min(mesh_rows, shape[0]) * min(mesh_cols, shape[1])
    nfiles = ranks if args.layout in FILE_PER_RANK else min(ranks, MAX_FILES)
    if args.meta_only and (args.layout == "zstd" or args.plain):
        raise SystemExit("--meta-only writes no contents: no zstd layout nor --plain")
    compress = Zstd(workers=min(os.cpu_count() or 1, 4)) if args.layout == "zstd" else None
    transforms = ["stream.zstd/1"] if compress else None

    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    if args.plain:
        if os.path.exists(args.plain):
            shutil.rmtree(args.plain)
        os.makedirs(args.plain)

    rng = np.random.default_rng([args.seed, 1 << 30])
    items = ItemWriter(rng)
    rel_paths = ["__%d_0.distcp" % r for r in range(nfiles)]
    files = [] if args.meta_only else \
        [open(os.path.join(out, p), "wb", buffering=1 << 20) for p in rel_paths]
    offsets = [0] * nfiles

    def put(rank, value, data, archive=None, nbytes=0):
        """Appends one item (the archive of value/data, or the given archive bytes) to rank's file;
        with --meta-only, only reserves room for an item holding nbytes of elements."""
        if args.meta_only:
            # an archive's fixed overhead plus its elements: the files become holes of these sizes
            length = 1024 + (len(archive) if archive is not None else nbytes)
        elif compress is None and archive is None:
            length = items.write(files[rank], value, data)
        elif compress is None:
            files[rank].write(archive)
            length = len(archive)
        else:
            if archive is None:
                buf = io.BytesIO()
                items.write(buf, value, data)
                archive = buf.getbuffer()
            packed = compress.compress(archive)
            files[rank].write(packed)
            length = packed.nbytes
        info = _StorageInfo(rel_paths[rank], offsets[rank], length, transforms)
        offsets[rank] += length
        return info

    state_dict_metadata, planner_data, storage_data, sums = {}, {}, {}, {}
    dtype = TORCH_DTYPE[args.dtype]
    row_parts, col_parts = split(shape[0], mesh_rows), split(shape[1], mesh_cols)
    for index, fqn in enumerate(key_names(count, many_keys, args.deep)):
        if args.meta_only:
            tensor = None  # no contents: only .metadata and the files' sizes are written
        else:
            tensor = fill_tensor(args.seed, index, shape, args.dtype)
            sums[fqn] = hashlib.sha256(tensor).hexdigest()
            if args.plain:
                write_plain(args.plain, fqn, tensor)
        pieces = []
        for i, (r0, nr) in enumerate(row_parts):
            for j, (c0, nc) in enumerate(col_parts):
                rank = i * len(col_parts) + j
                if tensor is None:
                    info = put(rank * nfiles // ranks, None, None, nbytes=nr * nc * esize)
                    pieces.append(((r0, c0), (nr, nc), info))
                    continue
                piece = np.ascontiguousarray(tensor[r0:r0 + nr, c0:c0 + nc])
                value = _Tensor(_Storage(args.dtype, piece.size), piece.shape)
                info = put(rank * nfiles // ranks, value, piece.reshape(-1).view(np.uint8))
                pieces.append(((r0, c0), (nr, nc), info))
        if args.layout.endswith("_shuffled"):
            order = np.random.default_rng([args.seed, index, 7]).permutation(len(pieces))
            pieces = [pieces[k] for k in order]
        chunks = []
        for offs, sizes, info in pieces:
            storage_data[MetadataIndex(fqn, offs, len(chunks))] = info
            chunks.append(ChunkStorageMetadata(Size(offs), Size(sizes)))
        state_dict_metadata[fqn] = TensorStorageMetadata(TensorProperties(dtype), Size(shape), chunks)
        planner_data[fqn] = tuple(fqn.split("."))
        del tensor

    # one non-tensor entry, as every training checkpoint has (the step counter), on rank 0
    step_fqn = "step"
    payload = io.BytesIO()
    items.write(payload, 1000 + args.seed, None)
    archive = payload.getvalue()
    sums[step_fqn] = hashlib.sha256(archive).hexdigest()
    if args.plain:
        write_plain(args.plain, step_fqn, archive)
    storage_data[MetadataIndex(step_fqn)] = put(0, None, None, archive)
    state_dict_metadata[step_fqn] = BytesStorageMetadata()
    planner_data[step_fqn] = (step_fqn,)

    for f in files:
        f.close()
    if args.meta_only:
        for rel, size in zip(rel_paths, offsets):
            with open(os.path.join(out, rel), "wb") as f:
                f.truncate(size)
    meta = Metadata(state_dict_metadata, planner_data, storage_data,
                    StorageMeta(pathlib.PosixPath(out), str(uuid.UUID(bytes=rng.bytes(16), version=4))))
    with open(os.path.join(out, ".metadata"), "wb") as f:
        pickle.dump(meta, f, protocol=4)
    if not args.meta_only:
        with open(out.rstrip("/") + ".sha256.json", "w") as f:
            json.dump(sums, f, indent=1, sort_keys=True)
    return shape, count


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="checkpoint directory to (re)create")
    ap.add_argument("--size", type=parse_size, default=None, help="total tensor bytes (1G, 512M...)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    ap.add_argument("--layout", choices=sorted(LAYOUTS) + ["fsdp512"], default="single")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--tensors", type=int, default=0, help="number of tensors (default: one per 64 MiB)")
    group.add_argument("--keys", type=int, default=None, help="many small tensors (mount-time tests)")
    ap.add_argument("--deep", action="store_true", help="with --keys: one key per directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cols", type=int, default=None,
                    help="columns of every tensor (a multiple of 8; default: up to 4096)")
    ap.add_argument("--plain", help="also write each key's bytes as DIR/<fqn with . as />")
    ap.add_argument("--meta-only", action="store_true",
                    help="write .metadata and data files of the right sizes (holes), no contents "
                         "nor DIR.sha256.json: metadata-scale tests (--layout fsdp512)")
    args = ap.parse_args(argv)
    if args.keys is not None and args.keys < 1 or args.tensors < 0:
        ap.error("--keys/--tensors must be positive")
    if args.cols is not None and (args.cols < 8 or args.cols % 8):
        ap.error("--cols must be a positive multiple of 8")
    shape, count = generate(args)
    print("%s: %d tensors of %s %s, layout %s" % (args.out, count, args.dtype, list(shape), args.layout))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
