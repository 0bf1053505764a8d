"""fastadapt.grad_norm: accuracy, determinism, non-finite values, checks, GPU twin.

Reference: the exact sum of the squares (``math.fsum`` of float64 squares;
the square of a float32 is exact in float64) where it is cheap, else
NumPy's pairwise float64 sum (relative error below ~1e-15 at these sizes)
and ``torch.linalg.vector_norm`` of the float64 values.

Tolerance, relative, on the norm:
- ``EXACT_RTOL = 2e-14`` against the exact sum: the kernel's bound is below
  1e-14 at any size (kernels/reduce.py: a chunk adds at most 72 roundings of
  2**-53 = 8e-15 to non-negative terms, fsum one more, the square root halves
  it), plus the reference's own final rounding.
- ``RTOL = 1e-12`` against torch's float64 ``vector_norm`` of small arrays
  and ``TORCH_RTOL = 2e-12`` of big ones: torch's own error grows with the
  size (already 1e-14 at 65 539 elements, 6.2e-13 at 10**8). Big arrays are
  also checked at ``EXACT_RTOL`` against a blocked float64 reference.

The GPU kernel runs under Numba's CUDA simulator in a subprocess (see
``test_cuda_sim.py`` for why) and must equal the CPU's result bit for bit.
"""
import math
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import fastadapt
from fastadapt.kernels import reduce as kernels

from conftest import DTYPES

EXACT_RTOL = 2e-14
RTOL = 1e-12
TORCH_RTOL = 2e-12
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
sim = pytest.mark.skipif(not SIMULATOR, reason="runs in test_simulator_suite's subprocess")
host = pytest.mark.skipif(SIMULATOR, reason="runs outside the simulator")

SIZES = [0, 1, 7, 97, 255, 257, 1009, kernels.CHUNK - 1, kernels.CHUNK + 1,
         3 * kernels.CHUNK + 13, 100_003]


def _exact_norm(*arrays):
    squares = (np.asarray(a, np.float64).reshape(-1) ** 2 for a in arrays)
    return math.sqrt(math.fsum(x for s in squares for x in s.tolist()))


def _random(n, dtype, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) * scale).astype(dtype)


# ------------------------------------------------------------------ accuracy
@host
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", SIZES)
def test_matches_exact_sum(n, dtype):
    x = _random(n, dtype, seed=n, scale=3.0)
    got = fastadapt.grad_norm(x)
    assert isinstance(got, float)
    assert got == pytest.approx(_exact_norm(x), rel=EXACT_RTOL, abs=0)


@host
def test_many_arrays_of_mixed_dtypes_and_shapes(torch):
    arrays = [_random(s, d, seed=i) for i, (s, d) in enumerate(
        [(7, np.float32), (0, np.float64), (1, np.float64), (1009, np.float32)])]
    arrays.append(_random(35, np.float32, seed=9).reshape(5, 7))
    expected = _exact_norm(*arrays)
    assert fastadapt.grad_norm(*arrays) == pytest.approx(expected, rel=EXACT_RTOL)
    flat = torch.cat([torch.from_numpy(a).double().reshape(-1) for a in arrays])
    assert fastadapt.grad_norm(*arrays) == pytest.approx(
        torch.linalg.vector_norm(flat).item(), rel=RTOL)
    assert fastadapt.grad_norm() == 0.0
    assert fastadapt.grad_norm(np.empty(0, np.float32)) == 0.0


@host
def test_grad_scale_divides():
    x = _random(1000, np.float32, seed=3)
    assert fastadapt.grad_norm(x * np.float32(2 ** 16), grad_scale=2 ** 16) == \
        fastadapt.grad_norm(x)
    assert fastadapt.grad_norm(x, grad_scale=3.0) == fastadapt.grad_norm(x) / 3.0


def _blocked_norm(x):
    """A float64 reference for big float32 arrays without a float64 copy of
    them: squares (exact) of 256-element rows summed by NumPy's pairwise sum
    (< 20 roundings), the row sums added exactly with fsum; relative error
    below 3e-15."""
    assert x.size % 256 == 0
    rows = []
    for start in range(0, x.size, 2 ** 20):
        piece = x[start:start + 2 ** 20].astype(np.float64)
        rows.extend(np.sum((piece * piece).reshape(-1, 256), axis=1).tolist())
    return math.sqrt(math.fsum(rows))


def _big_case(n, torch):
    """Against the blocked reference at EXACT_RTOL, and against torch's float64
    norm at TORCH_RTOL: torch's own error grows with the size (measured 6.2e-13
    at 10**8 elements, seed 11, where this kernel is 2e-16 from the reference)."""
    x = _random(n, np.float32, seed=11)
    got = fastadapt.grad_norm(x)
    assert got == pytest.approx(_blocked_norm(x), rel=EXACT_RTOL)
    reference = torch.linalg.vector_norm(torch.from_numpy(x), dtype=torch.float64).item()
    assert got == pytest.approx(reference, rel=TORCH_RTOL)
    return x, got


@host
@pytest.mark.slow
def test_2_to_the_24(torch):
    x, got = _big_case(2 ** 24, torch)
    # The tolerance has teeth: a sequential float32 sum is off by far more.
    float32_sum = math.sqrt(float(np.cumsum(x * x, dtype=np.float32)[-1]))
    assert abs(float32_sum - got) > 1000 * EXACT_RTOL * got


@host
@pytest.mark.slow
def test_10_to_the_8(torch):
    _big_case(10 ** 8, torch)


# ------------------------------------------------------------------ determinism
@host
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_same_bits_for_every_thread_count(dtype):
    x = _random(50 * kernels.CHUNK + 17, dtype, seed=5)
    results = set()
    before = numba.get_num_threads()
    try:
        for threads in range(1, numba.config.NUMBA_NUM_THREADS + 1):
            numba.set_num_threads(threads)
            results.add(fastadapt.grad_norm(x))
    finally:
        numba.set_num_threads(before)
    # and with more threads than this machine has cores, in a fresh process,
    # which loads the kernel from the disk cache rather than compiling it
    code = ("import numpy as np, fastadapt; x = np.load('{}'); "
            "print(repr(fastadapt.grad_norm(x))); "
            "from fastadapt.kernels.reduce import sum_of_squares_kernels; "
            "k = sum_of_squares_kernels(x.dtype); "
            "print(sum(k.parallel.stats.cache_misses.values()))")
    return_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"grad_norm_{os.getpid()}.npy"
    np.save(return_path, x)
    try:
        out = subprocess.run([sys.executable, "-c", code.format(return_path)],
                             env={**os.environ, "NUMBA_NUM_THREADS": "7"},
                             capture_output=True, text=True, timeout=300)
    finally:
        return_path.unlink()
    assert out.returncode == 0, out.stderr[-3000:]
    norm, misses = out.stdout.split()
    results.add(float(norm))
    assert misses == "0", "the fresh process compiled the kernel instead of loading it"
    assert len(results) == 1, results


@host
def test_serial_and_parallel_kernels_agree():
    x = _random(5 * kernels.CHUNK + 3, np.float32, seed=2)
    starts, stops = kernels.chunks(x.size)
    a, b = np.empty(starts.size), np.empty(starts.size)
    kernels.SUM_OF_SQUARES.serial(x, starts, stops, a)
    kernels.SUM_OF_SQUARES.parallel(x, starts, stops, b)
    np.testing.assert_array_equal(a, b)


@host
def test_float32_kernel_with_fma_rounds_as_multiply_then_add():
    # The float32 kernels may fuse acc + v * v into one fma: exact only because
    # a float32's square is exact in float64. Same bits as the unfused kernel,
    # over magnitudes from subnormal to near overflow.
    rng = np.random.default_rng(9)
    x = (rng.standard_normal(4 * kernels.CHUNK + 77)
         * np.exp2(rng.integers(-140, 120, 4 * kernels.CHUNK + 77))).astype(np.float32)
    starts, stops = kernels.chunks(x.size)
    plain, fused = np.empty(starts.size), np.empty(starts.size)
    kernels.SUM_OF_SQUARES.parallel(x, starts, stops, plain)
    f32 = kernels.sum_of_squares_kernels(np.float32)
    assert f32 is not kernels.SUM_OF_SQUARES
    for k in (f32.serial, f32.parallel):
        fused[:] = np.nan
        k(x, starts, stops, fused)
        np.testing.assert_array_equal(fused, plain)
    assert kernels.sum_of_squares_kernels(np.float64) is kernels.SUM_OF_SQUARES


@host
def test_chunking():
    """Arrays split at chunk boundaries give the same bits (the partials are
    the same and fsum is exact); other chunk sizes agree to the tolerance."""
    x = _random(4 * kernels.CHUNK + 1001, np.float32, seed=7)
    whole = fastadapt.grad_norm(x)
    c = kernels.CHUNK
    assert fastadapt.grad_norm(x[:c], x[c:3 * c], x[3 * c:]) == whole
    assert fastadapt.grad_norm(x[3 * c:], x[:c], x[c:3 * c]) == whole   # order of arrays
    exact = _exact_norm(x)
    for chunk in (1, 7, 256, 1000, 2 ** 20):
        starts, stops = kernels.chunks(x.size, chunk=chunk)
        out = np.empty(starts.size)
        kernels.SUM_OF_SQUARES.parallel(x, starts, stops, out)
        assert math.sqrt(math.fsum(out)) == pytest.approx(exact, rel=EXACT_RTOL)


def _fsum_or_inf(values):
    try:
        return math.fsum(values)
    except OverflowError:
        return math.inf


def _exact_float(values):
    limbs = np.zeros(kernels.LIMBS, np.int64)
    assert kernels.ADD_EXACTLY(np.asarray(values, np.float64), limbs) == 0.0
    try:
        return kernels.exact_float(kernels.limbs_integer(limbs))
    except OverflowError:
        return math.inf


@host
@pytest.mark.parametrize("kind", ["similar", "every_exponent", "subnormal", "near_overflow",
                                  "overflowing", "cancelling_carries"])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 1023, 4099])
def test_add_exactly_rounds_as_fsum(kind, n):
    """The limb accumulator is exact and rounds once, to nearest even: equal
    to ``math.fsum`` (also exact, correctly rounded) on every kind of value."""
    rng = np.random.default_rng(n)
    big = np.finfo(np.float64).max
    values = {
        "similar": rng.random(n) * 2.0 ** 14,
        "every_exponent": rng.random(n) * np.exp2(rng.integers(-1074, 1024, n).astype(float)),
        "subnormal": rng.integers(0, 2 ** 52, n) * 2.0 ** -1074,
        "near_overflow": np.full(n, big / max(n, 1)),
        "overflowing": np.full(n, big),
        # every 32-bit half all ones: the most carries between limbs
        "cancelling_carries": np.full(n, (2.0 ** 53 - 1) * 2.0 ** 970),
    }[kind]
    values = np.where(np.isfinite(values), values, big)
    assert _exact_float(values) == _fsum_or_inf(values.tolist())
    assert _exact_float(values[::-1]) == _exact_float(values)


@host
def test_add_exactly_ties_round_to_even():
    # 1 + 2**-53 is a tie between 1 and its successor: even (1.0) wins;
    # 1 + 2**-52 + 2**-53 ties between two odd/even neighbours: 1 + 2**-51
    assert _exact_float([1.0, 2.0 ** -53]) == 1.0
    assert _exact_float([1.0, 2.0 ** -52, 2.0 ** -53]) == 1.0 + 2.0 ** -51
    assert _exact_float([1.0, 2.0 ** -53, 5e-324]) == 1.0 + 2.0 ** -52   # just past the tie


@host
def test_add_exactly_reports_non_finite_and_rejects_negatives():
    def special(values):
        return kernels.ADD_EXACTLY(np.array(values, np.float64),
                                   np.zeros(kernels.LIMBS, np.int64))
    assert special([1.0, 2.0]) == 0.0
    assert special([1.0, np.inf]) == np.inf
    assert np.isnan(special([np.inf, np.nan, 1.0]))
    assert np.isnan(special([np.nan, np.inf]))
    with pytest.raises(ValueError, match="negative"):
        special([1.0, -2.0])


@host
def test_norm_of_moves_full_limbs_into_a_python_int(monkeypatch):
    """Past its int64 headroom the accumulator is flushed: with the flush
    forced every 3 partials the result is unchanged (and still exact)."""
    from fastadapt import norm
    rng = np.random.default_rng(4)
    parts = [rng.random(n) * 2.0 ** rng.integers(-30, 30) for n in (0, 1, 5, 11)]
    exact = math.sqrt(math.fsum(v for p in parts for v in p.tolist()))
    assert norm.norm_of(parts) == exact
    monkeypatch.setattr(norm, "_PARTIALS_PER_FLUSH", 3)
    assert norm.norm_of(parts) == exact
    assert np.isnan(norm.norm_of(parts + [np.array([np.inf]), np.array([np.nan, 1.0])]))
    assert norm.norm_of([np.array([np.finfo(np.float64).max] * 2)]) == math.inf


@host
def test_chunks_cover_segments_only():
    starts, stops = kernels.chunks(100, segments=[(0, 10), (16, 0), (32, 40)], chunk=16)
    assert starts.dtype == stops.dtype == np.int64
    assert list(zip(starts, stops)) == [(0, 10), (32, 48), (48, 64), (64, 72)]
    assert kernels.chunks(0)[0].size == 0


# ------------------------------------------------------------------ non-finite
@host
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("where", [0, 1500, -1])
def test_non_finite(torch, dtype, where):
    n = 3 * kernels.CHUNK + 5
    x = _random(n, dtype, seed=1)
    x[where] = np.inf
    assert fastadapt.grad_norm(x) == math.inf == torch.linalg.vector_norm(
        torch.from_numpy(x)).item()
    x[where] = -np.inf
    assert fastadapt.grad_norm(x) == math.inf
    x[(where + 7) % n] = np.nan            # NaN wins over inf, wherever it is
    assert math.isnan(fastadapt.grad_norm(x))
    assert math.isnan(torch.linalg.vector_norm(torch.from_numpy(x)).item())
    y = _random(n, dtype, seed=1)
    y[where] = np.nan
    assert math.isnan(fastadapt.grad_norm(y))
    assert math.isnan(fastadapt.grad_norm(np.ones(3, dtype), y))   # in the second array


def _sixteen_bit(name):
    if name == "float16":
        return np.dtype(np.float16)
    return np.dtype(pytest.importorskip("ml_dtypes").bfloat16)


@host
@pytest.mark.parametrize("name", ["bfloat16", "float16"])
@pytest.mark.parametrize("n", SIZES)
def test_16_bit_gradients_equal_their_float32_copy(name, n):
    """16-bit gradients are read as bit patterns and widened in the kernel:
    exact, so the result has the same bits as the float32 copy's (and so the
    same accuracy), over every binade the format has, subnormals included."""
    dtype = _sixteen_bit(name)
    info = {"float16": (-24, 15), "bfloat16": (-133, 127)}[name]
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * np.exp2(rng.integers(*info, n))).astype(dtype)
    x = np.where(np.isfinite(x), x, dtype.type(1.0)).astype(dtype)
    assert fastadapt.grad_norm(x) == fastadapt.grad_norm(x.astype(np.float32))
    assert fastadapt.grad_norm(x.reshape(1, -1), x[: n // 2]) == fastadapt.grad_norm(
        x.astype(np.float32), x[: n // 2].astype(np.float32))
    if n:
        for where in (0, n // 2, n - 1):
            bad = x.copy()
            bad[where] = np.inf
            assert fastadapt.grad_norm(bad) == math.inf
            bad[n - 1 - where] = np.nan
            assert math.isnan(fastadapt.grad_norm(bad))


@host
@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_16_bit_kernels_read_the_bits(name):
    """The 16-bit kernels take the uint16 view (no float32 copy is made), and
    their serial and parallel versions agree."""
    dtype = _sixteen_bit(name)
    x = _random(5 * kernels.CHUNK + 3, dtype, seed=5)
    k = kernels.sum_of_squares_kernels(dtype)
    assert k not in (kernels.SUM_OF_SQUARES, kernels.SUM_OF_SQUARES_F32)
    starts, stops = kernels.chunks(x.size)
    a, b, ref = (np.empty(starts.size) for _ in range(3))
    k.serial(x.view(np.uint16), starts, stops, a)
    k.parallel(x.view(np.uint16), starts, stops, b)
    kernels.SUM_OF_SQUARES.parallel(x.astype(np.float64), starts, stops, ref)
    np.testing.assert_array_equal(a, ref)
    np.testing.assert_array_equal(b, ref)


@host
def test_float32_squares_cannot_overflow_float64_ones_can(torch):
    big = np.full(1000, np.finfo(np.float32).max, np.float32)
    expected = math.sqrt(1000) * float(np.finfo(np.float32).max)
    assert fastadapt.grad_norm(big) == pytest.approx(expected, rel=EXACT_RTOL)
    huge = np.full(10, 1e200)
    assert fastadapt.grad_norm(huge) == math.inf == torch.linalg.vector_norm(
        torch.from_numpy(huge)).item()
    many = np.full(3 * kernels.CHUNK, 1e153)  # finite partials whose sum overflows
    assert fastadapt.grad_norm(many) == math.inf


# ------------------------------------------------------------------ checks
@host
@pytest.mark.parametrize("args, kwargs, error, match", [
    (([1.0, 2.0],), {}, TypeError, r"grads\[0\] must be a numpy.ndarray"),
    ((np.ones(3), np.ones(3, np.int32)), {}, TypeError, r"grads\[1\] has unsupported dtype int32"),
    # float16 / bfloat16 gradients: test_16_bit_gradients_equal_their_float32_copy
    ((np.ones(3, np.uint16),), {}, TypeError, "unsupported dtype uint16"),
    ((np.ones(3, ">f8"),), {}, TypeError, "non-native byte order"),
    ((np.ones((4, 4))[:, ::2],), {}, ValueError, r"grads\[0\] is not C-contiguous"),
    ((np.ones(3),), {"grad_scale": 0.0}, ValueError, "invalid grad_scale"),
    ((np.ones(3),), {"grad_scale": -2.0}, ValueError, "invalid grad_scale"),
    ((np.ones(3),), {"grad_scale": math.inf}, ValueError, "invalid grad_scale"),
    ((np.ones(3),), {"grad_scale": math.nan}, ValueError, "invalid grad_scale"),
    ((np.ones(3),), {"grad_scale": [2.0]}, TypeError, "grad_scale must be a real number"),
    ((np.ones(3),), {"grad_scale": True}, TypeError, "grad_scale must be a real number"),
])
def test_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        fastadapt.grad_norm(*args, **kwargs)


@host
def test_read_only_arrays_are_fine_and_untouched():
    x = _random(2000, np.float32, seed=4)
    before = x.copy()
    x.flags.writeable = False
    assert fastadapt.grad_norm(x) > 0
    assert x.tobytes() == before.tobytes()


@host
def test_second_call_does_not_compile():
    x = _random(3 * kernels.CHUNK, np.float32)
    fastadapt.grad_norm(x, x[:10])
    used = kernels.sum_of_squares_kernels(np.float32)
    counts = [len(k.signatures) for k in (used.serial, used.parallel)]
    fastadapt.grad_norm(x, x[:10])
    assert counts == [len(k.signatures) for k in (used.serial, used.parallel)]


# ------------------------------------------------------------------ GPU (simulated)
@pytest.fixture
def cuda(monkeypatch):
    """The simulator, with small chunks (several per array) and one block per
    SM (so one block loops over several chunks)."""
    from numba import cuda
    from fastadapt.kernels import reduce_cuda
    monkeypatch.setattr(kernels, "CHUNK", 300)       # not a multiple of LANES
    monkeypatch.setattr(reduce_cuda, "BLOCKS_PER_SM", 1)
    return cuda


@sim
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_simulated_gpu_equals_cpu(cuda, dtype):
    # (each simulated block runs 256 Python threads: the sizes are few and small)
    arrays = [_random(n, dtype, seed=n) for n in (0, 7, 257, 1009)]
    expected = fastadapt.grad_norm(*arrays)
    assert expected == pytest.approx(_exact_norm(*arrays), rel=EXACT_RTOL)
    assert fastadapt.grad_norm(*(cuda.to_device(a) for a in arrays)) == expected
    bad = _random(301, dtype)
    bad[300] = np.inf                           # the second chunk's only element
    assert fastadapt.grad_norm(cuda.to_device(bad)) == math.inf
    bad[3] = np.nan
    assert math.isnan(fastadapt.grad_norm(cuda.to_device(bad)))


@sim
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_simulated_gpu_16bit_equals_cpu(cuda, dtype):
    """16-bit gradients on the GPU: widened in the kernel, the CPU's bits."""
    from fastadapt._storage import bfloat16
    dtype = bfloat16() if dtype == "bfloat16" else np.dtype(dtype)
    arrays = [_random(n, np.float32, seed=n).astype(dtype) for n in (0, 7, 301)]
    expected = fastadapt.grad_norm(*arrays)
    assert expected == fastadapt.grad_norm(*(a.astype(np.float32) for a in arrays))
    assert fastadapt.grad_norm(*(cuda.to_device(a) for a in arrays)) == expected


@sim
def test_simulated_gpu_optimizer_global_norm(cuda):
    params = [_random(s, np.float32, seed=i) for i, s in enumerate((7, 700, 1))]
    host_opt = fastadapt.SGD(params, lr=0.1, momentum=0.9, max_grad_norm=1.0)
    gpu_opt = fastadapt.SGD([cuda.to_device(p) for p in params], lr=0.1, momentum=0.9,
                            max_grad_norm=1.0)
    grads = [_random(p.size, np.float32, seed=10 + i) for i, p in enumerate(params)]
    host_opt.step(grads, grad_scale=4.0)
    gpu_opt.step([cuda.to_device(g) for g in grads], grad_scale=4.0)
    assert gpu_opt.grad_norm == host_opt.grad_norm
    for a, b in zip(host_opt.params, gpu_opt.params):
        np.testing.assert_array_equal(a, b.copy_to_host())


@sim
def test_simulated_gpu_checks(cuda):
    x = cuda.to_device(np.ones(10, np.float32))
    with pytest.raises(ValueError, match=r"mix of host and GPU arrays: grads\[1\] on the host"):
        fastadapt.grad_norm(x, np.ones(3))
    with pytest.raises(TypeError, match="unsupported dtype uint16"):
        fastadapt.grad_norm(cuda.to_device(np.ones(3, np.uint16)))
    with pytest.raises(ValueError, match=r"grads\[0\] is not C-contiguous"):
        fastadapt.grad_norm(cuda.to_device(np.ones(20, np.float32))[::2])


@host
def test_simulator_suite():
    """Run the ``sim`` half of this module under the simulator, in a subprocess."""
    pytest.importorskip("numba_cuda", reason="the CUDA simulator ships with numba-cuda")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "simulated_gpu",
         str(Path(__file__).resolve())],
        cwd=root, env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"},
        capture_output=True, text=True, timeout=600)
    tail = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, tail
    assert " passed" in tail and " failed" not in tail and "skipped" not in tail, tail


@host
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_kernel_lowers_for_a_real_gpu(monkeypatch, dtype):
    """The CUDA kernel types and lowers to NVVM IR for sm_90 (no NVVM library
    or GPU needed), with float64 accumulation and 64-bit chunk bounds; where
    NVVM is installed, test_cuda_sim's PTX checks apply to the update kernels."""
    pytest.importorskip("numba_cuda")
    from numba import cuda, types
    try:
        from numba.cuda.compiler import compile_cuda
    except ImportError:
        pytest.skip("this numba-cuda has no numba.cuda.compiler.compile_cuda")
    if not cuda.is_available():
        import numba.cuda.dispatcher as dispatcher
        monkeypatch.setattr(dispatcher, "get_current_device",
                            lambda: type("Device", (), {"compute_capability": (9, 0)}),
                            raising=False)
    from fastadapt.kernels import reduce_cuda
    t = getattr(types, dtype)
    result = compile_cuda(reduce_cuda.sum_of_squares, types.void,
                          (t[::1], types.int64[::1], types.int64[::1], types.float64[::1]),
                          cc=(9, 0))
    ir = result.library.get_llvm_str()
    assert "fadd double" in ir and "fmul double" in ir
    if dtype == "float32":
        assert "fpext float" in ir          # each element widened once, then float64 math


@host
def test_a_small_model_of_many_tensors_is_summed_serially():
    """Small whole-model work stays on the calling thread: a buffer of fewer
    elements than SERIAL_BELOW_CHUNKS whole chunks takes the serial kernel
    however many segments (one chunk each) cut it, and gives the bits of the
    parallel kernel; a mid-size one chooses between the two from their recent
    times (fastadapt/_pool.py), and one of ADAPTIVE_BELOW elements or more
    takes the parallel kernel."""
    from fastadapt.norm import SumOfSquares
    small = _random(20_865, np.float32, seed=3)
    segments = [(o, min(97, small.size - o)) for o in range(0, small.size, 97)]   # 216 tensors
    assert len(segments) >= kernels.SERIAL_BELOW_CHUNKS
    plan = SumOfSquares(small, segments=segments)
    k = kernels.sum_of_squares_kernels(np.float32)
    assert _kernels_of(plan) == {k.serial}
    starts, stops = kernels.chunks(small.size, segments)
    both = np.empty(starts.size), np.empty(starts.size)
    k.parallel(small, starts, stops, both[1])
    np.testing.assert_array_equal(plan(), both[1])
    big = _random(kernels.SERIAL_BELOW_CHUNKS * kernels.CHUNK, np.float32, seed=4)
    plan = SumOfSquares(big, segments=[(o, kernels.CHUNK) for o in range(0, big.size,
                                                                          kernels.CHUNK)])
    assert _kernels_of(plan) == {k.serial, k.parallel}
    from fastadapt import _pool
    huge = np.zeros(_pool.ADAPTIVE_BELOW, np.float32)
    assert _kernels_of(SumOfSquares(huge)) == {k.parallel}


def _kernels_of(plan):
    """The compiled kernels a SumOfSquares pass calls (held by its closure,
    or by the closures of the functions it calls)."""
    found, seen = set(), set()

    def walk(f):
        for c in getattr(f, "__closure__", None) or ():
            v = c.cell_contents
            if hasattr(v, "py_func"):
                found.add(v)
            elif callable(v) and id(v) not in seen:
                seen.add(id(v))
                walk(v)
    walk(plan._run)
    return found
