"""fastadapt: fused, single-pass optimizer updates for large flat arrays.

Every elementwise torch.optim algorithm (Adam, AdamW, AMSGrad, SGD with
momentum or Nesterov, RMSprop, AdaGrad, Adadelta, ...) with torch.optim's
exact semantics, compiled with Numba for the CPU (and for NVIDIA GPUs with the
``cuda`` extra). Importing fastadapt needs neither torch nor a GPU.

Each rule is declared once in :data:`RULES`; its functional step
(``<name>_step``) and optimizer class (torch's class name) are derived from
the declaration and exported here. Adafactor, whose update reduces over each
tensor, is not a rule: ``adafactor_step`` (:mod:`fastadapt.adafactor`).
"""
from .flat import FlatBuffer
from ._eight_bit import Blockwise8, Companded8
from . import functional
from .functional import *  # noqa: F401,F403  (one <name>_step per rule)
from .adafactor import adafactor_step
from .norm import grad_norm
from .rules import RULES, Rule
from . import schedules
from . import optim
from .optim import *  # noqa: F401,F403  (Optimizer and one class per rule)
from ._warmup import warmup

__version__ = "0.1.0"

__all__ = (["FlatBuffer", "Blockwise8", "Companded8", "RULES", "Rule", "grad_norm", "schedules", "warmup",
            "adafactor_step"]
           + list(functional.__all__) + list(optim.__all__))
