#!/usr/bin/env bash
# Installs the Debian packages ckptfs needs to build and test, and checks /dev/fuse.
# Runs on every `make` (as `--quiet`), so when everything is present it must cost one
# dpkg-query call and print nothing.
#
# usage: scripts/install-deps.sh [--quiet]
set -euo pipefail

quiet=0
case "${1:-}" in
    --quiet) quiet=1 ;;
    "") ;;
    -h|--help) echo "usage: $0 [--quiet]"; exit 0 ;;
    *) echo "usage: $0 [--quiet]" >&2; exit 2 ;;
esac

say() { [ "$quiet" = 1 ] || echo "$@"; }

# pkg-config/cJSON/zstd/zlib/fuse3/libcurl: build; python3-torch (a real DCP producer and
# consumer) and ceph (a real S3 server on loopback): tests; bats/python3-numpy/attr(getfattr)/zstd/fuse3
# and clang + its libFuzzer runtime (make fuzz, the fuzz smoke test)
# (fusermount3): tests; the rest: compiler and make.
wanted=(pkg-config libfuse3-dev fuse3 libzstd-dev libcjson-dev zlib1g-dev libcurl4-openssl-dev
        bats python3-numpy python3-torch zstd attr clang libclang-rt-14-dev
        ceph-mon ceph-osd radosgw ceph-common)

installed_set() {
    # Prints the names among "$@" that dpkg knows as fully installed.  Unknown names make
    # dpkg-query complain on stderr and exit 1; that only means "not installed".
    dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "$@" 2>/dev/null |
        awk '$2 == "ii" { print $1 }' || true
}

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "install-deps: dpkg-query not found; this script knows Debian/Ubuntu only." >&2
    echo "install-deps: install by hand: a C compiler, make, pkg-config, libfuse3 (dev), fuse3," \
         "libzstd (dev), cJSON (dev), zlib (dev), bats, python3 with numpy, zstd, attr" >&2
    exit 1
fi

have=" $(installed_set build-essential gcc make "${wanted[@]}" | tr '\n' ' ') "
missing=()
# build-essential is what we would install, but a plain gcc + make is enough to build.
if [[ "$have" != *" build-essential "* ]] &&
   { [[ "$have" != *" gcc "* ]] || [[ "$have" != *" make "* ]]; }; then
    missing+=(build-essential)
fi
for p in "${wanted[@]}"; do
    [[ "$have" == *" $p "* ]] || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        sudo_cmd=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo_cmd=(sudo)
    else
        echo "install-deps: missing Debian packages: ${missing[*]}" >&2
        echo "install-deps: as root run: apt-get update && apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "install-deps: installing ${missing[*]}"
    # stdin from /dev/null: CI runs with no terminal and apt must never wait for input.
    "${sudo_cmd[@]}" apt-get update -qq </dev/null
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
    still=()
    have=" $(installed_set "${missing[@]}" | tr '\n' ' ') "
    for p in "${missing[@]}"; do
        [[ "$have" == *" $p "* ]] || still+=("$p")
    done
    if [ "${#still[@]}" -gt 0 ]; then
        echo "install-deps: could not install: ${still[*]}" >&2
        exit 1
    fi
else
    say "install-deps: all Debian packages present"
fi

# Building needs no /dev/fuse, so a missing device is a warning, not a failure; mounting
# (demo, integration tests) will fail and this message says why.
if [ ! -c /dev/fuse ]; then
    if [ "$(id -u)" = 0 ]; then
        modprobe fuse >/dev/null 2>&1 || true
        [ -c /dev/fuse ] || mknod -m 0666 /dev/fuse c 10 229 2>/dev/null || true
    fi
    if [ ! -c /dev/fuse ]; then
        echo "install-deps: WARNING: /dev/fuse does not exist, so nothing can be mounted." >&2
        echo "install-deps: load the module (modprobe fuse) or, in a container, start it" \
             "with --device /dev/fuse --cap-add SYS_ADMIN." >&2
    fi
fi
exit 0
