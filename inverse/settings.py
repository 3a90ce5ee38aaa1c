"""The settings of the jobs of ``inverse``: synthesising an image set with known truth
(:class:`SynthSettings`).

Frozen and validated on construction: every bad value is an ``InputError`` naming the field (exit code 2
from the CLI). The ``chemoscreen synth`` options are derived from these
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

from mechanics.errors import InputError
from mechanics.parameters.base import MaterialParams

SHAPES = ("ellipse", "disc", "hexagon")
STRAIN_REFERENCES = ("unknown", "LiMPO4", "MPO4")


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
