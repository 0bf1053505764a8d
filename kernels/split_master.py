"""Split master weights: a float32 master kept as its bfloat16 param plus a correction.

The param is the master's high half, rounded; the low bits are a signed
correction: ``master_weights="bf16+16"`` (a 16-bit correction, exact) and
``"bf16+8"`` (an 8-bit one, a 24-bit master; after FlashOptim: Databricks,
2026). The Python functions here are the specification (and, through
``PYTHON``, the CUDA simulator's code); the loop drivers call the same codecs
as branch-free 32-bit LLVM IR (:func:`_split_ir`), which NVVM compiles for the
GPU as it is.
"""
import types as _types

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from . import convert16
from .convert16 import bits_to_float32, float32_to_bits

# Integer arithmetic runs in uint64 on values below 2**33, so neither Numba's
# promotions nor NumPy's overflow warnings change a result; subtracting the
# sign extension adds 2**32 first.
_MASK32 = np.uint64(0xFFFFFFFF)
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
    namespace = {**globals(), "bits_to_float32": convert16.PYTHON.bits_to_float32,
                 "float32_to_bits": convert16.PYTHON.float32_to_bits}
    for f in (_split16_join, _split16_high, _split16_low, _split8_join, _split8_high,
              _split8_low):
        namespace[f.__name__] = _types.FunctionType(f.__code__, namespace, f.__name__)
    return _types.SimpleNamespace(**{name: namespace["_" + name] for name in (
        "split16_join", "split16_high", "split16_low", "split8_join", "split8_high",
        "split8_low")})


#: The codecs as plain Python on NumPy scalars (run, not compiled).
PYTHON = _split_twins()
