#!/usr/bin/env bash
# The prepared GPU check: run it first whenever an NVIDIA GPU is available.
#
#     bench/gpu_check.sh            (from anywhere; PYTHON=... picks the interpreter)
#
# Needs numba, numba-cuda, torch with CUDA, CuPy and pytest installed (no
# network: fastadapt itself is used from this checkout). In under 8 minutes,
# each step under its own time limit, it runs
#   1. the GPU tests: every test marked gpu (tests/test_gpu.py,
#      tests/test_gpu_norm.py, the CUDA tests of test_torch*.py) and the
#      gpu_compile checks (where ptxas is installed);
#   2. `fastadapt bench --sections gpu`: every rule against torch's CUDA paths
#      and the same-traffic roofline kernel, with each kernel's registers;
#   3. a short roofline at 2**26 elements: the device's copy bandwidth,
#      float32 Adam against it, and each storage mode against torch's fused
#      CUDA Adam on the same dtype (the targets of the project's GPU issue);
# and writes bench/RESULTS-gpu.md with the device named; logs in bench/out/gpu/.
# A step that fails or runs out of time is reported as such; the rest still run.
set -uo pipefail
cd "$(dirname "$0")/.."
out=bench/out/gpu
results=bench/RESULTS-gpu.md
mkdir -p "$out"
python=${PYTHON:-python3}
started=$(date +%s)

# fastadapt from this checkout: installed in a throwaway venv over the
# system's packages when it is not importable as it is (no download)
if ! "$python" -c "import fastadapt.kernels.cpu" 2>/dev/null; then
    venv="$out/venv"
    "$python" -m venv --system-site-packages "$venv" &&
        "$venv/bin/pip" install -q --no-deps --no-build-isolation -e . >"$out/install.log" 2>&1 &&
        python="$venv/bin/python" || { echo "cannot install fastadapt here; see $out/install.log"; exit 1; }
fi

step() {   # step NAME LIMIT_S COMMAND...: run with a time limit, log, record status
    local name=$1 limit=$2; shift 2
    local t0=$(date +%s)
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    local status="ok"
    [ $rc -eq 124 ] && status="timed out after ${limit} s" || { [ $rc -ne 0 ] && status="failed (exit $rc)"; }
    echo "| $name | $status | $(( $(date +%s) - t0 )) s |" >>"$out/steps.md"
    echo "== $name: $status"
}
: >"$out/steps.md"

step tests 300 "$python" -m pytest -q -rs -m "gpu or gpu_compile" tests/
step bench 100 "$python" -m fastadapt bench --sections gpu --sizes 1e4,2**20,2**26 \
    --budget 0.4 --markdown "$out/bench.md" --json "$out/bench.json"
step roofline 50 "$python" - "$out/roofline.md" <<'EOF'
"""2**26 elements: copy bandwidth, float32 Adam against it, every storage mode
against torch's fused CUDA Adam on the same parameter dtype."""
import statistics
import sys
import time

import torch

import fastadapt
import fastadapt.torch as ft

N = 2 ** 26
rows, lines = [], []


def timed(fn, reps=10, samples=7):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / reps)
    return statistics.median(times)


def torch_fused(dtype):
    p = torch.randn(N, device="cuda").to(dtype).requires_grad_()
    p.grad = torch.randn(N, device="cuda").to(dtype)
    return timed(torch.optim.Adam([p], fused=True).step)


def fastadapt_step(dtype, **options):
    p = torch.nn.Parameter(torch.randn(N, device="cuda").to(dtype))
    p.grad = torch.randn(N, device="cuda").to(dtype)
    opt = ft.Adam([p], **options)
    return timed(opt.step), opt


def copy_gbps():
    src, dst = torch.randn(N, device="cuda"), torch.empty(N, device="cuda")
    return 2 * 4 * N / timed(lambda: dst.copy_(src)) / 1e9


def functional_adam_seconds():
    p, g, m, v = (torch.randn(N, device="cuda") for _ in range(4))
    v.abs_()
    return timed(lambda: fastadapt.adam_step(p, g, m, v, step=1))


def functional_adam8_seconds(container, dtype):
    """Adam through the functional API with 8-bit moments whose arrays are
    torch CUDA tensors (fastadapt.torch refuses 8-bit state on CUDA so far)."""
    p, g = (torch.randn(N, device="cuda").to(dtype) for _ in range(2))
    moments = []
    for signed in (True, False):
        b = container(N, signed)
        part = "scale" if container is fastadapt.Companded8 else "absmax"
        moments.append(b.with_arrays(torch.from_numpy(b.codes).cuda(),
                               torch.from_numpy(getattr(b, part)).cuda()))
    return timed(lambda: fastadapt.adam_step(p, g, *moments, step=1))


copy_gbps = copy_gbps()
adam_s = functional_adam_seconds()
adam_gbps = 28 * N / adam_s / 1e9
lines.append(f"Copy bandwidth (torch `copy_`, float32, 2**26): **{copy_gbps:.0f} GB/s**. "
             f"fastadapt float32 Adam (functional, 28 B/element): {adam_s * 1e3:.3f} ms, "
             f"{adam_gbps:.0f} GB/s = **{100 * adam_gbps / copy_gbps:.0f}% of copy "
             f"bandwidth** (target >= 85%).")

for container in (fastadapt.Blockwise8, fastadapt.Companded8):
    for dtype in (torch.float32, torch.bfloat16):
        try:
            seconds = functional_adam8_seconds(container, dtype)
            lines.append(f"fastadapt Adam (functional), {dtype} params, {container.__name__} "
                         f"moments: {seconds * 1e3:.3f} ms per step.")
        except Exception as exc:
            lines.append(f"fastadapt Adam (functional), {dtype} params, {container.__name__} "
                         f"moments: {type(exc).__name__}: {str(exc)[:200]}")

fp32_fused = torch_fused(torch.float32)
MODES = [("float32", torch.float32, {}),
         ("float32, bfloat16 state", torch.float32, dict(state_dtype=torch.bfloat16)),
         ("bfloat16, float32 state", torch.bfloat16, {}),
         ("bfloat16, bfloat16 state", torch.bfloat16, dict(state_dtype=torch.bfloat16)),
         ("bfloat16, master weights", torch.bfloat16, dict(master_weights=True)),
         ("bfloat16, stochastic rounding", torch.bfloat16,
          dict(stochastic_rounding=True, state_dtype=torch.bfloat16, seed=1)),
         ("float16, float16 state", torch.float16, dict(state_dtype="float16")),
         ("float16, master weights", torch.float16, dict(master_weights=True)),
         ("bfloat16, 8-bit state", torch.bfloat16, dict(state_dtype="int8"))]
fused = {torch.float32: fp32_fused}
for label, dtype, options in MODES:
    try:
        if dtype not in fused:
            fused[dtype] = torch_fused(dtype)
        seconds, opt = fastadapt_step(dtype, **options)
        del opt
        torch.cuda.empty_cache()
        rows.append(f"| {label} | {seconds * 1e3:.3f} | {fused[dtype] * 1e3:.3f} | "
                    f"{fused[dtype] / seconds:.2f}x | {fp32_fused / seconds:.2f}x |")
    except Exception as exc:
        rows.append(f"| {label} | {type(exc).__name__}: {str(exc)[:120]} | | | |")

with open(sys.argv[1], "w") as f:
    f.write("\n".join(lines) + "\n\n")
    f.write("fastadapt.torch Adam `step()` on one CUDA tensor of 2**26 elements against "
            "torch's fused CUDA Adam (median of 7 samples of 10 steps). Targets: every mode "
            "faster than torch fused on the same dtype; bfloat16 params with 8-bit state "
            ">= 1.8x torch fused float32.\n\n")
    f.write("| mode | fastadapt ms | torch fused, same dtype, ms | x same dtype | "
            "x torch fused float32 |\n|---|---:|---:|---:|---:|\n")
    f.write("\n".join(rows) + "\n")
print(open(sys.argv[1]).read())
EOF

device=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
[ -n "$device" ] || device=$("$python" -c "from numba import cuda; print(cuda.get_current_device().name)" 2>/dev/null || echo "no GPU found")
versions=$("$python" -c "
import numba, numba_cuda, torch
try:
    import cupy; c = cupy.__version__
except Exception: c = 'not installed'
print(f'numba {numba.__version__}, numba-cuda {numba_cuda.__version__}, torch {torch.__version__} (CUDA {torch.version.cuda}), CuPy {c}')" 2>&1 | tail -1)
{
    echo "# GPU check: $device"
    echo
    echo "Generated by \`bench/gpu_check.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') from commit" \
         "$(git rev-parse --short HEAD 2>/dev/null || echo unknown) in $(( $(date +%s) - started )) s;" \
         "$versions. Logs: \`bench/out/gpu/\`."
    echo
    echo "| step | status | wall |"
    echo "|---|---|---:|"
    cat "$out/steps.md"
    echo
    echo "## Tests (every test marked gpu or gpu_compile)"
    echo
    echo '```'
    grep -E "^(FAILED|ERROR|SKIPPED)|[0-9]+ (passed|failed|skipped|deselected|errors?)\b" \
        "$out/tests.log" | tail -40
    echo '```'
    echo
    echo "## Roofline at 2**26 elements"
    echo
    cat "$out/roofline.md" 2>/dev/null || { echo '```'; tail -20 "$out/roofline.log"; echo '```'; }
    echo
    echo "## fastadapt bench --sections gpu"
    echo
    if [ -s "$out/bench.md" ]; then sed -n '/^## GPU/,$p' "$out/bench.md" | tail -n +2
    else echo '```'; tail -20 "$out/bench.log"; echo '```'; fi
} >"$results"
echo "wrote $results ($(( $(date +%s) - started )) s)"
