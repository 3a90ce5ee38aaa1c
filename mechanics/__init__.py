"""chemoscreen mechanics core: grids, stiffness, spectral elasticity with eigenstrain, Khachaturyan's
coherency function, eigenstrain laws and reference parameters. Imports only torch and numpy."""

from mechanics.coherency import coherency_B, coherency_kernel, minimum_B
from mechanics.elasticity import ElasticityResult, solve_elasticity
from mechanics.errors import InputError
from mechanics.grid import Grid
from mechanics.laws import EigenstrainLaw, PiecewiseLinearLaw, VegardLaw
from mechanics.parameters.base import MaterialParams
from mechanics.stiffness import Stiffness

__all__ = [
    "EigenstrainLaw",
    "ElasticityResult",
    "Grid",
    "InputError",
    "MaterialParams",
    "PiecewiseLinearLaw",
    "Stiffness",
    "VegardLaw",
    "coherency_B",
    "coherency_kernel",
    "minimum_B",
    "solve_elasticity",
]
