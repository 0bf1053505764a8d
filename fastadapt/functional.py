"""The functional API: one in-place, fused update step per call.

Each function follows ``torch.optim``'s single-tensor path to the letter (same
names, defaults and formulas), reads every array once and writes every updated
array once. Arrays may have any shape but must share one shape and one dtype
(float32 or float64), be C-contiguous, distinct, and writeable where written;
or be stored narrower than the math: bfloat16 / float16 params (with an optional
float32 ``master_param``, or ``stochastic_rounding``), float32 gradients for
them, float32 or bfloat16 state (see :mod:`fastadapt._storage` for the rules).
Per-step scalars (bias corrections, the decayed learning rate) are computed here
in float64 and cast once to the arrays' dtype; all element math runs in that
dtype. A call that raises has changed nothing.

Every function here is derived from its rule's declaration in
:mod:`fastadapt.rules`: signature (state arrays, then keyword-only ``step``,
the hyper-parameters with torch's defaults and ``grad_scale``: a number or a
string where a state array goes is a TypeError that says so), checks and
docstring. ``step.plan`` returns the checked call as an
:class:`~fastadapt._dispatch.Update` without applying it.

A call on the same arrays as the last call with that ``param`` (a training
loop's) checks its hyper-parameters, step, grad_scale, scalar state and
rounding options as any call does, and of the arrays only what could have
changed (identity, shape, dtype, flags): see
:class:`~fastadapt._dispatch.LaunchCache`. Its cost is a few times a bare
call of the compiled loop (``fastadapt bench --sections percall``).
"""
import math
import numbers
import operator
from typing import NamedTuple

import numpy as np

from . import _args, _eight_bit, _storage
from ._arrays import is_device_array
from ._dispatch import LaunchCache, Update, _check_host_array, prepare
from .kernels.loops import Signature
from .kernels.convert16 import stream_key
from .rules import RULES, kernel_specs

# Steps beyond this compute their scalars as this step: every power beta**step
# has underflowed to 0 long before, so the scalars have reached their limits.
_STEP_CAP = 2 ** 64

_SIGNATURES = {kernel: Signature(kernel, state) for kernel, state in kernel_specs().items()}


class _Checked(NamedTuple):
    """The hyper-parameters of a functional step's last call, when all were
    immutable, and what their check gave (see ``_planner``'s ``options_of``)."""
    values: tuple       # the objects passed
    options: dict       # checked, by name
    extras: tuple       # the launch cache's key for each rounding mode: (uses, rounding),
                        # uses saying which optional state arrays they use (bools)
    sign: float         # the gradient's: -1.0 with maximize
    template: list      # the scalars in the kernel's order, the options' part filled in
    slots: tuple        # (index, name) of the step's part in ``template``


def _planner(rule, fn_name):
    """The checks and host scalars of ``rule``: ``(plan, run, nearest)``.

    ``plan(param, grad, state, hyper, step, grad_scale, storage, carried)``
    returns the checked call as an :class:`Update`. ``run(objs, hyper, step,
    grad_scale, stochastic_rounding, seed, rounding_offset, carried)``, with
    ``objs = (param, grad, *state, master_param)``, applies the same update
    and returns the new scalar state: it checks the per-call values
    (hyper-parameters, step, grad_scale, scalar state, rounding) every call,
    and the arrays in full unless the same arrays, unchanged, were checked by
    an earlier call (see :class:`~fastadapt._dispatch.LaunchCache`).
    ``nearest`` holds what the per-call path of the step itself reads (see
    :func:`derive_step`): the last call's :class:`_Checked`, the remembered
    launches and the launch of a remembered call rounding to nearest.
    """
    signature = _SIGNATURES[rule.kernel]
    order = signature.scalars
    hyper = [h for h in rule.hyper if not h.setup]
    specs = rule.state_specs
    optional = [spec for spec in specs if spec.when is not None]
    written = frozenset(("param",) + rule.state)

    checks = [(h.name, h.check) for h in hyper]
    ordered = operator.itemgetter(*order) if len(order) > 1 else (lambda d: (d[order[0]],))

    scalar_state = rule.scalar_state
    step_scalars = rule.step_scalars
    sign_slot = order.index("grad_sign")
    launches = LaunchCache()

    # The hyper-parameters of the last call, when all were immutable (numbers,
    # tuples of numbers), and their checked options: the same objects again
    # (defaults, constants, an unchanged schedule value) check the same.
    last = [_Checked((object(),) * len(checks), None, None, None, None, None)]
    if all(isinstance(spec.when, str) for spec in optional):
        whens = tuple(spec.when for spec in optional)

        def used(options):
            return tuple([options[w] for w in whens])    # checked flags: bools
    else:
        def used(options):
            return tuple([spec.used(options) for spec in optional])

    def options_of(values):
        """The :class:`_Checked` record of ``values``: the checked options,
        the plan keys (which optional state they use, a tuple of bools, with
        each rounding mode: see ``run``), the gradient's sign, and
        for a rule without scalar state the scalars in the kernel's order with
        the options' part filled in (None at the step's and grad_sign's
        places) and those places of the step's part."""
        if all(map(operator.is_, values, last[0].values)):
            return last[0]
        options = {name: check(v) for (name, check), v in zip(checks, values)}
        if rule.check is not None:
            rule.check(options)
        uses = used(options)
        template = slots = None
        if not scalar_state:
            fixed = rule.fixed_scalars(options)
            template = [fixed.get(name) for name in order]
            slots = tuple((i, name) for i, name in enumerate(order)
                          if name not in fixed and name != "grad_sign")
        out = _Checked(values, options, ((uses, False), (uses, True)),
                       -1.0 if options.get("maximize") else 1.0, template, slots)
        if all(map(_immutable, values)):
            last[0] = out
        return out

    if not checks:                  # nothing to check: every call's options
        options_of(())

    takes_step = rule.takes_step

    def step_and_scale(step, grad_scale):
        """The checked step (a float; None for a rule without one) and grad_scale."""
        t = None
        if takes_step:
            t = float(step) if type(step) is int and 1 <= step <= _STEP_CAP else \
                float(min(_args.step(step), _STEP_CAP))
        scale = 1.0 if grad_scale is None else _args.real(
            "grad_scale", grad_scale, 0.0, math.inf, low_open=True, high_open=True)
        return t, scale

    def checked(values, step, grad_scale):
        return (options_of(values).options, *step_and_scale(step, grad_scale))

    def arrays_of(param, grad, state, options):
        arrays = {"param": param, "grad": grad}
        for spec, array in zip(specs, state):
            if array is not None and not isinstance(array, np.ndarray):
                _check_state_argument(fn_name, spec, array)
            if spec.when is None or spec.used(options):
                if array is None:
                    raise ValueError(f"{fn_name}({spec.when_doc}) needs {spec.name}")
                arrays[spec.name] = array       # the dispatcher checks it
            else:
                if array is not None:
                    _check_unused_state(spec.name, array, param)
                arrays[spec.name] = None
        return arrays

    def scalars_of(options, t, scale, storage, carried):
        master_param, stochastic_rounding, seed, offset = storage
        new_state = None
        if scalar_state:
            current = {s.name: s.start(options) if v is None else
                       _args.real(s.name, v, -math.inf, math.inf, True, True)
                       for s, v in zip(scalar_state, carried)}
            scalars, new_state = rule.scalars(options, t, current)
        else:
            scalars = rule.scalars(options, t)
        scalars["grad_sign"] = (-1.0 if options.get("maximize") else 1.0) / scale
        key = None
        if _args.flag("stochastic_rounding", stochastic_rounding):
            if seed is None:
                raise TypeError(f"{fn_name}(stochastic_rounding=True) needs seed= (an "
                                "int in [0, 2**64))")
            key = (*stream_key(_args.seed(seed), int(t) if t is not None else 0),
                   _args.rounding_offset(offset))
        elif seed is not None:
            raise ValueError(f"{fn_name}: seed is for stochastic_rounding=True")
        elif offset != 0:
            raise ValueError(f"{fn_name}: rounding_offset is for stochastic_rounding=True")
        return ordered(scalars), new_state, key

    def plan(param, grad, state, values, step, grad_scale, storage, carried=()):
        options, t, scale = checked(values, step, grad_scale)
        arrays = arrays_of(param, grad, state, options)
        scalars, new_state, key = scalars_of(options, t, scale, storage, carried)
        return Update(rule.kernel, arrays, written, scalars, new_state, storage[0], key)

    remembered, keep = launches.entries.get, launches.keep
    is_ = operator.is_

    def run(objs, values, step, grad_scale, rounding, seed, offset, carried=()):
        # The per-call path: checked() with the hyper-parameters' check
        # skipped when they are the last call's (immutable) objects, and the
        # arrays' checks when they are a remembered call's arrays, unchanged
        # (LaunchCache.find, inlined).
        known = last[0]
        if not all(map(is_, values, known.values)):
            known = options_of(values)
        _, options, extras, sign, template, slots = known
        t, scale = step_and_scale(step, grad_scale)
        # what decides the plan besides the arrays: the optional state the
        # options use, and the rounding mode (a bool; anything else that
        # passes for one is checked in full every call)
        args = None
        if type(rounding) is bool:
            extra = extras[rounding]
            entry = remembered(id(objs[0]))
            if entry is not None and entry[0] == extra:
                args = entry[1](objs)
        if args is None:
            param, grad, *state, master = objs
            arrays = arrays_of(param, grad, state, options)
            storage = (master, rounding, seed, offset)
            scalars, new_state, key = scalars_of(options, t, scale, storage, carried)
            update = Update(rule.kernel, arrays, written, scalars, new_state, master, key)
            launch = prepare(update) if type(rounding) is not bool else \
                keep(objs, extra, update)
            launch(scalars, key)
            return new_state
        if scalar_state or rounding or seed is not None or offset != 0:
            scalars, new_state, key = scalars_of(options, t, scale,
                                                 (objs[-1], rounding, seed, offset), carried)
            entry[2](args, scalars, key)
            return new_state
        launch_nearest(entry, args, options, template, slots, sign / scale, t)

    def launch_nearest(entry, args, options, template, slots, grad_sign, t):
        # scalars_of() for a rule without scalar state, rounding to nearest:
        # the options' part is the template's, and the driver is called
        # directly with the scalars as an array of its dtype (entry[2]'s work)
        scalars = template.copy()
        if step_scalars is not None:
            by_step = step_scalars(options, t)
            for i, name in slots:
                scalars[i] = by_step[name]
        scalars[sign_slot] = grad_sign
        entry[3](*args, np.array(scalars, entry[4]))
    return plan, run, (last, remembered, launch_nearest)


_NUMBERS = (float, int, bool)
_NUMPY_NUMBERS = (np.number, np.bool_)


def _immutable(value):
    """Whether ``value`` is a number (a Python float, int or bool, a NumPy
    number or bool scalar) or a tuple of numbers: an object whose check
    cannot give another answer later. (Not a NumPy ``void`` scalar, which may
    be a view into an array.)"""
    if type(value) in _NUMBERS or isinstance(value, _NUMPY_NUMBERS):
        return True
    return type(value) is tuple and all(
        type(v) in _NUMBERS or isinstance(v, _NUMPY_NUMBERS) for v in value)


def _check_state_argument(fn_name, spec, a):
    """A number or a string where a state array goes is a hyper-parameter
    given by position."""
    if isinstance(a, (numbers.Number, str, bytes)):
        what = "an array" if spec.when is None else "an array or None"
        raise TypeError(f"{fn_name}: {spec.name} must be {what}, got {type(a).__name__} "
                        f"{a!r}; hyper-parameters are keyword-only (e.g. "
                        f"{fn_name}(param, grad, ..., lr=0.1))")


def _check_unused_state(name, a, param):
    """State the options do not use, given anyway: still an array the
    dispatcher would take, of ``param``'s shape."""
    if isinstance(a, _eight_bit.Blockwise8):
        return
    if not (isinstance(a, np.ndarray) or is_device_array(a)):
        _check_host_array(name, a, True)        # raises, naming what to pass
    if np.shape(a) != np.shape(param):
        raise ValueError(f"{name} has shape {np.shape(a)} but param has {np.shape(param)}")


_STORAGE_DOC = """\
master_param : float32, int16 or int8 array, optional
    For 16-bit ``param`` (bfloat16 or float16): a float32 copy of it, the
    shape of ``param``. The update runs on it and ``param`` receives it
    rounded to nearest, in the same pass. For bfloat16 ``param``, an int16
    or int8 array of its shape (zeros to start: the master equals the
    param) keeps a split master instead, in 2 or 1 bytes per element:
    ``param`` and the correction together are the master the update runs
    on, and both receive the new master's split (``param`` its nearest
    rounding, ties away from zero). int16 (``master_weights="bf16+16"``):
    the master's low 16 bits, so the master is the float32 one, exactly;
    int8 (``"bf16+8"``): a 24-bit master, the float32 result rounded to
    nearest on its last 8 bits, within ``2**-16 * |master|``. See
    ``fastadapt._storage.SPLIT_MASTER``.
stochastic_rounding : bool, default False
    For 16-bit ``param`` (bfloat16 or float16) without ``master_param``:
    store the new value rounded up or down at random, with the probability
    of its distance to each neighbour, so updates smaller than half an ulp
    still move ``param`` in expectation.
seed : int, optional
    Needed with ``stochastic_rounding``: the random bits come from a hash of
    (seed, step, element index) (step 0 for a rule without ``step``: pass a
    new seed each call), the same whatever the thread count or device.
rounding_offset : int, default 0
    With ``stochastic_rounding``: the index of ``param``'s first element in
    the stream. Updating ``whole[k:j]`` with ``rounding_offset=k`` draws the
    bits one call over ``whole`` would draw for those elements, so an array
    updated in pieces (a shard of it per process) rounds as if in one call."""

_KIND = {"Real": "float", "Pair": "(float, float)", "Flag": "bool"}


def _docstring(rule, fn_name):
    required = [s.name for s in rule.state_specs if s.when is None]
    optional = [s for s in rule.state_specs if s.when is not None]
    lines = [f"One {rule.torch_name} step, in place: {rule.summary}; "
             f"torch.optim.{rule.torch_name}'s semantics." if rule.in_torch
             else f"One {rule.torch_name} step, in place: {rule.summary}.",
             "", ".. code-block:: text", ""]
    lines += ["    " + line for line in rule.pseudocode.splitlines()]
    lines += ["", "Parameters", "----------",
              ", ".join(["param", "grad"] + required) + " : arrays of one shape and dtype",
              "    ``param``" + (" and the state arrays are" if required else " is")
              + " updated in place; ``grad`` is read."]
    for s in optional:
        lines += [f"{s.name} : array, optional",
                  f"    Needed (and updated in place) when {s.when_doc}; otherwise not "
                  "touched (but still checked: an array of ``param``'s shape, or None)."]
    for s in rule.state_specs:
        if s.init is not None or s.doc:
            start = f" Starts at torch's ``{s.init}``." if s.init else ""
            lines += [f"    ({s.name}: {s.doc}.{start})" if s.doc else
                      f"    ({s.name}:{start})"]
    if rule.takes_step:
        lines += ["step : int", "    The 1-based number of the step being taken (the first "
                  "step is 1). Beyond 2**64 the scalars are computed as at 2**64, where "
                  "every power of a beta has reached 0."]
    for h in rule.hyper:
        if h.setup:
            continue
        lines += [f"{h.name} : {_KIND[type(h).__name__]}, "
                  f"default {h.default!r} ({h.describe()})",
                  f"    {h.doc[:1].upper() + h.doc[1:]}." if h.doc else ""]
    lines += ["grad_scale : float, optional",
              "    A finite number > 0 the gradient is divided by inside the kernel (a "
              "loss scale to undo, times a clipping factor's inverse), folded into the "
              "gradient's sign: ``g = grad * ((-1 if maximize else 1) / grad_scale)``. "
              "None: 1."]
    for sc in rule.scalar_state:
        start = f"``{sc.initial}``" if isinstance(sc.initial, str) else repr(sc.initial)
        lines += [f"{sc.name} : float, optional",
                  f"    {sc.doc[:1].upper() + sc.doc[1:]}. None (the first step): {start}."]
    lines += _STORAGE_DOC.splitlines()
    if rule.scalar_state:
        names = ", ".join(f"``{sc.name}``" for sc in rule.scalar_state)
        lines += ["", "Returns", "-------", "dict",
                  f"    The scalar state after this step ({names}), to pass back as "
                  "keyword arguments to the next."]
    if rule.notes:
        lines += ["", rule.notes]
    return "\n".join(line for line in lines if line is not None).rstrip() + "\n"


def derive_step(rule):
    """The functional step of ``rule``, from its declaration."""
    fn_name = f"{rule.name}_step"
    required = [s.name for s in rule.state_specs if s.when is None]
    optional = [s.name for s in rule.state_specs if s.when is not None]
    hyper = [h.name for h in rule.hyper if not h.setup]
    params = ["param", "grad", *required, *(f"{s}=None" for s in optional), "*"]
    if rule.takes_step:
        params.append("step")
    params += [f"{h}=_defaults[{h!r}]" for h in hyper]
    params += [f"{s.name}=None" for s in rule.scalar_state] + ["grad_scale=None"]
    params += ["master_param=None", "stochastic_rounding=False", "seed=None",
               "rounding_offset=0"]
    carried = ", ".join(s.name for s in rule.scalar_state)
    carried = f", ({carried},)" if carried else ""
    state = "".join(f"{name}, " for name in rule.state)
    values = ", ".join(hyper) + ("," if len(hyper) == 1 else "")
    step_arg = "step" if rule.takes_step else "None"
    objs = f"(param, grad, {state} master_param)"
    # the step and its plan, with the same signature; the step calls the
    # runner directly (no *args layer: this is the per-call path)
    source = f"def {fn_name}({', '.join(params)}):\n"
    if not rule.scalar_state:
        # The per-call path of a training loop, written out: the last call's
        # hyper-parameter objects again, a whole step, rounding to nearest,
        # and the arrays of a remembered call, unchanged; anything else is
        # run()'s (which checks and plans what this path takes as known).
        # (its locals start with _: no parameter does)
        same = [f"{h} is _values[{i}]" for i, h in enumerate(hyper)]
        same += ["grad_scale is None", "stochastic_rounding is False", "seed is None",
                 "rounding_offset == 0"]
        if rule.takes_step:
            same.append("type(step) is int and 1 <= step <= _STEP_CAP")
        t = "float(step)" if rule.takes_step else "None"
        source += (f"    _known = _last[0]\n"
                   f"    _values = _known.values\n"
                   f"    if {' and '.join(same)}:\n"
                   f"        _entry = _remembered(id(param))\n"
                   f"        if _entry is not None and _entry[0] == _known.extras[0]:\n"
                   f"            _args = _entry[1]({objs})\n"
                   f"            if _args is not None:\n"
                   f"                return _launch(_entry, _args, _known.options, "
                   f"_known.template, _known.slots, _known.sign, {t})\n")
    source += (f"    return _run({objs}, ({values}), {step_arg}, "
               f"grad_scale, stochastic_rounding, seed, rounding_offset{carried})\n"
               f"def plan({', '.join(params)}):\n"
               f"    return _plan(param, grad, ({state}), ({values}), {step_arg}, grad_scale, "
               f"(master_param, stochastic_rounding, seed, rounding_offset){carried})\n")
    plan, run, (last, remembered, launch_nearest) = _planner(rule, fn_name)
    namespace = {"_plan": plan, "_run": run, "_defaults": rule.defaults, "_last": last,
                 "_remembered": remembered, "_launch": launch_nearest, "_STEP_CAP": _STEP_CAP}
    exec(compile(source, f"<fastadapt.functional.{fn_name}>", "exec"), namespace)
    step = namespace[fn_name]
    step.__module__ = namespace["plan"].__module__ = __name__
    step.__doc__ = _docstring(rule, fn_name)
    step.plan = namespace["plan"]
    step.plan.__qualname__ = f"{fn_name}.plan"
    step.plan.__doc__ = (f"``{fn_name}``'s checks: the call it would make, as an "
                         ":class:`~fastadapt._dispatch.Update`, without applying it.")
    return step


#: Rule -> its functional step: the registry's, and any other rule's once asked for.
_STEPS = {rule: derive_step(rule) for rule in RULES.values()}


def step_for(rule):
    """The functional step of ``rule`` (a :class:`~fastadapt.rules.Rule`):
    ``fastadapt.<name>_step`` for a rule of the registry; a rule declared
    elsewhere (on one of the registry's kernels) gets its step derived once."""
    step = _STEPS.get(rule)
    if step is None:
        step = _STEPS[rule] = derive_step(rule)
    return step


__all__ = []
for _step in _STEPS.values():
    globals()[_step.__name__] = _step
    __all__.append(_step.__name__)
del _step
