"""``fastadapt demo``: why per-parameter (adaptive) learning rates matter.

The problem is logistic regression on raw, unnormalised features whose scales
span four orders of magnitude (1e-2 .. 1e2), as when columns are measured in
unrelated units. The loss is smooth and convex, but its curvature along
feature ``j`` grows like ``scale_j**2``: plain gradient descent must take a
learning rate small enough for the largest-scale feature and then crawls along
the small-scale ones. Adaptive methods divide each coordinate's step by a
running size of its own gradient, which removes most of that imbalance.

Every optimizer runs full-batch from the same start (zeros) on the same data,
with gradients computed by NumPy. Each learning rate is the best (lowest final
loss) of one decade grid shared by all optimizers, so no method is tuned more
finely than another; the minimum loss ``f*`` comes from Newton's method on the
standardised problem. Deterministic for a given ``--seed``.
"""
import argparse
import math
import time

import numpy as np

from . import optim, schedules

# name, class, fixed options (the lr is tuned)
OPTIMIZERS = [
    ("SGD", optim.SGD, {}),
    ("SGD-momentum", optim.SGD, {"momentum": 0.9}),
    ("AdaGrad", optim.Adagrad, {}),
    ("RMSprop", optim.RMSprop, {}),
    ("Adadelta", optim.Adadelta, {}),
    ("Adam", optim.Adam, {}),
    ("AdamW", optim.AdamW, {}),
    ("AMSGrad", optim.Adam, {"amsgrad": True}),
    ("Adamax", optim.Adamax, {}),
    ("RAdam", optim.RAdam, {}),
    ("NAdam", optim.NAdam, {}),
    ("ASGD", optim.ASGD, {}),
    ("Rprop", optim.Rprop, {}),
    ("Lion", optim.Lion, {}),
]
ADAPTIVE = ("AdaGrad", "RMSprop", "Adadelta", "Adam", "AdamW", "AMSGrad", "Adamax", "RAdam",
            "NAdam")
# 1e-6, 3e-6, 1e-5, ..., 3, 10: two points a decade, shared by every optimizer
LR_GRID = tuple(float(f"{m}e{k}") for k in range(-6, 2) for m in (1, 3))[:-1]
TARGET_FRACTION = 0.1   # target: 90% of the way from f(0) to f*


def make_problem(seed=0, n=1000, d=10, low=-2.0, high=2.0):
    """Features ``X = Z * scales`` (``Z`` standard normal, scales log-spaced from
    ``10**low`` to ``10**high``) and labels drawn from a logistic model in which
    every feature matters equally in standardised units."""
    rng = np.random.default_rng(seed)
    scales = 10.0 ** np.linspace(low, high, d)
    z = rng.standard_normal((n, d))
    logits = z @ rng.standard_normal(d) + 0.3
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float64)
    return z * scales, y, scales


def loss_and_grad(x, y, w, b):
    """Mean logistic loss and its gradient with respect to ``w`` and ``b``."""
    z = x @ w + b[0]
    loss = float(np.mean(np.logaddexp(0.0, z) - y * z))
    r = (0.5 * (1.0 + np.tanh(0.5 * z)) - y) / len(y)      # sigmoid(z) - y, overflow-free
    return loss, x.T @ r, np.array([r.sum()])


def _hessian(raw, theta):
    p = 0.5 * (1.0 + np.tanh(0.5 * (raw @ theta)))
    return (raw * (p * (1 - p))[:, None]).T @ raw / len(raw)


def optimum(x, y, scales, iterations=40):
    """``f*``, the condition number of the raw Hessian there, the largest
    stable step of gradient descent at the start, ``2 / lambda_max(H(0))``, the
    optimal weights, and the largest stable step at the optimum,
    ``2 / lambda_max(H(w*))`` (larger: the curvature falls as the fit improves).
    ``f*`` is found by Newton's method on the standardised features (well
    conditioned, so it converges)."""
    a = np.hstack([x / scales, np.ones((len(y), 1))])
    theta = np.zeros(a.shape[1])
    for _ in range(iterations):
        p = 0.5 * (1.0 + np.tanh(0.5 * (a @ theta)))
        hessian = (a * (p * (1 - p))[:, None]).T @ a / len(y)
        theta -= np.linalg.solve(hessian, a.T @ (p - y) / len(y))
    w, b = theta[:-1] / scales, theta[-1:]
    raw = np.hstack([x, np.ones((len(y), 1))])
    eig = np.linalg.eigvalsh(_hessian(raw, np.append(w, b)))
    lr_cap = 2.0 / np.linalg.eigvalsh(_hessian(raw, np.zeros(raw.shape[1])))[-1]
    return (loss_and_grad(x, y, w, b)[0], float(eig[-1] / eig[0]), float(lr_cap), w,
            float(2.0 / eig[-1]))


def spikes(losses, f_star, start, factor=10.0):
    """Loss spikes after step ``start``: steps whose gap to ``f*`` exceeds
    ``factor`` times the smallest gap reached before them. Returns
    ``(count, worst)`` where ``worst`` is ``(step, gap, best gap before it)``
    for the largest ratio, or None."""
    gap = np.asarray(losses, np.float64) - f_star
    count, worst, best = 0, None, math.inf
    for t in range(start, len(gap)):
        if not math.isfinite(gap[t]):
            break
        if best > 0 and gap[t] > factor * best:
            count += 1
            if worst is None or gap[t] / best > worst[1] / worst[2]:
                worst = (t, float(gap[t]), float(best))
        best = min(best, gap[t])
    return count, worst


def train(cls, options, lr, x, y, steps):
    """Losses before each step and after the last (``steps + 1`` values; inf once
    diverged), the final weights and the wall time in seconds."""
    opt = cls([np.zeros(x.shape[1]), np.zeros(1)], lr=lr, **options)
    w, b = opt.params
    grad_w, grad_b = opt.grads
    losses = np.full(steps + 1, np.inf)
    start = time.perf_counter()
    for t in range(steps + 1):
        loss, gw, gb = loss_and_grad(x, y, w, b)
        if not math.isfinite(loss) or loss > 1e3:
            break
        losses[t] = loss
        if t == steps:
            break
        grad_w[...] = gw
        grad_b[...] = gb
        opt.step()
    return losses, w.copy(), time.perf_counter() - start


def run(steps=1000, seed=0, names=None):
    """Tune and train every optimizer (those of ``names`` only, when given; SGD
    and Adam always, as the narrative compares with them); returns the problem
    summary and one row each."""
    x, y, scales = make_problem(seed)
    f_star, condition, lr_cap, w_star, lr_cap_end = optimum(x, y, scales)
    f0 = loss_and_grad(x, y, np.zeros(x.shape[1]), np.zeros(1))[0]
    target = f_star + TARGET_FRACTION * (f0 - f_star)
    rows = []
    for name, cls, options in OPTIMIZERS:
        if names is not None and name not in {*names, "SGD", "Adam"}:
            continue
        best = None
        for lr in LR_GRID:
            losses, w, seconds = train(cls, options, lr, x, y, steps)
            if best is None or losses[-1] < best["final"]:
                best = {"name": name, "lr": lr, "final": losses[-1], "losses": losses,
                        "seconds": seconds,
                        # how far each weight got, 0 at the start (zeros) and 1 at w*
                        "progress": w / w_star}
        reached = np.flatnonzero(best["losses"] <= target)
        best["steps_to_target"] = int(reached[0]) if reached.size else None
        best["spikes"] = (spikes(best["losses"], f_star, best["steps_to_target"])
                          if reached.size else (0, None))
        rows.append(best)
    # Adam's best lr again, annealed to 0 over the run: does a decaying lr remove
    # the spikes a constant one shows near convergence?
    adam = next(r for r in rows if r["name"] == "Adam")
    losses, _, _ = train(optim.Adam, {}, schedules.CosineAnnealing(adam["lr"], steps), x, y,
                         steps)
    reached = np.flatnonzero(losses <= target)
    cosine = {"lr": adam["lr"], "final": losses[-1],
              "spikes": spikes(losses, f_star, int(reached[0])) if reached.size else (0, None)}
    return {"f_star": f_star, "f0": f0, "target": target, "condition": condition,
            "adam_cosine": cosine,
            "lr_cap": lr_cap, "lr_cap_end": lr_cap_end,
            "scales": (scales[0], scales[-1]), "steps": steps, "rows": rows}


def table(result):
    """The results as a fixed-width text table."""
    head = (f"{'optimizer':<13} {'lr':>6} {'final loss':>11} {'gap to f*':>10} "
            f"{'steps to target':>16} {'time':>8}")
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        reached = "not reached" if r["steps_to_target"] is None else str(r["steps_to_target"])
        final = f"{r['final']:.5f}" if math.isfinite(r["final"]) else "diverged"
        gap = f"{r['final'] - result['f_star']:.2e}" if math.isfinite(r["final"]) else "-"
        lines.append(f"{r['name']:<13} {r['lr']:>6.3g} {final:>11} {gap:>10} "
                     f"{reached:>16} {r['seconds'] * 1e3:>6.0f}ms")
    lines.append(f"lr: the lowest final loss over {{{LR_GRID[0]:g}, {LR_GRID[1]:g}, "
                 f"{LR_GRID[2]:g}, ..., {LR_GRID[-1]:g}}}, the same grid for all; time: wall "
                 f"time of that run, NumPy gradients included.")
    return "\n".join(lines)


def narrative(result):
    """What the table shows, computed from it."""
    rows = {r["name"]: r for r in result["rows"]}
    f_star = result["f_star"]
    sgd = rows["SGD"]
    best = min(result["rows"], key=lambda r: r["final"])
    adaptive = [n for n in ADAPTIVE if n in rows]
    beat = [n for n in adaptive if rows[n]["final"] < sgd["final"]]
    gap = lambda r: r["final"] - f_star  # noqa: E731
    lines = [f"Feature scales {result['scales'][0]:g}..{result['scales'][1]:g}: the Hessian "
             f"at the optimum has condition number {result['condition']:.1e}; "
             f"f* = {f_star:.5f}, target = f* + {TARGET_FRACTION:g} x (f(0) - f*) "
             f"= {result['target']:.5f}."]
    reached = [r for r in result["rows"] if r["steps_to_target"] is not None]
    if reached:
        fastest = min(reached, key=lambda r: r["steps_to_target"])
        lines.append(f"{len(reached)} of {len(result['rows'])} optimizers reached the target "
                     f"within {result['steps']} steps ({', '.join(r['name'] for r in reached)}); "
                     f"fastest: {fastest['name']}, in {fastest['steps_to_target']} steps.")
    else:
        lines.append(f"No optimizer reached the target within {result['steps']} steps.")
    cap0, cap1 = result["lr_cap"], result["lr_cap_end"]
    lines.append(f"Gradient descent is stable while lr < 2/lambda_max(H), which is {cap0:.2g} "
                 f"at the start (w = 0) and {cap1:.2g} at the optimum: the curvature falls as "
                 f"the fit improves. "
                 + (f"Plain SGD's best lr, {sgd['lr']:g}, lies between the two, so its first "
                    f"steps overshoot (the loss rises) before the curvature drops below its "
                    f"reach. " if cap0 < sgd["lr"] <= cap1 else
                    f"Plain SGD's best lr is {sgd['lr']:g}. ")
                 + f"After {result['steps']} steps it had moved the weight of the smallest-scale "
                 f"feature {100 * sgd['progress'][0]:.2g}% of the way to its optimum and that of "
                 f"the largest-scale one {sgd['progress'][-1]:.0%}; {best['name']}: "
                 f"{best['progress'][0]:.0%} and {best['progress'][-1]:.0%}.")
    spiky = [r for r in result["rows"] if r["spikes"][0]]
    if spiky:
        def what(r):
            count, (t, gap_t, before) = r["spikes"]
            return (f"{r['name']} {count} steps, worst at step {t}: gap {gap_t:.1e} after "
                    f"{before:.1e}")
        lines.append(
            "Loss spikes after reaching the target (gap to f* above 10x the best gap so far): "
            + "; ".join(what(r) for r in spiky) + ". With a constant lr this is a known Adam-"
            "family behaviour near convergence on ill-conditioned problems: as the "
            "gradients shrink, the second-moment average v decays (beta2 = 0.999 forgets "
            "in ~1000 steps, RMSprop's alpha = 0.99 in ~100) while the step lr * m / sqrt(v) "
            "stays near lr in size instead of shrinking, so a steep (large-scale) "
            "coordinate overshoots; the large gradient that follows refills v and damps "
            "the steps until v decays again. The table keeps each grid's best final loss "
            "all the same.")
        cos = result["adam_cosine"]
        lines.append(f"The same Adam run with its lr {cos['lr']:g} annealed to 0 "
                     f"(schedules.CosineAnnealing over {result['steps']} steps): "
                     f"{cos['spikes'][0]} spike steps, final gap to f* "
                     f"{cos['final'] - f_star:.1e}.")
    lines.append(f"{len(beat)} of {len(adaptive)} adaptive methods "
                 f"({', '.join(beat) or 'none'}) ended below plain SGD; the best optimizer, "
                 f"{best['name']}, ended {gap(sgd) / max(gap(best), 1e-300):.0f}x closer to "
                 f"f* than SGD.")
    return "\n".join(lines)


def plot(result, path):
    """Write the loss curves (gap to f*, log scale) to ``path``; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in result["rows"]:
        gap = r["losses"] - result["f_star"]
        ax.semilogy(np.arange(len(gap)), np.maximum(gap, 1e-12),
                    label=f"{r['name']} (lr {r['lr']:g})")
    ax.axhline(result["target"] - result["f_star"], color="k", ls=":", lw=1, label="target")
    ax.set_xlabel("step")
    ax.set_ylabel("loss - f*")
    ax.set_title(f"Logistic regression, feature scales {result['scales'][0]:g}.."
                 f"{result['scales'][1]:g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="fastadapt demo",
        description="Train a badly-conditioned logistic regression with every optimizer.")
    parser.add_argument("--steps", type=int, default=1000, help="steps per run (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    parser.add_argument("--plot", default="fastadapt-demo.png",
                        help="PNG of the loss curves (default fastadapt-demo.png; "
                             "needs matplotlib)")
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    start = time.perf_counter()
    result = run(args.steps, args.seed)
    print(table(result))
    print()
    print(narrative(result))
    if not args.no_plot:
        if plot(result, args.plot):
            print(f"Loss curves written to {args.plot}.")
        else:
            print("matplotlib is not installed: no plot (pip install matplotlib).")
    print(f"({len(OPTIMIZERS)} optimizers x {len(LR_GRID)} learning rates x {args.steps} "
          f"steps in {time.perf_counter() - start:.1f} s)")
    return 0
