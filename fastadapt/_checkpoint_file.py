"""The checkpoint file, format 1: an optimizer's state dict as one ``.npz``,
written atomically and read back guarded.

The file holds no pickled objects:

* ``__meta__``: the state dict without its arrays, as UTF-8 JSON in a uint8 array
  (algorithm, hyper-parameters, schedules, shapes, dtypes, step counts, the
  optional per-group ``scalar_state``, and the names of each group's state
  arrays);
* ``params.<g>``: group ``g``'s parameters, concatenated into one 1-D array;
* ``state.<g>.<name>``: group ``g``'s state array ``name``, laid out the same way.
* ``master.<g>``: group ``g``'s float32 master weights (``master_weights=True``),
  or its split master's int16 / int8 correction (``"bf16+16"`` / ``"bf16+8"``).
* with ``state_dtype="int8"``, ``state.<g>.<name>`` holds the uint8 codes over
  the flat buffer's whole length (padding included: blocks of 256 are laid
  over it) and ``absmax.<g>.<name>`` the float32 absmax of each block; with
  ``"int8c"`` (companded), the codes and the float32 scale of each group of 32.

Storage narrower than float32 is recorded in the metadata: a group's
``"dtype"`` may be ``"bfloat16"`` or ``"float16"``, its ``"state_dtype"`` is
there when the state is stored otherwise than the params, and ``"storage"``
holds the optimizer's ``master_weights``, ``stochastic_rounding`` and ``seed``
(the generator's position is the seed and each group's step count). bfloat16
arrays are written as their ``uint16`` bits (``.npy`` has no bfloat16).

:func:`save` writes through :func:`fastadapt._crash_safe.atomic_write`, so a
crash mid-save leaves the previous checkpoint intact. :func:`load` reads
through :func:`fastadapt._guarded_npz.read`: anything that is not such a file
is a ``ValueError``, and no array is read before the metadata, the ``.npy``
header (dtype, shape) and the zip entry's size of every member agree with
what is expected, so a small crafted file cannot make it allocate more than
the checkpoint's own arrays need.
"""
import numpy as np

from . import _args, _guarded_npz, _storage
from ._crash_safe import atomic_write
from ._guarded_npz import META_LIMIT, Misfit
from ._options import EIGHT_BIT
from .flat import padded_length

__all__ = ["save", "load", "declared_layout", "optimizer_layout", "META_LIMIT"]

_DTYPES = ("float32", "float64", "bfloat16", "float16")
_ARRAY_KEYS = ("params", "state", "master", "absmax")


def save(path, state_dict):
    """Write ``state_dict`` (see ``Optimizer.state_dict``) to ``path``, atomically.

    A file already at ``path`` keeps its permission bits; a symbolic link at
    ``path`` is written through (its target is replaced, the link stays).
    Temporaries left in the directory by saves of this machine whose process
    no longer exists (killed mid-save) are removed first.
    """
    members = _members(state_dict)      # JSON errors raise here, before any file is made
    atomic_write(path, lambda f: np.savez(f, **members))


def _members(sd):
    meta = {k: v for k, v in sd.items() if k not in _ARRAY_KEYS}
    meta["state_names"] = [list(s) for s in sd["state"]]
    arrays = {}
    for g, p in enumerate(sd["params"]):
        arrays[f"params.{g}"] = p
    for g, state in enumerate(sd["state"]):
        for name, a in state.items():
            arrays[f"state.{g}.{name}"] = a
    for g, a in enumerate(sd.get("master") or ()):
        arrays[f"master.{g}"] = a
    for g, blocks in enumerate(sd.get("absmax") or ()):
        for name, a in blocks.items():
            arrays[f"absmax.{g}.{name}"] = a
    return _guarded_npz.to_members(meta, arrays)


def load(path, layout=None):
    """Read a checkpoint written by :func:`save` back into a state dict.

    ``layout(meta)`` returns ``{member name: (shape, dtype)}``, the arrays the
    file must hold given its metadata (the state dict's JSON part, with
    ``"state_names"``: per group, the names of its state arrays); by default
    what the metadata itself declares (:func:`declared_layout`). Every
    array's ``.npy`` header and zip entry are checked against it before its
    data is read.

    Raises ``FileNotFoundError`` if ``path`` does not exist and ``ValueError``
    if it is not a complete fastadapt checkpoint (truncated, corrupt, missing or
    unexpected arrays, arrays of other shapes or dtypes). Whether the values fit
    a given optimizer is checked by ``Optimizer.load_state_dict``.
    """
    layout = declared_layout if layout is None else layout

    def expected(meta):
        names, groups = meta.get("state_names"), meta.get("param_groups")
        if not isinstance(names, list) or not isinstance(groups, list) \
                or len(names) != len(groups):
            raise ValueError("metadata does not describe the groups")
        return layout(meta)

    meta, arrays = _guarded_npz.read(path, expected)
    names = meta.pop("state_names")
    groups = range(len(meta["param_groups"]))
    meta["params"] = [arrays[f"params.{g}"] for g in groups]
    if "master.0" in arrays:
        meta["master"] = [arrays[f"master.{g}"] for g in groups]
    if any(k.startswith("absmax.") for k in arrays):
        meta["absmax"] = [{name: arrays[f"absmax.{g}.{name}"] for name in group}
                          for g, group in enumerate(names)]
    meta["state"] = [{name: arrays[f"state.{g}.{name}"] for name in group}
                     for g, group in enumerate(names)]
    return meta


def _eight_bit_layout(layout, g, name, padded, fmt):
    """Add the members of group ``g``'s 8-bit state ``name`` over ``padded``
    elements: its codes, and its scales as ``absmax.<g>.<name>``."""
    layout[f"state.{g}.{name}"] = ((padded,), np.dtype(np.uint8))
    layout[f"absmax.{g}.{name}"] = ((fmt.blocks(padded),), np.dtype(np.float32))


def declared_layout(meta):
    """``{member: (shape, dtype)}`` for the arrays ``meta`` declares: the
    layout a checkpoint must have when no optimizer says otherwise."""
    groups, names = meta["param_groups"], meta["state_names"]
    layout = {}
    for g, (group, state_names) in enumerate(zip(groups, names)):
        if not isinstance(group, dict) or not isinstance(state_names, list):
            raise Misfit(f"param group {g} is malformed")
        dtype = group.get("dtype")
        if dtype not in _DTYPES:
            raise Misfit(f"param group {g} has dtype {dtype!r}, expected one of {_DTYPES}")
        shapes = group.get("shapes")
        if not isinstance(shapes, list) or not all(
                isinstance(s, list) and all(type(d) is int and d >= 0 for d in s)
                for s in shapes):
            raise Misfit(f"param group {g} has malformed shapes")
        state_dtype = group.get("state_dtype", dtype)
        if state_dtype not in _DTYPES + tuple(EIGHT_BIT):
            raise Misfit(f"param group {g} has state dtype {state_dtype!r}, expected one "
                         f"of {_DTYPES}")
        numel = sum(_args.size(s) for s in shapes)
        layout[f"params.{g}"] = ((numel,), _dtype(dtype))
        for name in state_names:
            if not isinstance(name, str):
                raise Misfit(f"param group {g} has a malformed state name {name!r}")
            if state_dtype in EIGHT_BIT:
                padded = padded_length([tuple(s) for s in shapes], _dtype(dtype))
                _eight_bit_layout(layout, g, name, padded, EIGHT_BIT[state_dtype])
            else:
                layout[f"state.{g}.{name}"] = ((numel,), _dtype(state_dtype))
        storage = meta.get("storage")
        if isinstance(storage, dict) and storage.get("master_weights"):
            master = storage["master_weights"]
            layout[f"master.{g}"] = ((numel,), _storage.SPLIT_MASTER[master][0]
                                     if master in _storage.SPLIT_MASTER else np.dtype(np.float32))
    return layout


def _dtype(name):
    """The dtype named ``name`` (one of ``_DTYPES``; bfloat16 through ml_dtypes)."""
    if name == "bfloat16":
        return _storage.bfloat16("a checkpoint of bfloat16 arrays")
    return np.dtype(name)


def optimizer_layout(optimizer):
    """A ``layout(meta)`` for :func:`load` that expects ``optimizer``'s groups,
    sizes, dtypes and state names."""
    def layout(meta):
        groups, names = meta["param_groups"], meta["state_names"]
        if meta.get("algorithm") != optimizer.rule.name:
            raise Misfit(f"it is for algorithm {meta.get('algorithm')!r}, this optimizer "
                         f"is {optimizer.rule.name!r} ({type(optimizer).__name__})")
        if len(groups) != len(optimizer.group_buffers):
            raise Misfit(f"'param_groups' must hold one entry per parameter group "
                         f"({len(optimizer.group_buffers)}), got {len(groups)}")
        out = {}
        for g, (b, state_names) in enumerate(zip(optimizer.group_buffers, names)):
            expected = ((b.param.numel,), b.param.dtype)
            out[f"params.{g}"] = expected
            if b.master is not None:
                out[f"master.{g}"] = ((b.param.numel,), b.master.dtype)
            if not isinstance(state_names, list):
                raise Misfit(f"param group {g}: malformed state names")
            for name in state_names:
                if name not in optimizer.rule.state:
                    raise Misfit(f"param group {g}: unknown state array {name!r} "
                                 f"(algorithm {optimizer.rule.name!r} has "
                                 f"{list(optimizer.rule.state)})")
                if b.eight_bit is not None:
                    _eight_bit_layout(out, g, name, len(b.param.data), b.eight_bit)
                else:
                    out[f"state.{g}.{name}"] = ((b.param.numel,), b.state_dtype)
        return out
    return layout
