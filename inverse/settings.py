"""The settings of the two jobs of ``inverse``: calibrating the law (:class:`CalibrationSettings`) and
synthesising an image set with known truth (:class:`SynthSettings`).

Frozen and validated on construction: every bad value is an ``InputError`` naming the field (exit code 2
from the CLI). The ``chemoscreen calibrate`` and ``chemoscreen synth`` options are derived from these
fields (:mod:`chemoscreen.options`; ``metadata`` holds each option's help and, where it differs from
``--field-name``, its flag), so the defaults live here only.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from inverse.images import MAX_COMPOSITION_SIGMA
from mechanics.errors import InputError
from mechanics.parameters.base import MaterialParams

ERRORS_IN_VARIABLES = ("nlm", "tv", "posterior", "none")
SOLVERS = ("auto", "lu", "pcg")
PLANES = ("stress", "strain")
SHAPES = ("ellipse", "disc", "hexagon")
STRAIN_REFERENCES = ("unknown", "LiMPO4", "MPO4")
# The law's knots are capped at 101 (spacing 0.01 in X, a third of the composition noise σ_X = 0.03 of the
# synthetic sets). The cost grows faster than the knot count (each knot adds two basis solves per particle
# and joint round, and two columns to every least-squares fit): on a 96² set with the defaults, no bootstrap
# (2 CPU cores) 101 knots took 65 s against 6.1 s for 11, and `--n-knots 2000` ran for minutes (issue 20).
# The basis responses alone take 2(K − 1)·H·W·4 float64: 1.7 GB for a 512² set at K = 101.
MAX_KNOTS = 101


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_integer(name: str, value, low: int, high: int | None = None, expected: str | None = None) -> None:
    if not (_is_integer(value) and value >= low and (high is None or value <= high)):
        text = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
        raise InputError(name, expected or text, value)


def _check_real(name: str, value, *, positive: bool = False, optional: bool = False,
                expected: str | None = None) -> None:
    """A finite number (> 0 with ``positive``, >= 0 otherwise; None allowed with ``optional``)."""
    if optional and value is None:
        return
    if not (_is_real(value) and (value > 0 if positive else value >= 0)):
        text = expected or ("a finite number > 0" if positive else "a finite number >= 0")
        raise InputError(name, text + (" or None" if optional else ""), value)


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(name, " or ".join(repr(c) for c in choices), value)


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise InputError(name, "True or False", value)


def _check_material(value) -> None:
    if value is not None and not isinstance(value, MaterialParams):
        raise InputError("material", "None (the LFP reference) or a mechanics.MaterialParams",
                         type(value).__name__)


def _finite_tuple(self, name: str, size: int, unit: str) -> None:
    """Validate a tuple of ``size`` finite numbers and store it as a tuple of floats."""
    value = getattr(self, name)
    try:
        items = tuple(value)
    except TypeError:
        items = ()
    if len(items) != size or not all(_is_real(v) for v in items):
        raise InputError(name, f"{size} finite numbers ({unit})", value)
    object.__setattr__(self, name, tuple(float(v) for v in items))


@dataclass(frozen=True, kw_only=True)
class CalibrationSettings:
    """How :func:`inverse.calibrate` learns ε⁰(X) (one law shared by all image sets).

    Fields (units in the names):
      n_knots: knots of the piecewise-linear law, uniform on [0, 1] (X = 0 pinned to ε⁰ = 0); 3 to
        :data:`MAX_KNOTS`.
      monotone: constrain each axis to be monotone in the direction of its unconstrained end value.
      errors_in_variables: how the composition noise is handled (inverse.denoise): "nlm" (non-local-means
        denoised X), "tv" (total-variation denoised X), "posterior" (regressors E[φ_k(X) | x] under a
        deconvolved prior, pixel by pixel) or "none" (raw X; biased).
      n_bootstrap: spatial block-bootstrap replicates; 0 turns the bootstrap off (one replicate has no
        spread, so 1 is refused).
      n_joint: alternations of the joint estimation of X and the law (inverse.joint; 0 keeps the
        denoised X of ``errors_in_variables``).
      strain_psf_nm, composition_psf_nm: Gaussian σ (nm) of the strain and composition probes (None: not
        modelled). The model strain is blurred by the strain PSF (:mod:`inverse.psf`), and the joint
        X-step compares the blurred X̂ with the measured map, so X̂ is deblurred.
      device: where the platelet solves run: "auto" (a CUDA GPU when torch sees one, else the CPU), "cpu",
        "cuda" or "cuda:N" (whether the device exists is checked when the calibration starts). The least
        squares, denoising and bootstrap stay on the CPU.
      solver: "auto" (sparse LU on the CPU, matrix-free PCG on a GPU), "lu" or "pcg" (same
        discretisation; results agree to the CG tolerance).
      use_coverage: when an image set has a ``coverage`` map (area fraction of each pixel inside the
        particle), model the rim with partial-coverage elements (:func:`inverse.forward.rim_elements`) so
        that the outline is the particle's, not the mask's pixel staircase; False ignores the map.
      n_robust: iteratively reweighted passes that down-weight pixels whose residual is an outlier
        (unmodelled defects); 0 gives the plain weighted least squares.
      fit_dislocations: after a first fit, model the residual hot spots as edge dislocations (Burgers
        vector in the a-c plane, Volterra field; inverse.dislocations) with nuisance parameters, so that
        their long-range strain does not bias the law; they stay in the residual maps.
      min_support_px: knots whose hat functions sum to less than this over all pixels are reported as
        not constrained by the data.
      plane: "stress" (thin platelet, generalized plane stress) or "strain".
      material: ``mechanics.MaterialParams`` (stiffness and b misfit); None: the core's LFP reference.
      seed: seed of the bootstrap's block resampling (an integer >= 0).
    """

    n_knots: int = field(default=11, metadata={"help": f"knots of the law on [0, 1], 3 to {MAX_KNOTS}"})
    monotone: bool = field(default=False, metadata={"help": "monotone law per axis"})
    errors_in_variables: str = field(default="nlm", metadata={
        "choices": ERRORS_IN_VARIABLES,
        "help": "treatment of composition noise (nlm: non-local-means denoising)"})
    n_bootstrap: int = field(default=64, metadata={
        "flag": "--bootstrap", "help": "block-bootstrap replicates (0: off)"})
    n_joint: int = field(default=2, metadata={
        "flag": "--joint", "help": "rounds of joint composition/law estimation (0: denoised X only)"})
    strain_psf_nm: float | None = field(default=None, metadata={
        "metavar": "SIGMA", "help": "Gaussian σ (nm) of the strain probe, modelled in the fit"})
    composition_psf_nm: float | None = field(default=None, metadata={
        "metavar": "SIGMA", "help": "Gaussian σ (nm) of the composition probe, modelled in the fit"})
    device: str = field(default="auto", metadata={
        "help": "where the platelet solves run: auto (a CUDA GPU if present), cpu, cuda, cuda:N"})
    solver: str = field(default="auto", metadata={
        "choices": SOLVERS,
        "help": "platelet solver: sparse LU (CPU) or matrix-free PCG (any device); auto picks"})
    use_coverage: bool = field(default=True, metadata={
        "flag": "--ignore-coverage",
        "help": "model the outline as the mask's pixel staircase even when the set has coverage"})
    n_robust: int = 2
    fit_dislocations: bool = True
    min_support_px: float = 20.0
    plane: str = "stress"
    material: MaterialParams | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check_integer("n_knots", self.n_knots, 3, MAX_KNOTS)
        _check_bool("monotone", self.monotone)
        _check_choice("errors_in_variables", self.errors_in_variables, ERRORS_IN_VARIABLES)
        if not (_is_integer(self.n_bootstrap) and (self.n_bootstrap == 0 or self.n_bootstrap >= 2)):
            raise InputError("n_bootstrap", "0 (off) or an integer >= 2 (replicates)", self.n_bootstrap)
        _check_integer("n_joint", self.n_joint, 0)
        for name in ("strain_psf_nm", "composition_psf_nm"):
            _check_real(name, getattr(self, name), optional=True,
                        expected="a Gaussian PSF standard deviation >= 0 in nm")
        if not isinstance(self.device, (str, torch.device)):
            raise InputError("device", "'auto', 'cpu', 'cuda' or 'cuda:N'", self.device)
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError) as err:
                raise InputError("device", "'auto', 'cpu', 'cuda' or 'cuda:N'", self.device) from err
        _check_choice("solver", self.solver, SOLVERS)
        _check_bool("use_coverage", self.use_coverage)
        _check_integer("n_robust", self.n_robust, 0)
        _check_bool("fit_dislocations", self.fit_dislocations)
        _check_real("min_support_px", self.min_support_px)
        _check_choice("plane", self.plane, PLANES)
        _check_material(self.material)
        _check_integer("seed", self.seed, 0)


def _pair(text: str) -> tuple[float, float]:
    """``DY,DX`` → two floats (the CLI form of ``registration_offset_nm``)."""
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DY,DX in nm, got {text!r}") from None
    return a, b


@dataclass(frozen=True, kw_only=True)
class SynthSettings:
    """What :func:`inverse.synthesize` renders (see :mod:`inverse.synth`). Lengths in nm.

    Fields:
      size_px: image side (pixels, >= 8). pixel_size_nm: strain pixel pitch (> 0).
      oversample: fine sub-pixels per image pixel of the forward model (>= 1).
      shape: "ellipse", "disc" or "hexagon".
      law: the true law: "vegard", "bowed", a JSON/CSV table file ``X,a,c``, or a mapping with keys X, a, c.
      bow_ac: bowing b_a, b_c of the "bowed" law, f_i = X·ε_i(1) + b_i·X(1 − X).
      crystal_angle_deg: angle from image +x towards +y to crystal a (finite).
      seed: random seed (an integer >= 0).
      composition_sigma, strain_sigma: Gaussian noise added (one standard deviation, >= 0).
      composition_psf_nm, strain_psf_nm: Gaussian PSF σ per modality (>= 0; 0: no blur).
      registration_offset_nm: (dy, dx) displacement of the composition map's field of view.
      composition_pixel_size_nm: None (the strain grid) or the pitch of the composition map's own grid.
      strain_reference: "unknown" (adds ``strain_offset``), "LiMPO4" (adds −ε⁰(1)) or "MPO4" (nothing).
      strain_offset: (aa, cc, ac) uniform offset in the crystal frame (strain_reference "unknown").
      n_dislocations: edge dislocations placed on phase boundaries (>= 0). burgers_nm: their length (> 0).
      boundary_width_nm: None (1.5 pixels) or the width of the diffuse phase boundaries (> 0).
      declared_noise_factor: the noise levels written into the file relative to those added (1: honest).
      material: ``mechanics.MaterialParams``; None: the core's LFP reference.
      stiffness_ratio: None for the uniform LFP stiffness; r > 0 for the composition-dependent
        C(X) = X·C_LFP + (1 − X)·r·C_FP of :mod:`inverse.stiffness` (stored as ``truth_stiffness_ratio``).
      coverage: write the covered area fraction of every strain pixel (what a virtual ADF image
        normalised to the interior measures; exact here); False leaves only the mask.
    """

    size_px: int = field(default=96, metadata={"flag": "--size", "help": "image size in pixels"})
    pixel_size_nm: float = field(default=20.0, metadata={"help": "strain pixel pitch"})
    oversample: int = field(default=2, metadata={
        "help": "fine sub-pixels per image pixel for the forward model"})
    shape: str = field(default="ellipse", metadata={"choices": SHAPES, "help": "particle outline"})
    law: str | os.PathLike | Mapping = field(default="vegard", metadata={
        "type": str, "help": "true law: vegard, bowed, or a JSON/CSV table X,a,c"})
    bow_ac: tuple[float, float] = (0.008, -0.004)
    crystal_angle_deg: float = field(default=25.0, metadata={
        "flag": "--angle", "help": "crystal_angle_deg: image +x towards +y to crystal a"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    composition_sigma: float = field(default=0.03, metadata={"help": "noise of X"})
    strain_sigma: float = field(default=5e-4, metadata={"help": "strain noise"})
    composition_psf_nm: float = field(default=10.0, metadata={"help": "Gaussian PSF σ of X (nm)"})
    strain_psf_nm: float = field(default=10.0, metadata={"help": "Gaussian PSF σ of strain (nm)"})
    registration_offset_nm: tuple[float, float] = field(default=(14.0, -9.0), metadata={
        "type": _pair, "metavar": "DY,DX", "help": "offset of the composition field of view"})
    composition_pixel_size_nm: float | None = field(default=None, metadata={
        "help": "put the composition map on its own grid with this pitch"})
    strain_reference: str = field(default="unknown", metadata={
        "choices": STRAIN_REFERENCES, "help": "lattice the strain is measured from"})
    strain_offset: tuple[float, float, float] = (-0.004, 0.003, 0.0005)
    n_dislocations: int = field(default=3, metadata={
        "flag": "--dislocations", "help": "edge dislocations on phase boundaries"})
    burgers_nm: float = field(default=1.0, metadata={"help": "Burgers vector length (nm)"})
    boundary_width_nm: float | None = None
    declared_noise_factor: float = 1.0
    material: MaterialParams | None = None
    stiffness_ratio: float | None = None
    coverage: bool = field(default=True, metadata={
        "flag": "--no-coverage",
        "help": "do not write the pixel coverage map (the mask's staircase is then the outline)"})

    def __post_init__(self) -> None:
        _check_integer("size_px", self.size_px, 8)
        _check_real("pixel_size_nm", self.pixel_size_nm, positive=True, expected="a finite pitch > 0 nm")
        _check_integer("oversample", self.oversample, 1)
        _check_choice("shape", self.shape, SHAPES)
        if not isinstance(self.law, (str, os.PathLike, Mapping)) or self.law == "":
            raise InputError("law", "'vegard', 'bowed', a JSON/CSV table file or a mapping {X, a, c}",
                             self.law)
        _finite_tuple(self, "bow_ac", 2, "bowing of a and c")
        if not _is_real(self.crystal_angle_deg):
            raise InputError("crystal_angle_deg", "a finite angle in degrees", self.crystal_angle_deg)
        _check_integer("seed", self.seed, 0)
        for name in ("composition_sigma", "strain_sigma"):
            _check_real(name, getattr(self, name), expected="a finite noise standard deviation >= 0")
        for name in ("composition_psf_nm", "strain_psf_nm"):
            _check_real(name, getattr(self, name), expected="a finite PSF standard deviation >= 0 nm")
        _finite_tuple(self, "registration_offset_nm", 2, "dy, dx in nm")
        _check_real("composition_pixel_size_nm", self.composition_pixel_size_nm, positive=True,
                    optional=True, expected="a finite pitch > 0 nm")
        _check_choice("strain_reference", self.strain_reference, STRAIN_REFERENCES)
        _finite_tuple(self, "strain_offset", 3, "aa, cc, ac strain")
        _check_integer("n_dislocations", self.n_dislocations, 0)
        _check_real("burgers_nm", self.burgers_nm, positive=True, expected="a finite length > 0 nm")
        _check_real("boundary_width_nm", self.boundary_width_nm, positive=True, optional=True,
                    expected="a finite width > 0 nm")
        _check_real("declared_noise_factor", self.declared_noise_factor,
                    expected="a finite factor >= 0 (1: the noise added)")
        if self.composition_sigma * self.declared_noise_factor > MAX_COMPOSITION_SIGMA:
            # the file must load: calibration refuses a declared composition σ above this cap
            raise InputError("composition_sigma", f"a declared noise (times declared_noise_factor) <= "
                             f"{MAX_COMPOSITION_SIGMA:g}, the cap of inverse.images", self.composition_sigma)
        _check_material(self.material)
        _check_real("stiffness_ratio", self.stiffness_ratio, positive=True, optional=True,
                    expected="a finite FePO4 stiffness ratio > 0")
        _check_bool("coverage", self.coverage)


def with_overrides(settings_class: type, settings, overrides: dict, caller: str):
    """``settings`` (None: the defaults of ``settings_class``) with the keyword ``overrides`` of a
    convenience call such as ``calibrate(images, n_knots=9)`` applied; validated by the dataclass.

    Raises:
        InputError: ``settings`` is not a ``settings_class``, or an override is invalid.
        TypeError: an override is not a field (like any unexpected keyword argument).
    """
    if settings is None:
        settings = settings_class()
    elif not isinstance(settings, settings_class):
        raise InputError("settings", f"an inverse.{settings_class.__name__} or None", type(settings).__name__)
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(settings_class)})
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword arguments {unknown}; its settings are the fields "
                        f"of inverse.{settings_class.__name__}")
    return dataclasses.replace(settings, **overrides) if overrides else settings
