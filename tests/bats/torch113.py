"""Real torch 1.13 (Debian 12's python3-torch, DCP at torch.distributed._shard.checkpoint) as an
independent producer and consumer of DCP checkpoints for tests/bats/torch113.bats.

usage:
  torch113.py gen OUTDIR          writes single/, single_perfile/, bytes_only/ (one process) and
                                  ws4/, ws4_perfile/ (4 ranks over gloo, ShardedTensors), each with
                                  NAME.manifest.json (check_manifest.py's format, from the
                                  tensors torch holds) and NAME.edits.json (which keys to edit)
  torch113.py bytes MOUNT CKPT    every bytes key of CKPT: torch.load of its file in MOUNT equals
                                  what torch's load_state_dict gives
  torch113.py edit MOUNT CKPT     the edits of CKPT.edits.json through MOUNT (an -o rw mount)
  torch113.py verify ORIG EDITED  torch 1.13 loads EDITED: the edited keys hold the new values,
                                  every other key its old one, properties (requires_grad...) and
                                  planner_data as they were
Prints one line per problem; exit status 1 if any.
"""
import dataclasses
import hashlib
import json
import os
import shutil
import sys

# torch 1.13's DCP does not import on Python 3.11: ShardedTensorMetadata has a dataclass field
# whose default is a TensorProperties instance, and 3.11 refuses unhashable defaults.  Giving
# TensorProperties identity hashing while the module loads is enough (torch never hashes it).
_dataclass = dataclasses.dataclass


def _tolerant_dataclass(cls=None, **kw):
    def wrap(c):
        c = _dataclass(c, **kw)
        if c.__name__ == "TensorProperties" and c.__hash__ is None:
            c.__hash__ = object.__hash__
        return c
    return wrap if cls is None else wrap(cls)


dataclasses.dataclass = _tolerant_dataclass
try:
    import torch  # noqa: E402
    import torch.distributed._shard.checkpoint as dcp  # noqa: E402
    from torch.distributed._shard.checkpoint.metadata import MetadataIndex  # noqa: E402
finally:
    dataclasses.dataclass = _dataclass
import numpy as np  # noqa: E402

torch.set_num_threads(1)
PROBLEMS = []


def problem(msg):
    PROBLEMS.append(msg)
    print("PROBLEM: " + msg, flush=True)


def raw_bytes(t):
    """A tensor's elements in C order, little-endian, as the mount must serve them."""
    t = t.detach().contiguous()
    if t.dtype == torch.bool:
        return t.to(torch.uint8).numpy().tobytes()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def dtype_name(dt):
    return str(dt).replace("torch.", "")


# ---- generation ----

def single_state():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 6, generator=g).requires_grad_(True)
    big = torch.arange(30, dtype=torch.float32).reshape(5, 6)
    return {
        "w": w,                                           # requires_grad=True
        "layer.weight": torch.randn(3, 4, generator=g),
        "layer.bias": torch.randn(3, generator=g),
        "bf": torch.randn(2, 5, generator=g).to(torch.bfloat16),
        "half": torch.randn(7, generator=g).to(torch.float16),
        "cplx": torch.randn(3, generator=g, dtype=torch.complex64),
        "mask": torch.tensor([True, False, True, True]),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.zeros(0, 4),
        "strided": big.t(),                               # transposed: not contiguous
        "ids": torch.arange(-3, 5, dtype=torch.int64),
        "step": 7,
        "name": "run-113",
        "lrs": [0.1, 0.01],
        "opt": {"betas": (0.9, 0.99), "eps": 1e-8},       # nested: one bytes entry in 1.13
        "sched": 3,                                       # also a directory: sched.bytes
        "sched.warmup": torch.tensor([0.5, 1.0]),
    }


def uneven_specs():
    from torch.distributed._shard.metadata import ShardMetadata
    from torch.distributed._shard.sharding_spec import EnumerableShardingSpec
    return EnumerableShardingSpec([
        ShardMetadata([0, 0], [3, 2], "rank:0/cpu"),
        ShardMetadata([0, 2], [3, 5], "rank:1/cpu"),
        ShardMetadata([3, 0], [2, 4], "rank:2/cpu"),
        ShardMetadata([3, 4], [2, 3], "rank:3/cpu"),
    ])


def ws4_full():
    return {
        "rows": torch.arange(8 * 3, dtype=torch.float32).reshape(8, 3) / 4,
        "cols": (torch.arange(3 * 8, dtype=torch.float32).reshape(3, 8) - 5).to(torch.bfloat16),
        "grid": torch.arange(5 * 7, dtype=torch.int32).reshape(5, 7) * 3,
        "uneven.w": torch.arange(10, dtype=torch.float64) + 0.5,   # 10 rows over 4 ranks: 3,3,3,1
    }


def ws4_worker(rank, out, port, perfile):
    import torch.distributed as dist
    from torch.distributed._shard import sharded_tensor
    from torch.distributed._shard.sharding_spec import ChunkShardingSpec
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank, world_size=4)
    full = ws4_full()
    places = ["rank:%d/cpu" % r for r in range(4)]

    def shard(t, spec):
        st = sharded_tensor.empty(spec, *t.shape, dtype=t.dtype)
        for s in st.local_shards():
            idx = tuple(slice(o, o + n) for o, n in zip(s.metadata.shard_offsets, s.metadata.shard_sizes))
            s.tensor.copy_(t[idx])
        return st

    sd = {
        "rows": shard(full["rows"], ChunkShardingSpec(dim=0, placements=places)),
        "cols": shard(full["cols"], ChunkShardingSpec(dim=1, placements=places)),
        "grid": shard(full["grid"], uneven_specs()),
        "uneven.w": shard(full["uneven.w"], ChunkShardingSpec(dim=0, placements=places)),
        "epoch": 3,
    }
    dcp.save_state_dict(sd, dcp.FileSystemWriter(out, single_file_per_rank=not perfile))
    dist.barrier()
    dist.destroy_process_group()


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_ws4(out, perfile):
    # fork, not spawn: the children start with torch already imported (a few seconds saved)
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    port = free_port()
    procs = [ctx.Process(target=ws4_worker, args=(r, out, port, perfile)) for r in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        if p.exitcode != 0:
            raise SystemExit("rank exited with %s" % p.exitcode)


def stored_payload(ckpt, md, fqn):
    info = md.storage_data[MetadataIndex(fqn)]
    with open(os.path.join(ckpt, info.relative_path), "rb") as f:
        f.seek(info.offset)
        return f.read(info.length)


def write_manifest(ckpt, tensors, edits):
    md = dcp.FileSystemReader(ckpt).read_metadata()
    man = {}
    for fqn, smd in md.state_dict_metadata.items():
        if hasattr(smd, "size"):
            t = tensors[fqn]
            b = raw_bytes(t)
            man[fqn] = {"kind": "tensor", "dtype": dtype_name(t.dtype), "shape": list(t.shape),
                        "nbytes": len(b), "sha256": hashlib.sha256(b).hexdigest(),
                        "chunks": len(smd.chunks)}
        else:
            b = stored_payload(ckpt, md, fqn)
            man[fqn] = {"kind": "bytes", "nbytes": len(b), "sha256": hashlib.sha256(b).hexdigest()}
    with open(ckpt + ".manifest.json", "w") as f:
        json.dump(man, f, indent=1, sort_keys=True)
    with open(ckpt + ".edits.json", "w") as f:
        json.dump(edits, f, indent=1)


def gen(outdir):
    os.makedirs(outdir, exist_ok=True)
    single_edits = {"patch": "w", "replace": "layer.bias", "unlink": "cplx",
                    "rename": ["bf", "bf_renamed"], "new": "added", "bytes": "step"}
    for name, per_rank in (("single", True), ("single_perfile", False)):
        out = os.path.join(outdir, name)
        sd = single_state()
        dcp.save_state_dict(sd, dcp.FileSystemWriter(out, single_file_per_rank=per_rank), no_dist=True)
        write_manifest(out, {k: v for k, v in sd.items() if torch.is_tensor(v)}, single_edits)
    # no tensor at all: a new key has no properties to follow but torch 1.13's
    dcp.save_state_dict({"step": 5, "name": "bytes only"}, dcp.FileSystemWriter(
        os.path.join(outdir, "bytes_only")), no_dist=True)
    ws4_edits = {"patch": "rows", "replace": "grid", "unlink": "cols",
                 "rename": ["uneven.w", "uneven.moved"], "new": "extra.bias", "bytes": "epoch"}
    for name, perfile in (("ws4", False), ("ws4_perfile", True)):
        out = os.path.join(outdir, name)
        run_ws4(out, perfile)
        write_manifest(out, ws4_full(), ws4_edits)


# ---- consumers ----

def load_all(ckpt):
    """Every key of ckpt as torch 1.13 loads it into plain tensors (one process)."""
    md = dcp.FileSystemReader(ckpt).read_metadata()
    sd = {}
    for fqn, smd in md.state_dict_metadata.items():
        sd[fqn] = torch.zeros(smd.size, dtype=smd.properties.dtype) if hasattr(smd, "size") else None
    dcp.load_state_dict(sd, dcp.FileSystemReader(ckpt), no_dist=True)
    return md, sd


def mount_path(mount, fqn, manifest):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import ckpt_names
    files, _ = ckpt_names.tree_layout(manifest)
    return os.path.join(mount, {v: k for k, v in files.items()}[fqn])


def same_value(a, b):
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.dtype == b.dtype and \
            a.shape == b.shape and raw_bytes(a) == raw_bytes(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b


def check_bytes(mount, ckpt):
    manifest = json.load(open(ckpt + ".manifest.json"))
    _, sd = load_all(ckpt)
    for fqn, e in manifest.items():
        if e["kind"] != "bytes":
            continue
        got = torch.load(mount_path(mount, fqn, manifest))
        if not same_value(got, sd[fqn]):
            problem("%s: torch.load of its file gives %r, load_state_dict %r" % (fqn, got, sd[fqn]))


def new_values(md, sd, edits):
    """The values the edits write: the same functions in edit and verify."""
    p = sd[edits["patch"]]
    patch = torch.full((1,), 42, dtype=p.dtype)
    r = sd[edits["replace"]]
    repl = (torch.arange(r.numel()) % 7 - 3).to(r.dtype).reshape(r.shape)
    new = np.arange(6, dtype=np.float32).reshape(2, 3) * -1.5
    return patch, repl, new


def edit(mount, ckpt):
    edits = json.load(open(ckpt + ".edits.json"))
    manifest = json.load(open(ckpt + ".manifest.json"))
    md, sd = load_all(ckpt)
    patch, repl, new = new_values(md, sd, edits)
    # bytes of one element in the middle of the tensor (crosses no file boundary but
    # lands in one shard of a sharded tensor)
    p = sd[edits["patch"]]
    at = (p.numel() // 2) * p.element_size()
    with open(mount_path(mount, edits["patch"], manifest), "r+b") as f:
        f.seek(at)
        f.write(raw_bytes(patch))
    # cp of a same-sized file over a tensor
    tmp = os.path.join(os.path.dirname(mount.rstrip("/")), "replacement.bin")
    with open(tmp, "wb") as f:
        f.write(raw_bytes(repl))
    shutil.copyfile(tmp, mount_path(mount, edits["replace"], manifest))
    os.unlink(tmp)
    # a new key from an npy file
    new_path = os.path.join(mount, *edits["new"].split(".")) + ".npy"
    os.makedirs(os.path.dirname(new_path), exist_ok=True)
    np.save(new_path, new)
    # a new torch.save payload over a non-tensor key
    with open(mount_path(mount, edits["bytes"], manifest), "wb") as f:
        torch.save({"replaced": 99}, f)
    os.unlink(mount_path(mount, edits["unlink"], manifest))
    src, dst = edits["rename"]
    dst_path = os.path.join(mount, *dst.split("."))
    os.makedirs(os.path.dirname(dst_path), exist_ok=True)
    os.rename(mount_path(mount, src, manifest), dst_path)


def verify(orig, edited):
    edits = json.load(open(orig + ".edits.json"))
    md0, sd0 = load_all(orig)
    try:
        md1, sd1 = load_all(edited)
    except Exception as e:  # the point of the test: torch 1.13 must load it
        problem("torch 1.13 cannot load the edited checkpoint: %s: %s" % (type(e).__name__, e))
        return
    patch, repl, new = new_values(md0, sd0, edits)
    src, dst = edits["rename"]
    want = dict(sd0)
    del want[edits["unlink"]]
    want[dst] = want.pop(src)
    p = want[edits["patch"]].clone()
    p.view(-1)[p.numel() // 2] = patch[0]
    want[edits["patch"]] = p
    want[edits["replace"]] = repl
    want[edits["new"]] = torch.from_numpy(new)
    want[edits["bytes"]] = {"replaced": 99}
    if set(sd1) != set(want):
        problem("keys %s, want %s" % (sorted(sd1), sorted(want)))
    for fqn in sorted(set(sd1) & set(want)):
        if not same_value(sd1[fqn], want[fqn]):
            problem("%s: loads %r, want %r" % (fqn, sd1[fqn], want[fqn]))
    # what was not edited is as it was: properties, sizes, the class of every entry
    for fqn, m1 in md1.state_dict_metadata.items():
        old = src if fqn == dst else fqn
        m0 = md0.state_dict_metadata.get(old)
        if m0 is None:
            if hasattr(m1, "properties") and m1.properties.requires_grad:
                problem("%s: a new key needs no grad" % fqn)
            continue
        if type(m0) is not type(m1):
            problem("%s: %s became %s" % (fqn, type(m0).__name__, type(m1).__name__))
        elif hasattr(m0, "properties") and m0.properties != m1.properties:
            problem("%s: properties %s became %s" % (fqn, m0.properties, m1.properties))
        elif hasattr(m0, "size") and m0.size != m1.size:
            problem("%s: size %s became %s" % (fqn, m0.size, m1.size))
    if md0.planner_data != md1.planner_data:
        problem("planner_data %r became %r" % (md0.planner_data, md1.planner_data))
    if sd1.get("w") is not None and not md1.state_dict_metadata["w"].properties.requires_grad:
        problem("w: requires_grad was lost")


def main(argv):
    if len(argv) == 3 and argv[1] == "gen":
        gen(argv[2])
    elif len(argv) == 4 and argv[1] == "bytes":
        check_bytes(argv[2], argv[3])
    elif len(argv) == 4 and argv[1] == "edit":
        edit(argv[2], argv[3])
    elif len(argv) == 4 and argv[1] == "verify":
        verify(argv[2], argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 1 if PROBLEMS else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
