"""FlatOptimizer: the core of every fastadapt.torch optimizer (construction,
options, parameter groups, gradients and the step); its state dicts are
:mod:`fastadapt.torch._state_dict`'s, its flat buffers
:mod:`fastadapt.torch._bucket`'s."""
import functools
import inspect
import math
import operator
from itertools import chain

import numpy as np
import torch

from .. import _args
from ..functional import step_for
from .._core import WholeStep, check_grad_scale, state_storage, step_options
from .._options import dry_run, naming_group, storage_options
from . import _sparse
from ._bucket import _Bucket
from ._conventions import (COMPLEX_DTYPES, COMPRESSED_KEY, CORRECTION_KEY, DECOUPLED_FLAG,
                           EIGHT_BIT, MASTER_KEY, REJECTED_FLAGS, SEED_KEY, STORAGE_OPTIONS,
                           SUPPORTED_DTYPES, _initial, _numpy_dtype, _plain, _torch_dtype,
                           profile_hook_step)
from ._sharing import Alone, WholeBuffer
from ._state_dict import TorchStateDict


# ----------------------------------------------------------------- the base class
def _clears_scaler_flags_on_failure(step):
    """``step``, removing GradScaler's ``grad_scale`` and ``found_inf`` from
    the optimizer when it raises."""
    @functools.wraps(step)
    def wrapper(self, *args, **kwargs):
        try:
            return step(self, *args, **kwargs)
        except BaseException:
            self.__dict__.pop("grad_scale", None)
            self.__dict__.pop("found_inf", None)
            raise
    return wrapper


class FlatOptimizer(TorchStateDict, WholeStep, torch.optim.Optimizer):
    """Base class of the fastadapt.torch optimizers: a :class:`torch.optim.Optimizer`
    whose step is one fused fastadapt kernel call per (group, device, dtype).

    Not instantiated directly: each subclass (``fastadapt.torch.Adam`` ...) is
    built from a rule of :data:`fastadapt.RULES` by :func:`optimizer_class`.
    See the module docstring for the gradient paths and their cost, and for
    the storage options.

    One code path serves one process and a sharded one: what differs is held
    in two values given at construction, the partition that gives each flat
    buffer's span (the whole buffer, or one rank's shard) and the agreement
    between the processes (alone: nothing to do; ZeroRedundancyOptimizer:
    collectives over its process group).

    Attributes
    ----------
    state_dtype : None, NumPy dtype, "int8" or "int8c"
        The ``state_dtype`` option as given (None: each bucket's default).
    min_8bit_size : int
        With 8-bit state, parameters of fewer elements keep float32 state.
    compressed_state_dict : bool
        Whether :meth:`state_dict` keeps 16-bit and 8-bit state as stored.
    master_weights : bool, "bf16+16" or "bf16+8"
    stochastic_rounding : bool
        The storage options.
    seed : int or None
        Stochastic rounding's seed (drawn when not given; None without
        stochastic rounding); saved in and restored from state dicts.
    grad_norm, step_skipped
        As in :class:`fastadapt.Optimizer`, after each step.
    """

    #: The update rule (set on each subclass).
    rule = None
    #: GradScaler passes ``grad_scale`` / ``found_inf``: gradients are unscaled
    #: in the step and the step is skipped when ``found_inf`` is set.
    _step_supports_amp_scaling = True
    _signature = None
    _extras = {}

    def __init__(self, params, defaults, partition=None, agreement=None):
        """``partition`` gives each flat buffer's span this process updates
        (:class:`~fastadapt.torch._sharing.WholeBuffer` by default) and
        ``agreement`` how the processes sharing the parameters agree
        (:class:`~fastadapt.torch._sharing.Alone`)."""
        if self.rule is None:
            raise TypeError("FlatOptimizer is a base class; use fastadapt.torch.Adam, "
                            "AdamW, SGD, ...")
        self._option_keys = tuple(self.rule.defaults)   # (read at every step)
        self._state_init = self.rule.state_init
        self._scalar_state = self.rule.scalar_state_init
        self._torch_names = self.rule.torch_state_names
        self._no_step = not self.rule.torch_step
        self._kernel_unscales = "grad_scale" in inspect.signature(step_for(self.rule)).parameters
        self._twins = self.rule.decoupled_twins
        # what a group's check depends on beside the functional step's options
        # (read at every step: see _group_options)
        self._extra_keys = tuple(chain(
            REJECTED_FLAGS, self._extras, self._state_init.values(),
            (v for v in self._scalar_state.values() if isinstance(v, str))))
        self._partition = WholeBuffer() if partition is None else partition
        self._agreement = Alone() if agreement is None else agreement
        # the per-parameter state keys this class writes; any other key of
        # optimizer.state is the caller's, kept through state dicts as torch keeps it
        names = [self._torch_names.get(n, n) for n in self.rule.state]
        self._own_keys = {"step", MASTER_KEY, CORRECTION_KEY, SEED_KEY, COMPRESSED_KEY, *names,
                          *(f"{n}.{part}" for n in names
                            for part in ("codes", *(f[2] for f in EIGHT_BIT.values()))),
                          *(self._torch_names.get(n, n) for n in self._scalar_state)}
        self._buckets = []              # per group: list of _Bucket
        self._group_params = []         # per group: its parameters at construction
        self._validated = []            # per group: the options last checked (lr excluded)
        self._whole_step_options(defaults.pop("max_grad_norm", None))
        storage = {k: defaults.pop(k, v) for k, v in STORAGE_OPTIONS.items()}
        state_dtype = storage["state_dtype"]
        if isinstance(state_dtype, torch.dtype):     # torch.bfloat16 -> "bfloat16"
            state_dtype = str(state_dtype).rsplit(".", 1)[-1]
        # (the seed: of stochastic rounding, None without it)
        self.state_dtype, self.master_weights, self.stochastic_rounding, self.seed = \
            storage_options(state_dtype, storage["master_weights"],
                            storage["stochastic_rounding"], storage["seed"])
        self.min_8bit_size = _min_8bit_size(storage["min_8bit_size"])
        self.compressed_state_dict = storage["compressed_state_dict"]
        defaults.update(self._group_constants())
        self._check_options(defaults, None)
        super().__init__(params, defaults)

    @property
    def compressed_state_dict(self):
        """Whether :meth:`state_dict` keeps 16-bit and 8-bit state as it is
        stored (True) or gives torch's format (False, the default); may be
        changed at any time. An attribute rather than an argument of
        ``state_dict()``: torch's takes none, and what calls it for you
        (``torch.distributed.checkpoint``, trainers' checkpoint hooks) passes
        none. See :meth:`state_dict` for the format."""
        return self._compressed_state_dict

    @compressed_state_dict.setter
    def compressed_state_dict(self, value):
        self._compressed_state_dict = _args.flag("compressed_state_dict", value)

    def _show_entry(self, p, entry):
        """``entry`` as ``state[p]``; none when it is empty (torch's SGD
        without momentum keeps no state)."""
        if entry:
            self.state[p] = entry
        else:
            self.state.pop(p, None)

    def _state_storage(self, dtype, device, index):
        """The state storage of ``dtype`` parameters on ``device`` (a torch
        dtype, or ``"int8"``), after checking the storage options fit them."""
        state = state_storage(_numpy_dtype(dtype), self.state_dtype, self.master_weights,
                              self.stochastic_rounding, index)
        state = state if isinstance(state, str) else _torch_dtype(state)
        if device.type != "cpu" and state in EIGHT_BIT:
            kind = "blockwise" if state == "int8" else "companded"
            raise NotImplementedError(
                f"param group {index}: state_dtype={state!r} (8-bit {kind} state) runs on the "
                f"CPU only for now in fastadapt.torch; on {device.type} tensors use float32 or "
                f"bfloat16 state")
        return state

    # ------------------------------------------------------------- copy and pickle
    def __getstate__(self):
        """What ``copy.deepcopy`` and pickling (``torch.save``) keep: the
        constructor's options, the parameter groups (with the parameters
        themselves, so a model copied or pickled together with the optimizer
        shares them), the state dict and the public attributes. Hooks are not
        kept (as torch.optim's pickling drops them)."""
        return {"fastadapt": 1, "defaults": self.defaults,
                "options": {"max_grad_norm": self._max_grad_norm,
                            "state_dtype": self.state_dtype,
                            "master_weights": self.master_weights,
                            "stochastic_rounding": self.stochastic_rounding,
                            "seed": self.seed, "min_8bit_size": self.min_8bit_size,
                            "compressed_state_dict": self.compressed_state_dict},
                "param_groups": self.param_groups,
                # (compressed: the state as stored, which loads back bit for bit)
                "state_dict": self._state_dict_without_hooks(compressed=True),
                # (an instance's ``step``: a wrapper of an lr scheduler or of
                # gradient release, which go with their hooks)
                "attributes": {k: v for k, v in self.__dict__.items() if not k.startswith("_")
                               and k not in ("defaults", "state", "param_groups", "step")}}

    def __setstate__(self, state):
        """Rebuild from :meth:`__getstate__`: the parameters are packed into
        new flat buffers and the state loaded into them."""
        if not (isinstance(state, dict) and state.get("fastadapt") == 1):
            raise TypeError(f"fastadapt.torch.{type(self).__name__}.__setstate__ takes what "
                            "its __getstate__ returns; use load_state_dict(...) to load a "
                            "state dict")
        groups = [dict(g) for g in state["param_groups"]]
        FlatOptimizer.__init__(self, groups, {**state["defaults"], **state["options"]})
        self.load_state_dict(state["state_dict"])
        self.__dict__.update(state["attributes"])

    # ------------------------------------------------------------- options
    def _check_options(self, group, index):
        """Validate a group's hyper-parameters (ValueError/TypeError naming the group)."""
        at = "" if index is None else f"param group {index}: "
        name = type(self).__name__
        for flag in REJECTED_FLAGS:
            if group.get(flag):
                raise ValueError(f"{at}fastadapt.torch.{name} does not support {flag}=True "
                                 f"(use torch.optim.{self.rule.torch_name} for it)")
        if self.rule.torch_refuses_tensor_mix:
            _check_tensor_hyper_parameters(group, at, self.rule.torch_name)
        for key, default in self._extras.items():
            if key in group and _plain(group[key]) != default:
                raise ValueError(f"{at}fastadapt.torch.{name} does not support "
                                 f"{key}={group[key]!r} (only torch's default, {default!r})")
        with naming_group(index):
            options = self._rule_options(group)
            for key in set(self._state_init.values()) | {
                    v for v in self._scalar_state.values() if isinstance(v, str)}:
                value = float(_plain(group[key]))
                if not math.isfinite(value):
                    raise ValueError(f"invalid {key}: {group[key]!r}")
            self._check_lr(options["lr"])
            dry_run(self._group_rule(group), options,
                    scalar_state={s: _initial(spec, group) for s, spec in self._scalar_state.items()})

    def _rule_options(self, group):
        return {k: _plain(group[k]) for k in self._option_keys}

    def _group_constants(self):
        """Entries every group holds whatever was given: torch's AdamW groups
        hold ``decoupled_weight_decay=True`` (its signature has no such keyword)."""
        if self._twins is None or DECOUPLED_FLAG in self._signature.parameters:
            return {}
        return {DECOUPLED_FLAG: self.rule is self._twins[1]}

    def _group_rule(self, group):
        """The rule ``group`` runs: Adam's groups with ``decoupled_weight_decay``
        run AdamW's (as torch's Adam does), AdamW's without it Adam's."""
        if self._twins is None:
            return self.rule
        return self._twins[1] if _plain(group.get(DECOUPLED_FLAG, False)) else self._twins[0]

    @staticmethod
    def _check_lr(lr, steps=None):
        """``lr`` (a number or a tensor) as a float: finite and >= 0."""
        try:
            x = float(lr)
        except (TypeError, ValueError):
            raise TypeError(f"lr must be a real number, got {lr!r}") from None
        if not (math.isfinite(x) and x >= 0):
            raise ValueError(f"invalid lr: {lr!r} (must be a finite number >= 0)")
        return x

    def _group_options(self, index, group):
        """The functional step's keywords for ``group``, validated when they
        changed (the core's :func:`~fastadapt._core.step_options`; the step
        count does not matter here: lr is a number)."""
        extra = {k: _plain(group.get(k)) for k in self._extra_keys}
        options, self._validated[index] = step_options(
            self._rule_options(group), self._validated[index], index, None, self._check_lr,
            self._check_options, group, index if len(self.param_groups) > 1 else None,
            extra=extra)
        return options

    # ------------------------------------------------------------- groups
    def add_param_group(self, param_group):
        """Add a parameter group (torch's semantics); its parameters are packed
        into new flat buffers and their ``.data`` re-pointed to them. A
        parameter given twice in the group draws torch's UserWarning and is
        kept once (torch keeps both entries and updates it once per entry)."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        index = len(self.param_groups) - 1
        _deduplicate(group)
        try:
            self._check_options(group, index)
            buckets = self._pack(group, index)
        except BaseException:
            self.param_groups.pop()
            raise
        self._buckets.append(buckets)
        self._group_params.append(list(group["params"]))
        self._validated.append(None)
        for b in buckets:
            b.ensure_state(self.rule.state_for(**self._rule_options(group)), group)
            if self._state_init:             # torch initialises such state eagerly (Adagrad)
                for j in range(len(b.params)):
                    b.publish(j)

    def _pack(self, group, index):
        params = group["params"]
        for i, p in enumerate(params):
            where = f"param group {index}, parameter {i}"
            if p.layout != torch.strided:
                raise ValueError(f"{where}: sparse parameters are not supported")
            if p.dtype in COMPLEX_DTYPES:
                self._check_complex(where, p)
            elif p.dtype not in SUPPORTED_DTYPES:
                raise TypeError(f"{where} has dtype {p.dtype}; fastadapt.torch supports "
                                "float32, float64, bfloat16, float16, complex64 and "
                                "complex128 parameters")
            if p.device.type not in ("cpu", "cuda"):
                raise TypeError(f"{where} is on {p.device}; fastadapt.torch supports CPU "
                                "and CUDA tensors")
        _check_no_shared_memory(self.param_groups, index)
        by_key = {}
        eight_bit = self.state_dtype in EIGHT_BIT
        for i, p in enumerate(params):
            small = eight_bit and p.numel() < self.min_8bit_size
            by_key.setdefault((p.device, p.dtype, small), []).append(i)
        for device, dtype, _ in by_key:      # refuse before anything is packed
            self._state_storage(dtype.to_real(), device, index)
            if device.type != "cpu" and self.state_dtype == "int8c":
                raise NotImplementedError(
                    f"param group {index}: state_dtype='int8c' (companded 8-bit state) runs "
                    f"on the CPU only for now; on {device.type} tensors use another state_dtype")
        return [_Bucket(self, index, [params[i] for i in idx], idx, self._partition, small=small)
                for (_, _, small), idx in by_key.items()]

    def _check_complex(self, where, p):
        """Complex parameters where torch takes them, with state of their own precision."""
        if not self.rule.torch_complex:
            error = ValueError if self.rule.in_torch else TypeError   # as torch's SparseAdam
            raise error(f"{where} is complex ({p.dtype}); fastadapt.torch.{type(self).__name__}"
                        " does not support complex parameters (torch.optim has no complex "
                        "form of it)")
        if self.state_dtype is not None or self.master_weights or self.stochastic_rounding:
            raise ValueError(f"{where} is complex ({p.dtype}); complex parameters keep state "
                             "of their own precision (no state_dtype, master_weights or "
                             "stochastic_rounding)")

    # ------------------------------------------------------------- gradients
    def zero_grad(self, set_to_none=True):
        """Reset the gradients (torch's semantics).

        ``set_to_none=True`` (torch's default) sets every ``.grad`` to None: the
        next backward allocates fresh gradients, which this optimizer's hooks
        copy into the flat buffer as autograd accumulates them (``.grad`` then
        is the flat buffer's view). ``set_to_none=False`` zeroes each gradient
        in place and keeps the same tensors, as torch does: the views with one
        fill per buffer, so the next backward accumulates straight into the
        flat buffer (the zero-copy path); any other tensor (one you assigned)
        stays ``.grad`` and is zeroed. As in torch, a ``.grad`` that is None
        stays None (that parameter is skipped unless it gets a gradient).
        """
        for group, buckets in zip(self.param_groups, self._buckets):
            if set_to_none:
                for p in group["params"]:
                    p.grad = None
                continue
            for b in buckets:
                b.grad_flat.zero_()
                others = []
                for p, view in zip(b.params, b.grad_views):
                    g = p.grad
                    if g is None or g is view:
                        continue
                    if g.grad_fn is not None:
                        g.detach_()
                    else:
                        g.requires_grad_(False)
                    others.append(g)
                for g in others:
                    g.zero_()

    # ------------------------------------------------------------- stepping
    # (torch.optim wraps ``step`` with this at the first instance: torch's
    # wrapper, bypassed while there is no profiler and no step hook)
    profile_hook_step = staticmethod(profile_hook_step)

    @_clears_scaler_flags_on_failure
    def step(self, closure=None):
        """One update of every parameter that has a gradient.

        Under ``torch.amp.GradScaler``, ``self.grad_scale`` / ``self.found_inf``
        are set by the scaler: gradients are divided by ``grad_scale`` and the
        whole step (parameters, state and step counts) is skipped when
        ``found_inf`` is non-zero. The division happens in the kernel when the
        rule's functional step takes ``grad_scale=`` (the flat gradient buffer
        then keeps the scaled values), else by one in-place multiply of the
        flat gradient buffer before the kernel. Everything is checked before anything is
        written: an invalid hyper-parameter or gradient raises and changes
        nothing, and clears ``grad_scale`` / ``found_inf`` (GradScaler removes
        them only after a step that returns; left set, the next ``scaler.step``
        would multiply its scale into the stale one).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            plans = []
            for index, (group, buckets) in enumerate(zip(self.param_groups, self._buckets)):
                params = group["params"]
                if len(params) != len(self._group_params[index]) or not all(
                        map(operator.is_, params, self._group_params[index])):
                    raise ValueError(f"param_groups[{index}]['params'] was changed after the "
                                     "optimizer was built; use add_param_group to add "
                                     "parameters")
                options = self._group_options(index, group)
                plans.extend((group, options, b, b.scan()) for b in buckets)
            self.grad_norm, self.step_skipped = None, False
            found_inf = getattr(self, "found_inf", None)
            local_inf = found_inf is not None and float(found_inf) != 0.0
            grad_scale = getattr(self, "grad_scale", None)
            if grad_scale is not None and not local_inf:
                grad_scale = check_grad_scale(float(grad_scale))
            sparse = _sparse.prepare(self, plans)
            plans, skip = self._agreement.decide_skip(self, plans, found_inf is not None,
                                                      local_inf)
            if skip:
                self.step_skipped = True
                return loss
            for _, _, bucket, scan in plans:
                bucket.gather(scan)
                bucket.sync_master()
            self._agreement.gradients_ready(plans)
            if self.max_grad_norm is not None:
                grad_scale = self._clip(plans, grad_scale)
                if grad_scale is None:
                    return loss
            # every new state array allocated before any kernel runs, as the
            # NumPy face allocates them
            needed = [bucket.needed_state(group, options, scan)
                      for group, options, bucket, scan in plans]
            for (group, _, bucket, _), names in zip(plans, needed):
                if names is not None:
                    bucket.ensure_state(names, group)
            for (group, options, bucket, scan), names in zip(plans, needed):
                bucket.apply(group, options, scan, grad_scale, needed=names)
            _sparse.apply(self, sparse, grad_scale)
            self._agreement.updated(plans)
        return loss

    def _clip(self, plans, grad_scale):
        """Global-norm clipping as ``torch.nn.utils.clip_grad_norm_(params,
        max_grad_norm)``, in one read-only pass over the gradients (each
        bucket's norm unscaled, their squares summed over the processes):
        the core's decision (:meth:`WholeStep._decide`), None when the step
        is skipped."""
        from ..norm import grad_norm
        local = math.fsum(grad_norm(*bucket.present_grads(scan), grad_scale=grad_scale) ** 2
                          for _, _, bucket, scan in plans)
        return self._decide(math.sqrt(self._agreement.total(local)),
                            1.0 if grad_scale is None else grad_scale)


def _min_8bit_size(value):
    """The ``min_8bit_size`` option, checked: an int >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"min_8bit_size must be an int >= 0 (0: every parameter's state in "
                         f"8 bits), got {value!r}")
    return int(value)


def _check_tensor_hyper_parameters(group, at, torch_name):
    """What torch's Adam and AdamW refuse of tensor hyper-parameters (ValueError)."""
    betas = group.get("betas")
    pair = tuple(betas) if isinstance(betas, (tuple, list)) and len(betas) == 2 else (None, None)
    if isinstance(pair[0], torch.Tensor) != isinstance(pair[1], torch.Tensor):
        raise ValueError(f"{at}betas must be both numbers or both tensors, got {betas!r} "
                         f"(torch.optim.{torch_name} refuses a mix)")
    if group.get("foreach") and not group.get("capturable"):
        for what, value in (("lr", group.get("lr")), ("betas[0]", pair[0]), ("betas[1]", pair[1])):
            if isinstance(value, torch.Tensor):
                raise ValueError(f"{at}{what} as a tensor with foreach=True: torch.optim."
                                 f"{torch_name} refuses it (foreach changes nothing here; "
                                 "leave it None)")


def _deduplicate(group):
    """Keep the first of each parameter given more than once in ``group``
    (with its name, when the group has ``param_names``)."""
    params = group["params"]
    seen, keep = set(), []
    for i, p in enumerate(params):
        if id(p) not in seen:
            seen.add(id(p))
            keep.append(i)
    if len(keep) == len(params):
        return
    group["params"] = [params[i] for i in keep]
    if "param_names" in group:
        group["param_names"] = [group["param_names"][i] for i in keep]


def _check_no_shared_memory(groups, index):
    """Parameters must not share memory: each gets its own slot in a flat buffer."""
    spans = []
    for gi, group in enumerate(groups):
        for i, p in enumerate(group["params"]):
            if p.numel() == 0:
                continue
            start = p.data_ptr()
            spans.append((p.device, start, start + p.numel() * p.element_size(), gi, i))
    spans.sort(key=lambda s: (str(s[0]), s[1]))
    for a, b in zip(spans, spans[1:]):
        if a[0] == b[0] and b[1] < a[2] and index in (a[3], b[3]):
            raise ValueError(f"param group {a[3]}, parameter {a[4]} and param group {b[3]}, "
                             f"parameter {b[4]} share memory; fastadapt.torch packs every "
                             "parameter into its own slot, so they would stop sharing it")


