"""Flat buffers: many arrays of different shapes in one contiguous 1-D buffer.

A model's parameters packed into a :class:`FlatBuffer` are updated by one
kernel call over ``buffer.data`` instead of one call per array. Each segment
starts on a 64-byte (cache-line) boundary; the padding between segments is
zero when the buffer is made and is otherwise of no meaning (an update runs
over it harmlessly, since its gradient is zero too).
"""
import operator

import numpy as np

from . import _args
from . import _storage
from ._arrays import SUPPORTED_DTYPES, is_device_array

ALIGN_BYTES = 64


class FlatBuffer:
    """One contiguous buffer holding arrays of the given shapes.

    ``FlatBuffer(shapes)`` makes a zero-filled buffer from the segments'
    *shapes*; to pack existing arrays (with their values), use
    :meth:`FlatBuffer.from_arrays`. Passing arrays here raises a TypeError
    that says so.

    Parameters
    ----------
    shapes : sequence of shapes
        The shape of each segment, in order: a tuple of non-negative ints, or
        one int for a 1-D segment.
    dtype : float32 or float64
    like : array, optional
        Allocate on the device of this array (a GPU array gives a GPU buffer of
        the same kind); the host by default.

    Attributes
    ----------
    data : 1-D array holding every segment (and the padding between them)
    views : list of arrays, one per segment, with the original shapes; writing
        to a view writes into ``data`` with no copy
    offsets : list of int, the element offset of each segment in ``data``
    """

    def __init__(self, shapes, dtype=np.float32, *, like=None, align=None):
        dtype = np.dtype(dtype)
        narrow = _storage.code(dtype) is not None or _storage.is_correction(dtype)
        if dtype not in SUPPORTED_DTYPES and (not narrow
                                              or like is not None and is_device_array(like)):
            raise TypeError(f"unsupported dtype {_storage.name(dtype)}; FlatBuffer holds "
                            "float32 or float64 (and, on the host, bfloat16 or float16, "
                            "or a split master's int16 / int8 correction)")
        self.shapes = _shapes(shapes)
        self.dtype = dtype
        # segments start on 64-byte lines; ``align`` (elements) keeps another
        # buffer's layout (a float32 state buffer of bfloat16 params)
        align = ALIGN_BYTES // dtype.itemsize if align is None else int(align)
        self._align = align
        self.offsets, end = layout([_args.size(s) for s in self.shapes], align)
        self._like = like
        self.data = _zeros(end, dtype, like)
        self.views = [self.data[o:o + _args.size(s)].reshape(s)
                      for o, s in zip(self.offsets, self.shapes)]

    @classmethod
    def from_arrays(cls, arrays, dtype=None):
        """A buffer laid out for ``arrays`` and holding a copy of their values.

        ``dtype`` defaults to the arrays' common dtype; the buffer lives on the
        device of the first array.
        """
        arrays = list(arrays)
        if not arrays:
            raise ValueError("FlatBuffer.from_arrays needs at least one array")
        if dtype is None:
            dtypes = {np.dtype(_dtype_of(a)) for a in arrays}
            if len(dtypes) > 1:
                raise TypeError(f"arrays have different dtypes {sorted(map(str, dtypes))}; "
                                "pass dtype= to choose one")
            dtype = dtypes.pop()
        buffer = cls([tuple(a.shape) for a in arrays], dtype, like=arrays[0])
        buffer.copy_from(arrays)
        return buffer

    def zeros_like(self, dtype=None):
        """A new zero-filled buffer with the same layout and device, and the same
        dtype unless ``dtype`` is given."""
        return FlatBuffer(self.shapes, self.dtype if dtype is None else dtype,
                          like=self._like, align=self._align)

    def copy_from(self, arrays):
        """Copy ``arrays`` (one per segment, same shapes) into the buffer."""
        arrays = list(arrays)
        if len(arrays) != len(self.views):
            raise ValueError(f"expected {len(self.views)} arrays, got {len(arrays)}")
        for i, (view, a) in enumerate(zip(self.views, arrays)):
            if tuple(a.shape) != view.shape:
                raise ValueError(f"array {i} has shape {tuple(a.shape)}, "
                                 f"the buffer's segment {i} has {view.shape}")
        for view, a in zip(self.views, arrays):
            _copy(view, a)

    @property
    def numel(self):
        """Elements in the segments, padding excluded."""
        return sum(_args.size(s) for s in self.shapes)

    def __len__(self):
        return len(self.views)

    def __getitem__(self, index):
        return self.views[index]

    def __iter__(self):
        return iter(self.views)

    def __repr__(self):
        return (f"FlatBuffer({len(self.shapes)} arrays, {self.numel} elements, "
                f"dtype={self.dtype}, {self.data.size - self.numel} padding)")


def layout(sizes, align):
    """``(offsets, length)`` of segments of ``sizes`` elements packed one after
    another, each starting on a multiple of ``align`` elements."""
    offsets, end = [], 0
    for n in sizes:
        offsets.append(end)
        end += -(-int(n) // align) * align
    return offsets, end


def padded_length(shapes, dtype):
    """The length of the ``data`` of a :class:`FlatBuffer` of ``shapes`` and ``dtype``."""
    align = ALIGN_BYTES // np.dtype(dtype).itemsize
    return layout([_args.size(s) for s in _shapes(shapes)], align)[1]


def _is_array(obj):
    if isinstance(obj, np.generic):   # a NumPy integer is a length, not an array
        return False
    return (isinstance(obj, np.ndarray) or is_device_array(obj)
            or (hasattr(obj, "shape") and hasattr(obj, "dtype")))


def _array_error(what):
    return TypeError(f"FlatBuffer(shapes, dtype) takes the segments' shapes, but {what}; "
                     "to pack arrays (and copy their values) use "
                     "FlatBuffer.from_arrays(arrays), or pass [a.shape for a in arrays]")


def _shapes(shapes):
    """``shapes`` as a list of tuples of ints, refusing arrays where shapes belong."""
    if _is_array(shapes):
        raise _array_error(f"got an array of shape {tuple(shapes.shape)}")
    out = []
    for i, shape in enumerate(shapes):
        if _is_array(shape):
            raise _array_error(f"item {i} is an array of shape {tuple(shape.shape)}")
        try:
            dims = (operator.index(shape),) if not isinstance(shape, (tuple, list)) else tuple(
                operator.index(d) for d in shape)
        except TypeError:
            raise TypeError(f"item {i} of shapes is {shape!r}, not a shape (a tuple of "
                            "ints, or an int)") from None
        if any(d < 0 for d in dims):
            raise ValueError(f"invalid shape {dims} (item {i}): dimensions are >= 0")
        out.append(dims)
    return out


def _dtype_of(a):
    if is_device_array(a):  # torch's dtypes are not NumPy's
        from . import _cuda
        return _cuda.dtype_of(a)
    return np.asarray(a).dtype


#: Host buffers of at least this many bytes start on a 2 MiB boundary.
HUGE_PAGE_FROM = 8 << 20
_HUGE_PAGE = 2 << 20


def host_zeros(n, dtype):
    """``n`` zeros of NumPy ``dtype`` in host memory placed as
    :class:`FlatBuffer`'s (64-byte aligned, on a 2 MiB boundary from
    :data:`HUGE_PAGE_FROM` bytes: see ``_zeros``)."""
    return _zeros(n, np.dtype(dtype), None)


def _zeros(n, dtype, like):
    if like is None or not is_device_array(like):
        # NumPy only guarantees 16-byte alignment: over-allocate and start on
        # a 64-byte boundary so the segment offsets are absolute. A large
        # buffer starts on a 2 MiB boundary, a transparent huge page's (NumPy
        # asks for those on large allocations): Adam at 2**24 elements on
        # arrays placed so ran at 7.0-7.7 ms against 8.8-10.7 ms for arrays
        # as NumPy places them (float32; bfloat16 state 7.7 against 8.3-9.7;
        # AMD EPYC, 2 threads, quiet). The spare bytes before the start are
        # never touched, so they take no memory.
        align = _HUGE_PAGE if n * dtype.itemsize >= HUGE_PAGE_FROM else ALIGN_BYTES
        spare = align // dtype.itemsize
        raw = np.zeros(n + spare, dtype)
        start = (-raw.ctypes.data % align) // dtype.itemsize
        return raw[start:start + n]
    from . import _cuda
    return _cuda.zeros(n, dtype, like)


def _copy(dst, src):
    if isinstance(dst, np.ndarray):
        if is_device_array(src):
            raise ValueError("cannot copy a GPU array into a host FlatBuffer")
        np.copyto(dst, src, casting="same_kind")
        return
    from . import _cuda
    _cuda.copy(dst, src)
