#!/usr/bin/python3
"""Checks that a commit kept what it did not change of a DCP `.metadata`, without torch.

usage: metadata_kept.py OLD_DIR NEW_DIR [--changed FQN,...] [--new FQN,...] [--removed FQN,...]

Both pickles are read with Python's own unpickler, every global replaced by a stand-in that
records its module, name, constructor arguments and BUILD state (no code of the pickle runs),
and compared as plain values:
  - the Metadata class, its fields and their order, and every field ckptfs does not rebuild
    (version, fields of newer torch) are equal; storage_meta is equal but for a new save_id;
  - every old key that is not --removed has an equal state_dict_metadata entry (properties,
    size, chunks) and an equal planner_data entry (or none where it had none); a key that is not
    --changed keeps the storage of every chunk;
  - --new keys use the class paths of the old keys and a planner_data entry shaped like theirs
    (or none, or None: a renamed key whose entry was so);
  - the new pickle names no global the old one did not, apart from torch dtypes.
Prints one line per problem; exit status 1 if any.
"""
import argparse
import os
import pickle
import sys


class Obj:
    """What a stand-in class leaves behind: enough to compare two pickles by value."""

    def __init__(self, module, name, args):
        self.module, self.name, self.args, self.state = module, name, args, None

    def key(self):
        return ("obj", self.module, self.name, norm(self.args), norm(self.state))


def norm(v):
    if isinstance(v, type) and hasattr(v, "ckpt_global"):
        return ("global",) + v.ckpt_global   # a global used as a value (a dtype)
    if isinstance(v, Obj):
        return v.key()
    if isinstance(v, dict):
        return ("dict", tuple((norm(k), norm(x)) for k, x in v.items()))
    if isinstance(v, list):
        return ("list", tuple(norm(x) for x in v))
    if isinstance(v, tuple):
        return ("tuple", tuple(norm(x) for x in v))
    return v


class Unpickler(pickle.Unpickler):
    def __init__(self, f):
        super().__init__(f)
        self.globals = set()

    def find_class(self, module, name):
        self.globals.add((module, name))

        class Standin:
            # REDUCE calls it, NEWOBJ calls cls.__new__(cls, *args): both give an Obj
            ckpt_global = (module, name)

            def __new__(cls, *args):
                return Obj(module, name, args)
        return Standin


def setstate(obj, state):
    obj.state = state


Obj.__setstate__ = setstate


def load(d):
    with open(os.path.join(d, ".metadata"), "rb") as f:
        u = Unpickler(f)
        return u.load(), u.globals


def fields(o):
    return o.state if isinstance(o, Obj) and isinstance(o.state, dict) else {}


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--changed", default="")
    ap.add_argument("--new", dest="added", default="")
    ap.add_argument("--removed", default="")
    a = ap.parse_args(argv[1:])
    split = lambda s: set(x for x in s.split(",") if x)  # noqa: E731
    changed, added, removed = split(a.changed), split(a.added), split(a.removed)
    probs = []
    (m0, g0), (m1, g1) = load(a.old), load(a.new)
    if (m0.module, m0.name) != (m1.module, m1.name):
        probs.append("Metadata class %s.%s became %s.%s" % (m0.module, m0.name, m1.module, m1.name))
    f0, f1 = fields(m0), fields(m1)
    if list(f0) != list(f1):
        probs.append("Metadata fields %s became %s" % (list(f0), list(f1)))
    for name in f0:
        if name in ("state_dict_metadata", "planner_data", "storage_data", "storage_meta"):
            continue
        if norm(f0[name]) != norm(f1.get(name)):
            probs.append("field %s: %r became %r" % (name, norm(f0[name]), norm(f1.get(name))))
    sm0, sm1 = f0.get("storage_meta"), f1.get("storage_meta")
    if isinstance(sm0, Obj):
        s0, s1 = dict(fields(sm0)), dict(fields(sm1))
        id0, id1 = s0.pop("save_id", None), s1.pop("save_id", None)
        if norm(s0) != norm(s1) or (sm0.module, sm0.name) != (getattr(sm1, "module", None),
                                                               getattr(sm1, "name", None)):
            probs.append("storage_meta %r became %r" % (norm(sm0), norm(sm1)))
        if id0 is not None and id0 == id1:
            probs.append("storage_meta.save_id was not renewed")
    elif norm(sm0) != norm(sm1):
        probs.append("storage_meta %r became %r" % (norm(sm0), norm(sm1)))

    sdm0, sdm1 = f0.get("state_dict_metadata", {}), f1.get("state_dict_metadata", {})
    want = (set(sdm0) - removed) | added
    if set(sdm1) != want:
        probs.append("keys %s, want %s" % (sorted(sdm1), sorted(want)))
    for fqn in sorted(set(sdm0) - removed):
        if fqn in sdm1 and norm(sdm0[fqn]) != norm(sdm1[fqn]):
            probs.append("%s: state_dict_metadata entry %r became %r" % (fqn, norm(sdm0[fqn]), norm(sdm1[fqn])))
    classes0 = {(v.module, v.name) for v in sdm0.values() if isinstance(v, Obj)}
    for fqn in sorted(added & set(sdm1)):
        v = sdm1[fqn]
        if (v.module, v.name) not in classes0:
            probs.append("%s: new key's class %s.%s is none the old keys use" % (fqn, v.module, v.name))
        p0 = [fields(x).get("properties") for x in sdm0.values() if isinstance(fields(x).get("properties"), Obj)]
        p1 = fields(v).get("properties")
        if p0 and (not isinstance(p1, Obj) or (p1.module, p1.name) != (p0[0].module, p0[0].name)):
            probs.append("%s: its TensorProperties class differs from the old keys'" % fqn)

    pd0, pd1 = f0.get("planner_data"), f1.get("planner_data")
    if isinstance(pd0, dict):
        for fqn in sorted(set(sdm0) - removed):
            if norm(pd0.get(fqn, "<absent>")) != norm(pd1.get(fqn, "<absent>")):
                probs.append("%s: planner_data %r became %r" % (fqn, pd0.get(fqn, "<absent>"),
                                                                pd1.get(fqn, "<absent>")))
        shapes0 = {type(x) for x in pd0.values()}
        for fqn in sorted(added):
            e = pd1.get(fqn)
            if e is None:
                continue  # no entry or None: what a renamed key without a path keeps
            if pd0 and (type(e) not in shapes0 or ".".join(str(x) for x in e) != fqn):
                probs.append("%s: new planner_data entry %r is not shaped like the others" % (fqn, e))
    elif norm(pd0) != norm(pd1):
        probs.append("planner_data %r became %r" % (norm(pd0), norm(pd1)))

    def storage(sd):
        out = {}
        for k, v in (sd or {}).items():
            fqn = fields(k).get("fqn")
            out.setdefault(fqn, {})[norm(fields(k).get("offset"))] = (norm(k), norm(v))
        return out
    st0, st1 = storage(f0.get("storage_data")), storage(f1.get("storage_data"))
    for fqn in sorted(set(st0) - removed - changed):
        if st0[fqn] != st1.get(fqn):
            probs.append("%s: storage %r became %r" % (fqn, st0[fqn], st1.get(fqn)))
    for fqn in sorted(changed):
        if set(st0.get(fqn, {})) != set(st1.get(fqn, {})):
            probs.append("%s: its chunks changed" % fqn)
        cls0 = {v[1][1:3] for v in st0.get(fqn, {}).values()}
        cls1 = {v[1][1:3] for v in st1.get(fqn, {}).values()}
        if cls0 != cls1:
            probs.append("%s: storage classes %s became %s" % (fqn, cls0, cls1))

    extra = {g for g in g1 - g0 if g[0] != "torch"}
    if extra:
        probs.append("globals the old metadata did not name: %s" % sorted(extra))
    for p in probs:
        print("PROBLEM: " + (p if len(p) < 600 else p[:600] + "..."))
    return 1 if probs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
