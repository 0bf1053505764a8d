"""The optimizer classes against torch.optim, and their own behaviour.

Parity: every configuration of ``optim_cases.CONFIGS`` (each rule's options,
alone and combined), with two parameter groups that differ in lr and weight
decay, a multi-array model including a zero-size array, 50 steps of seeded
random gradients, float32 and float64: parameters and every state buffer must
match torch.optim's single-tensor path (``foreach=False``) within the
per-dtype tolerance of ``conftest.TOLERANCE`` (its comment gives the reasons).
"""
import inspect
import math

import numpy as np
import pytest

import fastadapt
import fastadapt.functional
from fastadapt.functional import step_for
from fastadapt import schedules
from fastadapt.optim import Optimizer

from conftest import DTYPES, assert_close
import optim_cases as cases_db
from optim_cases import CONFIGS, SETUP_OPTIONS, cases, torch_grad, torch_optimizer

SHAPES = [(7,), (3, 5), (4, 4, 2), (1,), (0,)]
STEPS = 50
CLASSES = {name: getattr(fastadapt, rule.torch_name) for name, rule in fastadapt.RULES.items()}


def test_every_rule_has_a_class():
    assert CLASSES.keys() == fastadapt.RULES.keys()
    for name, cls in CLASSES.items():
        assert cls.__name__ == fastadapt.RULES[name].torch_name
        assert cls.rule is fastadapt.RULES[name]
        assert issubclass(cls, Optimizer) and "step" not in vars(cls)


def test_class_signatures_are_torchs(torch):
    """Names, order and defaults of torch's constructors, less torch's implementation
    switches (foreach, fused, capturable, differentiable); what is positional here is
    positional in torch too, in the same places. Not offered: Adam's
    decoupled_weight_decay (that is AdamW). Added at the end, keyword-only:
    fastadapt's storage options (state_dtype, master_weights, ...), then
    max_grad_norm, last."""
    skip = {"foreach", "fused", "capturable", "differentiable", "decoupled_weight_decay"}
    storage = list(fastadapt.optim._STORAGE_OPTIONS.items())
    for name, cls in CLASSES.items():
        rule = fastadapt.RULES[name]
        if not rule.in_torch:
            continue
        theirs = [p for p in inspect.signature(getattr(torch.optim, cls.__name__))
                  .parameters.values() if p.name not in skip or p.name in rule.defaults]
        ours = list(inspect.signature(cls).parameters.values())
        assert ours[-1].name == "max_grad_norm" and ours[-1].kind is ours[-1].KEYWORD_ONLY
        ours = ours[:-1]
        assert [(p.name, p.default) for p in ours[-len(storage):]] == storage
        assert all(p.kind is p.KEYWORD_ONLY for p in ours[-len(storage):])
        ours = ours[:-len(storage)]
        assert [(p.name, p.default) for p in ours] == \
            [(p.name, p.default) for p in theirs], name
        positional = [p.name for p in ours if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert positional == [p.name for p in theirs[:len(positional)]], name
        assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in theirs[:len(positional)]), name


def _model(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def _gradients(dtype, seed=1, steps=STEPS):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]


def _groups(name, config, arrays):
    """Two groups: the config's own lr and decay, and different ones."""
    cls = CLASSES[name]
    lr = config.get("lr", cls.rule.defaults["lr"])
    second = {"lr": lr * 0.3, "weight_decay": 0.05 if name != "adamw" else 0.2}
    return [{"params": arrays[:2]}, {"params": arrays[2:], **second}]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name, config", cases(torch=True))
def test_matches_torch_with_param_groups(torch, name, config, dtype):
    params0, grads = _model(dtype), _gradients(dtype)

    opt = CLASSES[name](_groups(name, config, params0), **config)
    for step_grads in grads:
        opt.step(step_grads)

    tparams = [torch.tensor(p, requires_grad=True) for p in params0]
    topt = torch_optimizer(name, _groups(name, config, tparams), config)
    for step_grads in grads:
        for p, g in zip(tparams, step_grads):
            p.grad = torch_grad(name, torch.tensor(g))
        topt.step()

    state = opt.state
    views_state = [(g, i) for g, b in enumerate(opt._groups) for i in range(len(b.param))]
    for k, (p, tp) in enumerate(zip(opt.params, tparams)):
        assert p.dtype == dtype and p.shape == tp.shape
        assert_close(p, tp.detach().numpy(), dtype, f"param {k}")
        g, i = views_state[k]
        assert state[g]["step"] == STEPS
        tstate = topt.state[tp]
        assert int(tstate.get("step", STEPS)) == STEPS   # torch's SGD keeps no count
        ours = {n: v[i] for n, v in state[g].items() if n != "step"}
        torch_names = fastadapt.RULES[name].torch_state_names
        expected = {torch_names[n] for n in ours}
        scalar = opt.scalar_state[g]
        assert expected | set(scalar) == {n for n, v in tstate.items()
                                          if n != "step" and v is not None}, \
            f"state names, param {k}"
        for n, v in scalar.items():      # kept as torch keeps it: float32 0-d tensors
            assert v == tstate[n].item(), f"param {k} {n}"
        for n, v in ours.items():
            assert_close(v, tstate[torch_names[n]].numpy(), dtype,
                         f"param {k} {n}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name, config", [c for c in cases()
                                          if not fastadapt.RULES[c.values[0]].in_torch])
def test_matches_the_reference_with_param_groups(name, config, dtype):
    """Rules torch.optim lacks: each parameter against the float64 reference run
    with its group's options."""
    steps = 20
    params0, grads = _model(dtype), _gradients(dtype, steps=steps)
    opt = CLASSES[name](_groups(name, config, params0), **config)
    for step_grads in grads:
        opt.step(step_grads)
    groups = _groups(name, config, list(range(len(SHAPES))))
    views_state = [(g, i) for g, b in enumerate(opt._groups) for i in range(len(b.param))]
    for gi, group in enumerate(groups):
        options = {**config, **{k: v for k, v in group.items() if k != "params"}}
        for k in group["params"]:
            param, state = cases_db.run_naive(name, options, params0[k], [g[k] for g in grads])
            assert_close(opt.params[k], param, dtype, f"param {k}")
            g, i = views_state[k]
            assert opt.state[g]["step"] == steps
            ours = {n: v[i] for n, v in opt.state[g].items() if n != "step"}
            assert set(ours) == set(state)
            for n in ours:
                assert_close(ours[n], state[n], dtype, f"param {k} {n}")


def test_input_arrays_are_copied_not_updated():
    params = _model(np.float64)
    before = [p.copy() for p in params]
    opt = fastadapt.SGD(params, lr=0.1)
    opt.step([np.ones(s) for s in SHAPES])
    for p, b in zip(params, before):
        assert np.array_equal(p, b)
    for p, b in zip(opt.params, before):
        assert np.array_equal(p, b - 0.1)
    # the group's "params" are the same views
    assert all(a is b for a, b in zip(opt.param_groups[0]["params"], opt.params))


def _count_kernel_calls(monkeypatch):
    """Record every call of a compiled CPU driver: (rule, {argument: size})."""
    from fastadapt.kernels import cpu
    calls = []
    for rule, driver in cpu.DRIVERS.items():
        for kind in ("serial", "parallel"):
            def counting(*args, _real=getattr(driver, kind), _rule=rule):
                names = inspect.signature(_real.py_func).parameters
                calls.append((_rule, {k: a.size for k, a in zip(names, args)}))
                return _real(*args)
            monkeypatch.setattr(driver, kind, counting)
    return calls


@pytest.mark.parametrize("name", list(CLASSES))
def test_one_kernel_call_per_group(monkeypatch, name):
    params = _model(np.float32)
    opt = CLASSES[name]([{"params": params[:3]}, {"params": params[3:], "lr": 0.5}])
    calls = _count_kernel_calls(monkeypatch)
    opt.step()
    assert len(calls) == 2
    for (rule, sizes), buffers in zip(calls, opt._groups):
        assert rule == step_for(fastadapt.RULES[name]).__name__.removesuffix("_step").replace(
            "adamw", "adam")
        assert sizes["param"] == len(buffers.param.data) >= buffers.param.numel
    opt.step()
    assert len(calls) == 4


def test_schedule_changes_lr_across_steps():
    lrs = []
    schedule = schedules.StepDecay(1.0, step_size=2, gamma=0.5)
    opt = fastadapt.SGD([np.zeros(3)], lr=schedule)
    for _ in range(5):
        lrs.append(opt.get_lr()[0])
        before = opt.params[0].copy()
        opt.step([np.ones(3)])
        assert np.array_equal(before - opt.params[0], np.full(3, lrs[-1]))
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25]


def test_plain_callable_schedule_and_bad_schedule_value():
    opt = fastadapt.SGD([np.zeros(2)], lr=lambda t: 0.1 * (t + 1))
    opt.step([np.ones(2)])
    opt.step([np.ones(2)])
    assert np.allclose(opt.params[0], -0.3)
    opt.param_groups[0]["lr"] = lambda t: -1.0
    with pytest.raises(ValueError, match="learning rate"):
        opt.step([np.ones(2)])
    assert opt.state[0]["step"] == 2


def test_param_groups_mutation_takes_effect():
    opt = fastadapt.SGD([{"params": [np.zeros(2)]}, {"params": [np.zeros(3)]}], lr=1.0)
    opt.step([np.ones(2), np.ones(3)])
    opt.param_groups[1]["lr"] = 0.25
    opt.step([np.ones(2), np.ones(3)])
    assert np.array_equal(opt.params[0], [-2.0, -2.0])
    assert np.array_equal(opt.params[1], [-1.25] * 3)
    # a bad value is rejected at the next step, before any group is written
    opt.param_groups[0]["weight_decay"] = -1.0
    before = [p.copy() for p in opt.params]
    with pytest.raises(ValueError, match="param group 0.*weight_decay"):
        opt.step()
    assert all(np.array_equal(p, b) for p, b in zip(opt.params, before))
    opt.param_groups[0]["weight_decay"] = 0.0
    opt.step()


def test_turning_on_an_option_creates_its_state():
    opt = fastadapt.Adam([np.ones(4)])
    assert "max_exp_avg_sq" not in opt.state[0]
    opt.step([np.ones(4)])
    opt.param_groups[0]["amsgrad"] = True
    opt.step([np.ones(4)])
    assert "max_exp_avg_sq" in opt.state[0]
    assert np.array_equal(opt.state[0]["max_exp_avg_sq"][0], opt.state[0]["exp_avg_sq"][0])


def test_state_only_for_options_that_need_it():
    x = [np.zeros(3, np.float32)]
    assert set(fastadapt.Adam(x).state[0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert set(fastadapt.SGD(x).state[0]) == {"step"}
    assert set(fastadapt.SGD(x, momentum=0.9).state[0]) == {"step", "momentum_buffer"}
    assert set(fastadapt.RMSprop(x, centered=True).state[0]) == {"step", "square_avg",
                                                                 "grad_avg"}
    s = fastadapt.Adagrad(x, initial_accumulator_value=0.5).state[0]["state_sum"][0]
    assert s.dtype == np.float32 and np.array_equal(s, [0.5] * 3)


@pytest.mark.parametrize("form", ["list", "flat", "padded", "views", "buffer"])
def test_step_grads_forms_single_group(form):
    dtype = np.float64
    grads = _gradients(dtype, steps=1)[0]
    ref = fastadapt.Adam(_model(dtype))
    for g, v in zip(grads, ref.grads):
        v[...] = g
    ref.step()

    opt = fastadapt.Adam(_model(dtype))
    if form == "list":
        opt.step(grads)
    elif form == "flat":
        opt.step(np.concatenate([g.ravel() for g in grads]))
    elif form == "padded":
        flat = np.zeros_like(opt.flat_grads[0])
        for g, o in zip(grads, opt._groups[0].grad.offsets):
            flat[o:o + g.size] = g.ravel()
        opt.step(flat)
    elif form == "views":
        for g, v in zip(grads, opt.grads):
            v[...] = g
        opt.step(opt.grads)
    else:
        for g, v in zip(grads, opt.grads):
            v[...] = g
        opt.step(opt.flat_grads[0])
    for a, b in zip(opt.params, ref.params):
        assert np.array_equal(a, b)


def test_step_grads_forms_several_groups():
    grads = _gradients(np.float64, steps=1)[0]
    make = lambda: fastadapt.SGD([{"params": _model(np.float64)[:2]},  # noqa: E731
                                  {"params": _model(np.float64)[2:], "lr": 0.1}], lr=1.0)
    per_param, per_group = make(), make()
    per_param.step(grads)
    per_group.step([np.concatenate([g.ravel() for g in grads[:2]]),
                    np.concatenate([g.ravel() for g in grads[2:]])])
    for a, b in zip(per_param.params, per_group.params):
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="one group"):
        per_group.step(np.zeros(22))
    with pytest.raises(ValueError, match="expected 5 gradient arrays"):
        per_group.step(grads[:3])
    with pytest.raises(ValueError, match="flat gradient for group 1"):
        per_group.step([np.zeros(22), np.zeros(5)])


def test_zero_grad():
    opt = fastadapt.RMSprop(_model(np.float32))
    for v in opt.grads:
        v[...] = 3.0
    opt.zero_grad()
    assert all(not v.any() for v in opt.grads)
    before = [p.copy() for p in opt.params]
    opt.step()  # zero gradient, no decay: a no-op
    assert all(np.array_equal(a, b) for a, b in zip(opt.params, before))


@pytest.mark.parametrize("make, match", [
    (lambda p: fastadapt.Adam(p, lr=-1.0), "invalid lr"),
    (lambda p: fastadapt.Adam(p, lr=math.inf), "learning rate"),
    (lambda p: fastadapt.Adam(p, lr="fast"), "lr must be a real number"),
    (lambda p: fastadapt.Adam(p, betas=(0.9, 1.0)), r"betas\[1\]"),
    (lambda p: fastadapt.Adam(p, eps=-1e-8), "eps"),
    (lambda p: fastadapt.AdamW(p, weight_decay=-0.1), "weight_decay"),
    (lambda p: fastadapt.SGD(p, nesterov=True), "Nesterov"),
    (lambda p: fastadapt.SGD(p, momentum=-0.5), "momentum"),
    (lambda p: fastadapt.RMSprop(p, alpha=-0.1), "alpha"),
    (lambda p: fastadapt.Adagrad(p, lr_decay=-1), "lr_decay"),
    (lambda p: fastadapt.Adagrad(p, initial_accumulator_value=-1), "initial_accumulator"),
    (lambda p: fastadapt.Adadelta(p, rho=1.5), "rho"),
    (lambda p: fastadapt.Adam([{"params": p}, {"params": [np.zeros(2)], "lr": -1}]),
     "param group 1: invalid lr"),
    (lambda p: fastadapt.Adam([]), "empty parameter list"),
    (lambda p: fastadapt.Adam([{"params": []}]), "empty parameter list"),
    (lambda p: fastadapt.Adam([{"lr": 0.1}]), "no 'params'"),
    (lambda p: fastadapt.Adam([p[0], p[0]]), "more than once"),
    (lambda p: fastadapt.Adam([p[0], p[1].astype(np.float32)]), "mixes dtypes"),
    (lambda p: fastadapt.Adam([np.zeros(3, np.int64)]), "unsupported dtype"),
    (lambda p: fastadapt.Adam([[1.0, 2.0]]), "must be arrays"),
    (lambda p: fastadapt.Adam(3.0), "params must be"),
    (lambda p: Optimizer(p, lr=0.1), "base class"),
])
def test_bad_construction(make, match):
    with pytest.raises((TypeError, ValueError), match=match):
        make(_model(np.float64))


def test_construction_errors_are_the_functionals():
    """The class validates by a dry run of the functional step: same messages."""
    x = np.zeros(1)
    for cls, kwargs in [(fastadapt.Adam, {"lr": -1.0}), (fastadapt.SGD, {"nesterov": True}),
                        (fastadapt.Adadelta, {"rho": 2.0})]:
        with pytest.raises(ValueError) as functional_error:
            state = {n: np.zeros(1) for n in cls.rule.state}
            step = {"step": 1} if cls.rule.takes_step else {}
            step_for(cls.rule)(x, x.copy(), **state, **kwargs, **step)
        with pytest.raises(ValueError) as class_error:
            cls([np.zeros(1)], **kwargs)
        assert str(class_error.value) == str(functional_error.value)


def test_params_forms():
    a, b = np.ones(3), np.ones((2, 2))
    assert len(fastadapt.SGD(a).params) == 1 and fastadapt.SGD(a).params[0].shape == (3,)
    assert len(fastadapt.SGD((x for x in [a, b])).params) == 2
    assert len(fastadapt.SGD({"params": [a, b]}).param_groups) == 1
    opt = fastadapt.SGD([{"params": a}, {"params": [b], "lr": 0.5, "note": "head"}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert opt.param_groups[1]["note"] == "head"     # extra keys kept, as in torch
    # groups may differ in dtype
    opt = fastadapt.Adam([{"params": [a]}, {"params": [b.astype(np.float32)]}])
    assert [p.dtype for p in opt.params] == [np.float64, np.float32]


def test_setup_options_match_the_case_database():
    for name, cls in CLASSES.items():
        assert set(cls.state_init.values()) <= SETUP_OPTIONS | set(cls.rule.defaults)
        for config in CONFIGS[name]:
            cls([np.zeros(2)], **config)    # every database config constructs


_DEVICE_SCRIPT = r"""
import numpy as np
from numba import cuda
import fastadapt as fa

rng = np.random.default_rng(0)
shapes = [(7,), (3, 5), (1,), (0,)]
host = [rng.standard_normal(s) for s in shapes]
grads = [[rng.standard_normal(s) for s in shapes] for _ in range(4)]
for cls, kw in [(fa.Adam, {"amsgrad": True}), (fa.AdamW, {}),
                (fa.SGD, {"momentum": 0.9, "lr": 0.1}), (fa.Adadelta, {}),
                (fa.Adagrad, {"initial_accumulator_value": 0.3}),
                (fa.RMSprop, {"centered": True, "momentum": 0.5})]:
    on_host = cls([{"params": [h.copy() for h in host[:2]]},
                   {"params": [h.copy() for h in host[2:]], "lr": 0.05}], **kw)
    on_gpu = cls([{"params": [cuda.to_device(h) for h in host[:2]]},
                  {"params": [cuda.to_device(h) for h in host[2:]], "lr": 0.05}], **kw)
    assert all(not isinstance(p, np.ndarray) for p in on_gpu.params)
    for g in grads[:2]:                       # device gradients, per parameter
        on_host.step(g)
        on_gpu.step([cuda.to_device(x) for x in g])
    on_gpu.zero_grad()
    assert not any(v.copy_to_host().any() for v in on_gpu.flat_grads)
    for g, v in zip(grads[2], on_gpu.grads):  # written into the gradient views
        if g.size:
            v.copy_to_device(g)
    on_host.step(grads[2])
    on_gpu.step()
    flat = [np.concatenate([x.ravel() for x in grads[3][:2]]),
            np.concatenate([x.ravel() for x in grads[3][2:]])]
    on_host.step(flat)
    on_gpu.step(flat)                         # host flat arrays into device buffers
    a, b = on_gpu.state_dict(), on_host.state_dict()
    for x, y in zip(a["params"] + [v for s in a["state"] for v in s.values()],
                    b["params"] + [v for s in b["state"] for v in s.values()]):
        assert np.array_equal(x, y), cls.__name__
    fresh = cls([{"params": [cuda.to_device(h) for h in host[:2]]},
                 {"params": [cuda.to_device(h) for h in host[2:]]}], **kw)
    fresh.load_state_dict(a)
    c = fresh.state_dict()
    assert all(np.array_equal(x, y) for x, y in zip(c["params"], a["params"]))
print("ok")
"""


def test_device_arrays_unchanged_under_cuda_simulator():
    """The optimizers on Numba device arrays (CUDA simulator, float64, so exact):
    same results as on the host, zero_grad, every step(grads) form, checkpoints."""
    import os
    import subprocess
    import sys
    pytest.importorskip("numba_cuda")
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    result = subprocess.run([sys.executable, "-c", _DEVICE_SCRIPT], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


# ----------------------------------------------------------------- all or nothing
def _snapshot(opt):
    """Everything a caller can see of an optimizer, copied."""
    return ([p.copy() for p in opt.params], [g.copy() for g in opt.grads],
            [{k: (v if k == "step" else [x.copy() for x in v]) for k, v in s.items()}
             for s in opt.state])


def _assert_unchanged(opt, before):
    params, grads, state = _snapshot(opt)
    for a, b in zip(params + grads, before[0] + before[1]):
        np.testing.assert_array_equal(a, b)
    assert [sorted(s) for s in state] == [sorted(s) for s in before[2]]
    for s, t in zip(state, before[2]):
        assert s["step"] == t["step"]
        for k in s:
            if k != "step":
                for a, b in zip(s[k], t[k]):
                    np.testing.assert_array_equal(a, b)


def test_step_with_a_bad_gradient_in_a_later_group_writes_nothing():
    opt = fastadapt.Adam([{"params": [np.ones(5, "f4")]}, {"params": [np.ones(3, "f4")]}])
    before = _snapshot(opt)
    with pytest.raises(TypeError, match=r"grads\[1\].*complex64"):
        opt.step([np.full(5, 7, "f4"), np.full(3, 7, "c8")])
    _assert_unchanged(opt, before)
    # the same with one flat gradient per group
    opt = fastadapt.SGD([{"params": [np.ones(2), np.ones(3)]}, {"params": [np.ones(3)]}])
    before = _snapshot(opt)
    with pytest.raises(TypeError, match="flat gradient of group 1"):
        opt.step([np.full(5, 7.0), np.full(3, 7, "c16")])
    _assert_unchanged(opt, before)


def test_step_with_a_bad_option_in_a_later_group_writes_nothing():
    opt = fastadapt.Adam([{"params": [np.ones(5, "f4")]}, {"params": [np.ones(3, "f4")]}])
    opt.step([np.ones(5, "f4"), np.ones(3, "f4")])
    before = _snapshot(opt)
    opt.param_groups[1]["lr"] = -1.0
    with pytest.raises(ValueError, match="param group 1.*lr"):
        opt.step([np.full(5, 7, "f4"), np.full(3, 7, "f4")])
    _assert_unchanged(opt, before)
    # a new option in group 0 does not allocate its state while group 1 is invalid
    opt.param_groups[0]["amsgrad"] = True
    with pytest.raises(ValueError, match="param group 1"):
        opt.step([np.full(5, 7, "f4"), np.full(3, 7, "f4")])
    _assert_unchanged(opt, before)
    assert "max_exp_avg_sq" not in opt.state[0]
    # a schedule that fails in group 1 at this step: nothing written either
    opt.param_groups[1]["lr"] = lambda t: math.inf
    with pytest.raises(ValueError, match="learning rate"):
        opt.step([np.full(5, 7, "f4"), np.full(3, 7, "f4")])
    _assert_unchanged(opt, before)
    opt.param_groups[1]["lr"] = 0.1
    opt.step([np.full(5, 7, "f4"), np.full(3, 7, "f4")])
    assert "max_exp_avg_sq" in opt.state[0] and opt.state[1]["step"] == 2


# ----------------------------------------------------------------- padding
@pytest.mark.parametrize("cls, kwargs, dtype", [
    (fastadapt.Adam, {"eps": 0.0}, np.float32),
    (fastadapt.AdamW, {"eps": 0.0, "amsgrad": True}, np.float64),
    (fastadapt.Adam, {"eps": 1e-46}, np.float32),          # 0 once cast to float32
    (fastadapt.RMSprop, {"eps": 0.0, "centered": True, "momentum": 0.5}, np.float32),
    (fastadapt.Adagrad, {"eps": 0.0, "initial_accumulator_value": 0.0}, np.float64),
    (fastadapt.Adadelta, {"eps": 0.0}, np.float32),
])
@pytest.mark.parametrize("large", [False, True], ids=["serial", "parallel"])
def test_padding_never_turns_nan(cls, kwargs, dtype, large):
    """With eps = 0 the zero padding computes 0/0; it must not show in the
    buffers (the user's elements, all with nonzero gradients, stay finite),
    on the serial path (the issue's 10-element repro raised ZeroDivisionError
    there) and the parallel one."""
    from fastadapt.kernels import cpu
    shapes = [(cpu.SERIAL_BELOW + 3,), (5,)] if large else [(10,), (3,)]
    rng = np.random.default_rng(0)
    opt = cls([rng.standard_normal(s).astype(dtype) for s in shapes], **kwargs)
    for _ in range(3):
        opt.step([np.full(s, 0.5, dtype) for s in shapes])
    flat = opt.flat_params[0]
    assert len(flat) > sum(math.prod(s) for s in shapes)          # there is padding
    assert np.isfinite(flat).all()
    for name, buffer in opt._groups[0].state.items():
        assert np.isfinite(buffer.data).all(), name
    assert all(np.isfinite(p).all() for p in opt.params)
