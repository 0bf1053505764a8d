"""The flat buffers behind one parameter group of a :mod:`fastadapt.optim`
optimizer, and the checks of the arrays a caller passes for them (parameter
groups, gradients)."""
import numpy as np

from . import _args, _storage
from ._arrays import is_device_array, is_torch_host_tensor, to_host
from ._dispatch import prepare
from ._options import EIGHT_BIT, master_dtype


class EightBitBuffer:
    """A group's state array under ``state_dtype="int8"`` (or ``"int8c"``):
    one :class:`~fastadapt.Blockwise8` (:class:`~fastadapt.Companded8`) over
    the params' flat layout (padding included, so blocks are the same
    whatever a segment's size)."""

    def __init__(self, layout, signed, kind="int8"):
        self.layout = layout                # the params' FlatBuffer
        self.data = EIGHT_BIT[kind].container(len(layout.data), signed)

    @property
    def views(self):
        """The segments' values, dequantized (copies, not views)."""
        values = self.data.dequantize()
        return [values[o:o + _args.size(s)].reshape(s)
                for o, s in zip(self.layout.offsets, self.layout.shapes)]


class GroupBuffers:
    """The flat buffers behind one parameter group."""

    __slots__ = ("param", "grad", "state", "steps", "validated", "scalar_state",
                 "master", "state_dtype", "non_negative", "_launch", "_launch_arrays",
                 "_padding")

    def __init__(self, param, state_dtype=None, master=False, non_negative=frozenset()):
        self.param = param                  # FlatBuffer of the parameters
        self.grad = param.zeros_like()      # FlatBuffer of the gradients
        self.state_dtype = param.dtype if state_dtype is None else state_dtype
        self.non_negative = non_negative    # state names of 8-bit state's unsigned map
        self.master = None                  # float32 FlatBuffer of a 16-bit param's master,
        if master is True:                  # or the correction of a split one
            self.master = param.zeros_like(np.float32)
            self.master.data[:] = param.data
        elif master:                        # zero: the master is the param
            self.master = param.zeros_like(master_dtype(master))
        self.state = {}                     # state name -> FlatBuffer
        self.steps = 0                      # completed steps
        self.validated = None               # the options last checked (lr excluded)
        self.scalar_state = {}              # named per-group floats a rule keeps
                                            # (NAdam's mu_product, ASGD's eta and mu)
        self._launch = None                 # the checked kernel launch over these buffers
        self._launch_arrays = ()            # ... and the arrays it was checked for
        self._padding = None                # where the padding lies in ``data``

    @property
    def eight_bit(self):
        """The 8-bit format of the state (an :class:`~fastadapt._options.EightBit`),
        or None."""
        return EIGHT_BIT.get(self.state_dtype) if isinstance(self.state_dtype, str) else None

    def new_state(self, name, initial=0.0):
        """A new state buffer ``name`` holding ``initial`` (not yet kept)."""
        if self.eight_bit is not None:
            buffer = EightBitBuffer(self.param, name not in self.non_negative,
                                    self.state_dtype)
            if initial != 0.0:
                buffer.data.fill(initial)
        else:
            buffer = self.param.zeros_like(self.state_dtype)
            if initial != 0.0:
                buffer.data[:] = initial
        return buffer

    def restore(self, params, master, state, steps, scalar_state, validated):
        """Take checked values (a checkpoint's): the parameters' and the master
        weights' segments (``master`` None: unchanged), ``{state name: its
        segments}`` (8-bit state: ``(codes, scales)`` over the padded length),
        the step count, the scalar state (None: unchanged) and the options
        they were checked with. State arrays absent from ``state`` are dropped."""
        self.param.copy_from(params)
        if master is not None:
            self.master.copy_from(master)
        for name in [n for n in self.state if n not in state]:
            del self.state[name]
        fmt = self.eight_bit
        for name, arrays in state.items():
            target = self.state.get(name)
            if fmt is not None:
                codes, scales = arrays
                target = self.new_state(name) if target is None else target
                target.data.codes[:] = codes
                fmt.scales(target.data)[:] = scales
            else:
                target = self.param.zeros_like(self.state_dtype) if target is None else target
                target.copy_from(arrays)
            self.state[name] = target
        self.steps = steps
        if scalar_state is not None:
            self.scalar_state = scalar_state
        self.validated = {k: v for k, v in validated.items() if k != "lr"}

    def launcher(self, update):
        """The launch of a planned update, checking the arrays only when they
        differ from last step's (the buffers are the optimizer's own; they
        change only when an option adds a state buffer or a checkpoint replaces
        one). Call it with ``update.scalars``."""
        arrays = [a for a in update.arrays.values() if a is not None]
        if update.master is not None:
            arrays.append(update.master)
        if len(arrays) != len(self._launch_arrays) or any(
                a is not b for a, b in zip(arrays, self._launch_arrays)):
            self._launch = prepare(update)
            self._launch_arrays = arrays
        return self._launch

    def reset_padding(self, initial):
        """Put the padding of the parameters and of every state buffer back to
        its initial value (``initial``: state name -> value, 0 otherwise)."""
        if self._padding is None:
            spans, end = [], 0
            for offset, shape in zip(self.param.offsets, self.param.shapes):
                if offset > end:
                    spans.append((end, offset))
                end = offset + int(np.prod(shape, dtype=np.int64))
            if len(self.param.data) > end:
                spans.append((end, len(self.param.data)))
            index = (np.concatenate([np.arange(a, b) for a, b in spans]) if spans
                     else np.empty(0, np.intp))
            self._padding = (spans, index)
        spans, index = self._padding
        if not spans:
            return
        buffers = [(self.param, 0.0)] + [(b, initial.get(n, 0.0)) for n, b in self.state.items()
                                         if not isinstance(b, EightBitBuffer)]
        if self.master is not None:
            buffers.append((self.master, 0.0))
        for buffer, value in buffers:
            if isinstance(buffer.data, np.ndarray):
                buffer.data[index] = value
            else:                   # GPU arrays: one slice at a time
                for a, b in spans:
                    buffer.data[a:b] = value


# ----------------------------------------------------------------- segments
def to_host_flat(buffer):
    """The segments of a :class:`~fastadapt.FlatBuffer`, concatenated into a new
    1-D NumPy array (padding dropped), copied from the device if need be."""
    data = to_host(buffer.data)
    if not buffer.shapes:
        return np.empty(0, buffer.dtype)
    return np.concatenate([data[o:o + _args.size(s)]
                           for o, s in zip(buffer.offsets, buffer.shapes)])


def segments(flat, buffer):
    """``flat`` (concatenated, or in ``buffer``'s padded layout) cut into views
    with the shapes of ``buffer``'s segments; the inverse of :func:`to_host_flat`."""
    if flat.shape[0] == len(buffer.data):
        offsets = buffer.offsets
    else:
        offsets, start = [], 0
        for shape in buffer.shapes:
            offsets.append(start)
            start += _args.size(shape)
    return [flat[o:o + _args.size(s)].reshape(s) for o, s in zip(offsets, buffer.shapes)]


# ----------------------------------------------------------------- what callers pass
def normalise_groups(params, cls_name):
    """``params`` (an array, a list of arrays or of parameter-group dicts) as a
    list of group dicts whose ``"params"`` is a non-empty list of arrays."""
    if isinstance(params, dict):
        groups = [params]
    elif hasattr(params, "shape"):
        groups = [{"params": [params]}]
    else:
        try:
            items = list(params)
        except TypeError:
            raise TypeError("params must be an array, a list of arrays or a list of "
                            f"parameter-group dicts, got {type(params).__name__}") from None
        if not items:
            raise ValueError("optimizer got an empty parameter list")
        if all(isinstance(x, dict) for x in items):
            groups = items
        elif any(isinstance(x, dict) for x in items):
            raise TypeError("params mixes arrays and parameter-group dicts")
        else:
            groups = [{"params": items}]
    out = []
    for i, group in enumerate(groups):
        if "params" not in group:
            raise ValueError(f"param group {i} has no 'params' key")
        arrays = group["params"]
        arrays = [arrays] if hasattr(arrays, "shape") else list(arrays)
        if not arrays:
            raise ValueError(f"param group {i} has an empty parameter list")
        for a in arrays:
            if not (hasattr(a, "shape") and hasattr(a, "dtype")):
                raise TypeError(f"param group {i}: parameters must be arrays, "
                                f"got {type(a).__name__}")
            if is_torch_host_tensor(a):
                raise TypeError(
                    f"fastadapt.{cls_name} takes NumPy or CUDA arrays and copies them; for "
                    f"torch parameters use fastadapt.torch.{cls_name}(model.parameters(), "
                    "...), a drop-in torch.optim optimizer that trains the model's own "
                    "parameters")
        out.append({**group, "params": arrays})
    return out


def resolve_dtype(name):
    """The NumPy dtype named ``name`` (bfloat16 through ml_dtypes)."""
    if name == "bfloat16":
        return _storage.bfloat16("bfloat16 params")
    return np.dtype(name)


def check_copyable(a, buffer, name):
    """Raise TypeError / ValueError unless ``a`` can be copied into ``buffer``
    (NumPy's ``same_kind`` casting, as :meth:`FlatBuffer.copy_from` does)."""
    dtype = buffer.dtype
    if is_device_array(a):
        if isinstance(buffer.data, np.ndarray):
            raise ValueError(f"{name} is a GPU array; this optimizer's buffers are on "
                             "the host")
        from . import _cuda
        source = np.dtype(_cuda.dtype_of(a))
    else:
        try:
            source = np.asarray(a).dtype
        except Exception:
            raise TypeError(f"{name} is not an array ({type(a).__name__})") from None
    if not np.can_cast(source, dtype, "same_kind"):
        raise TypeError(f"{name} has dtype {source}, which cannot be copied into this "
                        f"optimizer's {dtype} gradient buffer")


def split_flat(buffer, flat, index):
    """Per-segment views of a 1-D gradient for ``buffer``'s layout (see
    ``Optimizer.step``)."""
    shape = tuple(getattr(flat, "shape", ()))
    if len(shape) != 1 or shape[0] not in (buffer.numel, len(buffer.data)):
        raise ValueError(f"flat gradient for group {index} must be 1-D with {buffer.numel} "
                         f"elements (concatenated) or {len(buffer.data)} (the flat buffer's "
                         f"layout), got shape {shape}")
    if flat is buffer.data:
        return buffer.views
    return segments(flat, buffer)
