"""The benchmark's rivals compute what they claim and the runner runs end to end.

The comparison in ``fastadapt bench`` is only apples to apples if the NumPy
rivals compute fastadapt's update, the roofline kernels move exactly a rule's
bytes, and every torch.optim path is the same algorithm; these tests check
that, plus a quick end-to-end run of the command (``fastadapt bench --quick``)
that must produce valid JSON.
"""
import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import fastadapt
from fastadapt.benchmark import (CONFIGS, NUMPY_STEPS, build_all, driver_call,
                                 gpt2_small_shapes, make_problem, parse_size, select)
from fastadapt.benchmark._implementations import gpt2_adam_steps
from fastadapt.benchmark._numpy_reference import CAREFUL, SCRATCH_ARRAYS, derived_step
from fastadapt.benchmark._timing import interleaved
from fastadapt.kernels import cpu, roofline

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")

# The NumPy rivals round differently from the fused kernels (torch-style lerp
# vs b*m + (1-b)*g, lr*(g/avg) vs (-lr*g)/avg, ...): a few float32 ulps per
# step. rtol 1e-5 (about 84 float32 ulps) over 5 steps; the atol term is the
# same relative error of the array's largest value, for elements that cancel to
# near zero (p - lr*update). float64: the same budget in float64 ulps.
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-13}

# Every branch of the NumPy rivals: (rule name, options).
OPTION_CASES = [(c.rule_name, c.options) for c in CONFIGS] + [
    ("adam", {"weight_decay": 0.1, "maximize": True}),
    ("adam", {"amsgrad": True, "weight_decay": 0.05}),
    ("adamw", {"amsgrad": True, "maximize": True}),
    ("sgd", {}),
    ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("sgd", {"momentum": 0.5, "dampening": 0.3, "maximize": True}),
    ("rmsprop", {"momentum": 0.9, "weight_decay": 0.01}),
    ("rmsprop", {"centered": True, "momentum": 0.5, "maximize": True}),
    ("adagrad", {"lr_decay": 0.01, "weight_decay": 0.1, "maximize": True}),
    ("adadelta", {"weight_decay": 0.1, "maximize": True, "rho": 0.5}),
]


def _case_id(case):
    rule, options = case
    return rule + "".join(f"-{k}={v}" for k, v in options.items())


def _run_steps(fn, rule, options, param, grad, steps, **extra):
    p, g = param.copy(), grad.copy()
    state = {name: np.full_like(p, rule.initial_value(name, **options))
             for name in rule.state_for(**options)}
    carried = {}
    for t in range(1, steps + 1):
        kwargs = {**options, **state, **extra, **carried}
        if rule.takes_step:
            kwargs["step"] = t
        carried = fn(p, g, **kwargs) or {}
    return p, state


def _assert_close(actual, expected, dtype, what):
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    rtol = RTOL[np.dtype(dtype)]
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", OPTION_CASES, ids=_case_id)
@pytest.mark.parametrize("with_scratch", [True, False], ids=["scratch", "allocating"])
def test_numpy_rival_computes_fastadapts_update(case, dtype, with_scratch):
    rule_name, options = case
    rule = fastadapt.RULES[rule_name]
    param, grad = make_problem(1031, dtype, seed=3)
    extra = {}
    if with_scratch:
        extra["scratch"] = [np.empty_like(param) for _ in range(SCRATCH_ARRAYS)]
    got = _run_steps(NUMPY_STEPS[rule_name], rule, options, param, grad, 5, **extra)
    want = _run_steps(rule.step_fn, rule, options, param, grad, 5)
    _assert_close(got[0], want[0], dtype, "param")
    assert set(got[1]) == set(want[1])
    for name in want[1]:
        _assert_close(got[1][name], want[1][name], dtype, name)


def test_numpy_rivals_cover_every_rule():
    assert set(NUMPY_STEPS) == set(fastadapt.RULES)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", OPTION_CASES, ids=_case_id)
def test_derived_numpy_rival_computes_fastadapts_update(case, dtype):
    """The rival derived from a rule's math (what rules without a hand-written one get)."""
    rule_name, options = case
    rule = fastadapt.RULES[rule_name]
    param, grad = make_problem(1031, dtype, seed=3)
    got = _run_steps(derived_step(rule), rule, options, param, grad, 5)
    want = _run_steps(rule.step_fn, rule, options, param, grad, 5)
    _assert_close(got[0], want[0], dtype, "param")
    for name in want[1]:
        _assert_close(got[1][name], want[1][name], dtype, name)


@pytest.mark.parametrize("config", [c for c in CONFIGS if c.rule_name in CAREFUL],
                         ids=lambda c: c.key)
def test_numpy_rival_with_scratch_allocates_no_array(config):
    """The benchmark passes preallocated temporaries: the rival then measures
    passes over memory, not the allocator."""
    n = 1 << 16
    param, grad = make_problem(n, np.float32)
    steps, _ = build_all(config, param, grad, ("numpy",))
    step = steps["numpy"]
    step()
    tracemalloc.start()
    try:
        step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < param.nbytes // 4


@pytest.mark.parametrize("k", range(roofline.MAX_STATE + 1))
@pytest.mark.parametrize("n", [7, cpu.SERIAL_BELOW + 3])
def test_roofline_reads_and_writes_what_a_rule_does(k, n):
    """param and every state array get grad added (read + written once), grad
    is only read: 3 + 2k array passes, the traffic of a rule with k states."""
    rng = np.random.default_rng(k)
    param, grad = rng.standard_normal(n), rng.standard_normal(n)
    state = [rng.standard_normal(n) for _ in range(k)]
    before = [param.copy(), grad.copy()] + [s.copy() for s in state]
    roofline.step(param, grad, state)
    np.testing.assert_array_equal(grad, before[1])
    np.testing.assert_array_equal(param, before[0] + before[1])
    for s, s0 in zip(state, before[2:]):
        np.testing.assert_array_equal(s, s0 + before[1])
    kernel = roofline.ROOFLINE[k].parallel.py_func
    assert kernel.__code__.co_argcount == 2 + k


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.key)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roofline_traffic_matches_the_rules_bytes(config, dtype):
    k = len(config.state_names)
    assert k <= roofline.MAX_STATE
    assert config.bytes_per_element(np.dtype(dtype).itemsize) == \
        np.dtype(dtype).itemsize * (3 + 2 * k)


def test_roofline_copy():
    src = np.arange(1000, dtype=np.float32)
    dst = np.zeros_like(src)
    roofline.copy(dst, src)
    np.testing.assert_array_equal(dst, src)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.key)
def test_every_implementation_builds_and_steps(config):
    param, grad = make_problem(600, np.float32)
    steps, unavailable = build_all(config, param, grad)
    for name in ("fastadapt", "roofline", "numpy", "numpy_alloc"):
        assert name in steps
    if torch is None:
        assert all(unavailable[m] == "torch not installed"
                   for m in ("torch_single", "torch_foreach", "torch_fused"))
    elif not config.rule.in_torch:
        assert all(unavailable[m].startswith("torch.optim has no")
                   for m in ("torch_single", "torch_foreach", "torch_fused"))
    else:
        assert "torch_single" in steps and "torch_foreach" in steps
        if config.rule.torch_name in ("RMSprop", "Adadelta"):
            assert unavailable["torch_fused"].startswith("no fused")
    for step in steps.values():
        step()
        step()


@needs_torch
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.key)
@pytest.mark.parametrize("mode", ["torch_single", "torch_foreach", "torch_fused"])
def test_torch_rivals_run_the_same_algorithm(config, mode):
    """Three steps of each torch path land where fastadapt's do (float64, so
    any difference is the algorithm, not rounding)."""
    param, grad = make_problem(257, np.float64, seed=1)
    steps, unavailable = build_all(config, param, grad, ("fastadapt", mode))
    if mode in unavailable:
        pytest.skip(unavailable[mode])
    # the torch builder already took one step to check the path: catch up
    steps["fastadapt"]()
    for _ in range(2):
        steps["fastadapt"]()
        steps[mode]()
    fa_param = steps["fastadapt"].arrays[0]
    opt = steps[mode].__self__
    torch_param = opt.param_groups[0]["params"][0].detach().numpy()
    # torch's foreach ASGD computes eta = lr / (1 + lambd lr step)**alpha with float32
    # tensor arithmetic, its single-tensor path (fastadapt's semantics) in float64
    # before storing it as float32: eta differs by a float32 ulp, the update by 1e-7.
    tol = 1e-6 if (config.rule_name, mode) == ("asgd", "torch_foreach") else 1e-12
    np.testing.assert_allclose(torch_param, fa_param, rtol=tol, atol=tol)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.key)
@pytest.mark.parametrize("n", [100, cpu.SERIAL_BELOW + 5])
def test_driver_call_is_what_the_dispatcher_runs(config, n):
    param, grad = make_problem(n, np.float32)
    driver, args = driver_call(config, param, grad)
    assert driver in cpu.DRIVERS.values()
    assert all(isinstance(d, type(driver)) for d in cpu.DRIVERS.values())
    # one step through the captured arguments equals one functional step
    (driver.serial if n < cpu.SERIAL_BELOW else driver.parallel)(*args)
    p, g = param.copy(), grad.copy()
    state = config.initial_state(p)
    kwargs = {**config.options, **state}
    if config.rule.takes_step:
        kwargs["step"] = 1
    config.rule.step_fn(p, g, **kwargs)
    np.testing.assert_array_equal(args[0], p)


def test_gpt2_small_shapes():
    shapes = gpt2_small_shapes()
    assert len(shapes) == 148
    assert sum(int(np.prod(s)) for s in shapes) == 124_439_808
    assert shapes[0] == (50257, 768) and shapes[1] == (1024, 768)
    narrow = gpt2_small_shapes(128)
    assert len(narrow) == 148
    assert sum(int(np.prod(s)) for s in narrow) == 8_943_488


def test_model_shaped_implementations_agree():
    """The GPT-2 section's implementations, on small shapes, are the same Adam."""
    shapes = [(3, 5), (7,), (4, 4), (1,)]
    numel = sum(int(np.prod(s)) for s in shapes)
    rng = np.random.default_rng(0)
    flat_param = rng.standard_normal(numel)
    flat_grad = rng.standard_normal(numel)
    names = ["fastadapt_class", "fastadapt_per_array", "fastadapt_one_array"] + (
        ["torch_fused", "torch_foreach"] if torch is not None else [])
    steps, unavailable = gpt2_adam_steps(shapes, flat_param, flat_grad, names)
    assert not unavailable, unavailable
    for name in ("fastadapt_class", "fastadapt_per_array", "fastadapt_one_array"):
        steps[name]()                       # torch's builders took a first step already
    for _ in range(2):
        for step in steps.values():
            step()
    cls = np.concatenate([p.ravel() for p in steps["fastadapt_class"].__self__.params])
    per_array = np.concatenate([p.ravel() for p in steps["fastadapt_per_array"].arrays[0]])
    np.testing.assert_array_equal(cls, per_array)
    np.testing.assert_array_equal(cls, steps["fastadapt_one_array"].arrays[0])
    assert not np.array_equal(cls, flat_param)
    if torch is not None:
        opt = steps["torch_fused"].__self__
        ref = np.concatenate([p.detach().numpy().ravel()
                              for p in opt.param_groups[0]["params"]])
        np.testing.assert_allclose(cls, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("text, value", [("1000", 1000), ("1e6", 10**6), ("2**24", 2**24),
                                         ("2^10", 1024), ("1_000", 1000)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["0", "1.5", "x", "-3", "1e-3"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_select():
    assert [c.key for c in select(["adam", "sgd"])] == ["adam", "sgd-momentum"]
    assert [c.key for c in select(["rmsprop"])] == ["rmsprop"]
    assert [c.key for c in select(["rmsprop-centered"])] == ["rmsprop-centered"]
    assert len(select(["all"])) == len(CONFIGS)
    with pytest.raises(ValueError, match="unknown rule"):
        select(["nosuchrule"])


def test_interleaved_timing_gives_every_implementation_its_rounds():
    calls = {"a": 0, "b": 0}

    def a():
        calls["a"] += 1

    def b():
        calls["b"] += 1
    result = interleaved({"a": a, "b": b}, budget_s=0.01, min_rounds=4, max_rounds=4)
    assert set(result) == {"a", "b"}
    for t in result.values():
        assert len(t.samples) == 4 and t.median_s > 0


def test_bench_rejects_bad_arguments(capsys):
    from fastadapt.benchmark import main
    assert main(["--rules", "adamax"]) == 2
    assert main(["--sizes", "0"]) == 2
    assert main(["--sections", "nope"]) == 2
    assert "error" in capsys.readouterr().err


def test_bench_quick_end_to_end(tmp_path):
    """``fastadapt bench --quick --rules adam --sizes 1000 --json out.json`` in a
    fresh process: exit 0, valid JSON with every implementation accounted for."""
    out = tmp_path / "out.json"
    md = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, "-m", "fastadapt", "bench", "--quick", "--rules", "adam",
         "--sizes", "1000", "--json", str(out), "--markdown", str(md)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    (row,) = data["sweep"]
    assert row["config"] == "adam" and row["n"] == 1000 and row["dtype"] == "float32"
    assert row["bytes_per_element"] == 28
    impls = row["implementations"]
    for name in ("fastadapt", "roofline", "numpy", "numpy_alloc"):
        assert impls[name]["median_s"] > 0
    for name in ("torch_single", "torch_foreach", "torch_fused"):
        if torch is None:
            assert impls[name] == {"unavailable": "torch not installed"}
        else:
            assert impls[name]["median_s"] > 0
    assert data["machine"]["cpu"] and data["machine"]["copy_gbps"] > 0
    assert data["threshold"]["serial_below"] == cpu.SERIAL_BELOW
    assert {r["n"] for r in data["per_call"]} == {1000, 10000}
    assert "GPU" in proc.stdout
    text = md.read_text()
    assert "| Adam | 1e3 |" in text and data["machine"]["cpu"] in text
