#!/usr/bin/env bash
# Builds the libFuzzer targets in tests/fuzz/ with clang (ASan + UBSan) and runs each one.
#
# usage: scripts/fuzz.sh [--smoke] [--build-only] [TARGET...]
#   TARGET          fuzz_pickle fuzz_zip fuzz_safetensors fuzz_npy fuzz_geometry
#                   fuzz_dcp_metadata (default: all)
#   --smoke         run each target for 10 s (CI), instead of FUZZ_SECONDS
#   --build-only    build, do not run
# environment:
#   FUZZ_SECONDS    seconds per target (default 600)
#   FUZZ_JOBS       targets run at the same time (default: number of CPUs)
#   CLANG           the compiler (default: clang, else clang-14)
#
# Seeds come from tests/fuzz/corpus/TARGET/ (checked in, never written); what the fuzzer
# learns goes to build/fuzz/corpus/TARGET/ and is reused by the next run.  A crash, leak,
# timeout or out-of-memory input is saved as tests/fuzz/crashes/TARGET-KIND-SHA1; turn each
# into a case of tests/unit/test_regressions.c.  Logs: build/fuzz/logs/TARGET.log.
# Exit status: 0 when every target ran clean, 1 when one found something, 2 on a build or
# usage error, 77 when clang or its libFuzzer runtime is missing.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

ALL_TARGETS=(fuzz_pickle fuzz_zip fuzz_safetensors fuzz_npy fuzz_geometry fuzz_dcp_metadata)

# -max_len per target: a little above the largest real input of its kind.
max_len() {
    case "$1" in
        fuzz_pickle) echo 16384 ;;         # .metadata of the fixtures: 4-9 KiB
        fuzz_zip) echo 24576 ;;            # one item: 1-5 KiB, a zstd frame less
        fuzz_safetensors) echo 16384 ;;    # headers: < 8 KiB
        fuzz_npy) echo 1024 ;;             # a header is 64..few hundred bytes
        fuzz_geometry) echo 512 ;;         # the decoder reads < 400 bytes
        fuzz_dcp_metadata) echo 16384 ;;
        *) echo 4096 ;;
    esac
}

smoke=0
build_only=0
targets=()
for a in "$@"; do
    case "$a" in
        --smoke) smoke=1 ;;
        --build-only) build_only=1 ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        fuzz_*) targets+=("$a") ;;
        *) echo "fuzz.sh: unknown argument $a (see --help)" >&2; exit 2 ;;
    esac
done
[ "${#targets[@]}" -gt 0 ] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
    [ -f "tests/fuzz/$t.c" ] || { echo "fuzz.sh: no tests/fuzz/$t.c" >&2; exit 2; }
done

seconds=${FUZZ_SECONDS:-600}
[ "$smoke" = 1 ] && seconds=10
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}

cc=${CLANG:-}
if [ -z "$cc" ]; then
    for c in clang clang-14; do
        command -v "$c" >/dev/null 2>&1 && { cc=$c; break; }
    done
fi
if [ -z "$cc" ]; then
    echo "fuzz.sh: clang is not installed (Debian: apt-get install clang libclang-rt-14-dev)" >&2
    exit 77
fi

out=build/fuzz
mkdir -p "$out/obj" "$out/logs" "$out/corpus" tests/fuzz/crashes

# libFuzzer's runtime ships separately from clang on Debian (libclang-rt-N-dev).
probe=$out/probe.c
printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$probe"
if ! "$cc" -fsanitize=fuzzer,address,undefined -o "$out/probe" "$probe" >"$out/probe.log" 2>&1; then
    echo "fuzz.sh: $cc cannot link -fsanitize=fuzzer (libFuzzer runtime missing;" \
         "Debian: apt-get install libclang-rt-14-dev)" >&2
    sed 's/^/  /' "$out/probe.log" >&2
    exit 77
fi

pkgs=(libzstd libcjson libcurl)
pkg_cflags=$(pkg-config --cflags "${pkgs[@]}" 2>/dev/null)
pkg_libs="$(pkg-config --libs "${pkgs[@]}" 2>/dev/null || echo -lzstd -lcjson -lcurl) -lz -lpthread -lm"
cflags="-std=gnu11 -g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64
        -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
        -Iplanner $pkg_cflags"

# The planner library, instrumented.  A file that does not compile (someone's work in
# progress) is left out with a warning: the link below says if a target needed it.
echo "fuzz.sh: building with $cc"
objs=()
for src in planner/*.c; do
    obj=$out/obj/$(basename "${src%.c}").o
    if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find planner -name '*.h' -newer "$obj" -print -quit)" ]; then
        # shellcheck disable=SC2086
        if ! "$cc" $cflags -c "$src" -o "$obj" 2>"$out/logs/$(basename "$src").build.log"; then
            echo "fuzz.sh: warning: $src does not compile; left out (see $out/logs/)" >&2
            rm -f "$obj"
            continue
        fi
    fi
    objs+=("$obj")
done
rm -f "$out/libplanner.a"
ar rcs "$out/libplanner.a" "${objs[@]}" || exit 2

for t in "${targets[@]}"; do
    # shellcheck disable=SC2086
    if ! "$cc" $cflags -fsanitize=fuzzer "tests/fuzz/$t.c" "$out/libplanner.a" $pkg_libs \
            -o "$out/$t" 2>"$out/logs/$t.build.log"; then
        echo "fuzz.sh: cannot build $t:" >&2
        cat "$out/logs/$t.build.log" >&2
        exit 2
    fi
done
[ "$build_only" = 1 ] && { echo "fuzz.sh: built ${targets[*]} in $out/"; exit 0; }

run_one() {
    local t=$1 log=$out/logs/$1.log lock
    mkdir -p "$out/corpus/$t"
    # One run of a target at a time: two would share its log, corpus and status file.
    exec {lock}>"$out/logs/$t.lock"
    if ! flock -n "$lock"; then
        echo "fuzz.sh: $t is being fuzzed by another run; skipped" >&2
        echo busy >"$out/logs/$t.rc.$$"
        return
    fi
    # -timeout: one input taking 10 s is a hang; -rss_limit_mb: a runaway allocation is
    # a bug here, since every length is supposed to be checked before allocating.
    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$out/$t" "$out/corpus/$t" "tests/fuzz/corpus/$t" \
        -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=10 \
        -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1 \
        -artifact_prefix="tests/fuzz/crashes/$t-" >"$log" 2>&1 </dev/null
    echo $? >"$out/logs/$t.rc.$$"
}

echo "fuzz.sh: running ${#targets[@]} targets, ${seconds} s each, $jobs at a time"
pids=()
for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        wait -n 2>/dev/null || sleep 1
    done
    run_one "$t" &
    pids+=($!)
done
for p in "${pids[@]}"; do
    wait "$p"
done

bad=0
printf '%-20s %8s %12s %10s  %s\n' target seconds executions corpus result
for t in "${targets[@]}"; do
    log=$out/logs/$t.log
    rc=$(cat "$out/logs/$t.rc.$$" 2>/dev/null || echo 1)
    rm -f "$out/logs/$t.rc.$$"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
    corp=$(find "$out/corpus/$t" -type f | wc -l)
    if [ "$rc" = 0 ]; then
        res=ok
    else
        bad=1
        art=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        res="FAILED (status $rc) ${art:-see $log}"
    fi
    printf '%-20s %8s %12s %10s  %s\n' "$t" "${secs:-?}" "${execs:-?}" "$corp" "$res"
done
if [ "$bad" = 1 ]; then
    echo "fuzz.sh: some target failed; logs in $out/logs/, inputs in tests/fuzz/crashes/" >&2
    exit 1
fi
exit 0
