"""Bench section ``zero``: sharded Adam at 2 ranks (gloo, this machine).

``fastadapt.torch.ZeroRedundancyOptimizer(optimizer_class=fastadapt.torch.Adam)``
against ``torch.distributed.optim.ZeroRedundancyOptimizer(optimizer_class=
torch.optim.Adam, fused=True)`` over GPT-2's 148 parameter shapes (width 128
by default: 8,943,488 float32 elements), each rank a process of its own with
one thread (the machine's cores shared between the ranks), the gradients
already in place (as after DDP's all-reduce).

A step is what each optimizer's ``step()`` does: fastadapt runs the fused
kernel over its rank's contiguous half of the flat buffer and gathers the
flat parameter buffer in place (on gloo one broadcast of each rank's half);
torch's steps the parameters its rank owns (whole tensors, balanced
greedily) and broadcasts every parameter from its owner. The two are timed
interleaved, round after round, with a barrier before each timed step so
that both ranks start it together; each rank's
time is the median of its rounds, and the slower rank's median is the
result (a step ends for everyone only when its last collective does).

State bytes per rank are measured from the tensors' storages: fastadapt's
state shards, and every tensor in torch's local ``optim.state`` (its
``step`` counters included).

:func:`run` returns JSON-able data; :func:`markdown` renders it. Run as a
module (``python -m fastadapt.benchmark._zero RANK ...``) it is one rank.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

WORLD = 2
LABELS = {"fastadapt": "fastadapt.torch.ZeroRedundancyOptimizer (fastadapt.torch.Adam)",
          "torch_fused": "torch ZeroRedundancyOptimizer (torch.optim.Adam, fused=True)"}


def launch_ranks(commands, env, logdir, timeout_s, prefix=""):
    """Run one process per command (rank ``r``: ``commands[r]``, its output in
    ``logdir/<prefix>rank<r>.log``) until all exit or ``timeout_s`` passes,
    then kill what is left; ``[(returncode, output)]`` per rank (a killed
    rank's code is negative)."""
    procs, logs = [], []
    try:
        for rank, command in enumerate(commands):
            log = open(os.path.join(logdir, f"{prefix}rank{rank}.log"), "w+")
            logs.append(log)
            procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                          env=env))
        deadline = time.monotonic() + timeout_s
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    results = []
    for p, log in zip(procs, logs):
        log.seek(0)
        results.append((p.returncode, log.read()))
        log.close()
    return results


def run(quick=True, progress=print, d=None, shapes=None, rounds=None, timeout_s=600):
    """Measure both optimizers at 2 ranks; ``shapes`` overrides GPT-2's."""
    from ._implementations import gpt2_small_shapes
    d = None if shapes is not None else d or (128 if quick else 256)
    shapes = [list(s) for s in (shapes if shapes is not None else gpt2_small_shapes(d))]
    rounds = rounds or (8 if quick else 20)
    elements = sum(_numel(s) for s in shapes)
    out = {"world_size": WORLD, "backend": "gloo", "elements": elements,
           "arrays": len(shapes), "rounds": rounds, "threads_per_rank": 1,
           "gpt2_width": d}
    progress(f"zero: Adam over {len(shapes)} arrays, {elements:,} elements, {WORLD} ranks "
             f"(gloo), {rounds} rounds...")
    with tempfile.TemporaryDirectory(prefix="fastadapt-zero-") as tmp:
        config = os.path.join(tmp, "config.json")
        with open(config, "w") as f:
            json.dump({"shapes": shapes, "rounds": rounds}, f)
        env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
        status = launch_ranks(
            [[sys.executable, "-m", "fastadapt.benchmark._zero", str(rank), str(WORLD),
              os.path.join(tmp, "init"), tmp, config] for rank in range(WORLD)],
            env, tmp, timeout_s)
        failed = [f"rank {rank} exited with {code}: "
                  + " | ".join(text.strip().splitlines()[-6:])
                  for rank, (code, text) in enumerate(status) if code != 0]
        if failed:
            out["unavailable"] = "; ".join(failed)
            return out
        ranks = []
        for rank in range(WORLD):
            with open(os.path.join(tmp, f"rank{rank}.json")) as f:
                ranks.append(json.load(f))
    out["ranks"] = ranks
    out["results"] = {}
    for name in LABELS:
        out["results"][name] = {
            "median_s": max(r["timings"][name]["median_s"] for r in ranks),
            "per_rank_median_s": [r["timings"][name]["median_s"] for r in ranks],
            "state_bytes_per_rank": [r["state_bytes"][name] for r in ranks]}
    fa, tz = out["results"]["fastadapt"], out["results"]["torch_fused"]
    out["speedup"] = tz["median_s"] / fa["median_s"]
    progress(f"zero: fastadapt {fa['median_s'] * 1e3:.2f} ms, torch fused "
             f"{tz['median_s'] * 1e3:.2f} ms per step ({out['speedup']:.2f}x)")
    return out


def _numel(shape):
    n = 1
    for s in shape:
        n *= int(s)
    return n


def markdown(data):
    """The section's table (time per step: the slower rank's median)."""
    if "unavailable" in data:
        return f"zero: unavailable ({data['unavailable']})\n"
    lines = [f"Adam over {data['arrays']} arrays, {data['elements']:,} float32 elements, "
             f"{data['world_size']} ranks ({data['backend']}, {data['threads_per_rank']} thread "
             f"each), median of {data['rounds']} interleaved rounds.", "",
             "| implementation | ms / step (slower rank) | state bytes per rank | "
             "vs fastadapt |", "|---|---|---|---|"]
    fa = data["results"]["fastadapt"]["median_s"]
    for name, entry in data["results"].items():
        mem = " / ".join(f"{b:,}" for b in entry["state_bytes_per_rank"])
        lines.append(f"| {LABELS[name]} | {entry['median_s'] * 1e3:.3f} | {mem} | "
                     f"{entry['median_s'] / fa:.2f}x |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- one rank
def _storage_bytes(tensors):
    return sum(t.untyped_storage().nbytes() for t in tensors)


def _rank(rank, world, init, outdir, config):
    import torch
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer as TorchZero

    import fastadapt.torch as ft

    from ._torch_step import through_autograd

    with open(config) as f:
        cfg = json.load(f)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(0)

    def model():
        params = []
        for shape in cfg["shapes"]:
            p = torch.nn.Parameter(torch.empty(shape).uniform_(-0.1, 0.1, generator=g))
            p.grad = torch.empty(shape).normal_(0, 1e-3, generator=g)
            params.append(p)
        return params

    ours_params = model()
    ours = ft.ZeroRedundancyOptimizer(ours_params, optimizer_class=ft.Adam)
    through_autograd(torch, ours_params)    # gradients in the flat buffer, as in training
    theirs = TorchZero(model(), optimizer_class=torch.optim.Adam, fused=True)
    steps = {"fastadapt": ours.step, "torch_fused": theirs.step}
    for step in steps.values():            # first steps: state allocation, loads
        step()
        step()
    times = {name: [] for name in steps}
    names = list(steps)
    for r in range(cfg["rounds"]):
        for name in names[r % 2:] + names[:r % 2]:
            dist.barrier()
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    state_bytes = {
        "fastadapt": _storage_bytes(t for bs in ours._buckets for b in bs
                                    for t in b.state_tensors()),
        "torch_fused": _storage_bytes(t for s in theirs.optim.state.values()
                                      for t in s.values() if isinstance(t, torch.Tensor))}
    result = {"rank": rank, "state_bytes": state_bytes,
              "timings": {n: {"median_s": statistics.median(t), "min_s": min(t)}
                          for n, t in times.items()}}
    path = os.path.join(outdir, f"rank{rank}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(path + ".tmp", path)
    dist.barrier()              # neither rank tears the group down under the other
    dist.destroy_process_group()


if __name__ == "__main__":
    _rank(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
