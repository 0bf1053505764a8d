r"""fastadapt.torch: drop-in ``torch.optim`` optimizers over flat buffers.

For every rule of :data:`fastadapt.RULES` this module defines a subclass of
:class:`torch.optim.Optimizer` named as torch names it (``Adam``, ``AdamW``,
``SGD``, ``RMSprop``, ``Adagrad``, ``Adadelta``, and any rule added to the
registry later), with torch's constructor signature and defaults, so a torch
training loop changes one line::

    opt = fastadapt.torch.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)

Importing this module imports torch; ``import fastadapt`` never does.

How it works
------------
At construction the parameters of each group are packed into one flat buffer
per (device, dtype), with 64-byte aligned segments, and every parameter's
``.data`` is re-pointed to its view of that buffer; the model keeps training
the same ``nn.Parameter`` objects. Gradients, and every state array of the
rule, get flat buffers of the same layout. A step is then one call of the
rule's functional step (``fastadapt.adam_step`` ...) over the whole buffer: a
CPU buffer is passed as the zero-copy ``Tensor.numpy()`` view, a CUDA buffer
as the tensor itself (``__cuda_array_interface__``, on torch's current
stream).

Gradients: ``p.grad`` is never replaced by the step, nor written by it
(nor by GradScaler's unscale or clipping, which happen in the kernel). Each
step looks at every parameter's ``.grad``:

* it is the parameter's view of the flat gradient buffer: nothing to do, the
  **zero-copy path**. It gets there without replacing anything the caller
  could hold: when autograd allocates a fresh gradient (``.grad`` was None
  before this backward), hooks on the parameter (``register_hook`` and
  ``register_post_accumulate_grad_hook``) copy it into the view and re-point
  ``.grad`` to the view during the backward, before anyone else sees the
  fresh tensor (one read and write of the gradient, in the backward, and the
  fresh tensor freed at once). From then on ``zero_grad(set_to_none=False)``
  zeroes the views in place (one fill per buffer) and keeps them, as torch
  keeps its tensors, and each backward accumulates straight into the flat
  buffer: no copy at all. With ``zero_grad()`` (``set_to_none=True``, torch's
  default) each step pays the one copy in the backward;
* it is another tensor (one the caller assigned, a view of DDP's buckets,
  one with a graph from ``create_graph=True``): it stays ``.grad`` and the
  step reads it, copying it into the flat buffer (one ``torch._foreach_copy_``
  per buffer: one read and write of the gradient per step, every step);
  ``zero_grad(set_to_none=False)`` zeroes it in place and keeps it;
* it is ``None``: the parameter is skipped as torch skips it (its values,
  its state and its step count are left alone). The buffer is then updated
  by one call per run of consecutive parameters that have a gradient and the
  same step count, instead of one call.

The hooks hold the optimizer weakly and go with it; they are not pickled
with the parameters.

A parameter whose ``.data`` was replaced by a tensor of the same shape, dtype
and device has its new values copied into its slot and is re-pointed there;
any other change (shape, dtype, device, a changed ``param_groups[i]["params"]``)
raises ``ValueError``, as do sparse gradients. A parameter given twice in a
group draws torch's warning and is kept (and updated) once.

State dicts are torch's format: ``state`` keyed by parameter index, each entry
``{"step": tensor, <torch's state names>: tensor}``, and ``param_groups``; a
checkpoint moves between ``fastadapt.torch.Adam`` and ``torch.optim.Adam``
both ways. Keys of ``optimizer.state`` this module does not write (a hook's
``state["test"]``, a library's per-parameter entry) are saved and loaded as
torch saves and loads them. AdamW's groups hold
``decoupled_weight_decay=True`` and ``Adam(decoupled_weight_decay=True)``
computes AdamW, as in torch.

``copy.deepcopy(optimizer)`` and pickling (``torch.save``) rebuild the
optimizer from its options, parameter groups and state dict:
``copy.deepcopy((model, optimizer))`` gives an optimizer of the copied
model's parameters, with a copy of the state.

Step counts are exact: ``optimizer.state[p]["step"]`` is a float64
tensor (torch's float32 count stops at 2**24), state dicts keep torch's
float32 ``step``.

torch's ways to reset a parameter's state are honoured as torch honours them:
after ``optimizer.state.clear()``, ``optimizer.state.pop(p)``, ``del
optimizer.state[p]``, ``optimizer.state[p] = {}`` (or a new ``optimizer.state``
dict) the parameter starts from fresh state, step count 0, at its next step
with a gradient (the master copy of ``master_weights`` is kept: it is the
parameter's value). A non-empty dict put in place of a parameter's state
raises ``ValueError`` at the next step (set state with ``load_state_dict``).

Complex parameters (complex64, complex128) are packed as their real view
(``torch.view_as_real``), which is what torch's single-tensor optimizers
update; ``p``, ``p.grad`` and the state in ``optimizer.state`` and state dicts
are complex views of the flat buffers, as torch keeps them. Only the classes
torch takes complex parameters for accept them, without storage options.

Storage narrower than float32
-----------------------------
Parameters may be ``torch.bfloat16`` or ``torch.float16`` CPU tensors, and
every class takes fastadapt.optim's storage options (keyword-only,
optimizer-wide; the math runs in float32 whatever the storage):

``state_dtype``
    None (the parameters' dtype for float32 / float64, float32 for 16-bit
    parameters), ``torch.float32`` / ``"float32"``, ``torch.bfloat16`` /
    ``"bfloat16"``, ``"float16"`` (float16 parameters only), ``"int8"``
    (8-bit blockwise state, :class:`fastadapt.Blockwise8`; each parameter
    starts a block of 256 elements; ``state[p]`` then holds the live
    ``"<name>.codes"`` (uint8) and ``"<name>.absmax"`` (float32 per block)
    views, and :meth:`~FlatOptimizer.state_dict` adds the dequantized values
    under torch's name) or ``"int8c"`` (companded 8-bit state,
    :class:`fastadapt.Companded8`, CPU only; the same, with groups of 32
    elements and ``"<name>.scale"`` in place of ``"<name>.absmax"``; the
    codes decode and encode with the kernel of the functional API). A state
    dict of one 8-bit format loads into the other (and into any state) from
    its dequantized values. torch's fused CPU optimizers keep the
    parameters' dtype: ``state_dtype=torch.bfloat16`` on bfloat16 parameters
    is their mode, and gives their numbers.
``min_8bit_size``
    With 8-bit state: parameters of fewer elements (default 4096, as
    bitsandbytes' ``min_8bit_size``) keep float32 state, in a bucket (flat
    buffer) of their own per group, dtype and device: a small tensor saves
    little by it, and one scale per block would cost it most. 0 puts every
    parameter's state in 8 bits.
``master_weights``
    For 16-bit parameters: a float32 master copy (one flat buffer per bucket);
    the update runs on it and the parameters the model sees receive it
    rounded to nearest, in the same pass. ``state[p]["master_param"]`` is a
    view of it. A parameter written in place between steps (``model.
    load_state_dict``, ``nn.init``, ``p.copy_`` under ``no_grad``: anything
    that bumps its version counter, or a replaced ``.data``) is seen at the
    next step or ``state_dict()``: its master copy takes the new values where
    it no longer rounds to them. Writes through ``p.data`` bypass the version counter and are
    not seen (as in torch's own in-place checks).
``stochastic_rounding`` and ``seed``
    For 16-bit parameters without master weights: each stored value is
    rounded up or down at random, unbiased, from a hash of (seed, step,
    element index in the bucket's flat buffer); reproducible: a step draws
    the bits ``fastadapt.adam_step(..., stochastic_rounding=True, seed=seed)``
    draws over the flat buffer, whether it updates the whole bucket, the runs
    of parameters that have gradients, or one process's shard
    (:class:`ZeroRedundancyOptimizer`). ``seed=None`` draws one, kept in
    :attr:`FlatOptimizer.seed`.

Nonsense raises (8-bit state with float64, stochastic rounding or master
weights without 16-bit parameters) with fastadapt.optim's
messages. On CUDA tensors every option but 8-bit state runs (that one
raises NotImplementedError at construction, ``"int8c"`` naming itself).
GradScaler's unscale and inf
skip and ``max_grad_norm`` work the same in every mode (the division happens
in the kernel).

What a rule declares for this module
------------------------------------
The classes are built from the registry; a :class:`~fastadapt.Rule` declares
what torch.optim's class of it keeps: each state array's key in torch's state
(``State.torch_name``: Adagrad's ``state_sum`` is ``sum``) and start
(``State.init``: Adagrad's ``initial_accumulator_value``, Rprop's ``lr``; filled
when a parameter takes its first step, torch's lazy initialisation), the
per-parameter scalar state (``ScalarState``: NAdam's ``mu_product``, ASGD's
``eta`` and ``mu``; passed to the functional step as a keyword, which returns
``{name: new value}``; saved as a 0-dim tensor), and whether torch keeps a
``step`` (``torch_step``), takes complex parameters (``torch_complex``),
refuses tensors mixed with numbers (``torch_refuses_tensor_mix``) or computes
it as another rule's class with ``decoupled_weight_decay`` (``coupled_twin``).
"""
import functools
import inspect
import math
import operator
import weakref
from itertools import chain

import numpy as np

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("fastadapt.torch needs PyTorch: pip install 'fastadapt[torch]'") from exc

from . import _args, _storage
from .flat import ALIGN_BYTES, layout
from .kernels.storage import BLOCK, GROUP
from .functional import step_for
from .optim import rounding_seed, storage_options
from .rules import RULES

__all__ = ["FlatOptimizer", "optimizer_class"]

#: Accepted for compatibility with torch.optim; they change nothing.
NO_OP_FLAGS = ("foreach", "fused")
#: torch.optim options fastadapt.torch cannot honour: True raises.
REJECTED_FLAGS = ("differentiable", "capturable")
SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
COMPLEX_DTYPES = (torch.complex64, torch.complex128)
_SIXTEEN_BIT = (torch.bfloat16, torch.float16)
#: Storage options (keyword-only, optimizer-wide), as fastadapt.optim's classes take them.
STORAGE_OPTIONS = {"state_dtype": None, "master_weights": False,
                   "stochastic_rounding": False, "seed": None, "min_8bit_size": 4096}
#: The 8-bit state formats, by ``state_dtype``: the container, the elements
#: that share one float32 scale, and that scale's key in state dicts
#: (``"<state>.<key>"``, beside ``"<state>.codes"``), and what makes loaded
#: scales unsound (a phrase, or None).
EIGHT_BIT = {"int8": (_storage.Blockwise8, BLOCK, "absmax", _storage.absmax_problem),
             "int8c": (_storage.Companded8, GROUP, "scale", _storage.scale_problem)}
#: Extra per-parameter state-dict keys of the storage modes torch has no
#: equivalent for (the 8-bit state's are ``"<state>.codes"`` and ``"<state>.absmax"``
#: or ``"<state>.scale"``).
MASTER_KEY = "master_param"
SEED_KEY = "stochastic_rounding_seed"
#: The step count as an int, saved beside torch's float32 ``step`` where that
#: cannot hold it (past 2**24 steps).
STEP_KEY = "exact_step"
#: torch's Adam computes AdamW when this is True (and its AdamW's groups hold True).
DECOUPLED_FLAG = "decoupled_weight_decay"
def _scalar_dtype():
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _plain(value):
    """A hyper-parameter as a plain Python value (0-dim tensors become floats)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"expected a number or a 1-element tensor, got a tensor of shape "
                             f"{tuple(value.shape)}")
        return value.item()
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v) for v in value)
    return value


def _initial(spec, group):
    """An initial value: a number, or the name of a hyper-parameter of ``group``."""
    return float(_plain(group[spec])) if isinstance(spec, str) else float(spec)


def _numpy_dtype(dtype):
    """The NumPy dtype of a torch floating dtype (bfloat16 through ml_dtypes)."""
    if dtype == torch.bfloat16:
        return _storage.bfloat16("bfloat16 parameters or state")
    return np.dtype(str(dtype).rsplit(".", 1)[-1])


def _torch_dtype(dtype):
    """The torch dtype of a NumPy dtype of :func:`_numpy_dtype`."""
    return torch.bfloat16 if _storage.is_bfloat16(dtype) else getattr(torch, dtype.name)


def _host_array(flat):
    """The zero-copy NumPy view of a CPU tensor (``Tensor.numpy()`` refuses
    bfloat16: its bits are viewed as int16, then as ``ml_dtypes.bfloat16``)."""
    if flat.dtype == torch.bfloat16:
        return flat.view(torch.int16).numpy().view(_storage.bfloat16())
    return flat.numpy()


# ----------------------------------------------------------------- gradient hooks
# Module-level functions holding a weak reference to the bucket, so a model
# never keeps its optimizer alive; not pickled with the parameters.
def _fresh_marker(ref, j):
    @torch.utils.hooks.unserializable_hook
    def hook(grad):
        bucket = ref()
        if bucket is not None and not bucket.released[j]:
            bucket.fresh[j] = bucket.params[j].grad is None
    return hook


def _fresh_adopter(ref, j):
    def hook(param):
        bucket = ref()
        if bucket is not None and bucket.fresh[j]:
            bucket.fresh[j] = False
            bucket.adopt(j)
    return hook


def _remove_hooks(handles):
    for handle in handles:
        handle.remove()


# ----------------------------------------------------------------- one flat buffer
class _Bucket:
    """The parameters of one group that share a device and dtype, packed into
    one flat buffer, with their gradient and state buffers."""

    def __init__(self, owner, group_index, params, indices, small=False):
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
        end = self._flat_length(end, align)
        self.length = end
        self.param_flat = torch.zeros(end, dtype=self.dtype, device=self.device)
        self.param_views = self._param_views(self.param_flat)
        self.host = self.device.type == "cpu"
        self.k_param = self._kernel_array(self.param_flat)
        self.set_grad_buffer(True)
        # gradient release (fastadapt._release): these parameters are updated
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
        self.master_flat = self.master_views = self.k_master = None
        if owner.master_weights:
            self.master_flat, self.master_views = self._new_master()
            self.k_master = self._kernel_array(self.master_flat)
        self.versions = self._versions()

    def _adopt_fresh_gradients(self):
        """Hooks on each parameter that requires a gradient: when autograd
        allocates a fresh ``.grad`` (it was None before this accumulation),
        the gradient is copied into the flat buffer's view and ``.grad``
        re-pointed there, inside the backward, before anyone else can hold
        the fresh tensor. A ``.grad`` that existed before (the view, or a
        tensor the user assigned) is never replaced."""
        self.fresh = [False] * len(self.params)
        ref = weakref.ref(self)
        handles = []
        for j, p in enumerate(self.params):
            if p.requires_grad and p.is_leaf:
                handles.append(p.register_hook(_fresh_marker(ref, j)))
                handles.append(p.register_post_accumulate_grad_hook(_fresh_adopter(ref, j)))
        weakref.finalize(self, _remove_hooks, handles)

    def adopt(self, j):
        """Parameter ``j``'s fresh gradient into its view, and ``.grad`` the view
        (see :meth:`_adopt_fresh_gradients`); a gradient the view cannot hold
        (sparse, another shape or dtype, one with a graph) is left alone."""
        p, view = self.params[j], self.grad_views[j]
        g = p.grad
        if (g is None or g is view or g.requires_grad or g.layout != torch.strided
                or g.shape != view.shape or g.dtype != view.dtype or g.device != view.device):
            return
        with torch.no_grad():
            view.copy_(g)
        p.grad = view

    def _new_master(self):
        """``(master_flat, master_views)``: the float32 master copy of the
        parameters (16-bit: always a new tensor) and its per-parameter views."""
        flat = self.param_flat.float()
        return flat, self._views(flat)

    def _flat_length(self, end, align):
        """The flat buffers' length for segments ending at ``end``, laid out
        in units of ``align`` elements (a subclass may pad them further, as
        ZeroRedundancyOptimizer's shards do); sets ``state_length``, the
        state arrays' (here the flat buffers')."""
        self.state_length = end
        return end

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
        scales), the master copy included (a shard's, in a sharded bucket)."""
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
        if self.master_flat is None:
            return
        versions = self._versions()
        if versions == self.versions:
            return
        for j, (now, before) in enumerate(zip(versions, self.versions)):
            if now != before:
                a, b = self._span(self.offsets[j], self.offsets[j] + self.sizes[j])
                master = self.master_flat[a - self.state_offset:b - self.state_offset]
                param = self.param_flat[a:b]
                stale = master.to(self.dtype) != param
                master[stale] = param[stale].float()
        self.versions = versions

    def block_view(self, name, j0, j1=None):
        """8-bit state ``name`` over parameters ``j0..j1`` (one parameter by
        default) as a Blockwise8 (Companded8) of views."""
        j1 = j0 if j1 is None else j1
        return self.state_flat[name]._view(self.offsets[j0],
                                           self.offsets[j1] + self.sizes[j1])

    #: Where this bucket's state and master arrays start in the flat buffer
    #: (a sharded bucket keeps them for its shard only).
    state_offset = 0

    def _span(self, lo, hi):
        """The part of the flat range ``[lo, hi)`` this process updates: all of
        it here (a sharded bucket: its shard's part)."""
        return lo, hi

    def kernel_state(self, name, lo, hi):
        """The state array ``name`` the functional step takes, over ``lo:hi``
        of the state arrays (``state_offset`` before the flat buffer's)."""
        if not self.eight_bit:
            return self.k_state[name][lo:hi]
        b8 = self.state_flat[name]
        return b8 if lo == 0 and hi == self.length else b8._view(lo, hi)

    def state_entries(self, name, j, values=False):
        """The entries of state array ``name`` in parameter ``j``'s state:
        ``{torch's name: view}``; for 8-bit state the live codes and scales
        (``"<name>.codes"``, ``"<name>.absmax"`` or ``"<name>.scale"``) and,
        with ``values``, the dequantized values under torch's name (a fresh
        float32 tensor, what torch.optim loads)."""
        key = self.owner._torch_names.get(name, name)
        if not self.eight_bit:
            return {key: self.as_param(self.state_views[name][j])}
        codes, scale = self.block_tensors[name]
        lo, n, unit = self.offsets[j], self.sizes[j], self.unit
        out = {f"{key}.codes": codes[lo:lo + n],
               f"{key}.{self.scale_key}": scale[lo // unit:-(-(lo + n) // unit)]}
        if values:
            out[key] = torch.from_numpy(self.block_view(name, j).dequantize()).view(
                self.shapes[j])
        return out

    # ----------------------------------------------------------- state
    def _show_state(self, name):
        """A new state array's per-parameter views, in ``optimizer.state`` of
        the parameters already there."""
        if not self.eight_bit:
            self.state_views[name] = self._views(self.state_flat[name])
        for j, published in enumerate(self.published):
            if published:
                self.owner.state[self.params[j]].update(self.state_entries(name, j))

    def ensure_state(self, names, group):
        """Allocate the state arrays ``names`` that do not exist yet
        (``state_length`` elements each)."""
        init = self.owner._state_init
        for name in names:
            if name in self.state_flat:
                continue
            value = _initial(init[name], group) if name in init else 0.0
            if self.eight_bit:
                b8 = self.container(self.state_length,
                                    name not in self.owner.rule.non_negative_state)
                if value != 0.0:
                    b8.fill(value)
                self.state_flat[name] = self.k_state[name] = b8
                self.block_tensors[name] = (torch.from_numpy(b8.codes),
                                            torch.from_numpy(getattr(b8, self.scale_key)))
            else:
                flat = torch.zeros(self.state_length, dtype=self.state_dtype,
                                   device=self.device)
                if value != 0.0:
                    flat.fill_(value)
                self.state_flat[name] = flat
                self.k_state[name] = self._kernel_array(flat)
            self._show_state(name)
        for name, spec in self.owner._scalar_state.items():
            if name not in self.scalars:
                self.scalars[name] = torch.full((len(self.params),), _initial(spec, group),
                                                dtype=torch.float64)
                self.scalars_np[name] = self.scalars[name].numpy()

    def reset(self, j0, j1, group, names=None):
        """Parameters ``j0..j1`` back to their state before their first step
        (all state arrays, or those in ``names``)."""
        init = self.owner._state_init
        a, b = self._span(self.offsets[j0], self.offsets[j1] + self.sizes[j1])
        la, lb = a - self.state_offset, b - self.state_offset
        for name, flat in self.state_flat.items():
            if names is None or name in names:
                value = _initial(init[name], group) if name in init else 0.0
                if not self.eight_bit:
                    flat[la:lb].fill_(value)
                elif lb > la:
                    blocks = flat._view(la, lb)
                    if value == 0.0:    # the zero code and scale 0, as a new one starts
                        blocks._clear()
                    else:
                        blocks.fill(value)
        if names is None:
            for name, spec in self.owner._scalar_state.items():
                self.scalars_np[name][j0:j1 + 1] = _initial(spec, group)
            self.steps_np[j0:j1 + 1] = 0

    def load(self, name, j, arrays, extras, group):
        """Parameter ``j``'s state array ``name`` from a checked state dict:
        converted to this bucket's state dtype, quantized into 8-bit state
        unless the dict has the codes (used as they are), reset when absent."""
        key = self.owner._torch_names.get(name, name)
        src = arrays.get(key)
        if self.eight_bit:
            codes = extras.get(f"{key}.codes")
            target = self.block_view(name, j)
            if codes is not None:
                part = self.scale_key
                target.codes[:] = codes.detach().cpu().reshape(-1).numpy()
                getattr(target, part)[:] = extras[f"{key}.{part}"].detach().cpu().reshape(
                    -1).numpy()
            elif src is not None:
                values = src.detach().to("cpu", torch.float32).reshape(-1).numpy()
                try:
                    target.assign(values)
                except ValueError as exc:   # checked in _checked_state; kept as a guard
                    raise ValueError(f"loaded {key}: {exc}") from None
            else:
                self.reset(j, j, group, names=(name,))
            return
        view = self.as_param(self.state_views[name][j])
        if src is None:
            self.reset(j, j, group, names=(name,))
        elif src.data_ptr() != view.data_ptr():
            view.copy_(src.reshape(view.shape))

    def publish(self, j):
        """Show parameter ``j``'s state in ``optimizer.state`` (torch shows a
        parameter's state from its first step on)."""
        owner = self.owner
        entry = {} if owner._no_step else {"step": self.steps[j]}
        for name in self.state_flat:
            entry.update(self.state_entries(name, j))
        for name, values in self.scalars.items():
            entry[owner._torch_names.get(name, name)] = values[j]
        if self.master_views is not None:
            entry[MASTER_KEY] = self.master_views[j]
        self.show(j, entry)

    def show(self, j, entry):
        """Make ``entry`` parameter ``j``'s ``optimizer.state`` (none when it is
        empty: torch's SGD without momentum keeps no state)."""
        self.owner._show_entry(self.params[j], entry)
        self.entries[j] = entry if entry else None
        self.published[j] = True

    def cleared(self):
        """The parameters whose ``optimizer.state`` entry was removed or
        replaced by an empty dict since it was shown (torch's ways to reset a
        parameter's state: ``state.clear()``, ``state.pop(p)``, ``del
        state[p]``, ``state[p] = {}``); a non-empty dict of another origin
        raises ValueError. One C-level comparison when none was."""
        now = list(map(self.owner.state.get, self.params))
        if all(map(operator.is_, now, self.entries)):
            return []
        cleared = []
        for j, (entry, shown) in enumerate(zip(now, self.entries)):
            if entry is shown:
                continue
            if not self.published[j]:      # e.g. {} made by reading state[p]: nothing to reset
                self.entries[j] = entry
                continue
            if entry:
                raise ValueError(
                    f"optimizer.state of param group {self.group_index}, parameter "
                    f"{self.indices[j]} was replaced by a dict with keys "
                    f"{sorted(map(str, entry))}; fastadapt.torch keeps the state in flat "
                    "buffers: reset it with optimizer.state.pop(p) (or state[p] = {}, "
                    "state.clear()), or set it with load_state_dict")
            cleared.append(j)
        return cleared

    def forget(self, cleared):
        """Parameters ``cleared`` start from fresh state at their next step,
        as torch's do after their state was removed."""
        if not cleared:
            return
        group = self.owner.param_groups[self.group_index]
        for j in cleared:
            self.reset(j, j, group)
            self.published[j] = False
            self.entries[j] = None
        self.update_uniform()

    def scalar_tensor(self, name, j):
        return torch.tensor(float(self.scalars_np[name][j]), dtype=_scalar_dtype())

    # ----------------------------------------------------------- a step
    def scan(self):
        """Check the parameters and gradients before anything is written.

        Returns ``(present, replaced, copies, cleared)``: which parameters
        have a gradient (``None``: all of them), which had ``.data`` replaced
        (same shape), which gradients must be copied into the flat buffer and
        whose ``optimizer.state`` was cleared (:meth:`cleared`). The common
        cases (nothing replaced or cleared; every gradient the flat buffer's
        view) are three list comprehensions and three C-level comparisons.
        """
        params = self.params
        replaced = self.replaced()
        cleared = self.cleared()
        grads = [p.grad for p in params]
        if all(map(operator.is_, grads, self.grad_views)):
            return None, replaced, [], cleared
        gi = self.group_index
        present, copies = [], []
        for j, g in enumerate(grads):
            present.append(g is not None)
            if g is None or g is self.grad_views[j]:
                continue
            if g.layout != torch.strided:
                raise ValueError(f"param group {gi}, parameter {self.indices[j]}: sparse "
                                 "gradients are not supported")
            if g.shape != self.shapes[j]:
                raise ValueError(f"param group {gi}, parameter {self.indices[j]}: gradient of "
                                 f"shape {tuple(g.shape)} for a parameter of shape "
                                 f"{tuple(self.shapes[j])}")
            if not (g.data_ptr() == self.grad_ptrs[j] and g.is_contiguous()
                    and g.dtype == self.param_dtype):
                copies.append(j)
        return present, replaced, copies, cleared

    def replaced(self):
        """The parameters whose ``.data`` was replaced (same shape, dtype and
        device: anything else raises ValueError) since they were re-pointed."""
        ptrs = [p.data_ptr() for p in self.params]
        if ptrs == self.param_ptrs:
            return []
        replaced = []
        for j, (ptr, p) in enumerate(zip(ptrs, self.params)):
            if ptr != self.param_ptrs[j]:
                self._check_replaced(j, p)
                replaced.append(j)
        return replaced

    def adopt_replaced(self, replaced):
        """Copy the replaced parameters' values into their slots (and their
        master copies: the new values are the truth) and re-point their
        ``.data`` there; the values the model sees do not change."""
        for j in replaced:
            p = self.params[j]
            self.param_views[j].copy_(p.data)
            if self.master_views is not None:
                self.master_views[j].copy_(p.data)
            p.data = self.param_views[j]

    def _check_replaced(self, j, p):
        where = f"param group {self.group_index}, parameter {self.indices[j]}"
        if p.shape != self.shapes[j]:
            raise ValueError(f"{where} changed shape from {tuple(self.shapes[j])} to "
                             f"{tuple(p.shape)} after the optimizer was built; build a new "
                             "optimizer for the new shapes")
        if p.dtype != self.param_dtype or p.device != self.device:
            raise ValueError(f"{where} moved from {self.device}/{self.param_dtype} to "
                             f"{p.device}/{p.dtype} after the optimizer was built; move or "
                             "convert the model before building the optimizer")

    def gather(self, scan):
        """Copy what ``scan`` found (replaced parameters, gradients that are not
        the flat buffer's views) into the buffers; the values the model sees,
        and the gradient tensors, do not change."""
        present, replaced, copies, cleared = scan
        self.adopt_replaced(replaced)
        self.forget(cleared)
        if copies:      # .grad stays the caller's tensor, read and never written
            torch._foreach_copy_([self.grad_views[j] for j in copies],
                                 [self.params[j].grad for j in copies])

    def present_grads(self, scan):
        """The gradients this step applies, as arrays for ``fastadapt.grad_norm``:
        the whole flat buffer when every parameter has one (its padding is zero),
        else one slice per parameter that has one."""
        present = scan[0]
        if present is None or all(present):
            return [self.k_grad]
        return [self.k_grad[o:o + n]
                for o, n, has in zip(self.offsets, self.sizes, present) if has]

    def set_grad_buffer(self, keep):
        """Allocate the flat gradient buffer and its views (``keep``), or drop
        them (every parameter released: no ``.grad`` is ever one of them)."""
        if keep:
            self.grad_flat = torch.zeros_like(self.param_flat)
            self.grad_views = self._param_views(self.grad_flat)
        else:
            self.grad_flat = self.param_flat.new_empty(0)
            self.grad_views = [object() for _ in self.params]   # never any .grad
        self.k_grad = self._kernel_array(self.grad_flat)
        self.grad_ptrs = [v.data_ptr() if keep else None for v in self.grad_views]

    def apply(self, group, options, scan, grad_scale, grad=None):
        """Run the update (after :meth:`gather`); ``grad``: the kernel array of
        the gradient of the one parameter ``scan`` presents, instead of the
        flat buffer's (gradient release)."""
        present = scan[0]
        every = present is None
        if not every and not any(present):
            return
        owner = self.owner
        rule = owner._group_rule(group)
        needed = rule.state_for(**options)
        self.ensure_state(needed, group)
        unscale_in_kernel = grad_scale is not None and owner._kernel_unscales
        if grad_scale is not None and not unscale_in_kernel:
            g0, g1 = self._span(0, self.length)
            self.grad_flat[g0:g1].mul_(1.0 / grad_scale)
        if self.uniform and (every or all(present)):
            runs = [(0, len(self.params) - 1)]
        else:
            runs = self._runs([True] * len(self.params) if every else present)
        for j0, j1 in runs:
            lo = self.offsets[j0]
            hi = (self.length if j1 == len(self.params) - 1 and grad is None
                  else self.offsets[j1] + self.sizes[j1])
            a, b = self._span(lo, hi)
            la, lb = a - self.state_offset, b - self.state_offset
            first_step = self.steps_np[j0] == 0
            if first_step:                    # torch creates state at a parameter's first step
                self.reset(j0, j1, group)
            kwargs = dict(options)
            for name in needed:
                kwargs[name] = self.kernel_state(name, la, lb)
            if rule.takes_step:
                kwargs["step"] = int(self.steps_np[j0]) + 1
            if self.k_master is not None:
                kwargs["master_param"] = self.k_master[la:lb]
            elif owner.stochastic_rounding:
                kwargs["stochastic_rounding"] = True
                kwargs["seed"] = rounding_seed(owner.seed, int(self.steps_np[j0]) + 1,
                                               rule.takes_step)
                kwargs["rounding_offset"] = a      # the bits of one call over the bucket
            for name in owner._scalar_state:
                kwargs[name] = float(self.scalars_np[name][j0])
            if unscale_in_kernel:
                kwargs["grad_scale"] = grad_scale
            # an empty span (a sharded bucket's run outside its shard) still
            # returns the new scalar state
            result = step_for(rule)(self.k_param[a:b], self.k_grad[a:b] if grad is None else grad,
                                  **kwargs)
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

    def update_uniform(self):
        """Whether one call can update the whole buffer: every parameter has
        the same step count and the same scalar state."""
        arrays = (self.steps_np, *self.scalars_np.values())
        self.uniform = all(bool((a == a[0]).all()) for a in arrays if len(a))

    def _runs(self, present):
        """Runs ``(first, last)`` of consecutive parameters that have a
        gradient, the same step count and the same scalar state."""
        runs, start = [], None
        steps, scalars = self.steps_np, list(self.scalars_np.values())
        for j, has in enumerate(present):
            if start is not None and not (has and steps[j] == steps[start] and all(
                    s[j] == s[start] for s in scalars)):
                runs.append((start, j - 1))
                start = None
            if has and start is None:
                start = j
        if start is not None:
            runs.append((start, len(present) - 1))
        return runs


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


class FlatOptimizer(torch.optim.Optimizer):
    """Base class of the fastadapt.torch optimizers: a :class:`torch.optim.Optimizer`
    whose step is one fused fastadapt kernel call per (group, device, dtype).

    Not instantiated directly: each subclass (``fastadapt.torch.Adam`` ...) is
    built from a rule of :data:`fastadapt.RULES` by :func:`optimizer_class`.
    See the module docstring for the gradient paths and their cost, and for
    the storage options.

    Attributes
    ----------
    state_dtype : None, NumPy dtype, "int8" or "int8c"
        The ``state_dtype`` option as given (None: each bucket's default).
    min_8bit_size : int
        With 8-bit state, parameters of fewer elements keep float32 state.
    master_weights, stochastic_rounding : bool
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
    #: The flat-buffer class of each (group, device, dtype).
    _bucket_class = _Bucket

    def __init__(self, params, defaults):
        if self.rule is None:
            raise TypeError("FlatOptimizer is a base class; use fastadapt.torch.Adam, "
                            "AdamW, SGD, ...")
        self._state_init = self.rule.state_init
        self._scalar_state = self.rule.scalar_state_init
        self._torch_names = self.rule.torch_state_names
        self._no_step = not self.rule.torch_step
        self._kernel_unscales = "grad_scale" in inspect.signature(step_for(self.rule)).parameters
        self._twins = self.rule.decoupled_twins
        # the per-parameter state keys this class writes; any other key of
        # optimizer.state is the caller's, kept through state dicts as torch keeps it
        names = [self._torch_names.get(n, n) for n in self.rule.state]
        self._own_keys = {"step", MASTER_KEY, SEED_KEY, *names,
                          *(f"{n}.{part}" for n in names
                            for part in ("codes", *(f[2] for f in EIGHT_BIT.values()))),
                          *(self._torch_names.get(n, n) for n in self._scalar_state)}
        self._buckets = []              # per group: list of _Bucket
        self._group_params = []         # per group: its parameters at construction
        self._validated = []            # per group: the options last checked (lr excluded)
        self._max_grad_norm = _args.max_grad_norm(defaults.pop("max_grad_norm", None))
        storage = {k: defaults.pop(k, v) for k, v in STORAGE_OPTIONS.items()}
        state_dtype = storage["state_dtype"]
        if isinstance(state_dtype, torch.dtype):     # torch.bfloat16 -> "bfloat16"
            state_dtype = str(state_dtype).rsplit(".", 1)[-1]
        # (the seed: of stochastic rounding, None without it)
        self.state_dtype, self.master_weights, self.stochastic_rounding, self.seed = \
            storage_options(state_dtype, storage["master_weights"],
                            storage["stochastic_rounding"], storage["seed"])
        self.min_8bit_size = _min_8bit_size(storage["min_8bit_size"])
        self.grad_norm, self.step_skipped = None, False
        defaults.update(self._group_constants())
        self._check_options(defaults, None)
        super().__init__(params, defaults)

    @property
    def max_grad_norm(self):
        """Clip by the global norm of all gradients to this before each step
        (``None``: no clipping); may be changed between steps."""
        return self._max_grad_norm

    @max_grad_norm.setter
    def max_grad_norm(self, value):
        self._max_grad_norm = _args.max_grad_norm(value)

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
        at = f"param group {index}: "
        try:
            state = _storage.state_dtype_for(_numpy_dtype(dtype), self.state_dtype,
                                             self.master_weights, self.stochastic_rounding)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{at}{exc}") from None
        state = state if isinstance(state, str) else _torch_dtype(state)
        if device.type != "cpu" and state == "int8":
            raise NotImplementedError(
                f"{at}state_dtype='int8' (8-bit blockwise state) runs on the CPU only for "
                f"now; on {device.type} tensors use float32 or bfloat16 state")
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
                            "seed": self.seed, "min_8bit_size": self.min_8bit_size},
                "param_groups": self.param_groups,
                "state_dict": self._state_dict_without_hooks(),
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
        empty = np.empty(0, np.float32)
        try:
            options = self._rule_options(group)
            for key in set(self._state_init.values()) | {
                    v for v in self._scalar_state.values() if isinstance(v, str)}:
                value = float(_plain(group[key]))
                if not math.isfinite(value):
                    raise ValueError(f"invalid {key}: {group[key]!r}")
            self._check_lr(options["lr"])
            state = {s: empty for s in self.rule.state_for(**options)}
            if self.rule.takes_step:
                options["step"] = 1
            for s, spec in self._scalar_state.items():
                options[s] = _initial(spec, group)
            step_for(self._group_rule(group))(empty, empty, **state, **options)
        except KeyError as exc:
            raise ValueError(f"{at}missing hyper-parameter {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{at}{exc}") from None

    def _rule_options(self, group):
        return {k: _plain(group[k]) for k in self.rule.defaults}

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
    def _check_lr(lr):
        try:
            x = float(lr)
        except (TypeError, ValueError):
            raise TypeError(f"lr must be a real number, got {lr!r}") from None
        if not (math.isfinite(x) and x >= 0):
            raise ValueError(f"invalid lr: {lr!r} (must be a finite number >= 0)")
        return x

    def _group_options(self, index, group):
        """The functional step's keywords for ``group``, validated when they changed."""
        options = self._rule_options(group)
        key = ({k: v for k, v in options.items() if k != "lr"},
               {k: _plain(group.get(k)) for k in chain(
                   REJECTED_FLAGS, self._extras, self._state_init.values(),
                   (v for v in self._scalar_state.values() if isinstance(v, str)))})
        if key != self._validated[index]:
            self._check_options(group, index if len(self.param_groups) > 1 else None)
            self._validated[index] = key
        try:
            options["lr"] = self._check_lr(options["lr"])
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"param group {index}: {exc}") from None
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
                raise TypeError(f"{where}: sparse parameters are not supported")
            if p.dtype in COMPLEX_DTYPES:
                self._check_complex(where, p)
            elif p.dtype not in SUPPORTED_DTYPES:
                raise TypeError(f"{where} has dtype {p.dtype}; fastadapt.torch supports "
                                "float32, float64, bfloat16, float16, complex64 and "
                                "complex128 parameters")
            if p.device.type not in ("cpu", "cuda"):
                raise TypeError(f"{where} is on {p.device}; fastadapt.torch supports CPU "
                                "and CUDA tensors")
            if p.grad is not None and p.grad.layout != torch.strided:
                raise ValueError(f"{where} has a sparse gradient; sparse gradients are "
                                 "not supported")
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
        return [self._bucket_class(self, index, [params[i] for i in idx], idx, small=small)
                for (_, _, small), idx in by_key.items()]

    def _check_complex(self, where, p):
        """Complex parameters where torch takes them, with state of their own precision."""
        name = self.rule.torch_name
        if not self.rule.torch_complex:
            raise TypeError(f"{where} is complex ({p.dtype}); fastadapt.torch.{type(self).__name__}"
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
            self.step_skipped = False
            found_inf = getattr(self, "found_inf", None)
            local_inf = found_inf is not None and float(found_inf) != 0.0
            grad_scale = getattr(self, "grad_scale", None)
            if grad_scale is not None and not local_inf:
                grad_scale = float(grad_scale)
                if not (math.isfinite(grad_scale) and grad_scale > 0):
                    raise ValueError(f"grad_scale must be a finite number > 0, got {grad_scale}")
            plans, skip = self._decide_skip(plans, found_inf is not None, local_inf)
            if skip:
                self.step_skipped = True
                return loss
            for _, _, bucket, scan in plans:
                bucket.gather(scan)
                bucket.sync_master()
            self._before_update(plans)
            if self.max_grad_norm is not None:
                grad_scale = self._clip(plans, grad_scale)
                if self.step_skipped:
                    return loss
            for group, options, bucket, scan in plans:
                bucket.apply(group, options, scan, grad_scale)
            self._after_update()
        return loss

    # Hooks of ``step`` for a subclass that spreads the work over processes
    # (``fastadapt.zero``); here, one process decides and updates alone.
    def _decide_skip(self, plans, has_found_inf, local_inf):
        """``(plans, skip)``: the plans to apply and whether to skip the step,
        given GradScaler's flag (``has_found_inf``: the scaler set one)."""
        return plans, local_inf

    def _before_update(self, plans):
        """Called with the gradients in the flat buffers, before clipping."""

    def _after_update(self):
        """Called after every bucket's update."""

    def _clip(self, plans, grad_scale):
        """Global-norm clipping as ``torch.nn.utils.clip_grad_norm_(params,
        max_grad_norm)``, in one read-only pass over the gradients: sets
        :attr:`grad_norm` (of the unscaled gradients) and, when it is not
        finite, :attr:`step_skipped`; returns the loss scale with the clipping
        coefficient folded in (the kernel divides the gradients by it)."""
        from .norm import clipped_scale, grad_norm
        local = math.fsum(grad_norm(*bucket.present_grads(scan), grad_scale=grad_scale) ** 2
                          for _, _, bucket, scan in plans)
        total = math.sqrt(self._sum_over_processes(local))
        self.grad_norm = total
        if not math.isfinite(total):
            self.step_skipped = True
            return grad_scale
        return clipped_scale(total, self.max_grad_norm,
                             1.0 if grad_scale is None else grad_scale)

    def _sum_over_processes(self, value):
        """``value`` summed over the processes sharing this optimizer's
        parameters: itself here (a sharded optimizer all-reduces it)."""
        return value

    # ------------------------------------------------------------- checkpoints
    def state_dict(self):
        """The optimizer's state in torch's format.

        ``{"state": {index: {"step": tensor, <state>: tensor, ...}},
        "param_groups": [{..., "params": [indices]}]}``, indices counting the
        parameters of all groups in order, state names as torch names them.
        A parameter appears once it has taken a step (from construction on for
        rules whose state does not start at zero, as torch's Adagrad). The
        state tensors are views of the optimizer's live buffers, as torch's
        are the live tensors; ``step`` is a fresh tensor.

        The storage modes torch has no equivalent for add keys per parameter
        (torch.optim keeps them when it loads the dict, and ignores them):
        ``"master_param"`` (the float32 master copy, with
        ``master_weights=True``), ``"<state>.codes"`` and ``"<state>.absmax"``
        or ``"<state>.scale"`` (8-bit state, ``"int8"`` or ``"int8c"``;
        ``"<state>"`` then holds its dequantized float32
        values), ``"stochastic_rounding_seed"`` (an int; with it ``step``
        is saved for every rule, SGD included: the random bits are keyed on
        seed, step and element) and ``"exact_step"`` (an int, past 2**24
        steps, where torch's float32 ``step`` no longer holds the count; it is
        loaded where it rounds to ``step``). bfloat16 state is saved as it is
        stored.

        A parameter whose ``.data`` was replaced, or that was written in place,
        since the last step is first brought into its slot and its master
        copy, as the next step would do it (the values the model sees do not
        change), so the saved ``"master_param"`` is the parameter's.

        Keys of ``optimizer.state`` this class does not write are kept as
        torch keeps them: a parameter's under its index, others (a hook's
        ``state["test"]``) as they are; :meth:`load_state_dict` restores them.
        """
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        state_dict = self._state_dict_without_hooks()
        for hook in self._optimizer_state_dict_post_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def _adopt_writes(self):
        """Bring replaced ``.data`` into its slot, and parameters written since
        the last step into their master copy, as the next step would (every
        bucket checked before anything moves); the model sees the same values."""
        buckets = [b for per_group in self._buckets for b in per_group]
        replaced = [b.replaced() for b in buckets]
        with torch.no_grad():
            for b, r in zip(buckets, replaced):
                b.adopt_replaced(r)
                b.sync_master()

    def _state_dict_without_hooks(self):
        self._adopt_writes()
        return self._packed_state(
            lambda b, j: {k: v for name in b.state_flat
                          for k, v in b.state_entries(name, j, values=True).items()},
            lambda b, j: None if b.master_views is None else b.master_views[j])

    def _packed_state(self, arrays_of, master_of):
        """``{"state", "param_groups"}`` in torch's format, parameter ``j`` of
        bucket ``b`` taking its state arrays' entries from ``arrays_of(b, j)``
        and its master copy (or None) from ``master_of(b, j)``; the step, the
        scalar state and the seed from the buckets (see :meth:`state_dict`)."""
        keep_step = not self._no_step or self.stochastic_rounding
        param_groups, state, start = [], {}, 0
        for group, buckets in zip(self.param_groups, self._buckets):
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = list(range(start, start + len(group["params"])))
            param_groups.append(packed)
            for b in buckets:
                for j in range(len(b.params)):
                    entry = self._custom_state(b.params[j])
                    if b.published[j]:
                        if keep_step:
                            steps = int(b.steps_np[j])
                            entry["step"] = torch.tensor(float(steps), dtype=_scalar_dtype())
                            if float(entry["step"]) != steps:
                                entry[STEP_KEY] = steps
                        entry.update(arrays_of(b, j))
                        for name in self._scalar_state:
                            entry[self._torch_names.get(name, name)] = b.scalar_tensor(name, j)
                        master = master_of(b, j)
                        if master is not None:
                            entry[MASTER_KEY] = master
                        if self.stochastic_rounding:
                            entry[SEED_KEY] = self.seed
                    if entry:
                        state[start + b.indices[j]] = entry
            start += len(group["params"])
        state = dict(sorted(state.items()))
        # keys of optimizer.state that are not parameters, as they are (torch's)
        state.update((k, v) for k, v in self.state.items() if not isinstance(k, torch.Tensor))
        return {"state": state, "param_groups": param_groups}

    def _custom_state(self, p):
        """The entries of ``state[p]`` this class does not write (a hook's or
        a library's), as they are."""
        entry = self.state.get(p)
        return {k: v for k, v in entry.items() if k not in self._own_keys} if entry else {}

    def load_state_dict(self, state_dict):
        """Load a state dict of torch's format (from this class or from the
        torch.optim optimizer of the same algorithm).

        Everything is checked before anything is written: a state dict with
        another number of groups or parameters, state of the wrong size, a
        parameter's state missing an array the options need, invalid
        hyper-parameters or a tensor on a device it cannot be copied from
        (``meta``) raises ``ValueError`` and changes nothing. The saved
        hyper-parameters replace the groups' (as in torch), except
        ``foreach``, ``fused``, ``capturable`` and ``differentiable``, which
        describe how torch computed and keep this optimizer's values.

        Storage converts: state saved in another dtype is rounded to this
        optimizer's (a float32 torch checkpoint into bfloat16 state, say),
        full-precision state is quantized into 8-bit state (and 8-bit codes
        are used as they are), a ``"master_param"`` is loaded into the
        master copy where it rounds to the parameter's current value (elsewhere,
        and without one, the master copy takes that value: torch.optim keeps
        the key of a dict it loads but never updates it) and a
        ``"stochastic_rounding_seed"`` becomes
        :attr:`seed`. A dict saved by an optimizer of the same options
        resumes bit for bit.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        state_dict = state_dict.copy()
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        for key in ("state", "param_groups"):
            if key not in state_dict:
                raise ValueError(f"optimizer state dict is missing key {key!r}")
        saved_groups = [dict(g) for g in state_dict["param_groups"]]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"])
               for g, s in zip(self.param_groups, saved_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match "
                             "the size of optimizer's group")
        new_groups = []
        for index, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            new = {k: v for k, v in saved.items() if k != "params"}
            for key, value in self.defaults.items():
                new.setdefault(key, value)
            for flag in NO_OP_FLAGS + REJECTED_FLAGS:
                if flag in group:
                    new[flag] = group[flag]
            new.update(self._group_constants())      # torch's AdamW forces its flag too
            new["params"] = group["params"]
            if "param_names" in group and "param_names" not in new:
                new["param_names"] = group["param_names"]
            self._check_options(new, index)
            new_groups.append(new)
        ids = {saved_id: (gi, i) for gi, s in enumerate(saved_groups)
               for i, saved_id in enumerate(s["params"])}
        by_param, customs, others = {}, {}, {}
        our_names = {v: k for k, v in self._torch_names.items()}
        for key, value in state_dict["state"].items():
            if key not in ids:
                others[key] = value         # kept as it is, as torch keeps it
                continue
            gi, i = ids[key]
            by_param[(gi, i)] = self._checked_state(value, gi, i, new_groups[gi])
            p = new_groups[gi]["params"][i]
            customs[(gi, i)] = {k: _cast_like(p, v, k) for k, v in value.items()
                                if k not in self._own_keys}
        seeds = {saved[3][SEED_KEY] for saved in by_param.values() if SEED_KEY in saved[3]}
        if len(seeds) > 1:
            raise ValueError(f"loaded state holds {len(seeds)} different "
                             f"{SEED_KEY}s; one optimizer has one seed")
        if seeds and self.stochastic_rounding:
            self.seed = seeds.pop()

        # everything checked: apply
        for group, new in zip(self.param_groups, new_groups):
            group.clear()
            group.update(new)
        self._validated = [None] * len(self.param_groups)
        for key in [k for k in self.state if not isinstance(k, torch.Tensor)]:
            del self.state[key]
        self.state.update(others)
        with torch.no_grad():
            for gi, (group, buckets) in enumerate(zip(self.param_groups, self._buckets)):
                options = self._rule_options(group)
                for b in buckets:
                    b.ensure_state(self.rule.state_for(**options), group)
                    for j, i in enumerate(b.indices):
                        saved = by_param.get((gi, i))
                        if saved is None or not (saved[0] or any(saved[1:])):
                            # nothing of this class's state (perhaps custom keys only)
                            b.reset(j, j, group)
                            self.state.pop(b.params[j], None)
                            b.published[j] = False
                            b.entries[j] = None
                            if self._state_init:
                                b.publish(j)
                            if customs.get((gi, i)):
                                self.state[b.params[j]].update(customs[(gi, i)])
                            continue
                        step, arrays, scalars, extras = saved
                        for name in b.state_flat:
                            b.load(name, j, arrays, extras, group)
                        if b.master_views is not None:
                            src = extras.get(MASTER_KEY)
                            view = b.master_views[j]
                            if src is None:
                                view.copy_(b.param_views[j])
                            elif src.data_ptr() != view.data_ptr():
                                view.copy_(src.reshape(view.shape))
                        for name, value in scalars.items():
                            b.scalars_np[our_names.get(name, name)][j] = value
                        b.steps_np[j] = step
                        b.publish(j)
                        if customs[(gi, i)]:
                            self.state[b.params[j]].update(customs[(gi, i)])
                    b.update_uniform()
                    b.versions = b._versions()
                    if b.master_views is not None:
                        # a loaded master is trusted only where it still rounds to
                        # the parameter (torch.optim keeps the key, never updates it)
                        b.versions = [None] * len(b.params)
                        b.sync_master()
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def _checked_state(self, value, gi, i, group):
        where = f"loaded state of param group {gi}, parameter {i}"
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a dict, got {type(value).__name__}")
        p = group["params"][i]
        for key, v in value.items():     # a tensor that cannot be copied fails now, not mid-load
            if isinstance(v, torch.Tensor) and v.device.type not in ("cpu", "cuda",
                                                                     p.device.type):
                raise ValueError(f"{where}: {key} is on {v.device}; state tensors load from "
                                 f"the CPU or a CUDA device (the parameter is on {p.device})")
        step = value.get("step")
        arrays, scalars, extras = {}, {}, {}
        scalar_names = {self._torch_names.get(n, n) for n in self._scalar_state}
        array_names = {self._torch_names.get(n, n) for n in self.rule.state}
        # this parameter's 8-bit format (None: full-precision state)
        fmt = (self.state_dtype if self.state_dtype in EIGHT_BIT
               and p.numel() >= self.min_8bit_size else None)
        scale_keys = tuple(f[2] for f in EIGHT_BIT.values())
        extra_names = {MASTER_KEY: ("a floating-point tensor", p.numel(), None)}
        for n in array_names:
            # torch.optim casts a loaded state's tensors to the parameter's
            # dtype: codes come back as float (exact: 0..255 are), scales
            # rounded to a 16-bit parameter's dtype
            extra_names[f"{n}.codes"] = ("a tensor of whole numbers in 0..255", p.numel(),
                                         "codes")
            for _, unit, part, _ in EIGHT_BIT.values():
                extra_names[f"{n}.{part}"] = ("a floating-point tensor",
                                              -(-p.numel() // unit), None)
        for key, v in value.items():
            if key == "step":
                continue
            if key == SEED_KEY:
                try:
                    extras[key] = _args.seed(v)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{where}: {key}: {exc}") from None
                continue
            if key == STEP_KEY:
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                    raise ValueError(f"{where}: {key} must be an int >= 0, got {v!r}")
                continue
            if key in extra_names:
                what, size, dtype = extra_names[key]
                if not (isinstance(v, torch.Tensor) and v.layout == torch.strided and (
                        _is_real(v) if dtype == "codes" else v.is_floating_point())):
                    raise ValueError(f"{where}: {key} must be {what}, got "
                                     f"{getattr(v, 'dtype', type(v).__name__)}")
                if v.numel() != size:
                    raise ValueError(f"{where}: {key} has {v.numel()} elements, expected "
                                     f"{size} (the parameter has {p.numel()})")
                if dtype == "codes":
                    v = _codes(v, f"{where}: {key}")
                elif key.endswith(scale_keys) and v.dtype != torch.float32:
                    v = v.detach().to(torch.float32)
                extras[key] = v
                continue
            ours = next((n for n, t in self._torch_names.items() if t == key), key)
            if (key in array_names and ours in self.rule.non_negative_state
                    and fmt is not None and f"{key}.codes" not in value
                    and isinstance(v, torch.Tensor) and v.is_floating_point()
                    and bool((v < 0).any())):
                raise ValueError(f"{where}: {key} has negative values; this optimizer "
                                 "keeps it in unsigned 8-bit state")
            if key in scalar_names:
                try:
                    scalars[key] = float(_plain(v))
                except (TypeError, ValueError):
                    raise ValueError(f"{where}: {key} must be a number") from None
            elif key in array_names:
                if not isinstance(v, torch.Tensor):
                    raise ValueError(f"{where}: {key} must be a tensor, got {type(v).__name__}")
                if v.numel() != p.numel():
                    raise ValueError(f"{where}: {key} has {v.numel()} elements, the parameter "
                                     f"has {p.numel()} (shape {tuple(p.shape)})")
                if not (v.layout == torch.strided and (
                        v.is_complex() if p.is_complex() else v.is_floating_point())):
                    kind = "complex" if p.is_complex() else "floating-point"
                    raise ValueError(f"{where}: {key} must be a dense {kind} tensor (the "
                                     f"parameter is {p.dtype})")
                arrays[key] = v
        if step is None:
            # torch's SGD keeps no step; a parameter with state has stepped
            step = 1 if arrays else 0
        try:
            step_f = float(_plain(step))
        except (TypeError, ValueError):
            raise ValueError(f"{where}: step must be a number, got {step!r}") from None
        if not (math.isfinite(step_f) and step_f >= 0 and step_f == int(step_f)):
            raise ValueError(f"{where}: step must be a whole number >= 0, got {step_f}")
        exact = value.get(STEP_KEY)
        if exact is not None and np.float32(exact) == np.float32(step_f):
            step_f = int(exact)     # trusted while it rounds to ``step`` (torch never updates it)
        for n in array_names:
            saved = [f for f, (_, _, part, _) in EIGHT_BIT.items() if f"{n}.{part}" in extras]
            if len(saved) > 1 or (f"{n}.codes" in extras) != bool(saved):
                raise ValueError(f"{where}: {n}.codes and one of "
                                 f"{' or '.join(f'{n}.{part}' for part in scale_keys)} go "
                                 f"together; got "
                                 f"{sorted(k for k in extras if k.startswith(n + '.'))}")
            if not saved:
                continue
            part = EIGHT_BIT[saved[0]][2]
            if saved[0] != fmt:
                # another format's codes (or full-precision state here):
                # the dequantized values load, converted
                del extras[f"{n}.codes"], extras[f"{n}.{part}"]
                continue
            ours = next((o for o, t in self._torch_names.items() if t == n), n)
            problem = EIGHT_BIT[fmt][3](extras[f"{n}.{part}"].detach().cpu().numpy())
            if problem:
                raise ValueError(f"{where}: {n}.{part} {problem}")
            if n in arrays and not _codes_hold(extras, n, arrays[n],
                                               ours in self.rule.non_negative_state, fmt):
                # the values moved on without the codes (a torch.optim
                # step keeps the codes it does not know): use the values
                del extras[f"{n}.codes"], extras[f"{n}.{part}"]
                if ours in self.rule.non_negative_state and bool((arrays[n] < 0).any()):
                    raise ValueError(f"{where}: {n} has negative values; this "
                                     "optimizer keeps it in unsigned 8-bit state")
        needed = {self._torch_names.get(n, n) for n in
                  self.rule.state_for(**self._rule_options(group))}
        missing = sorted(needed - set(arrays))
        if step_f > 0 and missing:
            raise ValueError(f"{where} lacks {missing} (is it a state dict of another "
                             "algorithm or option set?)")
        missing_scalars = sorted(scalar_names - set(scalars))
        if step_f > 0 and missing_scalars:
            raise ValueError(f"{where} lacks {missing_scalars}")
        return int(step_f), arrays, scalars, extras


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


def _cast_like(param, value, key=None):
    """A loaded state entry as torch.optim loads it: tensors (but ``"step"``)
    moved to the parameter's device and, for a floating-point parameter,
    converted to its dtype; dicts, lists and tuples element by element."""
    if isinstance(value, torch.Tensor):
        if key == "step":
            return value
        if param.is_floating_point():
            return value.to(dtype=param.dtype, device=param.device)
        return value.to(device=param.device)
    if isinstance(value, dict):
        return {k: _cast_like(param, v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_like(param, v) for v in value)
    return value


def _is_real(t):
    return not (t.is_complex() or t.dtype == torch.bool)


def _codes(v, where):
    """8-bit codes as uint8, from any tensor of whole numbers in 0..255 (torch
    casts them to the parameter's dtype on load); ValueError otherwise."""
    if v.dtype == torch.uint8:
        return v
    values = v.detach().cpu().reshape(-1).to(torch.float64)
    bad = ~((values >= 0) & (values <= 255) & (values == values.round()))
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(f"{where} must hold whole numbers in 0..255 (8-bit codes, "
                         f"as saved or cast to another dtype); element {i} is "
                         f"{values[i].item()}")
    return values.to(torch.uint8).view(v.shape)


def _codes_hold(extras, n, values, non_negative, fmt):
    """Whether state ``n``'s 8-bit codes (of format ``fmt``) still decode to
    its ``values`` (as rounded to their dtype)."""
    container, _, part, _ = EIGHT_BIT[fmt]
    codes, scale = (extras[f"{n}.{k}"].detach().cpu().reshape(-1).numpy()
                    for k in ("codes", part))
    b8 = container(0, not non_negative)._over(codes, scale)
    decoded = torch.from_numpy(b8.dequantize()).to(values.dtype)
    values = values.detach().cpu().reshape(-1)
    return bool(((decoded == values) | (decoded.isnan() & values.isnan())).all())


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


# ----------------------------------------------------------------- the classes
def _signature_for(rule, torch_cls):
    if torch_cls is not None:
        return inspect.signature(torch_cls.__init__)
    P = inspect.Parameter
    params = [P("self", P.POSITIONAL_OR_KEYWORD), P("params", P.POSITIONAL_OR_KEYWORD)]
    for key, default in rule.defaults.items():
        kind = P.KEYWORD_ONLY if key == "maximize" else P.POSITIONAL_OR_KEYWORD
        params.append(P(key, kind, default=default))
    params.sort(key=lambda p: p.kind)
    params += [P("foreach", P.KEYWORD_ONLY, default=None), P("fused", P.KEYWORD_ONLY, default=None),
               P("capturable", P.KEYWORD_ONLY, default=False),
               P("differentiable", P.KEYWORD_ONLY, default=False)]
    return inspect.Signature(params)


def optimizer_class(rule):
    """The drop-in optimizer class for ``rule`` (a :class:`fastadapt.Rule`).

    Its signature and defaults are those of ``torch.optim.<rule.torch_name>``
    when torch has that optimizer, else the rule's defaults plus torch's
    ``foreach``/``fused``/``capturable``/``differentiable`` keywords.
    """
    torch_cls = getattr(torch.optim, rule.torch_name or "", None)
    if not (isinstance(torch_cls, type) and issubclass(torch_cls, torch.optim.Optimizer)):
        torch_cls = None
    signature = _signature_for(rule, torch_cls)
    keyword = inspect.Parameter.KEYWORD_ONLY
    signature = signature.replace(parameters=[
        *signature.parameters.values(), inspect.Parameter("max_grad_norm", keyword, default=None),
        *(inspect.Parameter(k, keyword, default=v) for k, v in STORAGE_OPTIONS.items())])
    known = {"max_grad_norm"} | set(STORAGE_OPTIONS) | set(rule.defaults) | set(rule.state_init.values()) | {
        v for v in rule.scalar_state_init.values() if isinstance(v, str)} | set(
        NO_OP_FLAGS + REJECTED_FLAGS) | {"self", "params"}
    if rule.decoupled_twins is not None:
        known.add(DECOUPLED_FLAG)
    extras = {name: p.default for name, p in signature.parameters.items()
              if name not in known and p.default is not inspect.Parameter.empty}
    name = rule.torch_name or rule.name.capitalize()

    def __init__(self, params, *args, **kwargs):
        bound = signature.bind(self, params, *args, **kwargs)
        bound.apply_defaults()
        defaults = dict(bound.arguments)
        del defaults["self"], defaults["params"]
        FlatOptimizer.__init__(self, params, defaults)

    __init__.__signature__ = signature
    __init__.__qualname__ = f"{name}.__init__"
    twin = f"torch.optim.{name}" if torch_cls is not None else "the rule"
    doc = (f"{name} over flat buffers: a drop-in for {twin} (same signature, defaults and "
           f"numbers), one fused ``fastadapt.{step_for(rule).__name__}`` call per (group, "
           f"device, dtype).\n\n``foreach`` and ``fused`` are accepted and change nothing; "
           f"``capturable=True`` and ``differentiable=True`` raise ValueError. "
           f"``state_dtype``, ``master_weights``, ``stochastic_rounding`` and ``seed`` "
           f"choose the storage (16-bit parameters, float32 master weights, bfloat16 or "
           f"8-bit state), as in :class:`fastadapt.Optimizer`; ``min_8bit_size`` keeps "
           f"smaller parameters' state float32 under 8-bit state. See "
           f":mod:`fastadapt.torch` for the gradient paths and their cost.\n\n"
           f"The update (from ``fastadapt.{step_for(rule).__name__}``):\n"
           f"{inspect.getdoc(step_for(rule)) or ''}\n")
    return type(name, (FlatOptimizer,), {
        "rule": rule, "_signature": signature, "_extras": extras, "__init__": __init__,
        "__doc__": doc, "__module__": __name__, "__qualname__": name})


for _rule in RULES.values():
    _cls = optimizer_class(_rule)
    globals()[_cls.__name__] = _cls
    __all__.append(_cls.__name__)
del _rule, _cls

from .zero import ZeroRedundancyOptimizer  # noqa: E402  (built on the classes above)
from ._release import GradientRelease, enable_gradient_release  # noqa: E402
__all__ += ["ZeroRedundancyOptimizer", "GradientRelease", "enable_gradient_release"]
