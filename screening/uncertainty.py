"""Uncertainty propagation through a sweep: joint draws of the law and the candidate parameters.

``chemoscreen sweep --samples N`` simulates every candidate N times. Draw k (k = 0..N−1) is one joint
sample of

(a) the eigenstrain law: posterior sample k mod n of the registered model version (the calibration's
    block-bootstrap replicates, ``chemoscreen.models.StoredModel.samples``); only its shape
    g(X) = ε⁰(X)/ε⁰(1) enters the screening, each candidate keeping its own misfit. With ``--law vegard``
    the law is not drawn;
(b) the candidate parameters, normal within their documented 1σ (``candidates.properties``):
    end-member lattice edges (literature σ per end member, or 0.5 % for CHGNet relaxations),
    propagated to a mixture by Vegard's rule (δa_mix = Σ_i x_i δa_i, so that compositions sharing an
    end member share its error), plus for mixtures the deviation from Vegard's rule
    (``candidates.mixing.VEGARD_REL_SIGMA``: 0.09 % lithiated, 0.73 % delithiated per edge); the
    stiffness scale (15 % for LiFePO4, 30 % for other compositions, one tensor for all); Ω and κ
    (10 % and 30 % for LiFePO4, 50 % otherwise). These three scale factors are lognormal with the
    relative σ as their log-σ (median 1, always positive).

Common random numbers: the standard normals of draw k depend only on (seed, k), never on the candidate,
so draw k uses the same law sample, the same end-member errors, the same stiffness/Ω/κ factors and the
same noise seed for every candidate: differences between candidates are paired, and their spread is far
smaller than that of either candidate alone. Draws are extra batch items beside the candidates (one
tensor program); :class:`DrawnLaw` gives every batch element its own law sample.

Reported: each simulated metric's mean over the draws (the logged ``<metric>``), ``<metric>_std``
(sample standard deviation, ddof = 1), ``<metric>_p05`` and ``<metric>_p95`` (linear-interpolated
percentiles); per-draw values as the metric history ``<metric>_draw`` (step = draw). The ranking adds
``score_std``, ``p_pareto`` (fraction of draws in which the candidate is non-dominated) and ``p_top_k``
(fraction of draws in which it is among the k best by score). The closed-form objectives (usable
energy, cost, supply risk) are exact and the same in every draw; feasibility is that of the means.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mechanics.errors import InputError
from mechanics.parameters.base import MaterialParams, OrthorhombicLattice
from screening.actors import CandidateResult

_SCALARS = ("stiffness", "omega", "kappa", "vegard_li_a", "vegard_li_b", "vegard_li_c", "vegard_de_a",
            "vegard_de_b", "vegard_de_c")


# ---------------------------------------------------------------------------------------------------
# (b) parameter draws, common random numbers


def _normals(seed: int, draw: int, count: int) -> np.ndarray:
    """Standard normals of draw ``draw``: a function of (seed, draw) only, the same for every candidate."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, 16, int(draw)]).standard_normal(count)


@dataclass(frozen=True)
class ParameterSpread:
    """1σ of one candidate's drawn quantities.

    Fields: edge_sigma_A: end-member formula → 1σ of each edge (Å) for every end member the candidate
    mixes (lithiated and delithiated); stiffness_rel, omega_rel, kappa_rel: relative 1σ.
    """

    edge_sigma_A: Mapping[str, float]
    stiffness_rel: float
    omega_rel: float
    kappa_rel: float


def _end_members() -> tuple[str, ...]:
    """Every end member a draw can perturb, in a fixed order (the normals are indexed by it)."""
    from candidates.mixing import delithiated_formula, lithiated_formula
    from candidates.space import OLIVINE_METALS

    pairs = ((lithiated_formula(m), delithiated_formula(m)) for m in OLIVINE_METALS)
    return tuple(dict.fromkeys(f for pair in pairs for f in pair))


def spread_of(params: MaterialParams, fractions: Mapping[str, float], source: str,
              uncertainties: Mapping[str, float]) -> ParameterSpread:
    """The :class:`ParameterSpread` of a candidate from its ``candidates.properties`` uncertainties."""
    from candidates import literature
    from candidates.mixing import delithiated_formula, lithiated_formula
    from candidates.properties import CHGNET_EDGE_REL_SIGMA

    sigmas = {}
    for metal in fractions:
        for formula in (lithiated_formula(metal), delithiated_formula(metal)):
            if source == "literature":
                sigmas[formula] = literature.lattice_entry(formula).sigma_A
            else:
                lattice = params.lithiated if formula.startswith("Li") else params.delithiated
                sigmas[formula] = CHGNET_EDGE_REL_SIGMA * float(np.mean(lattice.edges_A))
    u = uncertainties
    return ParameterSpread(sigmas, float(u.get("stiffness_rel", 0.0)),
                           float(u.get("omega_eV", 0.0)) / params.omega_eV,
                           float(u.get("kappa_aJ_per_nm", 0.0)) / params.kappa_aJ_per_nm[0])


def draw_parameters(params: MaterialParams, fractions: Mapping[str, float], spread: ParameterSpread,
                    seed: int, draw: int) -> MaterialParams:
    """The candidate's parameters in draw ``draw`` (see the module docstring)."""
    from candidates.mixing import VEGARD_REL_SIGMA, delithiated_formula, lithiated_formula

    members = _end_members()
    z = _normals(seed, draw, 3 * len(members) + len(_SCALARS))
    z_edges = z[:3 * len(members)].reshape(len(members), 3)
    z_scalar = dict(zip(_SCALARS, z[3 * len(members):]))
    shift = {"lithiated": np.zeros(3), "delithiated": np.zeros(3)}
    if len(fractions) > 1:  # a mixture's deviation from Vegard's rule, as candidates.mixing.vegard adds it
        for state, lattice, tag in (("lithiated", params.lithiated, "li"),
                                    ("delithiated", params.delithiated, "de")):
            z_vegard = np.array([z_scalar[f"vegard_{tag}_{axis}"] for axis in "abc"])
            shift[state] += VEGARD_REL_SIGMA[state] * np.asarray(lattice.edges_A) * z_vegard
    for metal, x in fractions.items():
        for state, formula in (("lithiated", lithiated_formula(metal)),
                               ("delithiated", delithiated_formula(metal))):
            shift[state] += x * spread.edge_sigma_A.get(formula, 0.0) * z_edges[members.index(formula)]

    def moved(lattice: OrthorhombicLattice, delta: np.ndarray) -> OrthorhombicLattice:
        return OrthorhombicLattice(*(float(e + d) for e, d in zip(lattice.edges_A, delta)))

    def factor(rel: float, name: str) -> float:
        # lognormal with log-σ = the relative σ and median 1: positive, and symmetric in ratio
        return float(np.exp(rel * float(z_scalar[name])))

    voigt = params.stiffness_voigt() * factor(spread.stiffness_rel, "stiffness")
    kappa = factor(spread.kappa_rel, "kappa")
    return dataclasses.replace(
        params,
        lithiated=moved(params.lithiated, shift["lithiated"]),
        delithiated=moved(params.delithiated, shift["delithiated"]),
        stiffness_voigt_GPa=tuple(tuple(float(v) for v in row) for row in voigt),
        omega_eV=params.omega_eV * factor(spread.omega_rel, "omega"),
        kappa_aJ_per_nm=tuple(k * kappa for k in params.kappa_aJ_per_nm),
    )


@dataclass(frozen=True)
class DrawnParams:
    """One batch item of a sweep with draws: the drawn parameters and the draw index (law sample)."""

    params: MaterialParams
    draw: int


# ---------------------------------------------------------------------------------------------------
# (a) law draws


class LawSamples(torch.nn.Module):
    """The central law with its posterior samples; evaluates as the central law (draw −1)."""

    def __init__(self, central: torch.nn.Module, samples: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        if not samples:
            raise InputError("--samples", "a model version with posterior samples (law_samples)", 0)
        self.central = central
        self.samples = torch.nn.ModuleList(samples)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.central(X)

    def for_draws(self, draws: Sequence[int]) -> DrawnLaw:
        return DrawnLaw(self, draws)


class DrawnLaw(torch.nn.Module):
    """A law that differs per batch element: element b follows sample ``draws[b] mod n`` (−1: central).

    Only the law's shape enters the screening (``mechanics.phasefield.elastic.law_shape`` divides by
    ε⁰(1)), so element b returns ε⁰_k(X)·ε⁰_c(1)/ε⁰_k(1): its end point is the central law's, its shape
    that of sample k. Inputs are (B, ...) with B the batch size, or a single X (the end point).
    """

    def __init__(self, laws: LawSamples, draws: Sequence[int]) -> None:
        super().__init__()
        self.laws = laws
        self.register_buffer("draws", torch.as_tensor(list(draws), dtype=torch.long), persistent=False)

    def _law(self, k: int) -> torch.nn.Module:
        return self.laws.central if k < 0 else self.laws.samples[k % len(self.laws.samples)]

    def _evaluate(self, X: torch.Tensor, method: str) -> torch.Tensor:
        if X.numel() == 1:
            return getattr(self.laws.central, method)(X)
        if X.shape[0] != self.draws.numel():
            raise RuntimeError(f"DrawnLaw: leading dimension {X.shape[0]} != batch {self.draws.numel()}")
        one = torch.ones(1, dtype=X.dtype, device=X.device)
        end = self.laws.central(one).reshape(3)
        out = None
        for k in torch.unique(self.draws).tolist():
            law = self._law(int(k))
            index = torch.nonzero(self.draws.to(X.device) == k).flatten()
            scale = end / torch.where(law(one).reshape(3).abs() > 1e-12, law(one).reshape(3), end)
            value = getattr(law, method)(X[index]) * scale.to(X.dtype)
            out = value.new_zeros((*X.shape, 3)) if out is None else out
            out[index] = value
        return out

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self._evaluate(X, "forward")

    def derivative(self, X: torch.Tensor) -> torch.Tensor:
        return self._evaluate(X, "derivative")


def simulate_draws(params: Sequence, settings, law=None, device="cpu"):
    """``mechanics.screen.simulate_candidates`` for batches of :class:`DrawnParams` (plain
    ``MaterialParams`` are draw −1: the central law): one tensor program, one law sample per element."""
    from mechanics.screen import simulate_candidates

    material = [p.params if isinstance(p, DrawnParams) else p for p in params]
    draws = [p.draw if isinstance(p, DrawnParams) else -1 for p in params]
    if isinstance(law, LawSamples):
        law = law.for_draws(draws).to(device)
    return simulate_candidates(material, settings, law, device)


# ---------------------------------------------------------------------------------------------------
# statistics


def summarize(values: Sequence[float]) -> dict[str, float]:
    """mean, std (ddof 1; 0 for one draw), p05 and p95 of one metric over the draws (NaNs dropped)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {}
    return {"": float(v.mean()), "_std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "_p05": float(np.percentile(v, 5)), "_p95": float(np.percentile(v, 95))}


def check_samples(value, field: str = "--samples") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(field, "a positive number of draws", value)
    return int(value)


# ---------------------------------------------------------------------------------------------------
# the sweep side: expand candidates into draws, merge the draws back into one result per candidate


class DrawStage:
    """Expands ``work`` = [(candidate_id, SweepItem)] into ``samples`` draws per candidate and merges
    each candidate's draws back into one :class:`DrawnResult` for ``on_result``.

    Draw items are ``("<candidate_id>#<k>", item with DrawnParams)``; a candidate is FAILED only when every
    draw failed; otherwise its statistics are over the finished draws and ``draws_failed`` counts the
    others (their history values are NaN).
    """

    def __init__(self, work: Sequence, samples: int, seed: int, on_result) -> None:
        self.samples = check_samples(samples)
        self.seed, self.on_result = int(seed), on_result
        self.pending: dict[str, dict[int, object]] = {cid: {} for cid, _ in work}
        self.items = []
        for cid, item in work:
            spread = spread_of(item.params, item.fractions, item.source, getattr(item, "uncertainties", {}))
            for k in range(self.samples):
                drawn = DrawnParams(draw_parameters(item.params, item.fractions, spread, self.seed, k), k)
                self.items.append((f"{cid}#{k}", dataclasses.replace(item, params=drawn)))

    def __call__(self, result) -> None:
        cid, _, k = result.candidate_id.rpartition("#")
        self.pending[cid][int(k)] = result
        if len(self.pending[cid]) == self.samples:
            done = self.pending.pop(cid)
            self.on_result(merge_draws(cid, [done[i] for i in range(self.samples)]))


def merge_draws(candidate_id: str, results: Sequence):
    """One :class:`DrawnResult` from the per-draw ``CandidateResult`` objects of a candidate (draw order)."""
    from screening.results import DRAWN_METRICS, STAT_SUFFIXES

    failed = [(k, r) for k, r in enumerate(results) if r.status != "FINISHED"]
    seconds = float(sum(r.seconds for r in results))
    if len(failed) == len(results):
        k, first = failed[0]
        reason = f"all {len(results)} draws failed; draw {k}: {first.reason}"
        return DrawnResult(candidate_id, "FAILED", reason, seconds=seconds)
    finished = [r for r in results if r.status == "FINISHED"]
    metrics: dict[str, float] = {"draws_failed": float(len(failed))}
    draws: dict[str, list[float]] = {}
    for name in finished[0].metrics:
        values = [r.metrics.get(name, np.nan) if r.status == "FINISHED" else np.nan for r in results]
        stats = summarize(values)
        if not stats:
            continue
        metrics[name] = stats[""]
        if name in DRAWN_METRICS:
            metrics.update({name + suffix: stats[suffix] for suffix in STAT_SUFFIXES})
            draws[name] = [float(v) for v in values]
    first = finished[0]
    return DrawnResult(candidate_id, "FINISHED", "", metrics, first.voltage_curve, first.snapshots, seconds,
                       draws=draws)


@dataclass(frozen=True)
class DrawnResult(CandidateResult):
    """A candidate's result merged over its draws; ``draws``: metric → value per draw (logged as history)."""

    draws: Mapping[str, Sequence[float]] = dataclasses.field(default_factory=dict)
