"""The case database: for each rule of ``fastadapt.RULES``, the option sets to try.

In the spirit of torch's ``OptimizerInfo``: the generic tests iterate over
``CONFIGS`` (every option of every rule, alone and combined) and
``HYPER_PARAMETERS`` (hypothesis strategies within torch's accepted ranges),
and run a rule three ways through one loop: fastadapt's functional step, the
float64 reference in ``naive.py``, and ``torch.optim`` (single-tensor path,
``foreach=False``). Adding a rule to the registry means adding one entry per
dict here.
"""
import numpy as np
from hypothesis import strategies as st

import fastadapt
from fastadapt.functional import step_for

import naive

STEPS = 20   # consecutive steps per comparison, each with a fresh random gradient

# Options that shape the initial state rather than the step itself.
SETUP_OPTIONS = {h for rule in fastadapt.RULES.values() for h in rule.setup_options}

CONFIGS = {
    "adam": [
        {},
        {"weight_decay": 0.1},
        {"amsgrad": True},
        {"maximize": True},
        {"betas": (0.0, 0.99)},            # no first moment: lerp weight 1
        {"betas": (0.4, 0.9), "lr": 0.05},  # 1 - beta1 >= 0.5: lerp's other branch
        {"amsgrad": True, "weight_decay": 0.3, "maximize": True, "eps": 1e-3, "lr": 0.1},
    ],
    "adamw": [
        {},                                 # weight_decay 1e-2 by default
        {"weight_decay": 0.0},
        {"weight_decay": 0.5, "lr": 0.05},
        {"amsgrad": True},
        {"maximize": True},
        {"amsgrad": True, "maximize": True, "weight_decay": 0.2, "betas": (0.5, 0.95)},
    ],
    "sgd": [
        {},
        {"lr": 0.1, "weight_decay": 0.1},
        {"maximize": True},
        {"momentum": 0.9},
        {"momentum": 0.9, "dampening": 0.5},
        {"momentum": 0.5, "dampening": 1.0, "lr": 0.1},
        {"momentum": 0.9, "nesterov": True},
        {"momentum": 0.8, "nesterov": True, "weight_decay": 0.1, "maximize": True},
    ],
    "rmsprop": [
        {},
        {"weight_decay": 0.1},
        {"maximize": True},
        {"centered": True},
        {"momentum": 0.9},
        {"centered": True, "momentum": 0.9},
        {"alpha": 0.3, "centered": True, "lr": 1e-3},   # 1 - alpha >= 0.5: lerp's other branch
        {"centered": True, "momentum": 0.5, "weight_decay": 0.2, "maximize": True,
         "eps": 1e-3, "alpha": 0.9},
    ],
    "adagrad": [
        {},
        {"lr_decay": 0.05},
        {"weight_decay": 0.1},
        {"initial_accumulator_value": 0.5},
        {"maximize": True},
        {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.2, "eps": 1e-3, "maximize": True,
         "initial_accumulator_value": 0.1},
    ],
    "adadelta": [
        {},
        {"rho": 0.5, "lr": 0.5},
        {"weight_decay": 0.1},
        {"maximize": True},
        {"rho": 1.0},                       # frozen averages: delta = sqrt(eps / eps) * g
        {"rho": 0.0, "eps": 1e-3},
        {"rho": 0.95, "eps": 1e-4, "weight_decay": 0.3, "maximize": True, "lr": 0.1},
    ],
    "adamax": [
        {},
        {"weight_decay": 0.1},
        {"maximize": True},
        {"betas": (0.0, 0.9), "lr": 0.05},  # lerp weight 1
        {"betas": (0.4, 0.5), "eps": 1e-3},  # 1 - beta1 >= 0.5: lerp's other branch
        {"betas": (0.8, 0.99), "weight_decay": 0.2, "maximize": True, "lr": 0.01},
    ],
    "radam": [
        {},                                 # rho_t > 5 from step 6 on: both regimes
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
        {"maximize": True},
        {"betas": (0.9, 0.5)},              # rho_inf = 3: never rectified
        {"betas": (0.4, 0.9), "lr": 0.05},  # 1 - beta1 >= 0.5; rectified from step 2
        {"betas": (0.0, 0.99), "eps": 1e-3, "decoupled_weight_decay": True,
         "weight_decay": 0.3, "maximize": True},
    ],
    "rprop": [
        {},
        {"lr": 0.1},
        {"maximize": True},
        {"etas": (0.3, 1.5), "step_sizes": (1e-3, 0.2)},   # both clamps reached
        {"etas": (0.9, 1.01), "lr": 1e-3, "maximize": True},
    ],
    "nadam": [
        {},
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
        {"maximize": True},
        {"momentum_decay": 0.5, "lr": 0.01},  # mu climbs to beta1 within the 20 steps
        {"momentum_decay": 0.0},            # mu = beta1 / 2 throughout
        {"betas": (0.4, 0.9), "eps": 1e-3},  # 1 - beta1 >= 0.5: lerp's other branch
        {"betas": (0.95, 0.99), "weight_decay": 0.2, "decoupled_weight_decay": True,
         "maximize": True, "momentum_decay": 0.01},
    ],
    "asgd": [
        {},                                 # t0 = 1e6: ax just follows param
        {"t0": 5},                          # averaging starts at step 6 of 20
        {"weight_decay": 0.1},
        {"maximize": True},
        {"lambd": 0.1, "alpha": 0.5, "lr": 0.1, "t0": 0.0},
        {"t0": 10, "lambd": 1e-3, "weight_decay": 0.05, "maximize": True},
    ],
    "lion": [                               # no torch.optim.Lion: the float64 reference
        {},
        {"weight_decay": 0.1, "lr": 1e-3},
        {"maximize": True},
        {"betas": (0.0, 0.5)},              # the sign of the gradient alone
        {"betas": (0.95, 0.98), "weight_decay": 1.0, "lr": 3e-4, "maximize": True},
    ],
    "sparse_adam": [                        # torch's oracle gets a sparse gradient of every row
        {},
        {"lr": 0.01},
        {"maximize": True},
        {"betas": (0.0, 0.99)},             # no first moment
        {"betas": (0.5, 0.9), "eps": 1e-3, "lr": 0.05, "maximize": True},
    ],
}
assert CONFIGS.keys() == fastadapt.RULES.keys(), "every rule needs its configurations"

# For each rule, options under which it uses every state array it can take.
EVERY_STATE = {"adam": {"amsgrad": True}, "adamw": {"amsgrad": True},
               "sgd": {"momentum": 0.9}, "rmsprop": {"centered": True, "momentum": 0.9},
               "adagrad": {}, "adadelta": {}, "adamax": {}, "radam": {}, "rprop": {},
               "nadam": {}, "asgd": {}, "lion": {}, "sparse_adam": {}}
for _name, _options in EVERY_STATE.items():
    assert fastadapt.RULES[_name].state_for(**_options) == fastadapt.RULES[_name].state


# State that a zero gradient still changes (the parameter never moves): rule -> names.
MOVES_AT_ZERO_GRADIENT = {"adamax": {"exp_inf"},   # decays to max(beta2 * u, eps)
                          "asgd": {"ax"}}           # the average of a still parameter
# Options that shrink the parameter without a gradient (set to 0 for that identity).
DECAY_OPTIONS = {"weight_decay", "lambd"}


def config_id(config):
    return ",".join(f"{k}={v}" for k, v in config.items()) or "defaults"


def cases(torch=False):
    """(rule name, config) for every configuration, with readable ids; with
    ``torch=True`` only the rules torch.optim has (the oracle is optional per rule)."""
    import pytest
    return [pytest.param(name, config, id=f"{name}[{config_id(config)}]")
            for name, configs in CONFIGS.items() for config in configs
            if not torch or fastadapt.RULES[name].in_torch]


def run_reference(name, config, param0, grads):
    """torch.optim where it has the rule, else the float64 reference."""
    if fastadapt.RULES[name].in_torch:
        return run_torch(name, config, param0, grads)
    return run_naive(name, config, param0, grads)


# Plausible bugs, each of which the parity test must catch at its tolerance:
# (id, rule and config torch runs, rule and config fastadapt runs, first step number).
MUTANTS = [
    ("adam-coupled-decay", "adamw", {"weight_decay": 0.1}, "adam", {"weight_decay": 0.1}, 1),
    ("adamw-coupled-decay", "adam", {"weight_decay": 0.1}, "adamw", {"weight_decay": 0.1}, 1),
    ("adam-beta2", "adam", {}, "adam", {"betas": (0.9, 0.9989)}, 1),
    ("adam-beta1", "adam", {}, "adam", {"betas": (0.899, 0.999)}, 1),
    ("adam-step-off-by-one", "adam", {}, "adam", {}, 2),
    ("adam-eps", "adam", {"eps": 0.1}, "adam", {"eps": 0.105}, 1),
    ("sgd-dampening", "sgd", {"momentum": 0.9}, "sgd", {"momentum": 0.9, "dampening": 0.01}, 1),
    ("sgd-nesterov", "sgd", {"momentum": 0.9}, "sgd", {"momentum": 0.9, "nesterov": True}, 1),
    ("rmsprop-alpha", "rmsprop", {}, "rmsprop", {"alpha": 0.989}, 1),
    ("rmsprop-centered", "rmsprop", {"centered": True}, "rmsprop", {}, 1),
    ("adagrad-lr-decay-off-by-one", "adagrad", {"lr_decay": 0.01}, "adagrad",
     {"lr_decay": 0.01}, 2),
    ("adagrad-initial-accumulator", "adagrad", {"initial_accumulator_value": 0.1}, "adagrad",
     {"initial_accumulator_value": 0.11}, 1),
    ("adadelta-rho", "adadelta", {}, "adadelta", {"rho": 0.899}, 1),
    ("adadelta-eps", "adadelta", {}, "adadelta", {"eps": 1.1e-6}, 1),
    ("adamax-eps", "adamax", {"eps": 1e-2}, "adamax", {"eps": 1.1e-2}, 1),
    ("adamax-beta2", "adamax", {}, "adamax", {"betas": (0.9, 0.99)}, 1),
    ("adamax-step-off-by-one", "adamax", {}, "adamax", {}, 2),
    ("radam-coupled-decay", "radam", {"weight_decay": 0.1, "decoupled_weight_decay": True},
     "radam", {"weight_decay": 0.1}, 1),
    ("radam-beta2", "radam", {}, "radam", {"betas": (0.9, 0.998)}, 1),
    ("radam-step-off-by-one", "radam", {}, "radam", {}, 2),
    ("rprop-etaplus", "rprop", {}, "rprop", {"etas": (0.5, 1.21)}, 1),
    ("rprop-step-size-max", "rprop", {"step_sizes": (1e-6, 0.05)}, "rprop",
     {"step_sizes": (1e-6, 0.051)}, 1),
    ("nadam-momentum-decay", "nadam", {}, "nadam", {"momentum_decay": 4e-2}, 1),
    ("nadam-coupled-decay", "nadam", {"weight_decay": 0.1, "decoupled_weight_decay": True},
     "nadam", {"weight_decay": 0.1}, 1),
    ("nadam-step-off-by-one", "nadam", {}, "nadam", {}, 2),
    ("asgd-t0-off-by-one", "asgd", {"t0": 5}, "asgd", {"t0": 6}, 1),
    ("asgd-lambd", "asgd", {"lambd": 0.01, "lr": 0.1}, "asgd", {"lambd": 0.011, "lr": 0.1}, 1),
    ("lion-betas-swapped", "lion", {}, "lion", {"betas": (0.99, 0.9)}, 1),
    ("sparse-adam-beta2", "sparse_adam", {}, "sparse_adam", {"betas": (0.9, 0.9989)}, 1),
    ("sparse-adam-step-off-by-one", "sparse_adam", {}, "sparse_adam", {}, 2),
    ("lion-lr", "lion", {"weight_decay": 0.1, "lr": 1e-3}, "lion",
     {"weight_decay": 0.1, "lr": 1.01e-3}, 1),
]


# ---------------------------------------------------------------- hypothesis
def _log_uniform(low_exp, high_exp):
    return st.floats(low_exp, high_exp).map(lambda e: 10.0 ** e)


_unit = st.floats(0.0, 0.999)
_lr = _log_uniform(-5, 0)
_eps = _log_uniform(-10, -2)
_decay = st.floats(0.0, 0.5)


@st.composite
def _sgd_hyper(draw):
    h = {"lr": draw(_lr), "momentum": draw(st.sampled_from([0.0]) | _unit),
         "dampening": draw(st.floats(0.0, 1.0)), "weight_decay": draw(_decay),
         "maximize": draw(st.booleans()), "nesterov": draw(st.booleans())}
    if h["nesterov"]:                       # torch: momentum > 0 and no dampening
        h["momentum"] = max(h["momentum"], 0.01)
        h["dampening"] = 0.0
    return h


@st.composite
def _adadelta_hyper(draw):
    # weight_decay <= 0.1 at lr = 1 (Adadelta's default): the parameter then feeds back
    # into g with a gain near 1 per step, and the rounding differences of torch's fused
    # multiply-adds grow past the float64 budget in acc_delta (measured: 1 seed in 40
    # at lr 1, rho 0.75, eps 1e-9, weight_decay 0.375, 200 ulps of the array's scale;
    # none in 40 at weight_decay 0.1), so chaos, not a formula, would decide.
    lr = draw(_lr | st.just(1.0))
    return {"lr": lr, "rho": draw(st.floats(0.1, 1.0)), "eps": draw(_eps),
            "weight_decay": draw(st.floats(0.0, 0.1) if lr == 1.0 else _decay),
            "maximize": draw(st.booleans())}


# beta2 (and Adadelta's rho) >= 0.1 and Adam's lr <= 0.1: as beta2 goes to 0 the step
# divides by the latest |grad + weight_decay * param| alone, which can cancel to
# almost nothing, and with lr ~ 1 and an L2 term the parameter feeds back into that
# gradient; the trajectory is then chaotic (float64 torch and the float64 reference
# differ by 1e-10 there), so rounding noise, not a formula, would decide the test.
_adam_hyper = st.fixed_dictionaries({
    "lr": _log_uniform(-5, -1), "betas": st.tuples(_unit, st.floats(0.1, 0.9999)), "eps": _eps,
    "weight_decay": _decay, "amsgrad": st.booleans(), "maximize": st.booleans()})

HYPER_PARAMETERS = {
    "adam": _adam_hyper,
    "adamw": _adam_hyper,
    "sgd": _sgd_hyper(),
    "rmsprop": st.fixed_dictionaries({
        # alpha >= 0.5: as alpha goes to 0 the centered variance v - mean**2 becomes a
        # difference of nearly equal numbers (g*g - g*g at alpha = 0, which fastadapt
        # computes as exactly 0 while torch's fused multiply-add leaves the rounding
        # error of g*g, negative half the time: sqrt gives NaN, and after 20 steps
        # torch's parameter is all NaN). Cancellation, not a formula, would decide.
        "lr": _lr, "alpha": st.floats(0.5, 0.999), "eps": _eps, "weight_decay": _decay,
        "momentum": st.sampled_from([0.0]) | _unit, "centered": st.booleans(),
        "maximize": st.booleans()}),
    "adagrad": st.fixed_dictionaries({
        "lr": _lr, "lr_decay": st.floats(0.0, 1.0), "weight_decay": _decay, "eps": _eps,
        "initial_accumulator_value": st.floats(0.0, 1.0), "maximize": st.booleans()}),
    "adadelta": _adadelta_hyper(),
}
HYPER_PARAMETERS["adamax"] = st.fixed_dictionaries({   # beta2 >= 0.1: as Adam's, above
    "lr": _log_uniform(-5, -1), "betas": st.tuples(_unit, st.floats(0.1, 0.9999)), "eps": _eps,
    "weight_decay": _decay, "maximize": st.booleans()})
HYPER_PARAMETERS["radam"] = st.fixed_dictionaries({   # beta2 >= 0.1: as Adam's, above
    "lr": _log_uniform(-5, -1), "betas": st.tuples(_unit, st.floats(0.1, 0.9999)),
    "eps": _eps, "weight_decay": _decay, "decoupled_weight_decay": st.booleans(),
    "maximize": st.booleans()})
HYPER_PARAMETERS["rprop"] = st.fixed_dictionaries({
    "lr": _lr, "etas": st.tuples(st.floats(0.05, 0.95), st.floats(1.05, 3.0)),
    "step_sizes": st.tuples(_log_uniform(-8, -3), _log_uniform(-2, 2)),
    "maximize": st.booleans()})
HYPER_PARAMETERS["nadam"] = st.fixed_dictionaries({   # beta2 >= 0.1: as Adam's, above
    "lr": _log_uniform(-5, -1), "betas": st.tuples(_unit, st.floats(0.1, 0.9999)),
    "eps": _eps, "weight_decay": _decay, "momentum_decay": st.floats(0.0, 0.1),
    "decoupled_weight_decay": st.booleans(), "maximize": st.booleans()})
HYPER_PARAMETERS["asgd"] = st.fixed_dictionaries({
    "lr": _lr, "lambd": st.floats(0.0, 0.1), "alpha": st.floats(0.0, 1.0),
    "t0": st.floats(0.0, 30.0), "weight_decay": _decay, "maximize": st.booleans()})
HYPER_PARAMETERS["lion"] = st.fixed_dictionaries({
    "lr": _log_uniform(-6, -2), "betas": st.tuples(_unit, _unit),
    "weight_decay": st.floats(0.0, 2.0), "maximize": st.booleans()})
HYPER_PARAMETERS["sparse_adam"] = st.fixed_dictionaries({   # beta2 >= 0.1: as Adam's, above
    "lr": _log_uniform(-5, -1), "betas": st.tuples(_unit, st.floats(0.1, 0.9999)),
    "eps": _eps, "maximize": st.booleans()})
assert HYPER_PARAMETERS.keys() == fastadapt.RULES.keys()


# ---------------------------------------------------------------- running a rule
def problem(shape, dtype, seed, steps=STEPS):
    """A random starting parameter and ``steps`` fresh random gradients."""
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(shape, dtype=dtype)
    grads = [rng.standard_normal(shape, dtype=dtype) for _ in range(steps)]
    return param, grads


def step_options(config):
    """The config without the options that only shape the initial state."""
    return {k: v for k, v in config.items() if k not in SETUP_OPTIONS}


def initial_state(name, config, shape, dtype):
    """The state arrays the rule uses under ``config``, as torch initialises them."""
    rule = fastadapt.RULES[name]
    return {s: np.full(shape, rule.initial_value(s, **config), dtype)
            for s in rule.state_for(**step_options(config))}


def run_steps(step_fn, name, config, param, grads, state, first_step=1):
    """Apply ``step_fn`` (fastadapt's or naive's) once per gradient, in place."""
    rule = fastadapt.RULES[name]
    options = step_options(config)
    carried = {}                # the rule's scalar state, returned by each step
    for t, grad in enumerate(grads, start=first_step):
        counter = {"step": t} if rule.takes_step else {}
        carried = step_fn(param, grad, **state, **options, **counter, **carried) or {}
    return param, state


def run_fastadapt(name, config, param0, grads, first_step=1):
    param, state = param0.copy(), initial_state(name, config, param0.shape, param0.dtype)
    return run_steps(step_for(fastadapt.RULES[name]), name, config, param, grads, state,
                     first_step)


def run_naive(name, config, param0, grads):
    """The float64 reference trajectory (inputs upcast, state kept in float64)."""
    param = param0.astype(np.float64)
    grads = [g.astype(np.float64) for g in grads]
    state = initial_state(name, config, param.shape, np.float64)
    return run_steps(naive.STEPS[name], name, config, param, grads, state)


def run_torch(name, config, param0, grads):
    """torch.optim's single-tensor path (foreach=False) on CPU, same start and gradients.

    Returns the parameter and torch's state buffers under fastadapt's names
    (``state_sum`` for torch's ``sum``), the step counter left out.
    """
    import torch
    param = torch.tensor(param0, requires_grad=True)
    optimizer = torch_optimizer(name, [param], config)
    for grad in grads:
        param.grad = torch_grad(name, torch.tensor(grad))
        optimizer.step()
    to_ours = {v: k for k, v in fastadapt.RULES[name].torch_state_names.items()}
    state = {to_ours.get(k, k): v.numpy() for k, v in optimizer.state[param].items()
             if k != "step" and v.dim() > 0}           # not the scalar state (mu_product)
    return param.detach().numpy(), state


def torch_optimizer(name, params, config):
    """``torch.optim.<Rule>(params, foreach=False, **config)``: its single-tensor
    path (SparseAdam has only that one, and no ``foreach``)."""
    import torch
    rule = fastadapt.RULES[name]
    single = {} if rule.torch_sparse_grad else {"foreach": False}
    return getattr(torch.optim, rule.torch_name)(params, **single, **config)


def torch_grad(name, grad):
    """The gradient tensor torch's class of rule ``name`` takes: ``grad`` itself,
    or (SparseAdam) a sparse one holding every row."""
    return every_row(grad) if fastadapt.RULES[name].torch_sparse_grad \
        else grad


def every_row(grad):
    """``grad`` as a coalesced sparse COO tensor holding every row, zeros
    included (a 0-d gradient: its one element)."""
    import torch
    if grad.dim() == 0:
        indices = torch.zeros(0, 1, dtype=torch.long, device=grad.device)
        return torch.sparse_coo_tensor(indices, grad.reshape(1), (),
                                       check_invariants=True).coalesce()
    indices = torch.arange(grad.shape[0], device=grad.device).unsqueeze(0)
    return torch.sparse_coo_tensor(indices, grad, grad.shape, check_invariants=True).coalesce()


def check_non_finite_confined(name, container, unit, bad, n):
    """With 8-bit state in ``container`` (``container(n, signed)``: blocks of
    ``unit`` elements), one gradient element (3) of ``bad`` on the first of
    three steps: the parameter is non-finite exactly where torch.optim's
    float32 step makes it so (for rules torch lacks, where fastadapt's
    float32 state does), every other element stays finite, and the blocks
    after the first are bit for bit what they are without the bad element."""
    config = dict(EVERY_STATE[name])
    param0, grads = problem((n,), np.float32, seed=7, steps=3)
    clean = [g.copy() for g in grads]
    grads[0][3] = bad

    def run(grads):
        param, state = param0.copy(), {}
        for s, values in initial_state(name, config, (n,), np.float32).items():
            state[s] = container(n, s not in fastadapt.RULES[name].non_negative_state)
            if np.any(values):
                state[s].assign(values)
        run_steps(step_for(fastadapt.RULES[name]), name, config, param, grads, state)
        return param, state
    ours, state = run(grads)
    other, other_state = run(clean)
    reference = (run_torch if fastadapt.RULES[name].in_torch
                 else run_fastadapt)(name, config, param0, grads)[0]
    with np.errstate(invalid="ignore"):
        for kind in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(kind(ours), kind(reference), err_msg=kind.__name__)
    assert np.all(np.isfinite(np.delete(ours, 3)))
    assert ours[unit:].tobytes() == other[unit:].tobytes()
    for s, b in state.items():
        assert b.codes[unit:].tobytes() == other_state[s].codes[unit:].tobytes(), s
        assert np.all(np.isfinite(np.delete(b.dequantize(), 3))), s
    return state, other_state
