"""Differentiating through time: fixed-step rollouts with gradient checkpointing, and a meter for the
memory autograd keeps per step.

Every step of the steppers is a pure torch function of the field and of the model's parameter tensors,
so reverse-mode autograd differentiates a rollout c_N = Φ(…Φ(c₀)) with respect to any parameter that
requires grad (mobility, rate constant, κ, Ω, misfit, stiffness). Plain autograd keeps every step's
saved tensors (measured by :func:`saved_bytes_per_step`); :func:`rollout` with ``segment = k`` keeps only
every k-th state and recomputes the k steps of a segment during the backward pass
(``torch.utils.checkpoint``, non-reentrant), trading one extra forward pass for memory
O(N/k + k·per-step) instead of O(N·per-step); k ≈ √N minimises it. Adaptive time steps are not
differentiated (accept/reject is discrete): differentiate a fixed-Δt rollout.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

from mechanics.phasefield.cahn_hilliard import CahnHilliard, CahnHilliardAux, _symbols, ch_increment


def rollout(step: Callable[[torch.Tensor], torch.Tensor], c0: torch.Tensor, n_steps: int,
            segment: int | None = None) -> torch.Tensor:
    """c_N from c₀ by ``n_steps`` applications of ``step``; ``segment`` k > 1 checkpoints every k steps."""
    if segment is None or segment <= 1:
        c = c0
        for _ in range(n_steps):
            c = step(c)
        return c

    def run_segment(c: torch.Tensor, count: int) -> torch.Tensor:
        for _ in range(count):
            c = step(c)
        return c

    c = c0
    done = 0
    while done < n_steps:
        count = min(segment, n_steps - done)
        c = checkpoint(run_segment, c, count, use_reentrant=False)
        done += count
    return c


def ch_fixed_step(model: CahnHilliard, dt: float | torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The Cahn-Hilliard step of fixed size dt as a function c → c' (for :func:`rollout`)."""
    cache: dict = {}

    def step(c: torch.Tensor) -> torch.Tensor:
        key = (c.dtype, c.device)
        if key not in cache:
            cache[key] = _symbols(model, c)
        batch = c.shape[: c.ndim - model.d]
        dt_b = torch.as_tensor(dt, dtype=c.dtype, device=c.device).expand(batch)
        return ch_increment(model, c, dt_b, CahnHilliardAux(), cache[key])[0]

    return step


def saved_bytes_per_step(step: Callable[[torch.Tensor], torch.Tensor], c: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves for one step from c (measured with saved-tensor hooks; c and
    the parameters must require grad for anything to be saved)."""
    total = 0

    def pack(t: torch.Tensor):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(c)
    return total
