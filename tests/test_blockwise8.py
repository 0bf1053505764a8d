"""8-bit blockwise optimizer state (``fastadapt.Blockwise8``) against a NumPy
reference of the same quantization, written here independently of the kernels:

- dequantize: ``map[codes] * absmax[block]`` (bitsandbytes' dynamic map,
  blocks of 256);
- update: ``tests/naive.py`` in float64 on the dequantized values (rounded to
  float32 arrays, as the kernel computes in float32);
- requantize: the block's new absmax is ``max |value|``, and each code is the
  index of the map entry nearest to ``value / absmax`` by brute force over the
  256 entries (a tie to the lower index).

Each step is compared on its own (both sides start from the kernel's current
state). Tolerances: absmax within 4 float32 ulps (float32 versus float64 math);
codes equal except where ``value / absmax`` lies within 1e-5 (relative) of the
midpoint between two codes, where they may differ by one, bounded to under 1%
of the elements; params within 1 float32 ulp plus 8 ulps of the operands (the
parameter, its change, and ``lr`` times a momentum buffer before and after
the step, whose update can cancel: measured 27 ulps of a change where
``momentum * buf`` and the new term nearly cancelled, 20-fold).
"""
import numpy as np
import pytest

import fastadapt
import naive
import optim_cases
from fastadapt.functional import step_for
from fastadapt.kernels.cpu import SERIAL_BELOW
from fastadapt.kernels.blockwise8 import BLOCK, dynamic_map

# primes, 256 +- 1, both sides of the serial/parallel threshold
SIZES = [1, 255, 256, 257, 509, 2053, SERIAL_BELOW - 1, SERIAL_BELOW + 9]
SIGNED = {name: name not in rule.non_negative_state
          for rule in fastadapt.RULES.values() for name in rule.state}
CASES = [("adam", dict(lr=1e-2, weight_decay=0.1)), ("adam", dict(lr=1e-2, amsgrad=True)),
         ("adamw", dict(lr=1e-2)), ("sgd", dict(lr=1e-2, momentum=0.9)),
         ("sgd", dict(lr=1e-2, momentum=0.9, nesterov=True)),
         ("rmsprop", dict(lr=1e-3, centered=True, momentum=0.5)), ("rmsprop", dict(lr=1e-3)),
         ("adagrad", dict(lr=1e-2))]


def ref_dequantize(codes, absmax, signed):
    table = dynamic_map(signed).astype(np.float64)
    scale = np.repeat(absmax.astype(np.float64), BLOCK)[:codes.size]
    return (table[codes] * scale).astype(np.float32)    # float32 x float32: one rounding


def ref_quantize(values, signed):
    """(codes, absmax, distance of each normalised value to its nearest midpoint)."""
    table = dynamic_map(signed).astype(np.float64)
    v = values.astype(np.float64)
    n = v.size
    padded = np.zeros(-(-n // BLOCK) * BLOCK)
    padded[:n] = np.abs(v)
    absmax = padded.reshape(-1, BLOCK).max(axis=1).astype(np.float32)
    scale = np.repeat(absmax.astype(np.float64), BLOCK)[:n]
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.where(scale > 0, v / scale, 0.0)
    distance = np.abs(x[:, None] - table[None, :])
    codes = np.argmin(distance, axis=1).astype(np.uint8)
    mids = (table[:-1] + table[1:]) / 2
    near = np.min(np.abs(x[:, None] - mids[None, :]), axis=1)
    return codes, absmax, near


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name, options", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_against_numpy_quantization(name, options, n):
    rule = fastadapt.RULES[name]
    names = rule.state_for(**options)
    rng = np.random.default_rng(n)
    param = rng.standard_normal(n).astype(np.float32)
    state = {s: fastadapt.Blockwise8(n, signed=SIGNED[s]) for s in names}
    flipped = total = 0
    for k in range(1, 5):
        g = rng.standard_normal(n).astype(np.float32)
        step = {"step": k} if rule.takes_step else {}
        p_ref = param.copy()
        s_ref = {s: ref_dequantize(b.codes, b.absmax, b.signed) for s, b in state.items()}
        np.testing.assert_array_equal(s_ref[names[0]], state[names[0]].dequantize())
        # a momentum buffer's update (momentum * buf + step) can cancel: its
        # rounding errors scale with the terms, bounded by |buf| before + after
        buf = np.abs(s_ref.get("momentum_buffer", np.zeros(n, np.float32))).astype(np.float64)
        getattr(naive, f"{name}_step")(p_ref, g, **s_ref, **step, **options)
        if "momentum_buffer" in s_ref:
            buf += np.abs(s_ref["momentum_buffer"])
        old = param.astype(np.float64)
        step_for(rule)(param, g, **state, **step, **options)
        b = p_ref.astype(np.float64)
        allowed = np.spacing(np.abs(p_ref)).astype(np.float64) + 2.0 ** -21 * (
            np.abs(old) + np.abs(old - b) + options["lr"] * buf)
        assert np.all(np.abs(param - b) <= allowed), (k, np.max(np.abs(param - b) - allowed))
        for s, container in state.items():
            codes, absmax, near = ref_quantize(s_ref[s], container.signed)
            np.testing.assert_allclose(container.absmax, absmax, rtol=2.0 ** -21, atol=0,
                                       err_msg=f"{s}, step {k}")
            differ = container.codes != codes
            assert np.all(np.abs(container.codes.astype(int) - codes.astype(int))[differ] <= 1)
            assert np.all(near[differ] <= 1e-5), (s, k)
            flipped += int(differ.sum())
            total += n
    assert flipped <= max(1, total // 100), f"{flipped} of {total} codes differ"


@pytest.mark.parametrize("n", [255, 1031])
def test_with_bfloat16_params_and_stochastic_rounding(n):
    """8-bit state with 16-bit params: the state is the same as with float32
    params holding the same values (the math is float32 in both); the params
    are the float32 result rounded (stochastically, with a seed)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    rng = np.random.default_rng(3)
    p16 = rng.standard_normal(n).astype(bf16)
    p32 = p16.astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    a = [fastadapt.Blockwise8(n, True), fastadapt.Blockwise8(n, False)]
    b = [fastadapt.Blockwise8(n, True), fastadapt.Blockwise8(n, False)]
    fastadapt.adam_step(p16, g, *a, step=1, lr=1e-2, stochastic_rounding=True, seed=2)
    fastadapt.adam_step(p32, g, *b, step=1, lr=1e-2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.codes, y.codes)
        np.testing.assert_array_equal(x.absmax, y.absmax)
    # the bfloat16 neighbours of the float32 result: truncated (towards zero)
    # and the next one away from zero
    u = p32.view(np.uint32)
    toward = (u & np.uint32(0xFFFF0000)).view(np.float32)
    away = ((u & np.uint32(0xFFFF0000)) + np.uint32(0x10000)).view(np.float32)
    got = p16.astype(np.float32)
    assert np.all((got == toward) | (got == away))
    assert np.any(got == away) and np.any((got == toward) & (p32 != toward))


def test_stochastic_rounding_offset_in_the_blockwise_driver():
    """The 8-bit drivers key the bits on ``rounding_offset + element``: two
    calls over whole blocks with their offsets equal one call."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    n = 5 * BLOCK + 3
    rng = np.random.default_rng(8)
    p0 = rng.standard_normal(n).astype(bf16)
    g = rng.standard_normal(n).astype(np.float32)
    runs = []
    for pieces in ([(0, n)], [(0, 2 * BLOCK), (2 * BLOCK, n)]):
        p = p0.copy()
        state = [fastadapt.Blockwise8(n, True), fastadapt.Blockwise8(n, False)]
        for step in (1, 2):
            for lo, hi in pieces:
                parts = [fastadapt.Blockwise8(hi - lo, s.signed) for s in state]
                for part, s in zip(parts, state):
                    part.codes[:] = s.codes[lo:hi]
                    part.absmax[:] = s.absmax[lo // BLOCK:-(-hi // BLOCK)]
                fastadapt.adam_step(p[lo:hi], g[lo:hi], *parts, step=step, lr=1e-2,
                                    stochastic_rounding=True, seed=4, rounding_offset=lo)
                for part, s in zip(parts, state):
                    s.codes[lo:hi] = part.codes
                    s.absmax[lo // BLOCK:-(-hi // BLOCK)] = part.absmax
        runs.append(p.view(np.uint16))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_chunk_and_thread_invariance():
    """Blocks are independent: the parallel driver equals the serial one, and a
    call on the first k whole blocks equals the whole call's first k blocks."""
    import numba
    n = 5 * BLOCK + 3
    rng = np.random.default_rng(4)
    p0, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    runs = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        before = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            p, m = p0.copy(), fastadapt.Blockwise8(n)
            fastadapt.sgd_step(p, g, m, step=1, lr=0.1, momentum=0.9)
            fastadapt.sgd_step(p, g, m, step=2, lr=0.1, momentum=0.9)
        finally:
            numba.set_num_threads(before)
        runs.append((p, m))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1].codes, runs[1][1].codes)
    k = 2 * BLOCK
    p, m = p0[:k].copy(), fastadapt.Blockwise8(k)
    fastadapt.sgd_step(p, g[:k], m, step=1, lr=0.1, momentum=0.9)
    fastadapt.sgd_step(p, g[:k], m, step=2, lr=0.1, momentum=0.9)
    np.testing.assert_array_equal(p, runs[0][0][:k])
    np.testing.assert_array_equal(m.codes, runs[0][1].codes[:k])
    np.testing.assert_array_equal(m.absmax, runs[0][1].absmax[:2])


def test_zero_size_and_zero_state():
    p = np.zeros(0, np.float32)
    fastadapt.adagrad_step(p, p.copy(), fastadapt.Blockwise8(0, signed=False), step=1)
    b = fastadapt.Blockwise8(300, signed=False)
    assert b.absmax.shape == (2,) and np.all(b.dequantize() == 0)
    p = np.ones(300, np.float32)
    fastadapt.adagrad_step(p, np.zeros(300, np.float32), b, step=1)     # g = 0: no change
    assert np.all(p == 1) and np.all(b.dequantize() == 0)


@pytest.mark.parametrize("make, exc, words", [
    (lambda n: {"exp_avg": fastadapt.Blockwise8(n + 1)}, ValueError, ("exp_avg", "elements")),
    (lambda n: {"param": np.zeros(n), "grad": np.zeros(n), "exp_avg_sq": np.zeros(n)},
     TypeError, ("8-bit", "float64")),
    (lambda n: {"exp_avg": _broken(n)}, ValueError, ("exp_avg.absmax",)),
    (lambda n: {"exp_avg_sq": "not an array"}, TypeError, ("exp_avg_sq",)),
    (lambda n: {"grad": fastadapt.Blockwise8(n)}, TypeError, ("grad", "state arrays only")),
])
def test_bad_containers_raise_and_change_nothing(make, exc, words):
    n = 300
    args = dict(param=np.ones(n, np.float32), grad=np.ones(n, np.float32),
                exp_avg=fastadapt.Blockwise8(n), exp_avg_sq=fastadapt.Blockwise8(n, False))
    args.update(make(n))
    before = {k: (v.codes.copy(), v.absmax.copy()) if isinstance(v, fastadapt.Blockwise8)
              else np.array(v, copy=True) for k, v in args.items()}
    with pytest.raises(exc) as info:
        fastadapt.adam_step(**args, step=1)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    for k, v in args.items():
        if isinstance(v, fastadapt.Blockwise8):
            np.testing.assert_array_equal(v.codes, before[k][0])
        else:
            np.testing.assert_array_equal(np.asarray(v), before[k])


def _broken(n):
    b = fastadapt.Blockwise8(n)
    b.absmax = np.zeros(1, np.float32)
    return b


@pytest.mark.parametrize("special", [False, True], ids=["finite-map", "special-map"])
@pytest.mark.parametrize("signed", [True, False])
def test_bucketed_encoding_equals_the_binary_search(signed, special):
    """The kernels encode with a bfloat16-bucket table and one compare
    (``blockwise8.nearest_code_bucketed``): equal to the eight-compare search of
    ``blockwise8.nearest_code`` on every threshold, its float32 neighbours, both
    ends of every bfloat16 bucket (signalling NaNs included), every code value
    and random values at every scale, NaN and infinities included; for the
    map of blocks holding a non-finite value too."""
    from numba import njit
    from fastadapt.kernels import blockwise8 as S
    code = dynamic_map(signed)
    if special:
        code = S.special_map(code, signed)
    thr = S.thresholds(code)
    buckets = S.bucket_table(thr)
    rng = np.random.default_rng(0)
    t = thr[:255]
    with np.errstate(over="ignore"):        # (the special map's -3.4e38 steps to -inf)
        below, above = (np.nextafter(t, np.float32(e)) for e in (-np.inf, np.inf))
    xs = np.concatenate([t, below, above, code, -code,
                         rng.uniform(-1, 1, 200_000),
                         *(rng.standard_normal(50_000) * 10.0 ** -e for e in range(1, 9)),
                         [0.0, -0.0, 1.0, -1.0, np.nan, 1e-40, -1e-40, np.inf, -np.inf]
                         ]).astype(np.float32)
    edges = np.arange(2**16, dtype=np.uint32) << np.uint32(16)       # kept as float32 bits
    xs = np.concatenate([xs, edges.view(np.float32), (edges | np.uint32(0xFFFF)).view(np.float32)])

    @njit
    def both(xs, buckets, thr):
        out = np.empty((2, xs.size), np.uint8)
        for i in range(xs.size):
            out[0, i] = S.nearest_code(thr, xs[i])
            out[1, i] = S.nearest_code_bucketed(buckets, thr, xs[i])
        return out
    out = both(xs, buckets, thr)
    np.testing.assert_array_equal(out[0], out[1])
    assert np.all(out[1][np.isnan(xs)] == 0)
    if special:
        assert np.isnan(code[0]) and code[255] == np.inf and out[1][xs == np.inf][0] == 255
        assert np.all(np.isfinite(code[out[1][np.isfinite(xs)]]))
        if signed:
            assert code[1] == -np.inf and out[1][xs == -np.inf][0] == 1
    some = xs[::97]
    python = [S.PYTHON.nearest_code_bucketed(buckets, thr, x) for x in some]
    np.testing.assert_array_equal(np.array(python, np.uint8), out[1][::97])


def test_container_checks_its_arguments():
    with pytest.raises(TypeError, match="integer"):
        fastadapt.Blockwise8(2.5)
    with pytest.raises(ValueError, match=">= 0"):
        fastadapt.Blockwise8(-1)
    with pytest.raises(TypeError, match="signed"):
        fastadapt.Blockwise8(3, signed="yes")


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("signed", [True, False])
def test_assign_quantizes_as_the_reference(n, signed):
    """``Blockwise8.assign`` (loading full-precision state): absmax exact, codes
    the nearest except within float32 rounding of a midpoint."""
    rng = np.random.default_rng(n)
    values = rng.standard_normal(n).astype(np.float32) * 10.0 ** rng.integers(-6, 2, n)
    if not signed:
        values = np.abs(values)
    values[:min(n, 3)] = 0.0
    if n > BLOCK:
        values[BLOCK:2 * BLOCK] = 0.0           # an all-zero block keeps absmax 0
    b = fastadapt.Blockwise8(n, signed)
    b.assign(values)
    codes, absmax, near = ref_quantize(values, signed)
    assert np.array_equal(b.absmax, absmax)
    live = np.repeat(absmax > 0, BLOCK)[:n]     # a zero block's codes are moot
    sure = (near > 1e-6) & live
    assert np.array_equal(b.codes[sure], codes[sure])
    assert np.all(np.abs(b.codes[live].astype(int) - codes[live].astype(int)) <= 1)
    assert np.all(b.dequantize()[~live] == 0)


def test_assign_refuses_what_it_cannot_hold_and_changes_nothing():
    b = fastadapt.Blockwise8(300, signed=False)
    b.fill(0.5)
    codes, absmax = b.codes.copy(), b.absmax.copy()
    with pytest.raises(ValueError, match=">= 0"):
        b.assign(-np.ones(300, np.float32))
    with pytest.raises(ValueError, match="299 values for 300"):
        b.assign(np.ones(299, np.float32))
    assert np.array_equal(b.codes, codes) and np.array_equal(b.absmax, absmax)


# ------------------------------------------------------------------ non-finite values
@pytest.mark.parametrize("bad", [1e22, np.inf, -np.inf, np.nan], ids=str)
@pytest.mark.parametrize("name", list(optim_cases.EVERY_STATE))
def test_a_huge_or_non_finite_gradient_stays_in_its_element(name, bad):
    """One gradient element of 1e22 (its square overflows float32), +-inf or
    NaN with 8-bit state: non-finite exactly where torch.optim's float32 step
    is, the rest of its block finite, the next block untouched (see
    ``optim_cases.check_non_finite_confined``); the next block's absmax too."""
    state, other = optim_cases.check_non_finite_confined(name, fastadapt.Blockwise8, BLOCK,
                                                         bad, 512)
    for s, b in state.items():
        assert b.absmax[1:].tobytes() == other[s].absmax[1:].tobytes(), s


@pytest.mark.parametrize("signed", [True, False])
def test_assign_keeps_non_finite_values_in_their_element(signed):
    """``assign`` (loading a torch state dict) takes a NaN or an infinity into
    its element, not into its block's absmax: the other elements decode as a
    block of finite values would, the bad one as itself."""
    rng = np.random.default_rng(5)
    values = np.abs(rng.standard_normal(600)).astype(np.float32)
    if signed:
        values *= np.sign(rng.standard_normal(600)).astype(np.float32)
    bad = {5: np.nan, 300: np.inf, 301: np.nan, 599: np.inf}
    if signed:
        bad[6] = -np.inf
    b, clean = fastadapt.Blockwise8(600, signed), fastadapt.Blockwise8(600, signed)
    bad_values = values.copy()
    bad_values[list(bad)] = list(bad.values())
    b.assign(bad_values)
    for i in bad:
        values[i] = 0.0
    clean.assign(values)
    out, expected = b.dequantize(), clean.dequantize()
    for i, v in bad.items():
        assert np.isnan(out[i]) if np.isnan(v) else out[i] == v, i
    ok = np.ones(600, bool)
    ok[list(bad)] = False
    # the finite values: as close to their own as a block of finite values keeps them
    # (the special map lacks three of the dynamic map's values; the nearest kept one
    # is within its spacing)
    assert np.all(np.abs(out[ok] - values[ok]) <= np.abs(expected[ok] - values[ok])
                  + 0.02 * np.abs(values[ok]) + 1e-5 * np.repeat(clean.absmax, BLOCK)[:600][ok])
    assert np.array_equal(np.abs(b.absmax), np.abs(clean.absmax))
    assert np.all(np.signbit(b.absmax))
