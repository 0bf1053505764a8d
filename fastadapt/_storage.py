"""Storage narrower than the math: which combinations of dtypes an update takes.

The one place that turns the dtypes of an update's arrays (and its
``master_param`` / ``stochastic_rounding`` choice) into a driver layout
(``kernels.layout.Layout``) and the compute dtype, or rejects them with a
TypeError / ValueError naming the argument:

- ``param``: float32, float64, bfloat16 (``ml_dtypes.bfloat16``) or float16;
- ``grad``: the param's dtype, or float32 for 16-bit params;
- state arrays: float64 for float64 params; otherwise float32 or bfloat16,
  independently of the param's dtype, and float16 for float16 params only
  (torch's fused all-float16 mode: float16's range, 6e-8 to 65504, is too
  narrow for a second moment of anything else);
- ``master_param``: float32, the param's shape, only for 16-bit params: the
  update runs on it and ``param`` receives it rounded to nearest; or int16 /
  int8, the param's shape, only for bfloat16 params: the correction of a
  split master (see :data:`SPLIT_MASTER`);
- ``stochastic_rounding``: 16-bit params without a master copy.

The math runs in float64 for float64 params and in float32 otherwise. The
8-bit state arrays (``Blockwise8``, ``Companded8``) are :mod:`fastadapt._eight_bit`'s.
"""
import numpy as np

from .kernels.layout import BFLOAT16, BLOCKWISE8, FLOAT16, NATIVE, SPLIT8, SPLIT16, Layout

F32, F64, F16 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)

#: The split master weights: the ``master_weights`` option's name -> the
#: correction's dtype and the layout's ``master`` code. A bfloat16 param
#: plus the correction makes the master the update runs on:
#:
#: - ``"bf16+16"``: an int16, the master's low 16 bits; the float32 master is
#:   exact (every bit pattern but a NaN's payload), and the param its nearest
#:   bfloat16, ties away from zero (``kernels/split_master.py``: ``_split16_join``);
#: - ``"bf16+8"``: an int8, bits 8 to 15 of the master rounded to 24 bits (8
#:   exponent, 15 stored mantissa bits), within ``2**-16 * |master|`` of the
#:   float32 result of each step (``2**-142`` for subnormals); the param its
#:   nearest bfloat16 (``_split8_low``).
#:
#: Two bytes per element (one for ``"bf16+8"``) instead of float32's four.
#: Why not ties to even, as ``master_weights=True`` rounds its param: a
#: bfloat16 value with an even last bit is the nearest-even rounding of
#: 2**16 + 1 float32 values (both halfway points round to it), one more
#: than 16 bits tell apart; with ties away from zero each bfloat16 value is
#: the rounding of exactly 2**16, those with low half in [-0x8000, 0x8000).
#: So the master, and every state array, is bit-identical to
#: ``master_weights=True``'s, and the param too except where the master lies
#: exactly halfway between two bfloat16 values with an even one below it in
#: magnitude (the low half 0x8000): there it is the other neighbour.
SPLIT_MASTER = {"bf16+16": (np.dtype(np.int16), SPLIT16),
                "bf16+8": (np.dtype(np.int8), SPLIT8)}
_SPLIT_CODES = {dtype: code for dtype, code in SPLIT_MASTER.values()}


def join_master(param, correction):
    """The master of a split (bfloat16 ``param`` and its int16 / int8
    ``correction``, NumPy arrays of one shape) as a new float32 array:
    ``(param bits << 16) + correction`` (int16), ``+ (correction << 8)``
    (int8), in 32-bit integers."""
    low = correction.astype(np.int64) << (0 if correction.dtype.itemsize == 2 else 8)
    u = ((param.view(np.uint16).astype(np.int64) << 16) + low) & 0xFFFFFFFF
    return u.astype(np.uint32).view(F32)


def correction_for(master, param, mode):
    """The split ``mode``'s correction (a key of :data:`SPLIT_MASTER`) that
    with bfloat16 ``param`` (kept as it is) comes nearest to the float32
    ``master`` values, for converting a loaded master copy: "bf16+16" the
    exact ``master - param`` in units of ``2**-16`` of the param's ulp where
    the master rounds to the param (ties away from zero), "bf16+8" the
    master's 24-bit rounding less the param in units of ``2**-8`` of it,
    clamped to the int8 range (which misses by at most 255 units of the
    master's last place, within ``2**-15 * |master|``, where the two
    roundings differ); zero elsewhere (the master is then the param)."""
    u = np.ascontiguousarray(master, F32).view(np.uint32).astype(np.int64)
    high = np.ascontiguousarray(param).view(np.uint16).astype(np.int64) << 16
    finite = (u & 0x7FFFFFFF) < 0x7F800000
    if mode == "bf16+8":
        d = ((u + 0x80) & 0xFFFFFF00) - high
        ok = finite & (np.abs(d) <= 0x8000)
        return np.where(ok, np.clip(d >> 8, -128, 127), 0).astype(np.int8)
    d = u - high
    ok = finite & (d >= -0x8000) & (d < 0x8000)
    return np.where(ok, d, 0).astype(np.int16)


def check_master_dtype(dtype):
    """TypeError unless ``dtype`` is a ``master_param``'s: float32 (a master
    copy) or a split master's correction (int16 / int8)."""
    if dtype != F32 and not is_correction(dtype):
        raise TypeError(f"master_param has dtype {name(dtype)}; it must be float32 (a "
                        "master copy), or int16 / int8 (the correction of a split master, "
                        "for bfloat16 params)")


def is_correction(dtype):
    """Whether ``dtype`` is a split master's correction (int16 or int8)."""
    return dtype in _SPLIT_CODES


def bfloat16(needed_for=None):
    """``ml_dtypes.bfloat16`` as a NumPy dtype; ImportError saying how to get it
    (and what asked for it) when ml_dtypes is missing."""
    try:
        import ml_dtypes
    except ImportError:
        what = f" ({needed_for})" if needed_for else ""
        raise ImportError(f"bfloat16 storage{what} needs the ml_dtypes package: "
                          "pip install ml_dtypes") from None
    return np.dtype(ml_dtypes.bfloat16)


def is_bfloat16(dtype):
    """Whether ``dtype`` is ml_dtypes' bfloat16 (without importing ml_dtypes)."""
    return dtype.name == "bfloat16" and dtype.itemsize == 2


_CODES = {}


def code(dtype):
    """The storage code of ``dtype`` (see ``layout.Layout``), or None."""
    try:
        return _CODES[dtype]
    except KeyError:
        pass
    except TypeError:               # unhashable: not a dtype
        return None
    out = _CODES[dtype] = _code(dtype)
    return out


def _code(dtype):
    if dtype == F32 or dtype == F64:
        return NATIVE
    if dtype == F16:
        return FLOAT16
    if is_bfloat16(dtype):
        return BFLOAT16
    return None


def name(dtype):
    return "bfloat16" if is_bfloat16(dtype) else str(dtype)


PARAM_DTYPES = "float32, float64, bfloat16 (ml_dtypes) or float16"


def check_dtype(arg, dtype):
    """TypeError unless ``dtype`` is one fastadapt stores."""
    if code(dtype) is None:
        if dtype.kind == "f" and code(dtype.newbyteorder("=")) is not None:
            raise TypeError(f"{arg} has non-native byte order {dtype.str}; "
                            "convert it with astype(dtype.newbyteorder('='))")
        raise TypeError(f"{arg} has unsupported dtype {name(dtype)}; fastadapt supports "
                        f"{PARAM_DTYPES}")


def state_dtype_for(dtype, state_dtype, master_weights=False, stochastic_rounding=False):
    """The state dtype (a NumPy dtype, or ``"int8"`` for 8-bit blockwise state)
    of params of ``dtype`` under the optimizer classes' storage options, after
    checking the options fit them: ValueError / TypeError naming the option.

    ``state_dtype`` None: the params' dtype for float32 / float64 params,
    float32 for 16-bit params. Shared by :mod:`fastadapt.optim` and
    :mod:`fastadapt.torch`, so both refuse the same things in the same words.
    """
    param = name(dtype)
    sixteen = dtype.itemsize == 2
    if master_weights in SPLIT_MASTER and not is_bfloat16(dtype):
        raise ValueError(f"master_weights={master_weights!r} (a split master) is for "
                         f"bfloat16 params; these are {param}")
    if master_weights and not sixteen:
        raise ValueError(f"master_weights=True is for bfloat16 / float16 params; these "
                         f"are {param}")
    if stochastic_rounding and not sixteen:
        raise ValueError(f"stochastic_rounding=True is for bfloat16 / float16 params; these "
                         f"are {param}")
    if state_dtype is None:
        return F32 if sixteen else dtype
    if isinstance(state_dtype, str):                # "int8"
        if dtype == F64:
            raise TypeError(f"state_dtype={state_dtype!r} (8-bit state) is for float32, "
                            "bfloat16 or float16 params; these are float64")
        return state_dtype
    if dtype == F64 and state_dtype != dtype:
        raise TypeError(f"state_dtype={name(state_dtype)!r}: float64 params keep float64 "
                        "state")
    if dtype != F64 and state_dtype == F64:
        raise TypeError(f"state_dtype='float64' is for float64 params; these are {param}")
    if state_dtype == F16 and dtype != F16:
        raise TypeError(f"state_dtype='float16' is for float16 params; these are {param}")
    return state_dtype


_LAYOUTS = {}


def layout(dtypes, master=None, stochastic=False, blockwise=(), companded=()):
    """See :func:`_layout`; remembered per combination (the per-call path)."""
    key = (tuple(dtypes.items()), master, bool(stochastic), tuple(blockwise),
           tuple(companded))
    try:
        return _LAYOUTS[key]
    except KeyError:
        pass
    out = _LAYOUTS[key] = _layout(dtypes, master, stochastic, blockwise, companded)
    return out


def _layout(dtypes, master=None, stochastic=False, blockwise=(), companded=()):
    """``(layout, compute dtype)`` for an update whose arrays have ``dtypes``
    (argument name -> dtype, in the driver's order, ``param`` and ``grad``
    first, unused state left out); ``master``: the master copy's dtype (None
    without one); ``blockwise``: the names of state arrays that are
    :class:`Blockwise8` (their dtype in ``dtypes`` is ignored);
    ``companded``: ``(name, storage code)`` of those that are
    :class:`Companded8`. ``layout`` is
    None when every array has the compute dtype
    and neither option is set (the plain drivers).
    """
    names = list(dtypes)
    p = dtypes["param"]
    grouped = dict(companded)
    blockwise = tuple(blockwise) + tuple(grouped)
    for arg in names:
        if arg not in blockwise:
            check_dtype(arg, dtypes[arg])
    if blockwise and p == F64:
        raise TypeError(f"{blockwise[0]} is 8-bit state, which is for float32, "
                        "bfloat16 or float16 params; param is float64")
    if grouped and len(grouped) < len(blockwise):
        raise TypeError("an update keeps its 8-bit state in one format: Blockwise8 or "
                        "Companded8, not both")
    sixteen = p.itemsize == 2
    compute = F64 if p == F64 else F32
    g = dtypes["grad"]
    if g != p and (g != F32 or p == F64):
        raise TypeError(f"grad has dtype {name(g)} but param has {name(p)}; a gradient "
                        f"is stored as its param ({name(p)})"
                        + (" or as float32" if p.itemsize == 2 else ""))
    for arg in names[2:]:
        if arg in blockwise:
            continue
        s = dtypes[arg]
        if p == F64:
            if s != F64:
                raise TypeError(f"{arg} has dtype {name(s)}; the state of float64 params "
                                "is float64")
        elif s != F32 and not is_bfloat16(s) and not (s == F16 and p == F16):
            why = (" (float16 state goes with float16 params only)" if s == F16 else "")
            raise TypeError(f"{arg} has dtype {name(s)}; state arrays of {name(p)} params "
                            f"are float32 or bfloat16{why}")
    master_code = None
    if master in _SPLIT_CODES:
        if not is_bfloat16(p):
            raise ValueError(f"master_param of dtype {master} (a split master's "
                             f"correction) is for bfloat16 params; param is {name(p)}")
        master_code = _SPLIT_CODES[master]
    elif master is not None:
        check_master_dtype(master)
        if not sixteen:
            raise ValueError(f"master_param is for 16-bit params (bfloat16 or float16); "
                             f"param is {name(p)}")
        master_code = True
    if stochastic:
        if not sixteen:
            raise ValueError(f"stochastic_rounding=True is for 16-bit params (bfloat16 or "
                             f"float16); param is {name(p)}, which the update stores exactly")
        if master is not None:
            raise ValueError("stochastic_rounding=True and master_param exclude each "
                             "other: with a master copy, param is its nearest rounding")
    codes = tuple(grouped[arg] if arg in grouped else BLOCKWISE8 if arg in blockwise
                  else code(dtypes[arg]) for arg in names)
    if master is None and not stochastic and set(codes) == {NATIVE}:
        return None, compute
    return (codes, master_code or False, bool(stochastic)), compute


def full_layout(names, codes, master, stochastic):
    """The ``Layout`` over every driver argument ``names`` (unused state gets
    the native code), from ``layout``'s ``codes`` for the present ones."""
    given = dict(codes)
    return Layout(tuple(given.get(n, NATIVE) for n in names), master, stochastic)


def bits(a):
    """The array a driver takes: 16-bit floats (and int16 corrections) as
    their ``uint16`` bits, int8 corrections as ``uint8``."""
    if a.dtype.itemsize == 2:
        return a.view(np.uint16)
    return a.view(np.uint8) if a.dtype.itemsize == 1 else a
