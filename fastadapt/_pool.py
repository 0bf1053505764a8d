"""Whether a mid-size update wakes the thread pool: decided by its recent calls.

Below ``kernels.cpu.SERIAL_BELOW`` elements an update runs serially and from
:data:`ADAPTIVE_BELOW` on the pool. In between, whether the pool pays depends
on the machine's load more than on the size: on 2 lightly loaded cores (AMD
EPYC, the development machine) two threads take a 65,536-element Adam step
from 35 to 23 us, but with every core busy a thread
the scheduler has parked is woken a time slice later, and the same step took
3.0 ms on average on the pool against 0.19 ms serially (a 20,865-parameter
model: 0.22 ms against 0.014 ms; p90 of the pool 16 ms). A mean over recent
calls sees those slices where a median would not.

So each such update keeps a :class:`PoolChoice` per driver and size class
(sizes within a factor of 2), runs the one whose recent calls took less time
per element (exponential averages), and now and then runs the other, to notice
a change of load: once the faster one has run for :data:`TRY_AFTER` times the
other's last known time, so the tries cost at most 1/32 of the time. The
first call of each loop in a size class is not counted (it may compile it). Both drivers compute each
element identically (elementwise loops; stochastic rounding draws its bits
from the element's index), so the choice never changes a result. The global
norm's pass (``norm.SumOfSquares``) chooses the same way: its partial sums do
not depend on the thread count either.
"""
import threading
import time

#: From this many elements on, an update always runs on the pool: its calls
#: take milliseconds, so a woken thread's late start is a small part of them.
ADAPTIVE_BELOW = 1 << 22
#: Weight of the newest call in a driver's average time: small, so that a
#: hiccup of a quiet machine (tens of microseconds) does not flip the choice,
#: while a time slice lost under load (milliseconds) still does at once.
WEIGHT = 0.05
#: The slower driver is tried again once the faster one has run for this
#: many times the slower one's last known time per call: trying costs at most
#: 1/TRY_AFTER of the time.
TRY_AFTER = 32

_CHOICES = {}
_LOCK = threading.Lock()


class PoolChoice:
    """The recent per-call times of one driver's serial and parallel loops
    at one size class; :meth:`parallel` says which to run next and
    :meth:`record` takes its time."""

    __slots__ = ("mean", "seen", "spent", "trying")

    def __init__(self):
        self.mean = [None, None]   # [serial, pool]: seconds per element
        self.seen = [0, 0]
        self.spent = 0.0         # seconds in the faster one since the last try
        self.trying = False      # whether the next call tries the slower one

    def faster(self):
        """Whether the pool has been the faster (it is until both are timed)."""
        serial, pool = self.mean
        return serial is None or (pool is not None and pool <= serial)

    def parallel(self):
        """Whether the next call runs on the pool."""
        serial, pool = self.mean
        if serial is None or pool is None:
            return pool is None
        return (pool <= serial) != self.trying

    def record(self, parallel, seconds, n):
        """Take the time of one call (``seconds`` for ``n`` elements) that ran
        on the pool or not (``parallel``)."""
        self.seen[parallel] += 1
        if self.seen[parallel] == 1:           # the call that compiled it
            return
        per = seconds / n
        old = self.mean[parallel]
        if old is None or self.trying:
            # a first time, or a try of the slower one, whose average is from
            # before: this call replaces it
            self.mean[parallel], self.trying, self.spent = per, False, 0.0
            return
        self.mean[parallel] = old + WEIGHT * (per - old)
        self.spent += seconds
        other = self.mean[not parallel]
        if other is not None and self.spent >= TRY_AFTER * other * n:
            self.trying = True


def choice_for(driver, n, kind=None):
    """The :class:`PoolChoice` of ``driver`` (a ``cpu.Driver``) for ``n``
    elements of ``kind`` (the dtype its loops are compiled for, where one
    driver has several), or None when ``n`` is outside the adaptive range
    (the caller has already sent smaller sizes to the serial loop)."""
    if n >= ADAPTIVE_BELOW:
        return None
    key = (id(driver), kind, n.bit_length())  # drivers live as long as the process
    choice = _CHOICES.get(key)
    if choice is None:
        with _LOCK:
            choice = _CHOICES.setdefault(key, PoolChoice())
    return choice


def timed(choice, serial, parallel, lock, n):
    """A call ``f(*args)`` that runs ``serial`` or ``parallel`` (under
    ``lock``) as ``choice`` decides, and tells it the time taken."""
    clock = time.perf_counter

    def call(*args):
        on_pool = choice.parallel()
        if on_pool:
            with lock:
                start = clock()
                parallel(*args)
                elapsed = clock() - start
        else:
            start = clock()
            serial(*args)
            elapsed = clock() - start
        choice.record(on_pool, elapsed, n)
    return call
