"""Global gradient norms in one read-only pass: the first half of a fused step.

A mixed-precision step in torch runs ``GradScaler.unscale_`` (reads and writes
every gradient), ``clip_grad_norm_`` (reads them for the norm, then reads and
writes them to scale) and the update. fastadapt needs only this norm pass,
which reads each gradient once (4 bytes per float32 element); the unscale
factor and the clipping coefficient are folded into the update's gradient
scalar (``grad_scale=`` of every functional step), and the update skips the
step when the norm is not finite.

How the sum is taken (see ``fastadapt/kernels/reduce.py``): each array is cut
into fixed chunks of ``2**14`` elements; each chunk's sum of squares is
accumulated in float64 in a fixed order, on the CPU (``prange`` over chunks)
or the GPU (one block per chunk); the chunk partials are added on the host
exactly, in a 68-limb integer accumulator (``kernels.reduce.add_exactly``:
as exact as ``math.fsum`` and 8x quicker on 1,024 partials), and the sum
rounded once. So the result does not depend on the thread count, the GPU's
size or the order of the partials or arrays, the CPU and the simulated GPU
give the same bits, and the relative error of the norm is
below ``1e-14`` whatever the size (every addend is non-negative, and a chunk
adds at most 72 roundings).
"""
import functools
import math

import numpy as np

from . import _pool
from ._arrays import is_device_array as _is_device_array
from ._dispatch import _PARALLEL_LAUNCH, _check_host_array
from .kernels import reduce as _reduce

__all__ = ["grad_norm"]


def grad_norm(*grads, grad_scale=None):
    r"""The global L2 norm of any number of arrays, in one read-only pass each.

    .. code-block:: text

        sqrt(sum over every array g, every element x of g: x**2) / grad_scale

    as ``torch.nn.utils.clip_grad_norm_`` computes its ``total_norm`` (the
    2-norm of the per-array 2-norms is the same number), of the unscaled
    gradients when ``grad_scale`` (a loss scale) is given.

    Parameters
    ----------
    *grads : arrays
        float32 or float64 (they may differ), C-contiguous, any shape; NumPy
        arrays or GPU arrays (``__cuda_array_interface__``: Numba, CuPy, torch
        CUDA tensors), all on the host or all on one GPU. Only read. Also
        bfloat16 (ml_dtypes, torch) and float16, read as 2 bytes per
        element and widened exactly in the kernel (the same bits as the norm
        of a float32 copy).
    grad_scale : float, optional
        Finite and > 0: the result is divided by it.

    Returns
    -------
    float
        The norm; ``nan`` if any element is NaN, else ``inf`` if any element is
        infinite (so ``not math.isfinite(norm)`` is GradScaler's ``found_inf``),
        ``0.0`` for no arrays or only empty ones. Squares are summed in float64,
        so float32 input cannot overflow; float64 elements beyond ``~1e154``
        overflow to ``inf`` as in torch.

    Raises
    ------
    TypeError, ValueError
        For an argument that is not a supported array (naming it, e.g.
        ``grads[2]``), a mix of host and GPU arrays, arrays on two GPUs, or a
        bad ``grad_scale``.

    Notes
    -----
    Each array's chunks are summed in float64 and the chunk sums added
    exactly (in an integer accumulator), so the result is the same for any
    thread count and on the CPU and GPU; its relative error is below ``1e-14`` at any size.
    On the GPU the call waits for the reduction (it returns a number); it is
    queued on the stream of the first array's library.
    """
    scale = check_grad_scale(grad_scale)
    passes = [SumOfSquares(g, f"grads[{i}]") for i, g in enumerate(grads)]
    on_gpu = {p.name: p.device for p in passes}
    if len(set(d is None for d in on_gpu.values())) > 1:
        host = [n for n, d in on_gpu.items() if d is None]
        gpu = [n for n, d in on_gpu.items() if d is not None]
        raise ValueError(f"mix of host and GPU arrays: {', '.join(host)} on the host, "
                         f"{', '.join(gpu)} on the GPU")
    ordinals = {d for d in on_gpu.values() if d is not None} - {-1}
    if len(ordinals) > 1:
        where = ", ".join(f"{n} on GPU {d}" for n, d in on_gpu.items() if d not in (None, -1))
        raise ValueError(f"arrays on different GPUs: {where}")
    return norm_of(p() for p in passes) / scale


def clipped_scale(norm, max_grad_norm, grad_scale=1.0):
    """``grad_scale`` with ``torch.nn.utils.clip_grad_norm_``'s coefficient
    folded in: the kernel divides the gradients by the result, so they are
    unscaled and multiplied by ``min(1, max_grad_norm / (norm + 1e-6))`` in one
    go. ``norm`` is the norm of the unscaled gradients."""
    clip_coef = max_grad_norm / (norm + 1e-6)
    return grad_scale / clip_coef if clip_coef < 1.0 else grad_scale


def check_grad_scale(grad_scale):
    """``grad_scale`` as a float (1.0 for None); TypeError / ValueError unless
    it is a finite number > 0."""
    if grad_scale is None:
        return 1.0
    if isinstance(grad_scale, bool):
        raise TypeError(f"grad_scale must be a real number, got {grad_scale!r}")
    try:
        scale = float(grad_scale)
    except (TypeError, ValueError):
        raise TypeError(f"grad_scale must be a real number, got {grad_scale!r}") from None
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"invalid grad_scale: {grad_scale!r} (must be finite and > 0)")
    return scale


#: Partials :func:`norm_of` adds into one set of limbs before it moves them
#: into a Python int (``kernels.reduce.add_exactly``'s headroom).
_PARTIALS_PER_FLUSH = 2 ** 29


def norm_of(partials):
    """``sqrt`` of the exact sum of several arrays of non-negative float64
    partials, correctly rounded: NaN if any is NaN, else inf if any is inf or
    the sum overflows. Exact, so the order of the arrays and of their
    elements does not matter."""
    limbs = np.zeros(_reduce.LIMBS, np.int64)
    integer, held, special = 0, 0, 0.0
    for array in partials:
        for lo in range(0, array.size, _PARTIALS_PER_FLUSH):
            part = array[lo:lo + _PARTIALS_PER_FLUSH]
            if held + part.size > _PARTIALS_PER_FLUSH:
                integer += _reduce.limbs_integer(limbs)
                limbs[:], held = 0, 0
            s = _reduce.ADD_EXACTLY(part, limbs)
            held += part.size
            if s != 0.0 and not math.isnan(special):
                special = s
    if special != 0.0:
        return special          # sqrt(inf) = inf, sqrt(nan) = nan
    try:
        total = _reduce.exact_float(integer + _reduce.limbs_integer(limbs))
    except OverflowError:       # finite partials whose sum exceeds float64
        return math.inf
    return math.sqrt(total)


class SumOfSquares:
    """One checked read-only pass over an array: ``pass_()`` returns its chunk
    partials (a float64 NumPy array) and reads the array's current values.

    ``segments`` (``(offset, size)`` pairs into the flattened array) restricts
    the sum to those elements: a flat buffer's arrays without its padding.
    The checks and the chunk bounds are made once, here.

    Attributes
    ----------
    name : str
        The argument's name in error messages.
    device : None or int
        None on the host, the GPU's ordinal on a GPU (-1: an empty GPU array,
        whose device is unknown).
    """

    def __init__(self, array, name="grad", segments=None):
        self.name = name
        if _is_device_array(array):
            self.device, self._run = _gpu_pass(array, name, segments)
            return
        self.device = None
        if isinstance(array, np.ndarray) and not array.flags.c_contiguous:
            raise ValueError(f"{name} is not C-contiguous; pass a contiguous array "
                             "(e.g. from numpy.ascontiguousarray)")
        _check_host_array(name, array, writes=False)
        flat = array.reshape(-1)
        kernels = _reduce.sum_of_squares_kernels(flat.dtype)
        # bfloat16 / float16: the kernels read the bit patterns
        values = flat.view(np.uint16) if flat.dtype.itemsize == 2 else flat
        starts, stops = (_whole_array_chunks(flat.size) if segments is None
                         else _reduce.chunks(flat.size, segments))
        out = np.empty(starts.size, np.float64)
        if starts.size == 0:
            self._run = lambda: out
        elif (starts.size < _reduce.SERIAL_BELOW_CHUNKS
              or flat.size < _reduce.SERIAL_BELOW_CHUNKS * _reduce.CHUNK):
            # little work, however many chunks (a model of many small
            # tensors has a chunk per tensor): waking the pool costs more
            serial = kernels.serial

            def run():
                serial(values, starts, stops, out)
                return out
            self._run = run
        else:
            # the partials do not depend on the thread count, so a mid-size
            # pass may run serially where the pool would start late (_pool)
            choice = _pool.choice_for(kernels, flat.size)
            if choice is not None:
                loop = _pool.timed(choice, kernels.serial, kernels.parallel,
                                   _PARALLEL_LAUNCH, flat.size)
            else:
                parallel = kernels.parallel

                def loop(*args):
                    with _PARALLEL_LAUNCH:
                        parallel(*args)

            def run():
                loop(values, starts, stops, out)
                return out
            self._run = run

    def __call__(self):
        return self._run()


@functools.lru_cache(maxsize=32)
def _whole_array_chunks(n):
    """``kernels.reduce.chunks(n)``, kept for the next pass over an array of
    ``n`` elements (the kernels only read the bounds)."""
    return _reduce.chunks(n)


def _gpu_pass(array, name, segments):
    from . import _cuda
    cuda = _cuda._numba_cuda()
    simulator = _cuda._state["kernels"].SIMULATOR
    a = _cuda._Array(name, array, simulator)
    if not _cuda._c_contiguous(a.shape, a.strides, a.dtype.itemsize):
        raise ValueError(f"{name} is not C-contiguous; pass a contiguous array")
    _cuda._check(a, writes=False)
    device = _cuda._device(a, simulator)
    starts, stops = _reduce.chunks(a.size, segments)
    if starts.size == 0:
        empty = np.empty(0, np.float64)
        return (-1 if device is None else device), lambda: empty
    from .kernels import reduce_cuda
    with cuda.gpus[device]:
        x = _cuda._bits(_cuda._flat(a, cuda, simulator))
        d_starts, d_stops = cuda.to_device(starts), cuda.to_device(stops)
        out = cuda.device_array(starts.size, np.float64)
        host = np.empty(starts.size, np.float64)
        blocks, threads = reduce_cuda.launch_config(starts.size, _cuda._sm_count(device, cuda))
    kernel = reduce_cuda.kernel_for(a.dtype)

    def run():
        with cuda.gpus[device]:
            stream = _cuda._stream(a, cuda)
            kernel[blocks, threads, stream](x, d_starts, d_stops, out)
            out.copy_to_host(host, stream=stream)
            if not isinstance(stream, int):
                stream.synchronize()
        return host
    return device, run
