"""Active-learning sweeps: propose → simulate and log through the sweep path → observe → repeat, to a budget.

``chemoscreen sweep --strategy grid|random|bayes --budget N --proposal-batch B [--proposal-seed S]``
and ``screening.sweep(..., strategy=StrategySettings(...))`` run this loop over the pool of
compositions given as the candidate space (``--metals``/``--step``, or any list of candidates, e.g.
``candidates.custom_space`` of off-grid points, or ``olivine_space(..., dopants={"Mg": ...})`` for a Mg
coordinate):

1. The pool's closed-form objectives are computed for every composition (:func:`exact_objectives`: the
   static ones of :mod:`candidates.cost` and the Vegard descriptors), exactly; compositions outside the
   voltage window (less than ``min_usable_fraction`` of the capacity usable) or violating a
   ``--constraint`` on a closed-form metric (:data:`CLOSED_FORM_METRICS`) are never proposed, since the
   ranking marks them infeasible anyway. A constraint on a simulated metric (e.g.
   ``peak_tensile_stress_MPa<800``) is learned by the strategy instead: its slack (:func:`slack`) is a
   further GP output, the EHVI of each pool point is weighted by its probability of feasibility, and the
   front (and the logged hypervolume) holds only the observations that satisfy every constraint.
2. Iteration k proposes up to B compositions (:func:`screening.strategies.propose`) from what the
   sweep's child runs hold, builds them like any candidate (``candidates`` ids, validation, provenance)
   and simulates and logs them with :func:`screening.driver.execute_sweep` under one parent run (fixed
   ``sweep_id``: the pool, the settings, the law, the strategy and the objectives), each child tagged
   ``iteration=k``.
3. The parent logs the metric ``hypervolume`` with step = simulations so far, and at the end the trace as
   ``active/hypervolume.png``; the final call ranks the sweep like any other.

Normalisation and reference point: every objective is oriented larger-is-better and normalised to
[0, 1] by its range, the closed-form ones over the pool's feasible compositions, the simulated ones over
iteration 0 (a seeded random sample of the pool, the only part of the pool whose simulated values are
known before the search moves; values outside that range are allowed). The reference point is −0.1 in
every normalised objective (a tenth of the range below the worst). The hypervolume is estimated on
2^16 scrambled Sobol points (:func:`screening.strategies.hypervolume_qmc`; the parent's tag
``hypervolume_method`` says so).

Exactly once: nothing of the loop lives only in memory. Each iteration starts by reading the child
runs back (composition, ``iteration`` tag, objectives) and re-proposing from the runs of earlier
iterations; the proposals are deterministic functions of those runs and ``--proposal-seed``, so a
driver killed mid-iteration and started again with the same command proposes the same batch, and the
sweep path skips the candidates of it that already finished. Raising ``--budget`` continues a sweep (the
budget does not enter the ``sweep_id``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chemoscreen import store
from mechanics.errors import InputError
from screening import ids, tracking
from screening.objectives import OBJECTIVES, STATIC_METRICS, USABLE_TOLERANCE, Constraint, ObjectiveSpec
from screening.strategies import StrategySettings, hypervolume_qmc, propose

ITERATION_TAG = "iteration"
HYPERVOLUME_METRIC = "hypervolume"
#: the reference point in every normalised objective (objectives normalised to [0, 1])
REFERENCE = -0.1
HYPERVOLUME_LOG2_SAMPLES = 16
TRACE_ARTIFACT = "active/hypervolume.png"
#: the Vegard descriptors :func:`exact_descriptors` computes (and ``abs_volume_change_pct`` of them)
DESCRIPTOR_METRICS = ("volume_change_pct", "specific_energy_Wh_kg", "abs_volume_change_pct")
#: metrics known exactly for every composition: a constraint on one of them filters the pool
CLOSED_FORM_METRICS = STATIC_METRICS + DESCRIPTOR_METRICS


def exact_descriptors(candidate, source: str = "literature") -> dict[str, float]:
    """The descriptor objectives of a composition without the (slow) coherency analysis of
    :func:`candidates.properties`: ``volume_change_pct`` of the Vegard lattices and
    ``specific_energy_Wh_kg`` (capacity-weighted mean voltage × theoretical capacity), computed by the
    same mixing functions, so they equal the values the sweep logs."""
    from candidates import literature
    from candidates.mixing import mean_voltage, theoretical_capacity_mAh_g, vegard
    from candidates.properties import lattice_provider

    provider = lattice_provider(source)
    lithiated = vegard(candidate.fractions, provider, "lithiated").lattice
    delithiated = vegard(candidate.fractions, provider, "delithiated").lattice
    voltage, _ = mean_voltage(candidate, lambda m: (literature.voltage_entry(m).value,
                                                    literature.voltage_entry(m).sigma))
    return {"volume_change_pct": 100.0 * (lithiated.volume_A3 / delithiated.volume_A3 - 1.0),
            "specific_energy_Wh_kg": voltage * theoretical_capacity_mAh_g(candidate)}


def _oriented(name: str, value: float) -> float:
    objective = OBJECTIVES[name]
    return objective.direction * (abs(value) if objective.absolute else value)


def closed_form_constraints(spec: ObjectiveSpec) -> tuple[Constraint, ...]:
    """The constraints of ``spec`` on metrics known exactly for every composition (they filter the pool)."""
    return tuple(c for c in spec.constraints if c.metric in CLOSED_FORM_METRICS)


def simulated_constraints(spec: ObjectiveSpec) -> tuple[Constraint, ...]:
    """The constraints of ``spec`` on metrics only a simulation gives (the strategy learns them)."""
    return tuple(c for c in spec.constraints if c.metric not in CLOSED_FORM_METRICS)


def slack(constraint: Constraint, values) -> np.ndarray:
    """The constraint's slack at ``values`` of its metric: ≤ 0 exactly where it holds, its distance
    from the bound otherwise (``metric − value`` for < and <=, ``value − metric`` for > and >=; a strict
    bound met with equality gets the smallest positive slack); NaN where the metric is missing."""
    values = np.asarray(values, dtype=float)
    sign = 1.0 if constraint.op in ("<", "<=") else -1.0
    out = sign * (values - constraint.value)
    out = np.where(constraint.holds(values), np.minimum(out, 0.0), np.maximum(out, np.finfo(float).tiny))
    return np.where(np.isfinite(values), out, np.nan)


def exact_objectives(space: Sequence, spec: ObjectiveSpec, source: str = "literature"
                     ) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """The closed-form objectives of ``space``: (names, (m, e) values oriented larger-is-better, (m,)
    feasible: inside the voltage window and satisfying every closed-form constraint).

    Static objectives come from :func:`candidates.cost.static_objectives`, descriptor ones from
    :func:`exact_descriptors`; the simulated objectives of ``spec`` are left out.
    """
    from candidates.cost import static_objectives

    names = tuple(n for n in spec.names if OBJECTIVES[n].kind != "simulated")
    constraints = closed_form_constraints(spec)
    values = np.full((len(space), len(names)), np.nan)
    inside = np.zeros(len(space), dtype=bool)
    needs_descriptors = (any(OBJECTIVES[n].kind == "descriptor" for n in names)
                         or any(c.metric in DESCRIPTOR_METRICS for c in constraints))
    for i, candidate in enumerate(space):
        static = static_objectives(candidate.fractions, spec.max_voltage_V)
        inside[i] = static.usable_fraction >= spec.min_usable_fraction - USABLE_TOLERANCE
        metrics = dict(static.metrics())
        if needs_descriptors:
            metrics.update(exact_descriptors(candidate, source))
            metrics["abs_volume_change_pct"] = abs(metrics["volume_change_pct"])
        for constraint in constraints:
            inside[i] &= bool(constraint.holds(metrics[constraint.metric]))
        for j, name in enumerate(names):
            values[i, j] = _oriented(name, metrics[OBJECTIVES[name].column])
    return names, values, inside


@dataclass(frozen=True)
class Pool:
    """The compositions a strategy chooses from (the feasible part of the space).

    Fields: candidates (``candidates.Candidate``, the space's feasible ones, in order); coordinates
    (m, d): M-site fractions over ``metals``; simulated: names of the objectives a simulation gives;
    exact_names and exact (m, e): the closed-form objectives, oriented larger-is-better (raw units);
    ids: ``composition_id`` → pool index; space_ids: composition ids of the whole space (the sweep's
    identity); constraints: the constraints on simulated metrics (the strategy learns their slacks).
    """

    candidates: tuple
    metals: tuple[str, ...]
    coordinates: np.ndarray
    simulated: tuple[str, ...]
    exact_names: tuple[str, ...]
    exact: np.ndarray
    ids: dict
    space_ids: tuple[str, ...]
    constraints: tuple[Constraint, ...] = ()


def build_pool(space: Sequence, spec: ObjectiveSpec, source: str = "literature") -> Pool:
    """The :class:`Pool` of ``space`` under ``spec``.

    Raises:
        InputError: (``--max-voltage``) no composition of the space keeps enough capacity inside the
            voltage window; (``--constraint``) the closed-form constraints leave no composition of it.
    """
    space = list(space)
    names, values, inside = exact_objectives(space, spec, source)
    kept = [c for c, ok in zip(space, inside) if ok]
    if not kept:
        constraints = closed_form_constraints(spec)
        unconstrained = dataclasses.replace(spec, constraints=())
        if constraints and exact_objectives(space, unconstrained, source)[2].any():
            raise InputError("--constraint", "constraints that at least one composition of the space "
                             "inside the voltage window satisfies", "; ".join(map(str, constraints)))
        raise InputError("--max-voltage", "a window that keeps at least one composition of the space "
                         f"feasible (≥ {100 * spec.min_usable_fraction:.0f} % of its capacity usable)",
                         spec.max_voltage_V)
    metals = tuple(sorted({m for c in kept for m in c.fractions}))
    coordinates = np.array([[c.fraction(m) for m in metals] for c in kept])
    return Pool(tuple(kept), metals, coordinates,
                tuple(n for n in spec.names if OBJECTIVES[n].kind == "simulated"), names, values[inside],
                {c.id: i for i, c in enumerate(kept)}, tuple(c.id for c in space),
                simulated_constraints(spec))


@dataclass(frozen=True)
class Observations:
    """What the sweep's child runs say: per pool index, its iteration, its simulated objectives
    (oriented, raw units; NaN for a failed run) and the slacks of the pool's simulated-metric
    constraints (:func:`slack`), and which runs are done."""

    iteration: dict
    values: dict
    done: set
    slacks: dict = dataclasses.field(default_factory=dict)

    def before(self, k: int) -> list[int]:
        """Pool indices simulated in iterations before ``k``, in a fixed order (iteration, index)."""
        return sorted((i for i, it in self.iteration.items() if it < k), key=lambda i: (self.iteration[i], i))

    def count(self) -> int:
        return len(self.iteration)


def read_observations(children: Sequence[tracking.ChildRun], pool: Pool) -> Observations:
    """The :class:`Observations` of a sweep's (periodic) child runs: FINISHED ones give values."""
    iteration, values, done, slacks = {}, {}, set(), {}
    for child in tracking.latest_by_candidate(list(children)).values():
        index = pool.ids.get(child.tags.get("composition_id", ""))
        tag = child.tags.get(ITERATION_TAG)
        if index is None or tag is None or child.tags.get("fidelity", "periodic") != "periodic":
            continue
        iteration[index] = int(tag)
        finished = child.status == "FINISHED"
        values[index] = np.array([_oriented(n, child.metrics.get(OBJECTIVES[n].column, np.nan))
                                  if finished else np.nan for n in pool.simulated])
        slacks[index] = np.array([float(slack(c, child.metrics.get(c.metric, np.nan))) if finished
                                  else np.nan for c in pool.constraints])
        if child.done:
            done.add(index)
    return Observations(iteration, values, done, slacks)


def observed_slacks(pool: Pool, obs: Observations, observed: Sequence[int]) -> np.ndarray:
    """(n, c) constraint slacks of the ``observed`` pool indices (NaN: not known)."""
    return np.array([obs.slacks.get(i, np.full(len(pool.constraints), np.nan)) for i in observed]
                    ).reshape(len(observed), len(pool.constraints))


@dataclass(frozen=True)
class Scale:
    """Normalisation of the oriented objectives (simulated first, then exact): (value − low) / span."""

    low: np.ndarray
    span: np.ndarray

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=float) - self.low) / self.span

    @property
    def reference(self) -> np.ndarray:
        return np.full(len(self.low), REFERENCE)


def _span(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    span = high - low
    return np.where(np.isfinite(span) & (span > 0), span, np.maximum(np.abs(low), 1.0))


def scale_of(pool: Pool, first: np.ndarray) -> Scale:
    """Exact objectives by the pool's range, simulated ones by the range of ``first`` (iteration 0's
    values, (n, s), NaN rows ignored; a span of |low| or 1 when they do not vary)."""
    sim = np.asarray(first, dtype=float).reshape(-1, len(pool.simulated))
    sim = sim[np.isfinite(sim).all(axis=1)]
    sim_low = sim.min(axis=0) if len(sim) else np.zeros(len(pool.simulated))
    sim_high = sim.max(axis=0) if len(sim) else np.ones(len(pool.simulated))
    low = np.concatenate([sim_low, pool.exact.min(axis=0)])
    high = np.concatenate([sim_high, pool.exact.max(axis=0)])
    return Scale(low, _span(low, high))


def next_batch(strategy: StrategySettings, pool: Pool, observed: Sequence[int], values: np.ndarray,
               scale: Scale | None, iteration: int, noisy: bool = False,
               size: int | None = None, slacks: np.ndarray | None = None) -> list[int]:
    """Pool indices of iteration ``iteration``'s proposal, from the ``observed`` indices (earlier
    iterations) and their simulated objectives ``values`` (n, s), oriented, raw units.

    ``size`` caps the batch (the budget left); ``scale`` is None before iteration 0 is observed;
    ``slacks`` (n, c) are the observed points' slacks of ``pool.constraints`` (:func:`slack`; None when
    the pool has none).
    """
    batch = min(strategy.proposal_batch, size or strategy.proposal_batch)
    settings = dataclasses.replace(strategy, proposal_batch=batch, budget=max(batch, strategy.budget))
    if scale is None:
        scale = Scale(np.zeros(len(pool.simulated) + len(pool.exact_names)),
                      np.ones(len(pool.simulated) + len(pool.exact_names)))
    s = len(pool.simulated)
    values = np.asarray(values, dtype=float).reshape(len(observed), s)
    normalised = (values - scale.low[:s]) / scale.span[:s]
    exact = (pool.exact - scale.low[s:]) / scale.span[s:]
    return propose(settings, pool.coordinates, list(observed), normalised, ref_point=scale.reference,
                   exact=exact, noisy=noisy, iteration=iteration,
                   constraints=slacks if pool.constraints else None)


def objective_points(pool: Pool, observed: Sequence[int], values: np.ndarray, scale: Scale,
                     slacks: np.ndarray | None = None) -> np.ndarray:
    """(n, s + e) normalised objectives of observed pool points (rows of failed runs, and with
    ``slacks`` (n, c) those of points violating a constraint or missing its metric, are NaN)."""
    values = np.asarray(values, dtype=float).reshape(len(observed), len(pool.simulated))
    points = scale(np.hstack([values, pool.exact[list(observed)]]))
    if slacks is not None:
        feasible = (np.asarray(slacks, dtype=float).reshape(len(observed), -1) <= 0).all(axis=1)
        points[~feasible] = np.nan
    return points


def trace(pool: Pool, obs: Observations, scale: Scale, skip: set) -> list[tuple[int, float]]:
    """(simulations so far, hypervolume) after each iteration, except steps in ``skip``."""
    points = []
    last = max(obs.iteration.values(), default=-1)
    for k in range(last + 1):
        observed = obs.before(k + 1)
        step = len(observed)
        if step in skip or not any(obs.iteration[i] == k for i in observed):
            continue
        values = np.array([obs.values[i] for i in observed]).reshape(len(observed), -1)
        y = objective_points(pool, observed, values, scale, observed_slacks(pool, obs, observed))
        points.append((step, hypervolume_qmc(y, scale.reference, HYPERVOLUME_LOG2_SAMPLES)))
    return points


def _find_parent(client, experiment_id: str, key: str) -> str | None:
    runs = store.search_all_runs(client, experiment_id, tracking.sweep_filter(key))
    return min(runs, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id if runs else None


def _log_trace(client, parent_id: str, pool: Pool, obs: Observations,
               scale: Scale) -> list[tuple[int, float]]:
    """Log the hypervolume steps the parent does not hold yet (a resumed sweep logs none twice)."""
    from mlflow.entities import Metric

    history = {m.step: m.value for m in client.get_metric_history(parent_id, HYPERVOLUME_METRIC)}
    new = trace(pool, obs, scale, skip=set(history))
    if new:
        now = int(time.time() * 1000)
        client.log_batch(parent_id, metrics=[Metric(HYPERVOLUME_METRIC, hv, now, step) for step, hv in new])
    return sorted({**history, **dict(new)}.items())


def trace_png(points: Sequence[tuple[int, float]], path: Path, label: str) -> Path:
    """The hypervolume trace as a PNG (simulations on x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=110)
    steps, values = zip(*points) if points else ((), ())
    ax.plot(steps, values, marker="o")
    ax.set_xlabel("simulations")
    ax.set_ylabel("hypervolume (normalised objectives)")
    ax.set_title(label, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def sweep_key(pool: Pool, settings_dict: dict, model_uri: str, strategy: StrategySettings,
              spec: ObjectiveSpec, source: str) -> str:
    """The active sweep's id: the space, the simulation key, the law, the strategy (budget aside), the
    objectives and the property source."""
    return ids.sweep_id(pool.space_ids, {**settings_dict, "active": strategy.identity(),
                                         "objectives": spec.describe(), "source": source}, model_uri)


def run_active(space: Sequence, settings, *, law, model_uri: str, options, strategy: StrategySettings,
               source: str, client, metric_fn: Callable | None = None):
    """Run (or resume) an active-learning sweep of the pool ``space``; returns the final
    :class:`screening.driver.SweepOutcome` (the ranked table of every simulated candidate).

    Args:
        space: ``candidates.Candidate`` objects, the pool.
        settings: :class:`mechanics.screen.ScreeningSettings`.
        law: the resolved law module (or None for Vegard's law).
        model_uri: the law's version label (it enters every ``candidate_id``).
        options: :class:`screening.SweepOptions` (tracking URI absolute, address resolved).
        strategy: :class:`screening.strategies.StrategySettings`.
        source: the end-member property source.
        client: an open ``MlflowClient`` on ``options.tracking_uri``.
        metric_fn: user metrics per simulation result (runs in the actor).
    """
    from screening.api import prepare_items
    from screening.cluster import ray_session
    from screening.driver import _settings_dict, execute_sweep

    if options.refine:
        raise InputError("--refine", "0 with --strategy (refine a ranked sweep with a plain sweep)",
                         options.refine)
    spec = options.objectives or ObjectiveSpec()
    pool = build_pool(space, spec, source)
    settings_dict = _settings_dict(settings)
    if options.samples > 1:
        settings_dict = {**settings_dict, "samples": options.samples}
    key = sweep_key(pool, settings_dict, model_uri, strategy, spec, source)
    experiment_id = store.ensure_experiment(client, options.experiment, options.tracking_uri)
    noisy = options.samples > 1
    totals = {"simulated": 0, "skipped": 0, "failed": 0}
    parent_id = _find_parent(client, experiment_id, key)
    if parent_id is not None:  # what an earlier driver finished is not simulated again
        totals["skipped"] = len(read_observations(tracking.child_runs(client, experiment_id, parent_id),
                                                  pool).done)
    actors: list = []  # one actor pool for every iteration, under one Ray session
    with contextlib.ExitStack() as ray_stack:
        k, ray_started = 0, False
        while True:
            children = [] if parent_id is None else tracking.child_runs(client, experiment_id, parent_id)
            obs = read_observations(children, pool)
            observed = obs.before(k)
            left = strategy.budget - len(observed)
            if left <= 0:
                break
            logged = sum(it == k for it in obs.iteration.values())
            expected = min(strategy.proposal_batch, left, len(pool.candidates) - len(observed))
            if expected == 0:
                break  # the pool is exhausted
            if logged >= expected and all(i in obs.done for i, it in obs.iteration.items() if it == k):
                k += 1  # a finished iteration of an earlier driver: its proposal is its runs
                continue
            scale = observed_scale(pool, obs)
            values = np.array([obs.values[i] for i in observed]).reshape(len(observed), len(pool.simulated))
            proposal = next_batch(strategy, pool, observed, values, scale if k > 0 else None, k, noisy, left,
                                  observed_slacks(pool, obs, observed))
            if not proposal:
                break  # the pool is exhausted
            # the proposal's stragglers in the runs (a resumed iteration k) are not simulated again
            todo = [pool.candidates[i] for i in proposal if i not in obs.done]
            items = prepare_items(todo, source) if todo else []
            if items and not ray_started:
                ray_stack.enter_context(ray_session(options.address, options.num_cpus))
                ray_stack.callback(lambda: [held.close() for held in actors])  # before Ray shuts down
                ray_started = True
            if items or parent_id is None:
                outcome = execute_sweep(items, settings, law=law, model_uri=model_uri, options=options,
                                        metric_fn=metric_fn, client=client, sweep_key=key,
                                        child_tags={c.id: {ITERATION_TAG: str(k)} for c in todo},
                                        finish=False, keep_actors=actors)
                parent_id = outcome.parent_run_id
                for name in totals:
                    totals[name] += getattr(outcome, name)
            _record(client, experiment_id, parent_id, pool, strategy, k)
            k += 1
        final = execute_sweep([], settings, law=law, model_uri=model_uri, options=options,
                              metric_fn=metric_fn, client=client, sweep_key=key, finish=True)
    for name in totals:
        setattr(final, name, totals[name] + getattr(final, name))
    _finish_record(client, experiment_id, final.parent_run_id, pool, strategy)
    return final


def observed_scale(pool: Pool, obs: Observations) -> Scale:
    """The sweep's :class:`Scale`: :func:`scale_of` the pool and iteration 0's observations."""
    first = [obs.values[i] for i, it in sorted(obs.iteration.items()) if it == 0]
    return scale_of(pool, np.array(first).reshape(len(first), len(pool.simulated)))


def _record(client, experiment_id: str, parent_id: str, pool: Pool, strategy: StrategySettings,
            iteration: int) -> None:
    """After iteration ``iteration``: the parent's strategy params (once) and the hypervolume so far."""
    from mlflow.entities import Param, RunTag

    obs = read_observations(tracking.child_runs(client, experiment_id, parent_id), pool)
    scale = observed_scale(pool, obs)
    run = client.get_run(parent_id)
    params = {f"strategy.{k}": v for k, v in strategy.identity().items()}
    params.update({"strategy.reference_point": f"{REFERENCE:g} (objectives normalised to [0, 1])",
                   "strategy.objectives": ",".join(pool.simulated + pool.exact_names)[:6000]})
    new_params = [Param(k, str(v)) for k, v in params.items() if k not in run.data.params]
    tags = [RunTag("strategy", strategy.strategy), RunTag("budget", str(strategy.budget)),
            RunTag("iterations", str(iteration + 1)),
            RunTag("hypervolume_method", f"qmc-sobol-2^{HYPERVOLUME_LOG2_SAMPLES} (estimated)"),
            RunTag("hypervolume_scale", "; ".join(
                f"{n}: [{lo:.6g}, {lo + sp:.6g}]" for n, lo, sp in
                zip(pool.simulated + pool.exact_names, scale.low, scale.span))[:5000])]
    client.log_batch(parent_id, params=new_params, tags=tags)
    _log_trace(client, parent_id, pool, obs, scale)


def _finish_record(client, experiment_id: str, parent_id: str, pool: Pool,
                   strategy: StrategySettings) -> None:
    """The whole hypervolume trace (missing steps logged) and its PNG on the parent."""
    obs = read_observations(tracking.child_runs(client, experiment_id, parent_id), pool)
    points = _log_trace(client, parent_id, pool, obs, observed_scale(pool, obs))
    with tempfile.TemporaryDirectory(prefix="chemoscreen-active-") as tmp:
        label = f"{strategy.strategy}, batch {strategy.proposal_batch}, seed {strategy.proposal_seed}"
        path = trace_png(points, Path(tmp, Path(TRACE_ARTIFACT).name), label)
        client.log_artifact(parent_id, str(path), str(Path(TRACE_ARTIFACT).parent))
