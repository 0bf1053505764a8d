"""Blockwise 8-bit codes: bitsandbytes' dynamic map and the tables that encode into it.

State kept as ``fastadapt.Blockwise8`` (``state_dtype="int8"``) stores each
element as a ``uint8`` index into a sorted map of 256 values, times its
block's float32 absmax (Dettmers et al., 2022). This module builds the maps
(:func:`dynamic_map`, and :func:`special_map` for blocks that hold a NaN or
an infinity), their encoding tables (:func:`thresholds`, :func:`bucket_table`)
and the compiled encoders the loop drivers call (:data:`nearest_code`,
:data:`nearest_code_bucketed`; ``PYTHON`` holds them as plain Python, for the
CUDA simulator). A block's absmax is an integer maximum of
``convert16.magnitude_bits``.
"""
import types as _types

import numpy as np
from numba import njit

from . import convert16
from .convert16 import float32_to_bits

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


def _nearest_code_bucketed(buckets, thresholds, x):
    """:func:`nearest_code` in two loads: the bucket of ``x``'s top 16 bits,
    then at most one step up (see :func:`bucket_table`). Equal to it for every
    float32 (NaN: 0)."""
    k = np.int64(buckets[float32_to_bits(x) >> np.uint32(16)])
    k += np.int64(x >= thresholds[k])
    return np.uint8(k) if x == x else np.uint8(0)


nearest_code_bucketed = njit(inline="always")(_nearest_code_bucketed)


#: The encoders as plain Python on NumPy scalars (run, not compiled).
PYTHON = _types.SimpleNamespace(
    nearest_code=_nearest_code,
    nearest_code_bucketed=_types.FunctionType(
        _nearest_code_bucketed.__code__,
        {**globals(), "float32_to_bits": convert16.PYTHON.float32_to_bits},
        "nearest_code_bucketed"))
