"""How an optimizer's work is shared between processes, as two values its core
is given at construction: the span of each flat buffer it updates, and how
its processes agree. One process alone updates the whole buffer and agrees
with itself; :class:`fastadapt.torch.ZeroRedundancyOptimizer` gives one
rank's shard and an agreement over its process group."""


class Span:
    """The part ``[start, stop)`` of a flat buffer of ``length`` elements
    that one process updates and keeps state for. ``whole``: the span is the
    entire buffer, so ``optimizer.state`` and state dicts show views of the
    live state arrays (a shard's state is gathered first)."""

    __slots__ = ("start", "stop", "length", "whole")

    def __init__(self, start, stop, length, whole):
        self.start, self.stop, self.length, self.whole = start, stop, length, whole

    @property
    def size(self):
        """Elements of each state array (and of the master copy)."""
        return self.stop - self.start

    def clip(self, lo, hi):
        """``[lo, hi)`` of the flat buffer intersected with the span;
        ``(start, start)`` when they do not meet."""
        a, b = max(lo, self.start), min(hi, self.stop)
        return (a, b) if a < b else (self.start, self.start)


class WholeBuffer:
    """Every element of every flat buffer: one process's span."""

    def span(self, used, align):
        """The span of a flat buffer whose parameters end at ``used`` (segments
        laid out in units of ``align`` elements): all of it, unpadded."""
        return Span(0, used, used, True)


class Alone:
    """How one process agrees with itself: it decides alone and has nothing
    to send. A sharded optimizer's agreement (``fastadapt.torch._zero_collectives.
    ProcessGroupAgreement``) answers the same four calls with collectives."""

    def decide_skip(self, optimizer, plans, has_found_inf, local_inf):
        """``(plans, skip)``: the plans to apply and whether the step is
        skipped, given GradScaler's flag (``has_found_inf``: one was set)."""
        return plans, local_inf

    def gradients_ready(self, plans):
        """The gradients are in the flat buffers, before clipping."""

    def total(self, value):
        """``value`` summed over the processes (the gradient norm's squares)."""
        return value

    def updated(self, plans):
        """Every bucket's span is updated."""
