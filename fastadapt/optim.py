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
import functools
import inspect
import math
import threading

import numpy as np

from . import _args, _storage, checkpoint as _ckpt
from ._arrays import is_device_array as _is_device_array, is_torch_host_tensor
from .kernels.storage import stream_key
from ._dispatch import prepare
from .flat import FlatBuffer
from .functional import step_for
from .norm import SumOfSquares, check_grad_scale, clipped_scale, norm_of
from .rules import RULES
from .schedules import resolve_lr

__all__ = ["Optimizer"]   # and one class per rule, derived at the bottom

CHECKPOINT_FORMAT = _ckpt.CHECKPOINT_FORMAT


#: The 8-bit ``state_dtype`` values and their containers.
EIGHT_BIT = {"int8": _storage.Blockwise8, "int8c": _storage.Companded8}


class _Blockwise8Buffer:
    """A group's state array under ``state_dtype="int8"`` (or ``"int8c"``):
    one :class:`~fastadapt.Blockwise8` (:class:`~fastadapt.Companded8`) over
    the params' flat layout (padding included, so blocks are the same
    whatever a segment's size)."""

    def __init__(self, layout, signed, kind="int8"):
        self.layout = layout                # the params' FlatBuffer
        self.data = EIGHT_BIT[kind](len(layout.data), signed)

    @property
    def views(self):
        """The segments' values, dequantized (copies, not views)."""
        values = self.data.dequantize()
        return [values[o:o + _args.size(s)].reshape(s)
                for o, s in zip(self.layout.offsets, self.layout.shapes)]


class _GroupBuffers:
    """The flat buffers behind one parameter group."""

    __slots__ = ("param", "grad", "state", "steps", "validated", "scalar_state",
                 "master", "state_dtype", "_launch", "_launch_arrays", "_padding")

    def __init__(self, param, state_dtype=None, master=False):
        self.param = param                  # FlatBuffer of the parameters
        self.grad = param.zeros_like()      # FlatBuffer of the gradients
        self.state_dtype = param.dtype if state_dtype is None else state_dtype
        self.master = None                  # float32 FlatBuffer of a 16-bit param's master
        if master:
            self.master = param.zeros_like(np.float32)
            self.master.data[:] = param.data
        self.state = {}                     # state name -> FlatBuffer
        self.steps = 0                      # completed steps
        self.validated = None               # the options last checked (lr excluded)
        self.scalar_state = {}              # named per-group floats a rule keeps
                                            # (NAdam's mu_product, ASGD's eta and mu)
        self._launch = None                 # the checked kernel launch over these buffers
        self._launch_arrays = ()            # ... and the arrays it was checked for
        self._padding = None                # where the padding lies in ``data``

    def launcher(self, update):
        """The launch of a planned update, checking the arrays only when they
        differ from last step's (the buffers are the optimizer's own; they
        change only when an option adds a state buffer or a checkpoint replaces
        one). Call it with ``update.scalars``."""
        arrays = [a for a in update.arrays.values() if a is not None]
        if update.master is not None:
            arrays.append(update.master)
        if len(arrays) != len(self._launch_arrays) or any(
                a is not b for a, b in zip(arrays, self._launch_arrays)):
            self._launch = prepare(update)
            self._launch_arrays = arrays
        return self._launch

    def reset_padding(self, initial):
        """Put the padding of the parameters and of every state buffer back to
        its initial value (``initial``: state name -> value, 0 otherwise)."""
        if self._padding is None:
            spans, end = [], 0
            for offset, shape in zip(self.param.offsets, self.param.shapes):
                if offset > end:
                    spans.append((end, offset))
                end = offset + int(np.prod(shape, dtype=np.int64))
            if len(self.param.data) > end:
                spans.append((end, len(self.param.data)))
            index = (np.concatenate([np.arange(a, b) for a, b in spans]) if spans
                     else np.empty(0, np.intp))
            self._padding = (spans, index)
        spans, index = self._padding
        if not spans:
            return
        buffers = [(self.param, 0.0)] + [(b, initial.get(n, 0.0)) for n, b in self.state.items()
                                         if not isinstance(b, _Blockwise8Buffer)]
        if self.master is not None:
            buffers.append((self.master, 0.0))
        for buffer, value in buffers:
            if isinstance(buffer.data, np.ndarray):
                buffer.data[index] = value
            else:                   # GPU arrays: one slice at a time
                for a, b in spans:
                    buffer.data[a:b] = value


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
    state_dtype : None, "float32", "bfloat16", "float16", "int8" or "int8c"
        How the state arrays are stored (the math runs in float32 whatever
        the storage). None: the params' dtype for float32 / float64 params,
        float32 for 16-bit params. float64 params keep float64 state;
        "float16" is for float16 params only. "int8": 8-bit blockwise state
        (:class:`~fastadapt.Blockwise8`; signed map for first moments,
        unsigned for the others), for float32 and 16-bit params; there
        :attr:`state` holds dequantized copies. "int8c": companded 8-bit
        state (:class:`~fastadapt.Companded8`: softsign for first moments,
        square root for the others, a scale per 32 elements), likewise.
    master_weights : bool
        For bfloat16 / float16 params: keep a float32 master copy of each
        group (:attr:`master_params`); the update runs on it and the 16-bit
        params receive it rounded to nearest, in the same pass.
    stochastic_rounding : bool
        For bfloat16 / float16 params without master weights: store each
        updated param rounded up or down at random, unbiased (see
        :func:`fastadapt.adam_step`).
    seed : int, optional
        The seed of stochastic rounding's random bits (a hash of seed, step
        and element index, so a run is reproducible). None: a random seed,
        kept in :attr:`seed` and in checkpoints.
    **defaults
        The hyper-parameters, torch's names; ``lr`` may be a schedule.
    max_grad_norm : float, optional (keyword of every optimizer)
        Clip by the global norm over all groups, as
        ``torch.nn.utils.clip_grad_norm_(all params, max_grad_norm)`` does
        (see :meth:`step`). Finite or inf, > 0; settable later as an attribute.
        Not part of :meth:`state_dict` (torch keeps clipping outside the
        optimizer too): set it again on an optimizer made by
        :meth:`from_checkpoint`.

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
    grad_norm : float or None
        After each :meth:`step`: the global L2 norm of the unscaled gradients
        over all groups, before clipping (``inf`` / ``nan`` if a gradient was
        not finite), or None when the step computed no norm (no
        ``max_grad_norm`` and no ``grad_scale``).
    step_skipped : bool
        After each :meth:`step`: True when a gradient was not finite and the
        step was skipped, as ``GradScaler.step`` skips it.
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
        if "__init__" in cls.__dict__:
            cls.__init__ = _takes_max_grad_norm(cls.__dict__["__init__"])

    def __init__(self, params, *, state_dtype=None, master_weights=False,
                 stochastic_rounding=False, seed=None, **defaults):
        self._lock = threading.RLock()      # one step (or checkpoint) at a time
        if self.rule is None:
            raise TypeError("Optimizer is a base class; use one of its subclasses: "
                            + ", ".join(r.torch_name for r in RULES.values()))
        # (the seed: of stochastic rounding, None without it)
        self.state_dtype, self.master_weights, self.stochastic_rounding, self.seed = \
            storage_options(state_dtype, master_weights, stochastic_rounding, seed)
        missing = [k for k in self._option_names() if k not in defaults]
        if missing:
            raise TypeError(f"{type(self).__name__}: missing default(s) {missing}")
        self._max_grad_norm = _args.max_grad_norm(defaults.pop("max_grad_norm", None))
        self.defaults = dict(defaults)
        self.grad_norm, self.step_skipped = None, False
        self._norm_passes = None
        groups = _normalise_groups(params, type(self).__name__)
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
            dtype = _resolve_dtype(dtypes[0])
            state_dtype = self._check_storage(dtype, i if several else None)
            self._validate(group, dtype, i if several else None, state_dtype)
            buffers = _GroupBuffers(FlatBuffer.from_arrays(arrays, dtype=dtype), state_dtype,
                                    self.master_weights)
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

    def _check_storage(self, dtype, index):
        """The state dtype of a group of ``dtype`` params, after checking the
        storage options fit them (ValueError / TypeError naming the option)."""
        try:
            return _storage.state_dtype_for(dtype, self.state_dtype, self.master_weights,
                                            self.stochastic_rounding)
        except (TypeError, ValueError) as exc:
            raise _in_group(exc, index) from None

    def _validate(self, group, dtype, index=None, state_dtype=None):
        """Check ``group``'s hyper-parameters by a dry run of the functional step
        on zero-size arrays, so errors are the functional API's own."""
        state_dtype = dtype if state_dtype is None else state_dtype
        try:
            options = self._options(group)
            lr = options["lr"]
            if callable(lr):
                options["lr"] = resolve_lr(lr, 0)
            for key in set(self.state_init.values()) - set(self.rule.defaults):
                _initial_value(key, group[key])   # the step's own are checked below
            state = {name: EIGHT_BIT[state_dtype](0, name not in self.rule.non_negative_state)
                     if isinstance(state_dtype, str) else np.empty(0, state_dtype)
                     for name in self.rule.state_for(**options)}
            if self.rule.takes_step:
                options["step"] = 1
            if dtype.itemsize == 2:
                options.update(self._storage_arguments(np.empty(0, np.float32), 0))
            step_for(self.rule)(np.empty(0, dtype), np.empty(0, dtype), **state, **options)
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

    def _storage_arguments(self, master, steps):
        """The functional step's storage keywords for a group's next step."""
        if self.master_weights:
            return {"master_param": master}
        if self.stochastic_rounding:
            return {"stochastic_rounding": True,
                    "seed": rounding_seed(self.seed, steps + 1, self.rule.takes_step)}
        return {}

    def _new_state(self, buffers, group, name):
        buffer = buffers.state[name] = self._zero_state(buffers, group, name)
        return buffer

    def _zero_state(self, buffers, group, name):
        """A new state buffer ``name`` at its initial value (not yet kept)."""
        if isinstance(buffers.state_dtype, str):        # "int8", "int8c"
            buffer = _Blockwise8Buffer(buffers.param, name not in self.rule.non_negative_state,
                                       buffers.state_dtype)
        else:
            buffer = buffers.param.zeros_like(buffers.state_dtype)
        key = self.state_init.get(name)
        if key is not None:
            value = _initial_float(group[key], buffers.steps)
            if value != 0.0:
                if isinstance(buffer, _Blockwise8Buffer):
                    buffer.data.fill(value)
                else:
                    buffer.data[:] = value
        return buffer

    @property
    def max_grad_norm(self):
        """The global-norm clipping threshold (None: no clipping)."""
        return self._max_grad_norm

    @max_grad_norm.setter
    def max_grad_norm(self, value):
        self._max_grad_norm = _args.max_grad_norm(value)

    # ------------------------------------------------------------- arrays
    @property
    def params(self):
        """The parameters (views into the flat buffers, original shapes), all groups in order."""
        return [v for b in self._groups for v in b.param.views]

    @property
    def master_params(self):
        """With ``master_weights=True``, the float32 master copies of :attr:`params`
        (the arrays the update runs on; write here to change a param); else None."""
        if not self.master_weights:
            return None
        return [v for b in self._groups for v in b.master.views]

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
        with self._lock:
            for b in self._groups:
                b.grad.data[:] = 0  # works for NumPy, CuPy, torch and Numba device arrays

    # ------------------------------------------------------------- stepping
    def step(self, grads=None, grad_scale=None):
        """Apply one update to every group: one fused kernel call per group.

        With ``max_grad_norm`` set or a ``grad_scale`` given, the step is
        whole: GradScaler's unscale and inf check, ``clip_grad_norm_`` and
        the update, in two passes over the gradients instead of four::

            norm = sqrt(sum over all groups' gradients of g**2) / grad_scale
            if norm is not finite: skip the step    (no parameter, state or step
                                                     count changes)
            clip_coef = min(1, max_grad_norm / (norm + 1e-6))
            update every group with g / (grad_scale / clip_coef)

        The norm is one read-only pass over the gradients (their padding in
        the flat buffers is left out); the division is folded into the
        update's gradient scalar (the functional steps' ``grad_scale``).
        Afterwards :attr:`grad_norm` holds ``norm`` and :attr:`step_skipped`
        whether the step was skipped. Without either option no norm is
        computed (``grad_norm`` is None, non-finite gradients are applied as
        torch.optim applies them).

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
        grad_scale : float, optional
            The loss scale the gradients carry (finite, > 0): they are
            divided by it, and the step is skipped if any is not finite.

        A step is all or nothing: ``grad_scale``, the gradients, then every
        group's hyper-parameters and learning rate are checked before the
        gradients are copied, any new state is allocated before any kernel
        runs, and an error raised before the kernels run leaves the optimizer
        (its parameters, gradients, state and step counts) as it was. A
        skipped step has copied the gradients and changed nothing else. Steps
        (and the other methods) of one optimizer called from several threads
        run one at a time.
        """
        scale = check_grad_scale(grad_scale)
        with self._lock:
            copies = self._set_grads(grads) if grads is not None else ()
            groups = list(zip(self.param_groups, self._groups))
            several = len(groups) > 1
            calls = [self._prepare(i if several else None, g, b)
                     for i, (g, b) in enumerate(groups)]
            for b, arrays in copies:
                b.grad.copy_from(arrays)
            self.grad_norm, self.step_skipped = None, False
            fold = None
            if self._max_grad_norm is not None or grad_scale is not None:
                self.grad_norm = self._global_grad_norm() / scale
                if not math.isfinite(self.grad_norm):
                    self.step_skipped = True
                    return
                fold = scale if self._max_grad_norm is None else \
                    clipped_scale(self.grad_norm, self._max_grad_norm, scale)
            created = []
            for (g, b), (_, names, _) in zip(groups, calls):
                for name in names:
                    if name not in b.state:
                        created.append((b, name, self._zero_state(b, g, name)))
            for b, name, buffer in created:
                b.state[name] = buffer
            plan = step_for(self.rule).plan
            launches = []
            for (g, b), (options, names, _) in zip(groups, calls):
                for name in names:
                    options[name] = b.state[name].data
                if b.param.dtype.itemsize == 2:
                    options.update(self._storage_arguments(
                        b.master.data if b.master is not None else None, b.steps))
                update = plan(b.param.data, b.grad.data, **options, grad_scale=fold)
                launches.append((b.launcher(update), update.scalars, update.state,
                                 update.key))
            for (g, b), (launch, scalars, scalar_state, key), (_, _, nan_padding) in zip(
                    groups, launches, calls):
                launch(scalars, key)
                b.steps += 1
                if scalar_state is not None:       # NAdam's mu_product, ASGD's eta, mu
                    b.scalar_state = scalar_state
                if nan_padding:
                    b.reset_padding({name: _initial_float(g[key], b.steps)
                                     for name, key in self.state_init.items()})

    def _global_grad_norm(self):
        """The L2 norm of every group's gradient segments (padding left out),
        from one read-only pass per group, checked once and kept."""
        if self._norm_passes is None:
            self._norm_passes = [
                SumOfSquares(b.grad.data, f"gradients of group {i}",
                             segments=[(o, int(np.prod(s, dtype=np.int64)))
                                       for o, s in zip(b.grad.offsets, b.grad.shapes)])
                for i, b in enumerate(self._groups)]
        return norm_of(p() for p in self._norm_passes)

    def _prepare(self, index, group, buffers):
        """Check ``group`` for its next step (only what changed since the last
        check) and write nothing; return the functional step's keyword
        arguments (lr resolved, state arrays left out), the state arrays the
        step needs, and whether the step can turn the padding into NaN."""
        options = self._options(group)
        lr = options.pop("lr")
        if options != buffers.validated:
            self._validate(group, buffers.param.dtype, index, buffers.state_dtype)
            buffers.validated = options
            options = dict(options)
        try:
            options["lr"] = resolve_lr(lr, buffers.steps)
        except (TypeError, ValueError) as exc:
            raise _in_group(exc, index) from None
        names = self.rule.state_for(**options)
        if self.rule.takes_step:
            options["step"] = buffers.steps + 1
        options.update(buffers.scalar_state)   # the rule's scalar state, if any
        # The padding holds zeros (gradient included): a rule that divides by
        # eps there computes 0/0 when eps is 0 in the buffer's dtype.
        eps = options.get("eps")
        nan_padding = (eps is not None and abs(eps) < 1e-30
                       and buffers.param.dtype.type(eps) == 0)
        return options, names, nan_padding

    def _set_grads(self, grads):
        """Check ``grads`` (see :meth:`step`) against the gradient buffers and
        return ``[(group buffers, arrays to copy into them)]``; copies nothing."""
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
                arrays = grads[start:start + len(b.grad)]
                for k, a in enumerate(arrays, start):
                    _check_copyable(a, b.grad, f"grads[{k}]")
                plan.append((b, arrays))
                start += len(b.grad)
        elif len(grads) == len(groups):
            plan = []
            for i, (b, g) in enumerate(zip(groups, grads)):
                arrays = _split_flat(b.grad, g, i)
                _check_copyable(g, b.grad, f"flat gradient of group {i}")
                plan.append((b, arrays))
        else:
            raise ValueError(
                f"expected {len(params)} gradient arrays (one per parameter, shapes "
                f"{[tuple(p.shape) for p in params]}) or {len(groups)} flat array(s) "
                f"(one per group), got {len(grads)} arrays")
        return [(b, arrays) for b, arrays in plan
                if not all(a is v for a, v in zip(arrays, b.grad.views))]

    # ------------------------------------------------------------- checkpoints
    def state_dict(self):
        """Everything needed to resume, as host NumPy arrays and JSON-able values.

        Returns
        -------
        dict
            ``{"format": 1, "algorithm": rule name, "param_groups": [...],
            "params": [...], "state": [...]}`` where each ``param_groups``
            entry is ``{"options": hyper-parameters, "shapes": [...],
            "dtype": "float32", "step": completed steps}`` plus, for a rule
            that keeps named per-group floats, ``"scalar_state": {name:
            float}``. A schedule ``lr`` is ``{"schedule": to_config(),
            "state": state_dict()}``, with ``"shared_with": j`` when it is the
            same object as group ``j``'s (restored as one object). Each
            ``params`` entry is the group's parameters concatenated into one
            1-D array (no padding) and each ``state`` entry maps state names to
            such arrays. With ``max_grad_norm`` set, ``"max_grad_norm"``
            holds it: :meth:`from_checkpoint` restores it, while
            :meth:`load_state_dict` keeps the receiving optimizer's own.
            Everything is a copy, taken between steps.
        """
        with self._lock:
            return _ckpt.state_dict(self)

    def load_state_dict(self, state_dict):
        """Restore parameters, state, step counts and hyper-parameters.

        Everything is checked before anything is copied: a ``state_dict`` of
        another algorithm, group count, shapes or dtype, with missing or
        unknown keys (a group's extra keys are accepted only if the group
        already has them) or invalid hyper-parameters raises ``ValueError``
        and leaves the optimizer unchanged. A schedule ``lr`` is rebuilt with
        :func:`fastadapt.schedules.from_config`; if the group already holds a
        schedule with the same configuration, its state is loaded into that
        object (so references to it stay live). Groups that shared one
        schedule share one again.
        """
        with self._lock:
            _ckpt.load_state_dict(self, state_dict)

    def save(self, path):
        """Write :meth:`state_dict` to ``path`` as a ``.npz`` file, atomically.

        The file is written under a temporary name in the same directory,
        flushed to disk and renamed over ``path``: a crash mid-save leaves any
        previous file at ``path`` intact, and the next save into that directory
        removes the temporary. A file replaced keeps its permission bits. The
        name is used as given (no ``.npz`` suffix is added).
        """
        _ckpt.save(path, self.state_dict())

    def load(self, path):
        """Restore a checkpoint written by :meth:`save` (see :meth:`load_state_dict`).

        A file that is not a readable fastadapt checkpoint, or that does not
        fit this optimizer, raises ``ValueError`` and changes nothing. No array
        is read before its header says it has this optimizer's size and dtype.
        """
        sd = _ckpt.load(path, _ckpt.optimizer_layout(self))
        self.load_state_dict(sd)

    @classmethod
    def from_checkpoint(cls, path):
        """A new optimizer, of the checkpoint's algorithm, restored from ``path``.

        The parameters are NumPy arrays (host memory). Called on a subclass
        (``fastadapt.Adam.from_checkpoint``), the checkpoint must be of that
        algorithm. Anything wrong with the file raises ``ValueError``.
        """
        return _ckpt.from_checkpoint(cls, cls._by_rule, path)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, (group, b) in enumerate(zip(self.param_groups, self._groups)):
            lines.append(f"Parameter Group {i}: {len(b.param)} arrays, {b.param.numel} "
                         f"elements, {b.param.dtype}, {b.steps} steps")
            lines += [f"    {k}: {v!r}" for k, v in group.items() if k != "params"]
        return "\n".join(lines + [")"])


# ----------------------------------------------------------------- helpers
def _takes_max_grad_norm(init):
    """``init`` with one more keyword, ``max_grad_norm=None``, checked before
    ``init`` runs and set after it (so every optimizer class takes it without
    repeating it in its signature). An ``init`` that already takes it, by name
    or through ``**kwargs`` passed on to the base class, is returned as is."""
    signature = inspect.signature(init)
    if "max_grad_norm" in signature.parameters or any(
            p.kind == inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return init

    @functools.wraps(init)
    def __init__(self, *args, max_grad_norm=None, **kwargs):
        max_grad_norm = _args.max_grad_norm(max_grad_norm)
        init(self, *args, **kwargs)
        if max_grad_norm is not None:
            self._max_grad_norm = max_grad_norm

    extra = inspect.Parameter("max_grad_norm", inspect.Parameter.KEYWORD_ONLY, default=None)
    __init__.__signature__ = signature.replace(
        parameters=[*signature.parameters.values(), extra])
    return __init__


def _normalise_groups(params, cls_name):
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
            if is_torch_host_tensor(a):
                raise TypeError(
                    f"fastadapt.{cls_name} takes NumPy or CUDA arrays and copies them; for "
                    f"torch parameters use fastadapt.torch.{cls_name}(model.parameters(), "
                    "...), a drop-in torch.optim optimizer that trains the model's own "
                    "parameters")
        out.append({**group, "params": arrays})
    return out


def _dtype_name(a):
    try:
        return np.dtype(a.dtype).name
    except TypeError:               # torch.float32 and the like
        return str(a.dtype).rsplit(".", 1)[-1]


def _resolve_dtype(name):
    """The NumPy dtype named ``name`` (bfloat16 through ml_dtypes)."""
    if name == "bfloat16":
        return _storage.bfloat16("bfloat16 params")
    return np.dtype(name)


_STATE_DTYPES = ("float32", "bfloat16", "float16", "float64", "int8", "int8c")


def storage_options(state_dtype, master_weights, stochastic_rounding, seed):
    """The storage options of an optimizer class, checked: ``(state_dtype,
    master_weights, stochastic_rounding, seed)``, the seed drawn at random for
    stochastic rounding when none is given (shared with fastadapt.torch)."""
    master_weights = _args.flag("master_weights", master_weights)
    stochastic_rounding = _args.flag("stochastic_rounding", stochastic_rounding)
    if master_weights and stochastic_rounding:
        raise ValueError("master_weights=True and stochastic_rounding=True exclude each "
                         "other: with master weights the params are its nearest rounding")
    state_dtype = _state_dtype(state_dtype)
    if seed is not None:
        seed = _args.seed(seed)
    elif stochastic_rounding:
        seed = int(np.random.SeedSequence().entropy) % 2 ** 64
    return state_dtype, master_weights, stochastic_rounding, seed


def rounding_seed(seed, step, takes_step):
    """The functional step's ``seed`` for stochastic rounding at ``step``: the
    optimizer's seed for rules that take ``step`` (the stream is keyed on
    (seed, step)), else a seed of the step's own."""
    if takes_step:
        return seed
    key0, key1 = stream_key(seed, step)
    return int(key0) | int(key1) << 32


def _state_dtype(value):
    """The ``state_dtype`` option as a NumPy dtype (None stays None)."""
    if value is None:
        return None
    try:
        name = value if isinstance(value, str) else _dtype_name(value)
    except Exception:
        name = None
    if name == "bfloat16":
        return _storage.bfloat16("state_dtype='bfloat16'")
    if name in EIGHT_BIT:
        return name
    if name not in _STATE_DTYPES:
        raise TypeError(f"state_dtype must be None or one of {list(_STATE_DTYPES)}, "
                        f"got {value!r}")
    return np.dtype(name)


def _in_group(exc, index):
    if index is None:
        return exc
    return type(exc)(f"param group {index}: {exc}")


def _initial_float(value, steps):
    """A state's initial value from its option: a number, or (Rprop's ``lr``) a
    schedule, read at ``steps`` completed steps."""
    return float(resolve_lr(value, steps) if callable(value) else value)


def _initial_value(key, value):
    return _args.real(key, value, 0.0, math.inf, high_open=True)


def _check_copyable(a, buffer, name):
    """Raise TypeError / ValueError unless ``a`` can be copied into ``buffer``
    (NumPy's ``same_kind`` casting, as :meth:`FlatBuffer.copy_from` does)."""
    dtype = buffer.dtype
    if _is_device_array(a):
        if isinstance(buffer.data, np.ndarray):
            raise ValueError(f"{name} is a GPU array; this optimizer's buffers are on "
                             "the host")
        from . import _cuda
        source = np.dtype(_cuda.dtype_of(a))
    else:
        try:
            source = np.asarray(a).dtype
        except Exception:
            raise TypeError(f"{name} is not an array ({type(a).__name__})") from None
    if not np.can_cast(source, dtype, "same_kind"):
        raise TypeError(f"{name} has dtype {source}, which cannot be copied into this "
                        f"optimizer's {dtype} gradient buffer")


def _split_flat(buffer, flat, index):
    """Per-segment views of a 1-D gradient for ``buffer``'s layout (see ``step``)."""
    shape = tuple(getattr(flat, "shape", ()))
    if len(shape) != 1 or shape[0] not in (buffer.numel, len(buffer.data)):
        raise ValueError(f"flat gradient for group {index} must be 1-D with {buffer.numel} "
                         f"elements (concatenated) or {len(buffer.data)} (the flat buffer's "
                         f"layout), got shape {shape}")
    if flat is buffer.data:
        return buffer.views
    return _ckpt.segments(flat, buffer)


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
    lines += ["state_dtype, master_weights, stochastic_rounding, seed : keyword-only",
              "    Storage narrower than the math (16-bit params, float32 master weights, "
              "bfloat16 or 8-bit state); see :class:`Optimizer`."]
    lines += ["max_grad_norm : float, optional, keyword-only",
              "    Clip by the global gradient norm over all groups, as "
              "``torch.nn.utils.clip_grad_norm_`` (see :meth:`Optimizer.step`)."]
    return "\n".join(lines) + "\n"


#: The storage options every class takes (keyword-only), with their defaults.
_STORAGE_OPTIONS = {"state_dtype": None, "master_weights": False,
                    "stochastic_rounding": False, "seed": None}


def _derive_class(rule):
    """The optimizer class of ``rule``: torch's constructor signature (names,
    order, defaults, keyword-only options) over the generic :class:`Optimizer`."""
    positional = [h.name for h in rule.hyper if not h.keyword]
    keyword = [h.name for h in rule.hyper if h.keyword]
    params = ["self", "params", *(f"{h}=_defaults[{h!r}]" for h in positional)]
    params += ["*", *(f"{h}=_defaults[{h!r}]" for h in keyword)]
    params += [f"{k}={v!r}" for k, v in _STORAGE_OPTIONS.items()]
    names = positional + keyword + list(_STORAGE_OPTIONS)
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
