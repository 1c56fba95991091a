# Shared helpers for the ckptfs integration tests (load with `load helpers`).
#
# Every test that mounts calls mount_ckpt, and every file's teardown calls unmount_ckpt,
# which unmounts, waits for the daemon to exit and fails the test if the daemon's log holds
# a sanitizer report.  Only the PID this file started is ever signalled.

# Paths are relative to the repository root, where the tests run.
cd "$BATS_TEST_DIRNAME/../.." || exit 1
CKPTFS=${CKPTFS:-build/san/ckptfs}
FIX=tests/fixtures/torch-2.11
PY=/usr/bin/python3
# The checkers import each other: keep tests/bats free of __pycache__.
export PYTHONDONTWRITEBYTECODE=1
BATS_PY=tests/bats

# Set by mount_ckpt: the mountpoint, the daemon's PID, its log, its exit status (after
# unmount_ckpt), and the source it serves.
MNT=
CKPT_PID=
CKPT_LOG=
CKPT_STATUS=
CKPT_SRC=

# Where the daemon's log lines about sanitizers start (ASan, LSan, UBSan).
SANITIZER_RE='ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|SUMMARY: (Address|Undefined|Leak)Sanitizer'

# A temporary directory private to this test.
test_tmp() {
    if [ -n "${BATS_TEST_TMPDIR:-}" ]; then
        mktemp -d "$BATS_TEST_TMPDIR/t.XXXXXX"
    else
        mktemp -d "${TMPDIR:-/tmp}/ckptfs-bats.XXXXXX"
    fi
}

need_ckptfs() {
    if [ ! -x "$CKPTFS" ]; then
        echo "$CKPTFS is not built (make build/san/ckptfs)" >&2
        return 1
    fi
    if [ ! -c /dev/fuse ]; then
        echo "/dev/fuse is missing: nothing can be mounted here" >&2
        return 1
    fi
}

# mount_ckpt SRC [options...]: mounts SRC on a fresh directory with the daemon in the
# foreground (-f) in the background of this shell; sets MNT, CKPT_PID, CKPT_LOG.
mount_ckpt() {
    local src=$1
    shift
    need_ckptfs || return 1
    local dir
    dir=$(test_tmp) || return 1
    MNT=$dir/mnt
    CKPT_LOG=$dir/ckptfs.log
    CKPT_SRC=$src
    CKPT_STATUS=
    mkdir "$MNT"
    # fd 3 is bats' own output channel: a background process holding it would make bats
    # wait for it forever, so it is closed here.
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
        "$CKPTFS" "$@" "$src" "$MNT" -f </dev/null >"$CKPT_LOG" 2>&1 3>&- &
    CKPT_PID=$!
    local i
    for ((i = 0; i < 200; i++)); do
        if mountpoint -q "$MNT"; then
            return 0
        fi
        if ! kill -0 "$CKPT_PID" 2>/dev/null; then
            CKPT_STATUS=0
            wait "$CKPT_PID" || CKPT_STATUS=$?
            echo "ckptfs exited (status $CKPT_STATUS) before mounting $src; its log:" >&2
            cat "$CKPT_LOG" >&2
            CKPT_PID=
            return 1
        fi
        sleep 0.05
    done
    echo "ckptfs did not mount $src within 10 s; its log:" >&2
    cat "$CKPT_LOG" >&2
    return 1
}

# unmount_ckpt: unmounts MNT, waits for the daemon to exit (kills that PID alone if it
# has not after ~5 s), and fails if the daemon's log has a sanitizer report.
unmount_ckpt() {
    local rc=0
    if [ -n "$MNT" ] && mountpoint -q "$MNT" 2>/dev/null; then
        fusermount3 -u "$MNT" 2>/dev/null || {
            sleep 0.5
            fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT" 2>/dev/null || true
        }
    fi
    if [ -n "$CKPT_PID" ]; then
        local i
        for ((i = 0; i < 100; i++)); do
            kill -0 "$CKPT_PID" 2>/dev/null || break
            sleep 0.05
        done
        if kill -0 "$CKPT_PID" 2>/dev/null; then
            echo "ckptfs (pid $CKPT_PID) still running 5 s after unmount; killing it" >&2
            kill "$CKPT_PID" 2>/dev/null || true
            sleep 1
            kill -9 "$CKPT_PID" 2>/dev/null || true
            rc=1
        fi
        CKPT_STATUS=0
        wait "$CKPT_PID" 2>/dev/null || CKPT_STATUS=$?
        CKPT_PID=
        if [ "$rc" = 0 ] && [ "$CKPT_STATUS" != 0 ]; then
            echo "ckptfs exited with status $CKPT_STATUS after unmount" >&2
            rc=1
        fi
    fi
    if [ -n "$MNT" ] && mountpoint -q "$MNT" 2>/dev/null; then
        fusermount3 -u -z "$MNT" 2>/dev/null || true
    fi
    if [ -n "$CKPT_LOG" ] && [ -f "$CKPT_LOG" ] && grep -Eq "$SANITIZER_RE" "$CKPT_LOG"; then
        echo "sanitizer report in the ckptfs log:" >&2
        cat "$CKPT_LOG" >&2
        rc=1
    fi
    MNT=
    return "$rc"
}

# Runs one of the python checkers with a time limit, so a hung read cannot hang CI (each
# check takes seconds; a read the daemon never answers is a failure, not a wait).
py_check() {
    timeout -k 5 120 "$PY" "$@"
}

# copy_fixture NAME: a writable copy of a fixture checkpoint in this test's temp dir;
# prints its path.
copy_fixture() {
    local dir
    dir=$(test_tmp) || return 1
    cp -r "$FIX/$1" "$dir/$1"
    chmod -R u+w "$dir/$1"
    echo "$dir/$1"
}

# Every tree-shaped fixture: NAME SOURCE (SOURCE relative to $FIX).
ALL_FIXTURES=(
    "dcp_single dcp_single"
    "dcp_single_perfile dcp_single_perfile"
    "dcp_zstd dcp_zstd"
    "dcp_dtensor_ws4 dcp_dtensor_ws4"
    "dcp_dtensor_ws4_perfile dcp_dtensor_ws4_perfile"
    "dcp_fsdp2_optim dcp_fsdp2_optim"
    "st_single st_single/model.safetensors"
    "hf_llama_sharded hf_llama_sharded"
    "dcp_hf dcp_hf"
)

# fixture_src NAME: the SOURCE path ckptfs mounts for fixture NAME.
fixture_src() {
    local entry
    for entry in "${ALL_FIXTURES[@]}"; do
        if [ "${entry%% *}" = "$1" ]; then
            echo "$FIX/${entry#* }"
            return 0
        fi
    done
    echo "unknown fixture $1" >&2
    return 1
}

# run_ckptfs_refusal [options...] SRC: runs ckptfs on SRC (expected to refuse it) with a time limit and a
# fresh mountpoint; leaves bats' $status/$output/$lines and checks nothing got mounted.
run_ckptfs_refusal() {
    need_ckptfs || return 1
    local dir
    dir=$(test_tmp) || return 1
    mkdir "$dir/mnt"
    MNT=$dir/mnt
    run env ASAN_OPTIONS=detect_leaks=0 timeout -k 5 20 "$CKPTFS" "$@" "$MNT" -f
    if mountpoint -q "$MNT"; then
        echo "ckptfs mounted although it should have refused" >&2
        fusermount3 -u "$MNT"
        return 1
    fi
    MNT=
}

# expect_refusal NEEDLE...: after run_ckptfs_refusal: exit status 1 and exactly one line of
# output, naming one of the NEEDLEs (the file that is wrong).
# shellcheck disable=SC2154  # status, output, lines: set by bats' run
expect_refusal() {
    if [ "$status" -ne 1 ]; then
        echo "want exit status 1, got $status; output:" >&2
        printf '%s\n' "$output" >&2
        return 1
    fi
    if [ "${#lines[@]}" -ne 1 ]; then
        echo "want one line of output, got ${#lines[@]}:" >&2
        printf '%s\n' "$output" >&2
        return 1
    fi
    local needle
    for needle in "$@"; do
        if [[ "${lines[0]}" == *"$needle"* ]]; then
            return 0
        fi
    done
    echo "the message names none of: $*" >&2
    echo "message: ${lines[0]}" >&2
    return 1
}

# check_mounted NAME [check_manifest.py options...]: checks the mount against fixture NAME.
check_mounted() {
    local name=$1
    shift
    py_check "$BATS_PY/check_manifest.py" "$MNT" "$FIX/$name.manifest.json" --src "$CKPT_SRC" "$@"
}

# gen DIR ARGS...: a checkpoint written by scripts/gen_dcp.py in DIR, its sums in
# DIR.sha256.json (no torch needed).
gen() {
    local dir=$1
    shift
    run timeout -k 5 120 "$PY" scripts/gen_dcp.py --out "$dir" "$@"
    if [ "$status" -ne 0 ]; then
        printf '%s\n' "$output" >&2
        return 1
    fi
}

# The independent reader of what a commit wrote: read_metadata.py (Python's pickle with
# stand-in classes and zipfile, no C code of ours).

# check_ckpt DIR: the independent reader accepts every storage entry and item.
check_ckpt() {
    run "$PY" "$BATS_PY/read_metadata.py" --check "$1"
    if [ "$status" -ne 0 ]; then
        printf '%s\n' "$output" >&2
        return 1
    fi
}

# key_sha DIR FQN: sha256 of the key's bytes as the independent reader assembles them.
key_sha() {
    "$PY" "$BATS_PY/read_metadata.py" --tensor "$2" "$1" | sha256sum | cut -d' ' -f1
}

# same_except DIR NAME FQN...: every key of fixture NAME's manifest but the named ones
# still has its manifest sha256 in DIR, as the independent reader assembles it.
same_except() {
    local dir=$1 name=$2
    shift 2
    "$PY" - "$dir" "$FIX/$name.manifest.json" "$@" <<'PY'
import json, subprocess, sys
d, man, skip = sys.argv[1], json.load(open(sys.argv[2])), set(sys.argv[3:])
got = json.loads(subprocess.run(["/usr/bin/python3", "tests/bats/read_metadata.py", "--sha256", d],
                                capture_output=True, check=True).stdout)
bad = [k for k in man if k not in skip and got.get(k) != man[k]["sha256"]]
if bad:
    sys.exit("changed or missing: %s" % bad)
PY
}
