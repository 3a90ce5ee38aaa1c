"""Per-candidate parameters against published values and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

import candidates
from candidates.properties import coherent_spinodal
from mechanics.errors import InputError
from mechanics.parameters.base import MaterialParams
from mechanics.units import FARADAY_C_PER_MOL, K_B_EV_PER_K

# Padhi et al. (1997) misfit of LiFePO4 from FePO4 along a, b, c in % and its volume change; quoted to two
# decimals (one for ΔV), so the comparison allows the rounding half-width plus float noise: 0.006 points
# (0.06 for ΔV). That is inside the 0.1 % bound.
PADHI_MISFIT_PCT = (5.20, 3.76, -2.01)
PADHI_VOLUME_CHANGE_PCT = 7.0


@pytest.fixture(scope="module")
def lfp():
    return candidates.properties(candidates.explicit_space([{"Fe": 1.0}])[0], source="literature")


@pytest.fixture(scope="module")
def fe_mn():
    space = candidates.olivine_space(("Fe", "Mn"), step=0.5)
    return {c.formula: candidates.properties(c) for c in space}


def test_lfp_misfit_matches_padhi(lfp):
    np.testing.assert_allclose(100 * np.asarray(lfp.misfit), PADHI_MISFIT_PCT, atol=0.006)
    assert 100 * lfp.volume_change == pytest.approx(PADHI_VOLUME_CHANGE_PCT, abs=0.06)
    assert lfp.params.misfit == pytest.approx(lfp.misfit)


def test_lfp_capacity_and_energy(lfp):
    # 169.9 mAh/g: F/3.6 per mole of LiFePO4 (157.76 g/mol), the textbook theoretical capacity
    assert lfp.capacity_mAh_g == pytest.approx(169.9, abs=0.05)
    assert lfp.capacity_mAh_g == pytest.approx(FARADAY_C_PER_MOL / 3.6 / 157.757, rel=1e-5)
    assert lfp.voltage_V == pytest.approx(3.43)
    assert lfp.specific_energy_Wh_kg == pytest.approx(3.43 * lfp.capacity_mAh_g)
    assert lfp.params.specific_energy_Wh_kg == pytest.approx(lfp.specific_energy_Wh_kg)


def test_properties_pickle(lfp):
    import pickle

    assert pickle.loads(pickle.dumps(lfp)) == lfp


def test_lfp_params_carry_the_literature_values(lfp):
    p = lfp.params
    assert isinstance(p, MaterialParams)
    assert p.name == "LiFePO4"
    assert p.omega_eV == pytest.approx(1.856e-20 / 1.602176634e-19)  # Bai et al. (2011), J → eV
    assert p.kappa_aJ_per_nm == pytest.approx((0.50148,) * 3)  # 5.0148e-10 J/m = 0.50148 aJ/nm
    assert p.stiffness_voigt()[0, 0] == pytest.approx(138.9)
    assert p.stiffness_voigt()[1, 1] == pytest.approx(198.0)
    # 4 Li per Padhi cell of 291.35 Å³
    assert p.site_density_per_nm3 == pytest.approx(4 / (10.332 * 6.010 * 4.692e-3))
    assert any("Padhi" in c for c in lfp.citations) and any("Maxisch" in c for c in lfp.citations)
    assert any("Bai" in c for c in lfp.citations)
    for key in ("misfit_a", "misfit_b", "misfit_c", "voltage_V", "omega_eV", "kappa_aJ_per_nm"):
        assert lfp.uncertainties[key] > 0


def test_fifty_fifty_fe_mn_lies_between_its_end_members(fe_mn):
    fe, mn = fe_mn["LiFePO4"], fe_mn["LiMnPO4"]
    (mix,) = (p for f, p in fe_mn.items() if f not in ("LiFePO4", "LiMnPO4"))
    for axis in range(3):
        low, high = sorted((fe.misfit[axis], mn.misfit[axis]))
        assert low < mix.misfit[axis] < high
        for state in ("lithiated", "delithiated"):
            edges = [getattr(p.params, state).edges_A[axis] for p in (fe, mn, mix)]
            assert min(edges[:2]) < edges[2] < max(edges[:2])
            assert edges[2] == pytest.approx(0.5 * (edges[0] + edges[1]))  # Vegard
    low, high = sorted((fe.volume_change, mn.volume_change))
    assert low < mix.volume_change < high
    assert mix.voltage_V == pytest.approx(0.5 * (3.43 + 4.1))  # capacity-weighted mean of the plateaus
    # Mn is lighter than Fe, so LiMnPO4 has the larger capacity (170.9 vs 169.9 mAh/g)
    assert fe.capacity_mAh_g < mix.capacity_mAh_g < mn.capacity_mAh_g


def test_inactive_dopant_costs_capacity_and_dilutes_the_misfit(lfp):
    (candidate,) = candidates.explicit_space([{"Fe": 0.9, "Mg": 0.1}])
    doped = candidates.properties(candidate)
    weight = float(candidate.composition.weight)  # g/mol of LiFe0.9Mg0.1PO4
    assert doped.capacity_mAh_g == pytest.approx(0.9 * FARADAY_C_PER_MOL / 3.6 / weight)
    assert doped.voltage_V == pytest.approx(3.43)
    for axis in range(3):
        assert abs(doped.misfit[axis]) < abs(lfp.misfit[axis])
    assert any("inactive" in note for note in doped.notes)


def _voigt_to_tensor(voigt):
    index = {(0, 0): 0, (1, 1): 1, (2, 2): 2, (1, 2): 3, (2, 1): 3, (0, 2): 4, (2, 0): 4,
             (0, 1): 5, (1, 0): 5}
    C = np.zeros((3, 3, 3, 3))
    for i, j, k, l in np.ndindex(3, 3, 3, 3):
        C[i, j, k, l] = voigt[index[i, j], index[k, l]]
    return C


def _khachaturyan_B(C, eps, normals):
    """B(n) = ε:C:ε − n·σ·Ω(n)·σ·n with Ω(n)⁻¹_ik = C_ijkl n_j n_l (lfp.md closed form), numpy."""
    sigma = np.einsum("ijkl,kl->ij", C, eps)
    K = np.einsum("ijkl,nj,nl->nik", C, normals, normals)
    t = normals @ sigma
    omega_t = np.linalg.solve(K, t[..., None])[..., 0]
    return np.einsum("ij,ij->", eps, sigma) - np.einsum("ni,ni->n", t, omega_t)


def test_b_min_and_habit_normal_agree_with_an_independent_search(lfp):
    C = _voigt_to_tensor(lfp.params.stiffness_voigt())
    eps = lfp.params.misfit_tensor()
    n = 40000  # Fibonacci sphere: spacing ~0.02 rad, so the grid minimum is within ~1e-3 relative
    k = np.arange(n) + 0.5
    z = 1 - 2 * k / n
    phi = math.pi * (1 + 5**0.5) * k
    normals = np.stack([np.sqrt(1 - z**2) * np.cos(phi), np.sqrt(1 - z**2) * np.sin(phi), z], axis=1)
    grid = _khachaturyan_B(C, eps, normals)
    B_at_normal = _khachaturyan_B(C, eps, np.asarray([lfp.habit_normal]))[0]
    assert lfp.coherency_B_min_GPa == pytest.approx(B_at_normal, rel=1e-6)
    assert lfp.coherency_B_min_GPa <= grid.min() * (1 + 1e-9)
    assert lfp.coherency_B_min_GPa == pytest.approx(grid.min(), rel=1e-2)
    assert np.linalg.norm(lfp.habit_normal) == pytest.approx(1.0)
    assert min(lfp.habit_normal) >= 0  # canonical representative of the mmm-equivalent normals
    # B(n) is even in each component (orthorhombic mirrors): the mirrored normal has the same B
    mirrored = np.asarray([lfp.habit_normal]) * np.array([1.0, -1.0, -1.0])
    assert _khachaturyan_B(C, eps, mirrored)[0] == pytest.approx(B_at_normal, rel=1e-12)
    # 1σ of B_min: B is quadratic in the misfit, so ~2·σ_ε/ε relative plus the 15 % stiffness scale
    relative = lfp.uncertainties["coherency_B_min_GPa"] / lfp.coherency_B_min_GPa
    assert 0.15 < relative < 0.5


def test_coherent_spinodal_closed_forms():
    omega, rho = 0.1158, 13.7
    # without coherency strain the regular solution's critical temperature is Ω / (2 k_B)
    margin, critical = coherent_spinodal(omega, 0.0, rho, 300.0)
    assert critical == pytest.approx(omega / (2 * K_B_EV_PER_K))
    assert margin == pytest.approx(4 * K_B_EV_PER_K * 300.0 - 2 * omega)
    below, above = (coherent_spinodal(omega, 0.0, rho, critical + dT)[0] for dT in (-1.0, 1.0))
    assert below < 0 < above
    # B_min/ρ_s = 2Ω removes the spinodal at every temperature (B in GPa = aJ/nm³; 1 eV = 0.1602 aJ)
    B_full = 2 * omega * 0.1602176634 * rho
    margin, critical = coherent_spinodal(omega, B_full, rho, 1.0)
    assert critical == pytest.approx(0.0, abs=1e-9) and margin > 0


def test_lfp_keeps_a_coherent_spinodal_at_room_temperature(lfp):
    # Cogswell & Bazant (2012): coherency strain lowers, but does not remove, the LFP miscibility gap
    # at room temperature; with Ω = 4.51 kT and B_min/ρ_s < 1 kT·4 the criterion says the same.
    assert not lfp.spinodal_suppressed
    assert lfp.coherent_spinodal_margin_eV < 0
    assert 298.15 < lfp.coherent_critical_temperature_K < 1.856e-20 / 1.602176634e-19 / (2 * K_B_EV_PER_K)


def test_property_errors():
    c = candidates.explicit_space([{"Fe": 1.0}])[0]
    for kwargs, field in (({"source": "dft"}, "source"), ({"temperature_K": -1.0}, "temperature_K"),
                          ({"temperature_K": True}, "temperature_K")):
        with pytest.raises(InputError) as info:
            candidates.properties(c, **kwargs)
        assert info.value.field == field
    with pytest.raises(InputError) as info:
        candidates.properties({"Fe": 1.0})
    assert info.value.field == "candidate"


def test_every_candidate_of_the_default_space_has_valid_params():
    for c in candidates.olivine_space(step=0.5, dopants={"Mg": (0.0, 0.1)}):
        props = candidates.properties(c)
        assert props.capacity_mAh_g > 0 and 3.4 <= props.voltage_V <= 5.1
        assert props.coherency_B_min_GPa >= 0
        assert all(v >= 0 for v in props.uncertainties.values())


def test_lfp_candidate_agrees_with_the_mechanics_reference_record(lfp):
    # Two routes to the same published numbers: the candidate table and mechanics' per-source modules.
    from mechanics.parameters.lfp import lfp_params

    reference = lfp_params()
    mine = lfp.params
    assert mine.lithiated == reference.lithiated and mine.delithiated == reference.delithiated
    np.testing.assert_allclose(mine.stiffness_voigt(), reference.stiffness_voigt())
    assert mine.omega_eV == pytest.approx(reference.omega_eV, rel=1e-4)
    assert mine.kappa_aJ_per_nm == pytest.approx(reference.kappa_aJ_per_nm, rel=1e-4)
    assert mine.voltage_V == pytest.approx(reference.voltage_V)
    assert mine.capacity_mAh_g == pytest.approx(reference.capacity_mAh_g, rel=1e-5)
    # ρ_s: ours is 4 Li per Padhi cell (13.73 nm⁻³), the Bazant-group value 13.79 nm⁻³; 1 % apart
    assert mine.site_density_per_nm3 == pytest.approx(reference.site_density_per_nm3, rel=0.01)
