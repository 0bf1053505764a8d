"""Bad input is rejected at the boundary, with a message naming the problem, and a
rejected call leaves every array it was given bit-for-bit as it was."""
import inspect
import itertools

import numpy as np
import pytest

import fastadapt
from fastadapt.functional import step_for

import optim_cases as cases
from conftest import assert_unchanged, snapshot

RULES = fastadapt.RULES
SHAPE = (4, 5)


def valid_call(name, dtype=np.float64, shape=SHAPE):
    """Arrays (param, grad and every state the rule can take) and options using them all."""
    rule = RULES[name]
    rng = np.random.default_rng(0)
    arrays = {a: rng.random(shape).astype(dtype) for a in ("param", "grad") + rule.state}
    options = dict(cases.EVERY_STATE[name])
    if rule.takes_step:
        options["step"] = 3
    return arrays, options


def call(name, arrays, options):
    step_for(RULES[name])(**arrays, **options)


def assert_rejected(name, arrays, options, error, *words, also=()):
    """The call raises ``error`` whose message contains every word, and changes nothing
    (neither the arrays passed nor ``also``, e.g. the buffer views were cut from)."""
    given = list(arrays.values()) + list(also)
    before = snapshot(given)
    with pytest.raises(error) as raised:
        call(name, arrays, options)
    for word in words:
        assert word in str(raised.value), f"{word!r} not in {str(raised.value)!r}"
    assert_unchanged(given, before)


def _arguments():
    return [pytest.param(name, a, id=f"{name}-{a}")
            for name, rule in RULES.items() for a in ("param", "grad") + rule.state]


def _written_arguments():
    return [p for p in _arguments() if p.values[1] != "grad"]


each_argument = pytest.mark.parametrize("name, arg", _arguments())
rules = pytest.mark.parametrize("name", list(RULES))


def test_the_valid_call_is_valid():
    for name in RULES:
        arrays, options = valid_call(name)
        call(name, arrays, options)


# ------------------------------------------------------------ arrays, one at a time
@each_argument
def test_mismatched_shape(name, arg):
    arrays, options = valid_call(name)
    arrays[arg] = np.zeros(SHAPE[::-1])
    assert_rejected(name, arrays, options, ValueError, "shape", str(SHAPE[::-1]))


@each_argument
def test_mismatched_dtype(name, arg):
    arrays, options = valid_call(name)
    arrays[arg] = arrays[arg].astype(np.float32)
    assert_rejected(name, arrays, options, TypeError, "dtype", "float32", "float64")


@each_argument
# float16 is a storage dtype (see test_fewer_bytes.py); uint16, the type of its
# bits inside the kernels, is not one the caller may pass
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16, np.complex64],
                         ids=lambda d: np.dtype(d).name)
def test_unsupported_dtype(name, arg, dtype):
    arrays, options = valid_call(name)
    arrays[arg] = arrays[arg].astype(dtype)
    assert_rejected(name, arrays, options, TypeError, f"{arg} has unsupported dtype")


@rules
# float16 is a storage dtype (see test_fewer_bytes.py); uint16, the type of its
# bits inside the kernels, is not one the caller may pass
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16, np.complex64],
                         ids=lambda d: np.dtype(d).name)
def test_unsupported_dtype_everywhere(name, dtype):
    arrays, options = valid_call(name)
    arrays = {a: x.astype(dtype) for a, x in arrays.items()}
    assert_rejected(name, arrays, options, TypeError, "unsupported dtype", np.dtype(dtype).name)


@each_argument
def test_non_native_byte_order(name, arg):
    arrays, options = valid_call(name)
    arrays[arg] = arrays[arg].astype(arrays[arg].dtype.newbyteorder())
    assert_rejected(name, arrays, options, TypeError, f"{arg} has non-native byte order")


@each_argument
@pytest.mark.parametrize("layout", ["strided", "transposed"])
def test_non_contiguous(name, arg, layout):
    arrays, options = valid_call(name)
    if layout == "strided":
        base = np.ones((SHAPE[0], 2 * SHAPE[1]))
        arrays[arg] = base[:, ::2]
    else:
        base = np.ones(SHAPE[::-1])
        arrays[arg] = base.T
    assert arrays[arg].shape == SHAPE and not arrays[arg].flags.c_contiguous
    assert_rejected(name, arrays, options, ValueError, f"{arg} is not C-contiguous",
                    also=[base])


@each_argument
def test_unaligned(name, arg):
    arrays, options = valid_call(name)
    raw = np.zeros(arrays[arg].nbytes + 1, np.uint8)
    unaligned = raw[1:].view(np.float64).reshape(SHAPE)
    assert not unaligned.flags.aligned
    arrays[arg] = unaligned
    assert_rejected(name, arrays, options, ValueError, f"{arg} is not aligned", also=[raw])


@pytest.mark.parametrize("name, arg", _written_arguments())
def test_read_only(name, arg):
    arrays, options = valid_call(name)
    arrays[arg].flags.writeable = False
    assert_rejected(name, arrays, options, ValueError, f"{arg} is read-only")


@rules
def test_read_only_grad_is_fine(name):
    arrays, options = valid_call(name)
    arrays["grad"].flags.writeable = False
    call(name, arrays, options)


@each_argument
def test_a_list_is_not_an_array(name, arg):
    arrays, options = valid_call(name)
    arrays[arg] = arrays[arg].tolist()
    assert_rejected(name, arrays, options, TypeError, f"{arg} must be a numpy.ndarray", "list")


# ------------------------------------------------------------ aliasing
def _pairs():
    return [pytest.param(name, a, b, id=f"{name}-{a}-{b}") for name, rule in RULES.items()
            for a, b in itertools.combinations(("param", "grad") + rule.state, 2)]


@pytest.mark.parametrize("name, a, b", _pairs())
def test_the_same_array_twice(name, a, b):
    arrays, options = valid_call(name)
    arrays[b] = arrays[a]
    assert_rejected(name, arrays, options, ValueError, a, b, "share memory")


@pytest.mark.parametrize("name, a, b", _pairs())
def test_overlapping_views(name, a, b):
    arrays, options = valid_call(name)
    n = arrays[a].size
    buffer = np.arange(n + n // 2, dtype=np.float64)
    arrays[a] = buffer[:n].reshape(SHAPE)
    arrays[b] = buffer[n // 2:].reshape(SHAPE)
    assert_rejected(name, arrays, options, ValueError, a, b, "share memory", also=[buffer])


@rules
def test_disjoint_views_of_one_buffer_are_fine(name):
    arrays, options = valid_call(name)
    n = arrays["param"].size
    buffer = np.concatenate([x.ravel() for x in arrays.values()])
    views = {a: buffer[i * n:(i + 1) * n].reshape(SHAPE) for i, a in enumerate(arrays)}
    call(name, views, options)
    call(name, arrays, options)
    for a in arrays:
        np.testing.assert_array_equal(views[a], arrays[a])


# ------------------------------------------------------------ missing state
def _state_arguments():
    return [pytest.param(name, s, id=f"{name}-{s}")
            for name, rule in RULES.items() for s in rule.state]


@pytest.mark.parametrize("name, missing", _state_arguments())
def test_state_missing(name, missing):
    arrays, options = valid_call(name)
    del arrays[missing]
    optional = inspect.signature(step_for(RULES[name])).parameters[missing].default is None
    if optional:           # needed only under an option: the library says which
        assert_rejected(name, arrays, options, ValueError, "needs", missing)
    else:                  # always needed: Python's own missing-argument error
        assert_rejected(name, arrays, options, TypeError, missing)


@pytest.mark.parametrize("name", [n for n, r in RULES.items() if r.state != r.state_for()])
def test_state_for_an_unused_option_is_left_alone(name):
    """E.g. max_exp_avg_sq given with amsgrad=False: not read, not written, not checked."""
    rule = RULES[name]
    unused = set(rule.state) - set(rule.state_for())
    arrays, options = valid_call(name)
    options = {"step": 3} if rule.takes_step else {}
    given = {a: x for a, x in arrays.items()}
    for s in unused:
        given[s] = np.full(SHAPE, np.nan)
    before = snapshot([given[s] for s in unused])
    without = {a: x.copy() for a, x in arrays.items() if a not in unused}
    call(name, given, options)
    call(name, without, options)
    assert_unchanged([given[s] for s in unused], before)
    for a in without:
        np.testing.assert_array_equal(given[a], without[a])


# ------------------------------------------------------------ step and hyper-parameters
@pytest.mark.parametrize("name", [n for n, r in RULES.items() if r.takes_step])
@pytest.mark.parametrize("step, error", [
    (0, ValueError), (-1, ValueError), (1.5, TypeError), (2.0, TypeError), ("3", TypeError),
    (True, TypeError), (None, TypeError)], ids=repr)
def test_bad_step(name, step, error):
    arrays, options = valid_call(name)
    options["step"] = step
    assert_rejected(name, arrays, options, error, "step")


@pytest.mark.parametrize("name", [n for n, r in RULES.items() if r.takes_step])
def test_numpy_integer_step_is_fine(name):
    arrays, options = valid_call(name)
    call(name, arrays, {**options, "step": np.int64(3)})


def _float_hyper_parameters(nonnegative=False):
    return [pytest.param(name, h.name, id=f"{name}-{h.name}") for name, rule in RULES.items()
            for h in rule.hyper
            if isinstance(h.default, float) and not h.setup
            and (not nonnegative or h.bounds["low"] == 0.0)]


@pytest.mark.parametrize("name, hyper", _float_hyper_parameters(nonnegative=True))
def test_negative_hyper_parameter(name, hyper):
    """torch rejects negative lr, eps, weight_decay, momentum, alpha, lr_decay, rho,
    momentum_decay (not SGD's dampening, nor ASGD's lambd, alpha and t0: the
    registry declares those unbounded, as torch leaves them)."""
    arrays, options = valid_call(name)
    assert_rejected(name, arrays, {**options, hyper: -0.1}, ValueError, f"invalid {hyper}")


@pytest.mark.parametrize("name, hyper", _float_hyper_parameters())
def test_nan_hyper_parameter(name, hyper):
    arrays, options = valid_call(name)
    assert_rejected(name, arrays, {**options, hyper: float("nan")}, ValueError,
                    f"invalid {hyper}")


@rules
def test_non_numeric_learning_rate(name):
    arrays, options = valid_call(name)
    assert_rejected(name, arrays, {**options, "lr": "fast"}, TypeError, "lr", "real number")


@pytest.mark.parametrize("name", ["adam", "adamw"])
@pytest.mark.parametrize("betas, error, words", [
    ((-0.1, 0.999), ValueError, ["invalid betas[0]"]),
    ((1.0, 0.999), ValueError, ["invalid betas[0]"]),
    ((0.9, 1.0), ValueError, ["invalid betas[1]"]),
    ((0.9, -1e-3), ValueError, ["invalid betas[1]"]),
    ((0.9, float("nan")), ValueError, ["invalid betas[1]"]),
    ((0.9,), TypeError, ["betas must be a pair"]),
    (0.9, TypeError, ["betas must be a pair"]),
], ids=repr)
def test_betas_outside_0_1(name, betas, error, words):
    arrays, options = valid_call(name)
    assert_rejected(name, arrays, {**options, "betas": betas}, error, *words)


@pytest.mark.parametrize("rho", [-0.1, 1.1, float("inf")])
def test_rho_outside_0_1(rho):
    arrays, options = valid_call("adadelta")
    assert_rejected("adadelta", arrays, {**options, "rho": rho}, ValueError, "invalid rho")


@pytest.mark.parametrize("options", [
    {"momentum": 0.9, "dampening": 0.1, "nesterov": True},
    {"momentum": 0.0, "nesterov": True},
], ids=["with-dampening", "without-momentum"])
def test_nesterov_needs_momentum_and_no_dampening(options):
    arrays, _ = valid_call("sgd")
    assert_rejected("sgd", arrays, {**options, "step": 2}, ValueError, "Nesterov")


# ------------------------------------------------------------ zero size
@rules
@pytest.mark.parametrize("shape", [(0,), (3, 0)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_zero_size_is_a_no_op(name, shape, dtype):
    arrays, options = valid_call(name, dtype, shape)
    call(name, arrays, options)
    assert all(a.shape == shape for a in arrays.values())
