"""Storage narrower than the math: which combinations of dtypes an update takes.

The one place that turns the dtypes of an update's arrays (and its
``master_param`` / ``stochastic_rounding`` choice) into a driver layout
(``kernels.loops.Layout``) and the compute dtype, or rejects them with a
TypeError / ValueError naming the argument:

- ``param``: float32, float64, bfloat16 (``ml_dtypes.bfloat16``) or float16;
- ``grad``: the param's dtype, or float32 for 16-bit params;
- state arrays: float64 for float64 params; otherwise float32 or bfloat16,
  independently of the param's dtype, and float16 for float16 params only
  (torch's fused all-float16 mode: float16's range, 6e-8 to 65504, is too
  narrow for a second moment of anything else);
- ``master_param``: float32, the param's shape, only for 16-bit params: the
  update runs on it and ``param`` receives it rounded to nearest;
- ``stochastic_rounding``: bfloat16 params without a master copy.

The math runs in float64 for float64 params and in float32 otherwise.
"""
import numpy as np

from .kernels.loops import BFLOAT16, FLOAT16, NATIVE, Layout

F32, F64, F16 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)


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


def code(dtype):
    """The storage code of ``dtype`` (see ``loops.Layout``), or None."""
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


def layout(dtypes, master=None, stochastic=False):
    """``(layout, compute dtype)`` for an update whose arrays have ``dtypes``
    (argument name -> dtype, in the driver's order, ``param`` and ``grad``
    first, unused state left out); ``master``: the master copy's dtype (None
    without one). ``layout`` is None when every array has the compute dtype
    and neither option is set (the plain drivers).
    """
    names = list(dtypes)
    p = dtypes["param"]
    for arg in names:
        check_dtype(arg, dtypes[arg])
    sixteen = p.itemsize == 2
    compute = F64 if p == F64 else F32
    g = dtypes["grad"]
    if g != p and (g != F32 or p == F64):
        raise TypeError(f"grad has dtype {name(g)} but param has {name(p)}; a gradient "
                        f"is stored as its param ({name(p)})"
                        + (" or as float32" if p.itemsize == 2 else ""))
    for arg in names[2:]:
        s = dtypes[arg]
        if p == F64:
            if s != F64:
                raise TypeError(f"{arg} has dtype {name(s)}; the state of float64 params "
                                "is float64")
        elif s != F32 and not is_bfloat16(s) and not (s == F16 and p == F16):
            why = (" (float16 state goes with float16 params only)" if s == F16 else "")
            raise TypeError(f"{arg} has dtype {name(s)}; state arrays of {name(p)} params "
                            f"are float32 or bfloat16{why}")
    if master is not None:
        if not sixteen:
            raise ValueError(f"master_param is for 16-bit params (bfloat16 or float16); "
                             f"param is {name(p)}")
        if master != F32:
            raise TypeError(f"master_param has dtype {name(master)}; it must be float32")
    if stochastic:
        if not sixteen:
            raise ValueError(f"stochastic_rounding=True is for bfloat16 params; param is "
                             f"{name(p)}, which the update stores exactly")
        if p == F16:
            raise ValueError("stochastic_rounding=True rounds to bfloat16 only; for "
                             "float16 params pass master_param (a float32 copy) instead")
        if master is not None:
            raise ValueError("stochastic_rounding=True and master_param exclude each "
                             "other: with a master copy, param is its nearest rounding")
    codes = tuple(code(dtypes[arg]) for arg in names)
    if master is None and not stochastic and set(codes) == {NATIVE}:
        return None, compute
    return (codes, master is not None, bool(stochastic)), compute


def full_layout(names, codes, master, stochastic):
    """The ``Layout`` over every driver argument ``names`` (unused state gets
    the native code), from ``layout``'s ``codes`` for the present ones."""
    given = dict(codes)
    return Layout(tuple(given.get(n, NATIVE) for n in names), master, stochastic)


def bits(a):
    """The array a driver takes: 16-bit floats as their ``uint16`` bits."""
    return a.view(np.uint16) if a.dtype.itemsize == 2 else a
