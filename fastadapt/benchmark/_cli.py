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
from ._machine import copy_bandwidth, describe, machine_load

DEFAULT_SIZES = (10**3, 10**4, 10**5, 10**6, 2**22, 2**24)
QUICK_SIZES = (10**3, 10**5, 2**20)
THRESHOLD_SIZES = tuple(2**k for k in range(6, 16))          # 64 .. 32768
QUICK_THRESHOLD_SIZES = (64, 512, 4096)
PER_CALL_SIZES = (10**3, 10**4)
SECTIONS = ("main", "percall", "threshold", "gpt2", "coldstart", "gpu")
QUICK_SECTIONS = ("main", "percall", "threshold", "gpu")


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
    p.add_argument("--quick", action="store_true",
                   help=f"few sizes ({', '.join(map(str, QUICK_SIZES))}) and short "
                        "measurements; skips the GPT-2 and cold-start sections unless "
                        "--sections names them (well under a minute)")
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
                        "vs parallel driver; gpt2: a GPT-2-shaped Adam step; coldstart: "
                        "import + first call in fresh processes; gpu: CUDA columns)")
    p.add_argument("--threshold", action="store_true",
                   help="only measure the serial/parallel threshold (SERIAL_BELOW in "
                        "kernels/cpu.py); same as --sections threshold")
    p.add_argument("--budget", type=float,
                   help="seconds aimed at per measurement, all implementations together "
                        "(default 1.0, 0.15 with --quick)")
    p.add_argument("--retries", type=int,
                   help="measure again, up to this many times, a measurement during which "
                        "other processes used more than 15%% of the CPUs (default 2, 0 with "
                        "--quick); the least disturbed attempt is kept and tables mark "
                        "those that stayed disturbed")
    p.add_argument("--json", metavar="PATH", help="write every number of the run as JSON")
    p.add_argument("--markdown", metavar="PATH",
                   help="write the results as Markdown with the machine named "
                        "(bench/RESULTS.md is this file)")
    p.add_argument("--plot", metavar="PATH",
                   help="write a PNG of throughput vs size per implementation "
                        "(needs matplotlib)")
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
        sizes = ([parse_size(s) for s in args.sizes.split(",") if s.strip()] if args.sizes
                 else list(QUICK_SIZES if args.quick else DEFAULT_SIZES))
        if args.threshold:
            sections = ["threshold"]
        elif args.sections:
            sections = [s.strip() for s in args.sections.split(",") if s.strip()]
            unknown = [s for s in sections if s not in SECTIONS]
            if unknown:
                raise ValueError(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
        else:
            sections = list(QUICK_SECTIONS if args.quick else SECTIONS)
        if args.threads is not None:
            _set_threads(args.threads)
        if args.budget is not None and not args.budget > 0:
            raise ValueError("--budget must be positive")
        if args.retries is not None and args.retries < 0:
            raise ValueError("--retries must be >= 0")
    except ValueError as exc:
        print(f"fastadapt bench: error: {exc}", file=sys.stderr)
        return 2
    if not configs or not sizes:
        print("fastadapt bench: error: no rules or no sizes selected", file=sys.stderr)
        return 2

    def progress(line):
        print(line, file=sys.stderr, flush=True)

    if args.from_json:
        with open(args.from_json) as f:
            data = json.load(f)
        data["targets"] = _report.targets(data)
        return _output(data, args, progress)

    quick = args.quick
    budget = args.budget or (0.15 if quick else 1.0)
    min_rounds = 3 if quick else 7
    dtype = np.dtype(args.dtype)
    retry = Retry(retries=args.retries if args.retries is not None else (0 if quick else 2))
    start = time.perf_counter()
    # Thousands of steps on one fixed gradient drive some states to inf / NaN
    # (centered RMSprop's v - g_avg^2 cancels to below zero) in every
    # implementation alike; x86 runs those at full speed, so only the warnings go.
    with np.errstate(all="ignore"):
        data = _measure(sections, configs, sizes, dtype, budget, min_rounds, quick, retry,
                        argv, start, progress)
    return _output(data, args, progress)


def _measure(sections, configs, sizes, dtype, budget, min_rounds, quick, retry, argv, start,
             progress):
    progress("measuring the copy bandwidth...")
    copy_gbps = copy_bandwidth(1 << (22 if quick else 26), dtype=np.float32,
                               repeats=5 if quick else 15)
    data = {"command": ["fastadapt", "bench"] + argv,
            "settings": {"dtype": dtype.name, "sizes": sizes, "rules": [c.key for c in configs],
                         "sections": sections, "quick": quick, "budget_s": budget,
                         "min_rounds": min_rounds, "retries": retry.retries,
                         "disturbed_above": retry.threshold},
            "machine": describe(copy_gbps)}
    if "main" in sections:
        data["sweep"] = _sections.sweep(configs, sizes, dtype, budget, min_rounds, progress,
                                        retry)
    if "percall" in sections:
        data["per_call"] = _sections.per_call(configs, PER_CALL_SIZES, dtype, budget / 2,
                                              min_rounds, progress, retry)
    if "threshold" in sections:
        data["threshold"] = _sections.threshold(
            configs, QUICK_THRESHOLD_SIZES if quick else THRESHOLD_SIZES, dtype,
            budget / 4, min_rounds, progress, retry)
    if "gpt2" in sections:
        data["gpt2"] = _sections.gpt2(dtype, 4 * budget, min_rounds, progress, retry)
        # the same 148 arrays at ~10^7 elements, where per-array costs weigh more
        data["gpt2_narrow"] = _sections.gpt2(dtype, 2 * budget, min_rounds, progress, retry,
                                             d_model=128)
    if "coldstart" in sections:
        data["cold_start"] = _sections.cold_start(dtype, progress)
    if "gpu" in sections:
        data["cuda"] = _sections.cuda(configs, sizes, dtype, budget, min_rounds, progress)
    data["wall_s"] = time.perf_counter() - start
    data["machine"]["load_average_end"] = machine_load()
    data["retry_seconds"] = retry.spent_s
    data["targets"] = _report.targets(data)
    return data


def _output(data, args, progress):
    print(_report.text_report(data), flush=True)
    if args.plot:
        why_not = _report.plot(data, args.plot)
        progress(f"no plot: {why_not}" if why_not else f"wrote {args.plot}")
        if why_not:
            args.plot = None
    if args.markdown:
        _write(args.markdown, _report.markdown_report(data, args.plot, args.markdown) + "\n")
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
