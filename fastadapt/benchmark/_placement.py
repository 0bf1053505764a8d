"""Memory placed as fastadapt's own buffers, for the benchmark's rivals.

fastadapt's classes put their flat buffers where ``flat.host_zeros`` does
(64-byte aligned; from 8 MiB on a 2 MiB boundary, a transparent huge
page's), whatever arrays they are given, and where an array lies moved a
2**24 Adam step by 13% (AMD EPYC Zen 3, 2 threads), torch's as much as
fastadapt's. A comparison at large sizes places every side's memory alike
with these, so that placement is in no ratio.
"""
import numpy as np

from ..flat import host_zeros


def placed(a):
    """A copy of the NumPy array ``a`` placed as fastadapt's buffers."""
    out = host_zeros(a.size, a.dtype)
    out[...] = a
    return out


def placed_tensor(torch, t):
    """A copy of the CPU tensor ``t`` (float32 or bfloat16) placed as
    fastadapt's buffers."""
    if t.dtype not in (torch.float32, torch.bfloat16):
        raise TypeError(f"float32 or bfloat16 tensors only, not {t.dtype}")
    bf16 = t.dtype == torch.bfloat16
    out = torch.from_numpy(host_zeros(t.numel(), np.uint16 if bf16 else np.float32))
    out = out.view(torch.bfloat16) if bf16 else out
    out.copy_(t.reshape(-1))
    return out.view(t.shape)


def placed_state(torch, opt):
    """Move each state tensor of ``opt`` (a torch optimizer that has taken a
    step: its state exists) onto memory placed as fastadapt's buffers."""
    for state in opt.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.numel() > 1:
                state[key] = placed_tensor(torch, value)
