"""The storage options every optimizer class takes, declared once, and the
check of a group's hyper-parameters by a dry run of the functional step.

Both faces (:mod:`fastadapt.optim` and :mod:`fastadapt.torch`) and the
checkpoint code read the option names, their defaults, the ``state_dtype``
values and the 8-bit formats from here.
"""
import contextlib
from typing import Callable, NamedTuple

import numpy as np

from . import _args, _eight_bit, _storage
from .kernels.blockwise8 import BLOCK
from .kernels.companded8 import GROUP
from .kernels.convert16 import stream_key

#: The storage options (keyword-only, optimizer-wide) and their defaults.
STORAGE_OPTIONS = {"state_dtype": None, "master_weights": False,
                   "stochastic_rounding": False, "seed": None}

#: The accepted ``state_dtype`` names (None too: the params' dtype).
STATE_DTYPES = ("float32", "bfloat16", "float16", "float64", "int8", "int8c")

#: One paragraph for the class docstrings of both faces.
STORAGE_DOC = ("Storage narrower than the math (16-bit params, float32 or split master "
               "weights, bfloat16 or 8-bit state)")


class EightBit(NamedTuple):
    """An 8-bit ``state_dtype``: its container, the elements that share one
    float32 scale, the name of that scale (the container's attribute and the
    torch state dicts' ``"<state>.<scale_key>"``), and what makes loaded
    scales unsound (a function of the scales: a phrase, or None)."""
    container: type
    unit: int
    scale_key: str
    problem: Callable

    def new(self, n, name, non_negative):
        """A container of ``n`` zeros for state ``name``: the unsigned map
        for names in ``non_negative``, the signed one otherwise."""
        return self.container(n, name not in non_negative)

    def scales(self, container):
        """``container``'s per-block float32 scales."""
        return getattr(container, self.scale_key)

    def blocks(self, n):
        """The number of scales over ``n`` elements."""
        return -(-n // self.unit)


#: The 8-bit ``state_dtype`` values and their formats.
EIGHT_BIT = {"int8": EightBit(_eight_bit.Blockwise8, BLOCK, "absmax", _eight_bit.absmax_problem),
             "int8c": EightBit(_eight_bit.Companded8, GROUP, "scale", _eight_bit.scale_problem)}


def storage_options(state_dtype, master_weights, stochastic_rounding, seed):
    """The storage options, checked: ``(state_dtype, master_weights,
    stochastic_rounding, seed)``, the seed drawn at random for stochastic
    rounding when none is given."""
    master_weights = parse_master_weights(master_weights)
    stochastic_rounding = _args.flag("stochastic_rounding", stochastic_rounding)
    if master_weights and stochastic_rounding:
        raise ValueError(f"master_weights={master_weights!r} and stochastic_rounding=True "
                         "exclude each other: with master weights the params are its "
                         "nearest rounding")
    state_dtype = parse_state_dtype(state_dtype)
    if seed is not None:
        seed = _args.seed(seed)
    elif stochastic_rounding:
        seed = int(np.random.SeedSequence().entropy) % 2 ** 64
    return state_dtype, master_weights, stochastic_rounding, seed


def parse_master_weights(value):
    """The ``master_weights`` option checked: False, True (a float32 master
    copy) or the name of a split master (a key of
    :data:`fastadapt._storage.SPLIT_MASTER`: ``"bf16+16"``, ``"bf16+8"``)."""
    if isinstance(value, str):
        if value not in _storage.SPLIT_MASTER:
            raise TypeError(f"master_weights must be a bool or one of "
                             f"{list(_storage.SPLIT_MASTER)}, got {value!r}")
        return value
    try:
        return _args.flag("master_weights", value)
    except TypeError:
        raise TypeError(f"master_weights must be a bool or one of "
                        f"{list(_storage.SPLIT_MASTER)}, got {value!r}") from None


def master_dtype(master_weights):
    """The dtype of the master array kept under ``master_weights`` (float32,
    or a split master's correction), or None without one."""
    if not master_weights:
        return None
    if master_weights is True:
        return np.dtype(np.float32)
    return _storage.SPLIT_MASTER[master_weights][0]


def parse_state_dtype(value):
    """The ``state_dtype`` option as a NumPy dtype, or the name of an 8-bit
    format (a key of :data:`EIGHT_BIT`); None stays None."""
    if value is None:
        return None
    try:
        name = value if isinstance(value, str) else dtype_name(value)
    except Exception:
        name = None
    if name == "bfloat16":
        return _storage.bfloat16("state_dtype='bfloat16'")
    if name in EIGHT_BIT:
        return name
    if name not in STATE_DTYPES:
        raise TypeError(f"state_dtype must be None or one of {list(STATE_DTYPES)}, "
                        f"got {value!r}")
    return np.dtype(name)


def dtype_name(a):
    """The name of array ``a``'s dtype (NumPy, CUDA or torch arrays)."""
    try:
        return np.dtype(a.dtype).name
    except TypeError:               # torch.float32 and the like
        return str(a.dtype).rsplit(".", 1)[-1]


def rounding_seed(seed, step, takes_step):
    """The functional step's ``seed`` for stochastic rounding at ``step``: the
    optimizer's seed for rules that take ``step`` (the stream is keyed on
    (seed, step)), else a seed of the step's own."""
    if takes_step:
        return seed
    key0, key1 = stream_key(seed, step)
    return int(key0) | int(key1) << 32


def in_group(exc, index):
    """``exc`` with its message prefixed by ``param group <index>: `` (as is
    when ``index`` is None)."""
    if index is None:
        return exc
    return type(exc)(f"param group {index}: {exc}")


@contextlib.contextmanager
def naming_group(index):
    """Turn a ``TypeError`` / ``ValueError`` raised inside into the same error
    naming param group ``index`` (None: no group), and a ``KeyError`` (a
    hyper-parameter the group lacks) into a ``ValueError`` naming the key."""
    try:
        yield
    except KeyError as exc:
        raise in_group(ValueError(f"missing hyper-parameter {exc.args[0]!r}"), index) from None
    except (TypeError, ValueError) as exc:
        raise in_group(exc, index) from None


def dry_run(rule, options, dtype=np.float32, state_dtype=None, *, non_negative=frozenset(),
            storage=None, scalar_state=None):
    """Check the hyper-parameters ``options`` (the functional step's keywords,
    lr a number) by calling ``rule``'s functional step on zero-size arrays, so
    that errors are the functional API's own. The params and gradients are of
    ``dtype``, the state of ``state_dtype`` (default ``dtype``; an 8-bit
    format's name gives its containers, unsigned for the names in
    ``non_negative``); ``storage`` and ``scalar_state`` are passed on as
    keywords. Writes nothing; raises what the step raises."""
    state_dtype = dtype if state_dtype is None else state_dtype
    if isinstance(state_dtype, str) and state_dtype in EIGHT_BIT:
        fmt = EIGHT_BIT[state_dtype]
        state = {name: fmt.new(0, name, non_negative) for name in rule.state_for(**options)}
    else:
        state = {name: np.empty(0, state_dtype) for name in rule.state_for(**options)}
    kwargs = dict(options)
    if rule.takes_step:
        kwargs["step"] = 1
    kwargs.update(scalar_state or {})
    kwargs.update(storage or {})
    from .functional import step_for  # functional builds on this module's checks
    step_for(rule)(np.empty(0, dtype), np.empty(0, dtype), **state, **kwargs)
