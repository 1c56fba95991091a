#!/usr/bin/env bats
# The benchmark's checkpoints (scripts/gen_dcp.py, written without torch) are real DCP
# checkpoints: they mount, and every key reads back as the generator hashed it.

load helpers

VERIFY=scripts/bench_verify_dcp.py

teardown() {
    unmount_ckpt
}


# check_sums MNT SUMS: every key's file in the mount hashes to the generator's sha256.
check_sums() {
    local mnt=$1 sums=$2 fqn want got n=0
    while read -r fqn want; do
        got=$(sha256sum <"$mnt/${fqn//.//}" | cut -c1-64) || {
            echo "cannot read $fqn" >&2
            return 1
        }
        if [ "$got" != "$want" ]; then
            echo "$fqn: mount gives $got, generator wrote $want" >&2
            return 1
        fi
        n=$((n + 1))
    done < <("$PY" -c 'import json, sys; [print(k, v) for k, v in sorted(json.load(open(sys.argv[1])).items())]' "$sums")
    [ "$n" -gt 0 ] || { echo "no keys in $sums" >&2; return 1; }
}

# mount_and_check LAYOUT DTYPE
mount_and_check() {
    local dir
    dir=$(test_tmp)
    gen "$dir/ckpt" --size 96K --tensors 3 --layout "$1" --dtype "$2" --seed 5
    mount_ckpt "$dir/ckpt"
    check_sums "$MNT" "$dir/ckpt.sha256.json"
}

@test "gen_dcp: the verifier reads real torch checkpoints (so it can judge the generator)" {
    for name in dcp_single dcp_zstd dcp_dtensor_ws4 dcp_fsdp2_optim; do
        run py_check "$VERIFY" "$FIX/$name" "$FIX/$name.manifest.json"
        [ "$status" -eq 0 ] || { printf '%s\n' "$output" >&2; false; }
    done
}

@test "gen_dcp: every layout reads back through the verifier, same tensors in each" {
    local dir layout
    dir=$(test_tmp)
    for layout in single row8 col8 grid4x2 zstd; do
        gen "$dir/$layout" --size 96K --tensors 3 --layout "$layout" --dtype bfloat16
        run py_check "$VERIFY" "$dir/$layout"
        [ "$status" -eq 0 ] || { printf '%s\n' "$output" >&2; false; }
    done
    # a tensor's bytes depend only on seed, index, shape and dtype, not on how it is sharded
    for layout in row8 col8 grid4x2 zstd; do
        diff <(grep -v '"step"' "$dir/single.sha256.json") <(grep -v '"step"' "$dir/$layout.sha256.json")
    done
}

@test "gen_dcp: single layout (float32) mounts and matches its sha256" {
    mount_and_check single float32
}

@test "gen_dcp: row8 layout (bfloat16, 8 ranks by rows) mounts and matches its sha256" {
    mount_and_check row8 bfloat16
}

@test "gen_dcp: col8 layout (float16, 8 ranks by columns) mounts and matches its sha256" {
    mount_and_check col8 float16
}

@test "gen_dcp: grid4x2 layout (2-D mesh) mounts and matches its sha256" {
    mount_and_check grid4x2 float32
}

@test "gen_dcp: zstd layout (stream.zstd/1 items) mounts and matches its sha256" {
    mount_and_check zstd bfloat16
}

@test "gen_dcp: --keys checkpoint (many small tensors) mounts and matches its sha256" {
    local dir
    dir=$(test_tmp)
    gen "$dir/ckpt" --keys 250
    mount_ckpt "$dir/ckpt"
    check_sums "$MNT" "$dir/ckpt.sha256.json"
    [ "$(find "$MNT" -type f | wc -l)" -eq 251 ]
}

@test "gen_dcp: 10,000 row chunks per tensor, in order and shuffled, read whole and in odd pieces" {
    # small items resolve in batches whose bytes then serve the reads (chunk_reader.c):
    # whole reads, reads of 12,345 bytes (pieces that start and end inside items) and a
    # second mount's reads in reverse order must all give the generator's bytes
    local dir layout fqn want got
    dir=$(test_tmp)
    for layout in row10k row10k_shuffled; do
        gen "$dir/$layout" --size 4M --tensors 2 --cols 8 --layout "$layout" --seed 3
        mount_ckpt "$dir/$layout"
        check_sums "$MNT" "$dir/$layout.sha256.json"
        unmount_ckpt
        mount_ckpt "$dir/$layout"
        while read -r fqn want; do
            got=$(dd if="$MNT/${fqn//.//}" bs=12345 status=none | sha256sum | cut -c1-64)
            [ "$got" = "$want" ] || { echo "$layout $fqn: pieces give $got, want $want" >&2; false; }
        done < <("$PY" -c 'import json, sys; [print(k, v) for k, v in sorted(json.load(open(sys.argv[1])).items(), reverse=True)]' "$dir/$layout.sha256.json")
        unmount_ckpt
    done
}
