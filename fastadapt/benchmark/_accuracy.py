"""Accuracy of the storage modes: the same training run in each, against float32.

Three problems, each trained with fastadapt's Adam in every storage mode from
the same start, gradients computed in float32 from the stored params:

- ``mlp``: a small MLP (one tanh hidden layer, squared loss, full batch, data
  from a fixed random teacher network); the figure is the final loss;
- ``logistic``: ``fastadapt demo``'s problem, logistic regression on raw
  features whose scales span 1e-2 .. 1e2, so gradients (and Adam's second
  moments) span eight orders of magnitude within one array; the figure is the
  final suboptimality ``f - f*`` (``f*`` from the demo's Newton solve);
- ``gpt``: a GPT-shaped two-layer transformer on a synthetic character stream
  (``_gpt_problem``; gradients from torch's autograd, so it needs torch); the
  figure is the validation loss.

The table is each mode's figure and its ratio to the float32 run's: near 1 the
mode costs nothing on that problem; above 1 it hurts. bfloat16 params with
round-to-nearest stall once the updates fall below half an ulp of the weights
(stochastic rounding and master weights avoid that); 8-bit state shares one
absmax per block of 256 elements, so a second moment far below its block's
largest quantizes to zero and its coordinate takes a step of about ``lr *
m / eps``: the logistic problem, whose ten weights share one block, shows it.
Companded 8-bit state (a scale per 32, fourth-root second moments that never
round a positive value to zero) keeps them.

``fastadapt bench --sections accuracy`` prints it (``--accuracy-plot PATH``
draws the loss curves); :func:`study` returns plain data for the report and
the tests.
"""
import numpy as np

#: mode -> (label, param dtype name, optimizer storage options)
MODES = {
    "fp32": ("float32", "float32", {}),
    "bf16_state": ("fp32 params, bf16 state", "float32", {"state_dtype": "bfloat16"}),
    "int8_state": ("fp32 params, 8-bit state", "float32", {"state_dtype": "int8"}),
    "int8c_state": ("fp32 params, companded 8-bit state", "float32",
                    {"state_dtype": "int8c"}),
    "bf16_nearest": ("bf16 params + state, nearest rounding", "bfloat16",
                     {"state_dtype": "bfloat16"}),
    "bf16_sr": ("bf16 params + state, stochastic rounding", "bfloat16",
                {"state_dtype": "bfloat16", "stochastic_rounding": True, "seed": 0}),
    "bf16_master": ("bf16 params, fp32 master + state", "bfloat16", {"master_weights": True}),
    "bf16_split16": ("bf16 params, split master bf16+16, fp32 state", "bfloat16",
                     {"master_weights": "bf16+16"}),
    "bf16_split8": ("bf16 params, split master bf16+8, fp32 state", "bfloat16",
                    {"master_weights": "bf16+8"}),
    "low12": ("bf16 params, companded 8-bit state, bf16+8 master (12.5 B/elem)", "bfloat16",
              {"state_dtype": "int8c", "master_weights": "bf16+8"}),
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


def _mlp(seed):
    x, y, start = _problem(seed)
    return start, lambda params, final=False: loss_and_grads(x, y, params)


def _logistic(seed):
    from .. import demo
    x, y, scales = demo.make_problem(seed)
    f_star = demo.optimum(x, y, scales)[0]
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    n = np.float32(len(y))

    def gap_and_grads(params, final=False):
        w, b = (np.asarray(p, np.float32) for p in params)
        z = x32 @ w + b[0]
        z64 = z.astype(np.float64)
        loss = float(np.mean(np.logaddexp(0.0, z64) - y * z64))
        r = (np.float32(0.5) * (np.float32(1) + np.tanh(np.float32(0.5) * z)) - y32) / n
        return loss - f_star, [x32.T @ r, np.array([r.sum()], np.float32)]
    return [np.zeros(x.shape[1], np.float32), np.zeros(1, np.float32)], gap_and_grads


def _gpt(seed):
    from ._gpt_problem import gpt
    return gpt(seed, every=_gpt.every)


_gpt.every = 10         # steps between validation losses


#: problem -> (title, what the figure is, builder(seed) -> (start, figure_and_grads), lr)
PROBLEMS = {
    "mlp": ("a small MLP (tanh, 16-32-1, squared loss)", "final loss", _mlp, 1e-3),
    "logistic": ("fastadapt demo's logistic regression (feature scales 1e-2 .. 1e2)",
                 "final f - f*", _logistic, 0.1),
    "gpt": ("a GPT-shaped model (2 layers, d_model 48, 59K params) on a synthetic "
            "character stream", "validation loss", _gpt, 3e-3),
}


def run(steps=300, lr=None, seed=0, modes=None, problem="mlp"):
    """One problem in each mode: ``{"problem", "title", "metric", "steps", "lr",
    "initial_loss", "rows": [{"mode", "label", "final_loss", "ratio"}],
    "curves"}`` (``final_loss`` and the curves hold the problem's figure)."""
    import fastadapt
    from .._storage import bfloat16
    title, metric, build, default_lr = PROBLEMS[problem]
    lr = default_lr if lr is None else lr
    rows, curves = [], {}
    for key in (modes or MODES):
        start, figure_and_grads = build(seed)       # the same start and batches in each mode
        label, dtype, options = MODES[key]
        dtype = bfloat16("the accuracy study") if dtype == "bfloat16" else np.dtype(dtype)
        opt = fastadapt.Adam([p.astype(dtype) for p in start], lr=lr, **options)
        losses = []
        for _ in range(steps):
            loss, grads = figure_and_grads(opt.params)
            if loss is not None:             # a problem may score every few steps
                losses.append(loss)
            opt.step([g.astype(dtype) for g in grads])
        losses.append(figure_and_grads(opt.params, final=True)[0])
        curves[key] = losses
        rows.append({"mode": key, "label": label, "final_loss": losses[-1]})
    base = curves["fp32"][-1] if "fp32" in curves else None
    for r in rows:
        r["ratio"] = r["final_loss"] / base if base else None
    return {"problem": problem, "title": title, "metric": metric, "steps": steps, "lr": lr,
            "every": getattr(build, "every", 1),
            "initial_loss": curves[next(iter(curves))][0], "rows": rows, "curves": curves}


def study(steps=300, seed=0, modes=None):
    """Every problem of :data:`PROBLEMS`: ``{"problems": [run(...), ...]}``
    (the GPT-shaped one needs torch for its gradients: without it, it is
    listed under ``"unavailable"``)."""
    out = {"problems": [], "unavailable": {}}
    for p in PROBLEMS:
        if p == "gpt" and not _has_torch():
            out["unavailable"][p] = "torch is not installed (it computes the gradients)"
            continue
        out["problems"].append(run(steps, seed=seed, modes=modes, problem=p))
    return out


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def problems(data):
    """The per-problem results of :func:`study`'s output (or of one :func:`run`'s,
    as older JSON files hold)."""
    return data["problems"] if "problems" in data else [data]


def table(result):
    """(headers, rows) for the report, for one problem's result."""
    metric = result.get("metric", "final loss")
    headers = ["mode", metric, "x float32's"]
    return headers, [[r["label"], f"{r['final_loss']:.4g}",
                      "n/a" if r["ratio"] is None else f"{r['ratio']:.3f}"]
                     for r in result["rows"]]
