"""State dicts in torch's format for fastadapt.torch's optimizers: building
them from the flat buffers, and checking and loading them (from this class
or from torch.optim)."""
import math

import numpy as np
import torch

from .. import _args
from ._conventions import (COMPRESSED_KEY, COMPRESSED_VERSION, CORRECTION_KEY, EIGHT_BIT,
                           MASTER_KEY, NO_OP_FLAGS, REJECTED_FLAGS, SEED_KEY, STEP_KEY, _plain,
                           _scalar_dtype)


class TorchStateDict:
    """The state-dict methods of :class:`~fastadapt.torch.FlatOptimizer`
    (which holds the fields they read: its groups, buckets and options)."""

    def state_dict(self):
        """The optimizer's state in torch's format.

        ``{"state": {index: {"step": tensor, <state>: tensor, ...}},
        "param_groups": [{..., "params": [indices]}]}``, indices counting the
        parameters of all groups in order, state names as torch names them.
        A parameter appears once it has taken a step (from construction on for
        rules whose state does not start at zero, as torch's Adagrad). The
        state tensors are views of the optimizer's live buffers, as torch's
        are the live tensors; ``step`` is a fresh tensor.

        The storage modes torch has no equivalent for add keys per parameter
        (torch.optim keeps them when it loads the dict, and ignores them):
        ``"master_param"`` (the float32 master copy, with
        ``master_weights=True``), ``"<state>.codes"`` and ``"<state>.absmax"``
        or ``"<state>.scale"`` (8-bit state, ``"int8"`` or ``"int8c"``;
        ``"<state>"`` then holds its dequantized float32
        values), ``"stochastic_rounding_seed"`` (an int; with it ``step``
        is saved for every rule, SGD included: the random bits are keyed on
        seed, step and element) and ``"exact_step"`` (an int, past 2**24
        steps, where torch's float32 ``step`` no longer holds the count; it is
        loaded where it rounds to ``step``). bfloat16 state is saved as it is
        stored.

        A parameter whose ``.data`` was replaced, or that was written in place,
        since the last step is first brought into its slot and its master
        copy, as the next step would do it (the values the model sees do not
        change), so the saved ``"master_param"`` is the parameter's.

        Keys of ``optimizer.state`` this class does not write are kept as
        torch keeps them: a parameter's under its index, others (a hook's
        ``state["test"]``) as they are; :meth:`load_state_dict` restores them.

        **Compressed** (``compressed_state_dict=True`` at construction, or the
        attribute set later): 16-bit and 8-bit state is saved as it is
        stored, for checkpoints that keep the memory saving on disk. A
        bfloat16 (float16) state array is its stored tensor (as above); an
        8-bit one is only its ``"<state>.codes"`` (uint8, of the parameter's
        shape) and ``"<state>.absmax"`` / ``"<state>.scale"`` (float32, one
        per block), without the float32 values (Adam's state then takes about
        1/4 of the bytes of torch's float32 format, 1.02 or 1.13 bytes per
        element and state array for ``"int8"`` / ``"int8c"``). Each such
        parameter's entry gains ``"compressed_state"``: ``{"version": 1,
        "arrays": {name: {"storage": "bfloat16"}}}`` or ``{"storage": "int8",
        "block": 256, "signed": bool}`` (``"int8c"``: block 32), what decodes
        it; float32 / float64 state (and the step, scalar state and master
        copy) is saved as in torch's format. Only fastadapt.torch loads it
        (torch.optim would lack the 8-bit state's values): into the same
        options bit for bit, into another ``state_dtype`` by decoding.

        It is an option of the optimizer, not an argument of this method,
        because torch's ``state_dict()`` takes none and what calls it for you
        (``torch.distributed.checkpoint``'s ``get_optimizer_state_dict``,
        state-dict hooks, trainers' checkpointing) passes none. torch's format
        stays the default, as torch.optim and tools that read optimizer
        state (or average, reshard or edit it) expect it.
        """
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        state_dict = self._state_dict_without_hooks()
        for hook in self._optimizer_state_dict_post_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def _adopt_writes(self):
        """Bring replaced ``.data`` into its slot, and parameters written since
        the last step into their master copy, as the next step would (every
        bucket checked before anything moves); the model sees the same values."""
        buckets = [b for per_group in self._buckets for b in per_group]
        replaced = [b.replaced() for b in buckets]
        with torch.no_grad():
            for b, r in zip(buckets, replaced):
                b.adopt_replaced(r)
                b.sync_master()

    def _state_dict_without_hooks(self, compressed=None):
        """:meth:`state_dict` without its hooks; ``compressed`` (None:
        :attr:`compressed_state_dict`) chooses the format."""
        compressed = self.compressed_state_dict if compressed is None else compressed
        self._adopt_writes()
        return self._packed_state(
            lambda b, j: {k: v for name in b.state_flat for k, v in b.state_entries(
                name, j, values=True, compressed=compressed).items()},
            lambda b, j: None if b.master_views is None else b.master_views[j], compressed)

    def _packed_state(self, arrays_of, master_of, compressed=False):
        """``{"state", "param_groups"}`` in torch's format, parameter ``j`` of
        bucket ``b`` taking its state arrays' entries from ``arrays_of(b, j)``
        and its master copy (or None) from ``master_of(b, j)``; the step, the
        scalar state and the seed from the buckets (see :meth:`state_dict`);
        ``compressed``: each entry holding 16-bit or 8-bit state gets its
        :data:`COMPRESSED_KEY`."""
        keep_step = not self._no_step or self.stochastic_rounding
        param_groups, state, start = [], {}, 0
        for group, buckets in zip(self.param_groups, self._buckets):
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = list(range(start, start + len(group["params"])))
            param_groups.append(packed)
            for b in buckets:
                specs = {self._torch_names.get(name, name): b.compressed_spec(name)
                         for name in b.state_flat} if compressed else {}
                specs = {k: v for k, v in specs.items() if v is not None}
                for j in range(len(b.params)):
                    entry = self._custom_state(b.params[j])
                    if b.published[j]:
                        if keep_step:
                            steps = int(b.steps_np[j])
                            entry["step"] = torch.tensor(float(steps), dtype=_scalar_dtype())
                            if float(entry["step"]) != steps:
                                entry[STEP_KEY] = steps
                        entry.update(arrays_of(b, j))
                        if specs:
                            entry[COMPRESSED_KEY] = {"version": COMPRESSED_VERSION,
                                                     "arrays": {k: dict(v)
                                                                for k, v in specs.items()}}
                        for name in self._scalar_state:
                            entry[self._torch_names.get(name, name)] = b.scalar_tensor(name, j)
                        master = master_of(b, j)
                        if master is not None:
                            entry[b.master_key] = master
                        if self.stochastic_rounding:
                            entry[SEED_KEY] = self.seed
                    if entry:
                        state[start + b.indices[j]] = entry
            start += len(group["params"])
        state = dict(sorted(state.items()))
        # keys of optimizer.state that are not parameters, as they are (torch's)
        state.update((k, v) for k, v in self.state.items() if not isinstance(k, torch.Tensor))
        return {"state": state, "param_groups": param_groups}

    def _custom_state(self, p):
        """The entries of ``state[p]`` this class does not write (a hook's or
        a library's), as they are."""
        entry = self.state.get(p)
        return {k: v for k, v in entry.items() if k not in self._own_keys} if entry else {}

    def load_state_dict(self, state_dict):
        """Load a state dict of torch's format (from this class or from the
        torch.optim optimizer of the same algorithm).

        Everything is checked before anything is written: a state dict with
        another number of groups or parameters, state of the wrong size, a
        parameter's state missing an array the options need, invalid
        hyper-parameters or a tensor on a device it cannot be copied from
        (``meta``) raises ``ValueError`` and changes nothing. The saved
        hyper-parameters replace the groups' (as in torch), except
        ``foreach``, ``fused``, ``capturable`` and ``differentiable``, which
        describe how torch computed and keep this optimizer's values.

        Storage converts: state saved in another dtype is rounded to this
        optimizer's (a float32 torch checkpoint into bfloat16 state, say),
        full-precision state is quantized into 8-bit state (and 8-bit codes
        are used as they are), a ``"master_param"`` is loaded into the
        master copy where it rounds to the parameter's current value (elsewhere,
        and without one, the master copy takes that value: torch.optim keeps
        the key of a dict it loads but never updates it) and a
        ``"stochastic_rounding_seed"`` becomes
        :attr:`seed`. A dict saved by an optimizer of the same options
        resumes bit for bit.

        A compressed state dict (see :meth:`state_dict`) loads whatever this
        optimizer's :attr:`compressed_state_dict`: its codes are used as they
        are where this optimizer keeps the same 8-bit format, and decoded
        (then rounded or quantized as above) where it keeps another
        ``state_dtype``. Its ``"compressed_state"`` is checked first: a format
        version newer than this fastadapt reads, an unknown storage or block
        size, or a state tensor of another shape than its parameter raise
        ``ValueError`` and change nothing.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        state_dict = state_dict.copy()
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        for key in ("state", "param_groups"):
            if key not in state_dict:
                raise ValueError(f"optimizer state dict is missing key {key!r}")
        saved_groups = [dict(g) for g in state_dict["param_groups"]]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"])
               for g, s in zip(self.param_groups, saved_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match "
                             "the size of optimizer's group")
        new_groups = []
        for index, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            new = {k: v for k, v in saved.items() if k != "params"}
            for key, value in self.defaults.items():
                new.setdefault(key, value)
            for flag in NO_OP_FLAGS + REJECTED_FLAGS:
                if flag in group:
                    new[flag] = group[flag]
            new.update(self._group_constants())      # torch's AdamW forces its flag too
            new["params"] = group["params"]
            if "param_names" in group and "param_names" not in new:
                new["param_names"] = group["param_names"]
            self._check_options(new, index)
            new_groups.append(new)
        ids = {saved_id: (gi, i) for gi, s in enumerate(saved_groups)
               for i, saved_id in enumerate(s["params"])}
        by_param, customs, others = {}, {}, {}
        our_names = {v: k for k, v in self._torch_names.items()}
        for key, value in state_dict["state"].items():
            if key not in ids:
                others[key] = value         # kept as it is, as torch keeps it
                continue
            gi, i = ids[key]
            by_param[(gi, i)] = self._checked_state(value, gi, i, new_groups[gi])
            p = new_groups[gi]["params"][i]
            customs[(gi, i)] = {k: _cast_like(p, v, k) for k, v in value.items()
                                if k not in self._own_keys}
        seeds = {saved[3][SEED_KEY] for saved in by_param.values() if SEED_KEY in saved[3]}
        if len(seeds) > 1:
            raise ValueError(f"loaded state holds {len(seeds)} different "
                             f"{SEED_KEY}s; one optimizer has one seed")
        if seeds and self.stochastic_rounding:
            self.seed = seeds.pop()

        # everything checked: apply
        for group, new in zip(self.param_groups, new_groups):
            group.clear()
            group.update(new)
        self._validated = [None] * len(self.param_groups)
        for key in [k for k in self.state if not isinstance(k, torch.Tensor)]:
            del self.state[key]
        self.state.update(others)
        with torch.no_grad():
            for gi, (group, buckets) in enumerate(zip(self.param_groups, self._buckets)):
                options = self._rule_options(group)
                for b in buckets:
                    b.ensure_state(self.rule.state_for(**options), group)
                    for j, i in enumerate(b.indices):
                        saved = by_param.get((gi, i))
                        if saved is None or not (saved[0] or any(saved[1:])):
                            # nothing of this class's state (perhaps custom keys only)
                            b.reset(j, j, group)
                            self.state.pop(b.params[j], None)
                            b.published[j] = False
                            b.entries[j] = None
                            if self._state_init:
                                b.publish(j)
                            if customs.get((gi, i)):
                                self.state[b.params[j]].update(customs[(gi, i)])
                            continue
                        step, arrays, scalars, extras = saved
                        for name in b.state_flat:
                            b.load(name, j, arrays, extras, group)
                        if b.master_flat is not None:
                            b.load_master(j, extras)
                        for name, value in scalars.items():
                            b.scalars_np[our_names.get(name, name)][j] = value
                        b.steps_np[j] = step
                        b.publish(j)
                        if customs[(gi, i)]:
                            self.state[b.params[j]].update(customs[(gi, i)])
                    b.update_uniform()
                    b.versions = b._versions()
                    if b.master_flat is not None:
                        # a loaded master is trusted only where it still rounds to
                        # the parameter (torch.optim keeps the key, never updates it)
                        b.versions = [None] * len(b.params)
                        b.sync_master()
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def _checked_state(self, value, gi, i, group):
        where = f"loaded state of param group {gi}, parameter {i}"
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a dict, got {type(value).__name__}")
        p = group["params"][i]
        for key, v in value.items():     # a tensor that cannot be copied fails now, not mid-load
            if isinstance(v, torch.Tensor) and v.device.type not in ("cpu", "cuda",
                                                                     p.device.type):
                raise ValueError(f"{where}: {key} is on {v.device}; state tensors load from "
                                 f"the CPU or a CUDA device (the parameter is on {p.device})")
        step = value.get("step")
        arrays, scalars, extras = {}, {}, {}
        scalar_names = {self._torch_names.get(n, n) for n in self._scalar_state}
        array_names = {self._torch_names.get(n, n) for n in self.rule.state}
        # this parameter's 8-bit format (None: full-precision state)
        fmt = (self.state_dtype if self.state_dtype in EIGHT_BIT
               and p.numel() >= self.min_8bit_size else None)
        scale_keys = tuple(f[2] for f in EIGHT_BIT.values())
        extra_names = {MASTER_KEY: ("a floating-point tensor", p.numel(), None),
                       CORRECTION_KEY: ("an int16 or int8 tensor", p.numel(), "correction")}
        for n in array_names:
            # torch.optim casts a loaded state's tensors to the parameter's
            # dtype: codes come back as float (exact: 0..255 are), scales
            # rounded to a 16-bit parameter's dtype
            extra_names[f"{n}.codes"] = ("a tensor of whole numbers in 0..255", p.numel(),
                                         "codes")
            for _, unit, part, _ in EIGHT_BIT.values():
                extra_names[f"{n}.{part}"] = ("a floating-point tensor",
                                              -(-p.numel() // unit), None)
        for key, v in value.items():
            if key in ("step", COMPRESSED_KEY):
                continue
            if key == SEED_KEY:
                try:
                    extras[key] = _args.seed(v)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{where}: {key}: {exc}") from None
                continue
            if key == STEP_KEY:
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                    raise ValueError(f"{where}: {key} must be an int >= 0, got {v!r}")
                continue
            if key in extra_names:
                what, size, dtype = extra_names[key]
                if not (isinstance(v, torch.Tensor) and v.layout == torch.strided and (
                        _is_real(v) if dtype == "codes" else
                        v.dtype in (torch.int16, torch.int8) if dtype == "correction"
                        else v.is_floating_point())):
                    raise ValueError(f"{where}: {key} must be {what}, got "
                                     f"{getattr(v, 'dtype', type(v).__name__)}")
                if v.numel() != size:
                    raise ValueError(f"{where}: {key} has {v.numel()} elements, expected "
                                     f"{size} (the parameter has {p.numel()})")
                if dtype == "codes":
                    v = _codes(v, f"{where}: {key}")
                elif key.endswith(scale_keys) and v.dtype != torch.float32:
                    v = v.detach().to(torch.float32)
                extras[key] = v
                continue
            ours = next((n for n, t in self._torch_names.items() if t == key), key)
            if (key in array_names and ours in self.rule.non_negative_state
                    and fmt is not None and f"{key}.codes" not in value
                    and isinstance(v, torch.Tensor) and v.is_floating_point()
                    and bool((v < 0).any())):
                raise ValueError(f"{where}: {key} has negative values; this optimizer "
                                 "keeps it in unsigned 8-bit state")
            if key in scalar_names:
                try:
                    scalars[key] = float(_plain(v))
                except (TypeError, ValueError):
                    raise ValueError(f"{where}: {key} must be a number") from None
            elif key in array_names:
                if not isinstance(v, torch.Tensor):
                    raise ValueError(f"{where}: {key} must be a tensor, got {type(v).__name__}")
                if v.numel() != p.numel():
                    raise ValueError(f"{where}: {key} has {v.numel()} elements, the parameter "
                                     f"has {p.numel()} (shape {tuple(p.shape)})")
                if not (v.layout == torch.strided and (
                        v.is_complex() if p.is_complex() else v.is_floating_point())):
                    kind = "complex" if p.is_complex() else "floating-point"
                    raise ValueError(f"{where}: {key} must be a dense {kind} tensor (the "
                                     f"parameter is {p.dtype})")
                arrays[key] = v
        decoded, kept = self._compressed_state(value, p, where, fmt, arrays, extras)
        if step is None:
            # torch's SGD keeps no step; a parameter with state has stepped
            step = 1 if arrays or kept else 0
        try:
            step_f = float(_plain(step))
        except (TypeError, ValueError):
            raise ValueError(f"{where}: step must be a number, got {step!r}") from None
        if not (math.isfinite(step_f) and step_f >= 0 and step_f == int(step_f)):
            raise ValueError(f"{where}: step must be a whole number >= 0, got {step_f}")
        exact = value.get(STEP_KEY)
        if exact is not None and np.float32(exact) == np.float32(step_f):
            step_f = int(exact)     # trusted while it rounds to ``step`` (torch never updates it)
        for n in array_names:
            saved = [f for f, (_, _, part, _) in EIGHT_BIT.items() if f"{n}.{part}" in extras]
            if len(saved) > 1 or (f"{n}.codes" in extras) != bool(saved):
                raise ValueError(f"{where}: {n}.codes and one of "
                                 f"{' or '.join(f'{n}.{part}' for part in scale_keys)} go "
                                 f"together; got "
                                 f"{sorted(k for k in extras if k.startswith(n + '.'))}")
            if not saved:
                continue
            part = EIGHT_BIT[saved[0]][2]
            ours = next((o for o, t in self._torch_names.items() if t == n), n)
            if saved[0] != fmt or n in decoded:
                # another format's codes (or full-precision state here, or
                # codes of the other sign): the dequantized values load, converted
                del extras[f"{n}.codes"], extras[f"{n}.{part}"]
                if (fmt is not None and ours in self.rule.non_negative_state
                        and n in arrays and bool((arrays[n] < 0).any())):
                    raise ValueError(f"{where}: {n} has negative values; this "
                                     "optimizer keeps it in unsigned 8-bit state")
                continue
            problem = EIGHT_BIT[fmt][3](extras[f"{n}.{part}"].detach().cpu().numpy())
            if problem:
                raise ValueError(f"{where}: {n}.{part} {problem}")
            if n in arrays and n not in kept and not _codes_hold(
                    extras, n, arrays[n], ours in self.rule.non_negative_state, fmt):
                # the values moved on without the codes (a torch.optim
                # step keeps the codes it does not know): use the values
                del extras[f"{n}.codes"], extras[f"{n}.{part}"]
                if ours in self.rule.non_negative_state and bool((arrays[n] < 0).any()):
                    raise ValueError(f"{where}: {n} has negative values; this "
                                     "optimizer keeps it in unsigned 8-bit state")
        needed = {self._torch_names.get(n, n) for n in
                  self.rule.state_for(**self._rule_options(group))}
        missing = sorted(needed - set(arrays) - kept)
        if step_f > 0 and missing:
            raise ValueError(f"{where} lacks {missing} (is it a state dict of another "
                             "algorithm or option set?)")
        missing_scalars = sorted(scalar_names - set(scalars))
        if step_f > 0 and missing_scalars:
            raise ValueError(f"{where} lacks {missing_scalars}")
        return int(step_f), arrays, scalars, extras

    def _compressed_state(self, value, p, where, fmt, arrays, extras):
        """Check a compressed entry's :data:`COMPRESSED_KEY` against its
        tensors (parameter ``p``, whose 8-bit format here is ``fmt`` or None)
        and decode into ``arrays`` the 8-bit state that does not load as it
        is stored (float32, ``p``'s shape). Returns ``(decoded, kept)``: the
        names decoded, and those whose codes load as they are (same format
        and sign). ``({}, set())`` for an entry in torch's format."""
        meta = value.get(COMPRESSED_KEY)
        if meta is None:
            return {}, set()
        if not (isinstance(meta, dict) and "version" in meta):
            raise ValueError(f"{where}: {COMPRESSED_KEY} must be a dict with a 'version' "
                             f"(a compressed state dict's), got {type(meta).__name__}")
        version = meta["version"]
        if type(version) is not int or version < 1:
            raise ValueError(f"{where}: {COMPRESSED_KEY} has format version {version!r}; "
                             f"fastadapt.torch reads versions 1 to {COMPRESSED_VERSION}")
        if version > COMPRESSED_VERSION:
            raise ValueError(f"{where}: compressed state of format version {version}, newer "
                             f"than this fastadapt.torch reads ({COMPRESSED_VERSION}); load it "
                             "with the fastadapt that saved it and save it again there with "
                             "compressed_state_dict=False")
        specs = meta.get("arrays")
        if not isinstance(specs, dict):
            raise ValueError(f"{where}: {COMPRESSED_KEY}['arrays'] must be a dict")
        names = {self._torch_names.get(n, n): n for n in self.rule.state}
        decoded, kept = {}, set()
        for n, spec in specs.items():
            if n not in names:
                raise ValueError(f"{where}: {COMPRESSED_KEY} describes unknown state {n!r} "
                                 f"(this optimizer's: {sorted(names)})")
            storage = spec.get("storage") if isinstance(spec, dict) else None
            if storage in ("bfloat16", "float16"):
                v = value.get(n)
                if not (isinstance(v, torch.Tensor) and v.dtype == getattr(torch, storage)):
                    raise ValueError(f"{where}: {n} must be a {storage} tensor (as its "
                                     f"{COMPRESSED_KEY} says), got "
                                     f"{getattr(v, 'dtype', type(v).__name__)}")
                _same_shape(where, n, v, p)
                continue
            if storage not in EIGHT_BIT:
                raise ValueError(f"{where}: {COMPRESSED_KEY} gives {n!r} storage {storage!r}; "
                                 f"this fastadapt.torch reads 'bfloat16', 'float16', "
                                 f"{', '.join(map(repr, EIGHT_BIT))}")
            saved = EIGHT_BIT[storage]
            if spec.get("block") != saved.unit:
                raise ValueError(f"{where}: {n} was saved as {storage!r} with blocks of "
                                 f"{spec.get('block')!r} elements; this fastadapt.torch's "
                                 f"{storage!r} has blocks of {saved.unit}")
            signed = spec.get("signed")
            if not isinstance(signed, bool):
                raise ValueError(f"{where}: {COMPRESSED_KEY} must say whether {n!r} is signed "
                                 f"(True or False), got {signed!r}")
            codes, scale = (extras.get(f"{n}.{k}") for k in ("codes", saved.scale_key))
            if codes is None or scale is None:
                raise ValueError(f"{where}: {n} is compressed as {storage!r} but lacks "
                                 f"{n}.codes or {n}.{saved.scale_key}")
            _same_shape(where, f"{n}.codes", value[f"{n}.codes"], p)
            if storage == fmt and signed == (names[n] not in self.rule.non_negative_state):
                kept.add(n)             # the codes load as they are
                continue
            problem = saved.problem(scale.detach().cpu().reshape(-1).numpy())
            if problem:
                raise ValueError(f"{where}: {n}.{saved.scale_key} {problem}")
            b8 = saved.container(0, signed).with_arrays(
                codes.detach().cpu().reshape(-1).numpy(),
                scale.detach().cpu().reshape(-1).numpy())
            arrays[n] = torch.from_numpy(b8.dequantize()).view(p.shape)
            decoded[n] = signed
        return decoded, kept


def _same_shape(where, key, v, p):
    """ValueError unless tensor ``v`` (a compressed entry's) has ``p``'s shape."""
    if tuple(v.shape) != tuple(p.shape):
        raise ValueError(f"{where}: {key} has shape {tuple(v.shape)}, the parameter "
                         f"{tuple(p.shape)}")


def _cast_like(param, value, key=None):
    """A loaded state entry as torch.optim loads it: tensors (but ``"step"``)
    moved to the parameter's device and, for a floating-point parameter,
    converted to its dtype; dicts, lists and tuples element by element."""
    if isinstance(value, torch.Tensor):
        if key == "step":
            return value
        if param.is_floating_point():
            return value.to(dtype=param.dtype, device=param.device)
        return value.to(device=param.device)
    if isinstance(value, dict):
        return {k: _cast_like(param, v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_like(param, v) for v in value)
    return value


def _is_real(t):
    return not (t.is_complex() or t.dtype == torch.bool)


def _codes(v, where):
    """8-bit codes as uint8, from any tensor of whole numbers in 0..255 (torch
    casts them to the parameter's dtype on load); ValueError otherwise."""
    if v.dtype == torch.uint8:
        return v
    values = v.detach().cpu().reshape(-1).to(torch.float64)
    bad = ~((values >= 0) & (values <= 255) & (values == values.round()))
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(f"{where} must hold whole numbers in 0..255 (8-bit codes, "
                         f"as saved or cast to another dtype); element {i} is "
                         f"{values[i].item()}")
    return values.to(torch.uint8).view(v.shape)


def _codes_hold(extras, n, values, non_negative, fmt):
    """Whether state ``n``'s 8-bit codes (of format ``fmt``) still decode to
    its ``values`` (as rounded to their dtype)."""
    container, _, part, _ = EIGHT_BIT[fmt]
    codes, scale = (extras[f"{n}.{k}"].detach().cpu().reshape(-1).numpy()
                    for k in ("codes", part))
    b8 = container(0, not non_negative).with_arrays(codes, scale)
    decoded = torch.from_numpy(b8.dequantize()).to(values.dtype)
    values = values.detach().cpu().reshape(-1)
    return bool(((decoded == values) | (decoded.isnan() & values.isnan())).all())


