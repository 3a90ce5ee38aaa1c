"""chemoscreen mechanics core: grids, stiffness, spectral elasticity with eigenstrain, the free-platelet
finite-element operator, Khachaturyan's coherency function, eigenstrain laws and reference parameters.
Imports only torch and numpy (scipy inside the sparse-LU platelet solver, where it is used)."""

from mechanics.coherency import coherency_B, coherency_kernel, minimum_B
from mechanics.elasticity import ElasticityResult, PlateletLU, PlateletOperator, PlateletPCG, solve_elasticity
from mechanics.errors import InputError, SolverError
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
    "PlateletLU",
    "PlateletOperator",
    "PlateletPCG",
    "SolverError",
    "Stiffness",
    "VegardLaw",
    "coherency_B",
    "coherency_kernel",
    "minimum_B",
    "solve_elasticity",
]
