"""The bare call: the yardstick of the functional steps' per-call cost.

A functional step (``fastadapt.adam_step``, ...) checks its arguments,
computes the step's scalars on the host and calls one compiled CPU loop. The
bare call is that loop called directly with arguments prepared once (1-D
arrays, the scalars already an array of the compute dtype): what a caller
who skipped every check and host computation would pay. The ratio of the
two, measured round-robin in one process, is what the dispatcher costs over
the kernel, and stays meaningful on a busy machine where absolute times do
not.
"""
from .._dispatch import kernel_call
from ..functional import step_for


def driver_call(config, param, grad):
    """The compiled driver and the exact arguments fastadapt's dispatcher gives it.

    Plans the functional step's first call (step 1) on copies of ``param``
    and ``grad`` with the configuration's initial state and asks the
    dispatcher (``_dispatch.kernel_call``) for the driver it would run and
    its arguments (1-D views, the scalars cast to the dtype), after the same
    checks. Returns ``(driver, args)`` where ``driver.serial`` and
    ``driver.parallel`` are the two compiled loops; the arrays in ``args``
    are copies owned by the caller, with the state as a new optimizer's.
    """
    driver, args = _planned(config, param, grad)[1:]
    return driver, args


def bare_step(config, param, grad):
    """A zero-argument step: the kernel the dispatcher would pick (serial or
    parallel) on prepared arguments, as ``driver_call`` makes them. Each call
    repeats step 1's update on the same arrays (the same work as any step)."""
    kernel, _, args = _planned(config, param, grad)

    def step():
        kernel(*args)
    step.arrays = args
    return step


def _planned(config, param, grad):
    p, g = param.copy(), grad.copy()
    kwargs = {**config.options, **config.initial_state(p)}
    if config.rule.takes_step:
        kwargs["step"] = 1
    planned = kernel_call(step_for(config.rule).plan(p, g, **kwargs))
    if planned is None:
        raise ValueError("the bare call needs a non-empty problem")
    return planned
