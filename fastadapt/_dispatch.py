"""The boundary between the public API and the kernels.

``prepare`` checks the caller's arrays once (type, dtype, shape, contiguity,
writeability, aliasing), picks the backend from where they live and returns a
launch that calls the driver with 1-D views and the scalars cast to the
arrays' dtype; ``run`` does both. Nothing is written until every check has
passed, so a rejected call leaves the caller's arrays as they were.
:class:`LaunchCache` remembers the checked launches of the functional steps,
so a call on the same, unchanged arrays as an earlier one skips re-checking
them (what it compares is what those checks depend on).
"""
import functools
import threading
import weakref
from typing import NamedTuple

import numpy as np

from . import _eight_bit, _pool, _storage
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
        if isinstance(present.get(name), _eight_bit.STATE8):
            raise TypeError(f"{name} is a {type(present[name]).__name__}; 8-bit storage is "
                            "for state arrays only")
    device = [is_device_array(a.codes if isinstance(a, _eight_bit.STATE8) else a)
              for a in present.values()]
    if any(device):
        if not all(device):
            host = [n for n, d in zip(present, device) if not d]
            gpu = [n for n, d in zip(present, device) if d]
            raise ValueError(f"mix of host and GPU arrays: {', '.join(host)} on the "
                             f"host, {', '.join(gpu)} on the GPU")
        from . import _cuda  # imported only when GPU arrays are seen
        return _cuda.prepare(update)

    call, sources = _host_call(update)[:2]
    if call is None:
        return no_op
    args = _arguments(sources, (*update.arrays.values(), update.master))

    def launch(scalars, key=None):
        call(args, scalars, key)
    return launch


def _host_kernel(update):
    """Check ``update``'s host arrays; the :class:`_HostKernel` that applies
    it (None for zero-size arrays). It holds none of the caller's arrays."""
    present = {name: a for name, a in update.arrays.items() if a is not None}
    if update.master is not None:
        present["master_param"] = update.master
    written = update.written | {"master_param"}
    blocks = {n: a for n, a in present.items() if isinstance(a, _eight_bit.STATE8)}
    for name, b in blocks.items():
        b.check(name, _size(present["param"]))
        del present[name]
    flat = _prepare_host(present, written)
    parts = {}
    for name, b in blocks.items():
        parts.update(b.named_arrays(name))
    check_no_aliasing({**flat, **parts}, np.may_share_memory)
    master = flat.pop("master_param", None)
    dtypes = {name: flat[name].dtype if name in flat else None
              for name in update.arrays if name in flat or name in blocks}
    companded = tuple((n, b.layout_code) for n, b in blocks.items()
                      if isinstance(b, _eight_bit.Companded8))
    layout, dtype = _storage.layout(
        dtypes, None if master is None else master.dtype, update.key is not None,
        tuple(n for n, b in blocks.items() if isinstance(b, _eight_bit.Blockwise8)), companded)
    first = flat["param"]
    if first.size == 0:
        return None
    unused = np.empty(0, dtype)
    sources = []
    for i, name in enumerate(update.arrays):
        if name in blocks:
            sources.append((i, _EIGHT_BIT))
        elif name in flat:
            sources.append((i, _form(present[name])))
        else:
            sources.append((unused, _CONSTANT))
    if layout is None:
        driver = cpu.DRIVERS[update.rule]
    else:
        codes, has_master, stochastic = layout
        driver = cpu.layout_driver(update.rule, _storage.full_layout(
            update.arrays, zip(dtypes, codes), has_master, stochastic))
        if has_master:
            sources.append((len(update.arrays), _form(update.master)))
    stochastic = layout is not None and layout[2]
    parallel = first.size >= cpu.SERIAL_BELOW
    return _HostKernel(driver, parallel, dtype, stochastic, tuple(sources), first.size,
                       _pool.choice_for(driver, first.size, dtype) if parallel else None)


def _host_call(update):
    """Check ``update``'s host arrays; ``(call, sources, run, dtype)``:
    ``call(args, scalars, key)`` runs the driver on ``args`` (None for
    zero-size arrays) and ``sources`` says how each of the driver's arguments
    is made from ``(*update.arrays.values(), update.master)`` (see
    :func:`_arguments`); ``call`` is ``run(*args, numpy.array(scalars,
    dtype), *key)``. None of them holds the caller's arrays."""
    kernel = _host_kernel(update)
    if kernel is None:
        return None, (), None, None
    dtype = kernel.dtype
    if not kernel.parallel:
        run = kernel.driver.serial
    elif kernel.choice is not None:     # mid-size: the pool only where it pays
        run = _pool.timed(kernel.choice, kernel.driver.serial, kernel.driver.parallel,
                          _PARALLEL_LAUNCH, kernel.size)
    else:
        parallel = kernel.driver.parallel

        def run(*args):
            with _PARALLEL_LAUNCH:
                parallel(*args)
    if kernel.stochastic:
        def call(args, scalars, key):
            run(*args, np.array(scalars, dtype), *key)
    else:
        def call(args, scalars, key):
            run(*args, np.array(scalars, dtype))
    return call, kernel.sources, run, dtype


class _HostKernel(NamedTuple):
    driver: object          # a cpu.Driver: .serial and .parallel
    parallel: bool          # whether the update runs on the thread pool
    dtype: np.dtype         # of the scalars
    stochastic: bool        # whether the stream key follows the scalars
    sources: tuple          # see _arguments
    size: int               # elements
    choice: object          # a _pool.PoolChoice for mid-size updates, else None


def kernel_call(update):
    """``(kernel, driver, args)``: the compiled loop :func:`prepare` would
    call for the host ``update`` (``driver.serial`` or ``driver.parallel``)
    and the very arguments it would pass (1-D views, the scalars as an array
    of the compute dtype, the rounding stream), after the same checks;
    ``kernel(*args)`` applies the update. None for zero-size arrays. For
    measuring the dispatcher against the bare call."""
    kernel = _host_kernel(update)
    if kernel is None:
        return None
    args = [*_arguments(kernel.sources, (*update.arrays.values(), update.master)),
            np.array(update.scalars, kernel.dtype), *(update.key or ())]
    driver = kernel.driver
    return (driver.parallel if kernel.parallel else driver.serial), driver, args


# How a driver argument is made from the caller's object: as it is (a 1-D
# array of a native dtype), flattened, as its bits (16-bit floats, a split
# master's correction: see _storage.bits), flattened and as bits, an 8-bit
# container's arrays, or a constant of the dispatcher's own.
_AS_IS, _FLAT, _BITS, _FLAT_BITS, _EIGHT_BIT, _CONSTANT = range(6)


def _form(a):
    if a.dtype.itemsize <= 2:      # 16-bit floats, a split master's int16 / int8 correction
        return _BITS if a.ndim == 1 else _FLAT_BITS
    return _AS_IS if a.ndim == 1 else _FLAT


def _arguments(sources, objs):
    """The driver's arguments: each of ``sources`` (an index into ``objs``
    and its form, or a constant) made from ``objs``."""
    args = []
    for source, form in sources:
        if form == _CONSTANT:
            args.append(source)
            continue
        a = objs[source]
        if form == _AS_IS:
            args.append(a)
        elif form == _FLAT:
            args.append(a.reshape(-1))
        elif form == _BITS:
            args.append(_storage.bits(a))
        elif form == _FLAT_BITS:
            args.append(_storage.bits(a.reshape(-1)))
        else:                       # an 8-bit container
            args += a.kernel_arrays()
    return args


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



class LaunchCache:
    """The host launches a functional step has made lately, for calls that
    pass the same arrays again (the per-call path of a training loop).

    ``find(objs, extra)`` returns ``(call, args)``, to run as ``call(args,
    scalars, key)``, when the last call remembered for this ``param``
    (``objs[0]``) was made with these very objects ``objs`` (the step's
    arrays in a fixed order: param, grad, the state, master_param; None where
    one is not given), each still of the shape, dtype and flags it had, and
    with the same ``extra`` (whatever else decides the plan: the optional
    state the options use, the rounding mode); otherwise None, and the caller
    checks everything and calls ``keep``, which checks the update as
    :func:`prepare` does and remembers it.

    What that call checked cannot have changed since (see
    :func:`_arguments_if_same`): type, dtype, shape, contiguity, alignment and
    writeability are compared, and the same objects keep their memory, so
    they overlap as they did. Only plain ``numpy.ndarray`` objects (and None),
    and as state the 8-bit containers holding such arrays, are remembered
    (a container as the same object, sign and arrays: see
    :func:`_containers_sameness`); anything else (GPU arrays, subclasses) is
    checked in full every call. The cache holds no array: weak references
    and the shapes, dtypes and flags. At most ``size`` params are
    remembered (a full cache is emptied before the next one is added).
    Threads may share a cache: an entry never changes once made, and each
    read or write of the dict is atomic.
    """

    def __init__(self, size=256):
        self.size = size
        #: id(param) -> (extra, arguments_if_same, call, run, dtype), or
        #: (None, weak reference to the param) for a param seen once: what
        #: ``find`` reads (the functional steps read it inline, on their
        #: per-call path, and call ``run`` and ``dtype`` as ``call`` would
        #: when they round to nearest: see :func:`_host_call`)
        self.entries = {}

    def find(self, objs, extra):
        """``(call, args)`` for a remembered call on ``objs``, to run as
        ``call(args, scalars, key)``, or None."""
        entry = self.entries.get(id(objs[0]))
        if entry is None or entry[0] != extra:
            return None
        args = entry[1](objs)
        return None if args is None else (entry[2], args)

    def keep(self, objs, extra, update):
        """Check ``update`` (planned from ``objs``) as :func:`prepare` does
        and return its launch. The launch is remembered from the second call
        with the same ``param`` object (the first only notes the param): a
        caller passing new views every call (slices of a buffer) pays for a
        weak reference, not for an entry it will never use. Only calls whose
        objects are all None, plain ndarrays or, for state, 8-bit containers
        of plain ndarrays are remembered (host arrays: nothing of
        :func:`prepare`'s but the host checks applies to them)."""
        param = objs[0]
        noted = self.entries.get(id(param))
        if noted is None or (noted[0] is None and noted[1]() is not param):
            # not seen (or another param that had this id): note it
            if type(param) is np.ndarray:
                self._store(id(param), (None, weakref.ref(param)))
            return prepare(update)
        state = objs[2:-1]
        for a in objs:
            if a is not None and type(a) is not np.ndarray and not (
                    type(a) in _eight_bit.STATE8 and any(a is b for b in state)
                    and all(type(x) is np.ndarray for x in a.kernel_arrays())):
                return prepare(update)
        call, sources, run, dtype = _host_call(update)
        if call is None:
            call, sources, run, dtype = _nothing, (), _nothing, np.float64
        self._store(id(param), (extra, _arguments_if_same(objs, sources), call, run, dtype))
        args = _arguments(sources, objs)

        def launch(scalars, key=None):
            call(args, scalars, key)
        return launch

    def _store(self, key, entry):
        # No lock: each dict operation is atomic, an entry never changes once
        # made, and two threads filling a full cache at once clear it twice.
        entries = self.entries
        if len(entries) >= self.size and key not in entries:
            # full: start again (dropping the oldest one by one leaves the
            # dict's front a run of deleted slots that next(iter(...)) walks)
            entries.clear()
        entries[key] = entry


def _arguments_if_same(objs, sources):
    """``f(objs2)``: the driver's arguments made from ``objs2`` as ``sources``
    say (see :func:`_arguments`) when ``objs2`` holds the very objects of
    ``objs`` (None where it has None), each still of its shape, dtype (the
    same dtype object) and flag bits (``flags.num``: C-contiguity, alignment
    and writeability among them); None otherwise.

    The arrays are held by weak reference: a live reference is to the object
    it was made for, so no array made later can pass for one freed since,
    whatever its id; and NumPy refuses to resize (move) an array with weak
    references. A C-contiguous array of a given shape and dtype covers the
    same bytes whatever the strides of its length-1 dimensions (the only
    strides it can change while keeping its shape and contiguity), so it
    overlaps what it overlapped. ``f`` is made by a function compiled once
    per pattern of given and omitted arguments and driver arguments: one
    expression, no loop.
    """
    if any(type(a) in _eight_bit.STATE8 for a in objs):
        return _containers_sameness(objs, sources)
    direct = all(form in (_AS_IS, _CONSTANT) for _, form in sources)
    constants = tuple(source for source, form in sources if form == _CONSTANT)
    if direct:
        layout = tuple(source if form == _AS_IS else None for source, form in sources)
    else:
        layout = None
    pattern = (tuple(a is not None for a in objs), layout)
    make = _SAMENESS.get(pattern)
    if make is None:
        make = _SAMENESS[pattern] = _sameness_factory(*pattern)
    present = [a for a in objs if a is not None]
    extra = constants if direct else (functools.partial(_arguments, sources),)
    return make(*map(weakref.ref, present), *(a.shape for a in present),
                *(a.dtype for a in present), *(a.flags.num for a in present), *extra)


_SAMENESS = {}

def _containers_sameness(objs, sources):
    """:func:`_arguments_if_same` for ``objs`` holding 8-bit containers: a
    container passes when it is the same object, of the same sign, holding
    the very arrays it held (each of its shape, dtype and flag bits), which
    is all their checks read. A loop: these calls cost a few microseconds
    more than the compiled pattern of plain arrays, and far less than the
    checks."""
    take = functools.partial(_arguments, sources)
    known = []
    for a in objs:
        if a is None:
            known.append(None)
            continue
        arrays = (a,) if type(a) is np.ndarray else a.kernel_arrays()
        known.append((weakref.ref(a), getattr(a, "signed", None),
                      tuple((weakref.ref(x), x.shape, x.dtype, x.flags.num) for x in arrays)))

    def arguments_if_same(objs2):
        for a, k in zip(objs2, known):
            if k is None:
                if a is not None:
                    return None
                continue
            ref, signed, arrays = k
            if ref() is not a:
                return None
            if type(a) is np.ndarray:
                parts = (a,)
            elif a.signed is signed:
                parts = a.kernel_arrays()
            else:
                return None
            for x, (r, shape, dtype, flags) in zip(parts, arrays):
                if r() is not x or x.shape != shape or x.dtype is not dtype \
                        or x.flags.num != flags:
                    return None
        return take(objs2)
    return arguments_if_same


def _sameness_factory(given, layout):
    at = [i for i, g in enumerate(given) if g]
    test = [f"a{i} is None" for i, g in enumerate(given) if not g]
    for check in ("r{i}() is a{i}", "a{i}.shape == s{i}", "a{i}.dtype is d{i}",
                  "a{i}.flags.num == f{i}"):
        test += [check.format(i=i) for i in at]
    params = [f"{x}{i}" for x in "rsdf" for i in at]
    if layout is None:
        params.append("take")
        args = "take(objs)"
    else:
        params += [f"c{k}" for k in range(sum(i is None for i in layout))]
        names, k = [], 0
        for i in layout:
            if i is None:
                names.append(f"c{k}")
                k += 1
            else:
                names.append(f"a{i}")
        args = "(" + "".join(f"{n}, " for n in names) + ")"
    source = (f"def make({', '.join(params)}):\n"
              f"    def arguments_if_same(objs):\n"
              f"        {''.join(f'a{i}, ' for i in range(len(given)))}= objs\n"
              f"        if {' and '.join(test)}:\n"
              f"            return {args}\n"
              f"        return None\n"
              f"    return arguments_if_same\n")
    namespace = {}
    exec(compile(source, "<fastadapt._dispatch.arguments_if_same>", "exec"), namespace)
    return namespace["make"]


def _nothing(*args):
    """The call and the driver of an update over zero-size arrays."""
