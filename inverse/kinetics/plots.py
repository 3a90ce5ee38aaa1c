"""Plots of a kinetics fit: μ_h and k₀ with their ±2σ bands against the prior (and the truth of a
synthetic series), the k(r) map and its σ, measured vs predicted frames, the residual per frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(*args, **kwargs)


def plot_laws(fit, path: Path) -> Path:
    plt, fig, (ax1, ax2) = _figure(1, 2, figsize=(10, 4))
    x = fit.X
    # absolute μ_h (a measured voltage) is shown as the open-circuit voltage −μ_h/e; relative μ_h in meV
    shown = (lambda mu: -np.asarray(mu)) if fit.mu_absolute else (lambda mu: 1e3 * np.asarray(mu))
    ax1.plot(x, shown(fit.mu_h_eV), label="learned")
    ax1.fill_between(
        x,
        shown(fit.mu_h_eV - 2 * fit.mu_h_std_eV),
        shown(fit.mu_h_eV + 2 * fit.mu_h_std_eV),
        alpha=0.3,
        label="±2σ (Laplace)",
    )
    ax1.plot(x, shown(fit.mu_prior_eV), "--", label="prior (regular solution)")
    ax2.semilogy(x, fit.k0_A_per_m2, label="learned")
    ax2.fill_between(
        x,
        np.clip(fit.k0_A_per_m2 - 2 * fit.k0_std_A_per_m2, 1e-30, None),
        fit.k0_A_per_m2 + 2 * fit.k0_std_A_per_m2,
        alpha=0.3,
        label="±2σ (Laplace)",
    )
    ax2.semilogy(x, fit.k0_prior_A_per_m2, "--", label="prior")
    t = fit.truth
    if "truth_mu_h_eV" in t and "truth_X" in t:
        tx, tm = t["truth_X"], t["truth_mu_h_eV"]
        ref = (tx >= 0.1) & (tx <= 0.9)
        if fit.mu_absolute and "truth_voltage_zero_V" in t:
            ax1.plot(tx, shown(tm - float(t["truth_voltage_zero_V"])), ":", color="k", label="truth")
        elif not fit.mu_absolute:
            ax1.plot(tx, shown(tm - tm[ref].mean()), ":", color="k", label="truth")
        ax2.semilogy(tx, t["truth_k0_A_per_m2"], ":", color="k", label="truth")
    if fit.mu_absolute:
        ax1.set(xlabel="X", ylabel="OCV = −μ_h/e (V vs Li/Li⁺)", title="homogeneous chemical potential")
    else:
        ax1.set(xlabel="X", ylabel="μ_h (meV, relative)", title="homogeneous chemical potential")
    ax2.set(xlabel="X", ylabel="k₀ (A/m²)", title=f"exchange prefactor ({fit.rate_law})")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_k_map(fit, path: Path) -> Path:
    n = len(fit.log_k)
    plt, fig, axes = _figure(n, 2, figsize=(8, 3.6 * n), squeeze=False)
    for i in range(n):
        im = axes[i, 0].imshow(fit.log_k[i], cmap="viridis")
        fig.colorbar(im, ax=axes[i, 0])
        axes[i, 0].set_title(f"log k(r), series {i}")
        im = axes[i, 1].imshow(fit.log_k_std[i], cmap="magma")
        fig.colorbar(im, ax=axes[i, 1])
        axes[i, 1].set_title("σ of log k (Laplace)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_frames(fit, path: Path, count: int = 4) -> Path:
    pred, obs = fit.predicted[0], fit.observed[0]
    frames = [t for t in range(len(pred)) if np.isfinite(pred[t]).any()]
    pick = [frames[int(i)] for i in np.linspace(0, len(frames) - 1, min(count, len(frames)))]
    plt, fig, axes = _figure(2, len(pick), figsize=(2.6 * len(pick), 5), squeeze=False)
    for j, t in enumerate(pick):
        axes[0, j].imshow(obs[t], vmin=0, vmax=1, cmap="coolwarm")
        axes[0, j].set_title(f"measured t{t}" + (" (held out)" if fit.heldout[0][t] else ""), fontsize=8)
        axes[1, j].imshow(pred[t], vmin=0, vmax=1, cmap="coolwarm")
        axes[1, j].set_title(f"predicted t{t}", fontsize=8)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_residuals(fit, path: Path) -> Path:
    plt, fig, ax = _figure(figsize=(6, 3.5))
    for i, (rms, held) in enumerate(zip(fit.residual_rms, fit.heldout)):
        t = np.arange(len(rms))
        ax.plot(t, rms, "o-", label=f"series {i}")
        ax.plot(t[held], rms[held], "s", mfc="none", color="r", label="held out" if i == 0 else None)
    ax.axhline(fit.fit["sigma_X"], ls="--", color="k", label="σ_X")
    ax.set(xlabel="frame", ylabel="rms(predicted − measured X)", title="residual per frame")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
