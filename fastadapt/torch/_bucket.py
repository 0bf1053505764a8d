"""One flat buffer of fastadapt.torch: the parameters of one group that share
a device and dtype, packed together with their gradient and state buffers,
and the update of the span of it this process owns (what it takes in from
the model between steps is :mod:`fastadapt.torch._intake`'s)."""
import operator

import numpy as np
import torch

from ..flat import ALIGN_BYTES, host_zeros, layout
from .._core import launch_keywords, missing_state, runs as launch_runs, uniform
from ..functional import step_for
from .. import _storage
from ._conventions import (CORRECTION_KEY, EIGHT_BIT, MASTER_KEY, _host_array, _initial,
                          _numpy_dtype, _plain, _scalar_dtype)
from ._intake import StepIntake


def _zeros(n, dtype, device):
    """A flat buffer of ``n`` zeros: on the CPU in memory NumPy allocates and
    fastadapt places (``flat.host_zeros``: a large one on a 2 MiB boundary,
    a transparent huge page's), which the kernels stream faster than torch's
    own allocation (4 KiB pages)."""
    if device.type != "cpu":
        return torch.zeros(n, dtype=dtype, device=device)
    if dtype == torch.bfloat16:              # NumPy has no bfloat16 of torch's: its bits
        return torch.from_numpy(host_zeros(n, np.int16)).view(torch.bfloat16)
    return torch.from_numpy(host_zeros(n, _numpy_dtype(dtype)))


# ----------------------------------------------------------------- one flat buffer
class _Bucket(StepIntake):
    """The parameters of one group that share a device and dtype, packed into
    one flat buffer, with their gradient and state buffers.

    The parameter and gradient buffers are whole (every process holds the
    parameters); the state arrays, and the float32 master copy of 16-bit
    parameters under ``master_weights``, cover :attr:`span` only (given by
    ``partition``: the whole buffer, or one rank's shard), element ``i``
    standing for element ``span.start + i`` of the flat buffer.
    """

    def __init__(self, owner, group_index, params, indices, partition, small=False):
        self.owner = owner
        self.group_index = group_index
        self.params = params                 # the nn.Parameters, in group order
        self.indices = indices               # their positions in group["params"]
        first = params[0]
        # complex parameters: the flat buffers hold their real view (torch's
        # single-tensor optimizers update view_as_real(param) too); ``dtype`` is
        # the buffers' (real) dtype, ``param_dtype`` the parameters'
        self.device, self.param_dtype = first.device, first.dtype
        self.complex = first.is_complex()
        self.dtype = first.dtype.to_real()
        # the state's storage: a torch dtype, or "int8" / "int8c" (8-bit state);
        # ``small``: parameters under min_8bit_size, whose state stays float32
        self.state_dtype = owner._state_storage(self.dtype, self.device, group_index)
        if small and self.state_dtype in EIGHT_BIT:
            self.state_dtype = torch.float32
        self.eight_bit = self.state_dtype in EIGHT_BIT
        # 8-bit state: its container, elements per scale and the scale's key
        self.container, self.unit, self.scale_key, _ = EIGHT_BIT.get(
            self.state_dtype, (None, 1, None, None))
        self.shapes = [p.shape for p in params]
        pair = 2 if self.complex else 1
        self.sizes = [p.numel() * pair for p in params]
        self.real_shapes = [(*s, 2) if self.complex else s for s in self.shapes]
        # 8-bit state: every parameter starts a block (group) of its own, so a
        # run of parameters (and one parameter's checkpoint) is whole blocks
        align = self.unit if self.eight_bit else ALIGN_BYTES // (first.element_size() // pair)
        self.offsets, end = layout(self.sizes, align)
        self.span = partition.span(end, align)
        end = self.length = self.span.length
        self.param_flat = _zeros(end, self.dtype, self.device)
        self.param_views = self._param_views(self.param_flat)
        self.host = self.device.type == "cpu"
        self.k_param = self._kernel_array(self.param_flat)
        self.set_grad_buffer(True)
        # gradient release (fastadapt.torch._release): these parameters are updated
        # in the backward, from autograd's gradient, which is then dropped
        self.released = [False] * len(params)
        self.state_flat, self.state_views, self.k_state = {}, {}, {}
        self.block_tensors = {}              # 8-bit state: name -> (codes, scale) tensors
        # float64: exact step counts to 2**53 (torch's float32 ones stop at 2**24,
        # and stochastic rounding, keyed on the step, would then repeat its bits)
        self.steps = torch.zeros(len(params), dtype=torch.float64)
        self.steps_np = self.steps.numpy()
        self.scalars, self.scalars_np = {}, {}
        self.uniform = True                  # same step count and scalar state everywhere
        self._runs = {}                      # (a, b, state names) -> kernel arrays (_run_arrays)
        self.published = [False] * len(params)
        self.entries = [None] * len(params)  # the optimizer.state entries shown
        with torch.no_grad():
            for p, view in zip(params, self.param_views):
                view.copy_(p)
                p.data = view
        # a gradient already there stays the parameter's (the step copies it)
        self.param_ptrs = [v.data_ptr() for v in self.param_views]
        self._adopt_fresh_gradients()
        # master weights: a float32 copy the update runs on; the parameters
        # receive it rounded to nearest in the same pass
        # (per-parameter views of it only when the span is the whole buffer)
        # A split master ("bf16+16" / "bf16+8") keeps its correction there
        # instead, zero to start (the master is the parameter), shown under
        # ``master_key``.
        self.master_flat = self.master_views = self.k_master = None
        self.split = owner.master_weights if isinstance(owner.master_weights, str) else None
        self.master_key = CORRECTION_KEY if self.split else MASTER_KEY
        if self.split:
            dtype = getattr(torch, _storage.SPLIT_MASTER[self.split][0].name)
            self.master_flat = _zeros(self.span.stop - self.span.start, dtype, self.device)
        elif owner.master_weights:
            self.master_flat = _zeros(self.span.stop - self.span.start, torch.float32,
                                      self.device)
            self.master_flat.copy_(self.param_flat[self.span.start:self.span.stop])
        if self.master_flat is not None:
            if self.span.whole:
                self.master_views = self._views(self.master_flat)
            self.k_master = self._kernel_array(self.master_flat)
        self.versions = self._versions()

    def clip(self, j0, j1=None):
        """``(a, b)``: the part of parameters ``j0..j1`` (one by default) in
        :attr:`span`, in the flat buffer's elements (``a == b`` when none)."""
        j1 = j0 if j1 is None else j1
        return self.span.clip(self.offsets[j0], self.offsets[j1] + self.sizes[j1])

    def write_master(self, j, values):
        """The span's part of parameter ``j``'s ``values`` (its full values,
        any shape) into the master copy (a split master: the correction that
        with the parameter comes nearest to them, see
        ``_storage.correction_for``)."""
        a, b = self.clip(j)
        lo, s0 = self.offsets[j], self.span.start
        target = self.master_flat[a - s0:b - s0]
        if self.split and b > a:
            param = self.param_flat[a:b]
            part = values.reshape(-1)[a - lo:b - lo]
            if part.dtype == param.dtype:       # the parameter's own values: no correction
                target.zero_()
                return
            mine = param.detach().cpu().view(torch.int16).numpy()
            target.copy_(torch.from_numpy(_storage.correction_for(
                part.detach().float().cpu().numpy(), mine, self.split)))
        elif b > a and values.data_ptr() != target.data_ptr():
            target.copy_(values.reshape(-1)[a - lo:b - lo])

    def load_master(self, j, extras):
        """Parameter ``j``'s master from a checked state entry's ``extras``:
        its float32 ``master_param`` or a split master's ``master_correction``
        (rebuilt with the parameter's current value), converted to this
        bucket's kind; none: the parameter's value."""
        correction = extras.get(CORRECTION_KEY)
        values = extras.get(MASTER_KEY)
        if correction is not None:
            param = _host_array(self.param_views[j].detach().cpu().reshape(-1))
            values = torch.from_numpy(_storage.join_master(
                param, correction.detach().cpu().reshape(-1).numpy()))
        self.write_master(j, self.param_views[j] if values is None else values)

    def _views(self, flat):
        """Per-parameter views of ``flat`` (complex parameters: their real view)."""
        return [flat[o:o + n].view(s)
                for o, n, s in zip(self.offsets, self.sizes, self.real_shapes)]

    def _param_views(self, flat):
        """Per-parameter views of ``flat`` of the parameters' dtype."""
        return [self.as_param(v) for v in self._views(flat)]

    def as_param(self, view):
        """A real view as the parameters' dtype (complex: ``torch.view_as_complex``)."""
        return torch.view_as_complex(view) if self.complex else view

    def _kernel_array(self, flat):
        return _host_array(flat) if self.host else flat

    def _versions(self):
        return [p._version for p in self.params]

    def state_tensors(self):
        """The tensors holding this bucket's state (8-bit state: its codes and
        scales), the master copy included (its span's)."""
        if self.eight_bit:
            out = [t for pair in self.block_tensors.values() for t in pair]
        else:
            out = list(self.state_flat.values())
        return out + ([self.master_flat] if self.master_flat is not None else [])

    def sync_master(self):
        """With master weights: bring the master copy of every parameter that
        was written in place since the last step (``model.load_state_dict``,
        ``nn.init``, ``p.copy_`` under ``no_grad``: each bumps the parameter's
        version counter; a replaced ``.data`` too) up to date: where the master
        no longer rounds to the parameter, it takes the parameter's value. One
        compare per changed parameter; nothing when none changed."""
        if self.master_flat is None or self.split:
            return                  # (a split master always rounds to its parameter)
        versions = self._versions()
        if versions == self.versions:
            return
        for j, (now, before) in enumerate(zip(versions, self.versions)):
            if now != before:
                a, b = self.clip(j)
                master = self.master_flat[a - self.span.start:b - self.span.start]
                param = self.param_flat[a:b]
                stale = master.to(self.dtype) != param
                master[stale] = param[stale].float()
        self.versions = versions

    def block_view(self, name, j0, j1=None):
        """8-bit state ``name`` over parameters ``j0..j1`` (one parameter by
        default) as a Blockwise8 (Companded8) of views."""
        j1 = j0 if j1 is None else j1
        return self.state_flat[name].elements(self.offsets[j0],
                                           self.offsets[j1] + self.sizes[j1])

    def kernel_state(self, name, lo, hi):
        """The state array ``name`` the functional step takes, over ``lo:hi``
        of the state arrays (``span.start`` before the flat buffer's)."""
        if not self.eight_bit:
            return self.k_state[name][lo:hi]
        b8 = self.state_flat[name]
        return b8 if lo == 0 and hi == self.span.size else b8.elements(lo, hi)

    def state_entries(self, name, j, values=False, compressed=False):
        """The entries of state array ``name`` in parameter ``j``'s state (a
        whole buffer's span):
        ``{torch's name: view}``; for 8-bit state the live codes and scales
        (``"<name>.codes"``, ``"<name>.absmax"`` or ``"<name>.scale"``) and,
        with ``values``, the dequantized values under torch's name (a fresh
        float32 tensor, what torch.optim loads); ``compressed``: the codes
        of the parameter's shape, no values (see :meth:`block_entries`)."""
        key = self.owner._torch_names.get(name, name)
        if not self.eight_bit:
            return {key: self.as_param(self.state_views[name][j])}
        codes, scale = self.block_tensors[name]
        return self.block_entries(name, codes, scale, j, values, compressed)

    def block_entries(self, name, codes, scale, j, values=False, compressed=False):
        """Parameter ``j``'s entries of 8-bit state ``name`` from ``codes`` and
        ``scale``, tensors over the whole flat buffer (the live ones, or those
        a ZeroRedundancyOptimizer gathered): its codes (flat; of the
        parameter's shape when ``compressed``) and scales, and with
        ``values`` (not ``compressed``) the dequantized values."""
        key = self.owner._torch_names.get(name, name)
        lo, n, unit = self.offsets[j], self.sizes[j], self.unit
        part = codes[lo:lo + n]
        out = {f"{key}.codes": part.view(self.shapes[j]) if compressed else part,
               f"{key}.{self.scale_key}": scale[lo // unit:-(-(lo + n) // unit)]}
        if values and not compressed:
            whole = self.state_flat[name].with_arrays(codes.numpy(), scale.numpy())
            out[key] = torch.from_numpy(whole.elements(lo, lo + n).dequantize()).view(
                self.shapes[j])
        return out

    def compressed_spec(self, name):
        """What decodes state array ``name`` as stored, for a compressed state
        dict: ``{"storage": "bfloat16"}`` (or ``"float16"``), ``{"storage":
        "int8"`` (or ``"int8c"``)``, "block": elements per scale, "signed":
        bool}``; None for float32 / float64 state, saved as torch's."""
        if self.eight_bit:
            return {"storage": self.state_dtype, "block": self.unit,
                    "signed": bool(self.state_flat[name].signed)}
        if self.state_dtype in (torch.bfloat16, torch.float16):
            return {"storage": str(self.state_dtype).replace("torch.", "")}
        return None

    # ----------------------------------------------------------- state
    def ensure_state(self, names, group):
        """Allocate the state arrays ``names`` that do not exist yet (``span.size``
        elements each); over a whole buffer, show their views in
        ``optimizer.state`` of the parameters already there."""
        for name, value in missing_state(names, self.state_flat, self.owner._state_init, group,
                                         plain=_plain):
            if self.eight_bit:
                b8 = self.container(self.span.size, name not in self.owner.rule.non_negative_state)
                if value != 0.0:
                    b8.fill(value)
                self.state_flat[name] = self.k_state[name] = b8
                self.block_tensors[name] = (torch.from_numpy(b8.codes),
                                            torch.from_numpy(getattr(b8, self.scale_key)))
            else:
                flat = _zeros(self.span.size, self.state_dtype, self.device)
                if value != 0.0:
                    flat.fill_(value)
                self.state_flat[name] = flat
                self.k_state[name] = self._kernel_array(flat)
            if not self.span.whole:
                continue
            if not self.eight_bit:
                self.state_views[name] = self._views(self.state_flat[name])
            for j, published in enumerate(self.published):
                if published:
                    self.owner.state[self.params[j]].update(self.state_entries(name, j))
        for name, spec in self.owner._scalar_state.items():
            if name not in self.scalars:
                self.scalars[name] = torch.full((len(self.params),), _initial(spec, group),
                                                dtype=torch.float64)
                self.scalars_np[name] = self.scalars[name].numpy()

    def reset(self, j0, j1, group, names=None):
        """Parameters ``j0..j1`` back to their state before their first step
        (all state arrays, or those in ``names``)."""
        init = self.owner._state_init
        a, b = self.clip(j0, j1)
        la, lb = a - self.span.start, b - self.span.start
        for name, flat in self.state_flat.items():
            if names is None or name in names:
                value = _initial(init[name], group) if name in init else 0.0
                if not self.eight_bit:
                    flat[la:lb].fill_(value)
                elif lb > la:
                    blocks = flat.elements(la, lb)
                    if value == 0.0:    # the zero code and scale 0, as a new one starts
                        blocks.clear()
                    else:
                        blocks.fill(value)
        if names is None:
            for name, spec in self.owner._scalar_state.items():
                self.scalars_np[name][j0:j1 + 1] = _initial(spec, group)
            self.steps_np[j0:j1 + 1] = 0

    def load(self, name, j, arrays, extras, group):
        """The span's part of parameter ``j``'s state array ``name`` from a
        checked state dict: converted to this bucket's state dtype, quantized
        into 8-bit state (block by block, as one process quantizes) unless
        the dict has the codes (used as they are), reset when absent."""
        key = self.owner._torch_names.get(name, name)
        src = arrays.get(key)
        codes = extras.get(f"{key}.codes") if self.eight_bit else None
        if src is None and codes is None:
            self.reset(j, j, group, names=(name,))
            return
        lo, s0 = self.offsets[j], self.span.start
        a, b = self.clip(j)
        if b <= a:
            return
        if not self.eight_bit:
            target = self.state_flat[name][a - s0:b - s0]
            if src.data_ptr() != target.data_ptr():
                flat = torch.view_as_real(src) if src.is_complex() else src
                target.copy_(flat.reshape(-1)[a - lo:b - lo])
            return
        target = self.state_flat[name].elements(a - s0, b - s0)
        if codes is not None:           # as saved; a - lo starts a block (group)
            target.codes[:] = codes.detach().cpu().reshape(-1).numpy()[a - lo:b - lo]
            scale = extras[f"{key}.{self.scale_key}"].detach().cpu().reshape(-1).numpy()
            getattr(target, self.scale_key)[:] = scale[
                (a - lo) // self.unit:-(-(b - lo) // self.unit)]
            return
        values = src.detach().to("cpu", torch.float32).reshape(-1).numpy()[a - lo:b - lo]
        try:
            target.assign(values)
        except ValueError as exc:   # checked when the dict was; kept as a guard
            raise ValueError(f"loaded {key}: {exc}") from None

    def publish(self, j):
        """Show parameter ``j``'s state in ``optimizer.state`` (torch shows a
        parameter's state from its first step on): the step count and scalar
        state and, over a whole buffer, views of the state arrays and the
        master copy (a shard's are gathered by ``consolidate_state_dict``)."""
        owner = self.owner
        entry = {} if owner._no_step else {"step": self.steps[j]}
        if self.span.whole:
            for name in self.state_flat:
                entry.update(self.state_entries(name, j))
        for name, values in self.scalars.items():
            entry[owner._torch_names.get(name, name)] = values[j]
        if self.master_views is not None:
            entry[self.master_key] = self.master_views[j]
        self.show(j, entry)

    def show(self, j, entry):
        """Make ``entry`` parameter ``j``'s ``optimizer.state`` (none when it is
        empty: torch's SGD without momentum keeps no state)."""
        self.owner._show_entry(self.params[j], entry)
        self.entries[j] = entry if entry else None
        self.published[j] = True

    def scalar_tensor(self, name, j):
        return torch.tensor(float(self.scalars_np[name][j]), dtype=_scalar_dtype())

    # ----------------------------------------------------------- a step
    def present_grads(self, scan):
        """The gradients this step applies in the span, as arrays for
        ``fastadapt.grad_norm``: all of it when every parameter has one (its
        padding is zero), else one slice per parameter that has one."""
        present = scan[0]
        if present is None or all(present):
            return [self.k_grad[self.span.start:self.span.stop]]
        pieces = []
        for j, has in enumerate(present):
            a, b = self.clip(j)
            if has and b > a:
                pieces.append(self.k_grad[a:b])
        return pieces

    def set_grad_buffer(self, keep):
        """Allocate the flat gradient buffer and its views (``keep``), or drop
        them (every parameter released: no ``.grad`` is ever one of them)."""
        if keep:
            self.grad_flat = _zeros(self.param_flat.numel(), self.dtype, self.device)
            self.grad_views = self._param_views(self.grad_flat)
        else:
            self.grad_flat = self.param_flat.new_empty(0)
            self.grad_views = [object() for _ in self.params]   # never any .grad
        self.k_grad = self._kernel_array(self.grad_flat)
        self.grad_ptrs = [v.data_ptr() if keep else None for v in self.grad_views]

    def needed_state(self, group, options, scan):
        """The state arrays the update of what ``scan`` presents needs under
        ``options``; None when no parameter has a gradient (no update)."""
        present = scan[0]
        if present is not None and not any(present):
            return None
        return self.owner._group_rule(group).state_for(**options)

    def apply(self, group, options, scan, grad_scale, grad=None, needed=None):
        """Run the update (after :meth:`gather`); ``grad``: the kernel array of
        the gradient of the one parameter ``scan`` presents, instead of the
        flat buffer's (gradient release); ``needed``: the
        :meth:`needed_state`, already allocated (None: allocated here)."""
        present = scan[0]
        every = present is None
        if not every and not any(present):
            return
        owner = self.owner
        rule = owner._group_rule(group)
        if needed is None:
            needed = rule.state_for(**options)
            self.ensure_state(needed, group)
        unscale_in_kernel = grad_scale is not None and owner._kernel_unscales
        if grad_scale is not None and not unscale_in_kernel:
            self.grad_flat[self.span.start:self.span.stop].mul_(1.0 / grad_scale)
        if self.uniform and (every or all(present)):
            runs = [(0, len(self.params) - 1)]
        else:
            runs = launch_runs([True] * len(self.params) if every else present, self.steps_np,
                               list(self.scalars_np.values()))
        for j0, j1 in runs:
            lo = self.offsets[j0]
            hi = (self.length if j1 == len(self.params) - 1 and grad is None
                  else self.offsets[j1] + self.sizes[j1])
            a, b = self.span.clip(lo, hi)
            first_step = self.steps_np[j0] == 0
            if first_step:                    # torch creates state at a parameter's first step
                self.reset(j0, j1, group)
            param, flat_grad, master, state = self._run_arrays(a, b, needed)
            # (stochastic rounding's offset: the bits of one call over the bucket)
            kwargs = dict(options)
            for name in needed:
                kwargs[name] = state[name]
            kwargs = launch_keywords(
                rule, kwargs, int(self.steps_np[j0]), master=master,
                stochastic_rounding=owner.stochastic_rounding, seed=owner.seed, offset=a,
                scalar_state={name: float(self.scalars_np[name][j0])
                              for name in owner._scalar_state},
                grad_scale=grad_scale if unscale_in_kernel else None)
            # an empty span (a run outside this rank's shard) still
            # returns the new scalar state
            result = step_for(rule)(param, flat_grad if grad is None else grad, **kwargs)
            for name in owner._scalar_state:
                if not isinstance(result, dict) or name not in result:
                    raise RuntimeError(f"{step_for(rule).__name__} must return {{{name!r}: new "
                                       f"value}} (the rule declares scalar state {name!r})")
                self.scalars_np[name][j0:j1 + 1] = float(result[name])
            if first_step:
                for j in range(j0, j1 + 1):
                    if not self.published[j]:
                        self.publish(j)
        if every or all(present):
            self.steps_np += 1
        else:
            self.steps_np[np.asarray(present)] += 1
            self.update_uniform()

    def _run_arrays(self, a, b, names):
        """The kernel arrays of a launch over ``a:b`` of the flat buffer: the
        parameters', the gradients', the master copy's (None without one) and
        ``{name: state array}`` of the state arrays ``names``, over the span's
        part. The same objects from step to step while the buffers are the
        same ones, so that the functional step's launch cache knows them and
        does not check again what it checked (see
        :class:`fastadapt._dispatch.LaunchCache`): an 8-bit container is the
        same while it holds the same arrays."""
        bases = (self.k_param, self.k_grad, self.k_master, *map(self.k_state.get, names))
        if self.eight_bit:
            bases += tuple(x for b in bases[3:] for x in b.kernel_arrays())
        key = (a, b, names)
        cached = self._runs.get(key)
        if cached is not None and all(map(operator.is_, cached[0], bases)):
            return cached[1]
        la, lb = a - self.span.start, b - self.span.start
        arrays = (self.k_param[a:b], self.k_grad[a:b],
                  None if self.k_master is None else self.k_master[la:lb],
                  {name: self.kernel_state(name, la, lb) for name in names})
        if len(self._runs) >= 64:         # (runs change when step counts differ)
            self._runs.clear()
        self._runs[key] = (bases, arrays)
        return arrays

    def update_uniform(self):
        """Whether one call can update the whole buffer (the core's
        :func:`~fastadapt._core.uniform`)."""
        self.uniform = uniform(self.steps_np, self.scalars_np.values())

