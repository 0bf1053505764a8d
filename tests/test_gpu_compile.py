"""Every CUDA kernel compiled for real GPUs (sm_80, sm_90), with no GPU here.

NVVM compiles each kernel fastadapt launches to PTX and ``ptxas`` assembles
it (both from NVIDIA's wheels: ``pip install "fastadapt[cuda]"``); the
checks (``kernels/cuda_check.py``) fail when a kernel stops compiling,
spills registers, does float64 arithmetic in a float32 update, or moves more
global memory than its rule declares. Skipped, with the reason, where
numba-cuda, NVVM or ptxas is missing, and under the CUDA simulator.

The default run compiles every update kernel plain (float32, float64), the
reduction, and one of each storage feature (``cuda_check.REPRESENTATIVE``).
The full matrix, every layout of every kernel (780 kernels with the split
master layouts, 1560 compilations; 10 minutes on 2 busy cores was measured
for the 417 without 8-bit state it had then), is ``slow`` and runs only with
``FASTADAPT_GPU_COMPILE_FULL=1`` (``bench/gpu_check.sh`` sets it, on a
machine with many cores); it compiles only the targets selected, so ``-k``
runs a part of it (``-k "m16 or m8"``: the split master layouts, whose tags
end in ``m16`` / ``m8``). Results are cached in pytest's cache folder, keyed
by every source the kernels depend on and the compilers' versions, so a run
whose kernels did not change compiles nothing.
"""
import os

import pytest

pytestmark = pytest.mark.gpu_compile

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("the CUDA simulator is on: nothing is compiled", allow_module_level=True)
pytest.importorskip("numba_cuda", reason='numba-cuda is not installed (pip install '
                    '"fastadapt[cuda]")')

from fastadapt.kernels import cuda_check, ptx as ptx_text  # noqa: E402

try:
    cuda_check.ptxas_path()
except cuda_check.Unavailable as exc:
    pytest.skip(str(exc), allow_module_level=True)

DEFAULT = cuda_check.targets()
FULL = [t for t in cuda_check.targets(full=True) if t not in DEFAULT]
WORKERS = max(1, min(4, os.cpu_count() or 1))


def _compile(request, targets):
    # pytest's cache folder keeps the results between runs; without the cache
    # plugin (-p no:cacheprovider) a temporary folder serves this run only
    plugin = getattr(request.config, "cache", None)
    cache = (plugin.mkdir("fastadapt-gpu-compile") if plugin is not None else
             request.getfixturevalue("tmp_path_factory").mktemp("fastadapt-gpu-compile"))
    try:
        return cuda_check.check(targets, cache_dir=cache, workers=WORKERS)
    except cuda_check.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def compiled(request):
    return _compile(request, DEFAULT)


@pytest.fixture(scope="module")
def compiled_full(request):
    # the full-matrix targets of the tests selected, not all of FULL
    chosen = [item.callspec.params["target"] for item in request.session.items
              if getattr(item, "originalname", None) == "test_kernel_full_matrix"]
    return _compile(request, chosen)


def _assert_clean(results, target):
    for cc in cuda_check.CCS:
        problems = cuda_check.problems(target, results[(target, cc)])
        assert not problems, f"{target.name} for sm_{cc[0]}{cc[1]}: {problems}"


@pytest.mark.parametrize("target", DEFAULT, ids=lambda t: t.name)
def test_kernel(compiled, target):
    """Compiles for sm_80 and sm_90: no spills, no float64 work in float32,
    each array read and written once."""
    _assert_clean(compiled, target)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FASTADAPT_GPU_COMPILE_FULL") != "1",
                    reason="the full layout matrix compiles only with "
                    "FASTADAPT_GPU_COMPILE_FULL=1 (about 15 minutes on 2 cores)")
@pytest.mark.parametrize("target", FULL, ids=lambda t: t.name)
def test_kernel_full_matrix(compiled_full, target):
    _assert_clean(compiled_full, target)


def test_every_kernel_is_compiled():
    """The default run covers every kernel the registry declares, in both
    dtypes, and 8-bit state in both formats."""
    from fastadapt.kernels.layout import BLOCKWISE8, ROOT8, SOFTSIGN8
    from fastadapt.rules import kernel_specs
    plain = {(t.kernel, t.dtype) for t in DEFAULT if t.layout is None}
    for kernel in [*kernel_specs(), cuda_check.SUM_OF_SQUARES]:
        assert {(kernel, "float32"), (kernel, "float64")} <= plain
    assert {(cuda_check.SUM_OF_SQUARES, "bfloat16"), (cuda_check.SUM_OF_SQUARES, "float16")} \
        <= plain
    codes = {c for t in DEFAULT if t.layout is not None for c in t.layout.codes}
    assert {BLOCKWISE8, SOFTSIGN8, ROOT8} <= codes, "both 8-bit formats"


def test_register_table(compiled):
    rows = cuda_check.register_table(compiled)
    assert len(rows) == len(DEFAULT)
    for row in rows:
        assert 0 < row["sm_80"] <= 255 and 0 < row["sm_90"] <= 255, row
        assert row["sm_80 spill"] == row["sm_90 spill"] == 0, row
    from fastadapt.benchmark._tables import register_table
    text = register_table({"rows": rows}).markdown()
    assert text.count("\n") == len(rows) + 1 and "| adam[float32] |" in text


# ----------------------------------------------------------------- the checks can fail
def _adam_ptx():
    target = cuda_check.Target("adam", "float32")
    ptx, _ = cuda_check.compile_function(cuda_check.python_function(target),
                                         cuda_check.signature(target), (9, 0))
    return target, ptx


def test_traffic_check_catches_a_wrong_declaration():
    """The float32 Adam kernel's PTX checked against a declaration of bfloat16
    state: its bodies move more bytes than that declares."""
    from fastadapt.kernels.layout import BFLOAT16, NATIVE, Layout
    target, ptx = _adam_ptx()
    assert cuda_check.traffic_problems(target, ptx) == []
    narrower = target._replace(layout=Layout((NATIVE, NATIVE) + (BFLOAT16,) * 3))
    problems = cuda_check.traffic_problems(narrower, ptx)
    assert any("more than any setting declares" in p for p in problems), problems


def test_traffic_check_catches_a_second_read():
    """An element loop that reads grad twice (the second read behind a store
    to param that may alias it, so it stays)."""
    from numba import cuda, types

    def reread(param, grad, scalars):
        for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
            param[i] = param[i] + grad[i]
            param[i] = param[i] + grad[i]
    target = cuda_check.Target("sgd", "float32")
    f32 = types.float32[::1]
    ptx, _ = cuda_check.compile_function(reread, (f32, f32, types.UniTuple(types.float32, 1)),
                                         (8, 0))
    # each body alone is within SGD's declaration (param, grad in; param out)
    problems = cuda_check.traffic_problems(target, ptx)
    assert any("more than once per element" in p for p in problems), problems


def test_branchy_layouts_are_checked_for_arrays_and_widths():
    """float16 stochastic rounding branches on the value (see
    ``cuda_check.branches_in_element``): its kernels get the weaker check,
    which still catches an access wider than any array's storage."""
    from fastadapt.kernels.layout import FLOAT16, NATIVE, Layout
    target = cuda_check.Target("sgd", "float32", Layout((FLOAT16, FLOAT16, NATIVE), False, True))
    assert cuda_check.branches_in_element(target)
    plain = cuda_check.Target("sgd", "float64")
    ptx, _ = cuda_check.compile_function(cuda_check.python_function(plain),
                                         cuda_check.signature(plain), (9, 0))
    problems = cuda_check.traffic_problems(target, ptx)
    assert any("an access of 8 bytes" in p for p in problems), problems


def test_state8_traffic_check_catches_a_second_read():
    """The companded 8-bit Adam kernel is clean; with one load of a code
    repeated (a second read of the state), or checked as if its codes were
    16-bit, its traffic is not what it declares."""
    import re
    from fastadapt.kernels.layout import Layout
    target = cuda_check.Target("adam", "float32", Layout(tuple("ffcrr")))
    assert cuda_check.is_state8(target)
    ptx, _ = cuda_check.compile_function(cuda_check.python_function(target),
                                         cuda_check.signature(target), (9, 0))
    assert cuda_check.traffic_problems(target, ptx) == []
    line = re.search(r"^\s*ld\.global\.u8\b.*$", ptx, re.M).group(0)
    twice = ptx.replace(line, line + "\n" + line, 1)
    problems = cuda_check.traffic_problems(target, twice)
    assert any("loads but" in p and ".codes" in p for p in problems), problems
    wider = ptx.replace(line, line.replace(".u8", ".u16"), 1)
    problems = cuda_check.traffic_problems(target, wider)
    assert any("2 bytes at a time, not 1" in p for p in problems), problems


def test_float64_check_catches_a_python_float():
    from numba import cuda, types

    def promotes(param):
        for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
            param[i] = param[i] * 0.1          # 0.1 is a float64: the product is too
    ptx, _ = cuda_check.compile_function(promotes, (types.float32[::1],), (9, 0))
    assert "mul.f64" in ptx_text.float64_instructions(ptx)
    target = cuda_check.Target("sgd", "float32")
    result = {"problems": [], "spill_stores": 0, "spill_loads": 0,
              "f64": ptx_text.float64_instructions(ptx)}
    assert any("float64" in p for p in cuda_check.problems(target, result))


def test_spill_check():
    target = cuda_check.Target("sgd", "float32")
    result = {"problems": [], "spill_stores": 8, "spill_loads": 8, "f64": []}
    assert cuda_check.problems(target, result) == ["spills 8 bytes stored, 8 loaded"]


def test_bodies_parser():
    ptx = """
	ld.global.f32 	%f1, [%rd1];
	ld.global.nc.v4.u16 	{%rs1, %rs2, %rs3, %rs4}, [%rd2];
	@%p1 st.global.f32 	[%rd1], %f2;
	ld.global.u8 	%rs5, [%rd3];
	st.global.u16 	[%rd3], %rs6;
	st.global.f64 	[%rd4], %fd1;
"""
    assert ptx_text.bodies(ptx) == [((4, 8), (4,)), ((1,), (2, 8))]
