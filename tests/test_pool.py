"""Mid-size updates choose between the serial loop and the thread pool from
their recent call times (fastadapt/_pool.py): the choice follows the faster,
tries the slower at a bounded cost, and never changes a result."""
import ml_dtypes
import numpy as np
import pytest

import fastadapt
from fastadapt import _pool
from fastadapt.kernels import cpu

N = 20_000          # a mid-size update: above SERIAL_BELOW, below ADAPTIVE_BELOW


def drive(choice, seconds_per_call, calls):
    """Run ``calls`` calls through ``choice`` with ``seconds_per_call[on_pool]``
    as each call's time; the sequence of choices made."""
    made = []
    for _ in range(calls):
        on_pool = choice.parallel()
        made.append(on_pool)
        choice.record(on_pool, seconds_per_call[on_pool], N)
    return made


def test_each_loop_is_timed_after_its_compiling_call_then_the_faster_runs():
    choice = _pool.PoolChoice()
    made = drive(choice, {True: 1e-5, False: 2e-5}, 40)
    # pool twice (compile, time), serial twice (compile, time), then the pool
    assert made[:4] == [True, True, False, False]
    assert all(made[4:36])
    choice = _pool.PoolChoice()
    made = drive(choice, {True: 5e-3, False: 2e-5}, 40)      # a loaded machine
    assert made[:4] == [True, True, False, False] and not any(made[4:])


@pytest.mark.parametrize("pool_s, serial_s", [(1e-5, 2e-5), (5e-3, 2e-5), (2e-5, 2.1e-5)])
def test_tries_of_the_slower_loop_cost_at_most_1_in_TRY_AFTER(pool_s, serial_s):
    times = {True: pool_s, False: serial_s}
    choice = _pool.PoolChoice()
    made = drive(choice, times, 20_000)[4:]          # after both loops are timed
    faster = pool_s <= serial_s
    tries = sum(m != faster for m in made)
    assert tries >= 1, "the slower loop is never tried again"
    spent_on_tries = tries * times[not faster]
    spent = sum(times[m] for m in made)
    assert spent_on_tries <= spent / _pool.TRY_AFTER * 1.05


def test_a_change_of_load_is_followed():
    choice = _pool.PoolChoice()
    drive(choice, {True: 5e-3, False: 2e-5}, 100)           # loaded: serial
    assert not choice.faster()
    made = drive(choice, {True: 1e-5, False: 2e-5}, 10_000)  # quiet again
    assert choice.faster() and sum(made[-100:]) >= 95     # tries of serial aside
    made = drive(choice, {True: 5e-3, False: 2e-5}, 100)     # loaded again
    assert not choice.faster() and not any(made[-50:])   # (tries: 1 per 8,000)


def test_sizes_outside_the_adaptive_range_have_no_choice():
    driver = cpu.DRIVERS["adam"]
    assert _pool.choice_for(driver, _pool.ADAPTIVE_BELOW) is None
    assert _pool.choice_for(driver, N) is _pool.choice_for(driver, N + 1)
    assert _pool.choice_for(driver, N) is not _pool.choice_for(driver, 4 * N)
    # one driver compiled for two dtypes: a choice per dtype
    assert _pool.choice_for(driver, N, np.dtype(np.float32)) is not \
        _pool.choice_for(driver, N, np.dtype(np.float64))


def _train(pool, mode, monkeypatch, steps=6):
    monkeypatch.setattr(_pool.PoolChoice, "parallel", lambda self: pool)
    rng = np.random.default_rng(0)
    n = 3 * cpu.SERIAL_BELOW + 5
    bf16 = np.dtype(ml_dtypes.bfloat16)
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    extra = {}
    if mode == "bf16_sr":
        p, g = p.astype(bf16), g.astype(bf16)
        extra = {"stochastic_rounding": True, "seed": 7}
    state = np.float32 if mode == "fp32" else bf16
    m, v = np.zeros(n, state), np.zeros(n, state)
    for t in range(1, steps + 1):
        fastadapt.adam_step(p, g, m, v, step=t, lr=1e-2, weight_decay=0.1, **extra)
    return p, m, v


@pytest.mark.parametrize("mode", ["fp32", "bf16_state", "bf16_sr"])
def test_serial_and_pool_give_identical_results(mode, monkeypatch):
    on_pool = _train(True, mode, monkeypatch)
    serial = _train(False, mode, monkeypatch)
    for a, b in zip(on_pool, serial):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def test_the_dispatcher_runs_what_the_choice_says(monkeypatch):
    """A mid-size update calls the loop its choice names, and a small or large
    one takes no choice."""
    ran = []

    class Spy:
        def __init__(self, kind, loop):
            self.kind, self.loop = kind, loop

        def __call__(self, *args):
            ran.append(self.kind)
            return self.loop(*args)

    driver = cpu.DRIVERS["adam"]
    monkeypatch.setattr(driver, "serial", Spy("serial", driver.serial))
    monkeypatch.setattr(driver, "parallel", Spy("parallel", driver.parallel))
    for pool in (True, False):
        monkeypatch.setattr(_pool.PoolChoice, "parallel", lambda self, pool=pool: pool)
        ran.clear()
        a = np.ones(N, np.float32)
        fastadapt.adam_step(a, a.copy(), np.zeros_like(a), np.zeros_like(a), step=1)
        assert ran == ["parallel" if pool else "serial"]
    ran.clear()
    small = np.ones(cpu.SERIAL_BELOW - 1, np.float32)
    fastadapt.adam_step(small, small.copy(), np.zeros_like(small), np.zeros_like(small), step=1)
    assert ran == ["serial"]


def test_a_mid_size_norm_is_the_same_serially_and_on_the_pool(monkeypatch):
    rng = np.random.default_rng(3)
    g = rng.standard_normal(5 * 16_384 + 11).astype(np.float32) * 1e3
    norms = []
    for pool in (True, False):
        monkeypatch.setattr(_pool.PoolChoice, "parallel", lambda self, pool=pool: pool)
        norms.append(fastadapt.grad_norm(g))
    assert norms[0] == norms[1]
    assert norms[0] == pytest.approx(float(np.linalg.norm(g.astype(np.float64))), rel=1e-12)
