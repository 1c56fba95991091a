"""Re-saves a checkpoint in place the way torch does, while it is mounted.

usage: live_rewrite.py DST ROUNDS MODE VERSION_DIR...

Round i copies VERSION_DIR[(i+1) % n] over DST: every data file first, then `.metadata`
(written to `.metadata.tmp`, the old one removed, the new one renamed in: torch's
FileSystemWriter.finish).  MODE says how a data file is rewritten:
  truncate  open with "wb": the same inode, truncated, then written in small pieces
            (torch's _write_files_from_queue), so readers race the rewrite
  newfile   a new file renamed over the old name (a new inode)
After each round it pauses 0.3 s, so readers see every state (a pause, not a condition:
the readers' checks hold whatever they happen to see).  Prints one line per round.
"""
import os
import sys
import time

PIECE = 4096


def write_truncate(path, data):
    with open(path, "wb") as f:
        for i in range(0, len(data), PIECE):
            f.write(data[i:i + PIECE])
            f.flush()
            if i % (16 * PIECE) == 0:
                time.sleep(0.001)


def write_newfile(path, data):
    tmp = path + ".new"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main():
    dst, rounds, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    versions = sys.argv[4:]
    write = {"truncate": write_truncate, "newfile": write_newfile}[mode]
    for r in range(rounds):
        src = versions[(r + 1) % len(versions)]
        names = sorted(n for n in os.listdir(src) if n != ".metadata")
        for name in names:
            with open(os.path.join(src, name), "rb") as f:
                write(os.path.join(dst, name), f.read())
        with open(os.path.join(src, ".metadata"), "rb") as f:
            md = f.read()
        tmp = os.path.join(dst, ".metadata.tmp")
        with open(tmp, "wb") as f:
            f.write(md)
        os.remove(os.path.join(dst, ".metadata"))
        os.rename(tmp, os.path.join(dst, ".metadata"))
        print("round %d: %s" % (r, os.path.basename(src)), flush=True)
        time.sleep(0.3)


if __name__ == "__main__":
    main()
