"""Kinetics from operando image series (Zhao et al., Nature 621, 289 (2023)): the series format, its
validation and frame registration.

    series = inverse.kinetics.load_series("movie.npz")        # ImageSeries, validated
    registered = inverse.kinetics.register_frames(series)      # drift removed; .shifts_px per frame
    synthetic = inverse.kinetics.synthesize_series(seed=0)     # known μ_h(X), k₀(X), k(r) under truth_*
    fit = inverse.kinetics.learn_kinetics(synthetic)           # KineticsFit: μ_h, k₀, log k(r), rate law
"""

from inverse.kinetics.fit import KineticsFit, KineticsSettings, learn_kinetics
from inverse.kinetics.law import KineticsModel, load_kinetics
from inverse.kinetics.series import (
    FrameRegistration,
    ImageSeries,
    load_series,
    register_frames,
    save_series,
    validate_series,
)
from inverse.kinetics.synth import SeriesSynthSettings, synthesize_series

__all__ = ["FrameRegistration", "ImageSeries", "KineticsFit", "KineticsModel", "KineticsSettings",
           "SeriesSynthSettings", "learn_kinetics", "load_kinetics", "load_series", "register_frames",
           "save_series", "synthesize_series", "validate_series"]
