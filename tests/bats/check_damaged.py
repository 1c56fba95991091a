"""Checks a mount of a damaged DCP checkpoint: keys whose items ckptfs cannot read fail
with EIO, every other key still reads its exact bytes, and the daemon keeps serving.

usage: check_damaged.py MOUNT MANIFEST SOURCE [--bad FQN]... [--log LOG --expect-in-log TEXT]

A key is damaged when one of its items lies in a data file that is missing or too short
(found from SOURCE/.metadata by dcp_storage.py, not from ckptfs), or when it is named
with --bad (an item whose bytes were spoiled).
"""
import argparse
import errno
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_names  # noqa: E402
import dcp_storage  # noqa: E402


def damaged_keys(src, extra):
    bad = set(extra)
    for fqn, items in dcp_storage.items_by_fqn(src).items():
        for rel, off, length in items:
            path = os.path.join(src, rel)
            if not os.path.exists(path) or os.path.getsize(path) < off + length:
                bad.add(fqn)
    return bad


def read_whole(path):
    with open(path, "rb") as f:
        return f.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mount")
    ap.add_argument("manifest")
    ap.add_argument("source")
    ap.add_argument("--bad", action="append", default=[])
    ap.add_argument("--log")
    ap.add_argument("--expect-in-log")
    args = ap.parse_args()

    manifest = ckpt_names.load_manifest(args.manifest)
    files, _ = ckpt_names.tree_layout(manifest)
    by_fqn = {fqn: rel for rel, fqn in files.items()}
    bad = damaged_keys(args.source, args.bad)
    problems = []
    if not bad:
        problems.append("the damage touches no key: the test is wrong")
    if len(bad) == len(manifest):
        problems.append("the damage touches every key: the test is wrong")
    # Twice over, so a failed read is seen not to disturb later reads of good keys.
    for attempt in (1, 2):
        for fqn in sorted(manifest):
            path = os.path.join(args.mount, by_fqn[fqn])
            try:
                st = os.stat(path)
                # A damaged key's size may be unknowable (a bytes entry behind a bad zstd
                # frame): only intact keys must show theirs.
                if fqn not in bad and st.st_size != manifest[fqn]["nbytes"]:
                    problems.append("%s: size %d, want %d" % (fqn, st.st_size,
                                                              manifest[fqn]["nbytes"]))
            except OSError as e:
                problems.append("%s: stat: %s (the tree comes from .metadata alone)" % (fqn, e))
                continue
            try:
                data = read_whole(path)
            except OSError as e:
                if fqn not in bad:
                    problems.append("%s (undamaged): read failed: %s" % (fqn, e))
                elif e.errno != errno.EIO:
                    problems.append("%s (damaged): want EIO, got %s" % (fqn, e))
                continue
            if fqn in bad:
                problems.append("%s (damaged): read %d bytes instead of failing with EIO"
                                % (fqn, len(data)))
            elif hashlib.sha256(data).hexdigest() != manifest[fqn]["sha256"]:
                problems.append("%s (undamaged): wrong bytes" % fqn)
    if args.log and args.expect_in_log:
        with open(args.log, errors="replace") as f:
            log = f.read()
        if args.expect_in_log not in log:
            problems.append("the daemon log does not mention %r:\n%s" % (args.expect_in_log, log))
    for p in dict.fromkeys(problems):
        print("PROBLEM: " + p)
    print("%d damaged keys (%s), %d intact" % (len(bad), ", ".join(sorted(bad)),
                                               len(manifest) - len(bad)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
