"""Checkpoints: an optimizer's state dict, and that state dict as one ``.npz``
written atomically.

:func:`state_dict`, :func:`load_state_dict` and :func:`from_checkpoint` do the
work of the ``Optimizer`` methods of the same names (which only take the
optimizer's lock and call them). The file layout (format 1) holds no pickled
objects:

* ``__meta__``: the state dict without its arrays, as UTF-8 JSON in a uint8 array
  (algorithm, hyper-parameters, schedules, shapes, dtypes, step counts, the
  optional per-group ``scalar_state``, and the names of each group's state
  arrays);
* ``params.<g>``: group ``g``'s parameters, concatenated into one 1-D array;
* ``state.<g>.<name>``: group ``g``'s state array ``name``, laid out the same way.
* ``master.<g>``: group ``g``'s float32 master weights (``master_weights=True``).
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

A schedule ``lr`` held by several groups is written in each, the later ones
with ``"shared_with": <first group>``, and is restored as one object.

:func:`save` writes a temporary file in the target's directory, flushes and
fsyncs it, then renames it over the target (``os.replace``), so a crash mid-save
leaves the previous checkpoint intact; it removes the temporaries that killed
saves on this machine left behind. :func:`load` turns anything that is not such
a file into ``ValueError``, and reads no array before the metadata, the
``.npy`` header (dtype, shape) and the zip entry's size of every member agree
with what is expected, so a small crafted file cannot make it allocate more
than the checkpoint's own arrays need.
"""
import hashlib
import json
import numbers
import operator
import os
import re
import secrets
import socket
import stat
import zipfile

import numpy as np

from . import _args, _storage
from ._arrays import to_host as _to_host
from .flat import padded_length
from .schedules import from_config, resolve_lr

__all__ = ["save", "load", "to_host_flat", "segments", "state_dict", "load_state_dict",
           "from_checkpoint", "declared_layout", "optimizer_layout",
           "remove_stale_temporaries", "CHECKPOINT_FORMAT", "META_LIMIT"]

CHECKPOINT_FORMAT = 1

_META = "__meta__"
#: Largest metadata member read (bytes, decompressed).
META_LIMIT = 64 << 20
#: Deflate cannot expand data by more than 1032:1; a zip entry that claims
#: more is a lie and is refused before it is read.
_DEFLATE_RATIO = 1032
_DTYPES = ("float32", "float64", "bfloat16", "float16")
_STORAGE_KEYS = ("state_dtype", "master_weights", "stochastic_rounding", "seed")
_INT8 = "int8"
#: 8-bit state dtypes -> elements per float32 scale (Blockwise8's absmax,
#: Companded8's scale), which ``absmax.<g>.<name>`` holds.
_EIGHT_BIT = {"int8": 256, "int8c": 32}


def _scales(container):
    """The per-block float32 array of an 8-bit state container."""
    return container.absmax if hasattr(container, "absmax") else container.scale


def _dtype_name(dtype):
    return dtype if isinstance(dtype, str) else dtype.name


# ----------------------------------------------------------------- layout
def to_host_flat(buffer):
    """The segments of a :class:`~fastadapt.FlatBuffer`, concatenated into a new
    1-D NumPy array (padding dropped), copied from the device if need be."""
    data = _to_host(buffer.data)
    if not buffer.shapes:
        return np.empty(0, buffer.dtype)
    return np.concatenate([data[o:o + _args.size(s)] for o, s in zip(buffer.offsets, buffer.shapes)])


def segments(flat, buffer):
    """``flat`` (concatenated, or in ``buffer``'s padded layout) cut into views
    with the shapes of ``buffer``'s segments; the inverse of :func:`to_host_flat`."""
    if flat.shape[0] == len(buffer.data):
        offsets = buffer.offsets
    else:
        offsets, start = [], 0
        for shape in buffer.shapes:
            offsets.append(start)
            start += _args.size(shape)
    return [flat[o:o + _args.size(s)].reshape(s) for o, s in zip(offsets, buffer.shapes)]


# ----------------------------------------------------------------- state dicts
def state_dict(optimizer):
    """``optimizer``'s state dict (see ``Optimizer.state_dict``)."""
    groups, params, state, absmax = [], [], [], []
    first_holder = {}           # id(schedule) -> first group holding it
    for i, (group, b) in enumerate(zip(optimizer.param_groups, optimizer._groups)):
        options = {}
        for key, value in group.items():
            if key == "params":
                continue
            if key == "lr" and callable(value):
                options[key] = _schedule_to_json(value, i)
                shared = first_holder.setdefault(id(value), i)
                if shared != i:
                    options[key]["shared_with"] = shared
            else:
                options[key] = _jsonable(value, f"param group {i}: {key}")
        entry = {"options": options, "shapes": [list(s) for s in b.param.shapes],
                 "dtype": b.param.dtype.name, "step": b.steps}
        if _dtype_name(b.state_dtype) != b.param.dtype.name:
            entry["state_dtype"] = _dtype_name(b.state_dtype)
        scalar_state = getattr(b, "scalar_state", None)
        if scalar_state:
            entry["scalar_state"] = {k: float(v) for k, v in scalar_state.items()}
        groups.append(entry)
        params.append(to_host_flat(b.param))
        if b.state_dtype in _EIGHT_BIT:
            state.append({n: s.data.codes.copy() for n, s in b.state.items()})
            absmax.append({n: _scales(s.data).copy() for n, s in b.state.items()})
        else:
            state.append({n: to_host_flat(s) for n, s in b.state.items()})
    sd = {"format": CHECKPOINT_FORMAT, "algorithm": optimizer.rule.name,
          "param_groups": groups, "params": params, "state": state}
    storage = _storage_options(optimizer)
    if storage:
        sd["storage"] = storage
        if optimizer.master_weights:
            sd["master"] = [to_host_flat(b.master) for b in optimizer._groups]
        if optimizer.state_dtype in _EIGHT_BIT:
            sd["absmax"] = absmax
    if optimizer.max_grad_norm is not None:
        # a constructor option, not state: ``from_checkpoint`` restores it,
        # ``load_state_dict`` leaves the receiving optimizer's own setting
        sd["max_grad_norm"] = float(optimizer.max_grad_norm)
    return sd


def _storage_options(optimizer):
    """The optimizer's storage options as JSON, or {} when all are defaults."""
    options = {"state_dtype": None if optimizer.state_dtype is None
               else _dtype_name(optimizer.state_dtype),
               "master_weights": optimizer.master_weights,
               "stochastic_rounding": optimizer.stochastic_rounding, "seed": optimizer.seed}
    if not any(options.values()):
        return {}
    return options


def load_state_dict(optimizer, sd):
    """Load ``sd`` into ``optimizer`` (see ``Optimizer.load_state_dict``):
    everything is checked first, then copied."""
    plans = _check_state_dict(optimizer, sd)
    masters = sd.get("master")
    if "storage" in sd:
        optimizer.seed = sd["storage"]["seed"]
    built = {}                  # group index -> the schedule object it ends up with
    for i, (group, b, plan) in enumerate(zip(optimizer.param_groups, optimizer._groups,
                                             plans)):
        options, params, state, steps, schedule, scalar_state = plan
        b.param.copy_from(params)
        if masters is not None:
            b.master.copy_from([_trusted_master(m, p) for m, p in
                                zip(segments(masters[i], b.master), params)])
        for name in list(b.state):
            if name not in state:
                del b.state[name]
        for name, arrays in state.items():
            if b.state_dtype in _EIGHT_BIT:
                codes, block_max = arrays
                target = b.state[name] if name in b.state else optimizer._zero_state(
                    b, group, name)
                target.data.codes[:] = codes
                _scales(target.data)[:] = block_max
            else:
                target = b.state[name] if name in b.state else b.param.zeros_like(
                    b.state_dtype)
                target.copy_from(arrays)
            b.state[name] = target
        b.steps = steps
        if scalar_state is not None:
            b.scalar_state = scalar_state
        current = group.get("lr")
        for key in [k for k in group if k != "params"]:
            del group[key]
        group.update(options)
        if schedule is not None:
            config, sched_state, fresh, shared_with = schedule
            if shared_with is not None:
                group["lr"] = built[shared_with]
            elif getattr(current, "to_config", None) and _same_config(current, config) \
                    and not any(current is x for x in built.values()):
                current.load_state_dict(sched_state)   # checked on ``fresh`` already
                group["lr"] = current
            else:
                group["lr"] = fresh
            built[i] = group["lr"]
        b.validated = optimizer._options(group)
        del b.validated["lr"]


def _trusted_master(master, param):
    """A copy of a loaded master array, trusted only where it rounds to the
    loaded 16-bit ``param`` (a dict whose ``params`` were edited or converted
    by another tool keeps a stale master): elsewhere the parameter's value."""
    master = np.array(master, np.float32)
    stale = master.astype(param.dtype) != param
    master[stale] = param[stale].astype(np.float32)
    return master


def _check_state_dict(optimizer, sd):
    """Validate a state dict fully; return per group what to apply."""
    where = "optimizer state dict"
    rule = optimizer.rule
    if not isinstance(sd, dict):
        raise ValueError(f"{where} must be a dict, got {type(sd).__name__}")
    for key in ("format", "algorithm", "param_groups", "params", "state"):
        if key not in sd:
            raise ValueError(f"{where} is missing key {key!r}")
    if sd["format"] != CHECKPOINT_FORMAT:
        raise ValueError(f"{where} has format {sd['format']!r}; this fastadapt reads "
                         f"format {CHECKPOINT_FORMAT}")
    if sd["algorithm"] != rule.name:
        raise ValueError(f"{where} is for algorithm {sd['algorithm']!r}, this optimizer "
                         f"is {rule.name!r} ({type(optimizer).__name__})")
    unknown = sorted(set(sd) - {"format", "algorithm", "param_groups", "params", "state",
                                "storage", "master", "absmax", "max_grad_norm"})
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {unknown}")
    if "max_grad_norm" in sd:
        try:
            _args.max_grad_norm(sd["max_grad_norm"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    storage = _storage_options(optimizer)
    given = sd.get("storage", {})
    if not isinstance(given, dict) or set(given) - set(_STORAGE_KEYS):
        raise ValueError(f"{where}: malformed 'storage' {given!r}")
    mine = {k: v for k, v in storage.items() if k != "seed"}
    theirs = {k: v for k, v in given.items() if k != "seed"}
    if given and mine != theirs or bool(given) != bool(storage):
        raise ValueError(f"{where} was saved with storage options {theirs or 'defaults'}, "
                         f"this optimizer has {mine or 'defaults'}")
    if given.get("stochastic_rounding"):
        try:
            _args.seed(given.get("seed"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    n = len(optimizer._groups)
    if optimizer.master_weights:
        masters = sd.get("master")
        if not isinstance(masters, (list, tuple)) or len(masters) != n:
            raise ValueError(f"{where}: 'master' must hold one float32 array per parameter "
                             f"group ({n})")
        for i, (m, b) in enumerate(zip(masters, optimizer._groups)):
            _checked_array(m, b.master, f"{where}, param group {i}: master")
    elif "master" in sd:
        raise ValueError(f"{where} holds master weights; this optimizer keeps none")
    for key in ("param_groups", "params", "state"):
        if not isinstance(sd[key], (list, tuple)) or len(sd[key]) != n:
            got = len(sd[key]) if isinstance(sd[key], (list, tuple)) else type(sd[key]).__name__
            raise ValueError(f"{where}: {key!r} must hold one entry per parameter group "
                             f"({n}), got {got}")
    plans, schedules = [], []
    for i, (b, current, g, p, s) in enumerate(zip(optimizer._groups, optimizer.param_groups,
                                                  sd["param_groups"], sd["params"],
                                                  sd["state"])):
        at = f"{where}, param group {i}"
        if not isinstance(g, dict) or not isinstance(s, dict):
            raise ValueError(f"{at}: malformed entry")
        for key in ("options", "shapes", "dtype", "step"):
            if key not in g:
                raise ValueError(f"{at} is missing key {key!r}")
        unknown = sorted(set(g) - {"options", "shapes", "dtype", "step", "scalar_state",
                                   "state_dtype"})
        if unknown:
            raise ValueError(f"{at} has unknown key(s) {unknown}")
        try:
            shapes = [tuple(operator.index(d) for d in shape) for shape in g["shapes"]]
        except TypeError:
            raise ValueError(f"{at}: malformed shapes {g['shapes']!r}") from None
        if shapes != b.param.shapes:
            raise ValueError(f"{at} holds parameters of shapes {shapes}, this optimizer's "
                             f"are {b.param.shapes}")
        if g["dtype"] != b.param.dtype.name:
            raise ValueError(f"{at} has dtype {g['dtype']}, this optimizer's is "
                             f"{b.param.dtype.name}")
        if g.get("state_dtype", g["dtype"]) != _dtype_name(b.state_dtype):
            raise ValueError(f"{at} has state dtype {g.get('state_dtype', g['dtype'])}, "
                             f"this optimizer's is {_dtype_name(b.state_dtype)}")
        steps = g["step"]
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            raise ValueError(f"{at}: step must be an integer >= 0, got {steps!r}")
        options, schedule = _options_from_json(optimizer, current, g["options"], at,
                                               schedules)
        try:
            options["lr"] = resolve_lr(options["lr"], int(steps))
            optimizer._validate(options, b.param.dtype, None, b.state_dtype)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{at}: {exc}") from None
        if schedule is not None:
            options["lr"] = schedule[2]
        schedules.append(schedule)
        scalar_state = _scalar_state(b, g.get("scalar_state"), at)
        params = segments(_checked_array(p, b.param, f"{at}: params"), b.param)
        needed = rule.state_for(**optimizer._options(options))
        missing = [name for name in needed if name not in s]
        unknown = [name for name in s if name not in rule.state]
        if missing or unknown:
            raise ValueError(f"{at}: state arrays missing {missing}, unknown {unknown} "
                             f"(algorithm {rule.name!r} has {list(rule.state)})")
        if b.state_dtype in _EIGHT_BIT:
            state = {name: _checked_blockwise(sd, i, name, a, b, at) for name, a in s.items()}
        else:
            like = b.param.zeros_like(b.state_dtype) if b.state_dtype != b.param.dtype \
                else b.param
            state = {name: segments(_checked_array(a, like, f"{at}: state {name!r}"),
                                    b.param)
                     for name, a in s.items()}
        plans.append((options, params, state, int(steps), schedule, scalar_state))
    return plans


def _options_from_json(optimizer, current, options, at, earlier):
    """The group's hyper-parameters from a state dict's ``options``, and for a
    schedule lr ``(config, state, rebuilt schedule, index of the group it is
    shared with or None)``. ``earlier`` holds that tuple (or None) for the
    groups before this one."""
    if not isinstance(options, dict):
        raise ValueError(f"{at}: options must be a dict")
    names = optimizer._option_names()
    missing = [k for k in names if k not in options]
    if missing:
        raise ValueError(f"{at} is missing hyper-parameter(s) {missing}")
    # Keys the optimizer does not know are refused, except the extra keys this
    # group already carries (torch keeps a group's extra keys; they round-trip).
    unknown = sorted(k for k in options
                     if k not in names and (k == "params" or k not in current))
    if unknown:
        raise ValueError(f"{at}: unknown option key(s) {unknown} (this optimizer's "
                         f"hyper-parameters are {list(names)})")
    options = dict(options)
    for key, default in optimizer.rule.defaults.items():
        if isinstance(default, tuple) and isinstance(options[key], list):
            options[key] = tuple(options[key])
    lr = options["lr"]
    if not isinstance(lr, dict):
        return options, None
    shared_with = lr.get("shared_with")
    if set(lr) - {"shared_with"} != {"schedule", "state"}:
        raise ValueError(f"{at}: a schedule lr must be {{'schedule': config, "
                         f"'state': state}}, got keys {sorted(lr)}")
    if shared_with is not None:
        if isinstance(shared_with, bool) or not isinstance(shared_with, int) \
                or not 0 <= shared_with < len(earlier) or earlier[shared_with] is None \
                or earlier[shared_with][3] is not None:
            raise ValueError(f"{at}: lr 'shared_with' must name an earlier group holding "
                             f"its own schedule, got {shared_with!r}")
        first = earlier[shared_with]
        if (lr["schedule"], lr["state"]) != first[:2]:
            raise ValueError(f"{at}: lr schedule is shared with group {shared_with} but "
                             "its config or state differs from that group's")
        options["lr"] = first[2]
        return options, (first[0], first[1], first[2], shared_with)
    try:
        schedule = from_config(lr["schedule"])
        schedule.load_state_dict(lr["state"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{at}: bad lr schedule: {exc}") from None
    options["lr"] = schedule
    return options, (lr["schedule"], lr["state"], schedule, None)


def _scalar_state(buffers, given, at):
    """A group's named per-group floats (``scalar_state``), checked against the
    names the optimizer keeps for that group; None if neither has any."""
    expected = set(getattr(buffers, "scalar_state", None) or ())
    if given is None:
        if expected:
            raise ValueError(f"{at} is missing scalar_state {sorted(expected)}")
        return None
    if not isinstance(given, dict):
        raise ValueError(f"{at}: scalar_state must be a dict of numbers")
    if set(given) != expected:
        raise ValueError(f"{at}: scalar_state has keys {sorted(given)}, this optimizer "
                         f"keeps {sorted(expected)}")
    out = {}
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{at}: scalar_state[{key!r}] must be a real number, "
                             f"got {value!r}")
        out[key] = float(value)
    return out


def _checked_blockwise(sd, index, name, codes, buffers, at):
    """(codes, absmax) of an 8-bit state array, checked against the group's layout."""
    n = len(buffers.param.data)
    blocks = -(-n // _EIGHT_BIT[buffers.state_dtype])
    try:
        block_max = sd["absmax"][index][name]
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"{at}: 8-bit state {name!r} has no absmax") from None
    for what, a, dtype, size in (("codes", codes, np.uint8, n),
                                 ("absmax", block_max, np.float32, blocks)):
        if type(a) is not np.ndarray or a.dtype != dtype or a.shape != (size,):
            raise ValueError(f"{at}: state {name!r} {what} must be a {np.dtype(dtype)} array "
                             f"of shape ({size},), got {getattr(a, 'dtype', type(a))}"
                             f"{getattr(a, 'shape', '')}")
    problem = _storage.absmax_problem(block_max)
    if not problem and buffers.state_dtype != _INT8 and np.signbit(block_max).any():
        problem = "is negative; a companded state's scale is a magnitude"
    if problem:
        raise ValueError(f"{at}: state {name!r} absmax {problem}")
    return codes, block_max


def _checked_array(a, buffer, at):
    if type(a) is not np.ndarray:
        raise ValueError(f"{at} must be a numpy array, got {type(a).__name__}")
    if a.dtype != buffer.dtype:
        raise ValueError(f"{at} has dtype {a.dtype}, this optimizer's is {buffer.dtype}")
    if a.shape != (buffer.numel,):
        raise ValueError(f"{at} has shape {a.shape}, expected ({buffer.numel},)")
    return a


def _jsonable(value, at):
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return operator.index(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (tuple, list)):
        return [_jsonable(v, at) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _jsonable(v, at) for k, v in value.items()}
    raise ValueError(f"{at}: {value!r} cannot be written to a checkpoint (JSON types only)")


def _schedule_to_json(schedule, index):
    if not (hasattr(schedule, "to_config") and hasattr(schedule, "state_dict")):
        raise ValueError(f"param group {index}: lr {schedule!r} is a callable without "
                         "to_config(); use a fastadapt.schedules schedule to checkpoint it")
    try:
        return {"schedule": schedule.to_config(), "state": dict(schedule.state_dict())}
    except TypeError as exc:
        raise ValueError(f"param group {index}: lr schedule cannot be written to a "
                         f"checkpoint: {exc}") from None


def _same_config(schedule, config):
    try:
        return schedule.to_config() == config
    except (TypeError, ValueError):
        return False


def from_checkpoint(cls, by_rule, path):
    """A new optimizer restored from ``path`` (see ``Optimizer.from_checkpoint``);
    ``by_rule`` maps rule names to optimizer classes."""
    sd = load(path)
    algorithm = sd.get("algorithm")
    target = by_rule.get(algorithm)
    if target is None or (cls.rule is not None and cls.rule.name != algorithm):
        want = cls.rule.name if cls.rule is not None else sorted(by_rule)
        raise ValueError(f"checkpoint {path!s} is for algorithm {algorithm!r}, "
                         f"expected {want}")
    names = set(target._option_names())
    try:
        # A group's extra (non-hyper-parameter) keys are the checkpoint's own.
        storage = dict(sd.get("storage", {}))
        if any(g.get("dtype") == "bfloat16" or g.get("state_dtype") == "bfloat16"
               for g in sd["param_groups"]):
            _storage.bfloat16("a checkpoint of bfloat16 arrays")   # registers the name
        groups = [{"params": [np.zeros(tuple(s), g["dtype"]) for s in g["shapes"]],
                   **{k: v for k, v in g["options"].items()
                      if k not in names and k != "params"}}
                  for g in sd["param_groups"]]
    except MemoryError:
        raise ValueError(f"checkpoint {path!s} declares parameters too large for this "
                         "machine's memory") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"checkpoint {path!s}: malformed param_groups ({exc})") from None
    try:
        optimizer = target(groups, **storage, max_grad_norm=sd.get("max_grad_norm"))
    except MemoryError:
        raise ValueError(f"checkpoint {path!s} declares parameters too large for this "
                         "machine's memory") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint {path!s}: {exc}") from None
    optimizer.load_state_dict(sd)
    return optimizer


# ----------------------------------------------------------------- files
def _flatten(sd):
    meta = {k: v for k, v in sd.items() if k not in ("params", "state", "master", "absmax")}
    meta["state_names"] = [list(s) for s in sd["state"]]
    arrays = {_META: np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)}
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
    # .npy has no bfloat16: its bits are written as uint16 (the metadata says which)
    return {k: a.view(np.uint16) if _storage.is_bfloat16(a.dtype) else a
            for k, a in arrays.items()}


def _host_tag():
    """A short tag of this machine's name: temporaries of another machine
    sharing the directory (NFS) are never taken for this machine's."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


# .<target name>.<host tag>-<pid>.<random>.tmp; the tag is absent in files
# written before it was added.
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.(?:(?P<host>[0-9a-f]{8})-)?(?P<pid>\d+)"
                        r"\.[0-9a-f]{8}\.tmp$")


def save(path, state_dict):
    """Write ``state_dict`` (see ``Optimizer.state_dict``) to ``path``, atomically.

    A file already at ``path`` keeps its permission bits; a symbolic link at
    ``path`` is written through (its target is replaced, the link stays).
    Temporaries left in the directory by saves of this machine whose process
    no longer exists (killed mid-save) are removed first.
    """
    arrays = _flatten(state_dict)       # JSON errors raise here, before any file is made
    atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_write(path, write):
    """Call ``write(f)`` on a new file beside ``path``, then move it to ``path``.

    ``path`` holds either its old content or the complete new one, never a
    part: the temporary is flushed to disk before ``os.replace``, and removed
    if ``write`` raises. A file already at ``path`` keeps its permission bits.
    A symbolic link at ``path`` (or on the way to it) is written through: the
    file it points to is replaced, in that file's directory, and the link
    stays. Temporaries left in the directory by writes of this machine whose
    process no longer exists (killed mid-write) are removed first, when they
    are zip files as ``np.savez`` and ``torch.save`` write.
    """
    path = os.path.realpath(os.fspath(path))
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(directory)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{_host_tag()}-{os.getpid()}."
                                  f"{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            pass
        else:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def remove_stale_temporaries(directory):
    """Remove the temporary files of :func:`save` in ``directory`` whose writing
    process, on this machine, is gone; return their names. Only regular files
    named as :func:`save` names them and holding nothing or the start of a zip
    file are touched. Best effort: a file that cannot be removed is left (and
    nothing is removed on Windows, where a process cannot be probed safely)."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    tag = _host_tag()
    for name in names:
        match = _TEMPORARY.match(name)
        if match is None or match["host"] not in (None, tag):
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _process_exists(pid):
            continue
        full = os.path.join(directory, name)
        try:
            if stat.S_ISREG(os.lstat(full).st_mode) and _looks_like_a_partial_save(full):
                os.unlink(full)
                removed.append(name)
        except OSError:
            pass
    return removed


def _looks_like_a_partial_save(path):
    """Empty, or starting as a zip file does: what np.savez leaves when killed."""
    with open(path, "rb") as f:
        head = f.read(4)
    return b"PK\x03\x04".startswith(head)


def _process_exists(pid):
    if pid <= 0 or os.name == "nt":
        return True             # not a process id, or no safe probe: leave the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True             # another user's process, or cannot tell
    return True


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


class _Misfit(ValueError):
    """The file is readable but does not describe what is expected."""


def declared_layout(meta):
    """``{member: (shape, dtype)}`` for the arrays ``meta`` declares: the
    layout a checkpoint must have when no optimizer says otherwise."""
    groups, names = meta["param_groups"], meta["state_names"]
    layout = {}
    for g, (group, state_names) in enumerate(zip(groups, names)):
        if not isinstance(group, dict) or not isinstance(state_names, list):
            raise _Misfit(f"param group {g} is malformed")
        dtype = group.get("dtype")
        if dtype not in _DTYPES:
            raise _Misfit(f"param group {g} has dtype {dtype!r}, expected one of {_DTYPES}")
        shapes = group.get("shapes")
        if not isinstance(shapes, list) or not all(
                isinstance(s, list) and all(type(d) is int and d >= 0 for d in s)
                for s in shapes):
            raise _Misfit(f"param group {g} has malformed shapes")
        state_dtype = group.get("state_dtype", dtype)
        if state_dtype not in _DTYPES + tuple(_EIGHT_BIT):
            raise _Misfit(f"param group {g} has state dtype {state_dtype!r}, expected one "
                          f"of {_DTYPES}")
        numel = sum(_args.size(s) for s in shapes)
        layout[f"params.{g}"] = ((numel,), _dtype(dtype))
        for name in state_names:
            if not isinstance(name, str):
                raise _Misfit(f"param group {g} has a malformed state name {name!r}")
            if state_dtype in _EIGHT_BIT:
                padded = padded_length([tuple(s) for s in shapes], _dtype(dtype))
                unit = _EIGHT_BIT[state_dtype]
                layout[f"state.{g}.{name}"] = ((padded,), np.dtype(np.uint8))
                layout[f"absmax.{g}.{name}"] = ((-(-padded // unit),), np.dtype(np.float32))
            else:
                layout[f"state.{g}.{name}"] = ((numel,), _dtype(state_dtype))
        storage = meta.get("storage")
        if isinstance(storage, dict) and storage.get("master_weights"):
            layout[f"master.{g}"] = ((numel,), np.dtype(np.float32))
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
            raise _Misfit(f"it is for algorithm {meta.get('algorithm')!r}, this optimizer "
                          f"is {optimizer.rule.name!r} ({type(optimizer).__name__})")
        if len(groups) != len(optimizer._groups):
            raise _Misfit(f"'param_groups' must hold one entry per parameter group "
                          f"({len(optimizer._groups)}), got {len(groups)}")
        out = {}
        for g, (b, state_names) in enumerate(zip(optimizer._groups, names)):
            expected = ((b.param.numel,), b.param.dtype)
            out[f"params.{g}"] = expected
            if b.master is not None:
                out[f"master.{g}"] = ((b.param.numel,), np.dtype(np.float32))
            if not isinstance(state_names, list):
                raise _Misfit(f"param group {g}: malformed state names")
            for name in state_names:
                if name not in optimizer.rule.state:
                    raise _Misfit(f"param group {g}: unknown state array {name!r} "
                                  f"(algorithm {optimizer.rule.name!r} has "
                                  f"{list(optimizer.rule.state)})")
                if b.state_dtype in _EIGHT_BIT:
                    padded = len(b.param.data)
                    unit = _EIGHT_BIT[b.state_dtype]
                    out[f"state.{g}.{name}"] = ((padded,), np.dtype(np.uint8))
                    out[f"absmax.{g}.{name}"] = ((-(-padded // unit),), np.dtype(np.float32))
                else:
                    out[f"state.{g}.{name}"] = ((b.param.numel,), b.state_dtype)
        return out
    return layout


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
    path = os.fspath(path)
    layout = declared_layout if layout is None else layout
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise ValueError(f"{path} is not a fastadapt checkpoint (not an .npz file)")
        f.seek(0, os.SEEK_END)
        file_size = f.tell()
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as zf:
                members = _members(zf, file_size)
                if _META not in members:
                    raise ValueError("no metadata")
                raw = _read_array(zf, members.pop(_META), None, np.dtype(np.uint8),
                                  META_LIMIT)
                meta = json.loads(bytes(raw).decode("utf-8"))
                if not isinstance(meta, dict):
                    raise ValueError("metadata is not a JSON object")
                names = meta.get("state_names")
                groups = meta.get("param_groups")
                if not isinstance(names, list) or not isinstance(groups, list) \
                        or len(names) != len(groups):
                    raise ValueError("metadata does not describe the groups")
                expected = layout(meta)
                del meta["state_names"]
                unexpected = sorted(set(members) - set(expected))
                if unexpected:
                    raise _Misfit(f"holds unexpected arrays {unexpected}")
                missing = sorted(set(expected) - set(members))
                if missing:
                    raise ValueError(f"arrays {missing} are missing")
                arrays = {}
                for key, (shape, dtype) in expected.items():
                    if _storage.is_bfloat16(dtype):     # written as its uint16 bits
                        arrays[key] = _read_array(zf, members[key], shape,
                                                  np.dtype(np.uint16), None).view(dtype)
                    else:
                        arrays[key] = _read_array(zf, members[key], shape, dtype, None)
                meta["params"] = [arrays[f"params.{g}"] for g in range(len(groups))]
                if "master.0" in arrays:
                    meta["master"] = [arrays[f"master.{g}"] for g in range(len(groups))]
                if any(k.startswith("absmax.") for k in arrays):
                    meta["absmax"] = [{name: arrays[f"absmax.{g}.{name}"] for name in group}
                                      for g, group in enumerate(names)]
                meta["state"] = [{name: arrays[f"state.{g}.{name}"] for name in group}
                                 for g, group in enumerate(names)]
        except _Misfit as exc:
            raise ValueError(f"{path} does not fit: {exc}") from None
        except MemoryError:
            raise ValueError(f"{path}: its arrays do not fit in this machine's "
                             "memory") from None
        except Exception as exc:    # zipfile, zlib, EOF, JSON, KeyError, ...: all "unreadable"
            raise ValueError(f"{path} is not a readable fastadapt checkpoint "
                             f"({type(exc).__name__}: {exc})") from None
    return meta


def _members(zf, file_size):
    """``{array name: ZipInfo}``, refusing entries whose sizes are impossible."""
    members = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            raise _Misfit(f"holds a member {info.filename!r} that is not an array")
        if info.compress_size > file_size:
            raise ValueError(f"member {info.filename!r} is larger than the file")
        if info.compress_type == zipfile.ZIP_STORED:
            plausible = info.file_size == info.compress_size
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            plausible = info.file_size <= _DEFLATE_RATIO * info.compress_size + 1024
        else:
            raise ValueError(f"member {info.filename!r} uses an unsupported compression")
        if not plausible:
            raise ValueError(f"member {info.filename!r} claims {info.file_size} bytes "
                             f"from {info.compress_size}")
        name = info.filename[:-4]
        if name in members:
            raise ValueError(f"member {info.filename!r} appears twice")
        members[name] = info
    return members


def _read_array(zf, info, shape, dtype, limit):
    """The array of ``info``, after checking its ``.npy`` header (``shape``, or
    any 1-D shape when None, and ``dtype``) and the entry's size; reads exactly
    the declared bytes, and at most ``limit`` of them."""
    name = info.filename[:-4]
    fmt = np.lib.format
    with zf.open(info) as fp:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            got_shape, fortran, got_dtype = fmt.read_array_header_1_0(fp)
        elif version == (2, 0):
            got_shape, fortran, got_dtype = fmt.read_array_header_2_0(fp)
        else:
            raise ValueError(f"array {name!r} has .npy format {version}")
        if got_dtype != dtype or (shape is None and len(got_shape) != 1) \
                or (shape is not None and tuple(got_shape) != tuple(shape)) \
                or (fortran and len(got_shape) > 1):
            raise _Misfit(f"array {name!r} is {got_dtype}{list(got_shape)}, expected "
                          f"{dtype}{list(shape) if shape is not None else '[n]'}")
        nbytes = _args.size(got_shape) * dtype.itemsize
        if limit is not None and nbytes > limit:
            raise ValueError(f"array {name!r} holds {nbytes} bytes, more than {limit}")
        if info.file_size != fp.tell() + nbytes:
            raise ValueError(f"array {name!r}: its zip entry holds {info.file_size} bytes, "
                             f"its header declares {fp.tell() + nbytes}")
        out = np.empty(got_shape, dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        done = 0
        while done < nbytes:
            n = fp.readinto(view[done:])
            if not n:
                raise ValueError(f"array {name!r} is truncated")
            done += n
        if fp.read(1):                 # also makes zipfile check the CRC
            raise ValueError(f"array {name!r} is longer than its header declares")
    return out
