"""Mid-size updates on a busy machine: the thread pool against the serial
loop against fastadapt's choice between them (``fastadapt/_pool.py``).

Adam's compiled loop on n elements is called three ways, in interleaved
rounds (``_timing.interleaved``): always on the pool (``driver.parallel``), always serially
(``driver.serial``), and as the dispatcher calls it between
``SERIAL_BELOW`` and ``ADAPTIVE_BELOW`` (``_pool.timed``: whichever its recent
calls found faster). All three are the bare loop on prepared arguments, so
they differ only in the threading. First on the machine as it is, then with
one busy process per CPU (a spinning loop each) started by this section. The
figure is the mean time per call: under load a woken thread's late start
shows in a minority of calls, which a median hides.
"""
import multiprocessing
import os
import threading
import time

import numpy as np

from .. import _pool
from ._bare import driver_call
from ._configs import BY_KEY, make_problem
from ._contention import CpuWatch
from ._timing import interleaved

SIZES = (20_865, 65_536, 262_144)
KINDS = ("pool", "serial", "choice")


def _spin(stop):
    while not stop.is_set():
        pass


def _calls(n):
    config = BY_KEY["adam"]
    param, grad = make_problem(n, np.float32)
    driver, args = driver_call(config, param, grad)
    lock = threading.Lock()
    choose = _pool.timed(_pool.PoolChoice(), driver.serial, driver.parallel, lock, n)

    def pool():
        with lock:
            driver.parallel(*args)
    return {"pool": pool, "serial": lambda: driver.serial(*args),
            "choice": lambda: choose(*args)}


def run(budget_s, progress, sizes=SIZES):
    """``{"cpus", "rows": [{"n", "load", "others_cpu", "<kind>_us"}]}``."""
    cpus = os.cpu_count() or 1
    rows = []
    calls = {n: _calls(n) for n in sizes}
    for load in ("as is", "busy"):
        stop, spinners = None, []
        if load == "busy":
            context = multiprocessing.get_context("spawn")
            stop = context.Event()
            spinners = [context.Process(target=_spin, args=(stop,), daemon=True)
                        for _ in range(cpus)]
            for s in spinners:
                s.start()
            time.sleep(0.5)
        try:
            for n in sizes:
                with CpuWatch() as watch:
                    timings = interleaved(calls[n], budget_s=budget_s)
                means = {k: t.mean_s for k, t in timings.items()}
                rows.append({"n": n, "load": load, "others_cpu": watch.others,
                             **{f"{k}_us": means[k] * 1e6 for k in KINDS}})
                progress(f"load ({load}) n={n:,}: " + ", ".join(
                    f"{k} {means[k] * 1e6:.1f} us" for k in KINDS))
        finally:
            if stop is not None:
                stop.set()
                for s in spinners:
                    s.join(timeout=5)
                    if s.is_alive():
                        s.terminate()
    return {"cpus": cpus, "adaptive_below": _pool.ADAPTIVE_BELOW, "rows": rows}
