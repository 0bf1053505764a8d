"""Companded 8-bit codes: state in 8 bits per element decoded by arithmetic.

State kept as ``fastadapt.Companded8`` (``state_dtype="int8c"``, after
FlashOptim: Databricks, 2026) stores each element as an 8-bit code and each
group of ``GROUP`` elements one float32 scale, the group's largest finite
magnitude: signed (first moments) a softsign code, ``round(126 * 2x / (1 +
|x|))`` of ``x = value / scale``; unsigned (second moments) the fourth root,
``round(253 * (value / scale) ** (1/4))``. NaN and the infinities have codes
of their own. Decoding and encoding are arithmetic, no table and no branch,
so the loops around them vectorize: the codecs here are what the loop
drivers call (``PYTHON`` holds them as plain Python, for the CUDA
simulator), and :data:`encode_groups` / :data:`decode_groups` convert whole
arrays on the host.
"""
import types as _types

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ._jit import cached
from .convert16 import bits_to_float32, magnitude_bits

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
#: The special codes' bounds as uint8 (``_softsign_special``, ``_root_special``).
_U127, _U129, _U254 = np.uint8(127), np.uint8(129), np.uint8(254)
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


def _softsign_decode(code, scale, finite=False):
    """The value of the signed companded ``code`` (uint8, the bits of an int8
    ``c``) in a group of ``scale``: ``y = c / 126``, inverted through ``y =
    2x / (1 + |x|)``: ``x = y / (2 - |y|)``, times the scale (each step
    rounded to float32; ``c / 126`` is computed without a division, see
    :func:`exact_quotient`, and equals it). Zero decodes as exactly 0;
    codes 127, -127 and -128 as +inf, -inf and NaN. Branch-free (selects).
    ``finite``: the caller knows ``code`` is none of those three (see
    :func:`softsign_special`), and the selects are left out (a literal
    True in an inlined call compiles none of them)."""
    c = signed_code_to_float32(code)
    y = exact_quotient(c, _SIGNED_STEPS, _SIGNED_RECIPROCAL)
    x = y / (_F2 - abs(y)) * scale
    if finite:
        return x
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


def _softsign_encode(value, pre, reciprocal, finite=False):
    """The signed companded code (uint8, an int8's bits) of ``value`` in its
    group (``pre``, ``reciprocal``: :func:`_softsign_scaling` of the group's
    divisor): with ``x = value * pre * reciprocal`` (``|x| <= 1`` to a
    rounding), the nearest integer to ``126 * 2x / (1 + |x|)`` (``x`` within
    a rounding of ``value / divisor``, so a code can differ from the exact
    one where ``value`` lies within a rounding of the boundary between two:
    one division per element). NaN and infinities get their own codes.
    Arithmetic only, no table; branch-free (selects). ``finite``: the
    caller knows ``value`` is finite, and the selects are left out."""
    x = value * pre * reciprocal
    q = np.floor((x + x) / (_F1 + abs(x)) * _SIGNED_STEPS + _HALF)
    if finite:
        return float32_to_signed_code(q)
    q = _C127 if value == _INF else q
    q = -_C127 if value == -_INF else q
    q = -_C128 if value != value else q
    return float32_to_signed_code(q)


def _root_decode(code, scale, finite=False):
    """The value of the unsigned (fourth-root) companded ``code`` in a group
    of ``scale``: ``(c / 253) ** 4 * scale`` (squared twice, each step
    rounded to float32; ``c / 253`` without a division, equal to it, see
    :func:`exact_quotient`). Zero decodes as exactly 0, 254 as +inf, 255 as
    NaN. Branch-free (selects). ``finite``: the caller knows ``code`` is
    below 254 (see :func:`root_special`), and the selects are left out."""
    c = unsigned_code_to_float32(code)
    y = exact_quotient(c, _ROOT_STEPS, _ROOT_RECIPROCAL)
    y = y * y
    v = y * y * scale
    if finite:
        return v
    v = _INF if c == _C254 else v
    v = _NAN if c == _C255 else v
    return v


def _root_scaling(divisor):
    """The factor of a group whose largest finite value is ``divisor`` (at
    least the smallest float32) in :func:`_root_encode`: ``253 /
    divisor ** (1/4)`` (two square roots and a division per group)."""
    return _ROOT_STEPS / np.sqrt(np.sqrt(divisor))


def _root_encode(root, factor, finite=False):
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
    ``finite``: the caller knows ``root`` is finite, and the selects for
    +inf and NaN are left out.
    """
    q = np.floor(np.sqrt(root) * factor + _HALF)
    q = q if q < _ROOT_STEPS else _ROOT_STEPS
    q = _F1 if (q == _F0) & (root > _F0) else q
    if finite:
        return float32_to_unsigned_code(q)
    q = _C254 if root == _INF else q
    q = _C255 if root != root else q
    return float32_to_unsigned_code(q)


def _softsign_special(code):
    """Whether the signed companded ``code`` (uint8 bits) is one of +inf,
    -inf or NaN (127, 129 and 128 as uint8: one contiguous range)."""
    return (code >= _U127) & (code <= _U129)


def _root_special(code):
    """Whether the unsigned companded ``code`` is +inf or NaN (254, 255)."""
    return code >= _U254


_codec_inline = njit(inline="always", error_model="numpy")
softsign_decode = _codec_inline(_softsign_decode)
softsign_scaling = _codec_inline(_softsign_scaling)
softsign_encode = _codec_inline(_softsign_encode)
root_decode = _codec_inline(_root_decode)
root_scaling = _codec_inline(_root_scaling)
root_encode = _codec_inline(_root_encode)
softsign_special = _codec_inline(_softsign_special)
root_special = _codec_inline(_root_special)


def _codec_twins():
    """The codecs as Python on NumPy scalars (the simulator's twins)."""
    namespace = {**globals(), "signed_code_to_float32": _py_signed_code_to_float32,
                 "unsigned_code_to_float32": _py_unsigned_code_to_float32,
                 "float32_to_signed_code": _py_float32_to_signed_code,
                 "float32_to_unsigned_code": _py_float32_to_unsigned_code,
                 "exact_quotient": _py_exact_quotient}
    out = {}
    for f in (_softsign_decode, _softsign_scaling, _softsign_encode, _root_decode,
              _root_scaling, _root_encode, _softsign_special, _root_special):
        name = f.__name__[1:]
        out[name] = _types.FunctionType(f.__code__, namespace, name, f.__defaults__)
    return _types.SimpleNamespace(**out, root_of=_py_root_of,
                                  signed_code_to_float32=_py_signed_code_to_float32,
                                  unsigned_code_to_float32=_py_unsigned_code_to_float32,
                                  exact_quotient=_py_exact_quotient)


#: The codecs as plain Python on NumPy scalars (run, not compiled).
PYTHON = _codec_twins()


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
