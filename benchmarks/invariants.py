"""Physics numbers a behaviour-preserving change must leave unchanged, to compare two versions of the code.

    python benchmarks/invariants.py --out before.json          # in a checkout of the old commit
    python benchmarks/invariants.py --out after.json           # in the new one
    python benchmarks/invariants.py --compare before.json after.json

What it records (float64, one thread, fixed seeds): every metric of ``simulate_candidates`` for three
LFP-like candidates (cell edges and Ω perturbed by a seeded generator) at both fidelities on a 24² grid,
and the Vegard slopes of ``inverse.calibrate`` on a 48² synthetic set (seed 3, no bootstrap). The
comparison prints each metric whose value changed and the largest relative difference. PFHub 1 and 4
are compared through their own scripts' CSV output (``pfhub_bm1.py``, ``pfhub_bm4.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def record() -> dict:
    import numpy as np
    import torch

    import inverse
    from mechanics.parameters.lfp import lfp_params
    from mechanics.screen import ScreeningSettings, simulate_candidates

    torch.set_num_threads(1)
    out: dict = {}
    base = lfp_params()
    rng = np.random.default_rng(0)
    lat = base.delithiated
    params = []
    for _ in range(3):
        f = rng.uniform(0.99, 1.01, 3)
        moved = dataclasses.replace(lat, a_A=lat.a_A * f[0], b_A=lat.b_A * f[1], c_A=lat.c_A * f[2])
        omega = base.omega_eV * rng.uniform(0.9, 1.1)
        params.append(dataclasses.replace(base, delithiated=moved, omega_eV=omega))
    for fidelity in ("periodic", "particle"):
        settings = ScreeningSettings(grid_points=24, fidelity=fidelity, dtype="float64", observations=6,
                                     snapshots=2)
        for i, result in enumerate(simulate_candidates(params, settings, device=torch.device("cpu"))):
            out[f"{fidelity}{i}"] = {k: float(v) for k, v in sorted(result.metrics.items())}
    cal = inverse.calibrate(inverse.synthesize(size_px=48, seed=3), n_bootstrap=0)
    vegard = cal.vegard
    values = dataclasses.asdict(vegard) if dataclasses.is_dataclass(vegard) else dict(vegard)
    out["calibration"] = {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}
    return out


def compare(before: dict, after: dict) -> float:
    worst, count = 0.0, 0
    for group, metrics in before.items():
        for name, old in metrics.items():
            new = after.get(group, {}).get(name)
            if new is None:
                print(f"{group}.{name}: missing after")
                worst = float("inf")
                continue
            count += 1
            rel = abs(new - old) / max(abs(old), 1e-300)
            worst = max(worst, rel)
            if rel > 0:
                print(f"{group}.{name}: {old!r} -> {new!r} (relative {rel:.2e})")
    print(f"{count} numbers compared; largest relative difference {worst:.3g}")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the numbers of this checkout as JSON")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        compare(before, after)
        return
    numbers = record()
    text = json.dumps(numbers, indent=1, sort_keys=True)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
