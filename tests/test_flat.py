"""FlatBuffer: layout, alignment, copies, and one kernel call over many arrays."""
import numpy as np
import pytest

import fastadapt
from fastadapt import FlatBuffer
from fastadapt.flat import ALIGN_BYTES
from fastadapt.functional import step_for
from fastadapt.kernels.cpu import SERIAL_BELOW

import optim_cases as cases

SHAPES = [(3, 4), (5,), (), (0,), (2, 0, 3), (17,), (SERIAL_BELOW + 1,), (6, 7, 8)]
dtypes = pytest.mark.parametrize("dtype", [np.float32, np.float64],
                                 ids=lambda d: np.dtype(d).name)


@dtypes
def test_views_have_the_shapes_and_live_in_data(dtype):
    buffer = FlatBuffer(SHAPES, dtype)
    assert buffer.data.ndim == 1 and buffer.data.dtype == dtype
    assert buffer.data.flags.c_contiguous and not buffer.data.any()
    assert len(buffer) == len(SHAPES) and buffer.numel == sum(int(np.prod(s)) for s in SHAPES)
    for i, (view, shape, offset) in enumerate(zip(buffer, SHAPES, buffer.offsets)):
        assert view.shape == shape and view.dtype == dtype and buffer[i] is view
        assert view.flags.c_contiguous
        if view.size:
            assert np.shares_memory(view, buffer.data)
            view[...] = i + 1                      # writing a view writes into .data, no copy
            assert (buffer.data[offset:offset + view.size] == i + 1).all()
    assert buffer.data.sum() == sum((i + 1) * int(np.prod(s)) for i, s in enumerate(SHAPES))
    assert "FlatBuffer(" in repr(buffer)


@dtypes
def test_segments_start_on_64_bytes(dtype):
    for trial in range(20):                        # several allocations, several addresses
        buffer = FlatBuffer(SHAPES[trial % len(SHAPES):] + [(trial,)], dtype)
        for view, offset in zip(buffer, buffer.offsets):
            assert offset * buffer.dtype.itemsize % ALIGN_BYTES == 0
            if view.size:
                assert view.ctypes.data % ALIGN_BYTES == 0


@dtypes
def test_segments_do_not_overlap_and_padding_is_zero(dtype):
    buffer = FlatBuffer(SHAPES, dtype)
    for view in buffer:
        view[...] = 1
    ends = [o + v.size for o, v in zip(buffer.offsets, buffer)]
    assert all(end <= start for end, start in zip(ends, buffer.offsets[1:]))
    assert int(buffer.data.sum()) == buffer.numel  # only the segments were written


def test_zero_size_segments():
    buffer = FlatBuffer([(0,), (3,), (0, 4), ()], np.float32)
    assert [v.shape for v in buffer] == [(0,), (3,), (0, 4), ()]
    assert buffer.offsets[0] == buffer.offsets[1] == 0
    assert buffer.numel == 4
    empty = FlatBuffer([], np.float64)
    assert len(empty) == 0 and empty.data.size == 0 and empty.numel == 0


@dtypes
def test_from_arrays_copies_values(dtype):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    before = [a.copy() for a in arrays]
    buffer = FlatBuffer.from_arrays(arrays)
    assert buffer.dtype == dtype and buffer.shapes == SHAPES
    for view, a in zip(buffer, arrays):
        np.testing.assert_array_equal(view, a)
        if a.size:
            assert not np.shares_memory(view, a)
    buffer.data[...] = 7                           # the originals are untouched
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)


def test_from_arrays_dtypes():
    a64, a32 = np.arange(3.0), np.arange(3, dtype=np.float32)
    with pytest.raises(TypeError, match="different dtypes"):
        FlatBuffer.from_arrays([a64, a32])
    buffer = FlatBuffer.from_arrays([a64, a32], dtype=np.float32)
    assert buffer.dtype == np.float32
    np.testing.assert_array_equal(buffer[0], a32)
    with pytest.raises(ValueError, match="at least one array"):
        FlatBuffer.from_arrays([])


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16, np.complex64, ">f8"],
                         ids=str)
def test_unsupported_dtype(dtype):
    with pytest.raises(TypeError, match="unsupported dtype"):
        FlatBuffer([(3,)], dtype)


def test_sixteen_bit_buffers_share_the_params_layout():
    """A float16 (or bfloat16) buffer, and the float32 state buffers made from it
    with ``zeros_like(dtype)``, have the same element offsets."""
    params = FlatBuffer([(3,), (5, 7), (1,)], np.float16)
    state = params.zeros_like(np.float32)
    assert state.dtype == np.float32 and params.dtype == np.float16
    assert state.offsets == params.offsets and len(state.data) == len(params.data)
    assert all(o % 32 == 0 for o in params.offsets)     # 64-byte lines of float16


def test_negative_shape():
    with pytest.raises(ValueError, match="invalid shape"):
        FlatBuffer([(3,), (2, -1)], np.float32)


@pytest.mark.parametrize("arrays", [
    [np.zeros(1000)],                    # once: "maximum supported dimension ... 64"
    [np.full(4, 2.0)],                   # once: silently a buffer of shape (2, 2, 2, 2)
    [np.ones((2, 3), np.float32), np.ones(5, np.float32)],
    np.zeros((3, 4)),                    # one array instead of a list
    [np.array([2, 3])],                  # a shape written as an integer array
], ids=["zeros1000", "full4", "two", "one-array", "int-array"])
def test_arrays_instead_of_shapes_are_refused_with_the_way_out(arrays):
    with pytest.raises(TypeError, match=r"takes the segments' shapes.*FlatBuffer\.from_arrays"):
        FlatBuffer(arrays, np.float32)


def test_shapes_may_be_ints_or_tuples_of_integers():
    buffer = FlatBuffer([5, (2, 3), np.int64(4), (np.int64(2),), []], np.float32)
    assert buffer.shapes == [(5,), (2, 3), (4,), (2,), ()]
    for bad in ([2.0], [(2, 1.5)], ["ab"], [None]):
        with pytest.raises(TypeError, match="not a shape"):
            FlatBuffer(bad, np.float32)


@dtypes
def test_zeros_like(dtype):
    buffer = FlatBuffer.from_arrays([np.ones(s, dtype) for s in SHAPES])
    zeros = buffer.zeros_like()
    assert zeros.shapes == buffer.shapes and zeros.offsets == buffer.offsets
    assert zeros.dtype == buffer.dtype and zeros.data.size == buffer.data.size
    assert not zeros.data.any() and not np.shares_memory(zeros.data, buffer.data)
    assert all(v.ctypes.data % ALIGN_BYTES == 0 for v in zeros if v.size)


def test_copy_from_checks_before_copying():
    buffer = FlatBuffer([(2, 3), (4,)], np.float64)
    buffer.copy_from([np.ones((2, 3)), np.full(4, 2.0)])
    assert buffer.data.sum() == 6 + 8
    before = buffer.data.copy()
    with pytest.raises(ValueError, match="expected 2 arrays, got 1"):
        buffer.copy_from([np.zeros((2, 3))])
    with pytest.raises(ValueError, match=r"array 1 has shape \(5,\)"):
        buffer.copy_from([np.zeros((2, 3)), np.zeros(5)])   # the first would fit: not copied
    with pytest.raises(ValueError, match=r"array 0 has shape \(3, 2\)"):
        buffer.copy_from([np.zeros((3, 2)), np.zeros(4)])
    np.testing.assert_array_equal(buffer.data, before)


@pytest.mark.parametrize("name", list(fastadapt.RULES))
@dtypes
def test_one_call_on_data_equals_one_call_per_array(name, dtype):
    """Bit-exact: the update is elementwise, and the parameter's zero padding stays zero."""
    rule = fastadapt.RULES[name]
    options = cases.EVERY_STATE[name]
    rng = np.random.default_rng(1)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    flat = {a: FlatBuffer(SHAPES, dtype) for a in ("param", "grad") + rule.state}
    flat["param"].copy_from(params)
    for s in rule.state:
        flat[s].data[:] = rule.initial_value(s, **options)   # Rprop's step_size: lr
    separate = [{"param": p.copy(), **cases.initial_state(name, options, p.shape, dtype)}
                for p in params]
    for t in range(1, 4):
        grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        flat["grad"].copy_from(grads)
        counter = {"step": t} if rule.takes_step else {}
        step_for(rule)(**{a: b.data for a, b in flat.items()}, **options, **counter)
        for arrays, g in zip(separate, grads):
            step_for(rule)(grad=g, **arrays, **options, **counter)
    for i, arrays in enumerate(separate):
        for a, x in arrays.items():
            np.testing.assert_array_equal(flat[a][i], x, err_msg=f"{a}[{i}]")
    padding = np.ones(flat["param"].data.size, bool)
    for view, offset in zip(flat["param"], flat["param"].offsets):
        padding[offset:offset + view.size] = False
    for a, b in flat.items():
        # the parameter's padding stays zero; a state's is what a zero element's
        # becomes (Adamax's exp_inf grows to eps there), never NaN or inf
        if a == "param" or a == "grad":
            assert not b.data[padding].any(), f"{a} padding"
        assert np.isfinite(b.data[padding]).all(), f"{a} padding"


def test_large_host_buffers_start_on_a_huge_page_boundary():
    """A flat buffer of HUGE_PAGE_FROM bytes or more starts on a 2 MiB
    boundary (where it streams fastest: see flat._zeros), a smaller one on a
    64-byte line; both hold zeros."""
    from fastadapt import flat
    big = flat.host_zeros(flat.HUGE_PAGE_FROM // 4, np.float32)
    assert big.ctypes.data % (2 << 20) == 0 and not big.any()
    small = flat.host_zeros(1000, np.float64)
    assert small.ctypes.data % flat.ALIGN_BYTES == 0 and not small.any()
    opt = fastadapt.Adam([np.ones(flat.HUGE_PAGE_FROM // 4, np.float32)])
    assert opt.flat_params[0].ctypes.data % (2 << 20) == 0


def test_torch_cpu_buckets_use_the_same_placement():
    torch = pytest.importorskip("torch")
    import fastadapt.torch as ft
    from fastadapt import flat
    for dtype in (torch.float32, torch.bfloat16):
        w = torch.nn.Parameter(torch.ones(flat.HUGE_PAGE_FROM // 2, dtype=dtype))
        opt = ft.Adam([w], lr=0.1, state_dtype=dtype)
        (w.float() * 2).sum().backward()
        opt.step()
        bucket = opt._buckets[0][0]
        for t in (w, bucket.grad_flat, opt.state[w]["exp_avg"], opt.state[w]["exp_avg_sq"]):
            assert t.data_ptr() % (2 << 20) == 0
        assert torch.all(w < 1) and w.dtype == dtype
