"""The ``fastadapt`` command and ``fastadapt.warmup``: help on stdout, a version,
unknown commands refused with exit status 2, and ahead-of-time compilation."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastadapt
from fastadapt.__main__ import COMMANDS, main
from fastadapt.kernels import cpu


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_goes_to_stdout_and_names_every_command(capsys, flag):
    assert main([flag]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    for name in COMMANDS:
        assert name in out
    assert "--version" in out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fastadapt {fastadapt.__version__}"


def test_unknown_command_is_named_and_exits_2(capsys):
    assert main(["foo"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "unknown command 'foo'" in err and "usage: fastadapt" in err


def test_no_command_prints_usage_to_stderr_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: fastadapt" in capsys.readouterr().err


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help(capsys, command):
    assert main([command, "--help"]) == 0
    assert f"fastadapt {command}" in capsys.readouterr().out


def test_console_script_exit_status():
    """The real entry point (``python -m fastadapt``) returns main's status."""
    proc = subprocess.run([sys.executable, "-m", "fastadapt", "nope"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "unknown command 'nope'" in proc.stderr


def test_warmup_prepares_both_drivers_of_every_rule_and_dtype(monkeypatch):
    # whichever loop a mid-size step would choose (here: always the serial one)
    from fastadapt import _pool
    monkeypatch.setattr(_pool.PoolChoice, "parallel", lambda self: False)
    times = fastadapt.warmup(modes=())
    assert set(times) == {(r, d) for r in (*fastadapt.RULES, "adafactor", "grad_norm")
                          for d in ("float32", "float64")}
    assert all(t >= 0 for t in times.values())
    from fastadapt.kernels import adafactor, reduce
    for driver in (*cpu.DRIVERS.values(), adafactor.FACTORED, adafactor.VECTOR):
        for path in (driver.serial, driver.parallel):
            compiled = {sig[0].dtype.name for sig in path.signatures}
            assert {"float32", "float64"} <= compiled
    for dtype in ("float32", "float64"):
        driver = reduce.sum_of_squares_kernels(dtype)
        for path in (driver.serial, driver.parallel):
            assert dtype in {sig[0].dtype.name for sig in path.signatures}


def test_warmup_prepares_every_storage_mode():
    from fastadapt._warmup import MODES
    times = fastadapt.warmup(rules="adagrad", dtypes=(), modes=None)
    assert list(times) == [("adagrad", m) for m in MODES]
    # each mode is a layout driver of its own, compiled in both loops (other
    # tests may have compiled more layouts, in one loop or both), the split
    # masters' among them
    ready = [layout for (kernel, layout), d in cpu._LAYOUTS.items()
             if kernel == "adagrad" and d.serial.signatures and d.parallel.signatures]
    assert len(ready) >= len(MODES)
    from fastadapt.kernels.layout import SPLIT8, SPLIT16
    assert {SPLIT16, SPLIT8} <= {layout.master for layout in ready}


def test_warmup_selects_and_validates():
    times = fastadapt.warmup(rules="sgd", dtypes=np.float32, modes=())
    assert list(times) == [("sgd", "float32")]
    assert list(fastadapt.warmup(["adam", "adagrad"], ["float64"], modes="bf16")) == [
        ("adam", "float64"), ("adagrad", "float64"), ("adam", "bf16"), ("adagrad", "bf16")]
    # Adafactor is warmed per dtype, in no storage mode
    assert list(fastadapt.warmup(["adafactor", "sgd"], "float32", modes="bf16_split8")) == [
        ("sgd", "float32"), ("adafactor", "float32"), ("sgd", "bf16_split8")]
    with pytest.raises(ValueError, match="unknown storage mode.*'int4'"):
        fastadapt.warmup(modes=["int4"])
    with pytest.raises(ValueError, match="unknown rule.*'nosuchrule'.*adafactor"):
        fastadapt.warmup(rules=["nosuchrule"])
    with pytest.raises(TypeError, match="unsupported dtype float16"):
        fastadapt.warmup(dtypes=[np.float16])


def test_compile_command(capsys):
    assert main(["compile", "--rules", "adam,sgd", "--dtypes", "float32", "--modes",
                 "bf16_state"]) == 0
    out = capsys.readouterr().out
    assert "adam float32" in out and "sgd bf16_state" in out and "4 rule/dtype and" in out
    assert main(["compile", "--rules", "adafactor", "--dtypes", "float64", "--modes",
                 "bf16_split16"]) == 0
    out = capsys.readouterr().out
    assert "adafactor float64" in out and "1 rule/dtype and" in out
    assert main(["compile", "--modes", "int4"]) == 2
    assert "unknown storage mode" in capsys.readouterr().err
    assert main(["compile", "--rules", "nosuchrule"]) == 2
    assert "unknown rule" in capsys.readouterr().err


def test_compile_fills_the_cache_a_fresh_process_loads(tmp_path):
    """After ``fastadapt compile`` in one process, a fresh process's first call
    compiles nothing (the cache directory is private to this test)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "fastadapt", "compile", "--rules", "adagrad",
                           "--dtypes", "float64", "--modes", "bf16_master"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    code = textwrap.dedent(f"""
        import numpy as np, fastadapt
        from fastadapt.kernels import cpu
        from fastadapt._storage import bfloat16
        for n in (8, cpu.SERIAL_BELOW):
            fastadapt.adagrad_step(np.ones(n), np.ones(n), np.zeros(n), step=1)
            p16, g16 = np.ones(n, bfloat16()), np.ones(n, bfloat16())
            fastadapt.adagrad_step(p16, g16, np.zeros(n, np.float32), step=1,
                                   master_param=np.ones(n, np.float32))
        drivers = [cpu.DRIVERS["adagrad"], *(d for (k, _), d in cpu._LAYOUTS.items()
                                             if k == "adagrad")]
        paths = [p for d in drivers for p in (d.serial, d.parallel)]
        print(sum(len(p.stats.cache_hits) for p in paths),
              sum(len(p.stats.cache_misses) for p in paths))
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["4", "0"]
