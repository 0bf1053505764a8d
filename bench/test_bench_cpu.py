"""CPU benchmarks, one group per (rule, size): fastadapt, the same-traffic
roofline, NumPy and torch.optim's single-tensor / foreach / fused paths side
by side, so pytest-benchmark's table reads as ratios; plus the serial/parallel
driver threshold and Adam over GPT-2 small's 148 parameter arrays.

The implementations are ``fastadapt.benchmark``'s (the same ones ``fastadapt
bench`` times, interleaved, for the published table).
"""
import numpy as np
import pytest

from fastadapt.benchmark import IMPLEMENTATIONS, build_all, driver_call, make_problem, size_label
from fastadapt.benchmark._implementations import GPT2_LABELS, gpt2_adam_steps, gpt2_small_shapes
from fastadapt.kernels import cpu


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_step(benchmark, rule_config, size, impl, dtype):
    param, grad = make_problem(size, dtype)
    steps, unavailable = build_all(rule_config, param, grad, (impl,))
    if impl in unavailable:
        pytest.skip(unavailable[impl])
    step = steps[impl]
    del param, grad
    step()
    nbytes = rule_config.bytes_per_element(dtype.itemsize) * size
    benchmark.group = f"{rule_config.label} n={size_label(size)} {dtype.name}"
    benchmark.extra_info.update(bytes_per_step=nbytes, n=size, rule=rule_config.key)
    benchmark(step)
    stats = benchmark.stats.stats if benchmark.stats else None
    if stats is not None:
        benchmark.extra_info["gbps_median"] = nbytes / stats.median / 1e9


@pytest.mark.parametrize("kind", ["serial", "parallel"])
@pytest.mark.parametrize("n", [128, 256, 512, 1024, 4096],
                         ids=lambda n: str(n))
def test_driver_threshold(benchmark, rule_config, n, kind, dtype):
    """DRIVERS[rule].serial vs .parallel: where the thread pool pays (SERIAL_BELOW)."""
    param, grad = make_problem(n, dtype)
    driver, args = driver_call(rule_config, param, grad)
    kernel = getattr(driver, kind)
    kernel(*args)
    benchmark.group = (f"threshold {rule_config.label} n={n} {dtype.name} "
                       f"(SERIAL_BELOW={cpu.SERIAL_BELOW})")
    benchmark(kernel, *args)


@pytest.fixture(scope="module", params=[768, 128], ids=lambda d: f"d_model={d}")
def gpt2_problem(request, dtype):
    shapes = gpt2_small_shapes(request.param)
    numel = sum(int(np.prod(s)) for s in shapes)
    rng = np.random.default_rng(0)
    return (shapes, rng.standard_normal(numel, dtype=dtype),
            rng.standard_normal(numel, dtype=dtype))


@pytest.mark.parametrize("impl", list(GPT2_LABELS))
def test_gpt2_small_adam(benchmark, gpt2_problem, impl, dtype):
    """Adam over GPT-2 small's 148 arrays (full width, and narrowed to ~10^7
    elements): fastadapt.Adam (one flat buffer) vs adam_step on one array of the
    same size (the class's floor), torch's fused / foreach Adam over the list,
    and adam_step per array."""
    shapes, flat_param, flat_grad = gpt2_problem
    steps, unavailable = gpt2_adam_steps(shapes, flat_param, flat_grad, [impl])
    if impl in unavailable:
        pytest.skip(unavailable[impl])
    step = steps.pop(impl)
    step()
    numel = sum(int(np.prod(s)) for s in shapes)
    benchmark.group = f"GPT-2-shaped Adam ({len(shapes)} arrays, {numel:,} elements) {dtype.name}"
    benchmark.extra_info["label"] = GPT2_LABELS[impl]
    benchmark.pedantic(step, rounds=7, warmup_rounds=1)


def _adafactor_steps(shape, dtype):
    """One Adafactor step of a ``shape`` parameter: fastadapt.adafactor_step,
    and torch.optim.Adafactor's single-tensor and foreach paths."""
    from fastadapt import adafactor_step
    rng = np.random.default_rng(0)
    param = rng.standard_normal(shape).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    state = ({"variance": np.zeros(shape, dtype)} if len(shape) < 2 else
             {"row_var": np.zeros(shape[:-1] + (1,), dtype),
              "col_var": np.zeros(shape[:-2] + (1,) + shape[-1:], dtype)})
    steps = {"fastadapt": lambda: adafactor_step(param, grad, step=2, **state)}
    torch = pytest.importorskip("torch")
    for name, foreach in (("torch single-tensor", False), ("torch foreach", True)):
        p = torch.nn.Parameter(torch.from_numpy(param.copy()))
        p.grad = torch.from_numpy(grad.copy())
        steps[name] = torch.optim.Adafactor([p], foreach=foreach).step
    return steps


@pytest.mark.parametrize("impl", ["fastadapt", "torch single-tensor", "torch foreach"])
@pytest.mark.parametrize("kind", ["matrix", "vector"])
def test_adafactor(benchmark, size, kind, impl, dtype):
    """Adafactor on one parameter of ``size`` elements: a matrix of 1024 columns
    (factored second moment) or a vector. Not a rule of the registry (its step
    reduces over each tensor), so it has its own group here."""
    cols = 1024 if size >= 1024 else size
    shape = (size // cols, cols) if kind == "matrix" else (size,)
    step = _adafactor_steps(shape, dtype)[impl]
    step()
    benchmark.group = f"Adafactor {kind} {shape} {dtype.name}"
    benchmark(step)
