"""Checkpoints: state dicts, atomic .npz files, rejection of misfits, exact resume."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import fastadapt
from fastadapt import checkpoint, schedules
from fastadapt.optim import Optimizer

import optim_cases

TESTS = os.path.dirname(os.path.abspath(__file__))
SHAPES = [(7,), (3, 5), (4, 4, 2), (1,), (0,)]
TOTAL, SAVED_AT = 30, 12

# One case per algorithm, every state array in use, two groups, schedules.
CASES = {
    "adam": lambda: (fastadapt.Adam, dict(
        lr=schedules.LinearWarmup(schedules.CosineAnnealing(0.05, T_max=20), 5),
        amsgrad=True, weight_decay=0.01)),
    "adamw": lambda: (fastadapt.AdamW, dict(
        lr=schedules.ReduceOnPlateau(0.05, patience=1, factor=0.5), betas=(0.8, 0.99))),
    "sgd": lambda: (fastadapt.SGD, dict(lr=0.05, momentum=0.9, nesterov=True,
                                        weight_decay=0.1)),
    "rmsprop": lambda: (fastadapt.RMSprop, dict(
        lr=schedules.ExponentialDecay(0.01, 0.95), centered=True, momentum=0.5)),
    "adagrad": lambda: (fastadapt.Adagrad, dict(lr=0.1, lr_decay=0.01,
                                                initial_accumulator_value=0.1)),
    "adadelta": lambda: (fastadapt.Adadelta, dict(rho=0.8, weight_decay=0.01)),
    "nadam": lambda: (fastadapt.NAdam, dict(                 # scalar state (mu_product)
        lr=schedules.ExponentialDecay(0.01, 0.95), momentum_decay=0.05)),
}
for _name, _rule in fastadapt.RULES.items():   # every other rule: every state it has
    CASES.setdefault(_name, lambda _rule=_rule: (getattr(fastadapt, _rule.torch_name),
                                                 dict(optim_cases.EVERY_STATE[_rule.name])))


def make(name, dtype=np.float32, shapes=SHAPES):
    cls, kwargs = CASES[name]()
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    return cls([{"params": params[:2]}, {"params": params[2:], "lr": 0.02}], **kwargs)


def train(opt, start, stop):
    """Steps ``start+1 .. stop``: a gradient of 0.5*|p|^2 plus seeded noise per step;
    a ReduceOnPlateau schedule sees the loss every 3 steps."""
    for t in range(start + 1, stop + 1):
        rng = np.random.default_rng(t)
        grads = [p * 0.5 + rng.standard_normal(p.shape).astype(p.dtype) for p in opt.params]
        opt.step(grads)
        lr = opt.param_groups[0]["lr"]
        if isinstance(lr, schedules.ReduceOnPlateau) and t % 3 == 0:
            lr.step(float(sum(np.sum(p.astype(np.float64) ** 2) for p in opt.params)))


def resume_in_this_process(directory):
    """The second half of each run, from the checkpoints in ``directory``."""
    for i, name in enumerate(CASES):
        path = os.path.join(directory, f"{name}.npz")
        if i % 2:
            opt = Optimizer.from_checkpoint(path)
        else:
            opt = make(name)
            opt.load(path)
        train(opt, SAVED_AT, TOTAL)
        opt.save(os.path.join(directory, f"{name}-final.npz"))


def assert_identical(a, b):
    """Two state dicts equal bit for bit (arrays by bytes, the rest exactly)."""
    assert json.dumps(a["param_groups"]) == json.dumps(b["param_groups"])
    assert a["algorithm"] == b["algorithm"]
    for x, y in zip(a["params"], b["params"]):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    for sx, sy in zip(a["state"], b["state"]):
        assert sx.keys() == sy.keys()
        for k in sx:
            assert sx[k].dtype == sy[k].dtype and sx[k].tobytes() == sy[k].tobytes(), k


def test_resume_in_a_new_process_is_bit_identical(tmp_path):
    straight = {}
    for name in CASES:
        opt = make(name)
        train(opt, 0, TOTAL)
        straight[name] = opt.state_dict()
        half = make(name)
        train(half, 0, SAVED_AT)
        half.save(tmp_path / f"{name}.npz")
    code = (f"import sys; sys.path.insert(0, {TESTS!r}); "
            f"import test_checkpoint; test_checkpoint.resume_in_this_process({str(tmp_path)!r})")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    for name in CASES:
        resumed = checkpoint.load(tmp_path / f"{name}-final.npz")
        assert resumed["param_groups"][0]["step"] == TOTAL
        assert_identical(resumed, straight[name])


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_dict_round_trip(name, dtype):
    opt = make(name, dtype)
    train(opt, 0, SAVED_AT)
    sd = opt.state_dict()
    json.dumps({k: v for k, v in sd.items() if k not in ("params", "state")})  # JSON-able
    assert all(isinstance(a, np.ndarray) and a.dtype == dtype
               for a in sd["params"] + [x for s in sd["state"] for x in s.values()])
    other = make(name, dtype)
    other.load_state_dict(sd)
    assert_identical(other.state_dict(), sd)
    train(opt, SAVED_AT, TOTAL)
    train(other, SAVED_AT, TOTAL)
    assert_identical(other.state_dict(), opt.state_dict())


def test_state_dict_is_a_copy():
    opt = make("sgd")
    sd = opt.state_dict()
    before = [p.copy() for p in sd["params"]]
    train(opt, 0, 2)
    assert all(np.array_equal(a, b) for a, b in zip(sd["params"], before))


def test_loading_keeps_a_live_schedule_object():
    opt = make("adamw")
    train(opt, 0, SAVED_AT)
    sd = opt.state_dict()
    fresh = make("adamw")
    schedule = fresh.param_groups[0]["lr"]
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["lr"] is schedule          # same config: state loaded in
    assert schedule.state_dict() == opt.param_groups[0]["lr"].state_dict()
    other = make("adamw")
    other.param_groups[0]["lr"] = schedules.Constant(0.5)   # another config: rebuilt
    other.load_state_dict(sd)
    rebuilt = other.param_groups[0]["lr"]
    assert isinstance(rebuilt, schedules.ReduceOnPlateau)
    assert rebuilt.to_config() == schedule.to_config()
    assert rebuilt.state_dict() == schedule.state_dict()


def test_save_load_file(tmp_path):
    opt = make("adam", np.float64)
    train(opt, 0, 5)
    path = tmp_path / "ckpt.npz"
    opt.save(path)
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    with np.load(path, allow_pickle=False) as npz:      # no pickled objects inside
        assert "__meta__" in npz.files
    assert_identical(checkpoint.load(path), opt.state_dict())
    restored = fastadapt.Adam.from_checkpoint(path)
    assert isinstance(restored, fastadapt.Adam)
    assert_identical(restored.state_dict(), opt.state_dict())
    with pytest.raises(ValueError, match="algorithm 'adam'"):
        fastadapt.SGD.from_checkpoint(path)
    with pytest.raises(ValueError, match="algorithm 'adam', this optimizer is 'sgd'"):
        make("sgd", np.float64).load(path)


def test_crash_mid_save_leaves_the_previous_file(tmp_path, monkeypatch):
    opt = make("rmsprop")
    path = tmp_path / "ckpt.npz"
    opt.save(path)
    original = path.read_bytes()
    train(opt, 0, 3)

    def crashing_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(np, "savez", crashing_savez)
    with pytest.raises(KeyboardInterrupt):
        opt.save(path)
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["ckpt.npz"]         # the temporary file is gone
    monkeypatch.undo()
    restored = make("rmsprop")
    restored.load(path)
    assert restored.state[0]["step"] == 0


def test_unserialisable_lr_raises_before_writing(tmp_path):
    opt = fastadapt.SGD([np.zeros(3)], lr=lambda t: 0.1)
    with pytest.raises(ValueError, match="to_config"):
        opt.save(tmp_path / "x.npz")
    assert os.listdir(tmp_path) == []


def _misfits(tmp_path):
    """(description, state dict or path) pairs that must not load into make('adam')."""
    good = make("adam")
    train(good, 0, 3)
    sd = good.state_dict()

    def edited(edit):
        d = good.state_dict()
        edit(d)
        return d

    path = tmp_path / "good.npz"
    good.save(path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[:len(data) // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(os.urandom(2000))
    flipped = tmp_path / "flipped.npz"
    flipped.write_bytes(data.replace(b'"algorithm"', b'"algorithX"'))
    missing_array = tmp_path / "missing.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(missing_array, "w") as dst:
        for item in src.infolist():
            if item.filename != "state.1.exp_avg.npy":
                dst.writestr(item, src.read(item.filename))

    return [
        ("other algorithm", make("adamw").state_dict(), "algorithm"),
        ("other shapes", make("adam", shapes=[(7,), (3, 5), (4, 4, 2), (2,), (0,)]).state_dict(),
         "shapes"),
        ("other dtype", make("adam", np.float64).state_dict(), "dtype"),
        ("missing key", edited(lambda d: d.pop("state")), "missing key 'state'"),
        ("missing group key", edited(lambda d: d["param_groups"][1].pop("step")), "'step'"),
        ("missing option", edited(lambda d: d["param_groups"][0]["options"].pop("eps")),
         "eps"),
        ("missing state", edited(lambda d: d["state"][1].pop("max_exp_avg_sq")),
         "missing"),
        ("unknown state", edited(lambda d: d["state"][0].update(sum=d["params"][0])),
         "unknown"),
        ("bad option", edited(lambda d: d["param_groups"][1]["options"].update(eps=-1.0)),
         "eps"),
        ("bad schedule", edited(lambda d: d["param_groups"][0]["options"].update(
            lr={"schedule": {"name": "Nope"}, "state": {}})), "schedule"),
        ("short array", edited(lambda d: d["state"][1].update(
            exp_avg=d["state"][1]["exp_avg"][:-1])), "shape"),
        ("array dtype", edited(lambda d: d["params"].__setitem__(
            0, d["params"][0].astype(np.float64))), "dtype"),
        ("group count", edited(lambda d: d["param_groups"].pop()), "one entry per"),
        ("format", edited(lambda d: d.update(format=99)), "format"),
        ("truncated file", truncated, "not a readable"),
        ("garbage file", garbage, "not an .npz file"),
        ("corrupt metadata", flipped, "not a readable|missing key"),
        ("missing array", missing_array, "not a readable"),
    ], sd


def test_misfits_raise_and_change_nothing(tmp_path):
    cases, _ = _misfits(tmp_path)
    for what, source, match in cases:
        opt = make("adam")
        train(opt, 0, 2)
        before = opt.state_dict()
        schedule_before = opt.param_groups[0]["lr"]
        with pytest.raises(ValueError, match=match):
            if isinstance(source, dict):
                opt.load_state_dict(source)
            else:
                opt.load(source)
        assert_identical(opt.state_dict(), before), what
        assert opt.param_groups[0]["lr"] is schedule_before, what


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        make("sgd").load(tmp_path / "nope.npz")


def test_checkpoint_holds_everything(tmp_path):
    opt = make("adagrad", np.float64)
    train(opt, 0, 4)
    path = tmp_path / "c.npz"
    opt.save(path)
    sd = checkpoint.load(path)
    assert sd["algorithm"] == "adagrad"
    g0 = sd["param_groups"][0]
    assert g0["step"] == 4 and g0["shapes"] == [[7], [3, 5]] and g0["dtype"] == "float64"
    assert g0["options"]["initial_accumulator_value"] == 0.1
    assert sd["param_groups"][1]["options"]["lr"] == 0.02
    np.testing.assert_array_equal(sd["params"][0][:7], opt.params[0])
    np.testing.assert_array_equal(sd["state"][1]["state_sum"][:32],
                                  opt.state[1]["state_sum"][0].ravel())


# ----------------------------------------------------------------- shared schedules
def _plateau_sgd(schedule):
    return fastadapt.SGD([{"params": [np.ones(3, "f4")]}, {"params": [np.ones(2, "f4")]}],
                         lr=schedule)


def test_a_shared_schedule_stays_shared(tmp_path):
    schedule = schedules.ReduceOnPlateau(0.1, patience=0, factor=0.5)
    original = _plateau_sgd(schedule)
    path = tmp_path / "p.npz"
    original.save(path)
    restored = Optimizer.from_checkpoint(path)
    loaded = _plateau_sgd(0.1)
    loaded.load(path)
    for opt in (original, restored, loaded):
        lr = opt.param_groups[0]["lr"]
        assert opt.param_groups[1]["lr"] is lr
        lr.step(1.0)
        lr.step(2.0)
        assert opt.get_lr() == [0.05, 0.05]


def test_distinct_schedules_stay_distinct(tmp_path):
    a = schedules.ReduceOnPlateau(0.1, patience=0, factor=0.5)
    b = schedules.ReduceOnPlateau(0.1, patience=0, factor=0.5)
    opt = fastadapt.SGD([{"params": [np.ones(3, "f4")], "lr": a},
                         {"params": [np.ones(2, "f4")], "lr": b}])
    a.step(1.0)
    a.step(2.0)
    sd = opt.state_dict()
    shared = schedules.ReduceOnPlateau(0.1, patience=0, factor=0.5)
    other = _plateau_sgd(shared)       # one object, same config, in both groups
    other.load_state_dict(sd)
    assert other.param_groups[0]["lr"] is not other.param_groups[1]["lr"]
    assert other.get_lr() == [0.05, 0.1]


def test_shared_with_must_point_at_an_earlier_identical_schedule():
    opt = _plateau_sgd(schedules.ReduceOnPlateau(0.1, patience=0, factor=0.5))
    sd = opt.state_dict()
    assert sd["param_groups"][1]["options"]["lr"]["shared_with"] == 0
    for value in (1, 5, -1, True, "0"):
        bad = opt.state_dict()
        bad["param_groups"][1]["options"]["lr"]["shared_with"] = value
        with pytest.raises(ValueError, match="shared_with"):
            _plateau_sgd(0.1).load_state_dict(bad)
    bad = opt.state_dict()
    bad["param_groups"][1]["options"]["lr"]["state"]["lr"] = 0.01
    with pytest.raises(ValueError, match="differs"):
        _plateau_sgd(0.1).load_state_dict(bad)


# ----------------------------------------------------------------- option keys
def test_unknown_option_keys_are_rejected():
    for key, value in [("params", "INJECTED"), ("lrr", 0.1), ("note", "x")]:
        opt = make("adam")
        sd = opt.state_dict()
        sd["param_groups"][0]["options"][key] = value
        before = opt.state_dict()
        with pytest.raises(ValueError, match=f"unknown option key.*{key}"):
            opt.load_state_dict(sd)
        assert_identical(opt.state_dict(), before)
        assert isinstance(opt.param_groups[0]["params"], list)
    sd = make("adam").state_dict()
    sd["param_groups"][1]["surprise"] = 1
    with pytest.raises(ValueError, match="unknown key"):
        make("adam").load_state_dict(sd)


def test_extra_group_keys_round_trip(tmp_path):
    opt = fastadapt.SGD([{"params": [np.ones(3)], "note": "head"}, {"params": [np.ones(2)]}])
    path = tmp_path / "n.npz"
    opt.save(path)
    again = fastadapt.SGD([{"params": [np.ones(3)], "note": "other"}, {"params": [np.ones(2)]}])
    again.load(path)
    assert again.param_groups[0]["note"] == "head"
    restored = Optimizer.from_checkpoint(path)
    assert restored.param_groups[0]["note"] == "head" and "note" not in restored.param_groups[1]


def test_scalar_state_round_trips_and_is_checked():
    """Named per-group floats (a rule's scalar state) travel in param_groups."""
    opt = make("sgd")
    opt._groups[0].scalar_state = {"mu_product": 0.25}
    sd = opt.state_dict()
    assert sd["param_groups"][0]["scalar_state"] == {"mu_product": 0.25}
    assert "scalar_state" not in sd["param_groups"][1]
    other = make("sgd")
    other._groups[0].scalar_state = {"mu_product": 1.0}
    other.load_state_dict(sd)
    assert other._groups[0].scalar_state == {"mu_product": 0.25}
    for edit, match in [
        (lambda d: d["param_groups"][0].pop("scalar_state"), "missing scalar_state"),
        (lambda d: d["param_groups"][0].update(scalar_state={"eta": 1.0}), "keeps"),
        (lambda d: d["param_groups"][0].update(scalar_state={"mu_product": "1"}), "real"),
        (lambda d: d["param_groups"][1].update(scalar_state={"mu_product": 1.0}), "keeps"),
    ]:
        bad = opt.state_dict()
        edit(bad)
        target = make("sgd")
        target._groups[0].scalar_state = {"mu_product": 1.0}
        with pytest.raises(ValueError, match=match):
            target.load_state_dict(bad)
        assert target._groups[0].scalar_state == {"mu_product": 1.0}


# ----------------------------------------------------------------- crafted files
def _npy(shape, dtype, payload=b""):
    import io
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        out, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return out.getvalue() + payload


def _rewrite(src, dst, replace, compression=zipfile.ZIP_STORED):
    """Copy the checkpoint ``src`` to ``dst`` with some members replaced by bytes."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for name in zin.namelist():
            zout.writestr(name, replace.get(name, zin.read(name)))
        for name, data in replace.items():
            if name not in zin.namelist():
                zout.writestr(name, data)


def _peak_allocation(f):
    import tracemalloc
    tracemalloc.start()
    try:
        f()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_crafted_files_are_refused_before_their_arrays_are_read(tmp_path):
    opt = fastadapt.Adam([np.ones(4, "f4")])
    good = tmp_path / "good.npz"
    opt.save(good)
    with zipfile.ZipFile(good) as z:
        meta = json.loads(bytes(np.load(good)["__meta__"]).decode())
        names = z.namelist()
    assert "params.0.npy" in names
    huge_meta = dict(meta, param_groups=[dict(meta["param_groups"][0], shapes=[[2**40]])])
    meta_bytes = json.dumps(huge_meta).encode()
    nested = {"name": "Constant", "lr": 0.1}
    for _ in range(300):
        nested = {"name": "LinearWarmup", "schedule": nested, "warmup_steps": 1,
                  "start_factor": 0.0}
    deep = dict(meta, param_groups=[dict(meta["param_groups"][0], options=dict(
        meta["param_groups"][0]["options"], lr={"schedule": nested, "state": {}}))])
    deep_bytes = json.dumps(deep).encode()
    crafted = {
        # a header that declares 2**26 float32 (256 MiB) behind 16 bytes
        "big header": ({"params.0.npy": _npy((2**26,), "f4", bytes(16))}, zipfile.ZIP_STORED),
        "2**40 elements": ({"params.0.npy": _npy((2**40,), "f4", bytes(16))},
                           zipfile.ZIP_STORED),
        "wrong dtype": ({"params.0.npy": _npy((4,), "f8", bytes(32))}, zipfile.ZIP_STORED),
        "2-D": ({"params.0.npy": _npy((2, 2), "f4", bytes(16))}, zipfile.ZIP_STORED),
        "object dtype": ({"params.0.npy": _npy((4,), "O", bytes(32))}, zipfile.ZIP_STORED),
        # small deflated members that inflate to 64 MiB, declared or not by the header
        "deflate bomb": ({"params.0.npy": _npy((2**24,), "f4", bytes(64 << 20))},
                         zipfile.ZIP_DEFLATED),
        "longer than its header": ({"params.0.npy": _npy((4,), "f4", bytes(64 << 20))},
                                   zipfile.ZIP_DEFLATED),
        "extra member": ({"evil.npy": _npy((4,), "f4", bytes(16))}, zipfile.ZIP_STORED),
        "meta declares 2**40": ({"__meta__.npy": _npy((len(meta_bytes),), "u1", meta_bytes)},
                                zipfile.ZIP_STORED),
        "nested schedule": ({"__meta__.npy": _npy((len(deep_bytes),), "u1", deep_bytes)},
                            zipfile.ZIP_STORED),
    }
    for what, (replace, compression) in crafted.items():
        path = tmp_path / "crafted.npz"
        _rewrite(good, path, replace, compression)
        assert path.stat().st_size < 1 << 20, what
        loads = [lambda: fastadapt.Adam([np.ones(4, "f4")]).load(path),
                 lambda: Optimizer.from_checkpoint(path)]
        if what != "nested schedule":   # the file reader alone rebuilds no schedule
            loads.append(lambda: checkpoint.load(path))
        for load in loads:
            raised = []

            def attempt():
                with pytest.raises(ValueError) as info:
                    load()
                raised.append(info.value)
            peak = _peak_allocation(attempt)
            assert raised, what
            assert peak < 8 << 20, (what, peak)


def test_an_impossible_zip_entry_size_is_refused(tmp_path):
    opt = fastadapt.Adam([np.ones(4, "f4")])
    path = tmp_path / "c.npz"
    opt.save(path)
    data = bytearray(path.read_bytes())
    # the central directory's uncompressed size of the first member: +24 from its entry
    at = data.rindex(b"PK\x01\x02")
    data[at + 24:at + 28] = (2**31).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError):
        fastadapt.Adam([np.ones(4, "f4")]).load(path)


# ----------------------------------------------------------------- temporaries, modes
_KILLED_SAVE = r"""
import os, signal, sys
import numpy as np
import fastadapt

def dying_savez(file, **arrays):
    file.write(b"PK\x03\x04 a partial checkpoint")
    file.flush()
    os.kill(os.getpid(), signal.SIGKILL)

np.savez = dying_savez
fastadapt.SGD([np.ones(3)]).save(sys.argv[1])
"""


@pytest.mark.skipif(not hasattr(os, "kill") or sys.platform == "win32", reason="POSIX kill")
def test_a_later_save_removes_temporaries_of_killed_saves(tmp_path):
    path = tmp_path / "big.npz"
    result = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(path)], timeout=120)
    assert result.returncode == -9
    left = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(left) == 1 and left[0].startswith(".big.npz.")
    # also one in the format written before the host tag, by a process that is gone,
    # one of a live process, and one of another machine: those two stay
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    legacy = f".big.npz.{dead}.0123abcd.tmp"
    empty = f".big.npz.{dead}.4567abcd.tmp"
    live = f".big.npz.{os.getppid()}.89abcdef.tmp"
    foreign = f".big.npz.00000000-{dead}.0a1b2c3d.tmp"
    not_ours = f".notes.{dead}.fedcba98.tmp"            # named alike, but not a zip
    for name in (legacy, live, foreign):
        (tmp_path / name).write_bytes(b"PK\x03\x04partial")
    (tmp_path / empty).write_bytes(b"")
    (tmp_path / not_ours).write_bytes(b"my notes")
    fastadapt.SGD([np.ones(3)]).save(tmp_path / "other.npz")
    assert sorted(os.listdir(tmp_path)) == sorted(["other.npz", live, foreign, not_ours])


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_save_keeps_the_permission_bits_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "c.npz"
    opt = make("sgd")
    opt.save(path)
    os.chmod(path, 0o640)
    train(opt, 0, 1)
    opt.save(path)
    assert (os.stat(path).st_mode & 0o777) == 0o640
    restored = make("sgd")
    restored.load(path)
    assert restored.state[0]["step"] == 1


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX symbolic links")
def test_save_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    """A save used to rename its temporary over the link itself, leaving a
    regular file there and the target untouched."""
    (tmp_path / "run3").mkdir()
    target = tmp_path / "run3" / "c.npz"
    link = tmp_path / "latest.npz"
    opt = make("sgd")
    opt.save(target)
    os.symlink(os.path.join("run3", "c.npz"), link)
    train(opt, 0, 1)
    opt.save(link)
    assert os.path.islink(link) and os.readlink(link) == os.path.join("run3", "c.npz")
    assert sorted(os.listdir(tmp_path)) == ["latest.npz", "run3"]
    assert os.listdir(tmp_path / "run3") == ["c.npz"]
    restored = make("sgd")
    restored.load(target)
    assert restored.state[0]["step"] == 1
    dangling = tmp_path / "next.npz"                 # a link to a file not yet written
    os.symlink(os.path.join("run3", "d.npz"), dangling)
    opt.save(dangling)
    assert os.path.islink(dangling) and os.path.isfile(tmp_path / "run3" / "d.npz")


def test_corrupted_files_only_ever_raise_value_error(tmp_path):
    """Seeded byte flips and truncations anywhere in a checkpoint: loading it
    either succeeds (a flip the format does not depend on) or raises
    ValueError, and a failed load leaves the optimizer unchanged."""
    opt = fastadapt.Adam([np.ones(5, "f4"), np.ones(3, "f4")], amsgrad=True)
    opt.step([np.ones(5, "f4"), np.ones(3, "f4")])
    good = tmp_path / "good.npz"
    opt.save(good)
    data = good.read_bytes()
    rng = np.random.default_rng(8)
    variants = [data[:n] for n in rng.integers(0, len(data), 40)]
    for _ in range(200):
        flipped = bytearray(data)
        for at in rng.integers(0, len(data), rng.integers(1, 4)):
            flipped[at] ^= 1 << int(rng.integers(0, 8))
        variants.append(bytes(flipped))
    target = fastadapt.Adam([np.zeros(5, "f4"), np.zeros(3, "f4")], amsgrad=True)
    before = target.state_dict()
    path = tmp_path / "bad.npz"
    for variant in variants:
        path.write_bytes(variant)
        for load in (target.load, Optimizer.from_checkpoint):
            try:
                load(path)
            except ValueError:
                if load == target.load:
                    assert_identical(target.state_dict(), before)
            else:
                if load == target.load:
                    target = fastadapt.Adam([np.zeros(5, "f4"), np.zeros(3, "f4")],
                                            amsgrad=True)


def test_checkpoint_code_reads_the_optimizer_through_its_interface():
    """The checkpoint modules reach an optimizer only through its public
    interface (group_buffers, option_names, step_options, check_group and the
    buffers' restore), never through its private fields: a name that starts
    with an underscore after ``optimizer.``, ``target.`` or ``b.``."""
    import inspect
    import re
    from fastadapt import _checkpoint_file
    private = re.compile(r"\b(?:optimizer|target|cls|b)\._\w+")
    for module in (checkpoint, _checkpoint_file):
        assert private.findall(inspect.getsource(module)) == [], module.__name__
