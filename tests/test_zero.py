"""fastadapt.torch.ZeroRedundancyOptimizer over gloo, against the single-process optimizer.

Each world size (2, then 4, then 1) runs once for the whole module: its
ranks (``zero_worker.py``, one process each; the world of 1 in the test's own
process) run every check and save what they found; the tests here compare it
with the single-process ``fastadapt.torch`` optimizer run on the same numbers
(whose agreement with ``torch.optim`` is test_torch.py's business). The worlds run in that order
because each resumes the sharded checkpoint the previous one saved, so the
2 -> 4 -> 1 chain crosses world sizes both ways.
"""
import math
import os
import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():      # pragma: no cover
    pytest.skip("this torch build has no torch.distributed", allow_module_level=True)

import fastadapt  # noqa: E402
import fastadapt.torch as ft  # noqa: E402
from fastadapt.benchmark._zero import launch_ranks  # noqa: E402
from fastadapt.checkpoint import remove_stale_temporaries  # noqa: E402

import zero_worker as W  # noqa: E402

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zero_worker.py")
WORLDS = (2, 4, 1)
# a world must finish in this long (it takes ~20-40 s on 2 busy cores); a stuck
# rank is killed rather than left to hang pytest
LAUNCH_TIMEOUT_S = 400
FAULT_TIMEOUT_S = 15          # the process group's timeout in the fault test
F32_EPS = float(torch.finfo(torch.float32).eps)


def launch(world, workdir, scenario, timeout_s=20):
    """Run ``world`` ranks of ``zero_worker.py``; ``[(returncode, log)]`` per rank."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(WORKER),
                                                        os.environ.get("PYTHONPATH")])))
    init = os.path.join(workdir, f"init-{scenario}")
    status = launch_ranks(
        [[sys.executable, WORKER, str(rank), str(world), init, workdir, scenario,
          str(timeout_s)] for rank in range(world)],
        env, workdir, LAUNCH_TIMEOUT_S, prefix=f"{scenario}-")
    return [(code, log[-4000:]) for code, log in status]


def load(workdir, scenario, rank):
    return torch.load(os.path.join(workdir, f"{scenario}-rank{rank}.pt"), weights_only=False)


# ----------------------------------------------------------------- references
def single(name, config, dtype, steps, grads=None, **extra):
    """The single-process fastadapt.torch optimizer after ``steps`` steps."""
    groups = W.make_params(dtype)
    cls = getattr(ft, fastadapt.RULES[name].torch_name)
    opt = cls(W.groups_for(name, groups), **config, **extra)
    norms = []
    for step in range(1, steps + 1):
        (grads or W.set_grads)(groups, step)
        opt.step()
        norms.append(opt.grad_norm)
    return W.flat(groups), opt, norms


def in_process(workdir):
    """The main scenario as a gloo group of one: this process alone."""
    dist = torch.distributed
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(workdir, 'init')}",
                            rank=0, world_size=1)
    try:
        return W.scenario_main(0, 1, workdir)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """``{world: [rank results]}`` of the main scenario, after building every
    single-process reference (which also fills the kernels' disk cache, so
    the ranks load rather than compile)."""
    refs = {"parity": {}, "bytes": {}}
    for name, config in W.CASES:
        for dtype in W.DTYPES:
            key = W.case_id(name, config, dtype)
            params, opt, _ = single(name, config, dtype, W.STEPS)
            refs["parity"][key] = params
            refs["bytes"][key] = W.storage_bytes(opt)
    # the state dict every rank loads: NAdam after 2 steps, with its parameters
    params, opt, _ = single("nadam", {}, torch.float32, 2)
    sd_bytes = {"params": params, "optimizer": opt.state_dict()}
    out, previous = {}, None
    for world in WORLDS:
        workdir = str(tmp_path_factory.mktemp(f"world{world}"))
        torch.save(sd_bytes, os.path.join(workdir, "single_sd.pt"))
        if previous is not None:
            for name in W.RESUMED:
                shutil.copytree(os.path.join(previous, f"next-{name}"),
                                os.path.join(workdir, f"previous-{name}"))
        if world == 1:       # in this process: it has paid its imports already
            out[world] = [in_process(workdir)]
        else:
            status = launch(world, workdir, "main")
            for rank, (code, log) in enumerate(status):
                assert code == 0, f"world {world}, rank {rank} exited with {code}:\n{log}"
            out[world] = [load(workdir, "main", r) for r in range(world)]
        previous = workdir
    return refs, out


def mismatches(actual, expected):
    return [i for i, (a, e) in enumerate(zip(actual, expected))
            if not (a.dtype == e.dtype and a.shape == e.shape and torch.equal(a, e))]


# ----------------------------------------------------------------- parity
@pytest.mark.parametrize("world", WORLDS)
def test_every_rule_is_bit_identical_to_one_process(worlds, world):
    """3 steps (one with a parameter without gradient), two groups, float32
    and float64, every rule with the options that use all its state: the
    parameters equal the single-process optimizer's bit for bit, on every
    rank."""
    refs, out = worlds
    assert set(out[world][0]["parity"]) == set(refs["parity"])
    bad = {}
    for key, expected in refs["parity"].items():
        for rank in range(world):
            wrong = mismatches(out[world][rank]["parity"][key], expected)
            if wrong:
                bad[f"{key} rank {rank}"] = wrong
    assert not bad, f"parameters that differ (by index): {bad}"


@pytest.mark.parametrize("world", WORLDS)
def test_the_all_gather_path_is_bit_identical_too(worlds, world):
    """gloo gathers the parameters by broadcasts; NCCL by one all_gather,
    forced here on gloo for Adam (AMSGrad)."""
    refs, out = worlds
    expected = refs["parity"][W.case_id("adam", {"amsgrad": True}, torch.float32)]
    for rank in range(world):
        assert not mismatches(out[world][rank]["all_gather"], expected), rank


@pytest.mark.parametrize("world", WORLDS)
def test_16_bit_parameters_shard_the_master_copy_and_the_state(worlds, world):
    """AdamW over bfloat16 parameters with a float32 master copy, float16 ones
    with float32 state, bfloat16 ones with bfloat16 state, and 8-bit state
    (float32 parameters; bfloat16 ones with master weights): parameters
    bit-identical to one process, the consolidated state (master copy
    included) equal to its state dict, and each rank holding its share."""
    _, out = worlds
    for label, (dtype, options) in W.LOWP_CASES.items():
        expected, opt, _ = single("adamw", options, dtype, W.STEPS)
        for rank in range(world):
            params, sd, held = out[world][rank]["lowp"][label]
            assert not mismatches(params, expected), (label, rank)
            whole = W.storage_bytes(opt)
            # each bucket's shard is rounded up to a cache line of the
            # parameters (or to 8-bit state's 256-element blocks, 32-element
            # groups), each state array (<= 4 bytes an element) padded by less
            arrays = 3 if options.get("master_weights") else 2
            line = 64 * 8 // torch.finfo(dtype).bits
            line = {"int8": 256, "int8c": max(32, line)}.get(options.get("state_dtype"), line)
            buckets = sum(len(b) for b in opt._buckets)
            assert 0 <= held - whole / world < buckets * arrays * line * 4, (
                label, rank, held, whole)
        sd = out[world][0]["lowp"][label][1]
        ref = opt.state_dict()
        assert sd["state"].keys() == ref["state"].keys(), label
        for index, entry in ref["state"].items():
            assert sd["state"][index].keys() == entry.keys(), (label, index)
            for name, value in entry.items():
                got = sd["state"][index][name]
                same = got == value if name == ft.SEED_KEY else torch.equal(got, value)
                assert same, (label, index, name)


@pytest.mark.parametrize("world", WORLDS)
def test_a_drawn_rounding_seed_is_rank_0s_on_every_rank(worlds, world):
    _, out = worlds
    seeds = {out[world][rank]["drawn_seed"] for rank in range(world)}
    assert len(seeds) == 1 and isinstance(seeds.pop(), int)


@pytest.mark.parametrize("world", WORLDS)
def test_state_bytes_per_rank_are_a_world_share_of_the_whole(worlds, world):
    """Measured from the state tensors' storages: each rank holds
    ``whole / world`` plus less than one 64-byte line per state array
    (the shards are rounded up to a cache line)."""
    refs, out = worlds
    for key, whole in refs["bytes"].items():
        for rank in range(world):
            measured, reported = out[world][rank]["bytes"][key]
            arrays = out[world][rank]["counts"][key]
            assert measured == reported, key
            assert 0 <= measured - whole / world < 64 * max(arrays, 1), (
                f"{key}, rank {rank}: {measured} bytes against {whole} / {world}")
            if arrays and world > 1:
                assert measured < whole, key


def reduced_grads(world):
    """The mean of the ranks' gradients of the reduce_gradients run: at step
    SKIP_AT rank 0 has none for parameter 2, which counts zeros there (and is
    skipped when no rank has one)."""
    def set_grads(groups, step):
        W.set_grads(groups, step, world=world, skip=False)
        if step == W.SKIP_AT:
            p = groups[0][2]
            p.grad = None if world == 1 else (sum(
                W.gradient(p.shape, torch.float64, step, 2, r, coarse=True)
                for r in range(1, world)) / world).to(p.dtype)
    return set_grads


@pytest.mark.parametrize("world", WORLDS)
def test_reduce_gradients_averages_as_ddp(worlds, world):
    """Each rank's own gradients (multiples of 1/64, so every sum and the
    division by the world size are exact), one of them missing on one rank
    only: the parameters equal one process stepping on the mean gradient,
    bit for bit."""
    _, out = worlds
    expected, _, _ = single("adam", {"weight_decay": 0.1}, torch.float32, W.STEPS,
                            grads=reduced_grads(world))
    for rank in range(world):
        assert not mismatches(out[world][rank]["reduce"], expected), rank


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("reduce", [False, True])
def test_clipping_agrees_to_float32_rounding(worlds, world, reduce):
    """The global norm is summed per shard then across ranks, in another order
    than one process: the norm agrees to float64 rounding (1e-12 relative) and
    the parameters to 2 float32 ulps of their scale (the clipping coefficient
    differs in its last float64 bits, which rounds to at most an ulp of each
    float32 update)."""
    _, out = worlds
    grads = (lambda g, s: W.set_grads(g, s, world=world)) if reduce else None
    expected, _, norms = single("adamw", {}, torch.float32, W.STEPS, grads=grads,
                                max_grad_norm=0.5)
    assert min(norms) > 0.5, "the test must clip"
    for rank in range(world):
        params, got_norms = out[world][rank][f"clip_reduce={reduce}"]
        for a, e in zip(got_norms, norms):
            assert a == pytest.approx(e, rel=1e-12, abs=0)
        for i, (a, e) in enumerate(zip(params, expected)):
            scale = float(e.abs().max()) if e.numel() else 0.0
            torch.testing.assert_close(a, e, rtol=0, atol=2 * F32_EPS * scale,
                                       msg=f"parameter {i}, rank {rank}")


@pytest.mark.parametrize("world", WORLDS)
def test_skip_decisions_are_the_same_on_every_rank(worlds, world):
    """GradScaler's found_inf set on the last rank only (with reduce_gradients,
    and with DDP-like gradients), then an infinite gradient on the last rank
    under clipping: every rank skips, nothing changes; then every rank steps."""
    _, out = worlds
    for rank in range(world):
        (skipped, unchanged, has_state), (skipped2, unchanged2, norm), \
            (skipped3, unchanged3, has_state3), stepped = out[world][rank]["skips"]
        assert skipped and unchanged and not has_state, rank
        assert skipped2 and unchanged2 and not math.isfinite(norm), rank
        assert skipped3 and unchanged3 and not has_state3, rank
        assert stepped, rank


@pytest.mark.parametrize("world", WORLDS)
def test_add_param_group_shards_the_new_group(worlds, world):
    _, out = worlds
    groups = W.make_params(torch.float32)
    opt = ft.RMSprop(groups[0], momentum=0.5)
    opt.add_param_group({"params": groups[1], "lr": 1e-3})
    for step in range(1, W.STEPS + 1):
        W.set_grads(groups, step)
        opt.step()
    for rank in range(world):
        assert not mismatches(out[world][rank]["added"], W.flat(groups)), rank


# ----------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("world", WORLDS)
def test_consolidated_state_dict_is_the_one_process_state_dict(worlds, world):
    _, out = worlds
    sd = out[world][world - 1]["consolidated"]
    assert "consolidate_state_dict" in out[world][0]["unconsolidated"]
    params, opt, _ = single("adam", {"amsgrad": True}, torch.float32, W.STEPS)
    expected = opt.state_dict()
    assert sd["param_groups"] == expected["param_groups"]
    assert sd["state"].keys() == expected["state"].keys()
    for index, entry in expected["state"].items():
        assert sd["state"][index].keys() == entry.keys()
        for name, value in entry.items():
            assert torch.equal(sd["state"][index][name], value), (index, name)
    # loads into torch.optim.Adam, and into fastadapt.torch.Adam, which then
    # steps as the optimizer that never stopped
    groups = W.make_params(torch.float32)
    flat_params = [p for ps in groups for p in ps]
    for p, v in zip(flat_params, params):
        p.data.copy_(v)
    reference = torch.optim.Adam(W.groups_for("adam", groups), amsgrad=True)
    reference.load_state_dict(sd)
    for index, entry in expected["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"):
            assert torch.equal(reference.state[flat_params[index]][name], entry[name])
    resumed = ft.Adam(W.groups_for("adam", groups), amsgrad=True)
    resumed.load_state_dict(sd)
    W.set_grads(groups, W.STEPS + 1)
    resumed.step()
    W.set_grads([g["params"] for g in opt.param_groups], W.STEPS + 1)
    opt.step()
    assert not mismatches(W.flat(groups),
                          [p.detach() for g in opt.param_groups for p in g["params"]])


@pytest.mark.parametrize("world", WORLDS)
def test_a_one_process_state_dict_loads_on_every_rank(worlds, world):
    """NAdam after 2 single-process steps, loaded by every rank, 2 more steps:
    the trajectory of 4 single-process steps (mu_product included)."""
    _, out = worlds
    expected, _, _ = single("nadam", {}, torch.float32, 4)
    for rank in range(world):
        assert not mismatches(out[world][rank]["loaded"], expected), rank


def test_resuming_with_another_world_size_keeps_the_trajectory(worlds):
    """World 2 steps twice and saves its shards; world 4 loads them, steps
    twice and saves; world 1 loads those and steps twice: after each, the
    parameters are the single-process run's after 2, 4 and 6 steps."""
    _, out = worlds
    for name, options in W.RESUMED.items():
        options = dict(options)
        dtype = options.pop("dtype", torch.float32)
        for world, steps in zip(WORLDS, (2, 4, 6)):
            expected, _, _ = single(name, options, dtype, steps)
            for rank in range(world):
                done, params = out[world][rank]["resumed"][name]
                assert done == steps, (name, world)
                assert not mismatches(params, expected), (name, world, rank)


# ----------------------------------------------------------------- errors
def test_bad_input_raises_clear_errors(worlds):
    _, out = worlds
    for world in WORLDS:
        errors = out[world][0]["errors"]
        assert errors.pop("unchanged") is True
        for key, message in errors.items():
            assert message is not None, f"{key}: no error raised (world {world})"
        assert "params" in errors["mixed_devices"] and "one device" in errors["mixed_devices"]
        assert "param group 1" in errors["mixed_groups"]
        assert "int32" in errors["int_params"] and "floating-point" in errors["int_params"]
        assert "stochastic_rounding" in errors["stochastic_rounding"] and \
            "bfloat16 / float16" in errors["stochastic_rounding"]
        assert "optimizer_class" in errors["torch_class"] and \
            "fastadapt.torch" in errors["torch_class"]
        assert "optimizer_class" in errors["not_a_class"]
        assert "betas" in errors["unknown_option"]
        assert "lr" in errors["bad_lr"]
        assert "reduce_gradients" in errors["reduce_gradients"]
        assert "to must be a rank" in errors["bad_to"]


def test_without_a_process_group_nothing_is_built():
    p = torch.nn.Parameter(torch.ones(3))
    ptr = p.data_ptr()
    with pytest.raises(ValueError, match="process_group: torch.distributed is not initialised"):
        ft.ZeroRedundancyOptimizer([p])
    with pytest.raises(TypeError, match="optimizer_class must be a fastadapt.torch"):
        ft.ZeroRedundancyOptimizer([p], optimizer_class=torch.optim.Adam)
    assert p.data_ptr() == ptr and torch.equal(p.detach(), torch.ones(3))


def test_shards_tile_the_buffer_in_whole_units():
    from fastadapt.torch._sharing import WholeBuffer
    from fastadapt.torch._zero_collectives import Shards
    for used, align, world in ((0, 16, 2), (1, 16, 3), (1000, 16, 4), (4097, 256, 3), (64, 32, 1)):
        spans = [Shards(r, world).span(used, align) for r in range(world)]
        length = spans[0].length
        assert length >= max(used, 1) and length == world * spans[0].size
        assert [s.start for s in spans] == [r * spans[0].size for r in range(world)]
        assert all(s.size % align == 0 and s.length == length and not s.whole for s in spans)
        for s in spans:                 # clip: the part of a range in the shard, or empty
            assert s.clip(0, length) == (s.start, s.stop)
            assert s.clip(length, length + 5) == (s.start, s.start)
    whole = WholeBuffer().span(1000, 16)
    assert (whole.start, whole.stop, whole.length, whole.whole) == (0, 1000, 1000, True)
    assert whole.clip(10, 20) == (10, 20)


def test_the_sharded_optimizer_overrides_only_torch_optimizer_methods():
    """Sharding is given to the core as values (a span and an agreement): the
    sharded class overrides no method of the core but torch.optim.Optimizer's
    own (its public API), so the core carries no hook for it."""
    core = {name for cls in ft.FlatOptimizer.__mro__ if cls is not torch.optim.Optimizer
            and cls is not object for name in vars(cls)}
    overridden = core & set(vars(ft.ZeroRedundancyOptimizer))
    allowed = set(vars(torch.optim.Optimizer)) | {"__doc__", "__module__", "__qualname__"}
    assert overridden <= allowed, sorted(overridden - allowed)


def test_import_fastadapt_does_not_import_torch():
    code = "import sys, fastadapt; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "False", result.stderr


# ----------------------------------------------------------------- faults
def test_a_killed_rank_makes_the_other_fail_within_the_timeout(tmp_path):
    """Rank 1 is killed in the middle of writing its shard (after a complete
    save): rank 0 raises CollectiveError within the process group's timeout,
    in the save and in the next step; the directory still holds the earlier,
    complete checkpoint (its manifest and both its shards), and the killed
    rank's temporary file is recognised as stale."""
    status = launch(2, str(tmp_path), "fault", timeout_s=FAULT_TIMEOUT_S)
    (code0, log0), (code1, _) = status
    assert code1 == -9, "rank 1 should have been killed"
    assert code0 == 0, log0
    out = load(str(tmp_path), "fault", 0)
    assert out["save_error"] and out["save_error"].startswith("CollectiveError"), out
    assert "save_sharded" in out["save_error"]
    assert out["save_error_after_s"] < FAULT_TIMEOUT_S + 10
    assert out["step_error"] and out["step_error"].startswith("CollectiveError"), out
    assert out["step_error_after_s"] < FAULT_TIMEOUT_S + 10
    ckpt = tmp_path / "ckpt"
    manifest = torch.load(ckpt / "manifest.pt", weights_only=True)
    token = out["complete"]
    assert manifest["token"] == token and manifest["world_size"] == 2
    for rank in range(2):
        shard = torch.load(ckpt / f"shard-{token}-{rank:05d}-of-00002.pt", weights_only=True)
        assert shard["token"] == token and shard["rank"] == rank
    stale = remove_stale_temporaries(str(ckpt))
    assert len(stale) == 1 and stale[0].startswith(".shard-"), stale


@pytest.mark.slow
def test_a_rank_that_raises_and_stays_makes_the_other_fail_at_the_timeout(tmp_path):
    """Rank 1 raises in the middle of a step and lingers (no connection closes):
    rank 0 raises CollectiveError once the process group's timeout (5 s) passes."""
    status = launch(2, str(tmp_path), "raise", timeout_s=5)
    assert [code for code, _ in status] == [0, 0], status
    assert load(str(tmp_path), "raise", 1)["raised"] == "injected failure in the update"
    out = load(str(tmp_path), "raise", 0)
    assert out["error"] and out["error"].startswith("CollectiveError"), out
    assert "all_gather" in out["error"]
    assert 4 <= out["after_s"] < 5 + 10, out


@pytest.mark.slow
def test_bench_section_runs_at_a_tiny_size():
    """The ``zero`` bench section end to end (two rank processes) on three
    small arrays: both optimizers timed, state bytes per rank measured, the
    report renders. fastadapt's shards hold half the state each, to a line."""
    from fastadapt.benchmark import _report, _zero
    data = _zero.run(shapes=[(1000,), (7,), (3, 5)], rounds=2, progress=lambda s: None,
                     timeout_s=LAUNCH_TIMEOUT_S)
    assert "unavailable" not in data, data
    assert data["elements"] == 1022 and data["world_size"] == 2
    for name in ("fastadapt", "torch_fused"):
        entry = data["results"][name]
        assert entry["median_s"] > 0 and len(entry["state_bytes_per_rank"]) == 2
    # Adam's two state arrays over a 1,040-element flat buffer (segments of
    # 1000, 7 and 15 padded to 16-element lines), split in two 528-element halves
    assert data["results"]["fastadapt"]["state_bytes_per_rank"] == [2 * 528 * 4] * 2
    text = _zero.markdown(data)
    assert "fastadapt.torch.ZeroRedundancyOptimizer" in text and "x |" in text
    assert any("ZeRO" in title for title, _ in _report.sections_text({"zero": data}))


# ----------------------------------------------------------------- agreement across ranks
CHECKS_TIMEOUT_S = 30     # the process group's timeout in the checks (a hang fails them)
PROMPT_S = 10             # a failure every rank must see well before that timeout


@pytest.fixture(scope="module", params=[2, pytest.param(3, marks=pytest.mark.slow)])
def checks(request, tmp_path_factory):
    """``(world, [rank results])`` of zero_worker's agreement checks, every
    check in one launch of ``world`` ranks."""
    world = request.param
    workdir = str(tmp_path_factory.mktemp(f"checks{world}"))
    status = launch(world, workdir, "checks", timeout_s=CHECKS_TIMEOUT_S)
    for rank, (code, log) in enumerate(status):
        assert code == 0, f"world {world}, rank {rank} exited with {code}:\n{log}"
    return world, [load(workdir, "checks", rank) for rank in range(world)]


def raised_everywhere(results, kind="ValueError", within=None):
    """Every rank's outcome is ``kind`` (within ``within`` seconds); their
    messages, by rank."""
    for rank, (name, message, seconds) in enumerate(results):
        assert name == kind, f"rank {rank}: {name}: {message}"
        assert within is None or seconds < within, f"rank {rank} took {seconds:.1f} s"
    return [message for _, message, _ in results]


def test_checkpoints_carry_parameters_changed_since_the_last_step(checks):
    """bfloat16 parameters with master weights: after two steps one is halved
    in place and another's ``.data`` replaced. The consolidated state's
    master copy rounds to every parameter, and resuming from it or from a
    sharded checkpoint, an lr=0 step moves nothing (it moved parameters by
    up to 2.1 when the checkpoints carried the master copy of the last
    step)."""
    world, out = checks
    for rank in range(world):
        assert out[rank]["master_sync"]["moved"] == {"load_sharded": 0.0,
                                                     "load_state_dict": 0.0}, rank
    params = out[0]["master_sync"]["params"]
    sd = out[0]["master_sync"]["sd"]
    assert len(sd["state"]) == len(params)
    for index, p in enumerate(params):
        master = sd["state"][index][ft.MASTER_KEY]
        assert master.dtype == torch.float32
        assert torch.equal(master.to(torch.bfloat16), p), index
    # and one process resumes from it: an lr=0 step keeps every parameter
    groups = [[torch.nn.Parameter(p.clone()) for p in params[:len(W.SHAPES[0])]],
              [torch.nn.Parameter(p.clone()) for p in params[len(W.SHAPES[0]):]]]
    opt = ft.AdamW(W.groups_for("adamw", groups), master_weights=True)
    opt.load_state_dict(sd)
    for group in opt.param_groups:
        group["lr"] = 0.0
    W.set_grads(groups, 3)
    opt.step()
    assert not mismatches(W.flat(groups), params)


def test_every_rank_sees_the_agreed_found_inf(checks):
    """torch.amp.GradScaler over SGD with reduce_gradients=True, one rank's
    gradient infinite at step 2: every rank skips that step and halves its
    scale (1024, 512, 512, 512 on every rank; one rank kept 1024 before), so
    the next reductions average gradients of one scale, and the parameters
    equal one process's SGD on the ranks' mean gradient, bit for bit
    (coarse gradients and power-of-2 scales: every operation is exact, the
    division by the world size rounds alike in both)."""
    world, out = checks
    params = W.make_params(torch.float32)[0]
    opt = ft.SGD(params, lr=0.1)
    for step in range(1, W.SCALER_STEPS + 1):
        if step == W.SCALER_OVERFLOW_AT:
            continue
        for index, p in enumerate(params):
            total = sum(W.gradient(p.shape, torch.float64, step, index, r, coarse=True)
                        for r in range(world))
            p.grad = total.to(torch.float32) / world
        opt.step()
    for rank in range(world):
        got = out[rank]["scaler"]
        assert got["scales"] == [1024.0, 512.0, 512.0, 512.0], (rank, got["scales"])
        assert got["skipped"] == [False, True, False, False], rank
        assert not mismatches(got["params"], [p.detach() for p in params]), rank


def test_sharded_8_bit_and_float32_state_do_not_load_into_each_other(checks):
    world, out = checks
    for direction in ("int8 into float32", "float32 into int8", "int8c into int8",
                      "int8 into int8c"):
        messages = raised_everywhere([out[r]["storage_mismatch"][direction]
                                      for r in range(world)])
        saved, _, into = direction.split()
        for rank, message in enumerate(messages):
            assert f"'{saved}'" in message and f"'{into}'" in message, (rank, message)
            assert out[rank]["storage_mismatch"][f"{direction}, unchanged"], (direction, rank)
    # a shard whose companded scale is negative: refused, naming it, nothing changed
    messages = raised_everywhere([out[r]["storage_mismatch"]["negative scale"]
                                  for r in range(world)])
    for rank, message in enumerate(messages):
        assert "exp_avg.scale" in message and "finite and >= 0" in message, (rank, message)
        assert out[rank]["storage_mismatch"]["negative scale, unchanged"], rank


def test_options_that_differ_across_ranks_raise_on_every_rank(checks):
    """Options (storage, reduce_gradients, max_grad_norm), a hyper-parameter
    or the parameters' shapes differing on the last rank, or an invalid
    option there only: every rank raises ValueError at construction, naming
    what differs (and each rank's value) or the rank that failed, and no
    parameter is touched; a construction that agrees then steps."""
    world, out = checks
    # what differs: (the other ranks' value, the last rank's)
    named = {   # case: (what differs, the other ranks' value, the last rank's)
        "master_weights": ("master_weights", "False", "True"),
        "state_dtype": ("state_dtype", "None", "'int8'"),
        "state_dtype bfloat16": ("state_dtype", "None", "'bfloat16'"),
        "reduce_gradients": ("reduce_gradients", "False", "True"),
        "max_grad_norm": ("max_grad_norm", "None", "1.0"),
        "lr": ("param group 0: lr", "0.01", "0.1"),
        "shapes": ("param group 1: parameters", "3 tensors", "4 tensors")}
    for key, (what, usual, odd) in named.items():
        messages = raised_everywhere([out[r]["options_differ"][key] for r in range(world)])
        for rank, message in enumerate(messages):
            others = "rank 0" if world == 2 else f"ranks {', '.join(map(str, range(world - 1)))}"
            assert f"{what} ({others}: {usual}" in message, (key, rank, message)
            assert f"; rank {world - 1}: {odd}" in message, (key, rank, message)
            assert out[rank]["options_differ"][f"{key}, unchanged"], (key, rank)
    messages = raised_everywhere([out[r]["options_differ"]["invalid lr"] for r in range(world)])
    assert "invalid lr" in messages[-1] and "failed on rank" not in messages[-1]
    for message in messages[:-1]:
        assert f"failed on rank {world - 1}" in message and "invalid lr" in message
    for rank in range(world):
        assert not mismatches(out[rank]["options_differ"]["after"],
                              out[0]["options_differ"]["after"]), rank
        # the agreement costs the step nothing: no all-reduce without
        # reduce_gradients, clipping or GradScaler
        assert out[rank]["options_differ"]["step_all_reduces"] == 0, rank


def test_hyper_parameters_are_checked_at_add_param_group_and_load_sharded(checks):
    """A group added with other betas on the last rank, and a sharded
    checkpoint with another lr read there: ValueError on every rank naming
    the group and the key, nothing changed; agreeing calls then work."""
    world, out = checks
    for key, what, odd in (("add_param_group", "param group 1: betas (", "(0.8, 0.99)"),
                           ("load_sharded", "param group 1: lr (", "0.005")):
        messages = raised_everywhere([out[r]["hyper_differ"][key] for r in range(world)])
        for rank, message in enumerate(messages):
            assert what in message and f"rank {world - 1}: {odd}" in message, (rank, message)
            assert out[rank]["hyper_differ"][f"{key}, unchanged"], (key, rank)
    for rank in range(world):
        assert out[rank]["hyper_differ"]["loaded_lr"] == 1e-3
        assert not mismatches(out[rank]["hyper_differ"]["stepped"],
                              out[0]["hyper_differ"]["stepped"])


BAD_FILES = {"unpickling": "is damaged or is not a file save_sharded wrote",
             "truncated": "is damaged or is not a file save_sharded wrote",
             "shard_length 0": "shard_length must be an int >= 1, got 0",
             "shard_length str": "shard_length must be an int >= 1, got '64'",
             "length": "length must be shard_length x world_size",
             "world_size 0": "world_size must be an int >= 1, got 0",
             "token": "token must be a string of hex digits",
             "layout": "layout must be a list of dicts",
             "steps": "steps must be whole numbers >= 0"}


def test_damaged_or_hostile_checkpoint_files_raise_on_every_rank(checks):
    """A shard that will not unpickle (weights_only) or is truncated on the
    last rank only, hostile manifest fields (shard_length 0 divided by
    before), a shard with negative step counts: every rank raises ValueError
    within seconds (the rank that read the file names the field; the others
    name that rank), nothing changes, the message never suggests
    weights_only=False, and the group loads the intact checkpoint and steps
    after."""
    world, out = checks
    for name, text in BAD_FILES.items():
        messages = raised_everywhere([out[r]["bad_files"]["errors"][name] for r in range(world)],
                                     within=PROMPT_S)
        assert any(text in m and "failed on rank" not in m for m in messages), (name, messages)
        for rank, message in enumerate(messages):
            assert text in message, (name, rank, message)
            assert "weights_only" not in message.replace("weights_only=True", ""), message
            assert out[rank]["bad_files"]["unchanged"][name], (name, rank)
    for rank in range(world):
        assert out[rank]["bad_files"]["reloaded"], rank
        assert not mismatches(out[rank]["bad_files"]["after"], out[0]["bad_files"]["after"])


def test_a_manifest_that_cannot_be_written_raises_on_every_rank(checks):
    """Rank 0 cannot write the manifest (disk full): it raises its OSError,
    every other rank a RuntimeError naming it, within seconds (they waited
    in a barrier for the process group's timeout before), and the previous
    manifest stays."""
    world, out = checks
    results = [out[r]["bad_files"]["manifest_error"] for r in range(world)]
    assert results[0][0] == "OSError" and "No space left" in results[0][1], results[0]
    raised_everywhere(results[1:], kind="RuntimeError", within=PROMPT_S)
    for rank in range(1, world):
        assert "failed on rank 0" in results[rank][1] and "No space left" in results[rank][1]
    assert all(out[r]["bad_files"]["manifest_token"] for r in range(world))


# ----------------------------------------------------------------- GPU
@pytest.mark.gpu
def test_nccl_matches_one_process(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    status = launch(1, str(tmp_path), "nccl")
    assert status[0][0] == 0, status[0][1]
    got = load(str(tmp_path), "nccl", 0)
    groups = [[p.cuda() for p in ps] for ps in W.make_params(torch.float32)]
    groups = [[torch.nn.Parameter(p.detach()) for p in ps] for ps in groups]
    opt = ft.Adam(W.groups_for("adam", groups))
    for step in range(1, W.STEPS + 1):
        W.set_grads(groups, step)
        opt.step()
    assert not mismatches([p.cpu() for p in got], [p.cpu() for p in W.flat(groups)])
