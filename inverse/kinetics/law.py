"""The learned kinetics as a stored model (``lfp-kinetics``): μ_h(X) and k₀(X), loadable without the data
in chemoscreen's safe model format (:mod:`chemoscreen.models`, kind ``kinetics/spline``: JSON and numeric
arrays, never pickle)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KIND = "kinetics/spline"


@dataclass(frozen=True)
class KineticsModel:
    """μ_h(X) = k_BT ln(X/(1−X)) + Σ a_j B_j(X) (eV, relative to its mean over X in [0.1, 0.9] unless
    ``mu_absolute``) and k₀(X) = exp(Σ b_j B_j(X)) (A/m²), B_j the uniform cubic B-splines on [0, 1].

    Attributes:
        mu_coefficients: (n,) a_j in eV.
        k0_coefficients: (m,) b_j (ln A/m²).
        kT_eV: k_BT of the fit.
        rate_law: the rate law the prefactor belongs to (``butler-volmer``, ``butler-volmer-activity``,
            ``ciet``).
        mu_absolute: whether μ_h is absolute.
    """

    mu_coefficients: np.ndarray
    k0_coefficients: np.ndarray
    kT_eV: float
    rate_law: str
    mu_absolute: bool = False

    def mu_h_eV(self, x) -> np.ndarray:
        """μ_h at Li fractions x (array), eV."""
        import torch

        from inverse.kinetics.model import spline

        x = np.clip(np.asarray(x, float), 1e-6, 1 - 1e-6)
        s = spline(torch.as_tensor(x), torch.as_tensor(self.mu_coefficients, dtype=torch.float64)).numpy()
        return self.kT_eV * np.log(x / (1 - x)) + s

    def k0_A_per_m2(self, x) -> np.ndarray:
        """k₀ at Li fractions x (array), A/m²."""
        import torch

        from inverse.kinetics.model import spline

        x = np.asarray(x, float)
        return np.exp(
            spline(torch.as_tensor(x), torch.as_tensor(self.k0_coefficients, dtype=torch.float64)).numpy()
        )

    def regular_solution_omega_eV(self) -> float:
        """The Ω of the regular solution closest to μ_h (least squares of μ_h − kT ln(X/(1−X)) on
        Ω(1−2X) + const over X in [0.1, 0.9]): how the screening's regular-solution model takes μ_h."""
        x = np.linspace(0.1, 0.9, 81)
        rest = self.mu_h_eV(x) - self.kT_eV * np.log(x / (1 - x))
        design = np.stack([1 - 2 * x, np.ones_like(x)], axis=1)
        return float(np.linalg.lstsq(design, rest, rcond=None)[0][0])

    def mean_k0_A_per_m2(self) -> float:
        """The k₀ of the reference set's shape closest to the learned one: the mean over X in [0.1, 0.9]
        of k₀(X)/√(X(1−X)) (what the ideal Butler-Volmer exchange current's prefactor is)."""
        x = np.linspace(0.1, 0.9, 81)
        return float(np.mean(self.k0_A_per_m2(x) / np.sqrt(x * (1 - x))))


def _encode(model: KineticsModel):
    return (
        {"kT_eV": float(model.kT_eV), "rate_law": model.rate_law, "mu_absolute": bool(model.mu_absolute)},
        {
            "mu_coefficients": np.asarray(model.mu_coefficients, np.float64),
            "k0_coefficients": np.asarray(model.k0_coefficients, np.float64),
        },
    )


def _decode(config: dict, tensors: dict):
    from mechanics.errors import InputError
    from mechanics.phasefield.reaction import RATE_LAWS

    if config.get("rate_law") not in RATE_LAWS:
        raise InputError("rate_law", " or ".join(RATE_LAWS), config.get("rate_law"))
    for name, low in (("mu_coefficients", 8), ("k0_coefficients", 4)):
        a = tensors.get(name)
        if a is None or a.ndim != 1 or a.size < low or not np.isfinite(a).all():
            raise InputError(
                name, f"a finite vector of at least {low} coefficients", None if a is None else a.shape
            )
    kT = config.get("kT_eV")
    if not isinstance(kT, float) or not np.isfinite(kT) or kT <= 0:
        raise InputError("kT_eV", "a number > 0", kT)
    return KineticsModel(
        tensors["mu_coefficients"],
        tensors["k0_coefficients"],
        kT,
        config["rate_law"],
        bool(config.get("mu_absolute", False)),
    )


def register() -> None:
    """Add the kind to :data:`chemoscreen.models.KINDS` (idempotent)."""
    from chemoscreen.models import ModelKind, register_kind

    register_kind(ModelKind(KIND, _encode, _decode, lambda obj: isinstance(obj, KineticsModel)))


def load_kinetics(model_uri: str, *, tracking_uri: str | None = None) -> KineticsModel:
    """The :class:`KineticsModel` of a registered version (``models:/lfp-kinetics@champion``, ...).

    Raises:
        InputError: (field ``model``) no such version, or not a kinetics model.
    """
    from chemoscreen.models import load_model
    from mechanics.errors import InputError

    register()
    stored = load_model(model_uri, tracking_uri=tracking_uri)
    if stored.kind != KIND:
        raise InputError("model", f"a model of kind {KIND} (learn-kinetics)", f"{model_uri}: {stored.kind}")
    return stored.model


LFP_LIKE_FE_FRACTION = 0.75
"""A candidate is LFP-like when iron holds at least 75 % of its metal sites: it takes the learned
kinetics; the others keep their own (literature) Ω and k₀, since a movie of LFP says nothing about how
Mn, Co or Ni change them."""


def with_learned_kinetics(params, fractions, model: KineticsModel):
    """``params`` (a ``MaterialParams``) with the learned kinetics when the candidate is LFP-like (Fe
    fraction ≥ :data:`LFP_LIKE_FE_FRACTION`): Ω from the regular solution closest to μ_h
    (:meth:`KineticsModel.regular_solution_omega_eV`) and k₀ from
    :meth:`KineticsModel.mean_k0_A_per_m2`; otherwise ``params`` unchanged."""
    from dataclasses import replace

    if float(dict(fractions).get("Fe", 0.0)) < LFP_LIKE_FE_FRACTION:
        return params
    return replace(params, omega_eV=model.regular_solution_omega_eV(),
                   exchange_rate_A_m2=model.mean_k0_A_per_m2())
