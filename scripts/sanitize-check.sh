#!/usr/bin/env bash
# Heavier checks than CI runs (issue 6), for before a release or after touching threads,
# locks or the cache:
#
#   valgrind   build/ckptfs -s (single-threaded) under valgrind --leak-check=full: mount each
#              fixture, read every file whole, unmount; any leak or memory error fails.
#   tsan       ckptfs built with gcc -fsanitize=thread into build/tsan/, the fixtures mounted
#              at once (multi-threaded, one with a tiny decoded-chunk cache, one -o rw with
#              two writers committing keys the readers leave alone) and hammered by
#              tests/bats/stress_read.py; any ThreadSanitizer report fails.
#
# usage: scripts/sanitize-check.sh [valgrind] [tsan]      (default: both)
# environment: STRESS_SECONDS (default 30), STRESS_PROCS (default 8).
# Needs /dev/fuse, fusermount3, /usr/bin/python3 with numpy; valgrind for the first check.
# Exit status 0 when every check that ran was clean.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

FIX=tests/fixtures/torch-2.11
PY=/usr/bin/python3
# the checkers import each other: keep tests/bats free of __pycache__
export PYTHONDONTWRITEBYTECODE=1
SECONDS_=${STRESS_SECONDS:-30}
PROCS=${STRESS_PROCS:-8}
# name SOURCE (relative to $FIX)
FIXTURES=(
    "dcp_single dcp_single"
    "dcp_zstd dcp_zstd"
    "dcp_dtensor_ws4 dcp_dtensor_ws4"
    "dcp_fsdp2_optim dcp_fsdp2_optim"
    "hf_llama_sharded hf_llama_sharded"
    "st_single st_single/model.safetensors"
    "dcp_hf dcp_hf"
)

checks=("$@")
[ "${#checks[@]}" -gt 0 ] || checks=(valgrind tsan)

work=$(mktemp -d "${TMPDIR:-/tmp}/ckptfs-sanitize.XXXXXX") || exit 2
PIDS=()
MNTS=()
cleanup() {
    local m p
    for m in "${MNTS[@]}"; do
        mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" 2>/dev/null || fusermount3 -u -z "$m"; }
    done
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# start BINARY LOG MNT SOURCE [opts...] -- [wrapper...]: runs the daemon in the foreground
# (in the background of this script) and waits for the mount.
start_daemon() {
    local log=$1 mnt=$2
    shift 2
    mkdir -p "$mnt"
    "$@" </dev/null >"$log" 2>&1 &
    local pid=$! i
    PIDS+=("$pid")
    MNTS+=("$mnt")
    for ((i = 0; i < 1200; i++)); do
        mountpoint -q "$mnt" && { LAST_PID=$pid; return 0; }
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "sanitize-check: the daemon did not mount $mnt; its log:" >&2
    cat "$log" >&2
    return 1
}

stop_daemon() { # MNT PID: unmount, wait for the exit, return its status
    local mnt=$1 pid=$2 rc=0 i
    fusermount3 -u "$mnt" 2>/dev/null || { sleep 1; fusermount3 -u -z "$mnt" 2>/dev/null; }
    for ((i = 0; i < 1200; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    wait "$pid" || rc=$?
    return "$rc"
}

read_all() { # MNT: every regular file, whole
    find "$1" -type f -print0 | xargs -0 -r cat >/dev/null
}

check_valgrind() {
    if ! command -v valgrind >/dev/null; then
        echo "valgrind: SKIPPED (valgrind is not installed)"
        return 0
    fi
    make -s build/ckptfs >/dev/null || { echo "valgrind: FAILED (cannot build build/ckptfs)"; return 1; }
    local bad=0 entry name src log mnt rc
    for entry in "${FIXTURES[@]}"; do
        name=${entry%% *}
        src=$FIX/${entry#* }
        log=$work/valgrind-$name.log
        mnt=$work/vg-$name
        # -s: one thread, so valgrind's serialisation costs nothing and the report is stable
        start_daemon "$log" "$mnt" valgrind --leak-check=full --show-leak-kinds=definite,indirect,possible \
            --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=99 \
            --num-callers=30 --track-fds=no build/ckptfs -s -f "$src" "$mnt" || { bad=1; continue; }
        read_all "$mnt"
        stop_daemon "$mnt" "$LAST_PID"
        rc=$?
        if [ "$rc" -ne 0 ] || grep -q "ERROR SUMMARY: [1-9]" "$log"; then
            echo "valgrind: $name: FAILED (exit status $rc); log:"
            sed 's/^/    /' "$log"
            bad=1
        else
            echo "valgrind: $name: clean ($(grep -o 'total heap usage:.*' "$log"))"
        fi
    done
    return "$bad"
}

build_tsan() {
    local out=build/tsan cflags libs src obj objs=()
    cflags="-std=gnu11 -O1 -g -fsanitize=thread -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64
            -DFUSE_USE_VERSION=31 $(pkg-config --cflags fuse3 libzstd libcjson libcurl) -Iplanner -Ifs"
    libs="$(pkg-config --libs fuse3 libzstd libcjson libcurl) -lz -lpthread -lm"
    mkdir -p "$out/planner" "$out/fs"
    for src in planner/*.c fs/*.c; do
        obj=$out/${src%.c}.o
        if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] ||
           [ -n "$(find planner fs -name '*.h' -newer "$obj" -print -quit)" ]; then
            # shellcheck disable=SC2086
            gcc $cflags -c "$src" -o "$obj" || return 1
        fi
        objs+=("$obj")
    done
    # shellcheck disable=SC2086
    gcc -fsanitize=thread -o "$out/ckptfs" "${objs[@]}" $libs
}

check_tsan() {
    build_tsan || { echo "tsan: FAILED (cannot build build/tsan/ckptfs)"; return 1; }
    local entry name src mnt log args=() pids=() mnts=() logs=() i rc bad=0
    for entry in "${FIXTURES[@]}"; do
        name=${entry%% *}
        src=$FIX/${entry#* }
        mnt=$work/tsan-$name
        log=$work/tsan-$name.log
        TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1" \
            start_daemon "$log" "$mnt" build/tsan/ckptfs -f "$src" "$mnt" || return 1
        pids+=("$LAST_PID") mnts+=("$mnt") logs+=("$log")
        args+=("$mnt=$FIX/$name.manifest.json")
    done
    # and the zstd checkpoint again with a cache that holds nothing: constant eviction
    mnt=$work/tsan-zstd-small
    log=$work/tsan-zstd-small.log
    TSAN_OPTIONS="halt_on_error=0" \
        start_daemon "$log" "$mnt" build/tsan/ckptfs -f -o cache=4K "$FIX/dcp_zstd" "$mnt" || return 1
    pids+=("$LAST_PID") mnts+=("$mnt") logs+=("$log")
    args+=("$mnt=$FIX/dcp_zstd.manifest.json")

    # a read-write mount: two writers commit their keys while the readers read the rest
    local rwsrc=$work/rw-dcp_single wpids=() w
    cp -r "$FIX/dcp_single" "$rwsrc"
    chmod -R u+w "$rwsrc"
    mnt=$work/tsan-rw
    log=$work/tsan-rw.log
    TSAN_OPTIONS="halt_on_error=0" \
        start_daemon "$log" "$mnt" build/tsan/ckptfs -f -o rw "$rwsrc" "$mnt" || return 1
    pids+=("$LAST_PID") mnts+=("$mnt") logs+=("$log")
    args+=("$mnt=$FIX/dcp_single.manifest.json")
    "$PY" tests/bats/stress_write.py "$mnt/model/layers/0/mlp/w1/weight" "$SECONDS_" 1 &
    wpids+=($!)
    "$PY" tests/bats/stress_write.py "$mnt/model/embed/weight" "$SECONDS_" 2 &
    wpids+=($!)

    "$PY" tests/bats/stress_read.py --procs "$PROCS" --seconds "$SECONDS_" \
        --exclude model.layers.0.mlp.w1.weight --exclude model.embed.weight "${args[@]}"
    rc=$?
    [ "$rc" -eq 0 ] || { echo "tsan: the readers found wrong bytes or errors"; bad=1; }
    for w in "${wpids[@]}"; do
        wait "$w" || { echo "tsan: a writer failed"; bad=1; }
    done
    for i in "${!mnts[@]}"; do
        stop_daemon "${mnts[$i]}" "${pids[$i]}" || true
        if grep -q "WARNING: ThreadSanitizer" "${logs[$i]}"; then
            echo "tsan: ${mnts[$i]##*/}: FAILED; log:"
            sed 's/^/    /' "${logs[$i]}"
            bad=1
        else
            echo "tsan: ${mnts[$i]##*/}: clean"
        fi
    done
    return "$bad"
}

status=0
for c in "${checks[@]}"; do
    case "$c" in
        valgrind) check_valgrind || status=1 ;;
        tsan) check_tsan || status=1 ;;
        *) echo "usage: $0 [valgrind] [tsan]" >&2; exit 2 ;;
    esac
done
[ "$status" = 0 ] && echo "sanitize-check: clean" || echo "sanitize-check: FAILED"
exit "$status"
