"""fp32 Adam on one GPU: fastadapt against torch and against the memory roofline.

    python bench/gpu_adam.py [--log2-n 26] [--samples 20] [--iters 10]

Times, with CUDA events on one stream, the median over ``--samples`` samples of
``--iters`` back-to-back steps each (so the launch overhead of one step hides
behind the previous step's kernel, as in a training loop), of:

- fastadapt.adam_step on torch CUDA tensors;
- torch.optim.Adam with fused=True, foreach=True and foreach=False;
- a same-traffic kernel: Adam's reads and writes (28 bytes per element) with
  trivial math, the roofline for this update;
- a device-to-device copy (``dst.copy_(src)``, 8 bytes per element), the
  machine's streaming bandwidth.

Prints a markdown table naming the GPU: time per step, GB/s (bytes moved per
step / time), % of the copy's bandwidth, and fastadapt's speed-up over each row
(that row's time / fastadapt's). Needs torch built with CUDA, numba-cuda
(``pip install "fastadapt[cuda]"``) and an NVIDIA GPU.
"""
import argparse
import statistics
import sys

ADAM_BYTES = 28   # fp32: param read + write, grad read, exp_avg and exp_avg_sq read + write
COPY_BYTES = 8    # fp32: one read, one write


def _require_gpu():
    try:
        import torch
    except ImportError:
        sys.exit("bench/gpu_adam.py needs torch with CUDA: pip install torch")
    if not torch.cuda.is_available():
        sys.exit("bench/gpu_adam.py needs an NVIDIA GPU: torch sees no CUDA device "
                 f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    from fastadapt import _cuda
    try:
        _cuda._numba_cuda()
    except (ImportError, RuntimeError) as e:
        sys.exit(f"bench/gpu_adam.py: {e}")
    return torch


def _same_traffic_kernel():
    """Adam's memory traffic with trivial math: the roofline for the update."""
    from numba import cuda

    @cuda.jit
    def same_traffic(param, grad, exp_avg, exp_avg_sq, scale):
        for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
            g = grad[i]
            exp_avg[i] = exp_avg[i] + g
            exp_avg_sq[i] = exp_avg_sq[i] + g
            param[i] = param[i] * scale

    return same_traffic


def time_ms(torch, step, samples, iters):
    """Median milliseconds per call of ``step`` (CUDA events, current stream)."""
    for _ in range(3):                      # compile, warm caches and allocator
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(samples):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / iters)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log2-n", type=int, default=26, help="elements = 2**N (default 26)")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--iters", type=int, default=10, help="steps per timed sample")
    args = parser.parse_args(argv)
    torch = _require_gpu()
    import numpy as np
    from numba import cuda

    import fastadapt
    from fastadapt import _cuda
    from fastadapt.kernels import cuda as kernels

    n = 2 ** args.log2_n
    torch.manual_seed(0)
    start = torch.randn(n, device="cuda")
    grad = torch.randn(n, device="cuda")

    def tensors():
        return start.clone(), torch.zeros_like(start), torch.zeros_like(start)

    rows = {}

    # fastadapt
    param, exp_avg, exp_avg_sq = tensors()
    counter = [0]

    def fastadapt_step():
        counter[0] += 1
        fastadapt.adam_step(param, grad, exp_avg, exp_avg_sq, step=counter[0])
    rows["fastadapt.adam_step"] = (time_ms(torch, fastadapt_step, args.samples, args.iters),
                                   ADAM_BYTES)

    # torch.optim, three implementations
    for label, options in (("torch Adam fused", {"fused": True}),
                           ("torch Adam foreach", {"foreach": True}),
                           ("torch Adam single-tensor", {"foreach": False})):
        p = start.clone().requires_grad_()
        p.grad = grad
        optimizer = torch.optim.Adam([p], **options)
        rows[label] = (time_ms(torch, optimizer.step, args.samples, args.iters), ADAM_BYTES)

    # the roofline: same traffic, trivial math, same launch configuration
    same_traffic = _same_traffic_kernel()
    p, m, v = tensors()
    arrays = [cuda.as_cuda_array(t, sync=False) for t in (p, grad, m, v)]
    device = torch.cuda.current_device()
    with cuda.gpus[device]:
        blocks, threads = kernels.launch_config(n, _cuda._sm_count(device, cuda))

        def roofline_step():   # on the default stream, torch's current one here
            same_traffic[blocks, threads, 0](*arrays, np.float32(0.5))
        rows["same-traffic kernel (roofline)"] = (
            time_ms(torch, roofline_step, args.samples, args.iters), ADAM_BYTES)

    # the machine's copy bandwidth
    src, dst = torch.randn(n, device="cuda"), torch.empty(n, device="cuda")
    rows["device-to-device copy"] = (time_ms(torch, lambda: dst.copy_(src), args.samples,
                                             args.iters), COPY_BYTES)

    # same numbers as torch? (one short run from the same start)
    ours, m, v = tensors()
    ref = start.clone().requires_grad_()
    ref.grad = grad
    fused = torch.optim.Adam([ref], fused=True)
    for t in range(1, 6):
        fastadapt.adam_step(ours, grad, m, v, step=t)
        fused.step()
    max_diff = (ours - ref.detach()).abs().max().item()

    print_table(torch, n, rows, max_diff, args)


def print_table(torch, n, rows, max_diff, args):
    copy_gbs = COPY_BYTES * n / (rows["device-to-device copy"][0] * 1e6)
    ours_ms = rows["fastadapt.adam_step"][0]
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    print(f"## fp32 Adam, 2^{args.log2_n} = {n:,} elements, on {props.name} "
          f"({props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB)")
    print()
    print(f"torch {torch.__version__}; median of {args.samples} samples of {args.iters} steps, "
          f"CUDA events. fastadapt vs torch fused after 5 steps: max |diff| = {max_diff:.2e}.")
    print()
    print("| implementation | ms / step | GB/s | % of copy bandwidth | fastadapt speed-up |")
    print("|---|---:|---:|---:|---:|")
    for label, (ms, bytes_per_element) in rows.items():
        gbs = bytes_per_element * n / (ms * 1e6)
        speedup = f"{ms / ours_ms:.2f}x" if bytes_per_element == ADAM_BYTES else "-"
        print(f"| {label} | {ms:.3f} | {gbs:.0f} | {100 * gbs / copy_gbs:.1f}% | {speedup} |")


if __name__ == "__main__":
    main()
