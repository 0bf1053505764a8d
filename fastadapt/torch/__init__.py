r"""fastadapt.torch: drop-in ``torch.optim`` optimizers over flat buffers.

(Adafactor, whose state is shaped per tensor, is the exception: its class
updates parameter by parameter, see :mod:`fastadapt.torch._adafactor`.)

For every rule of :data:`fastadapt.RULES` this module defines a subclass of
:class:`torch.optim.Optimizer` named as torch names it (``Adam``, ``AdamW``,
``SGD``, ``RMSprop``, ``Adagrad``, ``Adadelta``, and any rule added to the
registry later), with torch's constructor signature and defaults, so a torch
training loop changes one line::

    opt = fastadapt.torch.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)

Importing this module imports torch; ``import fastadapt`` never does.

The package's modules, one job each: ``_conventions`` (torch's flags, dtypes
and state-dict keys), ``_sharing`` (the span a core updates, how processes
agree), ``_bucket`` (one flat buffer), ``_intake`` (what a flat buffer takes
in from the model between steps), ``_optimizer`` (the core,
:class:`FlatOptimizer`), ``_state_dict`` (torch-format state dicts),
``_classes`` (a rule's class), ``_adafactor`` (Adafactor, per parameter),
``_release`` (gradient release) and
``_zero``, ``_zero_collectives``, ``_zero_checkpoint``
(:class:`ZeroRedundancyOptimizer`, see :mod:`fastadapt.zero`).

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
raises ``ValueError`` (sparse gradients: :mod:`fastadapt.torch._sparse`). A parameter given twice in a
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
``compressed_state_dict``
    False (default): :meth:`~FlatOptimizer.state_dict` gives torch's format;
    True: 16-bit and 8-bit state as stored (8-bit: codes and scales only),
    with what decodes it, for checkpoints a quarter of the size; every
    optimizer loads both (see :meth:`~FlatOptimizer.state_dict`). An
    attribute too, which may be set at any time.
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
    ``master_weights="bf16+16"`` (bfloat16 parameters): the master split
    instead, the parameter plus an int16 correction (``state[p]
    ["master_correction"]``, 2 bytes per element instead of 4): the same
    float32 master and state as ``True``, bit for bit, the parameter rounding
    ties away from zero; ``"bf16+8"``: an int8 correction, a 24-bit master
    (see ``fastadapt._storage.SPLIT_MASTER``). A parameter written in place
    keeps its correction (its master still rounds to it); a replaced
    ``.data`` starts from a zero one. Loading converts: a ``"master_param"``
    splits into the correction where it rounds to the parameter, a
    ``"master_correction"`` of the other width or under ``True`` is rebuilt
    with the parameter first.
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
messages. On CUDA tensors every option but 8-bit state runs (``"int8"``
and ``"int8c"`` raise NotImplementedError at construction, naming the format).
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
try:
    import torch  # noqa: F401  (the real torch: this package's modules import absolutely)
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("fastadapt.torch needs PyTorch: pip install 'fastadapt[torch]'") from exc

from ._adafactor import Adafactor
from ._classes import CLASSES, optimizer_class
from ._conventions import (  # noqa: F401  (torch's conventions, as this module always had them)
    COMPLEX_DTYPES, DECOUPLED_FLAG, EIGHT_BIT, MASTER_KEY, NO_OP_FLAGS, REJECTED_FLAGS, SEED_KEY,
    STEP_KEY, STORAGE_OPTIONS, SUPPORTED_DTYPES, )
from ._optimizer import FlatOptimizer
from ._release import GradientRelease, enable_gradient_release
from ._zero import ZeroRedundancyOptimizer

globals().update(CLASSES)      # Adam, AdamW, SGD, ...: one class per rule

__all__ = ["FlatOptimizer", "optimizer_class", *CLASSES, "Adafactor", "ZeroRedundancyOptimizer",
           "GradientRelease", "enable_gradient_release"]
