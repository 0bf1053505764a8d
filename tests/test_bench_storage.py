"""The ``storage`` section of ``fastadapt bench`` (the issue's modes table):
every mode is measured against torch fused float32 Adam in one run, with the
bytes per element the mode moves, and the report renders it."""
import pytest

import numpy as np

from fastadapt.benchmark import _report, _storage_modes, _tables, _yardsticks


def test_storage_section_measures_every_mode_face_and_yardstick():
    """One run holds every mode through adam_step, every 16-bit mode through
    both class faces and its yardstick, torch's rows, DeepSpeedCPUAdam's rows
    or the reason they are missing, and a compute cost per mode."""
    pytest.importorskip("ml_dtypes")
    lines = []
    data = _storage_modes.storage(3000, budget_s=0.05, min_rounds=2, progress=lines.append,
                                  small=(1000,), max_sample_s=0.002)
    rows = {r["key"]: r for r in data["rows"]}
    assert set(_storage_modes.MODES) <= set(rows)
    for mode in _storage_modes.SIXTEEN_BIT:
        for face in ("numpy_class", "yardstick") + (
                ("torch_class",) if data["torch_unavailable"] is None else ()):
            row = rows[f"{mode}:{face}"]
            assert row["mode"] == mode and row["face"] == face
            assert row["bytes_per_element"] == rows[mode]["bytes_per_element"]
        assert rows[mode]["x_yardstick"] == pytest.approx(
            rows[mode]["median_s"] / rows[f"{mode}:yardstick"]["median_s"])
    expected = {"fp32": 28, "bf16_state": 20, "bf16_nearest": 14, "bf16_sr": 14,
                "bf16_sr_fp32_state": 22, "bf16_master": 30, "bf16_split16": 26,
                "bf16_split8": 24}
    for key, b in expected.items():
        assert rows[key]["bytes_per_element"] == b
    # 8-bit: 4r+4w param, 4r grad, per state 1r+1w code and 8 bytes per 256 of absmax
    assert rows["int8_state"]["bytes_per_element"] == pytest.approx(16 + 16 / 256)
    assert rows["int8c_state"]["bytes_per_element"] == pytest.approx(16 + 16 / 32)
    # the full low-byte configuration: 2r+2w param, 2r grad, companded codes, 1r+1w correction
    assert rows["low12"]["bytes_per_element"] == pytest.approx(12 + 16 / 32)
    for r in data["rows"]:
        assert r["median_s"] > 0
    if data["torch_unavailable"] is None:
        assert rows["torch_fused_fp32"]["x_torch_fused_fp32"] == pytest.approx(1.0)
        assert "x_torch_fused_bf16" in rows["bf16_sr"]
        for mode in ("bf16_master", "bf16_split16", "bf16_split8"):
            assert "x_torch_master" in rows[mode]
        for mode in _storage_modes.SIXTEEN_BIT:
            assert rows[f"{mode}:torch_class"]["x_numpy_class"] == pytest.approx(
                rows[f"{mode}:torch_class"]["median_s"]
                / rows[f"{mode}:numpy_class"]["median_s"])
    deepspeed = [k for k in rows if k.startswith("deepspeed")]
    if _storage_modes.deepspeed_status()[0] is None:
        assert not deepspeed and "not" in data["skipped"]["deepspeed"]
        assert any(line.startswith("storage: no DeepSpeedCPUAdam rows: deepspeed is")
                   for line in lines)
    else:
        assert set(deepspeed) == set(_storage_modes.DEEPSPEED_MODES)
        for mode in ("fp32", "bf16_nearest", "bf16_sr_fp32_state"):
            assert "x_deepspeed" in rows[mode]
        assert "x_deepspeed_no_master" in rows["bf16_master"]
    # compute cost: every mode's functional step, every yardstick, torch fused
    computed = {k for k, r in rows.items() if "ns_per_element" in r}
    assert set(_storage_modes.MODES) | {f"{m}:yardstick" for m in _storage_modes.SIXTEEN_BIT} \
        <= computed
    assert data["torch_unavailable"] is not None or "torch_fused_fp32" in computed
    assert [row["n"] for row in data["per_call"]] == [1000]
    table = _tables.storage_table(data)
    text = table.text()
    for column in ("time / yardstick", "ns/elem, 1 thread, L2",
                   "predicted x torch fused fp32, 8 GB/s/core", "fastadapt.Adam",
                   "fastadapt.torch.Adam", "yardstick kernel"):
        assert column in text
    assert "8-bit state" in text and "16.06" in text
    assert "| fp32 param + grad, bf16 state |" in table.markdown()
    from fastadapt.benchmark._machine import describe
    whole = {"command": ["fastadapt", "bench"], "machine": describe(), "wall_s": 1.0,
             "settings": {"dtype": "float32", "retries": 0}, "storage": data}
    md = _report.markdown_report(whole)
    assert "time / yardstick" in md and "ns/elem, 1 thread, L2" in md
    assert "Storage modes, Adam at n = 3,000" in _report.text_report(whole)
    assert "*Predicted* is torch fused float32's time per element" in md


def test_yardsticks_step_the_functional_steps_arrays():
    """A yardstick times the very memory its functional step updates: its step
    moves the param and both moments the functional step holds (so where the
    arrays lie cannot tilt ``time / yardstick``)."""
    pytest.importorskip("ml_dtypes")
    arrays = {}
    _storage_modes._fastadapt_steps(301, arrays=arrays)
    yardsticks = _storage_modes._yardstick_steps(arrays)
    for mode in ("fp32",) + _storage_modes.SIXTEEN_BIT:
        *held, master = arrays[mode]
        before = [a.copy() for a in held] + ([master.copy()] if master is not None else [])
        yardsticks[f"{mode}:yardstick"]()
        after = held + ([master] if master is not None else [])
        for name, b, a in zip(("param", "grad", "exp_avg", "exp_avg_sq", "master"), before,
                              after):
            changed = not np.array_equal(a.view(np.uint8), b.view(np.uint8))
            assert changed == (name != "grad"), (mode, name)


def test_every_implementation_steps_memory_placed_alike():
    """The functional steps' arrays (and so the yardsticks'), torch's fused
    steps' tensors and their state lie as fastadapt's classes place their
    buffers (flat.host_zeros: 64-byte aligned; from 8 MiB on a 2 MiB
    boundary), so placement is not part of any ratio."""
    pytest.importorskip("ml_dtypes")
    from fastadapt.flat import HUGE_PAGE_FROM
    n = 2 ** 21                   # float32 arrays of 8 MiB, bfloat16 ones of 4

    def placed(address, nbytes):
        return address % ((2 << 20) if nbytes >= HUGE_PAGE_FROM else 64) == 0
    arrays = {}
    _storage_modes._fastadapt_steps(n, arrays=arrays)
    held = [a for mode in arrays.values() for a in mode if isinstance(a, np.ndarray)]
    assert len(held) >= 4 * len(_storage_modes.SIXTEEN_BIT)
    for a in held:
        assert placed(a.ctypes.data, a.nbytes), (a.dtype, a.ctypes.data % (2 << 20))
    torch = pytest.importorskip("torch")
    steps, why_not = _storage_modes._torch_steps(n)
    assert why_not is None
    tensors = []
    for step in steps.values():
        opt = next(c.cell_contents for c in step.__closure__
                   if isinstance(c.cell_contents, torch.optim.Optimizer))
        for group in opt.param_groups:
            for p in group["params"]:
                tensors += [p, p.grad, *(v for v in opt.state[p].values() if v.numel() > 1)]
    assert len(tensors) == 4 * len(steps)
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        assert placed(t.data_ptr(), nbytes), (t.dtype, t.data_ptr() % (2 << 20))


def test_compute_cost_is_the_single_thread_slope_between_two_sizes(monkeypatch):
    """The cost per element is (t(large) - t(small)) / (large - small), each
    time the fastest sample's (a median carries whatever noise added), each
    implementation timed at both sizes with Numba and torch on one thread
    (their counts restored after); a slope noise made non-positive is None."""
    import numba
    from fastadapt.benchmark._timing import Timing
    seen = {}

    def fake_interleaved(steps, **kwargs):
        seen["threads"] = numba.get_num_threads()
        torch = _storage_modes._import_torch()
        seen["torch_threads"] = torch.get_num_threads() if torch else 1
        out = {}
        for key, n in steps:
            per_element = -1e-9 if key == "bf16_sr" else 2e-9    # one noisy slope
            t = 5e-6 + per_element * n
            # noise made the median and the slowest sample larger, and more so at n
            out[key, n] = Timing(t * 2, [t * 3, t, t * 2], 1, 3)
        return out
    monkeypatch.setattr(_storage_modes, "interleaved", fake_interleaved)
    before = _storage_modes._threads((numba.get_num_threads(), None))
    ns = _storage_modes.compute_cost(0.01, 1, sizes=(100, 300), deepspeed=False)
    assert seen == {"threads": 1, "torch_threads": 1}
    assert _storage_modes._threads((numba.get_num_threads(), None)) == before
    assert ns.pop("bf16_sr") is None
    assert set(_storage_modes.MODES) - {"bf16_sr"} <= set(ns)
    assert all(v == pytest.approx(2.0) for v in ns.values())


def test_a_disturbed_storage_run_says_so():
    """Figures taken while other processes used the CPUs are marked as such
    (the section is too long to take again, as the sweep's rows are)."""
    data = {"n": 2 ** 20, "others_cpu": 0.43, "compute_others_cpu": 0.05}
    text = _storage_modes.disturbed_text(data, 0.15)
    assert "43% of the CPUs while the modes at n = 1,048,576 ran" in text and "do not quote" in text
    assert "compute cost" not in text
    assert _storage_modes.disturbed_text({**data, "others_cpu": 0.1}, 0.15) == ""
    assert _storage_modes.disturbed_text({"n": 10, "others_cpu": None}, 0.15) == ""


def test_predicted_ratio_is_max_of_compute_and_bytes_over_bandwidth():
    """At 8 GB/s per core, 28 bytes take 3.5 ns and 14 bytes 1.75 ns: a mode
    computing in 1 ns is memory-bound there (1.75 ns), one computing in 2.5 ns
    is compute-bound (2.5 ns); against torch fused fp32 at 1.2 ns (3.5 ns)
    they predict 2.0x and 1.4x."""
    def rows():
        return [{"key": k, "mode": k, "face": "functional", "label": k,
                 "bytes_per_element": b, "median_s": 1.0}
                for k, b in (("torch_fused_fp32", 28), ("bf16_nearest", 14), ("bf16_sr", 14))]
    out = _storage_modes._with_compute_cost(
        rows(), {"torch_fused_fp32": 1.2, "bf16_nearest": 1.0, "bf16_sr": 2.5}, 8e9)
    x = {r["key"]: r["predicted_x_torch_fused_fp32"] for r in out}
    assert x == pytest.approx({"torch_fused_fp32": 1.0, "bf16_nearest": 2.0, "bf16_sr": 1.4})
    out = _storage_modes._with_compute_cost(rows(), {"bf16_sr": 2.5}, 8e9)
    assert out[2]["predicted_x_torch_fused_fp32"] is None      # no torch figure to compare


def _yardstick_and_fastadapt(mode, n, steps, seed=3):
    """The same ``steps`` Adam steps from one start through fastadapt's mode and
    through the mode's yardstick: ``(fastadapt's arrays, the yardstick's, the
    start, the gradient)``, the arrays (param, exp_avg, exp_avg_sq) as stored."""
    import fastadapt
    import ml_dtypes
    bf16 = np.dtype(ml_dtypes.bfloat16)
    rng = np.random.default_rng(seed)
    p32 = rng.standard_normal(n).astype(np.float32)
    g32 = (rng.standard_normal(n) * 1e-3).astype(np.float32)
    if mode == "fp32":
        pdt, sdt, master, stochastic = np.float32, np.float32, False, False
    else:
        pdt, sdt, master, stochastic = _storage_modes._storage_of(mode)
    grad = g32.astype(pdt)
    ours = [p32.astype(pdt), np.zeros(n, sdt), np.zeros(n, sdt)]
    theirs = [a.copy() for a in ours]
    start = ours[0].copy()
    extra = {"master_param": p32.copy()} if master else {}
    if stochastic:
        extra.update(stochastic_rounding=True, seed=1)

    def bits(a):
        return a.view(np.uint16) if a.dtype == bf16 else a
    yardstick = _yardsticks.make_step(mode, bits(theirs[0]), bits(grad), bits(theirs[1]),
                                      bits(theirs[2]), master=p32.copy() if master else None)
    for t in range(1, steps + 1):
        fastadapt.adam_step(ours[0], grad, ours[1], ours[2], step=t, **extra)
        yardstick()
    return ours, theirs, start, grad


@pytest.mark.parametrize("mode", ["fp32", "bf16_state", "bf16_nearest", "bf16_master"])
def test_round_to_nearest_yardsticks_compute_fastadapts_update(mode):
    """Bit for bit, over three steps: the yardstick does the same float32
    operations in the same order (no fastmath, so no reassociation or
    contraction) and rounds to nearest-even as fastadapt does, so any
    difference would be a yardstick doing other (or less) work."""
    pytest.importorskip("ml_dtypes")
    ours, theirs, _, _ = _yardstick_and_fastadapt(mode, 4099, steps=3)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))


@pytest.mark.parametrize("mode", _yardsticks.STOCHASTIC)
def test_stochastic_yardsticks_compute_fastadapts_update(mode):
    """Bit for bit over three steps, the param included: the yardstick draws
    fastadapt's random bits (its key is the stream's input at index 0), so a
    difference would be a yardstick doing other work. And what both compute
    is stochastic rounding, tested here without either's code: after one
    step every element is one of the two bfloat16 neighbours of the float32
    update (fastadapt's float32 step on the same values), and the rounding is
    unbiased: over 4099 elements the mean error, in units of the gap, is
    within 0.04 of 0 (each term has a standard deviation of at most 0.5, so
    0.04 is 5 sigma), where truncating would average about -0.5."""
    pytest.importorskip("ml_dtypes")
    import fastadapt
    ours, theirs, _, _ = _yardstick_and_fastadapt(mode, 4099, steps=3)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))
    ours, theirs, start, grad = _yardstick_and_fastadapt(mode, 4099, steps=1)
    exact = start.astype(np.float32)
    fastadapt.adam_step(exact, grad.astype(np.float32), np.zeros(4099, np.float32),
                        np.zeros(4099, np.float32), step=1)
    low = exact.view(np.uint32) >> 16                # the magnitude truncated, as bits
    gap = (((low + 1) << 16).view(np.float32) - (low << 16).view(np.float32)).astype(np.float64)
    stored = ours[0].view(np.uint16).astype(np.uint32)
    assert np.all((stored == low) | (stored == low + 1))
    error = (ours[0].astype(np.float64) - exact.astype(np.float64)) / gap
    assert abs(error.mean()) < 0.04, error.mean()


def test_accuracy_study_gradients_and_findings():
    """The study's MLP gradients against central differences (float64), and
    what it shows on this problem: float32 master weights, stochastic
    rounding, bfloat16 and 8-bit state end within 5% of float32's loss, and
    bfloat16 params with round-to-nearest end measurably worse than with
    stochastic rounding (updates below half an ulp are lost)."""
    import numpy as np
    from fastadapt.benchmark import _accuracy as A
    pytest.importorskip("ml_dtypes")
    x, y, start = A._problem(1, n=32, d=3, hidden=4)
    x, y = x.astype(np.float64), y.astype(np.float64)

    def loss64(params):
        w1, b1, w2, b2 = params
        return np.mean((np.tanh(x @ w1 + b1) @ w2 + b2 - y) ** 2)
    params = [p.astype(np.float64) for p in start]
    _, grads = A.loss_and_grads(x.astype(np.float32), y.astype(np.float32), start)
    for k, p in enumerate(params):
        for idx in [(0,) * p.ndim, tuple(s - 1 for s in p.shape)]:
            h = 1e-6
            plus = [q.copy() for q in params]
            minus = [q.copy() for q in params]
            plus[k][idx] += h
            minus[k][idx] -= h
            numeric = (loss64(plus) - loss64(minus)) / (2 * h)
            assert grads[k][idx] == pytest.approx(numeric, rel=1e-3, abs=1e-6)
    result = A.run(steps=300)
    ratio = {r["mode"]: r["ratio"] for r in result["rows"]}
    assert ratio["fp32"] == 1.0
    for mode in ("bf16_state", "int8_state", "int8c_state", "bf16_sr", "bf16_master"):
        assert ratio[mode] < 1.05, (mode, ratio)
    assert ratio["bf16_nearest"] > ratio["bf16_sr"] * 1.1, ratio
    assert result["rows"][0]["final_loss"] < 0.1 * result["initial_loss"]
    assert "x float32's" in _tables.accuracy_table(result).text()


def test_accuracy_study_on_the_demo_problem():
    """The logistic problem's float32 gradients against central differences of
    its float64 loss, and what the study shows there: stochastic rounding,
    master weights and bfloat16 state end within 10% of float32's
    suboptimality, while 8-bit state (ten weights with second moments eight
    decades apart in one 256-element block, so the small ones quantize to
    zero) ends more than ten times worse."""
    import numpy as np
    from fastadapt.benchmark import _accuracy as A
    pytest.importorskip("ml_dtypes")
    from fastadapt import demo
    x, y, _ = demo.make_problem(0)
    start, gap_and_grads = A._logistic(0)
    w = np.linspace(-1e-2, 1e-2, start[0].size).astype(np.float32)
    b = np.array([0.1], np.float32)
    _, (gw, gb) = gap_and_grads([w, b])
    w64, b64 = w.astype(np.float64), b.astype(np.float64)
    for k in range(w.size):
        h = 1e-6 / demo.make_problem(0)[2][k]       # a step in standardised units
        plus, minus = w64.copy(), w64.copy()
        plus[k] += h
        minus[k] -= h
        numeric = (demo.loss_and_grad(x, y, plus, b64)[0]
                   - demo.loss_and_grad(x, y, minus, b64)[0]) / (2 * h)
        assert gw[k] == pytest.approx(numeric, rel=1e-3, abs=1e-6)
    result = A.run(problem="logistic")
    assert result["metric"] == "final f - f*" and result["initial_loss"] > 0
    ratio = {r["mode"]: r["ratio"] for r in result["rows"]}
    for mode in ("bf16_state", "bf16_sr", "bf16_master"):
        assert abs(ratio[mode] - 1) < 0.1, (mode, ratio)
    assert ratio["int8_state"] > 10, ratio
    # companded 8-bit state keeps those moments (code 1 is 2.4e-10 of a group's
    # scale): issue 21's bar is 1.5x; measured 0.08 (seed 0) and 0.02 (seed 1)
    assert ratio["int8c_state"] < 1.5, ratio
    assert all(r["final_loss"] >= 0 for r in result["rows"])     # f* is the minimum


def test_accuracy_report_and_plot(tmp_path):
    pytest.importorskip("ml_dtypes")
    from fastadapt.benchmark import _accuracy as A
    data = A.study(steps=5, modes=["fp32", "bf16_sr"])
    assert [r["problem"] for r in A.problems(data)] == list(A.PROBLEMS)
    old = A.run(steps=5, modes=["fp32"])                # one run, as older JSON holds it
    assert A.problems(old) == [old]
    texts = [_tables.accuracy_table(r).text() for r in A.problems(data)]
    assert "final loss" in texts[0] and "final f - f*" in texts[1]
    assert "validation loss" in texts[2]
    pytest.importorskip("matplotlib")
    path = tmp_path / "acc.png"
    from fastadapt.benchmark import _plot
    assert _plot.accuracy(data, str(path)) is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gpt_problem_gradients_and_the_low_byte_configuration():
    """The GPT-shaped problem's float32 gradients against central differences
    of its float64 loss (torch autograd in float64 as the reference), and
    issue 21's bar on it: the full low-byte configuration (bf16 params,
    companded 8-bit state, bf16+8 master: 12.5 bytes per element) ends within
    1% of float32's validation loss after 300 steps."""
    import numpy as np
    torch = pytest.importorskip("torch")
    pytest.importorskip("ml_dtypes")
    from fastadapt.benchmark import _accuracy as A, _gpt_problem as G
    start, figure_and_grads = G.gpt(0)
    figure, grads = figure_and_grads(start)
    assert figure == pytest.approx(np.log(G.VOCAB), rel=0.05)     # untrained: near uniform
    assert [g.shape for g in grads] == [p.shape for p in start]
    # the same batch again, in float64: rebuild the problem to replay its batches
    rng = np.random.default_rng(4000)
    cdf = G._chain(1000)
    windows = np.lib.stride_tricks.sliding_window_view(G._stream(cdf, 40_000, 2000),
                                                       G.CONTEXT + 1)
    batch = torch.from_numpy(windows[rng.integers(0, len(windows), G.BATCH)].copy())
    params64 = [torch.from_numpy(p.astype(np.float64)) for p in start]
    for k, idx in ((0, (3, 5)), (4, (7, 100)), (len(start) - 2, (11,))):
        h = 1e-6
        plus, minus = [p.clone() for p in params64], [p.clone() for p in params64]
        plus[k][idx] += h
        minus[k][idx] -= h
        numeric = float(G._loss(torch, plus, batch) - G._loss(torch, minus, batch)) / (2 * h)
        assert grads[k][idx] == pytest.approx(numeric, rel=2e-3, abs=1e-6)
    result = A.run(problem="gpt", modes=["fp32", "low12"])
    ratio = {r["mode"]: r["ratio"] for r in result["rows"]}
    assert result["rows"][0]["final_loss"] < 0.75 * result["initial_loss"]   # it learns
    assert abs(ratio["low12"] - 1) < 0.01, ratio
    assert len(result["curves"]["fp32"]) == result["steps"] // result["every"] + 1


def test_placed_tensors_keep_their_values_on_placed_memory():
    """The benchmark's placement helpers copy a tensor (float32 or bfloat16,
    any shape) onto memory placed as fastadapt's buffers, values, dtype and
    shape kept; an optimizer's state tensors move there, its 0-dim step stays."""
    torch = pytest.importorskip("torch")
    from fastadapt.benchmark._placement import placed_state, placed_tensor
    from fastadapt.flat import HUGE_PAGE_FROM
    n = HUGE_PAGE_FROM // 4                        # 8 MiB of float32, 4 MiB of bfloat16
    for dtype, boundary in ((torch.float32, 2 << 20), (torch.bfloat16, 64)):
        t = torch.arange(n, dtype=torch.float32).to(dtype).reshape(2, -1)
        out = placed_tensor(torch, t)
        assert out.dtype == dtype and out.shape == t.shape and torch.equal(out, t)
        assert out.data_ptr() % boundary == 0 and out.data_ptr() != t.data_ptr()
    with pytest.raises(TypeError, match="float32 or bfloat16"):
        placed_tensor(torch, torch.zeros(3, dtype=torch.float64))
    p = torch.nn.Parameter(torch.ones(n))
    p.grad = torch.full((n,), 0.5)
    opt = torch.optim.Adam([p], fused=True)
    opt.step()
    before = {k: v.clone() for k, v in opt.state[p].items()}
    step = opt.state[p]["step"]
    placed_state(torch, opt)
    state = opt.state[p]
    assert state["step"] is step
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(state[key], before[key]) and state[key].data_ptr() % (2 << 20) == 0
