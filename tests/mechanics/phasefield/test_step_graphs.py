"""Captured step loops (mechanics.phasefield.graphs): the guard keeps every CPU path off the CUDA runtime,
and a loop of K-step chunks lands on the same states as run_to_times(sync_every=K), bit for bit (same
step function, same caps, same order of operations). On a CUDA device the replayed graph matches the
plain loop (marked gpu)."""

import pytest
import torch

from mechanics.errors import InputError
from mechanics.grid import Grid
from mechanics.phasefield import graphs
from mechanics.phasefield.cahn_hilliard import CahnHilliard, cahn_hilliard
from mechanics.phasefield.free_energy import DoubleWell, RegularSolution
from mechanics.phasefield.graphs import captured_loop, uses_graph
from mechanics.phasefield.protocols import run_to_times
from mechanics.phasefield.reaction import AllenCahnReaction, ButlerVolmer, allen_cahn_reaction

K = 10
T_END = {"ch": 100.0, "acr": 3.0}  # at least 2 K accepted steps each on the 16² test grid


def _stepper(which: str, n: int = 16, batch: int = 3, compile: bool = False, device="cpu"):
    if which == "ch":
        model = CahnHilliard(grid=Grid((n, n), 1.0), free_energy=DoubleWell(), mobility=5.0, kappa=2.0,
                             dc_tol=0.01)
        return cahn_hilliard(model, compile=compile)
    free = RegularSolution(site_density_per_nm3=1.0, kT_aJ=1.0, omega_aJ=3.0)
    model = AllenCahnReaction(
        grid=Grid((n, n), 1.0), free_energy=free, kappa_aJ_per_nm=1.0, site_density_per_nm3=1.0, kT_aJ=1.0,
        rate_law=ButlerVolmer(1.0, 0.5),
        current_per_s=torch.full((batch,), 0.01, dtype=torch.float64, device=device))
    return allen_cahn_reaction(model, compile=compile)


def _c0(n: int = 16, batch: int = 3, device="cpu"):
    gen = torch.Generator().manual_seed(1)
    return (0.3 + 0.02 * torch.rand((batch, n, n), generator=gen, dtype=torch.float64)).to(device)


def _chunks_to(run, state, t_end: float):
    """Chunks of K capped steps until every element reached t_end (one host check per chunk)."""
    target = torch.full_like(state.time, t_end)
    while not bool((target - state.time <= 1e-9 * max(1.0, t_end)).all()):
        state = run(state, target)
    return state


def test_guard_never_chooses_a_graph_for_a_cpu_tensor():
    c = torch.zeros(2, 8, 8)
    assert not any(uses_graph(c, setting) for setting in (True, False, "auto"))
    with pytest.raises(InputError, match="graphs"):
        uses_graph(c, "always")
    with pytest.raises(InputError, match="graphs"):
        captured_loop(lambda s, cap=None: s, K, graphs="yes")
    with pytest.raises(InputError, match="n_steps"):
        captured_loop(lambda s, cap=None: s, 0)


@pytest.mark.parametrize("which", ["ch", "acr"])
def test_cpu_captured_loop_is_the_plain_loop_and_touches_no_cuda(which, monkeypatch):
    """graphs=True on CPU: the plain loop, no CUDA call (CUDAGraph, streams and graph capture would raise),
    and the same states as run_to_times(sync_every=K) to the last bit (atol = rtol = 0)."""
    def no_cuda(*args, **kwargs):
        raise AssertionError("a CPU path reached the CUDA runtime")

    for name in ("CUDAGraph", "graph", "Stream", "current_stream", "stream"):
        monkeypatch.setattr(torch.cuda, name, no_cuda)
    init_fn, step_fn = _stepper(which)
    reference = run_to_times(step_fn, init_fn(_c0(), 0.01), [T_END[which]], sync_every=K)
    assert int(reference.steps.min()) >= 2 * K  # several chunks, so the chunking is exercised
    state = _chunks_to(captured_loop(step_fn, K, graphs=True), init_fn(_c0(), 0.01), T_END[which])
    for field in ("c", "time", "dt", "steps", "rejected"):
        torch.testing.assert_close(getattr(state, field), getattr(reference, field), rtol=0, atol=0)


def test_state_structure_round_trips_through_the_graph_buffers():
    """The graph keeps a state as flat tensor buffers plus a skeleton: the ACR state (nested aux with
    floats, bools and None) comes back equal, and the skeletons of two states of one shape compare equal."""
    init_fn, step_fn = _stepper("acr")
    state = step_fn(init_fn(_c0(), 0.01))
    leaves: list = []
    skeleton = graphs._flatten(state, leaves)
    assert all(isinstance(t, torch.Tensor) for t in leaves) and len(leaves) >= 5
    back = graphs._unflatten(skeleton, leaves)
    assert type(back) is type(state) and type(back.aux) is type(state.aux)
    for field in ("c", "time", "dt", "steps", "rejected"):
        assert getattr(back, field) is getattr(state, field)
    other: list = []
    assert graphs._flatten(step_fn(state), other) == skeleton


@pytest.mark.gpu
@pytest.mark.parametrize("which", ["ch", "acr"])
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_graph_replay_matches_the_plain_loop(which, compile):
    """One 32² particle on CUDA (float64): the replayed graph against graphs=False, same chunks; 1e-12
    relative: the same kernels on the same inputs (cuFFT may pick another algorithm at capture). An eager
    step whose capture fails runs the plain loop (CapturedLoop.failure), so it matches trivially."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    init_fn, step_fn = _stepper(which, n=32, batch=1, compile=compile, device="cuda")
    c0 = _c0(n=32, batch=1, device="cuda")
    assert uses_graph(c0, "auto")
    plain = _chunks_to(captured_loop(step_fn, K, graphs=False), init_fn(c0, 0.01), T_END[which])
    loop = captured_loop(step_fn, K, graphs=True)
    replayed = _chunks_to(loop, init_fn(c0, 0.01), T_END[which])
    if compile:  # the fused steps keep their constants in the kernels: nothing stops the capture
        assert loop.replays > 0 and loop.failure is None, loop.failure
    for field in ("c", "time", "dt"):
        torch.testing.assert_close(getattr(replayed, field), getattr(plain, field), rtol=1e-12, atol=1e-12)
    assert torch.equal(replayed.steps, plain.steps)
