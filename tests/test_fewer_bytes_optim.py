"""The optimizer classes' storage options (state_dtype, master_weights,
stochastic_rounding, seed) and their checkpoints.

The numbers themselves are checked in test_fewer_bytes.py (functional API
against torch and the float64 reference); here: the classes run exactly
those updates on their flat buffers (bit-equal to functional calls on the
same values, or to a float32 optimizer where the storage is exact), the
defaults the issue names, checkpoints that resume bit-identically, and bad
options refused with nothing built.
"""
import numpy as np
import pytest

import fastadapt
from fastadapt.functional import step_for
from fastadapt.kernels.cpu import SERIAL_BELOW

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16, F32 = np.dtype(np.float16), np.dtype(np.float32)
SHAPES = [(7,), (3, 5), (1,), (SERIAL_BELOW + 88,)]   # the last crosses SERIAL_BELOW alone


def model(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32).astype(dtype) for s in SHAPES]


def grads(step, dtype):
    """Gradients exactly representable in bfloat16 (and float16)."""
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(s).astype(np.float32).astype(BF16).astype(dtype)
            for s in SHAPES]


def bits(arrays):
    """The arrays' bytes, comparable with ``==``."""
    return [np.asarray(a).view(np.uint8).tobytes() for a in arrays]


@pytest.mark.parametrize("dtype, expected", [(F32, F32), (np.float64, np.float64),
                                             (BF16, F32), (F16, F32)],
                         ids=["float32", "float64", "bfloat16", "float16"])
def test_default_state_dtype(dtype, expected):
    opt = fastadapt.Adam(model(dtype))
    assert opt.flat_params[0].dtype == dtype and opt.flat_grads[0].dtype == dtype
    assert all(v.dtype == expected for v in opt.state[0]["exp_avg"])
    assert opt.master_params is None and opt.seed is None


@pytest.mark.parametrize("name, options", [("adam", {"amsgrad": True}), ("sgd", {"momentum": 0.9}),
                                           ("rmsprop", {"centered": True}), ("adagrad", {})])
@pytest.mark.parametrize("dtype, state_dtype", [(BF16, None), (BF16, "bfloat16"),
                                                (F32, "bfloat16"), (F16, "float16")])
def test_class_equals_functional_steps(name, options, dtype, state_dtype):
    rule = fastadapt.RULES[name]
    cls = getattr(fastadapt, rule.torch_name)
    opt = cls(model(dtype), lr=1e-2, state_dtype=state_dtype, **options)
    sd = np.dtype(state_dtype) if state_dtype else F32
    params = model(dtype)
    state = {s: [np.full(p.shape, rule.initial_value(s), sd) for p in params]
             for s in rule.state_for(**options)}
    for k in range(1, 4):
        g = grads(k, dtype)
        opt.step(g)
        step = {"step": k} if rule.takes_step else {}
        for i, p in enumerate(params):
            step_for(rule)(p, g[i], **{s: a[i] for s, a in state.items()}, lr=1e-2, **step,
                         **options)
    assert bits(opt.params) == bits(params)
    for s in state:
        assert bits(opt.state[0][s]) == bits(state[s])


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])
def test_master_weights_run_the_float32_update(dtype):
    """With master weights the float32 copy follows a float32 optimizer bit for
    bit (the gradients are exact in 16 bits), and the params are its nearest
    rounding."""
    ref = fastadapt.AdamW(model(F32), lr=1e-2, weight_decay=0.1)
    opt = fastadapt.AdamW(model(dtype), lr=1e-2, weight_decay=0.1, master_weights=True)
    assert bits(opt.master_params) == bits([p.astype(F32) for p in model(dtype)])
    ref.load_state_dict({**ref.state_dict(), "params": [np.concatenate(
        [p.astype(F32).ravel() for p in model(dtype)])]})
    for k in range(1, 5):
        ref.step(grads(k, F32))
        opt.step(grads(k, dtype))
    assert bits(opt.master_params) == bits(ref.params)
    assert bits(opt.params) == bits([p.astype(dtype) for p in ref.params])


def test_stochastic_rounding_in_the_class_is_seeded():
    a = fastadapt.RMSprop(model(BF16), lr=1e-2, stochastic_rounding=True, seed=4)
    b = fastadapt.RMSprop(model(BF16), lr=1e-2, stochastic_rounding=True, seed=4)
    c = fastadapt.RMSprop(model(BF16), lr=1e-2, stochastic_rounding=True, seed=5)
    d = fastadapt.RMSprop(model(BF16), lr=1e-2, stochastic_rounding=True)
    assert isinstance(d.seed, int) and 0 <= d.seed < 2 ** 64
    for k in range(1, 3):
        for opt in (a, b, c):
            opt.step(grads(k, BF16))
    assert bits(a.params) == bits(b.params)
    assert bits(a.params) != bits(c.params)


MODES = [("adam", BF16, {}), ("adam", BF16, {"master_weights": True}),
         ("adamw", BF16, {"stochastic_rounding": True, "seed": 9}),
         ("rmsprop", BF16, {"stochastic_rounding": True, "momentum": 0.5}),
         ("sgd", F32, {"state_dtype": "bfloat16", "momentum": 0.9}),
         ("adam", F16, {"state_dtype": "float16", "master_weights": True}),
         ("adagrad", BF16, {"state_dtype": "bfloat16"}),
         ("adam", F32, {"state_dtype": "int8", "amsgrad": True}),
         ("adagrad", BF16, {"state_dtype": "int8", "initial_accumulator_value": 0.1}),
         ("sgd", F32, {"state_dtype": "int8", "momentum": 0.9}),
         ("rmsprop", F16, {"state_dtype": "int8", "centered": True, "momentum": 0.5,
                           "master_weights": True}),
         ("adamw", BF16, {"master_weights": "bf16+16"}),
         ("rmsprop", BF16, {"master_weights": "bf16+8", "state_dtype": "bfloat16",
                            "momentum": 0.5})]


@pytest.mark.parametrize("name, dtype, options", MODES, ids=[
    f"{m[0]}-{np.dtype(m[1]).name}-{'-'.join(m[2])}" for m in MODES])
def test_checkpoint_resumes_bit_identically(tmp_path, name, dtype, options):
    cls = getattr(fastadapt, fastadapt.RULES[name].torch_name)
    opt = cls(model(dtype), lr=1e-2, **options)
    for k in range(1, 3):
        opt.step(grads(k, dtype))
    path = tmp_path / "ckpt.npz"
    opt.save(path)
    restored = cls.from_checkpoint(path)
    again = cls(model(dtype, seed=1), lr=1e-2, **options)
    again.load(path)
    for k in range(3, 6):
        for o in (opt, restored, again):
            o.step(grads(k, dtype))
    for o in (restored, again):
        assert bits(o.params) == bits(opt.params)
        for s in opt.state[0]:
            if s != "step":
                assert bits(o.state[0][s]) == bits(opt.state[0][s])
        if opt.master_weights:
            assert bits(o.master_params) == bits(opt.master_params)
        assert o.seed == opt.seed and o.state_dtype == opt.state_dtype
        if opt.state_dtype == "int8":
            for s, buffer in opt._groups[0].state.items():
                other = o._groups[0].state[s].data
                assert other.codes.tobytes() == buffer.data.codes.tobytes()
                assert other.absmax.tobytes() == buffer.data.absmax.tobytes()


def test_checkpoint_of_other_storage_is_refused(tmp_path):
    path = tmp_path / "ckpt.npz"
    fastadapt.Adam(model(BF16), master_weights=True).save(path)
    for options in ({}, {"stochastic_rounding": True, "seed": 1}, {"state_dtype": "bfloat16"}):
        opt = fastadapt.Adam(model(BF16), **options)
        before = bits(opt.params)
        with pytest.raises(ValueError):
            opt.load(path)
        assert bits(opt.params) == before


@pytest.mark.parametrize("dtype, options, exc, words", [
    (F32, {"master_weights": True}, ValueError, ("master_weights", "float32")),
    (F32, {"stochastic_rounding": True}, ValueError, ("stochastic_rounding", "float32")),
    (BF16, {"master_weights": True, "stochastic_rounding": True}, ValueError,
     ("master_weights", "stochastic_rounding")),
    (F32, {"state_dtype": "int4"}, TypeError, ("state_dtype",)),
    (F32, {"state_dtype": "float64"}, TypeError, ("state_dtype", "float64")),
    (np.float64, {"state_dtype": "bfloat16"}, TypeError, ("state_dtype", "float64")),
    (BF16, {"state_dtype": "float16"}, TypeError, ("state_dtype", "float16")),
    (BF16, {"stochastic_rounding": True, "seed": -1}, ValueError, ("seed",)),
    (BF16, {"master_weights": "yes"}, TypeError, ("master_weights",)),
    (BF16, {"master_weights": "bf16+4"}, TypeError, ("master_weights", "bf16+16")),
    (F16, {"master_weights": "bf16+16"}, ValueError, ("bf16+16", "bfloat16", "float16")),
    (F32, {"master_weights": "bf16+8"}, ValueError, ("bf16+8", "bfloat16", "float32")),
    (BF16, {"master_weights": "bf16+8", "stochastic_rounding": True}, ValueError,
     ("master_weights", "stochastic_rounding")),
    (np.float64, {"state_dtype": "int8"}, TypeError, ("int8", "float64")),
])
def test_bad_storage_options(dtype, options, exc, words):
    with pytest.raises(exc) as info:
        fastadapt.Adam(model(dtype), **options)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


@pytest.mark.parametrize("name, options", [("adam", {}), ("sgd", {"momentum": 0.9}),
                                           ("rmsprop", {"centered": True}),
                                           ("adagrad", {"initial_accumulator_value": 0.5})])
def test_int8_state_is_blockwise8_over_the_flat_buffer(name, options):
    """``state_dtype="int8"``: the class equals the functional step on
    Blockwise8 containers over the flat buffer's whole length (padding
    included, zero there), with the unsigned map for non-negative state."""
    rule = fastadapt.RULES[name]
    cls = getattr(fastadapt, rule.torch_name)
    opt = cls(model(F32), lr=1e-2, state_dtype="int8", **options)
    n = len(opt.flat_params[0])
    param = opt.flat_params[0].copy()
    state = {}
    for s in rule.state_for(**options):
        state[s] = fastadapt.Blockwise8(n, signed=s not in rule.non_negative_state)
        if rule.initial_value(s, **options):
            state[s].fill(rule.initial_value(s, **options))
    for k in range(1, 4):
        opt.step(grads(k, F32))
        step = {"step": k} if rule.takes_step else {}
        step_for(rule)(param, opt.flat_grads[0], **state, lr=1e-2, **step,
                     **{o: v for o, v in options.items() if o in rule.defaults})
    assert opt.flat_params[0].tobytes() == param.tobytes()
    for s, b in state.items():
        assert opt._groups[0].state[s].data.codes.tobytes() == b.codes.tobytes()
        assert opt._groups[0].state[s].data.absmax.tobytes() == b.absmax.tobytes()
        assert b.signed == (s in ("exp_avg", "momentum_buffer", "grad_avg"))


def test_bfloat16_without_ml_dtypes_says_what_to_install(monkeypatch):
    """bfloat16 storage asked for by name, with ml_dtypes missing: an ImportError
    naming the option and the package; nothing is built."""
    import sys
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)     # import ml_dtypes fails
    with pytest.raises(ImportError) as info:
        fastadapt.Adam(model(F32), state_dtype="bfloat16")
    assert "state_dtype='bfloat16'" in str(info.value) and "ml_dtypes" in str(info.value)


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])
def test_grad_norm_and_clipping_with_sixteen_bit_gradients(dtype):
    """grad_norm reads 16-bit gradients exactly (through float32), and a
    16-bit optimizer with max_grad_norm clips as the float32 one does on the
    same (exactly representable) values."""
    g = grads(1, dtype)
    exact = np.sqrt(sum(np.sum(x.astype(np.float64) ** 2) for x in g))
    assert fastadapt.grad_norm(*g) == pytest.approx(exact, rel=1e-6)
    ref = fastadapt.SGD(model(F32), lr=0.1, max_grad_norm=0.5)
    opt = fastadapt.SGD(model(dtype), lr=0.1, max_grad_norm=0.5, master_weights=True)
    ref.load_state_dict({**ref.state_dict(), "params": [np.concatenate(
        [p.astype(F32).ravel() for p in model(dtype)])]})
    ref.step(grads(1, F32))
    opt.step(g)
    assert opt.grad_norm == pytest.approx(ref.grad_norm, rel=1e-6)
    np.testing.assert_allclose(np.concatenate([p.ravel() for p in opt.master_params]),
                               np.concatenate([p.ravel() for p in ref.params]), rtol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_checkpoint_with_unsound_absmax_is_refused(tmp_path, bad):
    """A NaN or infinite 8-bit absmax (which would make its whole block NaN),
    in a state dict or an ``.npz``, is a ValueError naming the state; the
    optimizer is unchanged."""
    from fastadapt import checkpoint
    opt = fastadapt.Adam(model(F32), lr=1e-2, state_dtype="int8")
    for k in range(1, 3):
        opt.step(grads(k, F32))
    sd = opt.state_dict()
    sd["absmax"][0]["exp_avg_sq"][1] = bad
    path = tmp_path / "bad.npz"
    checkpoint.save(path, sd)
    before = [(b.data.codes.tobytes(), b.data.absmax.tobytes())
              for b in opt._groups[0].state.values()]
    for load in (lambda: opt.load_state_dict(sd), lambda: opt.load(path)):
        with pytest.raises(ValueError, match=r"state 'exp_avg_sq' absmax is .* finite"):
            load()
        assert [(b.data.codes.tobytes(), b.data.absmax.tobytes())
                for b in opt._groups[0].state.values()] == before


def test_a_block_holding_an_infinity_resumes_from_its_checkpoint(tmp_path):
    """A block holding an infinity stores its absmax negated (its sign bit
    marks it); the checkpoint keeps it and resumes bit for bit."""
    opt = fastadapt.Adam(model(F32), lr=1e-2, state_dtype="int8")
    g = grads(1, F32)
    g[3][5] = np.inf
    opt.step(g)
    assert np.signbit(opt._groups[0].state["exp_avg_sq"].data.absmax).any()
    path = tmp_path / "inf.npz"
    opt.save(path)
    again = fastadapt.Adam.from_checkpoint(path)
    for k in range(2, 4):
        for o in (opt, again):
            o.step(grads(k, F32))
    assert bits(again.params) == bits(opt.params)
    for s, b in opt._groups[0].state.items():
        assert again._groups[0].state[s].data.absmax.tobytes() == b.data.absmax.tobytes()
