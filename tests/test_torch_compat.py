"""fastadapt.torch behaves as torch.optim beyond the numbers of a training loop.

What torch's own optimizer tests check (gradients are never replaced or written,
custom keys of ``optimizer.state``, AdamW's ``decoupled_weight_decay``, SGD's
empty state, the constructors' errors, deepcopy and pickling), each tested
against torch.optim itself. The constructors' error cases and a parity run
of every CPU configuration come from torch's ``optim_db``
(``torch.testing._internal.common_optimizers``, shipped with torch; it needs
``expecttest``, one of the ``[test]`` extras).

Tolerance: parameters after a few steps (at most 25) agree with torch.optim's
single-tensor path to 1e-6 of their scale (float32: an ulp or so per step,
from torch's fused multiply-adds, see tests/test_torch.py).
"""
import copy
import datetime
import io
import warnings

import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402

import fastadapt  # noqa: E402
import fastadapt.torch as ft  # noqa: E402

TOL = 1e-6
# the classes torch.optim has (the oracle)
TORCH_CLASSES = [rule.torch_name for rule in fastadapt.RULES.values()
                 if isinstance(getattr(torch.optim, rule.torch_name or "", None), type)]
# those that take dense gradients (SparseAdam takes sparse ones only: tests/test_torch_sparse.py)
DENSE_CLASSES = [name for name in TORCH_CLASSES
                 if not getattr(fastadapt, name).rule.torch_sparse_grad]


def assert_close(actual, expected):
    """Within TOL of the largest magnitude; a step count may be float64 on
    fastadapt's side (its counts are exact past 2**24, torch's float32 ones not)."""
    scale = max(float(expected.detach().abs().max()), 1e-30)
    torch.testing.assert_close(actual.detach(), expected.detach(), rtol=0, atol=TOL * scale,
                               check_dtype=not (actual.dtype == torch.float64
                                                and expected.dtype == torch.float32
                                                and actual.dim() == 0))


def params_pair(shapes=((3,), (2, 2)), seed=0):
    """Two sets of equal leaf parameters (one for torch, one for fastadapt)."""
    g = torch.Generator().manual_seed(seed)
    values = [torch.randn(s, generator=g) for s in shapes]
    return [nn.Parameter(v.clone()) for v in values], [nn.Parameter(v.clone()) for v in values]


# ----------------------------------------------------------------- gradients
def test_sgd_reads_the_users_gradient_tensor_at_every_step():
    """``p.grad = buf`` once, ``buf`` refreshed in place before each step: torch
    reads 1, 2, 3 and ends at -6 (the issue's example)."""
    for cls in (torch.optim.SGD, ft.SGD):
        p = nn.Parameter(torch.zeros(3))
        buf = torch.zeros(3)
        p.grad = buf
        opt = cls([p], lr=1.0)
        for g in (1.0, 2.0, 3.0):
            buf.fill_(g)
            opt.step()
        assert p.grad is buf
        assert torch.equal(p.detach(), torch.full((3,), -6.0)), cls


@pytest.mark.parametrize("name", DENSE_CLASSES)
def test_a_users_gradient_is_the_one_every_step_reads_and_is_never_written(name):
    """A gradient assigned before construction and one assigned after stay
    ``.grad``; refreshed in place, each step reads the new values; the steps
    never write them (torch's ``test_grads_are_never_inplaced_into``)."""
    theirs, ours = params_pair()
    bufs = [torch.zeros_like(p) for p in ours]
    ours[0].grad = bufs[0]                      # before the optimizer exists
    opt = getattr(ft, name)(ours)
    ref = getattr(torch.optim, name)(theirs, foreach=False)
    ours[1].grad = bufs[1]                      # after
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        values = [torch.randn(p.shape, generator=g) for p in ours]
        for buf, v, q in zip(bufs, values, theirs):
            buf.copy_(v)
            q.grad = v.clone()
        opt.step()
        ref.step()
        for p, buf, v in zip(ours, bufs, values):
            assert p.grad is buf
            assert torch.equal(buf, v)          # read, not written
    for p, q in zip(ours, theirs):
        assert_close(p, q)


def test_grad_scaler_and_clipping_leave_the_users_gradient_unwritten():
    """Under GradScaler (unscale in the step) and ``max_grad_norm``, the step
    computes with the unscaled, clipped gradient and the caller's tensor keeps
    its scaled values."""
    scale, max_norm = 4.0, 0.5
    theirs, ours = params_pair()
    opt = ft.Adam(ours, lr=0.1, max_grad_norm=max_norm)
    ref = torch.optim.Adam(theirs, lr=0.1, foreach=False)
    scaler = torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=1000)
    scaler.scale(torch.zeros(()))               # the scale exists from here on
    g = torch.Generator().manual_seed(2)
    bufs = [torch.zeros_like(p) for p in ours]
    for p, buf in zip(ours, bufs):
        p.grad = buf
    for _ in range(3):
        values = [torch.randn(p.shape, generator=g) * scale for p in ours]
        for buf, v, q in zip(bufs, values, theirs):
            buf.copy_(v)
            q.grad = v / scale
        torch.nn.utils.clip_grad_norm_(theirs, max_norm)
        scaler.step(opt)
        scaler.update()
        ref.step()
        for p, buf, v in zip(ours, bufs, values):
            assert p.grad is buf and torch.equal(buf, v)
    for p, q in zip(ours, theirs):
        assert_close(p, q)


def test_autograds_fresh_gradients_become_the_flat_buffers_views():
    """The zero-copy path: a gradient autograd allocates is taken into the flat
    buffer during the backward; ``zero_grad(set_to_none=False)`` then zeroes
    the same tensors in place (as torch) and the next backward accumulates
    straight into the flat buffer, with nothing to copy at the step."""
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    opt = ft.Adam(model.parameters(), lr=0.01)
    bucket = opt._buckets[0][0]
    x = torch.randn(5, 4)
    model(x).pow(2).sum().backward()
    assert all(p.grad is v for p, v in zip(bucket.params, bucket.grad_views))
    grads = [p.grad for p in model.parameters()]
    expected = [g.clone() for g in grads]
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is g and not g.any() for p, g in zip(model.parameters(), grads))
    model(x).pow(2).sum().backward()
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))
    assert bucket.scan()[2] == []               # no copies
    # a gradient with a graph (create_graph=True) is left as autograd made it
    opt.zero_grad()
    with torch.no_grad():
        for p, q in zip(model.parameters(), before):
            p.copy_(q)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")         # torch's note on create_graph's cycle
        model(x).pow(2).sum().backward(create_graph=True)
    assert all(p.grad.requires_grad for p in model.parameters())
    assert not any(p.grad is v for p, v in zip(bucket.params, bucket.grad_views))
    for p, e in zip(model.parameters(), expected):
        assert torch.allclose(p.grad.detach(), e)   # the first backward's, again
    opt.zero_grad()                             # breaks the cycle create_graph made


def test_zero_grad_keeps_and_zeroes_a_users_tensor_and_backward_accumulates_into_it():
    """Torch's semantics for a gradient the caller assigned: ``zero_grad(
    set_to_none=False)`` zeroes it in place and keeps it; a backward adds into
    it (it is never replaced by the flat buffer's view)."""
    lin = nn.Linear(3, 1, bias=False)
    opt = ft.SGD(lin.parameters(), lr=0.1)
    buf = torch.full_like(lin.weight, 5.0)
    lin.weight.grad = buf
    opt.zero_grad(set_to_none=False)
    assert lin.weight.grad is buf and not buf.any()
    x = torch.ones(1, 3)
    lin(x).sum().backward()
    assert lin.weight.grad is buf and torch.equal(buf, x)
    lin(x).sum().backward()
    assert lin.weight.grad is buf and torch.equal(buf, 2 * x)


# ----------------------------------------------------------------- optimizer.state's keys
def custom_state_run(cls, params):
    """Two steps with a state-dict pre hook writing a non-parameter key and
    custom per-parameter keys; returns (optimizer, its state dict)."""
    opt = cls(params, lr=0.1)
    opt.register_state_dict_pre_hook(lambda o: o.state.__setitem__("test", 1))
    for _ in range(2):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
    opt.state[params[0]]["note"] = torch.tensor([2.0, 3.0], dtype=torch.float64)
    opt.state[params[1]]["tag"] = ("x", 1)
    return opt, opt.state_dict()


@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_custom_state_keys_are_kept_as_torch_keeps_them(name):
    theirs, ours = params_pair()
    ref, ref_sd = custom_state_run(getattr(torch.optim, name), theirs)
    opt, sd = custom_state_run(getattr(ft, name), ours)
    assert set(sd["state"]) == set(ref_sd["state"]) == {0, 1, "test"}
    for key in (0, 1):
        assert set(sd["state"][key]) == set(ref_sd["state"][key])
    assert sd["state"]["test"] == 1
    assert sd["state"][1]["tag"] == ("x", 1)
    # loading: the non-parameter key as it is, tensors cast to the parameter's dtype
    for source in (sd, ref_sd):
        fresh = [nn.Parameter(p.detach().clone()) for p in ours]
        other = getattr(ft, name)(fresh, lr=0.1)
        other.register_load_state_dict_post_hook(
            lambda o: o.state.__setitem__("ran_load_state_dict_post_hook", True))
        other.load_state_dict(copy.deepcopy(source))
        assert other.state["test"] == 1 and other.state["ran_load_state_dict_post_hook"]
        note = other.state[fresh[0]]["note"]
        assert note.dtype == torch.float32 and torch.equal(note, torch.tensor([2.0, 3.0]))
        assert other.state[fresh[1]]["tag"] == ("x", 1)
    # torch.optim loads fastadapt's dict with the same keys
    fresh = [nn.Parameter(p.detach().clone()) for p in theirs]
    back = getattr(torch.optim, name)(fresh, lr=0.1)
    back.load_state_dict(copy.deepcopy(sd))
    assert back.state["test"] == 1 and "note" in back.state[fresh[0]]


def test_loading_replaces_the_non_parameter_keys_as_torch_does():
    theirs, ours = params_pair()
    for cls, params in ((torch.optim.Adam, theirs), (ft.Adam, ours)):
        opt = cls(params)
        sd = opt.state_dict()
        opt.state["old"] = 1
        opt.load_state_dict(sd)
        assert "old" not in opt.state


def test_torchs_optimizer_hooks_run():
    """Step, state-dict and load-state-dict hooks (torch's machinery, on the
    subclass): each runs, and a load pre hook's returned dict is the one loaded."""
    p = nn.Parameter(torch.zeros(2))
    opt = ft.Adam([p], lr=0.1)
    seen = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append("step_pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: seen.append("step_post"))
    opt.register_state_dict_post_hook(lambda o, sd: {**sd, "extra": True})

    def lower_lr(o, sd):
        sd = copy.deepcopy(sd)
        sd["param_groups"][0]["lr"] = 0.003
        return sd
    opt.register_load_state_dict_pre_hook(lower_lr)
    p.grad = torch.ones(2)
    opt.step()
    assert seen == ["step_pre", "step_post"]
    sd = opt.state_dict()
    assert sd["extra"] is True
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["lr"] == 0.003


def test_the_step_is_profiled_and_hooked_as_torchs():
    """Under torch's profiler a step records torch's ``Optimizer.step#<class>.step``
    event, and global step hooks run, as for torch.optim's classes."""
    from torch.optim.optimizer import (register_optimizer_step_post_hook,
                                       register_optimizer_step_pre_hook)
    for cls in (torch.optim.Adam, ft.Adam, ft.SGD):
        p = nn.Parameter(torch.zeros(3))
        opt = cls([p], lr=0.1)
        p.grad = torch.ones(3)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            opt.step()
        name = f"Optimizer.step#{type(opt).__name__}.step"
        assert name in {e.name for e in prof.events()}, cls
        seen = []
        handles = [register_optimizer_step_pre_hook(lambda o, a, k: seen.append("pre")),
                   register_optimizer_step_post_hook(lambda o, a, k: seen.append("post"))]
        try:
            opt.step()
        finally:
            for h in handles:
                h.remove()
        assert seen == ["pre", "post"], cls


def test_a_plain_step_enters_no_profiler_event(monkeypatch):
    """With no profiler running and no step hook registered, a step skips
    torch's profiler event (a dispatched op, most of a small step's cost);
    with a hook, torch's wrapper runs as it is."""
    entered = []
    real = torch.autograd.profiler.record_function

    def counting(*args, **kwargs):
        entered.append(args)
        return real(*args, **kwargs)
    monkeypatch.setattr(torch.autograd.profiler, "record_function", counting)
    p = nn.Parameter(torch.zeros(3))
    opt = ft.Adam([p])
    p.grad = torch.ones(3)
    opt.step()
    assert entered == []
    handle = opt.register_step_post_hook(lambda o, a, k: None)
    opt.step()
    handle.remove()
    assert len(entered) == 1
    assert opt.state[p]["step"] == 2


def test_a_torch_without_the_hook_registries_keeps_torchs_wrapper(monkeypatch):
    """Where torch keeps its global step hooks or its profiler flag elsewhere,
    every step goes through torch's own wrapper (nothing is skipped blind)."""
    from fastadapt.torch import _conventions

    def step(self):
        pass
    for hooks, enabled in (((None, None), _conventions._PROFILER_ENABLED),
                           (_conventions._GLOBAL_STEP_HOOKS, None)):
        monkeypatch.setattr(_conventions, "_GLOBAL_STEP_HOOKS", hooks)
        monkeypatch.setattr(_conventions, "_PROFILER_ENABLED", enabled)
        wrapped = _conventions.profile_hook_step(step)
        assert wrapped.__code__ is torch.optim.Optimizer.profile_hook_step(step).__code__


# ----------------------------------------------------------------- AdamW's flag
def train(opt, params, steps, seed=3):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()


def test_adamw_says_decoupled_so_torchs_adam_loading_its_dict_computes_adamw():
    theirs, ours = params_pair()
    opt = ft.AdamW(ours, lr=0.1, weight_decay=0.5)
    assert opt.param_groups[0]["decoupled_weight_decay"] is True
    train(opt, ours, 3)
    sd = opt.state_dict()
    assert sd["param_groups"][0]["decoupled_weight_decay"] is True
    # torch's Adam and AdamW, each loading it, then train alike
    a_params = [nn.Parameter(p.detach().clone()) for p in ours]
    w_params = [nn.Parameter(p.detach().clone()) for p in ours]
    adam = torch.optim.Adam(a_params, foreach=False)
    adamw = torch.optim.AdamW(w_params, foreach=False)
    adam.load_state_dict(copy.deepcopy(sd))
    adamw.load_state_dict(copy.deepcopy(sd))
    train(adam, a_params, 3, seed=4)
    train(adamw, w_params, 3, seed=4)
    for p, q in zip(a_params, w_params):
        assert torch.equal(p, q)
    # fastadapt's AdamW keeps its flag when it loads torch Adam's dict (as torch's AdamW)
    adam = torch.optim.Adam([nn.Parameter(p.detach().clone()) for p in ours], foreach=False)
    opt.load_state_dict(adam.state_dict())
    assert opt.param_groups[0]["decoupled_weight_decay"] is True


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_with_decoupled_weight_decay_matches_torch(amsgrad):
    theirs, ours = params_pair()
    options = dict(lr=0.05, weight_decay=0.3, amsgrad=amsgrad, decoupled_weight_decay=True)
    opt = ft.Adam(ours, **options)
    ref = torch.optim.Adam(theirs, foreach=False, **options)
    train(opt, ours, 20)
    train(ref, theirs, 20)
    for p, q in zip(ours, theirs):
        assert_close(p, q)
        for key, value in ref.state[q].items():
            assert_close(opt.state[p][key], value)
    # the flag is per group and may change between steps, as in torch
    opt.param_groups[0]["decoupled_weight_decay"] = False
    ref.param_groups[0]["decoupled_weight_decay"] = False
    train(opt, ours, 5, seed=5)
    train(ref, theirs, 5, seed=5)
    for p, q in zip(ours, theirs):
        assert_close(p, q)


# ----------------------------------------------------------------- SGD's state
def test_sgd_without_momentum_keeps_no_state_as_torch():
    theirs, ours = params_pair()
    opt, ref = ft.SGD(ours, lr=0.1), torch.optim.SGD(theirs, lr=0.1)
    train(opt, ours, 2)
    train(ref, theirs, 2)
    assert len(ref.state) == 0 and len(opt.state) == 0
    assert opt.state_dict()["state"] == ref.state_dict()["state"] == {}
    for p, q in zip(ours, theirs):
        assert_close(p, q)
    opt.param_groups[0]["momentum"] = 0.9       # state appears with the momentum
    train(opt, ours, 1)
    assert set(opt.state[ours[0]]) == {"momentum_buffer"}


# ----------------------------------------------------------------- optim_db
def _optim_db():
    """torch's optim_db entries of the classes fastadapt.torch has: (name, info)."""
    try:
        from torch.testing._internal.common_optimizers import optim_db
    except ImportError as exc:       # pragma: no cover - expecttest is a [test] extra
        pytest.fail(f"torch's optim_db does not import ({exc}); pip install expecttest")
    return [(info.optim_cls.__name__, info) for info in optim_db
            if info.optim_cls.__name__ in TORCH_CLASSES]


def _config_cases():
    return [pytest.param(name, inp.kwargs, id=f"{name}-{inp.desc}")
            for name, info in _optim_db() if name in DENSE_CLASSES
            for inp in info.optim_inputs_func(device="cpu", dtype=torch.float32)
            if not (inp.kwargs.get("differentiable") or inp.kwargs.get("capturable"))]


@pytest.mark.parametrize("name,kwargs", _config_cases())
def test_every_optim_db_configuration_matches_torch(name, kwargs):
    """optim_db's CPU configurations (tensor lr included; differentiable and
    capturable are refused): five steps against torch's single-tensor path."""
    theirs, ours = params_pair(shapes=((4, 3), (5,)))
    opt = getattr(ft, name)(ours, **kwargs)
    ref = getattr(torch.optim, name)(theirs, **{**kwargs, "foreach": False})
    train(opt, ours, 5)
    train(ref, theirs, 5)
    for p, q in zip(ours, theirs):
        assert_close(p, q)


# ----------------------------------------------------------------- constructor errors
def _error_cases():
    return [pytest.param(name, error, id=f"{name}-{error.optimizer_error_input.desc}")
            for name, info in _optim_db()
            for error in info.optim_error_inputs_func(device="cpu", dtype=torch.float32)]


@pytest.mark.parametrize("name,error", _error_cases())
def test_constructor_errors_and_warnings_are_torchs(name, error):
    """Each of optim_db's error inputs: fastadapt raises (or warns) the
    exception type torch does (the messages are fastadapt's own)."""
    inp = error.optimizer_error_input

    def build(cls):
        params = inp.params
        if params is None:
            params = [nn.Parameter(torch.randn(1, 1))]
        return cls(params, **inp.kwargs)

    for cls in (getattr(torch.optim, name), getattr(ft, name)):
        if issubclass(error.error_type, Warning):
            with pytest.warns(error.error_type):
                build(cls)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with pytest.raises(error.error_type):
                    build(cls)


def test_a_duplicate_parameter_is_kept_once_and_updated_once():
    p = nn.Parameter(torch.zeros(2))
    with pytest.warns(UserWarning, match="duplicate"):
        opt = ft.SGD([p, p], lr=1.0)
    assert opt.param_groups[0]["params"] == [p]
    p.grad = torch.ones(2)
    opt.step()
    assert torch.equal(p.detach(), torch.full((2,), -1.0))


# ----------------------------------------------------------------- deepcopy and pickle
def step_model(model, opt, i):
    opt.zero_grad()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(i))
    model(x.to(model[0].weight.dtype)).float().pow(2).sum().backward()
    opt.step()


def make_model(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).to(dtype)


def assert_same_and_separate(model, other):
    for p, q in zip(model.parameters(), other.parameters()):
        assert torch.equal(p, q)
        assert p.data_ptr() != q.data_ptr()


COPY_CASES = [pytest.param(ft.Adam, {"lr": 0.1}, torch.float32, id="Adam"),
              pytest.param(ft.SGD, {"lr": 0.1, "momentum": 0.9}, torch.float32, id="SGD"),
              pytest.param(ft.AdamW, {"lr": 0.1, "master_weights": True}, torch.bfloat16,
                           id="AdamW-bf16-master"),
              pytest.param(ft.Adam, {"lr": 0.1, "state_dtype": "int8", "min_8bit_size": 0},
                           torch.float32, id="Adam-int8-state"),
              # the weights 8-bit, the biases (under 5 elements) float32
              pytest.param(ft.Adam, {"lr": 0.1, "state_dtype": "int8c", "min_8bit_size": 5},
                           torch.float32, id="Adam-int8c-state")]


@pytest.mark.parametrize("cls,options,dtype", COPY_CASES)
def test_deepcopy_of_model_and_optimizer_trains_independently_and_identically(
        cls, options, dtype):
    model = make_model(dtype)
    opt = cls(model.parameters(), **options)
    opt.state["test"] = 1
    for i in range(3):
        step_model(model, opt, i)
    model2, opt2 = copy.deepcopy((model, opt))
    assert [id(p) for p in opt2.param_groups[0]["params"]] == [
        id(p) for p in model2.parameters()]
    assert opt2.state["test"] == 1
    public = {k for k in opt.__dict__ if not k.startswith("_")}
    assert {k for k in opt2.__dict__ if not k.startswith("_")} == public
    for i in range(3, 6):
        step_model(model, opt, i)
        step_model(model2, opt2, i)
    assert_same_and_separate(model, model2)
    # the optimizer alone (torch's test_deepcopy_copies_all_public_attrs)
    alone = copy.deepcopy(opt)
    assert {k for k in alone.__dict__ if not k.startswith("_")} == public


@pytest.mark.parametrize("cls,options,dtype", COPY_CASES)
def test_torch_save_and_load_of_model_and_optimizer(cls, options, dtype):
    model = make_model(dtype)
    opt = cls(model.parameters(), **options)
    for i in range(3):
        step_model(model, opt, i)
    buf = io.BytesIO()
    torch.save((model, opt), buf)
    buf.seek(0)
    model2, opt2 = torch.load(buf, weights_only=False)
    assert type(opt2) is cls
    assert [id(p) for p in opt2.param_groups[0]["params"]] == [
        id(p) for p in model2.parameters()]
    for i in range(3, 6):
        step_model(model, opt, i)
        step_model(model2, opt2, i)
    assert_same_and_separate(model, model2)


def test_setstate_refuses_what_getstate_did_not_write():
    opt = ft.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(TypeError, match="load_state_dict"):
        opt.__setstate__({"state": {}, "param_groups": []})


def test_a_sharded_optimizer_refuses_copy_and_pickle_clearly(tmp_path):
    import torch.distributed as dist
    if dist.is_initialized():                   # pragma: no cover - a group from elsewhere
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0,
                            world_size=1, timeout=datetime.timedelta(seconds=30))
    try:
        opt = ft.ZeroRedundancyOptimizer([nn.Parameter(torch.zeros(4))],
                                         optimizer_class=ft.SGD, lr=0.1)
        with pytest.raises(TypeError, match="process group.*consolidate_state_dict"):
            copy.deepcopy(opt)
        with pytest.raises(TypeError, match="process group.*save_sharded"):
            torch.save(opt, io.BytesIO())
    finally:
        dist.destroy_process_group()
