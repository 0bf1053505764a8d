"""Calls from several Python threads at once give the same results as calls
made one after another (the kernels release the GIL; parallel launches are
serialised in the dispatcher, since Numba's workqueue layer is not re-entrant)."""
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
