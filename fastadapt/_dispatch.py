"""The boundary between the public API and the kernels.

``prepare`` checks the caller's arrays once (type, dtype, shape, contiguity,
writeability, aliasing), picks the backend from where they live and returns a
launch that calls the driver with 1-D views and the scalars cast to the
arrays' dtype; ``run`` does both. Nothing is written until every check has
passed, so a rejected call leaves the caller's arrays as they were.
"""
import threading
from typing import NamedTuple

import numpy as np

from . import _storage
from ._arrays import (SUPPORTED_DTYPES, check_no_aliasing, check_plain_ndarray,
                      is_device_array, is_torch_host_tensor, no_op)
from .kernels import cpu

# Numba's workqueue threading layer aborts the process if two threads launch
# parallel regions at once; serialising parallel launches keeps fastadapt
# safe to call from several threads whichever layer Numba picked.
_PARALLEL_LAUNCH = threading.Lock()


def _check_host_array(name, a, writes):
    if is_torch_host_tensor(a):
        raise TypeError(
            f"{name} is a torch CPU tensor; the functional API takes NumPy arrays: pass "
            f"{name}.detach().numpy() (a zero-copy view, updated in place), or use "
            "fastadapt.torch (drop-in torch.optim optimizers) for model parameters")
    if not isinstance(a, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy.ndarray (or a CUDA array), got {type(a).__name__}")
    check_plain_ndarray(name, a)
    if name == "master_param":
        _storage.check_master_dtype(a.dtype)
    else:
        _storage.check_dtype(name, a.dtype)
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} is not C-contiguous; updates are in place, so "
                         "pass a contiguous array (e.g. from numpy.ascontiguousarray) "
                         "and keep using that one")
    if not a.flags.aligned:
        raise ValueError(f"{name} is not aligned to its dtype")
    if writes and not a.flags.writeable:
        raise ValueError(f"{name} is read-only but the update writes to it")


class Update(NamedTuple):
    """One planned update: what a functional step would apply.

    ``arrays`` maps argument names to arrays in the driver's order, with
    ``None`` for state an option does not use; ``written`` names the arrays
    the update writes; ``scalars`` are the rule's host-computed scalars
    (floats, flags as bools), cast to the arrays' dtype at launch; ``state``
    is the rule's scalar state after the update (None for rules without);
    ``master`` is the float32 master copy of a 16-bit ``param``, or the
    int16 / int8 correction of a bfloat16 one's split master (or None);
    ``key`` is the (key0, key1) stream of stochastic rounding and the index
    ``offset`` of ``param[0]`` in it (or None).
    """
    rule: str
    arrays: dict
    written: frozenset
    scalars: tuple
    state: dict = None      # the rule's scalar state after this step, if it has any
    master: object = None
    key: tuple = None


def run(update):
    """Apply ``update`` in place (checks, then one kernel call)."""
    prepare(update)(update.scalars, update.key)


def prepare(update):
    """Check ``update``'s arrays once; return ``launch(scalars, key=None)``,
    which applies the rule to exactly those arrays with fresh scalars (and,
    with stochastic rounding, the step's stream ``key``) and checks nothing.

    This is the single place a backend is chosen. Raises TypeError /
    ValueError naming the offending argument. The optimizer classes keep the
    launch of their own (unchanging) buffers, so a step does not re-check them.
    """
    present = {name: a for name, a in update.arrays.items() if a is not None}
    if update.master is not None:
        present["master_param"] = update.master
    for name in ("param", "grad", "master_param"):
        if isinstance(present.get(name), _storage.STATE8):
            raise TypeError(f"{name} is a {type(present[name]).__name__}; 8-bit storage is "
                            "for state arrays only")
    device = [is_device_array(a.codes if isinstance(a, _storage.STATE8) else a)
              for a in present.values()]
    if any(device):
        if not all(device):
            host = [n for n, d in zip(present, device) if not d]
            gpu = [n for n, d in zip(present, device) if d]
            raise ValueError(f"mix of host and GPU arrays: {', '.join(host)} on the "
                             f"host, {', '.join(gpu)} on the GPU")
        from . import _cuda  # imported only when GPU arrays are seen
        return _cuda.prepare(update)

    written = update.written | {"master_param"}
    blocks = {n: a for n, a in present.items() if isinstance(a, _storage.STATE8)}
    for name, b in blocks.items():
        if isinstance(b, _storage.Companded8):
            b._check(name, _size(present["param"]))
        else:
            _storage.check_blockwise(name, b, _size(present["param"]))
        del present[name]
    flat = _prepare_host(present, written)
    parts = {}
    for name, b in blocks.items():
        if isinstance(b, _storage.Companded8):
            parts.update(b._parts(name))
        else:
            parts[f"{name}.codes"], parts[f"{name}.absmax"] = b.codes, b.absmax
    check_no_aliasing({**flat, **parts}, np.may_share_memory)
    master = flat.pop("master_param", None)
    dtypes = {name: flat[name].dtype if name in flat else None
              for name in update.arrays if name in flat or name in blocks}
    companded = tuple((n, b.layout_code) for n, b in blocks.items()
                      if isinstance(b, _storage.Companded8))
    layout, dtype = _storage.layout(
        dtypes, None if master is None else master.dtype, update.key is not None,
        tuple(n for n, b in blocks.items() if isinstance(b, _storage.Blockwise8)), companded)
    first = flat["param"]
    if first.size == 0:
        return no_op
    unused = np.empty(0, dtype)
    args = []
    for name in update.arrays:
        if name in blocks:
            b = blocks[name]
            args += (b._kernel_args() if isinstance(b, _storage.Companded8)
                     else [b.codes, b.absmax, b.map, b.thresholds, b.buckets])
        else:
            args.append(_storage.bits(flat[name]) if name in flat else unused)
    if layout is None:
        driver = cpu.DRIVERS[update.rule]
    else:
        codes, has_master, stochastic = layout
        driver = cpu.layout_driver(update.rule, _storage.full_layout(
            update.arrays, zip(dtypes, codes), has_master, stochastic))
        if has_master:
            args.append(_storage.bits(master))
    if first.size < cpu.SERIAL_BELOW:
        serial = driver.serial
        if layout is not None and layout[2]:
            def launch(scalars, key=None):
                serial(*args, np.array(scalars, dtype), *key)
        else:
            def launch(scalars, key=None):
                serial(*args, np.array(scalars, dtype))
    else:
        parallel = driver.parallel
        if layout is not None and layout[2]:
            def launch(scalars, key=None):
                scalars = np.array(scalars, dtype)
                with _PARALLEL_LAUNCH:
                    parallel(*args, scalars, *key)
        else:
            def launch(scalars, key=None):
                scalars = np.array(scalars, dtype)
                with _PARALLEL_LAUNCH:
                    parallel(*args, scalars)
    return launch


def _size(a):
    return a.size if isinstance(a, np.ndarray) else int(np.prod(np.shape(a)))


def _prepare_host(arrays, written):
    first = next(iter(arrays))
    ref = arrays[first]
    for name, a in arrays.items():
        _check_host_array(name, a, name in written)
        if a.shape != ref.shape:
            raise ValueError(f"{name} has shape {a.shape} but {first} has {ref.shape}")
    # aliasing is checked by the caller, once, with any 8-bit state's parts
    return {name: a.reshape(-1) for name, a in arrays.items()}
