"""The flat-buffer optimizer core that both faces share: the NumPy classes
(:mod:`fastadapt.optim`) and the torch classes (:mod:`fastadapt.torch`) keep
what is their own (arrays or tensors, parameter groups, hooks, state dicts in
their format) and take from here what a step decides and assembles.

* **The whole step** (:class:`WholeStep`): ``max_grad_norm``, and the
  decision taken from the global norm of the unscaled gradients, before any
  kernel runs: skip the step (the norm is not finite) or the number every
  kernel divides the gradients by (the loss scale with the clipping
  coefficient folded in); afterwards ``grad_norm`` and ``step_skipped``.
* **A group's storage** (:func:`state_storage`): how its state is stored
  under the storage options, after checking they fit its params.
* **A group's state** (:func:`missing_state`, :func:`initial_scalar_state`,
  :func:`initial`): the state arrays a step must create before any kernel
  runs and the value each starts at, the scalar state's starting values.
* **A group's options for its next step** (:func:`step_options`): checked
  (a dry run of the functional step, the face's own check) only when they
  changed since the last check, the learning rate resolved with errors that
  name the group.
* **One launch over a flat run of buffers** (:func:`launch_keywords`): the
  functional step's keywords for a run whose elements have all taken the
  same number of steps: beside the options and the run's state arrays (the
  face's own), the step, the master copy or split master's correction,
  stochastic rounding's seed and offset, the scalar state and the divisor
  of the gradients;
  :func:`storage_keywords` is its storage part (also the options' dry run's);
  :func:`pads_with_nan` says when a step can turn a buffer's zero padding
  into NaN; :func:`runs` cuts a flat buffer whose elements have taken
  different numbers of steps (per-parameter step counts and scalar state, as
  torch keeps them) into such runs.

Nothing here imports torch.
"""
import math

from . import _args, _storage
from ._options import in_group, rounding_seed
from .norm import check_grad_scale, clipped_scale
from .schedules import resolve_lr

__all__ = ["WholeStep", "check_grad_scale", "initial", "initial_scalar_state",
           "launch_keywords", "missing_state", "pads_with_nan", "runs", "state_storage",
           "step_options", "storage_keywords", "uniform"]


class WholeStep:
    """What both faces' steps decide over all their groups at once (a base
    class of each face's optimizer): GradScaler's unscale, the non-finite
    skip and ``torch.nn.utils.clip_grad_norm_`` in one::

        norm = the global L2 norm of the unscaled gradients
        if norm is not finite: skip the step
        clip_coef = min(1, max_grad_norm / (norm + 1e-6))
        update every group with g / (grad_scale / clip_coef)

    The face computes ``norm`` (its gradients are its own) and calls
    :meth:`_decide`. Attributes: ``grad_norm`` (the norm :meth:`_decide`
    was last given; the NumPy face sets None at a step that computes none)
    and ``step_skipped`` (whether the last step was skipped).
    """

    _max_grad_norm = None

    def _whole_step_options(self, max_grad_norm):
        """At construction: ``max_grad_norm`` checked, no step taken yet."""
        self._max_grad_norm = _args.max_grad_norm(max_grad_norm)
        self.grad_norm, self.step_skipped = None, False

    @property
    def max_grad_norm(self):
        """Clip by the global norm of all gradients to this before each step
        (``None``: no clipping); may be changed between steps."""
        return self._max_grad_norm

    @max_grad_norm.setter
    def max_grad_norm(self, value):
        self._max_grad_norm = _args.max_grad_norm(value)

    def _decide(self, norm, grad_scale):
        """The step's decision from ``norm``, the global L2 norm of the unscaled
        gradients, kept as :attr:`grad_norm`: None when it is not finite (the
        step is skipped, :attr:`step_skipped` set), else what the kernels
        divide the gradients by: ``grad_scale`` (a checked float, 1.0 without
        a loss scale) with the clipping coefficient folded in."""
        self.grad_norm = norm
        if not math.isfinite(norm):
            self.step_skipped = True
            return None
        if self._max_grad_norm is None:
            return grad_scale
        return clipped_scale(norm, self._max_grad_norm, grad_scale)


def state_storage(dtype, state_dtype, master_weights, stochastic_rounding, index):
    """The state storage of a group of ``dtype`` params (a NumPy dtype, or an
    8-bit format's name) under the storage options, after checking that they
    fit those params: ``TypeError`` / ``ValueError`` naming the option and
    group ``index`` (None: no group)."""
    try:
        return _storage.state_dtype_for(dtype, state_dtype, master_weights, stochastic_rounding)
    except (TypeError, ValueError) as exc:
        raise in_group(exc, index) from None


def initial(spec, group, steps=0, plain=None):
    """A state's initial value from its declaration ``spec`` (a rule's
    ``state_init`` or ``scalar_state_init`` entry): a number, or the name of
    the hyper-parameter of ``group`` that holds it, a number or (Rprop's
    ``lr``, on the NumPy face) a schedule read at ``steps`` completed steps.
    ``plain``: the face's conversion of a hyper-parameter to a number (the
    torch face's 0-dim tensors); None: ``float`` alone."""
    if not isinstance(spec, str):
        return float(spec)
    value = group[spec]
    if callable(value):
        value = resolve_lr(value, steps)
    return float(value if plain is None else plain(value))


def missing_state(needed, existing, init, group, steps=0, plain=None):
    """``[(name, initial value)]``, in order, of the state arrays in
    ``needed`` that ``existing`` (the names a group or buffer holds) lacks:
    what a step allocates, for every group, before any kernel runs. A state
    starts at 0 unless ``init`` (state name -> hyper-parameter, the rule's
    ``state_init``) names the option holding its start (see :func:`initial`).
    A name given twice is created once."""
    out = []
    for name in needed:
        if name not in existing and all(name != n for n, _ in out):
            out.append((name, initial(init[name], group, steps, plain) if name in init
                        else 0.0))
    return out


def initial_scalar_state(scalar_init, group, plain=None):
    """The scalar state (name -> float) a group or parameter starts with:
    ``scalar_init`` is the rule's ``scalar_state_init`` (see :func:`initial`)."""
    return {name: initial(spec, group, 0, plain) for name, spec in scalar_init.items()}


def step_options(options, checked, index, steps, lr_of, check, *check_args, extra=None):
    """One group's options for its next step, checked only when they changed.

    ``options`` is a new dict of the functional step's keywords the group
    holds, ``"lr"`` unresolved; it is compared (lr left out, with ``extra``,
    whatever else the face checks, when given) with ``checked``, what the
    last check saw, and ``check(*check_args)`` runs when they differ (it
    raises, naming the group as the face names it, and writes nothing). Then
    ``lr_of(lr, steps)`` gives the learning rate of the step after ``steps``
    completed ones; its ``TypeError`` / ``ValueError`` names group ``index``
    (None: none). Returns ``(options with lr resolved, what to keep as
    checked)``."""
    lr = options.pop("lr")
    key = options if extra is None else (options, extra)
    if key != checked:
        check(*check_args)
        checked = key
        options = dict(options)
    try:
        options["lr"] = lr_of(lr, steps)
    except (TypeError, ValueError) as exc:
        raise in_group(exc, index) from None
    return options, checked


def launch_keywords(rule, options, steps, master=None, stochastic_rounding=False, seed=None,
                    offset=None, scalar_state=None, grad_scale=None):
    """The keywords of ``rule``'s functional step for one launch over a flat
    run of buffers whose elements have all completed ``steps`` steps.

    ``options`` (the group's hyper-parameters, lr resolved, and the run's
    state arrays by name; a dict of the caller's, which receives the rest and
    is returned) gets ``step`` (for a rule that takes one), the
    :func:`storage_keywords`, the scalar state ``scalar_state`` (name ->
    float) and ``grad_scale`` (the divisor of the gradients; None: left out,
    the step's default). Called once per launch, before every step: the
    arguments are positional where the NumPy face calls it (a keyword call
    costs more than the rest of the function)."""
    if rule.takes_step:
        options["step"] = steps + 1
    if master is not None or stochastic_rounding:
        options.update(storage_keywords(rule, steps, master, stochastic_rounding, seed, offset))
    if scalar_state:
        options.update(scalar_state)
    if grad_scale is not None:
        options["grad_scale"] = grad_scale
    return options


def storage_keywords(rule, steps, master=None, stochastic_rounding=False, seed=None,
                     offset=None):
    """The functional step's storage keywords for a launch after ``steps``
    completed steps: ``master_param`` (the run's float32 master copy, or a
    split master's correction) when ``master`` is given; else, with
    ``stochastic_rounding``, the seed of the step's random stream (see
    :func:`fastadapt._options.rounding_seed`) and ``rounding_offset``, the
    run's first element in the stream of one launch over the whole buffer
    (None: left out, 0); else none."""
    if master is not None:
        return {"master_param": master}
    if not stochastic_rounding:
        return {}
    out = {"stochastic_rounding": True,
           "seed": rounding_seed(seed, steps + 1, rule.takes_step)}
    if offset is not None:
        out["rounding_offset"] = offset
    return out


def pads_with_nan(options, dtype):
    """Whether a step with ``options`` can turn the zero padding of buffers of
    ``dtype`` into NaN: a rule that divides by eps there computes 0/0 when eps
    is 0 in that dtype (the padding's gradient is zero too)."""
    eps = options.get("eps")
    return eps is not None and abs(eps) < 1e-30 and dtype.type(eps) == 0


def runs(present, steps, scalars=()):
    """Runs ``(first, last)`` of consecutive parameters that can be updated by
    one launch: each has a gradient (``present``, one bool per parameter),
    and all have the same step count (``steps``, one per parameter) and the
    same scalar state (``scalars``: arrays of one value per parameter)."""
    out, start = [], None
    for j, has in enumerate(present):
        if start is not None and not (has and steps[j] == steps[start] and all(
                s[j] == s[start] for s in scalars)):
            out.append((start, j - 1))
            start = None
        if has and start is None:
            start = j
    if start is not None:
        out.append((start, len(present) - 1))
    return out


def uniform(steps, scalars=()):
    """Whether every parameter has the same step count and the same scalar
    state (NumPy arrays of one value per parameter), so that one launch can
    update a whole buffer of them."""
    return all(bool((a == a[0]).all()) for a in (steps, *scalars) if len(a))
