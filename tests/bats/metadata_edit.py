#!/usr/bin/python3
"""Rewrites a DCP checkpoint's .metadata with one change, without torch.

usage: metadata_edit.py DIR EDIT [ARGS...]
  same                          re-pickle unchanged (the round trip itself)
  relpath FQN PATH              every item of FQN now lives in PATH
  chunk-size FQN INDEX DIM N    chunk INDEX of FQN gets size N in dimension DIM
  chunk-offset FQN INDEX DIM N  chunk INDEX of FQN gets offset N in dimension DIM
  item-range FQN OFFSET LENGTH  the first item of FQN gets this byte range in its file
  planner-none FQN              planner_data[FQN] becomes None
  planner-drop FQN              planner_data loses FQN's entry
  td-none                       every _StorageInfo spells out transform_descriptors=None
  extra-field NAME VALUE        Metadata gains field NAME = the string VALUE (a newer torch)

The pickle is loaded with stand-in classes that remember each global's module and name and
pickled again naming the same globals (protocol 4 with NEWOBJ/BUILD/REDUCE as torch writes),
so any field can be changed while every other value stays as torch wrote it.
"""
import copyreg
import os
import pickle
import sys
import types

_STANDINS = {}


def _module(name):
    mod = sys.modules.get(name)
    if mod is None:
        mod = types.ModuleType(name)
        sys.modules[name] = mod
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(_module(parent), child, mod)
    return mod


class StandIn:
    """An instance of a torch class: built by NEWOBJ (+ BUILD) or called by REDUCE."""

    _called = False

    def __init__(self, *args):
        self._called = True
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def __reduce_ex__(self, protocol):
        if self._called:
            return (type(self), self.args) + ((self.state,) if hasattr(self, "state") else ())
        return (copyreg.__newobj__, (type(self),), getattr(self, "state", None))


def standin(module, name):
    key = (module, name)
    if key not in _STANDINS:
        cls = type(name, (StandIn,), {"__module__": module, "__qualname__": name})
        mod = _module(module)
        if hasattr(mod, name) and not isinstance(getattr(mod, name), type):
            raise ValueError("cannot stand in for %s.%s" % key)
        setattr(mod, name, cls)
        _STANDINS[key] = cls
    return _STANDINS[key]


class Loader(pickle.Unpickler):
    def find_class(self, module, name):
        if module.split(".")[0] == "torch":
            return standin(module, name)
        return super().find_class(module, name)


def field(obj, name):
    st = obj.state
    if isinstance(st, tuple) and len(st) == 2:  # (None, slots) dataclasses
        st = st[1]
    return st[name]


def set_field(obj, name, value):
    st = obj.state
    if isinstance(st, tuple) and len(st) == 2:
        st = st[1]
    st[name] = value


def size_tuple(size):
    return size.args[0]


def set_size(size, values):
    size.args = (tuple(values),)


def items_of(md, fqn):
    return [(k, v) for k, v in field(md, "storage_data").items() if field(k, "fqn") == fqn]


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    path = os.path.join(argv[1], ".metadata")
    with open(path, "rb") as f:
        md = Loader(f).load()
    edit, args = argv[2], argv[3:]
    sdm = field(md, "state_dict_metadata")
    if edit == "same":
        pass
    elif edit == "relpath":
        fqn, rel = args
        items = items_of(md, fqn)
        if not items:
            raise SystemExit("no items for %s" % fqn)
        for _, info in items:
            set_field(info, "relative_path", rel)
    elif edit in ("chunk-size", "chunk-offset"):
        fqn, index, dim, n = args[0], int(args[1]), int(args[2]), int(args[3])
        chunk = field(sdm[fqn], "chunks")[index]
        name = "sizes" if edit == "chunk-size" else "offsets"
        values = list(size_tuple(field(chunk, name)))
        values[dim] = n
        set_size(field(chunk, name), values)
        if edit == "chunk-offset":
            # the storage_data key names the chunk by its offsets: keep them in step
            for k, _ in items_of(md, fqn):
                if field(k, "index") == index:
                    set_size(field(k, "offset"), values)
    elif edit == "item-range":
        fqn, off, length = args[0], int(args[1]), int(args[2])
        _, info = items_of(md, fqn)[0]
        set_field(info, "offset", off)
        set_field(info, "length", length)
    elif edit == "planner-none":
        field(md, "planner_data")[args[0]] = None
    elif edit == "planner-drop":
        del field(md, "planner_data")[args[0]]
    elif edit == "td-none":
        for info in field(md, "storage_data").values():
            set_field(info, "transform_descriptors", None)
    elif edit == "extra-field":
        set_field(md, args[0], args[1])
    else:
        raise SystemExit(__doc__)
    os.chmod(path, 0o644)
    with open(path, "wb") as f:
        pickle.dump(md, f, protocol=4)


if __name__ == "__main__":
    main(sys.argv)
