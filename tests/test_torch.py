"""fastadapt.torch against torch.optim: the same training loop, the same numbers.

Every test builds two copies of one small model (embedding, conv, layer norm,
linear layers, a float64 parameter, a frozen layer and a branch that gets no
gradient on odd steps), trains one with ``torch.optim.X(foreach=False)`` and the
other with ``fastadapt.torch.X``, and compares parameters and state.

Tolerance (``TOL``): 1e-5 of the compared tensor's largest magnitude,
elementwise (about 84 float32 ulps of that scale). Both sides round to float32
at every operation, but torch's CPU kernels fuse multiply-adds and fastadapt's
do not, so each step differs by an ulp or so, and 100 steps accumulate those
(the reference is fed the gradients fastadapt's model computed, so the gap
does not feed back through the model, see ``lockstep``). Measured worst over
the matrix: 9e-7 for parameters, 3.7e-6 for state (centered RMSprop's momentum
buffer, where ``sqrt(square_avg - grad_avg**2)`` cancels). 1e-5 keeps a 2.7x
margin and still catches a learning rate off by 1%
(``test_tolerance_catches_a_wrong_lr``).
"""
import copy
import io
import math

import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402

import fastadapt  # noqa: E402
import fastadapt.torch as ft  # noqa: E402
from fastadapt.rules import Rule, ScalarState  # noqa: E402

import optim_cases  # noqa: E402

TOL = 1e-5
STEPS = 100


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The model is tiny: torch's thread pool only adds wake-ups (and, on a busy
    machine, waits) to each forward and backward."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------- the model
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(30, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(8, 5)
        self.branch = nn.Linear(8, 5)           # used on even steps only
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 5, dtype=torch.float64))

    def forward(self, tokens, use_branch):
        h = self.emb(tokens).transpose(1, 2)
        h = torch.tanh(self.conv(h)).transpose(1, 2)
        h = self.norm(self.frozen(h))
        out = self.head(h)
        if use_branch:
            out = out + self.branch(h)
        out = out * self.scale.float()
        return torch.nn.functional.cross_entropy(out.reshape(-1, 5), (tokens % 5).reshape(-1))


def make_models(seed=0):
    torch.manual_seed(seed)
    model = Net()
    return model, copy.deepcopy(model)


def groups(model, rule, lr):
    """Three groups with different hyper-parameters, one mixing float32 and float64."""
    second = {"params": [model.head.weight, model.head.bias, model.branch.weight,
                         model.branch.bias], "lr": lr * 0.5}
    third = {"params": [model.norm.weight, model.norm.bias, model.scale,
                        *model.frozen.parameters()]}
    if "weight_decay" in rule.defaults:
        third["weight_decay"] = 0.0
        second["weight_decay"] = 0.05
    return [{"params": [model.emb.weight, model.conv.weight, model.conv.bias]}, second, third]


def batch(step):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randint(0, 30, (4, 6), generator=g)


ZERO_MODES = ("opt", "model", "opt_keep", "model_keep", "assign")


def backward(model, opt, step, mode="opt", scaler=None):
    """Reset the gradients as ``mode`` says and produce this step's."""
    if mode == "opt":
        opt.zero_grad()
    elif mode == "model":
        model.zero_grad()
    elif mode in ("opt_keep", "assign"):
        opt.zero_grad(set_to_none=False)
    elif mode == "model_keep":
        model.zero_grad(set_to_none=False)
    loss = model(batch(step).to(model.head.weight.device), use_branch=step % 2 == 0)
    if mode == "assign":
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.clone()
    elif scaler is not None:
        scaler.scale(loss).backward()
    else:
        loss.backward()
    return loss


def train_step(model, opt, step, mode="opt", scaler=None):
    """One independent training step (gradients from this model's own parameters)."""
    loss = backward(model, opt, step, mode, scaler)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    return loss


def lockstep(model, opt, ref_model, ref, step, mode="opt"):
    """One step of both, ``ref`` fed the gradients ``model`` computed.

    Feeding the same gradients keeps the comparison about the optimizer: with
    each model computing its own, the rounding gap feeds back through the
    model and grows exponentially under aggressive options (lr 0.1 with
    maximize grows from 1e-7 to 1e-3 of the scale in 100 steps)."""
    loss = backward(model, opt, step, mode)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        q.grad = None if p.grad is None else p.grad.detach().clone()
    ref.step()
    opt.step()
    return loss


def assert_close(actual, expected, what):
    actual = actual.detach().double().cpu()
    expected = expected.detach().double().cpu()
    assert actual.shape == expected.shape, what
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=0, atol=TOL * max(scale, 1e-30),
                               msg=lambda m: f"{what}: {m}")


def assert_same(model, ref_model, opt, ref_opt, what=""):
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters()):
        assert_close(p, q, f"{what} param {name}")
    ref_params = [p for g in ref_opt.param_groups for p in g["params"]]
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, (p, q) in enumerate(zip(params, ref_params)):
        ref_state = ref_opt.state.get(q, {})
        state = opt.state.get(p, {})
        for key, value in ref_state.items():
            if value is None:
                continue
            assert key in state, f"{what} param {i}: state {key!r} missing"
            assert_close(torch.as_tensor(state[key]), torch.as_tensor(value),
                         f"{what} param {i} state {key}")


def option_sets(name):
    """The rule's defaults and its most combined option set from the test
    matrix's case database (defaults alone if it has none)."""
    configs = getattr(optim_cases, "CONFIGS", {}).get(name) or [{}]
    return [configs[0], configs[-1]] if len(configs) > 1 else list(configs)


def config_id(config):
    return ",".join(f"{k}={v}" for k, v in config.items()) or "defaults"


# the rules torch.optim has (the oracle); a rule without one is tested through
# its functional step elsewhere
TORCH_RULES = [name for name, rule in fastadapt.RULES.items()
               if isinstance(getattr(torch.optim, rule.torch_name or "", None), type)
               and not rule.torch_sparse_grad]   # tests/test_torch_sparse.py
MATRIX = [pytest.param(name, config, id=f"{name}[{config_id(config)}]")
          for name in TORCH_RULES for config in option_sets(name)]


def build(name, config, model, ref_model, **extra):
    rule = fastadapt.RULES[name]
    lr = config.get("lr", rule.defaults["lr"])
    ours = getattr(ft, rule.torch_name)(groups(model, rule, lr), **config, **extra)
    ref = getattr(torch.optim, rule.torch_name)(groups(ref_model, rule, lr), foreach=False,
                                                **config)
    return ours, ref


# ----------------------------------------------------------------- parity
@pytest.mark.parametrize("name,config", MATRIX)
def test_100_steps_match_torch(name, config):
    model, ref_model = make_models()
    opt, ref = build(name, config, model, ref_model)
    for step in range(STEPS):
        lockstep(model, opt, ref_model, ref, step, ZERO_MODES[step % len(ZERO_MODES)])
    assert_same(model, ref_model, opt, ref, name)
    # the parameters the model trains are the optimizer's flat-buffer views
    bucket = opt._buckets[0][0]
    assert model.emb.weight.data_ptr() == bucket.param_flat.data_ptr()


def test_parameters_without_a_gradient_are_left_alone():
    """A parameter with no gradient this step: values, state and step count unchanged."""
    model, ref_model = make_models()
    opt, ref = build("adam", {}, model, ref_model)
    for step in range(3):                       # steps 0 and 2 use the branch
        train_step(ref_model, ref, step)
        train_step(model, opt, step)
    assert float(opt.state[model.branch.weight]["step"]) == 2
    assert float(opt.state[model.head.weight]["step"]) == 3
    assert model.frozen.weight not in opt.state          # never had a gradient, as in torch
    assert set(opt.state_dict()["state"]) == set(ref.state_dict()["state"])
    assert_same(model, ref_model, opt, ref)


def test_set_to_none_false_keeps_gradients_in_the_flat_buffer():
    model, _ = make_models()
    opt = ft.Adam(model.parameters())
    model(batch(0), True).backward()            # fresh grads: copied on the step
    opt.step()
    opt.zero_grad(set_to_none=False)
    model(batch(1), True).backward()            # accumulates in place into the views
    bucket = opt._buckets[0][0]
    flat = bucket.grad_flat
    for p, view in zip(bucket.params, bucket.grad_views):
        if p.requires_grad:
            assert p.grad is view
    assert float(flat.abs().sum()) > 0
    copies = bucket.scan()[2]
    assert copies == []


# ----------------------------------------------------------------- tolerance
def test_tolerance_is_tight():
    """The gap is well inside TOL but not zero (the two sides really differ)."""
    model, ref_model = make_models()
    opt, ref = build("adam", {"amsgrad": True}, model, ref_model)
    for step in range(STEPS):
        lockstep(model, opt, ref_model, ref, step)
    worst = max(float((p - q).detach().abs().max() / q.detach().abs().max())
                for p, q in zip(model.parameters(), ref_model.parameters()))
    assert 0 < worst < TOL / 3


def test_tolerance_catches_a_wrong_lr():
    model, ref_model = make_models()
    opt = ft.Adam(groups(model, fastadapt.RULES["adam"], 1e-3 * 1.01), lr=1e-3 * 1.01)
    ref = torch.optim.Adam(groups(ref_model, fastadapt.RULES["adam"], 1e-3), foreach=False)
    for step in range(STEPS):
        lockstep(model, opt, ref_model, ref, step)
    with pytest.raises(AssertionError):
        assert_same(model, ref_model, opt, ref)


# ----------------------------------------------------------------- checkpoints
def _roundtrip(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", TORCH_RULES)
@pytest.mark.parametrize("direction", ["fastadapt_to_torch", "torch_to_fastadapt"])
def test_checkpoint_moves_between_fastadapt_and_torch(name, direction):
    """Train 10 steps on one side, checkpoint through torch.save/torch.load
    (weights_only), resume on the other side; 10 more steps equal the run
    that never switched."""
    config = option_sets(name)[-1]
    model, ref_model = make_models()
    opt, ref = build(name, config, model, ref_model)
    first, first_model = (opt, model) if direction == "fastadapt_to_torch" else (ref, ref_model)
    for step in range(10):
        train_step(first_model, first, step)
    sd = _roundtrip(first.state_dict())
    ref_model.load_state_dict(first_model.state_dict())
    model.load_state_dict(first_model.state_dict())
    (opt if first is ref else ref).load_state_dict(sd)
    # the side that saved goes on, the other resumes: they must agree
    for step in range(10, 20):
        lockstep(model, opt, ref_model, ref, step)
    assert_same(model, ref_model, opt, ref, f"{name} {direction}")


def test_loading_its_own_live_state_dict_changes_nothing():
    model, twin = make_models()
    rule = fastadapt.RULES["adam"]
    opt, same = (ft.Adam(groups(m, rule, 1e-2), lr=1e-2) for m in (model, twin))
    for step in range(6):
        if step == 3:
            opt.load_state_dict(opt.state_dict())     # the state tensors are its own views
        train_step(model, opt, step)
        train_step(twin, same, step)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))


def test_state_dict_has_torch_format():
    model, ref_model = make_models()
    opt, ref = build("adagrad", {"initial_accumulator_value": 0.1}, model, ref_model)
    for step in range(3):
        train_step(ref_model, ref, step)
        train_step(model, opt, step)
    sd, ref_sd = opt.state_dict(), ref.state_dict()
    assert set(sd["state"]) == set(ref_sd["state"])
    for i, entry in ref_sd["state"].items():
        assert set(sd["state"][i]) == set(entry)
        assert sd["state"][i]["step"].dtype == entry["step"].dtype
        assert float(sd["state"][i]["step"]) == float(entry["step"])
    assert [g["params"] for g in sd["param_groups"]] == \
        [g["params"] for g in ref_sd["param_groups"]]
    assert {k for k in sd["param_groups"][0] if k != "params"} == \
        {k for k in ref_sd["param_groups"][0] if k != "params"}


def test_bad_state_dicts_raise_and_change_nothing():
    model, _ = make_models()
    opt = ft.Adam(groups(model, fastadapt.RULES["adam"], 1e-3))
    train_step(model, opt, 0)
    good = opt.state_dict()
    before = [p.detach().clone() for p in model.parameters()]
    state_before = {k: {n: v.clone() for n, v in e.items()} for k, e in good["state"].items()}
    lr_before = opt.param_groups[0]["lr"]

    def check(sd, match):
        with pytest.raises(ValueError, match=match):
            opt.load_state_dict(sd)
        for p, q in zip(model.parameters(), before):
            assert torch.equal(p, q)
        for k, e in opt.state_dict()["state"].items():
            for n, v in e.items():
                assert torch.equal(v, state_before[k][n])
        assert opt.param_groups[0]["lr"] == lr_before

    bad = copy.deepcopy(good)
    bad["param_groups"] = bad["param_groups"][:2]
    check(bad, "number of parameter groups")
    bad = copy.deepcopy(good)
    bad["param_groups"][0]["lr"] = 0.5
    bad["state"][0]["exp_avg"] = torch.zeros(3)
    check(bad, "elements")
    bad = copy.deepcopy(good)
    bad["param_groups"][0]["lr"] = 0.5
    del bad["state"][0]["exp_avg_sq"]
    check(bad, "lacks")
    bad = copy.deepcopy(good)
    bad["param_groups"][1]["betas"] = (0.9, 1.5)
    check(bad, "betas")
    sgd_sd = torch.optim.SGD(make_models()[1].parameters(), momentum=0.9).state_dict()
    with pytest.raises(ValueError):
        opt.load_state_dict(sgd_sd)


# ----------------------------------------------------------------- schedulers
SCHEDULERS = {
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, 3, gamma=0.5),
    "MultiStepLR": lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 5], gamma=0.3),
    "ExponentialLR": lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9),
    "CosineAnnealingLR": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 6),
    "CosineAnnealingWarmRestarts":
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, 3),
    "LambdaLR": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1 / (1 + e)),
    "MultiplicativeLR": lambda o: torch.optim.lr_scheduler.MultiplicativeLR(o, lambda e: 0.95),
    "LinearLR": lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.1, total_iters=4),
    "ConstantLR": lambda o: torch.optim.lr_scheduler.ConstantLR(o, 0.5, total_iters=3),
    "PolynomialLR": lambda o: torch.optim.lr_scheduler.PolynomialLR(o, 8, power=2.0),
    "CyclicLR": lambda o: torch.optim.lr_scheduler.CyclicLR(o, 1e-4, 1e-2, step_size_up=3),
    "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, 1e-2, total_steps=12),
    "SequentialLR": lambda o: torch.optim.lr_scheduler.SequentialLR(
        o, [torch.optim.lr_scheduler.LinearLR(o, 0.1, total_iters=3),
            torch.optim.lr_scheduler.ExponentialLR(o, 0.8)], milestones=[3]),
    "ChainedScheduler": lambda o: torch.optim.lr_scheduler.ChainedScheduler(
        [torch.optim.lr_scheduler.ConstantLR(o, 0.5, total_iters=4),
         torch.optim.lr_scheduler.ExponentialLR(o, 0.9)]),
    "ReduceLROnPlateau": lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=0),
}


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_every_lr_scheduler_works(scheduler):
    """Schedulers mutate param_groups (lr; betas for the cyclic ones)."""
    model, ref_model = make_models()
    opt, ref = build("adam", {}, model, ref_model)
    sched, ref_sched = SCHEDULERS[scheduler](opt), SCHEDULERS[scheduler](ref)
    for step in range(12):
        losses = [train_step(ref_model, ref, step).detach(), train_step(model, opt, step).detach()]
        for s, loss in zip((ref_sched, sched), losses):
            s.step(loss.item()) if scheduler == "ReduceLROnPlateau" else s.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx(
        [g["lr"] for g in ref.param_groups], rel=1e-12)
    assert_same(model, ref_model, opt, ref, scheduler)


def test_param_group_edits_and_add_param_group_take_effect():
    model, ref_model = make_models()
    rule = fastadapt.RULES["adamw"]
    keep = lambda m: [p for g in groups(m, rule, 1e-3)[:2] for p in g["params"]]  # noqa: E731
    opt = ft.AdamW(keep(model), lr=1e-3)
    ref = torch.optim.AdamW(keep(ref_model), lr=1e-3, foreach=False)
    for step in range(12):
        if step == 4:
            for o in (opt, ref):
                o.param_groups[0]["weight_decay"] = 0.3
                o.param_groups[0]["betas"] = (0.8, 0.99)
                o.param_groups[0]["amsgrad"] = False
        if step == 6:
            for o, m in ((opt, model), (ref, ref_model)):
                o.add_param_group({"params": [m.norm.weight, m.norm.bias, m.scale],
                                   "lr": 0.01})
        train_step(ref_model, ref, step)
        train_step(model, opt, step)
    assert_same(model, ref_model, opt, ref)


def test_a_replaced_parameter_is_trained_from_its_new_values():
    model, ref_model = make_models()
    opt, ref = build("adam", {}, model, ref_model)
    for step in range(6):
        if step == 3:
            new = torch.randn(model.head.weight.shape, generator=torch.Generator().manual_seed(5))
            model.head.weight.data = new.clone()
            ref_model.head.weight.data = new.clone()
        train_step(ref_model, ref, step)
        train_step(model, opt, step)
    assert_same(model, ref_model, opt, ref)
    assert model.head.weight.data_ptr() == opt.state[model.head.weight]["exp_avg"].data_ptr() \
        - opt._buckets[1][0].state_flat["exp_avg"].data_ptr() \
        + opt._buckets[1][0].param_flat.data_ptr()


# ----------------------------------------------------------------- mixed precision
def test_grad_scaler_cpu_matches_torch_and_skips_steps_with_inf():
    model, ref_model = make_models()
    opt, ref = build("adam", {}, model, ref_model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    ref_scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    poisoned = 4

    for step in range(10):
        for m, o, s in ((ref_model, ref, ref_scaler), (model, opt, scaler)):
            if step == poisoned:
                handle = m.head.weight.register_hook(lambda g: g * math.inf)
                before = [p.detach().clone() for p in m.parameters()]
                steps_before = float(o.state[m.emb.weight]["step"])
            train_step(m, o, step, scaler=s)
            if step == poisoned:
                handle.remove()
                assert all(torch.equal(p, q) for p, q in zip(m.parameters(), before))
                assert float(o.state[m.emb.weight]["step"]) == steps_before
    assert scaler.get_scale() == ref_scaler.get_scale() < 2.0 ** 8
    assert_same(model, ref_model, opt, ref)


# ----------------------------------------------------------------- clipping
@pytest.mark.parametrize("name", ["adam", "sgd", "rmsprop"])
@pytest.mark.parametrize("max_norm", [0.05, 1e3])          # below and above the norms
def test_max_grad_norm_matches_clip_grad_norm(name, max_norm):
    """``max_grad_norm`` clips as ``clip_grad_norm_`` over every parameter that
    has a gradient (the branch has none on odd steps), before the step."""
    model, ref_model = make_models()
    config = {"momentum": 0.9} if name == "sgd" else {}
    opt, ref = build(name, config, model, ref_model, max_grad_norm=max_norm)
    clipped = 0
    for step in range(12):
        backward(model, opt, step)
        for p, q in zip(model.parameters(), ref_model.parameters()):
            q.grad = None if p.grad is None else p.grad.detach().clone()
        with_grad = [q for q in ref_model.parameters() if q.grad is not None]
        total = float(torch.nn.utils.clip_grad_norm_(with_grad, max_norm))
        clipped += total > max_norm
        ref.step()
        opt.step()
        assert opt.grad_norm == pytest.approx(total, rel=1e-5)
        assert opt.step_skipped is False
    assert clipped == (12 if max_norm < 1 else 0)
    assert_same(model, ref_model, opt, ref)


def test_max_grad_norm_with_grad_scaler_skips_non_finite_steps():
    """GradScaler's path: torch's ``unscale_`` -> ``clip_grad_norm_`` ->
    ``scaler.step`` against fastadapt's one step; a step whose gradients
    overflow changes nothing in either."""
    model, ref_model = make_models()
    opt, ref = build("adamw", {}, model, ref_model, max_grad_norm=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    ref_scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    poisoned = 3
    for step in range(8):
        handles = []
        if step == poisoned:
            handles = [m.conv.weight.register_hook(lambda g: g * math.inf)
                       for m in (model, ref_model)]
            before = [p.detach().clone() for p in model.parameters()]
        for m, o, s in ((ref_model, ref, ref_scaler), (model, opt, scaler)):
            backward(m, o, step, scaler=s)
        ref_scaler.unscale_(ref)
        torch.nn.utils.clip_grad_norm_(
            [q for q in ref_model.parameters() if q.grad is not None], 0.1)
        ref_scaler.step(ref)
        ref_scaler.update()
        scaler.step(opt)
        scaler.update()
        for h in handles:
            h.remove()
        if step == poisoned:
            assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert scaler.get_scale() == ref_scaler.get_scale() < 2.0 ** 10
    assert_same(model, ref_model, opt, ref)


def test_max_grad_norm_skips_a_step_with_a_nan_gradient_without_a_scaler():
    model, _ = make_models()
    opt = ft.SGD(model.parameters(), lr=0.1, momentum=0.9, max_grad_norm=1.0)
    train_step(model, opt, 0)
    before = [p.detach().clone() for p in model.parameters()]
    state_before = {k: v.clone() for k, v in opt.state[model.emb.weight].items()}
    backward(model, opt, 1)
    model.head.bias.grad[-1] = math.nan
    opt.step()
    assert opt.step_skipped is True and math.isnan(opt.grad_norm)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    for k, v in opt.state[model.emb.weight].items():
        assert torch.equal(v, state_before[k]), k
    with pytest.raises(ValueError, match="invalid max_grad_norm"):
        opt.max_grad_norm = 0.0
    with pytest.raises(TypeError, match="max_grad_norm must be a real number"):
        ft.Adam(model.parameters(), max_grad_norm="1")


def test_step_supports_amp_scaling():
    assert ft.Adam._step_supports_amp_scaling is True


# ----------------------------------------------------------------- errors
@pytest.mark.parametrize("flag", ["differentiable", "capturable"])
def test_unsupported_flags_raise_and_leave_the_model_alone(flag):
    model, _ = make_models()
    ptr = model.head.weight.data_ptr()
    with pytest.raises(ValueError, match=flag):
        ft.Adam(model.parameters(), **{flag: True})
    assert model.head.weight.data_ptr() == ptr


def test_foreach_and_fused_change_nothing():
    model, ref_model = make_models()
    opt = ft.Adam(model.parameters(), foreach=True, fused=True)
    ref = ft.Adam(ref_model.parameters(), foreach=False, fused=False)
    for step in range(3):
        train_step(model, opt, step)
        train_step(ref_model, ref, step)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref_model.parameters()))


def test_bad_input_raises_clearly():
    model, _ = make_models()
    with pytest.raises(ValueError, match="lr"):
        ft.Adam(model.parameters(), lr=-1.0)
    with pytest.raises(TypeError, match="int32"):
        ft.Adam([nn.Parameter(torch.zeros(3, dtype=torch.int32), requires_grad=False)])
    base = torch.zeros(6)
    with pytest.raises(ValueError, match="share memory"):
        ft.SGD([nn.Parameter(base[:4]), nn.Parameter(base[2:])])
    with pytest.raises(TypeError):
        ft.Adam(model.parameters(), 1e-3, (0.9, 0.999), 1e-8, 0, False, True)  # torch's kw-only


def test_a_rejected_param_group_is_not_added():
    model, _ = make_models()
    opt = ft.SGD(model.head.parameters(), lr=0.1)
    odd = nn.Parameter(torch.zeros(3, dtype=torch.int32), requires_grad=False)
    with pytest.raises(TypeError, match="int32"):
        opt.add_param_group({"params": [odd]})
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": list(model.branch.parameters()), "lr": -1.0})
    assert len(opt.param_groups) == 1 and len(opt._buckets) == 1
    ptr = model.branch.weight.data_ptr()
    opt.add_param_group({"params": list(model.branch.parameters())})
    assert model.branch.weight.data_ptr() != ptr           # packed now
    assert len(opt.param_groups) == 2


def test_step_takes_a_closure_as_torch_does():
    model, ref_model = make_models()
    opt, ref = build("sgd", {"momentum": 0.9}, model, ref_model)
    for step in range(3):
        for m, o in ((model, opt), (ref_model, ref)):
            def closure(m=m, o=o):
                o.zero_grad()
                loss = m(batch(step), True)
                loss.backward()
                return loss
            loss = o.step(closure)
            assert loss.requires_grad               # the closure ran under enable_grad
    assert_same(model, ref_model, opt, ref)


def test_invalid_edit_between_steps_raises_before_anything_is_written():
    model, _ = make_models()
    opt = ft.Adam(groups(model, fastadapt.RULES["adam"], 1e-3))
    train_step(model, opt, 0)
    opt.param_groups[2]["betas"] = (0.9, 1.5)
    model(batch(1), True).backward()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="param group 2.*betas"):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert float(opt.state[model.emb.weight]["step"]) == 1
    opt.param_groups[2]["betas"] = (0.9, 0.999)
    opt.param_groups[0]["lr"] = float("nan")
    with pytest.raises(ValueError, match="param group 0.*lr"):
        opt.step()


def test_sparse_gradients_shape_changes_and_edited_param_lists_raise():
    emb = nn.Embedding(10, 4, sparse=True)
    opt = ft.Adam(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="Adam does not support sparse"):
        opt.step()

    model, _ = make_models()
    opt = ft.SGD(model.parameters(), lr=0.1)
    model.head.weight.data = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="changed shape"):
        opt.step()

    model, _ = make_models()
    opt = ft.SGD(model.parameters(), lr=0.1)
    model.double()                              # re-points every .data to a float64 copy
    with pytest.raises(ValueError, match="moved from cpu/torch.float32 to cpu/torch.float64"):
        opt.step()

    model, _ = make_models()
    opt = ft.SGD(model.parameters(), lr=0.1)
    opt.param_groups[0]["params"].append(nn.Parameter(torch.zeros(2)))
    with pytest.raises(ValueError, match="add_param_group"):
        opt.step()


def test_the_class_signature_is_torchs():
    """torch's signature, plus keyword-only ``max_grad_norm=None`` and the
    storage options (fastadapt.torch.STORAGE_OPTIONS) at the end."""
    import inspect
    extra = {"max_grad_norm": None, **ft.STORAGE_OPTIONS}
    for rule in fastadapt.RULES.values():
        theirs = getattr(torch.optim, rule.torch_name, None)
        ours = inspect.signature(getattr(ft, rule.torch_name))
        params = list(ours.parameters.values())
        head, tail = params[:-len(extra)], params[-len(extra):]
        assert [(p.name, p.kind, p.default) for p in tail] == [
            (k, inspect.Parameter.KEYWORD_ONLY, v) for k, v in extra.items()]
        if theirs is not None:
            assert ours.replace(parameters=head) == inspect.signature(theirs)
        assert issubclass(getattr(ft, rule.torch_name), torch.optim.Optimizer)


@pytest.mark.parametrize("name", [n for n, r in fastadapt.RULES.items() if r.in_torch])
def test_what_a_rule_declares_of_torchs_class_is_so(name):
    """A rule's torch facts: the keys of torch.optim's per-parameter state (its
    names for the state arrays, a ``step`` or not, the scalar state), and
    whether its constructor refuses a tensor lr with foreach=True (SparseAdam,
    which takes only sparse gradients, has no ``foreach``)."""
    rule, config = fastadapt.RULES[name], optim_cases.EVERY_STATE[name]
    cls = getattr(torch.optim, rule.torch_name)
    foreach = {} if rule.torch_sparse_grad else {"foreach": False}
    p = nn.Parameter(torch.randn(5))
    opt = cls([p], **foreach, **config)
    p.grad = torch.randn(5).to_sparse() if rule.torch_sparse_grad else torch.randn(5)
    opt.step()
    expected = {rule.torch_state_names[s] for s in rule.state_for(**config)}
    expected |= set(rule.scalar_state_init) | ({"step"} if rule.torch_step else set())
    assert set(opt.state[p]) == expected
    try:
        cls([nn.Parameter(torch.randn(5))], lr=torch.tensor(0.01),
            **({} if rule.torch_sparse_grad else {"foreach": True}))
        refused = False
    except ValueError:
        refused = True
    assert refused == rule.torch_refuses_tensor_mix


def test_a_rule_with_scalar_state_gets_it_per_parameter():
    """A rule declared outside the registry, with scalar state: its functional
    step receives the value and returns the next; it is kept per parameter and
    checkpointed as a tensor."""
    base = fastadapt.RULES["adam"]

    def scalars(options, step, state):
        return base.scalars(options, step), {"count": state["count"] + 1.0}

    rule = Rule("counted_adam", "CountedAdam", base.kernel, base.hyper, base.state_specs,
                scalars, base.pseudocode, "Adam counting its steps",
                scalar_state=(ScalarState("count", 1.0),))
    cls = ft.optimizer_class(rule)
    model, ref_model = make_models()
    opt = cls(groups(model, base, 1e-3))
    ref = torch.optim.Adam(groups(ref_model, base, 1e-3), foreach=False)
    for step in range(4):
        train_step(model, opt, step)
        train_step(ref_model, ref, step)
    assert_same(model, ref_model, opt, ref)
    assert float(opt.state[model.head.weight]["count"]) == 5.0
    assert float(opt.state[model.branch.weight]["count"]) == 3.0    # two steps skipped
    sd = _roundtrip(opt.state_dict())
    assert float(sd["state"][5]["count"]) == 3.0
    opt.load_state_dict(sd)
    assert float(opt.state[model.branch.weight]["count"]) == 3.0


def test_without_torch_the_import_error_says_what_to_install():
    import subprocess
    import sys
    code = ("import sys; sys.modules['torch'] = None\n"
            "import fastadapt\n"
            "try:\n    import fastadapt.torch\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert "pip install 'fastadapt[torch]'" in out.stdout, out.stderr


# ----------------------------------------------------------------- CUDA
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("name,config", MATRIX)
def test_cuda_matches_torch(name, config):
    model, ref_model = (m.cuda() for m in make_models())
    opt, ref = build(name, config, model, ref_model)
    for step in range(30):
        mode = ZERO_MODES[step % len(ZERO_MODES)]
        train_step(ref_model, ref, step, mode)
        train_step(model, opt, step, mode)
    assert_same(model, ref_model, opt, ref, name)


@pytest.mark.gpu
@cuda
def test_grad_scaler_cuda():
    model, ref_model = (m.cuda() for m in make_models())
    opt, ref = build("adam", {}, model, ref_model)
    scaler, ref_scaler = torch.amp.GradScaler("cuda"), torch.amp.GradScaler("cuda")
    for step in range(10):
        train_step(ref_model, ref, step, scaler=ref_scaler)
        train_step(model, opt, step, scaler=scaler)
    assert scaler.get_scale() == ref_scaler.get_scale()
    assert_same(model, ref_model, opt, ref)


# ----------------------------------------------------------------- bench section
def test_the_bench_section_runs_at_tiny_sizes():
    from fastadapt.benchmark import _torch_step as bench

    quiet = lambda line: None  # noqa: E731
    data = {"device": "cpu", "gpt2_width": 4,
            "gpt2": bench.gpt2_steps(("rmsprop",), d=4, budget_s=0.01, min_rounds=1,
                                     progress=quiet, names=("fastadapt", "fastadapt_copy",
                                                            "torch_fused", "torch_foreach")),
            "many_small": bench.many_small(20, 10, budget_s=0.01, min_rounds=1, progress=quiet),
            "whole_step": bench.whole_step(16, 2, 8, 2, budget_s=0.01, min_rounds=1,
                                           progress=quiet)}
    (rmsprop,) = data["gpt2"]
    assert rmsprop["tensors"] == 148
    assert {"fastadapt", "fastadapt_copy", "torch_foreach"} <= set(rmsprop["timings"])
    assert "torch_fused" in rmsprop["unavailable"]          # torch has no fused RMSprop
    assert "overhead_us_per_tensor" in data["many_small"]
    text = bench.markdown(data)
    assert "GPT-2-small shapes" in text and "Whole training step" in text


def test_the_bench_times_gradients_in_the_flat_buffer_where_it_says_so():
    """The bench's "grads in the flat buffer" rows: gradients handed over
    through a backward land in the flat buffer, values unchanged, and the step
    has nothing to copy (an assigned ``.grad`` would stay the caller's)."""
    from fastadapt.benchmark import _torch_step as bench

    params = bench._model_params(torch, [(5,), (3, 4)], torch.device("cpu"))
    grads = [p.grad.clone() for p in params]
    opt = ft.RMSprop(params)
    assert opt._buckets[0][0].scan()[2] == [0, 1]           # assigned: copied
    bench.through_autograd(torch, params)
    bucket = opt._buckets[0][0]
    assert all(p.grad is v for p, v in zip(params, bucket.grad_views))
    assert all(torch.equal(p.grad, g) for p, g in zip(params, grads))
    assert bucket.scan()[2] == []


def test_torch_cpu_tensors_in_the_numpy_api_say_what_to_use_instead():
    """The issue's first stumbles: a torch CPU tensor in the functional API or a
    NumPy optimizer class gets an error naming the way that works."""
    p = torch.ones(8)
    g = torch.ones(8)
    m, v = torch.zeros(8), torch.zeros(8)
    with pytest.raises(TypeError, match=r"param is a torch CPU tensor.*param\.detach\(\)"
                                        r"\.numpy\(\).*fastadapt\.torch"):
        fastadapt.adam_step(p, g, m, v, step=1)
    assert torch.equal(p, torch.ones(8))
    model = torch.nn.Linear(3, 2)
    with pytest.raises(TypeError, match=r"fastadapt\.torch\.AdamW\(model\.parameters\(\)"):
        fastadapt.AdamW(model.parameters())
    with pytest.raises(TypeError, match=r"fastadapt\.torch\.SGD"):
        fastadapt.SGD([p.numpy(), torch.ones(3)])


def test_grad_norm_is_none_after_a_step_that_computed_none():
    """As the NumPy classes: ``grad_norm`` is the norm of the last step, None
    when that step computed none (no max_grad_norm, or GradScaler's found_inf
    skipped it before any norm)."""
    import fastadapt.torch as ft
    w = torch.nn.Parameter(torch.ones(5))
    opt = ft.Adam([w], max_grad_norm=1.0)
    w.grad = torch.full((5,), 2.0)
    opt.step()
    assert opt.grad_norm == pytest.approx(2.0 * 5 ** 0.5)
    opt.max_grad_norm = None
    opt.step()
    assert opt.grad_norm is None and not opt.step_skipped
    opt.max_grad_norm = 1.0
    opt.step()
    opt.found_inf, opt.grad_scale = torch.tensor(1.0), torch.tensor(2.0)
    opt.step()
    assert opt.step_skipped and opt.grad_norm is None
