"""One rank of the distributed-checkpoint test of ZeroRedundancyOptimizer
(tests/test_torch_dcp.py).

Run as ``python dcp_worker.py RANK WORLD INIT_FILE CHECKPOINT_DIR [STATE_DTYPE
compressed]``: trains a small model with
``ZeroRedundancyOptimizer(optimizer_class=fastadapt.torch.Adam)`` (with that
``state_dtype`` and ``compressed_state_dict=True`` when given),
saves its state with ``get_optimizer_state_dict`` and ``dcp.save`` (each rank
consolidates the full state for itself first), loads it with ``dcp.load`` and
``set_optimizer_state_dict`` into a fresh optimizer, and checks that the
resumed run continues bit for bit as the uninterrupted one. Exits non-zero on
any difference.
"""
import copy
import datetime
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (get_optimizer_state_dict,
                                                     set_optimizer_state_dict)

import fastadapt.torch as ft


def make(options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    return model, ft.ZeroRedundancyOptimizer(model.parameters(), optimizer_class=ft.Adam,
                                             lr=1e-2, weight_decay=0.1, **options)


def train(model, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)      # the same batch on every rank
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(4, 6, generator=g)).pow(2).sum().backward()
        opt.step()


def full_state(model, opt, world):
    for to in range(world):
        opt.consolidate_state_dict(to=to)
        if to == dist.get_rank():
            saved = get_optimizer_state_dict(model, opt)
    return saved


def main(rank, world, init_file, checkpoint, options):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=30))
    try:
        model, opt = make(options)
        train(model, opt, 2, seed=1)
        saved = full_state(model, opt, world)
        dcp.save({"model": model.state_dict(), "optim": saved}, checkpoint_id=checkpoint)

        resumed, ropt = make(options)
        target = {"model": resumed.state_dict(), "optim": copy.deepcopy(saved)}
        for entry in target["optim"]["state"].values():
            for value in entry.values():
                if isinstance(value, torch.Tensor):
                    value.zero_()                # what dcp.load must fill in
        dcp.load(target, checkpoint_id=checkpoint)
        resumed.load_state_dict(target["model"])
        set_optimizer_state_dict(resumed, ropt, target["optim"])

        train(model, opt, 2, seed=2)
        train(resumed, ropt, 2, seed=2)
        for p, q in zip(model.parameters(), resumed.parameters()):
            if not torch.equal(p, q):
                raise AssertionError(f"rank {rank}: the resumed run differs by "
                                     f"{float((p - q).abs().max())}")
        a, b = full_state(model, opt, world), full_state(resumed, ropt, world)
        for name, entry in a["state"].items():
            for key, value in entry.items():
                other = b["state"][name][key]
                if not (torch.equal(value, other) if isinstance(value, torch.Tensor)
                        else value == other):
                    raise AssertionError(f"rank {rank}: state {name}.{key} differs")
        print(f"rank {rank}: resumed bit for bit")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    extra = {} if len(sys.argv) < 6 else {"state_dtype": sys.argv[5], "min_8bit_size": 0,
                                          "compressed_state_dict": sys.argv[6] == "compressed"}
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], extra)
