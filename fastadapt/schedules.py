"""Learning-rate schedules.

Every fastadapt optimizer accepts for ``lr`` either a number or a *schedule*:
any callable ``schedule(t) -> float``.  The classes here are such callables,
with validation, a readable ``repr``, a JSON-able :meth:`Schedule.to_config`
(rebuilt by :func:`from_config`) and ``state_dict`` / ``load_state_dict`` for
checkpoints.  Only the standard library is used.

Step convention
---------------
``t`` is the number of optimizer steps **already completed**.  ``schedule(t)``
is the learning rate used by the step that follows those ``t`` steps, so the
k-th step (k = 1, 2, ...) uses ``schedule(k - 1)`` and ``schedule(0)`` is the
initial learning rate.  This is torch's convention: after
``torch.optim.lr_scheduler.X.step()`` has been called ``n`` times,
``optimizer.param_groups[i]["lr"]`` equals ``schedule(n)`` of the matching
schedule here.  Optimizers obtain the rate through
``resolve_lr(lr, steps_done)``.

Values are computed from closed forms in float64 (Python floats), so they do
not accumulate the rounding of torch's recursive ("chainable") updates.

Checkpoints
-----------
``to_config()`` holds the constructor arguments only (nested for
:class:`LinearWarmup`); the mutable state (only :class:`ReduceOnPlateau` has
any) is in ``state_dict()``.  Save both; restore with
``s = from_config(cfg); s.load_state_dict(state)``.
"""

import bisect as _bisect
import math as _math
import numbers as _numbers

from ._schedule_base import Schedule
from ._schedule_base import int_arg as _int
from ._schedule_base import real_arg as _real

__all__ = [
    "Schedule",
    "Constant",
    "constant",
    "StepDecay",
    "MultiStepDecay",
    "ExponentialDecay",
    "InverseTimeDecay",
    "InverseSqrtDecay",
    "CosineAnnealing",
    "LinearWarmup",
    "ReduceOnPlateau",
    "resolve_lr",
    "from_config",
]


# ----------------------------------------------------------------- arithmetic
def _scaled(lr, gamma, k):
    """``lr * gamma ** k`` for an integer ``k >= 0`` of any size: the product
    rounded to a float, so 0 where it underflows and +inf where it overflows
    (``gamma ** k`` alone may leave the float range when the product does not)."""
    if lr == 0.0 or gamma == 1.0 or k == 0:
        return lr
    try:
        power = gamma**k
    except OverflowError:  # k too large for a float, or gamma ** k above the range
        power = _math.inf if gamma > 1.0 else 0.0
    if 0.0 < power < _math.inf:
        return lr * power
    try:  # the power alone left the float range: add the logarithms instead
        log = _math.log(lr) + k * _math.log(gamma)
    except OverflowError:  # k itself is beyond the float range
        return 0.0 if gamma < 1.0 else _math.inf
    return _math.inf if log > _LOG_MAX else _math.exp(log)


_LOG_MAX = _math.log(2.0) * 1024  # above this, exp overflows


# ------------------------------------------------------------------ schedules
class Constant(Schedule):
    """Constant rate: ``schedule(t) = lr``.

    ``t`` is the number of completed optimizer steps (see module docstring).
    """

    def __init__(self, lr):
        self.lr = _real("Constant", "lr", lr, low=0)

    def _lr(self, t):
        return self.lr

    def _params(self):
        return {"lr": self.lr}


def constant(lr):
    """Return :class:`Constant` ``(lr)``."""
    return Constant(lr)


class StepDecay(Schedule):
    """Decay by ``gamma`` every ``step_size`` steps (torch ``StepLR``).

    ``schedule(t) = lr * gamma ** (t // step_size)``, where ``t`` is the number
    of completed optimizer steps (``schedule(0) = lr``).

    Parameters
    ----------
    lr : float >= 0
    step_size : int >= 1
    gamma : float > 0, default 0.1
    """

    def __init__(self, lr, step_size, gamma=0.1):
        self.lr = _real("StepDecay", "lr", lr, low=0)
        self.step_size = _int("StepDecay", "step_size", step_size, 1)
        self.gamma = _real("StepDecay", "gamma", gamma, low=0, low_open=True)

    def _lr(self, t):
        return _scaled(self.lr, self.gamma, t // self.step_size)

    def _params(self):
        return {"lr": self.lr, "step_size": self.step_size, "gamma": self.gamma}


class MultiStepDecay(Schedule):
    """Decay by ``gamma`` at each milestone (torch ``MultiStepLR``).

    ``schedule(t) = lr * gamma ** m(t)`` with ``m(t)`` the number of
    milestones ``<= t`` (a repeated milestone counts repeatedly, as in torch);
    ``t`` is the number of completed optimizer steps.

    Parameters
    ----------
    lr : float >= 0
    milestones : iterable of int >= 0
    gamma : float > 0, default 0.1
    """

    def __init__(self, lr, milestones, gamma=0.1):
        self.lr = _real("MultiStepDecay", "lr", lr, low=0)
        try:
            ms = list(milestones)
        except TypeError:
            raise TypeError(
                f"MultiStepDecay: milestones must be an iterable of integers, "
                f"got {milestones!r}"
            ) from None
        self.milestones = tuple(
            sorted(_int("MultiStepDecay", "milestones[]", m, 0) for m in ms)
        )
        self.gamma = _real("MultiStepDecay", "gamma", gamma, low=0, low_open=True)

    def _lr(self, t):
        return _scaled(self.lr, self.gamma, _bisect.bisect_right(self.milestones, t))

    def _params(self):
        return {"lr": self.lr, "milestones": self.milestones, "gamma": self.gamma}


class ExponentialDecay(Schedule):
    """Multiply by ``gamma`` every step (torch ``ExponentialLR``).

    ``schedule(t) = lr * gamma ** t``, where ``t`` is the number of completed
    optimizer steps.

    Parameters
    ----------
    lr : float >= 0
    gamma : float > 0
    """

    def __init__(self, lr, gamma):
        self.lr = _real("ExponentialDecay", "lr", lr, low=0)
        self.gamma = _real("ExponentialDecay", "gamma", gamma, low=0, low_open=True)

    def _lr(self, t):
        return _scaled(self.lr, self.gamma, t)

    def _params(self):
        return {"lr": self.lr, "gamma": self.gamma}


class InverseTimeDecay(Schedule):
    """Inverse-time decay: ``schedule(t) = lr / (1 + alpha * t)``.

    ``t`` is the number of completed optimizer steps.

    Parameters
    ----------
    lr : float >= 0
    alpha : float >= 0
    """

    def __init__(self, lr, alpha):
        self.lr = _real("InverseTimeDecay", "lr", lr, low=0)
        self.alpha = _real("InverseTimeDecay", "alpha", alpha, low=0)

    def _lr(self, t):
        if self.alpha == 0.0:
            return self.lr
        try:
            return self.lr / (1 + self.alpha * t)
        except OverflowError:  # t beyond the float range: the limit is 0
            return 0.0

    def _params(self):
        return {"lr": self.lr, "alpha": self.alpha}


class InverseSqrtDecay(Schedule):
    """Inverse-square-root decay: ``schedule(t) = lr / sqrt(1 + alpha * t)``.

    ``t`` is the number of completed optimizer steps.

    Parameters
    ----------
    lr : float >= 0
    alpha : float >= 0
    """

    def __init__(self, lr, alpha):
        self.lr = _real("InverseSqrtDecay", "lr", lr, low=0)
        self.alpha = _real("InverseSqrtDecay", "alpha", alpha, low=0)

    def _lr(self, t):
        if self.alpha == 0.0:
            return self.lr
        try:
            return self.lr / _math.sqrt(1 + self.alpha * t)
        except OverflowError:  # t beyond the float range: the limit is 0
            return 0.0

    def _params(self):
        return {"lr": self.lr, "alpha": self.alpha}


class CosineAnnealing(Schedule):
    """Cosine annealing (torch ``CosineAnnealingLR``, closed form).

    ``schedule(t) = eta_min + (lr - eta_min) * (1 + cos(pi * t / T_max)) / 2``
    for every ``t >= 0`` (``t`` = completed optimizer steps): it falls from
    ``lr`` at ``t = 0`` to ``eta_min`` at ``t = T_max`` and, past ``T_max``,
    keeps following the same cosine, i.e. it is periodic with period
    ``2 * T_max`` (back to ``lr`` at ``t = 2 * T_max``).  torch's recursive
    form follows the same curve (equal up to rounding).  To hold at
    ``eta_min`` instead, stop training at ``T_max``.

    Parameters
    ----------
    lr : float >= 0
    T_max : int >= 1
    eta_min : float >= 0, default 0.0
    """

    def __init__(self, lr, T_max, eta_min=0.0):
        self.lr = _real("CosineAnnealing", "lr", lr, low=0)
        self.T_max = _int("CosineAnnealing", "T_max", T_max, 1)
        self.eta_min = _real("CosineAnnealing", "eta_min", eta_min, low=0)

    def _lr(self, t):
        if t >= 2**53:
            # Beyond 2**53 a float cannot hold t exactly; the curve has period
            # 2 * T_max, so reduce t exactly first.
            t %= 2 * self.T_max
        # Same operation order as torch's _get_closed_form_lr.
        return (
            self.eta_min
            + (self.lr - self.eta_min) * (1 + _math.cos(_math.pi * t / self.T_max)) / 2
        )

    def _params(self):
        return {"lr": self.lr, "T_max": self.T_max, "eta_min": self.eta_min}


class LinearWarmup(Schedule):
    """Linear warm-up in front of another schedule.

    With ``W = warmup_steps`` and ``t`` the number of completed optimizer
    steps::

        schedule(t) = inner(0) * (start_factor + (1 - start_factor) * t / W)   t < W
        schedule(t) = inner(t - W)                                             t >= W

    so the rate ramps linearly from ``start_factor * inner(0)`` towards
    ``inner(0)``, reached at ``t = W``, after which ``inner`` runs from its own
    step 0.  ``W = 0`` means no warm-up.  For ``start_factor > 0`` this equals
    torch's ``SequentialLR([LinearLR(start_factor, 1.0, W), inner], [W])``.

    Parameters
    ----------
    schedule : Schedule, callable or float
        The schedule after warm-up (a number means :class:`Constant`).  Only a
        :class:`Schedule` can be serialised by :meth:`to_config`.
    warmup_steps : int >= 0
    start_factor : float in [0, 1], default 0.0
    """

    def __init__(self, schedule, warmup_steps, start_factor=0.0):
        if not callable(schedule):
            schedule = Constant(schedule)
        self.schedule = schedule
        self.warmup_steps = _int("LinearWarmup", "warmup_steps", warmup_steps, 0)
        self.start_factor = _real(
            "LinearWarmup", "start_factor", start_factor, low=0, high=1
        )

    def _lr(self, t):
        w = self.warmup_steps
        if t < w:
            sf = self.start_factor
            if w > 2**53:  # t cannot become a float exactly; t / w is exact-rounded
                return self.schedule(0) * (sf + (1 - sf) * (t / w))
            return self.schedule(0) * (sf + (1 - sf) * t / w)
        return self.schedule(t - w)

    def _params(self):
        return {
            "schedule": self.schedule,
            "warmup_steps": self.warmup_steps,
            "start_factor": self.start_factor,
        }

    def state_dict(self):
        """The wrapped schedule's state, under ``"schedule"``."""
        sd = getattr(self.schedule, "state_dict", None)
        return {"schedule": sd()} if sd is not None else {}

    def load_state_dict(self, state):
        state = dict(state)
        inner = state.pop("schedule", {})
        if state:
            raise ValueError(f"LinearWarmup: unexpected state keys {sorted(state)}")
        if hasattr(self.schedule, "load_state_dict"):
            self.schedule.load_state_dict(inner)
        elif inner:
            raise ValueError("LinearWarmup: wrapped schedule takes no state")


class ReduceOnPlateau(Schedule):
    """Reduce the rate when a metric stops improving (torch ``ReduceLROnPlateau``).

    Call :meth:`step` with the monitored metric after each evaluation.
    ``schedule(t)`` returns the current rate whatever ``t`` (the number of
    completed optimizer steps) is.  The rule, identical to torch's:

    * ``metric`` improves on ``best`` if, for ``mode='min'``,
      ``metric < best * (1 - threshold)`` (``threshold_mode='rel'``) or
      ``metric < best - threshold`` (``'abs'``); for ``mode='max'``,
      ``metric > best * (1 + threshold)`` or ``metric > best + threshold``.
      ``best`` starts at ``+inf`` (``min``) / ``-inf`` (``max``).
    * An improvement sets ``best = metric`` and ``num_bad_epochs = 0``;
      otherwise ``num_bad_epochs += 1``.  During cooldown
      (``cooldown_counter > 0``) the counter is decremented and bad epochs are
      ignored (``num_bad_epochs = 0``).
    * When ``num_bad_epochs > patience``: ``new = max(lr * factor, min_lr)``,
      applied only if ``lr - new > eps``; then ``cooldown_counter = cooldown``
      and ``num_bad_epochs = 0``.

    Parameters
    ----------
    lr : float >= 0
        Initial rate.
    mode : {'min', 'max'}
    factor : float in (0, 1)
    patience : int >= 0
    threshold : float >= 0
    threshold_mode : {'rel', 'abs'}
    cooldown : int >= 0
    min_lr : float >= 0
    eps : float >= 0
    """

    _STATE = ("lr", "best", "num_bad_epochs", "cooldown_counter", "last_epoch")

    def __init__(
        self,
        lr,
        mode="min",
        factor=0.1,
        patience=10,
        threshold=1e-4,
        threshold_mode="rel",
        cooldown=0,
        min_lr=0.0,
        eps=1e-8,
    ):
        name = "ReduceOnPlateau"
        if mode not in ("min", "max"):
            raise ValueError(f"{name}: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(
                f"{name}: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}"
            )
        self.initial_lr = _real(name, "lr", lr, low=0)
        self.mode = mode
        self.factor = _real(
            name, "factor", factor, low=0, low_open=True, high=1, high_open=True
        )
        self.patience = _int(name, "patience", patience, 0)
        self.threshold = _real(name, "threshold", threshold, low=0)
        self.threshold_mode = threshold_mode
        self.cooldown = _int(name, "cooldown", cooldown, 0)
        self.min_lr = _real(name, "min_lr", min_lr, low=0)
        self.eps = _real(name, "eps", eps, low=0)
        self.lr = self.initial_lr
        self.best = _math.inf if mode == "min" else -_math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    def _is_better(self, a):
        best, thr = self.best, self.threshold
        if self.mode == "min":
            return a < (best * (1.0 - thr) if self.threshold_mode == "rel" else best - thr)
        return a > (best * (thr + 1.0) if self.threshold_mode == "rel" else best + thr)

    def step(self, metric):
        """Record one evaluation of the monitored ``metric``; return the new rate."""
        current = float(metric)
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new_lr = max(self.lr * self.factor, self.min_lr)
            if self.lr - new_lr > self.eps:
                self.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return self.lr

    def _lr(self, t):
        return self.lr

    def _params(self):
        return {
            "lr": self.initial_lr,
            "mode": self.mode,
            "factor": self.factor,
            "patience": self.patience,
            "threshold": self.threshold,
            "threshold_mode": self.threshold_mode,
            "cooldown": self.cooldown,
            "min_lr": self.min_lr,
            "eps": self.eps,
        }

    def state_dict(self):
        """``{"lr", "best", "num_bad_epochs", "cooldown_counter", "last_epoch"}``.

        ``best`` may be ``±inf`` before the first :meth:`step` (Python's
        ``json`` writes it as ``Infinity``).
        """
        return {k: getattr(self, k) for k in self._STATE}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s output; every value is checked before
        any is set, so a bad state raises ``ValueError`` and changes nothing."""
        name = "ReduceOnPlateau"
        if not isinstance(state, dict) or set(state) != set(self._STATE):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"{name}: state dict must have keys {sorted(self._STATE)}, got {got}"
            )
        try:
            values = {"lr": _real(name, "state['lr']", state["lr"], low=0)}
            best = state["best"]
            if isinstance(best, bool) or not isinstance(best, _numbers.Real) \
                    or _math.isnan(best):
                raise ValueError(
                    f"{name}: state['best'] must be a number (not NaN), got {best!r}"
                )
            values["best"] = float(best)
            for k in ("num_bad_epochs", "cooldown_counter", "last_epoch"):
                values[k] = _int(name, f"state[{k!r}]", state[k], 0)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        for k, v in values.items():
            setattr(self, k, v)


# -------------------------------------------------------------------- helpers
_REGISTRY = {
    cls.__name__: cls
    for cls in (
        Constant,
        StepDecay,
        MultiStepDecay,
        ExponentialDecay,
        InverseTimeDecay,
        InverseSqrtDecay,
        CosineAnnealing,
        LinearWarmup,
        ReduceOnPlateau,
    )
}


#: Deepest nesting of schedules (LinearWarmup of LinearWarmup of ...) that
#: :func:`from_config` rebuilds.
MAX_NESTING = 32


def from_config(config, _depth=0):
    """Rebuild a schedule from :meth:`Schedule.to_config` output.

    Nested configs (the ``"schedule"`` of :class:`LinearWarmup`) are rebuilt
    recursively, at most :data:`MAX_NESTING` deep.  The result is in its
    initial state; restore a checkpoint with ``load_state_dict``.  Anything
    that is not such a config raises ``ValueError``.
    """
    if _depth >= MAX_NESTING:
        raise ValueError(f"schedule config is nested more than {MAX_NESTING} deep")
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"schedule config must be a dict with a 'name', got {config!r}")
    params = dict(config)
    name = params.pop("name")
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(
            f"unknown schedule name {name!r}; expected one of {sorted(_REGISTRY)}"
        )
    if isinstance(params.get("schedule"), dict):
        params["schedule"] = from_config(params["schedule"], _depth + 1)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"bad config for {name}: {exc}") from None


def resolve_lr(lr, steps_done):
    """The learning rate for the step following ``steps_done`` completed steps.

    Returns ``float(lr)`` for a number and ``float(lr(steps_done))`` for a
    callable (a schedule).

    Raises
    ------
    ValueError
        If the value is not a finite number >= 0 (the message names the
        schedule and the step), or ``steps_done`` is negative.
    """
    steps_done = _int("resolve_lr", "steps_done", steps_done, 0)
    if callable(lr):
        value = lr(steps_done)
        where = f"schedule {lr!r} at step {steps_done}"
    else:
        value = lr
        where = "lr"
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = _math.nan
    if not (_math.isfinite(out) and out >= 0):
        raise ValueError(
            f"learning rate from {where} must be a finite number >= 0, got {value!r}"
        )
    return out
