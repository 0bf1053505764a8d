"""Accuracy of the storage modes: the same training run in each, against float32.

A small NumPy MLP (one tanh hidden layer, squared loss, full batch, data from
a fixed random teacher network) is trained with fastadapt's Adam in each
storage mode from the same start, gradients computed in float32 NumPy from
the stored params. The table is each mode's final loss and its ratio to the
float32 run's: near 1 the mode costs nothing on this problem; above 1 it
hurts (bfloat16 params with round-to-nearest, for instance, stall once the
updates fall below half an ulp of the weights, which stochastic rounding and
master weights avoid).

``fastadapt bench --sections accuracy`` prints it; the function returns plain
data for the report and the tests.
"""
import numpy as np

#: mode -> (label, param dtype name, optimizer storage options)
MODES = {
    "fp32": ("float32", "float32", {}),
    "bf16_state": ("fp32 params, bf16 state", "float32", {"state_dtype": "bfloat16"}),
    "int8_state": ("fp32 params, 8-bit state", "float32", {"state_dtype": "int8"}),
    "bf16_nearest": ("bf16 params + state, nearest rounding", "bfloat16",
                     {"state_dtype": "bfloat16"}),
    "bf16_sr": ("bf16 params + state, stochastic rounding", "bfloat16",
                {"state_dtype": "bfloat16", "stochastic_rounding": True, "seed": 0}),
    "bf16_master": ("bf16 params, fp32 master + state", "bfloat16", {"master_weights": True}),
}


def _problem(seed, n=512, d=16, hidden=32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    teacher = [rng.standard_normal((d, hidden)) / np.sqrt(d),
               rng.standard_normal((hidden, 1)) / np.sqrt(hidden)]
    y = (np.tanh(x @ teacher[0]) @ teacher[1]).astype(np.float32)
    start = [(rng.standard_normal((d, hidden)) / np.sqrt(d)).astype(np.float32),
             np.zeros(hidden, np.float32),
             (rng.standard_normal((hidden, 1)) / np.sqrt(hidden)).astype(np.float32),
             np.zeros(1, np.float32)]
    return x, y, start


def loss_and_grads(x, y, params):
    """Mean squared error of the MLP and its gradients, in float32."""
    w1, b1, w2, b2 = (np.asarray(p, np.float32) for p in params)
    h = np.tanh(x @ w1 + b1)
    err = h @ w2 + b2 - y
    n = np.float32(x.shape[0])
    loss = float(np.mean(err.astype(np.float64) ** 2))
    d_out = np.float32(2) * err / n
    gw2 = h.T @ d_out
    gb2 = d_out.sum(axis=0)
    d_h = (d_out @ w2.T) * (np.float32(1) - h * h)
    gw1 = x.T @ d_h
    gb1 = d_h.sum(axis=0)
    return loss, [gw1, gb1, gw2, gb2]


def run(steps=300, lr=1e-3, seed=0, modes=None):
    """``{"steps", "lr", "rows": [{"mode", "label", "final_loss", "ratio"}], "curves"}``."""
    import fastadapt
    from .._storage import bfloat16
    x, y, start = _problem(seed)
    rows, curves = [], {}
    for key in (modes or MODES):
        label, dtype, options = MODES[key]
        dtype = bfloat16("the accuracy study") if dtype == "bfloat16" else np.dtype(dtype)
        opt = fastadapt.Adam([p.astype(dtype) for p in start], lr=lr, **options)
        losses = []
        for _ in range(steps):
            loss, grads = loss_and_grads(x, y, opt.params)
            losses.append(loss)
            opt.step([g.astype(dtype) for g in grads])
        losses.append(loss_and_grads(x, y, opt.params)[0])
        curves[key] = losses
        rows.append({"mode": key, "label": label, "final_loss": losses[-1]})
    base = curves["fp32"][-1] if "fp32" in curves else None
    for r in rows:
        r["ratio"] = r["final_loss"] / base if base else None
    return {"steps": steps, "lr": lr, "initial_loss": curves[next(iter(curves))][0],
            "rows": rows, "curves": curves}


def table(result):
    """(headers, rows) for the report."""
    headers = ["mode", "final loss", "x float32's"]
    return headers, [[r["label"], f"{r['final_loss']:.4g}",
                      "n/a" if r["ratio"] is None else f"{r['ratio']:.3f}"]
                     for r in result["rows"]]
