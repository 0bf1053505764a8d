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
from fastadapt.benchmark import (CONFIGS, NUMPY_STEPS, bare_step, build_all, driver_call,
                                 gpt2_small_shapes, make_problem, parse_size, select)
from fastadapt.benchmark._implementations import gpt2_adam_steps
from fastadapt.benchmark._numpy_reference import CAREFUL, SCRATCH_ARRAYS, derived_step
from fastadapt.benchmark._timing import interleaved
from fastadapt.functional import step_for
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
    want = _run_steps(step_for(rule), rule, options, param, grad, 5)
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
    want = _run_steps(step_for(rule), rule, options, param, grad, 5)
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
        assert "torch_single" in steps
        if not config.rule.torch_sparse_grad:    # SparseAdam: one path
            assert "torch_foreach" in steps
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
    p, _ = _first_functional_step(config, param, grad)
    assert args[0].tobytes() == p.tobytes()


def _first_functional_step(config, param, grad):
    """``(param, state)`` after the functional step's first call on copies."""
    p, g = param.copy(), grad.copy()
    state = config.initial_state(p)
    kwargs = {**config.options, **state}
    if config.rule.takes_step:
        kwargs["step"] = 1
    step_for(config.rule)(p, g, **kwargs)
    return p, state


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.key)
@pytest.mark.parametrize("n", [1000, cpu.SERIAL_BELOW + 5])
def test_the_bare_call_gives_the_functional_steps_bits(config, n):
    """The per-call section's yardstick does the functional step's update:
    param and every state array bit for bit after one call of each."""
    param, grad = make_problem(n, np.float32)
    bare = bare_step(config, param, grad)
    bare()
    p, state = _first_functional_step(config, param, grad)
    assert bare.arrays[0].tobytes() == p.tobytes()
    written = [a for a in bare.arrays[2:] if isinstance(a, np.ndarray) and a.size == n]
    assert [a.tobytes() for a in written] == [state[k].tobytes() for k in state]


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
    assert main(["--rules", "nosuchrule"]) == 2
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
    assert data["machine"]["cpu"]
    assert "threshold" not in data and "gpt2" not in data       # not in --quick
    assert {r["n"] for r in data["per_call"]} == {1000, 10000}
    assert "GPU" in proc.stdout
    assert "rival's time / fastadapt's time" in _flat(proc.stdout)   # columns explained
    assert "target" not in proc.stdout.lower()
    assert "left]" in proc.stderr                              # progress lines carry an ETA
    text = md.read_text()
    assert "| Adam | 1e3 |" in text and data["machine"]["cpu"] in text


# ------------------------------------------------------------------ the report
from fastadapt.benchmark import _cli, _report, _tables  # noqa: E402


def _flat(text):
    """``text`` with its line wrapping undone."""
    return " ".join(text.split())


def _machine():
    return {"cpu": "Test CPU", "logical_cpus": 2, "usable_cpus": 2, "memory_bytes": 2**34,
            "platform": "test", "numba_threads": 2, "numba_threading_layer": "omp",
            "versions": {"python": "3", "numpy": "2", "numba": "0", "torch": None,
                         "fastadapt": fastadapt.__version__},
            "date_utc": "today", "caches": {"levels": {"L2": 2**20, "L3": 2**25},
                                            "largest_bytes": 2**25},
            "load_average_start": 0.1, "torch_threads": None}


def _row(label, n, fa_us, roof_us, numpy_us, others=0.0, bpe=28):
    def entry(us):
        return {"median_s": us * 1e-6, "gbps": bpe * n / (us * 1e-6) / 1e9}
    impls = {"fastadapt": entry(fa_us), "roofline": entry(roof_us), "numpy": entry(numpy_us),
             "numpy_alloc": {"unavailable": "not run"},
             "torch_single": {"unavailable": "torch not installed"},
             "torch_foreach": {"unavailable": "torch not installed"},
             "torch_fused": {"unavailable": "torch not installed"}}
    return {"config": label.lower(), "label": label, "n": n, "bytes_per_element": bpe,
            "implementations": impls, "fastadapt_us": fa_us,
            "fastadapt_gbps": bpe * n / (fa_us * 1e-6) / 1e9,
            "pct_roofline": 100 * roof_us / fa_us,
            "speedup": {"roofline": roof_us / fa_us, "numpy": numpy_us / fa_us},
            "others_cpu": others}


def _data(rows, **extra):
    return {"command": ["fastadapt", "bench"], "machine": _machine(), "wall_s": 1.0,
            "settings": {"dtype": "float32", "retries": 1}, "sweep": rows, **extra}


def test_the_machine_names_what_the_kernels_are_compiled_for():
    """The report names LLVM's CPU and its widest vector instructions beside
    the model name (one model name has covered AVX2 and AVX-512 machines)."""
    import llvmlite.binding as ll
    from fastadapt.benchmark import _machine as machine
    target = machine.compile_target()
    flags = {k for k, on in ll.get_host_cpu_features().items() if on}
    assert target.startswith(ll.get_host_cpu_name())
    assert ("AVX-512" in target) == ("avx512f" in flags)
    assert ("AVX2" in target) == ("avx2" in flags and "avx512f" not in flags)
    info = machine.describe()
    assert info["compile_target"] == target
    assert f"({target})" in machine.one_line(info)
    md = _report.markdown_report(_data([_row("Adam", 1000, 5.0, 1.0, 50.0)]) |
                                 {"machine": info})
    assert f"| compiled for (LLVM's CPU, vector instructions) | {target} |" in md


def test_a_disturbed_row_prints_no_figures():
    rows = [_row("Adam", 1000, 8003.3, 8003.3, 1.0, others=0.43),    # issue 9's 8 ms rows
            _row("Adam", 2**23, 10_000.0, 9_800.0, 80_000.0)]
    text = _flat(_report.text_report(_data(rows)))
    assert "8,003" not in text and "8.0 ms" not in text and "0.00x" not in text
    assert "— busy 43%" in text and "1 of 2 measurements stayed disturbed" in text
    assert "8.00x" in text                                 # the quiet row keeps its figures
    md = _report.markdown_report(_data(rows))
    assert "8,003" not in md and "— busy 43%" in md


def test_bandwidth_is_the_roofline_at_the_largest_size_without_disturbed_rows():
    big = 2**23
    rows = [_row("Adam", 1000, 5.0, 1.0, 50.0),                          # cache: 28 GB/s+
            _row("Adam", big, 10_000.0, 9_000.0, 80_000.0),
            _row("SGD", big, 9_000.0, 8_000.0, 80_000.0, bpe=20),
            _row("AdaGrad", big, 9_000.0, 1.0, 80_000.0, bpe=20, others=0.5)]  # disturbed
    gbps, n, count = _report.bandwidth(_data(rows))
    assert n == big and count == 2
    expected = sorted([28 * big / 9e-3 / 1e9, 20 * big / 8e-3 / 1e9])
    assert gbps == pytest.approx(sum(expected) / 2)
    text = _flat(_report.text_report(_data(rows)))
    assert f"{gbps:.1f} GB/s, the in-place same-traffic roofline kernel at n = 2^23" in text
    # Adam's arrays at 1e3 fit in the 32 MiB cache, at 2^23 they do not
    assert "32 MiB last-level cache (here n = 1e3)" in text


def test_the_ratio_to_the_bare_call_is_shown_busy_or_not():
    """fastadapt / bare call, a ratio within rounds, survives a busy machine;
    the absolute times do not."""
    row = {"label": "Adam", "n": 1000, "us": {"fastadapt": 6.0, "driver": 1.2},
           "overhead_us": 4.8, "x_bare": 5.0, "x_bare_iqr": [4.5, 5.5], "unavailable": {}}
    quiet = _tables.per_call_table([{**row, "others_cpu": 0}]).text()
    busy = _tables.per_call_table([{**row, "others_cpu": 0.5}]).text()
    assert "5.0x (4.5-5.5)" in quiet and "5.0x (4.5-5.5)" in busy
    assert "6.00" in quiet and "6.00" not in busy and "busy 50%" in busy


def test_every_ratio_is_rival_time_over_fastadapt_time():
    per_call = [{"label": "Adam", "n": 1000, "us": {"fastadapt": 2.0, "driver": 1.0,
                                                    "torch_fused": 6.0},
                 "overhead_us": 1.0, "x_torch_fused": 3.0, "unavailable": {}, "others_cpu": 0}]
    table = _tables.per_call_table(per_call).text()
    assert "x torch fused" in table and "3.00x" in table
    gpt2 = {"arrays": 148, "elements": 10, "dtype": "float32", "d_model": 128,
            "others_cpu": 0.0, "unavailable": {},
            "results": {"fastadapt_class": {"median_s": 1.0, "gbps": 1.0,
                                            "x_fastadapt_class": 1.0},
                        "torch_fused": {"median_s": 1.5, "gbps": 1.0,
                                        "x_fastadapt_class": 1.5}}}
    table = _tables.gpt2_table(gpt2).text()
    assert "fastadapt.Adam speed-up" in table and "1.50x" in table


def test_no_pass_fail_targets_in_the_installed_tool():
    assert not hasattr(_report, "targets")
    text = _report.text_report(_data([_row("Adam", 2**23, 10.0, 9.0, 80.0)]))
    assert "MISSED" not in text and "Targets" not in text


def test_progress_eta_scales_what_is_left_by_the_pace_so_far():
    now = [0.0]
    lines = []

    class Stream:
        def write(self, text):
            lines.append(text)

        def flush(self):
            pass
    progress = _cli.Progress({"main": 60.0, "gpt2": 40.0}, stream=Stream(),
                             clock=lambda: now[0])
    assert progress.eta() == (0.0, 100.0)
    now[0] = 20.0
    progress.advance(10.0)                 # twice as slow as planned
    elapsed, left = progress.eta()
    assert elapsed == 20.0 and left == pytest.approx(180.0)
    progress("row done")
    assert lines[0].startswith("[0:20 elapsed, ~3:00 left] row done")


def test_default_run_fits_its_budget_by_the_arithmetic():
    """The default run is planned at about two minutes of measurement on 2 cores
    (the bound is 3 minutes; the margin is for a busy machine and retries)."""
    configs = select(["all"])
    plan = _cli._plan(_cli.DEFAULT_SECTIONS, configs, list(_cli.DEFAULT_SIZES),
                      np.dtype(np.float32), *_cli.MODES["default"][:2], "default")
    assert sum(plan.values()) + _cli.MODES["default"][3] <= 150, plan
    full = _cli._plan(_cli.SECTIONS, configs, list(_cli.FULL_SIZES), np.dtype(np.float32),
                      *_cli.MODES["full"][:2], "full")
    assert sum(full.values()) > sum(plan.values())
    assert "gpt2" in plan and max(_cli.DEFAULT_SIZES) <= 2**23     # ~3 GiB at most


def test_quick_and_full_exclude_each_other(capsys):
    from fastadapt.benchmark import main
    assert main(["--quick", "--full"]) == 2
    assert "not allowed with" in capsys.readouterr().err


def test_gpu_section_without_a_gpu_skips_cleanly(capsys):
    from fastadapt.benchmark import main
    from fastadapt.benchmark._gpu import status
    if status()[0]:
        pytest.skip("a GPU is present: the section runs instead")
    assert main(["--sections", "gpu", "--rules", "adam", "--sizes", "100"]) == 0
    out = capsys.readouterr().out
    assert "no GPU section" in out


_GPU_SIM_SCRIPT = """
import json, sys
import numpy as np
from fastadapt.kernels import cuda as kernels
kernels.THREADS_PER_BLOCK = 32            # several blocks and strides on tiny arrays
from numba import cuda
from fastadapt.benchmark import select, make_problem
from fastadapt.benchmark import _gpu
from fastadapt.functional import step_for

# the roofline kernels move a k-state rule's traffic: grad added to param and each state
for k in range(_gpu.MAX_STATE + 1):
    p, g = np.arange(70.0), np.full(70, 0.5)
    s = [np.full(70, float(j)) for j in range(k)]
    d = [cuda.to_device(a) for a in [p, g] + s]
    _gpu.roofline_kernel(k)[3, 32](*d)
    assert np.array_equal(d[0].copy_to_host(), p + 0.5)
    assert np.array_equal(d[1].copy_to_host(), g)
    for j in range(k):
        assert np.array_equal(d[2 + j].copy_to_host(), s[j] + 0.5)

# fastadapt's step on device arrays is the functional step
config = select(["adam"])[0]
param, grad = make_problem(70, np.float32)
steps, unavailable = _gpu.build_steps(config, param, grad, "torch does not run here")
steps["fastadapt"](); steps["fastadapt"]()
p, m, v = param.copy(), np.zeros(70, np.float32), np.zeros(70, np.float32)
for t in (1, 2):
    step_for(config.rule)(p, grad, m, v, step=t)
assert np.array_equal(steps["fastadapt"].arrays[0].copy_to_host(), p)
assert set(unavailable) == {"torch_single", "torch_foreach", "torch_fused"}

ok, what = _gpu.status()
assert ok and "simulator" in what
out = _gpu.measure(select(["adam", "sgd"]), [40, 70], np.float32, 0.01, 3, lambda line: None)
print(json.dumps(out))
"""


def test_gpu_section_under_the_cuda_simulator():
    proc = subprocess.run([sys.executable, "-c", _GPU_SIM_SCRIPT], capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["available"] and out["simulator"]
    assert [(r["config"], r["n"]) for r in out["rows"]] == [
        ("adam", 40), ("adam", 70), ("sgd-momentum", 40), ("sgd-momentum", 70)]
    for r in out["rows"]:
        assert "error" not in r, r
        rule = select([r["config"]])[0]
        assert r["bytes_per_element"] == rule.bytes_per_element(4)       # from the registry
        assert set(r["implementations"]) == {"fastadapt", "roofline"}
        assert r["pct_roofline"] > 0 and r["speedup"]["roofline"] > 0
        assert r["unavailable"]["torch_fused"] == "torch does not run on the CUDA simulator"
    assert out["roofline_n"] == 70 and out["roofline_gbps"] > 0
    assert "simulator" in out["registers"]["reason"]         # nothing is compiled there
    text = _tables.cuda_table(out).text()
    assert "no CUDA torch" in text and "% roofline" in text


def test_interleaved_timing_stops_at_twice_the_budget_after_min_rounds(monkeypatch):
    """Rounds are sized from the fastest calls; when calls turn slow (a busy
    machine), the measurement still ends near its budget."""
    from fastadapt.benchmark import _timing
    now = [0.0]
    calls = {"n": 0}
    monkeypatch.setattr(_timing, "_clock", lambda: now[0])

    def step():
        calls["n"] += 1
        now[0] += 1e-4 if calls["n"] <= 40 else 0.05     # fast while sized, then slow
    result = _timing.interleaved({"a": step}, budget_s=0.1, min_rounds=3, max_rounds=200)
    rounds = len(result["a"].samples)
    assert 3 <= rounds < 10
    assert result["a"].calls == rounds * result["a"].inner


def test_a_sample_ends_early_when_calls_turn_slow(monkeypatch):
    """A sample sized for 1 us calls does not run its 2000 calls at 4 ms each
    (8 s) when the machine turns busy: it ends soon after 4 times its planned
    length, and its time per call is the mean of the calls it made."""
    from fastadapt.benchmark import _timing
    now = [0.0]
    calls = {"n": 0}
    monkeypatch.setattr(_timing, "_clock", lambda: now[0])

    def step():
        calls["n"] += 1
        now[0] += 1e-6 if calls["n"] <= 1000 else 4e-3   # slow from the first sample on
    result = _timing.interleaved({"a": step}, budget_s=0.01, min_rounds=2, max_rounds=2)
    timing = result["a"]
    assert timing.inner >= 1000                     # sized from the fast calls
    assert now[0] < 1.0                             # not 2 x 2000 x 4 ms
    assert timing.calls < timing.inner
    assert max(timing.samples) == pytest.approx(4e-3, rel=0.01)


def test_plot_draws_only_undisturbed_rows(tmp_path):
    pytest.importorskip("matplotlib")
    quiet = _row("Adam", 2**23, 10_000.0, 9_000.0, 80_000.0)
    busy = _row("SGD", 2**23, 10_000.0, 9_000.0, 80_000.0, bpe=20, others=0.6)
    path = tmp_path / "t.png"
    from fastadapt.benchmark import _plot
    assert _plot.throughput(_data([quiet, busy]), str(path)) is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "disturbed" in _plot.throughput(_data([busy]), str(tmp_path / "u.png"))
    assert not (tmp_path / "u.png").exists()


def test_gpu_section_without_numba_cuda_says_what_to_install(monkeypatch):
    from fastadapt.benchmark import _gpu
    monkeypatch.setitem(sys.modules, "numba_cuda", None)        # import numba_cuda fails
    ok, reason = _gpu.status()
    assert not ok and "numba-cuda is not installed" in reason and "fastadapt[cuda]" in reason
    out = _gpu.measure(select(["adam"]), [100], np.float32, 0.01, 3, lambda line: None)
    assert out == {"available": False, "reason": reason}


def test_storage_core_bandwidth_must_be_positive(capsys):
    from fastadapt.benchmark import main
    assert main(["--sections", "storage", "--core-bandwidth", "0"]) == 2
    assert "--core-bandwidth must be positive" in capsys.readouterr().err


def test_load_section_times_pool_serial_and_choice_with_and_without_spinners():
    """The load section's rows: every size on the machine as is and with one
    spinning process per CPU (stopped afterwards), each kind's mean time per
    call, and a table that renders them."""
    import multiprocessing

    from fastadapt.benchmark import _load
    data = _load.run(0.01, lambda line: None, sizes=(9_000,))
    assert [(r["n"], r["load"]) for r in data["rows"]] == [(9_000, "as is"), (9_000, "busy")]
    for r in data["rows"]:
        assert all(r[f"{k}_us"] > 0 for k in _load.KINDS)
    assert not multiprocessing.active_children()
    table = _tables.load_table(data).markdown()
    assert table.count("9,000") == 2 and "one busy process per CPU" in table
