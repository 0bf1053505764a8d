"""Peak memory with and without gradient release, GPT-2-shaped model, CPU.

    python bench/release_memory.py [--layers 12] [--tokens 128] [--steps 3]

Each mode runs in a fresh process (fastadapt.torch.AdamW, a few training
steps) and reports two figures:

* gradient bytes: the most gradient memory held at once during a backward,
  sampled in every parameter's post-accumulate-grad hook, after the
  optimizer's own hook has copied a fresh gradient into the flat buffer and
  before gradient release updates and drops it (the flat gradient buffers
  plus every live ``.grad`` that is not a view of them);
* peak RSS: the process's high-water resident set (``ru_maxrss``), which
  also counts the parameters, the Adam state, the activations and torch's
  allocator caching, so its difference is the saving as the OS sees it.
"""
import argparse
import json
import resource
import subprocess
import sys

GPT2 = {"vocab": 50257, "ctx": 1024, "width": 768, "heads": 12}


def build(layers):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, d, heads):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
            self.heads = heads

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, -1).unbind(2)
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                               v.transpose(1, 2), is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
            return x + self.out(F.gelu(self.fc(self.ln2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            d = GPT2["width"]
            self.wte, self.wpe = nn.Embedding(GPT2["vocab"], d), nn.Embedding(GPT2["ctx"], d)
            self.blocks = nn.ModuleList(Block(d, GPT2["heads"]) for _ in range(layers))
            self.ln = nn.LayerNorm(d)

        def forward(self, idx):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.blocks:
                x = block(x)
            logits = self.ln(x) @ self.wte.weight.T          # tied, as GPT-2
            return F.cross_entropy(logits[:, :-1].flatten(0, 1), idx[:, 1:].flatten())

    torch.manual_seed(0)
    return GPT()


def run(release, layers, tokens, steps):
    import torch
    import fastadapt.torch as ft
    model = build(layers)
    opt = ft.AdamW(model.parameters(), lr=1e-4)
    peak = [0]

    def sample(_):
        flat = {id(b.grad_flat): b.grad_flat for bs in opt._buckets for b in bs}
        views = {v.data_ptr() for bs in opt._buckets for b in bs
                 for v in b.grad_views if isinstance(v, torch.Tensor)}
        held = sum(t.numel() * t.element_size() for t in flat.values())
        held += sum(p.grad.numel() * p.grad.element_size() for p in model.parameters()
                    if p.grad is not None and p.grad.data_ptr() not in views)
        peak[0] = max(peak[0], held)
    for p in model.parameters():     # before the release's hooks: each gradient is seen
        p.register_post_accumulate_grad_hook(sample)
    if release:
        ft.enable_gradient_release(model, opt)
    idx = torch.randint(0, GPT2["vocab"], (1, tokens), generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        opt.zero_grad()
        model(idx).backward()
        opt.step()
    params = sum(p.numel() for p in model.parameters())
    return {"release": release, "parameters": params, "gradient_bytes": peak[0],
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(args.child == "on", args.layers, args.tokens, args.steps)))
        return
    results = {}
    for mode in ("off", "on"):
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--layers",
                              str(args.layers), "--tokens", str(args.tokens), "--steps",
                              str(args.steps)], check=True, capture_output=True, text=True)
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    mib = 2 ** 20
    n = results["off"]["parameters"]
    print(f"GPT-2-shaped, {args.layers} layers, {n:,} parameters (float32), AdamW, "
          f"{args.tokens} tokens, {args.steps} steps")
    for what in ("gradient_bytes", "peak_rss_bytes"):
        off, on = results["off"][what], results["on"][what]
        print(f"{what:>15}: without release {off / mib:8.1f} MiB, with {on / mib:8.1f} MiB, "
              f"saved {(off - on) / mib:8.1f} MiB")


if __name__ == "__main__":
    main()
