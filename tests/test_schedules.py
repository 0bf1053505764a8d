"""Tests for fastadapt.schedules.

Convention under test: ``schedule(n)`` is the lr of the optimizer step that
follows ``n`` completed steps, i.e. torch's ``param_groups[0]["lr"]`` after
``scheduler.step()`` has been called ``n`` times.
"""

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastadapt import schedules

S = schedules

lrs = st.floats(1e-6, 10.0)
gammas = st.floats(0.05, 1.5)
alphas = st.floats(0.0, 5.0)
steps = st.integers(0, 10_000)


# ---------------------------------------------------------------- closed forms
# The expected values below are computed independently in float64 with the
# same operation order as the documented formula, so they must match with ==.


@given(lr=lrs, t=steps)
def test_constant(lr, t):
    assert S.constant(lr)(t) == lr
    assert S.Constant(lr)(t) == lr


@given(lr=lrs, step_size=st.integers(1, 50), gamma=gammas, t=st.integers(0, 500))
def test_step_decay_closed_form(lr, step_size, gamma, t):
    k = sum(1 for j in range(1, t + 1) if j % step_size == 0)  # decays so far
    assert S.StepDecay(lr, step_size, gamma)(t) == lr * gamma**k


@given(
    lr=lrs,
    milestones=st.lists(st.integers(0, 100), max_size=6),
    gamma=gammas,
    t=st.integers(0, 120),
)
def test_multistep_decay_closed_form(lr, milestones, gamma, t):
    k = sum(1 for m in milestones if m <= t)  # repeated milestones count twice
    assert S.MultiStepDecay(lr, milestones, gamma)(t) == lr * gamma**k


@given(lr=lrs, gamma=gammas, t=st.integers(0, 300))
def test_exponential_decay_closed_form(lr, gamma, t):
    assert S.ExponentialDecay(lr, gamma)(t) == lr * gamma**t


@given(lr=lrs, alpha=alphas, t=steps)
def test_inverse_time_and_sqrt_closed_form(lr, alpha, t):
    assert S.InverseTimeDecay(lr, alpha)(t) == lr / (1.0 + alpha * t)
    assert S.InverseSqrtDecay(lr, alpha)(t) == lr / math.sqrt(1.0 + alpha * t)


def cosine_ref(lr, T, eta, t):
    return eta + (lr - eta) * (1.0 + math.cos(math.pi * t / T)) / 2.0


@given(
    lr=lrs,
    T=st.integers(1, 1000),
    eta_frac=st.sampled_from([0.0, 0.01, 0.5]),
    t=st.integers(0, 3000),
)
def test_cosine_closed_form(lr, T, eta_frac, t):
    eta = lr * eta_frac
    s = S.CosineAnnealing(lr, T, eta)
    assert s(t) == cosine_ref(lr, T, eta, t)
    assert s(0) == lr
    assert s(T) == eta  # cos(pi) == -1.0 exactly in IEEE double
    # eta + (lr - eta) may round differently from lr, and pi*t/T is rounded
    # differently from pi*(t + 2T)/T, so these two identities hold to a few
    # ulps only; abs_tol covers values near eta = 0 where rel_tol is useless.
    assert math.isclose(s(2 * T), lr, rel_tol=1e-15)
    t0 = t % (2 * T)  # keep angles small: their rounding error grows with t
    assert math.isclose(s(t0 + 2 * T), s(t0), rel_tol=1e-13, abs_tol=1e-13 * lr)
    assert min(lr, eta) <= s(t) <= max(lr, eta) * (1 + 1e-15)  # see s(2T) above


inner_schedules = st.one_of(
    st.builds(S.Constant, lrs),
    st.builds(S.StepDecay, lrs, st.integers(1, 10), gammas),
    st.builds(S.ExponentialDecay, lrs, gammas),
    st.builds(S.CosineAnnealing, lrs, st.integers(1, 40)),
    st.builds(S.InverseSqrtDecay, lrs, alphas),
)


@given(
    inner=inner_schedules,
    W=st.integers(0, 50),
    sf=st.floats(0.0, 1.0),
    t=st.integers(0, 200),
)
def test_linear_warmup_closed_form(inner, W, sf, t):
    s = S.LinearWarmup(inner, W, sf)
    if t < W:
        expected = inner(0) * (sf + (1.0 - sf) * t / W)
    else:
        expected = inner(t - W)
    assert s(t) == expected
    assert s(W) == inner(0)
    if W:
        assert s(0) == inner(0) * sf
        ramp = [s(k) for k in range(W + 1)]
        assert ramp == sorted(ramp)  # non-decreasing up to inner(0)


def test_linear_warmup_number_and_zero_warmup():
    assert S.LinearWarmup(0.5, 4)(2) == 0.25
    assert S.LinearWarmup(0.5, 4)(10) == 0.5
    cos = S.CosineAnnealing(1.0, 10)
    assert [S.LinearWarmup(cos, 0)(t) for t in range(30)] == [cos(t) for t in range(30)]
    # any callable works as the inner schedule
    assert S.LinearWarmup(lambda t: 2.0 / (t + 1), 2, 0.5)(3) == 1.0


# ------------------------------------------------------------- ReduceOnPlateau
def test_plateau_hand_computed():
    s = S.ReduceOnPlateau(1.0, factor=0.5, patience=1, cooldown=1)
    got = [s.step(m) for m in [5, 5, 5, 5, 5, 4, 4, 4]]
    assert got == [1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25]
    assert s(0) == s(12345) == 0.25  # independent of t
    assert s.best == 4.0 and s.last_epoch == 8

    s = S.ReduceOnPlateau(1.0, mode="max", factor=0.5, patience=0, min_lr=0.4)
    assert [s.step(1.0) for _ in range(4)] == [1.0, 0.5, 0.4, 0.4]

    s = S.ReduceOnPlateau(1e-8, factor=0.5, patience=0, eps=1e-8)
    assert [s.step(1.0) for _ in range(3)] == [1e-8] * 3  # change <= eps ignored

    s = S.ReduceOnPlateau(1.0, patience=0, threshold=0.5, threshold_mode="abs")
    assert [s.step(m) for m in [10.0, 9.6, 9.4]] == [1.0, 0.1, 0.1]
    assert s.best == 9.4


metric_values = st.one_of(
    st.sampled_from([0.0, 1.0, 1.00005, 2.0, -1.0, float("nan")]),
    st.floats(-10.0, 10.0),
)
plateau_kwargs = st.fixed_dictionaries(
    {
        "mode": st.sampled_from(["min", "max"]),
        "factor": st.sampled_from([0.1, 0.5, 0.9, 0.37]),
        "patience": st.integers(0, 4),
        "threshold": st.sampled_from([0.0, 1e-4, 0.05, 0.5]),
        "threshold_mode": st.sampled_from(["rel", "abs"]),
        "cooldown": st.integers(0, 3),
        "min_lr": st.sampled_from([0.0, 1e-4, 0.02]),
        "eps": st.sampled_from([0.0, 1e-8, 1e-3]),
    }
)


@settings(deadline=None)
@given(
    lr=st.floats(1e-3, 1.0),
    kw=plateau_kwargs,
    metrics=st.lists(metric_values, max_size=60),
    split=st.integers(0, 60),
)
def test_plateau_state_roundtrip(lr, kw, metrics, split):
    ref = S.ReduceOnPlateau(lr, **kw)
    expected = [ref.step(m) for m in metrics]
    first = S.ReduceOnPlateau(lr, **kw)
    got = [first.step(m) for m in metrics[:split]]
    blob = json.dumps({"config": first.to_config(), "state": first.state_dict()})
    loaded = json.loads(blob)
    second = S.from_config(loaded["config"])
    second.load_state_dict(loaded["state"])
    got += [second.step(m) for m in metrics[split:]]
    assert got == expected
    assert second.state_dict() == ref.state_dict()


# ---------------------------------------------------- config / repr / errors
ALL = [
    S.constant(0.3),
    S.StepDecay(0.1, 7, 0.5),
    S.MultiStepDecay(0.1, [30, 10, 10], 0.2),
    S.ExponentialDecay(0.2, 0.97),
    S.InverseTimeDecay(0.1, 0.01),
    S.InverseSqrtDecay(0.1, 0.5),
    S.CosineAnnealing(0.1, 25, 1e-3),
    S.LinearWarmup(S.CosineAnnealing(0.1, 25), 5, 0.1),
    S.LinearWarmup(S.LinearWarmup(S.ExponentialDecay(1.0, 0.9), 3), 2, 0.5),
    S.ReduceOnPlateau(0.1, "max", 0.5, 3, 1e-3, "abs", 2, 1e-5, 1e-9),
    S.LinearWarmup(S.ReduceOnPlateau(0.1, patience=0), 4),
]


@pytest.mark.parametrize("s", ALL, ids=repr)
def test_config_json_and_repr_roundtrip(s):
    cfg = s.to_config()
    assert json.loads(json.dumps(cfg)) == cfg
    assert cfg["name"] == type(s).__name__
    rebuilt = S.from_config(json.loads(json.dumps(cfg)))
    assert type(rebuilt) is type(s) and rebuilt.to_config() == cfg
    assert [rebuilt(t) for t in range(100)] == [s(t) for t in range(100)]
    from_repr = eval(repr(s), vars(S))
    assert from_repr.to_config() == cfg
    assert repr(from_repr) == repr(s)


def test_stateful_nested_warmup_checkpoint():
    s = S.LinearWarmup(S.ReduceOnPlateau(1.0, patience=0, factor=0.5), 2)
    for m in [3.0, 3.0, 3.0]:
        s.schedule.step(m)
    state = json.loads(json.dumps(s.state_dict()))
    r = S.from_config(s.to_config())
    assert r(5) == 1.0
    r.load_state_dict(state)
    assert r(5) == s(5) == 0.25 and r(1) == s(1) == 0.125


def test_stateless_state_dict():
    s = S.StepDecay(0.1, 3)
    assert s.state_dict() == {}
    s.load_state_dict({})
    with pytest.raises(ValueError, match="stateless"):
        s.load_state_dict({"x": 1})
    with pytest.raises(ValueError, match="state dict must have keys"):
        S.ReduceOnPlateau(0.1).load_state_dict({"lr": 0.1})


def test_from_config_errors():
    with pytest.raises(ValueError, match="unknown schedule name"):
        S.from_config({"name": "Nope"})
    with pytest.raises(ValueError, match="'name'"):
        S.from_config({"lr": 0.1})
    with pytest.raises(ValueError, match="bad config for StepDecay"):
        S.from_config({"name": "StepDecay", "lr": 0.1})
    with pytest.raises(TypeError, match="cannot be serialised"):
        S.LinearWarmup(lambda t: 0.1, 3).to_config()


@pytest.mark.parametrize(
    "make, arg",
    [
        (lambda: S.Constant(-0.1), "lr"),
        (lambda: S.Constant(float("nan")), "lr"),
        (lambda: S.StepDecay(float("inf"), 3), "lr"),
        (lambda: S.StepDecay(0.1, 0), "step_size"),
        (lambda: S.StepDecay(0.1, 3, 0.0), "gamma"),
        (lambda: S.StepDecay(0.1, 3, -0.5), "gamma"),
        (lambda: S.MultiStepDecay(0.1, [3, -1]), "milestones"),
        (lambda: S.MultiStepDecay(0.1, [3], 0), "gamma"),
        (lambda: S.ExponentialDecay(0.1, 0.0), "gamma"),
        (lambda: S.InverseTimeDecay(0.1, -1.0), "alpha"),
        (lambda: S.InverseSqrtDecay(-1.0, 1.0), "lr"),
        (lambda: S.CosineAnnealing(0.1, 0), "T_max"),
        (lambda: S.CosineAnnealing(0.1, 10, -1e-3), "eta_min"),
        (lambda: S.LinearWarmup(S.Constant(0.1), -1), "warmup_steps"),
        (lambda: S.LinearWarmup(S.Constant(0.1), 5, 1.5), "start_factor"),
        (lambda: S.LinearWarmup(S.Constant(0.1), 5, -0.1), "start_factor"),
        (lambda: S.ReduceOnPlateau(0.1, factor=1.0), "factor"),
        (lambda: S.ReduceOnPlateau(0.1, factor=0.0), "factor"),
        (lambda: S.ReduceOnPlateau(0.1, mode="up"), "mode"),
        (lambda: S.ReduceOnPlateau(0.1, threshold_mode="x"), "threshold_mode"),
        (lambda: S.ReduceOnPlateau(0.1, patience=-1), "patience"),
        (lambda: S.ReduceOnPlateau(0.1, cooldown=-1), "cooldown"),
        (lambda: S.ReduceOnPlateau(0.1, threshold=-1), "threshold"),
        (lambda: S.ReduceOnPlateau(0.1, min_lr=-1), "min_lr"),
        (lambda: S.ReduceOnPlateau(0.1, eps=-1), "eps"),
        (lambda: S.ReduceOnPlateau(-0.1), "lr"),
    ],
)
def test_invalid_arguments(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


def test_invalid_types():
    with pytest.raises(TypeError, match="step_size"):
        S.StepDecay(0.1, 2.5)
    with pytest.raises(TypeError, match="lr"):
        S.Constant("0.1")
    with pytest.raises(TypeError, match="milestones"):
        S.MultiStepDecay(0.1, 5)
    with pytest.raises(ValueError, match="step t"):
        S.Constant(0.1)(-1)
    with pytest.raises(TypeError, match="step t"):
        S.Constant(0.1)(1.5)


def test_resolve_lr():
    assert S.resolve_lr(0.1, 5) == 0.1 and type(S.resolve_lr(1, 0)) is float
    assert S.resolve_lr(0, 0) == 0.0
    s = S.StepDecay(1.0, 2, 0.5)
    assert [S.resolve_lr(s, n) for n in range(5)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert S.resolve_lr(lambda t: 1 / (t + 1), 3) == 0.25
    for bad in (-0.1, float("nan"), float("inf"), "abc"):
        with pytest.raises(ValueError, match="finite number >= 0"):
            S.resolve_lr(bad, 0)

    def bad_schedule(t):
        return -1.0 if t == 7 else 0.1

    assert S.resolve_lr(bad_schedule, 6) == 0.1
    with pytest.raises(ValueError, match=r"bad_schedule.*at step 7"):
        S.resolve_lr(bad_schedule, 7)
    grow = S.StepDecay(1.0, 1, 1.5)
    assert grow(2000) == math.inf  # 1.5**2000 overflows: inf, not OverflowError
    assert S.ExponentialDecay(0.0, 1.5)(2000) == 0.0
    with pytest.raises(ValueError, match=r"StepDecay.*at step 2000"):
        S.resolve_lr(grow, 2000)
    with pytest.raises(ValueError, match="steps_done"):
        S.resolve_lr(0.1, -1)


# ------------------------------------------------------------ against torch
# torch updates most schedules recursively (lr <- lr * gamma, chainable cosine
# ratio, LinearLR increments), so its values differ from our closed forms by
# accumulated rounding.  For n <= ~200 steps that is at most a few hundred
# ulps: products of n factors are off by <= n * 2**-53 relative (~2e-14), and
# the cosine recursion telescopes, with a measured worst case of ~1.3e-13
# (relative to lr) for T_max <= 60 over t <= 3 * T_max (its error grows
# roughly like T_max**2 * 1e-17).  rel_tol=1e-12 leaves a safety margin while
# still catching any off-by-one step (which changes values by >= 1e-6 here).
# abs_tol handles values at (or a rounding error away from) eta_min = 0.
TOL = dict(rel_tol=1e-12, abs_tol=1e-15)


def torch_lrs(torch, lr0, make, n):
    """lr of a dummy torch optimizer after 0..n calls of scheduler.step()."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr0)
    sched = make(opt)
    out = [opt.param_groups[0]["lr"]]
    for _ in range(n):
        opt.step()  # no grad: a no-op that avoids torch's call-order warning
        sched.step()
        out.append(opt.param_groups[0]["lr"])
    return out


def assert_matches(ours, theirs, lr0):
    for t, v in enumerate(theirs):
        ok = math.isclose(ours(t), v, rel_tol=TOL["rel_tol"], abs_tol=TOL["abs_tol"] * lr0)
        assert ok, (t, ours(t), v)


torch_settings = settings(deadline=None, max_examples=60)


@torch_settings
@given(lr0=st.floats(1e-4, 2.0), step_size=st.integers(1, 15), gamma=gammas)
def test_torch_step_lr(lr0, step_size, gamma):
    torch = pytest.importorskip("torch")
    L = torch.optim.lr_scheduler
    lrs_t = torch_lrs(torch, lr0, lambda o: L.StepLR(o, step_size, gamma), 60)
    assert_matches(S.StepDecay(lr0, step_size, gamma), lrs_t, lr0)


@torch_settings
@given(
    lr0=st.floats(1e-4, 2.0),
    milestones=st.lists(st.integers(1, 60), max_size=5),
    gamma=gammas,
)
def test_torch_multistep_lr(lr0, milestones, gamma):
    torch = pytest.importorskip("torch")
    L = torch.optim.lr_scheduler
    lrs_t = torch_lrs(torch, lr0, lambda o: L.MultiStepLR(o, milestones, gamma), 70)
    assert_matches(S.MultiStepDecay(lr0, milestones, gamma), lrs_t, lr0)


@torch_settings
@given(lr0=st.floats(1e-4, 2.0), gamma=gammas)
def test_torch_exponential_lr(lr0, gamma):
    torch = pytest.importorskip("torch")
    L = torch.optim.lr_scheduler
    lrs_t = torch_lrs(torch, lr0, lambda o: L.ExponentialLR(o, gamma), 60)
    assert_matches(S.ExponentialDecay(lr0, gamma), lrs_t, lr0)


@torch_settings
@given(
    lr0=st.floats(1e-4, 2.0),
    T=st.integers(1, 60),
    eta_frac=st.sampled_from([0.0, 0.001, 0.3, 1.0]),
)
def test_torch_cosine_annealing_three_periods(lr0, T, eta_frac):
    torch = pytest.importorskip("torch")
    eta = lr0 * eta_frac
    n = max(51, 3 * T)  # past T_max: torch's recursion is periodic like ours
    L = torch.optim.lr_scheduler
    lrs_t = torch_lrs(torch, lr0, lambda o: L.CosineAnnealingLR(o, T, eta), n)
    assert_matches(S.CosineAnnealing(lr0, T, eta), lrs_t, lr0)


@torch_settings
@given(
    lr0=st.floats(1e-4, 2.0),
    W=st.integers(1, 20),
    sf=st.floats(1e-3, 1.0),  # torch's LinearLR requires start_factor > 0
    kind=st.sampled_from(["cos", "step", "exp"]),
    T=st.integers(1, 30),
    gamma=gammas,
)
def test_torch_linear_warmup_sequential(lr0, W, sf, kind, T, gamma):
    torch = pytest.importorskip("torch")
    L = torch.optim.lr_scheduler
    inner_t = {
        "cos": lambda o: L.CosineAnnealingLR(o, T),
        "step": lambda o: L.StepLR(o, T, gamma),
        "exp": lambda o: L.ExponentialLR(o, gamma),
    }[kind]
    inner = {
        "cos": lambda: S.CosineAnnealing(lr0, T),
        "step": lambda: S.StepDecay(lr0, T, gamma),
        "exp": lambda: S.ExponentialDecay(lr0, gamma),
    }[kind]()

    def make(o):
        return L.SequentialLR(o, [L.LinearLR(o, sf, 1.0, W), inner_t(o)], [W])

    lrs_t = torch_lrs(torch, lr0, make, W + max(50, 2 * T))
    assert_matches(S.LinearWarmup(inner, W, sf), lrs_t, lr0)


def _plateau_vs_torch(torch, lr0, kw, metrics):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kw)
    ours = S.ReduceOnPlateau(lr0, **kw)
    for m in metrics:
        ref.step(m)
        ours.step(m)
        # identical float operations in identical order: exact equality
        assert ours(0) == opt.param_groups[0]["lr"]
        for k in ("best", "num_bad_epochs", "cooldown_counter", "last_epoch"):
            assert getattr(ours, k) == getattr(ref, k), k


@settings(deadline=None, max_examples=200)
@given(
    lr0=st.floats(1e-3, 1.0),
    kw=plateau_kwargs,
    metrics=st.lists(metric_values, max_size=80),
)
def test_torch_reduce_on_plateau_drawn(lr0, kw, metrics):
    torch = pytest.importorskip("torch")
    _plateau_vs_torch(torch, lr0, kw, metrics)


@pytest.mark.parametrize("seed", range(8))
def test_torch_reduce_on_plateau_random_walks(seed):
    torch = pytest.importorskip("torch")
    rng = random.Random(seed)
    for mode in ("min", "max"):
        for threshold_mode in ("rel", "abs"):
            kw = dict(
                mode=mode,
                factor=rng.choice([0.1, 0.5, 0.8]),
                patience=rng.randint(0, 5),
                threshold=rng.choice([1e-4, 1e-2, 0.2]),
                threshold_mode=threshold_mode,
                cooldown=rng.randint(0, 4),
                min_lr=rng.choice([0.0, 1e-3]),
                eps=rng.choice([1e-8, 1e-4]),
            )
            # a noisy loss curve that flattens out, so lr reductions happen
            x, metrics = 5.0, []
            for _ in range(300):
                x = x * 0.97 + rng.gauss(0, 0.05) + 0.1
                metrics.append(x if mode == "min" else -x)
            _plateau_vs_torch(torch, rng.uniform(1e-3, 1.0), kw, metrics)


# ---------------------------------------------------------------- huge steps
HUGE = 2**1100          # beyond the float range


def test_huge_step_numbers_give_the_limit():
    assert S.ExponentialDecay(0.1, 0.5)(HUGE) == 0.0
    assert S.ExponentialDecay(0.1, 2.0)(HUGE) == math.inf
    assert S.ExponentialDecay(0.0, 2.0)(HUGE) == 0.0
    assert S.ExponentialDecay(0.1, 1.0)(HUGE) == 0.1
    assert S.StepDecay(0.1, 3, 0.5)(HUGE) == 0.0
    assert S.InverseTimeDecay(0.1, 1.0)(HUGE) == 0.0
    assert S.InverseSqrtDecay(0.1, 1.0)(HUGE) == 0.0
    assert S.InverseTimeDecay(0.1, 0.0)(HUGE) == 0.1
    assert S.InverseSqrtDecay(0.1, 0.0)(HUGE) == 0.1
    # periodic with period 2 * T_max: the exact residue of t decides
    T = 10
    assert S.CosineAnnealing(0.1, T, 0.01)(HUGE) == cosine_ref(0.1, T, 0.01, HUGE % (2 * T))
    assert S.CosineAnnealing(0.1, T)(2 * T * 2**1000) == 0.1
    assert S.CosineAnnealing(0.1, T)(2 * T * 2**1000 + T) == 0.0
    assert S.LinearWarmup(S.ExponentialDecay(0.1, 0.5), 5)(HUGE) == 0.0
    assert S.LinearWarmup(0.1, HUGE)(HUGE // 2) == pytest.approx(0.05, rel=1e-15)
    with pytest.raises(ValueError, match="learning rate"):
        S.resolve_lr(S.ExponentialDecay(0.1, 2.0), HUGE)


def test_power_out_of_range_with_a_product_in_range():
    # 2**1100 alone overflows a float, 1e-300 * 2**1100 does not
    assert S.ExponentialDecay(1e-300, 2.0)(1100) == pytest.approx(
        math.ldexp(1e-300, 1100), rel=1e-12)
    assert S.ExponentialDecay(1e300, 0.5)(1100) == pytest.approx(
        math.ldexp(1e300, -1100), rel=1e-12)


def test_plateau_load_state_dict_changes_nothing_when_it_raises():
    s = S.ReduceOnPlateau(0.1, patience=0, factor=0.5)
    for m in (3.0, 2.0, 2.5):
        s.step(m)
    before = s.state_dict()
    bad = [
        {**before, "cooldown_counter": -1},
        {**before, "lr": 0.7, "best": "low"},
        {**before, "best": math.nan},
        {**before, "lr": -1.0},
        {**before, "lr": "0.1"},
        {**before, "last_epoch": 1.5},
        {k: v for k, v in before.items() if k != "lr"},
    ]
    for state in bad:
        with pytest.raises(ValueError):
            s.load_state_dict(state)
        assert s.state_dict() == before, state


def test_from_config_bounds_the_nesting():
    config = {"name": "Constant", "lr": 0.1}
    for _ in range(300):
        config = {"name": "LinearWarmup", "schedule": config, "warmup_steps": 1,
                  "start_factor": 0.0}
    with pytest.raises(ValueError, match="nested"):
        S.from_config(config)
    config = {"name": "Constant", "lr": 0.1}
    for _ in range(S.MAX_NESTING - 1):
        config = {"name": "LinearWarmup", "schedule": config, "warmup_steps": 1,
                  "start_factor": 0.0}
    assert S.from_config(config).to_config() == config
    with pytest.raises(ValueError, match="unknown schedule name"):
        S.from_config({"name": ["Constant"], "lr": 0.1})
