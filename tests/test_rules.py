"""The registry's declarations are consistent with the math they drive, and what is
derived from them (functional steps, classes, drivers) says what they declare."""
import itertools
import inspect

import numpy as np
import pytest

import fastadapt
from fastadapt.functional import _SIGNATURES, step_for
from fastadapt.kernels import cpu, loops
from fastadapt.kernels.layout import BFLOAT16, BLOCKWISE8, Layout

import optim_cases as cases

RULES = fastadapt.RULES
rules = pytest.mark.parametrize("name", list(RULES))


@rules
@pytest.mark.parametrize("which", ["defaults", "every-state"])
def test_host_scalars_are_exactly_the_maths(name, which):
    """A rule's scalars function names every scalar of its math (but grad_sign,
    which the dispatcher adds) and no other, under any options."""
    rule = RULES[name]
    options = {**rule.defaults, **(cases.EVERY_STATE[name] if which != "defaults" else {})}
    options = {h.name: h.check(options[h.name]) for h in rule.hyper if not h.setup}
    if rule.scalar_state:
        scalars, new = rule.scalars(options, 1.0, {s.name: s.start(options)
                                                    for s in rule.scalar_state})
        assert set(new) == {s.name for s in rule.scalar_state}
    else:
        scalars = rule.scalars(options, 1.0)
        if rule.step_scalars is not None:       # the two parts split the scalars
            assert not set(rule.fixed_scalars(options)) & set(rule.step_scalars(options, 1.0))
        assert rule.takes_step or rule.step_scalars is None
    assert set(scalars) | {"grad_sign"} == set(_SIGNATURES[rule.kernel].scalars)


@rules
def test_the_functional_signature_is_derived_from_the_declaration(name):
    rule = RULES[name]
    params = inspect.signature(step_for(rule)).parameters
    names = list(params)
    assert names[:2] == ["param", "grad"]
    assert names[2:2 + len(rule.state)] == list(rule.state)
    for spec in rule.state_specs:        # optional state defaults to None, required has none
        assert (params[spec.name].default is None) == (spec.when is not None)
    assert ("step" in params) == rule.takes_step
    for key, default in rule.defaults.items():
        assert params[key].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[key].default == default
    for s in rule.scalar_state:
        assert params[s.name].default is None
    assert params["grad_scale"].default is None
    assert rule.pseudocode.splitlines()[0] in step_for(rule).__doc__


@rules
def test_the_class_is_derived_from_the_declaration(name):
    rule = RULES[name]
    cls = getattr(fastadapt, rule.torch_name)
    assert cls.rule is rule and cls.__module__ == "fastadapt.optim"
    params = inspect.signature(cls).parameters
    storage = list(fastadapt.optim._STORAGE_OPTIONS)
    assert list(params)[1:] == [h.name for h in rule.hyper] + storage + ["max_grad_norm"]
    assert all(params[h.name].default == h.default for h in rule.hyper)
    assert rule.pseudocode.splitlines()[-1] in cls.__doc__


def _branches(source, gates):
    """The driver ``source``'s loops, one per setting of the ``gates`` flags:
    {(flag values in order of gates): the loop's source}."""
    import re
    head = re.compile(r"^    (?:if|elif|else)\b.*:$", re.M)
    starts = [m.start() for m in head.finditer(source)]
    if not gates:
        return {(): source}
    out = {}
    for begin, end in zip(starts, starts[1:] + [len(source)]):
        test = source[begin:source.index("\n", begin)]
        values = tuple(f"not {g}" not in test for g in gates)
        if test.strip() == "else:":
            values = tuple(v for v in itertools.product((True, False), repeat=len(gates))
                           if v not in out)[0]
        out[values] = source[begin:end]
    return out


@rules
def test_a_driver_loads_and_stores_gated_state_only_under_its_flag(name):
    """One loop per combination of the state-gating flags, each passing them to
    the math as literals; a gated array is loaded and stored exactly in the
    loops where its flag is True (and so never touched when it is off)."""
    rule = RULES[name]
    sig = cpu.SIGNATURES[rule.kernel]
    source = sig.source(rule.kernel)
    gated = {spec.name: spec.flag for spec in rule.state_specs if spec.flag is not None}
    flags = sorted(set(gated.values()))
    loops_ = source.split("for i in indices(param.size):")[1:]
    assert len(loops_) == 2 ** len(flags)
    seen = set()
    for body in loops_:
        call = body[body.index("elem("):].split(")")[0]
        args = [a.strip() for a in call[len("elem("):].split(",")]
        scalars = dict(zip(sig.scalars, args[len(sig.elements):]))
        values = tuple(scalars[f] for f in flags)
        assert all(v in ("True", "False") for v in values)
        seen.add(values)
        for spec in rule.state_specs:
            on = spec.flag is None or scalars[spec.flag] == "True"
            assert (f"e_{spec.name} = {spec.name}[i]" in body) == on
            assert (f"{spec.name}[i] = e_{spec.name}" in body) == on
            if not on:
                assert f"e_{spec.name} = e_param" in body
    assert len(seen) == 2 ** len(flags)


@rules
@pytest.mark.parametrize("state_code", [BFLOAT16, BLOCKWISE8])
def test_a_layout_driver_touches_gated_state_only_where_its_flag_is_on(name, state_code):
    """The same for the storage-layout drivers (bfloat16 params and grad,
    every state array bfloat16 or 8-bit, stochastic rounding): in each loop an
    array whose flag is off is never indexed."""
    import re
    rule = RULES[name]
    sig = cpu.SIGNATURES[rule.kernel]
    layout = Layout((BFLOAT16,) * 2 + (state_code,) * len(sig.state), stochastic=True)
    source = sig.source(rule.kernel, layout)
    gates = sorted({spec.flag for spec in rule.state_specs if spec.flag is not None})
    for values, loop in _branches(source, gates).items():
        on = dict(zip(gates, values))
        for spec in rule.state_specs:
            used = spec.flag is None or on[spec.flag]
            indexed = re.findall(rf"\b(?:block_|new_|page_)?{spec.name}\[[ij]\]", loop)
            assert bool(indexed) == used, (values, spec.name)
            assert (f"e_{spec.name} = e_param" in loop) == (not used)


def test_the_driver_names_carry_a_hash_of_their_sources():
    digest = loops.source_hash(cpu.__file__, cpu.SPECS)
    for kernel, driver in cpu.DRIVERS.items():
        assert driver.parallel.py_func.__qualname__ == f"cpu.{kernel}_{digest}"
        assert driver.serial.py_func.__qualname__ == f"cpu.{kernel}_{digest}_serial"
        assert driver.parallel.py_func.__code__.co_filename == loops.__file__


def test_a_math_signature_that_does_not_fit_its_state_is_refused():
    with pytest.raises(TypeError, match="must take param, grad, exp_avg"):
        loops.Signature("adam", (("exp_avg", None), ("max_exp_avg_sq", "amsgrad"),
                                 ("exp_avg_sq", None)))
    with pytest.raises(TypeError, match="annotated ': bool'"):
        loops.Signature("adagrad", (("state_sum", "eps"),))


@rules
def test_initial_values_are_the_declared_ones(name):
    rule = RULES[name]
    for s in rule.state:
        key = rule.state_init.get(s)
        want = 0.0 if key is None else float({**rule.defaults, **rule.setup_options}[key])
        assert rule.initial_value(s) == want
    state = cases.initial_state(name, {}, (3,), np.float32)
    assert all((a == rule.initial_value(s)).all() for s, a in state.items())


def test_a_rule_holds_only_what_rule_declares():
    """Every fact about a rule is a declared field (nothing attached later,
    nothing read with getattr and a default)."""
    declared = set(vars(fastadapt.Rule("x", "X", "adam", (), (), None, "", "")))
    for rule in RULES.values():
        assert set(vars(rule)) == declared, rule.name


@rules
def test_non_negative_state_is_declared_exactly(name):
    """The state declared ``non_negative`` (8-bit state stores it unsigned) stays
    >= 0 from random parameters and gradients; every other state array takes
    a negative value (so the signed map it gets is needed)."""
    rule, config = RULES[name], cases.EVERY_STATE[name]
    param, grads = cases.problem((64,), np.float64, seed=11, steps=8)
    state = cases.initial_state(name, config, param.shape, np.float64)
    options, carried, seen_negative = cases.step_options(config), {}, set()
    for t, grad in enumerate(grads, start=1):
        counter = {"step": t} if rule.takes_step else {}
        carried = step_for(rule)(param, grad, **state, **options, **counter, **carried) or {}
        seen_negative |= {s for s, a in state.items() if (a < 0).any()}
    assert not seen_negative & rule.non_negative_state
    assert seen_negative | rule.non_negative_state == set(rule.state)


def test_scalar_state_rounds_to_float32_as_numpy_does():
    """NAdam's and ASGD's scalar state is rounded to float32 as torch keeps it:
    to nearest, an infinity beyond the largest float32, signed zeros and NaN
    kept (the same value as ``float(np.float32(x))``, by another route)."""
    from fastadapt.rules import _float32
    rng = np.random.default_rng(0)
    big = float(np.finfo(np.float32).max)
    edges = [0.0, -0.0, 1e-46, 7e-46, 7.1e-46, -7.1e-46, 1.4e-45, 1.2e-38, big,
             3.4028235677973366e38, 3.402823669209385e38, 1e39, -1e39, 1e308,
             np.inf, -np.inf, 1 / 3, -2 / 3]
    values = edges + (rng.standard_normal(20_000) * 10.0 ** rng.integers(-50, 50, 20_000)).tolist()
    with np.errstate(over="ignore"):
        expected = [float(np.float32(x)) for x in values]
    got = [_float32(x) for x in values]
    assert np.array_equal(np.array(got).view(np.int64), np.array(expected).view(np.int64))
    assert np.isnan(_float32(float("nan")))
