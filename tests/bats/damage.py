#!/usr/bin/python3
"""Spoils one item of a copied DCP checkpoint in a precise way, for damaged.bats.

usage: damage.py DIR FQN HOW
  local-extra     flip the low byte of the extra-field length in data/0's local header:
                  the data would start at the wrong byte
  cd-offset       flip a bit of data/0's local-header offset in the central directory
  pkl-offset      make data.pkl's storage_offset 200 elements and fix every CRC-32, so the
                  archive is consistent but describes more bytes than data/0 holds
  zstd-literal    flip a byte inside the item's zstd frame such that the frame still
                  decodes (the `zstd` tool says so) and only data/0's bytes change
Prints the data file it changed (relative to DIR).
"""
import os
import pickletools
import struct
import subprocess
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dcp_storage  # noqa: E402

LFH, CDH = b"PK\x03\x04", b"PK\x01\x02"


def members(item):
    """name -> (local header offset, central entry offset, crc, size) of a stored zip."""
    out = {}
    pos = item.find(CDH)
    while pos >= 0:
        crc, csize = struct.unpack_from("<II", item, pos + 16)
        nlen, xlen, clen = struct.unpack_from("<HHH", item, pos + 28)
        lho = struct.unpack_from("<I", item, pos + 42)[0]
        name = item[pos + 46: pos + 46 + nlen].decode()
        out[name] = (lho, pos, crc, csize)
        pos = item.find(CDH, pos + 46 + nlen + xlen + clen)
    return out


def member(ms, suffix):
    hits = [v for k, v in ms.items() if k.endswith(suffix)]
    if len(hits) != 1:
        raise SystemExit("no single member ending in %s" % suffix)
    return hits[0]


def data_start(item, lho):
    nlen, xlen = struct.unpack_from("<HH", item, lho + 26)
    return lho + 30 + nlen + xlen


def flip(path, pos, mask):
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([b ^ mask]))


def set_pkl_offset(item):
    """item with data.pkl's storage_offset set to 200 and its CRC-32s made right."""
    item = bytearray(item)
    lho, cdo, _, size = member(members(bytes(item)), "/data.pkl")
    start = data_start(item, lho)
    pkl = bytes(item[start: start + size])
    ops = list(pickletools.genops(pkl))
    i = next(n for n, (op, _, _) in enumerate(ops) if op.name in ("BINPERSID", "PERSID"))
    op, arg, pos = ops[i + 1]
    if op.name != "BININT1" or arg != 0:
        raise SystemExit("storage_offset is %s %r, not BININT1 0" % (op.name, arg))
    item[start + pos + 1] = 200
    crc = zlib.crc32(bytes(item[start: start + size]))
    struct.pack_into("<I", item, cdo + 16, crc)
    if struct.unpack_from("<I", item, lho + 14)[0]:
        struct.pack_into("<I", item, lho + 14, crc)
    dd = start + size  # a data descriptor, when there is one, holds the CRC too
    if item[dd: dd + 4] == b"PK\x07\x08":
        struct.pack_into("<I", item, dd + 4, crc)
    return bytes(item)


def zstd_ok(frame):
    p = subprocess.run(["zstd", "-d", "-q", "-c"], input=frame, stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL)
    return p.stdout if p.returncode == 0 else None


def main():
    src, fqn, how = sys.argv[1:4]
    rel, off, length = dcp_storage.items_by_fqn(src)[fqn][0]
    path = os.path.join(src, rel)
    os.chmod(path, 0o644)
    with open(path, "rb") as f:
        f.seek(off)
        item = f.read(length)
    if how == "local-extra":
        lho = member(members(item), "/data/0")[0]
        flip(path, off + lho + 28, 0x01)
    elif how == "cd-offset":
        cdo = member(members(item), "/data/0")[1]
        flip(path, off + cdo + 42, 0x04)
    elif how == "pkl-offset":
        new = set_pkl_offset(item)
        with open(path, "r+b") as f:
            f.seek(off)
            f.write(new)
    elif how == "zstd-literal":
        good = zstd_ok(item)
        if good is None:
            raise SystemExit("the item does not decode to begin with")
        lho, _, _, size = member(members(good), "/data/0")
        lo = data_start(good, lho)
        hi = lo + size
        for pos in range(len(item) // 2, len(item)):
            spoiled = bytearray(item)
            spoiled[pos] ^= 0x01
            out = zstd_ok(bytes(spoiled))
            # only data/0's bytes change: nothing but its CRC-32 can tell
            if out is not None and len(out) == len(good) and out != good and \
                    all(lo <= i < hi for i in range(len(out)) if out[i] != good[i]):
                flip(path, off + pos, 0x01)
                break
        else:
            raise SystemExit("no byte of the frame decodes to different bytes when flipped")
    else:
        raise SystemExit(__doc__)
    print(rel)


if __name__ == "__main__":
    main()
