"""Per-element update math, one plain Python function per rule.

Each function takes the current values of one element (parameter, gradient and
state) plus host-computed scalars of the same dtype, and returns the new values.
The CPU driver compiles them with ``numba.njit(inline="always")`` and the CUDA
driver with ``numba.cuda.jit(device=True)``; neither driver knows the algorithm.

The order of operations follows torch.optim's single-tensor path (``lerp`` for
running means, ``addcmul``'s ``(value * a) * b``, ``addcdiv``'s
``(value * a) / b``) so float32 results round as torch's do wherever torch does
not use fused multiply-adds. No literal numbers appear here: a Python number
mixed with float32 promotes the expression to float64 in Numba.
"""
import math


def lerp(start, end, weight, weight_minus_one, weight_is_small):
    """torch.lerp: ``start + w (end - start)``, computed from ``end`` when w >= 0.5."""
    if weight_is_small:
        return start + weight * (end - start)
    return end + weight_minus_one * (end - start)


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq,
         grad_sign, weight_decay, decay_factor, one_minus_beta1, neg_beta1,
         one_minus_beta1_is_small, beta2, one_minus_beta2, bias_correction2_sqrt, eps,
         neg_step_size, amsgrad):
    """Adam, AdamW and AMSGrad.

    Adam's L2 decay arrives as ``weight_decay``; AdamW's decoupled decay as
    ``decay_factor = 1 - lr * weight_decay`` (with ``weight_decay = 0``).
    ``neg_step_size = -lr / (1 - beta1**t)``.
    """
    g = grad * grad_sign
    p = param * decay_factor
    g = g + weight_decay * p
    m = lerp(exp_avg, g, one_minus_beta1, neg_beta1, one_minus_beta1_is_small)
    v = exp_avg_sq * beta2 + one_minus_beta2 * g * g
    vmax = max_exp_avg_sq
    if amsgrad:
        vmax = max(vmax, v)
        denom = math.sqrt(vmax) / bias_correction2_sqrt + eps
    else:
        denom = math.sqrt(v) / bias_correction2_sqrt + eps
    return p + neg_step_size * m / denom, m, v, vmax


def sgd(param, grad, momentum_buffer,
        grad_sign, weight_decay, momentum, one_minus_dampening, neg_lr,
        use_momentum, first_step, nesterov):
    """SGD with optional momentum, dampening and Nesterov momentum.

    On the first step the momentum buffer is set to the gradient, as torch does.
    """
    g = grad * grad_sign
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
            one_minus_alpha_is_small, eps, momentum, neg_lr, centered, use_momentum):
    """RMSprop, plain or centered, with or without momentum."""
    g = grad * grad_sign
    g = g + weight_decay * param
    v = square_avg * alpha + one_minus_alpha * g * g
    ga = grad_avg
    if centered:
        ga = lerp(grad_avg, g, one_minus_alpha, neg_alpha, one_minus_alpha_is_small)
        avg = math.sqrt(v - ga * ga) + eps
    else:
        avg = math.sqrt(v) + eps
    buf = momentum_buffer
    if use_momentum:
        buf = buf * momentum + g / avg
        p = param + neg_lr * buf
    else:
        p = param + neg_lr * g / avg
    return p, v, ga, buf


def adagrad(param, grad, state_sum, grad_sign, weight_decay, eps, neg_clr):
    """AdaGrad; ``neg_clr = -lr / (1 + (t - 1) * lr_decay)``."""
    g = grad * grad_sign
    g = g + weight_decay * param
    s = state_sum + g * g
    return param + neg_clr * g / (math.sqrt(s) + eps), s


def adadelta(param, grad, square_avg, acc_delta,
             grad_sign, weight_decay, rho, one_minus_rho, eps, neg_lr):
    """Adadelta."""
    g = grad * grad_sign
    g = g + weight_decay * param
    v = square_avg * rho + one_minus_rho * g * g
    delta = math.sqrt(acc_delta + eps) / math.sqrt(v + eps) * g
    u = acc_delta * rho + one_minus_rho * delta * delta
    return param + neg_lr * delta, v, u


RULES = (adam, sgd, rmsprop, adagrad, adadelta)


def compile_with(decorator):
    """Compile ``lerp`` and every rule with ``decorator`` (a Numba jit).

    Returns a namespace of compiled functions. Each rule is rebuilt around a
    copy of this module's globals in which ``lerp`` is the compiled helper, so
    the CPU and CUDA targets can each compile their own copy from one source.
    """
    import types

    compiled_lerp = decorator(lerp)
    namespace = dict(globals(), lerp=compiled_lerp)
    out = {"lerp": compiled_lerp}
    for rule in RULES:
        code = types.FunctionType(rule.__code__, namespace, rule.__name__,
                                  rule.__defaults__, rule.__closure__)
        out[rule.__name__] = decorator(code)
    return types.SimpleNamespace(**out)
