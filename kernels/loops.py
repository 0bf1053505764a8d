"""The loop drivers, written once for both targets.

Each driver runs one rule over 1-D arrays of one dtype (checked by the
dispatcher): it unpacks ``scalars`` (the rule's host-computed scalars, in the
order below, flags as 0 / 1; a small array on the CPU, a by-value tuple on the
GPU), then for every index loads the element, calls the rule's math and stores
the result. An array for an option that is off (``max_exp_avg_sq`` without
AMSGrad, ...) may be empty: it is touched only under its flag, which is uniform
over the loop, so LLVM unswitches the loop and vectorizes each version (and a
GPU warp never diverges on it).

``indices`` and the math functions are free names here: :func:`build` binds
them per target, ``numba.prange`` and the ``njit`` math for the CPU, a
grid-stride range and the CUDA device math for the GPU.
"""
import types

from . import math as _math

RULES = ("adam", "sgd", "rmsprop", "adagrad", "adadelta")


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, scalars):
    grad_sign, weight_decay, decay_factor = scalars[0], scalars[1], scalars[2]
    one_minus_beta1, neg_beta1 = scalars[3], scalars[4]
    one_minus_beta1_is_small = scalars[5] != 0
    beta2, one_minus_beta2 = scalars[6], scalars[7]
    bias_correction2_sqrt, eps, neg_step_size = scalars[8], scalars[9], scalars[10]
    amsgrad = scalars[11] != 0
    for i in indices(param.size):  # noqa: F821 (bound by build)
        v = exp_avg_sq[i]
        vmax = max_exp_avg_sq[i] if amsgrad else v
        param[i], exp_avg[i], exp_avg_sq[i], vmax = adam_math(  # noqa: F821
            param[i], grad[i], exp_avg[i], v, vmax,
            grad_sign, weight_decay, decay_factor, one_minus_beta1, neg_beta1,
            one_minus_beta1_is_small, beta2, one_minus_beta2,
            bias_correction2_sqrt, eps, neg_step_size, amsgrad)
        if amsgrad:
            max_exp_avg_sq[i] = vmax


def sgd(param, grad, momentum_buffer, scalars):
    grad_sign, weight_decay, momentum = scalars[0], scalars[1], scalars[2]
    one_minus_dampening, neg_lr = scalars[3], scalars[4]
    use_momentum, first_step, nesterov = scalars[5] != 0, scalars[6] != 0, scalars[7] != 0
    for i in indices(param.size):  # noqa: F821
        g = grad[i]
        buf = momentum_buffer[i] if use_momentum else g
        param[i], buf = sgd_math(  # noqa: F821
            param[i], g, buf, grad_sign, weight_decay, momentum,
            one_minus_dampening, neg_lr, use_momentum, first_step, nesterov)
        if use_momentum:
            momentum_buffer[i] = buf


def rmsprop(param, grad, square_avg, grad_avg, momentum_buffer, scalars):
    grad_sign, weight_decay, alpha = scalars[0], scalars[1], scalars[2]
    one_minus_alpha, neg_alpha = scalars[3], scalars[4]
    one_minus_alpha_is_small = scalars[5] != 0
    eps, momentum, neg_lr = scalars[6], scalars[7], scalars[8]
    centered, use_momentum = scalars[9] != 0, scalars[10] != 0
    for i in indices(param.size):  # noqa: F821
        v = square_avg[i]
        ga = grad_avg[i] if centered else v
        buf = momentum_buffer[i] if use_momentum else v
        param[i], square_avg[i], ga, buf = rmsprop_math(  # noqa: F821
            param[i], grad[i], v, ga, buf, grad_sign, weight_decay, alpha,
            one_minus_alpha, neg_alpha, one_minus_alpha_is_small, eps,
            momentum, neg_lr, centered, use_momentum)
        if centered:
            grad_avg[i] = ga
        if use_momentum:
            momentum_buffer[i] = buf


def adagrad(param, grad, state_sum, scalars):
    grad_sign, weight_decay, eps, neg_clr = scalars[0], scalars[1], scalars[2], scalars[3]
    for i in indices(param.size):  # noqa: F821
        param[i], state_sum[i] = adagrad_math(  # noqa: F821
            param[i], grad[i], state_sum[i], grad_sign, weight_decay, eps, neg_clr)


def adadelta(param, grad, square_avg, acc_delta, scalars):
    grad_sign, weight_decay, rho = scalars[0], scalars[1], scalars[2]
    one_minus_rho, eps, neg_lr = scalars[3], scalars[4], scalars[5]
    for i in indices(param.size):  # noqa: F821
        param[i], square_avg[i], acc_delta[i] = adadelta_math(  # noqa: F821
            param[i], grad[i], square_avg[i], acc_delta[i],
            grad_sign, weight_decay, rho, one_minus_rho, eps, neg_lr)


def build(element_jit, indices, module):
    """The drivers for one target, as plain Python functions to compile.

    ``element_jit`` compiles the per-element math (e.g. ``njit(inline="always")``),
    ``indices(n)`` yields the indices this target's thread visits, and
    ``module`` is the target module's name, recorded in the drivers'
    ``__module__`` and ``__qualname__`` (``cpu.adam``) so each target's
    drivers get cache files of their own. Returns
    ``(math, drivers)``: the compiled math as a namespace and a dict
    rule name -> driver.
    """
    math = _math.compile_with(element_jit)
    namespace = dict(globals(), indices=indices,
                     **{f"{rule}_math": getattr(math, rule) for rule in RULES})
    drivers = {}
    for rule in RULES:
        source = globals()[rule]
        driver = types.FunctionType(source.__code__, namespace, rule)
        driver.__module__ = module
        driver.__qualname__ = f"{module.rpartition('.')[2]}.{rule}"
        drivers[rule] = driver
    return math, drivers
