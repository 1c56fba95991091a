"""Where SPEC.md says each checkpoint key appears in a ckptfs mount.

Written from SPEC.md alone, independent of the C code, so the integration tests compare
the daemon against a second implementation of the rules:
- a key's FQN is split at '.' into path components;
- in a component '%' is shown as '%25' and '/' as '%2F'; an empty component as '%',
  '.' as '%2E', '..' as '%2E%2E';
- a key that is also a directory (the prefix of other keys) is shown beside that
  directory as NAME.tensor (or NAME.bytes for a non-tensor key);
- with -o flat every key is a file at the root named by its whole FQN, escaped the same way.
"""
import json


def escape(name):
    if name == "":
        return "%"
    if name == ".":
        return "%2E"
    if name == "..":
        return "%2E%2E"
    # '%' first, so the '%' that escaping '/' introduces is not escaped again.
    return name.replace("%", "%25").replace("/", "%2F")


def load_manifest(path):
    with open(path, "rb") as f:
        return json.load(f)


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def tree_layout(manifest, flat=False, npy=False):
    """Returns (files, dirs): files maps a mount-relative path to its FQN, dirs maps every
    directory path ('' = root) to the sorted list of names it must list.

    npy=True gives the listing of `-o npy`: tensor files carry a `.npy` suffix."""
    comps = {}
    for fqn in manifest:
        comps[fqn] = [escape(fqn)] if flat else [escape(c) for c in fqn.split(".")]
    prefixes = set()
    for parts in comps.values():
        for i in range(1, len(parts)):
            prefixes.add(tuple(parts[:i]))
    files = {}
    dirs = {"": set()}
    for fqn, parts in comps.items():
        leaf = parts[-1]
        if tuple(parts) in prefixes:
            leaf += ".bytes" if manifest[fqn]["kind"] == "bytes" else ".tensor"
        if npy and manifest[fqn]["kind"] == "tensor":
            leaf += ".npy"
        parent = ""
        for c in parts[:-1]:
            dirs.setdefault(parent, set()).add(c)
            parent = c if parent == "" else parent + "/" + c
            dirs.setdefault(parent, set())
        dirs[parent].add(leaf)
        path = leaf if parent == "" else parent + "/" + leaf
        if path in files:
            raise ValueError("two keys map to %r: %r and %r" % (path, files[path], fqn))
        files[path] = fqn
    return files, {d: sorted(names, key=lambda s: s.encode()) for d, names in dirs.items()}
