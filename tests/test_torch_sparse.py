"""Sparse gradients in fastadapt.torch: SGD, Adagrad and SparseAdam against
torch.optim with ``nn.Embedding(sparse=True)``.

Tolerances: SGD is bit-equal (torch's sparse add is one fused multiply-add
per value, applied entry by entry; the kernel does the same). Adagrad's and
SparseAdam's state (``sum``; ``exp_avg``, ``exp_avg_sq``) is bit-equal, and
so is every step count. Their parameters agree within ``ULPS`` units of the
dtype's epsilon times the array's largest magnitude, because torch's CPU
``sqrt`` is not correctly rounded (MKL's vector sqrt: measured on 1e5 random
values, 16.8% of float32 and 1.3% of float64 results one ulp off the
correctly rounded root) and the kernel's is. Measured worst over the
embedding matrix below: 0.68 (float32) and 0.17 (float64) of those units.
"""
import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import fastadapt.torch as ft  # noqa: E402
from fastadapt.kernels import cpu  # noqa: E402

from conftest import assert_close  # noqa: E402

ULPS = 4

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")

STEPS = 30
DTYPES = [torch.float32, torch.float64]
# (rows, width) of the embedding: odd sizes, one row, one column
SHAPES = [(37, 5), pytest.param((1, 3), marks=pytest.mark.slow),
          pytest.param((101, 1), marks=pytest.mark.slow)]
CONFIGS = {
    "SGD": [{"lr": 0.1}, {"lr": 0.05, "maximize": True}, {"lr": 1e-3, "foreach": True}],
    "Adagrad": [{}, {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1},
                {"lr": 0.05, "eps": 1e-3, "maximize": True}],
    "SparseAdam": [{}, {"lr": 0.01}, {"lr": torch.tensor(0.001)}, {"maximize": True},
                   {"lr": 0.05, "betas": (0.5, 0.9), "eps": 1e-3},
                   {"betas": (0.0, 0.99), "maximize": True}],
}
CASES = [pytest.param(name, config, id=f"{name}-{i}")
         for name, configs in CONFIGS.items() for i, config in enumerate(configs)]


def batches(rows, steps, seed):
    """Index batches with repeats and missing rows; step 3 holds no index at
    all (a gradient with no rows) and step 7 every row once."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for step in range(steps):
        if step == 3:
            out.append(torch.zeros(0, dtype=torch.long))
        elif step == 7:
            out.append(torch.randperm(rows, generator=g))
        else:
            k = int(torch.randint(1, 3 * rows + 2, (1,), generator=g))
            out.append(torch.randint(0, rows, (k,), generator=g))
    return out


def train(model, opt, idx, step, twice=False, set_to_none=True):
    """One step on ``sum(w * emb(idx))``; ``twice`` accumulates two backwards
    (their sparse gradients concatenate, repeating rows)."""
    g = torch.Generator().manual_seed(1000 + step)
    opt.zero_grad(set_to_none=set_to_none)
    for _ in range(2 if twice else 1):
        w = torch.randn(len(idx), model.weight.shape[1], generator=g, dtype=model.weight.dtype)
        (model(idx) * w).sum().backward()
    opt.step()


def pair(name, config, rows, width, dtype):
    torch.manual_seed(rows * 31 + width)
    ref_model = nn.Embedding(rows, width, sparse=True).to(dtype)
    model = copy.deepcopy(ref_model)
    ours = getattr(ft, name)(model.parameters(), **config)
    theirs = getattr(torch.optim, name)(ref_model.parameters(), **config)
    return model, ours, ref_model, theirs


def assert_state_equal(ours, theirs, p, q):
    mine, ref = ours.state.get(p, {}), theirs.state.get(q, {})
    assert set(mine) == set(ref)
    for key, value in ref.items():
        assert float(mine[key]) == float(value) if key == "step" else torch.equal(
            mine[key], value), key


def assert_param(name, p, q):
    """Bit-equal for SGD, within ``ULPS`` of the scale otherwise (see above)."""
    if name == "SGD":
        assert torch.equal(p, q)
    else:
        scale = float(q.detach().abs().max())
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0,
                                   atol=ULPS * torch.finfo(p.dtype).eps * scale)


def assert_matches(name, model, ours, ref_model, theirs):
    p, q = model.weight, ref_model.weight
    assert_param(name, p, q)
    assert_state_equal(ours, theirs, p, q)


@pytest.mark.parametrize("name, config", CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_embedding_steps_match_torch(name, config, dtype, shape):
    if isinstance(config.get("lr"), torch.Tensor):
        # of the parameters' dtype: torch's SparseAdam computes its step size
        # in the lr tensor's dtype (float32 lr: a float32 step size for float64)
        config = {**config, "lr": config["lr"].to(dtype)}
    model, ours, ref_model, theirs = pair(name, config, *shape, dtype)
    before = model.weight.detach().clone()
    for step, idx in enumerate(batches(shape[0], STEPS, seed=shape[0])):
        for m, o in ((model, ours), (ref_model, theirs)):
            train(m, o, idx, step, twice=step % 5 == 1, set_to_none=step % 2 == 0)
        assert_matches(name, model, ours, ref_model, theirs)
    # the rows never indexed did not move
    touched = torch.zeros(shape[0], dtype=torch.bool)
    for idx in batches(shape[0], STEPS, seed=shape[0]):
        touched[idx] = True
    assert torch.equal(model.weight[~touched], before[~touched])


@pytest.mark.parametrize("name, config", [CASES[0], CASES[4], CASES[-2]], ids=str)
def test_the_parallel_kernels_match_torch(name, config, monkeypatch):
    """The prange kernels (forced on small gradients) give the serial ones' numbers."""
    monkeypatch.setattr(cpu, "SERIAL_BELOW", 0)
    model, ours, ref_model, theirs = pair(name, config, 257, 7, torch.float32)
    for step, idx in enumerate(batches(257, 10, seed=5)):
        for m, o in ((model, ours), (ref_model, theirs)):
            train(m, o, idx, step, twice=step == 2)
        assert_matches(name, model, ours, ref_model, theirs)


@pytest.mark.parametrize("name", ["SGD", "Adagrad"])
def test_sparse_and_dense_gradients_in_one_step(name):
    """An embedding (sparse gradient), a dense layer and a frozen-this-step
    parameter in one group: each takes torch's path."""
    torch.manual_seed(0)

    def make():
        return nn.ModuleDict({"emb": nn.Embedding(23, 4, sparse=True), "lin": nn.Linear(4, 3),
                              "other": nn.Linear(3, 1)})
    ref_model = make()
    model = copy.deepcopy(ref_model)
    ours = getattr(ft, name)(model.parameters(), lr=0.05)
    theirs = getattr(torch.optim, name)(ref_model.parameters(), lr=0.05)
    for step, idx in enumerate(batches(23, 12, seed=2)):
        for m, o in ((model, ours), (ref_model, theirs)):
            o.zero_grad()
            h = m["lin"](m["emb"](idx))
            if step % 3:
                h = m["other"](h)
            h.tanh().sum().backward()
            o.step()
    # tolerance, not bits: torch's dense update fuses its multiply-adds and
    # fastadapt's does not, so the dense layer, and through it the embedding's
    # gradients, differ by ulps
    for (k, p), q in zip(model.named_parameters(), ref_model.parameters()):
        assert torch.isfinite(q).all()
        assert_close(p.detach().numpy(), q.detach().numpy(), np.float32, k)


def test_a_gradient_sparse_in_every_dimension():
    """A COO gradient over single elements of a matrix (sparse_dim 2, rows of
    one element), repeated elements included."""
    torch.manual_seed(1)
    for name in ("SGD", "Adagrad", "SparseAdam"):
        p = nn.Parameter(torch.randn(6, 5))
        q = nn.Parameter(p.detach().clone())
        ours, theirs = getattr(ft, name)([p], lr=0.1), getattr(torch.optim, name)([q], lr=0.1)
        g = torch.Generator().manual_seed(3)
        for _ in range(8):
            idx = torch.stack([torch.randint(0, 6, (20,), generator=g),
                               torch.randint(0, 5, (20,), generator=g)])
            grad = torch.sparse_coo_tensor(idx, torch.randn(20, generator=g), (6, 5))
            p.grad, q.grad = grad, grad.clone()
            ours.step()
            theirs.step()
        assert_param(name, p, q)
        assert_state_equal(ours, theirs, p, q)


def test_the_users_gradient_is_never_written():
    emb = nn.Embedding(9, 3, sparse=True)
    opt = ft.SparseAdam(emb.parameters(), maximize=True)
    emb(torch.tensor([1, 1, 4])).sum().backward()
    grad = emb.weight.grad
    kept = (grad._indices().clone(), grad._values().clone())
    opt.step()
    assert emb.weight.grad is grad and not grad.is_coalesced()
    assert torch.equal(grad._indices(), kept[0]) and torch.equal(grad._values(), kept[1])


# ----------------------------------------------------------------- torch's optim_db
def _optim_db_sparse():
    from torch.testing._internal.common_optimizers import optim_db
    out = []
    for info in optim_db:
        name = info.optim_cls.__name__
        if not (info.supports_sparse or info.only_supports_sparse_grads):
            continue
        kwargs, _ = info.metadata_for_sparse
        out.append(pytest.param(name, dict(kwargs), id=f"{name}-metadata_for_sparse"))
        if info.only_supports_sparse_grads:
            out += [pytest.param(name, inp.kwargs, id=f"{name}-{inp.desc}")
                    for inp in info.optim_inputs_func(device="cpu")]
    return out


def test_optim_db_lists_the_classes_that_take_sparse_gradients():
    from fastadapt.torch._sparse import TAKES_SPARSE
    assert {p.values[0] for p in _optim_db_sparse()} == TAKES_SPARSE


@pytest.mark.parametrize("name, kwargs", _optim_db_sparse())
def test_optim_db_sparse_configurations_match_torch(name, kwargs):
    model, ours, ref_model, theirs = pair(name, kwargs, 13, 3, torch.float32)
    for step, idx in enumerate(batches(13, 10, seed=9)):
        for m, o in ((model, ours), (ref_model, theirs)):
            train(m, o, idx, step)
    assert_matches(name, model, ours, ref_model, theirs)


# ----------------------------------------------------------------- errors
def _unchanged(model, opt):
    """A check that a failed step changed no parameter and no state."""
    params = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict()["state"])

    def check():
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
        after = opt.state_dict()["state"]
        assert set(after) == set(state)
        for i, entry in state.items():
            for k, v in entry.items():
                assert torch.equal(torch.as_tensor(after[i][k]), torch.as_tensor(v)), k
    return check


REFUSED = [("Adam", {}, RuntimeError, "Adam does not support sparse"),
           ("RMSprop", {}, RuntimeError, "RMSprop does not support sparse"),
           ("Lion", {}, RuntimeError, "Lion does not support sparse"),
           ("SGD", {"weight_decay": 0.1}, RuntimeError, "weight_decay"),
           ("Adagrad", {"weight_decay": 0.1}, RuntimeError, "weight_decay"),
           ("SGD", {"fused": True}, RuntimeError, "fused"),
           ("Adagrad", {"fused": True}, RuntimeError, "fused"),
           ("SGD", {"momentum": 0.9}, NotImplementedError, "momentum"),
           ("Adagrad", {"max_grad_norm": 1.0}, NotImplementedError, "max_grad_norm"),
           ("SGD", {"state_dtype": "bfloat16"}, NotImplementedError, "storage options")]


@pytest.mark.parametrize("name, kwargs, error, match", REFUSED, ids=lambda v: str(v))
def test_what_torch_refuses_raises_and_changes_nothing(name, kwargs, error, match):
    """torch's exception type where torch refuses (RuntimeError), a
    NotImplementedError (a RuntimeError) where fastadapt does; a dense layer
    beside the embedding shows that nothing was written."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(7, 3, sparse=True), nn.Linear(3, 2))
    opt = getattr(ft, name)(model.parameters(), **kwargs)
    model(torch.tensor([[1, 2, 2]])).sum().backward()
    check = _unchanged(model, opt)
    with pytest.raises(error, match=match):
        opt.step()
    check()


@pytest.mark.parametrize("name, kwargs", [(n, k) for n, k, _, _ in REFUSED
                                          if n != "Lion" and "max_grad_norm" not in k
                                          and "state_dtype" not in k and "momentum" not in k])
def test_torch_refuses_the_same(name, kwargs):
    """The RuntimeErrors above are torch's own."""
    model = nn.Sequential(nn.Embedding(7, 3, sparse=True), nn.Linear(3, 2))
    opt = getattr(torch.optim, name)(model.parameters(), **kwargs)
    model(torch.tensor([[1, 2, 2]])).sum().backward()
    with pytest.raises(RuntimeError):
        opt.step()


def test_sparse_adam_refuses_a_dense_gradient_and_changes_nothing():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(7, 3, sparse=True), nn.Linear(3, 2))
    opt = ft.SparseAdam(model.parameters())
    model(torch.tensor([[1, 2]])).sum().backward()
    check = _unchanged(model, opt)
    with pytest.raises(RuntimeError, match="SparseAdam does not support dense gradients"):
        opt.step()
    check()
    ref = torch.optim.SparseAdam(model.parameters())
    with pytest.raises(RuntimeError, match="SparseAdam does not support dense gradients"):
        ref.step()


def test_sparse_adam_constructor_errors_are_torchs():
    bad = [({"lr": 0.0}, ValueError), ({"eps": 0.0}, ValueError),
           ({"betas": (1.0, 0.9)}, ValueError), ({"betas": (0.9, -0.1)}, ValueError)]
    for kwargs, error in bad:
        for cls in (torch.optim.SparseAdam, ft.SparseAdam):
            with pytest.raises(error):
                cls([nn.Parameter(torch.zeros(3))], **kwargs)
    for params in ([torch.zeros(3, dtype=torch.complex64)], [torch.zeros(3).to_sparse()]):
        for cls in (torch.optim.SparseAdam, ft.SparseAdam):
            with pytest.raises(ValueError):
                cls(params)


def test_an_index_out_of_range_raises():
    p = nn.Parameter(torch.zeros(4, 2))
    opt = ft.SGD([p], lr=0.1)
    p.grad = torch.sparse_coo_tensor(torch.tensor([[4]]), torch.ones(1, 2), (4, 2),
                                     check_invariants=False)
    with pytest.raises(ValueError, match="out of range"):
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(4, 2))


def test_zero_redundancy_optimizer_refuses_sparse_gradients(tmp_path):
    dist = torch.distributed
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0,
                            world_size=1)
    try:
        emb = nn.Embedding(5, 2, sparse=True)
        opt = ft.ZeroRedundancyOptimizer(emb.parameters(), optimizer_class=ft.SGD, lr=0.1)
        emb(torch.tensor([1])).sum().backward()
        before = emb.weight.detach().clone()
        with pytest.raises(NotImplementedError, match="ZeroRedundancyOptimizer"):
            opt.step()
        assert torch.equal(emb.weight, before)
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------- checkpoints
def test_a_checkpoint_moves_from_torch_and_back():
    """torch's SparseAdam state dict (an int ``step``) loads, and the run goes on
    as torch's; fastadapt's loads into torch."""
    model, ours, ref_model, theirs = pair("SparseAdam", {"lr": 0.01}, 19, 4, torch.float64)
    idxs = batches(19, 12, seed=4)
    for step in range(6):
        train(ref_model, theirs, idxs[step], step)
    model.load_state_dict(ref_model.state_dict())
    ours.load_state_dict(theirs.state_dict())
    for step in range(6, 12):
        for m, o in ((model, ours), (ref_model, theirs)):
            train(m, o, idxs[step], step)
    assert_matches("SparseAdam", model, ours, ref_model, theirs)
    back = torch.optim.SparseAdam(copy.deepcopy(model).parameters(), lr=0.01)
    back.load_state_dict(ours.state_dict())
    state = next(iter(back.state.values()))
    assert float(state["step"]) == 12
    assert torch.equal(state["exp_avg"], ours.state[model.weight]["exp_avg"])


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "SparseAdam"])
def test_the_comparison_catches_a_wrong_lr(name):
    """The tolerance is no blanket: a learning rate off by 1e-4 of itself fails."""
    model, ours, ref_model, theirs = pair(name, {"lr": 0.01}, 37, 5, torch.float32)
    ours.param_groups[0]["lr"] = 0.01 * (1 + 1e-4)
    for step, idx in enumerate(batches(37, 10, seed=6)):
        for m, o in ((model, ours), (ref_model, theirs)):
            train(m, o, idx, step)
    with pytest.raises(AssertionError):
        assert_param(name, model.weight, ref_model.weight)


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "SparseAdam"])
def test_grad_scaler_unscales_and_skips_as_torch(name):
    """GradScaler: the step unscales the sparse values in the kernel, and a
    step whose gradient holds an inf is skipped (step counts included)."""
    model, ours, ref_model, theirs = pair(name, {"lr": 0.01}, 13, 3, torch.float32)
    scalers = [torch.amp.GradScaler("cpu", init_scale=1024.0) for _ in range(2)]
    for step, idx in enumerate(batches(13, 8, seed=8)):
        for m, o, s in ((model, ours, scalers[0]), (ref_model, theirs, scalers[1])):
            o.zero_grad()
            loss = m(idx).sum() * (float("inf") if step == 4 else 1.0)
            s.scale(loss).backward()
            s.step(o)
            s.update()
        assert scalers[0].get_scale() == scalers[1].get_scale()
        assert_matches(name, model, ours, ref_model, theirs)
    assert scalers[0].get_scale() == 512.0
