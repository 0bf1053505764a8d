"""Storage narrower than the math: 16-bit floats converted in registers.

The update math runs in float32; parameters, gradients and state may be stored
as bfloat16 or float16 and are converted element by element inside the same
loop, with no temporaries. Arrays of 16-bit floats reach the kernels as
``uint16`` views of their bits (NumPy has no bfloat16, Numba has neither).

* bfloat16 is the top half of a float32: widening is a shift, narrowing rounds
  to nearest-even on the dropped 16 bits (NaNs stay NaN, quietened, as
  ``ml_dtypes`` does).
* float16 uses LLVM's ``half`` type (``fpext`` / ``fptrunc``, F16C on x86),
  which rounds to nearest-even with IEEE subnormals, overflow to inf and NaN
  propagation, exactly as NumPy's ``astype(np.float16)``.
* Stochastic rounding to bfloat16 adds 16 random bits below the kept ones and
  truncates: a value rounds up with probability equal to its distance from the
  lower neighbour, in units of the gap, so the rounding is unbiased. The bits
  come from a counter-based hash of (key, element index), the key derived on
  the host from (seed, step): the same element draws the same bits whatever
  the thread count, chunking or device, and no generator state lives in memory.
  The hash is one round of Wellons' 32-bit "lowbias32" of the index plus a key
  (see :func:`_page_base`), and bfloat16 takes its top 16 bits: a loop over
  one page of ``2**32`` indices runs it in 32-bit lanes, so stochastic
  rounding costs about what rounding to nearest does (all-bfloat16 Adam, one
  thread, arrays in L2, AMD EPYC with AVX2: 1.13-1.24 ns per element, to
  nearest 1.16-1.31; the earlier generator, two rounds over a 64-bit index,
  took 1.74-1.77). The bits drawn changed with it (2026-12): a run resumed
  across the change rounds differently from there on, as another seed would.
* Stochastic rounding to float16 does the same with the 13 bits float16
  drops (more in its subnormal range: float16's spacing there is 2**-24).
* ``magnitude_bits``, the bits of a float32's magnitude, orders magnitudes
  as integers: 8-bit state (``blockwise8.py``, ``companded8.py``) takes its
  blocks' and groups' largest finite values as integer maxima of them.

Numba's CPU target has no 16-bit float type and no scalar bit cast, so the
casts are ``numba.extending.intrinsic`` functions (public API) emitting one
LLVM instruction each. NVVM compiles the same IR for CUDA (the GPU kernels
call these functions, ``kernels/cuda.py``). ``PYTHON`` holds the same
functions written with NumPy scalars, for targets that run the kernels as
Python (the CUDA simulator); the tests check both agree on every 16-bit pattern.
"""
import types as _types

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["bits_to_float32", "float32_to_bits", "half_to_float32", "float32_to_half",
           "bfloat16_to_float32", "float32_to_bfloat16", "float32_to_bfloat16_stochastic",
           "float32_to_half_stochastic", "random_bits", "page_base", "page_bits",
           "stream_key", "magnitude_bits",
           "PYTHON"]


@intrinsic
def bits_to_float32(typingctx, bits):
    """The float32 whose bit pattern is the 32-bit integer ``bits``."""
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 32):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(bits), codegen


@intrinsic
def float32_to_bits(typingctx, x):
    """The bit pattern of the float32 ``x`` as a uint32."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.uint32(x), codegen


@intrinsic
def half_to_float32(typingctx, bits):
    """Widen the float16 whose bit pattern is the 16-bit integer ``bits`` (exact)."""
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 16):
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(bits), codegen


@intrinsic
def float32_to_half(typingctx, x):
    """Round the float32 ``x`` to float16 (nearest-even); its bits as a uint16."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))
    return types.uint16(x), codegen


_MASK32 = np.uint64(0xFFFFFFFF)


def _bfloat16_to_float32(bits):
    return bits_to_float32(np.uint32(np.uint64(bits) << np.uint64(16)))


# Integer arithmetic below runs in uint64 on values below 2**32, so neither
# Numba's promotion of uint32 arithmetic to 64 bits nor NumPy's overflow
# warnings change a result.
def _float32_to_bfloat16(x):
    u = np.uint64(float32_to_bits(x))
    if (u & np.uint64(0x7FFFFFFF)) > np.uint64(0x7F800000):      # NaN: keep it, quiet
        return np.uint16((u >> np.uint64(16)) | np.uint64(0x0040))
    u = u + np.uint64(0x7FFF) + ((u >> np.uint64(16)) & np.uint64(1))
    return np.uint16(u >> np.uint64(16))


def _float32_to_bfloat16_stochastic(x, bits):
    """``bits``: 32 random bits (a uint64 below 2**32, as :func:`random_bits`
    makes them), of which the top 16 are used. An infinity needs no case of
    its own (its low half is zero, so adding below 2**16 carries nothing),
    nor does the largest finite value (0xFF7FFFFF + 0xFFFF is below 2**32:
    it rounds up to inf, with the probability of its distance to 2**128)."""
    u = np.uint64(float32_to_bits(x))
    if (u & np.uint64(0x7FFFFFFF)) > np.uint64(0x7F800000):      # NaN: keep it, quiet
        return np.uint16((u >> np.uint64(16)) | np.uint64(0x0040))
    return np.uint16((u + ((bits >> np.uint64(16)) & np.uint64(0xFFFF))) >> np.uint64(16))


def _float32_to_half_stochastic(x, bits):
    """Stochastic rounding to float16 bits; ``bits``: random bits (uint64) of
    which the low 24 are used. Unbiased: the dropped bits are compared with
    as many random ones (exactly where ``|x| >= 2**-25``; below, a value
    rounds to 0 or to float16's smallest subnormal with a probability
    accurate to ``2**-24``, so the mean is off by less than ``2**-48``).
    NaN and inf convert as with round-to-nearest; a value rounding up past
    the largest float16 (65504) gives inf."""
    u = np.uint64(float32_to_bits(x))
    sign = u & np.uint64(0x80000000)
    magnitude = u & np.uint64(0x7FFFFFFF)
    if magnitude >= np.uint64(0x7F800000):                        # NaN, inf
        return float32_to_half(x)
    exponent = magnitude >> np.uint64(23)                         # biased
    if exponent >= np.uint64(103):                                # |x| >= 2**-24
        drop = np.uint64(13)                                      # float16's normal range
        if exponent < np.uint64(113):                             # its subnormal range
            drop = drop + (np.uint64(113) - exponent)
        mask = (np.uint64(1) << drop) - np.uint64(1)
        rounded = (magnitude + (bits & mask)) & (np.uint64(0x7FFFFFFF) ^ mask)
        return float32_to_half(bits_to_float32(np.uint32(sign | rounded)))
    # below the smallest subnormal, 2**-24: to 0 or to it, with probability |x| / 2**-24
    scaled = bits_to_float32(np.uint32(magnitude)) * np.float32(2.0 ** 48)    # exact
    up = np.uint64(1) if np.float32(bits & np.uint64(0xFFFFFF)) < scaled else np.uint64(0)
    return np.uint16((sign >> np.uint64(16)) | up)


def _mix32(x):
    """A 32-bit integer hash with good avalanche (Wellons' "lowbias32")."""
    x = x ^ (x >> np.uint64(16))
    x = (x * np.uint64(0x7FEB352D)) & _MASK32
    x = x ^ (x >> np.uint64(15))
    x = (x * np.uint64(0x846CA68B)) & _MASK32
    return x ^ (x >> np.uint64(16))


def _page_base(key0, key1, index):
    """The hash input (a uint64 below 2**32) of element ``index`` (a
    non-negative integer below 2**63) of the stream (key0, key1):
    ``key0 + mix32(key1 ^ page) + index`` modulo 2**32, with ``page = index >>
    32``. Within a page of 2**32 consecutive indices the input counts up with
    the index, so a loop over a page computes this once and adds the index
    in 32-bit lanes (:func:`_page_bits`); a page's key spreads the pages
    apart (an array of 2**32 elements or more gets no repeated stream)."""
    i = np.uint64(index)
    page_key = _mix32(np.uint64(key1) ^ (i >> np.uint64(32)))
    return (np.uint64(key0) + page_key + (i & _MASK32)) & _MASK32


def _page_bits(base, i):
    """32 random bits (a uint64 below 2**32) for the element ``i`` places
    after the one whose hash input is ``base`` (:func:`_page_base`), in its
    page: ``mix32((base + i) mod 2**32)``."""
    return _mix32((np.uint64(base) + np.uint64(i)) & _MASK32)


def _random_bits(key0, key1, index):
    """32 random bits (a uint64 below 2**32) for element ``index`` of the
    stream (key0, key1): :func:`_page_bits` of its :func:`_page_base`.

    For the same (key0, key1) two elements of one page draw the hash of
    inputs as far apart as their indices, and for a fixed element the input
    is uniform over the 2**32 values as the key is: with the hash a
    bijection, so are its bits, whatever the hash's quality; its avalanche
    makes neighbouring elements' bits look independent (the tests check
    every bit's balance, the 16 used bits' histogram and neighbours' joint
    histogram)."""
    return _page_bits(_page_base(key0, key1, index), 0)


def stream_key(seed, step):
    """The (key0, key1) pair (uint64s below 2**32) of one step's stream, on the host.

    A splitmix64 of ``seed`` and ``step`` (both non-negative integers below
    2**64): distinct (seed, step) pairs give unrelated streams.
    """
    mask = (1 << 64) - 1

    def splitmix64(z):
        z = (z + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)
    z = splitmix64(splitmix64(int(seed)) ^ int(step))
    return np.uint64(z & 0xFFFFFFFF), np.uint64(z >> 32)


@intrinsic
def _bfloat16_to_float32_ir(typingctx, bits):
    """:func:`_bfloat16_to_float32` as LLVM IR: zext, shl 16, bitcast (32-bit
    integer lanes, so the loops around it vectorize at full width)."""
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 16):
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        wide = builder.shl(builder.zext(args[0], i32), ir.Constant(i32, 16))
        return builder.bitcast(wide, ir.FloatType())
    return types.float32(bits), codegen


@intrinsic
def _float32_to_bfloat16_ir(typingctx, x):
    """:func:`_float32_to_bfloat16` as LLVM IR, branch-free in 32-bit integers:
    ``(u + 0x7FFF + ((u >> 16) & 1)) >> 16``, or the quietened NaN."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32, i16 = ir.IntType(32), ir.IntType(16)
        u = builder.bitcast(args[0], i32)
        high = builder.lshr(u, ir.Constant(i32, 16))
        odd = builder.and_(high, ir.Constant(i32, 1))
        rounded = builder.lshr(builder.add(builder.add(u, ir.Constant(i32, 0x7FFF)), odd),
                               ir.Constant(i32, 16))
        quiet = builder.or_(high, ir.Constant(i32, 0x0040))
        is_nan = builder.fcmp_unordered("uno", args[0], args[0])
        return builder.trunc(builder.select(is_nan, quiet, rounded), i16)
    return types.uint16(x), codegen


_inline = njit(inline="always")
# The compiled conversions are the IR above; the Python definitions are their
# specification (and the simulator's PYTHON twins); test_storage checks both
# on every 16-bit pattern and on random float32 values.
bfloat16_to_float32 = _bfloat16_to_float32_ir
float32_to_bfloat16 = _float32_to_bfloat16_ir


def _as_i32(builder, value):
    """An integer IR value as i32: truncated, or zero-extended."""
    i32 = ir.IntType(32)
    width = value.type.width
    return (builder.trunc(value, i32) if width > 32
            else builder.zext(value, i32) if width < 32 else value)


@intrinsic
def _float32_to_bfloat16_stochastic_ir(typingctx, x, bits):
    """:func:`_float32_to_bfloat16_stochastic` as branch-free 32-bit IR."""
    if x != types.float32 or not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        i32, i16 = ir.IntType(32), ir.IntType(16)
        value, random = args
        u = builder.bitcast(value, i32)
        low = builder.lshr(_as_i32(builder, random), ir.Constant(i32, 16))
        high = builder.lshr(u, ir.Constant(i32, 16))
        rounded = builder.lshr(builder.add(u, low), ir.Constant(i32, 16))
        quiet = builder.or_(high, ir.Constant(i32, 0x0040))
        is_nan = builder.fcmp_unordered("uno", value, value)
        return builder.trunc(builder.select(is_nan, quiet, rounded), i16)
    return types.uint16(x, bits), codegen


def _mix32_ir(builder, x):
    i32 = ir.IntType(32)
    for shift, multiplier in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        x = builder.xor(x, builder.lshr(x, ir.Constant(i32, shift)))
        x = builder.mul(x, ir.Constant(i32, multiplier))       # wraps: mod 2**32
    return builder.xor(x, builder.lshr(x, ir.Constant(i32, 16)))


def _page_base_codegen(builder, key0, key1, index):
    """:func:`_page_base` in 32-bit IR (``index`` an i64 or narrower)."""
    i64 = ir.IntType(64)
    wide = index if index.type.width == 64 else builder.zext(index, i64)
    page = _as_i32(builder, builder.lshr(wide, ir.Constant(i64, 32)))
    page_key = _mix32_ir(builder, builder.xor(_as_i32(builder, key1), page))
    return builder.add(builder.add(_as_i32(builder, key0), page_key), _as_i32(builder, wide))


def _integers(*args):
    return all(isinstance(t, types.Integer) for t in args)


@intrinsic
def _page_base_ir(typingctx, key0, key1, index):
    """:func:`_page_base` in 32-bit integer IR (keys below 2**32, as
    :func:`stream_key` makes them); returns the same uint64."""
    if not _integers(key0, key1, index):
        return None

    def codegen(context, builder, signature, args):
        return builder.zext(_page_base_codegen(builder, *args), ir.IntType(64))
    return types.uint64(key0, key1, index), codegen


@intrinsic
def _page_bits_ir(typingctx, base, i):
    """:func:`_page_bits` in 32-bit integer IR: in a loop over ``i`` the
    vectorizer keeps 32-bit lanes (eight per AVX2 register), where a 64-bit
    index takes two registers and a narrowing shuffle per eight elements."""
    if not _integers(base, i):
        return None

    def codegen(context, builder, signature, args):
        x = builder.add(_as_i32(builder, args[0]), _as_i32(builder, args[1]))
        return builder.zext(_mix32_ir(builder, x), ir.IntType(64))
    return types.uint64(base, i), codegen


@intrinsic
def _random_bits_ir(typingctx, key0, key1, index):
    """:func:`_random_bits` in 32-bit integer IR (keys below 2**32); returns
    the same uint64."""
    if not _integers(key0, key1, index):
        return None

    def codegen(context, builder, signature, args):
        x = _mix32_ir(builder, _page_base_codegen(builder, *args))
        return builder.zext(x, ir.IntType(64))
    return types.uint64(key0, key1, index), codegen


float32_to_bfloat16_stochastic = _float32_to_bfloat16_stochastic_ir
random_bits = _random_bits_ir
page_base = _page_base_ir
page_bits = _page_bits_ir
float32_to_half_stochastic = _inline(_float32_to_half_stochastic)


def _magnitude_bits(x):
    """The bits of ``abs(x)`` as a uint32: ordered as the magnitudes are, with
    every NaN above +inf (0x7F800000), so a block's largest finite magnitude
    is an integer maximum over the bits below 0x7F800000 (an integer
    reduction, which vectorizes without fast-math, where a float maximum does
    not) and an integer maximum at or above it says the block holds a
    non-finite value."""
    return np.uint32(np.uint64(float32_to_bits(x)) & np.uint64(0x7FFFFFFF))


@intrinsic
def _magnitude_bits_ir(typingctx, x):
    """:func:`_magnitude_bits` as 32-bit IR."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        return builder.and_(builder.bitcast(args[0], i32), ir.Constant(i32, 0x7FFFFFFF))
    return types.uint32(x), codegen


magnitude_bits = _magnitude_bits_ir


def _py_bits_to_float32(bits):
    return np.array(bits, np.uint32).view(np.float32)[()]


def _py_float32_to_bits(x):
    return np.array(x, np.float32).view(np.uint32)[()]


def _py_half_to_float32(bits):
    x = np.float32(np.array(bits, np.uint16).view(np.float16)[()])
    if np.isnan(x):                 # quieten, as the hardware conversion does
        x = _py_bits_to_float32(_py_float32_to_bits(x) | np.uint32(0x00400000))
    return x


def _py_float32_to_half(x):
    with np.errstate(over="ignore", invalid="ignore"):
        bits = np.array(np.float32(x).astype(np.float16)).view(np.uint16)[()]
    if np.isnan(x):                 # quieten, as the hardware conversion does
        bits = bits | np.uint16(0x0200)
    return bits


def _python_twins():
    names = {"bits_to_float32": _py_bits_to_float32, "float32_to_bits": _py_float32_to_bits}
    namespace = {**globals(), **names}

    def rebind(func, name):
        return _types.FunctionType(func.__code__, namespace, name)
    out = dict(names, half_to_float32=_py_half_to_float32, float32_to_half=_py_float32_to_half)
    out["bfloat16_to_float32"] = rebind(_bfloat16_to_float32, "bfloat16_to_float32")
    out["float32_to_bfloat16"] = rebind(_float32_to_bfloat16, "float32_to_bfloat16")
    out["float32_to_bfloat16_stochastic"] = rebind(_float32_to_bfloat16_stochastic,
                                                   "float32_to_bfloat16_stochastic")
    namespace["float32_to_half"] = _py_float32_to_half
    out["float32_to_half_stochastic"] = rebind(_float32_to_half_stochastic,
                                               "float32_to_half_stochastic")
    namespace["_mix32"] = _mix32
    for name, func in (("page_base", _page_base), ("page_bits", _page_bits)):
        namespace["_" + name] = out[name] = rebind(func, name)
    out["random_bits"] = rebind(_random_bits, "random_bits")
    out["magnitude_bits"] = rebind(_magnitude_bits, "magnitude_bits")
    return _types.SimpleNamespace(**out)


#: The same conversions as plain Python on NumPy scalars (run, not compiled).
PYTHON = _python_twins()
