"""PNG figures of the screening (matplotlib, Agg backend): per-candidate snapshots and curves, Pareto plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def snapshot_png(frames: np.ndarray, path, *, title: str, label: str, cmap: str,
                 soc: np.ndarray | None = None, vmin: float | None = None, vmax: float | None = None) -> None:
    """Save a row of (H, W) frames from ``frames`` (S, H, W) sharing one colour scale and colour bar.

    ``path``: a file name or a binary file object.
    """
    plt = _pyplot()
    frames = np.asarray(frames, dtype=float)
    if frames.ndim == 2:
        frames = frames[None]
    count = frames.shape[0]
    finite = frames[np.isfinite(frames)]
    vmin = float(finite.min()) if vmin is None and finite.size else vmin
    vmax = float(finite.max()) if vmax is None and finite.size else vmax
    fig, axes = plt.subplots(1, count, figsize=(1.9 * count + 0.9, 2.3), squeeze=False, dpi=80)
    image = None
    for k, ax in enumerate(axes[0]):
        # grid axis 0 is crystal a (rows), axis 1 the second in-plane axis (columns)
        image = ax.imshow(frames[k], cmap=cmap, vmin=vmin, vmax=vmax, origin="lower")
        ax.set_xticks([])
        ax.set_yticks([])
        if soc is not None and k < len(soc):
            ax.set_title(f"SOC {float(soc[k]):.2f}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=label)
    fig.savefig(path, format="png")
    plt.close(fig)


def voltage_png(curve: np.ndarray, path, *, title: str) -> None:
    """Save the voltage curve (n, 2) = [Li fraction X, voltage V]."""
    plt = _pyplot()
    curve = np.asarray(curve, dtype=float)
    fig, ax = plt.subplots(figsize=(3.6, 2.6), dpi=80)
    if curve.ndim == 2 and curve.shape[0] > 0:
        ax.plot(curve[:, 0], curve[:, 1], lw=1.2)
    ax.set_xlabel("Li fraction X")
    ax.set_ylabel("voltage (V vs Li/Li+)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def render_candidate(snapshots: dict, voltage_curve, formula: str) -> dict[str, bytes]:
    """PNG bytes of one candidate: ``composition.png``, ``stress.png`` and ``voltage.png``.

    ``snapshots``: "composition" (S, H, W), "max_principal_stress_GPa" (S, H, W), "soc" (S,). Runs in a
    :class:`Renderer` process beside the simulators (numpy and matplotlib only), not in the driver.
    """
    import io

    pngs: dict[str, bytes] = {}

    def save(name: str, draw, *args, **kwargs) -> None:
        buffer = io.BytesIO()
        draw(*args, buffer, **kwargs)
        pngs[name] = buffer.getvalue()

    soc = snapshots.get("soc")
    if np.size(snapshots.get("composition", ())):
        save("composition.png", snapshot_png, snapshots["composition"], title=f"{formula}: Li fraction X",
             label="X", cmap="viridis", soc=soc, vmin=0.0, vmax=1.0)
    stress = snapshots.get("max_principal_stress_GPa")
    if stress is not None and np.size(stress):
        stress_MPa = np.asarray(stress, dtype=float) * 1.0e3
        # the particle fidelity marks the void around the platelet with a huge negative value
        inside = np.isfinite(stress_MPa) & (np.abs(stress_MPa) < 1e6)
        limit = float(np.abs(stress_MPa[inside]).max()) if inside.any() else 1.0
        # diverging, centred on 0: red is tension (the fracture risk), blue compression
        save("stress.png", snapshot_png, np.where(inside, stress_MPa, np.nan),
             title=f"{formula}: max principal stress", label="MPa", cmap="RdBu_r", soc=soc,
             vmin=-limit, vmax=limit)
    if voltage_curve is not None:
        save("voltage.png", voltage_png, voltage_curve, title=f"{formula}: voltage")
    return pngs


class Renderer:
    """Holds matplotlib loaded in its own process; the sweep runs a few as Ray actors that reserve no CPU."""

    def render(self, snapshots: dict, voltage_curve, formula: str) -> dict[str, bytes]:
        return render_candidate(snapshots, voltage_curve, formula)


def pareto_png(table, path: Path) -> None:
    """Usable specific energy against peak tensile stress, colour = |volume change|, Pareto front marked,
    infeasible candidates as grey crosses.

    ``table`` is the output of :func:`screening.ranking.rank_candidates`.
    """
    plt = _pyplot()
    energy = "usable_specific_energy_Wh_kg"
    energy = energy if energy in table else "specific_energy_Wh_kg"
    ranked = table[table["pareto_rank"].notna()]
    fig, ax = plt.subplots(figsize=(6.0, 4.4), dpi=100)
    if "feasible" in table:
        infeasible = table[~table["feasible"].astype(bool) & table["peak_tensile_stress_MPa"].notna()]
        if len(infeasible):
            ax.scatter(infeasible["peak_tensile_stress_MPa"], infeasible[energy], marker="x", c="0.6", s=22,
                       label="infeasible")
    points = ax.scatter(ranked["peak_tensile_stress_MPa"], ranked[energy],
                        c=ranked["volume_change_pct"].abs(), cmap="viridis", s=28, edgecolor="none")
    front = ranked[ranked["pareto_rank"] == 1].sort_values("peak_tensile_stress_MPa")
    ax.scatter(front["peak_tensile_stress_MPa"], front[energy], s=70,
               facecolor="none", edgecolor="crimson", lw=1.4, label="Pareto front (rank 1)")
    from candidates.space import chemist_formula  # here, not at the top: the Renderer actors stay light

    for _, row in front.iterrows():
        xy = (row["peak_tensile_stress_MPa"], row[energy])
        ax.annotate(chemist_formula(str(row.get("formula", ""))), xy, fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    fig.colorbar(points, ax=ax, label="|volume change| (%)")
    ax.set_xlabel("peak tensile stress (MPa)  ← better")
    ax.set_ylabel(f"{'usable ' if energy.startswith('usable') else ''}specific energy (Wh/kg)  ↑ better")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def score_errorbars_png(table, path: Path, top: int = 20) -> None:
    """Score ± 1σ over the draws (``score_std``) of the best ``top`` ranked candidates, with ``p_pareto``.

    ``table``: a ranking with ``score``, ``score_std``, ``p_pareto`` (:func:`screening.ranking.rank_draws`).
    """
    plt = _pyplot()
    ranked = table[table["score"].notna()].head(top)
    fig, ax = plt.subplots(figsize=(6.4, 0.25 * len(ranked) + 1.4), dpi=100)
    y = np.arange(len(ranked))[::-1]
    ax.errorbar(ranked["score"], y, xerr=ranked["score_std"].fillna(0.0), fmt="o", ms=4, capsize=3,
                color="tab:blue")
    ax.set_yticks(y)
    ax.set_yticklabels([f"{f}  (P_pareto {p:.2f})" for f, p in zip(ranked["formula"], ranked["p_pareto"])],
                       fontsize=7)
    ax.set_xlabel("score (mean-metric ranking) ± 1σ over the draws")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def beats_png(p_beats, labels, path: Path) -> None:
    """Heat map of P(row beats column): the fraction of draws in which the row candidate scores higher."""
    plt = _pyplot()
    p_beats = np.array(p_beats, dtype=float)
    np.fill_diagonal(p_beats, np.nan)  # a candidate against itself: left blank
    fig, ax = plt.subplots(figsize=(0.45 * len(labels) + 2.6, 0.45 * len(labels) + 1.8), dpi=100)
    image = ax.imshow(p_beats, cmap="RdBu_r", vmin=0.0, vmax=1.0)
    for i in range(p_beats.shape[0]):
        for j in range(p_beats.shape[1]):
            if i != j:
                ax.text(j, i, f"{p_beats[i, j]:.2f}", ha="center", va="center", fontsize=6)
    ax.set_xticks(range(len(labels)))
    ax.set_yticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_title("P(row beats column) over the draws", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
