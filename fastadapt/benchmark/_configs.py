"""The rule configurations the benchmark measures, declared once.

A :class:`Config` is a rule of :data:`fastadapt.RULES` plus the options that
select one of its variants (AMSGrad is Adam with ``amsgrad=True``, ...), as
the rule's declaration lists them (``Rule.bench``). The
benchmark, its NumPy rivals, the pytest-benchmark suites in ``bench/`` and
``tests/test_benchmark.py`` all iterate over :data:`CONFIGS`.
"""
from dataclasses import dataclass, field

import numpy as np

from ..rules import RULES


@dataclass(frozen=True, eq=False)
class Config:
    key: str                    # what --rules takes: "sgd-momentum"
    label: str                  # what the table shows: "SGD-momentum"
    rule_name: str              # the registry's name: "sgd"
    options: dict = field(default_factory=dict)   # beyond the rule's defaults

    @property
    def rule(self):
        return RULES[self.rule_name]

    @property
    def state_names(self):
        """The state arrays this variant updates, in the functional's order."""
        return self.rule.state_for(**self.options)

    def bytes_per_element(self, itemsize):
        """Bytes one step moves per element (param r+w, grad r, each state r+w)."""
        return self.rule.bytes_per_element(itemsize, **self.options)

    def initial_state(self, like):
        """The state arrays this variant updates, as NumPy arrays like ``like``
        holding their initial values (zeros, or the declared ``init``)."""
        return {name: np.full_like(like, self.rule.initial_value(name, **self.options))
                for name in self.state_names}

    def torch_kwargs(self):
        """The torch.optim constructor's hyper-parameters (same names, same defaults)."""
        return {**self.rule.defaults, **self.options}


#: Every rule's benchmark variants, as its declaration lists them (``Rule.bench``).
CONFIGS = tuple(Config(key, label, rule.name, dict(options))
                for rule in RULES.values() for key, label, options in rule.bench)

BY_KEY = {c.key: c for c in CONFIGS}


def select(tokens):
    """The configurations named by ``tokens`` (keys, or rule names such as "sgd").

    A key selects its configuration; a rule name that is not a key selects
    every configuration of that rule. Unknown names raise ValueError.
    """
    chosen = []
    for token in tokens:
        token = token.strip().lower().replace("_", "-").replace(" ", "-")
        if not token:
            continue
        if token == "all":
            matches = list(CONFIGS)
        elif token in BY_KEY:
            matches = [BY_KEY[token]]
        else:
            matches = [c for c in CONFIGS if c.rule_name == token]
        if not matches:
            raise ValueError(f"unknown rule {token!r}; choose from "
                             f"{', '.join(c.key for c in CONFIGS)} (or all)")
        chosen += [c for c in matches if c not in chosen]
    return chosen


def size_label(n):
    """Sizes as people say them: "1e3", "2^24", else with thousands separators."""
    if n >= 1024 and n & (n - 1) == 0:
        return f"2^{n.bit_length() - 1}"
    if n >= 1000 and str(n).rstrip("0") == "1":
        return f"1e{len(str(n)) - 1}"
    return f"{n:,}"


def make_problem(n, dtype, seed=0):
    """A parameter and a gradient of ``n`` elements: standard normal values.

    Every implementation gets its own copies, so none profits from another's
    data being in cache.
    """
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    param = rng.standard_normal(n, dtype=dtype)
    grad = rng.standard_normal(n, dtype=dtype)
    return param, grad
