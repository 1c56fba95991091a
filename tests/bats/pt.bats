#!/usr/bin/env bats
# SPEC "Views for frameworks": DIR.pt for every directory and /.ckptfs/model.pt, torch.save
# archives of the state dict under DIR nested as planner_data says (dcp_to_torch_save's
# output), read by an independent zip/pickle reader (check_pt.py: every CRC-32, 64-byte
# alignment of every record, only weights_only globals, every tensor against the manifest,
# bytes entries as their objects) and by the real torch of /usr/bin/python3 (1.13 in CI:
# plain and weights_only=True loads; mmap=True where torch has it).

load helpers

teardown() {
    unmount_ckpt
}

check_pt() {
    local name=$1
    shift
    py_check "$BATS_PY/check_pt.py" "$MNT" "$FIX/$name.manifest.json" --torch "$@"
}

@test "pt: model.pt and DIR.pt of dcp_single (every dtype, bytes entries inlined)" {
    mount_ckpt "$FIX/dcp_single"
    check_pt dcp_single --src "$FIX/dcp_single"
}

@test "pt: one file per item and zstd items (dcp_single_perfile, dcp_zstd)" {
    mount_ckpt "$FIX/dcp_single_perfile"
    check_pt dcp_single_perfile --src "$FIX/dcp_single_perfile"
    unmount_ckpt
    mount_ckpt "$FIX/dcp_zstd"
    check_pt dcp_zstd --src "$FIX/dcp_zstd"
}

@test "pt: sharded DTensors load with torch, weights_only=True (dcp_dtensor_ws4, _perfile)" {
    mount_ckpt "$FIX/dcp_dtensor_ws4"
    check_pt dcp_dtensor_ws4 --src "$FIX/dcp_dtensor_ws4" --expect-torch
    unmount_ckpt
    mount_ckpt "$FIX/dcp_dtensor_ws4_perfile"
    check_pt dcp_dtensor_ws4_perfile --src "$FIX/dcp_dtensor_ws4_perfile" --expect-torch
}

@test "pt: FSDP2 model + optimizer state nested by planner_data (dcp_fsdp2_optim)" {
    mount_ckpt "$FIX/dcp_fsdp2_optim"
    check_pt dcp_fsdp2_optim --src "$FIX/dcp_fsdp2_optim" --expect-torch
    # the optimizer's param_groups entries are the objects DCP stored, not archives
    "$PY" - "$MNT" <<'PY'
import io, sys, torch
mnt = sys.argv[1]
sd = torch.load(mnt + "/.ckptfs/model.pt")
lr = sd["optim"]["param_groups"][0]["lr"] if isinstance(sd["optim"]["param_groups"], list) \
    else sd["optim"]["param_groups"]["0"]["lr"]
with open(mnt + "/optim/param_groups/0/lr", "rb") as f:
    want = torch.load(io.BytesIO(f.read()))
assert lr == want and type(lr) is type(want), (lr, want)
print("lr", lr)
PY
}

@test "pt: safetensors sources and DCP's HF writer: flat FQN keys" {
    mount_ckpt "$FIX/hf_llama_sharded"
    check_pt hf_llama_sharded --expect-torch
    unmount_ckpt
    mount_ckpt "$FIX/st_single/model.safetensors"
    check_pt st_single
    unmount_ckpt
    mount_ckpt "$FIX/dcp_hf"
    check_pt dcp_hf
}

@test "pt: -o flat has /.ckptfs/model.pt with the nesting of planner_data" {
    mount_ckpt "$FIX/dcp_single" -o flat
    check_pt dcp_single --src "$FIX/dcp_single" --root-only
}

@test "pt: a copy read in order has the same bytes and CRCs (cat, then an independent check)" {
    mount_ckpt "$FIX/dcp_dtensor_ws4"
    local dir
    dir=$(test_tmp)
    # a fresh view read front to back: CRCs are learnt from the bytes as they pass
    cat "$MNT/col_sharded.pt" >/dev/null 2>&1 || true
    cat "$MNT/.ckptfs/model.pt" >"$dir/model.pt"
    cmp "$dir/model.pt" "$MNT/.ckptfs/model.pt"
    py_check "$BATS_PY/check_pt.py" "$MNT" "$FIX/dcp_dtensor_ws4.manifest.json" \
        --src "$FIX/dcp_dtensor_ws4" --torch --file "$dir/model.pt" /
}

@test "pt: a real key named X.pt wins over the view; DIR/.pt is no view" {
    mount_ckpt "$FIX/dcp_single"
    run stat "$MNT/model/.pt"
    [ "$status" -ne 0 ]
    run stat "$MNT/nosuchdir.pt"
    [ "$status" -ne 0 ]
    run stat "$MNT/model/embed/weight.pt"   # a file, not a directory: no view
    [ "$status" -ne 0 ]
    [ -f "$MNT/model.pt" ]
    ls "$MNT/.ckptfs" | grep -qx model.pt
    # views are not listed in the tree
    ! ls "$MNT/model" | grep -q '\.pt$'
}

@test "pt: planner_data with list indices, dotted elements, collisions; every kind of object" {
    local dir
    dir=$(test_tmp)
    "$PY" "$BATS_PY/make_pt_fixture.py" "$dir/ckpt"
    mount_ckpt "$dir/ckpt"
    py_check "$BATS_PY/check_pt.py" "$MNT" "$dir/ckpt.manifest.json" --src "$dir/ckpt" \
        --torch --expect-torch
    # what torch itself makes of it, spelled out
    "$PY" - "$MNT" <<'PY'
import collections, sys, torch
sd = torch.load(sys.argv[1] + "/.ckptfs/model.pt")
assert isinstance(sd["lst"], list) and len(sd["lst"]) == 3 and sd["lst"][1] is None, sd["lst"]
assert sd["lst"][0].shape == (5,) and sd["lst"][2]["a"].shape == (3, 2)
assert isinstance(sd["opt"]["state"], list) and sd["opt"]["state"][0]["exp_avg"].shape == (4,)
assert sd["opt"]["groups"][0]["betas"] == (0.9, 0.999)
assert type(sd["meta"]["od"]) is collections.OrderedDict and list(sd["meta"]["od"]) == ["b", "a"]
assert sd["meta"]["intkeys"] == {1: "one", 2: None, "n": -(2 ** 40), 3: True}
assert sd["meta"]["blob"] == b"\x00\xff bytes \x80"
assert sd["meta"]["text"] == "h\u00e9llo \u2603"
assert sd["step"] == 1000
assert "odd" not in sd and "flat.key" in sd and "weird.name" not in sd
assert torch.is_tensor(sd["not"]["the"]["fqn"])          # placed by its planner path
assert list(torch.load(sys.argv[1] + "/weird.pt")) == ["name"]
assert sd["rng"]["seed"] == 7 and torch.equal(sd["rng"]["state"], torch.arange(1, 5, dtype=torch.uint8))
assert isinstance(sd["param"], torch.nn.Parameter) and torch.equal(sd["param"], torch.ones(3, 2))
assert sd["param"].stride() == (1, 3)
a, b = sd["shared"]
assert torch.equal(a, torch.zeros(4, dtype=torch.int64)) and a.data_ptr() == b.data_ptr()
assert torch.is_tensor(sd["c"]) and sorted(sd["model"]) == ["embed", "layers.0.w", "layers.1.w"]
sub = torch.load(sys.argv[1] + "/model/layers.pt", weights_only=True)
assert sorted(sub) == ["0.w", "1.w"], sorted(sub)
sub = torch.load(sys.argv[1] + "/opt/state.pt", weights_only=True)
assert list(sub) == [0] and sorted(sub[0]) == ["exp_avg", "step"], sub
print("ok")
PY
}

@test "pt: the checker rejects a damaged copy (a flipped tensor byte)" {
    mount_ckpt "$FIX/dcp_single"
    local dir
    dir=$(test_tmp)
    cp "$MNT/model/layers/0.pt" "$dir/x.pt"
    "$PY" - "$dir/x.pt" <<'PY'
import struct, sys, zipfile
p = sys.argv[1]
z = zipfile.ZipFile(p)
info = [i for i in z.infolist() if i.filename.endswith("/data/0")][0]
with open(p, "r+b") as f:
    f.seek(info.header_offset + 26)
    n, x = struct.unpack("<HH", f.read(4))
    at = info.header_offset + 30 + n + x
    f.seek(at)
    b = f.read(1)
    f.seek(at)
    f.write(bytes([b[0] ^ 1]))
PY
    run py_check "$BATS_PY/check_pt.py" "$MNT" "$FIX/dcp_single.manifest.json" \
        --src "$FIX/dcp_single" --file "$dir/x.pt" model/layers/0
    [ "$status" -eq 1 ]
    [[ "$output" == *"fails its CRC-32"* ]]
    [[ "$output" == *"bytes differ from the manifest"* ]]
}

@test "pt: a damaged key: its record reads EIO, the archive still opens, other views intact" {
    local src victim
    src=$(copy_fixture dcp_single_perfile)
    victim=$("$PY" "$BATS_PY/dcp_storage.py" "$src" | "$PY" -c '
import json, sys
print(json.load(sys.stdin)["model.embed.weight"][0][0])')
    truncate -s 100 "$src/$victim"
    mount_ckpt "$src"
    "$PY" - "$MNT" "$FIX/dcp_single_perfile.manifest.json" <<'PY'
import errno, hashlib, json, sys, zipfile
mnt, man = sys.argv[1], json.load(open(sys.argv[2]))
# the central directory reads (the damaged record's CRC is 0 there): the archive opens
z = zipfile.ZipFile(mnt + "/model.pt")
embed = [i for i in z.infolist() if i.CRC == 0 and i.file_size > 0 and "/data/" in i.filename]
assert len(embed) == 1 and embed[0].file_size == man["model.embed.weight"]["nbytes"], embed
try:
    z.read(embed[0].filename)
    raise SystemExit("the damaged record read")
except OSError as e:
    assert e.errno == errno.EIO, e
# (reads beside it may share its page-cache window and fail too, as with every view)
# a directory without the damaged key is untouched
z = zipfile.ZipFile(mnt + "/model/layers.pt")
assert z.testzip() is None
print("ok")
PY
    # the daemon is still serving
    cmp "$MNT/model/ints" <(cat "$MNT/model/ints")
}

@test "pt: concurrent random reads of fresh views (CRCs learnt while racing) equal a copy" {
    local dir
    dir=$(test_tmp)
    "$CKPTFS" cp "$FIX/dcp_dtensor_ws4:.ckptfs/model.pt" "$dir/ref.pt"
    mount_ckpt "$FIX/dcp_dtensor_ws4"
    "$PY" - "$MNT/.ckptfs/model.pt" "$dir/ref.pt" <<'PY'
import os, random, sys, threading, zipfile
view, ref = sys.argv[1], open(sys.argv[2], "rb").read()
errors = []
def reader(seed):
    rnd = random.Random(seed)
    fd = os.open(view, os.O_RDONLY | (os.O_DIRECT if seed % 2 else 0))
    try:
        for _ in range(200):
            off = rnd.randrange(0, len(ref))
            n = rnd.choice([1, 7, 64, 4096, 65536])
            if seed % 2:  # O_DIRECT: aligned
                off, n = off // 4096 * 4096, 4096
                import mmap
                buf = mmap.mmap(-1, n)
                got = os.preadv(fd, [buf], off)
                data = bytes(buf[:got])
            else:
                data = os.pread(fd, n, off)
            if data != ref[off:off + len(data)] or len(data) != min(n, len(ref) - off):
                errors.append((seed, off, n))
    finally:
        os.close(fd)
ts = [threading.Thread(target=reader, args=(s,)) for s in range(8)]
[t.start() for t in ts]
[t.join() for t in ts]
assert not errors, errors[:5]
assert zipfile.ZipFile(view).testzip() is None
print("ok")
PY
}
