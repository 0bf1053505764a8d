"""Compile once: no new specialization on a second call, the on-disk cache serves a
fresh process, and ``import fastadapt`` stays light (no torch, no CUDA target)."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastadapt
from fastadapt.functional import step_for
from fastadapt.kernels import cpu

import optim_cases as cases

REPO = Path(__file__).resolve().parents[1]


def _run_python(code, cwd, **env):
    """Run ``code`` in a fresh interpreter (this one's) and return its last stdout line."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                            env={**os.environ, **env}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("name", list(fastadapt.RULES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("size", [7, cpu.SERIAL_BELOW + 1], ids=["serial", "parallel"])
def test_a_second_call_compiles_nothing(name, dtype, size):
    rule = fastadapt.RULES[name]
    driver = cpu.DRIVERS[rule.kernel]
    path = driver.serial if size < cpu.SERIAL_BELOW else driver.parallel

    def step(shape, t, lr, options):
        param, (grad,) = cases.problem(shape, dtype, t, steps=1)
        state = cases.initial_state(name, options, param.shape, dtype)
        counter = {"step": t} if rule.takes_step else {}
        step_for(rule)(param, grad, **state, **options, **counter, lr=lr)

    step(size, 1, 1e-3, cases.EVERY_STATE[name])
    count = len(path.signatures)
    # other steps, learning rates, shapes and option sets reuse that specialization
    step(size, 2, 1e-2, cases.EVERY_STATE[name])
    step((1, size), 5, 0.5, cases.EVERY_STATE[name])
    step(size, 9, 0.1, {})
    assert len(path.signatures) == count


def test_a_fresh_process_loads_the_kernel_from_the_cache(tmp_path):
    """A second process's first call is a cache hit, not a compile (the cache directory is
    private to this test, so the first process is sure to compile)."""
    code = f"""
        import json, numpy as np, fastadapt
        from fastadapt.kernels import cpu
        n = cpu.SERIAL_BELOW + 1
        a = [np.ones(n, np.float32) for _ in range(4)]
        fastadapt.adam_step(*a, step=1)
        stats = cpu.DRIVERS["adam"].parallel.stats
        print(json.dumps({{"hits": len(stats.cache_hits), "misses": len(stats.cache_misses)}}))
    """
    first = json.loads(_run_python(code, tmp_path, NUMBA_CACHE_DIR=str(tmp_path / "cache")))
    second = json.loads(_run_python(code, tmp_path, NUMBA_CACHE_DIR=str(tmp_path / "cache")))
    assert first == {"hits": 0, "misses": 1}
    assert second == {"hits": 1, "misses": 0}


def test_import_needs_neither_torch_nor_the_cuda_target(tmp_path):
    loaded = json.loads(_run_python("""
        import json, sys
        import fastadapt
        print(json.dumps(sorted(m for m in sys.modules
                                if m.split(".")[0] == "torch" or m.startswith("numba.cuda"))))
    """, tmp_path))
    assert loaded == []


def test_kernels_is_not_importable_as_a_top_level_package():
    """From the repository root ``kernels`` is on the path; importing it there would
    write cache entries that other processes cannot load (see kernels/cpu.py)."""
    result = subprocess.run([sys.executable, "-c", "import kernels.cpu"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "import this module as fastadapt.kernels.cpu" in result.stderr
