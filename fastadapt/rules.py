"""The registry of update rules: each rule declared once.

A :class:`Rule` (defined with its parts in ``fastadapt/_rule.py``, which
holds no rule) declares everything about an algorithm that is not its
per-element math (``kernels/math.py``): its hyper-parameters with torch's
names, defaults and ranges, its state arrays (the option that turns each on,
initial value, sign, torch's name for it) and scalar state, the per-step
scalars its math takes (computed on the host, by name, in float64), how
torch.optim's class of it differs, and the update as pseudo-code. Everything
else is derived from it: the functional step (``fastadapt.functional``), the
optimizer classes (``fastadapt.optim``, ``fastadapt.torch``), the CPU and CUDA
drivers (``kernels/loops.py``), the bytes moved per element, the benchmark's
entries and the tests' matrix.

Adding a rule touches its math, one declaration here, its test case
(``tests/optim_cases.py`` and ``tests/naive.py``) and the README's table, and
regenerates the type stubs (``python -m fastadapt._stubs``).
"""
import math
import struct

import numpy as np

# (and fastadapt.rules.Rule, ... by these names: where users import them from)
from ._rule import Flag, Pair, Real, Rule, ScalarState, State, replace


# ----------------------------------------------------------------- helpers
def _lerp_weight(prefix, weight):
    """torch.lerp's scalars for weight ``w``: w, w - 1 and which form is exact."""
    return {f"one_minus_{prefix}": weight, f"neg_{prefix}": weight - 1.0,
            f"one_minus_{prefix}_is_small": abs(weight) < 0.5}


_LR = Real("lr", 1e-3, doc="learning rate (or a schedule, in the classes)")
_EPS = Real("eps", 1e-8, doc="added to the denominator")
_WD = Real("weight_decay", 0.0, doc="L2 penalty added to the gradient")
_MAXIMIZE = Flag("maximize", keyword=True, doc="ascend the objective instead")


# ----------------------------------------------------------------- Adam, AdamW
_ADAM_CODE = """\
g = -grad if maximize else grad
g = g + weight_decay * param                      (L2 penalty)
exp_avg    = lerp(exp_avg, g, 1 - beta1)
exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
v = max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq)   if amsgrad
    exp_avg_sq                                          otherwise
denom = sqrt(v) / sqrt(1 - beta2**step) + eps
param = param - lr / (1 - beta1**step) * exp_avg / denom"""

_ADAMW_CODE = """\
param = param * (1 - lr * weight_decay)           (decoupled decay, first)
g = -grad if maximize else grad                   (no L2 term)
exp_avg    = lerp(exp_avg, g, 1 - beta1)
exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
v = max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq)   if amsgrad
    exp_avg_sq                                          otherwise
denom = sqrt(v) / sqrt(1 - beta2**step) + eps
param = param - lr / (1 - beta1**step) * exp_avg / denom"""


def _adam_scalars(decoupled):
    def scalars(o):
        beta1, beta2 = o["betas"]
        lr, wd = o["lr"], o["weight_decay"]
        one_minus_beta1 = 1.0 - beta1
        return {"weight_decay": 0.0 if decoupled else wd,
                "decay_factor": 1.0 - lr * wd if decoupled else 1.0,
                "one_minus_beta1": one_minus_beta1, "neg_beta1": one_minus_beta1 - 1.0,
                "one_minus_beta1_is_small": abs(one_minus_beta1) < 0.5,
                "beta2": beta2, "one_minus_beta2": 1.0 - beta2,
                "eps": o["eps"], "amsgrad": o["amsgrad"], "l2": not decoupled and wd != 0}
    return scalars


def _adam_step_scalars(o, t):
    beta1, beta2 = o["betas"]
    return {"bias_correction2_sqrt": math.sqrt(1.0 - beta2 ** t),
            "neg_step_size": -o["lr"] / (1.0 - beta1 ** t)}


_BETAS = Pair("betas", (0.9, 0.999), 0.0, 1.0, high_open=True,
              doc="decay rates of the first and second moment")
_AMSGRAD = Flag("amsgrad", doc="use the running maximum of exp_avg_sq (Reddi et al., 2018)")
_ADAM_STATE = (State("exp_avg"), State("exp_avg_sq", non_negative=True),
               State("max_exp_avg_sq", when="amsgrad", non_negative=True))

ADAM = Rule(
    "adam", "Adam", "adam",
    (_LR, _BETAS, _EPS, _WD, _AMSGRAD, _MAXIMIZE), _ADAM_STATE, _adam_scalars(False),
    _ADAM_CODE, "Adam (Kingma & Ba, 2015), and AMSGrad (Reddi et al., 2018)",
    bench=(("adam", "Adam", {}), ("amsgrad", "AMSGrad", {"amsgrad": True})),
    torch_refuses_tensor_mix=True, step_scalars=_adam_step_scalars)

ADAMW = Rule(
    "adamw", "AdamW", "adam",
    (_LR, _BETAS, _EPS, replace(_WD, default=1e-2, doc="decoupled weight decay"),
     _AMSGRAD, _MAXIMIZE),
    _ADAM_STATE, _adam_scalars(True), _ADAMW_CODE,
    "AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019)",
    # torch's AdamW is its Adam with decoupled_weight_decay=True (a keyword of
    # torch's Adam, True in every group of its AdamW): fastadapt.torch picks
    # each group's rule by that flag
    coupled_twin="adam", torch_refuses_tensor_mix=True, step_scalars=_adam_step_scalars)


# ----------------------------------------------------------------- SGD
def _sgd_check(o):
    if o["nesterov"] and (o["momentum"] <= 0 or o["dampening"] != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")


SGD = Rule(
    "sgd", "SGD", "sgd",
    (_LR, Real("momentum", 0.0, doc="momentum factor"),
     Real("dampening", 0.0, low=-math.inf, doc="dampening of the momentum"),
     _WD, Flag("nesterov", doc="Nesterov momentum (Sutskever et al., 2013)"), _MAXIMIZE),
    (State("momentum_buffer", when=lambda o: o["momentum"] != 0, flag="use_momentum",
           when_doc="momentum != 0",
           doc="its contents are ignored on step 1"),),
    lambda o: {"weight_decay": o["weight_decay"], "momentum": o["momentum"],
               "one_minus_dampening": 1.0 - o["dampening"], "neg_lr": -o["lr"],
               "use_momentum": o["momentum"] != 0, "nesterov": o["nesterov"],
               "l2": o["weight_decay"] != 0},
    """\
g = -grad if maximize else grad
g = g + weight_decay * param
if momentum != 0:
    momentum_buffer = g                                           (step 1)
                      momentum * momentum_buffer + (1 - dampening) * g   (later)
    g = g + momentum * momentum_buffer if nesterov else momentum_buffer
param = param - lr * g""",
    "Stochastic gradient descent with optional (Nesterov) momentum",
    check=_sgd_check, bench=(("sgd-momentum", "SGD-momentum", {"momentum": 0.9}),),
    # its step only marks the first step, which a loaded state infers from
    # the presence of the state arrays
    torch_step=False, step_scalars=lambda o, t: {"first_step": t == 1})


# ----------------------------------------------------------------- RMSprop
RMSPROP = Rule(
    "rmsprop", "RMSprop", "rmsprop",
    (replace(_LR, default=1e-2), Real("alpha", 0.99, doc="smoothing constant"), _EPS, _WD,
     Real("momentum", 0.0, doc="momentum factor"),
     Flag("centered", doc="normalise by the variance instead (Graves, 2013)"), _MAXIMIZE),
    (State("square_avg", non_negative=True), State("grad_avg", when="centered"),
     State("momentum_buffer", when=lambda o: o["momentum"] > 0, flag="use_momentum",
           when_doc="momentum > 0")),
    lambda o: {"weight_decay": o["weight_decay"], "alpha": o["alpha"],
               **_lerp_weight("alpha", 1.0 - o["alpha"]), "eps": o["eps"],
               "momentum": o["momentum"], "neg_lr": -o["lr"],
               "centered": o["centered"], "use_momentum": o["momentum"] > 0,
               "l2": o["weight_decay"] != 0},
    """\
g = -grad if maximize else grad
g = g + weight_decay * param
square_avg = alpha * square_avg + (1 - alpha) * g * g
if centered:
    grad_avg = lerp(grad_avg, g, 1 - alpha)
    avg = sqrt(square_avg - grad_avg**2) + eps
else:
    avg = sqrt(square_avg) + eps
if momentum > 0:
    momentum_buffer = momentum * momentum_buffer + g / avg
    param = param - lr * momentum_buffer
else:
    param = param - lr * g / avg""",
    "RMSprop (Hinton, 2012; centered: Graves, 2013)", takes_step=False,
    bench=(("rmsprop", "RMSprop", {}),
           ("rmsprop-centered", "RMSprop centered", {"centered": True})))


# ----------------------------------------------------------------- Adagrad
ADAGRAD = Rule(
    "adagrad", "Adagrad", "adagrad",
    (replace(_LR, default=1e-2), Real("lr_decay", 0.0, doc="learning-rate decay"), _WD,
     Real("initial_accumulator_value", 0.0, high=math.inf, setup=True,
          doc="initial value of state_sum"),
     replace(_EPS, default=1e-10), _MAXIMIZE),
    (State("state_sum", init="initial_accumulator_value", doc="torch's ``sum``",
           non_negative=True, torch_name="sum"),),
    lambda o: {"weight_decay": o["weight_decay"], "eps": o["eps"],
               "l2": o["weight_decay"] != 0},
    """\
g = -grad if maximize else grad
g = g + weight_decay * param
clr = lr / (1 + (step - 1) * lr_decay)
state_sum = state_sum + g * g
param = param - clr * g / (sqrt(state_sum) + eps)""",
    "AdaGrad (Duchi, Hazan & Singer, 2011)", bench=(("adagrad", "AdaGrad", {}),),
    step_scalars=lambda o, t: {"neg_clr": -o["lr"] / (1.0 + (t - 1.0) * o["lr_decay"])})


# ----------------------------------------------------------------- Adadelta
ADADELTA = Rule(
    "adadelta", "Adadelta", "adadelta",
    (replace(_LR, default=1.0), Real("rho", 0.9, high=1.0, doc="decay rate of the averages"),
     replace(_EPS, default=1e-6), _WD, _MAXIMIZE),
    (State("square_avg", non_negative=True), State("acc_delta", non_negative=True)),
    lambda o: {"weight_decay": o["weight_decay"], "rho": o["rho"],
               "one_minus_rho": 1.0 - o["rho"], "eps": o["eps"], "neg_lr": -o["lr"],
               "l2": o["weight_decay"] != 0},
    """\
g = -grad if maximize else grad
g = g + weight_decay * param
square_avg = rho * square_avg + (1 - rho) * g * g
delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g
acc_delta = rho * acc_delta + (1 - rho) * delta * delta
param = param - lr * delta""",
    "Adadelta (Zeiler, 2012)", takes_step=False)


# ----------------------------------------------------------------- Adamax
ADAMAX = Rule(
    "adamax", "Adamax", "adamax",
    (replace(_LR, default=2e-3), _BETAS, _EPS, _WD, _MAXIMIZE),
    (State("exp_avg"), State("exp_inf", non_negative=True)),
    lambda o: {"weight_decay": o["weight_decay"],
               **_lerp_weight("beta1", 1.0 - o["betas"][0]), "beta2": o["betas"][1],
               "eps": o["eps"], "l2": o["weight_decay"] != 0},
    """\
g = -grad if maximize else grad
g = g + weight_decay * param
exp_avg = lerp(exp_avg, g, 1 - beta1)
exp_inf = max(beta2 * exp_inf, |g| + eps)
param = param - lr / (1 - beta1**step) * exp_avg / exp_inf""",
    "Adamax, Adam's infinity-norm variant (Kingma & Ba, 2015, section 7)",
    step_scalars=lambda o, t: {"neg_clr": -o["lr"] / (1.0 - o["betas"][0] ** t)})


# ----------------------------------------------------------------- RAdam
def _radam_scalars(o):
    beta1, beta2 = o["betas"]
    lr, wd, decoupled = o["lr"], o["weight_decay"], o["decoupled_weight_decay"]
    return {"weight_decay": wd,
            "decay_factor": 1.0 - lr * wd if decoupled and wd != 0 else 1.0,
            **_lerp_weight("beta1", 1.0 - beta1), "beta2": beta2,
            "one_minus_beta2": 1.0 - beta2, "eps": o["eps"], "lr": lr,
            "l2": not decoupled and wd != 0}


def _radam_step_scalars(o, t):
    beta1, beta2 = o["betas"]
    bias_correction2 = 1.0 - beta2 ** t
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * t * beta2 ** t / bias_correction2
    rectify = rho_t > 5.0
    rect = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                     / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)) if rectify else 1.0
    return {"bias_correction1": 1.0 - beta1 ** t,
            "bias_correction2_sqrt": math.sqrt(bias_correction2), "rect": rect,
            "rectify": rectify}


RADAM = Rule(
    "radam", "RAdam", "radam",
    (_LR, _BETAS, _EPS, _WD,
     Flag("decoupled_weight_decay", doc="decay the parameter as AdamW does instead of "
          "adding an L2 term"), _MAXIMIZE),
    (State("exp_avg"), State("exp_avg_sq", non_negative=True)), _radam_scalars,
    """\
param = param * (1 - lr * weight_decay)        if decoupled_weight_decay
g = -grad if maximize else grad
g = g + weight_decay * param                   unless decoupled_weight_decay
exp_avg    = lerp(exp_avg, g, 1 - beta1)
exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
rho_inf = 2 / (1 - beta2) - 1
rho_t   = rho_inf - 2 * step * beta2**step / (1 - beta2**step)
update  = exp_avg / (1 - beta1**step) * lr
if rho_t > 5:                                  (the variance is tractable: rectify)
    rect = sqrt((rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho_t))
    update = update * sqrt(1 - beta2**step) / (sqrt(exp_avg_sq) + eps) * rect
param = param - update""",
    "RAdam, rectified Adam (Liu et al., 2020)", step_scalars=_radam_step_scalars)


# ----------------------------------------------------------------- Rprop
def _rprop_check(o):
    etaminus, etaplus = o["etas"]
    if not etaminus < 1.0 < etaplus:
        raise ValueError(f"invalid etas: {o['etas']!r} (must be 0 < etas[0] < 1 < etas[1])")


RPROP = Rule(
    "rprop", "Rprop", "rprop",
    (replace(_LR, default=1e-2, doc="the initial step size: step_size starts at it (the "
           "class fills it; the functional step reads step_size)"),
     Pair("etas", (0.5, 1.2), low_open=True, doc="(etaminus, etaplus): the factors a "
          "step size shrinks and grows by"),
     Pair("step_sizes", (1e-6, 50), doc="(min, max): the range of a step size"),
     _MAXIMIZE),
    (State("prev", doc="the previous step's gradient (zeroed where its sign flipped)"),
     State("step_size", init="lr", doc="each element's step size", non_negative=True)),
    lambda o: {"etaminus": o["etas"][0], "etaplus": o["etas"][1],
               "step_size_min": o["step_sizes"][0], "step_size_max": o["step_sizes"][1],
               "zero": 0.0, "one": 1.0},
    """\
g = -grad if maximize else grad
s = sign(g * prev)
factor = etaplus if s > 0, etaminus if s < 0, 1 if s == 0
step_size = clamp(step_size * factor, step_sizes[0], step_sizes[1])
g = 0 where factor == etaminus                 (the sign flipped: no move, forget it)
param = param - sign(g) * step_size
prev = g""",
    "Rprop, resilient backpropagation (Riedmiller & Braun, 1993)",
    takes_step=False, check=_rprop_check)


# ----------------------------------------------------------------- NAdam
_FLOAT32 = struct.Struct("f")


def _float32(x):
    """``x`` rounded to float32 (to nearest, beyond the largest float32 to
    +-inf), as torch keeps a scalar state tensor: as ``float(np.float32(x))``
    in a third of its time (NAdam and ASGD round two scalars per step)."""
    try:
        return _FLOAT32.unpack(_FLOAT32.pack(x))[0]
    except OverflowError:           # struct refuses what rounds to an infinity
        return math.copysign(math.inf, x)


def _nadam_scalars(o, t, state):
    beta1, beta2 = o["betas"]
    lr, wd, decoupled = o["lr"], o["weight_decay"], o["decoupled_weight_decay"]
    decay = o["momentum_decay"]
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1.0) * decay))
    # torch's mu_product is a float32 tensor: multiplied (and rounded) in float32
    mu_product = _float32(np.float32(state["mu_product"]) * np.float32(mu))
    mu_product_next = mu_product * mu_next
    scalars = {"weight_decay": wd,
               "decay_factor": 1.0 - lr * wd if decoupled and wd != 0 else 1.0,
               **_lerp_weight("beta1", 1.0 - beta1), "beta2": beta2,
               "one_minus_beta2": 1.0 - beta2, "bias_correction2": 1.0 - beta2 ** t,
               "eps": o["eps"], "coef_grad": -lr * (1.0 - mu) / (1.0 - mu_product),
               "coef_avg": (-lr * mu_next) / (1.0 - mu_product_next),
               "l2": not decoupled and wd != 0}
    return scalars, {"mu_product": mu_product}


NADAM = Rule(
    "nadam", "NAdam", "nadam",
    (replace(_LR, default=2e-3), _BETAS, _EPS, _WD,
     Real("momentum_decay", 4e-3, doc="the momentum schedule's decay (psi)"),
     Flag("decoupled_weight_decay", doc="decay the parameter as AdamW does instead of "
          "adding an L2 term"), _MAXIMIZE),
    (State("exp_avg"), State("exp_avg_sq", non_negative=True)), _nadam_scalars,
    """\
param = param * (1 - lr * weight_decay)        if decoupled_weight_decay
g = -grad if maximize else grad
g = g + weight_decay * param                   unless decoupled_weight_decay
mu      = beta1 * (1 - 0.5 * 0.96**(step * momentum_decay))
mu_next = beta1 * (1 - 0.5 * 0.96**((step + 1) * momentum_decay))
mu_product = mu_product * mu                   (a float32 scalar, as torch keeps it)
exp_avg    = lerp(exp_avg, g, 1 - beta1)
exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
denom = sqrt(exp_avg_sq / (1 - beta2**step)) + eps
param = param - lr * (1 - mu) / (1 - mu_product) * g / denom
param = param - lr * mu_next / (1 - mu_product * mu_next) * exp_avg / denom""",
    "NAdam, Adam with Nesterov momentum (Dozat, 2016)",
    scalar_state=(ScalarState("mu_product", 1.0, doc="the product of the momentum "
                              "schedule's mu so far"),))


# ----------------------------------------------------------------- ASGD
def _asgd_scalars(o, t, state):
    lr, lambd = o["lr"], o["lambd"]
    eta, mu = _float32(state["eta"]), _float32(state["mu"])   # float32 tensors in torch
    scalars = {"weight_decay": o["weight_decay"], "decay": 1.0 - lambd * eta,
               "neg_eta": -eta, "mu": mu, "average": mu != 1.0,
               "l2": o["weight_decay"] != 0}
    try:
        new_eta = lr / ((1.0 + lambd * lr * t) ** o["alpha"])
    except OverflowError:           # the denominator beyond float64: eta has reached 0
        new_eta = 0.0
    new_mu = 1.0 / max(1.0, t - o["t0"])
    return scalars, {"eta": _float32(new_eta), "mu": _float32(new_mu)}


ASGD = Rule(
    "asgd", "ASGD", "asgd",
    (replace(_LR, default=1e-2), Real("lambd", 1e-4, low=-math.inf, doc="decay term"),
     Real("alpha", 0.75, low=-math.inf, doc="power for the eta update"),
     Real("t0", 1e6, low=-math.inf, doc="the step at which averaging starts"), _WD,
     _MAXIMIZE),
    (State("ax", doc="the averaged parameters, the point of ASGD"),), _asgd_scalars,
    """\
g = -grad if maximize else grad
g = g + weight_decay * param
param = param * (1 - lambd * eta)
param = param - eta * g
ax = ax + (param - ax) * mu          if mu != 1
     param                           otherwise
eta = lr / (1 + lambd * lr * step)**alpha     (for the next step)
mu  = 1 / max(1, step - t0)                   (for the next step)""",
    "ASGD, averaged stochastic gradient descent (Polyak & Juditsky, 1992)",
    scalar_state=(ScalarState("eta", "lr", doc="the step size of this step (float32, "
                              "as torch keeps it)"),
                  ScalarState("mu", 1.0, doc="the averaging weight of this step (float32)")))


# ----------------------------------------------------------------- Lion
LION = Rule(
    "lion", "Lion", "lion",
    (replace(_LR, default=1e-4), replace(_BETAS, default=(0.9, 0.99), doc="interpolation of "
     "the update's and the momentum's averages"),
     replace(_WD, doc="decoupled weight decay"), _MAXIMIZE),
    (State("exp_avg"),),
    lambda o: {"decay_factor": 1.0 - o["lr"] * o["weight_decay"],
               "one_minus_beta1": 1.0 - o["betas"][0], "beta1": o["betas"][0],
               "one_minus_beta2": 1.0 - o["betas"][1], "beta2": o["betas"][1],
               "neg_lr": -o["lr"], "zero": 0.0, "one": 1.0},
    """\
g = -grad if maximize else grad
c = beta1 * exp_avg + (1 - beta1) * g
param = param * (1 - lr * weight_decay) - lr * sign(c)
exp_avg = beta2 * exp_avg + (1 - beta2) * g""",
    "Lion, evolved sign momentum (Chen et al., 2023, arXiv:2302.06675)",
    takes_step=False, in_torch=False)


# ----------------------------------------------------------------- SparseAdam
def _sparse_adam_scalars(o):
    beta1, beta2 = o["betas"]
    return {"one_minus_beta1": 1.0 - beta1, "one_minus_beta2": 1.0 - beta2, "eps": o["eps"]}


def _sparse_adam_step_scalars(o, t):
    beta1, beta2 = o["betas"]
    return {"neg_step_size": -(o["lr"] * math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t))}


SPARSE_ADAM = Rule(
    "sparse_adam", "SparseAdam", "sparse_adam",
    (Real("lr", 1e-3, low_open=True, doc="learning rate (or a schedule, in the classes)"),
     _BETAS, Real("eps", 1e-8, low_open=True, doc="added to the denominator"), _MAXIMIZE),
    (State("exp_avg"), State("exp_avg_sq", non_negative=True)), _sparse_adam_scalars,
    """\
g = -grad if maximize else grad                (rows present in the gradient only)
exp_avg    = exp_avg + (g - exp_avg) * (1 - beta1)
exp_avg_sq = exp_avg_sq + (g * g - exp_avg_sq) * (1 - beta2)
denom = sqrt(exp_avg_sq) + eps
step_size = lr * sqrt(1 - beta2**step) / (1 - beta1**step)
param = param + (-step_size) * (exp_avg / denom)""",
    "Adam masked to the rows a sparse gradient holds (torch.optim.SparseAdam)",
    notes="The functional step and the NumPy class update every element: each is a row "
          "present in the gradient. fastadapt.torch.SparseAdam takes sparse gradients "
          "(``nn.Embedding(sparse=True)``) and updates only the rows they hold; like torch "
          "it refuses dense gradients.",
    torch_complex=False, torch_sparse_grad=True, step_scalars=_sparse_adam_step_scalars)


RULES = {rule.name: rule for rule in (ADAM, ADAMW, SGD, RMSPROP, ADAGRAD, ADADELTA,
                                      ADAMAX, RADAM, RPROP, NADAM, ASGD, LION,
                                      SPARSE_ADAM)}


def kernel_specs():
    """Kernel name -> ``((state name, gating flag or None), ...)``, from every rule.

    Rules sharing a kernel must declare the same state, and this is what the
    drivers are generated from (with the math's signature).
    """
    specs, signs = {}, {}
    for rule in RULES.values():
        spec = tuple((s.name, s.flag) for s in rule.state_specs)
        if (specs.setdefault(rule.kernel, spec) != spec
                or signs.setdefault(rule.kernel, rule.non_negative_state)
                != rule.non_negative_state):
            raise ValueError(f"rules sharing kernel {rule.kernel!r} declare different state")
    return specs
