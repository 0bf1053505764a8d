"""torch's conventions as fastadapt.torch keeps them: the flags it accepts or
refuses, the dtypes it packs, the state-dict keys of its storage modes, the
rule attributes it reads, and conversions between torch and NumPy values."""
import functools
import operator
import sys

import numpy as np
import torch

from .. import _options, _storage
from .._core import initial
from .._options import EIGHT_BIT  # noqa: F401  (the 8-bit formats, declared once)
from ..rules import RULES

#: Accepted for compatibility with torch.optim; they change nothing.
NO_OP_FLAGS = ("foreach", "fused")
#: torch.optim options fastadapt.torch cannot honour: True raises.
REJECTED_FLAGS = ("differentiable", "capturable")
SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
COMPLEX_DTYPES = (torch.complex64, torch.complex128)
_SIXTEEN_BIT = (torch.bfloat16, torch.float16)
#: Storage options (keyword-only, optimizer-wide), as fastadapt.optim's classes take them.
STORAGE_OPTIONS = {**_options.STORAGE_OPTIONS, "min_8bit_size": 4096,
                   "compressed_state_dict": False}
#: Extra per-parameter state-dict keys of the storage modes torch has no
#: equivalent for (the 8-bit state's are ``"<state>.codes"`` and ``"<state>.absmax"``
#: or ``"<state>.scale"``).
MASTER_KEY = "master_param"
#: A split master's correction (``master_weights="bf16+16"`` / ``"bf16+8"``).
CORRECTION_KEY = "master_correction"
SEED_KEY = "stochastic_rounding_seed"
#: The step count as an int, saved beside torch's float32 ``step`` where that
#: cannot hold it (past 2**24 steps).
STEP_KEY = "exact_step"
#: A compressed state dict's per-parameter key: ``{"version": COMPRESSED_VERSION,
#: "arrays": {torch's state name: {"storage": ..., ...}}}``, what decodes the
#: 16-bit and 8-bit state it holds as stored (see ``state_dict``).
COMPRESSED_KEY = "compressed_state"
#: The compressed format this version writes and the newest it reads.
COMPRESSED_VERSION = 1
#: torch's Adam computes AdamW when this is True (and its AdamW's groups hold True).
DECOUPLED_FLAG = "decoupled_weight_decay"

#: torch.optim's hook registries that apply to every optimizer, and whether
#: torch's profiler (any of its modes) runs: None where this torch keeps them
#: elsewhere, and then every step goes through torch's wrapper.
_GLOBAL_STEP_HOOKS = tuple(getattr(sys.modules[torch.optim.Optimizer.__module__], name, None)
                           for name in
                           ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks"))
_PROFILER_ENABLED = getattr(torch._C._autograd, "_profiler_enabled", None)


def profile_hook_step(step):
    """``step`` wrapped as torch.optim wraps an optimizer's ``step`` (its
    ``Optimizer.step#<class>.step`` profiler event, the step pre and post
    hooks), through torch's own wrapper whenever the profiler runs or a step
    hook is registered; otherwise the step alone. torch's wrapper enters its
    profiler event on every step, a dispatched op whose cost (0.2-0.3 ms a
    step with the caches cold after a large step, on AMD EPYC Zen 4) was most
    of what separated a ``fastadapt.torch`` step from a NumPy class's."""
    traced = torch.optim.Optimizer.profile_hook_step(step)
    global_pre, global_post = _GLOBAL_STEP_HOOKS
    profiling = _PROFILER_ENABLED
    if global_pre is None or global_post is None or profiling is None:
        return traced

    @functools.wraps(step)
    def wrapper(self, *args, **kwargs):
        if (profiling() or global_pre or global_post
                or self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks):
            return traced(self, *args, **kwargs)
        out = step(self, *args, **kwargs)
        self._optimizer_step_code()
        return out
    return wrapper


def _scalar_dtype():
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _plain(value):
    """A hyper-parameter as a plain Python value (0-dim tensors become floats;
    a tuple holding none is returned as it is: read at every step, the same
    objects let the functional step skip checking them again)."""
    if type(value) in _PLAIN:     # the common case, before torch's isinstance
        return value
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"expected a number or a 1-element tensor, got a tensor of shape "
                             f"{tuple(value.shape)}")
        return value.item()
    if isinstance(value, (tuple, list)):
        plain = type(value)(_plain(v) for v in value)
        if type(value) is tuple and all(map(operator.is_, plain, value)):
            return value
        return plain
    return value


_PLAIN = (float, int, bool, str, type(None))


def _initial(spec, group):
    """An initial value: a number, or the name of a hyper-parameter of ``group``
    (the core's :func:`~fastadapt._core.initial`, a 0-dim tensor read as its number)."""
    return initial(spec, group, plain=_plain)


def _numpy_dtype(dtype):
    """The NumPy dtype of a torch floating dtype (bfloat16 through ml_dtypes)."""
    if dtype == torch.bfloat16:
        return _storage.bfloat16("bfloat16 parameters or state")
    return np.dtype(str(dtype).rsplit(".", 1)[-1])


def _torch_dtype(dtype):
    """The torch dtype of a NumPy dtype of :func:`_numpy_dtype`."""
    return torch.bfloat16 if _storage.is_bfloat16(dtype) else getattr(torch, dtype.name)


def _host_array(flat):
    """The zero-copy NumPy view of a CPU tensor (``Tensor.numpy()`` refuses
    bfloat16: its bits are viewed as int16, then as ``ml_dtypes.bfloat16``)."""
    if flat.dtype == torch.bfloat16:
        return flat.view(torch.int16).numpy().view(_storage.bfloat16())
    return flat.numpy()

