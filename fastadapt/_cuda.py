"""The GPU side of the dispatcher (imported only when GPU arrays are seen).

``run`` takes the same arguments as ``_dispatch.run`` and applies the same
checks to arrays that live on an NVIDIA GPU: CuPy arrays, torch CUDA tensors
(``requires_grad`` ones included: they are updated in place through a
detached view, as torch.optim does under ``no_grad``), Numba device arrays,
or anything else exporting ``__cuda_array_interface__``. The arrays are used
in place with zero copies.

Streams
-------
The kernel is queued on the stream the caller's library is using, taken from
``param``, and the call returns without waiting for it:

- torch tensor: ``torch.cuda.current_stream(param.device)``;
- CuPy array: ``cupy.cuda.get_current_stream()`` on ``param``'s device;
- Numba device array: the stream it is bound to (``param.stream``), else the
  default stream;
- anything else: the ``stream`` its ``__cuda_array_interface__`` (v3) names,
  else the default stream.

So work that the caller queued earlier on that stream (computing the
gradient) is finished before the update reads it, and work queued later sees
the updated values, without any synchronisation. An update whose arrays come
from different libraries or streams must be ordered by the caller.
"""
import numpy as np

from . import _eight_bit, _storage
from ._arrays import check_no_aliasing, is_device_array, no_op
from ._arrays import kind as _kind

INSTALL_HINT = ('pip install "fastadapt[cuda]" (CUDA 12) or "fastadapt[cuda13]" '
                "(CUDA 13), which install NVIDIA's numba-cuda")

_state = {}          # "cuda": numba.cuda, "kernels": fastadapt.kernels.cuda
_multiprocessors = {}  # device ordinal -> SM count
_empty = {}          # (device, dtype) -> a zero-size device array


def _numba_cuda():
    """``numba.cuda`` from numba-cuda with a usable GPU, or a clear error."""
    if "cuda" not in _state:
        try:
            import numba_cuda  # noqa: F401  (Numba's built-in target is not enough)
        except ImportError:
            raise ImportError("fastadapt got GPU arrays but numba-cuda is not installed: "
                              + INSTALL_HINT) from None
        from numba import cuda
        if not cuda.is_available():
            error = cuda.cuda_error() if hasattr(cuda, "cuda_error") else None
            raise RuntimeError(f"fastadapt got GPU arrays but CUDA is not usable ({error}); "
                               "check the NVIDIA driver, or " + INSTALL_HINT)
        from .kernels import cuda as kernels
        _state.update(cuda=cuda, kernels=kernels)
    return _state["cuda"]


class _Array:
    """What the checks need to know of one GPU array, read once."""

    def __init__(self, name, obj, simulator):
        self.name, self.obj = name, obj
        self.kind = _kind(obj)
        if self.kind == "torch" and obj.requires_grad:
            obj = obj.detach()  # same memory; its interface refuses grad-tracking tensors
        if simulator and not hasattr(obj, "__cuda_array_interface__"):
            interface = obj.__array_interface__  # the simulator's arrays are NumPy inside
        else:
            interface = obj.__cuda_array_interface__
        self.interface = interface
        self.shape = tuple(interface["shape"])
        self.strides = interface.get("strides")
        self.dtype = np.dtype(interface["typestr"])
        given = getattr(obj, "dtype", None)
        if isinstance(given, np.dtype) and given.itemsize == self.dtype.itemsize:
            self.dtype = given          # bfloat16 (ml_dtypes) exports typestr "<V2"
        elif self.kind == "torch" and self.dtype.str == "<V2":
            self.dtype = _storage.bfloat16("bfloat16 tensors")     # torch.bfloat16 does too
        self.ptr, self.readonly = interface["data"]
        self.size = int(np.prod(self.shape, dtype=np.int64))
        self.nbytes = self.size * self.dtype.itemsize


def _c_contiguous(shape, strides, itemsize):
    if strides is None or 0 in shape:
        return True
    expected = itemsize
    for dim, stride in zip(reversed(shape), reversed(strides)):
        if dim != 1 and stride != expected:
            return False
        expected *= dim
    return True


def _check(a, writes):
    if a.name == "master_param":
        _storage.check_master_dtype(a.dtype)
    else:
        _storage.check_dtype(a.name, a.dtype)
    if not _c_contiguous(a.shape, a.strides, a.dtype.itemsize):
        raise ValueError(f"{a.name} is not C-contiguous; updates are in place, so pass "
                         "a contiguous array and keep using that one")
    if a.ptr % a.dtype.itemsize:
        raise ValueError(f"{a.name} is not aligned to its dtype")
    if writes and a.readonly:
        raise ValueError(f"{a.name} is read-only but the update writes to it")


def _device(a, simulator):
    """The ordinal of the GPU holding ``a`` (None for an empty array)."""
    if a.size == 0:
        return None
    if a.kind == "torch":
        return a.obj.device.index
    if a.kind == "cupy":
        return a.obj.device.id
    if simulator:
        return 0
    from cuda.bindings import driver
    err, ordinal = driver.cuPointerGetAttribute(
        driver.CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, a.ptr)
    if err != driver.CUresult.CUDA_SUCCESS:
        raise ValueError(f"{a.name} does not point to GPU memory ({err.name})")
    return int(ordinal)


def _overlaps(a, b):
    return a.ptr < b.ptr + b.nbytes and b.ptr < a.ptr + a.nbytes


def _stream(a, cuda):
    """The stream to launch on, from the array ``a`` (see the module docstring)."""
    obj = a.obj
    if a.kind == "torch":
        import torch
        ptr = torch.cuda.current_stream(obj.device).cuda_stream
    elif a.kind == "cupy":
        import cupy
        with cupy.cuda.Device(obj.device.id):
            ptr = cupy.cuda.get_current_stream().ptr
    elif a.kind == "numba":
        return obj.stream or 0
    else:
        ptr = a.interface.get("stream") or 0
        if ptr == 1:   # the interface's name for the legacy default stream
            ptr = 0
        elif ptr == 2:  # ... and for the per-thread default stream
            return cuda.per_thread_default_stream()
    return cuda.external_stream(ptr) if ptr else 0


def _flat(a, cuda, simulator):
    """A 1-D Numba device array over ``a``'s memory, with no copy."""
    if simulator and not hasattr(a.obj, "__cuda_array_interface__"):
        return a.obj.reshape(-1)
    # 16-bit floats as their bits (the kernels take uint16; Numba has no
    # bfloat16), a split master's int16 / int8 correction too (uint16 / uint8)
    typestr = "<u2" if a.dtype.itemsize == 2 else "|u1" if a.dtype.itemsize == 1 \
        else a.dtype.str
    interface = {"shape": (a.size,), "strides": None, "typestr": typestr,
                 "data": (a.ptr, False), "version": 2}
    return cuda.from_cuda_array_interface(interface, owner=a.obj, sync=False)


def prepare(update):
    """Check an update's GPU arrays; return its ``launch(scalars)``. See
    ``_dispatch.prepare``.

    Checks what the host path checks (dtype, shape, C-contiguity, alignment,
    writeability, aliasing) plus that every array is on one GPU. Each launch
    queues the rule's kernel on the caller's current stream (looked up per
    launch; see the module docstring) and returns without synchronising.
    """
    rule, arrays, written = update.rule, update.arrays, update.written
    cuda = _numba_cuda()
    kernels = _state["kernels"]
    simulator = kernels.SIMULATOR
    block8 = {name: a for name, a in arrays.items() if isinstance(a, _eight_bit.STATE8)}
    present = {name: _Array(name, a, simulator)
               for name, a in arrays.items() if a is not None and name not in block8}
    if update.master is not None:
        present["master_param"] = _Array("master_param", update.master, simulator)
    for a in present.values():
        _check(a, a.name in written or a.name == "master_param")
    first = next(iter(present.values()))
    for a in present.values():
        if a.shape != first.shape:
            raise ValueError(f"{a.name} has shape {a.shape} but {first.name} has {first.shape}")
    parts = {}
    for name, b in block8.items():
        part = "scale" if isinstance(b, _eight_bit.Companded8) else "absmax"
        parts[f"{name}.codes"] = _Array(f"{name}.codes", b.codes, simulator)
        parts[f"{name}.{part}"] = _Array(f"{name}.{part}", getattr(b, part), simulator)
        _check_state8(name, part, parts, first.size)
    check_no_aliasing({**present, **parts}, _overlaps)
    devices = {a.name: _device(a, simulator) for a in {**present, **parts}.values()}
    if len(set(devices.values()) - {None}) > 1:
        where = ", ".join(f"{n} on GPU {d}" for n, d in devices.items() if d is not None)
        raise ValueError(f"arrays on different GPUs: {where}")
    master = present.pop("master_param", None)
    dtypes = {n: present[n].dtype if n in present else None
              for n in arrays if n in present or n in block8}
    companded = tuple((n, b.layout_code) for n, b in block8.items()
                      if isinstance(b, _eight_bit.Companded8))
    layout, dtype = _storage.layout(
        dtypes, None if master is None else master.dtype, update.key is not None,
        tuple(n for n, b in block8.items() if isinstance(b, _eight_bit.Blockwise8)), companded)
    if first.size == 0:
        return no_op
    if layout is None:
        kernel, full = kernels.KERNELS[rule], None
    else:
        codes, has_master, stochastic = layout
        full = _storage.full_layout(arrays, zip(dtypes, codes), has_master, stochastic)
        kernel = kernels.layout_kernel(rule, full)
    device = next(d for d in devices.values() if d is not None)
    with cuda.gpus[device]:
        unused = _empty_array(device, dtype, cuda)
        args = []
        for name in arrays:
            if name in block8:
                b = block8[name]
                part = "scale" if isinstance(b, _eight_bit.Companded8) else "absmax"
                args += [_flat(parts[f"{name}.codes"], cuda, simulator),
                         _flat(parts[f"{name}.{part}"], cuda, simulator)]
                if part == "absmax":
                    args += _code_tables(device, b.signed, cuda)
            else:
                args.append(_bits(_flat(present[name], cuda, simulator)) if name in present
                            else unused)
        if master is not None:
            args.append(_bits(_flat(master, cuda, simulator)))
        blocks, threads = kernels.launch_config(kernels.units(first.size, full),
                                                _sm_count(device, cuda))

    def launch(scalars, key=None):
        scalars = tuple(dtype.type(s) for s in scalars)
        extra = () if key is None else (np.uint64(key[0]), np.uint64(key[1]), np.int64(key[2]))
        with cuda.gpus[device]:
            kernel[blocks, threads, _stream(first, cuda)](*args, scalars, *extra)
    return launch


_tables = {}         # (device, signed) -> the 8-bit code's tables on the GPU


def _code_tables(device, signed, cuda):
    key = (device, signed)
    if key not in _tables:
        _tables[key] = tuple(cuda.to_device(t) for t in _eight_bit.tables(signed))
    return _tables[key]


def _check_state8(name, part, parts, n):
    """Check the GPU arrays of 8-bit state ``name``: its codes and its
    ``part`` (``absmax`` per block of a Blockwise8, ``scale`` per group of a
    Companded8)."""
    codes, per_block = parts[f"{name}.codes"], parts[f"{name}.{part}"]
    kind, unit = (("Companded8", _eight_bit.GROUP) if part == "scale"
                  else ("Blockwise8", _eight_bit.BLOCK))
    if codes.dtype != np.uint8 or len(codes.shape) != 1:
        raise TypeError(f"{name}.codes must be a 1-D uint8 array, got {codes.dtype}"
                        f"{list(codes.shape)}")
    if per_block.dtype != np.float32 or len(per_block.shape) != 1:
        raise TypeError(f"{name}.{part} must be a 1-D float32 array")
    if codes.size != n:
        raise ValueError(f"{name} is a {kind} of {codes.size} elements but param has {n}")
    if per_block.size != -(-n // unit):
        raise ValueError(f"{name}.{part} has {per_block.size} blocks; {n} elements need "
                         f"{-(-n // unit)} of {unit}")
    for a in (codes, per_block):
        _check_contiguous_writeable(a)


def _check_contiguous_writeable(a):
    if not _c_contiguous(a.shape, a.strides, a.dtype.itemsize):
        raise ValueError(f"{a.name} is not C-contiguous")
    if a.readonly:
        raise ValueError(f"{a.name} is read-only but the update writes to it")


def _bits(a):
    """16-bit floats (and int16 corrections) as their ``uint16`` bits, int8
    corrections as ``uint8`` (the simulator's arrays are NumPy)."""
    if a.dtype.itemsize == 1:
        return a.view(np.uint8)
    if a.dtype.itemsize != 2:
        return a
    return a.view(np.uint16)


def _sm_count(device, cuda):
    if device not in _multiprocessors:
        # The simulator's device has no attributes; one SM keeps its grids small.
        _multiprocessors[device] = getattr(cuda.get_current_device(),
                                           "MULTIPROCESSOR_COUNT", 1)
    return _multiprocessors[device]


def _empty_array(device, dtype, cuda):
    key = (device, dtype)
    if key not in _empty:
        _empty[key] = cuda.device_array(0, dtype)
    return _empty[key]


def dtype_of(obj):
    """The NumPy dtype of a GPU array of any supported kind."""
    _numba_cuda()
    return _Array("array", obj, _state["kernels"].SIMULATOR).dtype


def zeros(n, dtype, like):
    """A zero-filled 1-D array of ``n`` elements of the same kind and on the
    same GPU as ``like`` (torch tensor, CuPy array or Numba device array)."""
    cuda = _numba_cuda()
    dtype = np.dtype(dtype)
    kind = _kind(like)
    if kind == "torch":
        import torch
        return torch.zeros(n, dtype=getattr(torch, dtype.name), device=like.device)
    if kind == "cupy":
        import cupy
        with cupy.cuda.Device(like.device.id):
            return cupy.zeros(n, dtype)
    simulator = _state["kernels"].SIMULATOR
    device = _device(_Array("like", like, simulator), simulator)
    with cuda.gpus[device or 0]:
        out = cuda.device_array(n, dtype)
        if n:
            from numba.cuda.cudadrv.driver import device_memset
            device_memset(out, 0, out.nbytes)
    return out


def copy(dst, src):
    """Copy ``src`` (a host array or a GPU array of any kind) into the GPU
    array ``dst`` of the same shape, casting as NumPy's ``same_kind`` allows.

    Queued on ``dst``'s library's current stream, like an update.
    """
    cuda = _numba_cuda()
    target = _Array("dst", dst, _state["kernels"].SIMULATOR)
    on_gpu = is_device_array(src)
    if not on_gpu:
        src = np.asarray(src)
        if not np.can_cast(src.dtype, target.dtype, "same_kind"):
            raise TypeError(f"cannot copy {src.dtype} into a {target.dtype} buffer")
    if target.size == 0:
        return
    if target.kind == "torch":
        import torch
        dst.copy_(torch.as_tensor(src, device=dst.device))
    elif target.kind == "cupy":
        import cupy
        with cupy.cuda.Device(dst.device.id):
            dst[...] = cupy.asarray(src)
    elif on_gpu:
        source = src if _kind(src) == "numba" else cuda.as_cuda_array(src, sync=False)
        if source.dtype != target.dtype:
            raise TypeError(f"cannot copy a {source.dtype} GPU array into a "
                            f"{target.dtype} Numba device buffer; convert it first")
        dst.copy_to_device(source)
    else:
        dst.copy_to_device(np.asarray(src, dtype=target.dtype, order="C"))
