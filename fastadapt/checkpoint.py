"""Checkpoints: an optimizer's state dict, built from the optimizer and
checked fully before anything is loaded into it.

:func:`state_dict`, :func:`load_state_dict` and :func:`from_checkpoint` do the
work of the ``Optimizer`` methods of the same names (which only take the
optimizer's lock and call them), through the optimizer's
``group_buffers``, ``option_names``, ``step_options`` and ``check_group``.
The state dict's JSON part (hyper-parameters, schedules) is written by
:mod:`fastadapt._schedule_json`; the file (format 1, one ``.npz``) by
:mod:`fastadapt._checkpoint_file`, whose :func:`save` and :func:`load` are
importable from here, as are :func:`atomic_write` and
:func:`remove_stale_temporaries` of :mod:`fastadapt._crash_safe`.
"""
import numbers
import operator

import numpy as np

from . import _args, _eight_bit, _storage
from ._checkpoint_file import META_LIMIT, declared_layout, load, optimizer_layout, save
from ._crash_safe import atomic_write, remove_stale_temporaries
from ._group_buffers import segments, to_host_flat
from ._options import EIGHT_BIT, STORAGE_OPTIONS
from ._schedule_json import jsonable, same_config, schedule_from_json, schedule_to_json
from .schedules import resolve_lr

__all__ = ["save", "load", "to_host_flat", "segments", "state_dict", "load_state_dict",
           "from_checkpoint", "declared_layout", "optimizer_layout", "atomic_write",
           "remove_stale_temporaries", "CHECKPOINT_FORMAT", "META_LIMIT"]

CHECKPOINT_FORMAT = 1


def _name(dtype):
    """A state dtype's name (an 8-bit format's is already one)."""
    return dtype if isinstance(dtype, str) else dtype.name


# ----------------------------------------------------------------- state dicts
def state_dict(optimizer):
    """``optimizer``'s state dict (see ``Optimizer.state_dict``)."""
    groups, params, state, absmax = [], [], [], []
    first_holder = {}           # id(schedule) -> first group holding it
    for i, (group, b) in enumerate(zip(optimizer.param_groups, optimizer.group_buffers)):
        options = {}
        for key, value in group.items():
            if key == "params":
                continue
            if key == "lr" and callable(value):
                options[key] = schedule_to_json(value, i)
                shared = first_holder.setdefault(id(value), i)
                if shared != i:
                    options[key]["shared_with"] = shared
            else:
                options[key] = jsonable(value, f"param group {i}: {key}")
        entry = {"options": options, "shapes": [list(s) for s in b.param.shapes],
                 "dtype": b.param.dtype.name, "step": b.steps}
        if _name(b.state_dtype) != b.param.dtype.name:
            entry["state_dtype"] = _name(b.state_dtype)
        scalar_state = getattr(b, "scalar_state", None)
        if scalar_state:
            entry["scalar_state"] = {k: float(v) for k, v in scalar_state.items()}
        groups.append(entry)
        params.append(to_host_flat(b.param))
        if b.eight_bit is not None:
            state.append({n: s.data.codes.copy() for n, s in b.state.items()})
            absmax.append({n: b.eight_bit.scales(s.data).copy() for n, s in b.state.items()})
        else:
            state.append({n: to_host_flat(s) for n, s in b.state.items()})
    sd = {"format": CHECKPOINT_FORMAT, "algorithm": optimizer.rule.name,
          "param_groups": groups, "params": params, "state": state}
    storage = _storage_options(optimizer)
    if storage:
        sd["storage"] = storage
        if optimizer.master_weights:
            sd["master"] = [to_host_flat(b.master) for b in optimizer.group_buffers]
        if optimizer.state_dtype in EIGHT_BIT:
            sd["absmax"] = absmax
    if optimizer.max_grad_norm is not None:
        # a constructor option, not state: ``from_checkpoint`` restores it,
        # ``load_state_dict`` leaves the receiving optimizer's own setting
        sd["max_grad_norm"] = float(optimizer.max_grad_norm)
    return sd


def _storage_options(optimizer):
    """The optimizer's storage options as JSON, or {} when all are defaults."""
    options = {key: getattr(optimizer, key) for key in STORAGE_OPTIONS}
    if options["state_dtype"] is not None:
        options["state_dtype"] = _name(options["state_dtype"])
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
    for i, (group, b, plan) in enumerate(zip(optimizer.param_groups, optimizer.group_buffers,
                                             plans)):
        options, params, state, steps, schedule, scalar_state = plan
        current = group.get("lr")
        for key in [k for k in group if k != "params"]:
            del group[key]
        group.update(options)
        if schedule is not None:
            config, sched_state, fresh, shared_with = schedule
            if shared_with is not None:
                group["lr"] = built[shared_with]
            elif getattr(current, "to_config", None) and same_config(current, config) \
                    and not any(current is x for x in built.values()):
                current.load_state_dict(sched_state)   # checked on ``fresh`` already
                group["lr"] = current
            else:
                group["lr"] = fresh
            built[i] = group["lr"]
        master = None
        if masters is not None:
            master = [_trusted_master(m, p) if optimizer.master_weights is True
                      else np.array(m) for m, p in zip(segments(masters[i], b.master), params)]
        b.restore(params, master, state, steps, scalar_state, optimizer.step_options(group))


def _trusted_master(master, param):
    """A copy of a loaded float32 master array, trusted only where it rounds to the
    loaded 16-bit ``param`` (a split master's correction always makes a master
    that rounds to its param) (a dict whose ``params`` were edited or converted
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
    if not isinstance(given, dict) or set(given) - set(STORAGE_OPTIONS):
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
    n = len(optimizer.group_buffers)
    if optimizer.master_weights:
        masters = sd.get("master")
        if not isinstance(masters, (list, tuple)) or len(masters) != n:
            raise ValueError(f"{where}: 'master' must hold one array per parameter group "
                             f"({n})")
        for i, (m, b) in enumerate(zip(masters, optimizer.group_buffers)):
            _checked_array(m, b.master, f"{where}, param group {i}: master")
    elif "master" in sd:
        raise ValueError(f"{where} holds master weights; this optimizer keeps none")
    for key in ("param_groups", "params", "state"):
        if not isinstance(sd[key], (list, tuple)) or len(sd[key]) != n:
            got = len(sd[key]) if isinstance(sd[key], (list, tuple)) else type(sd[key]).__name__
            raise ValueError(f"{where}: {key!r} must hold one entry per parameter group "
                             f"({n}), got {got}")
    plans, schedules = [], []
    for i, (b, current, g, p, s) in enumerate(zip(optimizer.group_buffers, optimizer.param_groups,
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
        if g.get("state_dtype", g["dtype"]) != _name(b.state_dtype):
            raise ValueError(f"{at} has state dtype {g.get('state_dtype', g['dtype'])}, "
                             f"this optimizer's is {_name(b.state_dtype)}")
        steps = g["step"]
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            raise ValueError(f"{at}: step must be an integer >= 0, got {steps!r}")
        options, schedule = _options_from_json(optimizer, current, g["options"], at,
                                               schedules)
        try:
            options["lr"] = resolve_lr(options["lr"], int(steps))
            optimizer.check_group(options, b.param.dtype, None, b.state_dtype)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{at}: {exc}") from None
        if schedule is not None:
            options["lr"] = schedule[2]
        schedules.append(schedule)
        scalar_state = _scalar_state(b, g.get("scalar_state"), at)
        params = segments(_checked_array(p, b.param, f"{at}: params"), b.param)
        needed = rule.state_for(**optimizer.step_options(options))
        missing = [name for name in needed if name not in s]
        unknown = [name for name in s if name not in rule.state]
        if missing or unknown:
            raise ValueError(f"{at}: state arrays missing {missing}, unknown {unknown} "
                             f"(algorithm {rule.name!r} has {list(rule.state)})")
        if b.eight_bit is not None:
            state = {name: _checked_eight_bit(sd, i, name, a, b, at) for name, a in s.items()}
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
    names = optimizer.option_names()
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
    schedule = schedule_from_json(lr, at, earlier)
    options["lr"] = schedule[2]
    return options, schedule


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


def _checked_eight_bit(sd, index, name, codes, buffers, at):
    """(codes, absmax) of an 8-bit state array, checked against the group's layout."""
    n = len(buffers.param.data)
    blocks = buffers.eight_bit.blocks(n)
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
    problem = _eight_bit.absmax_problem(block_max)
    if not problem and buffers.state_dtype != "int8" and np.signbit(block_max).any():
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
    names = set(target.option_names())
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
