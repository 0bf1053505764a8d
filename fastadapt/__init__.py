"""fastadapt: fused, single-pass optimizer updates for large flat arrays.

Adam, AdamW, AMSGrad, SGD (momentum, Nesterov), RMSprop, AdaGrad and Adadelta
with torch.optim's exact semantics, compiled with Numba for the CPU (and for
NVIDIA GPUs with the ``cuda`` extra). Importing fastadapt needs neither torch
nor a GPU.
"""
from .flat import FlatBuffer
from .functional import (adadelta_step, adagrad_step, adam_step, adamw_step,
                         rmsprop_step, sgd_step)
from .rules import RULES, Rule
from . import schedules
from .optim import SGD, Adadelta, Adagrad, Adam, AdamW, Optimizer, RMSprop
from ._warmup import warmup

__version__ = "0.1.0"

__all__ = ["FlatBuffer", "RULES", "Rule", "adadelta_step", "adagrad_step", "adam_step",
           "adamw_step", "rmsprop_step", "sgd_step", "schedules", "Optimizer", "Adam",
           "AdamW", "SGD", "RMSprop", "Adagrad", "Adadelta", "warmup"]
