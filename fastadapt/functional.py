"""The functional API: one in-place, fused update step per call.

Each function follows ``torch.optim``'s single-tensor path to the letter (same
names, defaults and formulas), reads every array once and writes every updated
array once. Arrays may have any shape but must share one shape and one dtype
(float32 or float64), be C-contiguous, distinct, and writeable where written.
Per-step scalars (bias corrections, the decayed learning rate) are computed here
in float64 and cast once to the arrays' dtype; all element math runs in that
dtype. A call that raises has changed nothing.

Every step takes ``grad_scale=None``: when given (finite, > 0), the gradient
is divided by it as it is loaded, as ``GradScaler.unscale_`` would have done
in a separate pass. It is folded into the gradient's sign on the host,
``grad_sign = (-1 if maximize else 1) / grad_scale`` in float64, cast once; a
clipping coefficient folds into the same scalar (``grad_scale / clip_coef``).
"""
import functools
import math

from ._dispatch import Update, run

__all__ = ["adam_step", "adamw_step", "sgd_step", "rmsprop_step",
           "adagrad_step", "adadelta_step"]


def _in_place(plan):
    """The public step from a function that plans it: the step checks the
    arguments, then applies the update. ``step.plan`` returns the checked
    hyper-parameters and arrays as an :class:`Update` without applying it."""
    @functools.wraps(plan)
    def step(*args, **kwargs):
        run(plan(*args, **kwargs))
    step.plan = plan
    return step


def _check(name, value, low=0.0, high=math.inf, low_open=False, high_open=False):
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    too_low = x <= low if low_open else x < low
    too_high = x >= high if high_open else x > high
    if math.isnan(x) or too_low or too_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"invalid {name}: {value!r} (must be in {lo}{low}, {high}{hi})")
    return x


def _check_step(step):
    if isinstance(step, bool) or not hasattr(step, "__index__"):
        raise TypeError(f"step must be an integer (the 1-based number of this step), got {step!r}")
    step = step.__index__()
    if step < 1:
        raise ValueError(f"invalid step: {step} (the 1-based number of the step being taken, >= 1)")
    return step


def _sign(maximize, grad_scale=None):
    """The gradient's multiplier: ``(-1 if maximize else 1) / grad_scale``, in
    float64 (cast once to the arrays' dtype with the other scalars)."""
    sign = -1.0 if maximize else 1.0
    if grad_scale is None:
        return sign
    try:
        scale = float(grad_scale)
    except (TypeError, ValueError):
        raise TypeError(f"grad_scale must be a real number, got {grad_scale!r}") from None
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"invalid grad_scale: {grad_scale!r} (must be finite and > 0)")
    return sign / scale


def _adam_like(name, param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps,
               weight_decay, amsgrad, max_exp_avg_sq, maximize, decoupled, grad_scale=None):
    step = _check_step(step)
    lr = _check("lr", lr)
    eps = _check("eps", eps)
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
    beta1 = _check("betas[0]", beta1, 0.0, 1.0, high_open=True)
    beta2 = _check("betas[1]", beta2, 0.0, 1.0, high_open=True)
    weight_decay = _check("weight_decay", weight_decay)
    if amsgrad and max_exp_avg_sq is None:
        raise ValueError(f"{name}(amsgrad=True) needs max_exp_avg_sq")
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    one_minus_beta1 = 1.0 - beta1
    return Update(
        "adam",
        {"param": param, "grad": grad, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq,
         "max_exp_avg_sq": max_exp_avg_sq if amsgrad else None},
        written={"param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
        scalars=(_sign(maximize, grad_scale),
                 0.0 if decoupled else weight_decay,
                 1.0 - lr * weight_decay if decoupled else 1.0,
                 one_minus_beta1, one_minus_beta1 - 1.0, abs(one_minus_beta1) < 0.5,
                 beta2, 1.0 - beta2, math.sqrt(bias_correction2), eps,
                 -lr / bias_correction1, bool(amsgrad)))


@_in_place
def adam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999),
              eps=1e-8, weight_decay=0.0, amsgrad=False, max_exp_avg_sq=None,
              maximize=False, grad_scale=None):
    r"""One Adam step (Kingma & Ba, 2015), in place; torch.optim.Adam's semantics.

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
        ``param`` and the two moments are updated in place; ``grad`` is read.
    step : int
        The 1-based number of the step being taken (the first step is 1).
    amsgrad : bool
        Use the running maximum of ``exp_avg_sq`` (Reddi et al., 2018); needs
        ``max_exp_avg_sq``, which is updated in place.
    """
    return _adam_like("adam_step", param, grad, exp_avg, exp_avg_sq, step, lr, betas,
                      eps, weight_decay, amsgrad, max_exp_avg_sq, maximize,
                      decoupled=False, grad_scale=grad_scale)


@_in_place
def adamw_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999),
               eps=1e-8, weight_decay=1e-2, amsgrad=False, max_exp_avg_sq=None,
               maximize=False, grad_scale=None):
    r"""One AdamW step (Loshchilov & Hutter, 2019), in place; torch.optim.AdamW's semantics.

    As :func:`adam_step`, but the decay is decoupled from the gradient:
    ``param = param * (1 - lr * weight_decay)`` first, and no L2 term is added
    to ``g``.
    """
    return _adam_like("adamw_step", param, grad, exp_avg, exp_avg_sq, step, lr, betas,
                      eps, weight_decay, amsgrad, max_exp_avg_sq, maximize,
                      decoupled=True, grad_scale=grad_scale)


@_in_place
def sgd_step(param, grad, momentum_buffer=None, *, step, lr=1e-3, momentum=0.0,
             dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False,
             grad_scale=None):
    r"""One SGD step with optional momentum, in place; torch.optim.SGD's semantics.

    .. code-block:: text

        g = -grad if maximize else grad
        g = g + weight_decay * param
        if momentum != 0:
            buf = g                                         on step 1
                  momentum * buf + (1 - dampening) * g      afterwards
            g = g + momentum * buf if nesterov else buf
        param = param - lr * g

    ``momentum_buffer`` is required (and updated in place) when
    ``momentum != 0``; its contents are ignored on step 1.
    """
    step = _check_step(step)
    lr = _check("lr", lr)
    momentum = _check("momentum", momentum)
    dampening = _check("dampening", dampening, -math.inf)
    weight_decay = _check("weight_decay", weight_decay)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    use_momentum = momentum != 0
    if use_momentum and momentum_buffer is None:
        raise ValueError("sgd_step(momentum != 0) needs momentum_buffer")
    return Update(
        "sgd",
        {"param": param, "grad": grad,
         "momentum_buffer": momentum_buffer if use_momentum else None},
        written={"param", "momentum_buffer"},
        scalars=(_sign(maximize, grad_scale), weight_decay, momentum, 1.0 - dampening, -lr,
                 use_momentum, step == 1, bool(nesterov)))


@_in_place
def rmsprop_step(param, grad, square_avg, *, lr=1e-2, alpha=0.99, eps=1e-8,
                 weight_decay=0.0, momentum=0.0, momentum_buffer=None, centered=False,
                 grad_avg=None, maximize=False, grad_scale=None):
    r"""One RMSprop step (Hinton, 2012; centered: Graves, 2013), in place;
    torch.optim.RMSprop's semantics.

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

    ``grad_avg`` is required when ``centered``; ``momentum_buffer`` when
    ``momentum > 0``. Both start at zero, as in torch.
    """
    lr = _check("lr", lr)
    alpha = _check("alpha", alpha)
    eps = _check("eps", eps)
    weight_decay = _check("weight_decay", weight_decay)
    momentum = _check("momentum", momentum)
    use_momentum = momentum > 0
    if use_momentum and momentum_buffer is None:
        raise ValueError("rmsprop_step(momentum > 0) needs momentum_buffer")
    if centered and grad_avg is None:
        raise ValueError("rmsprop_step(centered=True) needs grad_avg")
    one_minus_alpha = 1.0 - alpha
    return Update(
        "rmsprop",
        {"param": param, "grad": grad, "square_avg": square_avg,
         "grad_avg": grad_avg if centered else None,
         "momentum_buffer": momentum_buffer if use_momentum else None},
        written={"param", "square_avg", "grad_avg", "momentum_buffer"},
        scalars=(_sign(maximize, grad_scale), weight_decay, alpha, one_minus_alpha,
                 one_minus_alpha - 1.0, abs(one_minus_alpha) < 0.5, eps, momentum, -lr,
                 bool(centered), use_momentum))


@_in_place
def adagrad_step(param, grad, state_sum, *, step, lr=1e-2, lr_decay=0.0,
                 weight_decay=0.0, eps=1e-10, maximize=False, grad_scale=None):
    r"""One AdaGrad step (Duchi et al., 2011), in place; torch.optim.Adagrad's semantics.

    .. code-block:: text

        g = -grad if maximize else grad
        g = g + weight_decay * param
        clr = lr / (1 + (step - 1) * lr_decay)
        state_sum = state_sum + g * g
        param = param - clr * g / (sqrt(state_sum) + eps)

    ``state_sum`` starts at torch's ``initial_accumulator_value`` (0 by default).
    """
    step = _check_step(step)
    lr = _check("lr", lr)
    lr_decay = _check("lr_decay", lr_decay)
    weight_decay = _check("weight_decay", weight_decay)
    eps = _check("eps", eps)
    clr = lr / (1 + (step - 1) * lr_decay)
    return Update(
        "adagrad", {"param": param, "grad": grad, "state_sum": state_sum},
        written={"param", "state_sum"},
        scalars=(_sign(maximize, grad_scale), weight_decay, eps, -clr))


@_in_place
def adadelta_step(param, grad, square_avg, acc_delta, *, lr=1.0, rho=0.9, eps=1e-6,
                  weight_decay=0.0, maximize=False, grad_scale=None):
    r"""One Adadelta step (Zeiler, 2012), in place; torch.optim.Adadelta's semantics.

    .. code-block:: text

        g = -grad if maximize else grad
        g = g + weight_decay * param
        square_avg = rho * square_avg + (1 - rho) * g * g
        delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g
        acc_delta = rho * acc_delta + (1 - rho) * delta * delta
        param = param - lr * delta
    """
    lr = _check("lr", lr)
    rho = _check("rho", rho, 0.0, 1.0)
    eps = _check("eps", eps)
    weight_decay = _check("weight_decay", weight_decay)
    return Update(
        "adadelta",
        {"param": param, "grad": grad, "square_avg": square_avg, "acc_delta": acc_delta},
        written={"param", "square_avg", "acc_delta"},
        scalars=(_sign(maximize, grad_scale), weight_decay, rho, 1.0 - rho, eps, -lr))
