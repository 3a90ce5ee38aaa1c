"""PNG figures of the screening (matplotlib, Agg backend): per-candidate snapshots and curves, Pareto plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


class SnapshotFigure:
    """A row of ``count`` frames sharing one colour scale and colour bar, built once and redrawn.

    Building a figure (subplots, axes, colour bar) costs about as much as drawing it, so a
    :class:`Renderer` keeps one per frame count and only swaps data, colours and titles; the PNG is the
    same as a fresh figure's.
    """

    def __init__(self, count: int) -> None:
        plt = _pyplot()
        self.fig, axes = plt.subplots(1, count, figsize=(1.9 * count + 0.9, 2.3), squeeze=False, dpi=80)
        self.axes = list(axes[0])
        self.images = []
        for ax in self.axes:
            # grid axis 0 is crystal a (rows), axis 1 the second in-plane axis (columns)
            self.images.append(ax.imshow(np.zeros((1, 1)), origin="lower"))
            ax.set_xticks([])
            ax.set_yticks([])
        self.title = self.fig.suptitle("", fontsize=9)
        self.colorbar = self.fig.colorbar(self.images[-1], ax=self.axes, shrink=0.8)

    def save(self, frames: np.ndarray, path, *, title: str, label: str, cmap: str,
             soc: np.ndarray | None, vmin: float | None, vmax: float | None) -> None:
        """Draw ``frames`` (count, H, W) and save the PNG to ``path`` (file name or binary file object)."""
        finite = frames[np.isfinite(frames)]
        # a redrawn image keeps its old limits when given None: derive them here, (0, 1) with no data
        vmin = (float(finite.min()) if finite.size else 0.0) if vmin is None else vmin
        vmax = (float(finite.max()) if finite.size else 1.0) if vmax is None else vmax
        height, width = frames.shape[-2:]
        for k, (ax, image) in enumerate(zip(self.axes, self.images, strict=True)):
            image.set_data(frames[k])
            image.set_cmap(cmap)
            image.set_clim(vmin, vmax)
            image.set_extent((-0.5, width - 0.5, -0.5, height - 0.5))
            ax.set_xlim(-0.5, width - 0.5)
            ax.set_ylim(-0.5, height - 0.5)
            ax.set_title(f"SOC {float(soc[k]):.2f}" if soc is not None and k < len(soc) else "", fontsize=8)
        self.title.set_text(title)
        self.colorbar.set_label(label)
        self.fig.savefig(path, format="png")


class VoltageFigure:
    """The voltage-curve axes, laid out once and redrawn (see :class:`SnapshotFigure`)."""

    def __init__(self) -> None:
        plt = _pyplot()
        self.fig, self.ax = plt.subplots(figsize=(3.6, 2.6), dpi=80)
        (self.line,) = self.ax.plot([], [], lw=1.2)
        self.ax.set_xlabel("Li fraction X")
        self.ax.set_ylabel("voltage (V vs Li/Li+)")
        self.title = self.ax.set_title("", fontsize=9)

    def save(self, curve: np.ndarray, path, *, title: str) -> None:
        """Draw ``curve`` (n, 2) = [Li fraction X, voltage V] and save the PNG to ``path``."""
        if curve.ndim == 2 and curve.shape[0] > 0:
            self.line.set_data(curve[:, 0], curve[:, 1])
        else:
            self.line.set_data([], [])
        self.ax.relim()
        self.ax.autoscale_view()
        self.title.set_text(title)
        # from the default margins each time, as a fresh figure: tight_layout depends on where it starts
        plt = _pyplot()
        self.fig.subplots_adjust(**{k: plt.rcParams[f"figure.subplot.{k}"]
                                    for k in ("left", "right", "bottom", "top", "wspace", "hspace")})
        self.fig.tight_layout()
        self.fig.savefig(path, format="png")


def _frames(frames) -> np.ndarray:
    frames = np.asarray(frames, dtype=float)
    return frames[None] if frames.ndim == 2 else frames


def _draw(figures: dict | None, key, make, data: np.ndarray, path, **kwargs) -> None:
    """Save ``data`` through the figure ``figures[key]`` (built by ``make`` on first use), or through a
    fresh figure that is closed afterwards when ``figures`` is None."""
    if figures is not None:
        if key not in figures:
            figures[key] = make()
        figures[key].save(data, path, **kwargs)
        return
    figure = make()
    try:
        figure.save(data, path, **kwargs)
    finally:
        _pyplot().close(figure.fig)


def snapshot_png(frames: np.ndarray, path, *, title: str, label: str, cmap: str,
                 soc: np.ndarray | None = None, vmin: float | None = None, vmax: float | None = None,
                 figures: dict | None = None) -> None:
    """Save a row of (H, W) frames from ``frames`` (S, H, W) sharing one colour scale and colour bar.

    ``path``: a file name or a binary file object. ``figures``: a cache of figures to redraw (see
    :func:`render_candidate`).
    """
    frames = _frames(frames)
    count = frames.shape[0]
    _draw(figures, ("snapshot", count), lambda: SnapshotFigure(count), frames, path, title=title, label=label,
          cmap=cmap, soc=soc, vmin=vmin, vmax=vmax)


def voltage_png(curve: np.ndarray, path, *, title: str, figures: dict | None = None) -> None:
    """Save the voltage curve (n, 2) = [Li fraction X, voltage V]; ``figures`` as in :func:`snapshot_png`."""
    _draw(figures, "voltage", VoltageFigure, np.asarray(curve, dtype=float), path, title=title)


def render_candidate(snapshots: dict, voltage_curve, formula: str,
                     figures: dict | None = None) -> dict[str, bytes]:
    """PNG bytes of one candidate: ``composition.png``, ``stress.png`` and ``voltage.png``.

    ``snapshots``: "composition" (S, H, W), "max_principal_stress_GPa" (S, H, W), "soc" (S,). Runs in a
    :class:`Renderer` process beside the simulators (numpy and matplotlib only), not in the driver.
    ``figures``: a cache of :class:`SnapshotFigure` / :class:`VoltageFigure` to redraw (a renderer's
    own, filled on first use); None draws fresh figures and closes them. Both give the same PNGs.
    """
    import io

    pngs: dict[str, bytes] = {}

    def save(name: str, draw, *args, **kwargs) -> None:
        buffer = io.BytesIO()
        draw(*args, buffer, figures=figures, **kwargs)
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
    """Holds matplotlib and its figures in its own process; the sweep runs a few as Ray actors that
    reserve no CPU. The figures are built on the first candidate and redrawn for the next ones."""

    def __init__(self) -> None:
        self.figures: dict = {}

    def render(self, snapshots: dict, voltage_curve, formula: str) -> dict[str, bytes]:
        return render_candidate(snapshots, voltage_curve, formula, self.figures)


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
