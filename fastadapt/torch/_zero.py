"""ZeroRedundancyOptimizer: a fastadapt.torch optimizer whose core updates one
rank's shard of each flat buffer and agrees with the other ranks through the
process group (see :mod:`fastadapt.zero` for the design)."""
import torch
import torch.distributed as dist

from ._adafactor import Adafactor
from ._classes import CLASSES
from ._optimizer import FlatOptimizer
from ._zero_checkpoint import ShardedCheckpoint
from ._zero_collectives import (ProcessGroupAgreement, Shards, _group_shown, _parameters_shown,
                                _shown, local_arrays)


def _entries(b, name, full, j, compressed):
    """Parameter ``j``'s entries of state ``name`` from the consolidated
    ``full`` arrays, as ``fastadapt.torch``'s state dict has them (8-bit
    state: the codes, the blocks' absmax or groups' scale and, unless
    ``compressed``, the dequantized values under torch's name)."""
    if not b.eight_bit:
        o, n = b.offsets[j], b.sizes[j]
        return {b.owner._torch_names.get(name, name): full[name][o:o + n].view(b.shapes[j])}
    return b.block_entries(name, full[f"{name}.codes"], full[f"{name}.{b.scale_key}"], j,
                           values=True, compressed=compressed)


# ----------------------------------------------------------------- the optimizer
def _checked_class(optimizer_class):
    if optimizer_class is None:
        return CLASSES["Adam"]
    if optimizer_class is Adafactor:
        raise TypeError("ZeroRedundancyOptimizer shards flat buffers of elementwise rules; "
                        "Adafactor's factored state and per-tensor reductions do not split "
                        "into shards")
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, FlatOptimizer)
            and optimizer_class.rule is not None
            and not issubclass(optimizer_class, ZeroRedundancyOptimizer)):
        what = (f"{optimizer_class.__module__}.{optimizer_class.__qualname__}"
                if isinstance(optimizer_class, type) else repr(optimizer_class))
        raise TypeError(f"optimizer_class must be a fastadapt.torch optimizer class "
                        f"(fastadapt.torch.Adam, AdamW, SGD, ...), got {what}")
    return optimizer_class


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


class ZeroRedundancyOptimizer(ShardedCheckpoint, FlatOptimizer):
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

    def __init__(self, params, optimizer_class=None, process_group=None, reduce_gradients=False,
                 *, parameters_as_bucket_view=False, overlap_with_ddp=False, **defaults):
        try:
            agreement = ProcessGroupAgreement(process_group)
        except ValueError:
            _checked_class(optimizer_class)     # a wrong class is named first
            raise
        self._agreement = agreement
        self.process_group, self.rank, self.world_size = (
            agreement.group, agreement.rank, agreement.world_size)
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
            agreement.consensus("the construction", error,
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
            agreement.collective("the stochastic-rounding seed's broadcast",
                                 dist.broadcast_object_list, seed, src=agreement.global_ranks[0])
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
        self._agreement.reduce_gradients = reduce_gradients
        self.rule, self._signature, self._extras = cls.rule, cls._signature, cls._extras
        bound = cls._signature.bind(self, params, **defaults)
        bound.apply_defaults()
        defaults = dict(bound.arguments)
        del defaults["self"], defaults["params"]
        FlatOptimizer.__init__(self, params, defaults, Shards(self.rank, self.world_size),
                               self._agreement)

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
            first = self._agreement.device
            if first is None:
                self._agreement.device = device
            elif device != first:
                raise ValueError(f"params: param group {index}, parameter {i} is on {device}, "
                                 f"an earlier one on {first}; ZeroRedundancyOptimizer "
                                 "needs every parameter on one device")
            if self._agreement.backend == "nccl" and device.type != "cuda":
                raise ValueError(f"params: param group {index}, parameter {i} is on {device}; "
                                 "the NCCL backend needs CUDA tensors (use gloo for the CPU)")
            if not p.is_floating_point() or p.element_size() < 2:
                raise TypeError(f"params: param group {index}, parameter {i} has dtype "
                                f"{p.dtype}; ZeroRedundancyOptimizer shards floating-point "
                                "parameters (float32, float64; bfloat16 and float16 on the "
                                "CPU)")

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
            if isinstance(param_group, dict):
                self._pack_devices(param_group.get("params", ()), count)
            super().add_param_group(param_group)
        except Exception as exc:
            error = exc
        added = len(self.param_groups) > count
        try:
            self._agreement.consensus("add_param_group", error,
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
    def reduce_gradients(self):
        """Whether the step reduce-scatters and averages the gradients (ZeRO-2)."""
        return self._agreement.reduce_gradients

    @reduce_gradients.setter
    def reduce_gradients(self, value):
        self._agreement.reduce_gradients = value

    @property
    def local_state_bytes(self):
        """Bytes of the optimizer state arrays this rank holds (its shards),
        the float32 master copy of 16-bit parameters included."""
        return sum(t.numel() * t.element_size() for buckets in self._buckets
                   for b in buckets for t in b.state_tensors())

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

    # ------------------------------------------------------------- full state dicts
    def consolidate_state_dict(self, to=0):
        """Gather the full state on rank ``to`` (of the process group); every
        rank must call it, with the same ``to``. :meth:`state_dict` on rank
        ``to`` then returns it. The master copy is first brought up to date
        with parameters written or replaced since the last step, as
        ``fastadapt.torch``'s ``state_dict`` does. The state is packed as
        :attr:`compressed_state_dict` says at this call."""
        error = None
        try:
            if not (isinstance(to, int) and 0 <= to < self.world_size):
                raise ValueError(f"to must be a rank of the process group (0 .. "
                                 f"{self.world_size - 1}), got {to!r}")
            self._adopt_writes()
        except Exception as exc:
            error = exc
        agreement = self._agreement
        agreement.consensus("consolidate_state_dict", error, {"to": repr(to)})
        dst = agreement.global_ranks[to]
        receive = self.rank == to
        full, master = {}, {}           # per bucket: the whole state arrays, master copy
        for buckets in self._buckets:
            for b in buckets:
                arrays = full[b] = {}
                for name, local in local_arrays(b).items():
                    parts = [torch.empty_like(local) for _ in range(self.world_size)] \
                        if receive else None
                    agreement.collective(f"consolidate_state_dict's gather of {name}",
                                         dist.gather, local, parts, dst=dst)
                    if receive:
                        arrays[name] = torch.cat(parts)
                master[b] = None
                if b.master_flat is not None:
                    # (a split master's correction travels as its bytes: gloo
                    # gathers no int16)
                    local = b.master_flat.view(torch.uint8) if b.split else b.master_flat
                    parts = [torch.empty_like(local) for _ in range(self.world_size)] \
                        if receive else None
                    agreement.collective("consolidate_state_dict's gather of the master copy",
                                         dist.gather, local, parts, dst=dst)
                    master[b] = (torch.cat(parts).view(b.master_flat.dtype) if receive
                                 else None)
        compressed = self.compressed_state_dict
        self._consolidated = None if not receive else self._packed_state(
            lambda b, j: {k: v for name in b.state_flat for k, v in _entries(
                b, name, full[b], j, compressed).items()},
            lambda b, j: None if master[b] is None else
            master[b][b.offsets[j]:b.offsets[j] + b.sizes[j]].view(b.shapes[j]),
            compressed)

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

