"""Read-only reductions: the sum of squares behind a global gradient norm.

The array is cut by the host into chunks, given as ``starts`` / ``stops``
(int64 element indices, so a flat buffer's padding can be left out); the
elements are float32, float64, or bfloat16 / float16 bit patterns
(``uint16``, widened in the loop: :data:`SUM_OF_SQUARES_BF16`,
:data:`SUM_OF_SQUARES_F16`). Each chunk's sum of squares is accumulated in float64 and written to ``out[c]``;
the host adds the partials exactly (:func:`add_exactly`, an integer
accumulator, so the order of the partials does not matter) and rounds once.

Within a chunk the order of the additions is fixed by the chunk alone, so the
result is the same whatever the thread count and on either target:

- element ``start + j`` goes to lane ``j % LANES``; each lane adds its
  elements in increasing order, ``acc[k] += float64(x) * float64(x)``;
- the ``LANES`` lanes are then added as a binary tree,
  ``acc[k] += acc[k + s]`` for ``k < s``, ``s = LANES/2, LANES/4, ..., 1``.

On the CPU a chunk is one ``prange`` iteration and the lanes are a small
float64 array on the stack (the loop over lanes carries no dependence, so
LLVM vectorizes it without reassociating anything); on the GPU
(``reduce_cuda.py``) a chunk is one block of ``LANES`` threads, thread ``k``
being lane ``k`` (its loads are coalesced), and the tree runs in shared
memory. For float32 input the square
of a float32 is exact in float64, so a GPU's fused multiply-add rounds the
same as the CPU's multiply then add: the two targets agree bit for bit.

Accuracy: every addend is non-negative, so a lane's running sum of ``m``
terms has a relative error below ``m * 2**-53`` and the tree adds
``log2(LANES)`` more roundings. With ``CHUNK = 2**14`` elements and 256
lanes, a chunk's partial is within ``(64 + 8) * 2**-53 < 1e-14`` of its
exact value, whatever the array's size; the exact sum adds one rounding and
the square root halves the relative error. (Squares of float64 inputs round
once more, ``2**-53``.) A NaN anywhere makes its lane, its chunk and the
total NaN (no comparison or ``max`` is involved that could drop it); an inf
with no NaN makes the total inf.

The float64 accumulation of float32 data is deliberate: it is what makes the
norm independent of the array's size and exact enough to match torch's
float64 norm. It costs nothing from memory as long as the lanes stay in
registers: 256 float64 lanes are AVX-512's 32 registers, and LLVM keeps them
there only when they live on the stack (:func:`_zeroed_stack_lanes`); held in
a NumPy array, every row loaded and stored all 256 lanes, and the pass read
at 83% of ``read_only``'s bandwidth instead of 100% (2 threads, 2**24 float32,
AMD EPYC Zen 4). In cache the widening (``vcvtps2pd``) is the bound; for
float32 input the add is fused into the square (:data:`SUM_OF_SQUARES_F32`,
exact, see there), which leaves the add pipes to the widening.
"""
import types

import numpy as np
from llvmlite import ir
from numba import carray, njit, prange
from numba import types as nbtypes
from numba.core import cgutils
from numba.extending import intrinsic

from . import convert16
from ._jit import cached, renamed

if __name__ != "fastadapt.kernels.reduce":
    # As in cpu.py: the disk cache records the module name.
    raise ImportError(f"import this module as fastadapt.kernels.reduce, not {__name__}")

#: Lanes per chunk; also the CUDA kernel's threads per block (a power of two).
LANES = 256
#: Elements per chunk (a multiple of LANES). 2**14 float32 are 64 KiB: enough
#: to amortise a prange iteration, few enough that 2**24 elements make 1024
#: chunks to share among threads.
CHUNK = 2 ** 14
#: Arrays of fewer chunks run on the calling thread. Not measured separately:
#: one or two chunks would run on at most two threads anyway, and a serial
#: pass over 2**15 float32 takes about as long as waking the pool.
SERIAL_BELOW_CHUNKS = 3


@intrinsic
def _zeroed_stack_lanes(typingctx, n):
    """A pointer to ``n`` (a literal int) float64 zeros on the calling
    function's stack: the sum-of-squares lanes. Numba's arrays live on the
    heap, where LLVM must assume that the lanes' stores may alias the array
    being read, so it loads and stores every lane for every row; lanes on the
    stack (which nothing else can point to) stay in registers. The space is
    allocated once per call of the function and zeroed where this is called."""
    if not isinstance(n, nbtypes.IntegerLiteral):
        return None
    lanes = ir.ArrayType(ir.DoubleType(), n.literal_value)

    def codegen(context, builder, signature, args):
        space = cgutils.alloca_once(builder, lanes)
        builder.store(ir.Constant(lanes, None), space)
        return builder.bitcast(space, ir.DoubleType().as_pointer())
    return nbtypes.CPointer(nbtypes.float64)(n), codegen


@njit(inline="always")
def widen(v):
    """An element as a float (the identity, for float32 and float64 input;
    the 16-bit variants rebind it to a bit-pattern conversion)."""
    return v


def sum_of_squares(x, starts, stops, out):
    """``out[c] = sum(float64(x[i])**2 for i in range(starts[c], stops[c]))``,
    added in the lane-then-tree order of the module docstring."""
    for c in prange(starts.size):
        # Indexing a view from 0 (not x[start + j]) lets Numba prove the
        # indices non-negative and drop its wraparound check, which would
        # otherwise keep LLVM from vectorizing the lanes (measured 4 -> 28 GB/s).
        chunk = x[starts[c]:stops[c]]
        # on the stack, not np.zeros: 256 float64 lanes fit AVX-512's 32
        # registers, and kept there the pass reads at the read-only
        # roofline (measured 83% -> 100% of read_only, 2 threads, 2**24)
        acc = carray(_zeroed_stack_lanes(LANES), LANES)
        full = chunk.size // LANES * LANES
        for j in range(0, full, LANES):
            row = chunk[j:j + LANES]
            for k in range(LANES):
                v = np.float64(widen(row[k]))
                acc[k] += v * v
        tail = chunk[full:]
        for k in range(tail.size):
            v = np.float64(widen(tail[k]))
            acc[k] += v * v
        s = LANES // 2
        while s > 0:
            for k in range(s):
                acc[k] += acc[k + s]
            s //= 2
        out[c] = acc[0]


def read_only(x, starts, stops, out):
    """The read-only roofline: ``out[c] = sum(x[starts[c]:stops[c]])`` in the
    arrays' dtype, over the same chunks, compiled with reassociation allowed
    so LLVM vectorizes it as far as it can. It reads exactly the bytes
    :func:`sum_of_squares` reads and does less work per element; it is a
    benchmark baseline, never used for results."""
    for c in prange(starts.size):
        chunk = x[starts[c]:stops[c]]
        acc = chunk[0] - chunk[0]
        for i in range(chunk.size):
            acc += chunk[i]
        out[c] = acc


def _compile(func, **options):
    return types.SimpleNamespace(
        parallel=cached(njit, func, parallel=True, nogil=True, error_model="numpy",
                        **options),
        serial=cached(njit, renamed(func, "_serial"), nogil=True, error_model="numpy",
                      **options),
    )


SUM_OF_SQUARES = _compile(sum_of_squares)
#: The same for float32 input, compiled with contraction allowed: the square
#: of a float32 is exact in float64, so ``fma(v, v, acc)`` rounds exactly as
#: ``acc + v * v`` does (bit for bit), and it takes the add off the pipes the
#: float32 -> float64 widening needs (the widening bounds this loop on AVX-512).
#: Not for float64 input, whose square the fma would not round.
SUM_OF_SQUARES_F32 = _compile(renamed(sum_of_squares, "_f32"), fastmath={"contract"})


#: The same for bfloat16 and float16 input, given as its ``uint16`` bit
#: patterns: each element is widened to float32 (exact), so the partials equal
#: those of a float32 copy, bit for bit, without writing and reading the copy.
SUM_OF_SQUARES_BF16 = _compile(renamed(sum_of_squares, "_bf16",
                                       widen=convert16.bfloat16_to_float32),
                               fastmath={"contract"})
SUM_OF_SQUARES_F16 = _compile(renamed(sum_of_squares, "_f16", widen=convert16.half_to_float32),
                              fastmath={"contract"})


def sum_of_squares_kernels(dtype):
    """The :func:`sum_of_squares` kernels (``.serial``, ``.parallel``) for
    ``dtype``: float32, float64, or bfloat16 / float16 (whose kernels take
    the ``uint16`` view of the array)."""
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return SUM_OF_SQUARES_F32
    if dtype == np.float16:
        return SUM_OF_SQUARES_F16
    if dtype.itemsize == 2:
        return SUM_OF_SQUARES_BF16
    return SUM_OF_SQUARES
READ_ONLY = _compile(read_only, fastmath={"reassoc"})


#: Limbs of :func:`add_exactly`'s accumulator: 32 bits each, enough for the
#: 2098 bits from float64's smallest subnormal to past its largest value.
LIMBS = 68
_LIMB_MASK = np.int64(0xFFFFFFFF)


def add_exactly(values, limbs):
    """Add non-negative finite float64 ``values`` exactly to ``limbs``, the
    integer ``sum(limbs[i] << 32*i)`` counting units of ``2**-1074`` (the
    smallest subnormal), so the sum of any values in any order is one integer.

    A value is ``M * 2**(s - 1074)`` with a 53-bit integer ``M`` and
    ``0 <= s <= 2045``; its two 32-bit halves, shifted by ``s % 32``, land in
    limbs ``s // 32`` to ``s // 32 + 2``. A limb gains less than ``2**33`` per
    value, so an int64 limb holds ``2**29`` values (a float32 array of
    ``2**43`` elements) before it could overflow; the caller keeps below that.
    Returns 0.0, or NaN if a value is NaN, else inf if one is inf (those are
    not added); raises ValueError for a negative value."""
    bits = values.view(np.int64)
    special = 0.0
    for v in range(bits.size):
        b = bits[v]
        if b < 0:
            raise ValueError("add_exactly: negative value")
        e = b >> 52
        m = b & np.int64(0xFFFFFFFFFFFFF)
        if e == 0x7FF:
            if m != 0:
                special = np.nan
            elif special == 0.0:
                special = np.inf
            continue
        if e != 0:
            m |= np.int64(1) << 52
            e -= 1
        i = e >> 5
        o = e & 31
        low = (m & _LIMB_MASK) << o        # < 2**63
        high = (m >> 32) << o              # < 2**52
        limbs[i] += low & _LIMB_MASK
        limbs[i + 1] += (low >> 32) + (high & _LIMB_MASK)
        limbs[i + 2] += high >> 32
    return special


ADD_EXACTLY = cached(njit, add_exactly, nogil=True, error_model="numpy")


def limbs_integer(limbs):
    """The integer ``sum(limbs[i] << 32*i)`` (a Python int)."""
    total = 0
    for i in np.flatnonzero(limbs).tolist():
        total += int(limbs[i]) << (32 * i)
    return total


def exact_float(integer):
    """The float64 nearest (ties to even) to ``integer * 2**-1074``, from
    Python's correctly rounded int division; OverflowError past float64."""
    return integer / (1 << 1074)


def chunks(n, segments=None, chunk=None):
    """``(starts, stops)``: int64 chunk bounds covering ``range(n)``, or only the
    given ``(offset, size)`` segments (a flat buffer's arrays, padding left
    out), each cut into pieces of at most ``chunk`` elements (default
    :data:`CHUNK`). A segment's chunks start at the segment, so the bounds
    depend on the layout only."""
    chunk = CHUNK if chunk is None else int(chunk)
    if segments is None:
        segments = [(0, n)]
    starts = [np.arange(o, o + size, chunk, dtype=np.int64) for o, size in segments if size]
    if not starts:
        empty = np.empty(0, np.int64)
        return empty, empty
    stops = [np.minimum(s + chunk, o + size) for s, (o, size) in
             zip(starts, [seg for seg in segments if seg[1]])]
    return np.concatenate(starts), np.concatenate(stops).astype(np.int64)
