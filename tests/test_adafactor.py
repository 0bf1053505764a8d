"""Adafactor (``fastadapt.adafactor_step``, ``fastadapt.torch.Adafactor``)
against torch.optim.Adafactor's single-tensor path (``foreach=False``).

Tolerances: conftest's (64 ulps of the dtype, relative to the array's
largest magnitude). The state (``row_var``, ``col_var``, ``variance``)
depends on the gradients only; its reductions run in torch's order and come
out bit-equal in practice (the bound is still 64 ulps). The parameter moves by
``alpha / denom * update``, whose scalars come from float32 (float64) norms
of the parameter and of the update; torch's reduction order matches the
kernels' on an AVX2 build except for some small tensors, where its norm
comes out an ulp away, so a step can differ by an ulp or two of the
parameter. Measured worst after 25 steps over the shapes and settings below:
2.4e-7 (float32, parameters of magnitude ~3: about 1 ulp of the scale) and
4.4e-16 (float64), 0.01 to 0.02 of the bound; a relative change of 1e-3 in
``lr`` or ``weight_decay``, or of 1e-4 in ``beta2_decay``, ``eps2`` or ``d``,
fails it (``test_mutants_fail``).

A tensor ``lr``: torch then computes ``alpha`` and the step size as tensors
of the lr's dtype (float32 by default) and fastadapt as float64, as for a
float lr; the two agree within a float32 rounding of the step size, inside
the float32 bound (tested) but not the float64 one.
"""
import copy
import pickle

import numpy as np
import pytest

import fastadapt
from fastadapt import RULES, adafactor_step
from fastadapt.kernels import adafactor as kernels

from conftest import assert_close, assert_unchanged, snapshot

torch = pytest.importorskip("torch")
import fastadapt.torch as ft  # noqa: E402

STEPS = 25
SHAPES = [(), (1,), (7,), (97,), (1, 1), (13, 17), (1, 7), (7, 1), (3, 13, 17), (2, 1, 3, 5)]
SETTINGS = [
    {},
    {"lr": 0.1, "beta2_decay": -0.5},
    {"lr": 1e-3, "eps": (1e-30, 1e-3)},
    {"eps": (0.5, 1e-3)},                   # eps1 floors the second moment
    {"eps": (None, 10.0)},                  # eps2 floors the param's RMS
    {"d": 4.0, "weight_decay": 0.1},
    {"lr": 0.05, "maximize": True, "weight_decay": 0.01, "beta2_decay": 0.0},
    {"d": 1e9},                             # no clipping
]


def _state(shape, dtype):
    if len(shape) < 2:
        return {"variance": np.zeros(shape, dtype)}
    return {"row_var": np.zeros(shape[:-1] + (1,), dtype),
            "col_var": np.zeros(shape[:-2] + (1,) + shape[-1:], dtype)}


def _run_both(shape, dtype, settings, steps=STEPS, seed=0, step=adafactor_step):
    """``steps`` steps of the functional step and of torch's, on the same
    gradients; returns ((param, state), (torch's param, torch's state))."""
    rng = np.random.default_rng(seed)
    p = np.asarray(3 * rng.standard_normal(shape), dtype)
    tp = torch.tensor(p.copy(), requires_grad=True)
    opt = torch.optim.Adafactor([tp], foreach=False, **settings)
    state = _state(shape, dtype)
    for t in range(1, steps + 1):
        g = np.asarray(rng.standard_normal(shape) * (1 + t % 3), dtype)
        tp.grad = torch.tensor(g.copy())
        opt.step()
        step(p, g, step=t, **state, **settings)
    ref = {k: v.numpy() for k, v in opt.state[tp].items() if k != "step"}
    return (p, state), (tp.detach().numpy(), ref)


def _assert_same(actual, expected, dtype, what):
    (p, state), (ref_p, ref_state) = actual, expected
    assert set(state) == set(ref_state)
    assert_close(p, ref_p, dtype, f"{what} param")
    for name in state:
        assert_close(state[name], ref_state[name], dtype, f"{what} {name}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_torch(shape, dtype):
    for i, settings in enumerate(SETTINGS):
        _assert_same(*_run_both(shape, dtype, settings, seed=i), dtype, f"{shape} {settings}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(kernels.SERIAL_BELOW + 7,), (3, 61, 53), (2, 300)],
                         ids=str)
def test_matches_torch_parallel(shape, dtype):
    """Sizes past ``SERIAL_BELOW`` run the parallel kernels (column blocks of
    256 and their last partial block included)."""
    if np.prod(shape) < kernels.SERIAL_BELOW:
        shape = (shape[0], kernels.SERIAL_BELOW // shape[0] + 300)
    for i, settings in enumerate(SETTINGS[:3] + SETTINGS[5:7]):
        _assert_same(*_run_both(shape, dtype, settings, steps=8, seed=i), dtype,
                     f"{shape} {settings}")


@pytest.mark.parametrize("base, mutant", [
    ({}, {"lr": 0.01 * (1 + 1e-3)}),
    ({}, {"beta2_decay": -0.8 * (1 + 1e-4)}),
    ({"eps": (None, 10.0)}, {"eps": (None, 10.0 * (1 + 1e-4))}),    # where eps2 wins
    ({"lr": 0.5}, {"lr": 0.5, "d": 1.0001}),                        # where clipping acts
    ({"weight_decay": 0.1}, {"weight_decay": 0.1 * (1 + 1e-3)}),
], ids=["lr", "beta2_decay", "eps2", "d", "weight_decay"])
def test_mutants_fail(base, mutant):
    """The tolerance catches a small relative change in each scalar (measured:
    1.5 to 16 times the bound; the unchanged run sits at 0.01 to 0.02 of it)."""
    shape, dtype = (13, 17), np.float32
    _, ref = _run_both(shape, dtype, base)
    actual, _ = _run_both(shape, dtype, mutant)
    with pytest.raises(AssertionError):
        _assert_same(actual, ref, dtype, "mutant")


def test_torch_refuses_empty_and_we_do_nothing():
    """torch's step divides by the size (ZeroDivisionError); an empty param is
    left alone here."""
    tp = torch.zeros(0, requires_grad=True)
    tp.grad = torch.zeros(0)
    with pytest.raises(ZeroDivisionError):
        torch.optim.Adafactor([tp], foreach=False).step()
    for shape in [(0,), (0, 3), (3, 0), (2, 0, 4)]:
        p, g = np.zeros(shape, np.float32), np.ones(shape, np.float32)
        state = _state(shape, np.float32)
        before = snapshot([p, *state.values()])
        adafactor_step(p, g, step=1, **state)
        assert_unchanged([p, *state.values()], before)


def test_zero_gradient_and_no_recompile():
    p = np.ones((5, 6), np.float32)
    state = _state(p.shape, np.float32)
    adafactor_step(p, np.zeros_like(p), step=1, **state)
    # a zero gradient moves nothing (update = 0 * 1 / eps1)
    assert np.array_equal(p, np.ones((5, 6), np.float32))
    counts = (len(kernels.FACTORED.serial.signatures), len(kernels.VECTOR.serial.signatures))
    for t in range(2, 5):
        adafactor_step(p, np.ones_like(p), step=t, lr=0.1 * t, **state)
    assert (len(kernels.FACTORED.serial.signatures),
            len(kernels.VECTOR.serial.signatures)) == counts


def test_not_a_rule():
    """Adafactor is not elementwise: it is out of the registry and the classes built from it."""
    assert "adafactor" not in RULES
    assert all(r.torch_name != "Adafactor" for r in RULES.values())
    from fastadapt.torch._classes import CLASSES
    assert "Adafactor" not in CLASSES and ft.Adafactor not in CLASSES.values()
    assert "adafactor_step" in fastadapt.__all__ and "Adafactor" in ft.__all__


# ---------------------------------------------------------------- validation


def _good(shape=(4, 5), dtype=np.float32):
    rng = np.random.default_rng(1)
    return rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("change, error, match", [
    (lambda a: a.update(grad=a["grad"].astype(np.float64)), ValueError, "grad is float64"),
    (lambda a: a.update(grad=a["grad"][:, :4].copy()), ValueError, "grad is"),
    (lambda a: a.update(row_var=np.zeros((4,), np.float32)), ValueError, "row_var is"),
    (lambda a: a.update(col_var=np.zeros((1, 5), np.float64)), ValueError, "col_var is"),
    (lambda a: a.update(col_var=None), TypeError, "needs col_var"),
    (lambda a: a.update(variance=np.zeros((4, 5), np.float32)), ValueError, "not variance"),
    (lambda a: a.update(param=a["param"].astype(np.float16)), TypeError, "float16"),
    (lambda a: a.update(param=np.zeros((5, 4), np.float32).T),
     ValueError, "C-contiguous"),
    (lambda a: a.update(row_var=a["param"][:, :1]), ValueError, "C-contiguous"),
    (lambda a: a.update(grad=a["param"]), ValueError, "share memory"),
    (lambda a: a.update(param=torch.zeros(4, 5)), TypeError, "torch CPU tensor"),
    (lambda a: a.update(param=[[0.0] * 5] * 4), TypeError, "numpy.ndarray"),
    (lambda a: a.update(step=0), ValueError, "step"),
    (lambda a: a.update(step=1.0), TypeError, "step"),
    (lambda a: a.update(lr=-1.0), ValueError, "lr"),
    (lambda a: a.update(lr=torch.tensor([0.1, 0.2])), ValueError, "1-element"),
    (lambda a: a.update(beta2_decay=0.5), ValueError, "beta2_decay"),
    (lambda a: a.update(eps=(-1.0, 1e-3)), ValueError, r"eps\[0\]"),
    (lambda a: a.update(eps=(None, float("nan"))), ValueError, r"eps\[1\]"),
    (lambda a: a.update(eps=1e-3), TypeError, "eps must be a pair"),
    (lambda a: a.update(d=0.5), ValueError, "invalid d"),
    (lambda a: a.update(weight_decay=-0.1), ValueError, "weight_decay"),
    (lambda a: a.update(maximize=2), TypeError, "maximize"),
])
def test_bad_input_raises_and_writes_nothing(change, error, match):
    param, grad = _good()
    args = {"param": param, "grad": grad, **_state(param.shape, np.float32), "step": 1}
    change(args)
    arrays = [a for a in (param, args["row_var"], args["col_var"]) if a is not None]
    before = snapshot(arrays)
    with pytest.raises(error, match=match):
        adafactor_step(**args)
    assert_unchanged(arrays, before)


def test_read_only_and_vector_state():
    param, grad = _good((7,))
    variance = np.zeros(7, np.float32)
    variance.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        adafactor_step(param, grad, variance=variance, step=1)
    with pytest.raises(ValueError, match="keeps variance, not row_var"):
        adafactor_step(param, grad, np.zeros((7, 1), np.float32), variance=np.zeros(7, np.float32),
                       step=1)
    with pytest.raises(TypeError, match="keyword-only"):
        adafactor_step(param, grad, 0.1, step=1)


# ---------------------------------------------------------------- torch class


def _params(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    shapes = [(13, 17), (7,), (3, 5, 4), (), (1,), (6, 1)]
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes]


def _groups(params, **first):
    return [{"params": params[:3], **first},
            {"params": params[3:], "lr": 0.05, "weight_decay": 0.1, "maximize": True,
             "eps": (1e-20, 1e-2), "d": 2.0}]


def _pair(dtype=torch.float32, **first):
    base = _params(dtype)
    ours = [torch.nn.Parameter(p.clone()) for p in base]
    theirs = [torch.nn.Parameter(p.clone()) for p in base]
    return (ours, ft.Adafactor(_groups(ours, **first))), (
        theirs, torch.optim.Adafactor(_groups(theirs, **first), foreach=False))


def _step_both(pairs, steps, seed):
    (ours, a), (theirs, b) = pairs
    g = torch.Generator().manual_seed(seed)
    for t in range(steps):
        for i, (p, q) in enumerate(zip(ours, theirs)):
            grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
            if i == 1 and t % 3 == 0:       # skipped: its step count falls behind
                p.grad = q.grad = None
            else:
                p.grad, q.grad = grad.clone(), grad.clone()
        a.step()
        b.step()


def _assert_states(ours, a, theirs, b, dtype):
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    for p, q in zip(ours, theirs):
        assert_close(p.detach().numpy(), q.detach().numpy(), np_dtype, "param")
        sa, sb = a.state[p], b.state[q]
        assert set(sa) == set(sb)
        for k in sb:
            if k == "step":
                assert sa[k].dtype == sb[k].dtype and sa[k].item() == sb[k].item()
            else:
                assert_close(sa[k].numpy(), sb[k].numpy(), np_dtype, k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_class_matches_torch(dtype):
    pairs = _pair(dtype)
    _step_both(pairs, 22, seed=3)
    (ours, a), (theirs, b) = pairs
    _assert_states(ours, a, theirs, b, dtype)
    # torch.optim's state dict format, key for key
    sa, sb = a.state_dict(), b.state_dict()
    assert [dict(g, foreach=False) for g in sa["param_groups"]] == sb["param_groups"]
    keys = [{i: set(s) for i, s in d["state"].items()} for d in (sa, sb)]
    assert keys[0] == keys[1]


@pytest.mark.parametrize("lr", [0.02, "tensor"])
def test_class_tensor_lr_and_mixed_dtypes_eps1(lr):
    """eps1=None in a group whose first parameter is float64: torch takes eps1
    from that first parameter for the whole group. A tensor lr (float32
    parameters only: see the module docstring)."""
    g = torch.Generator().manual_seed(5)
    # the float32 matrix's mean(row_var) (~1e-8) is clamped by float32's eps1
    # (1.2e-7), not by float64's (2.2e-16): a per-parameter eps1 fails here
    base = [torch.randn(9, generator=g, dtype=torch.float64), torch.randn(4, 6, generator=g)]
    if lr == "tensor":
        lr = torch.tensor(0.02)
        base = [torch.randn(4, 6, generator=g), torch.randn(9, generator=g)]
    ours = [torch.nn.Parameter(p.clone()) for p in base]
    theirs = [torch.nn.Parameter(p.clone()) for p in base]
    a = ft.Adafactor(ours, lr=lr)
    b = torch.optim.Adafactor(theirs, lr=lr, foreach=False)
    for _ in range(20):
        for p, q in zip(ours, theirs):
            grad = torch.randn(p.shape, generator=g, dtype=p.dtype) * 1e-4
            p.grad, q.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
    for p, q in zip(ours, theirs):
        dt = np.float32 if p.dtype == torch.float32 else np.float64
        assert_close(p.detach().numpy(), q.detach().numpy(), dt, "param")
        for k in ("row_var", "col_var", "variance"):
            if k in b.state[q]:
                assert_close(a.state[p][k].numpy(), b.state[q][k].numpy(), dt, k)


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_state_dict_round_trip(direction):
    """Train 10 steps on one side, load its state dict into the other, train
    both 10 more: they agree with each other and with an uninterrupted run."""
    (ours, a), (theirs, b) = _pair()
    src_params, src, dst_params, dst = (theirs, b, ours, a) if direction == "torch_to_ours" \
        else (ours, a, theirs, b)
    g = torch.Generator().manual_seed(11)
    for _ in range(10):
        for p in src_params:
            p.grad = torch.randn(p.shape, generator=g)
        src.step()
    with torch.no_grad():
        for p, q in zip(dst_params, src_params):
            p.copy_(q)
    dst.load_state_dict(copy.deepcopy(src.state_dict()))
    assert dst.state_dict()["state"].keys() == src.state_dict()["state"].keys()
    for p, q in zip(dst_params, src_params):
        for k, v in src.state[q].items():
            assert torch.equal(dst.state[p][k], v), k
    _step_both(((ours, a), (theirs, b)), 10, seed=12)
    _assert_states(ours, a, theirs, b, torch.float32)


def test_deepcopy_pickle_and_noncontiguous():
    (ours, a), (theirs, b) = _pair()
    _step_both(((ours, a), (theirs, b)), 3, seed=1)
    model_copy, opt_copy = copy.deepcopy((ours, a))
    assert opt_copy.param_groups[0]["params"][0] is model_copy[0]
    assert torch.equal(opt_copy.state[model_copy[0]]["row_var"], a.state[ours[0]]["row_var"])
    restored = pickle.loads(pickle.dumps(a))
    assert restored.state_dict()["state"].keys() == a.state_dict()["state"].keys()
    # a transposed (non-contiguous) parameter is updated through a copy
    base = torch.randn(6, 9)
    p = torch.nn.Parameter(base.t().contiguous().t())
    q = torch.nn.Parameter(base.clone())
    assert not p.is_contiguous()
    a2, b2 = ft.Adafactor([p]), torch.optim.Adafactor([q], foreach=False)
    for _ in range(5):
        grad = torch.randn(6, 9)
        p.grad, q.grad = grad.t().contiguous().t(), grad.clone()
        a2.step()
        b2.step()
    assert_close(p.detach().numpy(), q.detach().numpy(), np.float32, "param")
    assert p.grad.stride() != q.grad.stride()      # the gradient is read, never replaced


def test_class_refusals_write_nothing():
    p = torch.nn.Parameter(torch.randn(4, 4))
    c = torch.nn.Parameter(torch.randn(3, dtype=torch.complex64))
    opt = ft.Adafactor([p, c])
    p.grad, c.grad = torch.randn(4, 4), torch.randn(3, dtype=torch.complex64)
    before = p.detach().clone()
    with pytest.raises(RuntimeError, match="complex"):
        opt.step()
    assert torch.equal(p.detach(), before) and not opt.state
    e = torch.nn.Embedding(5, 3, sparse=True)
    e(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        ft.Adafactor(e.parameters()).step()
    h = torch.nn.Parameter(torch.randn(4, dtype=torch.bfloat16))
    h.grad = torch.randn(4, dtype=torch.bfloat16)
    with pytest.raises(NotImplementedError, match="float32 and float64 CPU"):
        ft.Adafactor([h]).step()
    for option in [{"state_dtype": "bfloat16"}, {"master_weights": True},
                   {"max_grad_norm": 1.0}, {"min_8bit_size": 0}]:
        with pytest.raises(NotImplementedError, match="per tensor"):
            ft.Adafactor([p], **option)
    for bad in [{"lr": -1.0}, {"beta2_decay": 0.1}, {"eps": (-1.0, 1e-3)}, {"eps": (None, -1.0)},
                {"d": 0.5}, {"weight_decay": -1.0}, {"lr": torch.tensor([0.1, 0.2])}]:
        with pytest.raises(ValueError):
            ft.Adafactor([p], **bad)
    with pytest.raises(TypeError, match="per-tensor reductions"):
        ft.ZeroRedundancyOptimizer([p], optimizer_class=ft.Adafactor)
    with pytest.raises(TypeError, match="Adafactor"):
        ft.enable_gradient_release([p], ft.Adafactor([p]))
    # a loaded state of the wrong shape is refused before any parameter moves
    q = torch.nn.Parameter(torch.randn(3))
    opt = ft.Adafactor([q, p])
    opt.state[p] = {"step": torch.tensor(1.0), "row_var": torch.zeros(4),
                    "col_var": torch.zeros(1, 4)}
    q.grad, p.grad = torch.randn(3), torch.randn(4, 4)
    before = q.detach().clone()
    with pytest.raises(ValueError, match="row_var"):
        opt.step()
    assert torch.equal(q.detach(), before) and q not in opt.state
    # so is a group option changed to a bad value after construction
    opt = ft.Adafactor([{"params": [q]}, {"params": [p]}])
    opt.param_groups[1]["d"] = 0.5
    with pytest.raises(ValueError, match="invalid d"):
        opt.step()
    assert torch.equal(q.detach(), before) and not opt.state


def test_signature_is_torchs():
    import inspect
    ours = inspect.signature(ft.Adafactor.__init__).parameters
    theirs = inspect.signature(torch.optim.Adafactor.__init__).parameters
    for name, p in theirs.items():
        assert ours[name].default == p.default and ours[name].kind == p.kind, name
    assert list(ours)[:len(theirs)] == list(theirs)


# ---------------------------------------------------------------- torch's optim_db


def _optim_db_info():
    from torch.testing._internal.common_optimizers import optim_db
    return next(info for info in optim_db if info.optim_cls is torch.optim.Adafactor)


def _db_configs():
    return [pytest.param(inp.kwargs, id=inp.desc) for inp in
            _optim_db_info().optim_inputs_func(device="cpu", dtype=torch.float32)]


@pytest.mark.parametrize("kwargs", _db_configs())
def test_every_optim_db_configuration_matches_torch(kwargs):
    """torch's own Adafactor configurations (tensor lr, weight decay,
    maximize, eps1=None ...): 20 steps against the single-tensor path."""
    kwargs = {k: v for k, v in kwargs.items() if k != "foreach"}
    g = torch.Generator().manual_seed(2)
    base = [torch.randn(4, 3, generator=g), torch.randn(5, generator=g),
            torch.randn(2, 3, 4, generator=g)]
    ours = [torch.nn.Parameter(p.clone()) for p in base]
    theirs = [torch.nn.Parameter(p.clone()) for p in base]
    a = ft.Adafactor(ours, **kwargs)
    b = torch.optim.Adafactor(theirs, **kwargs, foreach=False)
    for _ in range(20):
        for p, q in zip(ours, theirs):
            grad = torch.randn(p.shape, generator=g)
            p.grad, q.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
    _assert_states(ours, a, theirs, b, torch.float32)


def _db_errors():
    return _optim_db_info().optim_error_inputs_func(device="cpu", dtype=torch.float32)


@pytest.mark.parametrize("index", range(len(_db_errors())),
                         ids=[e.optimizer_error_input.desc for e in _db_errors()])
def test_optim_db_errors_are_torchs(index):
    """Each of torch's error inputs for Adafactor raises (or warns) torch's
    exception type."""
    for cls in (torch.optim.Adafactor, ft.Adafactor):
        info = _db_errors()[index]      # fresh parameters for each class
        error = info.optimizer_error_input
        params = error.params
        if params is None:
            params = [torch.nn.Parameter(torch.randn(1, 1))]
        expect = pytest.warns if issubclass(info.error_type, Warning) else pytest.raises
        with expect(info.error_type):
            opt = cls(params, **error.kwargs)
            if info.error_on.name != "CONSTRUCTION_ERROR":
                for p in opt.param_groups[0]["params"]:
                    if p.grad is None:
                        p.grad = torch.randn_like(p)
                opt.step()


def test_grad_scaler_and_lr_scheduler():
    """GradScaler (unscale in place, skip on inf) and an lr scheduler drive it
    as they drive torch's class."""
    results = []
    for cls, extra in ((ft.Adafactor, {}), (torch.optim.Adafactor, {"foreach": False})):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
        opt = cls(model.parameters(), lr=0.05, **extra)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
        g = torch.Generator().manual_seed(1)
        for t in range(12):
            x = torch.randn(8, 6, generator=g)
            opt.zero_grad()
            loss = model(x).pow(2).mean() * (float("inf") if t == 4 else 1.0)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
        results.append([p.detach().clone() for p in model.parameters()])
    for p, q in zip(*results):
        assert_close(p.numpy(), q.numpy(), np.float32, "param")
