"""CUDA loop drivers: one grid-stride kernel per rule around the shared math.

Each kernel takes the same 1-D arrays as its twin in ``cpu.py`` (device arrays
of one dtype, checked by the dispatcher; an option's unused state may be an
empty array, touched only under its flag) and ``scalars``, a tuple of NumPy
scalars of the arrays' dtype in the order unpacked below (flags as 0 / 1). A
tuple is passed by value in the launch's parameter buffer: no host-to-device
copy, no synchronisation. A flag is uniform over the grid, so its branch never
diverges within a warp.

Indices are 64-bit: ``cuda.grid(1)`` and ``cuda.gridsize(1)`` sign-extend
thread and block numbers to int64 before multiplying, so arrays of 2**31 or
more elements are addressed correctly.

The per-element math is ``math.py`` compiled as CUDA device functions and
inlined (``forceinline``). NVVM contracts ``a * b + c`` into fused
multiply-adds by default, so float32 results may differ from the CPU's in the
last bits (float64 too, far below any tolerance); torch's CUDA kernels do the
same. Kernels compile lazily, once per dtype, and are cached on disk.
"""
from numba import cuda

from . import math as _math

try:  # numba-cuda keeps its own config; older versions shared Numba's
    from numba.cuda.core.config import ENABLE_CUDASIM as SIMULATOR
except ImportError:
    from numba.config import ENABLE_CUDASIM as SIMULATOR

# A grid-stride loop over at most BLOCKS_PER_SM blocks of THREADS_PER_BLOCK
# threads per multiprocessor: 8 x 256 = 2048 threads, as many as an SM of
# Volta, Ampere or Hopper keeps resident, so one wave covers the GPU and each
# thread loops over the rest. Tests shrink both to run many blocks and many
# strides on tiny arrays.
THREADS_PER_BLOCK = 256
BLOCKS_PER_SM = 8

# The simulator's jit takes no ``forceinline``; it runs the Python source.
_device = (cuda.jit(device=True) if SIMULATOR
           else cuda.jit(device=True, forceinline=True))
_elem = _math.compile_with(_device)
_adam, _sgd, _rmsprop = _elem.adam, _elem.sgd, _elem.rmsprop
_adagrad, _adadelta = _elem.adagrad, _elem.adadelta


def launch_config(n, multiprocessors):
    """``(blocks, threads)`` for ``n`` elements on a GPU with that many SMs."""
    threads = THREADS_PER_BLOCK
    blocks = min(-(-n // threads), multiprocessors * BLOCKS_PER_SM)
    return max(blocks, 1), threads


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, scalars):
    grad_sign, weight_decay, decay_factor = scalars[0], scalars[1], scalars[2]
    one_minus_beta1, neg_beta1 = scalars[3], scalars[4]
    one_minus_beta1_is_small = scalars[5] != 0
    beta2, one_minus_beta2 = scalars[6], scalars[7]
    bias_correction2_sqrt, eps, neg_step_size = scalars[8], scalars[9], scalars[10]
    amsgrad = scalars[11] != 0
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
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
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
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
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
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
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        param[i], state_sum[i] = _adagrad(
            param[i], grad[i], state_sum[i], grad_sign, weight_decay, eps, neg_clr)


def adadelta(param, grad, square_avg, acc_delta, scalars):
    grad_sign, weight_decay, rho = scalars[0], scalars[1], scalars[2]
    one_minus_rho, eps, neg_lr = scalars[3], scalars[4], scalars[5]
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        param[i], square_avg[i], acc_delta[i] = _adadelta(
            param[i], grad[i], square_avg[i], acc_delta[i],
            grad_sign, weight_decay, rho, one_minus_rho, eps, neg_lr)


KERNELS = {f.__name__: cuda.jit(cache=True)(f)
           for f in (adam, sgd, rmsprop, adagrad, adadelta)}
