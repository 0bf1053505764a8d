"""What every schedule of :mod:`fastadapt.schedules` is: the base class
:class:`Schedule` (a rate as a function of the completed step count, with its
config and state for checkpoints) and the checks of the schedules' arguments.
Only the standard library is used.
"""
import math
import numbers
import operator

__all__ = ["Schedule", "real_arg", "int_arg"]


# ----------------------------------------------------------------- validation
def real_arg(owner, name, value, *, low=None, low_open=False, high=None, high_open=False):
    """Return ``value`` as a finite float within the given bounds, else raise."""
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high}")
    want = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be {want}, got {value!r}")
    v = float(value)
    if (
        not math.isfinite(v)
        or (low is not None and (v <= low if low_open else v < low))
        or (high is not None and (v >= high if high_open else v > high))
    ):
        raise ValueError(f"{owner}: {name} must be {want}, got {value!r}")
    return v


def int_arg(owner, name, value, low):
    """Return ``value`` as an int >= ``low``, else raise."""
    if isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{owner}: {name} must be an integer >= {low}, got {value!r}"
        ) from None
    if v < low:
        raise ValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")
    return v


def _step(value):
    """Validate a step count ``t`` (a non-negative integer)."""
    return int_arg("schedule", "step t", value, 0)


# ----------------------------------------------------------------- base class
class Schedule:
    """Base class: a learning rate as a function of the completed step count.

    ``schedule(t)`` is the rate for the optimizer step that follows ``t``
    completed steps (``t = 0, 1, 2, ...``).  Subclasses implement ``_lr(t)``
    and ``_params()`` (the constructor arguments, in order).
    """

    def __call__(self, t):
        return self._lr(_step(t))

    def _lr(self, t):  # pragma: no cover - abstract
        raise NotImplementedError

    def _params(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def to_config(self):
        """Return ``{"name": <class name>, <constructor arguments>...}``.

        The dict holds only JSON types; :func:`from_config` rebuilds the
        schedule (without its state, see :meth:`state_dict`).
        """
        cfg = {"name": type(self).__name__}
        for key, value in self._params().items():
            if isinstance(value, Schedule):
                value = value.to_config()
            elif callable(value):
                raise TypeError(
                    f"{type(self).__name__}.to_config: {key}={value!r} is not a "
                    "fastadapt.schedules.Schedule and cannot be serialised"
                )
            elif isinstance(value, tuple):
                value = list(value)
            cfg[key] = value
        return cfg

    def state_dict(self):
        """Mutable state for checkpoints (empty for stateless schedules)."""
        return {}

    def load_state_dict(self, state):
        """Restore the state returned by :meth:`state_dict`."""
        if dict(state):
            raise ValueError(
                f"{type(self).__name__} is stateless; expected an empty state dict, "
                f"got keys {sorted(state)}"
            )

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"
