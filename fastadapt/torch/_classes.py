"""The drop-in optimizer class of a rule: torch's signature and defaults,
fastadapt's options, and its docstring."""
import inspect

import torch

from ._conventions import (DECOUPLED_FLAG, NO_OP_FLAGS, REJECTED_FLAGS, STORAGE_OPTIONS)
from .._class_builder import derive_class
from .._options import STORAGE_DOC
from ..functional import step_for
from ..rules import RULES
from ._optimizer import FlatOptimizer


def _signature_for(rule, torch_cls):
    if torch_cls is not None:
        return inspect.signature(torch_cls.__init__)
    P = inspect.Parameter
    params = [P("self", P.POSITIONAL_OR_KEYWORD), P("params", P.POSITIONAL_OR_KEYWORD)]
    for key, default in rule.defaults.items():
        kind = P.KEYWORD_ONLY if key == "maximize" else P.POSITIONAL_OR_KEYWORD
        params.append(P(key, kind, default=default))
    params.sort(key=lambda p: p.kind)
    params += [P("foreach", P.KEYWORD_ONLY, default=None), P("fused", P.KEYWORD_ONLY, default=None),
               P("capturable", P.KEYWORD_ONLY, default=False),
               P("differentiable", P.KEYWORD_ONLY, default=False)]
    return inspect.Signature(params)


def optimizer_class(rule):
    """The drop-in optimizer class for ``rule`` (a :class:`fastadapt.Rule`).

    Its signature and defaults are those of ``torch.optim.<rule.torch_name>``
    when torch has that optimizer, else the rule's defaults plus torch's
    ``foreach``/``fused``/``capturable``/``differentiable`` keywords.
    """
    torch_cls = getattr(torch.optim, rule.torch_name or "", None)
    if not (isinstance(torch_cls, type) and issubclass(torch_cls, torch.optim.Optimizer)):
        torch_cls = None
    signature = _signature_for(rule, torch_cls)
    keyword = inspect.Parameter.KEYWORD_ONLY
    signature = signature.replace(parameters=[
        *signature.parameters.values(), inspect.Parameter("max_grad_norm", keyword, default=None),
        *(inspect.Parameter(k, keyword, default=v) for k, v in STORAGE_OPTIONS.items())])
    known = {"max_grad_norm"} | set(STORAGE_OPTIONS) | set(rule.defaults) | set(rule.state_init.values()) | {
        v for v in rule.scalar_state_init.values() if isinstance(v, str)} | set(
        NO_OP_FLAGS + REJECTED_FLAGS) | {"self", "params"}
    if rule.decoupled_twins is not None:
        known.add(DECOUPLED_FLAG)
    extras = {name: p.default for name, p in signature.parameters.items()
              if name not in known and p.default is not inspect.Parameter.empty}
    name = rule.torch_name or rule.name.capitalize()

    twin = f"torch.optim.{name}" if torch_cls is not None else "the rule"
    doc = (f"{name} over flat buffers: a drop-in for {twin} (same signature, defaults and "
           f"numbers), one fused ``fastadapt.{step_for(rule).__name__}`` call per (group, "
           f"device, dtype).\n\n``foreach`` and ``fused`` are accepted and change nothing; "
           f"``capturable=True`` and ``differentiable=True`` raise ValueError. "
           f"``state_dtype``, ``master_weights``, ``stochastic_rounding`` and ``seed``: "
           f"{STORAGE_DOC.lower()}, as in :class:`fastadapt.Optimizer`; ``min_8bit_size`` keeps "
           f"smaller parameters' state float32 under 8-bit state; ``compressed_state_dict=True`` "
           f"keeps 16-bit and 8-bit state as stored in ``state_dict()``. See "
           f":mod:`fastadapt.torch` for the gradient paths and their cost.\n\n"
           f"The update (from ``fastadapt.{step_for(rule).__name__}``):\n"
           f"{inspect.getdoc(step_for(rule)) or ''}\n")
    return derive_class(name, FlatOptimizer, signature, FlatOptimizer.__init__,
                        {"rule": rule, "_signature": signature, "_extras": extras,
                         "__doc__": doc}, "fastadapt.torch")


#: The drop-in class of every rule of the registry, by class name (torch's).
CLASSES = {cls.__name__: cls for cls in map(optimizer_class, RULES.values())}
