#!/usr/bin/env bats
# SPEC "Views for frameworks": /.ckptfs/hf, the HuggingFace model directory, with
# -o hf_shard, hf_prefix and hf_dir; checked by check_hf.py (st_format.py's reader).

load helpers

teardown() {
    unmount_ckpt
}

check_hf() {
    local name=$1
    shift
    py_check "$BATS_PY/check_hf.py" "$MNT" "$FIX/$name.manifest.json" "$@"
}

# sha256 of every file of MNT/.ckptfs/hf, one line each, names included
hf_digest() {
    (cd "$MNT/.ckptfs/hf" && sha256sum -- *)
}

@test "hf: every fixture, hf_shard=512: several shards, index consistent, bytes = manifest" {
    local name
    for name in dcp_single dcp_single_perfile dcp_zstd dcp_dtensor_ws4 dcp_dtensor_ws4_perfile \
        dcp_fsdp2_optim dcp_hf hf_llama_sharded; do
        mount_ckpt "$FIX/$name" -o hf_shard=512
        check_hf "$name" --shard 512 --min-shards 2
        unmount_ckpt
    done
    mount_ckpt "$FIX/st_single/model.safetensors" -o hf_shard=512
    check_hf st_single --shard 512 --min-shards 2
}

@test "hf: default hf_shard gives one model.safetensors and no index" {
    mount_ckpt "$FIX/dcp_single"
    check_hf dcp_single
    [ -f "$MNT/.ckptfs/hf/model.safetensors" ]
    [ ! -e "$MNT/.ckptfs/hf/model.safetensors.index.json" ]
}

@test "hf: a tensor larger than hf_shard gets a shard of its own" {
    # hf_llama_sharded's embeddings are far above 100 bytes: every tensor alone
    mount_ckpt "$FIX/hf_llama_sharded" -o hf_shard=100
    check_hf hf_llama_sharded --shard 100
    local n
    n=$(ls "$MNT/.ckptfs/hf" | grep -c '^model-.*safetensors$')
    [ "$n" -eq 21 ]
}

@test "hf: shards are stable: same names and bytes across mounts and storage layouts" {
    mount_ckpt "$FIX/dcp_single" -o hf_shard=3K
    local a b c
    a=$(hf_digest)
    unmount_ckpt
    mount_ckpt "$FIX/dcp_single" -o hf_shard=3K
    b=$(hf_digest)
    unmount_ckpt
    # the same tensors saved one file per item, and zstd-compressed
    mount_ckpt "$FIX/dcp_single_perfile" -o hf_shard=3K
    c=$(hf_digest)
    unmount_ckpt
    [ "$a" = "$b" ]
    [ "$a" = "$c" ]
    mount_ckpt "$FIX/dcp_zstd" -o hf_shard=3K
    [ "$a" = "$(hf_digest)" ]
    unmount_ckpt
    mount_ckpt "$FIX/dcp_dtensor_ws4" -o hf_shard=3K
    a=$(hf_digest)
    unmount_ckpt
    mount_ckpt "$FIX/dcp_dtensor_ws4_perfile" -o hf_shard=3K
    [ "$a" = "$(hf_digest)" ]
}

@test "hf: hf_prefix=model selects model.* and strips the prefix" {
    mount_ckpt "$FIX/dcp_fsdp2_optim" -o hf_prefix=model,hf_shard=1K
    check_hf dcp_fsdp2_optim --prefix model --shard 1024 --min-shards 2
    unmount_ckpt
    mount_ckpt "$FIX/hf_llama_sharded" -o hf_prefix=model
    check_hf hf_llama_sharded --prefix model
    # lm_head.weight is not under model.
    run grep -c lm_head "$MNT/.ckptfs/hf/model.safetensors"
    [ "$output" = 0 ]
}

@test "hf: hf_dir adds config and tokenizer files; generated names win" {
    local d
    d=$(test_tmp)
    mkdir "$d/model" "$d/model/sub"
    echo '{"model_type": "llama"}' >"$d/model/config.json"
    head -c 100000 /dev/urandom >"$d/model/tokenizer.model"
    echo '{}' >"$d/model/tokenizer_config.json"
    echo stale >"$d/model/model.safetensors"
    echo stale >"$d/model/model-00001-of-00009.safetensors"
    echo stale >"$d/model/model.safetensors.index.json"
    echo hidden >"$d/model/.gitattributes"
    echo inner >"$d/model/sub/x"
    ln -s config.json "$d/model/config_link.json"
    mount_ckpt "$FIX/dcp_single" -o "hf_dir=$d/model,hf_shard=3K"
    check_hf dcp_single --shard 3072 --min-shards 2 --extra "$d/model"
    cmp "$d/model/tokenizer.model" "$MNT/.ckptfs/hf/tokenizer.model"
    cmp "$d/model/config.json" "$MNT/.ckptfs/hf/config_link.json"
    [ ! -e "$MNT/.ckptfs/hf/sub" ]
    [ ! -e "$MNT/.ckptfs/hf/.gitattributes" ]
    [ ! -e "$MNT/.ckptfs/hf/model-00001-of-00009.safetensors" ]
    # the files are opened at mount: a later change of DIR's names shows nothing new
    rm "$d/model/config.json"
    echo new >"$d/model/added.json"
    [ -f "$MNT/.ckptfs/hf/config.json" ]
    [ ! -e "$MNT/.ckptfs/hf/added.json" ]
}

@test "hf: hf_dir is confined: a symlink out of it, or a missing DIR, refuses the mount" {
    local d
    d=$(test_tmp)
    mkdir "$d/model"
    echo '{}' >"$d/model/config.json"
    ln -s /etc/passwd "$d/model/tokenizer.json"
    mkdir "$d/mnt"
    run "$CKPTFS" -o "hf_dir=$d/model" "$FIX/dcp_single" "$d/mnt"
    [ "$status" -eq 1 ]
    [ "${#lines[@]}" -eq 1 ]
    [[ "$output" == *"tokenizer.json"*"outside hf_dir"* ]]
    run mountpoint -q "$d/mnt"
    [ "$status" -ne 0 ]
    run "$CKPTFS" -o "hf_dir=$d/nope" "$FIX/dcp_single" "$d/mnt"
    [ "$status" -eq 1 ]
    [[ "$output" == *"hf_dir"*"No such file"* ]]
    run "$CKPTFS" -o hf_shard=0 "$FIX/dcp_single" "$d/mnt"
    [ "$status" -eq 1 ]
    [[ "$output" == *"hf_shard=0"* ]]
}

@test "hf: ls -l and cp -r of /.ckptfs/hf give the same directory" {
    mount_ckpt "$FIX/dcp_dtensor_ws4" -o hf_shard=2K
    local d
    d=$(test_tmp)
    ls -l "$MNT/.ckptfs" | grep -q ' hf$'
    ls -l "$MNT/.ckptfs/hf" >"$d/ls"
    grep -q 'model.safetensors.index.json' "$d/ls"
    cp -r "$MNT/.ckptfs/hf" "$d/out"
    diff -r "$MNT/.ckptfs/hf" "$d/out"
    unmount_ckpt
    # the copy is a sharded safetensors directory with an index: mounted as a source, it
    # holds the checkpoint's tensors (its bytes keys were left out of the view)
    "$PY" -c 'import json, sys
m = json.load(open(sys.argv[1]))
json.dump({k: {f: x for f, x in v.items() if f != "chunks"}
           for k, v in m.items() if v["kind"] == "tensor"}, open(sys.argv[2], "w"))' \
        "$FIX/dcp_dtensor_ws4.manifest.json" "$d/tensors.json"
    mount_ckpt "$d/out"
    py_check "$BATS_PY/check_manifest.py" "$MNT" "$d/tensors.json" --src "$d/out"
}
