"""torch.distributed.checkpoint with fastadapt.torch optimizers.

``get_optimizer_state_dict`` / ``set_optimizer_state_dict``
(``torch.distributed.checkpoint.state_dict``) and ``dcp.save`` / ``dcp.load``
in one process with a gloo group of world size 1 (and ZeroRedundancyOptimizer
with two gloo ranks, tests/dcp_worker.py): a run resumed from the checkpoint
continues bit for bit as the uninterrupted run (same kernels, same state),
for float32, bfloat16 and 8-bit state.
"""
import datetime

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.distributed.checkpoint as dcp  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.distributed.checkpoint.state_dict import (  # noqa: E402
    StateDictOptions, get_optimizer_state_dict, set_optimizer_state_dict)

import fastadapt.torch as ft  # noqa: E402

# two ranks take ~15 s on 2 busy cores; a stuck rank is killed after this long
LAUNCH_TIMEOUT_S = 240


@pytest.fixture
def group(tmp_path):
    if dist.is_initialized():                   # pragma: no cover - a group from elsewhere
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0,
                            world_size=1, timeout=datetime.timedelta(seconds=30))
    yield
    dist.destroy_process_group()


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def train(model, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(4, 6, generator=g)).pow(2).sum().backward()
        opt.step()


CASES = [("Adam", {"lr": 1e-2, "weight_decay": 0.1}),
         ("SGD", {"lr": 0.1, "momentum": 0.9}),
         ("NAdam", {"lr": 1e-2}),
         ("AdamW", {"lr": 1e-2, "state_dtype": torch.bfloat16}),
         ("AdamW", {"lr": 1e-2, "state_dtype": "int8", "min_8bit_size": 0}),
         ("AdamW", {"lr": 1e-2, "state_dtype": "int8c", "min_8bit_size": 0})]


@pytest.mark.parametrize("full", [False, True], ids=["sharded-form", "full"])
@pytest.mark.parametrize("name,kwargs", CASES,
                         ids=[f"{n}-{k.get('state_dtype', 'plain')}" for n, k in CASES])
def test_dcp_save_and_load_resume_bit_for_bit(group, tmp_path, name, kwargs, full):
    options = StateDictOptions(full_state_dict=full)
    model = make_model()
    opt = getattr(ft, name)(model.parameters(), **kwargs)
    train(model, opt, 3, seed=1)
    saved = get_optimizer_state_dict(model, opt, options=options)
    assert set(saved["state"]) == {n for n, _ in model.named_parameters()}   # keyed by FQN
    dcp.save({"model": model.state_dict(), "optim": saved}, checkpoint_id=tmp_path / "ck")

    resumed = make_model()
    ropt = getattr(ft, name)(resumed.parameters(), **kwargs)
    # a fresh optimizer has no state: torch initialises it with an lr=0 step
    target = {"model": resumed.state_dict(),
              "optim": get_optimizer_state_dict(resumed, ropt, options=options)}
    dcp.load(target, checkpoint_id=tmp_path / "ck")
    resumed.load_state_dict(target["model"])
    set_optimizer_state_dict(resumed, ropt, target["optim"], options=options)

    train(model, opt, 3, seed=2)
    train(resumed, ropt, 3, seed=2)
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    a, b = opt.state_dict()["state"], ropt.state_dict()["state"]
    assert a.keys() == b.keys()
    for k in a:
        for key in a[k]:
            assert torch.equal(torch.as_tensor(a[k][key]), torch.as_tensor(b[k][key])), key


def test_set_optimizer_state_dict_from_torchs_optimizer(group):
    """A torch.optim.Adam's DCP state dict sets a fastadapt.torch.Adam, which
    then steps as torch's does."""
    theirs, ours = make_model(), make_model()
    ref = torch.optim.Adam(theirs.parameters(), lr=1e-2, foreach=False)
    train(theirs, ref, 2, seed=1)
    ours.load_state_dict(theirs.state_dict())
    opt = ft.Adam(ours.parameters(), lr=1e-2)
    set_optimizer_state_dict(ours, opt, get_optimizer_state_dict(theirs, ref))
    train(theirs, ref, 2, seed=2)
    train(ours, opt, 2, seed=2)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0,
                                   atol=1e-6 * float(q.detach().abs().max()))


def test_zero_redundancy_optimizer_after_consolidation(group):
    """ZeroRedundancyOptimizer's ``state_dict`` is the consolidated full state:
    ``get_optimizer_state_dict`` raises torch's message naming
    ``consolidate_state_dict`` before it, and works after; the full state
    sets a fresh one, which resumes bit for bit (one rank)."""
    model, resumed = make_model(), make_model()
    opt = ft.ZeroRedundancyOptimizer(model.parameters(), optimizer_class=ft.Adam, lr=1e-2)
    train(model, opt, 2, seed=1)
    with pytest.raises(RuntimeError, match="consolidate_state_dict"):
        get_optimizer_state_dict(model, opt)
    opt.consolidate_state_dict(to=0)
    saved = get_optimizer_state_dict(model, opt)
    resumed.load_state_dict(model.state_dict())
    ropt = ft.ZeroRedundancyOptimizer(resumed.parameters(), optimizer_class=ft.Adam, lr=1e-2)
    set_optimizer_state_dict(resumed, ropt, saved)
    train(model, opt, 2, seed=2)
    train(resumed, ropt, 2, seed=2)
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


@pytest.mark.slow
@pytest.mark.parametrize("storage", [[], ["int8c", "compressed"]], ids=["plain", "int8c-compressed"])
def test_zero_redundancy_optimizer_two_ranks(tmp_path, storage):
    """Two gloo ranks on localhost (tests/dcp_worker.py): each consolidates the
    full state for itself, ``dcp.save``, ``dcp.load`` and
    ``set_optimizer_state_dict`` into a fresh ZeroRedundancyOptimizer, and
    the resumed run continues bit for bit on both ranks; float32 state in
    torch's format, and int8c state in the compressed one. A stuck rank is
    killed after LAUNCH_TIMEOUT_S (the group's own timeout is 30 s)."""
    import os
    import sys

    from fastadapt.benchmark._zero import launch_ranks
    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dcp_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    status = launch_ranks([[sys.executable, worker, str(rank), "2", str(tmp_path / "init"),
                            str(tmp_path / "ck"), *storage] for rank in range(2)],
                          env, str(tmp_path), LAUNCH_TIMEOUT_S)
    for rank, (code, log) in enumerate(status):
        assert code == 0 and f"rank {rank}: resumed bit for bit" in log, log[-3000:]

