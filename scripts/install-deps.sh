#!/usr/bin/env bash
# Installs the Debian packages ckptfs needs, and checks /dev/fuse.  Needs only bash and
# apt: on a bare Debian 12 (no compiler, no make) it installs those too.
# Runs on every `make` (as `--quiet GOAL...`), so when everything is present it must cost one
# dpkg-query call and print nothing.
#
# usage: scripts/install-deps.sh [--quiet] [GOAL...]
#   GOAL is a make goal; it picks the packages:
#     build (or any other goal)  compiler, make, pkg-config and the -dev libraries
#     demo, bench                 + fuse3 (fusermount3), python3-numpy, attr (getfattr)
#     fuzz                        + clang and its libFuzzer runtime
#     test, deps (the default)    all of the above + bats, zstd, python3-torch, ceph
# apt's own output goes to build/install-deps.log; one line per step is printed, and the
# log's tail when a step fails.
set -euo pipefail

quiet=0
goals=()
usage="usage: $0 [--quiet] [build|demo|bench|fuzz|test|deps ...]"
for a in "$@"; do
    case "$a" in
        --quiet) quiet=1 ;;
        -h|--help) echo "$usage"; exit 0 ;;
        -*) echo "$usage" >&2; exit 2 ;;
        *) goals+=("$a") ;;
    esac
done
[ "${#goals[@]}" -gt 0 ] || goals=(deps)

say() { [ "$quiet" = 1 ] || echo "$@"; }

# build-essential brings gcc, make, libc6-dev (and the ASan/UBSan runtimes with gcc).
build_pkgs=(build-essential pkg-config libfuse3-dev libzstd-dev libcjson-dev zlib1g-dev
            libcurl4-openssl-dev)
# fusermount3 (mount/unmount), numpy and getfattr: what the demo shows the mount with.
demo_pkgs=(fuse3 python3-numpy attr)
# clang + its libFuzzer runtime: make fuzz, and the fuzz smoke test.
fuzz_pkgs=(clang libclang-rt-14-dev)
# bats and zstd: tests; python3-torch: a real DCP producer and consumer; ceph: a real S3
# server (radosgw) on loopback.
test_pkgs=(bats zstd curl python3-torch ceph-mon ceph-osd radosgw ceph-common)

wanted=("${build_pkgs[@]}")
add_demo=0 add_fuzz=0 add_test=0
for g in "${goals[@]}"; do
    case "$g" in
        demo|bench) add_demo=1 ;;
        fuzz) add_fuzz=1 ;;
        test|deps) add_demo=1 add_fuzz=1 add_test=1 ;;
    esac
done
[ "$add_demo" = 0 ] || wanted+=("${demo_pkgs[@]}")
[ "$add_fuzz" = 0 ] || wanted+=("${fuzz_pkgs[@]}")
[ "$add_test" = 0 ] || wanted+=("${test_pkgs[@]}")

installed_set() {
    # Prints the names among "$@" that dpkg knows as fully installed.  Unknown names make
    # dpkg-query complain on stderr and exit 1; that only means "not installed".
    dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "$@" 2>/dev/null |
        awk '$2 == "ii" { print $1 }' || true
}

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "install-deps: dpkg-query not found; this script knows Debian/Ubuntu only." >&2
    echo "install-deps: install by hand: a C compiler, make, pkg-config, libfuse3 (dev), fuse3," \
         "libzstd (dev), cJSON (dev), zlib (dev), libcurl (dev), bats, python3 with numpy," \
         "zstd, attr" >&2
    exit 1
fi

have=" $(installed_set gcc make "${wanted[@]}" | tr '\n' ' ') "
missing=()
for p in "${wanted[@]}"; do
    # build-essential is what we would install, but a plain gcc + make is enough to build.
    if [ "$p" = build-essential ] && [[ "$have" == *" gcc "* ]] && [[ "$have" == *" make "* ]]; then
        continue
    fi
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
    log_dir="$(cd "$(dirname "$0")/.." && pwd)/build"
    mkdir -p "$log_dir"
    log="$log_dir/install-deps.log"
    : >"$log"

    # step NAME COMMAND...: one line saying what runs and how it ended; apt's output goes to
    # the log, whose tail is shown if the command fails.
    step() {
        local what=$1 t0=$SECONDS rc=0 from nwarn
        shift
        printf 'install-deps: %s ... ' "$what"
        echo "### $what: $*" >>"$log"
        from=$(wc -l <"$log")
        "$@" </dev/null >>"$log" 2>&1 || rc=$?
        if [ "$rc" -ne 0 ]; then
            echo "FAILED (status $rc)"
            echo "install-deps: the last lines of $log:" >&2
            tail -n 25 "$log" | sed 's/^/    /' >&2
            exit 1
        fi
        # apt-get update succeeds when a mirror is unreachable; say so, the next step fails.
        nwarn=$(tail -n +"$((from + 1))" "$log" | grep -c '^W: ' || true)
        if [ "$nwarn" -gt 0 ]; then
            echo "done with $nwarn warnings, see $log ($((SECONDS - t0)) s)"
        else
            echo "done ($((SECONDS - t0)) s)"
        fi
    }

    echo "install-deps: ${#missing[@]} Debian packages to install: ${missing[*]} (apt log: $log)"
    # stdin from /dev/null (in step): CI runs with no terminal and apt must never wait for input.
    step "apt-get update" "${sudo_cmd[@]}" apt-get update
    step "downloading ${#missing[@]} packages and their dependencies" \
        "${sudo_cmd[@]}" apt-get install -y --no-install-recommends --download-only "${missing[@]}"
    step "installing them" "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
    still=()
    have=" $(installed_set "${missing[@]}" | tr '\n' ' ') "
    for p in "${missing[@]}"; do
        [[ "$have" == *" $p "* ]] || still+=("$p")
    done
    if [ "${#still[@]}" -gt 0 ]; then
        echo "install-deps: could not install: ${still[*]} (see $log)" >&2
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
