#!/usr/bin/env bash
# Runs every unit test (build/san/tests/test_*, TAP) and then the bats integration tests,
# prints all their output, and closes with exactly one line `N passed, N failed` (plus
# `, N skipped` when something was skipped).  Exit status 0 iff nothing failed.
# Needs no terminal: CI runs it with stdin closed.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1

passed=0
failed=0
skipped=0
failed_names=()

# Counts the TAP result lines of one suite's output.  Prints "P F S" (passed, failed,
# skipped) so the caller can add them up.
count_tap() {
    awk '
        /^not ok/                  { f++; next }
        /^ok/ && /#[ \t]*[sS][kK][iI][pP]/ { s++; next }
        /^ok/                      { p++ }
        END { printf "%d %d %d\n", p, f, s }' "$1"
}

# Adds one suite's counts; a suite that exited non-zero without a single `not ok`
# (crash, sanitizer report at exit, missing binary) is one failure named after it.
add_suite() {
    local name=$1 out=$2 rc=$3 p f s
    read -r p f s < <(count_tap "$out")
    passed=$((passed + p))
    skipped=$((skipped + s))
    if [ "$f" -gt 0 ]; then
        failed=$((failed + f))
        failed_names+=("$name")
    elif [ "$rc" -ne 0 ]; then
        echo "not ok - $name exited with status $rc without reporting a failed check"
        failed=$((failed + 1))
        failed_names+=("$name")
    fi
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ckptfs-tests.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# LeakSanitizer cannot run everywhere (under ptrace, some sandboxes); probe it once with a
# program that leaks nothing, so unit tests check leaks wherever leak checking works.
leaks=0
probe_src="$tmp/lsan_probe.c"
echo 'int main(void) { return 0; }' >"$probe_src"
if "${CC:-cc}" -fsanitize=address -o "$tmp/lsan_probe" "$probe_src" >/dev/null 2>&1 &&
   ASAN_OPTIONS=detect_leaks=1 "$tmp/lsan_probe" >/dev/null 2>&1; then
    leaks=1
fi
unit_asan="detect_leaks=$leaks:abort_on_error=0:halt_on_error=1"

shopt -s nullglob
units=(build/san/tests/test_*)
shopt -u nullglob

echo "# unit tests: ${#units[@]} binaries (ASAN_OPTIONS=$unit_asan)"
for t in "${units[@]}"; do
    if [ ! -f "$t" ] || [ ! -x "$t" ]; then
        continue
    fi
    name=$(basename "$t")
    echo "# --- $name"
    out="$tmp/$name.out"
    # A hung unit test must not hang CI; 600 s is far above any test's need.
    ASAN_OPTIONS="$unit_asan" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
        timeout -k 10 600 "$t" </dev/null >"$out" 2>&1
    rc=$?
    cat "$out"
    add_suite "$name" "$out" "$rc"
done

echo "# integration tests: bats tests/bats"
if ! command -v bats >/dev/null 2>&1; then
    echo "not ok - bats not installed (run: make deps)"
    failed=$((failed + 1))
    failed_names+=(bats)
elif ! compgen -G "tests/bats/*.bats" >/dev/null; then
    echo "# no tests/bats/*.bats files"
else
    out="$tmp/bats.out"
    # Printed as it runs (tee) so a slow suite shows progress; the file is counted after.
    # A read the daemon never answers must fail its test, not hang the run: bats stops a
    # test after BATS_TEST_TIMEOUT seconds (and still runs its teardown, which unmounts).
    BATS_TEST_TIMEOUT=${BATS_TEST_TIMEOUT:-300} bats --tap tests/bats </dev/null 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    add_suite bats "$out" "$rc"
fi

if [ "${#failed_names[@]}" -gt 0 ]; then
    echo "# failures in: ${failed_names[*]}"
fi
line="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
[ "$failed" -eq 0 ]
