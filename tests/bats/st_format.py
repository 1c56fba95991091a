"""A small independent safetensors reader and writer for the integration tests.

Format: 8-byte little-endian header length N, N bytes of JSON
{"__metadata__": {...}, name: {"dtype", "shape", "data_offsets": [begin, end]}},
then the data; offsets count from the first byte after the header.
"""
import json
import struct

# torch dtype name -> safetensors dtype code (FORMATS.md).
ST_CODE = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
    "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8",
    "bool": "BOOL", "complex64": "C64",
}
TORCH_NAME = {v: k for k, v in ST_CODE.items()}


def parse(blob, what="safetensors"):
    """Returns (metadata, {name: (code, shape, bytes)}); raises ValueError on anything
    malformed, bounded by len(blob)."""
    if len(blob) < 8:
        raise ValueError("%s: %d bytes, shorter than the length prefix" % (what, len(blob)))
    (n,) = struct.unpack_from("<Q", blob, 0)
    if n > len(blob) - 8:
        raise ValueError("%s: header length %d past the end (%d bytes)" % (what, n, len(blob)))
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("%s: header is not a JSON object" % what)
    data = blob[8 + n:]
    meta = header.pop("__metadata__", None) or {}
    tensors = {}
    spans = []
    for name, t in header.items():
        begin, end = t["data_offsets"]
        if not 0 <= begin <= end <= len(data):
            raise ValueError("%s: %s data_offsets %r outside %d data bytes"
                             % (what, name, t["data_offsets"], len(data)))
        tensors[name] = (t["dtype"], list(t["shape"]), bytes(data[begin:end]))
        spans.append((begin, end))
    return meta, tensors, spans, len(data)


def build(tensors, metadata=None):
    """tensors: list of (name, code, shape, bytes) -> safetensors file bytes."""
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    off = 0
    for name, code, shape, raw in tensors:
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in tensors)
