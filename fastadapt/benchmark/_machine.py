"""The machine a run measured: named in every table the benchmark writes."""
import datetime
import os
import platform

import numpy as np


def _cpuinfo_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def compile_target():
    """What the kernels are compiled for: LLVM's name of this CPU (Numba's
    ``NUMBA_CPU_NAME`` where set) and its widest vector instructions. The
    model name alone does not say it: "AMD EPYC" has named Zen 3 (AVX2) and
    Zen 4 (AVX-512) machines. None where LLVM cannot tell."""
    try:
        import llvmlite.binding as ll
        from numba.core import config
        name = config.CPU_NAME or ll.get_host_cpu_name()
        flags = {k for k, on in ll.get_host_cpu_features().items() if on}
    except Exception:       # pragma: no cover - llvmlite comes with numba
        return None
    if config.CPU_NAME and config.CPU_FEATURES is not None:
        flags = {f[1:] for f in config.CPU_FEATURES.split(",") if f.startswith("+")}
    isa = ("AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags
           else "AVX" if "avx" in flags else None)
    if isa == "AVX-512" and "avx512bf16" in flags:
        isa += " with BF16"
    return f"{name}, {isa}" if isa else name


def _meminfo(key):
    """A /proc/meminfo entry in bytes, or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_available():
    """Bytes the kernel says can be allocated without swapping (None if unknown)."""
    return _meminfo("MemAvailable")


def caches():
    """The CPU caches as Linux reports them for CPU 0: ``{"levels": {"L1d": bytes,
    "L2": bytes, "L3": bytes}, "largest_bytes": bytes}``, or None if unknown."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    levels = {}
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return None
    for entry in entries:
        if not entry.startswith("index"):
            continue
        try:
            with open(os.path.join(base, entry, "level")) as f:
                level = f.read().strip()
            with open(os.path.join(base, entry, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(base, entry, "size")) as f:
                size = f.read().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        try:
            nbytes = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
        except (ValueError, IndexError):
            continue
        levels[f"L{level}" + ("d" if kind == "Data" else "")] = nbytes
    if not levels:
        return None
    return {"levels": levels, "largest_bytes": max(levels.values())}


def versions():
    out = {"python": platform.python_version(), "numpy": np.__version__}
    import numba
    out["numba"] = numba.__version__
    try:
        import torch
        out["torch"] = torch.__version__
    except ImportError:
        out["torch"] = None
    from .. import __version__
    out["fastadapt"] = __version__
    return out


def describe():
    """A dict naming the machine, the software and the thread counts."""
    import numba
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    info = {
        "cpu": _cpuinfo_model(),
        "compile_target": compile_target(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "memory_bytes": _meminfo("MemTotal"),
        "platform": platform.platform(),
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": _threading_layer(),
        "versions": versions(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "caches": caches(),
        "load_average_start": machine_load(),
    }
    try:
        import torch
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch_threads"] = None
    return info


def machine_load():
    """The 1-minute load average: how busy the machine was (None if unknown)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _threading_layer():
    import numba
    try:
        return numba.threading_layer()
    except ValueError:      # no parallel region has run yet
        return None


def one_line(info):
    mem = info["memory_bytes"]
    mem = f"{mem / 2**30:.1f} GiB" if mem else "unknown memory"
    v = info["versions"]
    torch = f"torch {v['torch']}" if v["torch"] else "torch not installed"
    threads = f"numba {info['numba_threads']} threads ({info['numba_threading_layer']})"
    if info.get("torch_threads"):
        threads += f", torch {info['torch_threads']} threads"
    cache = (info.get("caches") or {}).get("largest_bytes")
    cache = f", {cache / 2**20:g} MiB last-level cache" if cache else ""
    target = f" ({info['compile_target']})" if info.get("compile_target") else ""
    return (f"{info['cpu']}{target}, {info['usable_cpus']} cores, {mem}{cache}, "
            f"load average {load_text(info)}; "
            f"{threads}; numba {v['numba']}, numpy {v['numpy']}, {torch}, "
            f"python {v['python']}, fastadapt {v['fastadapt']}; {info['date_utc']}")


def load_text(info):
    """"start 0.1, end 0.3" from the 1-minute load averages a run recorded."""
    parts = [f"{when} {info[key]:.1f}" for when, key in
             (("start", "load_average_start"), ("end", "load_average_end"))
             if info.get(key) is not None]
    return ", ".join(parts) if parts else "unknown"
