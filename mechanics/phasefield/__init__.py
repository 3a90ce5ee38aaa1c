"""Batched phase-field dynamics on the mechanics core: bulk free energies, semi-implicit spectral
Cahn-Hilliard and Allen-Cahn-reaction steppers, coherency coupling, protocols, metrics and
differentiable rollouts. See docs/phasefield.md."""
