"""Gradient release for fastadapt.torch: each parameter updated in the backward.

:func:`enable_gradient_release` hooks every given parameter
(``register_post_accumulate_grad_hook``): as soon as autograd has
accumulated a parameter's gradient, the optimizer updates that parameter (one
kernel call over its slice of the flat buffer, reading autograd's gradient
tensor), and the gradient is dropped (``.grad = None``). A bucket whose
parameters are all released frees its flat gradient buffer, so no full
gradient buffer is kept: at most the gradients autograd holds at once.

The numbers are the ordinary step's (the same element math, per parameter
instead of per bucket; with stochastic rounding the same bits).

The contract, one backward per step:

* ``opt.step()`` stays in the loop and does no work for released parameters
  (it updates the others, which keep ordinary gradients); it ends the step.
  A second backward that reaches a released parameter before ``opt.step()``
  raises RuntimeError: gradients are not accumulated over several backwards.
  (optimi's gradient release and torch's ``_apply_optimizer_in_backward``
  make the step optional; requiring it is what lets accumulation be refused
  instead of silently stepping per micro-batch.)
* Refused with an error naming them: ``max_grad_norm`` (global clipping needs
  every gradient before the first update), GradScaler (its unscale and inf
  check need every gradient), ZeroRedundancyOptimizer (its gradients are
  reduced across ranks before the update), and a ``.grad`` assigned by hand
  to a released parameter.
"""
import types
import weakref

import torch

from ._adafactor import Adafactor
from ._optimizer import FlatOptimizer
from ._zero import ZeroRedundancyOptimizer

__all__ = ["GradientRelease", "enable_gradient_release"]


class GradientRelease:
    """The handle :func:`enable_gradient_release` returns; :meth:`remove`
    undoes it (hooks off, flat gradient buffers back, ``opt.step`` restored)."""

    def __init__(self, opt, params):
        self._opt = opt
        self._params = params            # {id(p): (bucket, j, group index)}
        self._pending = set()            # ids updated since the last opt.step()
        self._handles = []
        self.active = True
        ref = weakref.ref(self)
        for b, j, _ in params.values():
            self._handles.append(b.params[j].register_post_accumulate_grad_hook(_hook(ref)))
        self._buckets = {id(b): b for b, _, _ in params.values()}.values()
        for b, j, _ in params.values():
            b.released[j] = True
        for b in self._buckets:
            if all(b.released):
                b.set_grad_buffer(False)
        # opt.step becomes a method of the optimizer (an lr scheduler rebinds
        # its __func__ to the optimizer), unless it already leads to one
        previous = opt.__dict__.get("step")
        earlier = getattr(opt, "_gradient_release", None)
        if _leads_to_released_step(previous):
            self._previous_step = earlier._previous_step
        else:
            self._previous_step = previous
            opt.step = types.MethodType(_released_step, opt)

    def _update(self, p):
        bucket, j, gi = self._params[id(p)]
        opt = self._opt
        where = f"gradient release: param group {gi}, parameter {bucket.indices[j]}"
        if not self.active:
            return
        if opt.max_grad_norm is not None:
            raise RuntimeError(f"{where}: max_grad_norm is set; global clipping needs every "
                               "gradient before the first update, which gradient release "
                               "cannot give (remove() it, or clip without a global norm)")
        if id(p) in self._pending:
            p.grad = None                # this backward's gradient cannot be used
            raise RuntimeError(f"{where} received a second gradient before optimizer.step(); "
                               "gradient release updates in the backward and cannot accumulate "
                               "gradients over several backwards (call optimizer.step() after "
                               "each backward, or remove() the release to accumulate)")
        g = p.grad
        if g.layout != torch.strided or g.shape != p.shape or g.dtype != p.dtype:
            raise RuntimeError(f"{where}: a gradient of {g.layout}, shape {tuple(g.shape)}, "
                               f"dtype {g.dtype} for a parameter of shape {tuple(p.shape)}, "
                               f"{p.dtype}; gradient release takes dense gradients of the "
                               "parameter's shape and dtype")
        group = opt.param_groups[gi]
        with torch.no_grad():
            options = opt._group_options(gi, group)
            present = [i == j for i in range(len(bucket.params))]
            replaced = []
            if p.data_ptr() != bucket.param_ptrs[j]:
                bucket._check_replaced(j, p)
                replaced.append(j)
            # a reset of this parameter's optimizer.state (torch's idioms) is honoured
            cleared = [c for c in bucket.cleared() if c == j]
            scan = (present, replaced, [], cleared)
            bucket.gather(scan)
            bucket.sync_master()
            g = g.detach().contiguous()
            flat = (torch.view_as_real(g) if g.is_complex() else g).reshape(-1)
            bucket.apply(group, options, scan, None,
                         grad=bucket._kernel_array(flat))
        p.grad = None
        self._pending.add(id(p))

    def _step(self, closure, grad_scaler):
        opt = self._opt
        if self.active:
            if grad_scaler is not None or getattr(opt, "grad_scale", None) is not None:
                raise RuntimeError("gradient release cannot honour GradScaler: its unscale "
                                   "and inf check need every gradient before the first "
                                   "update (use bfloat16 autocast without a scaler, or "
                                   "remove() the release)")
            for b, j, gi in self._params.values():
                if b.params[j].grad is not None:
                    raise RuntimeError(f"gradient release: param group {gi}, parameter "
                                       f"{b.indices[j]} has a .grad at optimizer.step(); a "
                                       "released parameter is updated in the backward and "
                                       "takes no gradient assigned by hand")
        step = self._previous_step or type(opt).step.__get__(opt)
        try:
            return step(closure)
        finally:
            self._pending.clear()

    def remove(self):
        """Undo :func:`enable_gradient_release`: the parameters take ordinary
        gradients and ``opt.step()`` updates them again."""
        if not self.active:
            return
        self.active = False
        for h in self._handles:
            h.remove()
        for b, j, _ in self._params.values():
            b.released[j] = False
        for b in self._buckets:
            if b.grad_flat.numel() == 0 and b.length:
                b.set_grad_buffer(True)
        step = self._opt.__dict__.get("step")
        if getattr(step, "__func__", None) is _released_step:
            if self._previous_step is None:
                del self._opt.step
            else:
                self._opt.step = self._previous_step


def _hook(ref):
    """The post-accumulate-grad hook; it holds the handle weakly, so a model
    never keeps its optimizer alive."""
    def hook(param):
        handle = ref()
        if handle is not None:
            handle._update(param)
    return hook


def _released_step(opt, closure=None, grad_scaler=None):
    """``opt.step`` while released: refuses GradScaler (which passes itself
    here, this step taking ``grad_scaler``), runs the optimizer's step for
    the parameters that are not released, and ends the step."""
    return opt._gradient_release._step(closure, grad_scaler)


def _leads_to_released_step(step):
    while step is not None:
        if getattr(step, "__func__", step) is _released_step:
            return True
        step = getattr(step, "__wrapped__", None)
    return False


def enable_gradient_release(model_or_params, opt):
    """Update each parameter in the backward, as soon as its gradient is
    accumulated, and drop the gradient: no full gradient buffer is kept.

    Parameters
    ----------
    model_or_params : torch.nn.Module or iterable of parameters
        The parameters to release (all of a module's that require a
        gradient); each must be one of ``opt``'s.
    opt : a fastadapt.torch optimizer (not ZeroRedundancyOptimizer)

    Returns
    -------
    GradientRelease
        A handle; ``handle.remove()`` undoes the release.

    Keep calling ``opt.step()`` after each backward (it ends the step; see
    :mod:`fastadapt.torch._release` for the contract); ``max_grad_norm``,
    GradScaler, gradient accumulation and ZeroRedundancyOptimizer raise.
    """
    if isinstance(opt, ZeroRedundancyOptimizer):
        raise TypeError("gradient release does not support ZeroRedundancyOptimizer: its "
                        "gradients are reduced across ranks before the update")
    if isinstance(opt, Adafactor):
        raise TypeError("gradient release does not support fastadapt.torch.Adafactor: it has "
                        "no flat buffers to update in the backward (call opt.step())")
    if not isinstance(opt, FlatOptimizer):
        raise TypeError(f"enable_gradient_release takes a fastadapt.torch optimizer, got "
                        f"{type(opt).__name__}")
    if opt.max_grad_norm is not None:
        raise ValueError(f"gradient release cannot honour max_grad_norm={opt.max_grad_norm}: "
                         "global clipping needs every gradient before the first update")
    if getattr(opt, "_gradient_release", None) is not None and opt._gradient_release.active:
        raise RuntimeError("gradient release is already enabled on this optimizer; remove() "
                           "its handle first")
    if isinstance(model_or_params, torch.nn.Module):
        wanted = [p for p in model_or_params.parameters() if p.requires_grad]
    else:
        wanted = list(model_or_params)
    where = {}
    for gi, buckets in enumerate(opt._buckets):
        for b in buckets:
            for j, p in enumerate(b.params):
                where[id(p)] = (b, j, gi)
    params = {}
    for i, p in enumerate(wanted):
        if id(p) not in where:
            raise ValueError(f"gradient release: parameter {i} (shape {tuple(p.shape)}) is not "
                             "one of the optimizer's")
        if not (p.requires_grad and p.is_leaf):
            raise ValueError(f"gradient release: parameter {i} is not a leaf that requires a "
                             "gradient")
        params[id(p)] = where[id(p)]
    handle = GradientRelease(opt, params)
    opt._gradient_release = handle
    return handle
