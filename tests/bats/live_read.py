"""Reads a live mount while its checkpoint is re-saved (see live_rewrite.py).

usage: live_read.py MNT STOPFILE SUMS.json...

Until STOPFILE exists, reads every key of the SUMS files (fqn -> sha256 of its bytes, one
file per version of the checkpoint) over and over, two ways: opened afresh for each read,
and through one descriptor per key kept open throughout (pread of the whole file).  Every
read must hash to one version's sha256 for that key, or fail with EIO; anything else (a mix
of versions, a short file, another error) is a problem.  A kept descriptor reads its own
state: once it hashed to version v it must never give another version.  Prints counts and
one line per problem; exit 1 if any.
"""
import errno
import hashlib
import json
import os
import sys


def path_of(mnt, fqn):
    return os.path.join(mnt, *fqn.split("."))


def main():
    mnt, stop = sys.argv[1], sys.argv[2]
    sums = []
    for p in sys.argv[3:]:
        with open(p) as f:
            sums.append(json.load(f))
    keys = sorted(sums[0])
    counts = {"fresh": [0] * len(sums), "kept": [0] * len(sums), "eio": 0}
    problems = []

    def judge(fqn, data, how):
        h = hashlib.sha256(data).hexdigest()
        for v, s in enumerate(sums):
            if s[fqn] == h:
                counts[how][v] += 1
                return v
        problems.append("%s: %s read of %d bytes matches no version" % (fqn, how, len(data)))
        return None

    kept = {}
    kept_version = {}
    for fqn in keys:
        kept[fqn] = os.open(path_of(mnt, fqn), os.O_RDONLY)
    rounds = 0
    while not os.path.exists(stop) and not problems:
        rounds += 1
        for fqn in keys:
            try:
                with open(path_of(mnt, fqn), "rb") as f:
                    judge(fqn, f.read(), "fresh")
            except OSError as e:
                if e.errno != errno.EIO:
                    problems.append("%s: fresh read: %s" % (fqn, e))
                counts["eio"] += 1
            fd = kept[fqn]
            try:
                size = os.fstat(fd).st_size
                data = b""
                while True:
                    piece = os.pread(fd, max(size - len(data), 1 << 16), len(data))
                    if not piece:
                        break
                    data += piece
                v = judge(fqn, data, "kept")
                if v is not None:
                    if kept_version.setdefault(fqn, v) != v:
                        problems.append("%s: a kept descriptor went from version %d to %d"
                                        % (fqn, kept_version[fqn], v))
            except OSError as e:
                if e.errno != errno.EIO:
                    problems.append("%s: kept read: %s" % (fqn, e))
                counts["eio"] += 1
    for fd in kept.values():
        os.close(fd)
    print("rounds %d, fresh reads per version %s, kept reads per version %s, EIO %d"
          % (rounds, counts["fresh"], counts["kept"], counts["eio"]))
    for p in problems[:20]:
        print("PROBLEM: " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
