"""Grid and Stiffness: validation, wavevectors, Voigt/Mandel conversions and 2-D reductions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mechanics import Grid, InputError, Stiffness, coherency_kernel, solve_elasticity
from mechanics.parameters.lfp import lfp_params
from mechanics.stiffness import mandel_to_tensor, tensor_to_mandel, voigt_to_mandel


def lfp_stiffness() -> Stiffness:
    return Stiffness.from_voigt(lfp_params().stiffness_voigt())


def test_grid_properties_and_wavevectors():
    g = Grid((4, 6), spacing_nm=0.5)
    assert g.ndim == 2 and g.cell_volume == 0.25 and g.rfft_shape == (4, 4)
    k = g.wavevectors(dtype=torch.float64)
    assert k.shape == (4, 4, 2)
    # k_i = 2π m_i / L_i with fftfreq order along axis 0 and rfftfreq along the last axis
    assert torch.allclose(k[:, 0, 0], 2 * math.pi * torch.tensor([0.0, 1, -2, -1], dtype=torch.float64) / 2.0)
    assert torch.allclose(k[0, :, 1], 2 * math.pi * torch.tensor([0.0, 1, 2, 3], dtype=torch.float64) / 3.0)
    x = g.coordinates_nm()
    assert x.shape == (4, 6, 2)
    assert torch.allclose(x.mean(dim=(0, 1)), torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs",
    [dict(shape=()), dict(shape=(4, 4, 4, 4)), dict(shape=(0, 4)), dict(shape=(4, 4), spacing_nm=0.0),
     dict(shape=(4, 4), spacing_nm=-1.0), dict(shape=(4, 4), spacing_nm=float("nan")), dict(shape=(2.5, 4))],
)
def test_grid_rejects_bad_input(kwargs):
    with pytest.raises(InputError):
        Grid(**kwargs)


def test_one_dimensional_grid_for_the_steppers_and_refused_by_elasticity():
    """A 1-D grid (a line of cells, e.g. a 40 nm particle for the phase-field steppers) has its modes;
    the elastic solvers need 2 or 3 axes and refuse it naming the grid."""
    g = Grid((40,), spacing_nm=1.0)
    assert g.ndim == 1 and g.cell_volume == 1.0 and g.rfft_shape == (21,) and g.volume == 40.0
    (k,) = g.axis_wavevectors(dtype=torch.float64)
    assert k.shape == (21,) and float(k[1]) == pytest.approx(2 * math.pi / 40.0)
    assert torch.allclose(g.wavevectors()[..., 0], k)
    assert g.coordinates_nm().shape == (40, 1)
    with pytest.raises(InputError) as err:
        solve_elasticity(g, lfp_stiffness(), torch.zeros(40, 1, 1))
    assert err.value.field == "grid"
    with pytest.raises(InputError) as err:
        coherency_kernel(g, lfp_stiffness(), torch.eye(3) * 0.01)
    assert err.value.field == "grid"


def test_the_two_wavevector_forms_agree():
    """axis_wavevectors (the steppers') and wavevectors (k = q/h, the coherency kernel's) are the same
    modes to round-off, on the rfft and the full grid."""
    g = Grid((6, 5, 8), spacing_nm=200.0 / 48)
    for rfft in (True, False):
        stacked = g.wavevectors(rfft=rfft)
        shape = g.rfft_shape if rfft else g.shape
        axes = torch.stack([k.expand(shape) for k in g.axis_wavevectors(rfft=rfft)], dim=-1)
        torch.testing.assert_close(axes, stacked, rtol=1e-15, atol=1e-15)


def test_isotropic_constants_and_tensor_symmetries():
    E, nu = 100.0, 0.3
    C = Stiffness.isotropic(E_GPa=E, nu=nu)
    lam, mu = E * nu / ((1 + nu) * (1 - 2 * nu)), E / (2 * (1 + nu))
    c4 = C.tensor()
    d = torch.eye(3, dtype=torch.float64)
    expected = lam * d[:, :, None, None] * d[None, None] + mu * (
        d[:, None, :, None] * d[None, :, None, :] + d[:, None, None, :] * d[None, :, :, None]
    )
    assert torch.allclose(c4, expected, atol=1e-12)
    assert torch.allclose(c4, c4.permute(1, 0, 2, 3)) and torch.allclose(c4, c4.permute(2, 3, 0, 1))


def test_mandel_round_trip_and_energy_identity():
    eps = torch.randn(5, 3, 3, dtype=torch.float64)
    eps = eps + eps.transpose(-1, -2)
    assert torch.allclose(mandel_to_tensor(tensor_to_mandel(eps, 3), 3), eps)
    C = lfp_stiffness()
    # ε:C:ε from the full tensor equals the Mandel quadratic form
    full = torch.einsum("nij,ijkl,nkl->n", eps, C.tensor(), eps)
    m = tensor_to_mandel(eps, 3)
    assert torch.allclose(full, torch.einsum("na,ab,nb->n", m, voigt_to_mandel(C.voigt_GPa), m))


def test_plane_strain_and_plane_stress_isotropic_closed_forms():
    E, nu = 100.0, 0.3
    C = Stiffness.isotropic(E_GPa=E, nu=nu)
    lam, mu = E * nu / ((1 + nu) * (1 - 2 * nu)), E / (2 * (1 + nu))
    strain = C.reduced_voigt((0, 1), "strain")
    assert torch.allclose(strain, torch.tensor([[lam + 2 * mu, lam, 0], [lam, lam + 2 * mu, 0], [0, 0, mu]],
                                               dtype=torch.float64))
    stress = C.reduced_voigt((0, 2), "stress")  # textbook plane stress: E/(1-ν²)[[1, ν], [ν, 1]], μ
    f = E / (1 - nu**2)
    assert torch.allclose(stress, torch.tensor([[f, f * nu, 0], [f * nu, f, 0], [0, 0, mu]],
                                               dtype=torch.float64))


@pytest.mark.parametrize("axes", [(0, 2), (2, 0), (0, 1), (1, 2)])
def test_plane_stress_reduction_zeroes_out_of_plane_stress(axes):
    """Explicit route: for an in-plane strain e, solve the 3-D constitutive law for the three
    out-of-plane strain components that make σ_oj = 0, then read the in-plane stress; it must equal the
    reduced (compliance-inversion) stiffness applied to e."""
    C = lfp_stiffness()
    c4 = C.tensor()
    p, q = axes
    o = 3 - p - q
    e2 = torch.tensor([[0.01, -0.004], [-0.004, 0.02]], dtype=torch.float64)
    # unknown strains (ε_oo, ε_po, ε_qo) enter symmetrically
    def stress_of(x):
        eps = torch.zeros(3, 3, dtype=torch.float64)
        for i, a in enumerate((p, q)):
            for j, b in enumerate((p, q)):
                eps[a, b] = e2[i, j]
        eps[o, o] = x[0]
        eps[p, o] = eps[o, p] = x[1]
        eps[q, o] = eps[o, q] = x[2]
        return torch.einsum("ijkl,kl->ij", c4, eps)
    base = stress_of(torch.zeros(3, dtype=torch.float64))
    cols = [stress_of(torch.eye(3, dtype=torch.float64)[i]) - base for i in range(3)]
    rows = lambda s: torch.stack([s[o, o], s[p, o], s[q, o]])  # noqa: E731
    A = torch.stack([rows(c) for c in cols], dim=1)
    x = torch.linalg.solve(A, -rows(base))
    s3 = stress_of(x)
    s2 = torch.einsum("ijkl,kl->ij", C.reduced(axes, "stress"), e2)
    assert torch.allclose(s2, s3[[p, q]][:, [p, q]], atol=1e-10)


def test_constructors_agree_and_validate():
    ortho = Stiffness.orthorhombic(C11_GPa=1.0, C22_GPa=2.0, C33_GPa=3.0, C12_GPa=0.1, C13_GPa=0.2,
                                   C23_GPa=0.3, C44_GPa=0.4, C55_GPa=0.5, C66_GPa=0.6)
    assert ortho.voigt_GPa[1, 2] == 0.3 and ortho.voigt_GPa[4, 4] == 0.5
    cub = Stiffness.cubic(C11_GPa=250.0, C12_GPa=150.0, C44_GPa=100.0)
    assert torch.equal(cub.voigt_GPa, Stiffness.from_voigt(cub.voigt_GPa.numpy()).voigt_GPa)
    batched = Stiffness.from_voigt(torch.stack([cub.voigt_GPa, ortho.voigt_GPa]))
    assert batched.batch_shape == (2,) and batched.tensor().shape == (2, 3, 3, 3, 3)
    assert batched.reduced((0, 2), "stress").shape == (2, 2, 2, 2, 2)
    assert batched.to(torch.float32).dtype == torch.float32
    with pytest.raises(InputError):
        Stiffness.from_voigt(np.eye(5))
    bad = np.eye(6)
    bad[0, 1] = 1.0
    with pytest.raises(InputError):
        Stiffness.from_voigt(bad)
    with pytest.raises(InputError):
        Stiffness.isotropic(E_GPa=100.0, nu=0.5)
    with pytest.raises(InputError):
        cub.reduced((0, 0), "stress")
    with pytest.raises(InputError):
        cub.reduced((0, 1), "membrane")
