#!/usr/bin/env bats
# SPEC "Views for frameworks": PATH.npy, DIR.safetensors, /.ckptfs/model.safetensors,
# /.ckptfs/metadata.json (answered by lookup), and -o npy (listed).

load helpers

teardown() {
    unmount_ckpt
}

check_views() {
    local name=$1
    shift
    py_check "$BATS_PY/check_views.py" "$MNT" "$FIX/$name.manifest.json" "$@"
}

@test "views: PATH.npy loads with numpy mmap_mode='r' (dcp_single, every dtype)" {
    mount_ckpt "$FIX/dcp_single"
    check_views dcp_single --npy
}

@test "views: PATH.npy of sharded tensors (dcp_dtensor_ws4)" {
    mount_ckpt "$FIX/dcp_dtensor_ws4"
    check_views dcp_dtensor_ws4 --npy
}

@test "views: PATH.npy of zstd items and safetensors sources" {
    mount_ckpt "$FIX/dcp_zstd"
    check_views dcp_zstd --npy
    unmount_ckpt
    mount_ckpt "$FIX/st_single/model.safetensors"
    check_views st_single --npy
    unmount_ckpt
    mount_ckpt "$FIX/hf_llama_sharded"
    check_views hf_llama_sharded --npy
}

@test "views: -o npy lists NAME.npy for tensors (dcp_single)" {
    mount_ckpt "$FIX/dcp_single" -o npy
    check_mounted dcp_single --npy-names
    check_views dcp_single --npy-listed
}

@test "views: -o npy lists NAME.npy for tensors (dcp_fsdp2_optim)" {
    mount_ckpt "$FIX/dcp_fsdp2_optim" -o npy
    check_mounted dcp_fsdp2_optim --npy-names
    check_views dcp_fsdp2_optim --npy-listed
}

@test "views: DIR.safetensors and /.ckptfs/model.safetensors (dcp_single)" {
    mount_ckpt "$FIX/dcp_single"
    check_views dcp_single --safetensors
}

@test "views: DIR.safetensors and /.ckptfs/model.safetensors (dcp_dtensor_ws4)" {
    mount_ckpt "$FIX/dcp_dtensor_ws4"
    check_views dcp_dtensor_ws4 --safetensors
}

@test "views: DIR.safetensors and /.ckptfs/model.safetensors (dcp_fsdp2_optim)" {
    mount_ckpt "$FIX/dcp_fsdp2_optim"
    check_views dcp_fsdp2_optim --safetensors
}

@test "views: DIR.safetensors and /.ckptfs/model.safetensors (hf_llama_sharded)" {
    mount_ckpt "$FIX/hf_llama_sharded"
    check_views hf_llama_sharded --safetensors
}

@test "views: /.ckptfs/metadata.json names every key (dcp_single, dcp_dtensor_ws4, dcp_hf)" {
    mount_ckpt "$FIX/dcp_single"
    check_views dcp_single --metadata-json
    unmount_ckpt
    mount_ckpt "$FIX/dcp_dtensor_ws4"
    check_views dcp_dtensor_ws4 --metadata-json
    unmount_ckpt
    mount_ckpt "$FIX/dcp_hf"
    check_views dcp_hf --metadata-json
}

@test "views: metadata.json works with jq-style tools (python json)" {
    mount_ckpt "$FIX/dcp_fsdp2_optim"
    "$PY" -m json.tool "$MNT/.ckptfs/metadata.json" >/dev/null
}

@test "views: are not listed by default, and a real key wins over a view name" {
    local dir
    dir=$(test_tmp)
    # Keys 'w' and 'w.npy' at the root with -o flat: 'w.npy' is the real key, not a view.
    "$PY" - "$dir/real.safetensors" <<'PY'
import sys
sys.path.insert(0, "tests/bats")
import st_format
blob = st_format.build([("w", "F32", [2], b"\x00\x00\x80?\x00\x00\x00@"),
                        ("w.npy", "U8", [3], b"abc")])
open(sys.argv[1], "wb").write(blob)
PY
    mount_ckpt "$dir/real.safetensors" -o flat
    [ "$(cat "$MNT/w.npy")" = abc ]
    # shellcheck disable=SC2012  # what ls shows is the point
    [ "$(ls "$MNT" | tr '\n' ' ')" = "w w.npy " ]
    [ ! -e "$MNT/.ckptfs/no_such_view" ]
    unmount_ckpt
    mount_ckpt "$FIX/dcp_single"
    # shellcheck disable=SC2012
    [ "$(ls -A "$MNT" | tr '\n' ' ')" = "meta model step " ]
    [ -f "$MNT/model/embed/weight.npy" ]
    [ -f "$MNT/model.safetensors" ]
}
