"""Linear elasticity with eigenstrain on periodic grids: homogeneous (exact Green operator) and
heterogeneous / traction-free particle (preconditioned CG with an implicit adjoint)."""

from mechanics.elasticity.solve import ElasticityResult, solve_elasticity

__all__ = ["ElasticityResult", "solve_elasticity"]
