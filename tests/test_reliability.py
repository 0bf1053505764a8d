"""Regression tests for the kernel-side reliability defects of issue 8: IEEE division
on every path, import without a writable cache, no stale cache after an edit,
ndarray subclasses, overflow behaving as torch's, huge step numbers and
non-numeric hyper-parameters."""
import collections
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastadapt
from fastadapt.functional import step_for
from fastadapt.kernels.cpu import SERIAL_BELOW

import optim_cases as cases
from conftest import assert_unchanged, snapshot

REPO = Path(__file__).resolve().parents[1]
RULES = fastadapt.RULES


# ------------------------------------------------------------ 1. IEEE division
@pytest.mark.parametrize("n", [8, SERIAL_BELOW + 8], ids=["serial", "parallel"])
@pytest.mark.parametrize("name", ["adam", "rmsprop", "adagrad"])
def test_eps_zero_divides_as_ieee_like_torch(torch, name, n):
    """eps=0 with a zero gradient is 0/0: NaN like torch, on every element, never a
    ZeroDivisionError half-way through the update."""
    g = np.ones(n, np.float32)
    g[n // 2:] = 0
    config = {"eps": 0.0}
    param0 = np.ones(n, np.float32)
    ours, _ = cases.run_fastadapt(name, config, param0, [g])
    theirs, _ = cases.run_torch(name, config, param0, [g])
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    assert np.isnan(ours[n // 2:]).all()
    np.testing.assert_allclose(ours[:n // 2], theirs[:n // 2], rtol=1e-6)


def test_eps_below_float32s_range_is_zero_not_an_error():
    p, g = np.ones(8, np.float32), np.zeros(8, np.float32)
    m, v = np.zeros(8, np.float32), np.zeros(8, np.float32)
    fastadapt.adam_step(p, g, m, v, step=1, eps=1e-46)   # rounds to 0 in float32
    assert np.isnan(p).all()


def test_a_class_with_eps_zero_steps_without_raising():
    """The flat buffer's padding (zero gradient) must not raise either."""
    opt = fastadapt.Adam([np.ones(10, np.float32)], eps=0.0)
    opt.step([np.ones(10, np.float32)])
    opt.step([np.ones(10, np.float32)])
    assert opt.state[0]["step"] == 2 and np.isfinite(opt.params[0]).all()


# ------------------------------------------------------------ 2, 3. the disk cache
def _copy_package(root):
    """fastadapt with its kernels, as an installed package would lie, under ``root``."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "fastadapt", root / "fastadapt", ignore=ignore)
    shutil.copytree(REPO / "kernels", root / "fastadapt" / "kernels", ignore=ignore)
    return root


def _python(code, root, env):
    base = {k: v for k, v in os.environ.items()
            if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "PYTHONPATH")}
    result = subprocess.run([sys.executable, "-W", "always", "-c", textwrap.dedent(code)],
                            cwd=root, env={**base, "PYTHONPATH": str(root), **env},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


_ONE_STEP = """
    import fastadapt, numpy as np
    assert fastadapt.__file__.startswith({root!r}), fastadapt.__file__
    p = np.ones(3, np.float32)
    fastadapt.adam_step(p, np.ones(3, np.float32), np.zeros(3, np.float32),
                        np.zeros(3, np.float32), step=1, lr=0.5)
    print(repr(float(p[0])))
"""


def test_import_works_with_no_writable_cache_location(tmp_path):
    """No NUMBA_CACHE_DIR, and neither the package's directory nor the user's cache
    directory can hold a cache (their ``__pycache__`` / ``.cache`` are files, which
    stops root too, unlike permissions): the kernels compile in memory, with one
    warning that names NUMBA_CACHE_DIR."""
    root = _copy_package(tmp_path / "site")
    for d in (root / "fastadapt", root / "fastadapt" / "kernels"):
        (d / "__pycache__").write_text("not a directory")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".cache").write_text("not a directory")
    result = _python(_ONE_STEP.format(root=str(root)), root,
                     {"HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"})
    assert float(result.stdout.split()[-1]) == pytest.approx(0.5)
    warnings = [line for line in result.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(warnings) == 1 and "NUMBA_CACHE_DIR" in warnings[0], result.stderr


def test_an_edited_kernel_source_is_not_served_from_the_cache(tmp_path):
    """Same size, same mtime, different math: a fresh process computes the new math."""
    root = _copy_package(tmp_path / "site")
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    code = _ONE_STEP.format(root=str(root))
    before = float(_python(code, root, env).stdout.split()[-1])
    assert float(_python(code, root, env).stdout.split()[-1]) == before   # cached
    math_py = root / "fastadapt" / "kernels" / "math.py"
    stat = math_py.stat()
    text = math_py.read_text()
    old = "return p + neg_step_size * m / denom"
    assert text.count(old) == 1
    math_py.write_text(text.replace(old, "return p - neg_step_size * m / denom"))
    os.utime(math_py, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert math_py.stat().st_size == stat.st_size
    after = float(_python(code, root, env).stdout.split()[-1])
    assert before == pytest.approx(0.5) and after == pytest.approx(1.5)


# ------------------------------------------------------------ 8. ndarray subclasses
@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("arg", ["param", "grad", "exp_avg"])
def test_np_matrix_is_a_type_error_naming_the_argument(arg):
    arrays = {a: np.ones((1, 4)) for a in ("param", "grad", "exp_avg", "exp_avg_sq")}
    arrays[arg] = np.asmatrix(arrays[arg])
    before = snapshot(list(arrays.values()))
    with pytest.raises(TypeError, match=f"{arg} is a numpy.matrix"):
        fastadapt.adam_step(**arrays, step=1)
    assert_unchanged(list(arrays.values()), before)


def test_a_memmap_is_an_array_like_any_other(tmp_path):
    p = np.memmap(tmp_path / "p.bin", np.float64, "w+", shape=(5,))
    fastadapt.sgd_step(p, np.ones(5), step=1, lr=0.5)
    np.testing.assert_array_equal(p, -0.5)


# ------------------------------------------------------------ 12. overflow as torch's
def test_centered_rmsprop_with_a_huge_gradient_matches_torch(torch):
    p, g = np.array([0.5], np.float32), np.array([3e38], np.float32)
    fastadapt.rmsprop_step(p, g, np.zeros(1, np.float32), centered=True,
                           grad_avg=np.zeros(1, np.float32))
    assert p[0] == np.float32(0.5)


def _overflow_cases():
    return [pytest.param(name, config, id=f"{name}[{cases.config_id(config)}]")
            for name, rule in RULES.items() if rule.in_torch
            for config in ({}, {"weight_decay": 0.1} if "weight_decay" in rule.defaults
                           else {"maximize": True}, cases.EVERY_STATE[name])]


@pytest.mark.parametrize("name, config", _overflow_cases())
def test_huge_and_non_finite_gradients_match_torch(torch, name, config):
    """Gradients near float32's limit, infinite and NaN, for three steps: the same
    elements are finite, infinite or NaN as in torch, and the finite ones agree
    (torch fuses some multiply-adds, so an overflow can hide in its exact product;
    and it skips the L2 term when weight_decay is 0, where 0 * inf is NaN)."""
    column = np.array([3e38, -3e38, 1e20, 2e19, np.inf, -np.inf, np.nan, 1.0], np.float32)
    param0 = np.linspace(-1, 1, column.size).astype(np.float32)
    grads = [column, column * np.float32(0.5), column]
    ours, _ = cases.run_fastadapt(name, config, param0, grads)
    theirs, _ = cases.run_torch(name, config, param0, grads)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, equal_nan=True)


# ------------------------------------------------------------ 13. huge steps
@pytest.mark.parametrize("name", [n for n, r in RULES.items() if r.takes_step])
@pytest.mark.parametrize("step", [2 ** 64, 2 ** 1100])
def test_a_huge_step_is_the_limit_not_an_error(name, step):
    """Beyond 2**64 every bias correction has reached its limit: the same update."""
    config = dict(cases.EVERY_STATE[name], lr_decay=0.5) if name == "adagrad" else \
        cases.EVERY_STATE[name]
    param0, grads = cases.problem(33, np.float64, 3, steps=1)
    huge, _ = cases.run_fastadapt(name, config, param0, grads, first_step=step)
    limit, _ = cases.run_fastadapt(name, config, param0, grads, first_step=2 ** 64)
    np.testing.assert_array_equal(huge, limit)
    assert np.isfinite(huge).all()


def test_adam_at_a_huge_step_has_no_bias_correction():
    p, g = np.ones(4), np.full(4, 2.0)
    m, v = np.zeros(4), np.zeros(4)
    fastadapt.adam_step(p, g, m, v, step=2 ** 1100, lr=0.1)
    np.testing.assert_allclose(p, 1 - 0.1 * m / (np.sqrt(v) + 1e-8))


# ------------------------------------------------------------ 14. numbers and flags
@pytest.mark.parametrize("value", ["0.001", b"0.001", None, 1e-3 + 0j, True, [1e-3]],
                         ids=repr)
def test_a_hyper_parameter_must_be_a_real_number(value):
    arrays = {a: np.ones(3) for a in ("param", "grad", "exp_avg", "exp_avg_sq")}
    before = snapshot(list(arrays.values()))
    with pytest.raises(TypeError, match="lr must be a real number"):
        fastadapt.adam_step(**arrays, step=1, lr=value)
    assert_unchanged(list(arrays.values()), before)


@pytest.mark.parametrize("value", ["false", "True", None, 2, -1, 0.0, 1.0], ids=repr)
def test_a_flag_must_be_a_bool(value):
    arrays = {a: np.ones(3) for a in ("param", "grad", "exp_avg", "exp_avg_sq")}
    before = snapshot(list(arrays.values()))
    with pytest.raises(TypeError, match="maximize must be a bool"):
        fastadapt.adam_step(**arrays, step=1, maximize=value)
    assert_unchanged(list(arrays.values()), before)


@pytest.mark.parametrize("value", [0, 1, np.bool_(True), False])
def test_a_flag_may_be_0_or_1(value):
    arrays = {a: np.ones(3) for a in ("param", "grad", "exp_avg", "exp_avg_sq")}
    fastadapt.adam_step(**arrays, step=1, maximize=value)


def test_numpy_reals_are_real_numbers():
    arrays = {a: np.ones(3) for a in ("param", "grad", "exp_avg", "exp_avg_sq")}
    fastadapt.adam_step(**arrays, step=np.int32(1), lr=np.float32(0.1), eps=np.int64(0),
                        betas=(np.float64(0.9), 0.99))


# ------------------------------------------------------------ issue 19: state, master
# copies and GradScaler in one process (fastadapt.torch and the NumPy classes)
def _bf16_adamw(torch, n=256, steps=2, seed=0, **options):
    """A bfloat16 parameter trained ``steps`` AdamW steps with master weights."""
    import fastadapt.torch as ft
    gen = torch.Generator().manual_seed(seed)
    w = torch.nn.Parameter(torch.randn(n, generator=gen).bfloat16())
    opt = ft.AdamW([w], lr=0.05, master_weights=True, **options)
    for _ in range(steps):
        w.grad = torch.randn(n, generator=gen).bfloat16()
        opt.step()
    return w, opt


def _lr0_move(torch, sd, like):
    """How far one lr=0 step of a fresh optimizer that loads ``sd`` moves a
    parameter holding ``like``'s values: its master copy's distance from them."""
    import fastadapt.torch as ft
    w = torch.nn.Parameter(like.detach().clone())
    opt = ft.AdamW([w], lr=0.0, weight_decay=0.0, master_weights=True)
    opt.load_state_dict(sd)
    opt.param_groups[0]["lr"] = 0.0
    before = w.detach().float().clone()
    w.grad = torch.zeros_like(w)
    opt.step()
    return float((w.detach().float() - before).abs().max())


def test_state_dict_after_a_data_replacement_saves_the_new_master(torch):
    """Replaced ``.data`` reached the master copy only at the next step, so a
    state dict taken before it saved the old master, and resuming moved w back."""
    w, opt = _bf16_adamw(torch)
    w.data = torch.randn(256, generator=torch.Generator().manual_seed(9)).bfloat16() * 3
    seen = w.detach().clone()
    sd = opt.state_dict()
    assert torch.equal(w.detach(), seen)                 # the model sees the same values
    assert torch.equal(sd["state"][0]["master_param"], seen.float())
    assert _lr0_move(torch, sd, seen) == 0.0


def test_a_state_dict_does_not_move_a_replaced_parameter_of_another_shape(torch):
    w, opt = _bf16_adamw(torch)
    w.data = torch.zeros(3, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="changed shape"):
        opt.state_dict()


def test_a_stale_master_from_a_torch_round_trip_is_not_trusted(torch):
    """torch.optim keeps the unknown master_param key and never updates it; back
    in fastadapt the stale master would undo torch's steps."""
    w, opt = _bf16_adamw(torch, steps=3)
    ref = torch.optim.AdamW([w], lr=0.05)
    ref.load_state_dict(opt.state_dict())
    gen = torch.Generator().manual_seed(5)
    for _ in range(5):
        w.grad = torch.randn(256, generator=gen).bfloat16()
        ref.step()
    sd = ref.state_dict()
    assert not torch.equal(sd["state"][0]["master_param"].bfloat16(), w.detach())
    assert _lr0_move(torch, sd, w) == 0.0


def test_a_master_that_rounds_to_the_parameter_keeps_its_low_bits(torch):
    w, opt = _bf16_adamw(torch, steps=3)
    sd = opt.state_dict()
    master = sd["state"][0]["master_param"].clone()
    assert not torch.equal(master, w.detach().float())    # it has bits below bfloat16's
    import fastadapt.torch as ft
    twin = torch.nn.Parameter(w.detach().clone())
    other = ft.AdamW([twin], lr=0.05, master_weights=True)
    other.load_state_dict(sd)
    assert torch.equal(other.state[twin]["master_param"], master)


def test_an_npz_master_is_trusted_only_where_it_rounds_to_the_params(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = ml_dtypes.bfloat16
    rng = np.random.default_rng(0)
    opt = fastadapt.AdamW([rng.standard_normal(300).astype(bf16)], lr=0.05,
                          master_weights=True)
    for _ in range(3):
        opt.step([rng.standard_normal(300).astype(np.float32)])
    sd = opt.state_dict()
    kept = sd["master"][0][150:].copy()           # still rounds to the params there
    sd["params"][0][:150] = (sd["params"][0][:150].astype(np.float32) + 1).astype(bf16)
    from fastadapt.checkpoint import save
    save(tmp_path / "edited.npz", sd)             # as a tool that edits checkpoints would
    resumed = fastadapt.AdamW([np.zeros(300, bf16)], lr=0.0, weight_decay=0.0,
                              master_weights=True)
    resumed.load(tmp_path / "edited.npz")
    resumed.param_groups[0]["lr"] = 0.0
    before = resumed.params[0].copy()
    resumed.step([np.zeros(300, np.float32)])
    assert resumed.params[0].tobytes() == before.tobytes()
    np.testing.assert_array_equal(resumed.master_params[0][150:], kept)
    np.testing.assert_array_equal(resumed.master_params[0][:150],
                                  sd["params"][0][:150].astype(np.float32))


def test_a_step_that_raises_under_grad_scaler_leaves_no_scale_behind(torch):
    """GradScaler removes grad_scale / found_inf only after a step that returns;
    left set, the next good step was divided by the scale twice."""
    import fastadapt.torch as ft
    w = torch.nn.Parameter(torch.zeros(4))
    opt = ft.SGD([w], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    opt.param_groups[0]["lr"] = -1.0
    scaler.scale(w.sum()).backward()
    with pytest.raises(ValueError, match="invalid lr"):
        scaler.step(opt)
    assert not hasattr(opt, "grad_scale") and not hasattr(opt, "found_inf")
    assert torch.equal(w.detach(), torch.zeros(4))
    opt.param_groups[0]["lr"] = 0.1
    opt.zero_grad()
    scaler.scale(w.sum()).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.equal(w.detach(), torch.full((4,), -0.1))


def test_a_state_tensor_on_another_device_is_refused_before_anything_changes(torch):
    """A meta tensor in parameter 1's state passed the checks, then failed
    mid-copy with param_groups and parameter 0's state already overwritten."""
    import fastadapt.torch as ft
    a, b = torch.nn.Parameter(torch.randn(8)), torch.nn.Parameter(torch.randn(8))
    opt = ft.Adam([a, b], lr=0.1)
    a.grad, b.grad = torch.ones(8), torch.ones(8)
    opt.step()
    sd = opt.state_dict()
    bad = {"state": {k: {n: t.clone() + 1 for n, t in v.items()}
                     for k, v in sd["state"].items()},
           "param_groups": [dict(g, lr=0.5) for g in sd["param_groups"]]}
    for key in ("exp_avg", "step"):
        broken = {k: dict(v) for k, v in bad["state"].items()}
        broken[1][key] = torch.empty_like(broken[1][key], device="meta")
        before = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in (a, b)}
        with pytest.raises(ValueError, match=f"{key} is on meta"):
            opt.load_state_dict({"state": broken, "param_groups": bad["param_groups"]})
        assert opt.param_groups[0]["lr"] == 0.1
        for p in (a, b):
            assert all(torch.equal(v, opt.state[p][k]) for k, v in before[p].items())


_RESETS = {"clear": lambda opt, ps: opt.state.clear(),
           "pop": lambda opt, ps: opt.state.pop(ps[0]),
           "del": lambda opt, ps: opt.state.__delitem__(ps[1]),
           "empty": lambda opt, ps: opt.state.__setitem__(ps[1], {}),
           "new dict": lambda opt, ps: setattr(opt, "state", collections.defaultdict(dict))}


@pytest.mark.parametrize("idiom", list(_RESETS))
@pytest.mark.parametrize("cls, cfg", [("Adam", {}), ("AdamW", {"amsgrad": True}),
                                      ("SGD", {"momentum": 0.9}),
                                      ("RMSprop", {"centered": True, "momentum": 0.5}),
                                      ("Adagrad", {}), ("NAdam", {})], ids=str)
def test_torchs_ways_to_reset_state_restart_the_parameter_as_torch_does(torch, cls, cfg,
                                                                         idiom):
    """3 steps, a reset, 3 steps, against torch.optim doing the same: the
    parameters and every state tensor agree to float32 rounding (1e-6 of their
    scale; a reset ignored is 0.03-1.4 off)."""
    import fastadapt.torch as ft
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(5, 3, generator=gen), torch.randn(7, generator=gen)]
    ps = [torch.nn.Parameter(t.clone()) for t in init]
    qs = [torch.nn.Parameter(t.clone()) for t in init]
    opt = getattr(ft, cls)(ps, lr=0.05, **cfg)
    ref = getattr(torch.optim, cls)(qs, lr=0.05, foreach=False, **cfg)
    for t in range(6):
        if t == 3:
            _RESETS[idiom](opt, ps)
            _RESETS[idiom](ref, qs)
        for p, q in zip(ps, qs):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        opt.step()
        ref.step()
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-6)
        assert set(opt.state[p]) == set(ref.state[q])
        for key, value in ref.state[q].items():
            torch.testing.assert_close(opt.state[p][key].double(), value.double(),
                                       rtol=0, atol=1e-6 * max(1.0, float(value.abs().max())))


def test_a_reset_of_a_parameter_without_gradient_waits_for_its_next_gradient(torch):
    import fastadapt.torch as ft
    a, b = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))
    opt = ft.Adam([a, b], lr=0.1)
    a.grad, b.grad = torch.ones(4), torch.ones(4)
    opt.step()
    opt.state.clear()
    b.grad = None
    opt.step()
    assert b not in opt.state and int(opt.state[a]["step"]) == 1
    assert int(opt.state_dict()["state"][0]["step"]) == 1 and 1 not in opt.state_dict()["state"]
    assert opt.state[b] == {}                    # reading it makes an empty entry, as in torch
    opt.step()
    assert opt.state[b] == {} and int(opt.state[a]["step"]) == 2
    b.grad = torch.ones(4)
    opt.step()
    assert int(opt.state[b]["step"]) == 1 and int(opt.state[a]["step"]) == 3


def test_a_foreign_state_dict_entry_raises_and_changes_nothing(torch):
    import fastadapt.torch as ft
    w = torch.nn.Parameter(torch.ones(4))
    opt = ft.Adam([w], lr=0.1)
    w.grad = torch.ones(4)
    opt.step()
    before = w.detach().clone()
    opt.state[w] = {"exp_avg": torch.zeros(4)}
    with pytest.raises(ValueError, match=r"optimizer.state.pop\(p\)"):
        opt.step()
    assert torch.equal(w.detach(), before)


def test_stochastic_rounding_draws_new_bits_past_two_to_the_24_steps(torch):
    """torch's float32 step count stops at 2**24 (2**24 + 1 rounds back), so
    the rounding stream, keyed on the step, drew the same bits every step.
    Reference: the functional step over the same buffer at the exact step."""
    import fastadapt.torch as ft
    n, seed, start = 64, 7, 2 ** 24
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(n, generator=gen).bfloat16())
    opt = ft.Adam([w], lr=1e-3, stochastic_rounding=True, seed=seed)
    w.grad = torch.randn(n, generator=gen).bfloat16()
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["step"] = torch.tensor(float(start))
    opt.load_state_dict(sd)
    p = w.detach().float().numpy().astype(np.float32)
    state = [opt.state[w][k].numpy().copy() for k in ("exp_avg", "exp_avg_sq")]
    import ml_dtypes
    p = p.astype(ml_dtypes.bfloat16)
    for t in (start + 1, start + 2, start + 3):
        g = torch.randn(n, generator=gen).bfloat16()
        w.grad = g.clone()
        opt.step()
        fastadapt.adam_step(p, g.float().numpy().astype(ml_dtypes.bfloat16), *state, step=t,
                            lr=1e-3, stochastic_rounding=True, seed=seed)
        assert w.detach().float().numpy().tobytes() == p.astype(np.float32).tobytes(), t
    # torch's float32 step stays in the dict; the exact count rides beside it
    sd = opt.state_dict()
    assert sd["state"][0]["step"].dtype == torch.float32
    assert float(sd["state"][0]["step"]) == start + 4 and sd["state"][0]["exact_step"] == start + 3
    opt.load_state_dict(sd)
    assert int(opt.state[w]["step"]) == start + 3
    sd["state"][0]["step"] = torch.tensor(float(start + 100))   # torch stepped on: stale
    opt.load_state_dict(sd)
    assert int(opt.state[w]["step"]) == start + 100


# ------------------------------------------------------------ issue 19, item 18
def _slots():
    for name, rule in RULES.items():
        for i, spec in enumerate(rule.state_specs):
            yield pytest.param(name, i, id=f"{name}-{spec.name}")


@pytest.mark.parametrize("value", [0.1, "garbage", True], ids=repr)
@pytest.mark.parametrize("name, slot", list(_slots()))
def test_a_positional_hyper_parameter_in_a_state_slot_is_a_type_error(name, slot, value):
    """``sgd_step(p, g, 0.1, step=1)`` ran with lr 1e-3: the 0.1 landed in the
    momentum-buffer slot, unused without momentum, and was never checked."""
    rule = RULES[name]
    arrays = [np.ones(5, np.float32) for _ in range(2 + len(rule.state_specs))]
    args = list(arrays)
    args[2 + slot] = value
    before = snapshot(arrays)
    with pytest.raises(TypeError, match="hyper-parameters are keyword-only"):
        step_for(rule)(*args, **({"step": 1} if rule.takes_step else {}))
    assert_unchanged(arrays, before)


def test_an_unused_state_array_is_still_checked():
    p, g, m, v = (np.ones(4, np.float32) for _ in range(4))
    with pytest.raises(ValueError, match=r"max_exp_avg_sq has shape \(3,\)"):
        fastadapt.adam_step(p, g, m, v, np.zeros(3, np.float32), step=1)
    with pytest.raises(TypeError, match="momentum_buffer must be a numpy.ndarray"):
        fastadapt.sgd_step(p, g, [0.0] * 4, step=1)
    fastadapt.adam_step(p, g, m, v, np.zeros(4, np.float32), step=1)     # amsgrad off: fine
