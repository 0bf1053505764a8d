"""Checkpoint files: an optimizer's state dict as one ``.npz``, written atomically.

The layout (format 1) holds no pickled objects, so files are loaded with
``allow_pickle=False``:

* ``__meta__``: the state dict without its arrays, as UTF-8 JSON in a uint8 array
  (algorithm, hyper-parameters, schedules, shapes, dtypes, step counts, and the
  names of each group's state arrays);
* ``params.<g>``: group ``g``'s parameters, concatenated into one 1-D array;
* ``state.<g>.<name>``: group ``g``'s state array ``name``, laid out the same way.

:func:`save` writes a temporary file in the target's directory, flushes and
fsyncs it, then renames it over the target (``os.replace``), so a crash mid-save
leaves the previous checkpoint intact. :func:`load` turns anything that is not
such a file into ``ValueError``.
"""
import json
import os
import secrets

import numpy as np

__all__ = ["save", "load", "to_host_flat"]

_META = "__meta__"


def to_host_flat(buffer):
    """The segments of a :class:`~fastadapt.FlatBuffer`, concatenated into a new
    1-D NumPy array (padding dropped), copied from the device if need be."""
    data = _to_host(buffer.data)
    if not buffer.shapes:
        return np.empty(0, buffer.dtype)
    return np.concatenate([data[o:o + _size(s)] for o, s in zip(buffer.offsets, buffer.shapes)])


def _to_host(a):
    """A host NumPy copy of ``a`` (NumPy, Numba device, CuPy or torch array)."""
    if isinstance(a, np.ndarray):
        return a
    for method in ("copy_to_host", "get"):      # Numba device arrays, CuPy
        f = getattr(a, method, None)
        if callable(f):
            return np.asarray(f())
    if hasattr(a, "detach"):                    # torch
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _size(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _flatten(state_dict):
    meta = {k: v for k, v in state_dict.items() if k not in ("params", "state")}
    meta["state_names"] = [list(s) for s in state_dict["state"]]
    arrays = {_META: np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)}
    for g, p in enumerate(state_dict["params"]):
        arrays[f"params.{g}"] = p
    for g, state in enumerate(state_dict["state"]):
        for name, a in state.items():
            arrays[f"state.{g}.{name}"] = a
    return arrays


def save(path, state_dict):
    """Write ``state_dict`` (see ``Optimizer.state_dict``) to ``path``, atomically."""
    path = os.fspath(path)
    arrays = _flatten(state_dict)       # JSON errors raise here, before any file is made
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory,
                       f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path):
    """Read a checkpoint written by :func:`save` back into a state dict.

    Raises ``FileNotFoundError`` if ``path`` does not exist and ``ValueError``
    if it is not a complete fastadapt checkpoint (truncated, corrupt, missing
    arrays). Whether it fits a given optimizer is checked by
    ``Optimizer.load_state_dict``.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise ValueError(f"{path} is not a fastadapt checkpoint (not an .npz file)")
        f.seek(0)
        try:
            with np.load(f, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
            meta = json.loads(bytes(arrays.pop(_META)).decode("utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("metadata is not a JSON object")
            names = meta.pop("state_names")
            groups = meta.get("param_groups")
            if not isinstance(names, list) or not isinstance(groups, list) \
                    or len(names) != len(groups):
                raise ValueError("metadata does not describe the groups")
            meta["params"] = [arrays.pop(f"params.{g}") for g in range(len(groups))]
            meta["state"] = [{name: arrays.pop(f"state.{g}.{name}") for name in group}
                             for g, group in enumerate(names)]
        except Exception as exc:    # zipfile, zlib, EOF, JSON, KeyError, ...: all "unreadable"
            raise ValueError(f"{path} is not a readable fastadapt checkpoint "
                             f"({type(exc).__name__}: {exc})") from None
    if arrays:
        raise ValueError(f"{path} holds unexpected arrays {sorted(arrays)}")
    return meta
