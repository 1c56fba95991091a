#!/usr/bin/env bats
# SPEC "Object storage": retries with backoff, bounded, then EIO -- against a small S3 stub
# (tests/bats/s3_stub.py, started here on 127.0.0.1 and stopped by PID) that answers 503
# SlowDown, 500 or cuts connections on demand.  The real-server tests are in s3.bats.

load helpers

STUB_PID=

teardown() {
    unmount_ckpt
    if [ -n "$STUB_PID" ]; then
        kill "$STUB_PID" 2>/dev/null || true
        wait "$STUB_PID" 2>/dev/null || true
        STUB_PID=
    fi
}

# start_stub FIXTURE [stub options...]: serves the fixture as s3://stub/ck; sets STUB_EP.
start_stub() {
    local fx=$1
    shift
    local d
    d=$(test_tmp)
    STUB_LOG=$d/stub.log
    "$PY" "$BATS_PY/s3_stub.py" "$FIX/$fx" stub ck "$d/port" "$@" 2>"$STUB_LOG" 3>&- &
    STUB_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        [ -s "$d/port" ] && break
        sleep 0.05
    done
    STUB_EP=http://127.0.0.1:$(cat "$d/port")
    export AWS_ACCESS_KEY_ID=stub AWS_SECRET_ACCESS_KEY=stub
}

@test "s3 faults: 503 SlowDown and cut connections are retried; the bytes come out right" {
    start_stub dcp_dtensor_ws4 --slowdown 2 --reset 1
    mount_ckpt s3://stub/ck -o "endpoint=$STUB_EP"
    py_check "$BATS_PY/check_manifest.py" "$MNT" "$FIX/dcp_dtensor_ws4.manifest.json"
    ! grep -q "after" "$CKPT_LOG"
    # the faults really happened: 2 x 503 and one cut per object read
    [ "$(grep -c '" 503 ' "$STUB_LOG")" -ge 2 ]
    [ "$(grep -c '" 206 ' "$STUB_LOG")" -ge 2 ]
}

@test "s3 faults: an object that keeps failing gives EIO for its keys alone, once retries run out" {
    # dcp_single_perfile keeps each key in its own data file
    local victim
    victim=$("$PY" - "$FIX/dcp_single_perfile" <<'PY'
import json, subprocess, sys
j = json.loads(subprocess.run(["/usr/bin/python3", "tests/bats/read_metadata.py", "--json", sys.argv[1]],
                              capture_output=True, check=True).stdout)
print(j["keys"]["model.u8"]["chunks"][0]["storage"]["file"])
PY
)
    start_stub dcp_single_perfile --fail-key "$victim"
    mount_ckpt s3://stub/ck -o "endpoint=$STUB_EP"
    run cat "$MNT/model/u8"
    [ "$status" -ne 0 ]
    [[ "$output" == *"Input/output error"* ]]
    grep -q "$victim.*HTTP 500 InternalError after 5 tries" "$CKPT_LOG"
    [ "$(grep -c '" 500 ' "$STUB_LOG")" -ge 5 ]
    # every other key still reads right
    "$PY" - "$MNT" "$FIX/dcp_single_perfile.manifest.json" <<'PY'
import hashlib, json, os, sys
mnt, man = sys.argv[1], json.load(open(sys.argv[2]))
bad = []
for k, v in man.items():
    if k == "model.u8":
        continue
    p = os.path.join(mnt, *k.split("."))
    if not os.path.isfile(p):
        continue  # keys that are also directories live under other names; checked elsewhere
    if hashlib.sha256(open(p, "rb").read()).hexdigest() != v["sha256"]:
        bad.append(k)
sys.exit("wrong bytes: %s" % bad if bad else 0)
PY
    kill -0 "$CKPT_PID"
}
