"""An active-learning sweep through the installed CLI over a pool that is not a plain metal grid: an
off-grid compositions file with a Mg coordinate. Every proposal is a composition of the file, built by
``candidates`` (validated, the file in its provenance, a stable id), and the GP runs over the Mg
fraction as one more coordinate."""

from __future__ import annotations

from collections import Counter

import candidates
from chemoscreen import store
from screening import active, tracking
from screening.objectives import ObjectiveSpec

SMALL_SETTINGS = ["--grid-points", "16", "--observations", "4", "--snapshots", "2", "--soc-step-max", "0.05",
                  "--composition-tol", "0.1"]
# 12 off-grid Fe/Mn/Mg compositions; 9 simulations in batches of 4: iterations 0-1 are the random design
# (8 ≥ 2·3 + 1 points for 3 coordinates), iteration 2 is the GP's
POOL = [(fe, 1 - fe - mg, mg) for fe in (0.86, 0.71, 0.52, 0.37) for mg in (0.0, 0.04, 0.11)]


def test_bayes_over_an_off_grid_pool_with_mg(tmp_path, chemoscreen):
    rows = ["Fe,Mn,Mg", *(f"{fe:.2f},{mn:.2f},{mg:.2f}" for fe, mn, mg in POOL)]
    (tmp_path / "pool.csv").write_text("\n".join(rows) + "\n")
    args = ["sweep", "--compositions", "pool.csv", "--law", "vegard", "--num-cpus", "2", "--no-artifacts",
            *SMALL_SETTINGS, "--strategy", "bayes", "--budget", "9", "--proposal-batch", "4",
            "--proposal-seed", "2"]
    result = chemoscreen(args, tmp_path, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr

    space = candidates.explicit_space([{"Fe": round(fe, 2), "Mn": round(mn, 2), "Mg": mg}
                                       for fe, mn, mg in POOL])
    pool = active.build_pool(space, ObjectiveSpec())
    assert pool.metals == ("Fe", "Mg", "Mn") and len(pool.candidates) == 12  # Mg is a GP coordinate
    client = store.open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(store.SCREENING_EXPERIMENT).experiment_id
    runs = store.search_all_runs(client, experiment)
    parent = next(r for r in runs if tracking.PARENT_TAG not in r.data.tags)
    children = [r for r in runs if tracking.PARENT_TAG in r.data.tags]
    assert len(children) == 9 and all(r.info.status == "FINISHED" for r in children)
    assert {r.data.tags["composition_id"] for r in children} <= {c.id for c in space}
    assert Counter(r.data.tags[active.ITERATION_TAG] for r in children) == {"0": 4, "1": 4, "2": 1}
    with_mg = {c.id for c in space if c.fraction("Mg") > 0}
    assert {r.data.tags["composition_id"] for r in children} & with_mg  # the Mg coordinate was explored
    assert parent.data.tags["candidate_space"].startswith("compositions file=pool.csv")
