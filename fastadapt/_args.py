"""Checks of scalar arguments, shared by the functional steps and the classes.

One place decides what a hyper-parameter, a flag or a step number may be, so
every entry point rejects the same values with the same messages:

- a real number is an ``int``, ``float`` or NumPy real scalar (a ``bool``,
  ``str``, ``bytes``, ``None`` or complex number is a TypeError naming the
  argument, even where ``float()`` would accept it);
- a flag is a ``bool`` (or NumPy bool), or the integer 0 or 1;
- a step is an integer >= 1 (not a bool, not a float).
"""
import math
import numbers

import numpy as np


def real(name, value, low=0.0, high=math.inf, low_open=False, high_open=False):
    """``value`` as a float, checked to be a real number in the given interval.

    Raises TypeError if ``value`` is not a real number and ValueError (naming
    ``name`` and the interval) if it is NaN or outside it.
    """
    if type(value) is float:        # the common case, without the ABC check below
        x = value
    else:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {value!r}")
        try:
            x = float(value)
        except OverflowError:       # an int beyond float's range
            x = math.copysign(math.inf, value)
    too_low = x <= low if low_open else x < low
    too_high = x >= high if high_open else x > high
    if math.isnan(x) or too_low or too_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"invalid {name}: {value!r} (must be in {lo}{low}, {high}{hi})")
    return x


def max_grad_norm(value):
    """The clipping threshold: None (no clipping) or a real number > 0 (inf
    clips nothing but still skips steps with non-finite gradients)."""
    return None if value is None else real("max_grad_norm", value, low_open=True)


def flag(name, value):
    """``value`` as a bool; it must be a bool or the integer 0 or 1 (TypeError otherwise)."""
    if value is True or value is False:
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be a bool (or 0 / 1), got {value!r}")


def pair(name, value):
    """``value`` unpacked as a pair; TypeError naming ``name`` otherwise."""
    if type(value) is tuple and len(value) == 2:
        return value
    try:
        first, second = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair ({name}[0], {name}[1]), got {value!r}") from None
    return first, second


def step(value):
    """The 1-based number of the step being taken, as an int >= 1."""
    if type(value) is int and value >= 1:
        return value
    if isinstance(value, (bool, np.bool_)) or not hasattr(value, "__index__"):
        raise TypeError(f"step must be an integer (the 1-based number of this step), "
                        f"got {value!r}")
    value = value.__index__()
    if value < 1:
        raise ValueError(f"invalid step: {value} (the 1-based number of the step being "
                         "taken, >= 1)")
    return value


def size(shape):
    """The number of elements of an array of ``shape`` (a Python int, no overflow)."""
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _integer_in(name, value, high, bounds):
    """``value`` as an int in [0, high); TypeError / ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer in {bounds}, got {value!r}")
    value = value.__index__()
    if not 0 <= value < high:
        raise ValueError(f"invalid {name}: {value} (must be in {bounds})")
    return value


def seed(value):
    """A generator seed, as an int in [0, 2**64)."""
    return _integer_in("seed", value, 2 ** 64, "[0, 2**64)")


def rounding_offset(value):
    """Where an array starts in a stochastic-rounding stream: an int in
    [0, 2**62) (so that offset + index stays within int64)."""
    return _integer_in("rounding_offset", value, 2 ** 62, "[0, 2**62)")
