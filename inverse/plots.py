"""PNG reports of a calibration (matplotlib, Agg backend): the law with bands against Vegard, and maps
of X, measured, predicted and residual strain per particle (crystal frame)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_law(cal, path: Path, truth: dict | None = None) -> Path:
    """ε⁰_a(X), ε⁰_c(X) with ±2σ bands, the Vegard line of the learned slopes and the X coverage."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    x = cal.knots_X
    for i, (ax, name) in enumerate(zip(axes[:2], ("a", "c"))):
        v, s = cal.values[i] * 100, cal.std[i] * 100
        ax.fill_between(x, v - 2 * s, v + 2 * s, color="C0", alpha=0.25, label="±2σ")
        ax.plot(x, v, "o-", color="C0", label="learned")
        slope = getattr(cal.vegard, f"slope_{name}")
        ax.plot([0, 1], [0, slope * 100], "--", color="k", label=f"Vegard fit {slope * 100:.2f} %")
        if truth is not None and f"truth_law_{name}" in truth:
            ax.plot(truth["truth_law_X"], np.asarray(truth[f"truth_law_{name}"]) * 100, ":", color="C3",
                    label="truth")
        unconstrained = ~cal.identifiability.constrained
        if unconstrained.any():
            ax.plot(x[unconstrained], v[unconstrained], "x", color="C3", ms=9, label="not constrained")
        ax.set_xlabel("Li fraction X")
        ax.set_ylabel(f"ε⁰_{name} (%)")
        ax.legend(fontsize=7)
    edges = cal.identifiability.coverage_edges
    axes[2].bar(edges[:-1], cal.identifiability.coverage_counts, width=np.diff(edges), align="edge")
    axes[2].set_xlabel("Li fraction X (denoised)")
    axes[2].set_ylabel("pixels")
    axes[2].set_title("coverage")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_maps(maps: dict, path: Path, title: str = "") -> Path:
    """3×4 panels: X (observed, denoised), and measured / predicted / residual ε_aa, ε_cc, ε_ac."""
    plt = _pyplot()
    fig, axes = plt.subplots(3, 4, figsize=(14, 9.5))
    comps = ("aa", "cc", "ac")
    axes[0, 0].imshow(maps["composition"], vmin=0, vmax=1, cmap="viridis")
    axes[0, 0].set_title("X observed")
    axes[1, 0].imshow(maps["composition_denoised"], vmin=0, vmax=1, cmap="viridis")
    axes[1, 0].set_title("X denoised")
    score = np.sqrt(sum(np.nan_to_num(maps[f"residual_{c}"]) ** 2 for c in comps))
    axes[2, 0].imshow(np.where(maps["mask"], score, np.nan), cmap="magma")
    spots = maps["hotspots"]
    if len(spots):
        axes[2, 0].plot(spots[:, 1], spots[:, 0], "o", mfc="none", mec="cyan", ms=10)
    axes[2, 0].set_title("|residual| and hot spots")
    for j, c in enumerate(comps):
        meas, pred, res = maps[f"measured_{c}"], maps[f"predicted_{c}"], maps[f"residual_{c}"]
        lo, hi = np.nanpercentile(np.concatenate([meas[np.isfinite(meas)], pred[np.isfinite(pred)]]), [1, 99])
        rr = np.nanpercentile(np.abs(res), 99)
        for row, (field, label, kw) in enumerate((
            (meas, "measured", {"vmin": lo, "vmax": hi, "cmap": "RdBu_r"}),
            (pred, "predicted", {"vmin": lo, "vmax": hi, "cmap": "RdBu_r"}),
            (res, "residual", {"vmin": -rr, "vmax": rr, "cmap": "PuOr_r"}),
        )):
            im = axes[row, j + 1].imshow(field, **kw)
            axes[row, j + 1].set_title(f"{label} ε_{c}")
            fig.colorbar(im, ax=axes[row, j + 1], fraction=0.046)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
