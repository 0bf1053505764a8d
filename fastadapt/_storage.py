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

The math runs in float64 for float64 params and in float32 otherwise.
"""
import numpy as np

from ._arrays import to_host
from .kernels.blockwise8 import BLOCK
from .kernels.companded8 import GROUP
from .kernels.layout import (BFLOAT16, BLOCKWISE8, FLOAT16, NATIVE, ROOT8, SOFTSIGN8, SPLIT8,
                             SPLIT16, Layout)

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




# ------------------------------------------------------------------ 8-bit state
_TABLES = {}
_TINY = np.float32(2.0 ** -149)     # the smallest float32: scales a block of non-finite values


def _tables(signed):
    """(map, thresholds, bucket tables) of bitsandbytes' dynamic code, then of
    its special map (``kernels.blockwise8.tables``), read-only, one per sign."""
    if signed not in _TABLES:
        from .kernels import blockwise8
        code, thresholds = blockwise8.tables(signed)
        buckets = np.concatenate([blockwise8.bucket_table(thresholds[:BLOCK]),
                                  blockwise8.bucket_table(thresholds[BLOCK:])])
        code.flags.writeable = thresholds.flags.writeable = buckets.flags.writeable = False
        _TABLES[signed] = (code, thresholds, buckets)
    return _TABLES[signed]


class _State8:
    """What the 8-bit state containers share: ``codes`` (uint8, one per
    element), ``signed``, and a float32 array of one value per block."""

    def _start(self, n, signed):
        """Check the constructor's arguments; returns ``n`` as an int."""
        kind = type(self).__name__
        if isinstance(n, (bool, np.bool_)) or not hasattr(n, "__index__"):
            raise TypeError(f"{kind}(n): n must be an integer, got {n!r}")
        n = n.__index__()
        if n < 0:
            raise ValueError(f"{kind}(n): n must be >= 0, got {n}")
        if not isinstance(signed, (bool, np.bool_)):
            raise TypeError(f"{kind}: signed must be a bool, got {signed!r}")
        self.signed = bool(signed)
        return n

    # len(): torch tensors, which may hold the arrays, have a size() method
    @property
    def size(self):
        return len(self.codes)

    @property
    def shape(self):
        return (len(self.codes),)

    def __len__(self):
        return len(self.codes)

    def _host(self, part):
        """``codes`` and the per-block array ``part`` as NumPy arrays (copies
        of arrays on a GPU: see ``kernels.cuda``, where 8-bit state lives
        when its arrays do)."""
        return to_host(self.codes), to_host(getattr(self, part))

    def _store(self, part, codes, per_block):
        """Write ``codes`` and the per-block array ``part`` (NumPy arrays or
        scalars), into host or GPU arrays alike."""
        for a, values in ((self.codes, codes), (getattr(self, part), per_block)):
            if isinstance(a, np.ndarray):
                a[:] = values
            elif len(a):
                from . import _cuda
                _cuda.copy(a, np.broadcast_to(np.asarray(values, _cuda.dtype_of(a)), (len(a),)))

    def _checked_values(self, values):
        """``values`` for :meth:`assign`, as a flat float32 array, checked."""
        kind = type(self).__name__
        values = np.asarray(values, dtype=np.float32).reshape(-1)
        if values.size != len(self):
            raise ValueError(f"{kind}.assign: got {values.size} values for "
                             f"{len(self)} elements")
        if not self.signed and np.any(values < 0):
            raise ValueError(f"an unsigned {kind} holds values >= 0")
        return values

    def _check_arrays(self, name, per_block, part, unit, param_size):
        """ValueError / TypeError unless ``codes`` and the per-block array
        ``per_block`` (attribute ``part``, one per ``unit`` elements) are sound
        for a param of ``param_size``."""
        codes = self.codes
        if not (isinstance(codes, np.ndarray) and codes.dtype == np.uint8 and codes.ndim == 1
                and codes.flags.c_contiguous and codes.flags.writeable):
            raise TypeError(f"{name}.codes must be a writeable contiguous 1-D uint8 array")
        if not (isinstance(per_block, np.ndarray) and per_block.dtype == np.float32
                and per_block.ndim == 1 and per_block.flags.c_contiguous
                and per_block.flags.writeable):
            raise TypeError(f"{name}.{part} must be a writeable contiguous 1-D float32 array")
        if codes.size != param_size:
            raise ValueError(f"{name} is a {type(self).__name__} of {codes.size} elements but "
                             f"param has {param_size}")
        if per_block.size != -(-codes.size // unit):
            raise ValueError(f"{name}.{part} has {per_block.size} blocks; {codes.size} "
                             f"elements need {-(-codes.size // unit)} of {unit}")


class Blockwise8(_State8):
    """An optimizer state array of ``n`` elements stored in 8 bits per element
    (bitsandbytes' blockwise quantization; Dettmers et al., 2022).

    Each block of ``BLOCK = 256`` elements keeps one float32 ``absmax`` and
    each element a ``uint8`` index into a dynamic (non-linear) map of 256
    values in [-1, 1] (``signed``, for first moments) or [0, 1] (unsigned,
    for second moments and sums of squares), dense near zero. An element is
    ``map[codes[i]] * absmax[i // 256]``. A fused step dequantizes a block,
    updates it, takes the block's new absmax and stores each element as the
    code nearest to ``value / absmax``, all in one pass over memory.

    Non-finite values stay in their element: ``absmax`` is the block's
    largest *finite* magnitude, and a block that holds a NaN or an infinity
    stores it negated (its sign bit set: ``-0.0`` when nothing else in it is
    nonzero); its codes then index the second half of ``map``, the special
    map, whose codes 0, 1 and 255 stand for NaN, -inf and +inf (the unsigned
    one has no -inf) and whose other values are the dynamic map's but three
    (see ``kernels.blockwise8.special_map``). Such a block decodes as
    ``map[256 + codes[i]] * max(-absmax, 2**-149)``. A block of finite values
    is stored exactly as bitsandbytes' format stores it.

    Accepted wherever a state array is (float32, bfloat16 or float16 params;
    ``n`` must be the params' size). Starts at zero.

    Attributes
    ----------
    codes : uint8 array of ``n`` elements
    absmax : float32 array of ``ceil(n / 256)`` elements (sign bit: the block
        holds a non-finite value)
    signed : bool
    map, thresholds, buckets : the 256 values of the code, then the 256 of
        its special map, and their encoding tables (read-only; see
        ``kernels/blockwise8.py``)
    """

    def __init__(self, n, signed=True):
        n = self._start(n, signed)
        self.map, self.thresholds, self.buckets = _tables(self.signed)
        self.codes = np.empty(n, np.uint8)
        self.absmax = np.empty(-(-n // BLOCK), np.float32)
        self._clear()

    def _over(self, codes, absmax):
        """A Blockwise8 of this one's code over the arrays ``codes`` and
        ``absmax`` (not copied)."""
        out = Blockwise8.__new__(Blockwise8)
        out.signed, out.map, out.thresholds, out.buckets = (
            self.signed, self.map, self.thresholds, self.buckets)
        out.codes, out.absmax = codes, absmax
        return out

    def _view(self, lo, hi):
        """Elements ``lo:hi`` (``lo`` starts a block) as a Blockwise8 of views."""
        return self._over(self.codes[lo:hi], self.absmax[lo // BLOCK:-(-hi // BLOCK)])

    def _clear(self):
        """Every element at 0: the zero code, absmax 0 (as a new one starts)."""
        self._store("absmax", int(np.flatnonzero(self.map[:BLOCK] == 0)[0]), 0.0)

    def fill(self, value):
        """Set every element to the finite ``value`` (exactly: the code of
        +-1 times |value|; a signed Blockwise8 has no -1, so a negative value
        is assigned as :meth:`assign` stores it)."""
        value = float(value)
        if not np.isfinite(value):
            raise ValueError(f"Blockwise8.fill: value must be finite, got {value}")
        if value < 0 and not self.signed:
            raise ValueError("an unsigned Blockwise8 holds values >= 0")
        if value < 0:
            self.assign(np.full(len(self), value, np.float32))
            return
        self._store("absmax", int(np.flatnonzero(self.map[:BLOCK] == 1.0)[0]), value)

    def assign(self, values):
        """Store ``values`` (``n`` numbers, any float dtype) as a step stores
        its result: each block's absmax is its largest finite magnitude
        (negated where the block holds a NaN or an infinity), each element
        the code nearest to ``value / absmax`` in float32 (a block of zeros
        keeps absmax 0). For loading full-precision state (a torch
        checkpoint) into 8-bit state."""
        values = self._checked_values(values)
        blocks = len(self.absmax)
        padded = np.zeros(blocks * BLOCK, np.float32)
        padded[:values.size] = values
        rows = padded.reshape(-1, BLOCK)
        finite = np.isfinite(rows)
        special = ~finite.all(axis=1)
        absmax = np.where(finite, np.abs(rows), np.float32(0)).max(axis=1, initial=0)
        divisor = np.where(special, np.maximum(absmax, _TINY), absmax)
        with np.errstate(invalid="ignore", divide="ignore"):
            x = rows / divisor[:, None]
        codes = np.empty(rows.shape, np.int64)
        for half, rows_in in ((0, ~special), (1, special)):
            t = self.thresholds[half * BLOCK:(half + 1) * BLOCK - 1]
            codes[rows_in] = np.searchsorted(t, x[rows_in], side="right")
        codes[np.isnan(x)] = 0          # as the kernels encode NaN (0 / 0 too)
        self._store("absmax", codes.reshape(-1)[:values.size],
                    np.where(special, -absmax, absmax))

    def dequantize(self):
        """The values, as a new float32 array (on the host)."""
        codes, absmax = self._host("absmax")
        special = np.signbit(absmax)
        scale = np.where(special, np.maximum(-absmax, _TINY), absmax)
        base = np.repeat(np.where(special, BLOCK, 0), BLOCK)[:codes.size]
        with np.errstate(invalid="ignore", over="ignore"):
            return self.map[base + codes] * np.repeat(scale, BLOCK)[:codes.size]

    def nbytes_per_element(self):
        """Bytes stored per element: 1 + 4 / 256."""
        return 1 + 4 / BLOCK

    def __repr__(self):
        return (f"Blockwise8({len(self)}, signed={self.signed}: "
                f"{len(self.absmax)} blocks of {BLOCK})")


def absmax_problem(absmax):
    """What makes the 8-bit state's ``absmax`` (one per block) unsound, as a
    phrase, or None: it must be finite (a NaN or an infinity would make its
    whole block NaN or infinite). Its sign is not checked: a set sign bit
    marks a block holding a non-finite value (see :class:`Blockwise8`)."""
    absmax = np.asarray(absmax, np.float32).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(absmax))
    if bad.size:
        return f"is {absmax[bad[0]]} at block {bad[0]}; it must be finite"
    return None


def scale_problem(scale):
    """What makes companded 8-bit state's ``scale`` (one per group of 32)
    unsound, as a phrase, or None: each is its group's largest finite
    magnitude, so finite and >= 0."""
    scale = np.asarray(scale, np.float32).reshape(-1)
    bad = np.flatnonzero(~(np.isfinite(scale) & (scale >= 0)))
    if bad.size:
        return (f"is {scale[bad[0]]} at group {bad[0]}; it must be finite and >= 0 (a "
                "group's largest finite magnitude)")
    return None


def check_blockwise(name, b, param_size):
    """ValueError / TypeError unless ``b`` is a sound Blockwise8 of ``param_size``."""
    b._check_arrays(name, b.absmax, "absmax", BLOCK, param_size)
    if any(x is not y for x, y in zip((b.map, b.thresholds, b.buckets), _tables(b.signed))):
        raise ValueError(f"{name}: its map and tables must be the container's own")


class Companded8(_State8):
    """An optimizer state array of ``n`` elements in 8 bits per element,
    companded (after FlashOptim: Databricks, 2026), with one float32
    ``scale`` per group of ``GROUP = 32`` elements: the group's largest finite
    magnitude.

    * ``signed`` (first moments): ``x = value / scale`` is stored as
      ``c = round(126 * 2x / (1 + |x|))`` (softsign: twice as fine near zero
      as a linear code, half as fine near the scale), decoded as
      ``y / (2 - |y|) * scale`` with ``y = c / 126``;
    * unsigned (second moments, sums of squares): ``c = round(253 *
      (value / scale) ** (1/4))`` (the square root of ``sqrt(v)``, which
      Adam divides by), decoded as ``(c / 253) ** 4 * scale``, but never
      code 0 for a positive value: a positive second moment stays positive
      (at least ``2.4e-10 * scale``), so ``m / (sqrt(v) + eps)`` never meets
      a zero ``v`` that was not zero. (Not a square root, and not rounded
      up: see ``kernels.companded8._root_encode`` for what each cost.)

    Zero is code 0, exactly 0. NaN, +inf and -inf have codes of their own
    (signed: -128, 127, -127; unsigned: 255 NaN, 254 +inf) and the scale
    ignores them, so they stay in their element. Decoding and encoding are
    arithmetic (no table, no branch), so the loops vectorize. Decoding
    rounds each step of its formula to float32 (every code decodes to the
    same float32 since this format was introduced); encoding divides once per
    group (``x`` is ``value`` times the reciprocal of the scale, and an
    unsigned code comes from ``sqrt(value)``, which the update computes), so
    a value within a rounding of the boundary between two codes may take
    either (see ``kernels.companded8._softsign_encode`` / ``_root_encode``).
    Accepted wherever a state array is (float32, bfloat16 or float16
    params). Starts at zero.

    Attributes
    ----------
    codes : uint8 array of ``n`` elements (signed codes as two's complement)
    scale : float32 array of ``ceil(n / 32)`` elements
    signed : bool
    """

    def __init__(self, n, signed=True):
        n = self._start(n, signed)
        self.codes = np.zeros(n, np.uint8)
        self.scale = np.zeros(-(-n // GROUP), np.float32)

    @property
    def layout_code(self):
        return SOFTSIGN8 if self.signed else ROOT8

    def _over(self, codes, scale):
        """A Companded8 of this one's sign over ``codes`` and ``scale`` (not copied)."""
        out = Companded8.__new__(Companded8)
        out.signed, out.codes, out.scale = self.signed, codes, scale
        return out

    def _view(self, lo, hi):
        """Elements ``lo:hi`` (``lo`` starts a group) as a Companded8 of views."""
        return self._over(self.codes[lo:hi], self.scale[lo // GROUP:-(-hi // GROUP)])

    def _clear(self):
        """Every element at 0 (as a new one starts)."""
        self._store("scale", 0, 0.0)

    def fill(self, value):
        """Set every element to ``value`` (as :meth:`assign` stores it: exactly,
        for a finite value, since it is its group's scale)."""
        self.assign(np.full(len(self), value, np.float32))

    def assign(self, values):
        """Store ``values`` (``n`` numbers, any float dtype) exactly as a step
        stores its result. For loading full-precision state."""
        from .kernels import companded8
        values = self._checked_values(values)
        codes, scale = np.empty(len(self.codes), np.uint8), np.empty(len(self.scale), np.float32)
        companded8.encode_groups(np.ascontiguousarray(values), codes, scale, self.signed)
        self._store("scale", codes, scale)

    def dequantize(self):
        """The values, as a new float32 array (on the host)."""
        from .kernels import companded8
        codes, scale = self._host("scale")
        out = np.empty(codes.size, np.float32)
        companded8.decode_groups(codes, scale, self.signed, out)
        return out

    def nbytes_per_element(self):
        """Bytes stored per element: 1 + 4 / 32."""
        return 1 + 4 / GROUP

    def _check(self, name, param_size):
        self._check_arrays(name, self.scale, "scale", GROUP, param_size)

    def _parts(self, name):
        return {f"{name}.codes": self.codes, f"{name}.scale": self.scale}

    def _kernel_args(self):
        return [self.codes, self.scale]

    def __repr__(self):
        return (f"Companded8({len(self)}, signed={self.signed}: "
                f"{len(self.scale)} groups of {GROUP})")


#: The 8-bit state containers.
STATE8 = (Blockwise8, Companded8)
