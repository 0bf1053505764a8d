"""Complex parameters in fastadapt.torch, against torch.optim.

torch's single-tensor optimizers update ``torch.view_as_real(param)`` (SGD
computes in complex arithmetic, which is the same thing element by element);
fastadapt's flat buffers hold that real view. Every class torch takes complex
parameters for is run over every CPU configuration of torch's ``optim_db``.

Tolerances, relative to each tensor's largest value after five steps:
complex64 1e-6 (as tests/test_torch_compat.py: an ulp or so per step from
torch's fused multiply-adds), complex128 1e-12 (the same ulps at double
precision, with room for RMSprop's momentum, whose division amplifies them).
"""
import copy

import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402

import fastadapt.torch as ft  # noqa: E402
from fastadapt.rules import RULES  # noqa: E402

TORCH_SUPPORTS_COMPLEX = {r.torch_name for r in RULES.values() if r.torch_complex}

TOL = {torch.complex64: 1e-6, torch.complex128: 1e-12}
COMPLEX = [torch.complex64, torch.complex128]


def assert_close(actual, expected, dtype):
    if expected.is_complex():
        assert actual.dtype == expected.dtype
    scale = max(float(expected.detach().abs().max()), 1e-30)
    torch.testing.assert_close(actual.detach(), expected.detach(), rtol=0,
                               atol=TOL[dtype] * scale, check_dtype=False)


def params_pair(dtype, seed=0):
    """Equal parameters for torch and fastadapt: two complex ones (one 0-dim)
    and a real one of the same precision in the same group."""
    g = torch.Generator().manual_seed(seed)
    values = [torch.randn((4, 3), generator=g, dtype=dtype),
              torch.randn((5,), generator=g, dtype=dtype.to_real()),
              torch.randn((), generator=g, dtype=dtype)]
    return [nn.Parameter(v.clone()) for v in values], [nn.Parameter(v.clone()) for v in values]


def train(opt, params, steps, seed=3):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
        opt.step()


def _cases():
    from torch.testing._internal.common_optimizers import optim_db
    return [pytest.param(info.optim_cls.__name__, inp.kwargs,
                         id=f"{info.optim_cls.__name__}-{inp.desc}")
            for info in optim_db if info.optim_cls.__name__ in TORCH_SUPPORTS_COMPLEX
            for inp in info.optim_inputs_func(device="cpu", dtype=torch.float32)
            if not (inp.kwargs.get("differentiable") or inp.kwargs.get("capturable"))]


def test_the_complex_classes_are_torchs():
    """The classes taking complex parameters are those torch's optim_db marks
    ``supports_complex`` among fastadapt.torch's (Lion is not in torch)."""
    from torch.testing._internal.common_optimizers import optim_db
    torch_complex = {i.optim_cls.__name__ for i in optim_db if i.supports_complex}
    ours = {n for n in ft.__all__ if isinstance(getattr(ft, n), type)
            and issubclass(getattr(ft, n), ft.FlatOptimizer) and n != "ZeroRedundancyOptimizer"
            and getattr(ft, n).rule is not None}
    assert TORCH_SUPPORTS_COMPLEX == ours & torch_complex


@pytest.mark.parametrize("dtype", COMPLEX, ids=str)
@pytest.mark.parametrize("name,kwargs", _cases())
def test_complex_parameters_match_torch(name, kwargs, dtype):
    """Five steps of every optim_db configuration: parameters and every state
    tensor (complex, as torch keeps it) agree with torch's single-tensor path."""
    theirs, ours = params_pair(dtype)
    opt = getattr(ft, name)(ours, **kwargs)
    ref = getattr(torch.optim, name)(theirs, **{**kwargs, "foreach": False})
    train(opt, ours, 5)
    train(ref, theirs, 5)
    for p, q in zip(ours, theirs):
        assert p.dtype == q.dtype
        assert_close(p, q, dtype)
        assert set(opt.state.get(p, {})) == set(ref.state.get(q, {}))
        for key, value in ref.state.get(q, {}).items():
            assert_close(torch.as_tensor(opt.state[p][key]), torch.as_tensor(value), dtype)


@pytest.mark.parametrize("dtype", COMPLEX, ids=str)
@pytest.mark.parametrize("name", ["Adam", "Rprop", "Adagrad"])
def test_complex_checkpoints_move_between_fastadapt_and_torch(name, dtype):
    """fastadapt's state dict holds complex state tensors (torch's format):
    torch loads it and continues as fastadapt does, and the other way round."""
    kwargs = {"initial_accumulator_value": 0.5} if name == "Adagrad" else {}
    theirs, ours = params_pair(dtype)
    opt = getattr(ft, name)(ours, **kwargs)
    train(opt, ours, 3)
    saved = opt.state_dict()
    assert saved["state"][0][next(k for k in saved["state"][0] if k != "step")].is_complex()
    ref = getattr(torch.optim, name)(theirs, foreach=False, **kwargs)
    with torch.no_grad():
        for p, q in zip(ours, theirs):
            q.copy_(p)
    ref.load_state_dict(copy.deepcopy(saved))
    train(opt, ours, 2, seed=5)
    train(ref, theirs, 2, seed=5)
    for p, q in zip(ours, theirs):
        assert_close(p, q, dtype)
    back = getattr(ft, name)([nn.Parameter(q.detach().clone()) for q in theirs], **kwargs)
    back.load_state_dict(ref.state_dict())
    for p, q in zip(back.param_groups[0]["params"], theirs):
        for key, value in ref.state[q].items():
            assert_close(torch.as_tensor(back.state[p][key]), torch.as_tensor(value), dtype)


def test_a_complex_model_trains_through_autograd_on_the_zero_copy_path():
    """A complex parameter's gradient from a backward becomes the flat
    buffer's complex view, and the step matches torch's."""
    torch.manual_seed(0)
    w = torch.randn(3, 4, dtype=torch.complex64)
    x = torch.randn(8, 3, dtype=torch.complex64)
    a, b = nn.Parameter(w.clone()), nn.Parameter(w.clone())
    opt, ref = ft.Adam([a], lr=0.1), torch.optim.Adam([b], lr=0.1, foreach=False)
    for _ in range(3):
        for p, o in ((a, opt), (b, ref)):
            o.zero_grad()
            (x @ p).abs().pow(2).sum().backward()
            o.step()
    bucket = opt._buckets[0][0]
    assert a.grad is bucket.grad_views[0] and a.grad.is_complex()
    assert torch.view_as_real(a.detach()).data_ptr() == bucket.param_flat.data_ptr()
    assert_close(a, b, torch.complex64)


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_complex_parameters_refused_where_torch_has_no_complex_form():
    p = nn.Parameter(torch.zeros(3, dtype=torch.complex64))
    with pytest.raises(TypeError, match="Lion does not support complex"):
        ft.Lion([p])
    with pytest.raises(ValueError, match="keep state of their own precision"):
        ft.Adam([p], state_dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="complex32"):
        ft.Adam([nn.Parameter(torch.zeros(3, dtype=torch.complex32))])


def test_loading_real_state_for_a_complex_parameter_raises_and_changes_nothing():
    p = nn.Parameter(torch.ones(3, dtype=torch.complex64))
    opt = ft.SGD([p], lr=0.1, momentum=0.9)
    train(opt, [p], 1)
    before = opt.state_dict()["state"][0]["momentum_buffer"].clone()
    bad = {"state": {0: {"momentum_buffer": torch.zeros(3)}},
           "param_groups": opt.state_dict()["param_groups"]}
    with pytest.raises(ValueError, match="must be a dense complex tensor"):
        opt.load_state_dict(bad)
    assert torch.equal(opt.state[p]["momentum_buffer"], before)


def test_max_grad_norm_of_complex_gradients_is_torchs_clip_grad_norm():
    """The global norm over the real view is torch's norm of complex
    gradients (sqrt of the sum of |z|^2)."""
    g = torch.Generator().manual_seed(4)
    w = torch.randn(4, 3, generator=g, dtype=torch.complex64)
    grad = 3 * torch.randn(4, 3, generator=g, dtype=torch.complex64)
    a, b = nn.Parameter(w.clone()), nn.Parameter(w.clone())
    opt, ref = ft.SGD([a], lr=0.1, max_grad_norm=0.5), torch.optim.SGD([b], lr=0.1)
    a.grad, b.grad = grad.clone(), grad.clone()
    opt.step()
    norm = torch.nn.utils.clip_grad_norm_([b], 0.5)
    ref.step()
    assert opt.grad_norm == pytest.approx(float(norm), rel=1e-6)
    assert_close(a, b, torch.complex64)
