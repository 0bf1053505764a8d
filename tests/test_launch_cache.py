"""The functional steps remember the checked launch of the arrays they were
last called with (``_dispatch.LaunchCache``), so that a training loop's calls
skip re-checking unchanged arrays. A remembered call must refuse everything a
first call refuses: each test makes one good call (remembered), changes one
thing, and expects the refusal a fresh call gets, with nothing written."""
import copy
import gc
import itertools
import threading
import weakref

import numpy as np
import pytest

import fastadapt
from fastadapt import _dispatch
from fastadapt.functional import step_for

from conftest import assert_unchanged, snapshot

N = 1000


def adam_arrays(n=N, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return {"param": rng.standard_normal(n).astype(dtype),
            "grad": rng.standard_normal(n).astype(dtype),
            "exp_avg": np.zeros(n, dtype), "exp_avg_sq": np.zeros(n, dtype)}


def remembered(arrays, **options):
    """Two good calls on ``arrays`` (the second one takes the remembered path)."""
    for t in (1, 2):
        fastadapt.adam_step(**arrays, step=t, **options)


def assert_refused(arrays, error, words, also=(), **options):
    given = list(arrays.values()) + list(also)
    before = snapshot(given)
    with pytest.raises(error) as raised:
        fastadapt.adam_step(**arrays, **{"step": 3, **options})
    assert words in str(raised.value), str(raised.value)
    assert_unchanged(given, before)


def test_a_remembered_call_is_taken():
    arrays = adam_arrays()
    remembered(arrays)
    update = fastadapt.adam_step.plan(**arrays, step=3)
    launches = _launches(fastadapt.adam_step)
    objs = (*update.arrays.values(), None)
    assert launches.find(objs, ((False,), False)) is not None


@pytest.mark.parametrize("name", ["param", "exp_avg", "exp_avg_sq"])
def test_a_written_array_made_read_only_is_refused(name):
    arrays = adam_arrays()
    remembered(arrays)
    arrays[name].flags.writeable = False
    assert_refused(arrays, ValueError, f"{name} is read-only")


def test_a_read_only_view_at_the_same_address_is_refused():
    arrays = adam_arrays()
    remembered(arrays)
    view = arrays["param"].view()
    view.flags.writeable = False
    assert_refused({**arrays, "param": view}, ValueError, "param is read-only",
                   also=[arrays["param"]])


@pytest.mark.parametrize("name", ["grad", "exp_avg_sq"])
def test_a_new_array_overlapping_another_is_refused(name):
    big = np.zeros(2 * N, np.float32)
    arrays = {**adam_arrays(), "param": big[:N]}
    remembered(arrays)
    # a new object over the param's memory (its address), and one over half of it
    for alias in (big[:N], big[N // 2:N // 2 + N]):
        assert_refused({**arrays, name: alias}, ValueError, "share memory", also=[big])


@pytest.mark.parametrize("option, value, error, words", [
    ("lr", -1.0, ValueError, "invalid lr"),
    ("lr", float("nan"), ValueError, "invalid lr"),
    ("lr", True, TypeError, "lr must be a real number"),
    ("betas", (0.9, 1.0), ValueError, "invalid betas[1]"),
    ("eps", -1e-8, ValueError, "invalid eps"),
    ("weight_decay", -0.5, ValueError, "invalid weight_decay"),
    ("amsgrad", 2, TypeError, "amsgrad must be a bool"),
    ("step", 0, ValueError, "invalid step"),
    ("step", 2.0, TypeError, "step must be an integer"),
    ("grad_scale", 0.0, ValueError, "invalid grad_scale"),
    ("grad_scale", float("inf"), ValueError, "invalid grad_scale"),
    ("stochastic_rounding", True, ValueError, "stochastic_rounding=True is for 16-bit"),
    ("stochastic_rounding", 1.0, TypeError, "stochastic_rounding must be a bool"),
    ("seed", 3, ValueError, "seed is for stochastic_rounding=True"),
    ("rounding_offset", 5, ValueError, "rounding_offset is for stochastic_rounding"),
])
def test_a_bad_value_is_refused_after_good_ones(option, value, error, words):
    arrays = adam_arrays()
    remembered(arrays, lr=1e-2)
    options = {"lr": 1e-2, option: value}
    if option == "stochastic_rounding" and value is True:
        options["seed"] = 1
    assert_refused(arrays, error, words, **options)


def test_a_list_of_betas_changed_in_place_is_checked_again():
    arrays = adam_arrays()
    betas = [0.9, 0.999]
    remembered(arrays, betas=betas)
    betas[1] = 1.5              # the same list object, now out of range
    assert_refused(arrays, ValueError, "invalid betas[1]", betas=betas)


def test_betas_in_a_structured_scalar_changed_through_its_array_are_checked_again():
    """A NumPy void scalar is a view into its array: not an immutable value."""
    arrays = adam_arrays()
    record = np.zeros(1, dtype=[("beta1", "f8"), ("beta2", "f8")])
    record[0] = (0.9, 0.999)
    betas = record[0]
    remembered(arrays, betas=betas)
    record[0] = (0.9, 1.5)
    assert_refused(arrays, ValueError, "invalid betas[1]", betas=betas)


def test_amsgrad_without_its_state_is_refused_after_adam():
    arrays = adam_arrays()
    remembered(arrays)
    assert_refused(arrays, ValueError, "needs max_exp_avg_sq", amsgrad=True)


def test_an_unused_state_array_of_the_wrong_shape_is_refused():
    arrays = adam_arrays()
    remembered(arrays, max_exp_avg_sq=np.zeros(N, np.float32))
    assert_refused({**arrays, "max_exp_avg_sq": np.zeros(N + 1, np.float32)}, ValueError,
                   "max_exp_avg_sq has shape")


def test_an_array_whose_shape_is_set_in_place_is_refused():
    arrays = adam_arrays()
    remembered(arrays)
    arrays["grad"].shape = (10, N // 10)
    assert_refused(arrays, ValueError, "grad has shape (10, 100)")


def test_an_array_whose_dtype_is_set_in_place_is_refused():
    arrays = adam_arrays()
    remembered(arrays)
    arrays["exp_avg"].dtype = np.int32
    assert_refused(arrays, TypeError, "exp_avg has unsupported dtype int32")


@pytest.mark.filterwarnings("ignore:Setting the strides:DeprecationWarning")
def test_an_array_whose_strides_are_set_in_place_is_refused():
    buffer = np.zeros(2 * N, np.float32)
    arrays = {**adam_arrays(), "exp_avg": buffer[:N]}
    remembered(arrays)
    arrays["exp_avg"].strides = (8,)       # every other float of the buffer
    assert_refused(arrays, ValueError, "exp_avg is not C-contiguous", also=[buffer])


def test_a_remembered_array_cannot_be_resized():
    arrays = adam_arrays()
    remembered(arrays)
    with pytest.raises(ValueError):
        arrays["exp_avg"].resize(2 * N)


def test_new_arrays_at_freed_ones_addresses_are_checked():
    """New arrays that get the ids of a remembered, freed set (CPython reuses
    the memory of freed objects), each of the shape, dtype and flags of the
    one whose id it got, but all over the same memory: refused ("share
    memory"), nothing written. Only the weak references tell them apart."""
    names = ("param", "grad", "exp_avg", "exp_avg_sq")
    reused = 0
    for _ in range(300):
        buffer = np.zeros(4 * N, np.float32)
        arrays = {name: buffer[k * N:(k + 1) * N] for k, name in enumerate(names)}
        remembered(arrays)
        role = {id(a): name for name, a in arrays.items()}
        other = np.zeros(N, np.float32)
        del arrays
        made = [other[:] for _ in names]            # four views of one memory
        if {id(a) for a in made} != set(role):
            continue
        reused += 1
        fresh = {role[id(a)]: a for a in made}
        before = snapshot([other])
        with pytest.raises(ValueError, match="share memory"):
            fastadapt.adam_step(**fresh, step=3)
        assert_unchanged([other], before)
        if reused >= 3:
            break
    if not reused:
        pytest.skip("no set of new arrays got a freed set's ids in 300 tries")


def test_the_cache_holds_no_array():
    arrays = adam_arrays()
    remembered(arrays)
    refs = [weakref.ref(a) for a in arrays.values()]
    del arrays
    gc.collect()
    assert all(r() is None for r in refs)


def test_remembered_calls_give_the_bits_of_checked_ones():
    """Ten steps on the same arrays (remembered after the first) against ten
    steps each on fresh copies (checked in full every time), for a plain and
    a bfloat16-state Adam, serial and parallel sizes, with a schedule's lr."""
    bf16 = fastadapt._storage.bfloat16()
    for n, state_dtype in itertools.product((97, 8195), (np.float32, bf16)):
        same = adam_arrays(n)
        same["exp_avg"] = same["exp_avg"].astype(state_dtype)
        same["exp_avg_sq"] = same["exp_avg_sq"].astype(state_dtype)
        fresh = {k: v.copy() for k, v in same.items()}
        for t in range(1, 11):
            lr = 1e-2 / t
            fastadapt.adam_step(**same, step=t, lr=lr, weight_decay=0.1)
            fresh = {k: v.copy() for k, v in fresh.items()}
            fastadapt.adam_step(**fresh, step=t, lr=lr, weight_decay=0.1)
        for k in same:
            assert same[k].tobytes() == fresh[k].tobytes(), (n, state_dtype, k)


def test_per_call_values_after_remembered_calls_take_effect():
    """A remembered call followed by calls that change what only the per-call
    path sees (grad_scale, maximize, a new lr object, stochastic rounding and
    its seed and offset, a master copy) equals the same calls on fresh copies,
    checked in full: the written-out path of the step must hand each to
    run() or apply it."""
    bf16 = fastadapt._storage.bfloat16()
    rng = np.random.default_rng(5)
    same = {"param": rng.standard_normal(97).astype(bf16),
            "grad": rng.standard_normal(97).astype(bf16),
            "exp_avg": np.zeros(97, np.float32), "exp_avg_sq": np.zeros(97, np.float32)}
    master = same["param"].astype(np.float32)
    fresh, fresh_master = {k: v.copy() for k, v in same.items()}, master.copy()
    calls = [{}, {}, {"stochastic_rounding": True, "seed": 7}, {},
             {"stochastic_rounding": True, "seed": 7, "rounding_offset": 5}, {},
             {"grad_scale": 4.0}, {}, {"master": True}, {"master": True, "grad_scale": 0.5},
             {}, {"maximize": True}, {"lr": 3e-3}, {}]
    for t, extra in enumerate(calls, 1):
        extra = dict(extra)
        use_master = extra.pop("master", False)
        fastadapt.adam_step(**same, step=t, **extra,
                            **({"master_param": master} if use_master else {}))
        fresh = {k: v.copy() for k, v in fresh.items()}
        fresh_master = fresh_master.copy()
        fastadapt.adam_step(**fresh, step=t, **extra,
                            **({"master_param": fresh_master} if use_master else {}))
        for k in same:
            assert same[k].tobytes() == fresh[k].tobytes(), (t, extra, k)
        assert master.tobytes() == fresh_master.tobytes(), t


def test_each_rule_remembers_and_matches_its_checked_call():
    """Every rule: three steps on the same arrays equal three on fresh copies."""
    import optim_cases as cases
    for name, rule in fastadapt.RULES.items():
        rng = np.random.default_rng(1)
        options = dict(cases.EVERY_STATE[name])
        arrays = {a: rng.random(33).astype(np.float64) for a in ("param", "grad") + rule.state}
        for s in rule.state_specs:      # declared initial values
            if s.init is not None:
                arrays[s.name][:] = 0.1
        fresh = {k: v.copy() for k, v in arrays.items()}
        step = step_for(rule)
        carried, carried_fresh = {}, {}
        for t in (1, 2, 3):
            kw = {"step": t} if rule.takes_step else {}
            carried = step(**arrays, **kw, **options, **carried) or {}
            fresh = {k: v.copy() for k, v in fresh.items()}
            carried_fresh = step(**fresh, **kw, **options, **carried_fresh) or {}
        for k in arrays:
            assert arrays[k].tobytes() == fresh[k].tobytes(), (name, k)


CONTAINERS = [fastadapt.Companded8, fastadapt.Blockwise8]


def eight_bit_arrays(container, n=N):
    arrays = adam_arrays(n)
    arrays["exp_avg"], arrays["exp_avg_sq"] = container(n), container(n, signed=False)
    return arrays


def _container_parts(arrays):
    """The arrays a snapshot must cover: plain arrays and each container's."""
    out = []
    for a in arrays.values():
        out += [a] if isinstance(a, np.ndarray) else a.kernel_arrays()
    return out


@pytest.mark.parametrize("container", CONTAINERS)
def test_a_call_on_8_bit_containers_is_remembered(container):
    arrays = eight_bit_arrays(container)
    remembered(arrays)
    objs = (*arrays.values(), None, None)
    assert _launches(fastadapt.adam_step).find(objs, ((False,), False)) is not None
    # the container replaced by another one (new object) is not the remembered call
    other = {**arrays, "exp_avg": container(N)}
    assert _launches(fastadapt.adam_step).find((*other.values(), None, None),
                                              ((False,), False)) is None


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("change, error, words", [
    ("codes_short", ValueError, "exp_avg is a"),
    ("codes_read_only", TypeError, "exp_avg.codes must be"),
    ("per_block_read_only", TypeError, "must be a writeable contiguous 1-D float32"),
    ("codes_shape_in_place", TypeError, "exp_avg.codes must be"),
    ("codes_over_param", ValueError, "param and exp_avg.codes share memory"),
])
def test_a_remembered_container_changed_is_checked_again(container, change, error, words):
    """Each change to a remembered container's arrays gets a fresh call's refusal."""
    arrays = eight_bit_arrays(container)
    remembered(arrays)
    m = arrays["exp_avg"]
    per_block = "scale" if container is fastadapt.Companded8 else "absmax"
    also = _container_parts(arrays)
    if change == "codes_short":
        m.codes = np.zeros(N - 1, np.uint8)
    elif change == "codes_read_only":
        m.codes.flags.writeable = False
    elif change == "per_block_read_only":
        getattr(m, per_block).flags.writeable = False
    elif change == "codes_shape_in_place":
        m.codes.shape = (N // 8, 8)
    else:       # sound codes in themselves, over the param's bytes
        m.codes = arrays["param"].view(np.uint8)[:N]
    before = snapshot(also)
    with pytest.raises(error) as raised:
        fastadapt.adam_step(**arrays, step=3)
    assert words in str(raised.value), str(raised.value)
    assert_unchanged(also, before)


@pytest.mark.parametrize("container", CONTAINERS)
def test_a_container_whose_sign_is_flipped_is_checked_again(container):
    """``signed`` picks the code: flipping it must plan again (the unsigned
    code of a negative first moment is refused, not misread)."""
    arrays = eight_bit_arrays(container)
    remembered(arrays)
    objs = (*arrays.values(), None, None)
    arrays["exp_avg"].signed = False
    assert _launches(fastadapt.adam_step).find(objs, ((False,), False)) is None


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("n", [97, 8195])
def test_remembered_8_bit_calls_give_the_bits_of_checked_ones(container, n):
    """Ten steps on the same containers (remembered) against ten on fresh
    copies of them (checked in full every call)."""
    same = eight_bit_arrays(container, n)

    def copied(arrays):
        out = {}
        for k, a in arrays.items():
            if isinstance(a, np.ndarray):
                out[k] = a.copy()
            else:
                c = container(n, signed=a.signed)
                for x, y in zip(c.kernel_arrays(), a.kernel_arrays()):
                    if x.flags.writeable:       # (not the map and its tables)
                        x[:] = y
                out[k] = c
        return out
    fresh = copied(same)
    for t in range(1, 11):
        fastadapt.adam_step(**same, step=t, lr=1e-2 / t)
        fresh = copied(fresh)
        fastadapt.adam_step(**fresh, step=t, lr=1e-2 / t)
    for a, b in zip(_container_parts(same), _container_parts(fresh)):
        assert a.tobytes() == b.tobytes()


def test_threads_sharing_a_small_cache():
    """Eight threads, each with its own arrays, through a cache of two entries
    (every call evicts another thread's): each ends as a run on its own."""
    launches = _launches(fastadapt.adam_step)
    size, launches.size = launches.size, 2
    try:
        problems = [adam_arrays(seed=s) for s in range(8)]
        expected = [{k: v.copy() for k, v in p.items()} for p in problems]
        for p in expected:
            for t in range(1, 41):
                fastadapt.adam_step(**p, step=t)
        barrier = threading.Barrier(8)

        def train(p):
            barrier.wait()
            for t in range(1, 41):
                fastadapt.adam_step(**p, step=t)
        threads = [threading.Thread(target=train, args=(p,)) for p in problems]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert len(launches.entries) <= 2
        for p, e in zip(problems, expected):
            for k in p:
                assert p[k].tobytes() == e[k].tobytes(), k
    finally:
        launches.size = size


def test_the_cache_is_bounded():
    launches = _launches(fastadapt.adam_step)
    for seed in range(launches.size + 10):
        remembered(adam_arrays(n=7, seed=seed))
    assert len(launches.entries) <= launches.size


def _launches(step):
    """The :class:`LaunchCache` of a functional step (held by its runner)."""
    run = step.__globals__["_run"]
    cells = dict(zip(run.__code__.co_freevars, run.__closure__))
    keep = cells["keep"].cell_contents
    assert isinstance(keep.__self__, _dispatch.LaunchCache)
    return keep.__self__


@pytest.mark.parametrize("state_dtype", [None, "bfloat16", "int8", "int8c"])
def test_the_torch_face_takes_the_remembered_path(state_dtype, monkeypatch):
    """fastadapt.torch hands its steps the same views while its buffers stay
    the same, so steps after the first check nothing in full; once gradient
    release has dropped its gradient buffer and given it a new one, it steps
    bit for bit as a new optimizer loaded with its state."""
    torch = pytest.importorskip("torch")
    import fastadapt.torch as ft

    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Linear(5, 3))
        return model, ft.Adam(model.parameters(), lr=1e-2, state_dtype=state_dtype,
                              min_8bit_size=0)

    def train(model, opt, steps):
        for _ in range(steps):
            k = len(opt.state) and int(opt.state[model[0].weight]["step"])
            opt.zero_grad()
            model(torch.linspace(-1, 1 + k, 14).reshape(2, 7)).square().sum().backward()
            opt.step()

    model, opt = make()
    train(model, opt, 3)
    full_checks = []
    check = _dispatch._host_kernel
    monkeypatch.setattr(_dispatch, "_host_kernel",
                        lambda update: full_checks.append(update) or check(update))
    train(model, opt, 3)
    assert full_checks == []
    monkeypatch.undo()

    release = ft.enable_gradient_release(model, opt)
    train(model, opt, 2)
    release.remove()
    other_model = copy.deepcopy(model)
    other = ft.Adam(other_model.parameters(), lr=1e-2, state_dtype=state_dtype,
                    min_8bit_size=0)
    other.load_state_dict(opt.state_dict())
    train(model, opt, 3)
    train(other_model, other, 3)
    for a, b in zip(model.parameters(), other_model.parameters()):
        assert torch.equal(a, b)
