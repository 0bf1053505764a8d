r"""ZeRO-style sharded optimizer state over ``torch.distributed``.

:class:`ZeroRedundancyOptimizer` follows the contract of
``torch.distributed.optim.ZeroRedundancyOptimizer`` for the
``fastadapt.torch`` optimizers. It is exported as
``fastadapt.torch.ZeroRedundancyOptimizer``; importing this module imports
torch.

How it works
------------
Every rank packs the parameters into the same flat buffers as
``fastadapt.torch`` (one per group, device and dtype, 64-byte aligned
segments), padded at the end so the buffer splits into ``world_size`` equal,
contiguous shards. Rank ``r`` keeps the optimizer state of shard ``r`` only::

    shard_length = ceil(length / (world_size * align)) * align
    shard r      = [r * shard_length, (r + 1) * shard_length)

``align`` is one cache line of the parameters' dtype (16 float32 elements, 32
bfloat16 ones), or the 8-bit state's unit where a bucket keeps it (256
elements for ``state_dtype="int8"``'s blocks, 32 for ``"int8c"``'s groups:
multiples of the line), so that every shard is whole blocks and quantizes as
one process does; the state of a rank is therefore ``1/world_size`` of the
whole, plus less than ``align`` elements of padding per state array. With
``master_weights=True`` (16-bit parameters) the float32 master copy is
sharded the same way. A step on every rank:

1. checks the parameters and gradients (as ``fastadapt.torch``) and copies
   gradients that are not views of the flat gradient buffer into it;
2. with ``reduce_gradients=True``: one all-reduce (MAX) of GradScaler's
   ``found_inf`` flag and of which parameters have a gradient, so every rank
   skips, or steps the same parameters (a parameter with a gradient on some
   rank only counts zeros elsewhere, as DDP's unused parameters); then a
   ``reduce_scatter`` of the flat gradient buffer, so that the local shard
   holds the sum of every rank's gradients, divided by the world size (DDP's
   average), ZeRO-2 style. Without it, the ranks' gradients are DDP's, the
   same everywhere, and so is which parameters have one: only GradScaler's
   ``found_inf``, when it passes one, is all-reduced (MAX). When another
   rank found an inf, the agreed flag is written into this rank's
   GradScaler's own flags, so every rank's ``update()`` reduces its scale
   alike;
3. with ``max_grad_norm``: the sum of squares of the local shard's
   gradients, all-reduced (SUM, float64), gives the global norm on every rank;
4. the fused kernel of the rule over the local shard only (on the master
   copy's shard with ``master_weights``, rounding the parameters' shard from
   it in the same pass; per-parameter step
   counts and scalar state, NAdam's ``mu_product``, ASGD's ``eta`` and
   ``mu``, are kept for every parameter on every rank, since they depend on
   the step count only);
5. the parameters gathered in place, straight into the flat parameter buffer
   (no per-tensor copies): one ``all_gather`` per flat buffer (NCCL), or on
   gloo, whose allgather is three times slower than its broadcasts here, one
   broadcast of each rank's shard, all in flight at once.

Elementwise rules do not depend on where a shard starts, so the parameters
after any number of steps are bit-identical to the single-process
``fastadapt.torch`` optimizer's, whatever the world size. Clipping sums the
squares in another order (per shard, then across ranks): its coefficient
agrees to float32 rounding.

With DDP the gradients are already averaged: keep ``reduce_gradients=False``.
Without DDP, ``reduce_gradients=True`` averages them here, in the flat
gradient buffer; afterwards a ``.grad`` that is that buffer's view (see
:mod:`fastadapt.torch`) holds the average only on the local shard (elsewhere
the rank's own gradients), and a ``.grad`` of the caller's own is unchanged.

Checkpoints
-----------
* ``consolidate_state_dict(to=0)`` (every rank) then ``state_dict()`` (rank
  ``to``): the full state in torch's format, loadable into the single-process
  ``fastadapt.torch`` optimizer or ``torch.optim`` of the same algorithm.
  ``load_state_dict`` (every rank, the full dict) keeps each rank's shard.
* ``save_sharded(directory)`` / ``load_sharded(directory)`` (every rank): one
  file per rank, written atomically, then a manifest written by rank 0 once
  every rank's file is complete. Loading works with another world size
  (each rank reads the old shards that overlap its new one).
* Both first bring the master copy up to date with parameters written in
  place or whose ``.data`` was replaced since the last step.

Agreement across ranks
----------------------
The construction, ``add_param_group``, ``consolidate_state_dict``,
``save_sharded`` and ``load_sharded`` end their local work (every check,
every file read) with one small all-reduce: a failure flag and a digest of
what must be the same on every rank (the options, each group's parameters'
layout and hyper-parameters; on load, the checkpoint read). When any rank
failed or the digests differ, every rank raises (ValueError; RuntimeError
for a failed save), naming the rank and its error or what differs and each
rank's value, and nothing changes. The step gains no collective for this:
hyper-parameters changed between steps (a scheduler, ``max_grad_norm``) are
not compared, and must change alike on every rank.

Faults
------
A collective that fails (a rank died, or raised and left the step) raises
:class:`CollectiveError` on the ranks still running, within the process
group's timeout; the message says which collective failed. A failed sharded
save leaves the previous complete checkpoint in place.
"""
import hashlib
import os
import re
import secrets
import sys

import torch
import torch.distributed as dist

from . import _args
from .checkpoint import atomic_write
from .torch import EIGHT_BIT, MASTER_KEY, FlatOptimizer, _Bucket, _plain

__all__ = ["ZeroRedundancyOptimizer", "CollectiveError"]

_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
SHARDED_FORMAT = 1
MANIFEST = "manifest.pt"
KIND = "fastadapt.ZeroRedundancyOptimizer"
_TOKEN = re.compile(r"[0-9a-f]{1,64}")


class CollectiveError(RuntimeError):
    """A collective of :class:`ZeroRedundancyOptimizer` failed: another rank
    died or left the step. The ranks' parameters may now differ; resume from
    the last complete checkpoint."""


# ----------------------------------------------------------------- one shard
class _MasterPiece:
    """The part of one parameter's float32 master copy that lies in this
    rank's shard, standing where ``fastadapt.torch`` keeps a view of the whole:
    ``copy_(values)`` (the parameter's full values, any shape) writes the
    shard's part."""

    def __init__(self, master, lo, n, shape, a, b, s0):
        self.master, self.shape = master, shape
        self.src, self.dst = slice(a - lo, b - lo), slice(a - s0, b - s0)

    def data_ptr(self):
        return -1                       # never a tensor's: a loaded value is always copied

    def copy_(self, values):
        if self.dst.stop > self.dst.start:
            self.master[self.dst].copy_(values.reshape(-1)[self.src])
        return self


class _ShardBucket(_Bucket):
    """A flat buffer of ``fastadapt.torch`` whose state covers one rank's shard.

    The parameter and gradient buffers are whole (every rank holds the
    parameters); ``state_flat[name]``, and the float32 master copy of 16-bit
    parameters under ``master_weights``, have ``shard_length`` elements,
    element ``i`` standing for element ``shard[0] + i`` of the flat buffer.
    """

    def __init__(self, owner, group_index, params, indices, small=False):
        super().__init__(owner, group_index, params, indices, small)
        self.reduced = None     # the reduce-scatter's output (reduce_gradients=True)

    def _new_master(self):
        """The master copy of this rank's shard only, and its pieces per parameter."""
        s0, s1 = self.shard
        flat = self.param_flat[s0:s1].float()
        return flat, [_MasterPiece(flat, o, n, shape, *self._span(o, o + n), s0)
                      for o, n, shape in zip(self.offsets, self.sizes, self.shapes)]

    def _flat_length(self, end, align):
        # shards of whole units: cache lines, or 8-bit state's blocks
        owner = self.owner
        world = owner.world_size
        per = max(1, -(-end // (world * align))) * align
        self.shard_length = self.state_length = per
        self.shard = (owner.rank * per, (owner.rank + 1) * per)
        self.state_offset = self.shard[0]
        return per * world

    def _span(self, lo, hi):
        """``[lo, hi)`` of the flat buffer intersected with the shard (may be empty)."""
        s0, s1 = self.shard
        a, b = max(lo, s0), min(hi, s1)
        return (a, b) if a < b else (s0, s0)

    def _show_state(self, name):
        """Nothing: ``optimizer.state`` shows no sharded arrays (see :meth:`publish`)."""

    def load(self, name, j, arrays, extras, group):
        """Parameter ``j``'s state ``name`` from a checked state dict (reset when
        the dict has none)."""
        key = self.owner._torch_names.get(name, name)
        src = arrays.get(key)
        if self.eight_bit and (src is not None or f"{key}.codes" in extras):
            lo = self.offsets[j]
            a, b = self._span(lo, lo + self.sizes[j])
            if b <= a:
                return
            target = self.state_flat[name]._view(a - self.shard[0], b - self.shard[0])
            codes = extras.get(f"{key}.codes")
            if codes is not None:       # as saved; a - lo starts a block (group)
                target.codes[:] = codes.detach().cpu().reshape(-1).numpy()[a - lo:b - lo]
                scale = extras[f"{key}.{self.scale_key}"].detach().cpu().reshape(-1).numpy()
                getattr(target, self.scale_key)[:] = scale[
                    (a - lo) // self.unit:-(-(b - lo) // self.unit)]
            else:                       # quantized per block, as one process quantizes
                target.assign(src.detach().to("cpu", torch.float32).reshape(-1).numpy()[
                    a - lo:b - lo])
        elif src is None:
            self.reset(j, j, group, names=(name,))
        else:
            self.load_state(name, j, src)

    def load_state(self, name, j, src):
        lo = self.offsets[j]
        a, b = self._span(lo, lo + self.sizes[j])
        if b > a:
            s0 = self.shard[0]
            self.state_flat[name][a - s0:b - s0].copy_(src.reshape(-1)[a - lo:b - lo])

    def publish(self, j):
        """``optimizer.state[p]`` shows the step count and scalar state (the
        same on every rank); the state arrays are sharded, see
        :meth:`ZeroRedundancyOptimizer.consolidate_state_dict`."""
        owner = self.owner
        entry = {} if owner._no_step else {"step": self.steps[j]}
        for name, values in self.scalars.items():
            entry[owner._torch_names.get(name, name)] = values[j]
        self.show(j, entry)

    def present_grads(self, scan):
        present = scan[0]
        s0, s1 = self.shard
        if present is None or all(present):
            return [self.k_grad[s0:s1]]
        pieces = []
        for o, n, has in zip(self.offsets, self.sizes, present):
            a, b = self._span(o, o + n)
            if has and b > a:
                pieces.append(self.k_grad[a:b])
        return pieces

    def local_arrays(self):
        """``{key: tensor}`` of this rank's state as collectives and files move
        it: ``name`` (or ``name.codes`` and ``name.absmax`` / ``name.scale``
        for 8-bit state)."""
        if self.eight_bit:
            return {f"{name}.{part}": t for name, pair in self.block_tensors.items()
                    for part, t in zip(("codes", self.scale_key), pair)}
        return dict(self.state_flat)

    def describe(self):
        """The layout a sharded checkpoint records, to check it on load."""
        return {"group": self.group_index, "indices": list(self.indices),
                "sizes": list(self.sizes), "dtype": str(self.dtype).replace("torch.", ""),
                "state": _storage_name(self.state_dtype),
                "length": self.length, "shard_length": self.shard_length}


def _read_file(path, where):
    """``torch.load(weights_only=True)`` of one checkpoint file. A file that
    is not one (damaged, truncated, or holding objects other than tensors and
    plain containers) is a ValueError; torch's own message, which suggests
    loading without ``weights_only`` (unsafe for a file that may be hostile),
    is left out."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as exc:
        raise ValueError(f"{where}: {os.path.basename(path)} is damaged or is not a file "
                         f"save_sharded wrote ({type(exc).__name__}); nothing was loaded"
                         ) from None


def _storage_name(state_dtype):
    """``"int8"``, ``"float32"``, ``"bfloat16"`` ... for a bucket's state storage."""
    return state_dtype if isinstance(state_dtype, str) else str(state_dtype).replace("torch.", "")


def _shown(value):
    """A hyper-parameter as the short text ranks compare (a number, string,
    bool or None, or a tuple or list of them: its repr; anything else: its
    type, whose repr may hold an address that differs between processes)."""
    try:
        value = _plain(value)
    except (TypeError, ValueError, RuntimeError):
        pass

    def plain(v):
        return v is None or isinstance(v, (bool, int, float, str)) or (
            isinstance(v, (tuple, list)) and all(plain(x) for x in v))
    text = repr(value) if plain(value) else f"<{type(value).__qualname__}>"
    return text if len(text) <= 80 else f"{text[:60]}... (sha256 {_digest(text)[:12]})"


def _ranks_shown(ranks):
    """``rank 3``, ``ranks 0, 1, 2``, ``ranks 0, 1, 2, ... (64 ranks)``."""
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    listed = ", ".join(map(str, ranks[:4]))
    return f"ranks {listed}" + (f", ... ({len(ranks)} ranks)" if len(ranks) > 4 else "")


def _digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


def _parameters_shown(buckets):
    """A group's parameters as ranks compare them: counts and dtypes, and a
    digest of the exact layout (shapes, order, storage)."""
    n = sum(len(b.params) for b in buckets)
    elements = sum(sum(b.sizes) for b in buckets)
    dtypes = "/".join(dict.fromkeys(str(b.dtype).replace("torch.", "") for b in buckets))
    layout = _digest(repr([b.describe() for b in buckets]))[:12]
    return f"{n} tensors, {elements} elements, {dtypes or 'no dtype'} (layout {layout})"


def _group_shown(index, group):
    """``{"param group i: key": text}`` of a group's hyper-parameters."""
    return {f"param group {index}: {key}": _shown(value)
            for key, value in group.items() if key != "params"}


def _originals(groups):
    """``[(tensor, .data, .grad)]`` of every parameter in ``groups`` (a list of
    tensors or of dicts whose ``"params"`` are lists), to put back when a
    construction or ``add_param_group`` fails on some rank."""
    out = []
    for item in groups:
        tensors = item.get("params", ()) if isinstance(item, dict) else [item]
        if isinstance(tensors, torch.Tensor):
            tensors = [tensors]
        out.extend((p, p.data, p.grad) for p in tensors if isinstance(p, torch.Tensor))
    return out


def _restore(originals):
    with torch.no_grad():
        for p, data, grad in originals:
            if p.data is not data:
                p.data = data
            if p.grad is not grad:
                p.grad = grad


def _scaler_found_infs(optimizer):
    """The found_inf tensors (one per device) that a ``torch.amp.GradScaler``
    keeps for ``optimizer`` while its ``step(optimizer)`` runs, the ones its
    ``update()`` reads: the scaler hands the optimizer only their sum (a new
    tensor), so they are found in the scaler's ``step`` frame up the stack.
    Empty when no GradScaler is stepping ``optimizer``."""
    scaler_class = getattr(getattr(torch, "amp", None), "GradScaler", None)
    if scaler_class is None:
        return []
    frame = sys._getframe(1)
    while frame is not None:
        local = frame.f_locals
        scaler = local.get("self")
        if isinstance(scaler, scaler_class) and local.get("optimizer") is optimizer:
            state = getattr(scaler, "_per_optimizer_states", {}).get(id(optimizer))
            found = state.get("found_inf_per_device") if isinstance(state, dict) else None
            return [t for t in (found or {}).values() if isinstance(t, torch.Tensor)]
        frame = frame.f_back
    return []


def _entries(b, name, full, o, n, shape):
    """A parameter's entries of state ``name`` from the consolidated ``full``
    arrays, as ``fastadapt.torch``'s state dict has them (8-bit state: the
    codes, the blocks' absmax or groups' scale and the dequantized values
    under torch's name)."""
    key = b.owner._torch_names.get(name, name)
    if not b.eight_bit:
        return {key: full[name][o:o + n].view(shape)}
    part, unit = b.scale_key, b.unit
    codes, scale = full[f"{name}.codes"], full[f"{name}.{part}"]
    whole = b.state_flat[name]._over(codes.numpy(), scale.numpy())
    return {f"{key}.codes": codes[o:o + n],
            f"{key}.{part}": scale[o // unit:-(-(o + n) // unit)],
            key: torch.from_numpy(whole._view(o, o + n).dequantize()).view(shape)}


# ----------------------------------------------------------------- the optimizer
def _checked_class(optimizer_class):
    from . import torch as ft
    if optimizer_class is None:
        return ft.Adam
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, FlatOptimizer)
            and optimizer_class.rule is not None
            and not issubclass(optimizer_class, ZeroRedundancyOptimizer)):
        what = (f"{optimizer_class.__module__}.{optimizer_class.__qualname__}"
                if isinstance(optimizer_class, type) else repr(optimizer_class))
        raise TypeError(f"optimizer_class must be a fastadapt.torch optimizer class "
                        f"(fastadapt.torch.Adam, AdamW, SGD, ...), got {what}")
    return optimizer_class


def _process_group(process_group):
    """``(group, rank, world size, backend)``; ValueError when there is none."""
    if not dist.is_available():
        raise ValueError("process_group: this torch build has no torch.distributed")
    if not dist.is_initialized():
        raise ValueError("process_group: torch.distributed is not initialised; call "
                         "torch.distributed.init_process_group(...) on every rank before "
                         "building a ZeroRedundancyOptimizer")
    group = dist.group.WORLD if process_group is None else process_group
    try:
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        backend = str(dist.get_backend(group)).lower()
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ValueError(f"process_group: not a usable process group ({exc})") from None
    if rank < 0:
        raise ValueError("process_group: this process is not a member of the given group")
    return group, rank, world, backend


class ZeroRedundancyOptimizer(FlatOptimizer):
    r"""A ``fastadapt.torch`` optimizer whose state is sharded across ranks (ZeRO).

    The contract of ``torch.distributed.optim.ZeroRedundancyOptimizer``: every
    rank builds it over the same parameters, in the same order, and calls
    :meth:`step` together; each rank keeps the state of one contiguous shard
    of every flat buffer, updates that shard with the rule's fused kernel
    and all-gathers the parameters. See :mod:`fastadapt.zero` for the step's
    collectives and the layout.

    Parameters
    ----------
    params : iterable of tensors or of dicts (parameter groups)
        All on one device: the CPU (gloo) or this rank's GPU (NCCL, or gloo).
    optimizer_class : a ``fastadapt.torch`` optimizer class
        ``fastadapt.torch.Adam`` by default; its hyper-parameters, defaults
        and ``max_grad_norm`` are accepted as ``**defaults``.
    process_group : torch.distributed ProcessGroup, optional
        The ranks sharing the state (the default group when None); it must be
        initialised.
    reduce_gradients : bool
        False (with DDP, whose gradients are already averaged) or True:
        the step reduce-scatters the flat gradient buffer and divides by the
        world size, so a loop without DDP trains as with it (ZeRO-2).
    parameters_as_bucket_view : bool
        Accepted for torch's signature; the parameters are always views of
        the flat buffers here.
    overlap_with_ddp : bool
        Only False.
    **defaults
        The hyper-parameters of ``optimizer_class``.

    Every rank must give the same options, parameters (shapes, dtypes,
    order) and hyper-parameters: the construction checks it with one small
    all-reduce and raises ValueError on every rank naming what differs (the
    option, or the group and key) and leaves the parameters as they were.
    ``add_param_group`` and ``load_sharded`` check their groups the same way;
    the step does not (it gains no collective), so hyper-parameters changed
    between steps must change alike on every rank.

    Attributes
    ----------
    rank, world_size : this rank and the group's size
    local_state_bytes : bytes of optimizer state arrays held by this rank
    """

    _bucket_class = _ShardBucket

    def __init__(self, params, optimizer_class=None, process_group=None, reduce_gradients=False,
                 *, parameters_as_bucket_view=False, overlap_with_ddp=False, **defaults):
        try:
            group = _process_group(process_group)
        except ValueError:
            _checked_class(optimizer_class)     # a wrong class is named first
            raise
        self.process_group, self.rank, self.world_size, self._backend = group
        #: the process group's ranks as global ranks (collectives' src / dst)
        self._global_ranks = [
            r if self.process_group is dist.group.WORLD
            else dist.get_global_rank(self.process_group, r) for r in range(self.world_size)]
        self._device = None
        self._consolidated = None
        # add_param_group agrees across ranks, except on the groups given here
        self._constructing = True
        error, originals = None, []
        try:
            params = self._checked_devices(params)
            if isinstance(params, list):
                originals = _originals(params)
            self._build(params, optimizer_class, reduce_gradients, overlap_with_ddp, defaults)
        except Exception as exc:
            error = exc
        try:
            self._consensus("the construction", error,
                            None if error is not None else self._description())
        except BaseException:
            _restore(originals)
            raise
        finally:
            self._constructing = False
        if self.stochastic_rounding:
            # one stream for the whole model: rank 0's seed (drawn there when
            # none was given), so each rank rounds its shard as one process would
            seed = [self.seed]
            self._collective("the stochastic-rounding seed's broadcast",
                             dist.broadcast_object_list, seed, src=self._global_ranks[0])
            self.seed = seed[0]

    def _build(self, params, optimizer_class, reduce_gradients, overlap_with_ddp, defaults):
        """This rank's part of the construction (no collective)."""
        cls = _checked_class(optimizer_class)
        if not isinstance(reduce_gradients, bool):
            raise TypeError(f"reduce_gradients must be True or False, got {reduce_gradients!r}")
        if overlap_with_ddp:
            raise ValueError("overlap_with_ddp=True is not supported by fastadapt's "
                             "ZeroRedundancyOptimizer (its step runs after the backward)")
        self.optimizer_class = cls
        self.reduce_gradients = reduce_gradients
        #: gather the parameters by broadcasts (gloo) or one all_gather (others)
        self._gather_by_broadcast = self._backend == "gloo"
        self.rule, self._signature, self._extras = cls.rule, cls._signature, cls._extras
        bound = cls._signature.bind(self, params, **defaults)
        bound.apply_defaults()
        defaults = dict(bound.arguments)
        del defaults["self"], defaults["params"]
        FlatOptimizer.__init__(self, params, defaults)

    def _description(self, indices=None):
        """What must be the same on every rank, as ``{name: short text}``: the
        optimizer-wide options, the number of groups and, for each group of
        ``indices`` (every group when None), its parameters' layout and its
        hyper-parameters."""
        out = {}
        if indices is None:
            indices = range(len(self.param_groups))
            out.update({"optimizer_class": self.optimizer_class.__qualname__,
                        "reduce_gradients": repr(self.reduce_gradients),
                        "state_dtype": _shown(self.state_dtype if self.state_dtype is None
                                              or isinstance(self.state_dtype, str)
                                              else str(self.state_dtype)),
                        "min_8bit_size": repr(self.min_8bit_size),
                        "master_weights": repr(self.master_weights),
                        "stochastic_rounding": repr(self.stochastic_rounding),
                        "max_grad_norm": _shown(self.max_grad_norm)})
        out["the number of param groups"] = str(len(self.param_groups))
        for index in indices:
            out[f"param group {index}: parameters"] = _parameters_shown(self._buckets[index])
            out.update(_group_shown(index, self.param_groups[index]))
        return out

    def _consensus(self, what, error, description, kind=ValueError,
                   outcome="nothing was changed"):
        """Raise on every rank when ``error`` (an exception or None) is set on
        any rank, or when ``description`` (``{name: short text}``) differs
        between ranks: the rank with the error raises it, the others ``kind``
        naming that rank and its error, or naming what differs and each
        rank's value of it. One all-reduce (MAX) of a failure flag and a
        digest of ``description``; only when something is wrong, an
        ``all_gather_object`` of the errors and descriptions."""
        digest = bytes.fromhex(_digest(repr(sorted((description or {}).items()))))
        chunks = [float(int.from_bytes(digest[i:i + 6], "big")) for i in (0, 6, 12)]
        agreed = self._agree([float(error is not None)] + chunks + [-c for c in chunks],
                             f"{what}'s agreement")
        if not agreed[0] and agreed[1:4] == [-c for c in agreed[4:7]]:
            return
        mine = (None if error is None else f"{type(error).__name__}: {error}"[:600],
                description or {})
        everything = [None] * self.world_size
        self._collective(f"{what}'s exchange of errors", dist.all_gather_object,
                         everything, mine)
        if error is not None:
            raise error
        failed = [(r, e) for r, (e, _) in enumerate(everything) if e is not None]
        if failed:
            r, e = failed[0]
            raise kind(f"ZeroRedundancyOptimizer: {what} failed on rank {r} of "
                       f"{self.world_size} ({e}); every rank raises, and {outcome}")
        differ = []
        for key in dict.fromkeys(k for _, d in everything for k in d):
            ranks = {}              # value -> the ranks that gave it
            for r, (_, d) in enumerate(everything):
                ranks.setdefault(d.get(key, "<absent>"), []).append(r)
            if len(ranks) > 1:
                shown = "; ".join(f"{_ranks_shown(rs)}: {v}" for v, rs in ranks.items())
                differ.append(f"{key} ({shown})")
        raise kind(f"ZeroRedundancyOptimizer: {what}: every rank must give the same options, "
                   "parameters and hyper-parameters, but these differ across ranks: "
                   + "; ".join(differ[:4])
                   + (f"; and {len(differ) - 4} more" if len(differ) > 4 else "")
                   + f". Every rank raises, and {outcome}")

    def __getstate__(self):
        raise TypeError("a ZeroRedundancyOptimizer cannot be pickled or deep-copied: it "
                        "belongs to a process group, and each rank holds one shard of the "
                        "state. Save consolidate_state_dict() + state_dict() (the full "
                        "state, loadable at any world size) or save_sharded(directory)")

    def __repr__(self):
        return (f"ZeroRedundancyOptimizer({self.optimizer_class.__name__}, rank {self.rank} "
                f"of {self.world_size})")

    # ------------------------------------------------------------- layout
    def _checked_devices(self, params):
        """``params`` as a list (each group's parameters too), every parameter
        of every group checked for one device before any is packed."""
        if isinstance(params, torch.Tensor) or params is None:
            return params                   # torch.optim.Optimizer raises its TypeError
        groups = []
        for item in params:
            if isinstance(item, dict) and "params" in item and not isinstance(
                    item["params"], torch.Tensor):
                item = dict(item, params=list(item["params"]))
            groups.append(item)
        if groups and isinstance(groups[0], dict):
            for index, item in enumerate(groups):
                if isinstance(item, dict):
                    self._pack_devices(item.get("params", ()), index)
        else:
            self._pack_devices(groups, 0)
        return groups

    def _pack_devices(self, tensors, index):
        for i, p in enumerate(tensors if not isinstance(tensors, torch.Tensor) else [tensors]):
            device = p.device if isinstance(p, torch.Tensor) else None
            if device is None:
                continue
            if self._device is None:
                self._device = device
            elif device != self._device:
                raise ValueError(f"params: param group {index}, parameter {i} is on {device}, "
                                 f"an earlier one on {self._device}; ZeroRedundancyOptimizer "
                                 "needs every parameter on one device")
            if self._backend == "nccl" and device.type != "cuda":
                raise ValueError(f"params: param group {index}, parameter {i} is on {device}; "
                                 "the NCCL backend needs CUDA tensors (use gloo for the CPU)")
            if not p.is_floating_point() or p.element_size() < 2:
                raise TypeError(f"params: param group {index}, parameter {i} has dtype "
                                f"{p.dtype}; ZeroRedundancyOptimizer shards floating-point "
                                "parameters (float32, float64; bfloat16 and float16 on the "
                                "CPU)")

    def _pack(self, group, index):
        self._pack_devices(group["params"], index)
        return super()._pack(group, index)

    def add_param_group(self, param_group):
        """Add a parameter group (every rank, the same group): as
        ``fastadapt.torch``, after one small all-reduce that checks the new
        group's parameters and hyper-parameters agree across ranks (a
        ValueError on every rank names what differs, and the group is added
        nowhere)."""
        if self._constructing:
            return super().add_param_group(param_group)
        if isinstance(param_group, dict) and not isinstance(
                param_group.get("params"), (torch.Tensor, list, set, type(None))):
            param_group["params"] = list(param_group["params"])
        originals = _originals([param_group]) if isinstance(param_group, dict) else []
        count = len(self.param_groups)
        error = None
        try:
            super().add_param_group(param_group)
        except Exception as exc:
            error = exc
        added = len(self.param_groups) > count
        try:
            self._consensus("add_param_group", error,
                            self._description([count]) if added else None)
        except BaseException:
            if added:
                group = self.param_groups.pop()
                del self._buckets[count:], self._group_params[count:], self._validated[count:]
                for p in group["params"]:
                    self.state.pop(p, None)
            _restore(originals)
            raise

    @property
    def local_state_bytes(self):
        """Bytes of the optimizer state arrays this rank holds (its shards),
        the float32 master copy of 16-bit parameters included."""
        return sum(t.numel() * t.element_size() for buckets in self._buckets
                   for b in buckets for t in b.state_tensors())

    # ------------------------------------------------------------- collectives
    def _collective(self, what, fn, *args, **kwargs):
        try:
            return fn(*args, group=self.process_group, **kwargs)
        except Exception as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise CollectiveError(
                f"ZeroRedundancyOptimizer: {what} failed on rank {self.rank} of "
                f"{self.world_size} ({type(exc).__name__}: {detail[:300]}); another rank "
                "probably died or left the collective. The ranks' parameters and state may "
                "now differ: resume from the last complete checkpoint") from exc

    def _tensor(self, values):
        device = self._device if self._device is not None else torch.device("cpu")
        if self._backend == "nccl" and device.type != "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        return torch.tensor(values, dtype=torch.float64, device=device)

    def _agree(self, flags, what):
        """All ranks' ``flags`` (each 0 or 1 ...) combined by MAX."""
        t = self._tensor(flags)
        self._collective(what, dist.all_reduce, t, op=dist.ReduceOp.MAX)
        return t.tolist()

    # ------------------------------------------------------------- stepping
    def step(self, closure=None):
        """One update of every parameter that has a gradient, on every rank.

        As ``fastadapt.torch``'s step (GradScaler's ``grad_scale`` and
        ``found_inf``, ``max_grad_norm``, ``step_skipped``), with the
        decisions taken across ranks: the step is skipped on every rank when
        any rank's ``found_inf`` is set or the global gradient norm is not
        finite. Every rank must call it.
        """
        return super().step(closure)

    def _decide_skip(self, plans, has_found_inf, local_inf):
        if self.reduce_gradients:
            plans, skip = self._agree_on_gradients(plans, float(local_inf))
        elif has_found_inf:             # GradScaler on every rank: agree on its flag
            (skip,) = self._agree([float(local_inf)], "the found_inf all-reduce")
        else:
            return plans, local_inf
        if skip and has_found_inf and not local_inf:
            self._share_found_inf()
        return plans, bool(skip)

    def _share_found_inf(self):
        """Another rank found an inf: this rank's GradScaler must see it too,
        or its ``update()`` keeps the scale the others reduce, and the next
        reduced gradients mix scales. The agreed flag goes into the
        ``found_inf`` the step was given and into the scaler's own per-device
        flags (see :func:`_scaler_found_infs`); only on a skipped step."""
        with torch.no_grad():
            found_inf = getattr(self, "found_inf", None)
            if isinstance(found_inf, torch.Tensor):
                found_inf.fill_(1.0)
            for flag in _scaler_found_infs(self):
                flag.fill_(1.0)

    def _before_update(self, plans):
        if self.reduce_gradients:
            self._reduce_gradients(plans)

    def _after_update(self):
        for buckets in self._buckets:
            for b in buckets:
                self._gather_parameters(b)

    def _gather_parameters(self, b):
        """Every rank's updated shard into every rank's flat parameter buffer,
        in place: one ``all_gather`` (NCCL and other backends) or, on gloo, one
        broadcast per rank of its shard, all in flight at once. gloo's
        allgather moves the same bytes three times slower here (8.9M float32
        elements at 2 ranks on 2 cores: 36 ms against 12 ms for the two
        broadcasts), and torch's own ZeroRedundancyOptimizer broadcasts too."""
        if self._gather_by_broadcast:
            per = b.shard_length

            def broadcasts(group):
                works = [dist.broadcast(b.param_flat[r * per:(r + 1) * per], src=src,
                                        group=group, async_op=True)
                         for r, src in enumerate(self._global_ranks)]
                for work in works:
                    work.wait()
            self._collective("the parameters' all_gather (broadcasts)", broadcasts)
        else:
            s0, s1 = b.shard
            self._collective("the parameters' all_gather", _all_gather,
                             b.param_flat, b.param_flat[s0:s1])

    def _agree_on_gradients(self, plans, local_inf):
        """With ``reduce_gradients``: one all-reduce (MAX) of the found_inf
        flag and of which parameters have a gradient. A parameter steps when
        any rank has a gradient for it (the others count zeros, as DDP's
        unused parameters do); returns the plans with that presence and
        whether any rank found an inf."""
        flags = [local_inf]
        for _, _, bucket, scan in plans:
            present = scan[0]
            flags += [1.0] * len(bucket.params) if present is None else [float(x) for x in present]
        agreed = self._agree(flags, "the gradients' presence all-reduce")
        out, at = [], 1
        for group, options, bucket, (present, *rest) in plans:
            n = len(bucket.params)
            anywhere = [bool(x) for x in agreed[at:at + n]]
            at += n
            if present is not None:
                bucket.absent_here = [j for j in range(n) if anywhere[j] and not present[j]]
            else:
                bucket.absent_here = []
            out.append((group, options, bucket,
                        (None if all(anywhere) else anywhere, *rest)))
        return out, bool(agreed[0])

    def _reduce_gradients(self, plans):
        """Each rank's shard of the flat gradient buffers becomes the average
        of every rank's gradients (a sum, then a division by the world size,
        as DDP averages; a parameter without gradient on this rank adds zeros)."""
        for _, _, bucket, _ in plans:
            for j in bucket.absent_here:
                bucket.grad_views[j].zero_()
        for buckets in self._buckets:
            for b in buckets:
                s0, s1 = b.shard
                if b.reduced is None:       # allocated once, at the first such step
                    b.reduced = torch.empty(s1 - s0, dtype=b.dtype, device=b.device)
                out = b.reduced
                self._collective("the gradients' reduce_scatter", _reduce_scatter,
                                 out, b.grad_flat)
                torch.div(out, self.world_size, out=b.grad_flat[s0:s1])

    def _sum_over_processes(self, value):
        """``value`` all-reduced over the process group (the gradient norm's
        sum of squares: each rank's shard, so every rank clips alike)."""
        t = self._tensor([value])
        self._collective("the gradient norm's all-reduce", dist.all_reduce, t)
        return t.item()

    # ------------------------------------------------------------- full state dicts
    def consolidate_state_dict(self, to=0):
        """Gather the full state on rank ``to`` (of the process group); every
        rank must call it, with the same ``to``. :meth:`state_dict` on rank
        ``to`` then returns it. The master copy is first brought up to date
        with parameters written or replaced since the last step, as
        ``fastadapt.torch``'s ``state_dict`` does."""
        error = None
        try:
            if not (isinstance(to, int) and 0 <= to < self.world_size):
                raise ValueError(f"to must be a rank of the process group (0 .. "
                                 f"{self.world_size - 1}), got {to!r}")
            self._adopt_writes()
        except Exception as exc:
            error = exc
        self._consensus("consolidate_state_dict", error, {"to": repr(to)})
        dst = self._global_ranks[to]
        receive = self.rank == to
        full, master = {}, {}           # per bucket: the whole state arrays, master copy
        for buckets in self._buckets:
            for b in buckets:
                arrays = full[b] = {}
                for name, local in b.local_arrays().items():
                    parts = [torch.empty_like(local) for _ in range(self.world_size)] \
                        if receive else None
                    self._collective(f"consolidate_state_dict's gather of {name}", dist.gather,
                                     local, parts, dst=dst)
                    if receive:
                        arrays[name] = torch.cat(parts)
                master[b] = None
                if b.master_flat is not None:
                    parts = [torch.empty_like(b.master_flat) for _ in range(self.world_size)] \
                        if receive else None
                    self._collective("consolidate_state_dict's gather of the master copy",
                                     dist.gather, b.master_flat, parts, dst=dst)
                    master[b] = torch.cat(parts) if receive else None
        self._consolidated = None if not receive else self._packed_state(
            lambda b, j: {k: v for name in b.state_flat for k, v in _entries(
                b, name, full[b], b.offsets[j], b.sizes[j], b.shapes[j]).items()},
            lambda b, j: None if master[b] is None else
            master[b][b.offsets[j]:b.offsets[j] + b.sizes[j]].view(b.shapes[j]))

    def state_dict(self):
        """The full state in torch's format, as last consolidated on this rank.

        Raises RuntimeError unless :meth:`consolidate_state_dict` was called
        (on every rank) with ``to`` this rank; the result is a snapshot of that
        moment, loadable into ``optimizer_class`` (one process) or
        ``torch.optim`` of the same algorithm, or into this class with any
        world size.
        """
        if self._consolidated is None:
            raise RuntimeError("Optimizer state has not been consolidated on this rank. "
                               f"Please call `consolidate_state_dict(to={self.rank})` on all "
                               "ranks beforehand if you meant to save the global state.")
        state_dict = self._consolidated
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        for hook in self._optimizer_state_dict_post_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    # ------------------------------------------------------------- sharded checkpoints
    def _shard_name(self, token, rank, world):
        return f"shard-{token}-{rank:05d}-of-{world:05d}.pt"

    def _layout(self):
        return [b.describe() for buckets in self._buckets for b in buckets]

    def save_sharded(self, directory):
        """Write this rank's shard of the state to ``directory`` (every rank
        calls it; a directory every rank can reach).

        Each rank's file is written atomically; rank 0 then writes
        ``manifest.pt``, which names the new files, only once every rank's
        file is complete, and removes the files of earlier saves. Until then
        the previous complete checkpoint in ``directory`` stays loadable; a
        rank that fails makes every rank raise. The master copy is first
        brought up to date as in :meth:`consolidate_state_dict`.
        """
        error = None
        try:
            directory = os.fspath(directory)
            self._adopt_writes()
            if self.rank == 0:
                os.makedirs(directory, exist_ok=True)
        except Exception as exc:
            error = exc
        # (also the barrier: rank 0 has made the directory)
        self._consensus("save_sharded", error, None, kind=RuntimeError,
                        outcome=f"the checkpoint in {directory!r} was not updated")
        token = [secrets.token_hex(6) if self.rank == 0 else None]
        self._collective("save_sharded's broadcast", dist.broadcast_object_list, token,
                         src=self._global_ranks[0])
        token = token[0]
        shard = {"format": SHARDED_FORMAT, "token": token, "rank": self.rank,
                 "world_size": self.world_size, "seed": self.seed,
                 "param_groups": [{k: v for k, v in g.items() if k != "params"}
                                  for g in self.param_groups],
                 "buckets": [{"shard": list(b.shard),
                              "state": {k: v.cpu() for k, v in b.local_arrays().items()},
                              "master": None if b.master_flat is None else b.master_flat.cpu(),
                              "steps": b.steps.clone(),
                              "scalars": {k: v.clone() for k, v in b.scalars.items()},
                              "published": list(b.published)}
                             for buckets in self._buckets for b in buckets]}
        error = None
        try:
            path = os.path.join(directory, self._shard_name(token, self.rank, self.world_size))
            atomic_write(path, lambda f: torch.save(shard, f))
        except Exception as exc:
            error = exc
        self._consensus("save_sharded", error, None, kind=RuntimeError,
                        outcome=f"the checkpoint in {directory!r} was not updated")
        error = None
        if self.rank == 0:
            manifest = {"format": SHARDED_FORMAT, "kind": KIND,
                        "rule": self.rule.name, "token": token,
                        "world_size": self.world_size, "layout": self._layout()}
            try:
                atomic_write(os.path.join(directory, MANIFEST),
                             lambda f: torch.save(manifest, f))
            except Exception as exc:
                error = exc
            else:
                keep = {self._shard_name(token, r, self.world_size)
                        for r in range(self.world_size)}
                try:
                    names = os.listdir(directory)
                except OSError:         # the checkpoint is complete; the old files stay
                    names = []
                for name in names:
                    if name.startswith("shard-") and name.endswith(".pt") and name not in keep:
                        try:
                            os.unlink(os.path.join(directory, name))
                        except OSError:
                            pass
        # (also the final barrier: no rank returns before the manifest is written)
        self._consensus("save_sharded's manifest", error, None, kind=RuntimeError,
                        outcome=f"the checkpoint in {directory!r} was not updated")

    def load_sharded(self, directory):
        """Load a checkpoint of :meth:`save_sharded` (every rank calls it, on
        the same checkpoint), saved with this or another world size: each
        rank reads the old shards that overlap its own.

        Everything is checked on every rank before anything is written, and
        the files are read with ``torch.load(weights_only=True)`` (tensors and
        plain containers only): a missing, damaged or hostile file, a
        checkpoint of other parameters, rule or state storage, or ranks that
        read checkpoints with other hyper-parameters make every rank raise
        (the rank that met the problem its ``ValueError``, or ``OSError`` for
        a missing file; the others a ``ValueError`` naming that rank and its
        error) and change nothing. The loaded hyper-parameters are checked to
        agree across ranks, as at construction.
        """
        error, plan, description = None, None, None
        try:
            plan = self._read_sharded(os.fspath(directory))
        except (ValueError, TypeError, OSError) as exc:
            error = exc
        except Exception as exc:        # a structure no check foresaw: refused all the same
            error = ValueError(f"cannot load the sharded checkpoint in {directory!r}: "
                               f"{type(exc).__name__}: {str(exc)[:300]}")
        else:
            description = {"the checkpoint's token": plan[-1]}
            for index, group in enumerate(plan[0]):
                description.update(_group_shown(index, group))
        self._consensus("load_sharded", error, description)
        self._apply_sharded(*plan[:-1])

    def _read_sharded(self, directory):
        """``(groups, pieces, meta, seed, token)`` of the checkpoint in
        ``directory``, every field the load uses checked for type and range."""
        where = f"sharded checkpoint {directory!r}"
        manifest = _read_file(os.path.join(directory, MANIFEST), where)
        if not (isinstance(manifest, dict) and manifest.get("format") == SHARDED_FORMAT
                and manifest.get("kind") == KIND):
            raise ValueError(f"{where}: {MANIFEST} is not a fastadapt sharded checkpoint")
        if manifest.get("rule") != self.rule.name:
            raise ValueError(f"{where} holds {_shown(manifest.get('rule'))} state; this "
                             f"optimizer runs {self.rule.name}")
        at = f"{where}: {MANIFEST}"
        token, old_world = manifest.get("token"), manifest.get("world_size")
        if not (isinstance(token, str) and _TOKEN.fullmatch(token)):
            raise ValueError(f"{at}: token must be a string of hex digits, got {_shown(token)}")
        if not (type(old_world) is int and old_world >= 1):
            raise ValueError(f"{at}: world_size must be an int >= 1, got {_shown(old_world)}")
        buckets = [b for bs in self._buckets for b in bs]
        old_layout = manifest.get("layout")
        if not (isinstance(old_layout, list) and all(isinstance(o, dict) for o in old_layout)):
            raise ValueError(f"{at}: layout must be a list of dicts")
        keys = ("group", "indices", "sizes", "dtype")
        if len(old_layout) != len(buckets) or any(
                o.get(k) != n[k] for o, n in zip(old_layout, self._layout()) for k in keys):
            raise ValueError(f"{where} was saved for other parameters (groups, shapes or "
                             "dtypes differ, or min_8bit_size: it buckets them)")
        for bi, (b, old) in enumerate(zip(buckets, old_layout)):
            per, length = old.get("shard_length"), old.get("length")
            used = b.offsets[-1] + b.sizes[-1]
            if not (type(per) is int and per >= 1):
                raise ValueError(f"{at}: layout[{bi}]: shard_length must be an int >= 1, got "
                                 f"{_shown(per)}")
            if "state" in old:       # (8-bit state lays the parameters out otherwise)
                self._check_storage(b, old["state"] if old["state"] in EIGHT_BIT else None,
                                    _shown(old["state"]), where)
            if not (type(length) is int and length == per * old_world and length >= used):
                raise ValueError(f"{at}: layout[{bi}]: length must be shard_length x "
                                 f"world_size ({per} x {old_world}) and hold the parameters' "
                                 f"{used} elements, got {_shown(length)}")
            if b.eight_bit and per % b.unit:
                raise ValueError(f"{at}: layout[{bi}]: shard_length {per} is not whole "
                                 f"8-bit blocks ({b.unit} elements)")
        files = {}

        def shard(rank):
            if rank not in files:
                name = self._shard_name(token, rank, old_world)
                files[rank] = self._checked_shard(
                    _read_file(os.path.join(directory, name), where), f"{where}: {name}",
                    token, rank, old_world, old_layout, buckets)
            return files[rank]

        pieces = []     # per bucket: [(state name, src tensor, local offset)]
        for bi, (b, old) in enumerate(zip(buckets, old_layout)):
            per = old["shard_length"]
            s0, s1 = b.shard
            s1 = min(s1, b.offsets[-1] + b.sizes[-1])
            todo = []
            first = s0 // per
            last = max(first, (max(s1, s0 + 1) - 1) // per)
            for r in range(first, min(last, old_world - 1) + 1):
                data = shard(r)["buckets"][bi]
                o0, o1 = data["shard"]
                a, c = max(s0, o0), min(s1, o1)
                if a >= c:
                    continue
                arrays = dict(data["state"])
                if b.master_flat is not None:
                    if data["master"] is None:
                        raise ValueError(f"{where} was saved without master_weights")
                    arrays[MASTER_KEY] = data["master"]
                for name, src in arrays.items():
                    # 8-bit state's scales: one per block (a, o0 start blocks)
                    unit = b.unit if name.endswith(f".{b.scale_key}") else 1
                    todo.append((name, src[(a - o0) // unit:-(-(c - o0) // unit)],
                                 (a - b.shard[0]) // unit))
            pieces.append(todo)
        head = shard(0)
        groups = head.get("param_groups")
        if not (isinstance(groups, list) and all(
                isinstance(g, dict) and all(isinstance(k, str) for k in g) for g in groups)):
            raise ValueError(f"{where}: param_groups must be a list of dicts")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{where} has {len(groups)} parameter groups, this optimizer "
                             f"{len(self.param_groups)}")
        seed = head.get("seed")
        if seed is not None:
            try:
                seed = _args.seed(seed)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where}: {exc}") from None
        new_groups = []
        for index, (group, saved) in enumerate(zip(self.param_groups, groups)):
            new = dict(saved)
            for flag in ("foreach", "fused", "capturable", "differentiable"):
                if flag in group:
                    new[flag] = group[flag]
            new["params"] = group["params"]
            try:
                self._check_options(new, index)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where}: {exc}") from None
            new_groups.append(new)
        meta = []
        for bi, b in enumerate(buckets):
            data = head["buckets"][bi]
            needed = self.rule.state_for(**self._rule_options(new_groups[b.group_index]))
            have = {key.split(".")[0] for key in data["state"]}
            if bool((data["steps"] > 0).any()) and not set(needed) <= have:
                raise ValueError(f"{where} lacks state {sorted(set(needed) - have)}")
            meta.append(data)
        return new_groups, pieces, meta, seed, token

    def _check_storage(self, b, saved_format, saved, where):
        """8-bit state of one format (``saved_format``: ``"int8"``, ``"int8c"``,
        None for full precision) loads from shards into that format only
        (their layouts differ): ValueError naming both."""
        if saved_format != (b.state_dtype if b.eight_bit else None):
            raise ValueError(
                f"{where} holds {saved} state for param group {b.group_index} "
                f"({str(b.dtype).replace('torch.', '')} parameters), this optimizer keeps "
                f"{_storage_name(b.state_dtype)!r} state (state_dtype="
                f"{_shown(self.state_dtype)}): 8-bit and full-precision state (and the "
                "two 8-bit formats) do not load into each other from shards. Build the "
                "optimizer with the checkpoint's state_dtype, or convert through "
                "consolidate_state_dict() and load_state_dict()")

    def _checked_shard(self, data, at, token, rank, world, layout, buckets):
        """A shard file's contents after checking every field the load uses
        (state arrays flattened)."""
        if not (isinstance(data, dict) and data.get("token") == token
                and data.get("rank") == rank and data.get("world_size") == world):
            raise ValueError(f"{at} does not belong to its manifest")
        saved = data.get("buckets")
        if not (isinstance(saved, list) and len(saved) == len(buckets)
                and all(isinstance(d, dict) for d in saved)):
            raise ValueError(f"{at}: buckets must be a list of {len(buckets)} dicts")
        names = set(self.rule.state)
        for bi, (b, old, d) in enumerate(zip(buckets, layout, saved)):
            here, per, n = f"{at}: bucket {bi}", old["shard_length"], len(b.params)
            if d.get("shard") != [rank * per, (rank + 1) * per]:
                raise ValueError(f"{here}: shard must be [{rank * per}, {(rank + 1) * per}], "
                                 f"got {_shown(d.get('shard'))}")
            state = d.get("state")
            if not (isinstance(state, dict) and all(
                    isinstance(k, str) and isinstance(v, torch.Tensor)
                    and v.layout == torch.strided for k, v in state.items())):
                raise ValueError(f"{here}: state must be a dict of dense tensors")
            by_part = {f[2]: name for name, f in EIGHT_BIT.items()}
            parts = {k: k.rpartition(".") if k.endswith((".codes", *(f".{p}" for p in by_part)))
                     else (k, "", "") for k in state}
            if state:
                saved = {by_part[p[2]] for p in parts.values() if p[2] in by_part}
                fmt = saved.pop() if len(saved) == 1 else None
                self._check_storage(b, fmt, repr(fmt) if fmt else repr(_storage_name(
                    next(iter(state.values())).dtype)), at)
            scale_key = b.scale_key
            for k, v in state.items():
                base, _, part = parts[k]
                if base not in names:
                    raise ValueError(f"{here}: unknown state {k!r} (the rule's: {sorted(names)})")
                if part not in ("", "codes", scale_key):
                    raise ValueError(f"{here}: state {k!r} is not of this optimizer's 8-bit "
                                     f"format ({b.state_dtype!r})")
                if part and f"{base}.{scale_key if part == 'codes' else 'codes'}" not in state:
                    raise ValueError(f"{here}: {base}.codes and {base}.{scale_key} go together")
                kind, ok = {"codes": ("uint8", v.dtype == torch.uint8),
                            scale_key: ("float32", v.dtype == torch.float32),
                            "": ("floating-point", v.is_floating_point())}[part]
                size = per // b.unit if part == scale_key else per
                if not ok or v.numel() != size:
                    raise ValueError(f"{here}: state {k} must be {size} {kind} values (its "
                                     f"shard's), got {v.numel()} {v.dtype}")
                # (a negative absmax marks a block holding a non-finite value;
                # a companded scale is a magnitude, >= 0)
                if part == scale_key:
                    problem = EIGHT_BIT[b.state_dtype][3](v.numpy())
                    if problem:
                        raise ValueError(f"{here}: state {k} {problem}")
                state[k] = v.reshape(-1)
            master = d.get("master")
            if master is not None and not (isinstance(master, torch.Tensor)
                                           and master.is_floating_point()
                                           and master.numel() == per):
                raise ValueError(f"{here}: master must be None or {per} floating-point values")
            d["master"] = None if master is None else master.reshape(-1)
            steps = d.get("steps")
            if not (isinstance(steps, torch.Tensor) and steps.numel() == n
                    and not steps.is_complex()):
                raise ValueError(f"{here}: steps must be a tensor of {n} step counts")
            counts = steps.double().reshape(-1)
            whole = torch.isfinite(counts) & (counts >= 0) & (counts == counts.round())
            if not bool(whole.all()):
                raise ValueError(f"{here}: steps must be whole numbers >= 0")
            d["steps"] = counts
            scalars = d.get("scalars")
            if not (isinstance(scalars, dict) and set(scalars) == set(b.scalars) and all(
                    isinstance(v, torch.Tensor) and v.numel() == n and v.is_floating_point()
                    and bool(torch.isfinite(v).all()) for v in scalars.values())):
                raise ValueError(f"{here}: scalars must hold {sorted(b.scalars)}, {n} finite "
                                 "values each")
            published = d.get("published")
            if not (isinstance(published, list) and len(published) == n
                    and all(isinstance(x, bool) for x in published)):
                raise ValueError(f"{here}: published must be a list of {n} bools")
        return data

    def _apply_sharded(self, new_groups, pieces, meta, seed):
        buckets = [b for bs in self._buckets for b in bs]
        if self.stochastic_rounding and seed is not None:    # else: keep this one's
            self.seed = int(seed)
        for group, new in zip(self.param_groups, new_groups):
            group.clear()
            group.update(new)
        self._validated = [None] * len(self.param_groups)
        with torch.no_grad():
            for b, todo, data in zip(buckets, pieces, meta):
                group = self.param_groups[b.group_index]
                b.ensure_state([key.split(".")[0] for key in data["state"]] + list(
                    self.rule.state_for(**self._rule_options(group))), group)
                for name in b.state_flat:
                    b.reset(0, len(b.params) - 1, group, names=(name,))
                arrays = b.local_arrays()
                for name, src, at in todo:
                    target = b.master_flat if name == MASTER_KEY else arrays[name]
                    target[at:at + src.numel()].copy_(src)
                b.steps.copy_(data["steps"].to(b.steps.dtype))
                for name, values in data["scalars"].items():
                    b.scalars[name].copy_(values.reshape(-1))
                for j, published in enumerate(data["published"]):
                    self.state.pop(b.params[j], None)
                    b.published[j] = False
                    if published:
                        b.publish(j)
                b.update_uniform()
