"""How much of the machine other processes took while we measured.

On a shared machine a measurement is only as good as the quiet it was taken
in: a busy neighbour on one of two cores makes every two-thread parallel
region wait for a time slice (milliseconds), whatever the code. So each
measurement records the CPU time the whole machine spent busy (``/proc/stat``:
user, system, irq, steal...) minus this process's own CPU time, as a fraction
of the machine over the measurement's wall time. A measurement disturbed by
more than :attr:`Retry.threshold` is taken again (a complete new
measurement, all implementations interleaved again) up to ``retries`` times
within a total time budget; the least disturbed attempt is kept, every table
marks what stayed disturbed, and the JSON keeps each attempt's figure.
"""
import os
import time

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy_s():
    """Seconds of CPU time the machine has spent non-idle since boot (None if unknown)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice]
    # (guest time is already counted in user)
    busy = sum(values[:8]) - values[3] - values[4]
    return busy / _TICK


def _own_cpu_s():
    t = os.times()
    return t.user + t.system


class CpuWatch:
    """Context manager: ``others`` is the fraction of the machine (all its CPUs)
    that other processes used while the block ran, or None if unknown."""

    def __init__(self):
        self.others = None
        self.elapsed = 0.0

    def __enter__(self):
        self._busy = _machine_busy_s()
        self._own = _own_cpu_s()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.perf_counter() - self._wall
        busy = _machine_busy_s()
        if busy is None or self._busy is None or self.elapsed <= 0:
            return False
        cpus = os.cpu_count() or 1
        others = (busy - self._busy) - (_own_cpu_s() - self._own)
        self.others = max(0.0, others / (self.elapsed * cpus))
        return False


class Retry:
    """When to measure again: disturbed beyond ``threshold`` (a fraction of the
    machine), at most ``retries`` more times per measurement and ``budget_s``
    seconds of re-measuring in all."""

    def __init__(self, retries=2, threshold=0.15, budget_s=90.0, pause_s=1.0):
        self.retries = retries
        self.threshold = threshold
        self.budget_s = budget_s
        self.pause_s = pause_s
        self.spent_s = 0.0

    def measure(self, run, progress=None):
        """Call ``run()`` (which returns a dict) until it is quiet enough or the
        retries or the budget are spent; the least disturbed result, with
        ``others_cpu`` (each attempt's figure, kept one) and ``attempts`` added."""
        best, seen = None, []
        for attempt in range(1 + self.retries):
            with CpuWatch() as watch:
                result = run()
            if attempt:
                self.spent_s += watch.elapsed + self.pause_s
            others = watch.others
            seen.append(others)
            if best is None or (others is not None and (best[1] is None or others < best[1])):
                best = (result, others)
            if others is None or others <= self.threshold:
                break
            if attempt == self.retries or self.spent_s + watch.elapsed > self.budget_s:
                break
            if progress:
                progress(f"    other processes used {others:.0%} of the CPUs during that "
                         "measurement; measuring it again")
            time.sleep(self.pause_s)
        result, others = best
        result["others_cpu"] = others
        result["others_cpu_attempts"] = seen
        result["attempts"] = len(seen)
        return result

    def disturbed(self, result):
        others = result.get("others_cpu")
        return others is not None and others > self.threshold
