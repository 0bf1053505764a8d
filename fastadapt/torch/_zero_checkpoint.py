"""Sharded checkpoints of a ZeroRedundancyOptimizer: each rank writes its
shard of the state to a file of its own, then rank 0 a manifest; a load reads
the old shards that overlap each rank's new one, at any world size."""
import os
import re
import secrets

import torch
import torch.distributed as dist

from .. import _args
from ..checkpoint import atomic_write
from ._conventions import EIGHT_BIT, MASTER_KEY
from ._zero_collectives import _group_shown, _shown, _storage_name, describe, local_arrays

SHARDED_FORMAT = 1
MANIFEST = "manifest.pt"
KIND = "fastadapt.ZeroRedundancyOptimizer"
_TOKEN = re.compile(r"[0-9a-f]{1,64}")


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


#CLASS
class ShardedCheckpoint:
    """``save_sharded`` and ``load_sharded`` of :class:`ZeroRedundancyOptimizer`
    (which holds the fields they read: its groups, buckets and agreement)."""

    def _shard_name(self, token, rank, world):
        return f"shard-{token}-{rank:05d}-of-{world:05d}.pt"

    def _layout(self):
        return [describe(b) for buckets in self._buckets for b in buckets]

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
        self._agreement.consensus("save_sharded", error, None, kind=RuntimeError,
                                  outcome=f"the checkpoint in {directory!r} was not updated")
        token = [secrets.token_hex(6) if self.rank == 0 else None]
        self._agreement.collective("save_sharded's broadcast", dist.broadcast_object_list,
                                   token, src=self._agreement.global_ranks[0])
        token = token[0]
        shard = {"format": SHARDED_FORMAT, "token": token, "rank": self.rank,
                 "world_size": self.world_size, "seed": self.seed,
                 "param_groups": [{k: v for k, v in g.items() if k != "params"}
                                  for g in self.param_groups],
                 "buckets": [{"shard": [b.span.start, b.span.stop],
                              "state": {k: v.cpu() for k, v in local_arrays(b).items()},
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
        self._agreement.consensus("save_sharded", error, None, kind=RuntimeError,
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
        self._agreement.consensus("save_sharded's manifest", error, None, kind=RuntimeError,
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
        self._agreement.consensus("load_sharded", error, description)
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
            s0, s1 = b.span.start, b.span.stop
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
                                 (a - b.span.start) // unit))
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
                                           and (master.is_floating_point() or master.dtype in
                                                (torch.int16, torch.int8))
                                           and master.numel() == per):
                raise ValueError(f"{here}: master must be None or {per} floating-point values "
                                 "(int16 / int8: a split master's correction)")
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
                arrays = local_arrays(b)
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
