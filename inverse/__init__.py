"""chemoscreen.inverse: learn the composition–eigenstrain law ε⁰(X) of an olivine cathode from
correlative composition and strain images (Deng et al., Nature Materials 21, 547 (2022)).

    images = inverse.load_images("particle.npz")      # ImageSet (.npz, .h5, .tif + .json)
    cal = inverse.calibrate(images)                   # Calibration: .law, .vegard, .fit, .to_json()
    cal = inverse.calibrate(images, inverse.CalibrationSettings(n_knots=9))  # = calibrate(images, n_knots=9)
    synthetic = inverse.synthesize(inverse.SynthSettings(seed=0))           # ImageSet with truth_*
    fit = inverse.fit_stiffness_ratio(images)         # FePO4/LiFePO4 stiffness ratio r, with σ
    series = inverse.load_series("movie.npz")         # operando image series (inverse.kinetics)
    kin = inverse.learn_kinetics(series)              # KineticsFit: μ_h(X), k₀(X), log k(r), rate law
"""

from inverse.calibrate import Calibration, calibrate
from inverse.images import ImageSet, load_images, save_images
from inverse.kinetics import KineticsSettings, learn_kinetics, load_series, synthesize_series
from inverse.settings import CalibrationSettings, SynthSettings
from inverse.stiffness import StiffnessFit, fit_stiffness_ratio
from inverse.synth import synthesize

__all__ = ["Calibration", "CalibrationSettings", "ImageSet", "KineticsSettings", "StiffnessFit",
           "SynthSettings", "calibrate", "fit_stiffness_ratio", "learn_kinetics", "load_images",
           "load_series", "save_images", "synthesize", "synthesize_series"]
