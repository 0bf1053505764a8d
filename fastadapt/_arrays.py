"""What kind of array an object is: the one place that tells NumPy, torch,
CuPy and Numba device arrays apart.

The host dispatcher (``_dispatch``), the GPU dispatcher (``_cuda``) and the
flat buffers all ask here, so neither dispatcher imports the other's internals.
torch and CuPy are never imported here: an object can only be one of theirs if
the caller already imported them.
"""
import sys

import numpy as np

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_device_array(a):
    """Whether ``a`` lives on a GPU: it exports ``__cuda_array_interface__``
    (CuPy, Numba), is a torch CUDA tensor (whose interface raises rather than
    export a tensor that requires grad) or is a Numba device array (the CUDA
    simulator's have no interface)."""
    if isinstance(a, np.ndarray):
        return False
    if getattr(a, "is_cuda", False) or getattr(a, "__cuda_ndarray__", False):
        return True
    return hasattr(a, "__cuda_array_interface__")


def kind(obj):
    """"numpy", "torch", "cupy", "numba" (a Numba device array) or "other"."""
    if isinstance(obj, np.ndarray):
        return "numpy"
    torch, cupy = sys.modules.get("torch"), sys.modules.get("cupy")
    if torch is not None and isinstance(obj, torch.Tensor):
        return "torch"
    if cupy is not None and isinstance(obj, cupy.ndarray):
        return "cupy"
    if getattr(obj, "__cuda_ndarray__", False):
        return "numba"
    return "other"


def is_torch_host_tensor(a):
    """Whether ``a`` is a torch tensor in host memory (without importing torch)."""
    return kind(a) == "torch" and not getattr(a, "is_cuda", False)


def check_plain_ndarray(name, a):
    """Refuse ndarray subclasses whose indexing differs from an ndarray's.

    ``numpy.matrix`` keeps two dimensions under any indexing, and other
    subclasses may override ``__getitem__`` or ``reshape``; the kernels see
    the raw buffer, so such an array would be updated in a way its own class
    does not expect. Subclasses that leave indexing alone (``memmap``, for
    instance) are accepted.
    """
    cls = type(a)
    if cls is np.ndarray or cls is np.memmap:
        return
    if isinstance(a, np.matrix) or any(
            getattr(cls, attr) is not getattr(np.ndarray, attr)
            for attr in ("__getitem__", "__setitem__", "reshape", "__array_finalize__")):
        raise TypeError(f"{name} is a {cls.__module__}.{cls.__name__}, an ndarray subclass "
                        "with its own indexing; pass a plain numpy.ndarray "
                        "(numpy.asarray(x) gives a view)")


def check_no_aliasing(arrays, overlaps):
    """Raise ValueError if two non-empty arrays of ``arrays`` overlap."""
    names = [n for n in arrays if arrays[n].size]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if overlaps(arrays[a], arrays[b]):
                raise ValueError(f"{a} and {b} share memory; every array of an "
                                 "update must be distinct")


def no_op(scalars, key=None):
    """The launch of an update over zero-size arrays."""


def to_host(a):
    """A host NumPy copy of ``a`` (a Numba device, CuPy or torch array), or
    ``a`` itself if it is a NumPy array."""
    if isinstance(a, np.ndarray):
        return a
    for method in ("copy_to_host", "get"):      # Numba device arrays, CuPy
        f = getattr(a, method, None)
        if callable(f):
            return np.asarray(f())
    if hasattr(a, "detach"):                    # torch
        return a.detach().cpu().numpy()
    return np.asarray(a)
