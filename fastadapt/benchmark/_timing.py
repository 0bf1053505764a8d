"""Interleaved timing: every implementation in every round, medians at the end.

On a shared, noisy machine the useful numbers are ratios taken in one run, so
the implementations compared with each other are timed in alternation: each
round times every one of them once (in a rotated order, so none always
follows the same neighbour), and each implementation's result is the median
of its rounds. A sample is ``inner`` back-to-back calls, with ``inner`` chosen
so that every implementation's sample lasts about as long as the slowest
one's single call (fast ones are not starved of samples by slow ones), and
begins with one untimed call, which absorbs the switch from the previous
implementation (the other thread pool's workers still spinning, cold TLBs).
"""
import gc
import math
import statistics
import time
from dataclasses import dataclass, field

_clock = time.perf_counter


@dataclass
class Timing:
    median_s: float             # median time per call
    samples: list = field(repr=False)   # per-call time of each sample
    inner: int                  # calls per sample
    calls: int                  # timed calls in all

    @property
    def min_s(self):
        return min(self.samples)

    @property
    def mean_s(self):
        """Mean time per call (every sample holds ``inner`` calls)."""
        return statistics.fmean(self.samples)

    @property
    def spread(self):
        """Interquartile range over the median (0.05 = samples within about 5%)."""
        if len(self.samples) < 4:
            return float("nan")
        q = statistics.quantiles(self.samples, n=4)
        return (q[2] - q[0]) / self.median_s

    def as_dict(self):
        return {"median_s": self.median_s, "min_s": self.min_s, "inner": self.inner,
                "samples": len(self.samples), "calls": self.calls,
                "iqr_over_median": None if math.isnan(self.spread) else self.spread}


def _per_call_estimate(step, sync, batches=3, at_least_s=3e-4):
    """Seconds per call, to size the samples: the fastest of ``batches`` batches
    of back-to-back calls lasting ``at_least_s`` each (the fastest, so that one
    descheduled batch on a busy machine does not shrink every later sample)."""
    best = math.inf
    for _ in range(batches):
        calls, start = 0, _clock()
        while True:
            step()
            calls += 1
            sync()
            elapsed = _clock() - start
            if elapsed >= at_least_s or calls >= 10_000:
                break
        best = min(best, elapsed / calls)
        if elapsed > 0.05:          # slow calls: one batch says enough
            break
    return best


def interleaved(steps, budget_s=1.0, min_rounds=5, max_rounds=200, min_sample_s=2e-3,
                max_sample_s=0.25, sync=None):
    """Time every ``steps[name]()`` in interleaved rounds; ``{name: Timing}``.

    Parameters
    ----------
    steps : dict name -> zero-argument callable
    budget_s : float
        Wall time aimed at for the whole measurement (all implementations);
        at least ``min_rounds`` rounds are run whatever it costs, and no new
        round starts after twice the budget.
    min_sample_s, max_sample_s : float
        Bounds on one sample's duration: at least ``min_sample_s`` so the
        clock's resolution and the loop are negligible, and no implementation
        repeats a call beyond ``max_sample_s`` to match a slower rival.
    sync : callable, optional
        Called after each batch of calls, before the clock is read (a GPU
        synchronisation).
    """
    if not steps:
        return {}
    sync = sync or (lambda: None)
    names = list(steps)
    for name in names:                 # compile, fault the pages in, create state
        steps[name]()
    sync()
    per_call = {name: _per_call_estimate(steps[name], sync) for name in names}
    sample_s = min(max(min_sample_s, max(per_call.values())), max_sample_s)
    inner = {name: max(1, round(sample_s / per_call[name])) for name in names}
    round_s = sum((inner[n] + 1) * per_call[n] for n in names)
    rounds = max(min_rounds, min(max_rounds, math.ceil(budget_s / max(round_s, 1e-9))))

    samples = {name: [] for name in names}
    calls = {name: 0 for name in names}
    was_enabled = gc.isenabled()
    gc.disable()
    # The rounds and samples were sized from the fastest calls seen; on a busy
    # machine every call can take far longer (a parallel region waits for time
    # slices), so a sample ends after 4 times its planned length (its calls so
    # far still give a valid time per call), and no round starts after twice
    # the budget once min_rounds are done.
    deadline = _clock() + 2 * budget_s
    try:
        for r in range(rounds):
            if r >= min_rounds and _clock() > deadline:
                break
            k = r % len(names)
            for name in names[k:] + names[:k]:
                step, count = steps[name], inner[name]
                step()                      # untimed: settles the switch
                sync()
                done = 0
                start = _clock()
                limit = start + 4 * sample_s
                while done < count:
                    chunk = min(_CHUNK, count - done)
                    for _ in range(chunk):
                        step()
                    done += chunk
                    if done < count and _clock() > limit:
                        break
                sync()
                samples[name].append((_clock() - start) / done)
                calls[name] += done
    finally:
        if was_enabled:
            gc.enable()
    return {name: Timing(statistics.median(samples[name]), samples[name], inner[name],
                         calls[name])
            for name in names}


# calls between two looks at the clock within a sample
_CHUNK = 32
