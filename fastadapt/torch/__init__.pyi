# Generated from the registry by `python -m fastadapt._stubs`; do not edit.
# Signatures from torch 2.13.0.
"""fastadapt.torch: drop-in ``torch.optim`` optimizers over flat buffers.

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
import fastadapt.rules

__all__ = [
    'FlatOptimizer',
    'optimizer_class',
    'Adam',
    'AdamW',
    'SGD',
    'RMSprop',
    'Adagrad',
    'Adadelta',
    'Adamax',
    'RAdam',
    'Rprop',
    'NAdam',
    'ASGD',
    'Lion',
    'SparseAdam',
    'Adafactor',
    'ZeroRedundancyOptimizer',
    'GradientRelease',
    'enable_gradient_release',
]

from fastadapt.torch._adafactor import Adafactor as Adafactor

from fastadapt.torch._classes import optimizer_class as optimizer_class

from fastadapt.torch._optimizer import FlatOptimizer as FlatOptimizer

from fastadapt.torch._release import GradientRelease as GradientRelease

from fastadapt.torch._release import enable_gradient_release as enable_gradient_release

from fastadapt.torch._zero import ZeroRedundancyOptimizer as ZeroRedundancyOptimizer

class Adam(FlatOptimizer):
    """Adam over flat buffers: a drop-in for torch.optim.Adam (same signature, defaults and numbers), one fused ``fastadapt.adam_step`` call per (group, device, dtype).

    ``foreach`` and ``fused`` are accepted and change nothing; ``capturable=True`` and ``differentiable=True`` raise ValueError. ``state_dtype``, ``master_weights``, ``stochastic_rounding`` and ``seed``: storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state), as in :class:`fastadapt.Optimizer`; ``min_8bit_size`` keeps smaller parameters' state float32 under 8-bit state; ``compressed_state_dict=True`` keeps 16-bit and 8-bit state as stored in ``state_dict()``. See :mod:`fastadapt.torch` for the gradient paths and their cost.

    The update (from ``fastadapt.adam_step``):
    One Adam step, in place: Adam (Kingma & Ba, 2015), and AMSGrad (Reddi et al., 2018); torch.optim.Adam's semantics.

    .. code-block:: text

        g = -grad if maximize else grad
        g = g + weight_decay * param                      (L2 penalty)
        exp_avg    = lerp(exp_avg, g, 1 - beta1)
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
        v = max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq)   if amsgrad
            exp_avg_sq                                          otherwise
        denom = sqrt(v) / sqrt(1 - beta2**step) + eps
        param = param - lr / (1 - beta1**step) * exp_avg / denom

    Parameters
    ----------
    param, grad, exp_avg, exp_avg_sq : arrays of one shape and dtype
        ``param`` and the state arrays are updated in place; ``grad`` is read.
    max_exp_avg_sq : array, optional
        Needed (and updated in place) when amsgrad=True; otherwise not touched (but still checked: an array of ``param``'s shape, or None).
    step : int
        The 1-based number of the step being taken (the first step is 1). Beyond 2**64 the scalars are computed as at 2**64, where every power of a beta has reached 0.
    lr : float, default 0.001 (>= 0)
        Learning rate (or a schedule, in the classes).
    betas : (float, float), default (0.9, 0.999) (each in [0, 1))
        Decay rates of the first and second moment.
    eps : float, default 1e-08 (>= 0)
        Added to the denominator.
    weight_decay : float, default 0.0 (>= 0)
        L2 penalty added to the gradient.
    amsgrad : bool, default False (bool)
        Use the running maximum of exp_avg_sq (Reddi et al., 2018).
    maximize : bool, default False (bool)
        Ascend the objective instead.
    grad_scale : float, optional
        A finite number > 0 the gradient is divided by inside the kernel (a loss scale to undo, times a clipping factor's inverse), folded into the gradient's sign: ``g = grad * ((-1 if maximize else 1) / grad_scale)``. None: 1.
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
        updated in pieces (a shard of it per process) rounds as if in one call.
    """
    rule: fastadapt.rules.Rule
    def __init__(
            self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0, amsgrad=False,
            *, foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
            decoupled_weight_decay=False, max_grad_norm=None, state_dtype=None,
            master_weights=False, stochastic_rounding=False, seed=None, min_8bit_size=4096,
            compressed_state_dict=False): ...

class AdamW(FlatOptimizer):
    """AdamW over flat buffers: a drop-in for torch.optim.AdamW (same signature, defaults and numbers), one fused ``fastadapt.adamw_step`` call per (group, device, dtype).

    ``foreach`` and ``fused`` are accepted and change nothing; ``capturable=True`` and ``differentiable=True`` raise ValueError. ``state_dtype``, ``master_weights``, ``stochastic_rounding`` and ``seed``: storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state), as in :class:`fastadapt.Optimizer`; ``min_8bit_size`` keeps smaller parameters' state float32 under 8-bit state; ``compressed_state_dict=True`` keeps 16-bit and 8-bit state as stored in ``state_dict()``. See :mod:`fastadapt.torch` for the gradient paths and their cost.

    The update (from ``fastadapt.adamw_step``):
    One AdamW step, in place: AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019); torch.optim.AdamW's semantics.

    .. code-block:: text

        param = param * (1 - lr * weight_decay)           (decoupled decay, first)
        g = -grad if maximize else grad                   (no L2 term)
        exp_avg    = lerp(exp_avg, g, 1 - beta1)
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
        v = max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq)   if amsgrad
            exp_avg_sq                                          otherwise
        denom = sqrt(v) / sqrt(1 - beta2**step) + eps
        param = param - lr / (1 - beta1**step) * exp_avg / denom

    Parameters
    ----------
    param, grad, exp_avg, exp_avg_sq : arrays of one shape and dtype
        ``param`` and the state arrays are updated in place; ``grad`` is read.
    max_exp_avg_sq : array, optional
        Needed (and updated in place) when amsgrad=True; otherwise not touched (but still checked: an array of ``param``'s shape, or None).
    step : int
        The 1-based number of the step being taken (the first step is 1). Beyond 2**64 the scalars are computed as at 2**64, where every power of a beta has reached 0.
    lr : float, default 0.001 (>= 0)
        Learning rate (or a schedule, in the classes).
    betas : (float, float), default (0.9, 0.999) (each in [0, 1))
        Decay rates of the first and second moment.
    eps : float, default 1e-08 (>= 0)
        Added to the denominator.
    weight_decay : float, default 0.01 (>= 0)
        Decoupled weight decay.
    amsgrad : bool, default False (bool)
        Use the running maximum of exp_avg_sq (Reddi et al., 2018).
    maximize : bool, default False (bool)
        Ascend the objective instead.
    grad_scale : float, optional
        A finite number > 0 the gradient is divided by inside the kernel (a loss scale to undo, times a clipping factor's inverse), folded into the gradient's sign: ``g = grad * ((-1 if maximize else 1) / grad_scale)``. None: 1.
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
        updated in pieces (a shard of it per process) rounds as if in one call.
    """
    rule: fastadapt.rules.Rule
    def __init__(
            self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.01,
            amsgrad=False, *, maximize=False, foreach=None, capturable=False, differentiable=False,
            fused=None, max_grad_norm=None, state_dtype=None, master_weights=False,
            stochastic_rounding=False, seed=None, min_8bit_size=4096, compressed_state_dict=False): ...

class SGD(FlatOptimizer):
    """SGD over flat buffers: a drop-in for torch.optim.SGD (same signature, defaults and numbers), one fused ``fastadapt.sgd_step`` call per (group, device, dtype).

    ``foreach`` and ``fused`` are accepted and change nothing; ``capturable=True`` and ``differentiable=True`` raise ValueError. ``state_dtype``, ``master_weights``, ``stochastic_rounding`` and ``seed``: storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state), as in :class:`fastadapt.Optimizer`; ``min_8bit_size`` keeps smaller parameters' state float32 under 8-bit state; ``compressed_state_dict=True`` keeps 16-bit and 8-bit state as stored in ``state_dict()``. See :mod:`fastadapt.torch` for the gradient paths and their cost.

    The update (from ``fastadapt.sgd_step``):
    One SGD step, in place: Stochastic gradient descent with optional (Nesterov) momentum; torch.optim.SGD's semantics.

    .. code-block:: text

        g = -grad if maximize else grad
        g = g + weight_decay * param
        if momentum != 0:
            momentum_buffer = g                                           (step 1)
                              momentum * momentum_buffer + (1 - dampening) * g   (later)
            g = g + momentum * momentum_buffer if nesterov else momentum_buffer
        param = param - lr * g

    Parameters
    ----------
    param, grad : arrays of one shape and dtype
        ``param`` is updated in place; ``grad`` is read.
    momentum_buffer : array, optional
        Needed (and updated in place) when momentum != 0; otherwise not touched (but still checked: an array of ``param``'s shape, or None).
        (momentum_buffer: its contents are ignored on step 1.)
    step : int
        The 1-based number of the step being taken (the first step is 1). Beyond 2**64 the scalars are computed as at 2**64, where every power of a beta has reached 0.
    lr : float, default 0.001 (>= 0)
        Learning rate (or a schedule, in the classes).
    momentum : float, default 0.0 (>= 0)
        Momentum factor.
    dampening : float, default 0.0 (in [-inf, inf])
        Dampening of the momentum.
    weight_decay : float, default 0.0 (>= 0)
        L2 penalty added to the gradient.
    nesterov : bool, default False (bool)
        Nesterov momentum (Sutskever et al., 2013).
    maximize : bool, default False (bool)
        Ascend the objective instead.
    grad_scale : float, optional
        A finite number > 0 the gradient is divided by inside the kernel (a loss scale to undo, times a clipping factor's inverse), folded into the gradient's sign: ``g = grad * ((-1 if maximize else 1) / grad_scale)``. None: 1.
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
        updated in pieces (a shard of it per process) rounds as if in one call.
    """
    rule: fastadapt.rules.Rule
    def __init__(
            self, params, lr=0.001, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
            maximize=False, foreach=None, differentiable=False, fused=None, max_grad_norm=None,
            state_dtype=None, master_weights=False, stochastic_rounding=False, seed=None,
            min_8bit_size=4096, compressed_state_dict=False): ...

class RMSprop(FlatOptimizer):
    """RMSprop over flat buffers: a drop-in for torch.optim.RMSprop (same signature, defaults and numbers), one fused ``fastadapt.rmsprop_step`` call per (group, device, dtype).

    ``foreach`` and ``fused`` are accepted and change nothing; ``capturable=True`` and ``differentiable=True`` raise ValueError. ``state_dtype``, ``master_weights``, ``stochastic_rounding`` and ``seed``: storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state), as in :class:`fastadapt.Optimizer`; ``min_8bit_size`` keeps smaller parameters' state float32 under 8-bit state; ``compressed_state_dict=True`` keeps 16-bit and 8-bit state as stored in ``state_dict()``. See :mod:`fastadapt.torch` for the gradient paths and their cost.

    The update (from ``fastadapt.rmsprop_step``):
    One RMSprop step, in place: RMSprop (Hinton, 2012; centered: Graves, 2013); torch.optim.RMSprop's semantics.

    .. code-block:: text

        g = -grad if maximize else grad
        g = g + weight_decay * param
        square_avg = alpha * square_avg + (1 - alpha) * g * g
        if centered:
            grad_avg = lerp(grad_avg, g, 1 - alpha)
            avg = sqrt(square_avg - grad_avg**2) + eps
        else:
            avg = sqrt(square_avg) + eps
        if momentum > 0:
            momentum_buffer = momentum * momentum_buffer + g / avg
            param = param - lr * momentum_buffer
        else:
            param = param - lr * g / avg

    Parameters
    ----------
    param, grad, square_avg : arrays of one shape and dtype
        ``param`` and the state arrays are updated in place; ``grad`` is read.
    grad_avg : array, optional
        Needed (and updated in place) when centered=True; otherwise not touched (but still checked: an array of ``param``'s shape, or None).
    momentum_buffer : array, optional
        Needed (and updated in place) when momentum > 0; otherwise not touched (but still checked: an array of ``param``'s shape, or None).
    lr : float, default 0.01 (>= 0)
        Learning rate (or a schedule, in the classes).
    alpha : float, default 0.99 (>= 0)
        Smoothing constant.
    eps : float, default 1e-08 (>= 0)
        Added to the denominator.
    weight_decay : float, default 0.0 (>= 0)
        L2 penalty added to the gradient.
    momentum : float, default 0.0 (>= 0)
        Momentum factor.
    centered : bool, default False (bool)
        Normalise by the variance instead (Graves, 2013).
    maximize : bool, default False (bool)
        Ascend the objective instead.
    grad_scale : float, optional
        A finite number > 0 the gradient is divided by inside the kernel (a loss scale to undo, times a clipping factor's inverse), folded into the gradient's sign: ``g = grad * ((-1 if maximize else 1) / grad_scale)``. None: 1.
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
        updated in pieces (a shard of it per process) rounds as if in one call.
    """
    rule: fastadapt.rules.Rule
    def __init__(
            self, params, lr=0.01, alpha=0.99, eps=1e-08, weight_decay=0, momentum=0,
            centered=False, capturable=False, foreach=None, maximize=False, differentiable=False,
            *, max_grad_norm=None, state_dtype=None, master_weights=False,
            stochastic_rounding=False, seed=None, min_8bit_size=4096, compressed_state_dict=False): ...

class Adagrad(FlatOptimizer):
    """Adagrad over flat buffers: a drop-in for torch.optim.Adagrad (same signature, defaults and numbers), one fused ``fastadapt.adagrad_step`` call per (group, device, dtype).

    ``foreach`` and ``fused`` are accepted and change nothing; ``capturable=True`` and ``differentiable=True`` raise ValueError. ``state_dtype``, ``master_weights``, ``stochastic_rounding`` and ``seed``: storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state), as in :class:`fastadapt.Optimizer`; ``min_8bit_size`` keeps smaller parameters' state float32 under 8-bit state; ``compressed_state_dict=True`` keeps 16-bit and 8-bit state as stored in ``state_dict()``. See :mod:`fastadapt.torch` for the gradient paths and their cost.

    The update (from ``fastadapt.adagrad_step``):
    One Adagrad step, in place: AdaGrad (Duchi, Hazan & Singer, 2011); torch.optim.Adagrad's semantics.

    .. code-block:: text

        g = -grad if maximize else grad
        g = g + weight_decay * param
        clr = lr / (1 + (step - 1) * lr_decay)
        state_sum = state_sum + g * g
        param = param - clr * g / (sqrt(state_sum) + eps)

    Parameters
    ----------
    param, grad, state_sum : arrays of one shape and dtype
        ``param`` and the state arrays are updated in place; ``grad`` is read.
        (state_sum: torch's ``sum``. Starts at torch's ``initial_accumulator_value``.)
    step : int
        The 1-based number of the step being taken (the first step is 1). Beyond 2**64 the scalars are computed as at 2**64, where every power of a beta has reached 0.
    lr : float, default 0.01 (>= 0)
        Learning rate (or a schedule, in the classes).
    lr_decay : float, default 0.0 (>= 0)
        Learning-rate decay.
    weight_decay : float, default 0.0 (>= 0)
        L2 penalty added to the gradient.
    eps : float, default 1e-10 (>= 0)
        Added to the denominator.
    maximize : bool, default False (bool)
        Ascend the objective instead.
    grad_scale : float, optional
        A finite number > 0 the gradient is divided by inside the kernel (a loss scale to undo, times a clipping factor's inverse), folded into the gradient's sign: ``g = grad * ((-1 if maximize else 1) / grad_scale)``. None: 1.
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
        updated in pieces (a shard of it per process) rounds as if in one call.
    """
    rule: fastadapt.rules.Rule
    def __init__(
            self, params, lr=0.01, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
            eps=1e-10, foreach=None, *, maximize=False, differentiable=False, fused=None,
            max_grad_norm=None, state_dtype=None, master_weights=False, stochastic_rounding=False,
            seed=None, min_8bit_size=4096, compressed_state_dict=False): ...

class Adadelta(FlatOptimizer):
    """Adadelta over flat buffers: a drop-in for torch.optim.Adadelta (same signature, defaults and numbers), one fused ``fastadapt.adadelta_step`` call per (group, device, dtype).

    ``foreach`` and ``fused`` are accepted and change nothing; ``capturable=True`` and ``differentiable=True`` raise ValueError. ``state_dtype``, ``master_weights``, ``stochastic_rounding`` and ``seed``: storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state), as in :class:`fastadapt.Optimizer`; ``min_8bit_size`` keeps smaller parameters' state float32 under 8-bit state; ``compressed_state_dict=True`` keeps 16-bit and 8-bit state as stored in ``state_dict()``. See :mod:`fastadapt.torch` for the gradient paths and their cost.

    The update (from ``fastadapt.adadelta_step``):
    One Adadelta step, in place: Adadelta (Zeiler, 2012); torch.optim.Adadelta's semantics.

    .. code-block:: text

        g = -grad if maximize else grad
        g = g + weight_decay * param
        square_avg = rho * square_avg + (1 - rho) * g * g
        delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g
        acc_delta = rho * acc_delta + (1 - rho) * delta * delta
        param = param - lr * delta

    Parameters
    ----------
    param, grad, square_avg, acc_delta : arrays of one shape and dtype
        ``param`` and the state arrays are updated in place; ``grad`` is read.
    lr : float, default 1.0 (>= 0)
        Learning rate (or a schedule, in the classes).
    rho : float, default 0.9 (in [0, 1])
        Decay rate of the averages.
    eps : float, default 1e-06 (>= 0)
        Added to the denominator.
    weight_decay : float, default 0.0 (>= 0)
        L2 penalty added to the gradient.
    maximize : bool, default False (bool)
        Ascend the objective instead.
    grad_scale : float, optional
        A finite number > 0 the gradient is divided by inside the kernel (a loss scale to undo, times a clipping factor's inverse), folded into the gradient's sign: ``g = grad * ((-1 if maximize else 1) / grad_scale)``. None: 1.
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
        updated in pieces (a shard of it per process) rounds as if in one call.
    """
    rule: fastadapt.rules.Rule
    def __init__(
            self, params, lr=1.0, rho=0.9, eps=1e-06, weight_decay=0, foreach=None, *,
            capturable=False, maximize=False, differentiable=False, max_grad_norm=None,
            state_dtype=None, master_weights=False, stochastic_rounding=False, seed=None,
            min_8bit_size=4096, compressed_state_dict=False): ...

class Adamax(FlatOptimizer):
    """Adamax over flat buffers: a drop-in for torch.optim.Adamax (same signature, defaults and numbers), one fused ``fastadapt.adamax_step`` call per (group, device, dtype).

    ``foreach`` and ``fused`` are accepted and change nothing; ``capturable=True`` and ``differentiable=True`` raise ValueError. ``state_dtype``, ``master_weights``, ``stochastic_rounding`` and ``seed``: storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state), as in :class:`fastadapt.Optimizer`; ``min_8bit_size`` keeps smaller parameters' state float32 under 8-bit state; ``compressed_state_dict=True`` keeps 16-bit and 8-bit state as stored in ``state_dict()``. See :mod:`fastadapt.torch` for the gradient paths and their cost.

    The update (from ``fastadapt.adamax_step``):
    One Adamax step, in place: Adamax, Adam's infinity-norm variant (Kingma & Ba, 2015, section 7); torch.optim.Adamax's semantics.

    .. code-block:: text

        g = -grad if maximize else grad
        g = g + weight_decay * param
        exp_avg = lerp(exp_avg, g, 1 - beta1)
        exp_inf = max(beta2 * exp_inf, |g| + eps)
        param = param - lr / (1 - beta1**step) * exp_avg / exp_inf

    Parameters
    ----------
    param, grad, exp_avg, exp_inf : arrays of one shape and dtype
        ``param`` and the state arrays are updated in place; ``grad`` is read.
    step : int
        The 1-based number of the step being taken (the first step is 1). Beyond 2**64 the scalars are computed as at 2**64, where every power of a beta has reached 0.
    lr : float, default 0.002 (>= 0)
        Learning rate (or a schedule, in the classes).
    betas : (float, float), default (0.9, 0.999) (each in [0, 1))
        Decay rates of the first and second moment.
    eps : float, default 1e-08 (>= 0)
        Added to the denominator.
    weight_decay : float, default 0.0 (>= 0)
        L2 penalty added to the gradient.
    maximize : bool, default False (bool)
        Ascend the objective instead.
    grad_scale : float, optional
        A finite number > 0 the gradient is divided by inside the kernel (a loss scale to undo, times a clipping factor's inverse), folded into the gradient's sign: ``g = grad * ((-1 if maximize else 1) / grad_scale)``. None: 1.
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
        updated in pieces (a shard of it per process) rounds as if in one call.
    """
    rule: fastadapt.rules.Rule
    def __init__(
            self, params, lr=0.002, betas=(0.9, 0.999), eps=1e-08, weight_decay=0, foreach=None, *,
            maximize=False, differentiable=False, capturable=False, max_grad_norm=None,
            state_dtype=None, master_weights=False, stochastic_rounding=False, seed=None,
            min_8bit_size=4096, compressed_state_dict=False): ...

class RAdam(FlatOptimizer):
    """RAdam over flat buffers: a drop-in for torch.optim.RAdam (same signature, defaults and numbers), one fused ``fastadapt.radam_step`` call per (group, device, dtype).

    ``foreach`` and ``fused`` are accepted and change nothing; ``capturable=True`` and ``differentiable=True`` raise ValueError. ``state_dtype``, ``master_weights``, ``stochastic_rounding`` and ``seed``: storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state), as in :class:`fastadapt.Optimizer`; ``min_8bit_size`` keeps smaller parameters' state float32 under 8-bit state; ``compressed_state_dict=True`` keeps 16-bit and 8-bit state as stored in ``state_dict()``. See :mod:`fastadapt.torch` for the gradient paths and their cost.

    The update (from ``fastadapt.radam_step``):
    One RAdam step, in place: RAdam, rectified Adam (Liu et al., 2020); torch.optim.RAdam's semantics.

    .. code-block:: text

        param = param * (1 - lr * weight_decay)        if decoupled_weight_decay
        g = -grad if maximize else grad
        g = g + weight_decay * param                   unless decoupled_weight_decay
        exp_avg    = lerp(exp_avg, g, 1 - beta1)
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
        rho_inf = 2 / (1 - beta2) - 1
        rho_t   = rho_inf - 2 * step * beta2**step / (1 - beta2**step)
        update  = exp_avg / (1 - beta1**step) * lr
        if rho_t > 5:                                  (the variance is tractable: rectify)
            rect = sqrt((rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho_t))
            update = update * sqrt(1 - beta2**step) / (sqrt(exp_avg_sq) + eps) * rect
        param = param - update

    Parameters
    ----------
    param, grad, exp_avg, exp_avg_sq : arrays of one shape and dtype
        ``param`` and the state arrays are updated in place; ``grad`` is read.
    step : int
        The 1-based number of the step being taken (the first step is 1). Beyond 2**64 the scalars are computed as at 2**64, where every power of a beta has reached 0.
    lr : float, default 0.001 (>= 0)
        Learning rate (or a schedule, in the classes).
    betas : (float, float), default (0.9, 0.999) (each in [0, 1))
        Decay rates of the first and second moment.
    eps : float, default 1e-08 (>= 0)
        Added to the denominator.
    weight_decay : float, default 0.0 (>= 0)
        L2 penalty added to the gradient.
    decoupled_weight_decay : bool, default False (bool)
        Decay the parameter as AdamW does instead of adding an L2 term.
    maximize : bool, default False (bool)
        Ascend the objective instead.
    grad_scale : float, optional
        A finite number > 0 the gradient is divided by inside the kernel (a loss scale to undo, times a clipping factor's inverse), folded into the gradient's sign: ``g = grad * ((-1 if maximize else 1) / grad_scale)``. None: 1.
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
        updated in pieces (a shard of it per process) rounds as if in one call.
    """
    rule: fastadapt.rules.Rule
    def __init__(
            self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0,
            decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
            differentiable=False, max_grad_norm=None, state_dtype=None, master_weights=False,
            stochastic_rounding=False, seed=None, min_8bit_size=4096, compressed_state_dict=False): ...

class Rprop(FlatOptimizer):
    """Rprop over flat buffers: a drop-in for torch.optim.Rprop (same signature, defaults and numbers), one fused ``fastadapt.rprop_step`` call per (group, device, dtype).

    ``foreach`` and ``fused`` are accepted and change nothing; ``capturable=True`` and ``differentiable=True`` raise ValueError. ``state_dtype``, ``master_weights``, ``stochastic_rounding`` and ``seed``: storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state), as in :class:`fastadapt.Optimizer`; ``min_8bit_size`` keeps smaller parameters' state float32 under 8-bit state; ``compressed_state_dict=True`` keeps 16-bit and 8-bit state as stored in ``state_dict()``. See :mod:`fastadapt.torch` for the gradient paths and their cost.

    The update (from ``fastadapt.rprop_step``):
    One Rprop step, in place: Rprop, resilient backpropagation (Riedmiller & Braun, 1993); torch.optim.Rprop's semantics.

    .. code-block:: text

        g = -grad if maximize else grad
        s = sign(g * prev)
        factor = etaplus if s > 0, etaminus if s < 0, 1 if s == 0
        step_size = clamp(step_size * factor, step_sizes[0], step_sizes[1])
        g = 0 where factor == etaminus                 (the sign flipped: no move, forget it)
        param = param - sign(g) * step_size
        prev = g

    Parameters
    ----------
    param, grad, prev, step_size : arrays of one shape and dtype
        ``param`` and the state arrays are updated in place; ``grad`` is read.
        (prev: the previous step's gradient (zeroed where its sign flipped).)
        (step_size: each element's step size. Starts at torch's ``lr``.)
    lr : float, default 0.01 (>= 0)
        The initial step size: step_size starts at it (the class fills it; the functional step reads step_size).
    etas : (float, float), default (0.5, 1.2) (each in (0, inf])
        (etaminus, etaplus): the factors a step size shrinks and grows by.
    step_sizes : (float, float), default (1e-06, 50) (each >= 0)
        (min, max): the range of a step size.
    maximize : bool, default False (bool)
        Ascend the objective instead.
    grad_scale : float, optional
        A finite number > 0 the gradient is divided by inside the kernel (a loss scale to undo, times a clipping factor's inverse), folded into the gradient's sign: ``g = grad * ((-1 if maximize else 1) / grad_scale)``. None: 1.
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
        updated in pieces (a shard of it per process) rounds as if in one call.
    """
    rule: fastadapt.rules.Rule
    def __init__(
            self, params, lr=0.01, etas=(0.5, 1.2), step_sizes=(1e-06, 50), *, capturable=False,
            foreach=None, maximize=False, differentiable=False, max_grad_norm=None,
            state_dtype=None, master_weights=False, stochastic_rounding=False, seed=None,
            min_8bit_size=4096, compressed_state_dict=False): ...

class NAdam(FlatOptimizer):
    """NAdam over flat buffers: a drop-in for torch.optim.NAdam (same signature, defaults and numbers), one fused ``fastadapt.nadam_step`` call per (group, device, dtype).

    ``foreach`` and ``fused`` are accepted and change nothing; ``capturable=True`` and ``differentiable=True`` raise ValueError. ``state_dtype``, ``master_weights``, ``stochastic_rounding`` and ``seed``: storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state), as in :class:`fastadapt.Optimizer`; ``min_8bit_size`` keeps smaller parameters' state float32 under 8-bit state; ``compressed_state_dict=True`` keeps 16-bit and 8-bit state as stored in ``state_dict()``. See :mod:`fastadapt.torch` for the gradient paths and their cost.

    The update (from ``fastadapt.nadam_step``):
    One NAdam step, in place: NAdam, Adam with Nesterov momentum (Dozat, 2016); torch.optim.NAdam's semantics.

    .. code-block:: text

        param = param * (1 - lr * weight_decay)        if decoupled_weight_decay
        g = -grad if maximize else grad
        g = g + weight_decay * param                   unless decoupled_weight_decay
        mu      = beta1 * (1 - 0.5 * 0.96**(step * momentum_decay))
        mu_next = beta1 * (1 - 0.5 * 0.96**((step + 1) * momentum_decay))
        mu_product = mu_product * mu                   (a float32 scalar, as torch keeps it)
        exp_avg    = lerp(exp_avg, g, 1 - beta1)
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
        denom = sqrt(exp_avg_sq / (1 - beta2**step)) + eps
        param = param - lr * (1 - mu) / (1 - mu_product) * g / denom
        param = param - lr * mu_next / (1 - mu_product * mu_next) * exp_avg / denom

    Parameters
    ----------
    param, grad, exp_avg, exp_avg_sq : arrays of one shape and dtype
        ``param`` and the state arrays are updated in place; ``grad`` is read.
    step : int
        The 1-based number of the step being taken (the first step is 1). Beyond 2**64 the scalars are computed as at 2**64, where every power of a beta has reached 0.
    lr : float, default 0.002 (>= 0)
        Learning rate (or a schedule, in the classes).
    betas : (float, float), default (0.9, 0.999) (each in [0, 1))
        Decay rates of the first and second moment.
    eps : float, default 1e-08 (>= 0)
        Added to the denominator.
    weight_decay : float, default 0.0 (>= 0)
        L2 penalty added to the gradient.
    momentum_decay : float, default 0.004 (>= 0)
        The momentum schedule's decay (psi).
    decoupled_weight_decay : bool, default False (bool)
        Decay the parameter as AdamW does instead of adding an L2 term.
    maximize : bool, default False (bool)
        Ascend the objective instead.
    grad_scale : float, optional
        A finite number > 0 the gradient is divided by inside the kernel (a loss scale to undo, times a clipping factor's inverse), folded into the gradient's sign: ``g = grad * ((-1 if maximize else 1) / grad_scale)``. None: 1.
    mu_product : float, optional
        The product of the momentum schedule's mu so far. None (the first step): 1.0.
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
        updated in pieces (a shard of it per process) rounds as if in one call.

    Returns
    -------
    dict
        The scalar state after this step (``mu_product``), to pass back as keyword arguments to the next.
    """
    rule: fastadapt.rules.Rule
    def __init__(
            self, params, lr=0.002, betas=(0.9, 0.999), eps=1e-08, weight_decay=0,
            momentum_decay=0.004, decoupled_weight_decay=False, *, foreach=None, maximize=False,
            capturable=False, differentiable=False, max_grad_norm=None, state_dtype=None,
            master_weights=False, stochastic_rounding=False, seed=None, min_8bit_size=4096,
            compressed_state_dict=False): ...

class ASGD(FlatOptimizer):
    """ASGD over flat buffers: a drop-in for torch.optim.ASGD (same signature, defaults and numbers), one fused ``fastadapt.asgd_step`` call per (group, device, dtype).

    ``foreach`` and ``fused`` are accepted and change nothing; ``capturable=True`` and ``differentiable=True`` raise ValueError. ``state_dtype``, ``master_weights``, ``stochastic_rounding`` and ``seed``: storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state), as in :class:`fastadapt.Optimizer`; ``min_8bit_size`` keeps smaller parameters' state float32 under 8-bit state; ``compressed_state_dict=True`` keeps 16-bit and 8-bit state as stored in ``state_dict()``. See :mod:`fastadapt.torch` for the gradient paths and their cost.

    The update (from ``fastadapt.asgd_step``):
    One ASGD step, in place: ASGD, averaged stochastic gradient descent (Polyak & Juditsky, 1992); torch.optim.ASGD's semantics.

    .. code-block:: text

        g = -grad if maximize else grad
        g = g + weight_decay * param
        param = param * (1 - lambd * eta)
        param = param - eta * g
        ax = ax + (param - ax) * mu          if mu != 1
             param                           otherwise
        eta = lr / (1 + lambd * lr * step)**alpha     (for the next step)
        mu  = 1 / max(1, step - t0)                   (for the next step)

    Parameters
    ----------
    param, grad, ax : arrays of one shape and dtype
        ``param`` and the state arrays are updated in place; ``grad`` is read.
        (ax: the averaged parameters, the point of ASGD.)
    step : int
        The 1-based number of the step being taken (the first step is 1). Beyond 2**64 the scalars are computed as at 2**64, where every power of a beta has reached 0.
    lr : float, default 0.01 (>= 0)
        Learning rate (or a schedule, in the classes).
    lambd : float, default 0.0001 (in [-inf, inf])
        Decay term.
    alpha : float, default 0.75 (in [-inf, inf])
        Power for the eta update.
    t0 : float, default 1000000.0 (in [-inf, inf])
        The step at which averaging starts.
    weight_decay : float, default 0.0 (>= 0)
        L2 penalty added to the gradient.
    maximize : bool, default False (bool)
        Ascend the objective instead.
    grad_scale : float, optional
        A finite number > 0 the gradient is divided by inside the kernel (a loss scale to undo, times a clipping factor's inverse), folded into the gradient's sign: ``g = grad * ((-1 if maximize else 1) / grad_scale)``. None: 1.
    eta : float, optional
        The step size of this step (float32, as torch keeps it). None (the first step): ``lr``.
    mu : float, optional
        The averaging weight of this step (float32). None (the first step): 1.0.
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
        updated in pieces (a shard of it per process) rounds as if in one call.

    Returns
    -------
    dict
        The scalar state after this step (``eta``, ``mu``), to pass back as keyword arguments to the next.
    """
    rule: fastadapt.rules.Rule
    def __init__(
            self, params, lr=0.01, lambd=0.0001, alpha=0.75, t0=1000000.0, weight_decay=0,
            foreach=None, maximize=False, differentiable=False, capturable=False, *,
            max_grad_norm=None, state_dtype=None, master_weights=False, stochastic_rounding=False,
            seed=None, min_8bit_size=4096, compressed_state_dict=False): ...

class Lion(FlatOptimizer):
    """Lion over flat buffers: a drop-in for the rule (same signature, defaults and numbers), one fused ``fastadapt.lion_step`` call per (group, device, dtype).

    ``foreach`` and ``fused`` are accepted and change nothing; ``capturable=True`` and ``differentiable=True`` raise ValueError. ``state_dtype``, ``master_weights``, ``stochastic_rounding`` and ``seed``: storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state), as in :class:`fastadapt.Optimizer`; ``min_8bit_size`` keeps smaller parameters' state float32 under 8-bit state; ``compressed_state_dict=True`` keeps 16-bit and 8-bit state as stored in ``state_dict()``. See :mod:`fastadapt.torch` for the gradient paths and their cost.

    The update (from ``fastadapt.lion_step``):
    One Lion step, in place: Lion, evolved sign momentum (Chen et al., 2023, arXiv:2302.06675).

    .. code-block:: text

        g = -grad if maximize else grad
        c = beta1 * exp_avg + (1 - beta1) * g
        param = param * (1 - lr * weight_decay) - lr * sign(c)
        exp_avg = beta2 * exp_avg + (1 - beta2) * g

    Parameters
    ----------
    param, grad, exp_avg : arrays of one shape and dtype
        ``param`` and the state arrays are updated in place; ``grad`` is read.
    lr : float, default 0.0001 (>= 0)
        Learning rate (or a schedule, in the classes).
    betas : (float, float), default (0.9, 0.99) (each in [0, 1))
        Interpolation of the update's and the momentum's averages.
    weight_decay : float, default 0.0 (>= 0)
        Decoupled weight decay.
    maximize : bool, default False (bool)
        Ascend the objective instead.
    grad_scale : float, optional
        A finite number > 0 the gradient is divided by inside the kernel (a loss scale to undo, times a clipping factor's inverse), folded into the gradient's sign: ``g = grad * ((-1 if maximize else 1) / grad_scale)``. None: 1.
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
        updated in pieces (a shard of it per process) rounds as if in one call.
    """
    rule: fastadapt.rules.Rule
    def __init__(
            self, params, lr=0.0001, betas=(0.9, 0.99), weight_decay=0.0, *, maximize=False,
            foreach=None, fused=None, capturable=False, differentiable=False, max_grad_norm=None,
            state_dtype=None, master_weights=False, stochastic_rounding=False, seed=None,
            min_8bit_size=4096, compressed_state_dict=False): ...

class SparseAdam(FlatOptimizer):
    """SparseAdam over flat buffers: a drop-in for torch.optim.SparseAdam (same signature, defaults and numbers), one fused ``fastadapt.sparse_adam_step`` call per (group, device, dtype).

    ``foreach`` and ``fused`` are accepted and change nothing; ``capturable=True`` and ``differentiable=True`` raise ValueError. ``state_dtype``, ``master_weights``, ``stochastic_rounding`` and ``seed``: storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state), as in :class:`fastadapt.Optimizer`; ``min_8bit_size`` keeps smaller parameters' state float32 under 8-bit state; ``compressed_state_dict=True`` keeps 16-bit and 8-bit state as stored in ``state_dict()``. See :mod:`fastadapt.torch` for the gradient paths and their cost.

    The update (from ``fastadapt.sparse_adam_step``):
    One SparseAdam step, in place: Adam masked to the rows a sparse gradient holds (torch.optim.SparseAdam); torch.optim.SparseAdam's semantics.

    .. code-block:: text

        g = -grad if maximize else grad                (rows present in the gradient only)
        exp_avg    = exp_avg + (g - exp_avg) * (1 - beta1)
        exp_avg_sq = exp_avg_sq + (g * g - exp_avg_sq) * (1 - beta2)
        denom = sqrt(exp_avg_sq) + eps
        step_size = lr * sqrt(1 - beta2**step) / (1 - beta1**step)
        param = param + (-step_size) * (exp_avg / denom)

    Parameters
    ----------
    param, grad, exp_avg, exp_avg_sq : arrays of one shape and dtype
        ``param`` and the state arrays are updated in place; ``grad`` is read.
    step : int
        The 1-based number of the step being taken (the first step is 1). Beyond 2**64 the scalars are computed as at 2**64, where every power of a beta has reached 0.
    lr : float, default 0.001 (in (0, inf])
        Learning rate (or a schedule, in the classes).
    betas : (float, float), default (0.9, 0.999) (each in [0, 1))
        Decay rates of the first and second moment.
    eps : float, default 1e-08 (in (0, inf])
        Added to the denominator.
    maximize : bool, default False (bool)
        Ascend the objective instead.
    grad_scale : float, optional
        A finite number > 0 the gradient is divided by inside the kernel (a loss scale to undo, times a clipping factor's inverse), folded into the gradient's sign: ``g = grad * ((-1 if maximize else 1) / grad_scale)``. None: 1.
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
        updated in pieces (a shard of it per process) rounds as if in one call.

    The functional step and the NumPy class update every element: each is a row present in the gradient. fastadapt.torch.SparseAdam takes sparse gradients (``nn.Embedding(sparse=True)``) and updates only the rows they hold; like torch it refuses dense gradients.
    """
    rule: fastadapt.rules.Rule
    def __init__(
            self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-08, maximize=False, *,
            max_grad_norm=None, state_dtype=None, master_weights=False, stochastic_rounding=False,
            seed=None, min_8bit_size=4096, compressed_state_dict=False): ...
