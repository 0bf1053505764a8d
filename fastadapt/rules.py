"""The registry of update rules: each rule declared once.

The optimizer classes, the tests and the benchmarks iterate over ``RULES``
rather than repeating a list of algorithms. A :class:`Rule` names its
functional step, its state arrays (in the functional's argument order), which
of them an option set needs, its hyper-parameters with torch's defaults, and
the bytes one update moves per element.
"""
from dataclasses import dataclass
from typing import Callable

from . import functional as F


@dataclass(frozen=True)
class Rule:
    name: str                       # "adam"
    torch_name: str                 # torch.optim class name, "Adam"
    step_fn: Callable               # the functional step, e.g. adam_step
    state: tuple                    # every state array the step can take
    defaults: dict                  # hyper-parameters with torch's defaults
    takes_step: bool                # whether step_fn needs step=
    needs: Callable                 # options -> state names this option set uses

    def state_for(self, **options):
        """The state arrays needed under ``options`` (unset ones take defaults)."""
        return tuple(self.needs({**self.defaults, **options}))

    def bytes_per_element(self, itemsize=4, **options):
        """Bytes one step moves per element: param read+write, grad read,
        and each used state array read+written."""
        return itemsize * (3 + 2 * len(self.state_for(**options)))


_ADAM_DEFAULTS = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                      amsgrad=False, maximize=False)


def _adam_needs(o):
    return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if o["amsgrad"] else ())


def _rmsprop_needs(o):
    return (("square_avg",) + (("grad_avg",) if o["centered"] else ())
            + (("momentum_buffer",) if o["momentum"] > 0 else ()))


RULES = {rule.name: rule for rule in (
    Rule("adam", "Adam", F.adam_step,
         ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), _ADAM_DEFAULTS, True, _adam_needs),
    Rule("adamw", "AdamW", F.adamw_step,
         ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
         {**_ADAM_DEFAULTS, "weight_decay": 1e-2}, True, _adam_needs),
    Rule("sgd", "SGD", F.sgd_step, ("momentum_buffer",),
         dict(lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
              maximize=False), True,
         lambda o: ("momentum_buffer",) if o["momentum"] != 0 else ()),
    Rule("rmsprop", "RMSprop", F.rmsprop_step,
         ("square_avg", "grad_avg", "momentum_buffer"),
         dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
              centered=False, maximize=False), False, _rmsprop_needs),
    Rule("adagrad", "Adagrad", F.adagrad_step, ("state_sum",),
         dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False),
         True, lambda o: ("state_sum",)),
    Rule("adadelta", "Adadelta", F.adadelta_step, ("square_avg", "acc_delta"),
         dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False),
         False, lambda o: ("square_avg", "acc_delta")),
)}
