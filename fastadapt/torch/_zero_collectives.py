"""How the ranks of a ZeroRedundancyOptimizer share the work: each rank's
shard of every flat buffer (:class:`Shards`) and the collectives over the
process group (:class:`ProcessGroupAgreement`), which a step and every
operation that must agree across ranks go through."""
import hashlib
import sys
import weakref

import torch
import torch.distributed as dist

from ._conventions import _plain
from ._sharing import Span

_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


class CollectiveError(RuntimeError):
    """A collective of :class:`ZeroRedundancyOptimizer` failed: another rank
    died or left the step. The ranks' parameters may now differ; resume from
    the last complete checkpoint."""


class Shards:
    """Rank ``rank``'s shard of each flat buffer, padded so the buffer splits
    into ``world`` equal shards of whole units (cache lines, or 8-bit state's
    blocks)."""

    def __init__(self, rank, world):
        self.rank, self.world = rank, world

    def span(self, used, align):
        per = max(1, -(-used // (self.world * align))) * align
        return Span(self.rank * per, (self.rank + 1) * per, per * self.world, False)


class ProcessGroupAgreement:
    """The ranks of ``process_group`` agree through collectives: on whether
    a step is skipped and which parameters step, on the gradients
    (``reduce_gradients``: reduce-scattered and averaged), on the gradient
    norm, and on the parameters (gathered after each update); and, outside
    the step, on what every rank must hold alike (:meth:`consensus`)."""

    def __init__(self, process_group):
        self.group, self.rank, self.world_size, self.backend = _process_group(process_group)
        #: the process group's ranks as global ranks (collectives' src / dst)
        self.global_ranks = [
            r if self.group is dist.group.WORLD else dist.get_global_rank(self.group, r)
            for r in range(self.world_size)]
        #: the parameters' device (set as they are packed): the collectives' tensors' too
        self.device = None
        self.reduce_gradients = False
        #: gather the parameters by broadcasts (gloo) or one all_gather (others)
        self.gather_by_broadcast = self.backend == "gloo"
        self._reduced = weakref.WeakKeyDictionary()   # bucket -> reduce-scatter output
        self._absent = {}           # bucket -> parameters with a gradient elsewhere only

    # ------------------------------------------------------------- collectives
    def collective(self, what, fn, *args, **kwargs):
        """``fn(*args, group=..., **kwargs)``; a failure raises CollectiveError
        naming ``what``."""
        try:
            return fn(*args, group=self.group, **kwargs)
        except Exception as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise CollectiveError(
                f"ZeroRedundancyOptimizer: {what} failed on rank {self.rank} of "
                f"{self.world_size} ({type(exc).__name__}: {detail[:300]}); another rank "
                "probably died or left the collective. The ranks' parameters and state may "
                "now differ: resume from the last complete checkpoint") from exc

    def _tensor(self, values):
        device = self.device if self.device is not None else torch.device("cpu")
        if self.backend == "nccl" and device.type != "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        return torch.tensor(values, dtype=torch.float64, device=device)

    def agree(self, flags, what):
        """All ranks' ``flags`` (each 0 or 1 ...) combined by MAX."""
        t = self._tensor(flags)
        self.collective(what, dist.all_reduce, t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def consensus(self, what, error, description, kind=ValueError,
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
        agreed = self.agree([float(error is not None)] + chunks + [-c for c in chunks],
                             f"{what}'s agreement")
        if not agreed[0] and agreed[1:4] == [-c for c in agreed[4:7]]:
            return
        mine = (None if error is None else f"{type(error).__name__}: {error}"[:600],
                description or {})
        everything = [None] * self.world_size
        self.collective(f"{what}'s exchange of errors", dist.all_gather_object,
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

    # ------------------------------------------------------------- the step
    def decide_skip(self, optimizer, plans, has_found_inf, local_inf):
        """``(plans, skip)`` agreed by every rank: with ``reduce_gradients``,
        which parameters step and whether any rank found an inf (one
        all-reduce); else GradScaler's flag when it set one."""
        if self.reduce_gradients:
            plans, skip = self._agree_on_gradients(plans, float(local_inf))
        elif has_found_inf:             # GradScaler on every rank: agree on its flag
            (skip,) = self.agree([float(local_inf)], "the found_inf all-reduce")
        else:
            return plans, local_inf
        if skip and has_found_inf and not local_inf:
            _share_found_inf(optimizer)
        return plans, bool(skip)

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
        agreed = self.agree(flags, "the gradients' presence all-reduce")
        out, at = [], 1
        self._absent = {}
        for group, options, bucket, (present, *rest) in plans:
            n = len(bucket.params)
            anywhere = [bool(x) for x in agreed[at:at + n]]
            at += n
            self._absent[bucket] = ([] if present is None else
                                    [j for j in range(n) if anywhere[j] and not present[j]])
            out.append((group, options, bucket,
                        (None if all(anywhere) else anywhere, *rest)))
        return out, bool(agreed[0])

    def gradients_ready(self, plans):
        """With ``reduce_gradients``: each rank's shard of the flat gradient
        buffers becomes the average of every rank's gradients (a sum, then a
        division by the world size, as DDP averages; a parameter without
        gradient on this rank adds zeros)."""
        if not self.reduce_gradients:
            return
        for _, _, bucket, _ in plans:
            for j in self._absent.get(bucket, ()):
                bucket.grad_views[j].zero_()
        self._absent = {}
        for _, _, b, _ in plans:
            s0, s1 = b.span.start, b.span.stop
            out = self._reduced.get(b)
            if out is None:             # allocated once, at the first such step
                out = self._reduced[b] = torch.empty(s1 - s0, dtype=b.dtype, device=b.device)
            self.collective("the gradients' reduce_scatter", _reduce_scatter, out, b.grad_flat)
            torch.div(out, self.world_size, out=b.grad_flat[s0:s1])

    def total(self, value):
        """``value`` all-reduced over the process group (the gradient norm's
        sum of squares: each rank's shard, so every rank clips alike)."""
        t = self._tensor([value])
        self.collective("the gradient norm's all-reduce", dist.all_reduce, t)
        return t.item()

    def updated(self, plans):
        """Every rank's updated shard into every rank's flat parameter buffer,
        in place: one ``all_gather`` (NCCL and other backends) or, on gloo, one
        broadcast per rank of its shard, all in flight at once. gloo's
        allgather moves the same bytes three times slower here (8.9M float32
        elements at 2 ranks on 2 cores: 36 ms against 12 ms for the two
        broadcasts), and torch's own ZeroRedundancyOptimizer broadcasts too."""
        for _, _, b, _ in plans:
            if self.gather_by_broadcast:
                per = b.span.size

                def broadcasts(group, b=b, per=per):
                    works = [dist.broadcast(b.param_flat[r * per:(r + 1) * per], src=src,
                                            group=group, async_op=True)
                             for r, src in enumerate(self.global_ranks)]
                    for work in works:
                        work.wait()
                self.collective("the parameters' all_gather (broadcasts)", broadcasts)
            else:
                self.collective("the parameters' all_gather", _all_gather,
                                b.param_flat, b.param_flat[b.span.start:b.span.stop])


def _share_found_inf(optimizer):
    """Another rank found an inf: this rank's GradScaler must see it too, or
    its ``update()`` keeps the scale the others reduce, and the next reduced
    gradients mix scales. The agreed flag goes into the ``found_inf`` the
    step was given and into the scaler's own per-device flags (see
    :func:`_scaler_found_infs`); only on a skipped step."""
    with torch.no_grad():
        found_inf = getattr(optimizer, "found_inf", None)
        if isinstance(found_inf, torch.Tensor):
            found_inf.fill_(1.0)
        for flag in _scaler_found_infs(optimizer):
            flag.fill_(1.0)


def describe(b):
    """The layout of bucket ``b`` that ranks compare and a sharded checkpoint
    records, to check it on load."""
    return {"group": b.group_index, "indices": list(b.indices),
            "sizes": list(b.sizes), "dtype": str(b.dtype).replace("torch.", ""),
            "state": _storage_name(b.state_dtype),
            "length": b.length, "shard_length": b.span.size}


def local_arrays(b):
    """``{key: tensor}`` of bucket ``b``'s state in this rank's span, as
    collectives and files move it: ``name`` (or ``name.codes`` and
    ``name.absmax`` / ``name.scale`` for 8-bit state)."""
    if b.eight_bit:
        return {f"{name}.{part}": t for name, pair in b.block_tensors.items()
                for part, t in zip(("codes", b.scale_key), pair)}
    return dict(b.state_flat)


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
    layout = _digest(repr([describe(b) for b in buckets]))[:12]
    return f"{n} tensors, {elements} elements, {dtypes or 'no dtype'} (layout {layout})"


def _group_shown(index, group):
    """``{"param group i: key": text}`` of a group's hyper-parameters."""
    return {f"param group {index}: {key}": _shown(value)
            for key, value in group.items() if key != "params"}


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


