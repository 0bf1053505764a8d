"""16-bit storage conversions (kernels/convert16.py) against NumPy and ml_dtypes casts.

Exactness is the claim: every bfloat16 and float16 bit pattern round-trips, and
float32 -> 16-bit matches the reference casts bit for bit (NaN payloads aside:
both sides give a NaN). The Python twins used by the CUDA simulator must equal
the compiled functions on the same inputs. Stochastic rounding is checked for
its support (one of the two neighbours), its bias (a binomial test) and its
reproducibility (the same bits whatever the chunking).
"""
import math

import numpy as np
import pytest
from numba import njit, prange

from fastadapt.kernels import blockwise8 as B, convert16 as S

import naive

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)

ALL16 = np.arange(2**16, dtype=np.uint16)


@njit(parallel=True)
def _bf16_roundtrip(bits, out):
    for i in prange(bits.size):
        out[i] = S.float32_to_bfloat16(S.bfloat16_to_float32(bits[i]))


@njit(parallel=True)
def _half_roundtrip(bits, out):
    for i in prange(bits.size):
        out[i] = S.float32_to_half(S.half_to_float32(bits[i]))


@njit(parallel=True)
def _to_bf16(x, out):
    for i in prange(x.size):
        out[i] = S.float32_to_bfloat16(x[i])


@njit(parallel=True)
def _to_half(x, out):
    for i in prange(x.size):
        out[i] = S.float32_to_half(x[i])


@njit(parallel=True)
def _widen_bf16(bits, out):
    for i in prange(bits.size):
        out[i] = S.bfloat16_to_float32(bits[i])


@njit(parallel=True)
def _widen_half(bits, out):
    for i in prange(bits.size):
        out[i] = S.half_to_float32(bits[i])


@njit(parallel=True)
def _to_bf16_stochastic(x, key0, key1, start, out):
    for i in prange(x.size):
        out[i] = S.float32_to_bfloat16_stochastic(x[i], S.random_bits(key0, key1, start + i))


@njit
def _random(key0, key1, indices, out):
    for j in range(indices.size):
        out[j] = S.random_bits(key0, key1, indices[j])


def _float32_cases(n=200_000, seed=0):
    """Random bit patterns (every class: normal, subnormal, inf, NaN), ordinary
    values, values near the 16-bit formats' overflow and tie points."""
    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    normal = rng.standard_normal(n).astype(np.float32) * np.float32(100)
    tiny = (rng.standard_normal(n) * 1e-6).astype(np.float32)           # float16 subnormals
    # bfloat16 ties: low 16 bits exactly 0x8000, both parities of the kept bit
    ties = ((rng.integers(0, 2**16, 1000, dtype=np.uint32) << 16) | 0x8000).view(np.float32)
    # float16 ties and its overflow threshold 65520
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504, 65519.99, 65520, 65536,
                         -65520, 1e-8, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 2.0**-149,
                         3.4028235e38, -3.4028235e38, 1 + 2.0**-11, 1 + 3 * 2.0**-11],
                        np.float32)
    return np.concatenate([patterns, normal, tiny, ties, specials])


def _same_bits_or_both_nan(actual_bits, expected, dtype):
    got = actual_bits.view(dtype).astype(np.float32)
    want = expected.astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(actual_bits[~nan], expected.view(np.uint16)[~nan])


def test_every_bfloat16_pattern_round_trips():
    out = np.empty_like(ALL16)
    _bf16_roundtrip(ALL16, out)
    values = ALL16.view(BF16).astype(np.float32)
    keep = ~np.isnan(values)
    np.testing.assert_array_equal(out[keep], ALL16[keep])
    assert np.isnan(out[~keep].view(BF16).astype(np.float32)).all()


def test_every_float16_pattern_round_trips():
    out = np.empty_like(ALL16)
    _half_roundtrip(ALL16, out)
    keep = ~np.isnan(ALL16.view(np.float16))
    np.testing.assert_array_equal(out[keep], ALL16[keep])
    assert np.isnan(out[~keep].view(np.float16)).all()


def test_widening_is_exact_for_every_pattern():
    out = np.empty(ALL16.size, np.float32)
    _widen_bf16(ALL16, out)
    np.testing.assert_array_equal(out, ALL16.view(BF16).astype(np.float32))
    _widen_half(ALL16, out)
    np.testing.assert_array_equal(out, ALL16.view(np.float16).astype(np.float32))


def test_float32_to_bfloat16_matches_ml_dtypes():
    x = _float32_cases()
    out = np.empty(x.size, np.uint16)
    _to_bf16(x, out)
    with np.errstate(over="ignore", invalid="ignore"):
        _same_bits_or_both_nan(out, x.astype(BF16), BF16)


def test_float32_to_half_matches_numpy():
    x = _float32_cases()
    out = np.empty(x.size, np.uint16)
    _to_half(x, out)
    with np.errstate(over="ignore", invalid="ignore"):
        _same_bits_or_both_nan(out, x.astype(np.float16), np.float16)


def test_python_twins_equal_compiled_functions():
    """The CUDA simulator runs the Python twins: they must give the same bits."""
    x = _float32_cases(n=2000, seed=1)
    for name, compiled in (("float32_to_bfloat16", _to_bf16), ("float32_to_half", _to_half)):
        out = np.empty(x.size, np.uint16)
        compiled(x, out)
        twin = getattr(S.PYTHON, name)
        assert [int(twin(v)) for v in x] == [int(b) for b in out], name
    for name, compiled in (("bfloat16_to_float32", _widen_bf16),
                           ("half_to_float32", _widen_half)):
        out = np.empty(ALL16.size, np.float32)
        compiled(ALL16, out)
        twin = getattr(S.PYTHON, name)
        got = np.array([twin(b) for b in ALL16[::7]], np.float32)
        np.testing.assert_array_equal(got.view(np.uint32), out[::7].view(np.uint32), name)
    key0, key1 = S.stream_key(7, 3)
    indices = np.array([0, 1, 2, 255, 2**31 - 1, 2**32, 2**40 + 3], np.int64)
    out = np.empty(indices.size, np.uint64)
    _random(key0, key1, indices, out)
    assert [int(S.PYTHON.random_bits(key0, key1, i)) for i in indices] == list(map(int, out))
    sr = np.empty(x.size, np.uint16)
    _to_bf16_stochastic(x, key0, key1, 0, sr)
    twin = [int(S.PYTHON.float32_to_bfloat16_stochastic(v, S.PYTHON.random_bits(key0, key1, i)))
            for i, v in enumerate(x)]
    assert twin == list(map(int, sr))


@njit
def _magnitudes(x, out):
    for i in range(x.size):
        out[i] = S.magnitude_bits(x[i])


def test_magnitude_bits_order_as_magnitudes_with_nan_above_inf():
    """``magnitude_bits`` (the 8-bit state's absmax as an integer maximum): the
    bits of |x|, every NaN above +inf, so the integer maximum over a block's
    bits below +inf's is the bits of its largest finite magnitude and one at
    or above them says the block holds a non-finite value; the Python twin
    agrees."""
    x = _float32_cases(n=4000, seed=2)
    out = np.empty(x.size, np.uint32)
    _magnitudes(x, out)
    np.testing.assert_array_equal(out, x.view(np.uint32) & np.uint32(0x7FFFFFFF))
    assert [int(S.PYTHON.magnitude_bits(v)) for v in x[::13]] == list(map(int, out[::13]))
    inf = np.uint32(0x7F800000)
    for block, bits in zip(np.array_split(x, 97), np.array_split(out, 97)):
        finite = np.isfinite(block)
        top = np.abs(block[finite]).max(initial=np.float32(0))
        assert np.array(np.where(bits < inf, bits, 0).max(), np.uint32).view(np.float32) == top
        assert (bits.max() >= inf) == (not finite.all())


@njit
def _paged(key0, key1, first, count, out):
    base = S.page_base(key0, key1, first)
    for i in range(count):
        out[i] = S.page_bits(base, i)


def test_random_bits_are_the_documented_hash_on_every_page():
    """``random_bits``, ``page_base`` + ``page_bits`` (the loops' form) and
    the Python twins equal the formula, around page boundaries (2**32 and
    its multiples, where the page key changes) and far out."""
    key0, key1 = S.stream_key(4, 17)
    starts = [0, 2**32 - 5, 3 * 2**32 - 2, 2**40 + 12345, 2**62 - 9]
    index = np.concatenate([np.arange(s, s + 9, dtype=np.uint64) for s in starts])
    want = naive.stochastic_rounding_bits(key0, key1, index)
    got = np.empty(index.size, np.uint64)
    _random(key0, key1, index.astype(np.int64), got)
    np.testing.assert_array_equal(got, want)
    assert [int(S.PYTHON.random_bits(key0, key1, int(i))) for i in index] == list(map(int, want))
    for s in starts:                # a page's loop counts up from its first element
        count = min(9, 2**32 - s % 2**32)
        paged = np.empty(count, np.uint64)
        _paged(key0, key1, s, count, paged)
        np.testing.assert_array_equal(paged, naive.stochastic_rounding_bits(
            key0, key1, np.arange(s, s + count, dtype=np.uint64)))
        base = S.PYTHON.page_base(key0, key1, s)
        assert [int(S.PYTHON.page_bits(base, i)) for i in range(count)] == list(map(int, paged))
    # the page key changes the stream: the page after repeats no bits of the first
    first = naive.stochastic_rounding_bits(key0, key1, np.arange(4096, dtype=np.uint64))
    second = naive.stochastic_rounding_bits(key0, key1, np.arange(4096, dtype=np.uint64) + np.uint64(2**32))
    assert (first == second).mean() < 1e-3


def test_random_bits_are_uniform_and_keyed():
    key0, key1 = S.stream_key(0, 1)
    n = 1 << 16
    bits = np.empty(n, np.uint64)
    _random(key0, key1, np.arange(n, dtype=np.int64), bits)
    assert bits.max() < 2**32
    # each of the 32 bits (bfloat16 rounding uses the top 16, float16's the
    # low 13 to 24) is set about half the time: a fair bit over 65536 draws
    # has sd 128, 6 sd = 768
    ones = [(bits >> k & 1).sum() for k in range(32)]
    assert all(abs(c - n / 2) < 768 for c in ones), ones
    other = np.empty(n, np.uint64)
    _random(*S.stream_key(0, 2), np.arange(n, dtype=np.int64), other)
    assert (bits == other).mean() < 1e-3             # another step: another stream
    _random(*S.stream_key(1, 1), np.arange(n, dtype=np.int64), other)
    assert (bits == other).mean() < 1e-3             # another seed: another stream


def _chi_square(counts):
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def test_rounding_bits_histograms_are_flat():
    """The 16 bits bfloat16 rounding adds (the top half) over 2**20 consecutive
    elements: their 65536 values equally often, and the top 4 bits of
    neighbouring elements independent (their 256 joint values equally often).
    Chi-square bounds: the mean plus 6 standard deviations (sqrt(2 df)); a
    counter, or a hash without avalanche, fails both by orders of magnitude."""
    key0, key1 = S.stream_key(12, 3)
    n = 1 << 20
    bits = np.empty(n, np.uint64)
    _random(key0, key1, np.arange(2**32 - n // 2, 2**32 + n // 2, dtype=np.int64), bits)
    top = (bits >> np.uint64(16)).astype(np.int64)
    df = 2**16 - 1
    assert _chi_square(np.bincount(top, minlength=2**16)) < df + 6 * np.sqrt(2 * df)
    nibble = top >> 12
    pairs = np.bincount(nibble[:-1] * 16 + nibble[1:], minlength=256)
    assert _chi_square(pairs) < 255 + 6 * np.sqrt(2 * 255)


@njit
def _round_over_steps(x, keys, index, out):
    for s in range(out.size):
        out[s] = S.float32_to_bfloat16_stochastic(x, S.random_bits(keys[s, 0], keys[s, 1],
                                                                   index))


@pytest.mark.parametrize("index", [0, 2**32 - 1, 2**32 + 5])
def test_one_element_rounds_without_bias_over_steps(index):
    """One element's value rounded at 16384 steps (a new stream each step):
    the mean of the rounded values is the value, within 6 standard deviations
    of a binomial mean (the gap times sqrt(p (1 - p) / steps), here about
    0.004 of the gap), where rounding to nearest would be off by up to half
    the gap."""
    steps = 16384
    keys = np.array([S.stream_key(21, s) for s in range(1, steps + 1)], np.uint64)
    for value in np.float32([1 + 0.3 * 2.0**-7, -3.0 * (1 + 0.71 * 2.0**-7), 1e-30, 7.77e7]):
        out = np.empty(steps, np.uint16)
        _round_over_steps(value, keys, index, out)
        rounded = out.view(BF16).astype(np.float64)
        lo = float(np.array(value.view(np.uint32) & 0xFFFF0000, np.uint32).view(np.float32))
        hi = float(np.array((value.view(np.uint32) & 0xFFFF0000) + 0x10000,
                            np.uint32).view(np.float32))
        assert set(np.unique(rounded)) <= {lo, hi}
        p = (float(value) - lo) / (hi - lo)
        bound = 6 * abs(hi - lo) * np.sqrt(p * (1 - p) / steps)
        assert abs(rounded.mean() - float(value)) <= bound, (value, rounded.mean())


def test_stochastic_rounding_picks_a_neighbour_and_is_unbiased():
    rng = np.random.default_rng(3)
    values = rng.standard_normal(64).astype(np.float32)
    draws = 4096
    x = np.repeat(values, draws)
    out = np.empty(x.size, np.uint16)
    _to_bf16_stochastic(x, *S.stream_key(11, 5), 0, out)
    rounded = out.view(BF16).astype(np.float64).reshape(values.size, draws)
    # the two neighbours: truncation toward zero and one ulp further out
    low = (values.view(np.uint32) & 0xFFFF0000).view(np.float32).astype(np.float64)
    high = ((values.view(np.uint32) & 0xFFFF0000) + 0x10000).view(np.float32).astype(np.float64)
    for row, lo, hi, v in zip(rounded, low, high, values.astype(np.float64)):
        assert set(np.unique(row)) <= {lo, hi}
        p = (v - lo) / (hi - lo)                      # probability of rounding out
        frac = np.mean(row == hi)
        sd = np.sqrt(p * (1 - p) / draws)
        assert abs(frac - p) <= 6 * sd + 1 / 65536, (v, p, frac)


def test_stochastic_rounding_keeps_exact_values_and_specials():
    exact = ALL16.view(BF16).astype(np.float32)
    out = np.empty(exact.size, np.uint16)
    _to_bf16_stochastic(exact, *S.stream_key(1, 1), 0, out)
    keep = ~np.isnan(exact)
    np.testing.assert_array_equal(out[keep], ALL16[keep])     # inf and -0.0 included
    assert np.isnan(out[~keep].view(BF16).astype(np.float32)).all()


def test_small_updates_move_in_expectation():
    """The 'weight decay does nothing in bf16' failure: 1 - 1e-4 rounds back to 1
    to nearest-even, but stochastic rounding moves the mean by the update."""
    n, steps, update = 20_000, 50, np.float32(1e-4)
    p = np.full(n, 1.0, np.float32).astype(BF16).view(np.uint16)
    nearest = p.copy()
    for step in range(1, steps + 1):
        x = p.view(BF16).astype(np.float32) - update
        _to_bf16_stochastic(x, *S.stream_key(42, step), 0, p)
        y = nearest.view(BF16).astype(np.float32) - update
        _to_bf16(y, nearest)
    assert (nearest.view(BF16).astype(np.float32) == 1.0).all()      # stuck
    mean = p.view(BF16).astype(np.float64).mean()
    expected = 1.0 - steps * float(update)
    # per element the error is a sum of independent roundings of at most one
    # bf16 ulp below 1 (2**-8): sd <= 2**-8 * sqrt(steps) / sqrt(n)
    assert abs(mean - expected) < 6 * 2.0**-8 * np.sqrt(steps / n)


@pytest.mark.parametrize("chunk", [1, 7, 256, 1009])
def test_stochastic_rounding_does_not_depend_on_chunking(chunk):
    x = np.random.default_rng(5).standard_normal(3001).astype(np.float32)
    key = S.stream_key(9, 2)
    whole = np.empty(x.size, np.uint16)
    _to_bf16_stochastic(x, *key, 0, whole)
    pieces = np.empty_like(whole)
    for start in range(0, x.size, chunk):
        _to_bf16_stochastic(x[start:start + chunk], *key, start, pieces[start:start + chunk])
    np.testing.assert_array_equal(pieces, whole)


def test_stream_key_is_deterministic_and_spreads():
    assert S.stream_key(3, 4) == S.stream_key(3, 4)
    keys = {S.stream_key(seed, step) for seed in range(50) for step in range(50)}
    assert len(keys) == 2500
    assert all(k < 2**32 for pair in keys for k in pair)


# ------------------------------------------------------------------ 8-bit codes
def _bitsandbytes_dynamic_map(torch, signed):
    """bitsandbytes.functional.create_dynamic_map(signed), as published, in torch."""
    max_exponent_bits, total_bits = 7, 8
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                             else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        boundaries = torch.linspace(0.1, 1, fraction_items)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    assert additional_items == 0
    data.append(0)
    data.append(1.0)
    data += [0] * (256 - len(data))
    data.sort()
    return torch.Tensor(data).numpy()


@pytest.mark.parametrize("signed", [True, False])
def test_dynamic_map_is_bitsandbytes_map(torch, signed):
    ours = B.dynamic_map(signed)
    theirs = _bitsandbytes_dynamic_map(torch, signed)
    assert ours.dtype == np.float32 and ours.shape == (256,)
    np.testing.assert_array_equal(ours, theirs)
    assert np.all(np.diff(ours) >= 0)
    assert ours[-1] == 1.0 and (-1.0 < ours[0] < -0.99 if signed else ours[0] == 0.0)


@njit
def _codes(table, x, out):
    for i in range(x.size):
        out[i] = B.nearest_code(table, x[i])


def _nearest_reference(code, x):
    """argmin |code - x| in float64, the lower index on ties (code is sorted, so
    the first minimum)."""
    d = np.abs(code.astype(np.float64)[None, :] - x.astype(np.float64)[:, None])
    return np.argmin(d, axis=1).astype(np.uint8)


@pytest.mark.parametrize("signed", [True, False])
def test_nearest_code_matches_argmin(signed):
    code = B.dynamic_map(signed)
    rng = np.random.default_rng(2)
    c = code.astype(np.float64)
    midpoints = ((c[:-1] + c[1:]) / 2).astype(np.float32)
    x = np.concatenate([
        rng.uniform(-1.2 if signed else -0.2, 1.2, 20_000).astype(np.float32),
        (rng.standard_normal(5000) * 1e-4).astype(np.float32),   # the dense region
        code, midpoints, np.nextafter(midpoints, np.float32(2)),
        np.nextafter(midpoints, np.float32(-2)),
        np.array([-np.inf, np.inf, 0.0, -0.0], np.float32)])
    table = B.thresholds(code)
    out = np.empty(x.size, np.uint8)
    _codes(table, x, out)
    finite = np.isfinite(x)         # (the reference's distances are all inf for +-inf)
    np.testing.assert_array_equal(out[finite], _nearest_reference(code, x[finite]))
    assert out[x == np.inf][0] == 255 and out[x == -np.inf][0] == 0
    assert [int(B.PYTHON.nearest_code(table, v)) for v in x[::97]] == list(map(int, out[::97]))


# ------------------------------------------------------------------ float16 stochastic rounding
@njit(parallel=True)
def _to_half_stochastic(x, key0, key1, start, out):
    for i in prange(x.size):
        out[i] = S.float32_to_half_stochastic(x[i], S.random_bits(key0, key1, start + i))


def _half_stochastic_reference(x, r):
    """The specification in float64 and Python integers: with ``u`` float16's
    spacing at ``|x|`` and ``d`` the bits float32 has below it, ``|x|`` rounds
    up from ``floor(|x| / u) * u`` when its dropped fraction plus the low
    ``d`` random bits reach ``2**d``; below float16's smallest subnormal
    (``2**-24``) it rounds up to it when the low 24 random bits, as an
    integer, are below ``|x| * 2**48``."""
    a = abs(float(x))
    if a >= 2.0 ** -24:
        exponent = math.frexp(a)[1] - 1
        spacing = 2.0 ** (max(exponent, -14) - 10)
        d = (max(exponent, -14) - 10) - (exponent - 23)
        q = a / spacing
        k = math.floor(q)
        up = (r % 2 ** d) + round((q - k) * 2 ** d) >= 2 ** d
        value = (k + up) * spacing
    else:
        value = 2.0 ** -24 if (r % 2 ** 24) < a * 2.0 ** 48 else 0.0
    with np.errstate(over="ignore"):
        return int(np.array(np.float16(math.copysign(value, x))).view(np.uint16))


def test_half_stochastic_rounding_matches_its_specification_and_twin():
    x = _float32_cases(40_000, seed=4)
    x = np.concatenate([x, np.float32([65504.0, 65519.0, 65520.0, 65535.9, 70000.0,
                                       2.0 ** -24, 2.0 ** -25, 3e-8, 1e-12, 1e-45])])
    key0, key1 = S.stream_key(3, 8)
    out = np.empty(x.size, np.uint16)
    _to_half_stochastic(x, key0, key1, 0, out)
    py = S.PYTHON
    twin = [int(py.float32_to_half_stochastic(v, py.random_bits(key0, key1, i)))
            for i, v in enumerate(x)]
    assert twin == list(map(int, out))
    bits = np.empty(x.size, np.uint64)
    _random(key0, key1, np.arange(x.size, dtype=np.int64), bits)
    finite = np.isfinite(x)
    want = [_half_stochastic_reference(v, int(r)) for v, r in zip(x[finite], bits[finite])]
    assert want == list(map(int, out[finite]))
    got = out[~finite].view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(x[~finite]))
    np.testing.assert_array_equal(got[~np.isnan(got)], x[~finite][~np.isnan(got)])


def test_half_stochastic_rounding_is_unbiased_and_keeps_exact_values():
    rng = np.random.default_rng(8)
    # normal and subnormal float16 range, and below its smallest subnormal
    values = np.concatenate([rng.standard_normal(24), rng.standard_normal(12) * 1e-6,
                             rng.standard_normal(4) * 2e-8]).astype(np.float32)
    draws = 4096
    out = np.empty(values.size * draws, np.uint16)
    _to_half_stochastic(np.repeat(values, draws), *S.stream_key(2, 9), 0, out)
    rounded = out.view(np.float16).astype(np.float64).reshape(values.size, draws)
    for row, v in zip(rounded, values.astype(np.float64)):
        lo = float(np.float16(v)) if abs(float(np.float16(v))) <= abs(v) else \
            float(np.nextafter(np.float16(v), np.float16(0)))
        hi = float(np.nextafter(np.float16(lo), np.float16(np.copysign(np.inf, v))))
        assert set(np.unique(row)) <= {lo, hi}, v
        p = (v - lo) / (hi - lo)
        sd = np.sqrt(p * (1 - p) / draws)
        assert abs(np.mean(row == hi) - p) <= 6 * sd + 1 / 65536, (v, p)
    exact = ALL16.view(np.float16).astype(np.float32)
    out = np.empty(exact.size, np.uint16)
    _to_half_stochastic(exact, *S.stream_key(1, 1), 0, out)
    keep = ~np.isnan(exact)
    np.testing.assert_array_equal(out[keep], ALL16[keep])     # inf and -0.0 included
