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
import threading

import numpy as np

from . import _args, _storage, checkpoint as _ckpt
from ._arrays import to_host
from ._class_builder import numpy_class, takes_max_grad_norm
from ._core import (WholeStep, check_grad_scale, initial, initial_scalar_state,
                    launch_keywords, missing_state, pads_with_nan, state_storage,
                    step_options, storage_keywords)
from ._group_buffers import (GroupBuffers, check_copyable, normalise_groups, resolve_dtype,
                             split_flat)
from ._options import (STORAGE_OPTIONS, dry_run, dtype_name, master_dtype, naming_group,
                       storage_options)
from .flat import FlatBuffer
from .functional import step_for
from .norm import SumOfSquares, norm_of
from .rules import RULES
from .schedules import resolve_lr

__all__ = ["Optimizer"]   # and one class per rule, derived at the bottom

CHECKPOINT_FORMAT = _ckpt.CHECKPOINT_FORMAT



class Optimizer(WholeStep):
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
    master_weights : bool, "bf16+16" or "bf16+8"
        For bfloat16 / float16 params: keep a float32 master copy of each
        group (:attr:`master_params`); the update runs on it and the 16-bit
        params receive it rounded to nearest, in the same pass. For
        bfloat16 params, "bf16+16" keeps the master split instead: the
        param plus an int16 correction per element (2 bytes, not 4), which
        is the float32 master exactly (the same master and state as True,
        bit for bit; the param rounds ties away from zero); "bf16+8" an int8
        correction (1 byte), a 24-bit master within ``2**-16`` of each
        step's float32 result. See ``fastadapt._storage.SPLIT_MASTER``.
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
            cls.__init__ = takes_max_grad_norm(cls.__dict__["__init__"])

    def __init__(self, params, **defaults):
        self._lock = threading.RLock()      # one step (or checkpoint) at a time
        if self.rule is None:
            raise TypeError("Optimizer is a base class; use one of its subclasses: "
                            + ", ".join(r.torch_name for r in RULES.values()))
        self._option_keys = tuple(self.rule.defaults)   # (read at every step)
        # (the seed: of stochastic rounding, None without it)
        self.state_dtype, self.master_weights, self.stochastic_rounding, self.seed = \
            storage_options(**{k: defaults.pop(k, v) for k, v in STORAGE_OPTIONS.items()})
        missing = [k for k in self.option_names() if k not in defaults]
        if missing:
            raise TypeError(f"{type(self).__name__}: missing default(s) {missing}")
        self._whole_step_options(defaults.pop("max_grad_norm", None))
        self.defaults = dict(defaults)
        self._norm_passes = None
        groups = normalise_groups(params, type(self).__name__)
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
            dtypes = sorted({dtype_name(a) for a in arrays})
            if len(dtypes) > 1:
                raise TypeError(f"param group {i} mixes dtypes {dtypes}; the parameters of "
                                "one group share one flat buffer and so one dtype (put "
                                "each dtype in its own group)")
            group = {**self.defaults, **{k: v for k, v in given.items() if k != "params"}}
            dtype = resolve_dtype(dtypes[0])
            state_dtype = self._check_storage(dtype, i if several else None)
            self.check_group(group, dtype, i if several else None, state_dtype)
            buffers = GroupBuffers(FlatBuffer.from_arrays(arrays, dtype=dtype), state_dtype,
                                   self.master_weights, self.rule.non_negative_state)
            for name, value in missing_state(self.rule.state_for(**self.step_options(group)),
                                             buffers.state, self.state_init, group):
                buffers.state[name] = buffers.new_state(name, value)
            buffers.scalar_state = initial_scalar_state(self.rule.scalar_state_init, group)
            buffers.validated = self.step_options(group)
            del buffers.validated["lr"]
            self.param_groups.append({"params": list(buffers.param.views), **group})
            self._groups.append(buffers)

    # ------------------------------------------------------------- options
    # (option_names, step_options, check_group and group_buffers are what
    # fastadapt.checkpoint reads and checks a state dict with)
    @classmethod
    def option_names(cls):
        """The hyper-parameters a group holds: the functional step's plus the
        state initialisers."""
        return tuple(cls.rule.defaults) + tuple(
            k for k in cls.state_init.values() if k not in cls.rule.defaults)

    def step_options(self, group):
        """The functional step's keyword arguments held by ``group`` (lr unresolved)."""
        return {k: group[k] for k in self._option_keys}

    @property
    def group_buffers(self):
        """Per group, its flat buffers (parameters, gradients, state, step count)."""
        return tuple(self._groups)

    def _check_storage(self, dtype, index):
        """The state dtype of a group of ``dtype`` params, after checking the
        storage options fit them (ValueError / TypeError naming the option)."""
        return state_storage(dtype, self.state_dtype, self.master_weights,
                             self.stochastic_rounding, index)

    def check_group(self, group, dtype, index=None, state_dtype=None):
        """Check ``group``'s hyper-parameters for params of ``dtype`` and state
        of ``state_dtype`` by a dry run of the functional step on zero-size
        arrays, so errors are the functional API's own (naming group ``index``)."""
        with naming_group(index):
            options = self.step_options(group)
            lr = options["lr"]
            if callable(lr):
                options["lr"] = resolve_lr(lr, 0)
            for key in set(self.state_init.values()) - set(self.rule.defaults):
                _initial_value(key, group[key])   # the step's own are checked below
            storage = (storage_keywords(
                self.rule, 0, np.empty(0, master_dtype(self.master_weights))
                if self.master_weights else None, self.stochastic_rounding, self.seed)
                       if dtype.itemsize == 2 else None)
            dry_run(self.rule, options, dtype, state_dtype, non_negative=self.rule.non_negative_state,
                    storage=storage)
            resolve_lr(lr, 0)       # a number: also finite (the functional allows inf)

    # ------------------------------------------------------------- arrays
    @property
    def params(self):
        """The parameters (views into the flat buffers, original shapes), all groups in order."""
        return [v for b in self._groups for v in b.param.views]

    @property
    def master_params(self):
        """With ``master_weights=True``, the float32 master copies of :attr:`params`
        (the arrays the update runs on; write here to change a param); with a
        split master ("bf16+16" / "bf16+8"), new read-only float32 arrays of
        the masters (param plus correction: write a param itself to change it,
        which keeps its correction); else None."""
        if not self.master_weights:
            return None
        if self.master_weights is True:
            return [v for b in self._groups for v in b.master.views]
        out = []
        for b in self._groups:
            for p, c in zip(b.param.views, b.master.views):
                m = _storage.join_master(to_host(p), to_host(c))
                m.flags.writeable = False
                out.append(m)
        return out

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
                fold = self._decide(self._global_grad_norm() / scale, scale)
                if fold is None:
                    return
            # every new state array allocated before any is kept or any kernel runs
            created = [(b, name, b.new_state(name, value))
                       for (g, b), (_, names, _) in zip(groups, calls)
                       for name, value in missing_state(names, b.state, self.state_init, g,
                                                        b.steps)]
            for b, name, buffer in created:
                b.state[name] = buffer
            plan = step_for(self.rule).plan
            launches = []
            for (g, b), (options, names, _) in zip(groups, calls):
                for name in names:
                    options[name] = b.state[name].data
                update = plan(b.param.data, b.grad.data, **launch_keywords(
                    self.rule, options, b.steps, None if b.master is None else b.master.data,
                    self.stochastic_rounding, self.seed, None, b.scalar_state, fold))
                launches.append((b.launcher(update), update.scalars, update.state,
                                 update.key))
            for (g, b), (launch, scalars, scalar_state, key), (_, _, nan_padding) in zip(
                    groups, launches, calls):
                launch(scalars, key)
                b.steps += 1
                if scalar_state is not None:       # NAdam's mu_product, ASGD's eta, mu
                    b.scalar_state = scalar_state
                # (the NumPy face's own: its flat buffers are public, padding
                # included (flat_params, a flat gradient in step); the torch
                # face's are seen only through per-parameter views)
                if nan_padding:
                    b.reset_padding({name: initial(key, g, b.steps)
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
        options, buffers.validated = step_options(
            self.step_options(group), buffers.validated, index, buffers.steps, resolve_lr,
            self.check_group, group, buffers.param.dtype, index, buffers.state_dtype)
        return (options, self.rule.state_for(**options),
                pads_with_nan(options, buffers.param.dtype))

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
                    check_copyable(a, b.grad, f"grads[{k}]")
                plan.append((b, arrays))
                start += len(b.grad)
        elif len(grads) == len(groups):
            plan = []
            for i, (b, g) in enumerate(zip(groups, grads)):
                arrays = split_flat(b.grad, g, i)
                check_copyable(g, b.grad, f"flat gradient of group {i}")
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
def _initial_value(key, value):
    return _args.real(key, value, 0.0, math.inf, high_open=True)


# ----------------------------------------------------------------- the optimizers
#: The storage options every class takes (keyword-only), with their defaults.
_STORAGE_OPTIONS = STORAGE_OPTIONS

for _rule in RULES.values():
    globals()[_rule.torch_name] = numpy_class(_rule, Optimizer, __name__)
    __all__.append(_rule.torch_name)
del _rule
