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

from ._jit import cached

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
    return _types.SimpleNamespace(**out)


#: The same conversions as plain Python on NumPy scalars (run, not compiled).
PYTHON = _python_twins()


# ------------------------------------------------------------------ 8-bit codes
#: Elements per block of 8-bit state: each block has one float32 absmax.
BLOCK = 256


def dynamic_map(signed):
    """bitsandbytes' dynamic quantization map (Dettmers, 2016; 8-bit optimizers,
    Dettmers et al., 2022): 256 sorted float32 values in (-1, 1] (signed, for
    first moments) or [0, 1] (unsigned, for second moments), dense near zero.

    Built as ``bitsandbytes.functional.create_dynamic_map(signed)`` builds it,
    in float32 arithmetic (that function uses float32 tensors).
    """
    max_exponent_bits, total_bits = 7, 8
    non_sign_bits = total_bits - 1
    data = []

    def means(n):
        # torch.linspace(0.1, 1, n) in float32: a float32 step, then one fused
        # multiply-add per point, from the start for the first half and from
        # the end for the second (exact in float64, rounded once)
        start, end = np.float32(0.1), np.float32(1.0)
        step = np.float64((end - start) / np.float32(n - 1))
        i = np.arange(n)
        boundaries = np.where(i < n // 2, np.float64(start) + step * i,
                              np.float64(end) - step * (n - i - 1)).astype(np.float32)
        return (boundaries[:-1] + boundaries[1:]) / np.float32(2.0)
    for i in range(max_exponent_bits):
        items = (2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                 else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        scaled = (np.float32(10.0 ** (-(max_exponent_bits - 1) + i)) * means(int(items)))
        data += scaled.tolist()
        if signed:
            data += (-scaled).tolist()
    data += [0.0, 1.0]
    data += [0.0] * (256 - len(data))
    return np.array(sorted(data), np.float32)


def special_map(code, signed):
    """The map of a block that holds a non-finite value: ``code`` (a
    :func:`dynamic_map`) with three finite values given up for NaN (index 0,
    where a search that compares nothing lands), -inf (index 1) and +inf
    (index 255), still sorted. The signed map gives up the three values
    nearest zero (+-5.5e-7, +3.25e-6 of the block's absmax; a first moment
    that small next to its block's largest is noise), the unsigned one its two
    values just below 1 (its spacing there grows from 0.7% to 1.8%; a second
    moment rounded to zero instead would turn ``m / sqrt(v)`` into ``m /
    eps``) and has no -inf (a value there is never negative)."""
    c = code.astype(np.float32)
    if signed:
        nonzero = np.flatnonzero(c != 0)
        drop = nonzero[np.argsort(np.abs(c[nonzero]), kind="stable")[:3]]
        finite = np.delete(c, drop)
        return np.concatenate([[np.nan, -np.inf], finite, [np.inf]]).astype(np.float32)
    finite = np.delete(c, [c.size - 3, c.size - 2])
    return np.concatenate([[np.nan], finite, [np.inf]]).astype(np.float32)


def tables(signed):
    """``(map, thresholds)`` of 512 entries each: the :func:`dynamic_map` for
    blocks of finite values, then its :func:`special_map` for blocks holding a
    non-finite one (the kernels choose the half by the sign bit of the
    block's stored absmax, see ``loops.py``)."""
    code = dynamic_map(signed)
    special = special_map(code, signed)
    return (np.concatenate([code, special]),
            np.concatenate([thresholds(code), thresholds(special)]))


def thresholds(code):
    """The encoding table of a sorted ``code``: ``t[k]`` is the smallest float32
    nearer to ``code[k + 1]`` than to ``code[k]`` (a tie goes to ``code[k]``),
    so the nearest code of a float32 ``x`` is the number of ``t[k] <= x``. The
    255 thresholds are padded with +inf to 256 entries. Exact: the midpoints are
    taken in float64, where the sum of two float32 values is exact.

    A :func:`special_map` (NaN first, then possibly -inf, +inf last): the
    threshold after NaN is -inf (everything but NaN passes it), the one after
    -inf is -3.4e38 (only -inf stays below) and the one before +inf is +inf
    (only +inf reaches it)."""
    c = code.astype(np.float64)
    with np.errstate(invalid="ignore"):
        mid = (c[:-1] + c[1:]) / 2
        t = mid.astype(np.float32)
        t = np.where(t.astype(np.float64) > mid, t, np.nextafter(t, np.float32(np.inf)))
    t = np.where(np.isposinf(c[1:]), np.float32(np.inf), t)
    t = np.where(np.isneginf(c[:-1]), -np.finfo(np.float32).max, t)
    t = np.where(np.isnan(c[:-1]), np.float32(-np.inf), t)
    return np.append(t, np.float32(np.inf)).astype(np.float32)


def _nearest_code(thresholds, x):
    """The index of the code nearest to ``x``, given the code's :func:`thresholds`:
    eight compares, no data-dependent trip count. NaN encodes as 0 (a
    :func:`special_map`'s NaN)."""
    k = 0
    for half in (128, 64, 32, 16, 8, 4, 2, 1):
        if x >= thresholds[k + half - 1]:
            k += half
    return np.uint8(k)


nearest_code = njit(inline="always")(_nearest_code)
PYTHON.nearest_code = _nearest_code


def bucket_table(thresholds):
    """A 65536-entry uint8 table that starts :func:`nearest_code_bucketed` near
    its answer: entry ``b`` is the number of thresholds at or below the
    smallest float32 whose top 16 bits are ``b`` (a bfloat16 bucket), 0 for
    NaN buckets (-inf's included, whose largest member is a NaN: -inf then
    steps up over a special map's -inf threshold). No bucket holds more than
    one threshold (checked here: the maps' thresholds are at least a bfloat16
    bucket apart), so one compare finishes the search.
    """
    hi = np.arange(65536, dtype=np.uint32) << np.uint32(16)
    negative = (hi >> np.uint32(31)) == 1
    smallest = np.where(negative, hi | np.uint32(0xFFFF), hi).view(np.float32)
    largest = np.where(negative, hi, hi | np.uint32(0xFFFF)).view(np.float32)
    finite = thresholds[:-1]
    with np.errstate(invalid="ignore"):
        start = np.searchsorted(finite, smallest, side="right")
        end = np.searchsorted(finite, largest, side="right")
    nan = np.isnan(smallest)
    if np.any((end - start)[~nan] > 1):
        raise ValueError("a bfloat16 bucket holds more than one threshold")
    # A bucket at or above the largest threshold starts one below it, so that
    # its one step up ends at the last code (+inf included) instead of
    # stepping past the table. (Signalling NaNs in +inf's bucket would step
    # up too: nearest_code_bucketed sends every NaN to 0 itself.)
    start = np.minimum(start, finite.size - 1)
    return np.where(nan, 0, start).astype(np.uint8)


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
PYTHON.magnitude_bits = _types.FunctionType(
    _magnitude_bits.__code__, {**globals(), "float32_to_bits": _py_float32_to_bits},
    "magnitude_bits")


def _nearest_code_bucketed(buckets, thresholds, x):
    """:func:`nearest_code` in two loads: the bucket of ``x``'s top 16 bits,
    then at most one step up (see :func:`bucket_table`). Equal to it for every
    float32 (NaN: 0)."""
    k = np.int64(buckets[float32_to_bits(x) >> np.uint32(16)])
    k += np.int64(x >= thresholds[k])
    return np.uint8(k) if x == x else np.uint8(0)


nearest_code_bucketed = njit(inline="always")(_nearest_code_bucketed)
PYTHON.nearest_code_bucketed = _types.FunctionType(
    _nearest_code_bucketed.__code__, {**globals(), "float32_to_bits": _py_float32_to_bits},
    "nearest_code_bucketed")


# ------------------------------------------------------------------ companded 8-bit codes
#: Elements per group of companded 8-bit state: each group has one float32 scale.
GROUP = 32

# float32 constants (Numba reads globals as typed constants: no float64 creeps in)
_F0, _HALF, _F1, _F2 = np.float32(0.0), np.float32(0.5), np.float32(1.0), np.float32(2.0)
_INF, _NAN = np.float32(np.inf), np.float32(np.nan)
#: Signed codes -126..126 are values, 127 / -127 are +inf / -inf, -128 is NaN.
_SIGNED_STEPS = np.float32(126.0)
#: Unsigned codes 0..253 are values, 254 is +inf, 255 is NaN (or -inf).
_ROOT_STEPS = np.float32(253.0)
_C127, _C128, _C254, _C255 = (np.float32(127.0), np.float32(128.0), np.float32(254.0),
                              np.float32(255.0))
_SIGNED_RECIPROCAL, _ROOT_RECIPROCAL = _F1 / _SIGNED_STEPS, _F1 / _ROOT_STEPS
#: The smallest float32 (a group of zeros and non-finite values divides by it)
#: and the smallest normal one: a divisor below it is scaled up by 2**24 (exact)
#: before its reciprocal is taken, which would overflow from 2**-128 down.
_TINY, _NORMAL, _UP = np.float32(2.0 ** -149), np.float32(2.0 ** -126), np.float32(2.0 ** 24)


def _codec_ir(kind):
    """The companded codecs' conversions and exact division as LLVM IR (the
    Python twins below are their specification): an 8-bit code to float32
    and back with no 64-bit integer in between (Numba widens integer
    arithmetic to 64 bits, and AVX2 has no vector conversion between int64
    and float), and the quotient of a code by 126 or 253."""
    f32, i8 = ir.FloatType(), ir.IntType(8)

    if kind == "exact_quotient":
        @intrinsic
        def exact_quotient(typingctx, c, d, r):
            """``c / d`` correctly rounded without a division, for ``c`` an
            integer of 8 bits and ``d`` 126 or 253 (``r``: ``1 / d`` rounded):
            ``q = c r`` corrected once by its exact remainder (two fused
            multiply-adds). Equal to the division for every such ``c``
            (checked on every code by the tests); a vector division costs
            as much as the rest of a decode."""
            if not (c == d == r == types.float32):
                return None

            def codegen(context, builder, signature, args):
                x, divisor, reciprocal = args
                fma = builder.module.declare_intrinsic("llvm.fma", [f32],
                                                       ir.FunctionType(f32, [f32] * 3))
                q = builder.fmul(x, reciprocal)
                # c - q d, exactly (NVVM's IR has no fneg: the divisor is negated)
                minus = builder.fsub(ir.Constant(f32, 0.0), divisor)
                remainder = builder.call(fma, [q, minus, x])
                return builder.call(fma, [remainder, reciprocal, q])
            return types.float32(c, d, r), codegen
        return exact_quotient

    @intrinsic
    def convert(typingctx, x):
        if kind == "signed_code_to_float32" and isinstance(x, types.Integer) \
                and x.bitwidth == 8:
            def codegen(context, builder, signature, args):
                return builder.sitofp(args[0], f32)
            return types.float32(x), codegen
        if kind == "unsigned_code_to_float32" and isinstance(x, types.Integer) \
                and x.bitwidth == 8:
            def codegen(context, builder, signature, args):
                return builder.uitofp(args[0], f32)
            return types.float32(x), codegen
        if kind == "float32_to_signed_code" and x == types.float32:
            def codegen(context, builder, signature, args):
                return builder.fptosi(args[0], i8)
            return types.uint8(x), codegen
        if kind == "float32_to_unsigned_code" and x == types.float32:
            def codegen(context, builder, signature, args):
                return builder.fptoui(args[0], i8)
            return types.uint8(x), codegen
        return None
    return convert


signed_code_to_float32 = _codec_ir("signed_code_to_float32")
unsigned_code_to_float32 = _codec_ir("unsigned_code_to_float32")
float32_to_signed_code = _codec_ir("float32_to_signed_code")
float32_to_unsigned_code = _codec_ir("float32_to_unsigned_code")
exact_quotient = _codec_ir("exact_quotient")


def _py_signed_code_to_float32(code):
    """The int8 whose bits are the uint8 ``code``, as a float32."""
    return np.float32(np.array(code, np.uint8).view(np.int8)[()])


def _py_unsigned_code_to_float32(code):
    return np.float32(code)


def _py_float32_to_signed_code(x):
    """The bits (uint8) of the int8 ``x`` (a float32 holding an integer in -128..127)."""
    return np.array(np.int64(x), np.int64).astype(np.int8).view(np.uint8)[()]


def _py_float32_to_unsigned_code(x):
    """The uint8 ``x`` (a float32 holding an integer in 0..255)."""
    return np.uint8(np.int64(x))


def _py_exact_quotient(c, d, r):
    return np.float32(c) / np.float32(d)


def _py_root_of(x):
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.float32(x))


@intrinsic
def _root_of_ir(typingctx, x):
    """``sqrt(x)`` as LLVM's ``llvm.sqrt.f32``, the call ``math.sqrt`` makes
    in the update math: the same call on the same value, so LLVM computes the
    square root of a second moment once for the update and its encoding."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        sqrt = builder.module.declare_intrinsic("llvm.sqrt", [f32], ir.FunctionType(f32, [f32]))
        return builder.call(sqrt, args)
    return types.float32(x), codegen


root_of = _root_of_ir


def _softsign_decode(code, scale):
    """The value of the signed companded ``code`` (uint8, the bits of an int8
    ``c``) in a group of ``scale``: ``y = c / 126``, inverted through ``y =
    2x / (1 + |x|)``: ``x = y / (2 - |y|)``, times the scale (each step
    rounded to float32; ``c / 126`` is computed without a division, see
    :func:`exact_quotient`, and equals it). Zero decodes as exactly 0;
    codes 127, -127 and -128 as +inf, -inf and NaN. Branch-free (selects)."""
    c = signed_code_to_float32(code)
    y = exact_quotient(c, _SIGNED_STEPS, _SIGNED_RECIPROCAL)
    x = y / (_F2 - abs(y)) * scale
    x = _INF if c == _C127 else x
    x = -_INF if c == -_C127 else x
    x = _NAN if c == -_C128 else x
    return x


def _softsign_scaling(divisor):
    """``(pre, reciprocal)`` of a group whose largest finite magnitude is
    ``divisor`` (at least the smallest float32): :func:`_softsign_encode`
    takes ``x = value * pre * reciprocal``, which is ``value / divisor`` to
    within a rounding or two (``pre`` is 2**24 for a subnormal divisor, so
    that the reciprocal stays finite, else 1; both products are exact but
    the last). One division per group instead of one per element."""
    pre = _UP if divisor < _NORMAL else _F1
    return pre, _F1 / (divisor * pre)


def _softsign_encode(value, pre, reciprocal):
    """The signed companded code (uint8, an int8's bits) of ``value`` in its
    group (``pre``, ``reciprocal``: :func:`_softsign_scaling` of the group's
    divisor): with ``x = value * pre * reciprocal`` (``|x| <= 1`` to a
    rounding), the nearest integer to ``126 * 2x / (1 + |x|)`` (``x`` within
    a rounding of ``value / divisor``, so a code can differ from the exact
    one where ``value`` lies within a rounding of the boundary between two:
    one division per element). NaN and infinities get their own codes.
    Arithmetic only, no table; branch-free (selects)."""
    x = value * pre * reciprocal
    q = np.floor((x + x) / (_F1 + abs(x)) * _SIGNED_STEPS + _HALF)
    q = _C127 if value == _INF else q
    q = -_C127 if value == -_INF else q
    q = -_C128 if value != value else q
    return float32_to_signed_code(q)


def _root_decode(code, scale):
    """The value of the unsigned (fourth-root) companded ``code`` in a group
    of ``scale``: ``(c / 253) ** 4 * scale`` (squared twice, each step
    rounded to float32; ``c / 253`` without a division, equal to it, see
    :func:`exact_quotient`). Zero decodes as exactly 0, 254 as +inf, 255 as
    NaN. Branch-free (selects)."""
    c = unsigned_code_to_float32(code)
    y = exact_quotient(c, _ROOT_STEPS, _ROOT_RECIPROCAL)
    y = y * y
    v = y * y * scale
    v = _INF if c == _C254 else v
    v = _NAN if c == _C255 else v
    return v


def _root_scaling(divisor):
    """The factor of a group whose largest finite value is ``divisor`` (at
    least the smallest float32) in :func:`_root_encode`: ``253 /
    divisor ** (1/4)`` (two square roots and a division per group)."""
    return _ROOT_STEPS / np.sqrt(np.sqrt(divisor))


def _root_encode(root, factor):
    """The unsigned companded code of a value ``v >= 0`` given as its square
    root ``root`` (the update computes ``sqrt(v)`` anyway: see
    :data:`root_of`) in a group of ``factor`` (:func:`_root_scaling` of its
    divisor): the nearest integer to ``sqrt(root) * factor``, that is
    ``253 * (v / divisor) ** (1/4)`` (the square root of ``sqrt(v)``, the
    quantity Adam divides by) to within a rounding or two, at most 253,
    but never 0 for a positive value, so a second moment that is not zero
    never decodes as zero (which would turn ``m / (sqrt(v) + eps)`` into ``m
    / eps``). Code 1 is ``2.4e-10`` of the scale, so second moments eight
    decades apart in one group keep their own values; a square root (1 is
    ``1.6e-5``) floored them: on the accuracy section's logistic problem
    (ten weights, moments eight decades apart) Adam ended 5.2 times float32's
    suboptimality, with the fourth root 0.08. +inf is code 254; NaN, and a
    negative ``v`` (whose root is NaN; the state is never negative), 255.

    Rounded to nearest, not up: a second moment is re-encoded at every step
    from its decoded value, and rounding up then never lets it decay by less
    than a code step per step (with beta2 = 0.999 it decays by 0.1%, a code
    step is 0.8% or more), so a stored value only ever rises relative to its
    group's scale: on the badly scaled quadratic of the tests Adam ended
    2.4-3.5 times float32's final loss. A value equal to the scale is code
    253, which decodes as the scale exactly. Branch-free (selects).
    """
    q = np.floor(np.sqrt(root) * factor + _HALF)
    q = q if q < _ROOT_STEPS else _ROOT_STEPS
    q = _F1 if (q == _F0) & (root > _F0) else q
    q = _C254 if root == _INF else q
    q = _C255 if root != root else q
    return float32_to_unsigned_code(q)


_codec_inline = njit(inline="always", error_model="numpy")
softsign_decode = _codec_inline(_softsign_decode)
softsign_scaling = _codec_inline(_softsign_scaling)
softsign_encode = _codec_inline(_softsign_encode)
root_decode = _codec_inline(_root_decode)
root_scaling = _codec_inline(_root_scaling)
root_encode = _codec_inline(_root_encode)


def _codec_twins():
    """The codecs as Python on NumPy scalars (the simulator's twins)."""
    namespace = {**globals(), "signed_code_to_float32": _py_signed_code_to_float32,
                 "unsigned_code_to_float32": _py_unsigned_code_to_float32,
                 "float32_to_signed_code": _py_float32_to_signed_code,
                 "float32_to_unsigned_code": _py_float32_to_unsigned_code,
                 "exact_quotient": _py_exact_quotient}
    for f in (_softsign_decode, _softsign_scaling, _softsign_encode, _root_decode,
              _root_scaling, _root_encode):
        name = f.__name__[1:]
        setattr(PYTHON, name, _types.FunctionType(f.__code__, namespace, name))
    PYTHON.root_of = _py_root_of
    PYTHON.signed_code_to_float32 = _py_signed_code_to_float32
    PYTHON.unsigned_code_to_float32 = _py_unsigned_code_to_float32
    PYTHON.exact_quotient = _py_exact_quotient


_codec_twins()


def _encode_groups(values, codes, scale, signed):
    """Companded 8-bit ``codes`` and per-group ``scale`` of float32 ``values``,
    exactly as a step stores them (for loading full-precision state)."""
    n = values.size
    for g in range(scale.size):
        start = g * GROUP
        top = np.uint32(0)
        for j in range(start, min(n, start + GROUP)):
            u = magnitude_bits(values[j])
            top = max(top, u if u < np.uint32(0x7F800000) else np.uint32(0))
        s = bits_to_float32(top)
        divisor = max(s, _TINY)
        if signed:
            pre, reciprocal = softsign_scaling(divisor)
            for j in range(start, min(n, start + GROUP)):
                codes[j] = softsign_encode(values[j], pre, reciprocal)
        else:
            factor = root_scaling(divisor)
            for j in range(start, min(n, start + GROUP)):
                codes[j] = root_encode(root_of(values[j]), factor)
        scale[g] = s


def _decode_groups(codes, scale, signed, out):
    """The float32 values of companded 8-bit ``codes`` with their groups' ``scale``."""
    for j in range(codes.size):
        s = scale[j // GROUP]
        out[j] = softsign_decode(codes[j], s) if signed else root_decode(codes[j], s)


encode_groups = cached(njit, _encode_groups, error_model="numpy")
decode_groups = cached(njit, _decode_groups, error_model="numpy")


# ------------------------------------------------------------------ split master weights
# A float32 master kept as its bfloat16 param (the high half, rounded) plus
# the low bits as a signed correction: ``master_weights="bf16+16"`` (a 16-bit
# correction, exact) and ``"bf16+8"`` (an 8-bit one, a 24-bit master; after
# FlashOptim: Databricks, 2026). Integer arithmetic runs in uint64 on values
# below 2**33, so neither Numba's promotions nor NumPy's overflow warnings
# change a result; subtracting the sign extension adds 2**32 first.
_U8, _U16, _TWO32 = np.uint64(8), np.uint64(16), np.uint64(1 << 32)
_MAGNITUDE, _INF_BITS = np.uint64(0x7FFFFFFF), np.uint64(0x7F800000)
_QUIET = np.uint64(0x0040)
_HALF8, _ROUND8 = np.uint64(0x80), np.uint64(0xFFFFFF00)


def _split16_join(high, low):
    """The float32 master of bfloat16 bits ``high`` (uint16) and 16-bit
    correction ``low`` (the int16's bits, as uint16): ``(high << 16) + low``
    in 32-bit integers, ``low`` sign-extended.

    Exact: for every float32 bit pattern ``u`` but NaN, :func:`_split16_high`
    is ``(u + 0x8000) >> 16`` and :func:`_split16_low` the low 16 bits of
    ``u``, and ``(u + 0x8000) >> 16 << 16`` is ``u - sext(u & 0xFFFF)`` (if
    the low half is below 0x8000, both are ``u`` with it cleared; if not, both
    are that plus 0x10000), so the sum gives ``u`` back, whatever the carry
    did to the exponent (a power of two, inf from the largest finite values),
    for subnormals and both zeros. A NaN's ``high`` is quietened, so its
    reconstruction is a NaN of the same sign (the quiet bit keeps the mantissa
    nonzero and below 2**23 after adding at most +-2**15), not its payload."""
    c = np.uint64(low)
    u = (np.uint64(high) << _U16) + c + _TWO32 - ((c & np.uint64(0x8000)) << np.uint64(1))
    return bits_to_float32(np.uint32(u & _MASK32))


def _split16_high(x):
    """The bfloat16 param (bits) of master ``x``: nearest, ties away from zero
    (``(u + 0x8000) >> 16``, no carry reaches the sign: a finite magnitude is at
    most 0x7F7FFFFF); a NaN stays a NaN, quietened."""
    u = np.uint64(float32_to_bits(x))
    if (u & _MAGNITUDE) > _INF_BITS:
        return np.uint16((u >> _U16) | _QUIET)
    return np.uint16((u + np.uint64(0x8000)) >> _U16)


def _split16_low(x):
    """The 16-bit correction (bits) of master ``x``: its low 16 bits."""
    return np.uint16(np.uint64(float32_to_bits(x)) & np.uint64(0xFFFF))


def _split8_join(high, low):
    """The 24-bit master of bfloat16 bits ``high`` and 8-bit correction
    ``low`` (the int8's bits, as uint8): ``(high << 16) + (low << 8)``,
    ``low`` sign-extended; see :func:`_split8_low` for what it reconstructs."""
    c = np.uint64(low)
    u = (np.uint64(high) << _U16) + (c << _U8) + _TWO32 - ((c & np.uint64(0x80)) << np.uint64(9))
    return bits_to_float32(np.uint32(u & _MASK32))


def _split8_high(x):
    """The bfloat16 param (bits) of master ``x`` under ``"bf16+8"``: the
    16-bit rounding of its 24-bit rounding ``r`` (its bits to a multiple of
    256), both to nearest, ties away from zero (a NaN stays a NaN, quietened)."""
    u = np.uint64(float32_to_bits(x))
    if (u & _MAGNITUDE) > _INF_BITS:
        return np.uint16((u >> _U16) | _QUIET)
    return np.uint16((((u + _HALF8) & _ROUND8) + np.uint64(0x8000)) >> _U16)


def _split8_low(x):
    """The 8-bit correction (bits) of master ``x``: bits 8 to 15 of its 24-bit
    rounding ``r = (u + 0x80) & ~0xFF`` of its bits ``u`` (branch-free: for a
    NaN too, whose quietened param keeps any reconstruction a NaN).

    Reconstruction bound: :func:`_split8_join` gives ``r`` back exactly (as
    :func:`_split16_join` does, one byte up: ``(r + 0x8000) >> 16 << 16`` is
    ``r - (sext8((r >> 8) & 0xFF) << 8)`` because ``r``'s low byte is zero), so
    the error is that of rounding the bits to a multiple of 256, at most 128
    units of ``x``'s last place. Within a binade the bit patterns are evenly
    spaced values, and a carry past the binade's last pattern gives the next
    power of two, its true next value; so for a normal ``x`` in ``[2**e,
    2**(e+1))``, ``|r - x| <= 128 * 2**(e-23) = 2**(e-16) <= 2**-16 * |x|``
    (half the 24-bit format's unit roundoff, 1/512 of the param's ulp
    ``2**(e-7)``), and for a subnormal ``|r - x| <= 2**-142``. Exceptions: the
    zeros and infinities are exact, a NaN reconstructs as a NaN of its sign,
    and ``|x| >= 0x7F7FFF80`` (above the 24-bit format's largest finite value,
    ``(2 - 2**-15) * 2**127``, by half its ulp) rounds to inf."""
    u = np.uint64(float32_to_bits(x))
    return np.uint8(((u + _HALF8) >> _U8) & np.uint64(0xFF))


def _split_ir(kind):
    """The split codecs as 32-bit integer LLVM IR, branch-free (a select for
    NaN), so the loops around them vectorize at full width: the Python
    functions above are their specification (and the simulator's and the
    GPU's code); the tests check both agree on values of every exponent."""
    i32 = ir.IntType(32)

    def c(v):
        return ir.Constant(i32, v)

    def param(builder, u, value, rounded):
        """The param bits: ``rounded``, or the quietened NaN."""
        quiet = builder.or_(builder.lshr(u, c(16)), c(0x0040))
        is_nan = builder.fcmp_unordered("uno", value, value)
        return builder.trunc(builder.select(is_nan, quiet, rounded), ir.IntType(16))

    def join(builder, high, low, shift):
        wide = builder.shl(builder.zext(high, i32), c(16))
        correction = builder.sext(low, i32)
        if shift:
            correction = builder.shl(correction, c(shift))
        return builder.bitcast(builder.add(wide, correction), ir.FloatType())

    @intrinsic
    def split_join(typingctx, high, low):
        width = 16 if kind == 16 else 8
        if not (isinstance(high, types.Integer) and high.bitwidth == 16
                and isinstance(low, types.Integer) and low.bitwidth == width):
            return None

        def codegen(context, builder, signature, args):
            return join(builder, args[0], args[1], 0 if kind == 16 else 8)
        return types.float32(high, low), codegen

    @intrinsic
    def split_high(typingctx, x):
        if x != types.float32:
            return None

        def codegen(context, builder, signature, args):
            u = builder.bitcast(args[0], i32)
            if kind == 8:
                u = builder.and_(builder.add(u, c(0x80)), c(0xFFFFFF00))
            rounded = builder.lshr(builder.add(u, c(0x8000)), c(16))
            return param(builder, builder.bitcast(args[0], i32), args[0], rounded)
        return types.uint16(x), codegen

    @intrinsic
    def split_low(typingctx, x):
        if x != types.float32:
            return None

        def codegen(context, builder, signature, args):
            u = builder.bitcast(args[0], i32)
            if kind == 16:
                return builder.trunc(u, ir.IntType(16))
            return builder.trunc(builder.lshr(builder.add(u, c(0x80)), c(8)), ir.IntType(8))
        return (types.uint16 if kind == 16 else types.uint8)(x), codegen
    return split_join, split_high, split_low


split16_join, split16_high, split16_low = _split_ir(16)
split8_join, split8_high, split8_low = _split_ir(8)


def _split_twins():
    namespace = {**globals(), "bits_to_float32": _py_bits_to_float32,
                 "float32_to_bits": _py_float32_to_bits}
    for f in (_split16_join, _split16_high, _split16_low, _split8_join, _split8_high,
              _split8_low):
        namespace[f.__name__] = _types.FunctionType(f.__code__, namespace, f.__name__)
    for name in ("split16_join", "split16_high", "split16_low", "split8_join", "split8_high",
                 "split8_low"):
        setattr(PYTHON, name, namespace["_" + name])


_split_twins()
