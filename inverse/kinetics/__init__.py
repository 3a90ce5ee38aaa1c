"""Kinetics from operando image series (Zhao et al., Nature 621, 289 (2023)): the series format, its
validation and frame registration.

    series = inverse.kinetics.load_series("movie.npz")        # ImageSeries, validated
    registered = inverse.kinetics.register_frames(series)      # drift removed; .shifts_px per frame
"""

from inverse.kinetics.series import (
    FrameRegistration,
    ImageSeries,
    load_series,
    register_frames,
    save_series,
    validate_series,
)

__all__ = ["FrameRegistration", "ImageSeries", "load_series", "register_frames", "save_series",
           "validate_series"]
