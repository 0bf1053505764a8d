r"""Optimizer classes: torch.optim-style objects over the fused functional steps.

One generic :class:`Optimizer` is driven by a :class:`~fastadapt.rules.Rule` of
the registry; each rule's class (:class:`Adam`, :class:`NAdam`, :class:`Lion`, ...
one per entry of :data:`fastadapt.RULES`) is derived from the declaration: its
rule, its signature (torch's names and defaults) and its docstring.

How it differs from torch.optim
-------------------------------
The optimizer **owns** the parameters. At construction the arrays of each
parameter group are copied into one contiguous :class:`~fastadapt.FlatBuffer`
(and the gradients and every state array get a buffer of the same layout), so
that a step is one fused kernel call per group, whatever the number of arrays.
The arrays passed in are *not* updated: use ``opt.params`` from then on (views
into the flat buffer, with the original shapes) and write gradients into
``opt.grads`` (no copy) or pass them to ``opt.step(grads)``::

    opt = fastadapt.Adam([w, b], lr=1e-3)
    w, b = opt.params                 # the arrays the optimizer updates
    for batch in data:
        gw, gb = opt.grads
        gw[...] = ...; gb[...] = ...  # or: opt.step([grad_w, grad_b])
        opt.step()

Step counts are kept per group (torch keeps one per parameter; they are equal
unless parameters are skipped, which fastadapt never does), and ``lr`` may be a
number or a schedule (any callable of the number of completed steps, see
:mod:`fastadapt.schedules`).
"""
import math
import numbers
import operator

import numpy as np

from . import _args, checkpoint as _ckpt
from ._dispatch import prepare
from .flat import FlatBuffer
from .rules import RULES
from .schedules import from_config, resolve_lr

__all__ = ["Optimizer"]   # and one class per rule, derived at the bottom

CHECKPOINT_FORMAT = 1


class _GroupBuffers:
    """The flat buffers behind one parameter group."""

    __slots__ = ("param", "grad", "state", "scalar_state", "steps", "validated", "_launch",
                 "_launch_arrays")

    def __init__(self, param):
        self.param = param                  # FlatBuffer of the parameters
        self.grad = param.zeros_like()      # FlatBuffer of the gradients
        self.state = {}                     # state name -> FlatBuffer
        self.scalar_state = {}              # the rule's scalar state (NAdam's mu_product)
        self.steps = 0                      # completed steps
        self.validated = None               # the options last checked (lr excluded)
        self._launch = None                 # the checked kernel launch over these buffers
        self._launch_arrays = ()            # ... and the arrays it was checked for

    def apply(self, update):
        """Apply a planned update, checking the arrays only when they differ
        from last step's (the buffers are the optimizer's own; they change only
        when an option adds a state buffer or a checkpoint replaces one)."""
        arrays = [a for a in update.arrays.values() if a is not None]
        if len(arrays) != len(self._launch_arrays) or any(
                a is not b for a, b in zip(arrays, self._launch_arrays)):
            self._launch = prepare(update)
            self._launch_arrays = arrays
        self._launch(update.scalars)


class Optimizer:
    """Base class: an optimizer driven by one rule of :data:`fastadapt.RULES`.

    Not instantiated directly; a subclass sets :attr:`rule` and passes every
    hyper-parameter of its signature to ``__init__`` as a keyword.

    Parameters
    ----------
    params : array, list of arrays, or list of dicts
        The parameters: one array, a list of arrays (one group), or a list of
        parameter groups ``{"params": [arrays...], "lr": ..., ...}`` whose keys
        override the optimizer's defaults for that group, as in torch. Arrays
        are float32 or float64 (one dtype per group), NumPy or CUDA arrays.
        **They are copied**: read and use ``opt.params`` afterwards.
    **defaults
        The hyper-parameters, torch's names; ``lr`` may be a schedule.

    Attributes
    ----------
    param_groups : list of dict
        One dict per group: ``"params"`` (the views the optimizer updates) and
        the hyper-parameters. Mutable as in torch: a changed value takes effect
        at the next step (and is validated then, before anything is written).
        The ``"params"`` entry itself is fixed at construction. Turning on an
        option that needs more state after steps were taken (``amsgrad``,
        ``momentum``, ``centered``) starts that state at zero (torch raises for
        Adam and RMSprop; for SGD it starts the buffer at the gradient, which
        differs from a zero start only when ``dampening != 0``).
    defaults : dict
        The constructor's hyper-parameters.
    rule : Rule
        The update rule (class attribute).
    """

    #: The update rule; set by each subclass.
    rule = None
    #: State arrays that do not start at zero: state name -> hyper-parameter
    #: holding the initial value (Adagrad's ``initial_accumulator_value``).
    state_init = {}

    _by_rule = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.rule is not None:
            Optimizer._by_rule.setdefault(cls.rule.name, cls)

    def __init__(self, params, **defaults):
        if self.rule is None:
            raise TypeError("Optimizer is a base class; use one of its subclasses: "
                            + ", ".join(r.torch_name for r in RULES.values()))
        missing = [k for k in self._option_names() if k not in defaults]
        if missing:
            raise TypeError(f"{type(self).__name__}: missing default(s) {missing}")
        self.defaults = dict(defaults)
        groups = _normalise_groups(params)
        several = len(groups) > 1
        seen = set()
        self.param_groups, self._groups = [], []
        for i, given in enumerate(groups):
            arrays = given["params"]
            for a in arrays:
                if id(a) in seen:
                    raise ValueError("some parameters appear more than once (in one group "
                                     "or in several); each array may be given once")
                seen.add(id(a))
            dtypes = sorted({_dtype_name(a) for a in arrays})
            if len(dtypes) > 1:
                raise TypeError(f"param group {i} mixes dtypes {dtypes}; the parameters of "
                                "one group share one flat buffer and so one dtype (put "
                                "each dtype in its own group)")
            group = {**self.defaults, **{k: v for k, v in given.items() if k != "params"}}
            self._validate(group, np.dtype(dtypes[0]), i if several else None)
            buffers = _GroupBuffers(FlatBuffer.from_arrays(arrays, dtype=dtypes[0]))
            for name in self.rule.state_for(**self._options(group)):
                self._new_state(buffers, group, name)
            buffers.scalar_state = self._initial_scalar_state(group)
            buffers.validated = self._options(group)
            del buffers.validated["lr"]
            self.param_groups.append({"params": list(buffers.param.views), **group})
            self._groups.append(buffers)

    # ------------------------------------------------------------- options
    @classmethod
    def _option_names(cls):
        """Hyper-parameters: the functional step's plus the state initialisers."""
        return tuple(cls.rule.defaults) + tuple(
            k for k in cls.state_init.values() if k not in cls.rule.defaults)

    def _options(self, group):
        """The functional step's keyword arguments held by ``group`` (lr unresolved)."""
        return {k: group[k] for k in self.rule.defaults}

    def _validate(self, group, dtype, index=None):
        """Check ``group``'s hyper-parameters by a dry run of the functional step
        on zero-size arrays, so errors are the functional API's own."""
        try:
            options = self._options(group)
            lr = options["lr"]
            if callable(lr):
                options["lr"] = resolve_lr(lr, 0)
            for key in set(self.state_init.values()) - set(self.rule.defaults):
                _initial_value(key, group[key])   # the step's own are checked below
            state = {name: np.empty(0, dtype) for name in self.rule.state_for(**options)}
            if self.rule.takes_step:
                options["step"] = 1
            self.rule.step_fn(np.empty(0, dtype), np.empty(0, dtype), **state, **options)
            resolve_lr(lr, 0)       # a number: also finite (the functional allows inf)
        except KeyError as exc:
            raise _in_group(ValueError(f"missing hyper-parameter {exc.args[0]!r}"), index)
        except (TypeError, ValueError) as exc:
            raise _in_group(exc, index)

    def _initial_scalar_state(self, group):
        options = dict(group)
        if callable(options.get("lr")):
            options["lr"] = resolve_lr(options["lr"], 0)
        return {s.name: s.start(options) for s in self.rule.scalar_state}

    def _new_state(self, buffers, group, name):
        buffer = buffers.param.zeros_like()
        key = self.state_init.get(name)
        if key is not None:
            value = group[key]      # a set-up option, or one of the step's (Rprop's lr)
            value = float(resolve_lr(value, buffers.steps) if callable(value) else value)
            if value != 0.0:
                buffer.data[:] = value
        buffers.state[name] = buffer
        return buffer

    # ------------------------------------------------------------- arrays
    @property
    def params(self):
        """The parameters (views into the flat buffers, original shapes), all groups in order."""
        return [v for b in self._groups for v in b.param.views]

    @property
    def grads(self):
        """The gradient arrays matching :attr:`params`; write gradients here (no copy)."""
        return [v for b in self._groups for v in b.grad.views]

    @property
    def flat_params(self):
        """Per group, the flat parameter buffer's ``data`` (padding included)."""
        return [b.param.data for b in self._groups]

    @property
    def flat_grads(self):
        """Per group, the flat gradient buffer's ``data`` (padding included)."""
        return [b.grad.data for b in self._groups]

    @property
    def state(self):
        """Per group, ``{"step": completed steps, <state name>: [views...]}``.

        The views alias the optimizer's state buffers (torch's names, except
        Adagrad's ``state_sum`` for torch's ``sum``).
        """
        return [{"step": b.steps, **{n: list(s.views) for n, s in b.state.items()}}
                for b in self._groups]

    @property
    def scalar_state(self):
        """Per group, the rule's scalar state (``{}`` for rules without): NAdam's
        ``mu_product``, ASGD's ``eta`` and ``mu``, as floats."""
        return [dict(b.scalar_state) for b in self._groups]

    def get_lr(self):
        """The learning rate each group's next step will use."""
        return [resolve_lr(g["lr"], b.steps) for g, b in zip(self.param_groups, self._groups)]

    def zero_grad(self):
        """Set every gradient to zero."""
        for b in self._groups:
            b.grad.data[:] = 0  # works for NumPy, CuPy, torch and Numba device arrays

    # ------------------------------------------------------------- stepping
    def step(self, grads=None):
        """Apply one update to every group: one fused kernel call per group.

        Parameters
        ----------
        grads : optional
            ``None`` (the default): use the gradients already in :attr:`grads`.
            Otherwise they are copied into the gradient buffers first:

            * a list of arrays, one per parameter (the order of :attr:`params`,
              matching shapes);
            * a single 1-D array, for an optimizer with one group: either the
              parameters' gradients concatenated (``sum of sizes`` elements,
              like ``torch.nn.utils.parameters_to_vector``) or an array laid
              out as the flat buffer (``len(opt.flat_grads[0])`` elements,
              padding included);
            * with several groups, a list of such 1-D arrays, one per group.

            A list whose entries all have the parameters' shapes is read as
            per-parameter (if each group holds one parameter both readings
            coincide).
        """
        if grads is not None:
            self._set_grads(grads)
        calls = [self._prepare(i, g, b)
                 for i, (g, b) in enumerate(zip(self.param_groups, self._groups))]
        plan = self.rule.step_fn.plan
        updates = [plan(param, grad, **kwargs) for param, grad, kwargs in calls]
        for b, update in zip(self._groups, updates):
            b.apply(update)
            b.steps += 1
            if update.state is not None:
                b.scalar_state = update.state

    def _prepare(self, index, group, buffers):
        """The functional call for ``group``; validates only what changed."""
        options = self._options(group)
        lr = options.pop("lr")
        if options != buffers.validated:
            self._validate(group, buffers.param.dtype, index if len(self._groups) > 1 else None)
            buffers.validated = options
            options = dict(options)
        options["lr"] = resolve_lr(lr, buffers.steps)
        for name in self.rule.state_for(**options):
            state = buffers.state[name] if name in buffers.state else \
                self._new_state(buffers, group, name)
            options[name] = state.data
        if self.rule.takes_step:
            options["step"] = buffers.steps + 1
        options.update(buffers.scalar_state)
        return buffers.param.data, buffers.grad.data, options

    def _set_grads(self, grads):
        groups = self._groups
        if hasattr(grads, "shape"):
            if len(groups) != 1:
                raise ValueError(f"a single flat gradient array is for one group; this "
                                 f"optimizer has {len(groups)}: pass a list of "
                                 f"{len(groups)} flat arrays, one per group")
            grads = [grads]
        grads = list(grads)
        params = self.params
        if len(grads) == len(params) and all(
                tuple(getattr(g, "shape", ())) == tuple(p.shape) for g, p in zip(grads, params)):
            plan, start = [], 0
            for b in groups:
                plan.append((b, grads[start:start + len(b.grad)]))
                start += len(b.grad)
        elif len(grads) == len(groups):
            plan = [(b, _split_flat(b.grad, g, i)) for i, (b, g) in enumerate(zip(groups, grads))]
        else:
            raise ValueError(
                f"expected {len(params)} gradient arrays (one per parameter, shapes "
                f"{[tuple(p.shape) for p in params]}) or {len(groups)} flat array(s) "
                f"(one per group), got {len(grads)} arrays")
        for b, arrays in plan:
            if not all(a is v for a, v in zip(arrays, b.grad.views)):
                b.grad.copy_from(arrays)

    # ------------------------------------------------------------- checkpoints
    def state_dict(self):
        """Everything needed to resume, as host NumPy arrays and JSON-able values.

        Returns
        -------
        dict
            ``{"format": 1, "algorithm": rule name, "param_groups": [...],
            "params": [...], "state": [...]}`` where each ``param_groups``
            entry is ``{"options": hyper-parameters, "shapes": [...],
            "dtype": "float32", "step": completed steps}`` (a schedule ``lr``
            is ``{"schedule": to_config(), "state": state_dict()}``), each
            ``params`` entry is the group's parameters concatenated into one
            1-D array (no padding) and each ``state`` entry maps state names to
            such arrays. Everything is a copy.
        """
        groups, params, state = [], [], []
        for i, (group, b) in enumerate(zip(self.param_groups, self._groups)):
            options = {}
            for key, value in group.items():
                if key == "params":
                    continue
                if key == "lr" and callable(value):
                    options[key] = _schedule_to_json(value, i)
                else:
                    options[key] = _jsonable(value, f"param group {i}: {key}")
            groups.append({"options": options, "shapes": [list(s) for s in b.param.shapes],
                           "dtype": b.param.dtype.name, "step": b.steps,
                           "scalar_state": dict(b.scalar_state)})
            params.append(_ckpt.to_host_flat(b.param))
            state.append({n: _ckpt.to_host_flat(s) for n, s in b.state.items()})
        return {"format": CHECKPOINT_FORMAT, "algorithm": self.rule.name,
                "param_groups": groups, "params": params, "state": state}

    def load_state_dict(self, state_dict):
        """Restore parameters, state, step counts and hyper-parameters.

        Everything is checked before anything is copied: a ``state_dict`` of
        another algorithm, group count, shapes or dtype, with missing keys or
        invalid hyper-parameters raises ``ValueError`` and leaves the optimizer
        unchanged. A schedule ``lr`` is rebuilt with
        :func:`fastadapt.schedules.from_config`; if the group already holds a
        schedule with the same configuration, its state is loaded into that
        object (so references to it stay live).
        """
        plans = self._check_state_dict(state_dict)
        for group, b, plan in zip(self.param_groups, self._groups, plans):
            options, params, state, steps, schedule_state, scalar_state = plan
            b.param.copy_from(params)
            for name in list(b.state):
                if name not in state:
                    del b.state[name]
            for name, arrays in state.items():
                target = b.state[name] if name in b.state else b.param.zeros_like()
                target.copy_from(arrays)
                b.state[name] = target
            b.steps = steps
            b.scalar_state = scalar_state
            current = group.get("lr")
            for key in [k for k in group if k != "params"]:
                del group[key]
            group.update(options)
            if schedule_state is not None:
                config, sched_state = schedule_state
                if getattr(current, "to_config", None) and _same_config(current, config):
                    current.load_state_dict(sched_state)
                    group["lr"] = current
            b.validated = self._options(group)
            del b.validated["lr"]

    def _check_state_dict(self, sd):
        """Validate a state dict fully; return per group what to apply."""
        where = "optimizer state dict"
        if not isinstance(sd, dict):
            raise ValueError(f"{where} must be a dict, got {type(sd).__name__}")
        for key in ("format", "algorithm", "param_groups", "params", "state"):
            if key not in sd:
                raise ValueError(f"{where} is missing key {key!r}")
        if sd["format"] != CHECKPOINT_FORMAT:
            raise ValueError(f"{where} has format {sd['format']!r}; this fastadapt reads "
                             f"format {CHECKPOINT_FORMAT}")
        if sd["algorithm"] != self.rule.name:
            raise ValueError(f"{where} is for algorithm {sd['algorithm']!r}, this optimizer "
                             f"is {self.rule.name!r} ({type(self).__name__})")
        n = len(self._groups)
        for key in ("param_groups", "params", "state"):
            if not isinstance(sd[key], (list, tuple)) or len(sd[key]) != n:
                got = len(sd[key]) if isinstance(sd[key], (list, tuple)) else type(sd[key]).__name__
                raise ValueError(f"{where}: {key!r} must hold one entry per parameter group "
                                 f"({n}), got {got}")
        plans = []
        for i, (b, g, p, s) in enumerate(zip(self._groups, sd["param_groups"], sd["params"],
                                             sd["state"])):
            at = f"{where}, param group {i}"
            if not isinstance(g, dict) or not isinstance(s, dict):
                raise ValueError(f"{at}: malformed entry")
            for key in ("options", "shapes", "dtype", "step"):
                if key not in g:
                    raise ValueError(f"{at} is missing key {key!r}")
            try:
                shapes = [tuple(int(d) for d in shape) for shape in g["shapes"]]
            except (TypeError, ValueError):
                raise ValueError(f"{at}: malformed shapes {g['shapes']!r}") from None
            if shapes != b.param.shapes:
                raise ValueError(f"{at} holds parameters of shapes {shapes}, this optimizer's "
                                 f"are {b.param.shapes}")
            if g["dtype"] != b.param.dtype.name:
                raise ValueError(f"{at} has dtype {g['dtype']}, this optimizer's is "
                                 f"{b.param.dtype.name}")
            steps = g["step"]
            if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
                raise ValueError(f"{at}: step must be an integer >= 0, got {steps!r}")
            options, schedule_state = self._options_from_json(g["options"], at)
            try:
                options["lr"] = resolve_lr(options["lr"], int(steps))
                self._validate(options, b.param.dtype)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{at}: {exc}") from None
            if schedule_state is not None:
                options["lr"] = schedule_state[2]
                schedule_state = schedule_state[:2]
            params = _segments(_checked_array(p, b.param, f"{at}: params"), b.param)
            needed = self.rule.state_for(**self._options(options))
            missing = [name for name in needed if name not in s]
            unknown = [name for name in s if name not in self.rule.state]
            if missing or unknown:
                raise ValueError(f"{at}: state arrays missing {missing}, unknown {unknown} "
                                 f"(algorithm {self.rule.name!r} has {list(self.rule.state)})")
            state = {name: _segments(_checked_array(a, b.param, f"{at}: state {name!r}"),
                                     b.param)
                     for name, a in s.items()}
            plans.append((options, params, state, int(steps), schedule_state,
                          self._scalar_state_from_json(g, options, at)))
        return plans

    def _scalar_state_from_json(self, group, options, at):
        """The group's scalar state: checked floats, all of the rule's and no other."""
        given = group.get("scalar_state", {})
        names = [s.name for s in self.rule.scalar_state]
        if not isinstance(given, dict) or sorted(given) != sorted(names):
            raise ValueError(f"{at}: scalar_state must hold {names}, got {given!r}")
        try:
            return {n: _args.real(n, given[n], -math.inf, math.inf, True, True) for n in names}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{at}: {exc}") from None

    def _options_from_json(self, options, at):
        if not isinstance(options, dict):
            raise ValueError(f"{at}: options must be a dict")
        missing = [k for k in self._option_names() if k not in options]
        if missing:
            raise ValueError(f"{at} is missing hyper-parameter(s) {missing}")
        options = dict(options)
        for key, default in self.rule.defaults.items():
            if isinstance(default, tuple) and isinstance(options[key], list):
                options[key] = tuple(options[key])
        lr, schedule_state = options["lr"], None
        if isinstance(lr, dict):
            if set(lr) != {"schedule", "state"}:
                raise ValueError(f"{at}: a schedule lr must be {{'schedule': config, "
                                 f"'state': state}}, got keys {sorted(lr)}")
            try:
                schedule = from_config(lr["schedule"])
                schedule.load_state_dict(lr["state"])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{at}: bad lr schedule: {exc}") from None
            options["lr"] = schedule
            schedule_state = (lr["schedule"], lr["state"], schedule)
        return options, schedule_state

    def save(self, path):
        """Write :meth:`state_dict` to ``path`` as a ``.npz`` file, atomically.

        The file is written under a temporary name in the same directory,
        flushed to disk and renamed over ``path``: a crash mid-save leaves any
        previous file at ``path`` intact. The name is used as given (no
        ``.npz`` suffix is added).
        """
        _ckpt.save(path, self.state_dict())

    def load(self, path):
        """Restore a checkpoint written by :meth:`save` (see :meth:`load_state_dict`).

        A file that is not a readable fastadapt checkpoint, or that does not
        fit this optimizer, raises ``ValueError`` and changes nothing.
        """
        self.load_state_dict(_ckpt.load(path))

    @classmethod
    def from_checkpoint(cls, path):
        """A new optimizer, of the checkpoint's algorithm, restored from ``path``.

        The parameters are NumPy arrays (host memory). Called on a subclass
        (``fastadapt.Adam.from_checkpoint``), the checkpoint must be of that
        algorithm.
        """
        sd = _ckpt.load(path)
        algorithm = sd.get("algorithm")
        target = cls._by_rule.get(algorithm)
        if target is None or (cls.rule is not None and cls.rule.name != algorithm):
            want = cls.rule.name if cls.rule is not None else sorted(cls._by_rule)
            raise ValueError(f"checkpoint {path!s} is for algorithm {algorithm!r}, "
                             f"expected {want}")
        try:
            groups = [{"params": [np.zeros(tuple(s), g["dtype"]) for s in g["shapes"]]}
                      for g in sd["param_groups"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"checkpoint {path!s}: malformed param_groups ({exc})") from None
        optimizer = target(groups)
        optimizer.load_state_dict(sd)
        return optimizer

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, (group, b) in enumerate(zip(self.param_groups, self._groups)):
            lines.append(f"Parameter Group {i}: {len(b.param)} arrays, {b.param.numel} "
                         f"elements, {b.param.dtype}, {b.steps} steps")
            lines += [f"    {k}: {v!r}" for k, v in group.items() if k != "params"]
        return "\n".join(lines + [")"])


# ----------------------------------------------------------------- helpers
def _normalise_groups(params):
    if isinstance(params, dict):
        groups = [params]
    elif hasattr(params, "shape"):
        groups = [{"params": [params]}]
    else:
        try:
            items = list(params)
        except TypeError:
            raise TypeError("params must be an array, a list of arrays or a list of "
                            f"parameter-group dicts, got {type(params).__name__}") from None
        if not items:
            raise ValueError("optimizer got an empty parameter list")
        if all(isinstance(x, dict) for x in items):
            groups = items
        elif any(isinstance(x, dict) for x in items):
            raise TypeError("params mixes arrays and parameter-group dicts")
        else:
            groups = [{"params": items}]
    out = []
    for i, group in enumerate(groups):
        if "params" not in group:
            raise ValueError(f"param group {i} has no 'params' key")
        arrays = group["params"]
        arrays = [arrays] if hasattr(arrays, "shape") else list(arrays)
        if not arrays:
            raise ValueError(f"param group {i} has an empty parameter list")
        for a in arrays:
            if not (hasattr(a, "shape") and hasattr(a, "dtype")):
                raise TypeError(f"param group {i}: parameters must be arrays, "
                                f"got {type(a).__name__}")
        out.append({**group, "params": arrays})
    return out


def _dtype_name(a):
    try:
        return np.dtype(a.dtype).name
    except TypeError:               # torch.float32 and the like
        return str(a.dtype).rsplit(".", 1)[-1]


def _in_group(exc, index):
    if index is None:
        return exc
    return type(exc)(f"param group {index}: {exc}")


def _initial_value(key, value):
    return _args.real(key, value, 0.0, math.inf, high_open=True)


def _split_flat(buffer, flat, index):
    """Per-segment views of a 1-D gradient for ``buffer``'s layout (see ``step``)."""
    shape = tuple(getattr(flat, "shape", ()))
    if len(shape) != 1 or shape[0] not in (buffer.numel, len(buffer.data)):
        raise ValueError(f"flat gradient for group {index} must be 1-D with {buffer.numel} "
                         f"elements (concatenated) or {len(buffer.data)} (the flat buffer's "
                         f"layout), got shape {shape}")
    if flat is buffer.data:
        return buffer.views
    return _segments(flat, buffer)


def _segments(flat, buffer):
    """``flat`` (concatenated, or in ``buffer``'s padded layout) cut into segments."""
    if flat.shape[0] == len(buffer.data):
        offsets = buffer.offsets
    else:
        offsets, start = [], 0
        for shape in buffer.shapes:
            offsets.append(start)
            start += _args.size(shape)
    return [flat[o:o + _args.size(s)].reshape(s) for o, s in zip(offsets, buffer.shapes)]




def _checked_array(a, buffer, at):
    if not isinstance(a, np.ndarray):
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


# ----------------------------------------------------------------- the optimizers
def _class_docstring(rule):
    lines = [f"{rule.summary}; "
             + (f"torch.optim.{rule.torch_name}." if rule.in_torch else "not in torch.optim."),
             "", "Each step of a group (``step`` counts them from 1), elementwise::", ""]
    lines += ["    " + line for line in rule.pseudocode.splitlines()]
    state = ", ".join(f"``{s.name}``" + (f" (when {s.when_doc})" if s.when is not None else "")
                      + (f" (starts at ``{s.init}``)" if s.init else "")
                      for s in rule.state_specs)
    lines += ["", f"State (zeros unless said): {state}."]
    if rule.scalar_state:
        names = ", ".join(f"``{s.name}``" for s in rule.scalar_state)
        lines += [f"Scalar state, per group: {names} (in :attr:`Optimizer.scalar_state` and "
                  "the checkpoint)."]
    lines += ["", "Parameters", "----------",
              "params : array, list of arrays or list of parameter-group dicts",
              "    Copied into flat buffers; use ``opt.params`` afterwards (see "
              ":class:`Optimizer`)."]
    for h in rule.hyper:
        kind = "float or schedule" if h.name == "lr" else \
            {"Real": "float", "Pair": "(float, float)", "Flag": "bool"}[type(h).__name__]
        lines.append(f"{h.name} : {kind}, default {h.default!r} ({h.describe()})")
        if h.doc:
            lines.append(f"    {h.doc[:1].upper() + h.doc[1:]}.")
    return "\n".join(lines) + "\n"


def _derive_class(rule):
    """The optimizer class of ``rule``: torch's constructor signature (names,
    order, defaults, keyword-only options) over the generic :class:`Optimizer`."""
    positional = [h.name for h in rule.hyper if not h.keyword]
    keyword = [h.name for h in rule.hyper if h.keyword]
    params = ["self", "params", *(f"{h}=_defaults[{h!r}]" for h in positional)]
    if keyword:
        params += ["*", *(f"{h}=_defaults[{h!r}]" for h in keyword)]
    names = positional + keyword
    source = (f"def __init__({', '.join(params)}):\n"
              f"    Optimizer.__init__(self, params, "
              f"{', '.join(f'{h}={h}' for h in names)})\n")
    namespace = {"Optimizer": Optimizer,
                 "_defaults": {h.name: h.default for h in rule.hyper}}
    exec(compile(source, f"<fastadapt.optim.{rule.torch_name}>", "exec"), namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{rule.torch_name}.__init__"
    return type(rule.torch_name, (Optimizer,), {
        "__init__": init, "rule": rule, "state_init": rule.state_init,
        "__doc__": _class_docstring(rule), "__module__": __name__})


for _rule in RULES.values():
    globals()[_rule.torch_name] = _derive_class(_rule)
    __all__.append(_rule.torch_name)
del _rule
