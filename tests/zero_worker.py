"""One rank of the ZeroRedundancyOptimizer tests (tests/test_zero.py).

Run as ``python zero_worker.py RANK WORLD INIT_FILE WORKDIR SCENARIO``: joins a
gloo group through ``file://INIT_FILE``, runs every check of SCENARIO and
saves what it found to ``WORKDIR/<scenario>-rank<RANK>.pt`` for the test to
compare against the single-process optimizer. The problem definitions (the
parameters, the gradients, the cases) live here too, so the test builds its
references from the same numbers.
"""
import datetime
import os
import signal
import sys
import time

import torch

import fastadapt

STEPS = 3
# two groups: small segments (every shard of 4 ranks runs the serial driver)
# and segments on both sides of SERIAL_BELOW (8192), each shard of 2 ranks
# holding a run longer than it; zero-size and 1-element ones
SHAPES = ([(0,), (1,), (7,), (97,), (3, 5, 7)], [(1009,), (8191,), (24593,)])
# every rule, with the options that use every state array it can take
EVERY_STATE = {"adam": {"amsgrad": True}, "adamw": {"amsgrad": True},
               "sgd": {"momentum": 0.9}, "rmsprop": {"centered": True, "momentum": 0.9}}
# (not SparseAdam: it takes sparse gradients only, which ZeroRedundancyOptimizer refuses)
CASES = [(name, config) for name, rule in fastadapt.RULES.items()
         if not rule.torch_sparse_grad
         for config in ([{}] + ([EVERY_STATE[name]] if name in EVERY_STATE else []))]
DTYPES = (torch.float32, torch.float64)
# 16-bit parameters (AdamW): label -> (dtype, storage options)
LOWP_CASES = {"bfloat16, master weights": (torch.bfloat16, {"master_weights": True}),
              "float16, float32 state": (torch.float16, {}),
              "bfloat16, bfloat16 state": (torch.bfloat16, {"state_dtype": torch.bfloat16}),
              "float32, 8-bit state": (torch.float32, {"state_dtype": "int8"}),
              "bfloat16, master weights, 8-bit state": (torch.bfloat16, {
                  "master_weights": True, "state_dtype": "int8"}),
              # companded: the parameters under 4096 elements keep float32
              # state (buckets of their own); then every parameter's in 8 bits
              "float32, companded 8-bit state": (torch.float32, {"state_dtype": "int8c"}),
              "bfloat16, master weights, companded 8-bit state, every parameter": (
                  torch.bfloat16, {"master_weights": True, "state_dtype": "int8c",
                                   "min_8bit_size": 0}),
              # split master weights: each rank keeps its share of the correction
              "bfloat16, split master bf16+16": (torch.bfloat16, {"master_weights": "bf16+16"}),
              "bfloat16, split master bf16+8, bfloat16 state": (torch.bfloat16, {
                  "master_weights": "bf16+8", "state_dtype": torch.bfloat16}),
              # each rank's bits keyed on the element's index in the whole bucket
              "bfloat16, stochastic rounding": (torch.bfloat16, {
                  "stochastic_rounding": True, "seed": 11}),
              "float16, stochastic rounding, 8-bit state": (torch.float16, {
                  "stochastic_rounding": True, "seed": 12, "state_dtype": "int8"})}
# the sharded checkpoints resumed across world sizes: rule -> options
RESUMED = {"nadam": {}, "adagrad": {}, "adam": {"state_dtype": "int8c", "min_8bit_size": 0},
           "adamw": {"dtype": torch.bfloat16, "master_weights": True, "state_dtype": "int8"},
           # a resumed world is built with another seed: the checkpoint's must win
           "sgd": {"dtype": torch.bfloat16, "momentum": 0.9, "stochastic_rounding": True,
                   "seed": 21}}
# a step with a parameter without gradient (torch skips it): group 0, parameter 2
SKIP_AT = 2


def case_id(name, config, dtype):
    opts = ",".join(f"{k}={v}" for k, v in config.items()) or "defaults"
    return f"{name}[{opts}]-{str(dtype).replace('torch.', '')}"


def make_params(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64).to(dtype))
             for s in shapes] for shapes in SHAPES]


def gradient(shape, dtype, step, index, rank=0, coarse=False):
    """A gradient for one parameter; ``coarse`` values are multiples of 1/64
    below 8 in magnitude, so sums over ranks and the division by 2 or 4 are
    exact in float32 (the mean of ranks' gradients then has one value)."""
    g = torch.Generator().manual_seed(1000 * step + 10 * index + rank)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    if coarse:
        x = torch.round(x * 64).clamp(-500, 500) / 64
    return x.to(dtype)


def mean_gradient(shape, dtype, step, index, world):
    return (sum(gradient(shape, torch.float64, step, index, r, True) for r in range(world))
            / world).to(dtype)


def set_grads(groups, step, rank=0, coarse=False, world=None, skip=True):
    """``.grad`` of every parameter for ``step`` (1-based); ``world``: the mean
    over ranks (the single-process reference of reduce_gradients)."""
    index = 0
    for gi, params in enumerate(groups):
        for i, p in enumerate(params):
            if skip and step == SKIP_AT and (gi, i) == (0, 2):
                p.grad = None
            elif world is not None:
                p.grad = mean_gradient(p.shape, p.dtype, step, index, world).to(p.device)
            else:
                p.grad = gradient(p.shape, p.dtype, step, index, rank, coarse).to(p.device)
            index += 1


def groups_for(name, groups):
    """Two parameter groups, the second with a halved learning rate."""
    lr = fastadapt.RULES[name].defaults["lr"]
    return [{"params": groups[0]}, {"params": groups[1], "lr": lr / 2}]


def flat(groups):
    return [p.detach().clone() for params in groups for p in params]


def storage_bytes(opt):
    """Bytes allocated for the optimizer's state arrays, from the tensors' storages."""
    return sum(t.untyped_storage().nbytes() for buckets in opt._buckets for b in buckets
               for t in b.state_tensors())


# ----------------------------------------------------------------- scenarios
def scenario_main(rank, world, workdir):
    import fastadapt.torch as ft
    out = {"parity": {}, "bytes": {}, "counts": {}}
    for name, config in CASES:
        cls = getattr(ft, fastadapt.RULES[name].torch_name)
        for dtype in DTYPES:
            groups = make_params(dtype)
            opt = ft.ZeroRedundancyOptimizer(groups_for(name, groups), optimizer_class=cls,
                                             **config)
            for step in range(1, STEPS + 1):
                set_grads(groups, step)
                opt.step()
            key = case_id(name, config, dtype)
            out["parity"][key] = flat(groups)
            out["bytes"][key] = (storage_bytes(opt), opt.local_state_bytes)
            out["counts"][key] = sum(len(b.state_flat) for bs in opt._buckets for b in bs)

    # stochastic rounding without a seed: every rank takes rank 0's
    opt = ft.ZeroRedundancyOptimizer(make_params(torch.bfloat16)[0], stochastic_rounding=True)
    out["drawn_seed"] = opt.seed

    # 16-bit parameters: the float32 master copy and the state are sharded
    out["lowp"] = {}
    for label, (dtype, options) in LOWP_CASES.items():
        groups = make_params(dtype)
        opt = ft.ZeroRedundancyOptimizer(groups_for("adamw", groups), optimizer_class=ft.AdamW,
                                         **options)
        for step in range(1, STEPS + 1):
            set_grads(groups, step)
            opt.step()
        opt.consolidate_state_dict(to=0)
        out["lowp"][label] = (flat(groups), opt.state_dict() if rank == 0 else None,
                              opt.local_state_bytes)

    # the all_gather path (NCCL's; gloo broadcasts by default), on one case
    groups = make_params(torch.float32)
    opt = ft.ZeroRedundancyOptimizer(groups_for("adam", groups), optimizer_class=ft.Adam,
                                     amsgrad=True)
    opt._agreement.gather_by_broadcast = False
    for step in range(1, STEPS + 1):
        set_grads(groups, step)
        opt.step()
    out["all_gather"] = flat(groups)

    # reduce_gradients: each rank's own (coarse) gradients, averaged here; at
    # step SKIP_AT rank 0 has no gradient for one parameter (the others do)
    groups = make_params(torch.float32)
    opt = ft.ZeroRedundancyOptimizer(groups_for("adam", groups), optimizer_class=ft.Adam,
                                     reduce_gradients=True, weight_decay=0.1)
    for step in range(1, STEPS + 1):
        set_grads(groups, step, rank=rank, coarse=True, skip=False)
        if step == SKIP_AT and rank == 0:
            groups[0][2].grad = None
        opt.step()
    out["reduce"] = flat(groups)

    # clipping across shards, with DDP-like (identical) and with reduced gradients
    for reduce in (False, True):
        groups = make_params(torch.float32)
        opt = ft.ZeroRedundancyOptimizer(groups_for("adamw", groups), optimizer_class=ft.AdamW,
                                         reduce_gradients=reduce, max_grad_norm=0.5)
        norms = []
        for step in range(1, STEPS + 1):
            set_grads(groups, step, rank=rank if reduce else 0, coarse=reduce)
            opt.step()
            norms.append(opt.grad_norm)
        out[f"clip_reduce={reduce}"] = (flat(groups), norms)

    # GradScaler's found_inf on one rank only, and a non-finite gradient on one
    # rank under clipping: every rank skips the step
    groups = make_params(torch.float32)
    opt = ft.ZeroRedundancyOptimizer(groups_for("adam", groups), optimizer_class=ft.Adam,
                                     reduce_gradients=True)
    set_grads(groups, 1, rank=rank, coarse=True)
    before = flat(groups)
    opt.grad_scale = torch.tensor(1024.0)
    opt.found_inf = torch.tensor(1.0 if rank == world - 1 else 0.0)
    opt.step()
    skipped_inf = (opt.step_skipped, all(torch.equal(a, b) for a, b in zip(before, flat(groups))),
                   bool(opt.state))
    del opt.grad_scale, opt.found_inf
    opt.max_grad_norm = 1.0
    if rank == world - 1:
        groups[1][0].grad[5] = float("inf")
    opt.step()
    skipped_norm = (opt.step_skipped, all(torch.equal(a, b) for a, b in zip(before, flat(groups))),
                    opt.grad_norm)
    # found_inf on one rank only, gradients as under DDP (the same on every rank)
    groups = make_params(torch.float32)
    opt = ft.ZeroRedundancyOptimizer(groups_for("adam", groups), optimizer_class=ft.Adam)
    set_grads(groups, 1)
    before = flat(groups)
    opt.grad_scale = torch.tensor(1.0)
    opt.found_inf = torch.tensor(1.0 if rank == world - 1 else 0.0)
    opt.step()
    skipped_ddp = (opt.step_skipped, all(torch.equal(a, b) for a, b in zip(before, flat(groups))),
                   bool(opt.state))
    opt.found_inf = torch.tensor(0.0)
    opt.step()
    stepped_ddp = not opt.step_skipped and not torch.equal(before[-1], flat(groups)[-1])
    out["skips"] = (skipped_inf, skipped_norm, skipped_ddp, stepped_ddp)

    # consolidated state dict of a 3-step Adam (amsgrad) run
    groups = make_params(torch.float32)
    opt = ft.ZeroRedundancyOptimizer(groups_for("adam", groups), optimizer_class=ft.Adam,
                                     amsgrad=True)
    for step in range(1, STEPS + 1):
        set_grads(groups, step)
        opt.step()
    try:
        opt.state_dict()
        out["unconsolidated"] = None
    except RuntimeError as exc:
        out["unconsolidated"] = str(exc)
    opt.consolidate_state_dict(to=world - 1)
    if rank == world - 1:
        out["consolidated"] = opt.state_dict()

    # a single-process state dict (after 2 steps) loaded on every rank, then 2 more steps
    sd = torch.load(os.path.join(workdir, "single_sd.pt"), weights_only=False)
    groups = make_params(torch.float32)
    for p, v in zip((p for ps in groups for p in ps), sd["params"]):
        p.data.copy_(v)
    opt = ft.ZeroRedundancyOptimizer(groups_for("nadam", groups), optimizer_class=ft.NAdam)
    opt.load_state_dict(sd["optimizer"])
    for step in (3, 4):
        set_grads(groups, step)
        opt.step()
    out["loaded"] = flat(groups)

    # resume from the sharded checkpoint of the previous world size, 2 more steps, save
    out["resumed"] = {}
    for name, options in RESUMED.items():
        cls = getattr(ft, fastadapt.RULES[name].torch_name)
        options = dict(options)
        groups = make_params(options.pop("dtype", torch.float32))
        opt = ft.ZeroRedundancyOptimizer(groups_for(name, groups), optimizer_class=cls,
                                         **options)
        previous = os.path.join(workdir, f"previous-{name}")
        first = 1
        if os.path.exists(os.path.join(previous, "manifest.pt")):
            if opt.stochastic_rounding:
                opt.seed += 1
            saved = torch.load(os.path.join(previous, "params.pt"), weights_only=True)
            for p, v in zip((p for ps in groups for p in ps), saved["params"]):
                p.data.copy_(v)
            opt.load_sharded(previous)
            first = saved["step"] + 1
        for step in (first, first + 1):
            set_grads(groups, step)
            opt.step()
        target = os.path.join(workdir, f"next-{name}")
        opt.save_sharded(target)
        if rank == 0:
            torch.save({"params": flat(groups), "step": first + 1},
                       os.path.join(target, "params.pt"))
        out["resumed"][name] = (first + 1, flat(groups))

    # a group added after construction gets its own sharded buffer
    groups = make_params(torch.float32)
    opt = ft.ZeroRedundancyOptimizer(groups[0], optimizer_class=ft.RMSprop, momentum=0.5)
    opt.add_param_group({"params": groups[1], "lr": 1e-3})
    for step in range(1, STEPS + 1):
        set_grads(groups, step)
        opt.step()
    out["added"] = flat(groups)

    out["errors"] = bad_input(ft, rank, world)
    return out


def bad_input(ft, rank, world):
    """The message of each expected error (``None`` where none was raised)."""
    errors = {}

    def expect(key, exc_type, fn):
        try:
            fn()
        except exc_type as exc:
            errors[key] = f"{type(exc).__name__}: {exc}"
        else:
            errors[key] = None

    p = torch.nn.Parameter(torch.ones(3))
    ptr = p.data_ptr()
    q = torch.nn.Parameter(torch.ones(3, device="meta"))
    expect("mixed_devices", ValueError,
           lambda: ft.ZeroRedundancyOptimizer([p, q], optimizer_class=ft.Adam))
    expect("mixed_groups", ValueError,
           lambda: ft.ZeroRedundancyOptimizer(iter([{"params": iter([p])}, {"params": [q]}])))
    expect("int_params", TypeError, lambda: ft.ZeroRedundancyOptimizer(
        [p, torch.ones(2, dtype=torch.int32)]))
    expect("stochastic_rounding", ValueError, lambda: ft.ZeroRedundancyOptimizer(
        [p], stochastic_rounding=True))         # p is float32
    expect("torch_class", TypeError,
           lambda: ft.ZeroRedundancyOptimizer([p], optimizer_class=torch.optim.Adam))
    expect("not_a_class", TypeError,
           lambda: ft.ZeroRedundancyOptimizer([p], optimizer_class="adam"))
    expect("unknown_option", TypeError,
           lambda: ft.ZeroRedundancyOptimizer([p], optimizer_class=ft.SGD, betas=(0.9, 0.9)))
    expect("bad_lr", ValueError, lambda: ft.ZeroRedundancyOptimizer([p], lr=-1.0))
    expect("reduce_gradients", TypeError,
           lambda: ft.ZeroRedundancyOptimizer([p], reduce_gradients="yes"))
    expect("overlap_with_ddp", ValueError,
           lambda: ft.ZeroRedundancyOptimizer([p], overlap_with_ddp=True))
    ptr = None
    opt = ft.ZeroRedundancyOptimizer([p])
    ptr = p.data_ptr()
    expect("bad_to", ValueError, lambda: opt.consolidate_state_dict(to=world))
    expect("missing_checkpoint", OSError, lambda: opt.load_sharded("/nonexistent/zero"))
    errors["unchanged"] = (torch.equal(p.detach(), torch.ones(3)) and not opt.state
                           and ptr == p.data_ptr())
    return errors


def saved_adam(ft, workdir, name, **options):
    """``(optimizer, params, directory)``: Adam over ``make_params`` after one
    step, saved with ``save_sharded`` to ``workdir/name``."""
    groups = make_params(torch.float32)
    opt = ft.ZeroRedundancyOptimizer(groups_for("adam", groups), optimizer_class=ft.Adam,
                                     **options)
    set_grads(groups, 1)
    opt.step()
    target = os.path.join(workdir, name)
    opt.save_sharded(target)
    return opt, groups, target


def scenario_fault(rank, world, workdir):
    """Rank 1 saves a complete checkpoint, then dies in the middle of a
    sharded save (after rank 0 wrote its file), then rank 0 steps."""
    import fastadapt.torch as ft
    from fastadapt.torch import _zero_checkpoint as sharded
    opt, groups, target = saved_adam(ft, workdir, "ckpt")
    out = {"complete": torch.load(os.path.join(target, "manifest.pt"))["token"]}
    if rank == 1:
        real = sharded.atomic_write

        def dying_write(path, write):
            def partial(f):
                f.write(b"PK\x03\x04 half a file")
                f.flush()
                time.sleep(1.0)       # rank 0 writes its file meanwhile
                os.kill(os.getpid(), signal.SIGKILL)
            real(path, partial)
        sharded.atomic_write = dying_write
    set_grads(groups, 2)
    opt.step()
    start = time.monotonic()
    try:
        opt.save_sharded(target)
        out["save_error"] = None
    except Exception as exc:
        out["save_error"] = f"{type(exc).__name__}: {exc}"
    out["save_error_after_s"] = time.monotonic() - start
    start = time.monotonic()
    try:
        set_grads(groups, 3)
        opt.step()
        out["step_error"] = None
    except Exception as exc:
        out["step_error"] = f"{type(exc).__name__}: {exc}"
    out["step_error_after_s"] = time.monotonic() - start
    return out


def scenario_raise(rank, world, workdir, timeout_s):
    """Rank 1 raises in the middle of a step (after its checks, before the
    all-gather) and stays alive past the timeout; rank 0 steps."""
    import fastadapt.torch as ft
    groups = make_params(torch.float32)
    opt = ft.ZeroRedundancyOptimizer(groups_for("adam", groups), optimizer_class=ft.Adam)
    set_grads(groups, 1)
    opt.step()
    set_grads(groups, 2)
    out = {}
    if rank == 1:
        def broken(*args, **kwargs):
            raise RuntimeError("injected failure in the update")
        for b in opt._buckets[0]:
            b.apply = broken
        try:
            opt.step()
        except RuntimeError as exc:
            out["raised"] = str(exc)
        time.sleep(timeout_s + 4)
        return out
    start = time.monotonic()
    try:
        opt.step()
        out["error"] = None
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    out["after_s"] = time.monotonic() - start
    return out


# ----------------------------------------------------------------- agreement checks
# Each check runs on every rank of one launch (tests/test_zero.py's ``checks``
# fixture); ZERO_CHECKS (comma-separated names) runs only some of them.
def outcome(fn):
    """``(exception type name or None, message, seconds)`` of calling ``fn``."""
    start = time.monotonic()
    try:
        fn()
    except Exception as exc:
        return type(exc).__name__, str(exc), time.monotonic() - start
    return None, None, time.monotonic() - start


def snapshot(opt, groups):
    """Everything a failed call must leave alone: parameters (values and
    storage), every state array, step counts, scalar state, hyper-parameters."""
    arrays = [t.clone() for bs in opt._buckets for b in bs for t in b.state_tensors()]
    steps = [b.steps.clone() for bs in opt._buckets for b in bs]
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    return (flat(groups), [p.data_ptr() for ps in groups for p in ps], arrays, steps, hyper)


def same(a, b):
    """Whether two snapshots are equal, bit for bit."""
    def eq(x, y):
        if isinstance(x, torch.Tensor):
            return isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape \
                and torch.equal(x, y)
        if isinstance(x, (list, tuple)):
            return len(x) == len(y) and all(eq(u, v) for u, v in zip(x, y))
        if isinstance(x, dict):
            return x.keys() == y.keys() and all(eq(x[k], y[k]) for k in x)
        return x == y
    return eq(a, b)


def check_master_sync(ft, rank, world, workdir):
    """bfloat16 parameters with master weights, 2 steps, then one parameter
    halved in place and another's ``.data`` replaced: the consolidated state
    and a sharded checkpoint carry the new values, and a resumed lr=0 step
    moves nothing."""
    import torch.distributed as dist
    groups = make_params(torch.bfloat16)
    opt = ft.ZeroRedundancyOptimizer(groups_for("adamw", groups), optimizer_class=ft.AdamW,
                                     master_weights=True)
    for step in (1, 2):
        set_grads(groups, step)
        opt.step()
    with torch.no_grad():
        groups[1][2].mul_(0.5)                        # in place: its version counter moves
        groups[1][1].data = groups[1][1].data * 0.5   # a new tensor
    opt.consolidate_state_dict(to=0)
    out = {"params": flat(groups), "sd": opt.state_dict() if rank == 0 else None}
    target = os.path.join(workdir, "master-sync")
    opt.save_sharded(target)
    moved = {}
    for how in ("load_sharded", "load_state_dict"):
        fresh = [[torch.nn.Parameter(p.detach().clone()) for p in ps] for ps in groups]
        resumed = ft.ZeroRedundancyOptimizer(groups_for("adamw", fresh),
                                             optimizer_class=ft.AdamW, master_weights=True)
        if how == "load_sharded":
            resumed.load_sharded(target)
        else:
            path = os.path.join(workdir, "master-sync.pt")
            if rank == 0:
                torch.save(out["sd"], path)
            dist.barrier()
            resumed.load_state_dict(torch.load(path, weights_only=True))
        for group in resumed.param_groups:
            group["lr"] = 0.0
        before = flat(fresh)
        set_grads(fresh, 3)
        resumed.step()
        moved[how] = max(float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
                         for a, b in zip(flat(fresh), before))
    out["moved"] = moved
    return out


def check_scaler(ft, rank, world, workdir):
    """torch.amp.GradScaler over SGD with reduce_gradients=True; at step 2 the
    last rank's gradient overflows: every rank halves its scale, and the
    parameters are SGD's on the ranks' mean gradient (step 2 skipped)."""
    params = make_params(torch.float32)[0]
    opt = ft.ZeroRedundancyOptimizer(params, optimizer_class=ft.SGD, lr=0.1,
                                     reduce_gradients=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1000)
    scales, skipped = [], []
    for step in range(1, SCALER_STEPS + 1):
        opt.zero_grad()
        loss = 0
        for index, p in enumerate(params):
            g = gradient(p.shape, torch.float32, step, index, rank, coarse=True)
            if step == SCALER_OVERFLOW_AT and rank == world - 1 and index == SCALER_INF_PARAM:
                g[0] = float("inf")
            loss = loss + (p * g).sum()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        skipped.append(opt.step_skipped)
    return {"params": [p.detach().clone() for p in params], "scales": scales,
            "skipped": skipped}


def check_storage_mismatch(ft, rank, world, workdir):
    """Sharded checkpoints of 8-bit and of float32 state, and of the two 8-bit
    formats, loaded into each other: ValueError on every rank, nothing changed."""
    out = {}
    saved = {label: saved_adam(ft, workdir, f"storage-{label}", **options)
             for label, options in (("int8", {"state_dtype": "int8", "min_8bit_size": 0}),
                                    ("int8c", {"state_dtype": "int8c", "min_8bit_size": 0}),
                                    ("float32", {}))}
    for label, other in (("int8", "float32"), ("float32", "int8"), ("int8", "int8c"),
                         ("int8c", "int8")):
        opt, groups, _ = saved[label]
        before = snapshot(opt, groups)
        out[f"{other} into {label}"] = outcome(lambda: opt.load_sharded(saved[other][2]))
        out[f"{other} into {label}, unchanged"] = same(before, snapshot(opt, groups))
    # a negative companded scale in rank 0's shard (every rank reads it)
    import torch.distributed as dist
    opt, groups, target = saved["int8c"]
    token = torch.load(os.path.join(target, "manifest.pt"), weights_only=True)["token"]
    path = os.path.join(target, f"shard-{token}-00000-of-{world:05d}.pt")
    dist.barrier()
    if rank == 0:
        data = torch.load(path, weights_only=True)
        data["buckets"][0]["state"]["exp_avg.scale"][0] = -1.0
        torch.save(data, path)
    dist.barrier()
    before = snapshot(opt, groups)
    out["negative scale"] = outcome(lambda: opt.load_sharded(target))
    out["negative scale, unchanged"] = same(before, snapshot(opt, groups))
    return out


def check_options_differ(ft, rank, world, workdir):
    """Construction with options that differ on the last rank, or that fail
    there only: ValueError (that rank: its own error) on every rank, the
    parameters untouched; then a construction that agrees steps as usual."""
    odd = rank == world - 1
    out = {}
    cases = {"master_weights": dict(master_weights=odd),
             "state_dtype": dict(state_dtype="int8" if odd else None),
             "state_dtype bfloat16": dict(state_dtype=torch.bfloat16 if odd else None),
             "reduce_gradients": dict(reduce_gradients=odd),
             "max_grad_norm": dict(max_grad_norm=1.0 if odd else None),
             "lr": dict(lr=1e-1 if odd else 1e-2),
             "invalid lr": dict(lr=-1.0 if odd else 1e-3),
             "shapes": dict(extra=odd)}
    for key, options in cases.items():
        groups = make_params(torch.bfloat16)
        if options.pop("extra", False):
            groups[1].append(torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16)))
        before = (flat(groups), [p.data_ptr() for ps in groups for p in ps])
        out[key] = outcome(lambda: ft.ZeroRedundancyOptimizer(
            groups_for("adamw", groups), optimizer_class=ft.AdamW, **options))
        out[f"{key}, unchanged"] = same(
            before, (flat(groups), [p.data_ptr() for ps in groups for p in ps]))
    import torch.distributed as dist
    groups = make_params(torch.bfloat16)
    opt = ft.ZeroRedundancyOptimizer(groups_for("adamw", groups), optimizer_class=ft.AdamW,
                                     master_weights=True)
    set_grads(groups, 1)
    real, calls = dist.all_reduce, []

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    dist.all_reduce = counted
    try:
        opt.step()
    finally:
        dist.all_reduce = real
    out["after"], out["step_all_reduces"] = flat(groups), len(calls)
    return out


def check_hyper_differ(ft, rank, world, workdir):
    """add_param_group and load_sharded with hyper-parameters that differ on
    the last rank: ValueError on every rank naming the group and the key,
    nothing changed; the same calls agreeing work."""
    odd = rank == world - 1
    out = {}
    groups = make_params(torch.float32)
    opt = ft.ZeroRedundancyOptimizer(groups[0], optimizer_class=ft.Adam, lr=1e-2)
    before = snapshot(opt, [groups[0]])
    ptrs = [p.data_ptr() for p in groups[1]]
    out["add_param_group"] = outcome(lambda: opt.add_param_group(
        {"params": groups[1], "betas": (0.8, 0.99) if odd else (0.9, 0.99)}))
    out["add_param_group, unchanged"] = (
        same(before, snapshot(opt, [groups[0]])) and len(opt.param_groups) == 1
        and ptrs == [p.data_ptr() for p in groups[1]] and not any(p in opt.state
                                                                  for p in groups[1]))
    opt.add_param_group({"params": groups[1], "lr": 1e-3})
    for step in (1, 2):
        set_grads(groups, step)
        opt.step()
    out["stepped"] = flat(groups)
    opt.save_sharded(os.path.join(workdir, "hyper-a"))
    opt.param_groups[1]["lr"] = 5e-3
    opt.save_sharded(os.path.join(workdir, "hyper-b"))
    before = snapshot(opt, groups)
    out["load_sharded"] = outcome(
        lambda: opt.load_sharded(os.path.join(workdir, "hyper-b" if odd else "hyper-a")))
    out["load_sharded, unchanged"] = same(before, snapshot(opt, groups))
    opt.load_sharded(os.path.join(workdir, "hyper-a"))
    out["loaded_lr"] = opt.param_groups[1]["lr"]
    return out


class NotATensor:
    """A class a weights_only load refuses to unpickle."""


def check_bad_files(ft, rank, world, workdir):
    """A damaged shard on the last rank, and hostile manifests and shards:
    every rank raises ValueError promptly, nothing changes, and the group
    goes on working."""
    import torch.distributed as dist
    opt, groups, target = saved_adam(ft, workdir, "bad-files")
    manifest_path = os.path.join(target, "manifest.pt")
    manifest = torch.load(manifest_path, weights_only=True)
    token = manifest["token"]

    def shard_path(r):
        return os.path.join(target, f"shard-{token}-{r:05d}-of-{world:05d}.pt")
    good = {r: open(shard_path(r), "rb").read() for r in range(world)}
    dist.barrier()          # every rank has read the files before any is edited
    layout = manifest["layout"]
    edits = {   # name -> (manifest, or None for the saved one; {rank: shard bytes})
        "unpickling": (None, {world - 1: "object"}),
        "truncated": (None, {world - 1: good[world - 1][:200]}),
        "shard_length 0": (dict(manifest, layout=[dict(layout[0], shard_length=0)]
                                + layout[1:]), {}),
        "shard_length str": (dict(manifest, layout=[dict(layout[0], shard_length="64")]
                                  + layout[1:]), {}),
        "length": (dict(manifest, layout=[dict(layout[0], length=layout[0]["length"] - 16)]
                        + layout[1:]), {}),
        "world_size 0": (dict(manifest, world_size=0), {}),
        "token": (dict(manifest, token="../" + token), {}),
        "layout": (dict(manifest, layout="all of it"), {}),
        "steps": (None, {0: "steps"}),
    }
    out = {"errors": {}, "unchanged": {}}
    before = snapshot(opt, groups)
    for name, (edited, shards) in edits.items():
        if rank == 0:
            torch.save(edited if edited is not None else manifest, manifest_path)
        for r, content in shards.items():
            if r != rank:
                continue
            if content == "object":
                torch.save({"format": 1, "token": token, "x": NotATensor()}, shard_path(r))
            elif content == "steps":
                data = torch.load(shard_path(r), weights_only=True)
                data["buckets"][0]["steps"] = torch.full_like(data["buckets"][0]["steps"], -1)
                torch.save(data, shard_path(r))
            else:
                with open(shard_path(r), "wb") as f:
                    f.write(content)
        dist.barrier()
        out["errors"][name] = outcome(lambda: opt.load_sharded(target))
        out["unchanged"][name] = same(before, snapshot(opt, groups))
        dist.barrier()
        if rank == 0:
            torch.save(manifest, manifest_path)
        with open(shard_path(rank), "wb") as f:
            f.write(good[rank])
        dist.barrier()
    opt.load_sharded(target)
    out["reloaded"] = same(before, snapshot(opt, groups))
    set_grads(groups, 2)
    opt.step()
    out["after"] = flat(groups)
    # rank 0 cannot write the manifest: every rank raises, the old one stays
    from fastadapt.torch import _zero_checkpoint as sharded
    real = sharded.atomic_write

    def no_manifest(path, write):
        if path.endswith("manifest.pt"):
            raise OSError(28, "No space left on device (injected)")
        return real(path, write)
    if rank == 0:
        sharded.atomic_write = no_manifest
    try:
        out["manifest_error"] = outcome(lambda: opt.save_sharded(target))
    finally:
        sharded.atomic_write = real
    out["manifest_token"] = torch.load(manifest_path, weights_only=True)["token"] == token
    return out


CHECKS = {"master_sync": check_master_sync, "scaler": check_scaler,
          "storage_mismatch": check_storage_mismatch, "options_differ": check_options_differ,
          "hyper_differ": check_hyper_differ, "bad_files": check_bad_files}
SCALER_STEPS, SCALER_OVERFLOW_AT, SCALER_INF_PARAM = 4, 2, 3


def scenario_checks(rank, world, workdir):
    import fastadapt.torch as ft
    chosen = [n for n in os.environ.get("ZERO_CHECKS", "").split(",") if n] or list(CHECKS)
    return {name: CHECKS[name](ft, rank, world, workdir) for name in chosen}


def scenario_nccl(rank, world, workdir):
    """Adam over CUDA parameters through NCCL (this rank's GPU)."""
    import fastadapt.torch as ft
    groups = [[torch.nn.Parameter(p.detach().cuda()) for p in ps]
              for ps in make_params(torch.float32)]
    opt = ft.ZeroRedundancyOptimizer(groups_for("adam", groups), optimizer_class=ft.Adam)
    for step in range(1, STEPS + 1):
        set_grads(groups, step)
        opt.step()
    return [p.cpu() for p in flat(groups)]


def main(rank, world, init_file, workdir, scenario, timeout_s=20.0):
    import torch.distributed as dist
    if scenario == "nccl":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    dist.init_process_group("nccl" if scenario == "nccl" else "gloo",
                            init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    scenarios = {"main": scenario_main, "fault": scenario_fault, "nccl": scenario_nccl,
                 "checks": scenario_checks,
                 "raise": lambda r, w, d: scenario_raise(r, w, d, timeout_s)}
    out = scenarios[scenario](rank, world, workdir)
    path = os.path.join(workdir, f"{scenario}-rank{rank}.pt")
    torch.save(out, path + ".tmp")
    os.replace(path + ".tmp", path)
    if scenario in ("fault", "raise"):
        # the group is broken (a peer is dead or gone): leave without its
        # destructors, which may abort ("terminate called ...") on the way out
        sys.stdout.flush()
        os._exit(0)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5],
         float(sys.argv[6]) if len(sys.argv) > 6 else 20.0)
