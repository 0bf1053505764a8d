# Generated from the registry by `python -m fastadapt._stubs`; do not edit.
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

__all__ = [
    'adam_step',
    'adamw_step',
    'sgd_step',
    'rmsprop_step',
    'adagrad_step',
    'adadelta_step',
    'adamax_step',
    'radam_step',
    'rprop_step',
    'nadam_step',
    'asgd_step',
    'lion_step',
    'sparse_adam_step',
]

def derive_step(rule):
    """The functional step of ``rule``, from its declaration."""
    ...

def step_for(rule):
    """The functional step of ``rule`` (a :class:`~fastadapt.rules.Rule`):
    ``fastadapt.<name>_step`` for a rule of the registry; a rule declared
    elsewhere (on one of the registry's kernels) gets its step derived once.
    """
    ...

def adam_step(
        param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr=0.001,
        betas=(0.9, 0.999), eps=1e-08, weight_decay=0.0, amsgrad=False, maximize=False,
        grad_scale=None, master_param=None, stochastic_rounding=False, seed=None,
        rounding_offset=0):
    """One Adam step, in place: Adam (Kingma & Ba, 2015), and AMSGrad (Reddi et al., 2018); torch.optim.Adam's semantics.

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
    ...

def adamw_step(
        param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr=0.001,
        betas=(0.9, 0.999), eps=1e-08, weight_decay=0.01, amsgrad=False, maximize=False,
        grad_scale=None, master_param=None, stochastic_rounding=False, seed=None,
        rounding_offset=0):
    """One AdamW step, in place: AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019); torch.optim.AdamW's semantics.

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
    ...

def sgd_step(
        param, grad, momentum_buffer=None, *, step, lr=0.001, momentum=0.0, dampening=0.0,
        weight_decay=0.0, nesterov=False, maximize=False, grad_scale=None, master_param=None,
        stochastic_rounding=False, seed=None, rounding_offset=0):
    """One SGD step, in place: Stochastic gradient descent with optional (Nesterov) momentum; torch.optim.SGD's semantics.

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
    ...

def rmsprop_step(
        param, grad, square_avg, grad_avg=None, momentum_buffer=None, *, lr=0.01, alpha=0.99,
        eps=1e-08, weight_decay=0.0, momentum=0.0, centered=False, maximize=False, grad_scale=None,
        master_param=None, stochastic_rounding=False, seed=None, rounding_offset=0):
    """One RMSprop step, in place: RMSprop (Hinton, 2012; centered: Graves, 2013); torch.optim.RMSprop's semantics.

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
    ...

def adagrad_step(
        param, grad, state_sum, *, step, lr=0.01, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
        maximize=False, grad_scale=None, master_param=None, stochastic_rounding=False, seed=None,
        rounding_offset=0):
    """One Adagrad step, in place: AdaGrad (Duchi, Hazan & Singer, 2011); torch.optim.Adagrad's semantics.

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
    ...

def adadelta_step(
        param, grad, square_avg, acc_delta, *, lr=1.0, rho=0.9, eps=1e-06, weight_decay=0.0,
        maximize=False, grad_scale=None, master_param=None, stochastic_rounding=False, seed=None,
        rounding_offset=0):
    """One Adadelta step, in place: Adadelta (Zeiler, 2012); torch.optim.Adadelta's semantics.

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
    ...

def adamax_step(
        param, grad, exp_avg, exp_inf, *, step, lr=0.002, betas=(0.9, 0.999), eps=1e-08,
        weight_decay=0.0, maximize=False, grad_scale=None, master_param=None,
        stochastic_rounding=False, seed=None, rounding_offset=0):
    """One Adamax step, in place: Adamax, Adam's infinity-norm variant (Kingma & Ba, 2015, section 7); torch.optim.Adamax's semantics.

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
    ...

def radam_step(
        param, grad, exp_avg, exp_avg_sq, *, step, lr=0.001, betas=(0.9, 0.999), eps=1e-08,
        weight_decay=0.0, decoupled_weight_decay=False, maximize=False, grad_scale=None,
        master_param=None, stochastic_rounding=False, seed=None, rounding_offset=0):
    """One RAdam step, in place: RAdam, rectified Adam (Liu et al., 2020); torch.optim.RAdam's semantics.

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
    ...

def rprop_step(
        param, grad, prev, step_size, *, lr=0.01, etas=(0.5, 1.2), step_sizes=(1e-06, 50),
        maximize=False, grad_scale=None, master_param=None, stochastic_rounding=False, seed=None,
        rounding_offset=0):
    """One Rprop step, in place: Rprop, resilient backpropagation (Riedmiller & Braun, 1993); torch.optim.Rprop's semantics.

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
    ...

def nadam_step(
        param, grad, exp_avg, exp_avg_sq, *, step, lr=0.002, betas=(0.9, 0.999), eps=1e-08,
        weight_decay=0.0, momentum_decay=0.004, decoupled_weight_decay=False, maximize=False,
        mu_product=None, grad_scale=None, master_param=None, stochastic_rounding=False, seed=None,
        rounding_offset=0):
    """One NAdam step, in place: NAdam, Adam with Nesterov momentum (Dozat, 2016); torch.optim.NAdam's semantics.

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
    ...

def asgd_step(
        param, grad, ax, *, step, lr=0.01, lambd=0.0001, alpha=0.75, t0=1000000.0,
        weight_decay=0.0, maximize=False, eta=None, mu=None, grad_scale=None, master_param=None,
        stochastic_rounding=False, seed=None, rounding_offset=0):
    """One ASGD step, in place: ASGD, averaged stochastic gradient descent (Polyak & Juditsky, 1992); torch.optim.ASGD's semantics.

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
    ...

def lion_step(
        param, grad, exp_avg, *, lr=0.0001, betas=(0.9, 0.99), weight_decay=0.0, maximize=False,
        grad_scale=None, master_param=None, stochastic_rounding=False, seed=None,
        rounding_offset=0):
    """One Lion step, in place: Lion, evolved sign momentum (Chen et al., 2023, arXiv:2302.06675).

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
    ...

def sparse_adam_step(
        param, grad, exp_avg, exp_avg_sq, *, step, lr=0.001, betas=(0.9, 0.999), eps=1e-08,
        maximize=False, grad_scale=None, master_param=None, stochastic_rounding=False, seed=None,
        rounding_offset=0):
    """One SparseAdam step, in place: Adam masked to the rows a sparse gradient holds (torch.optim.SparseAdam); torch.optim.SparseAdam's semantics.

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
    ...
