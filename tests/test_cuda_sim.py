"""The CUDA backend without a GPU, through Numba's CUDA simulator.

The simulator has to be switched on (``NUMBA_ENABLE_CUDASIM=1``) before
``numba.cuda`` is first imported, so it cannot be turned on inside an ordinary
test session. This module therefore has two halves:

- under ``NUMBA_ENABLE_CUDASIM=1`` (``sim`` tests): every rule x configuration
  of ``optim_cases.CONFIGS`` x dtype x size, run through the CUDA kernels with
  threads-per-block shrunk to 32 so that several blocks and the grid-stride
  loop run on tiny arrays, equals the CPU kernels; the dispatcher's GPU checks
  raise the same errors as the host's; FlatBuffer works on device arrays;
- in an ordinary run (``host`` tests): ``test_simulator_suite`` runs this
  module again in a subprocess with the simulator on and asserts that it
  passes, so the single ``pytest`` command covers it; plus what needs no
  simulator: the error a GPU array gets without numba-cuda or a driver (the
  real CUDA compilation of every kernel is ``test_gpu_compile.py``'s).

Comparison with the CPU is exact (``array_equal``) in both dtypes, and that is
not luck: the simulator runs ``math.py`` as Python on NumPy scalars, so each
``+ - * /`` is one correctly rounded IEEE operation in the arrays' dtype, as in
the compiled CPU loop (Numba emits no fused multiply-adds without fastmath).
The one exception is the simulator's own: Python's ``math.sqrt`` returns a
float64 whatever its argument, where the CUDA (and CPU) target types the
square root of a float32 as a float32 (``sqrt.rn.f32``). The CUDA
target therefore binds the simulated device functions' ``sqrt`` to ``numpy.sqrt``, which keeps its
argument's dtype and rounds correctly, as the GPU does. (Without it, float32
Adadelta drifts by a few ulps where ``sqrt(u + eps) / sqrt(v + eps)`` divides
two float64s.) A real GPU contracts ``a * b + c`` into fused multiply-adds, so
``test_gpu.py`` compares with tolerances instead.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastadapt
from fastadapt.functional import step_for
import optim_cases

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
sim = pytest.mark.skipif(not SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1 before numba.cuda "
                         "is imported; test_simulator_suite runs these in a subprocess")
host = pytest.mark.skipif(SIMULATOR, reason="runs outside the simulator")

SHAPES = [(0,), (1,), (7,), (5, 13), (1000,)]   # 65 and 1000 do not divide 32
STEPS = 3
DTYPES = [np.float32, np.float64]


# ------------------------------------------------------------------ simulator
@pytest.fixture
def cuda(monkeypatch):
    """numba.cuda (the simulator) with launches shrunk to <= 2 blocks of 32
    threads, and the device functions' square root typed as on the GPU."""
    from numba import cuda
    from fastadapt.kernels import cuda as kernels
    monkeypatch.setattr(kernels, "THREADS_PER_BLOCK", 32)
    monkeypatch.setattr(kernels, "BLOCKS_PER_SM", 2)   # the simulated GPU has 1 SM
    assert kernels.VOCABULARY["sqrt"] is np.sqrt   # see the module docstring
    return cuda


def _assert_same(expected, actual, what):
    np.testing.assert_array_equal(actual, expected, err_msg=what)


@sim
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name, config", optim_cases.cases())
def test_matches_cpu(cuda, name, config, dtype):
    for seed, shape in enumerate(SHAPES):
        param0, grads = optim_cases.problem(shape, dtype, seed, steps=STEPS)
        state0 = optim_cases.initial_state(name, config, shape, dtype)
        param, state = optim_cases.run_steps(
            step_for(fastadapt.RULES[name]), name, config, param0.copy(),
            grads, {k: v.copy() for k, v in state0.items()})
        d_param, d_state = optim_cases.run_steps(
            step_for(fastadapt.RULES[name]), name, config, cuda.to_device(param0),
            [cuda.to_device(g) for g in grads],
            {k: cuda.to_device(v) for k, v in state0.items()})
        _assert_same(param, d_param.copy_to_host(), f"param, shape {shape}")
        for k in state:
            _assert_same(state[k], d_state[k].copy_to_host(), f"{k}, shape {shape}")


@sim
def test_tiny_launches_use_several_blocks_and_strides(cuda):
    from fastadapt.kernels import cuda as kernels
    blocks, threads = kernels.launch_config(1000, multiprocessors=1)
    assert (blocks, threads) == (2, 32)          # 64 threads, 16 strides over 1000
    assert kernels.launch_config(33, 1) == (2, 32)
    assert kernels.launch_config(0, 1) == (1, 32)


def test_launch_config_full_size():
    # Pure arithmetic, no CUDA needed: one wave of 8 x 256 threads per SM, capped.
    pytest.importorskip("numba_cuda")
    from fastadapt.kernels import cuda as kernels
    assert kernels.launch_config(10, 132) == (1, 256)
    assert kernels.launch_config(2 ** 26, 132) == (132 * 8, 256)
    assert kernels.launch_config(2 ** 33, 132) == (132 * 8, 256)


_STORAGE_RULES = [("adam", {"amsgrad": True}), ("adamw", {"weight_decay": 0.1}),
                  ("sgd", {"momentum": 0.9, "nesterov": True}),
                  ("rmsprop", {"centered": True, "momentum": 0.5}), ("adagrad", {}),
                  ("adadelta", {}), ("adamax", {}), ("radam", {}), ("rprop", {}),
                  ("nadam", {}), ("asgd", {}), ("lion", {}), ("adam", {}),
                  ("rmsprop", {}), ("sgd", {})]


def _storage_cases():
    """(rule, options, param dtype, grad dtype, state dtype, master, stochastic):
    every storage combination the optimizer classes make on a GPU (bfloat16
    state for float32 params; for 16-bit params each grad and state dtype,
    with a master copy (bfloat16: also split), stochastic rounding or
    neither), each with another
    rule of ``_STORAGE_RULES``, so every rule runs some 16-bit layout."""
    import ml_dtypes
    bf16 = np.dtype(ml_dtypes.bfloat16)
    f32, f16 = np.dtype(np.float32), np.dtype(np.float16)
    combos = [(f32, f32, bf16, False, False)]
    combos += [(p, g, s, {"m": True, "m16": "bf16+16", "m8": "bf16+8"}.get(mode, False),
                mode == "s")
               for p, grads, states in ((bf16, (bf16, f32), (f32, bf16)),
                                        (f16, (f16, f32), (f32, bf16, f16)))
               for g in grads for s in states
               for mode in ("", "m", "s") + (("m16", "m8") if p == bf16 else ())]
    return [(*_STORAGE_RULES[k % len(_STORAGE_RULES)], *combo)
            for k, combo in enumerate(combos)]


def _case_id(case):
    name, options, pd, gd, sd, master, stochastic = case
    mode = (f" master {master}" if isinstance(master, str) else " master" if master
            else " stochastic" if stochastic else "")
    return f"{name}{sorted(options) or ''} {pd.name}/{gd.name}/{sd.name}{mode}"


def run_storage_case(case, n, to_device, offset=None):
    """Three steps of ``case`` (see :func:`_storage_cases`) on ``n`` elements on
    the host and on arrays made by ``to_device``; ``(host, device)``, dicts
    of the arrays (param, state, master_param). Stochastic rounding starts at
    an offset into the stream (``offset``, default ``3 n + 1``), as a shard of
    a larger array does."""
    name, options, pd, gd, sd, master, stochastic = case
    rule = fastadapt.RULES[name]
    rng = np.random.default_rng(n)
    p0 = rng.standard_normal(n).astype(np.float32)
    host = {"param": p0.astype(pd)}
    host.update({s: np.full(n, rule.initial_value(s, **options), sd)
                 for s in rule.state_for(**options)})
    if isinstance(master, str):
        host["master_param"] = np.zeros(n, fastadapt._storage.SPLIT_MASTER[master][0])
    elif master:
        host["master_param"] = p0.copy()
    dev = {k: to_device(v) for k, v in host.items()}
    extra = {"stochastic_rounding": True, "seed": 5,
             "rounding_offset": 3 * n + 1 if offset is None else offset} if stochastic else {}
    for k in range(1, 4):
        g = rng.standard_normal(n).astype(gd)
        step = {"step": k} if rule.takes_step else {}
        step_for(rule)(grad=g, **host, **step, **options, **extra)
        step_for(rule)(grad=to_device(g), **dev, **step, **options, **extra)
    return host, dev


@sim
@pytest.mark.parametrize("case", _storage_cases(), ids=_case_id)
def test_storage_layouts_match_cpu(cuda, case):
    """16-bit storage, master weights and stochastic rounding under the
    simulator equal the CPU bit for bit (same conversions, same random bits),
    at sizes that do not divide the 2 x 32 threads (97: a thread does two)."""
    for n in (0, 1, 7, 31, 97):
        host, dev = run_storage_case(case, n, cuda.to_device)
        for key, a in host.items():
            _assert_same(a.view(np.uint8), dev[key].copy_to_host().view(np.uint8),
                         f"{key}, n={n}, {_case_id(case)}")


@sim
def test_stochastic_rounding_across_a_page_matches_cpu(cuda):
    """A stream that crosses 2**32 (where the drivers start a page of the
    random stream) draws the same bits under the simulator as on the CPU."""
    import ml_dtypes
    bf16 = np.dtype(ml_dtypes.bfloat16)
    for case in (("adam", {}, bf16, bf16, bf16, False, True),
                 ("sgd", {"momentum": 0.9}, np.dtype(np.float16), np.dtype(np.float32),
                  np.dtype(np.float32), False, True)):
        host, dev = run_storage_case(case, 97, cuda.to_device, offset=2**32 - 40)
        for key, a in host.items():
            _assert_same(a.view(np.uint8), dev[key].copy_to_host().view(np.uint8),
                         f"{key}, {_case_id(case)}")


@sim
@pytest.mark.parametrize("name, options", [("adam", {"amsgrad": True}),
                                           ("sgd", {"momentum": 0.9}),
                                           ("rmsprop", {"centered": True, "momentum": 0.5}),
                                           ("adagrad", {})])
def test_blockwise8_state_matches_cpu(cuda, name, options):
    """8-bit blockwise state under the simulator (one thread per block of 256)
    equals the CPU bit for bit, at sizes around a block, with an infinite, a
    NaN and a huge gradient element among them (blocks of the special map)."""
    rule = fastadapt.RULES[name]
    for n in (1, 255, 257, 600):
        rng = np.random.default_rng(n)
        host_p = rng.standard_normal(n).astype(np.float32)
        dev_p = cuda.to_device(host_p)
        host = {s: fastadapt.Blockwise8(n, signed=s in ("exp_avg", "momentum_buffer",
                                                         "grad_avg"))
                for s in rule.state_for(**options)}
        dev = {}
        for s, b in host.items():
            d = fastadapt.Blockwise8(n, b.signed)
            d.codes, d.absmax = cuda.to_device(b.codes), cuda.to_device(b.absmax)
            dev[s] = d
        for k in range(1, 4):
            g = rng.standard_normal(n).astype(np.float32)
            if n > 300:
                g[[3, 300, n - 1][k - 1]] = [np.inf, np.nan, 1e22][k - 1]
            step = {"step": k} if rule.takes_step else {}
            step_for(rule)(host_p, g, **host, **step, **options)
            step_for(rule)(dev_p, cuda.to_device(g), **dev, **step, **options)
        _assert_same(host_p, dev_p.copy_to_host(), f"param, n={n}")
        for s in host:
            _assert_same(host[s].codes, dev[s].codes.copy_to_host(), f"{s} codes, n={n}")
            _assert_same(host[s].absmax, dev[s].absmax.copy_to_host(), f"{s} absmax, n={n}")


#: Sizes that divide neither a group (32) nor a block (256) of 8-bit state,
#: nor the threads of the shrunk launches.
SIZES_8BIT = (0, 1, 7, 31, 97, 257, 513)


def state8_on_device(b, to_device):
    """A copy of the 8-bit state ``b`` (a Blockwise8 or a Companded8) whose
    arrays are made by ``to_device``: how 8-bit state lives on a GPU."""
    part = "scale" if isinstance(b, fastadapt.Companded8) else "absmax"
    return b.with_arrays(to_device(b.codes), to_device(getattr(b, part)))


def run_state8_case(name, container, n, param_to_device, to_device):
    """Three steps of rule ``name`` (every state array on, each in 8-bit
    ``container``) on ``n`` elements, on the host and on arrays made by
    ``to_device``, with an infinite, a NaN and a huge (1e22) gradient
    element on the three steps where ``n > 100``; ``(host, device, bad)``:
    dicts of ``param`` and the 8-bit state, and the bad elements."""
    config = optim_cases.EVERY_STATE[name]
    rule = fastadapt.RULES[name]
    param0, grads = optim_cases.problem((n,), np.float32, seed=n, steps=3)
    bad = [3, n // 2, n - 1] if n > 100 else []
    for k, i in enumerate(bad):
        grads[k][i] = (np.inf, np.nan, 1e22)[k]
    host = {}
    for s, values in optim_cases.initial_state(name, config, (n,), np.float32).items():
        host[s] = container(n, signed=s not in rule.non_negative_state)
        if np.any(values):
            host[s].assign(values)
    dev = {s: state8_on_device(b, to_device) for s, b in host.items()}
    param, d_param = param0.copy(), param_to_device(param0)
    with np.errstate(all="ignore"):
        optim_cases.run_steps(step_for(rule), name, config, param, grads, host)
        optim_cases.run_steps(step_for(rule), name, config, d_param,
                              [param_to_device(g) for g in grads], dev)
    return {"param": param, **host}, {"param": d_param, **dev}, bad


@sim
@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # the bad elements' overflows
@pytest.mark.parametrize("container", [fastadapt.Blockwise8, fastadapt.Companded8],
                         ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", sorted(optim_cases.EVERY_STATE))
def test_state8_matches_cpu(cuda, monkeypatch, name, container):
    """Every rule with all its state in either 8-bit format, under the
    simulator (one thread per block or group, 2 x 4 threads, so threads
    stride over several), equals the CPU bit for bit: the parameter, the
    codes and each block's absmax (group's scale), at sizes that divide
    nothing, with non-finite and huge gradient elements confined to their
    element (every other parameter stays finite)."""
    from fastadapt.kernels import cuda as kernels
    monkeypatch.setattr(kernels, "THREADS_PER_BLOCK", 4)
    part = "scale" if container is fastadapt.Companded8 else "absmax"
    for n in SIZES_8BIT:
        host, dev, bad = run_state8_case(name, container, n, cuda.to_device, cuda.to_device)
        _assert_same(host["param"], dev["param"].copy_to_host(), f"param, n={n}")
        assert np.all(np.isfinite(np.delete(host["param"], bad))), f"n={n}"
        for s, b in host.items():
            if s == "param":
                continue
            _assert_same(b.codes, dev[s].codes.copy_to_host(), f"{s} codes, n={n}")
            _assert_same(getattr(b, part), getattr(dev[s], part).copy_to_host(),
                         f"{s} {part}, n={n}")


def _adam_arrays(cuda, n=10, dtype=np.float32):
    """Device param, grad, exp_avg, exp_avg_sq (the moments start at zero)."""
    rng = np.random.default_rng(0)
    return [cuda.to_device(rng.standard_normal(n).astype(dtype)) for _ in range(2)] + [
        cuda.to_device(np.zeros(n, dtype)) for _ in range(2)]


@sim
def test_mixed_host_and_device_is_refused(cuda):
    param, grad, m, v = _adam_arrays(cuda)
    with pytest.raises(ValueError, match="mix of host and GPU arrays: grad on the host"):
        fastadapt.adam_step(param, grad.copy_to_host(), m, v, step=1)


@sim
@pytest.mark.parametrize("container", [fastadapt.Blockwise8, fastadapt.Companded8],
                         ids=lambda c: c.__name__)
def test_state8_methods_on_device_arrays(cuda, container):
    """``assign``, ``fill``, ``dequantize`` and the reset to zero work on 8-bit
    state whose arrays are on the GPU, storing exactly what they store on
    the host (a NaN and an infinity among the values)."""
    part = "scale" if container is fastadapt.Companded8 else "absmax"
    n = 300
    values = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    values[[5, 290]] = np.nan, np.inf
    for signed in (True, False):
        x = values if signed else np.abs(values)
        host = container(n, signed)
        dev = state8_on_device(host, cuda.to_device)
        for method, arg in (("assign", x), ("fill", 0.25), ("clear", None), ("assign", x)):
            getattr(host, method)(*(() if arg is None else (arg,)))
            getattr(dev, method)(*(() if arg is None else (arg,)))
            what = f"{method}, signed={signed}"
            _assert_same(host.codes, dev.codes.copy_to_host(), what)
            _assert_same(getattr(host, part), getattr(dev, part).copy_to_host(), what)
            _assert_same(host.dequantize(), dev.dequantize(), what)
        assert len(dev) == dev.size == n and dev.shape == (n,)


@sim
def test_state8_device_checks(cuda):
    """8-bit state on the GPU gets the host's checks on its codes and its
    absmax (scale), and a refused call writes nothing."""
    param, grad, _, _ = _adam_arrays(cuda, n=40)
    before = param.copy_to_host()
    m = state8_on_device(fastadapt.Companded8(40, signed=True), cuda.to_device)
    v = state8_on_device(fastadapt.Companded8(40, signed=False), cuda.to_device)
    short = fastadapt.Companded8(40, signed=False).with_arrays(
        cuda.to_device(np.zeros(40, np.uint8)), cuda.to_device(np.zeros(1, np.float32)))
    with pytest.raises(ValueError, match=r"exp_avg_sq.scale has 1 blocks; 40 elements "
                                         r"need 2 of 32"):
        fastadapt.adam_step(param, grad, m, short, step=1)
    wide = fastadapt.Companded8(40, signed=False).with_arrays(
        cuda.to_device(np.zeros(40, np.uint16)), v.scale)
    with pytest.raises(TypeError, match="exp_avg_sq.codes must be a 1-D uint8 array"):
        fastadapt.adam_step(param, grad, m, wide, step=1)
    with pytest.raises(ValueError, match="mix of host and GPU arrays"):
        fastadapt.adam_step(param, grad, m, fastadapt.Companded8(40, signed=False), step=1)
    with pytest.raises(ValueError, match="exp_avg.codes and exp_avg_sq.codes share memory"):
        fastadapt.adam_step(param, grad, m, m.with_arrays(m.codes, v.scale), step=1)
    blockwise = state8_on_device(fastadapt.Blockwise8(40, signed=False), cuda.to_device)
    with pytest.raises(TypeError, match="one format"):
        fastadapt.adam_step(param, grad, m, blockwise, step=1)
    _assert_same(before, param.copy_to_host(), "param after refused calls")
    fastadapt.adam_step(param, grad, m, v, step=1)
    assert not np.array_equal(param.copy_to_host(), before)


@sim
def test_device_checks(cuda):
    param, grad, m, v = _adam_arrays(cuda)
    before = param.copy_to_host()
    with pytest.raises(TypeError, match="grad has dtype float64 but param has float32"):
        fastadapt.adam_step(param, cuda.to_device(np.zeros(10)), m, v, step=1)
    with pytest.raises(TypeError, match="unsupported dtype uint16"):
        fastadapt.adam_step(*(cuda.to_device(np.zeros(10, np.uint16)) for _ in range(4)),
                            step=1)
    with pytest.raises(ValueError, match=r"exp_avg has shape \(9,\) but param has \(10,\)"):
        fastadapt.adam_step(param, grad, cuda.to_device(np.zeros(9, np.float32)), v, step=1)
    with pytest.raises(ValueError, match="exp_avg is not C-contiguous"):
        fastadapt.adam_step(param, grad, cuda.to_device(np.zeros(20, np.float32))[::2], v,
                            step=1)
    buffer = cuda.to_device(np.zeros(20, np.float32))
    with pytest.raises(ValueError, match="exp_avg and exp_avg_sq share memory"):
        fastadapt.adam_step(param, grad, buffer[0:10], buffer[9:19], step=1)
    with pytest.raises(ValueError, match="param and exp_avg share memory"):
        fastadapt.adam_step(param, grad, param, v, step=1)
    fastadapt.adam_step(param, grad, buffer[0:10], buffer[10:20], step=1)   # adjacent is fine
    param.copy_to_device(before)
    frozen = cuda.to_device(before)
    frozen._ary.setflags(write=False)   # the simulator's device array is NumPy inside
    with pytest.raises(ValueError, match="param is read-only"):
        fastadapt.adam_step(frozen, grad, m, v, step=1)
    grad._ary.setflags(write=False)     # grad is only read: allowed
    fastadapt.adam_step(param, grad, m, v, step=1)
    assert not np.array_equal(param.copy_to_host(), before)


@sim
def test_rejected_call_writes_nothing(cuda):
    param, grad, m, v = _adam_arrays(cuda)
    saved = [a.copy_to_host() for a in (param, grad, m, v)]
    with pytest.raises(ValueError):
        fastadapt.adam_step(param, grad, m, v, step=1, amsgrad=True, max_exp_avg_sq=m)
    for a, b in zip((param, grad, m, v), saved):
        np.testing.assert_array_equal(a.copy_to_host(), b)


@sim
def test_zero_size_is_a_no_op(cuda):
    empty = [cuda.to_device(np.zeros((0, 3), np.float64)) for _ in range(4)]
    fastadapt.adam_step(*empty, step=1)
    fastadapt.sgd_step(*empty[:3], step=1, momentum=0.9)


@sim
def test_numba_stream_is_used(cuda):
    stream = cuda.stream()
    param, grad, m, v = _adam_arrays(cuda)
    from fastadapt import _cuda
    assert _cuda._stream(_cuda._Array("p", param.bind(stream), True), cuda) is stream
    assert _cuda._stream(_cuda._Array("p", param, True), cuda) == 0


@sim
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_flat_buffer_on_device(cuda, dtype):
    rng = np.random.default_rng(1)
    shapes = [(3, 4), (0,), (), (17,)]
    host = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
    like = cuda.to_device(np.zeros(1, dtype))
    buffer = fastadapt.FlatBuffer(shapes, dtype, like=like)
    assert type(buffer.data) is type(like)
    np.testing.assert_array_equal(buffer.data.copy_to_host(), 0)
    buffer.copy_from(host)
    for view, a in zip(buffer.views, host):
        assert view.shape == a.shape
        np.testing.assert_array_equal(view.copy_to_host(), a)
    device_grads = fastadapt.FlatBuffer.from_arrays([cuda.to_device(g) for g in grads])
    m, v = buffer.zeros_like(), buffer.zeros_like()
    fastadapt.adam_step(buffer.data, device_grads.data, m.data, v.data, step=1)

    cpu, cpu_grads = fastadapt.FlatBuffer.from_arrays(host), fastadapt.FlatBuffer.from_arrays(grads)
    cm, cv = cpu.zeros_like(), cpu.zeros_like()
    fastadapt.adam_step(cpu.data, cpu_grads.data, cm.data, cv.data, step=1)
    for device_view, cpu_view in zip(buffer.views, cpu.views):
        np.testing.assert_array_equal(device_view.copy_to_host(), cpu_view)


@sim
def test_copy_checks(cuda):
    buffer = fastadapt.FlatBuffer([(4,)], np.float32, like=cuda.to_device(np.zeros(1)))
    buffer.copy_from([np.arange(4.0)])                      # float64 -> float32: same kind
    np.testing.assert_array_equal(buffer[0].copy_to_host(), np.arange(4.0))
    with pytest.raises(TypeError, match="cannot copy complex128"):
        buffer.copy_from([np.zeros(4, complex)])
    host = fastadapt.FlatBuffer([(4,)], np.float32)
    with pytest.raises(ValueError, match="cannot copy a GPU array into a host FlatBuffer"):
        host.copy_from([cuda.to_device(np.zeros(4, np.float32))])


# ------------------------------------------------------------------ ordinary run
@host
def test_simulator_suite():
    """Run the ``sim`` half of this module under the simulator, in a subprocess."""
    pytest.importorskip("numba_cuda", reason="the CUDA simulator ships with numba-cuda")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         str(Path(__file__).resolve())],
        cwd=root, env=env, capture_output=True, text=True, timeout=900)
    tail = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, tail
    assert " passed" in tail and " failed" not in tail, tail


class _FakeGPUArray:
    """An object that claims to live on a GPU; fastadapt must not touch it."""

    def __init__(self, n=4):
        self.__cuda_array_interface__ = {"shape": (n,), "typestr": "<f4", "strides": None,
                                         "data": (0x10000, False), "version": 2}


@host
def test_gpu_array_without_numba_cuda(monkeypatch):
    from fastadapt import _cuda
    monkeypatch.setattr(_cuda, "_state", {})
    monkeypatch.setitem(sys.modules, "numba_cuda", None)   # "import numba_cuda" now fails
    with pytest.raises(ImportError, match=r'pip install "fastadapt\[cuda\]"'):
        fastadapt.sgd_step(_FakeGPUArray(), _FakeGPUArray(), step=1)


@host
def test_gpu_array_without_a_driver(monkeypatch):
    pytest.importorskip("numba_cuda")
    from numba import cuda
    if cuda.is_available():
        pytest.skip("a CUDA GPU is available here")
    from fastadapt import _cuda
    monkeypatch.setattr(_cuda, "_state", {})
    with pytest.raises(RuntimeError, match="CUDA is not usable"):
        fastadapt.sgd_step(_FakeGPUArray(), _FakeGPUArray(), step=1)
