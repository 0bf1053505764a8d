# Generated from the registry by `python -m fastadapt._stubs`; do not edit.
"""Optimizer classes: torch.optim-style objects over the fused functional steps.

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
import fastadapt._core
import fastadapt._rule
import typing

__all__ = [
    'Optimizer',
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
]

CHECKPOINT_FORMAT: int

class Optimizer(fastadapt._core.WholeStep):
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
    rule: typing.Any
    state_init: dict
    @classmethod
    def __init_subclass__(cls, **kwargs): ...
    def __init__(self, params, **defaults): ...
    @classmethod
    def option_names(cls):
        """The hyper-parameters a group holds: the functional step's plus the
        state initialisers.
        """
        ...
    def step_options(self, group):
        """The functional step's keyword arguments held by ``group`` (lr unresolved)."""
        ...
    @property
    def group_buffers(self):
        """Per group, its flat buffers (parameters, gradients, state, step count)."""
        ...
    def check_group(self, group, dtype, index=None, state_dtype=None):
        """Check ``group``'s hyper-parameters for params of ``dtype`` and state
        of ``state_dtype`` by a dry run of the functional step on zero-size
        arrays, so errors are the functional API's own (naming group ``index``).
        """
        ...
    @property
    def params(self):
        """The parameters (views into the flat buffers, original shapes), all groups in order."""
        ...
    @property
    def master_params(self):
        """With ``master_weights=True``, the float32 master copies of :attr:`params`
        (the arrays the update runs on; write here to change a param); with a
        split master ("bf16+16" / "bf16+8"), new read-only float32 arrays of
        the masters (param plus correction: write a param itself to change it,
        which keeps its correction); else None.
        """
        ...
    @property
    def grads(self):
        """The gradient arrays matching :attr:`params`; write gradients here (no copy)."""
        ...
    @property
    def flat_params(self):
        """Per group, the flat parameter buffer's ``data`` (padding included)."""
        ...
    @property
    def flat_grads(self):
        """Per group, the flat gradient buffer's ``data`` (padding included)."""
        ...
    @property
    def state(self):
        """Per group, ``{"step": completed steps, <state name>: [views...]}``.

        The views alias the optimizer's state buffers (torch's names, except
        Adagrad's ``state_sum`` for torch's ``sum``).
        """
        ...
    @property
    def scalar_state(self):
        """Per group, the rule's scalar state (``{}`` for rules without): NAdam's
        ``mu_product``, ASGD's ``eta`` and ``mu``, as floats.
        """
        ...
    def get_lr(self):
        """The learning rate each group's next step will use."""
        ...
    def zero_grad(self):
        """Set every gradient to zero."""
        ...
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
        ...
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
        ...
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
        ...
    def save(self, path):
        """Write :meth:`state_dict` to ``path`` as a ``.npz`` file, atomically.

        The file is written under a temporary name in the same directory,
        flushed to disk and renamed over ``path``: a crash mid-save leaves any
        previous file at ``path`` intact, and the next save into that directory
        removes the temporary. A file replaced keeps its permission bits. The
        name is used as given (no ``.npz`` suffix is added).
        """
        ...
    def load(self, path):
        """Restore a checkpoint written by :meth:`save` (see :meth:`load_state_dict`).

        A file that is not a readable fastadapt checkpoint, or that does not
        fit this optimizer, raises ``ValueError`` and changes nothing. No array
        is read before its header says it has this optimizer's size and dtype.
        """
        ...
    @classmethod
    def from_checkpoint(cls, path):
        """A new optimizer, of the checkpoint's algorithm, restored from ``path``.

        The parameters are NumPy arrays (host memory). Called on a subclass
        (``fastadapt.Adam.from_checkpoint``), the checkpoint must be of that
        algorithm. Anything wrong with the file raises ``ValueError``.
        """
        ...
    def __repr__(self): ...
    defaults: typing.Any
    state_dtype: typing.Any
    master_weights: typing.Any
    stochastic_rounding: typing.Any
    seed: typing.Any
    param_groups: typing.Any
    grad_norm: typing.Any
    step_skipped: typing.Any

class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), and AMSGrad (Reddi et al., 2018); torch.optim.Adam.

    Each step of a group (``step`` counts them from 1), elementwise::

        g = -grad if maximize else grad
        g = g + weight_decay * param                      (L2 penalty)
        exp_avg    = lerp(exp_avg, g, 1 - beta1)
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
        v = max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq)   if amsgrad
            exp_avg_sq                                          otherwise
        denom = sqrt(v) / sqrt(1 - beta2**step) + eps
        param = param - lr / (1 - beta1**step) * exp_avg / denom

    State (zeros unless said): ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` (when amsgrad=True).

    Parameters
    ----------
    params : array, list of arrays or list of parameter-group dicts
        Copied into flat buffers; use ``opt.params`` afterwards (see :class:`Optimizer`).
    lr : float or schedule, default 0.001 (>= 0)
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
    state_dtype, master_weights, stochastic_rounding, seed : keyword-only
        Storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state); see :class:`Optimizer`.
    max_grad_norm : float, optional, keyword-only
        Clip by the global gradient norm over all groups, as ``torch.nn.utils.clip_grad_norm_`` (see :meth:`Optimizer.step`).
    """
    rule: fastadapt._rule.Rule
    state_init: dict
    def __init__(
            self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.0, amsgrad=False,
            *, maximize=False, state_dtype=None, master_weights=False, stochastic_rounding=False,
            seed=None, max_grad_norm=None): ...

class AdamW(Optimizer):
    """AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019); torch.optim.AdamW.

    Each step of a group (``step`` counts them from 1), elementwise::

        param = param * (1 - lr * weight_decay)           (decoupled decay, first)
        g = -grad if maximize else grad                   (no L2 term)
        exp_avg    = lerp(exp_avg, g, 1 - beta1)
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
        v = max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq)   if amsgrad
            exp_avg_sq                                          otherwise
        denom = sqrt(v) / sqrt(1 - beta2**step) + eps
        param = param - lr / (1 - beta1**step) * exp_avg / denom

    State (zeros unless said): ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` (when amsgrad=True).

    Parameters
    ----------
    params : array, list of arrays or list of parameter-group dicts
        Copied into flat buffers; use ``opt.params`` afterwards (see :class:`Optimizer`).
    lr : float or schedule, default 0.001 (>= 0)
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
    state_dtype, master_weights, stochastic_rounding, seed : keyword-only
        Storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state); see :class:`Optimizer`.
    max_grad_norm : float, optional, keyword-only
        Clip by the global gradient norm over all groups, as ``torch.nn.utils.clip_grad_norm_`` (see :meth:`Optimizer.step`).
    """
    rule: fastadapt._rule.Rule
    state_init: dict
    def __init__(
            self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.01,
            amsgrad=False, *, maximize=False, state_dtype=None, master_weights=False,
            stochastic_rounding=False, seed=None, max_grad_norm=None): ...

class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum; torch.optim.SGD.

    Each step of a group (``step`` counts them from 1), elementwise::

        g = -grad if maximize else grad
        g = g + weight_decay * param
        if momentum != 0:
            momentum_buffer = g                                           (step 1)
                              momentum * momentum_buffer + (1 - dampening) * g   (later)
            g = g + momentum * momentum_buffer if nesterov else momentum_buffer
        param = param - lr * g

    State (zeros unless said): ``momentum_buffer`` (when momentum != 0).

    Parameters
    ----------
    params : array, list of arrays or list of parameter-group dicts
        Copied into flat buffers; use ``opt.params`` afterwards (see :class:`Optimizer`).
    lr : float or schedule, default 0.001 (>= 0)
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
    state_dtype, master_weights, stochastic_rounding, seed : keyword-only
        Storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state); see :class:`Optimizer`.
    max_grad_norm : float, optional, keyword-only
        Clip by the global gradient norm over all groups, as ``torch.nn.utils.clip_grad_norm_`` (see :meth:`Optimizer.step`).
    """
    rule: fastadapt._rule.Rule
    state_init: dict
    def __init__(
            self, params, lr=0.001, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
            *, maximize=False, state_dtype=None, master_weights=False, stochastic_rounding=False,
            seed=None, max_grad_norm=None): ...

class RMSprop(Optimizer):
    """RMSprop (Hinton, 2012; centered: Graves, 2013); torch.optim.RMSprop.

    Each step of a group (``step`` counts them from 1), elementwise::

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

    State (zeros unless said): ``square_avg``, ``grad_avg`` (when centered=True), ``momentum_buffer`` (when momentum > 0).

    Parameters
    ----------
    params : array, list of arrays or list of parameter-group dicts
        Copied into flat buffers; use ``opt.params`` afterwards (see :class:`Optimizer`).
    lr : float or schedule, default 0.01 (>= 0)
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
    state_dtype, master_weights, stochastic_rounding, seed : keyword-only
        Storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state); see :class:`Optimizer`.
    max_grad_norm : float, optional, keyword-only
        Clip by the global gradient norm over all groups, as ``torch.nn.utils.clip_grad_norm_`` (see :meth:`Optimizer.step`).
    """
    rule: fastadapt._rule.Rule
    state_init: dict
    def __init__(
            self, params, lr=0.01, alpha=0.99, eps=1e-08, weight_decay=0.0, momentum=0.0,
            centered=False, *, maximize=False, state_dtype=None, master_weights=False,
            stochastic_rounding=False, seed=None, max_grad_norm=None): ...

class Adagrad(Optimizer):
    """AdaGrad (Duchi, Hazan & Singer, 2011); torch.optim.Adagrad.

    Each step of a group (``step`` counts them from 1), elementwise::

        g = -grad if maximize else grad
        g = g + weight_decay * param
        clr = lr / (1 + (step - 1) * lr_decay)
        state_sum = state_sum + g * g
        param = param - clr * g / (sqrt(state_sum) + eps)

    State (zeros unless said): ``state_sum`` (starts at ``initial_accumulator_value``).

    Parameters
    ----------
    params : array, list of arrays or list of parameter-group dicts
        Copied into flat buffers; use ``opt.params`` afterwards (see :class:`Optimizer`).
    lr : float or schedule, default 0.01 (>= 0)
        Learning rate (or a schedule, in the classes).
    lr_decay : float, default 0.0 (>= 0)
        Learning-rate decay.
    weight_decay : float, default 0.0 (>= 0)
        L2 penalty added to the gradient.
    initial_accumulator_value : float, default 0.0 (>= 0)
        Initial value of state_sum.
    eps : float, default 1e-10 (>= 0)
        Added to the denominator.
    maximize : bool, default False (bool)
        Ascend the objective instead.
    state_dtype, master_weights, stochastic_rounding, seed : keyword-only
        Storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state); see :class:`Optimizer`.
    max_grad_norm : float, optional, keyword-only
        Clip by the global gradient norm over all groups, as ``torch.nn.utils.clip_grad_norm_`` (see :meth:`Optimizer.step`).
    """
    rule: fastadapt._rule.Rule
    state_init: dict
    def __init__(
            self, params, lr=0.01, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
            eps=1e-10, *, maximize=False, state_dtype=None, master_weights=False,
            stochastic_rounding=False, seed=None, max_grad_norm=None): ...

class Adadelta(Optimizer):
    """Adadelta (Zeiler, 2012); torch.optim.Adadelta.

    Each step of a group (``step`` counts them from 1), elementwise::

        g = -grad if maximize else grad
        g = g + weight_decay * param
        square_avg = rho * square_avg + (1 - rho) * g * g
        delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g
        acc_delta = rho * acc_delta + (1 - rho) * delta * delta
        param = param - lr * delta

    State (zeros unless said): ``square_avg``, ``acc_delta``.

    Parameters
    ----------
    params : array, list of arrays or list of parameter-group dicts
        Copied into flat buffers; use ``opt.params`` afterwards (see :class:`Optimizer`).
    lr : float or schedule, default 1.0 (>= 0)
        Learning rate (or a schedule, in the classes).
    rho : float, default 0.9 (in [0, 1])
        Decay rate of the averages.
    eps : float, default 1e-06 (>= 0)
        Added to the denominator.
    weight_decay : float, default 0.0 (>= 0)
        L2 penalty added to the gradient.
    maximize : bool, default False (bool)
        Ascend the objective instead.
    state_dtype, master_weights, stochastic_rounding, seed : keyword-only
        Storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state); see :class:`Optimizer`.
    max_grad_norm : float, optional, keyword-only
        Clip by the global gradient norm over all groups, as ``torch.nn.utils.clip_grad_norm_`` (see :meth:`Optimizer.step`).
    """
    rule: fastadapt._rule.Rule
    state_init: dict
    def __init__(
            self, params, lr=1.0, rho=0.9, eps=1e-06, weight_decay=0.0, *, maximize=False,
            state_dtype=None, master_weights=False, stochastic_rounding=False, seed=None,
            max_grad_norm=None): ...

class Adamax(Optimizer):
    """Adamax, Adam's infinity-norm variant (Kingma & Ba, 2015, section 7); torch.optim.Adamax.

    Each step of a group (``step`` counts them from 1), elementwise::

        g = -grad if maximize else grad
        g = g + weight_decay * param
        exp_avg = lerp(exp_avg, g, 1 - beta1)
        exp_inf = max(beta2 * exp_inf, |g| + eps)
        param = param - lr / (1 - beta1**step) * exp_avg / exp_inf

    State (zeros unless said): ``exp_avg``, ``exp_inf``.

    Parameters
    ----------
    params : array, list of arrays or list of parameter-group dicts
        Copied into flat buffers; use ``opt.params`` afterwards (see :class:`Optimizer`).
    lr : float or schedule, default 0.002 (>= 0)
        Learning rate (or a schedule, in the classes).
    betas : (float, float), default (0.9, 0.999) (each in [0, 1))
        Decay rates of the first and second moment.
    eps : float, default 1e-08 (>= 0)
        Added to the denominator.
    weight_decay : float, default 0.0 (>= 0)
        L2 penalty added to the gradient.
    maximize : bool, default False (bool)
        Ascend the objective instead.
    state_dtype, master_weights, stochastic_rounding, seed : keyword-only
        Storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state); see :class:`Optimizer`.
    max_grad_norm : float, optional, keyword-only
        Clip by the global gradient norm over all groups, as ``torch.nn.utils.clip_grad_norm_`` (see :meth:`Optimizer.step`).
    """
    rule: fastadapt._rule.Rule
    state_init: dict
    def __init__(
            self, params, lr=0.002, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.0, *,
            maximize=False, state_dtype=None, master_weights=False, stochastic_rounding=False,
            seed=None, max_grad_norm=None): ...

class RAdam(Optimizer):
    """RAdam, rectified Adam (Liu et al., 2020); torch.optim.RAdam.

    Each step of a group (``step`` counts them from 1), elementwise::

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

    State (zeros unless said): ``exp_avg``, ``exp_avg_sq``.

    Parameters
    ----------
    params : array, list of arrays or list of parameter-group dicts
        Copied into flat buffers; use ``opt.params`` afterwards (see :class:`Optimizer`).
    lr : float or schedule, default 0.001 (>= 0)
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
    state_dtype, master_weights, stochastic_rounding, seed : keyword-only
        Storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state); see :class:`Optimizer`.
    max_grad_norm : float, optional, keyword-only
        Clip by the global gradient norm over all groups, as ``torch.nn.utils.clip_grad_norm_`` (see :meth:`Optimizer.step`).
    """
    rule: fastadapt._rule.Rule
    state_init: dict
    def __init__(
            self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.0,
            decoupled_weight_decay=False, *, maximize=False, state_dtype=None,
            master_weights=False, stochastic_rounding=False, seed=None, max_grad_norm=None): ...

class Rprop(Optimizer):
    """Rprop, resilient backpropagation (Riedmiller & Braun, 1993); torch.optim.Rprop.

    Each step of a group (``step`` counts them from 1), elementwise::

        g = -grad if maximize else grad
        s = sign(g * prev)
        factor = etaplus if s > 0, etaminus if s < 0, 1 if s == 0
        step_size = clamp(step_size * factor, step_sizes[0], step_sizes[1])
        g = 0 where factor == etaminus                 (the sign flipped: no move, forget it)
        param = param - sign(g) * step_size
        prev = g

    State (zeros unless said): ``prev``, ``step_size`` (starts at ``lr``).

    Parameters
    ----------
    params : array, list of arrays or list of parameter-group dicts
        Copied into flat buffers; use ``opt.params`` afterwards (see :class:`Optimizer`).
    lr : float or schedule, default 0.01 (>= 0)
        The initial step size: step_size starts at it (the class fills it; the functional step reads step_size).
    etas : (float, float), default (0.5, 1.2) (each in (0, inf])
        (etaminus, etaplus): the factors a step size shrinks and grows by.
    step_sizes : (float, float), default (1e-06, 50) (each >= 0)
        (min, max): the range of a step size.
    maximize : bool, default False (bool)
        Ascend the objective instead.
    state_dtype, master_weights, stochastic_rounding, seed : keyword-only
        Storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state); see :class:`Optimizer`.
    max_grad_norm : float, optional, keyword-only
        Clip by the global gradient norm over all groups, as ``torch.nn.utils.clip_grad_norm_`` (see :meth:`Optimizer.step`).
    """
    rule: fastadapt._rule.Rule
    state_init: dict
    def __init__(
            self, params, lr=0.01, etas=(0.5, 1.2), step_sizes=(1e-06, 50), *, maximize=False,
            state_dtype=None, master_weights=False, stochastic_rounding=False, seed=None,
            max_grad_norm=None): ...

class NAdam(Optimizer):
    """NAdam, Adam with Nesterov momentum (Dozat, 2016); torch.optim.NAdam.

    Each step of a group (``step`` counts them from 1), elementwise::

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

    State (zeros unless said): ``exp_avg``, ``exp_avg_sq``.
    Scalar state, per group: ``mu_product`` (in :attr:`Optimizer.scalar_state` and the checkpoint).

    Parameters
    ----------
    params : array, list of arrays or list of parameter-group dicts
        Copied into flat buffers; use ``opt.params`` afterwards (see :class:`Optimizer`).
    lr : float or schedule, default 0.002 (>= 0)
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
    state_dtype, master_weights, stochastic_rounding, seed : keyword-only
        Storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state); see :class:`Optimizer`.
    max_grad_norm : float, optional, keyword-only
        Clip by the global gradient norm over all groups, as ``torch.nn.utils.clip_grad_norm_`` (see :meth:`Optimizer.step`).
    """
    rule: fastadapt._rule.Rule
    state_init: dict
    def __init__(
            self, params, lr=0.002, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.0,
            momentum_decay=0.004, decoupled_weight_decay=False, *, maximize=False,
            state_dtype=None, master_weights=False, stochastic_rounding=False, seed=None,
            max_grad_norm=None): ...

class ASGD(Optimizer):
    """ASGD, averaged stochastic gradient descent (Polyak & Juditsky, 1992); torch.optim.ASGD.

    Each step of a group (``step`` counts them from 1), elementwise::

        g = -grad if maximize else grad
        g = g + weight_decay * param
        param = param * (1 - lambd * eta)
        param = param - eta * g
        ax = ax + (param - ax) * mu          if mu != 1
             param                           otherwise
        eta = lr / (1 + lambd * lr * step)**alpha     (for the next step)
        mu  = 1 / max(1, step - t0)                   (for the next step)

    State (zeros unless said): ``ax``.
    Scalar state, per group: ``eta``, ``mu`` (in :attr:`Optimizer.scalar_state` and the checkpoint).

    Parameters
    ----------
    params : array, list of arrays or list of parameter-group dicts
        Copied into flat buffers; use ``opt.params`` afterwards (see :class:`Optimizer`).
    lr : float or schedule, default 0.01 (>= 0)
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
    state_dtype, master_weights, stochastic_rounding, seed : keyword-only
        Storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state); see :class:`Optimizer`.
    max_grad_norm : float, optional, keyword-only
        Clip by the global gradient norm over all groups, as ``torch.nn.utils.clip_grad_norm_`` (see :meth:`Optimizer.step`).
    """
    rule: fastadapt._rule.Rule
    state_init: dict
    def __init__(
            self, params, lr=0.01, lambd=0.0001, alpha=0.75, t0=1000000.0, weight_decay=0.0, *,
            maximize=False, state_dtype=None, master_weights=False, stochastic_rounding=False,
            seed=None, max_grad_norm=None): ...

class Lion(Optimizer):
    """Lion, evolved sign momentum (Chen et al., 2023, arXiv:2302.06675); not in torch.optim.

    Each step of a group (``step`` counts them from 1), elementwise::

        g = -grad if maximize else grad
        c = beta1 * exp_avg + (1 - beta1) * g
        param = param * (1 - lr * weight_decay) - lr * sign(c)
        exp_avg = beta2 * exp_avg + (1 - beta2) * g

    State (zeros unless said): ``exp_avg``.

    Parameters
    ----------
    params : array, list of arrays or list of parameter-group dicts
        Copied into flat buffers; use ``opt.params`` afterwards (see :class:`Optimizer`).
    lr : float or schedule, default 0.0001 (>= 0)
        Learning rate (or a schedule, in the classes).
    betas : (float, float), default (0.9, 0.99) (each in [0, 1))
        Interpolation of the update's and the momentum's averages.
    weight_decay : float, default 0.0 (>= 0)
        Decoupled weight decay.
    maximize : bool, default False (bool)
        Ascend the objective instead.
    state_dtype, master_weights, stochastic_rounding, seed : keyword-only
        Storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state); see :class:`Optimizer`.
    max_grad_norm : float, optional, keyword-only
        Clip by the global gradient norm over all groups, as ``torch.nn.utils.clip_grad_norm_`` (see :meth:`Optimizer.step`).
    """
    rule: fastadapt._rule.Rule
    state_init: dict
    def __init__(
            self, params, lr=0.0001, betas=(0.9, 0.99), weight_decay=0.0, *, maximize=False,
            state_dtype=None, master_weights=False, stochastic_rounding=False, seed=None,
            max_grad_norm=None): ...

class SparseAdam(Optimizer):
    """Adam masked to the rows a sparse gradient holds (torch.optim.SparseAdam); torch.optim.SparseAdam.

    Each step of a group (``step`` counts them from 1), elementwise::

        g = -grad if maximize else grad                (rows present in the gradient only)
        exp_avg    = exp_avg + (g - exp_avg) * (1 - beta1)
        exp_avg_sq = exp_avg_sq + (g * g - exp_avg_sq) * (1 - beta2)
        denom = sqrt(exp_avg_sq) + eps
        step_size = lr * sqrt(1 - beta2**step) / (1 - beta1**step)
        param = param + (-step_size) * (exp_avg / denom)

    State (zeros unless said): ``exp_avg``, ``exp_avg_sq``.

    Parameters
    ----------
    params : array, list of arrays or list of parameter-group dicts
        Copied into flat buffers; use ``opt.params`` afterwards (see :class:`Optimizer`).
    lr : float or schedule, default 0.001 (in (0, inf])
        Learning rate (or a schedule, in the classes).
    betas : (float, float), default (0.9, 0.999) (each in [0, 1))
        Decay rates of the first and second moment.
    eps : float, default 1e-08 (in (0, inf])
        Added to the denominator.
    maximize : bool, default False (bool)
        Ascend the objective instead.
    state_dtype, master_weights, stochastic_rounding, seed : keyword-only
        Storage narrower than the math (16-bit params, float32 or split master weights, bfloat16 or 8-bit state); see :class:`Optimizer`.
    max_grad_norm : float, optional, keyword-only
        Clip by the global gradient norm over all groups, as ``torch.nn.utils.clip_grad_norm_`` (see :meth:`Optimizer.step`).
    """
    rule: fastadapt._rule.Rule
    state_init: dict
    def __init__(
            self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-08, *, maximize=False,
            state_dtype=None, master_weights=False, stochastic_rounding=False, seed=None,
            max_grad_norm=None): ...
