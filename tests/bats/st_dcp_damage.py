#!/usr/bin/python3
"""Damages a copy of a DCP checkpoint in the safetensors serialization format, one way each.

usage: st_dcp_damage.py DIR KIND ARGS...
  header-len FILE AT DELTA       adds DELTA to the u64 header length of the blob at byte AT
  header-text FILE AT OLD NEW    replaces OLD by NEW (same length) in that blob's header JSON
  transforms FQN DESCRIPTOR      every item of FQN gets transform_descriptors [DESCRIPTOR]
  blob-at FILE FQN               prints where FILE's blob holding FQN starts, and FQN's
                                 [begin, end) in its data (for the tests to aim at)

Header edits keep the length (so only what is named changes); .metadata edits go through
metadata_edit.py's stand-in classes, so every other value stays as written.
"""
import json
import os
import pickle
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dcp_storage  # noqa: E402
import metadata_edit  # noqa: E402


def header_span(blob, at):
    (n,) = struct.unpack_from("<Q", blob, at)
    return at + 8, at + 8 + n


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    root, kind, args = argv[1], argv[2], argv[3:]
    if kind in ("header-len", "header-text", "blob-at"):
        path = os.path.join(root, args[0])
        blob = bytearray(open(path, "rb").read())
    if kind == "header-len":
        at, delta = int(args[1]), int(args[2])
        (n,) = struct.unpack_from("<Q", blob, at)
        struct.pack_into("<Q", blob, at, n + delta)
    elif kind == "header-text":
        at, old, new = int(args[1]), args[2].encode(), args[3].encode()
        if len(old) != len(new):
            raise SystemExit("%r and %r differ in length" % (old, new))
        start, end = header_span(blob, at)
        text = bytes(blob[start:end])
        if text.count(old) != 1:
            raise SystemExit("%r is not once in the header at %d" % (old, at))
        blob[start:end] = text.replace(old, new)
    elif kind == "blob-at":
        fqn = args[1]
        # a blob starts at 0 (NeMo) or at a tensor item's offset (torch)
        starts = {0} | {off for items in dcp_storage.items_by_fqn(root).values()
                        for rel, off, _ in items if rel == args[0]}
        for at in sorted(starts):
            if at + 9 > len(blob) or blob[at + 8:at + 9] != b"{":
                continue
            start, end = header_span(blob, at)
            header = json.loads(bytes(blob[start:end]).decode())
            if fqn in header:
                b, e = header[fqn]["data_offsets"]
                print(at, b, e)
                return 0
        raise SystemExit("no blob in %s names %s" % (path, fqn))
    elif kind == "transforms":
        fqn, desc = args
        meta_path = os.path.join(root, ".metadata")
        with open(meta_path, "rb") as f:
            md = metadata_edit.Loader(f).load()
        items = metadata_edit.items_of(md, fqn)
        if not items:
            raise SystemExit("no items for %s" % fqn)
        for _, info in items:
            metadata_edit.set_field(info, "transform_descriptors", [desc])
        os.chmod(meta_path, 0o644)
        with open(meta_path, "wb") as f:
            pickle.dump(md, f, protocol=4)
        return 0
    else:
        raise SystemExit(__doc__)
    os.chmod(path, 0o644)
    with open(path, "wb") as f:
        f.write(blob)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
