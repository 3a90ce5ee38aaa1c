"""Linear elasticity with eigenstrain: on periodic grids, homogeneous (exact Green operator) and
heterogeneous / traction-free particle (preconditioned CG with an implicit adjoint); and the free-platelet
operator of finite elements on a mask (:class:`PlateletOperator`, implemented by the sparse-LU
:class:`PlateletLU` and the matrix-free :class:`PlateletPCG`)."""

from mechanics.elasticity.platelet import PlateletOperator
from mechanics.elasticity.platelet_lu import PlateletLU
from mechanics.elasticity.platelet_pcg import PlateletPCG
from mechanics.elasticity.solve import ElasticityResult, solve_elasticity

__all__ = ["ElasticityResult", "PlateletLU", "PlateletOperator", "PlateletPCG", "solve_elasticity"]
