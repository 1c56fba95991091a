#!/usr/bin/env bash
# Checks the README's quick start on a bare Debian 12: a fresh `debootstrap bookworm` chroot
# (no make, no compiler, no git), as root, with MAKEFLAGS=-j2.  Not run by CI: it needs root,
# the Debian mirror and several GB of disk, and the test command takes as long as the suite.
#
# usage: scripts/check-bare-machine.sh [demo] [test] [make-demo]   (default: all three)
#   demo, test   the README's two quick-start commands
#   make-demo    `make demo` where only make was installed (apt-get install make): the
#                Makefile installs the compiler and packages before compiling, also under -j
# environment:
#   BARE_DIR   work directory (default /var/tmp/ckptfs-bare): base/ is the debootstrap
#              output, made once and reused; root/ is a fresh copy of it for each run
#   MIRROR     Debian mirror (default: the one this machine's apt uses)
#   SHARED     a directory copied beside the clone as /work/shared (default /work/shared,
#              when it exists)
#   MAKEFLAGS  passed into the chroot (default -j2)
#
# What runs in the chroot are the commands of the README's "Quick start" block, read from
# README.md, in a clean `git clone` of this repository's HEAD (commit first).  Each step
# gets a fresh chroot.  Logs: $BARE_DIR/STEP.log.  The last chroot is left in place for a
# look inside (its bind mounts are removed); the next run replaces it.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

steps=("$@")
[ "${#steps[@]}" -gt 0 ] || steps=(demo test make-demo)
for s in "${steps[@]}"; do
    case "$s" in
        demo|test|make-demo) ;;
        *) echo "usage: $0 [demo] [test] [make-demo]" >&2; exit 2 ;;
    esac
done

BARE=${BARE_DIR:-/var/tmp/ckptfs-bare}
SHARED=${SHARED:-/work/shared}
JOBS=${MAKEFLAGS:--j2}
say() { echo "check-bare-machine: $*"; }
die() { echo "check-bare-machine: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mounts)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
[ -c /dev/fuse ] || die "/dev/fuse is missing here, so nothing could be mounted in the chroot"

# The mirror this machine's apt uses: deb822 sources first, then the one-line format.
if [ -z "${MIRROR:-}" ]; then
    MIRROR=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$MIRROR" ] || MIRROR=$(awk '$1 == "deb" && $2 !~ /^\[/ { print $2; exit }' \
                                 /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian
fi

# The quick-start commands as the README writes them: the first code block after
# "## Quick start", one command a line, comments dropped.  Line 1 is the demo, line 2 the tests.
mapfile -t quick < <(awk '
    /^## Quick start/ { in_sec = 1; next }
    in_sec && /^## / { exit }
    in_sec && /^```/ { if (blk) exit; blk = 1; next }
    blk { sub(/[ \t]*#.*/, ""); if ($0 != "") print }' README.md)
[ "${#quick[@]}" -ge 2 ] || die "README.md: no two-command code block under '## Quick start'"
say "quick start from README.md: '${quick[0]}' and '${quick[1]}'"

root=$BARE/root
# Every mount under the chroot, deepest first (FUSE mounts the demo left, then the binds).
mounts_under() {
    awk -v r="$root" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}
unmount_all() {
    local m
    for m in $(mounts_under); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
}
trap unmount_all EXIT

mkdir -p "$BARE"
if [ ! -x "$BARE/base/bin/bash" ]; then
    say "debootstrap bookworm from $MIRROR (log: $BARE/debootstrap.log)"
    rm -rf --one-file-system "$BARE/base"
    debootstrap bookworm "$BARE/base" "$MIRROR" >"$BARE/debootstrap.log" 2>&1 ||
        { tail -n 20 "$BARE/debootstrap.log" >&2; die "debootstrap failed"; }
fi

# A fresh copy of the debootstrap output with the clone (and SHARED) in /work.
fresh_chroot() {
    unmount_all
    [ -z "$(mounts_under)" ] || die "cannot unmount everything under $root; not removing it"
    rm -rf --one-file-system "$root"
    cp -a "$BARE/base" "$root"
    local tool
    for tool in make cc gcc git; do
        if chroot "$root" /bin/sh -c "command -v $tool" >/dev/null 2>&1; then
            die "the fresh chroot already has $tool: not a bare machine"
        fi
    done
    mkdir -p "$root/work"
    git clone -q "$REPO" "$root/work/ckptfs"
    say "fresh chroot $root; cloned $(git -C "$root/work/ckptfs" log -1 --format='%h %s' | cut -c1-60)"
    [ ! -d "$SHARED" ] || cp -a "$SHARED/." "$root/work/shared"

    mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev"
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys"
}

# in_chroot LOG COMMAND: runs COMMAND (a string) in the clone with a clean environment and no
# terminal, as CI would; prints how long it took and the log's last line.
in_chroot() {
    local log=$1 cmd=$2 t0=$SECONDS rc=0
    say "running '$cmd' with MAKEFLAGS=$JOBS (log: $log)"
    chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 MAKEFLAGS="$JOBS" \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        /bin/bash -c "cd /work/ckptfs && $cmd" </dev/null >"$log" 2>&1 || rc=$?
    say "'$cmd' exited with status $rc after $((SECONDS - t0)) s; last line: $(tail -n 1 "$log")"
    return "$rc"
}

# demo_mounted: what the demo promises, a checkpoint still mounted at ./mnt and readable.
demo_mounted() {
    chroot "$root" /bin/bash -c 'cd /work/ckptfs && mountpoint -q mnt && [ -n "$(ls mnt)" ] &&
        fusermount3 -u mnt'
}

status=0
for s in "${steps[@]}"; do
    fresh_chroot
    case "$s" in
    make-demo)
        if ! in_chroot "$BARE/make-demo.log" \
                "apt-get update -qq && apt-get install -y -qq make >/dev/null && make demo"; then
            say "make-demo: FAILED; the log's tail:"
            tail -n 30 "$BARE/make-demo.log" | sed 's/^/    /'; status=1
        elif ! demo_mounted; then
            say "make-demo: FAILED: ./mnt is not a mounted checkpoint after the demo"; status=1
        elif first_cc=$(grep -m1 -nE '^(cc|gcc|clang) ' "$BARE/make-demo.log" | cut -d: -f1)
             installed=$(grep -m1 -n 'install-deps: installing them ... done' \
                         "$BARE/make-demo.log" | cut -d: -f1)
             [ -z "$first_cc" ] || [ -z "$installed" ] || [ "$first_cc" -lt "$installed" ]; then
            say "make-demo: FAILED: a compile started before the packages were installed"; status=1
        else
            say "make-demo: OK (packages installed before the first compile; ./mnt mounted)"
        fi
        ;;
    demo)
        if in_chroot "$BARE/demo.log" "${quick[0]}"; then
            if demo_mounted; then
                say "demo: OK (./mnt was mounted and listed, then unmounted)"
            else
                say "demo: FAILED: ./mnt is not a mounted checkpoint after the demo"; status=1
            fi
        else
            say "demo: FAILED; the log's tail:"; tail -n 30 "$BARE/demo.log" | sed 's/^/    /'; status=1
        fi
        ;;
    test)
        if in_chroot "$BARE/test.log" "${quick[1]}"; then
            say "test: OK"
        else
            say "test: FAILED; the log's tail:"; tail -n 30 "$BARE/test.log" | sed 's/^/    /'; status=1
        fi
        ;;
    esac
done
exit "$status"
