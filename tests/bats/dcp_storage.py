"""Which data files and byte ranges hold each key of a DCP checkpoint.

An independent reader of `.metadata` for the integration tests (no torch here): Python's
own unpickler with every global replaced by a stub class that records its constructor
arguments and its BUILD state, so nothing of torch is needed and no code of the pickle runs.

usage as a script: dcp_storage.py CKPT_DIR  -> JSON {fqn: [[relative_path, offset, length], ...]}
"""
import json
import pickle
import sys


class _Stub:
    qualname = "?"

    def __init__(self, *args, **kwargs):
        self.args = args
        self.state = None

    def __setstate__(self, state):
        self.state = state


class _StubUnpickler(pickle.Unpickler):
    def __init__(self, f):
        super().__init__(f)
        self._classes = {}

    def find_class(self, module, name):
        key = module + "." + name
        if key not in self._classes:
            self._classes[key] = type(name, (_Stub,), {"qualname": key})
        return self._classes[key]

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(".metadata has no persistent ids")


def _field(obj, name):
    state = obj.state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
        state = {**(state[0] or {}), **state[1]}  # (dict, slots) form
    if not isinstance(state, dict):
        raise ValueError("%s has no field %s" % (obj.qualname, name))
    return state.get(name)


def load_metadata(ckpt_dir):
    with open(ckpt_dir + "/.metadata", "rb") as f:
        return _StubUnpickler(f).load()


def items_by_fqn(ckpt_dir):
    """{fqn: [(relative_path, offset, length), ...]} for every item of the checkpoint."""
    meta = load_metadata(ckpt_dir)
    out = {}
    for index, info in _field(meta, "storage_data").items():
        fqn = _field(index, "fqn")
        out.setdefault(fqn, []).append((_field(info, "relative_path"),
                                        int(_field(info, "offset")),
                                        int(_field(info, "length"))))
    for fqn in _field(meta, "state_dict_metadata"):
        out.setdefault(fqn, [])
    return out


if __name__ == "__main__":
    json.dump(items_by_fqn(sys.argv[1]), sys.stdout, indent=1, sort_keys=True)
    print()
