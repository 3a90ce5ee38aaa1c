"""Launch-free steps, checked on CPU: no host synchronisation inside a step, at most one per K steps in the
time loop, and the fused (torch.compile) steps: the same map as the eager ones, no graph break, few
top-level ops (issue 18's contract, counted with torch.profiler through the public init/step functions)."""

import pytest
import torch

from mechanics.grid import Grid
from mechanics.phasefield.cahn_hilliard import CahnHilliard, cahn_hilliard
from mechanics.phasefield.free_energy import DoubleWell, RegularSolution
from mechanics.phasefield.protocols import run_to_times
from mechanics.phasefield.reaction import AllenCahnReaction, ButlerVolmer, allen_cahn_reaction

# host synchronisations (a GPU queue drains on each)
SYNC_OPS = {"aten::_local_scalar_dense", "aten::item", "aten::is_nonzero"}
# views and allocations are not kernel launches
NOT_COUNTED = {
    "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::view", "aten::view_as_real",
    "aten::view_as_complex", "aten::as_strided", "aten::reshape", "aten::_reshape_alias", "aten::expand",
    "aten::slice", "aten::select", "aten::unsqueeze", "aten::squeeze", "aten::permute", "aten::t",
    "aten::transpose", "aten::alias", "aten::resolve_conj", "aten::resolve_neg", "aten::lift_fresh",
    "aten::detach", "aten::unbind", "aten::_unsafe_view", "aten::set_", "aten::resize_",
}


def _profile(fn, calls: int) -> dict:
    """Top-level aten ops (those with no aten op among their ancestors, so ops inside a compiled region
    count) per call, split into counted ops, FFTs and host syncs."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    counted = ffts = syncs = 0
    for event in prof.events():
        name = event.name
        if not name.startswith("aten::"):
            continue
        parent, nested = event.cpu_parent, False
        while parent is not None:
            if parent.name.startswith("aten::"):
                nested = True
                break
            parent = parent.cpu_parent
        if nested:
            continue
        if name in SYNC_OPS:  # bool() → is_nonzero → item → _local_scalar_dense counts once
            syncs += 1
            continue
        if name in NOT_COUNTED:
            continue
        counted += 1
        ffts += "fft" in name
    return {"ops": counted / calls, "ffts": ffts / calls, "syncs": syncs / calls}


def _acr(n=64, batch=4, dtype=torch.float32):
    free = RegularSolution(site_density_per_nm3=1.0, kT_aJ=1.0, omega_aJ=3.0)
    return AllenCahnReaction(
        grid=Grid((n, n), 1.0), free_energy=free, kappa_aJ_per_nm=1.0, site_density_per_nm3=1.0, kT_aJ=1.0,
        rate_law=ButlerVolmer(1.0, 0.5), current_per_s=torch.full((batch,), 0.01, dtype=dtype),
    )


def _ch(n=64):
    return CahnHilliard(grid=Grid((n, n), 1.0), free_energy=DoubleWell(), mobility=5.0, kappa=2.0,
                        dc_tol=0.01)


def _c0(n=64, batch=4, dtype=torch.float32, mean=0.3):
    gen = torch.Generator().manual_seed(0)
    return mean + 0.02 * torch.rand((batch, n, n), generator=gen, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("which", ["ch", "acr"])
def test_eager_steps_never_synchronise_with_the_host(which):
    """64² × 4, float32: the eager steps decide accept/reject and the next Δt on the device: no
    `_local_scalar_dense`/`item`/`is_nonzero` in a step (the ACR step had one per step: the α = ½ test
    of the reservoir solve, now decided once per model). FFTs per step: the gradient term's pair and the
    stabiliser's pair, and both again for each corrector iteration."""
    if which == "ch":
        init_fn, step_fn = cahn_hilliard(_ch(), compile=False)
    else:
        init_fn, step_fn = allen_cahn_reaction(_acr(), compile=False)
    state = step_fn(init_fn(_c0(), 0.01))  # builds the per-model constants (may sync once)
    holder = [state]

    def call():
        holder[0] = step_fn(holder[0])

    counts = _profile(call, 5)
    assert counts["syncs"] == 0, counts
    assert counts["ffts"] == (3 if which == "ch" else 4 * (1 + _acr().corrections)), counts


def test_time_loop_syncs_at_most_once_per_k_steps():
    """run_to_times(sync_every=10) asks the device whether all elements are done once per 10 steps:
    ≤ 1 host sync per 10 step calls (+1 before the first), and the result equals the run that syncs every step
    (done elements take zero-length steps in between)."""
    init_fn, step_fn = allen_cahn_reaction(_acr(n=16), compile=False)
    c0 = _c0(n=16)
    reference = run_to_times(step_fn, init_fn(c0, 0.01), [2.0])  # also builds the per-model constants
    steps = int(reference.steps.max())
    assert steps >= 20
    out = {}

    def call():
        out["state"] = run_to_times(step_fn, init_fn(c0, 0.01), [2.0], sync_every=10)

    counts = _profile(call, 1)
    calls = counts["ffts"] / (4 * (1 + _acr().corrections))  # step calls, the zero-length ones included
    assert calls >= steps
    assert counts["syncs"] <= calls / 10 + 1, counts  # one before the first step, then one per 10
    torch.testing.assert_close(out["state"].c, reference.c, rtol=0, atol=0)
    torch.testing.assert_close(out["state"].time, reference.time, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["ch", "acr"])
def test_fused_step_matches_eager_without_graph_break_and_with_few_ops(which):
    """torch.compile of the whole step (inductor, CPU): the same states as the eager step over 5 steps
    (float32, 1e-5: fused kernels reorder float sums), no graph break (torch._dynamo.explain), and at
    most 6 (CH, 3 FFTs) / 8 (ACR, 4 FFTs) top-level ops per step, views and allocations excluded."""
    limit = 6 if which == "ch" else 8
    factory = cahn_hilliard if which == "ch" else allen_cahn_reaction
    model = _ch() if which == "ch" else _acr()
    init_e, step_e = factory(model, compile=False)
    init_c, step_c = factory(model, compile=True)
    a = init_e(_c0(), 0.01)
    b = init_c(_c0(), 0.01)
    for _ in range(5):
        a, b = step_e(a), step_c(b)
    torch.testing.assert_close(b.c, a.c, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.dt, a.dt, rtol=1e-4, atol=0)
    assert torch.equal(b.steps, a.steps)
    holder = [b]

    def call():
        holder[0] = step_c(holder[0])

    counts = _profile(call, 5)
    assert counts["syncs"] == 0, counts
    assert counts["ops"] <= limit, counts
    # explain resets dynamo's caches, so it comes after the profile of the compiled step
    explained = torch._dynamo.explain(lambda s: step_e(s))(a)
    assert explained.graph_break_count == 0, explained.break_reasons
