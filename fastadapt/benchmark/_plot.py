"""The bench's plots, the only module that imports matplotlib (lazily: the
bench runs and reports without it)."""
import numpy as np

from ._accuracy import problems
from ._implementations import IMPLEMENTATIONS, LABELS
from ._tables import disturbed

_STYLE = {"fastadapt": dict(color="C0", lw=2.2, marker="o"),
          "roofline": dict(color="black", lw=1.4, ls="--"),
          "numpy": dict(color="C2", marker="s", ms=3),
          "numpy_alloc": dict(color="C2", marker="s", ms=3, ls=":", alpha=0.7),
          "torch_single": dict(color="C3", marker="v", ms=3),
          "torch_foreach": dict(color="C1", marker="^", ms=3),
          "torch_fused": dict(color="C4", marker="D", ms=3)}


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend, or None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


#: Why a plot was not written when :func:`pyplot` is None.
NO_MATPLOTLIB = "matplotlib not installed (pip install 'fastadapt[bench]')"


def throughput(data, path):
    """Throughput vs size, one panel per rule configuration; returns None or
    the reason no plot was written."""
    plt = pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    rows = [r for r in data.get("sweep") or [] if disturbed(r) is None]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    if not labels:
        return ("no sweep results to plot" if not data.get("sweep") else
                "every sweep measurement stayed disturbed: nothing to plot")
    ncols = min(4, len(labels))
    nrows = -(-len(labels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(4.2 * ncols, 8.4), 3.3 * nrows + 1.2),
                             squeeze=False, sharex=True)
    for ax, label in zip(axes.flat, labels):
        mine = sorted((r for r in rows if r["label"] == label), key=lambda r: r["n"])
        for name in IMPLEMENTATIONS:
            pts = [(r["n"], r["implementations"][name]["gbps"]) for r in mine
                   if "gbps" in r["implementations"][name]]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, label=LABELS[name], **_STYLE[name])
        ax.set_xscale("log")
        ax.set_title(f"{label} ({mine[0]['bytes_per_element']} B/elem)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_ylim(bottom=0)
    for ax in axes.flat[len(labels):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("elements")
    for ax in axes[:, 0]:
        ax.set_ylabel("GB/s")
    handles, names = axes.flat[0].get_legend_handles_labels()
    if not names:
        names, handles = ["(none)"], [plt.Line2D([], [])]
    legend_cols = len(names) if ncols >= 4 else min(4, len(names))
    legend_rows = -(-len(names) // legend_cols)
    fig.legend(handles, names, loc="lower center", ncol=legend_cols, fontsize=9, frameon=False)
    m = data["machine"]
    fig.suptitle(f"fastadapt bench, {data['settings']['dtype']}: {m['cpu']}, "
                 f"{m['usable_cpus']} cores, {m['date_utc']}", fontsize=11)
    bottom = (0.3 * legend_rows + 0.15) / fig.get_figheight()
    fig.tight_layout(rect=(0, bottom, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def accuracy(data, path):
    """Loss curves per problem (log scale), one line per mode; returns None or
    the reason no plot was written."""
    plt = pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    results = problems(data)
    fig, axes = plt.subplots(1, len(results), figsize=(6.2 * len(results), 4.4), squeeze=False)
    for ax, result in zip(axes[0], results):
        for r in result["rows"]:
            ys = np.maximum(np.asarray(result["curves"][r["mode"]], np.float64), 1e-12)
            style = dict(color="black", lw=2.4, zorder=3) if r["mode"] == "fp32" else dict(lw=1.3)
            steps = np.minimum(np.arange(ys.size) * result.get("every", 1), result["steps"])
            ax.plot(steps, ys, label=f"{r['label']} ({r['ratio']:.3g}x)"
                    if r["ratio"] is not None else r["label"], **style)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(result.get("metric", "final loss").replace("final ", ""))
        ax.set_title(f"Adam, lr {result['lr']:g}: {result['title']}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, title="mode (final, x float32's)", title_fontsize=7)
    fig.suptitle("Storage modes: training curves against float32", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
