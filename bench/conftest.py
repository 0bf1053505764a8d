"""pytest-benchmark suites for fastadapt: ``pytest bench/`` (not part of ``pytest``).

The root pyproject's ``testpaths = ["tests"]`` keeps these out of the test
run; name the directory to run them. Options (after ``pytest bench/``):

  --bench-rules adam,sgd        rule configurations (fastadapt.benchmark.CONFIGS keys)
  --bench-sizes 1e3,1e6,2**24   element counts
  --bench-dtype float32         or float64

Every test is parametrized from the registry (``fastadapt.benchmark.CONFIGS``
and its implementations), so ids are stable across commits and
``--benchmark-autosave`` / ``--benchmark-compare`` line up.
"""
import numpy as np
import pytest

pytest.importorskip("pytest_benchmark",
                    reason="pytest-benchmark is not installed (pip install 'fastadapt[bench]')")

from fastadapt.benchmark import parse_size, select, size_label  # noqa: E402

DEFAULT_SIZES = "1e3,1e6,2**24"


def pytest_addoption(parser):
    group = parser.getgroup("fastadapt benchmarks")
    group.addoption("--bench-rules", default="all",
                    help="comma-separated rule configurations (default all)")
    group.addoption("--bench-sizes", default=DEFAULT_SIZES,
                    help=f"comma-separated element counts (default {DEFAULT_SIZES})")
    group.addoption("--bench-dtype", default="float32", choices=("float32", "float64"))


def pytest_generate_tests(metafunc):
    config = metafunc.config
    if "rule_config" in metafunc.fixturenames:
        configs = select(config.getoption("--bench-rules").split(","))
        metafunc.parametrize("rule_config", configs, ids=[c.key for c in configs])
    if "size" in metafunc.fixturenames:
        sizes = [parse_size(s) for s in config.getoption("--bench-sizes").split(",")]
        metafunc.parametrize("size", sizes, ids=[size_label(n).replace(',', '_') for n in sizes])


@pytest.fixture(scope="session")
def dtype(request):
    return np.dtype(request.config.getoption("--bench-dtype"))
