"""Gradient release (fastadapt.torch.enable_gradient_release).

Each released parameter is updated in the backward by the same element math
as the ordinary step, one kernel call per parameter instead of per bucket, so
the parameters and state are compared bit for bit with the same optimizer
stepping ordinarily (the independent reference, torch.optim, agrees with that
one in tests/test_torch.py and tests/test_torch_compat.py; here it is checked
once more to 1e-6 of the scale, float32's ulps per step).
"""
import datetime

import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402

import fastadapt.torch as ft  # noqa: E402

RULES = [
    ("Adam", {"lr": 1e-2}),
    ("AdamW", {"lr": 1e-2, "weight_decay": 0.1, "amsgrad": True}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("NAdam", {"lr": 1e-2}),                       # per-parameter scalar state
    ("Adagrad", {"lr": 0.1, "initial_accumulator_value": 0.1}),
    ("RMSprop", {"lr": 1e-2, "centered": True, "momentum": 0.5}),
]


class Net(nn.Module):
    """Two layers and a branch that only some steps use (its parameters get
    no gradient then, and are skipped as torch skips them)."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(6, 12, dtype=dtype)
        self.b = nn.Linear(12, 3, dtype=dtype)
        self.side = nn.Linear(6, 3, dtype=dtype)

    def forward(self, x, i):
        y = self.b(torch.tanh(self.a(x)))
        return y + self.side(x) if i % 2 else y


def groups(model, **kwargs):
    return [{"params": [*model.a.parameters(), *model.side.parameters()]},
            {"params": list(model.b.parameters()), "lr": kwargs.get("lr", 1e-2) / 2}]


def train(model, opt, steps, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    for i in range(steps):
        x = torch.randn(5, 6, generator=g).to(dtype)
        opt.zero_grad()
        model(x, i).float().pow(2).sum().backward()
        opt.step()


def assert_same(opt, ref, model, ref_model):
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(p, q)
    a, b = opt.state_dict()["state"], ref.state_dict()["state"]
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].keys() == b[k].keys()
        for key in a[k]:
            assert torch.equal(torch.as_tensor(a[k][key]), torch.as_tensor(b[k][key])), key


@pytest.mark.parametrize("name,kwargs", RULES, ids=[r[0] for r in RULES])
def test_released_steps_equal_the_ordinary_steps(name, kwargs):
    """Five steps (a branch used every other step, two groups with their own
    lr): parameters and state bit for bit as without release; no gradient is
    left after a backward, and the flat gradient buffer is gone."""
    model, ref_model, torch_model = Net(), Net(), Net()
    opt = getattr(ft, name)(groups(model, **kwargs), **kwargs)
    ref = getattr(ft, name)(groups(ref_model, **kwargs), **kwargs)
    handle = ft.enable_gradient_release(model, opt)
    assert all(b.grad_flat.numel() == 0 for bs in opt._buckets for b in bs)
    train(model, opt, 5)
    train(ref_model, ref, 5)
    assert all(p.grad is None for p in model.parameters())
    assert_same(opt, ref, model, ref_model)
    theirs = getattr(torch.optim, name)(groups(torch_model, **kwargs), foreach=False, **kwargs)
    train(torch_model, theirs, 5)
    for p, q in zip(model.parameters(), torch_model.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0,
                                   atol=1e-6 * float(q.detach().abs().max()))
    handle.remove()                       # ordinary steps again, from the same state
    assert all(b.grad_flat.numel() == b.length for bs in opt._buckets for b in bs)
    assert "step" not in opt.__dict__
    train(model, opt, 2)
    train(ref_model, ref, 2)
    assert_same(opt, ref, model, ref_model)


@pytest.mark.parametrize("options", [{"stochastic_rounding": True, "seed": 7},
                                     {"master_weights": True}], ids=["stochastic", "master"])
def test_released_16_bit_steps_equal_the_ordinary_steps(options):
    """bfloat16 parameters: stochastic rounding draws the same bits (keyed on
    the element's place in the flat buffer), the master copy the same values."""
    model, ref_model = Net(torch.bfloat16), Net(torch.bfloat16)
    opt = ft.AdamW(model.parameters(), lr=1e-2, **options)
    ref = ft.AdamW(ref_model.parameters(), lr=1e-2, **options)
    ft.enable_gradient_release(model, opt)
    train(model, opt, 4, torch.bfloat16)
    train(ref_model, ref, 4, torch.bfloat16)
    assert_same(opt, ref, model, ref_model)


def test_releasing_some_parameters_steps_the_others_ordinarily():
    """Parameters not released keep their gradients, and ``opt.step()``
    updates them; their bucket keeps its flat gradient buffer."""
    model, ref_model = Net(), Net()
    opt = ft.Adam(model.parameters(), lr=1e-2)
    ref = ft.Adam(ref_model.parameters(), lr=1e-2)
    ft.enable_gradient_release(model.b, opt)
    g = torch.Generator().manual_seed(1)
    for i in range(3):
        x = torch.randn(5, 6, generator=g)
        for m, o in ((model, opt), (ref_model, ref)):
            o.zero_grad()
            m(x, i).pow(2).sum().backward()
        assert model.b.weight.grad is None and model.a.weight.grad is not None
        opt.step()
        ref.step()
    assert opt._buckets[0][0].grad_flat.numel() > 0
    assert_same(opt, ref, model, ref_model)


def test_a_closure_and_an_lr_scheduler_work_with_release():
    model, ref_model = Net(), Net()
    opt = ft.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref = ft.SGD(ref_model.parameters(), lr=0.1, momentum=0.9)
    ft.enable_gradient_release(model, opt)
    scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5) for o in (opt, ref)]
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(2))
    for i in range(3):
        for m, o, s in ((model, opt, scheds[0]), (ref_model, ref, scheds[1])):
            def closure(m=m, o=o):
                o.zero_grad()
                loss = m(x, 0).pow(2).sum()
                loss.backward()
                return loss
            o.step(closure)
            s.step()
    assert_same(opt, ref, model, ref_model)


def backward(model, i=0):
    model(torch.ones(2, 6), i).pow(2).sum().backward()


def test_a_second_backward_before_the_step_raises():
    """Gradient accumulation over several backwards is refused, not done
    wrong: the second backward raises before updating anything again."""
    model = Net()
    opt = ft.Adam(model.parameters())
    ft.enable_gradient_release(model, opt)
    backward(model)
    after_first = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="second gradient before optimizer.step"):
        backward(model)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), after_first))
    assert all(p.grad is None for p in model.parameters())
    opt.step()
    backward(model)                              # a new step: fine


def test_clipping_and_grad_scaler_are_refused():
    model = Net()
    with pytest.raises(ValueError, match="max_grad_norm"):
        ft.enable_gradient_release(model, ft.Adam(model.parameters(), max_grad_norm=1.0))
    opt = ft.Adam(model.parameters())
    ft.enable_gradient_release(model, opt)
    opt.max_grad_norm = 1.0                      # set afterwards: the backward refuses
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="max_grad_norm"):
        backward(model)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))

    model = Net()
    opt = ft.Adam(model.parameters())
    ft.enable_gradient_release(model, opt)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(model(torch.ones(2, 6), 0).pow(2).sum()).backward()
    with pytest.warns(FutureWarning), pytest.raises(RuntimeError, match="GradScaler"):
        scaler.step(opt)


def test_other_misuse_is_refused_clearly(tmp_path):
    model = Net()
    with pytest.raises(TypeError, match="fastadapt.torch optimizer"):
        ft.enable_gradient_release(model, torch.optim.Adam(model.parameters()))
    opt = ft.Adam(model.a.parameters())
    with pytest.raises(ValueError, match="not one of the optimizer's"):
        ft.enable_gradient_release(model, opt)
    handle = ft.enable_gradient_release(model.a, opt)
    with pytest.raises(RuntimeError, match="already enabled"):
        ft.enable_gradient_release(model.a, opt)
    model.a.weight.grad = torch.ones_like(model.a.weight)
    with pytest.raises(RuntimeError, match="assigned by hand"):
        opt.step()
    handle.remove()
    opt.step()                                   # ordinary again: it reads that gradient

    import torch.distributed as dist
    if dist.is_initialized():                    # pragma: no cover - a group from elsewhere
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0,
                            world_size=1, timeout=datetime.timedelta(seconds=30))
    try:
        p = nn.Parameter(torch.zeros(4))
        zero = ft.ZeroRedundancyOptimizer([p], optimizer_class=ft.SGD, lr=0.1)
        with pytest.raises(TypeError, match="ZeroRedundancyOptimizer"):
            ft.enable_gradient_release([p], zero)
    finally:
        dist.destroy_process_group()


def test_no_full_gradient_is_held_during_the_backward():
    """The gradient bytes alive at once, sampled in every parameter's hook:
    with release at most the largest few parameters' worth, against the
    whole model's (the flat buffer) without."""
    model = nn.Sequential(*[nn.Linear(64, 64) for _ in range(8)])
    total = sum(p.numel() for p in model.parameters())
    opt = ft.Adam(model.parameters())
    ft.enable_gradient_release(model, opt)
    live = []

    def sample(_):
        live.append(sum(q.grad.numel() for q in model.parameters() if q.grad is not None))
    for p in model.parameters():            # runs after the release's hook
        p.register_post_accumulate_grad_hook(sample)
    model(torch.randn(3, 64)).sum().backward()
    opt.step()
    assert len(live) == len(list(model.parameters()))
    assert max(live) == 0                   # each gradient dropped as soon as it is used
    assert sum(b.grad_flat.numel() for bs in opt._buckets for b in bs) == 0
    assert total > 30000


def test_complex_parameters_are_released_as_their_real_view():
    w = torch.randn(3, 4, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 3, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
    a, b = nn.Parameter(w.clone()), nn.Parameter(w.clone())
    opt, ref = ft.Adam([a], lr=0.1), ft.Adam([b], lr=0.1)
    ft.enable_gradient_release([a], opt)
    for _ in range(3):
        for p, o in ((a, opt), (b, ref)):
            o.zero_grad()
            (x @ p).abs().pow(2).sum().backward()
            o.step()
    assert a.grad is None and torch.equal(a, b)
    assert torch.equal(opt.state[a]["exp_avg_sq"], ref.state[b]["exp_avg_sq"])
