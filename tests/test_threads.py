"""Calls from several Python threads at once give the same results as calls
made one after another (the kernels release the GIL; parallel launches are
serialised in the dispatcher, since Numba's workqueue layer is not re-entrant)."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastadapt
from fastadapt.kernels import cpu


@pytest.mark.parametrize("size", [cpu.SERIAL_BELOW - 1, 4 * cpu.SERIAL_BELOW + 3, 200_003])
def test_concurrent_calls_match_sequential_ones(size):
    rng = np.random.default_rng(size)
    problems = [[rng.standard_normal(size).astype(np.float32) for _ in range(2)]
                for _ in range(8)]

    def train(problem, steps=10):
        param, grad = (a.copy() for a in problem)
        exp_avg, exp_avg_sq = np.zeros_like(param), np.zeros_like(param)
        for t in range(1, steps + 1):
            fastadapt.adam_step(param, grad, exp_avg, exp_avg_sq, step=t, lr=1e-2)
        return param, exp_avg, exp_avg_sq

    sequential = [train(p) for p in problems]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(train, problems))
    for expected, actual in zip(sequential, concurrent):
        for e, a in zip(expected, actual):
            np.testing.assert_array_equal(a, e)


def test_steps_of_one_optimizer_from_several_threads_are_serialised():
    """Optimizer.step holds a per-optimizer lock: N threads taking k steps each
    give exactly the N*k sequential steps (the same gradient every time, so the
    order of the steps does not matter, but every step must see its own step
    count and a complete state), and no two steps are ever inside at once."""
    threads, steps = 4, 25
    shapes = [(3,), (cpu.SERIAL_BELOW + 1,)]
    grads = [np.full(s, 0.5, np.float32) for s in shapes]
    inside, most = [0], [0]
    guard = threading.Lock()

    def lr(t):                  # called inside every step; sleeping lets others in
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.001)
        with guard:
            inside[0] -= 1
        return 1e-2

    def fresh():
        return fastadapt.Adam([np.ones(s, np.float32) for s in shapes], lr=lr)

    sequential = fresh()
    for _ in range(threads * steps):
        sequential.step(grads)
    shared = fresh()

    def work(_):
        for _ in range(steps):
            shared.step(grads)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(work, range(threads)))
    assert most[0] == 1
    assert shared.state[0]["step"] == threads * steps
    for a, b in zip(shared.params, sequential.params):
        np.testing.assert_array_equal(a, b)
    for name in ("exp_avg", "exp_avg_sq"):
        for a, b in zip(shared.state[0][name], sequential.state[0][name]):
            np.testing.assert_array_equal(a, b)
