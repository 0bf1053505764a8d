"""Optimizer state in 8 bits per element: :class:`Blockwise8` (bitsandbytes'
blockwise dynamic code) and :class:`Companded8` (companded linear codes per
group of 32), the containers a state array of either format is passed in.

Each keeps ``codes`` (one uint8 per element) and one float32 per block
(``absmax``) or group (``scale``); the fused step decodes, updates and
re-encodes them in one pass over memory (``kernels/blockwise8.py`` and
``kernels/companded8.py`` hold the codecs). :data:`STATE8` is both classes, for ``isinstance``.
"""
import numpy as np

from ._arrays import to_host
from .kernels.blockwise8 import BLOCK
from .kernels.companded8 import GROUP
from .kernels.layout import ROOT8, SOFTSIGN8

_TABLES = {}
_TINY = np.float32(2.0 ** -149)     # the smallest float32: scales a block of non-finite values


def tables(signed):
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
        self.map, self.thresholds, self.buckets = tables(self.signed)
        self.codes = np.empty(n, np.uint8)
        self.absmax = np.empty(-(-n // BLOCK), np.float32)
        self.clear()

    def with_arrays(self, codes, absmax):
        """A Blockwise8 of this one's code over the arrays ``codes`` and
        ``absmax`` (not copied)."""
        out = Blockwise8.__new__(Blockwise8)
        out.signed, out.map, out.thresholds, out.buckets = (
            self.signed, self.map, self.thresholds, self.buckets)
        out.codes, out.absmax = codes, absmax
        return out

    def elements(self, lo, hi):
        """Elements ``lo:hi`` (``lo`` starts a block) as a Blockwise8 of views."""
        return self.with_arrays(self.codes[lo:hi], self.absmax[lo // BLOCK:-(-hi // BLOCK)])

    def clear(self):
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

    def check(self, name, param_size):
        """ValueError / TypeError naming ``name`` unless this is a sound
        Blockwise8 for a param of ``param_size`` elements."""
        self._check_arrays(name, self.absmax, "absmax", BLOCK, param_size)
        if any(x is not y for x, y in zip((self.map, self.thresholds, self.buckets),
                                          tables(self.signed))):
            raise ValueError(f"{name}: its map and tables must be the container's own")

    def named_arrays(self, name):
        """Its arrays by the names an error about state ``name`` gives them."""
        return {f"{name}.codes": self.codes, f"{name}.absmax": self.absmax}

    def kernel_arrays(self):
        """The arrays a driver takes for this state, in its order (the codes,
        the absmaxes, then the map and its tables)."""
        return [self.codes, self.absmax, self.map, self.thresholds, self.buckets]

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

    def with_arrays(self, codes, scale):
        """A Companded8 of this one's sign over ``codes`` and ``scale`` (not copied)."""
        out = Companded8.__new__(Companded8)
        out.signed, out.codes, out.scale = self.signed, codes, scale
        return out

    def elements(self, lo, hi):
        """Elements ``lo:hi`` (``lo`` starts a group) as a Companded8 of views."""
        return self.with_arrays(self.codes[lo:hi], self.scale[lo // GROUP:-(-hi // GROUP)])

    def clear(self):
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

    def check(self, name, param_size):
        """ValueError / TypeError naming ``name`` unless this is a sound
        Companded8 for a param of ``param_size`` elements."""
        self._check_arrays(name, self.scale, "scale", GROUP, param_size)

    def named_arrays(self, name):
        """Its arrays by the names an error about state ``name`` gives them."""
        return {f"{name}.codes": self.codes, f"{name}.scale": self.scale}

    def kernel_arrays(self):
        """The arrays a driver takes for this state, in its order."""
        return [self.codes, self.scale]

    def __repr__(self):
        return (f"Companded8({len(self)}, signed={self.signed}: "
                f"{len(self.scale)} groups of {GROUP})")


#: The 8-bit state containers.
STATE8 = (Blockwise8, Companded8)
