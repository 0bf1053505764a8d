"""The whole step: loss-scale unscaling, non-finite skip and global-norm clipping.

Parity: fastadapt's ``opt.step(scaled_grads, grad_scale=scale)`` with
``max_grad_norm`` against torch's pipeline ``scaler.unscale_(opt)`` ->
``clip_grad_norm_(all params, max_norm)`` -> ``scaler.step(opt)`` (torch.optim
single-tensor path, ``foreach=False``), for every rule, clip thresholds below
and above the norm, scales 1 to 2**16 (powers of two and not), float32 and
float64, over steps that include skipped ones.

Tolerance: the float32 budget of ``conftest`` (64 float32 ulps of the array's
scale) for both dtypes. torch rounds twice where fastadapt rounds once: it
multiplies by ``float32(1 / scale)`` (GradScaler rounds the inverse scale to
float32 even for float64 gradients, so a float64 run with a scale that is not
a power of two is off by float32 rounding) and then by a clip coefficient
computed from the norm in the gradients' dtype; fastadapt folds both into one
float64 scalar cast once. With a power-of-two scale and no clipping both are
exact, and float64 is held to the float64 budget.
"""
import inspect
import math

import numpy as np
import pytest

import fastadapt
from fastadapt import schedules
from fastadapt.functional import step_for

from conftest import assert_close
import optim_cases as cases

SHAPES = [(7,), (3, 5), (1,), (0,), (4, 4, 2)]
STEPS = 8
SKIPPED = {2, 5}          # steps whose gradients hold an inf or a NaN
CLASSES = {name: getattr(fastadapt, rule.torch_name) for name, rule in fastadapt.RULES.items()}
IN_TORCH = [name for name, rule in fastadapt.RULES.items() if rule.in_torch]
# one option set per rule that uses its state arrays; {} (torch's defaults) for the others
CONFIGS = {"adam": {"amsgrad": True}, "adamw": {"weight_decay": 0.1},
           "sgd": {"momentum": 0.9, "lr": 0.01}, "rmsprop": {"centered": True, "momentum": 0.5},
           "adagrad": {"lr_decay": 0.01}, "adadelta": {"weight_decay": 0.1}}
CONFIGS.update({name: {} for name in fastadapt.RULES if name not in CONFIGS})
# (max_grad_norm, loss scale); the gradients' global norm is about 7.5
PIPELINES = [(None, 2.0 ** 16), (1.0, 1.0), (100.0, 1024.0), (0.5, 2.0 ** 16), (2.0, 3.0)]


def _model(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def _scaled_gradients(dtype, scale, seed=1):
    """Per step, the gradients times ``scale``, rounded to ``dtype`` (as a
    backward pass through a scaled loss makes them), with a non-finite
    element in the SKIPPED steps."""
    rng = np.random.default_rng(seed)
    steps = []
    for t in range(STEPS):
        grads = [(rng.standard_normal(s) * scale).astype(dtype) for s in SHAPES]
        if t in SKIPPED:
            grads[-1].reshape(-1)[t] = np.inf if t % 2 else np.nan
        steps.append(grads)
    return steps


def _groups(arrays):
    return [{"params": arrays[:2]}, {"params": arrays[2:], "lr": 0.003}]


def _torch_pipeline(torch, name, config, params0, grads, scale, max_norm):
    tparams = [torch.tensor(p, requires_grad=True) for p in params0]
    topt = cases.torch_optimizer(name, _groups(tparams), config)
    scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    skipped = []
    for step_grads in grads:
        scaler.scale(torch.ones(()))          # GradScaler needs a scale() per iteration
        for p, g in zip(tparams, step_grads):
            p.grad = torch.tensor(g)
        scaler.unscale_(topt)
        if max_norm is not None:
            torch.nn.utils.clip_grad_norm_(tparams, max_norm)
        for p in tparams:       # (SparseAdam: as sparse gradients, after the dense clipping)
            p.grad = cases.torch_grad(name, p.grad)
        skipped.append(bool(sum(v.item() for v in scaler._found_inf_per_device(topt).values())))
        scaler.step(topt)
        scaler.update(scale)                   # keep the scale fixed
    return tparams, topt, skipped


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("max_norm, scale", PIPELINES, ids=lambda v: f"{v}")
@pytest.mark.parametrize("name", IN_TORCH)
def test_matches_torch_pipeline(torch, name, max_norm, scale, dtype):
    config = CONFIGS[name]
    params0, grads = _model(dtype), _scaled_gradients(dtype, scale)
    opt = CLASSES[name](_groups(params0), max_grad_norm=max_norm, **config)
    norms, skipped = [], []
    for step_grads in grads:
        opt.step(step_grads, grad_scale=scale)
        norms.append(opt.grad_norm)
        skipped.append(opt.step_skipped)

    tparams, topt, tskipped = _torch_pipeline(torch, name, config, params0, grads, scale,
                                              max_norm)
    assert skipped == tskipped == [t in SKIPPED for t in range(STEPS)]
    for t, norm in enumerate(norms):
        expected = math.sqrt(sum(float(np.sum((g.astype(np.float64) / scale) ** 2))
                                 for g in grads[t]))
        if t in SKIPPED:
            assert not math.isfinite(norm)
        else:
            assert norm == pytest.approx(expected, rel=1e-12)

    exact = dtype == np.float64 and max_norm is None and math.log2(scale).is_integer()
    budget = dtype if exact else np.float32
    steps_taken = STEPS - len(SKIPPED)
    state = opt.state
    assert [s["step"] for s in state] == [steps_taken, steps_taken]
    where = [(g, i) for g, b in enumerate(opt._groups) for i in range(len(b.param))]
    for k, (p, tp) in enumerate(zip(opt.params, tparams)):
        assert_close(p, tp.detach().numpy(), budget, f"param {k}")
        g, i = where[k]
        tstate = topt.state[tp]
        assert int(tstate.get("step", steps_taken)) == steps_taken
        torch_names = fastadapt.RULES[name].torch_state_names
        for n, v in state[g].items():
            if n != "step":
                assert_close(v[i], tstate[torch_names[n]].numpy(), budget,
                             f"param {k} {n}")


def test_tolerance_catches_a_missed_clip(torch):
    """The parity tolerance fails a pipeline that forgets to clip."""
    params0, grads = _model(np.float32), _scaled_gradients(np.float32, 1.0)
    opt = fastadapt.SGD(_groups(params0), lr=0.01, momentum=0.9)       # no max_grad_norm
    for step_grads in grads:
        opt.step(step_grads, grad_scale=1.0)
    tparams, _, _ = _torch_pipeline(torch, "sgd", {"lr": 0.01, "momentum": 0.9}, params0,
                                    grads, 1.0, max_norm=5.0)
    with pytest.raises(AssertionError):
        for p, tp in zip(opt.params, tparams):
            assert_close(p, tp.detach().numpy(), np.float32)


# ------------------------------------------------------------------ skipping
def _snapshot(opt):
    return ([p.copy() for p in opt.flat_params],
            [{n: np.concatenate([v.reshape(-1) for v in views]) if n != "step" else views
              for n, views in s.items()} for s in opt.state],
            opt.get_lr())


def _assert_same_snapshot(a, b):
    params_a, state_a, lr_a = a
    params_b, state_b, lr_b = b
    for x, y in zip(params_a, params_b):
        assert x.tobytes() == y.tobytes()
    assert [set(s) for s in state_a] == [set(s) for s in state_b]
    for sa, sb in zip(state_a, state_b):
        for n in sa:
            if n == "step":
                assert sa[n] == sb[n]
            else:
                assert sa[n].tobytes() == sb[n].tobytes()
    assert lr_a == lr_b


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("group", [0, 1], ids=["first-group", "last-group"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_non_finite_gradient_skips_the_step(name, bad, where, group, dtype):
    params0 = _model(dtype)
    lr = schedules.ExponentialDecay(0.01, gamma=0.5) if name == "adam" else 0.01
    opt = CLASSES[name](_groups(params0), lr=lr, max_grad_norm=1.0, **(
        {"amsgrad": True} if name == "adam" else {"momentum": 0.9}))
    rng = np.random.default_rng(3)
    for _ in range(2):
        opt.step([rng.standard_normal(s).astype(dtype) for s in SHAPES], grad_scale=8.0)
    before = _snapshot(opt)
    grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    in_group = [0, 1] if group == 0 else [2, 3, 4]
    arrays = [k for k in in_group if grads[k].size]
    k = {"first": arrays[0], "middle": arrays[len(arrays) // 2], "last": arrays[-1]}[where]
    flat = grads[k].reshape(-1)
    flat[{"first": 0, "middle": flat.size // 2, "last": flat.size - 1}[where]] = bad
    opt.step(grads, grad_scale=8.0)
    assert opt.step_skipped
    assert math.isnan(opt.grad_norm) if np.isnan(bad) else opt.grad_norm == math.inf
    _assert_same_snapshot(_snapshot(opt), before)
    opt.step([np.ones(s, dtype) for s in SHAPES], grad_scale=8.0)   # and it goes on
    assert not opt.step_skipped and opt.state[0]["step"] == 3


def test_gradients_that_overflow_only_once_scaled():
    true = [np.full(s, 1e35, np.float32) for s in SHAPES]
    assert fastadapt.grad_norm(*true) < math.inf
    with np.errstate(over="ignore"):
        scaled = [g * np.float32(2 ** 16) for g in true]      # 6.6e39: inf in float32
    assert np.isinf(scaled[0]).all()
    opt = fastadapt.Adam(_model(np.float32))
    before = _snapshot(opt)
    opt.step(scaled, grad_scale=2 ** 16)
    assert opt.step_skipped and opt.grad_norm == math.inf
    _assert_same_snapshot(_snapshot(opt), before)


def test_no_norm_without_the_options():
    opt = fastadapt.SGD(_model(np.float32), lr=0.1)
    opt.step([np.ones(s, np.float32) for s in SHAPES])
    assert opt.grad_norm is None and not opt.step_skipped
    bad = [np.ones(s, np.float32) for s in SHAPES]
    bad[0][0] = np.inf
    opt.step(bad)                  # as torch.optim does: applied, not skipped
    assert opt.grad_norm is None and not opt.step_skipped
    assert np.isinf(opt.params[0][0])


# ------------------------------------------------------------------ details
def test_padding_does_not_count():
    opt = fastadapt.Adam(_model(np.float32), max_grad_norm=1e9)
    grads = [np.full(s, 2.0, np.float32) for s in SHAPES]
    opt.step(grads)
    clean = opt.grad_norm
    assert clean == math.sqrt(4.0 * sum(g.size for g in grads))
    data = opt.flat_grads[0]
    padding = np.ones(data.size, bool)
    for view in opt._groups[0].grad.views:
        start = (view.__array_interface__["data"][0] - data.__array_interface__["data"][0]) // 4
        padding[start:start + view.size] = False
    assert padding.any()
    data[padding] = np.nan                      # garbage a user wrote there
    opt.step()
    assert opt.grad_norm == clean and not opt.step_skipped


def test_clip_coefficient_as_torch(torch):
    """clip_coef = max_norm / (norm + 1e-6), clamped to 1: a threshold just
    above the norm still scales by max_norm / (norm + 1e-6) < 1."""
    params = [np.zeros(4)]
    grads = [np.array([3.0, 4.0, 0.0, 0.0])]          # norm 5
    for max_norm in (5.0, 5.0 + 5e-7, 5.0 + 2e-6, 1.0):
        opt = fastadapt.SGD(params, lr=1.0, max_grad_norm=max_norm)
        opt.step(grads)
        p = torch.zeros(4, dtype=torch.float64, requires_grad=True)
        p.grad = torch.tensor(grads[0])
        torch.nn.utils.clip_grad_norm_([p], max_norm)
        np.testing.assert_allclose(-opt.params[0], p.grad.numpy(), rtol=1e-15)
        assert opt.grad_norm == 5.0


def test_every_class_takes_max_grad_norm():
    for cls in CLASSES.values():
        parameter = inspect.signature(cls).parameters["max_grad_norm"]
        assert parameter.default is None and parameter.kind is inspect.Parameter.KEYWORD_ONLY
        assert cls([np.ones(3)], max_grad_norm=2).max_grad_norm == 2.0
        assert cls([np.ones(3)]).max_grad_norm is None


@pytest.mark.parametrize("value, error, match", [
    (0.0, ValueError, "invalid max_grad_norm"), (-1.0, ValueError, "invalid max_grad_norm"),
    (math.nan, ValueError, "invalid max_grad_norm"),
    ("big", TypeError, "max_grad_norm must be a real number"),
    (True, TypeError, "max_grad_norm must be a real number"),
])
def test_bad_max_grad_norm(value, error, match):
    with pytest.raises(error, match=match):
        fastadapt.Adam([np.ones(3)], max_grad_norm=value)
    opt = fastadapt.Adam([np.ones(3)], max_grad_norm=1.0)
    with pytest.raises(error, match=match):
        opt.max_grad_norm = value
    assert opt.max_grad_norm == 1.0


@pytest.mark.parametrize("scale", [0.0, -1.0, math.inf, math.nan])
def test_bad_grad_scale_changes_nothing(scale):
    opt = fastadapt.Adam(_model(np.float64), max_grad_norm=1.0)
    before = _snapshot(opt)
    grads_before = [g.copy() for g in opt.grads]
    with pytest.raises(ValueError, match="invalid grad_scale"):
        opt.step([np.ones(s) for s in SHAPES], grad_scale=scale)
    _assert_same_snapshot(_snapshot(opt), before)
    for g, b in zip(opt.grads, grads_before):     # not even the gradients were copied
        assert g.tobytes() == b.tobytes()


def test_checkpoint_round_trip_after_a_skipped_step(tmp_path):
    opt = fastadapt.AdamW(_model(np.float32), max_grad_norm=1.0)
    opt.step([np.ones(s, np.float32) for s in SHAPES], grad_scale=4.0)
    bad = [np.ones(s, np.float32) for s in SHAPES]
    bad[2][0] = np.nan
    opt.step(bad, grad_scale=4.0)
    opt.save(tmp_path / "ckpt.npz")
    restored = fastadapt.AdamW.from_checkpoint(tmp_path / "ckpt.npz")
    assert restored.state[0]["step"] == 1
    restored.max_grad_norm = 1.0
    grads = [np.full(s, 3.0, np.float32) for s in SHAPES]
    opt.step(grads, grad_scale=4.0)
    restored.step(grads, grad_scale=4.0)
    for a, b in zip(opt.params, restored.params):
        assert a.tobytes() == b.tobytes()


# ------------------------------------------------------------------ functional
def _functional_step(name, param, grad, maximize, grad_scale):
    rule = fastadapt.RULES[name]
    state = {s: np.zeros_like(param) for s in rule.state_for(**CONFIGS[name])}
    kwargs = dict(CONFIGS[name], maximize=maximize, **state)
    if rule.takes_step:
        kwargs["step"] = 1
    param = param.copy()
    step_for(rule)(param, grad, grad_scale=grad_scale, **kwargs)
    return param, state


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("name", CLASSES)
def test_functional_grad_scale(name, maximize, dtype):
    """A power-of-two grad_scale is exact (same bits as the unscaled step);
    another one differs by the rounding of grad * 3 and of 1 / 3 (a few ulps of
    the gradient, inside conftest's budget)."""
    rng = np.random.default_rng(0)
    param, grad = (rng.standard_normal(1009).astype(dtype) for _ in range(2))
    expected, expected_state = _functional_step(name, param, grad, maximize, None)
    p, state = _functional_step(name, param, grad * dtype(2 ** 16), maximize, 2.0 ** 16)
    assert p.tobytes() == expected.tobytes()
    for k in state:
        assert state[k].tobytes() == expected_state[k].tobytes(), k
    p, state = _functional_step(name, param, grad * dtype(3), maximize, 3.0)
    assert_close(p, expected, dtype, "param, grad_scale 3")
    for k in state:
        assert_close(state[k], expected_state[k], dtype, f"{k}, grad_scale 3")


@pytest.mark.parametrize("scale, error", [(0, ValueError), (-2.0, ValueError),
                                          (math.inf, ValueError), (math.nan, ValueError),
                                          ([1.0], TypeError)])
def test_functional_bad_grad_scale_changes_nothing(scale, error):
    p, g, m, v = (np.ones(10) for _ in range(4))
    with pytest.raises(error, match="grad_scale"):
        fastadapt.adam_step(p, g, m, v, step=1, grad_scale=scale)
    assert (p == 1).all() and (m == 1).all() and (v == 1).all()


def test_max_grad_norm_reaches_subclasses_of_any_shape():
    class Plain(fastadapt.Optimizer):            # no __init__: the base class takes it
        rule = fastadapt.RULES["sgd"]

    class Forwarding(fastadapt.SGD):             # **kwargs passed on
        def __init__(self, params, **kwargs):
            super().__init__(params, lr=0.5, **kwargs)

    class Fixed(fastadapt.SGD):                  # its own signature, wrapped
        def __init__(self, params, momentum=0.0):
            super().__init__(params, lr=0.5, momentum=momentum)

    defaults = dict(fastadapt.RULES["sgd"].defaults)
    assert Plain([np.ones(3)], **defaults, max_grad_norm=3).max_grad_norm == 3.0
    assert Forwarding([np.ones(3)], max_grad_norm=4).max_grad_norm == 4.0
    assert Fixed([np.ones(3)], max_grad_norm=5).max_grad_norm == 5.0
    assert "max_grad_norm" in inspect.signature(Fixed).parameters
    with pytest.raises(ValueError, match="invalid max_grad_norm"):
        Forwarding([np.ones(3)], max_grad_norm=-1)


def test_bad_hyper_parameters_raise_even_when_the_step_would_be_skipped():
    opt = fastadapt.Adam(_groups(_model(np.float32)), max_grad_norm=1.0)
    bad = [np.ones(s, np.float32) for s in SHAPES]
    bad[0][0] = np.nan
    opt.param_groups[1]["betas"] = (0.9, 1.5)
    before = _snapshot(opt)
    with pytest.raises(ValueError, match=r"param group 1: invalid betas\[1\]"):
        opt.step(bad, grad_scale=2.0)
    _assert_same_snapshot(_snapshot(opt), before)
    assert not np.isnan(opt.grads[0][0])           # checks first: nothing copied


@pytest.mark.parametrize("max_norm", [0.5, np.inf])
def test_max_grad_norm_survives_a_checkpoint(tmp_path, max_norm):
    # from_checkpoint rebuilds the optimizer: without the threshold in the file
    # the resumed run would silently stop clipping and leave the trajectory
    rng = np.random.default_rng(3)
    params0 = [rng.standard_normal(n).astype(np.float32) for n in (7, 130)]
    grads = [[rng.standard_normal(p.size).astype(np.float32) * 4 for p in params0]
             for _ in range(4)]
    straight = fastadapt.Adam([p.copy() for p in params0], lr=0.1, max_grad_norm=max_norm)
    first = fastadapt.Adam([p.copy() for p in params0], lr=0.1, max_grad_norm=max_norm)
    for opt in (straight, first):
        opt.step(grads[0])
        opt.step(grads[1])
    first.save(tmp_path / "ckpt.npz")
    resumed = fastadapt.Adam.from_checkpoint(tmp_path / "ckpt.npz")
    assert resumed.max_grad_norm == max_norm
    for g in grads[2:]:
        straight.step(g)
        resumed.step(g)
    for a, b in zip(straight.param_groups[0]["params"], resumed.param_groups[0]["params"]):
        np.testing.assert_array_equal(a, b)
    # load_state_dict keeps the receiving optimizer's own setting
    other = fastadapt.Adam([p.copy() for p in params0], lr=0.1)
    other.load(tmp_path / "ckpt.npz")
    assert other.max_grad_norm is None


def test_checkpoint_with_a_bad_max_grad_norm_is_refused():
    opt = fastadapt.Adam([np.ones(3, np.float32)], max_grad_norm=1.0)
    sd = opt.state_dict()
    sd["max_grad_norm"] = -1.0
    with pytest.raises(ValueError, match="max_grad_norm"):
        fastadapt.Adam([np.ones(3, np.float32)]).load_state_dict(sd)
