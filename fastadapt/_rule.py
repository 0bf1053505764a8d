"""What a rule is declared with: :class:`Rule` and its parts.

The parts are the hyper-parameters (:class:`Real`, :class:`Pair`,
:class:`Flag`), the state arrays (:class:`State`) and the scalar state
(:class:`ScalarState`); :func:`replace` copies a part with another default or
doc. The rules themselves, every fact about each, are declared in
``fastadapt/rules.py`` (see its docstring); this module holds no rule.
"""
import math
import types

from . import _args


# ----------------------------------------------------------------- the parts
def _real_check(name, low, high, low_open, high_open):
    """A checker of one real in the interval: a float inside it returns at once
    (the per-step path), anything else goes through ``_args.real``."""
    not_low = low if low_open else math.nan      # NaN compares unequal to all
    not_high = high if high_open else math.nan

    def check(value):
        if type(value) is float and low <= value <= high and value != not_low \
                and value != not_high:
            return value
        return _args.real(name, value, low, high, low_open, high_open)
    return check


class Real:
    """A real hyper-parameter in an interval (closed unless ``*_open``)."""

    def __init__(self, name, default, low=0.0, high=math.inf, low_open=False,
                 high_open=False, keyword=False, setup=False, doc=""):
        self.name, self.default, self.doc = name, default, doc
        self.bounds = dict(low=low, high=high, low_open=low_open, high_open=high_open)
        self.keyword = keyword      # keyword-only in the class (after torch's ``*``)
        self.setup = setup          # shapes the initial state only: the class's, not the step's
        self.check = self._checker()

    def _checker(self):
        return _real_check(self.name, **self.bounds)

    def describe(self):
        b = self.bounds
        if b["low"] == 0.0 and b["high"] == math.inf and not b["low_open"]:
            return ">= 0"
        lo = "(" if b["low_open"] else "["
        hi = ")" if b["high_open"] else "]"
        return f"in {lo}{b['low']:g}, {b['high']:g}{hi}"


class Pair(Real):
    """A pair of reals (``betas``), each in the interval, named ``name[0]``, ``name[1]``."""

    def _checker(self):
        name = self.name
        first = _real_check(f"{name}[0]", **self.bounds)
        second = _real_check(f"{name}[1]", **self.bounds)

        def check(value):
            a, b = _args.pair(name, value)
            return first(a), second(b)
        return check

    def describe(self):
        return "each " + super().describe()


class Flag:
    """A bool option."""

    def __init__(self, name, default=False, keyword=False, doc=""):
        self.name, self.default, self.keyword, self.doc = name, default, keyword, doc
        self.setup = False

    def check(self, value):
        return _args.flag(self.name, value)

    def describe(self):
        return "bool"


class State:
    """A state array. ``when``: the option (name, truthy) or predicate of the
    checked options under which the rule uses it (always if None); ``flag``:
    the math's bool scalar that gates its load and store (``when``'s name by
    default); ``init``: the setup hyper-parameter holding its initial value
    (zeros otherwise); ``non_negative``: the math never makes it negative (8-bit
    state stores it with an unsigned code map); ``torch_name``: its key in
    torch.optim's per-parameter state (``name`` unless given)."""

    def __init__(self, name, when=None, flag=None, init=None, when_doc=None, doc="",
                 non_negative=False, torch_name=None):
        self.name, self.when, self.init, self.doc = name, when, init, doc
        self.non_negative = non_negative
        self.torch_name = name if torch_name is None else torch_name
        self.when_doc = when_doc if when_doc is not None else (
            f"{when}=True" if isinstance(when, str) else None)
        self.flag = flag if flag is not None else (when if isinstance(when, str) else None)
        if when is not None and self.flag is None:
            raise ValueError(f"state {name}: a predicate 'when' needs the math's 'flag'")

    def used(self, options):
        if self.when is None:
            return True
        if isinstance(self.when, str):
            return bool(options[self.when])
        return bool(self.when(options))


class ScalarState:
    """One number of per-parameter state that is not an array (NAdam's
    ``mu_product``, ASGD's ``eta`` and ``mu``): it starts at ``initial`` (a
    number, or the name of the hyper-parameter holding it) and the rule's
    ``scalars`` advances it once per step."""

    def __init__(self, name, initial, doc=""):
        self.name, self.initial, self.doc = name, initial, doc

    def start(self, options):
        value = options[self.initial] if isinstance(self.initial, str) else self.initial
        return float(value)


class Rule:
    """One update rule; see the docstring of :mod:`fastadapt.rules`.

    ``kernel`` names the math function (rules may share one: Adam and
    AdamW); ``hyper`` lists the hyper-parameters in the order of torch's
    constructor; the math's host scalars by name (all but ``grad_sign``,
    which every kernel takes and the dispatcher computes from ``maximize``
    and ``grad_scale``) come from ``scalars(options)``, those the options
    alone decide, and ``step_scalars(options, step)``, those that change
    with the step (None for a rule whose math does not use the step): the
    per-call path computes the first once per setting of the options.
    ``check`` may reject combinations of options; ``pseudocode`` is the
    update, elementwise.

    A rule with ``scalar_state`` (:class:`ScalarState`) declares
    ``scalars(options, step, state) -> (scalars, new_state)`` instead, both
    dicts by name: the functional step takes the state as keyword arguments
    and returns the new one, and the classes keep it per group.

    What ``fastadapt.torch`` needs to match torch.optim's class: ``torch_step``,
    whether its per-parameter state holds a ``step`` (SGD's does not);
    ``torch_complex``, whether it takes complex parameters (torch 2.13's
    optim_db ``supports_complex``; by default, whether torch has the rule);
    ``torch_refuses_tensor_mix``, whether its constructor refuses betas mixing a
    tensor and a number, and a tensor lr or betas with ``foreach=True``;
    ``coupled_twin``, the rule whose torch class computes this one under
    ``decoupled_weight_decay=True`` (AdamW's: Adam); ``torch_sparse_grad``,
    whether torch's class takes sparse gradients only (SparseAdam: its tests
    feed it one sparse gradient holding every row).

    The functional step of a rule is ``fastadapt.functional.step_for(rule)``.
    """

    def __init__(self, name, torch_name, kernel, hyper, state, scalars, pseudocode,
                 summary, takes_step=True, check=None, notes="", in_torch=True, bench=None,
                 scalar_state=(), torch_step=True, torch_complex=None,
                 torch_refuses_tensor_mix=False, coupled_twin=None, torch_sparse_grad=False,
                 step_scalars=None):
        self.name, self.torch_name, self.kernel = name, torch_name, kernel
        self.hyper = tuple(hyper)
        self.state_specs = tuple(state)
        self.fixed_scalars = scalars    # (options) -> dict; with scalar state, see above
        self.step_scalars = step_scalars
        self.pseudocode, self.summary, self.notes = pseudocode, summary, notes
        self.takes_step = takes_step
        self.check = check
        self.in_torch = in_torch     # torch.optim has it (the tests' oracle)
        # the variants the benchmark measures: (key, label, options); the rule's
        # defaults alone unless declared
        self.bench = tuple(bench) if bench is not None else ((name, torch_name, {}),)
        self.scalar_state = tuple(scalar_state)
        self.torch_step = torch_step
        self.torch_complex = in_torch if torch_complex is None else torch_complex
        self.torch_refuses_tensor_mix = torch_refuses_tensor_mix
        self.coupled_twin = coupled_twin
        self.torch_sparse_grad = torch_sparse_grad
        # derived once (the faces read them at every step): the step's
        # defaults, handed out read-only by ``defaults``, and the non-negative state
        self._defaults = {h.name: h.default for h in self.hyper if not h.setup}
        self._non_negative = frozenset(s.name for s in self.state_specs if s.non_negative)
        # every state array, when none depends on the options (most rules)
        self._ungated_state = (tuple(s.name for s in self.state_specs)
                               if all(s.when is None for s in self.state_specs) else None)

    def scalars(self, options, step, state=None):
        """The math's host scalars for ``step`` by name (all but
        ``grad_sign``); with scalar state, ``(scalars, new_state)`` from
        ``state``."""
        if self.scalar_state:
            return self.fixed_scalars(options, step, state)
        scalars = self.fixed_scalars(options)
        if self.step_scalars is not None:
            scalars.update(self.step_scalars(options, step))
        return scalars

    @property
    def state(self):
        """Every state array the step can take, in the math's order."""
        return tuple(s.name for s in self.state_specs)

    @property
    def defaults(self):
        """The functional step's hyper-parameters with torch's defaults (a
        read-only mapping: copy it to change it)."""
        return types.MappingProxyType(self._defaults)

    @property
    def setup_options(self):
        """Class-only hyper-parameters that set the initial state: name -> default."""
        return {h.name: h.default for h in self.hyper if h.setup}

    @property
    def state_init(self):
        """State name -> the setup hyper-parameter holding its initial value."""
        return {s.name: s.init for s in self.state_specs if s.init is not None}

    @property
    def scalar_state_init(self):
        """Scalar state name -> its initial value, or the hyper-parameter holding it."""
        return {s.name: s.initial for s in self.scalar_state}

    @property
    def non_negative_state(self):
        """The state arrays that never go negative."""
        return self._non_negative

    @property
    def torch_state_names(self):
        """State name -> its key in torch.optim's per-parameter state."""
        return {s.name: s.torch_name for s in self.state_specs}

    @property
    def decoupled_twins(self):
        """``(coupled rule, decoupled rule)`` when torch's class of this rule
        picks one of the two by ``decoupled_weight_decay`` and the rule itself
        has no such hyper-parameter (Adam and AdamW), else None."""
        from .rules import RULES     # (the registry is declared with this module's Rule)
        if "decoupled_weight_decay" in self._defaults:
            return None
        for r in RULES.values():
            if r.coupled_twin is not None and self.name in (r.name, r.coupled_twin):
                return RULES[r.coupled_twin], r
        return None

    def initial_value(self, name, **options):
        """The value state array ``name`` starts at under ``options`` (0 unless it
        declares an ``init`` option: Adagrad's ``initial_accumulator_value``,
        Rprop's ``lr``)."""
        key = self.state_init.get(name)
        if key is None:
            return 0.0
        return float({**self._defaults, **self.setup_options, **options}[key])

    def state_for(self, **options):
        """The state arrays needed under ``options`` (unset ones take defaults)."""
        if self._ungated_state is not None:
            return self._ungated_state
        options = {**self._defaults, **options}
        return tuple(s.name for s in self.state_specs if s.used(options))

    def bytes_per_element(self, itemsize=4, **options):
        """Bytes one step moves per element: param read+write, grad read,
        and each used state array read+written."""
        return itemsize * (3 + 2 * len(self.state_for(**options)))

    def __repr__(self):
        return f"Rule({self.name!r})"


# ----------------------------------------------------------------- declaring
def replace(spec, **changes):
    """A copy of a hyper-parameter spec with another default (or doc)."""
    out = object.__new__(type(spec))
    out.__dict__.update(spec.__dict__)
    out.__dict__.update(changes)
    if hasattr(out, "_checker"):
        out.check = out._checker()
    return out

