"""The NumPy rivals: each update written the way a careful NumPy user would.

A rule without a hand-written rival here gets one derived from its math
(:func:`derived_step`), so a new rule needs no entry in this file.

In-place ufuncs with ``out=`` and a couple of temporaries, one pass over
memory per ufunc; the same signatures, defaults and semantics as
:mod:`fastadapt.functional` (``tests/test_benchmark.py`` checks that each
computes fastadapt's update), so the benchmark compares like with like.

``scratch`` is an optional sequence of (up to three) arrays of the
parameter's shape and dtype used as the temporaries. The benchmark passes
buffers allocated once, so it measures the passes over memory and not the
allocator; without ``scratch`` they are allocated per call, as a casual user's
code would.

These are benchmark rivals, not references for correctness: the tests'
independent oracles are torch.optim and ``tests/naive.py``.
"""
import math

import numpy as np


def _temporaries(scratch, like, count):
    if scratch is None:
        return [np.empty_like(like) for _ in range(count)]
    if len(scratch) < count:
        raise ValueError(f"need {count} scratch arrays, got {len(scratch)}")
    return list(scratch[:count])


def _effective_grad(param, grad, weight_decay, maximize, t0, t1):
    """``-grad`` if maximize, plus ``weight_decay * param``: a view or a temporary."""
    g = grad
    if maximize:
        g = np.negative(grad, out=t0)
    if weight_decay:
        np.multiply(param, weight_decay, out=t1)
        g = np.add(g, t1, out=t0)
    return g


def _adam(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay, amsgrad,
          max_exp_avg_sq, maximize, decoupled, scratch):
    beta1, beta2 = betas
    t0, t1 = _temporaries(scratch, param, 2)
    if decoupled:
        param *= 1 - lr * weight_decay
        g = _effective_grad(param, grad, 0.0, maximize, t0, t1)
    else:
        g = _effective_grad(param, grad, weight_decay, maximize, t0, t1)
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    exp_avg *= beta1                                   # m = b1 m + (1 - b1) g
    exp_avg += np.multiply(g, 1 - beta1, out=t1)
    exp_avg_sq *= beta2                                # v = b2 v + (1 - b2) g^2
    np.multiply(g, g, out=t1)
    t1 *= 1 - beta2
    exp_avg_sq += t1
    v = exp_avg_sq
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        v = max_exp_avg_sq
    denom = np.sqrt(v, out=t1)                         # sqrt(v) / sqrt(bc2) + eps
    denom /= math.sqrt(bias_correction2)
    denom += eps
    update = np.divide(exp_avg, denom, out=t1)         # p -= lr / bc1 * m / denom
    update *= lr / bias_correction1
    param -= update


def adam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999),
              eps=1e-8, weight_decay=0.0, amsgrad=False, max_exp_avg_sq=None,
              maximize=False, scratch=None):
    """Adam in NumPy; :func:`fastadapt.adam_step`'s semantics."""
    _adam(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay, amsgrad,
          max_exp_avg_sq, maximize, False, scratch)


def adamw_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999),
               eps=1e-8, weight_decay=1e-2, amsgrad=False, max_exp_avg_sq=None,
               maximize=False, scratch=None):
    """AdamW in NumPy; :func:`fastadapt.adamw_step`'s semantics."""
    _adam(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay, amsgrad,
          max_exp_avg_sq, maximize, True, scratch)


def sgd_step(param, grad, momentum_buffer=None, *, step, lr=1e-3, momentum=0.0,
             dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False, scratch=None):
    """SGD with momentum in NumPy; :func:`fastadapt.sgd_step`'s semantics."""
    t0, t1 = _temporaries(scratch, param, 2)
    g = _effective_grad(param, grad, weight_decay, maximize, t0, t1)
    if momentum != 0:
        buf = momentum_buffer
        if step == 1:
            np.copyto(buf, g)
        else:
            buf *= momentum
            if dampening:
                buf += np.multiply(g, 1 - dampening, out=t1)
            else:
                buf += g
        if nesterov:
            g = np.add(g, np.multiply(buf, momentum, out=t1), out=t0)
        else:
            g = buf
    param -= np.multiply(g, lr, out=t1)


def rmsprop_step(param, grad, square_avg, *, lr=1e-2, alpha=0.99, eps=1e-8,
                 weight_decay=0.0, momentum=0.0, momentum_buffer=None, centered=False,
                 grad_avg=None, maximize=False, scratch=None):
    """RMSprop in NumPy; :func:`fastadapt.rmsprop_step`'s semantics."""
    t0, t1 = _temporaries(scratch, param, 2)
    g = _effective_grad(param, grad, weight_decay, maximize, t0, t1)
    square_avg *= alpha                                # v = a v + (1 - a) g^2
    np.multiply(g, g, out=t1)
    t1 *= 1 - alpha
    square_avg += t1
    if centered:
        grad_avg *= alpha                              # ga = a ga + (1 - a) g
        grad_avg += np.multiply(g, 1 - alpha, out=t1)
        np.multiply(grad_avg, grad_avg, out=t1)        # avg = sqrt(v - ga^2) + eps
        avg = np.subtract(square_avg, t1, out=t1)
        np.sqrt(avg, out=avg)
    else:
        avg = np.sqrt(square_avg, out=t1)
    avg += eps
    if momentum > 0:
        momentum_buffer *= momentum                    # buf = mu buf + g / avg
        momentum_buffer += np.divide(g, avg, out=avg)
        param -= np.multiply(momentum_buffer, lr, out=t1)
    else:
        update = np.divide(g, avg, out=avg)
        update *= lr
        param -= update


def adagrad_step(param, grad, state_sum, *, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 eps=1e-10, maximize=False, scratch=None):
    """AdaGrad in NumPy; :func:`fastadapt.adagrad_step`'s semantics."""
    t0, t1 = _temporaries(scratch, param, 2)
    g = _effective_grad(param, grad, weight_decay, maximize, t0, t1)
    clr = lr / (1 + (step - 1) * lr_decay)
    state_sum += np.multiply(g, g, out=t1)             # sum += g^2
    std = np.sqrt(state_sum, out=t1)                   # p -= clr * g / (sqrt(sum) + eps)
    std += eps
    update = np.divide(g, std, out=t1)
    update *= clr
    param -= update


def adadelta_step(param, grad, square_avg, acc_delta, *, lr=1.0, rho=0.9, eps=1e-6,
                  weight_decay=0.0, maximize=False, scratch=None):
    """Adadelta in NumPy; :func:`fastadapt.adadelta_step`'s semantics."""
    t0, t1, t2 = _temporaries(scratch, param, 3)
    g = _effective_grad(param, grad, weight_decay, maximize, t0, t1)
    square_avg *= rho                                  # v = rho v + (1 - rho) g^2
    np.multiply(g, g, out=t1)
    t1 *= 1 - rho
    square_avg += t1
    std = np.add(square_avg, eps, out=t1)              # delta = sqrt(u + eps) / sqrt(v + eps) g
    np.sqrt(std, out=std)
    delta = np.add(acc_delta, eps, out=t2)
    np.sqrt(delta, out=delta)
    delta /= std
    delta *= g
    acc_delta *= rho                                   # u = rho u + (1 - rho) delta^2
    np.multiply(delta, delta, out=t1)
    t1 *= 1 - rho
    acc_delta += t1
    delta *= lr                                        # p -= lr delta
    param -= delta


def derived_step(rule):
    """The NumPy rival of any rule: its math (``kernels/math.py``) evaluated on
    whole arrays, with NumPy's ufuncs for the math's vocabulary, and the host
    scalars of its functional step.

    Every operation is one ufunc pass allocating its result, as plain NumPy
    code would be written; ``scratch`` is accepted and ignored. The rules
    with a hand-written rival (:data:`CAREFUL`) avoid those allocations.
    """
    from ..functional import _SIGNATURES, step_for
    kernel = _numpy_math(rule.kernel)
    signature = _SIGNATURES[rule.kernel]

    def step(param, grad, *args, scratch=None, **kwargs):
        update = step_for(rule).plan(param, grad, *args, **kwargs)
        if param.size == 0:
            return update.state
        arrays = update.arrays
        cast = param.dtype.type
        scalars = [bool(x) if name in signature.flags else cast(x)
                   for name, x in zip(signature.scalars, update.scalars)]
        elements = [arrays[n] if arrays[n] is not None else param
                    for n in signature.elements]
        out = kernel(*elements, *scalars)
        for name, value in zip(("param",) + rule.state, out):
            if arrays[name] is not None:
                arrays[name][...] = value
        return update.state
    step.__name__ = f"{rule.name}_step"
    step.__doc__ = f"{rule.torch_name} in NumPy, derived from its math; " \
                   f":func:`fastadapt.{rule.name}_step`'s semantics."
    return step


def _numpy_math(kernel):
    from ..kernels import math
    vocabulary = {"sqrt": np.sqrt, "maximum": np.maximum, "where": np.where}
    return getattr(math.compile_with(lambda f: f, vocabulary, names=(kernel,)), kernel)


#: rule name -> hand-written NumPy step (in-place ufuncs, reusable scratch)
CAREFUL = {"adam": adam_step, "adamw": adamw_step, "sgd": sgd_step,
           "rmsprop": rmsprop_step, "adagrad": adagrad_step, "adadelta": adadelta_step}


def _numpy_steps():
    from ..rules import RULES
    return {name: CAREFUL.get(name) or derived_step(rule) for name, rule in RULES.items()}


#: rule name (as in :data:`fastadapt.RULES`) -> NumPy step: the hand-written
#: one where there is one, else derived from the rule's math
NUMPY_STEPS = _numpy_steps()

#: scratch arrays a step may use
SCRATCH_ARRAYS = 3
