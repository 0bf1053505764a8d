"""A GPT-shaped accuracy problem: a two-layer causal transformer learning a
synthetic character stream, scored by its validation loss.

The stream is an order-2 Markov chain over 24 symbols whose next-symbol
distributions mix a peaked table on the previous symbol with a peaked table
on the previous two (Dirichlet 0.1, a fixed seed), so the best possible
validation loss is the chain's entropy rate, well below the uniform
``log 24``: the model learns the first table's statistics within a few
hundred steps and needs attention to the symbol before for the rest. The model has GPT-2's layout (token and position
embeddings, pre-LayerNorm blocks of 4-head causal attention and a 4x MLP with
GELU, a final LayerNorm, the head tied to the token embedding), d_model 48,
context 32: 59,328 parameters in 28 arrays whose moments span the range of a
real model's (embeddings, LayerNorm gains, biases, projections).

Gradients come from torch's autograd in float32 on the parameters' stored
values widened to float32 (as a bfloat16 model's forward pass computes them);
each step draws a batch of 16 windows from the training stream (the same
batches in every mode), and the figure is the mean cross-entropy over 32
fixed validation windows of a separate stream, taken every few steps.
"""
import math

import numpy as np

VOCAB, CONTEXT, D_MODEL, LAYERS, HEADS, BATCH, VALIDATION = 24, 32, 48, 2, 4, 16, 32


def _chain(seed):
    """The cumulative next-symbol distributions ``[a, b] -> c``: a peaked bigram
    table on ``b`` (70%) mixed with a peaked table on the pair ``(a, b)``."""
    rng = np.random.default_rng(seed)
    bigram = rng.dirichlet(np.full(VOCAB, 0.1), size=VOCAB)
    pair = rng.dirichlet(np.full(VOCAB, 0.1), size=(VOCAB, VOCAB))
    return np.cumsum(0.7 * bigram[None, :, :] + 0.3 * pair, axis=-1)


def _stream(cdf, n, seed):
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    out = np.empty(n, np.int64)
    a, b = 0, 1
    for i in range(n):
        c = min(int(np.searchsorted(cdf[a, b], u[i], side="right")), VOCAB - 1)
        out[i], a, b = c, b, c
    return out


def _shapes():
    d = D_MODEL
    shapes = [("wte", (VOCAB, d)), ("wpe", (CONTEXT, d))]
    for i in range(LAYERS):
        shapes += [(f"{i}.ln1.w", (d,)), (f"{i}.ln1.b", (d,)),
                   (f"{i}.qkv.w", (d, 3 * d)), (f"{i}.qkv.b", (3 * d,)),
                   (f"{i}.proj.w", (d, d)), (f"{i}.proj.b", (d,)),
                   (f"{i}.ln2.w", (d,)), (f"{i}.ln2.b", (d,)),
                   (f"{i}.fc.w", (d, 4 * d)), (f"{i}.fc.b", (4 * d,)),
                   (f"{i}.out.w", (4 * d, d)), (f"{i}.out.b", (d,))]
    return shapes + [("lnf.w", (d,)), ("lnf.b", (d,))]


def _start(seed):
    """GPT-2's initialisation: normal(0, 0.02) weights, residual projections
    scaled by 1/sqrt(2 layers), zero biases, unit LayerNorm gains."""
    rng = np.random.default_rng(seed)
    params = []
    for name, shape in _shapes():
        if name.endswith(".b") or name.startswith("lnf.b"):
            p = np.zeros(shape)
        elif ".ln" in name or name.startswith("lnf"):
            p = np.ones(shape)
        else:
            std = 0.02 / math.sqrt(2 * LAYERS) if name.endswith(("proj.w", "out.w")) else 0.02
            p = rng.normal(0.0, std, shape)
        params.append(p.astype(np.float32))
    return params


def _loss(torch, params, tokens):
    """Mean next-token cross-entropy of the model on ``tokens`` (windows of
    CONTEXT + 1)."""
    F = torch.nn.functional
    named = dict(zip((n for n, _ in _shapes()), params))
    x_ids, y_ids = tokens[:, :-1], tokens[:, 1:]
    b, t = x_ids.shape
    h = named["wte"][x_ids] + named["wpe"][:t]
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    for i in range(LAYERS):
        p = {k.split(".", 1)[1]: v for k, v in named.items() if k.startswith(f"{i}.")}
        a = F.layer_norm(h, (D_MODEL,), p["ln1.w"], p["ln1.b"])
        q, k, v = (a @ p["qkv.w"] + p["qkv.b"]).split(D_MODEL, dim=-1)
        q, k, v = (z.view(b, t, HEADS, D_MODEL // HEADS).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(D_MODEL // HEADS)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        h = h + ((att @ v).transpose(1, 2).reshape(b, t, D_MODEL) @ p["proj.w"] + p["proj.b"])
        a = F.layer_norm(h, (D_MODEL,), p["ln2.w"], p["ln2.b"])
        h = h + (F.gelu(a @ p["fc.w"] + p["fc.b"]) @ p["out.w"] + p["out.b"])
    h = F.layer_norm(h, (D_MODEL,), named["lnf.w"], named["lnf.b"])
    logits = h @ named["wte"].T
    return F.cross_entropy(logits.reshape(-1, VOCAB), y_ids.reshape(-1))


def gpt(seed, every=10):
    """``(start, figure_and_grads)`` as the accuracy study's problems: the
    start's float32 arrays, and a function of the current params returning the
    validation loss (every ``every`` calls from the first, and when called
    with ``final=True``; None between) and the float32 gradients of the next
    training batch."""
    import torch
    cdf = _chain(1000 + seed)
    train = _stream(cdf, 40_000, 2000 + seed)
    held_out = _stream(cdf, VALIDATION * (CONTEXT + 1), 3000 + seed)
    validation = torch.from_numpy(held_out.reshape(VALIDATION, CONTEXT + 1))
    rng = np.random.default_rng(4000 + seed)
    windows = np.lib.stride_tricks.sliding_window_view(train, CONTEXT + 1)
    calls = [0]

    def figure_and_grads(params, final=False):
        tensors = [torch.from_numpy(np.asarray(p, np.float32)).requires_grad_(True)
                   for p in params]
        figure = None
        threads = torch.get_num_threads()
        torch.set_num_threads(1)     # small ops: a second thread only waits (and more so under load)
        try:
            if final or calls[0] % every == 0:
                with torch.no_grad():
                    figure = float(_loss(torch, tensors, validation))
            calls[0] += 1
            batch = torch.from_numpy(windows[rng.integers(0, len(windows), BATCH)].copy())
            loss = _loss(torch, tensors, batch)
            grads = torch.autograd.grad(loss, tensors)
        finally:
            torch.set_num_threads(threads)
        return figure, [g.numpy() for g in grads]
    return _start(seed), figure_and_grads


def entropy_rate(seed=0, n=200_000):
    """The chain's entropy rate in nats (the best possible validation loss),
    estimated from its stationary pair frequencies over ``n`` symbols."""
    cdf = _chain(1000 + seed)
    table = np.diff(cdf, axis=-1, prepend=0.0)
    s = _stream(cdf, n, 5000 + seed)
    pairs = np.zeros((VOCAB, VOCAB))
    np.add.at(pairs, (s[:-1], s[1:]), 1.0)
    pairs /= pairs.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nansum(table * np.log(table), axis=-1)
    return float((pairs * h).sum())
