#!/usr/bin/python3
"""Many parallel readers over one or more ckptfs mounts, checked against fixture manifests.

usage: stress_read.py [--procs N] [--seconds S] [--seed N] [--bad FQN...] [--exclude FQN...]
                      [--until-unmounted]
                      [--ready FILE] MOUNT=MANIFEST...

First every key of every mount is read whole and its sha256 compared with the manifest
(a key named with --bad, a damaged one, must fail with EIO instead).  Then N processes, for
S seconds, each open random keys of random mounts and read random ranges (short and long,
unaligned, across chunk boundaries, past the end; half of them with O_DIRECT so the daemon
sees every read rather than the page cache), with pread from several threads on one file
descriptor at times, and compare each read with the same slice of the whole-file bytes.
Damaged keys are read too: they must keep failing with EIO.  Prints one line per problem and
a summary; exit status 1 if anything was wrong.

--until-unmounted (lifecycle.bats): the mounts go away while the readers run; a failed open or
read is then no problem once its mount is no longer a mountpoint or the error says the daemon
is gone (ENOTCONN, ECONNABORTED; the reader stops), but every byte that was read must still be
right.
"""
import argparse
import errno
import hashlib
import multiprocessing
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_names  # noqa: E402


def read_whole(path):
    with open(path, "rb") as f:
        return f.read()


def load_targets(specs, bad, exclude, problems):
    """[(path, bytes or None for a damaged key)] for every key of every mount."""
    targets = []
    for spec in specs:
        mount, manifest_path = spec.split("=", 1)
        manifest = ckpt_names.load_manifest(manifest_path)
        files, _ = ckpt_names.tree_layout(manifest)
        for rel, fqn in sorted(files.items()):
            if fqn in exclude:
                continue
            path = os.path.join(mount, rel)
            if fqn in bad:
                try:
                    read_whole(path)
                    problems.append("%s: damaged key read without error" % path)
                except OSError as e:
                    if e.errno != errno.EIO:
                        problems.append("%s: damaged key: want EIO, got %s" % (path, e))
                targets.append((path, None, mount))
                continue
            try:
                data = read_whole(path)
            except OSError as e:
                problems.append("%s: whole read: %s" % (path, e))
                continue
            if hashlib.sha256(data).hexdigest() != manifest[fqn]["sha256"]:
                problems.append("%s: whole read does not match the manifest sha256" % path)
                continue
            targets.append((path, data, mount))
    return targets


def pick_range(rng, size):
    r = rng.random()
    if size == 0 or r < 0.05:
        return rng.randrange(0, size + 64), rng.randrange(1, 4096)  # at or past the end
    if r < 0.5:
        off = rng.randrange(size)
        return off, rng.randrange(1, 64)  # a few elements, unaligned
    if r < 0.8:
        off = rng.randrange(size)
        return off, rng.randrange(1, min(size, 1 << 16) + 1)
    return 0, size + rng.randrange(0, 4096)  # whole file and past the end


def mount_gone(err, mount):
    """Whether a failed open/read is explained by the mount going away: ENOTCONN (the daemon
    is gone; the mountpoint may still look mounted while the kernel has its attributes
    cached), ECONNABORTED (a request in flight when the connection went) or a mountpoint that
    is no longer one."""
    return err.errno in (errno.ENOTCONN, errno.ECONNABORTED) or not os.path.ismount(mount)


def worker(args):
    targets, seconds, seed, direct_ok, until_unmounted = args
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    reads = 0
    problems = []
    gone = False
    while time.monotonic() < deadline and len(problems) < 20 and not gone:
        path, data, mount = rng.choice(targets)
        flags = os.O_RDONLY
        if direct_ok and rng.random() < 0.5:
            flags |= os.O_DIRECT
        try:
            fd = os.open(path, flags)
        except OSError as e:
            if until_unmounted and mount_gone(e, mount):
                break
            problems.append("%s: open: %s" % (path, e))
            continue
        try:
            if data is not None:
                plan = [pick_range(rng, len(data)) for _ in range(rng.randrange(1, 12))]
            else:
                # inside the damaged key: past its end a read is empty, not an error
                size = os.fstat(fd).st_size
                plan = [(rng.randrange(size), rng.randrange(1, 4096))
                        for _ in range(rng.randrange(1, 4))] if size else []
            if rng.random() < 0.2 and len(plan) > 1:
                # several threads on one descriptor at once
                out = [None] * len(plan)

                def run(i, off, n):
                    try:
                        out[i] = os.pread(fd, n, off)
                    except OSError as e:
                        out[i] = e

                ts = [threading.Thread(target=run, args=(i, o, n)) for i, (o, n) in enumerate(plan)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                results = out
            else:
                results = []
                for off, n in plan:
                    try:
                        results.append(os.pread(fd, n, off))
                    except OSError as e:
                        results.append(e)
            for (off, n), got in zip(plan, results):
                reads += 1
                if isinstance(got, OSError) and until_unmounted and mount_gone(got, mount):
                    gone = True
                    continue
                if data is None:
                    if not (isinstance(got, OSError) and got.errno == errno.EIO):
                        problems.append("%s [%d,+%d): damaged key gave %r, not EIO"
                                        % (path, off, n, got if isinstance(got, OSError) else
                                           "%d bytes" % len(got)))
                elif isinstance(got, OSError):
                    problems.append("%s [%d,+%d): %s" % (path, off, n, got))
                elif got != data[off: off + n]:
                    problems.append("%s [%d,+%d): %d bytes differ from the whole read"
                                    % (path, off, n, len(got)))
        finally:
            os.close(fd)
    return reads, problems


def direct_works(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        return False
    try:
        os.pread(fd, 1, 0)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bad", action="append", default=[])
    ap.add_argument("--exclude", action="append", default=[],
                    help="a key not to read (another process writes it)")
    ap.add_argument("--until-unmounted", action="store_true")
    ap.add_argument("--ready", help="file created once the whole reads are done")
    ap.add_argument("mounts", nargs="+", metavar="MOUNT=MANIFEST")
    args = ap.parse_args()

    problems = []
    targets = load_targets(args.mounts, set(args.bad), set(args.exclude), problems)
    if not targets:
        problems.append("no keys to read")
    good = [t for t in targets if t[1] is not None]
    direct = bool(good) and direct_works(good[0][0])
    if args.ready:
        open(args.ready, "w").close()
    if targets and not problems:
        jobs = [(targets, args.seconds, args.seed * 1000 + i, direct, args.until_unmounted)
                for i in range(args.procs)]
        with multiprocessing.Pool(args.procs) as pool:
            results = pool.map(worker, jobs)
        reads = sum(r for r, _ in results)
        for _, p in results:
            problems.extend(p)
    else:
        reads = 0
    for p in problems[:50]:
        print("PROBLEM: " + p)
    print("%d keys on %d mounts, %d processes, %d range reads (O_DIRECT %s), %d problems"
          % (len(targets), len(args.mounts), args.procs, reads, "on" if direct else "off",
             len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
