"""The result of :func:`inverse.calibrate` and its typed parts; :meth:`Calibration.to_json` writes
``calibration.json`` (schema ``chemoscreen.calibration/1``, ARCHITECTURE §4.3)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from inverse.settings import CalibrationSettings

SCHEMA = "chemoscreen.calibration/1"
AXES = ("a", "c")


@dataclass(frozen=True)
class VegardSlopes:
    """Least-squares Vegard slopes ε⁰(X) ≈ slope·X of the learned law (through the origin, over the
    knots), their standard deviations (the larger of the Laplace and bootstrap ones), and the largest
    |ε⁰(X) − slope·X| over the knots; all dimensionless strain."""

    slope_a: float
    slope_c: float
    slope_a_std: float
    slope_c_std: float
    max_deviation: float

    def as_dict(self) -> dict[str, float]:
        """The ``vegard`` section of calibration.json (its keys in this order)."""
        return {k: float(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class FitStatistics:
    """How well the law explains the strain, and how the fit was made.

    rmse_strain: root-mean-square residual over all rows (strain, unweighted); n_pixels: mask pixels of
    all particles; chi2_reduced: weighted residual sum of squares over (rows − effective parameters);
    smoothness_lambda: weight λ of the second-difference smoothness penalty; lambda_rule: how λ was chosen;
    dof: effective number of parameters at λ; n_rows: least-squares rows (3 per pixel); n_params:
    columns (law, offsets, dislocations); n_particles; downweighted_fraction: pixels whose robust weight
    is below 0.5; n_hotspots: residual hot spots reported in the maps; solver ("lu" or "pcg") and device
    (with the GPU's name) the platelet solves ran on; rim: "partial coverage" or "pixel staircase";
    timings_s: seconds per stage (prepare_s, linear_fit_s, joint_s, uncertainty_s, report_s);
    pcg_solves, pcg_iterations: the PCG path's solves (a batch counting once) and CG iterations, over
    all particles and stages (None on the LU path).
    """

    rmse_strain: float
    n_pixels: int
    chi2_reduced: float
    smoothness_lambda: float
    lambda_rule: str
    dof: float
    n_rows: int
    n_params: int
    n_particles: int
    downweighted_fraction: float
    n_hotspots: int
    solver: str
    device: str
    rim: str
    timings_s: dict[str, float] = field(default_factory=dict)
    pcg_solves: int | None = None
    pcg_iterations: int | None = None


@dataclass(frozen=True)
class Identifiability:
    """What the data constrain: a 20-bin histogram of the fitted X (coverage_edges (21,), coverage_counts
    (20,)), the support of each knot (knot_support_px (K,), pixel equivalents of its hat function),
    whether each knot is constrained (constrained (K,) bool: support >= min_support_px; X = 0 always),
    the singular values and condition number of the column-normalised whitened law design, and the
    warnings they raise."""

    coverage_edges: np.ndarray
    coverage_counts: np.ndarray
    knot_support_px: np.ndarray
    constrained: np.ndarray
    singular_values: np.ndarray
    condition_number: float
    warnings: list[str]


@dataclass(frozen=True)
class Calibration:
    """Result of :func:`inverse.calibrate`.

    law: ``mechanics.laws.PiecewiseLinearLaw`` (ε⁰ along a, b, c; b = Vegard reference).
    knots_X (K,), values (2, K) and std (2, K): the learned ε⁰ along a and c at the knots, with the
      larger of the Laplace and block-bootstrap standard deviations (std_laplace, std_bootstrap (2, K));
      covariance: Laplace covariance (2(K−1), 2(K−1)) of the law's free coefficients (a, then c).
    vegard: :class:`VegardSlopes` (§4.3). fit: :class:`FitStatistics`.
    residual: per particle, maps in the crystal frame (see :meth:`residual_arrays`).
    identifiability: :class:`Identifiability`. warnings: its warnings.
    registration: per particle, the composition registration (shift_px, shift_nm, n_filled, resampled,
      tv_weight, composition_sigma). offsets: per particle, the uniform strain offset (aa, cc, ac, crystal
      frame) and whether it was fitted. inputs: per particle, {path, sha256} of its file.
    settings: the :class:`~inverse.settings.CalibrationSettings` it was made with.
    dislocations: per particle, the dislocations modelled as nuisances. mlflow: {run_id, model_uri}.
    law_samples: (n_bootstrap, 3, K) knot values of the law refitted on each block-bootstrap replicate
      (b = Vegard reference), or None without a bootstrap: the law's posterior samples, registered with
      the model (:mod:`chemoscreen.models`) for propagating its uncertainty into the screening.
    """

    law: object
    knots_X: np.ndarray
    values: np.ndarray
    std: np.ndarray
    std_laplace: np.ndarray
    std_bootstrap: np.ndarray
    covariance: np.ndarray
    vegard: VegardSlopes
    fit: FitStatistics
    residual: list[dict[str, np.ndarray]]
    identifiability: Identifiability
    registration: list[dict]
    offsets: list[dict]
    inputs: list[dict]
    warnings: list[str]
    settings: CalibrationSettings
    dislocations: list = field(default_factory=list)
    law_samples: np.ndarray | None = None
    mlflow: dict = field(default_factory=lambda: {"run_id": None, "model_uri": None})

    def to_dict(self) -> dict:
        """The ``calibration.json`` document (ARCHITECTURE §4.3)."""
        return {
            "schema": SCHEMA,
            "law": {
                "X": [float(v) for v in self.knots_X],
                "eigenstrain": {ax: [float(v) for v in self.values[i]] for i, ax in enumerate(AXES)},
                "std": {ax: [float(v) for v in self.std[i]] for i, ax in enumerate(AXES)},
            },
            "vegard": self.vegard.as_dict(),
            "fit": {"rmse_strain": float(self.fit.rmse_strain), "n_pixels": int(self.fit.n_pixels),
                    "chi2_reduced": float(self.fit.chi2_reduced)},
            "inputs": list(self.inputs),
            "mlflow": dict(self.mlflow),
        }

    def to_json(self) -> str:
        """``calibration.json`` text in the ``chemoscreen.calibration/1`` schema (ARCHITECTURE §4.3)."""
        return json.dumps(self.to_dict(), indent=2)

    def with_mlflow(self, run_id: str | None, model_uri: str | None) -> Calibration:
        """A copy with the ``mlflow`` section filled."""
        return replace(self, mlflow={"run_id": run_id, "model_uri": model_uri})

    def residual_arrays(self) -> dict:
        """Flat dict of arrays for ``residual.npz``: ``p{i}_<name>`` per particle, plus the law."""
        out = {"law_X": self.knots_X, "law_a": self.values[0], "law_c": self.values[1],
               "law_std_a": self.std[0], "law_std_c": self.std[1]}
        for i, maps in enumerate(self.residual):
            for name, arr in maps.items():
                out[f"p{i}_{name}"] = np.asarray(arr)
        return out
