"""Compressed state dicts of fastadapt.torch (``compressed_state_dict=True``):
16-bit and 8-bit state saved as it is stored.

References: a run resumed from a compressed checkpoint must continue **bit for
bit** as the uninterrupted run (same kernels, same stored state); a compressed
dict loaded into another ``state_dtype`` must give exactly what torch's format
of the same moment gives there (its 8-bit values are the dequantized codes,
checked against the formats' references in test_blockwise8.py and
test_companded8.py); the checkpoint sizes must match the bytes each format
stores per element (the ratios below, within 2 %: the rest is the pickle's
framing and the step tensors, about 2 kB).
"""
import io

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ml_dtypes")
import torch.nn as nn  # noqa: E402

import fastadapt.torch as ft  # noqa: E402

from test_torch_dcp import group  # noqa: E402,F401  (a gloo group of one process)
from test_torch_lowp import _model as lowp_model, _train  # noqa: E402

#: storage modes: (param dtype, options)
MODES = {"fp32-bf16-state": (torch.float32, dict(state_dtype="bfloat16")),
         "fp32-int8": (torch.float32, dict(state_dtype="int8", min_8bit_size=0)),
         "fp32-int8c": (torch.float32, dict(state_dtype="int8c", min_8bit_size=0)),
         # the first weight (77 elements) is 8-bit, the smaller tensors float32
         "fp32-int8c-min": (torch.float32, dict(state_dtype="int8c", min_8bit_size=77)),
         "bf16-int8-master": (torch.bfloat16, dict(state_dtype="int8", min_8bit_size=0,
                                                   master_weights=True)),
         "fp16-state": (torch.float16, dict(state_dtype="float16")),
         "bf16-sr": (torch.bfloat16, dict(stochastic_rounding=True, seed=5))}
STATE_DTYPES = [None, "bfloat16", "int8", "int8c"]


def _model(dtype=torch.float32):
    return lowp_model(dtype)


def _through_file(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _assert_same(sd, sd2):
    """Two state dicts hold the same keys and bit-identical tensors."""
    assert sd["state"].keys() == sd2["state"].keys()
    for i, entry in sd["state"].items():
        assert entry.keys() == sd2["state"][i].keys(), i
        for key, value in entry.items():
            other = sd2["state"][i][key]
            if isinstance(value, torch.Tensor):
                assert value.dtype == other.dtype and value.shape == other.shape, (i, key)
                assert torch.equal(value.view(-1).view(torch.uint8),
                                   other.view(-1).view(torch.uint8)), (i, key)
            else:
                assert value == other, (i, key)


@pytest.mark.parametrize("rule", ["Adam", "SGD"])
@pytest.mark.parametrize("mode", list(MODES))
def test_a_compressed_checkpoint_resumes_bit_for_bit(mode, rule):
    dtype, options = MODES[mode]
    cfg = dict(lr=1e-2, momentum=0.9) if rule == "SGD" else dict(lr=1e-2)
    model = _model(dtype)
    opt = getattr(ft, rule)(model.parameters(), **cfg, **options, compressed_state_dict=True)
    _train(model, opt, 4)
    saved = _through_file({"model": model.state_dict(), "opt": opt.state_dict()})
    _train(model, opt, 4, start=4)

    eight_bit = options.get("state_dtype") in ("int8", "int8c")
    entry = saved["opt"]["state"][0]
    if eight_bit:                   # codes and scales only, the codes of the weight's shape
        assert "exp_avg" not in entry and "momentum_buffer" not in entry
        name = "momentum_buffer" if rule == "SGD" else "exp_avg"
        assert entry[f"{name}.codes"].dtype == torch.uint8
        assert entry[f"{name}.codes"].shape == model[0].weight.shape
    if "state_dtype" in options:
        assert entry["compressed_state"]["version"] == 1

    resumed = _model(dtype)
    opt2 = getattr(ft, rule)(resumed.parameters(), **cfg,
                             **{k: v for k, v in options.items() if k != "seed"})
    resumed.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])          # loads whatever opt2's own flag
    _train(resumed, opt2, 4, start=4)
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a.detach().view(-1).view(torch.uint8),
                           b.detach().view(-1).view(torch.uint8))
    opt2.compressed_state_dict = True
    _assert_same(opt.state_dict(), opt2.state_dict())
    opt.compressed_state_dict = opt2.compressed_state_dict = False
    _assert_same(opt.state_dict(), opt2.state_dict())


@pytest.mark.parametrize("source", ["bfloat16", "int8", "int8c"])
@pytest.mark.parametrize("target", STATE_DTYPES + ["float16-params"])
def test_a_compressed_dict_loads_into_another_state_dtype_as_torchs_format_does(source, target):
    """Loading the compressed dict gives bit for bit what loading torch's
    format (the default dict) of the same moment gives, into every storage."""
    model = _model()
    opt = ft.Adam(model.parameters(), lr=1e-2, state_dtype=source, min_8bit_size=0)
    _train(model, opt, 3)
    plain = _through_file(opt.state_dict())
    opt.compressed_state_dict = True
    compressed = _through_file(opt.state_dict())
    if source != "bfloat16":                    # the 8-bit values are not saved
        assert "exp_avg" not in compressed["state"][0]
    if target == "float16-params":
        dtype, options = torch.float16, dict(state_dtype="float16")
    else:
        dtype, options = torch.float32, dict(state_dtype=target, min_8bit_size=0)
    loaded = []
    for state_dict in (plain, compressed):
        fresh = _model(dtype)
        opt2 = ft.Adam(fresh.parameters(), lr=1e-2, **options)
        opt2.load_state_dict(state_dict)
        loaded.append((fresh, opt2))
    _assert_same(loaded[0][1].state_dict(), loaded[1][1].state_dict())
    if target is None:          # float32 state: the decoded values are the default dict's
        for i, entry in loaded[1][1].state_dict()["state"].items():
            for key in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(entry[key], plain["state"][i][key].float()), (i, key)
    for fresh, opt2 in loaded:                  # and they step alike
        _train(fresh, opt2, 2, start=3)
    for a, b in zip(loaded[0][0].parameters(), loaded[1][0].parameters()):
        assert torch.equal(a, b)


def test_torchs_format_and_the_compressed_one_load_into_each_other():
    model = _model()
    opt = ft.Adam(model.parameters(), lr=1e-2, state_dtype="int8", min_8bit_size=0,
                  compressed_state_dict=True)
    _train(model, opt, 3)
    compressed = opt.state_dict()
    opt.compressed_state_dict = False
    plain = opt.state_dict()
    # float32 state: the compressed dict is torch's format, with no extra key
    ref = ft.Adam(_model().parameters(), lr=1e-2, compressed_state_dict=True)
    ref.load_state_dict(plain)
    ref.compressed_state_dict = False
    full = ref.state_dict()
    ref.compressed_state_dict = True
    _assert_same(full, ref.state_dict())
    # a torch.optim dict loads into a compressing optimizer, which then saves compressed
    torch_model = _model()
    torch_opt = torch.optim.Adam(torch_model.parameters(), lr=1e-2)
    _train(torch_model, torch_opt, 2)
    ours = ft.Adam(_model().parameters(), lr=1e-2, state_dtype="int8", min_8bit_size=0,
                   compressed_state_dict=True)
    ours.load_state_dict(torch_opt.state_dict())
    assert set(ours.state_dict()["state"][0]) == {
        "step", "exp_avg.codes", "exp_avg.absmax", "exp_avg_sq.codes", "exp_avg_sq.absmax",
        "compressed_state"}
    # plain -> compressed optimizer -> plain again: the same dict
    again = ft.Adam(_model().parameters(), lr=1e-2, state_dtype="int8", min_8bit_size=0,
                    compressed_state_dict=True)
    again.load_state_dict(plain)
    _assert_same(again.state_dict(), compressed)
    again.compressed_state_dict = False
    _assert_same(again.state_dict(), plain)


def test_the_option_is_a_bool_kept_by_deepcopy():
    import copy
    with pytest.raises(TypeError, match="compressed_state_dict must be a bool"):
        ft.Adam(_model().parameters(), compressed_state_dict="yes")
    opt = ft.Adam(_model().parameters(), state_dtype="int8", compressed_state_dict=True)
    with pytest.raises(TypeError, match="compressed_state_dict must be a bool"):
        opt.compressed_state_dict = None
    assert opt.compressed_state_dict is True
    model = _model()
    opt = ft.Adam(model.parameters(), lr=1e-2, state_dtype="int8c", min_8bit_size=0,
                  compressed_state_dict=True)
    _train(model, opt, 2)
    model2, opt2 = copy.deepcopy((model, opt))
    assert opt2.compressed_state_dict is True
    _assert_same(opt.state_dict(), opt2.state_dict())


def _compressed_setup():
    model = _model()
    opt = ft.Adam(model.parameters(), lr=1e-2, state_dtype="int8", min_8bit_size=0,
                  compressed_state_dict=True)
    _train(model, opt, 2)
    return model, opt, opt.state_dict()


def _edited(state_dict, edit):
    out = {"state": {i: dict(e) for i, e in state_dict["state"].items()},
           "param_groups": state_dict["param_groups"]}
    meta = out["state"][0]["compressed_state"]
    meta = out["state"][0]["compressed_state"] = {
        "version": meta["version"], "arrays": {k: dict(v) for k, v in meta["arrays"].items()}}
    edit(out["state"][0], meta)
    return out


def _set(d, key, value):
    d[key] = value


BAD = {
    "newer version": (lambda e, m: _set(m, "version", 2), "format version 2, newer"),
    "version not an int": (lambda e, m: _set(m, "version", "1"), "format version '1'"),
    "no version": (lambda e, m: m.pop("version"), "must be a dict with a 'version'"),
    "unknown storage": (lambda e, m: _set(m["arrays"]["exp_avg"], "storage", "int4"),
                        "storage 'int4'"),
    "another block size": (lambda e, m: _set(m["arrays"]["exp_avg"], "block", 64),
                           "blocks of 64 elements"),
    "sign unknown": (lambda e, m: m["arrays"]["exp_avg"].pop("signed"),
                     "whether 'exp_avg' is signed"),
    "unknown state": (lambda e, m: _set(m["arrays"], "velocity", {"storage": "bfloat16"}),
                      "unknown state 'velocity'"),
    "codes missing": (lambda e, m: e.pop("exp_avg.codes"), "lacks exp_avg.codes"),
    "codes transposed": (lambda e, m: _set(e, "exp_avg.codes", e["exp_avg.codes"].t()),
                         r"exp_avg.codes has shape \(7, 11\), the parameter \(11, 7\)"),
    "codes of another size": (lambda e, m: _set(e, "exp_avg.codes", e["exp_avg.codes"][:5]),
                              "exp_avg.codes has 35 elements"),
    "scales of another size": (lambda e, m: _set(e, "exp_avg.absmax",
                                                 torch.zeros(3)), "exp_avg.absmax has 3"),
    "16-bit said, float32 given": (
        lambda e, m: (_set(m["arrays"], "exp_avg", {"storage": "bfloat16"}),
                      _set(e, "exp_avg", torch.zeros(11, 7))),
        "exp_avg must be a bfloat16 tensor"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_compressed_dict_raises_and_changes_nothing(case):
    edit, message = BAD[case]
    model, opt, good = _compressed_setup()
    before = _through_file(opt.state_dict())
    params = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(_edited(good, edit))
    _assert_same(opt.state_dict(), before)
    for p, q in zip(model.parameters(), params):
        assert torch.equal(p, q)


def test_a_compressed_bf16_tensor_of_another_shape_is_refused():
    model = _model()
    opt = ft.Adam(model.parameters(), lr=1e-2, state_dtype="bfloat16",
                  compressed_state_dict=True)
    _train(model, opt, 1)
    bad = opt.state_dict()
    bad["state"][0] = dict(bad["state"][0], exp_avg=bad["state"][0]["exp_avg"].t())
    with pytest.raises(ValueError, match=r"exp_avg has shape \(7, 11\)"):
        opt.load_state_dict(bad)


# ----------------------------------------------------------------- checkpoint size
#: bytes per element of Adam's two state arrays, by state_dtype, in each format:
#: torch's (default) and compressed; float32 state is torch's float32 format
BYTES_PER_ELEMENT = {None: (8, 8),
                     "bfloat16": (4, 4),
                     "int8": (2 * (4 + 1 + 4 / 256), 2 * (1 + 4 / 256)),
                     "int8c": (2 * (4 + 1 + 4 / 32), 2 * (1 + 4 / 32))}
SIZE_PARAMS = (1024, 1024)          # one weight: 1,048,576 parameters


def checkpoint_sizes():
    """``{state_dtype: (default bytes, compressed bytes)}`` of ``torch.save``
    of Adam's state dict over one 1024 x 1024 weight after one step."""
    out = {}
    for state_dtype in BYTES_PER_ELEMENT:
        torch.manual_seed(0)
        p = nn.Parameter(torch.randn(*SIZE_PARAMS))
        opt = ft.Adam([p], lr=1e-3, state_dtype=state_dtype)
        p.grad = torch.randn_like(p)
        opt.step()
        sizes = []
        for compressed in (False, True):
            opt.compressed_state_dict = compressed
            buffer = io.BytesIO()
            torch.save(opt.state_dict(), buffer)
            sizes.append(buffer.getbuffer().nbytes)
        out[state_dtype] = tuple(sizes)
    return out


def test_checkpoint_sizes_match_the_bytes_stored():
    n = SIZE_PARAMS[0] * SIZE_PARAMS[1]
    sizes = checkpoint_sizes()
    print("\n| state_dtype | default `state_dict()` | compressed | float32 / compressed |")
    print("|---|---|---|---|")
    for state_dtype, (default, compressed) in sizes.items():
        print(f"| {state_dtype or 'float32'} | {default:,} B | {compressed:,} B | "
              f"{sizes[None][0] / compressed:.2f}x |")
    for state_dtype, measured in sizes.items():
        for got, per_element in zip(measured, BYTES_PER_ELEMENT[state_dtype]):
            assert got == pytest.approx(per_element * n, rel=0.02), state_dtype
    plain = sizes[None][0]
    # against torch's float32 format: 2x, 3.94x, 3.56x smaller
    assert plain / sizes["bfloat16"][1] == pytest.approx(2, rel=0.02)
    assert plain / sizes["int8"][1] == pytest.approx(4 / (1 + 4 / 256), rel=0.02)
    assert plain / sizes["int8c"][1] == pytest.approx(4 / (1 + 4 / 32), rel=0.02)


if __name__ == "__main__":      # the table of docs/torch.md
    test_checkpoint_sizes_match_the_bytes_stored()


# ----------------------------------------------------------------- distributed
@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8c"])
def test_a_zero_consolidated_compressed_dict_resumes_bit_for_bit(group, state_dtype):
    """ZeroRedundancyOptimizer packs the consolidated dict compressed when
    asked; it loads into a one-process optimizer (and back into a sharded one)."""
    model = _model()
    opt = ft.ZeroRedundancyOptimizer(model.parameters(), optimizer_class=ft.Adam, lr=1e-2,
                                     state_dtype=state_dtype, min_8bit_size=0,
                                     compressed_state_dict=True)
    _train(model, opt, 3)
    opt.consolidate_state_dict(to=0)
    saved = _through_file({"model": model.state_dict(), "opt": opt.state_dict()})
    assert saved["opt"]["state"][0]["compressed_state"]["arrays"]["exp_avg"]["storage"] \
        == state_dtype
    if state_dtype == "int8c":
        assert "exp_avg" not in saved["opt"]["state"][0]
    _train(model, opt, 3, start=3)
    for kind in ("one process", "sharded"):
        resumed = _model()
        resumed.load_state_dict(saved["model"])
        if kind == "one process":
            opt2 = ft.Adam(resumed.parameters(), lr=1e-2, state_dtype=state_dtype,
                           min_8bit_size=0)
        else:
            opt2 = ft.ZeroRedundancyOptimizer(resumed.parameters(), optimizer_class=ft.Adam,
                                              lr=1e-2, state_dtype=state_dtype,
                                              min_8bit_size=0)
        opt2.load_state_dict(saved["opt"])
        _train(resumed, opt2, 3, start=3)
        for a, b in zip(model.parameters(), resumed.parameters()):
            assert torch.equal(a, b), kind


@pytest.mark.parametrize("full", [False, True], ids=["sharded-form", "full"])
def test_torch_distributed_checkpoint_takes_a_compressed_dict(group, tmp_path, full):
    """``get_optimizer_state_dict`` / ``dcp.save`` / ``dcp.load`` /
    ``set_optimizer_state_dict`` with compressed 8-bit state resume bit for bit
    (the default format is tested in test_torch_dcp.py)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions, get_optimizer_state_dict, set_optimizer_state_dict)
    options = StateDictOptions(full_state_dict=full)
    kwargs = dict(lr=1e-2, state_dtype="int8", min_8bit_size=0, compressed_state_dict=True)
    model = _model()
    opt = ft.AdamW(model.parameters(), **kwargs)
    _train(model, opt, 3)
    dcp.save({"model": model.state_dict(),
              "optim": get_optimizer_state_dict(model, opt, options=options)},
             checkpoint_id=tmp_path / "ck")
    resumed = _model()
    ropt = ft.AdamW(resumed.parameters(), **kwargs)
    target = {"model": resumed.state_dict(),
              "optim": get_optimizer_state_dict(resumed, ropt, options=options)}
    dcp.load(target, checkpoint_id=tmp_path / "ck")
    resumed.load_state_dict(target["model"])
    set_optimizer_state_dict(resumed, ropt, target["optim"], options=options)
    _train(model, opt, 3, start=3)
    _train(resumed, ropt, 3, start=3)
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    _assert_same(opt.state_dict(), ropt.state_dict())


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8", "int8c"])
def test_odd_sizes_round_trip_bit_for_bit(state_dtype):
    """Parameters of 0, 1, 7, 257 and 1031 elements (257 and 1031 cross a
    256-element block; every parameter starts a block of its own)."""
    def make():
        torch.manual_seed(3)
        return [nn.Parameter(torch.randn(*shape)) for shape in
                [(0,), (1,), (7,), (257,), (1031,), (0, 3)]]

    def steps(params, opt, seeds):
        for seed in seeds:
            g = torch.Generator().manual_seed(seed)
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()

    params = make()
    opt = ft.Adam(params, lr=1e-2, state_dtype=state_dtype, min_8bit_size=0,
                  compressed_state_dict=True)
    steps(params, opt, range(3))
    saved = _through_file(opt.state_dict())
    snapshot = [p.detach().clone() for p in params]
    assert set(saved["state"]) == set(range(6))
    for i, p in enumerate(params):
        if state_dtype != "bfloat16":
            assert saved["state"][i]["exp_avg.codes"].shape == p.shape
    steps(params, opt, range(3, 6))
    params2 = make()
    with torch.no_grad():
        for p, q in zip(params2, snapshot):
            p.copy_(q)
    opt2 = ft.Adam(params2, lr=1e-2, state_dtype=state_dtype, min_8bit_size=0)
    opt2.load_state_dict(saved)
    steps(params2, opt2, range(3, 6))
    for p, q in zip(params, params2):
        assert torch.equal(p, q)
    opt2.compressed_state_dict = True
    _assert_same(opt.state_dict(), opt2.state_dict())
