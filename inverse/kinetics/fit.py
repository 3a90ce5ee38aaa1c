"""``inverse.learn_kinetics``: μ_h(X), k₀(X), log k(r) and the rate law from image series, through the
differentiable ACR stepper (model in :mod:`inverse.kinetics.model`).

Loss with ``latent_states=False`` (multiple shooting: each fitted interval starts from the observed,
denoised frame at its start, so errors never accumulate over the series):

    L(θ) = ½ Σ_intervals Σ_pixels ((X̂_{t+1}(θ; X̃_t) − X_{t+1}) / σ_X)²
           + ½ λ Σ_faces (ℓ(r) − ℓ(r'))² + ½ Σ_j ((a_j − a⁰_j)/σ_a)² + ½ Σ_j ((b_j − b⁰_j)/σ_b)²

With ``latent_states`` (the default; weak-constraint multiple shooting) every frame's state s_t is
estimated with θ (s = sigmoid(z), started from the denoised frames), each observation is used once and
the states are tied by the model:

    L(θ, s) = ½ Σ_t Σ_pixels ((s_t − X_t)/σ_X)²
              + ½ Σ_intervals Σ_pixels ((s_{t+1} − X̂_{t+1}(θ; s_t))/(f σ_X))² + the same priors,

f = ``continuity_fraction``; a held-out interval's end frame is left out of the first sum. Starting an
interval from the noisy (or smoothed) frame puts the frame's noise (or the smoothing's bias at the
interfaces) into the prediction: measured on a synthetic BV series (24², σ_X 0.05, the true θ, the
fit's grid) the prediction misses the next frame by 1.7 σ_X rms from the observed frames and by
0.09 σ_X from the true ones (64 steps per interval; 0.75 σ_X with 16 steps).

A measured cell voltage (``voltage_V``, unless ``use_voltage=False``) adds ½ Σ ((V̂ − V)/σ_V)² over the
fitted intervals' start frames, V̂ = V₀ − ν k_BT/e with ν the reservoir potential of the interval's
start state under its first current and V₀ a parameter: μ_h is then absolute (−e·OCV against Li/Li⁺).

Both are minimised by L-BFGS (strong Wolfe line search) with gradients by reverse-mode autograd through the
fixed-step rollout (checkpointed every ``checkpoint_every`` steps). λ is chosen on held-out intervals
(every ``holdout_every``-th), from the largest λ down, each fit warm-started from the previous; the
rate law by the held-out Gaussian log-likelihood (``auto`` compares ``butler-volmer`` with ``ciet`` and
reports both). Uncertainty: the Laplace approximation with the Gauss–Newton Hessian JᵀJ + prior
precision at the optimum; J by forward finite differences of the residuals (float64, step 1e-6), the
columns of log k(r) estimated 25 at a time (pixels 5 apart share a perturbation; a pixel's column is read
within 2 pixels of it: a compressed Jacobian, exact when an interval moves a perturbation less than 2
pixels).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from inverse.kinetics.data import PreparedSeries, prepare
from inverse.kinetics.model import MU_UNIT_EV, ForwardModel, bspline_basis, rate_scale_guess
from inverse.kinetics.series import ImageSeries
from mechanics.errors import InputError, SolverError

FIT_LAWS = ("butler-volmer", "butler-volmer-activity", "ciet", "auto")
AUTO_LAWS = ("butler-volmer", "ciet")
REPORT_X = np.round(np.linspace(0.02, 0.98, 49), 10)
MU_REFERENCE_RANGE = (0.1, 0.9)
"""Without ``voltage_V`` μ_h is known up to a constant (the galvanostatic reservoir absorbs it): it is
reported relative to its mean over X in [0.1, 0.9]."""
VOLTAGE_UNIT_V = 0.01
"""Unit of the fitted voltage offset (10 mV), so that it is of order one like every other parameter."""


@dataclass(frozen=True)
class KineticsSettings:
    """Options of :func:`learn_kinetics` (the ``learn-kinetics`` flags are derived from them).

    Attributes:
        rate_law: ``butler-volmer``, ``butler-volmer-activity``, ``ciet`` or ``auto`` (BV vs CIET by
            held-out frames).
        steps_per_interval: fixed ACR steps per frame interval.
        corrections: corrector iterations of each fixed step towards backward Euler (the forward model's
            :attr:`~mechanics.phasefield.reaction.AllenCahnReaction.corrections`; 0 is the plain stabilised
            step). Measured at the true kinetics (16², 8 frames at 2 then 20C, BV): the prediction misses
            the true next state by 1.45 / 0.75 / 0.55 σ_X at 16 steps with 0 / 1 / 2 correctors, 0.79 /
            0.18 at 32 steps with 0 / 1 and 0.30 / 0.10 at 64: the plain step's interface lags. One
            corrector doubles the cost of a step.
        mu_knots: B-spline functions of μ_h (≥ 8).
        k0_knots: B-spline functions of ln k₀ (≥ 4).
        lambdas: smoothness weights of log k(r) tried (largest first), chosen by held-out frames.
        holdout_every: every n-th interval is held out (≥ 2).
        max_iter: L-BFGS iterations per λ.
        denoise_px: Gaussian σ (pixels) of the smoothing of the start frames.
        mu_prior_std_meV: prior σ of each μ_h spline coefficient about the LFP regular solution.
        k0_prior_std: prior σ of each ln k₀ coefficient about the LFP reference (ideal BV shape).
        laplace: compute the Laplace standard deviations.
        latent_states: estimate every frame's state s_t with the kinetics (weak-constraint multiple
            shooting; else each interval starts from its denoised frame).
        continuity_fraction: with latent states, σ of the continuity s_{t+1} ≈ X̂_{t+1}(θ; s_t) as a
            fraction of σ_X.
        checkpoint_every: steps per checkpointed segment of the rollout.
        use_voltage: fit the measured cell voltage ``voltage_V`` where a series has one (then μ_h is
            absolute: eV against Li/Li⁺, μ_h = −e·OCV).
        voltage_sigma_mV: one-σ error of the measured voltage as the particle's reservoir potential.
    """

    rate_law: str = field(default="auto", metadata={"help": "rate law to fit", "choices": FIT_LAWS})
    steps_per_interval: int = field(default=16, metadata={"help": "fixed ACR steps per frame interval"})
    corrections: int = field(
        default=1, metadata={"help": "corrector iterations per fixed step towards backward Euler (0: none)"})
    mu_knots: int = field(default=10, metadata={"help": "B-spline functions of μ_h(X) (≥ 8)"})
    k0_knots: int = field(default=8, metadata={"help": "B-spline functions of ln k₀(X) (≥ 4)"})
    lambdas: tuple[float, ...] = field(
        default=(100.0, 10.0, 1.0),
        metadata={
            "help": "smoothness weights of log k(r) tried, comma-separated",
            "type": lambda s: tuple(float(v) for v in s.split(",")),
            "metavar": "L1,L2,...",
        },
    )
    holdout_every: int = field(default=4, metadata={"help": "hold out every n-th frame interval"})
    max_iter: int = field(default=40, metadata={"help": "L-BFGS iterations per smoothness weight"})
    denoise_px: float = field(default=1.0, metadata={"help": "σ (px) of the start-frame smoothing"})
    mu_prior_std_meV: float = field(default=30.0, metadata={"help": "prior σ of the μ_h coefficients (meV)"})
    k0_prior_std: float = field(default=1.5, metadata={"help": "prior σ of the ln k₀ coefficients"})
    laplace: bool = field(
        default=True, metadata={"help": "skip the Laplace uncertainty", "flag": "--no-laplace"}
    )
    continuity_fraction: float = field(
        default=0.5, metadata={"help": "σ of the state continuity as a fraction of σ_X (latent states)"})
    latent_states: bool = field(
        default=True,
        metadata={"help": "start each interval from its denoised frame instead of estimating every "
                  "frame's state with the kinetics (weak-constraint multiple shooting)",
                  "flag": "--no-latent-states"},
    )
    checkpoint_every: int = field(default=4, metadata={"help": "steps per checkpointed rollout segment"})
    use_voltage: bool = field(
        default=True,
        metadata={"help": "ignore the series' measured voltage (μ_h then relative)", "flag": "--no-voltage"},
    )
    voltage_sigma_mV: float = field(
        default=1.0, metadata={"help": "one-σ error of the measured cell voltage (mV)"})

    def __post_init__(self) -> None:
        if self.rate_law not in FIT_LAWS:
            raise InputError("rate_law", " or ".join(FIT_LAWS), self.rate_law)
        for name, low in (
            ("steps_per_interval", 1),
            ("mu_knots", 8),
            ("k0_knots", 4),
            ("holdout_every", 2),
            ("max_iter", 1),
            ("checkpoint_every", 1),
            ("corrections", 0),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise InputError(name, f"an integer ≥ {low}", v)
        for name in ("denoise_px", "mu_prior_std_meV", "k0_prior_std", "continuity_fraction",
                     "voltage_sigma_mV"):
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
                or v < 0
                or (name != "denoise_px" and v == 0)
            ):
                raise InputError(name, "a finite number > 0" if name != "denoise_px" else "a number ≥ 0", v)
        lam = self.lambdas
        if (
            not isinstance(lam, tuple)
            or not lam
            or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in lam)
        ):
            raise InputError("lambdas", "one or more finite weights > 0", lam)


_REJECTED_LOSS = 1e30


@dataclass
class _Params:
    """The fitted quantities: μ_h and k₀ spline coefficients, log k(r) per series, with latent states
    the logits z of every frame's state of each series (s = sigmoid(z); one more than the series'
    intervals) and, with a measured voltage, the offset δ of V = V_ref + δ·(10 mV) − ν k_BT/e (the cell
    voltage where the model's μ vanishes)."""

    mu: torch.Tensor
    k0: torch.Tensor
    log_k: list[torch.Tensor]
    starts: list[torch.Tensor] = field(default_factory=list)
    offset: torch.Tensor | None = None

    def tensors(self) -> list[torch.Tensor]:
        extra = [] if self.offset is None else [self.offset]
        return [self.mu, self.k0, *extra, *self.log_k, *self.starts]

    def clone(self) -> _Params:
        return _Params(
            self.mu.detach().clone(),
            self.k0.detach().clone(),
            [x.detach().clone() for x in self.log_k],
            [z.detach().clone() for z in self.starts],
            None if self.offset is None else self.offset.detach().clone(),
        )

    def flat(self) -> torch.Tensor:
        return torch.cat([t.detach().reshape(-1) for t in self.tensors()])


@dataclass(frozen=True)
class LawScore:
    """Held-out score of one rate law at its chosen λ."""

    rate_law: str
    smoothness_lambda: float
    heldout_loglik: float
    heldout_rms: float
    train_rms: float
    lambda_scores: dict
    heldout_voltage_rms_mV: float = math.nan


@dataclass
class KineticsFit:
    """What :func:`learn_kinetics` learned (all on the report grid ``X``).

    Attributes:
        X: (n,) Li fractions of the report grid.
        mu_h_eV, mu_h_std_eV: μ_h(X) (relative to its mean over [0.1, 0.9] unless ``mu_absolute``).
        mu_absolute: whether μ_h is absolute (a measured voltage pins the constant).
        k0_A_per_m2, k0_std_A_per_m2: k₀(X).
        mu_prior_eV, k0_prior_A_per_m2: the priors' centres on X (same reference as μ_h).
        log_k, log_k_std: per series (H, W) on the series' grid, NaN outside the particle.
        rate_law: the chosen law; scores: :class:`LawScore` per law compared.
        smoothness_lambda: the chosen λ.
        fit: statistics (rms, χ², counts, timings, σ estimated or given, shifts).
        predicted, observed: per series (T, H, W) predicted and observed frames (NaN where none).
        residual_rms: per series (T,) rms (pred − obs) per frame (NaN for frames not predicted).
        heldout: per series (T,) bool, frames held out.
        inputs: [{"path", "sha256"}].
        coefficients: raw parameters (``mu``, ``k0``) for the stored model.
        mlflow: run id and model URI once logged.
        truth: ``truth_*`` of the first series (plots only).
    """

    X: np.ndarray
    mu_h_eV: np.ndarray
    mu_h_std_eV: np.ndarray
    mu_absolute: bool
    k0_A_per_m2: np.ndarray
    k0_std_A_per_m2: np.ndarray
    mu_prior_eV: np.ndarray
    k0_prior_A_per_m2: np.ndarray
    log_k: list[np.ndarray]
    log_k_std: list[np.ndarray]
    rate_law: str
    scores: list[LawScore]
    smoothness_lambda: float
    fit: dict
    predicted: list[np.ndarray]
    observed: list[np.ndarray]
    residual_rms: list[np.ndarray]
    heldout: list[np.ndarray]
    inputs: list[dict]
    coefficients: dict
    settings: KineticsSettings
    mlflow: dict = field(default_factory=dict)
    truth: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The ``kinetics.json`` document (schema ``chemoscreen.kinetics/1``)."""
        r = lambda a: [None if not np.isfinite(v) else float(v) for v in np.asarray(a, float)]  # noqa: E731
        return {
            "schema": "chemoscreen.kinetics/1",
            "mu_h": {
                "X": r(self.X),
                "value_eV": r(self.mu_h_eV),
                "std_eV": r(self.mu_h_std_eV),
                "reference": "absolute" if self.mu_absolute else "mean over X in [0.1, 0.9]",
            },
            "k0": {
                "X": r(self.X),
                "value_A_per_m2": r(self.k0_A_per_m2),
                "std_A_per_m2": r(self.k0_std_A_per_m2),
            },
            "rate_law": {
                "chosen": self.rate_law,
                "smoothness_lambda": self.smoothness_lambda,
                "scores": [asdict(s) for s in self.scores],
                "criterion": "held-out Gaussian log-likelihood (higher is better)",
            },
            "fit": self.fit,
            "settings": {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.settings).items()
            },
            "inputs": self.inputs,
            "mlflow": self.mlflow,
        }

    def to_json(self) -> str:
        import json

        return json.dumps(self.to_dict(), indent=2, allow_nan=False)


def _priors(settings: KineticsSettings, kT_eV: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Prior centres of the spline coefficients: the LFP regular solution Ω(1−2X) and the reference ideal
    Butler-Volmer k₀·X^½(1−X)^½, least-squares projected on the splines."""
    from mechanics.parameters.lfp import lfp_params

    p = lfp_params()
    x = torch.linspace(0.01, 0.99, 197, dtype=dtype)
    mu = p.omega_eV * (1 - 2 * x) / MU_UNIT_EV
    a = torch.linalg.lstsq(bspline_basis(x, settings.mu_knots), mu[:, None]).solution[:, 0]
    lk = rate_scale_guess() + 0.5 * torch.log(x) + 0.5 * torch.log1p(-x)
    b = torch.linalg.lstsq(bspline_basis(x, settings.k0_knots), lk[:, None]).solution[:, 0]
    return a, b


class _Problem:
    """The loss of a set of prepared series for one rate law."""

    def __init__(self, prepared: list[PreparedSeries], settings: KineticsSettings, law: str, dtype):
        self.prepared, self.settings, self.law = prepared, settings, law
        self.models = [
            ForwardModel(p.physics, p.domain, law, settings.steps_per_interval, settings.checkpoint_every,
                         settings.corrections)
            for p in prepared
        ]
        self.rows = {"train": [torch.as_tensor(np.flatnonzero(~p.holdout)) for p in prepared],
                     "valid": [torch.as_tensor(np.flatnonzero(p.holdout)) for p in prepared]}
        self.train = [p.intervals.take(r.numpy()) for p, r in zip(prepared, self.rows["train"])]
        self.valid = [p.intervals.take(r.numpy()) for p, r in zip(prepared, self.rows["valid"])]
        self.prior_mu, self.prior_k0 = _priors(settings, prepared[0].physics.kT_eV, dtype)
        self.masks = [torch.as_tensor(p.domain.mask, dtype=dtype) for p in prepared]
        # with latent states: every frame's observation, its weight (0 for a held-out interval's end
        # frame, which is not fitted) and the continuity's 1/(f σ_X) over the particle, per series
        self.frames = []
        for p in prepared:
            iv = p.intervals
            weight = torch.cat([iv.start_weight, iv.weight[-1:]]).clone()
            weight[1:][torch.as_tensor(p.holdout)] = 0.0
            scale = torch.as_tensor(p.domain.mask / p.sigma / settings.continuity_fraction, dtype=dtype)
            self.frames.append((torch.cat([iv.start_observed, iv.target[-1:]]), weight, scale))
        # a measured voltage is fitted where a fitted interval of any series starts at one (prepared with
        # a voltage σ); voltages on held-out intervals alone cannot pin V₀
        self.voltage = any(bool((batch.voltage_weight > 0).any()) for batch in self.train)
        self.kT_eV = [p.physics.kT_eV for p in prepared]

    def voltage_V(self, theta: _Params, nu: torch.Tensor, series: int) -> torch.Tensor:
        """The predicted cell voltage V = V_ref + δ·(10 mV) − ν k_BT/e of start states with potential ν."""
        from mechanics.parameters.lfp import VOLTAGE_LFP_V

        return VOLTAGE_LFP_V + VOLTAGE_UNIT_V * theta.offset - nu * self.kT_eV[series]

    def _voltage_residual(self, theta: _Params, nu: torch.Tensor, batch, series: int) -> torch.Tensor:
        if theta.offset is None:
            return nu[:0]
        return (self.voltage_V(theta, nu, series) - batch.start_voltage_V) * batch.voltage_weight

    def parts(self, theta: _Params, which: str = "train") -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per series, ((X̂_{t+1} − X_{t+1})/σ_X) of the fitted (or held-out) intervals from their start
        states, and (V̂ − V)/σ_V at their start frames (empty without a fitted voltage)."""
        comp, volt = [], []
        for i, (model, batch, log_k) in enumerate(zip(self.models, self.batches(theta, which), theta.log_k)):
            pred, nu = model.predict_with_potential((theta.mu, theta.k0, log_k), batch)
            comp.append((pred - batch.target) * batch.weight)
            volt.append(self._voltage_residual(theta, nu, batch, i))
        return comp, volt

    def all_intervals(self, theta: _Params, series: int):
        """Every interval of ``series``, starting from its estimated state (latent states) or from its
        denoised frame."""
        intervals = self.prepared[series].intervals
        if not theta.starts:
            return intervals
        return replace(intervals, start=torch.sigmoid(theta.starts[series][:-1]))

    def batches(self, theta: _Params, which: str = "train") -> list:
        """The interval batches; with latent states each interval starts from its estimated state."""
        if not theta.starts:
            return self.train if which == "train" else self.valid
        return [replace(batch, start=self.all_intervals(theta, i).start[rows])
                for i, (batch, rows) in enumerate(zip(getattr(self, which), self.rows[which]))]

    def residuals(self, theta: _Params, which: str = "train") -> list[torch.Tensor]:
        """((X̂_{t+1} − X_{t+1})/σ_X) of the fitted (or held-out) intervals, from their start states."""
        return self.parts(theta, which)[0]

    def state_terms(self, theta: _Params) -> torch.Tensor:
        """With latent states: ½ Σ_t ((s_t − X_t)/σ_X)² over the observed pixels of every frame but the
        held-out intervals' end frames, plus ½ Σ_intervals ((s_{t+1} − X̂_{t+1}(θ; s_t))/(f σ_X))² over the
        particle (the continuity of the states, f = ``continuity_fraction``), plus the fitted intervals'
        voltage terms from their estimated start states."""
        out = torch.zeros((), dtype=theta.mu.dtype)
        for i, (model, z, log_k) in enumerate(zip(self.models, theta.starts, theta.log_k)):
            observed, weight, scale = self.frames[i]
            states = torch.sigmoid(z)
            out = out + 0.5 * (((states - observed) * weight) ** 2).sum()
            every = self.all_intervals(theta, i)
            pred, nu = model.predict_with_potential((theta.mu, theta.k0, log_k), every)
            out = out + 0.5 * (((states[1:] - pred) * scale) ** 2).sum()
            rows = self.rows["train"][i]
            volt = self._voltage_residual(theta, nu[rows], every.take(rows.numpy()), i)
            out = out + 0.5 * (volt**2).sum()
        return out

    def smoothness(self, log_k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        dy = (log_k[1:] - log_k[:-1]) * mask[1:] * mask[:-1]
        dx = (log_k[:, 1:] - log_k[:, :-1]) * mask[:, 1:] * mask[:, :-1]
        return (dy**2).sum() + (dx**2).sum()

    def prior(self, theta: _Params, lam: float) -> torch.Tensor:
        s = self.settings
        sa = s.mu_prior_std_meV * 1e-3 / MU_UNIT_EV
        out = 0.5 * (((theta.mu - self.prior_mu) / sa) ** 2).sum()
        out = out + 0.5 * (((theta.k0 - self.prior_k0) / s.k0_prior_std) ** 2).sum()
        for log_k, mask in zip(theta.log_k, self.masks):
            out = out + 0.5 * lam * self.smoothness(log_k, mask)
        return out

    def loss(self, theta: _Params, lam: float) -> torch.Tensor:
        if theta.starts:
            return self.state_terms(theta) + self.prior(theta, lam)
        comp, volt = self.parts(theta)
        data = sum(0.5 * (r**2).sum() for r in comp + volt)
        return data + self.prior(theta, lam)

    def initial(self) -> _Params:
        starts = []
        if self.settings.latent_states:  # every frame's state, from the denoised frames
            starts = [torch.logit(torch.cat([p.intervals.start, p.intervals.start[-1:]]))
                      for p in self.prepared]
        theta = _Params(
            self.prior_mu.clone(),
            self.prior_k0.clone(),
            [torch.zeros(p.domain.shape, dtype=self.prior_mu.dtype) for p in self.prepared],
            starts,
        )
        if self.voltage:
            # the offset enters the voltage linearly: start at its least-squares value for the prior θ
            theta.offset = torch.zeros((), dtype=self.prior_mu.dtype)
            with torch.no_grad():
                _, volt = self.parts(theta)
                w = torch.cat([b.voltage_weight for b in self.batches(theta)])
                r = torch.cat(volt)
                theta.offset = -(r * w).sum() / (w * w).sum() / VOLTAGE_UNIT_V
        return theta

    def minimise(self, theta: _Params, lam: float) -> tuple[_Params, float]:
        theta = theta.clone()
        params = [t.requires_grad_(True) for t in theta.tensors()]
        opt = torch.optim.LBFGS(
            params,
            lr=1.0,
            max_iter=self.settings.max_iter,
            history_size=20,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-7,
            tolerance_change=1e-10,
        )

        def closure():
            opt.zero_grad()
            value = self.loss(theta, lam)
            if not torch.isfinite(value):
                # a trial step of the line search went where the model blows up: a large finite loss
                # makes the search shrink the step (Armijo fails) instead of propagating NaN
                return torch.tensor(_REJECTED_LOSS, dtype=value.dtype)
            value.backward()
            return value

        start = theta.clone()
        opt.step(closure)
        with torch.no_grad():
            value = float(self.loss(theta, lam))
        if not math.isfinite(value):
            with torch.no_grad():
                value = float(self.loss(start, lam))
            if not math.isfinite(value):
                raise SolverError("learn-kinetics", f"the loss is non-finite ({self.law}, λ={lam:g})")
            theta = start
        return theta.clone(), value

    def score(self, theta: _Params) -> tuple[float, float, float, float]:
        """(held-out log-likelihood of X and, when fitted, of the voltage; held-out rms of X; fitted rms of
        X; held-out rms of the voltage in mV, NaN without one)."""
        with torch.no_grad():
            ll, sq, n, v_sq, v_n = 0.0, 0.0, 0, 0.0, 0
            comp, volt = self.parts(theta, "valid")
            valid = self.batches(theta, "valid")
            for r, rv, batch in zip(comp, volt, valid):
                for res, w in ((r, batch.weight), (rv, batch.voltage_weight[: rv.numel()])):
                    seen = w > 0
                    ll += float(-0.5 * (res**2).sum() + torch.log(w[seen] / math.sqrt(2 * math.pi)).sum())
                w = batch.weight
                seen = w > 0
                sq += float(((r / torch.where(seen, w, torch.ones_like(w))) ** 2 * seen).sum())
                n += int(seen.sum())
                wv = batch.voltage_weight[: rv.numel()]
                seen_v = wv > 0
                v_sq += float(((rv / torch.where(seen_v, wv, torch.ones_like(wv))) ** 2 * seen_v).sum())
                v_n += int(seen_v.sum())
            tr_sq, tr_n = 0.0, 0
            for r, batch in zip(self.residuals(theta, "train"), self.train):
                seen = batch.weight > 0
                tr_sq += float(((r / torch.where(seen, batch.weight, torch.ones_like(r))) ** 2 * seen).sum())
                tr_n += int(seen.sum())
        v_rms = 1e3 * math.sqrt(v_sq / v_n) if v_n else math.nan
        return ll, math.sqrt(sq / max(n, 1)), math.sqrt(tr_sq / max(tr_n, 1)), v_rms


def _fit_law(problem: _Problem, settings: KineticsSettings, progress) -> tuple[LawScore, _Params, float]:
    theta = problem.initial()
    best = None
    per_lambda = {}
    for lam in sorted(settings.lambdas, reverse=True):
        theta, _ = problem.minimise(theta, lam)
        ll, rms, train_rms, v_rms = problem.score(theta)
        per_lambda[f"{lam:g}"] = ll
        volts = "" if math.isnan(v_rms) else f", voltage {v_rms:.2f} mV"
        progress(
            f"{problem.law}: λ={lam:g} held-out log-likelihood {ll:.1f}, rms {rms:.4f}{volts} "
            f"(fit rms {train_rms:.4f})"
        )
        if best is None or ll > best[0]:
            best = (ll, rms, train_rms, v_rms, lam, theta.clone())
    ll, rms, train_rms, v_rms, lam, theta = best
    return LawScore(problem.law, lam, ll, rms, train_rms, per_lambda, v_rms), theta, lam


def _laplace(problem: _Problem, theta: _Params, lam: float, h: float = 1e-6) -> np.ndarray:
    """Covariance of θ (flat: μ coefficients, k₀ coefficients, the voltage offset when fitted, log k of
    each series' box), given the estimated states (held at their optimum: the covariance is conditional
    on them). The residuals are the composition's, then the voltage's; the compressed log k columns read
    the composition rows only (a pixel's prefactor moves the reservoir potential by O(1/pixels))."""
    import scipy.sparse as sp

    def res(t: _Params) -> np.ndarray:
        with torch.no_grad():
            comp, volt = problem.parts(t)
            return torch.cat([r.reshape(-1) for r in comp + volt]).numpy()

    dense = [theta.mu, theta.k0] + ([] if theta.offset is None else [theta.offset.reshape(1)])
    n_dense = len(dense)

    def shifted(direction: list[torch.Tensor], scale: float) -> _Params:
        return _Params(
            theta.mu + scale * direction[0],
            theta.k0 + scale * direction[1],
            [lk + scale * d for lk, d in zip(theta.log_k, direction[n_dense:])],
            theta.starts,
            None if theta.offset is None else theta.offset + scale * direction[2].reshape(()),
        )

    zeros = [torch.zeros_like(t) for t in (*dense, *theta.log_k)]
    n_mu, n_k0 = theta.mu.numel(), theta.k0.numel()
    cols, rows, vals = [], [], []
    r0 = res(theta)
    n_res = r0.size
    # dense columns: the spline coefficients and the voltage offset
    col = 0
    for block, size in enumerate(t.numel() for t in dense):
        for j in range(size):
            d = [z.clone() for z in zeros]
            d[block].view(-1)[j] = 1.0
            jv = (res(shifted(d, h)) - r0) / h
            nz = np.flatnonzero(jv)
            rows.append(nz)
            cols.append(np.full(nz.size, col))
            vals.append(jv[nz])
            col += 1
    # log k columns: 25 colours per series, read back within 2 pixels
    offsets = np.cumsum([0] + [r.numel() for r in problem.residuals(theta)])
    for s, (lk, batch) in enumerate(zip(theta.log_k, problem.batches(theta))):
        hh, ww = lk.shape
        yy, xx = np.meshgrid(np.arange(hh), np.arange(ww), indexing="ij")
        base = col + sum(t.numel() for t in theta.log_k[:s])
        nb = len(batch)
        for cy in range(5):
            for cx in range(5):
                colour = (yy % 5 == cy) & (xx % 5 == cx)
                if not colour.any():
                    continue
                d = [z.clone() for z in zeros]
                d[n_dense + s] = torch.as_tensor(colour, dtype=lk.dtype)
                jv = (res(shifted(d, h)) - r0) / h
                block = jv[offsets[s] : offsets[s + 1]].reshape(nb, hh, ww)
                for py, px in zip(*np.nonzero(colour)):
                    y0, y1, x0, x1 = max(py - 2, 0), min(py + 3, hh), max(px - 2, 0), min(px + 3, ww)
                    bi, yi, xi = np.meshgrid(
                        np.arange(nb), np.arange(y0, y1), np.arange(x0, x1), indexing="ij"
                    )
                    lin = ((bi * hh + yi) * ww + xi).reshape(-1)
                    v = block[:, y0:y1, x0:x1].reshape(-1)
                    keep = v != 0
                    rows.append(lin[keep] + offsets[s])
                    cols.append(np.full(int(keep.sum()), base + py * ww + px))
                    vals.append(v[keep])
    n_par = col + sum(t.numel() for t in theta.log_k)
    jac = sp.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_res, n_par)
    )
    hess = (jac.T @ jac).toarray()
    s = problem.settings
    sa = s.mu_prior_std_meV * 1e-3 / MU_UNIT_EV
    hess[np.arange(n_mu), np.arange(n_mu)] += 1 / sa**2
    k = np.arange(n_mu, n_mu + n_k0)
    hess[k, k] += 1 / s.k0_prior_std**2
    start = col
    for lk, mask in zip(theta.log_k, problem.masks):
        hh, ww = lk.shape
        m = mask.numpy()
        idx = start + np.arange(hh * ww).reshape(hh, ww)
        for a, b, ok in (
            (idx[1:], idx[:-1], m[1:] * m[:-1]),
            (idx[:, 1:], idx[:, :-1], m[:, 1:] * m[:, :-1]),
        ):
            a, b, ok = a[ok > 0], b[ok > 0], None
            np.add.at(hess, (a, a), lam)
            np.add.at(hess, (b, b), lam)
            np.add.at(hess, (a, b), -lam)
            np.add.at(hess, (b, a), -lam)
        flat = idx.reshape(-1)
        # the mean of log k is not a parameter (k(r) is relative): a weak prior fixes that direction, and
        # pixels outside the particle, which no residual sees, keep unit variance
        hess[flat, flat] += np.where(m.reshape(-1) > 0, 1e-6, 1.0)
        start += hh * ww
    return np.linalg.inv(hess)


def learn_kinetics(
    series, settings: KineticsSettings | None = None, *, progress=None, **overrides
) -> KineticsFit:
    """Learn μ_h(X), k₀(X), log k(r) and the rate law from one or more image series (one μ_h/k₀ shared).

    Args:
        series: an :class:`~inverse.kinetics.ImageSeries`, or a list of them.
        settings: the options (default :class:`KineticsSettings`).
        progress: optional callable taking one line of text per fitted λ.
        **overrides: fields of the settings to change.

    Returns:
        The :class:`KineticsFit`.

    Raises:
        InputError: bad settings or series (the field is named).
        SolverError: the fit diverged (non-finite loss).
    """
    started = time.perf_counter()
    settings = KineticsSettings() if settings is None else settings
    if overrides:
        settings = replace(settings, **overrides)
    sets = [series] if isinstance(series, ImageSeries) else list(series)
    if not sets or not all(isinstance(s, ImageSeries) for s in sets):
        raise InputError("series", "one or more inverse.kinetics.ImageSeries", type(series).__name__)
    progress = progress or (lambda line: None)
    dtype = torch.float64
    prepared = [
        prepare(
            s,
            n_steps=settings.steps_per_interval,
            holdout_every=settings.holdout_every,
            denoise_px=settings.denoise_px,
            dtype=dtype,
            voltage_sigma_V=settings.voltage_sigma_mV * 1e-3 if settings.use_voltage else None,
        )
        for s in sets
    ]
    laws = AUTO_LAWS if settings.rate_law == "auto" else (settings.rate_law,)
    results = []
    for law in laws:
        problem = _Problem(prepared, settings, law, dtype)
        score, theta, lam = _fit_law(problem, settings, progress)
        results.append((score, theta, lam, problem))
    score, theta, lam, problem = max(results, key=lambda r: r[0].heldout_loglik)
    fitted_s = time.perf_counter() - started
    cov = _laplace(problem, theta, lam) if settings.laplace else None
    return _result(
        prepared,
        problem,
        theta,
        lam,
        [r[0] for r in results],
        cov,
        settings,
        sets,
        {"fit_s": fitted_s, "laplace_s": time.perf_counter() - started - fitted_s},
    )


def _result(prepared, problem, theta, lam, scores, cov, settings, sets, timings) -> KineticsFit:
    physics = prepared[0].physics
    x = torch.as_tensor(REPORT_X)
    b_mu = bspline_basis(x, settings.mu_knots).numpy()
    b_k0 = bspline_basis(x, settings.k0_knots).numpy()
    entropy = physics.kT_eV * np.log(REPORT_X / (1 - REPORT_X))
    ref = (REPORT_X >= MU_REFERENCE_RANGE[0]) & (REPORT_X <= MU_REFERENCE_RANGE[1])
    absolute = theta.offset is not None
    a_map = b_mu * MU_UNIT_EV
    n_mu, n_k0, n_off = settings.mu_knots, settings.k0_knots, int(absolute)
    if absolute:
        # μ_h against Li/Li⁺ (μ_h = −e·OCV): the model's μ_h minus the voltage V₀ where it vanishes
        from mechanics.parameters.lfp import VOLTAGE_LFP_V

        v0 = VOLTAGE_LFP_V + VOLTAGE_UNIT_V * float(theta.offset)
        shift = -v0
        g_map = np.concatenate([a_map, np.full((len(REPORT_X), 1), -VOLTAGE_UNIT_V)], axis=1)
    else:  # relative to the mean over the reference range
        v0 = math.nan
        shift = -entropy[ref].mean()
        a_map = a_map - a_map[ref].mean(axis=0)
        g_map = a_map
    mu = entropy + a_map @ theta.mu.numpy() + shift
    mu_prior = entropy + a_map @ problem.prior_mu.numpy() + shift
    k0 = np.exp(b_k0 @ theta.k0.numpy())
    k0_prior = np.exp(b_k0 @ problem.prior_k0.numpy())
    log_k_maps, log_k_std_maps = [], []
    if cov is not None:
        sel = np.r_[0:n_mu, n_mu + n_k0 : n_mu + n_k0 + n_off]
        mu_std = np.sqrt(np.einsum("ij,jk,ik->i", g_map, cov[np.ix_(sel, sel)], g_map))
        k0_std = k0 * np.sqrt(
            np.einsum("ij,jk,ik->i", b_k0, cov[n_mu : n_mu + n_k0, n_mu : n_mu + n_k0], b_k0)
        )
        v0_std = VOLTAGE_UNIT_V * math.sqrt(cov[n_mu + n_k0, n_mu + n_k0]) if absolute else math.nan
    else:
        mu_std = np.full_like(mu, np.nan)
        k0_std = np.full_like(k0, np.nan)
        v0_std = math.nan
    start = n_mu + n_k0 + n_off
    predicted, observed, resid, held = [], [], [], []
    for i_s, (p, lk) in enumerate(zip(prepared, theta.log_k)):
        batch = problem.all_intervals(theta, i_s)  # from the estimated states with latent states
        m = p.domain.mask
        h, w = p.domain.shape
        raw = lk.numpy()
        centred = raw - raw[m].mean()
        full = np.full(p.series.shape, np.nan)
        full[p.domain.rows, p.domain.cols] = np.where(m, centred, np.nan)
        log_k_maps.append(full)
        std_full = np.full(p.series.shape, np.nan)
        if cov is not None:
            idx = start + np.flatnonzero(m.reshape(-1))
            block = cov[np.ix_(idx, idx)]
            var = np.diag(block) - 2 * block.mean(axis=1) + block.mean()
            box = np.full((h, w), np.nan)
            box[m] = np.sqrt(np.clip(var, 0, None))
            std_full[p.domain.rows, p.domain.cols] = box
        log_k_std_maps.append(std_full)
        start += h * w
        with torch.no_grad():
            pred = problem.models[i_s].predict((theta.mu, theta.k0, lk), batch).numpy()
        t_frames = p.series.n_frames
        pred_full = np.full((t_frames, *p.series.shape), np.nan)
        obs_full = p.frames
        rms = np.full(t_frames, np.nan)
        hold = np.zeros(t_frames, bool)
        for i, t in enumerate(batch.index):
            pred_full[t, p.domain.rows, p.domain.cols] = np.where(m, pred[i], np.nan)
            diff = pred_full[t] - obs_full[t]
            rms[t] = float(np.sqrt(np.nanmean(diff**2)))
            hold[t] = p.holdout[i]
        predicted.append(pred_full)
        observed.append(obs_full)
        resid.append(rms)
        held.append(hold)
    best = next(s for s in scores if s.rate_law == problem.law)
    sigma = float(np.mean([p.sigma[p.domain.mask].mean() for p in prepared]))
    fit = {
        "heldout_rms": best.heldout_rms,
        "train_rms": best.train_rms,
        "sigma_X": sigma,
        "heldout_rms_over_sigma": best.heldout_rms / sigma,
        "sigma_estimated": any(p.sigma_estimated for p in prepared),
        "n_series": len(prepared),
        "n_intervals": int(sum(len(p.intervals) for p in prepared)),
        "n_heldout": int(sum(p.holdout.sum() for p in prepared)),
        "n_pixels": int(sum(p.domain.mask.sum() for p in prepared)),
        "steps_per_interval": settings.steps_per_interval,
        "coherency": [
            ("Khachaturyan kernel" if p.domain.full else "none (masked outline)") for p in prepared
        ],
        "shifts_px": [p.shifts_px.round(4).tolist() for p in prepared],
        "voltage": {
            "used": absolute,
            "sigma_mV": settings.voltage_sigma_mV if absolute else None,
            "zero_potential_V": v0 if absolute else None,
            "zero_potential_std_mV": 1e3 * v0_std if absolute and math.isfinite(v0_std) else None,
            "heldout_rms_mV": best.heldout_voltage_rms_mV if absolute else None,
            "n_measured": int(sum((p.intervals.voltage_weight > 0).sum() for p in prepared)),
        },
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    inputs = [{"path": s.source, "sha256": s.sha256} for s in sets]
    return KineticsFit(
        X=REPORT_X.copy(),
        mu_h_eV=mu,
        mu_h_std_eV=mu_std,
        mu_absolute=absolute,
        k0_A_per_m2=k0,
        k0_std_A_per_m2=k0_std,
        mu_prior_eV=mu_prior,
        k0_prior_A_per_m2=k0_prior,
        log_k=log_k_maps,
        log_k_std=log_k_std_maps,
        rate_law=problem.law,
        scores=scores,
        smoothness_lambda=lam,
        fit=fit,
        predicted=predicted,
        observed=observed,
        residual_rms=resid,
        heldout=held,
        inputs=inputs,
        # the B-splines sum to one: μ_h against Li/Li⁺ is the model's coefficients shifted by −V₀
        coefficients={"mu": theta.mu.numpy().copy() + (-v0 / MU_UNIT_EV if absolute else 0.0),
                      "k0": theta.k0.numpy().copy(), "kT_eV": physics.kT_eV},
        settings=settings,
        truth=dict(sets[0].truth),
    )
