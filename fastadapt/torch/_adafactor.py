"""``fastadapt.torch.Adafactor``: torch.optim.Adafactor, parameter by parameter.

Adafactor is not a rule of the registry (see :mod:`fastadapt.adafactor`: its
state is shaped per tensor and each step reduces over the tensor), so its
class does not pack flat buffers: it is a plain :class:`torch.optim.Optimizer`
whose step calls ``fastadapt.adafactor_step`` once per parameter with a
gradient, on zero-copy NumPy views of the parameter, its gradient and its
state. Everything torch's base class does is torch's own: parameter groups,
hooks, ``state_dict`` / ``load_state_dict`` (torch's keys: ``step``, a
float32 tensor as torch keeps it, and ``row_var`` / ``col_var`` for a
parameter of dim >= 2, ``variance`` otherwise, in torch's shapes), deepcopy
and pickling; ``p.grad`` is only read.

Refused, with the reason: complex parameters and sparse gradients
(RuntimeError, as torch), parameters that are not float32 / float64 CPU
tensors (NotImplementedError: the kernels are CPU float32 / float64), and
fastadapt's storage options and ``max_grad_norm`` (NotImplementedError: they
live in the flat buffers this class does not have). Every check runs before
the step writes anything.
"""
import torch

from .. import adafactor as _functional
from .._options import STORAGE_OPTIONS

_DTYPES = (torch.float32, torch.float64)

#: The keyword options of fastadapt's other classes, refused here (with their defaults).
REFUSED = {"max_grad_norm": None, **STORAGE_OPTIONS, "min_8bit_size": 4096}


def _scalar_dtype():
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _torch_checks(lr, beta2_decay, eps, d, weight_decay):
    """torch.optim.Adafactor's constructor checks, with its exception types."""
    if isinstance(lr, torch.Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not 0.0 <= lr:
        raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
    if not 0.0 >= beta2_decay:
        raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
    if eps[0] is not None and not 0.0 <= eps[0]:
        raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
    if not 0.0 <= eps[1]:
        raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
    if not 1.0 <= d:
        raise ValueError(f"Clipping threshold d should be >= 1 but is: {d}")
    if not 0.0 <= weight_decay:
        raise ValueError(f"weight_decay should be >= 0 but is: {weight_decay}")


class _View:
    """A tensor as a C-contiguous NumPy array the kernel may write: the
    tensor's own memory when it is contiguous, else a copy written back by
    :meth:`commit`."""

    __slots__ = ("tensor", "copy", "array")

    def __init__(self, tensor):
        self.tensor = tensor
        self.copy = None if tensor.is_contiguous() else tensor.contiguous()
        self.array = (tensor if self.copy is None else self.copy).detach().numpy()

    def commit(self):
        if self.copy is not None:
            self.tensor.copy_(self.copy)


class Adafactor(torch.optim.Optimizer):
    r"""Adafactor: a drop-in for torch.optim.Adafactor (same signature, defaults,
    state dict and numbers), one ``fastadapt.adafactor_step`` call per
    parameter with a gradient.

    ``foreach`` is accepted and changes nothing (the step is torch's
    single-tensor path). The keyword options of fastadapt's flat-buffer
    classes (``max_grad_norm``, ``state_dtype``, ``master_weights``,
    ``stochastic_rounding``, ``seed``, ``min_8bit_size``) are refused with
    NotImplementedError unless left at their defaults: Adafactor keeps its
    state per tensor, not in flat buffers. Parameters: float32 or float64
    CPU tensors.

    Within a group, ``eps=(None, eps2)`` takes eps1 from the dtype of the
    group's first parameter with a gradient, for every parameter of the
    group, as torch's single-tensor loop does.

    The update (``fastadapt.adafactor_step``'s):

    .. code-block:: text

"""

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0,
                 weight_decay=0.0, *, foreach=None, maximize=False, max_grad_norm=None,
                 state_dtype=None, master_weights=False, stochastic_rounding=False, seed=None,
                 min_8bit_size=4096):
        given = {"max_grad_norm": max_grad_norm, "state_dtype": state_dtype,
                 "master_weights": master_weights, "stochastic_rounding": stochastic_rounding,
                 "seed": seed, "min_8bit_size": min_8bit_size}
        for name, value in given.items():
            if value is not REFUSED[name] and value != REFUSED[name]:
                raise NotImplementedError(
                    f"Adafactor does not take {name}={value!r}: fastadapt's storage options "
                    "and max_grad_norm live in the flat buffers of its elementwise rules, and "
                    "Adafactor keeps its factored state per tensor (see fastadapt.adafactor)")
        _torch_checks(lr, beta2_decay, eps, d, weight_decay)
        defaults = {"lr": lr, "beta2_decay": beta2_decay, "eps": eps, "d": d,
                    "weight_decay": weight_decay, "foreach": foreach, "maximize": maximize}
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            for p in group["params"]:
                p_state = self.state.get(p, [])
                if len(p_state) != 0 and not torch.is_tensor(p_state["step"]):
                    p_state["step"] = torch.tensor(float(p_state["step"]),
                                                   dtype=_scalar_dtype())

    def _check(self, gi, i, p):
        """Refuse what the step cannot do, before anything is written."""
        grad = p.grad
        if torch.is_complex(p):
            raise RuntimeError("Adafactor does not support complex parameters")
        if grad.is_sparse:
            raise RuntimeError("Adafactor does not support sparse gradients")
        where = f"param group {gi}, parameter {i}"
        if p.device.type != "cpu" or p.dtype not in _DTYPES:
            raise NotImplementedError(
                f"{where} is {p.dtype} on {p.device}: fastadapt.torch.Adafactor runs on "
                "float32 and float64 CPU tensors (its kernels are the CPU's)")
        if grad.shape != p.shape or grad.dtype != p.dtype or grad.device != p.device:
            raise ValueError(f"{where}: gradient of shape {tuple(grad.shape)}, {grad.dtype} on "
                             f"{grad.device} for a parameter of shape {tuple(p.shape)}, "
                             f"{p.dtype} on {p.device}")
        state = self.state.get(p)
        if state:
            for name, shape in _functional.state_shapes(tuple(p.shape)).items():
                value = state.get(name)
                if not (isinstance(value, torch.Tensor) and value.device == p.device
                        and value.dtype == p.dtype and tuple(value.shape) == shape):
                    what = (f"{value.dtype} {tuple(value.shape)} on {value.device}"
                            if isinstance(value, torch.Tensor) else repr(value)[:80])
                    raise ValueError(f"{where}: state[{name!r}] must be a {p.dtype} tensor of "
                                     f"shape {shape} on {p.device}, got {what}")
            if not torch.is_tensor(state.get("step")):
                raise ValueError(f"{where}: state['step'] must be a tensor (torch's format), "
                                 f"got {state.get('step')!r:.80}")

    @staticmethod
    def _lr(group):
        lr = group["lr"]
        return lr.item() if isinstance(lr, torch.Tensor) and lr.numel() == 1 else lr

    @torch.no_grad()
    def step(self, closure=None):
        """Perform a single optimization step.

        Args:
            closure (Callable, optional): A closure that reevaluates the model
                and returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        plans = []
        for gi, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            for i, p in enumerate(group["params"]):
                if p.grad is not None:
                    self._check(gi, i, p)
            if params:      # a group's options changed since construction: refused here
                _functional.check_hyper(self._lr(group), group["beta2_decay"], group["eps"],
                                        group["d"], group["weight_decay"], group["maximize"])
            plans.append((group, params))
        for group, params in plans:
            eps1, eps2 = group["eps"]
            for p in params:
                if eps1 is None:       # torch's loop binds it once, from the first param
                    eps1 = torch.finfo(p.dtype).eps
                self._update(p, group, (eps1, eps2))
        return loss

    def _update(self, p, group, eps):
        state = self.state[p]
        grad = p.grad
        if len(state) == 0:
            state["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
            if grad.dim() > 1:
                state["row_var"] = grad.new_zeros(grad.shape[:-1] + (1,))
                state["col_var"] = grad.new_zeros(grad.shape[:-2] + (1,) + grad.shape[-1:])
            else:
                state["variance"] = torch.zeros_like(grad,
                                                     memory_format=torch.preserve_format)
        step_t = state["step"]
        names = tuple(_functional.state_shapes(tuple(p.shape)))
        views = [_View(p)] + [_View(state[name]) for name in names]
        g = grad.detach()
        g = (g if g.is_contiguous() else g.contiguous()).numpy()
        _functional.adafactor_step(
            views[0].array, g, **{name: v.array for name, v in zip(names, views[1:])},
            step=int(step_t.item()) + 1,
            lr=self._lr(group), beta2_decay=group["beta2_decay"], eps=eps, d=group["d"],
            weight_decay=group["weight_decay"], maximize=group["maximize"])
        for v in views:
            v.commit()
        step_t += 1


Adafactor.__doc__ += _functional.PSEUDOCODE
