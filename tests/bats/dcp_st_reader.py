"""An independent reader of DCP checkpoints in the safetensors serialization format.

usage: dcp_st_reader.py CKPT_DIR MANIFEST       exit 0 if every key matches the manifest
       dcp_st_reader.py CKPT_DIR --dump OUT_DIR  writes each key's bytes to OUT_DIR/FQN

Shares no code with ckptfs: `.metadata` through dcp_storage.py's stub unpickler, safetensors
through st_format.py.  Each tensor item is found as torch's writers leave it:
- its data file starts with a safetensors header (NeMo's streaming writer, or torch's when the
  file has no bytes entries), or one starts at the item's own offset (torch's writer puts the
  blob after the rank's bytes entries, and every tensor's offset at the blob's start);
- the header names the item's FQN with the chunk's dtype and sizes, and DCP_SHARDING_INFO
  gives the chunk's offsets;
- the item's (offset, length) is the tensor's bytes in that blob (NeMo) or the blob's start
  and the tensor's byte count (torch).
Bytes entries are their raw payload (a torch.save archive).
"""
import hashlib
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dcp_storage  # noqa: E402
import st_format  # noqa: E402

F = dcp_storage._field
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8,
            "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8,
            "C64": 8}


def size_of(size_stub):
    return tuple(int(x) for x in size_stub.args[0])


def blob_at(data, start):
    """(metadata, tensors, data_start) of a safetensors blob starting at data[start:], or None."""
    if start + 9 > len(data) or data[start + 8:start + 9] != b"{":
        return None
    (n,) = struct.unpack_from("<Q", data, start)
    meta, tensors, _, _ = st_format.parse(data[start:], "blob at %d" % start)
    return meta, tensors, start + 8 + n


def read_item(data, fqn, dtype_name, offsets, sizes, off, length):
    code = st_format.ST_CODE[dtype_name]
    for start in (0, off):
        blob = blob_at(data, start)
        if blob is None:
            continue
        meta, tensors, data_start = blob
        if fqn not in tensors:
            continue
        tcode, shape, raw = tensors[fqn]
        if tcode != code or tuple(shape) != sizes:
            raise ValueError("%s: header says %s %s, chunk is %s %s" % (fqn, tcode, shape, code, sizes))
        info = json.loads(meta.get("DCP_SHARDING_INFO", "{}"))
        saved = tuple(info.get(fqn, {}).get("saved_offsets", [0] * len(sizes)))
        if saved != offsets:
            raise ValueError("%s: saved_offsets %s, chunk offsets %s" % (fqn, saved, offsets))
        # where the header puts the tensor, from its data_offsets
        header = json.loads(data[start + 8:data_start].decode())
        b, e = header[fqn]["data_offsets"]
        at = data_start + b
        if (off, length) == (at, e - b) or (off, length) == (start, e - b):
            return raw
        raise ValueError("%s: item (%d, %d) is neither the tensor's bytes (%d, %d) nor the blob (%d)"
                         % (fqn, off, length, at, e - b, start))
        del begin
    raise ValueError("%s: no safetensors blob holding it at 0 or %d" % (fqn, off))


def read_checkpoint(src):
    meta = dcp_storage.load_metadata(src)
    sdm = F(meta, "state_dict_metadata")
    storage = F(meta, "storage_data")
    files = {}

    def data_of(rel):
        if rel not in files:
            with open(os.path.join(src, rel), "rb") as f:
                files[rel] = f.read()
        return files[rel]

    out = {}
    for fqn, md in sdm.items():
        items = [(idx, info) for idx, info in storage.items() if F(idx, "fqn") == fqn]
        if type(md).__name__ == "BytesStorageMetadata":
            (_, info), = items
            data = data_of(F(info, "relative_path"))
            off, length = int(F(info, "offset")), int(F(info, "length"))
            out[fqn] = data[off:off + length]
            continue
        props = F(md, "properties") if isinstance(md.state, dict) else None
        dtype_name = props.state[0].qualname.split(".")[-1]
        shape = size_of(F(md, "size"))
        code = st_format.ST_CODE[dtype_name]
        itemsize = ITEMSIZE[code]
        whole = np.zeros(int(np.prod(shape)) * itemsize if shape else itemsize, np.uint8)
        view = whole.reshape(shape + (itemsize,)) if shape else whole
        for idx, info in items:
            chunk = F(md, "chunks")[int(F(idx, "index"))]
            offsets, sizes = size_of(F(chunk, "offsets")), size_of(F(chunk, "sizes"))
            if F(info, "transform_descriptors"):
                raise ValueError("%s: transforms on a safetensors item" % fqn)
            raw = read_item(data_of(F(info, "relative_path")), fqn, dtype_name, offsets, sizes,
                            int(F(info, "offset")), int(F(info, "length")))
            piece = np.frombuffer(raw, np.uint8).reshape(sizes + (itemsize,)) if sizes else \
                np.frombuffer(raw, np.uint8)
            if shape:
                view[tuple(slice(o, o + s) for o, s in zip(offsets, sizes))] = piece
            else:
                view[:] = piece
        out[fqn] = whole.tobytes()
    return out


def main(argv):
    src = argv[1]
    contents = read_checkpoint(src)
    if argv[2] == "--dump":
        for fqn, data in contents.items():
            with open(os.path.join(argv[3], fqn), "wb") as f:
                f.write(data)
        return 0
    with open(argv[2]) as f:
        manifest = json.load(f)
    bad = 0
    if set(manifest) != set(contents):
        print("PROBLEM: keys differ: %s" % sorted(set(manifest) ^ set(contents)))
        bad += 1
    for fqn, want in sorted(manifest.items()):
        got = contents.get(fqn)
        if got is None:
            continue
        if len(got) != want["nbytes"] or hashlib.sha256(got).hexdigest() != want["sha256"]:
            print("PROBLEM: %s: %d bytes, sha256 %s; manifest %d, %s"
                  % (fqn, len(got), hashlib.sha256(got).hexdigest(), want["nbytes"], want["sha256"]))
            bad += 1
    print("%s: %d keys read, %d problems" % (src, len(contents), bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
