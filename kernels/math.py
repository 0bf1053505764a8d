"""Per-element update math, one plain Python function per kernel.

A function's signature is its interface, read by ``loops.py`` and by the
dispatcher: it takes ``param``, ``grad`` and the rule's state arrays (in the
order of the rule's declaration in ``fastadapt/rules.py``) as element values,
then the host-computed scalars by name, flags annotated ``: bool``. It returns
the new ``param`` and the new value of every state array, in that order. A
state array that an option turns off arrives as a placeholder and its result
is not stored, so the function may return it unchanged.

The functions use a small vocabulary bound per target by :func:`compile_with`:
``sqrt``, ``maximum`` and ``where(condition, a, b)``, and the helpers written
here in those terms (``lerp``, ``signum``). Bound to scalar functions they
compile into the CPU and CUDA drivers; bound to NumPy's ufuncs the same source
updates whole arrays.
So a branch on an element value is written with ``where``; ``if`` is for
flags only (uniform over the loop).

The L2 term ``weight_decay * param`` is added only under the flag ``l2``
(``weight_decay != 0``), as torch skips it: ``0 * inf`` would turn an
infinite parameter into NaN.

The order of operations follows torch.optim's single-tensor path (``lerp``
for running means, ``addcmul``'s ``(value * a) * b``, ``addcdiv``'s
``(value * a) / b``) so float32 results round as torch's do wherever torch
does not use fused multiply-adds. No literal numbers appear here: a Python
number mixed with float32 promotes the expression to float64 in Numba.
"""
import math
import types


def signum(x, zero, one):
    """torch.sign on the CPU: -1, 0 or 1, and 0 for NaN (``zero`` and ``one`` are
    the dtype's, from the host)."""
    return where(x > zero, one, where(x < zero, -one, zero))


def lerp(start, end, weight, weight_minus_one, weight_is_small):
    """torch.lerp: ``start + w (end - start)``, computed from ``end`` when w >= 0.5."""
    if weight_is_small:
        return start + weight * (end - start)
    return end + weight_minus_one * (end - start)


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq,
         grad_sign, weight_decay, decay_factor, one_minus_beta1, neg_beta1,
         one_minus_beta1_is_small: bool, beta2, one_minus_beta2, bias_correction2_sqrt,
         eps, neg_step_size, amsgrad: bool, l2: bool):
    """Adam, AdamW and AMSGrad.

    Adam's L2 decay arrives as ``weight_decay``; AdamW's decoupled decay as
    ``decay_factor = 1 - lr * weight_decay`` (with ``weight_decay = 0``).
    ``neg_step_size = -lr / (1 - beta1**t)``.
    """
    g = grad * grad_sign
    p = param * decay_factor
    if l2:
        g = g + weight_decay * p
    m = lerp(exp_avg, g, one_minus_beta1, neg_beta1, one_minus_beta1_is_small)
    v = exp_avg_sq * beta2 + one_minus_beta2 * g * g
    vmax = max_exp_avg_sq
    if amsgrad:
        vmax = maximum(vmax, v)
        denom = sqrt(vmax) / bias_correction2_sqrt + eps
    else:
        denom = sqrt(v) / bias_correction2_sqrt + eps
    return p + neg_step_size * m / denom, m, v, vmax


def sgd(param, grad, momentum_buffer,
        grad_sign, weight_decay, momentum, one_minus_dampening, neg_lr,
        use_momentum: bool, first_step: bool, nesterov: bool, l2: bool):
    """SGD with optional momentum, dampening and Nesterov momentum.

    On the first step the momentum buffer is set to the gradient, as torch does.
    """
    g = grad * grad_sign
    if l2:
        g = g + weight_decay * param
    buf = momentum_buffer
    if use_momentum:
        if first_step:
            buf = g
        else:
            buf = buf * momentum + one_minus_dampening * g
        if nesterov:
            g = g + momentum * buf
        else:
            g = buf
    return param + neg_lr * g, buf


def rmsprop(param, grad, square_avg, grad_avg, momentum_buffer,
            grad_sign, weight_decay, alpha, one_minus_alpha, neg_alpha,
            one_minus_alpha_is_small: bool, eps, momentum, neg_lr,
            centered: bool, use_momentum: bool, l2: bool):
    """RMSprop, plain or centered, with or without momentum."""
    g = grad * grad_sign
    if l2:
        g = g + weight_decay * param
    v = square_avg * alpha + one_minus_alpha * g * g
    ga = grad_avg
    if centered:
        ga = lerp(grad_avg, g, one_minus_alpha, neg_alpha, one_minus_alpha_is_small)
        var = v - ga * ga
        # torch's addcmul(v, ga, ga, value=-1) fuses the multiply-add: when v has
        # overflowed to inf and the square of a finite ga overflows too, it gives
        # inf (an exact product), where the rounded product gives inf - inf = NaN.
        var = where(var != var, where(ga - ga == ga - ga, v, var), var)
        avg = sqrt(var) + eps
    else:
        avg = sqrt(v) + eps
    buf = momentum_buffer
    if use_momentum:
        buf = buf * momentum + g / avg
        p = param + neg_lr * buf
    else:
        p = param + neg_lr * g / avg
    return p, v, ga, buf


def adagrad(param, grad, state_sum, grad_sign, weight_decay, eps, neg_clr, l2: bool):
    """AdaGrad; ``neg_clr = -lr / (1 + (t - 1) * lr_decay)``."""
    g = grad * grad_sign
    if l2:
        g = g + weight_decay * param
    s = state_sum + g * g
    return param + neg_clr * g / (sqrt(s) + eps), s


def adadelta(param, grad, square_avg, acc_delta,
             grad_sign, weight_decay, rho, one_minus_rho, eps, neg_lr, l2: bool):
    """Adadelta."""
    g = grad * grad_sign
    if l2:
        g = g + weight_decay * param
    v = square_avg * rho + one_minus_rho * g * g
    delta = sqrt(acc_delta + eps) / sqrt(v + eps) * g
    u = acc_delta * rho + one_minus_rho * delta * delta
    return param + neg_lr * delta, v, u


def adamax(param, grad, exp_avg, exp_inf,
           grad_sign, weight_decay, one_minus_beta1, neg_beta1,
           one_minus_beta1_is_small: bool, beta2, eps, neg_clr, l2: bool):
    """Adamax; ``neg_clr = -lr / (1 - beta1**t)``."""
    g = grad * grad_sign
    if l2:
        g = g + weight_decay * param
    m = lerp(exp_avg, g, one_minus_beta1, neg_beta1, one_minus_beta1_is_small)
    u = maximum(exp_inf * beta2, abs(g) + eps)
    return param + neg_clr * m / u, m, u


def radam(param, grad, exp_avg, exp_avg_sq,
          grad_sign, weight_decay, decay_factor, one_minus_beta1, neg_beta1,
          one_minus_beta1_is_small: bool, beta2, one_minus_beta2, bias_correction1,
          bias_correction2_sqrt, eps, lr, rect, rectify: bool, l2: bool):
    """RAdam; ``rectify`` is ``rho_t > 5`` and ``rect`` the rectification term."""
    g = grad * grad_sign
    p = param * decay_factor
    if l2:
        g = g + weight_decay * p
    m = lerp(exp_avg, g, one_minus_beta1, neg_beta1, one_minus_beta1_is_small)
    v = exp_avg_sq * beta2 + one_minus_beta2 * g * g
    update = m / bias_correction1 * lr
    if rectify:
        update = update * (bias_correction2_sqrt / (sqrt(v) + eps)) * rect
    return p - update, m, v


def rprop(param, grad, prev, step_size,
          grad_sign, etaminus, etaplus, step_size_min, step_size_max, zero, one):
    """Rprop; ``zero`` and ``one`` are the dtype's, from the host."""
    g = grad * grad_sign
    agree = signum(g * prev, zero, one)
    factor = where(agree > zero, etaplus, where(agree < zero, etaminus, one))
    ss = step_size * factor         # clamped as torch's clamp_: NaN stays NaN
    ss = where(ss < step_size_min, step_size_min, ss)
    ss = where(ss > step_size_max, step_size_max, ss)
    g = where(factor == etaminus, zero, g)
    return param - signum(g, zero, one) * ss, g, ss


def nadam(param, grad, exp_avg, exp_avg_sq,
          grad_sign, weight_decay, decay_factor, one_minus_beta1, neg_beta1,
          one_minus_beta1_is_small: bool, beta2, one_minus_beta2, bias_correction2, eps,
          coef_grad, coef_avg, l2: bool):
    """NAdam; the momentum schedule is in ``coef_grad`` and ``coef_avg`` (host)."""
    g = grad * grad_sign
    p = param * decay_factor
    if l2:
        g = g + weight_decay * p
    m = lerp(exp_avg, g, one_minus_beta1, neg_beta1, one_minus_beta1_is_small)
    v = exp_avg_sq * beta2 + one_minus_beta2 * g * g
    denom = sqrt(v / bias_correction2) + eps
    p = p + coef_grad * g / denom
    return p + coef_avg * m / denom, m, v


def asgd(param, grad, ax, grad_sign, weight_decay, decay, neg_eta, mu,
         average: bool, l2: bool):
    """ASGD; ``decay = 1 - lambd * eta`` and ``neg_eta`` from the scalar state."""
    g = grad * grad_sign
    if l2:
        g = g + weight_decay * param
    p = param * decay
    p = p + neg_eta * g
    a = p
    if average:
        a = ax + (p - ax) * mu
    return p, a


def lion(param, grad, exp_avg, grad_sign, decay_factor, one_minus_beta1, beta1,
         one_minus_beta2, beta2, neg_lr, zero, one):
    """Lion; ``decay_factor = 1 - lr * weight_decay``."""
    g = grad * grad_sign
    c = exp_avg * beta1 + one_minus_beta1 * g
    p = param * decay_factor + neg_lr * signum(c, zero, one)
    return p, exp_avg * beta2 + one_minus_beta2 * g


def sparse_adam(param, grad, exp_avg, exp_avg_sq,
                grad_sign, one_minus_beta1, one_minus_beta2, eps, neg_step_size):
    """SparseAdam over rows present in the gradient, in torch's order:
    ``old += (new - old) * (1 - beta)``, denominator ``sqrt(v) + eps``,
    ``neg_step_size = -lr * sqrt(1 - beta2**t) / (1 - beta1**t)``."""
    g = grad * grad_sign
    m = exp_avg + (g - exp_avg) * one_minus_beta1
    v = exp_avg_sq + (g * g - exp_avg_sq) * one_minus_beta2
    return param + neg_step_size * (m / (sqrt(v) + eps)), m, v


# ----------------------------------------------------------------- vocabulary
def scalar_where(condition, a, b):
    """``a if condition else b`` for one element (both already evaluated)."""
    if condition:
        return a
    return b


HELPERS = ("lerp", "signum")
VOCABULARY = ("sqrt", "maximum", "where")

#: The vocabulary of the compiled scalar targets (CPU and CUDA); the helpers
#: written in Python here are compiled with the target's element jit.
SCALAR_VOCABULARY = {"sqrt": math.sqrt, "maximum": max, "where": scalar_where}


def kernel_names():
    """The names of the kernels: every public function of this module taking ``param``."""
    import inspect
    return tuple(name for name, f in globals().items()
                 if inspect.isfunction(f) and not name.startswith("_")
                 and name not in HELPERS and name not in VOCABULARY
                 and not name.startswith("scalar_") and f.__module__ == __name__
                 and tuple(inspect.signature(f).parameters)[:2] == ("param", "grad"))


def compile_with(decorator, vocabulary, names=None):
    """Compile the helpers and the kernels ``names`` with ``decorator``.

    ``vocabulary`` binds ``sqrt``, ``maximum`` and ``where``; a
    plain Python function in it is compiled with ``decorator`` too (so a
    target's helpers inline like the math). Each function is rebuilt around a
    copy of this module's globals holding the compiled names, so each target
    compiles its own copy from one source. Returns a namespace of compiled
    functions.
    """
    namespace = dict(globals())
    out = {}
    for word in VOCABULARY:
        f = vocabulary[word]
        if isinstance(f, types.FunctionType) and f.__module__ == __name__:
            f = decorator(types.FunctionType(f.__code__, namespace, f.__name__))
        namespace[word] = out[word] = f
    for name in HELPERS + tuple(names if names is not None else kernel_names()):
        f = globals()[name]
        f = types.FunctionType(f.__code__, namespace, name, f.__defaults__, f.__closure__)
        namespace[name] = out[name] = decorator(f)
    return types.SimpleNamespace(**out)
