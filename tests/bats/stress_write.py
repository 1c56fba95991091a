#!/usr/bin/python3
"""Writes random bytes into one key of a read-write ckptfs mount for a while, for stress.bats.

usage: stress_write.py MOUNT_FILE SECONDS SEED

Opens the file, writes random short runs at random offsets, and every few writes either
fsyncs (a commit) or closes and reopens it (a commit on the last close), keeping its own copy
of what the file must hold.  At the end it reads the file back through a fresh descriptor and
compares.  Exit status 1 on any error or mismatch.
"""
import os
import random
import sys
import time


def main():
    path, seconds, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    with open(path, "rb") as f:
        want = bytearray(f.read())
    size = len(want)
    if size == 0:
        print("%s is empty" % path)
        return 1
    deadline = time.monotonic() + seconds
    writes = commits = 0
    fd = os.open(path, os.O_RDWR)
    try:
        while time.monotonic() < deadline:
            off = rng.randrange(size)
            n = min(size - off, rng.randrange(1, 256))
            data = bytes(rng.randrange(256) for _ in range(n))
            if os.pwrite(fd, data, off) != n:
                print("short write at %d" % off)
                return 1
            want[off: off + n] = data
            writes += 1
            r = rng.random()
            if r < 0.1:
                os.fsync(fd)
                commits += 1
            elif r < 0.2:
                os.close(fd)
                fd = os.open(path, os.O_RDWR)
                commits += 1
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        got = f.read()
    if got != bytes(want):
        print("%s: %d writes, %d commits: content differs from what was written"
              % (path, writes, commits))
        return 1
    print("%s: %d writes, %d commits, content right" % (path, writes, commits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
