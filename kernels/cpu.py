"""CPU loop drivers: one ``prange`` loop per rule around the shared math.

Each driver takes 1-D C-contiguous arrays of one dtype (the dispatcher has
checked them) and ``scalars``, a 1-D array of that dtype holding the rule's
host-computed scalars in the order unpacked below (flags as 0 / 1). An array
for an option that is off (``max_exp_avg_sq`` without AMSGrad, ...) may be
empty: it is touched only under its flag, which is uniform over the loop, so
LLVM unswitches the loop and vectorizes each version.

Every driver is compiled twice from one source: ``DRIVERS[name].parallel``
(``parallel=True``) and ``.serial`` (one thread, no pool wake-up) for arrays
below ``SERIAL_BELOW`` elements. The serial copy gets its own qualified name so
the two do not overwrite each other in Numba's on-disk cache. That cache is
invalidated by edits to ``math.py`` as well as to this file (Numba alone would
only watch this file and keep serving kernels built from stale math).
"""
import os
import types

from numba import njit, prange
from numba.core import caching

from . import math as _math

if __name__ != "fastadapt.kernels.cpu":
    # From the repository root ``kernels`` is also importable as a top-level
    # package, but Numba's on-disk cache is keyed by source file, not module,
    # and a kernel cached under "kernels.cpu" fails to load (ModuleNotFoundError)
    # in every later process where only fastadapt is importable.
    raise ImportError(f"import this module as fastadapt.kernels.cpu, not {__name__}")

# Measured on 2 cores (python -m bench.threshold): the parallel region costs
# about 2 us more than a serial loop, which the serial loop's lack of SIMD
# repays at a few hundred elements.
SERIAL_BELOW = 512

_elem = _math.compile_with(njit(inline="always"))
_adam, _sgd, _rmsprop = _elem.adam, _elem.sgd, _elem.rmsprop
_adagrad, _adadelta = _elem.adagrad, _elem.adadelta


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, scalars):
    grad_sign, weight_decay, decay_factor = scalars[0], scalars[1], scalars[2]
    one_minus_beta1, neg_beta1 = scalars[3], scalars[4]
    one_minus_beta1_is_small = scalars[5] != 0
    beta2, one_minus_beta2 = scalars[6], scalars[7]
    bias_correction2_sqrt, eps, neg_step_size = scalars[8], scalars[9], scalars[10]
    amsgrad = scalars[11] != 0
    for i in prange(param.size):
        v = exp_avg_sq[i]
        vmax = max_exp_avg_sq[i] if amsgrad else v
        param[i], exp_avg[i], exp_avg_sq[i], vmax = _adam(
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
    for i in prange(param.size):
        g = grad[i]
        buf = momentum_buffer[i] if use_momentum else g
        param[i], buf = _sgd(
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
    for i in prange(param.size):
        v = square_avg[i]
        ga = grad_avg[i] if centered else v
        buf = momentum_buffer[i] if use_momentum else v
        param[i], square_avg[i], ga, buf = _rmsprop(
            param[i], grad[i], v, ga, buf, grad_sign, weight_decay, alpha,
            one_minus_alpha, neg_alpha, one_minus_alpha_is_small, eps,
            momentum, neg_lr, centered, use_momentum)
        if centered:
            grad_avg[i] = ga
        if use_momentum:
            momentum_buffer[i] = buf


def adagrad(param, grad, state_sum, scalars):
    grad_sign, weight_decay, eps, neg_clr = scalars[0], scalars[1], scalars[2], scalars[3]
    for i in prange(param.size):
        param[i], state_sum[i] = _adagrad(
            param[i], grad[i], state_sum[i], grad_sign, weight_decay, eps, neg_clr)


def adadelta(param, grad, square_avg, acc_delta, scalars):
    grad_sign, weight_decay, rho = scalars[0], scalars[1], scalars[2]
    one_minus_rho, eps, neg_lr = scalars[3], scalars[4], scalars[5]
    for i in prange(param.size):
        param[i], square_avg[i], acc_delta[i] = _adadelta(
            param[i], grad[i], square_avg[i], acc_delta[i],
            grad_sign, weight_decay, rho, one_minus_rho, eps, neg_lr)


def _renamed(func, suffix):
    copy = types.FunctionType(func.__code__, func.__globals__, func.__name__ + suffix,
                              func.__defaults__, func.__closure__)
    copy.__qualname__ = func.__qualname__ + suffix
    copy.__module__ = func.__module__
    return copy


def _watching_math(locator_class):
    class Locator(locator_class):
        def get_source_stamp(self):
            st = os.stat(_math.__file__)
            return super().get_source_stamp(), st.st_mtime, st.st_size
    Locator.__name__ = locator_class.__name__
    return Locator


class _CacheImpl(caching.CompileResultCacheImpl):
    _locator_classes = [_watching_math(c)
                        for c in caching.CompileResultCacheImpl._locator_classes]


class _KernelCache(caching.FunctionCache):
    _impl_class = _CacheImpl


def _cached(dispatcher):
    dispatcher._cache = _KernelCache(dispatcher.py_func)  # what cache=True does, but watching math.py
    return dispatcher


def _compile(func):
    return types.SimpleNamespace(
        parallel=_cached(njit(parallel=True, nogil=True)(func)),
        serial=_cached(njit(nogil=True)(_renamed(func, "_serial"))),
    )


DRIVERS = {f.__name__: _compile(f) for f in (adam, sgd, rmsprop, adagrad, adadelta)}
