"""The flat-buffer optimizer core that both faces share: the NumPy classes
(:mod:`fastadapt.optim`) and the torch classes (:mod:`fastadapt.torch`) keep
what is their own (arrays or tensors, parameter groups, hooks, state dicts in
their format) and take from here what a step decides and assembles.

* **The whole step** (:class:`WholeStep`): ``max_grad_norm``, and the
  decision taken from the global norm of the unscaled gradients, before any
  kernel runs: skip the step (the norm is not finite) or the number every
  kernel divides the gradients by (the loss scale with the clipping
  coefficient folded in); afterwards ``grad_norm`` and ``step_skipped``.
* **A group's options for its next step** (:func:`step_options`): checked
  (a dry run of the functional step, the face's own check) only when they
  changed since the last check, the learning rate resolved with errors that
  name the group.

Nothing here imports torch.
"""
import math

from . import _args
from ._options import in_group
from .norm import check_grad_scale, clipped_scale

__all__ = ["WholeStep", "check_grad_scale", "step_options"]


class WholeStep:
    """What both faces' steps decide over all their groups at once (a base
    class of each face's optimizer): GradScaler's unscale, the non-finite
    skip and ``torch.nn.utils.clip_grad_norm_`` in one::

        norm = the global L2 norm of the unscaled gradients
        if norm is not finite: skip the step
        clip_coef = min(1, max_grad_norm / (norm + 1e-6))
        update every group with g / (grad_scale / clip_coef)

    The face computes ``norm`` (its gradients are its own) and calls
    :meth:`_decide`. Attributes: ``grad_norm`` (the last norm computed) and
    ``step_skipped`` (whether the last step was skipped).
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
