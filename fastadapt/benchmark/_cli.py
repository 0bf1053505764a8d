"""``fastadapt bench``: argument parsing and the order of the sections."""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

from . import _report, _sections
from ._configs import CONFIGS, select
from ._contention import Retry
from ._machine import describe, machine_load

# The default run: a representative sweep that fits in about two minutes of
# measurement and well under 3 GiB on 2 cores. One size per regime: 1e3 (the
# per-call cost dominates), 1e5 (L2-resident), 1e6 (L3-resident) and 2^23 (in
# memory: Adam's five arrays of 32 MiB dwarf any L3), every rule
# configuration, budget arithmetic in _plan. --full adds 1e4, 2^22 and 2^24,
# full-size GPT-2 small (~9 GiB) and the serial/parallel threshold.
DEFAULT_SIZES = (10**3, 10**5, 2**22)
FULL_SIZES = (10**3, 10**4, 10**5, 10**6, 2**22, 2**23, 2**24)
QUICK_SIZES = (10**3, 10**5, 2**20)
THRESHOLD_SIZES = tuple(2**k for k in range(6, 18))          # 64 .. 131072
QUICK_THRESHOLD_SIZES = (512, 8192, 32768)
PER_CALL_SIZES = (10**3, 10**4)
SECTIONS = ("main", "percall", "threshold", "load", "gpt2", "coldstart", "gpu", "wholestep",
            "torch", "storage", "accuracy", "zero")
DEFAULT_SECTIONS = ("main", "percall", "gpt2", "coldstart", "gpu", "wholestep")
QUICK_SECTIONS = ("main", "percall", "gpu")
# (budget per measurement in s, minimum rounds, retries, seconds of re-measuring in all)
MODES = {"quick": (0.15, 3, 0, 0.0), "default": (0.5, 5, 1, 20.0), "full": (1.0, 7, 2, 90.0)}


def parse_size(token):
    """``"1000"``, ``"1e6"``, ``"2**24"``, ``"2^24"`` or ``"1_000"`` -> int >= 1."""
    text = token.strip().replace("_", "")
    try:
        for op in ("**", "^"):
            if op in text:
                base, exp = text.split(op)
                value = int(base) ** int(exp)
                break
        else:
            value = float(text) if any(c in text for c in ".eE") else int(text)
            if value != int(value):
                raise ValueError
            value = int(value)
    except (ValueError, OverflowError):
        raise ValueError(f"invalid size {token!r} (examples: 1000, 1e6, 2**24)") from None
    if value < 1:
        raise ValueError(f"invalid size {token!r}: sizes are >= 1")
    return value


def _parser():
    p = argparse.ArgumentParser(
        prog="fastadapt bench",
        description="Measure fastadapt's update steps against NumPy, torch.optim "
                    "(single-tensor, foreach, fused) and a same-traffic roofline kernel, "
                    "on this machine, in one run. Progress goes to stderr, the tables to "
                    "stdout.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help=f"few sizes ({', '.join(map(str, QUICK_SIZES))}) and short "
                           "measurements; only the main, per-call and GPU sections unless "
                           "--sections names others (well under a minute)")
    mode.add_argument("--full", action="store_true",
                      help=f"the full sweep: sizes {', '.join(map(str, FULL_SIZES))}, "
                           "longer measurements, full-size GPT-2 small (~9 GiB of memory) "
                           "and the serial/parallel threshold (about 9 minutes on 2 cores); "
                           "the default run is a representative subset (about 2 minutes, "
                           "under 3 GiB)")
    p.add_argument("--rules", default="all",
                   help="comma-separated: " + ", ".join(c.key for c in CONFIGS)
                        + " (a rule name such as sgd or rmsprop selects its variants); "
                        "default all")
    p.add_argument("--sizes", help="comma-separated element counts, e.g. 1e3,1e6,2**24 "
                                   f"(default {','.join(map(str, DEFAULT_SIZES))})")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=int,
                   help="threads for Numba and torch (numba.set_num_threads, "
                        "torch.set_num_threads); default: their defaults")
    p.add_argument("--sections",
                   help="comma-separated subset of " + ",".join(SECTIONS)
                        + " (main: the table; percall: small-array cost; threshold: serial "
                        "vs parallel driver; load: mid-size updates with one busy process "
                        "per CPU, pool vs serial vs fastadapt's choice; gpt2: a "
                        "GPT-2-shaped Adam step, narrowed to "
                        "d_model=128 unless --full; coldstart: import + first call in fresh "
                        "processes; gpu: the same table on an NVIDIA GPU, skipped without "
                        "one; wholestep: grad_norm and the clipped, unscaled step against "
                        "torch's GradScaler + clip_grad_norm_ pipeline; torch: "
                        "fastadapt.torch's optimizer.step() against torch.optim; storage: "
                        "Adam in every storage mode through each face, beside a minimal "
                        "same-bytes kernel per 16-bit mode, torch's and DeepSpeedCPUAdam's "
                        "modes (where installed), with each mode's single-thread compute "
                        "cost (2^24 elements, about 6 GiB; 2^20 with --quick); accuracy: "
                        "the storage modes' training accuracy; zero: "
                        "the sharded ZeroRedundancyOptimizer at 2 ranks (gloo) against "
                        "torch's); default "
                        + ",".join(DEFAULT_SECTIONS))
    p.add_argument("--threshold", action="store_true",
                   help="only measure the serial/parallel threshold (SERIAL_BELOW in "
                        "kernels/cpu.py); same as --sections threshold")
    p.add_argument("--budget", type=float,
                   help="seconds aimed at per measurement, all implementations together "
                        "(default 0.5; 1.0 with --full, 0.15 with --quick)")
    p.add_argument("--retries", type=int,
                   help="measure again, up to this many times, a measurement during which "
                        "other processes used more than 15%% of the CPUs (default 1; 2 with "
                        "--full, 0 with --quick); the least disturbed attempt is kept, and "
                        "one that stayed disturbed is printed as \"—\" with the reason "
                        "(its numbers stay in --json)")
    p.add_argument("--core-bandwidth", type=float, default=8.0, metavar="GB/S",
                   help="storage section: the memory bandwidth per core (GB/s) of its "
                        "predicted column, max(compute, bytes / bandwidth) per element "
                        "against torch fused float32's (default 8, a many-core server's "
                        "share)")
    p.add_argument("--json", metavar="PATH", help="write every number of the run as JSON")
    p.add_argument("--markdown", metavar="PATH",
                   help="write the results as Markdown with the machine named "
                        "(bench/RESULTS.md is this file)")
    p.add_argument("--plot", metavar="PATH",
                   help="write a PNG of throughput vs size per implementation "
                        "(needs matplotlib)")
    p.add_argument("--accuracy-plot", metavar="PATH",
                   help="with the accuracy section: write a PNG of each storage mode's "
                        "training curves (needs matplotlib)")
    p.add_argument("--from-json", metavar="PATH",
                   help="measure nothing: print (and write with --markdown / --plot) the "
                        "results of an earlier run saved with --json")
    return p


def _clean(obj):
    """JSON-safe: NaN / inf become None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


def _set_threads(n):
    import numba
    if n < 1 or n > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"--threads must be between 1 and {numba.config.NUMBA_NUM_THREADS} "
                         "(NUMBA_NUM_THREADS)")
    numba.set_num_threads(n)
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(n)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:           # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        configs = select(args.rules.split(","))
        mode = "quick" if args.quick else "full" if args.full else "default"
        sizes = ([parse_size(s) for s in args.sizes.split(",") if s.strip()] if args.sizes
                 else list({"quick": QUICK_SIZES, "default": DEFAULT_SIZES,
                            "full": FULL_SIZES}[mode]))
        if args.threshold:
            sections = ["threshold"]
        elif args.sections:
            sections = [s.strip() for s in args.sections.split(",") if s.strip()]
            unknown = [s for s in sections if s not in SECTIONS]
            if unknown:
                raise ValueError(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
        else:
            sections = list({"quick": QUICK_SECTIONS, "default": DEFAULT_SECTIONS,
                             "full": SECTIONS}[mode])
        if args.threads is not None:
            _set_threads(args.threads)
        if args.budget is not None and not args.budget > 0:
            raise ValueError("--budget must be positive")
        if not args.core_bandwidth > 0:
            raise ValueError("--core-bandwidth must be positive")
        if args.retries is not None and args.retries < 0:
            raise ValueError("--retries must be >= 0")
    except ValueError as exc:
        print(f"fastadapt bench: error: {exc}", file=sys.stderr)
        return 2
    if not configs or not sizes:
        print("fastadapt bench: error: no rules or no sizes selected", file=sys.stderr)
        return 2

    if args.from_json:
        with open(args.from_json) as f:
            data = json.load(f)
        return _output(data, args, lambda line: print(line, file=sys.stderr, flush=True))

    budget, min_rounds, retries, retry_budget = MODES[mode]
    budget = args.budget or budget
    dtype = np.dtype(args.dtype)
    if args.retries is not None:
        retries, retry_budget = args.retries, max(retry_budget, 30.0 * args.retries)
    retry = Retry(retries=retries, budget_s=retry_budget)
    plan = _plan(sections, configs, sizes, dtype, budget, min_rounds, mode)
    progress = Progress(plan)
    # Thousands of steps on one fixed gradient drive some states to inf / NaN
    # (centered RMSprop's v - g_avg^2 cancels to below zero) in every
    # implementation alike; x86 runs those at full speed, so only the warnings go.
    with np.errstate(all="ignore"):
        data = _measure(sections, configs, sizes, dtype, budget, min_rounds, mode, retry,
                        argv, progress, core_bandwidth=args.core_bandwidth * 1e9)
    return _output(data, args, lambda line: print(line, file=sys.stderr, flush=True))


def _plan(sections, configs, sizes, dtype, budget, min_rounds, mode):
    """``{section: estimated seconds}``, from the budget arithmetic of each
    section (see the ``estimate_*`` functions of ``_sections``)."""
    est = {}
    if "main" in sections:
        est["main"] = sum(_sections.estimate_sweep_row(c, n, dtype, budget, min_rounds,
                                                       _max_sample_s(mode))
                          for c in configs for n in sizes)
    if "percall" in sections:
        est["percall"] = len(configs) * len(PER_CALL_SIZES) * (budget / 2 + 0.2)
    if "threshold" in sections:
        n_sizes = len(QUICK_THRESHOLD_SIZES if mode == "quick" else THRESHOLD_SIZES)
        est["threshold"] = len(configs) * n_sizes * (budget / 4 + 0.05)
    if "load" in sections:
        est["load"] = 6 * max(budget, 0.1) + 4.0
    if "gpt2" in sections:
        est["gpt2"] = sum(_sections.estimate_gpt2(d, dtype, b, min_rounds)
                          for d, b in _gpt2_models(mode, budget))
    if "coldstart" in sections:
        est["coldstart"] = 15.0
    if "wholestep" in sections:
        # the norm pass and the whole step at 2**24 (and GPT-2 small with --full):
        # each measurement's budget plus building four optimizers' arrays
        est["wholestep"] = 2 * budget + 8.0 + (4 * budget + 40.0 if mode == "full" else 0.0)
    if "torch" in sections:
        # three rules on GPT-2's shapes (narrowed unless --full), many small
        # tensors, a transformer block's whole step and two storage-mode rows
        # (2**22 elements unless --full, 2**24 then), each at its own budget
        est["torch"] = 30.0 if mode != "full" else 135.0
    if "storage" in sections:
        # ~30 Adam steps of 2**24 (2**20 quick) elements per round (every mode,
        # three faces and a yardstick per 16-bit mode, torch's), each sample as
        # long as the slowest call (the 8-bit state, ~0.1 s on 2 cores); two
        # small sizes; the single-thread compute cost at two in-cache sizes
        est["storage"] = 2.5 * budget + (60.0 if mode != "quick" else 8.0)
    if "accuracy" in sections:
        est["accuracy"] = 5.0
    if "zero" in sections:
        # two rank processes (imports ~5 s each on 2 cores), two optimizers over
        # GPT-2's shapes (8.9M elements; 35.6M --full), ~0.15 s a step per round
        est["zero"] = 30.0 if mode != "full" else 90.0
    if "gpu" in sections:
        est["gpu"] = 1.0 + (len(configs) * len(sizes) * (budget + 0.5)
                            if _sections.gpu_status()[0] else 0.0)
    return est


def _max_sample_s(mode):
    """The longest sample of one implementation: with --full, as long as the
    slowest rival's call (up to 0.25 s); otherwise 0.05 s, which keeps the
    largest size's rows short at no cost to the medians of the fast ones."""
    return 0.25 if mode == "full" else 0.05


def _gpt2_models(mode, budget):
    """``[(d_model, budget)]``: GPT-2 small itself (~9 GiB for five implementations)
    only with --full; the same 148 arrays narrowed to d_model=128 always."""
    models = [(768, 4 * budget)] if mode == "full" else []
    return models + [(128, 2 * budget)]


class Progress:
    """Progress lines on stderr with the run's elapsed time and an overall ETA.

    The ETA scales the estimates of what is left (``plan``: seconds per section,
    from the budget arithmetic) by how the estimates of what is done compared
    with the time it took (re-measuring included), so it corrects itself on a
    slow or busy machine.
    """

    def __init__(self, plan, stream=None, clock=time.perf_counter):
        self.plan = dict(plan)
        self.total = sum(self.plan.values())
        self.done = 0.0
        self.clock = clock
        self.start = clock()
        self.stream = stream

    def advance(self, seconds):
        """Mark ``seconds`` of the plan's estimate as done."""
        self.done = min(self.total, self.done + seconds)

    def eta(self):
        elapsed = self.clock() - self.start
        left = max(0.0, self.total - self.done)
        if self.done > 0:
            left *= max(0.25, min(4.0, elapsed / self.done))
        return elapsed, left

    def __call__(self, line):
        elapsed, left = self.eta()
        print(f"[{_clock(elapsed)} elapsed, ~{_clock(left)} left] {line}",
              file=self.stream or sys.stderr, flush=True)


def _clock(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _measure(sections, configs, sizes, dtype, budget, min_rounds, mode, retry, argv,
             progress, core_bandwidth=8e9):
    start = time.perf_counter()
    data = {"command": ["fastadapt", "bench"] + argv,
            "settings": {"dtype": dtype.name, "sizes": sizes, "rules": [c.key for c in configs],
                         "sections": sections, "mode": mode, "budget_s": budget,
                         "min_rounds": min_rounds, "retries": retry.retries,
                         "disturbed_above": retry.threshold},
            "machine": describe()}
    if "main" in sections:
        data["sweep"] = _sections.sweep(configs, sizes, dtype, budget, min_rounds, progress,
                                        retry, max_sample_s=_max_sample_s(mode))
    if "percall" in sections:
        data["per_call"] = _sections.per_call(configs, PER_CALL_SIZES, dtype, budget / 2,
                                              min_rounds, progress, retry)
    if "threshold" in sections:
        data["threshold"] = _sections.threshold(
            configs, QUICK_THRESHOLD_SIZES if mode == "quick" else THRESHOLD_SIZES, dtype,
            budget / 4, min_rounds, progress, retry)
    if "load" in sections:
        from . import _load
        data["load"] = _load.run(budget, progress)
        progress.advance(progress.plan.get("load", 0.0))
    if "gpt2" in sections:
        for d_model, model_budget in _gpt2_models(mode, budget):
            key = "gpt2" if d_model == 768 else "gpt2_narrow"
            data[key] = _sections.gpt2(dtype, model_budget, min_rounds, progress, retry,
                                       d_model=d_model)
    if "coldstart" in sections:
        data["cold_start"] = _sections.cold_start(dtype, progress)
        progress.advance(progress.plan.get("coldstart", 0.0))
    if "gpu" in sections:
        data["cuda"] = _sections.cuda(configs, sizes, dtype, budget, min_rounds, progress)
    if "wholestep" in sections:
        from . import _pipeline
        whole = {"norm_pass": _pipeline.norm_pass(dtype, budget, min_rounds, progress, retry),
                 "whole_step": _pipeline.whole_step(dtype, budget, min_rounds, progress, retry)}
        if mode == "full":
            whole["whole_step_gpt2"] = _pipeline.whole_step(dtype, 2 * budget, min_rounds,
                                                            progress, retry, d_model=768)
        data["wholestep"] = whole
        progress.advance(progress.plan.get("wholestep", 0.0))
    if "torch" in sections:
        from . import _torch_step
        data["torch_step"] = _torch_step.run(quick=mode != "full", progress=progress)
        progress.advance(progress.plan.get("torch", 0.0))
    if "storage" in sections:
        from . import _storage_modes
        data["storage"] = _storage_modes.storage(2 ** 20 if mode == "quick" else 2 ** 24,
                                                 budget, min_rounds, progress,
                                                 core_bandwidth=core_bandwidth)
        progress.advance(progress.plan.get("storage", 0.0))
    if "accuracy" in sections:
        from . import _accuracy
        data["accuracy"] = _accuracy.study()
        progress.advance(progress.plan.get("accuracy", 0.0))
    if "zero" in sections:
        from . import _zero
        data["zero"] = _zero.run(quick=mode != "full", progress=progress)
        progress.advance(progress.plan.get("zero", 0.0))
    data["wall_s"] = time.perf_counter() - start
    data["machine"]["load_average_end"] = machine_load()
    data["retry_seconds"] = retry.spent_s
    return data


def _output(data, args, progress):
    print(_report.text_report(data), flush=True)
    if args.plot:
        from . import _plot
        why_not = _plot.throughput(data, args.plot)
        progress(f"no plot: {why_not}" if why_not else f"wrote {args.plot}")
        if why_not:
            args.plot = None
    if args.accuracy_plot:
        from . import _plot
        why_not = (_plot.accuracy(data["accuracy"], args.accuracy_plot) if data.get("accuracy")
                   else "the accuracy section did not run (--sections accuracy)")
        progress(f"no accuracy plot: {why_not}" if why_not else f"wrote {args.accuracy_plot}")
        if why_not:
            args.accuracy_plot = None
    if args.markdown:
        _write(args.markdown, _report.markdown_report(data, args.plot, args.markdown,
                                                      args.accuracy_plot) + "\n")
        progress(f"wrote {args.markdown}")
    if args.json:
        _write(args.json, json.dumps(_clean(data), indent=1, allow_nan=False) + "\n")
        progress(f"wrote {args.json}")
    return 0


def _write(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
