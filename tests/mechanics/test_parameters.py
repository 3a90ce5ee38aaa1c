"""Reference parameter modules reproduce the numbers of shared/reference/lfp.md and feed the core."""

from __future__ import annotations

import dataclasses

import pytest

from mechanics import MaterialParams, Stiffness, minimum_B
from mechanics.parameters import bazant_lfp, conditions, maxisch_ceder2006, padhi1997, pfhub
from mechanics.parameters.lfp import lfp_params


def test_lfp_misfit_volume_change_and_capacity():
    """lfp.md: ε⁰(1) = (+5.20 %, +3.76 %, −2.01 %), ΔV/V = +7.0 % (rounding of the quoted digits);
    capacity 26801.4/157.757 = 169.9 mAh/g."""
    p = lfp_params()
    assert [round(100 * m, 2) for m in p.misfit] == [5.20, 3.76, -2.01]
    assert round(100 * p.volume_change, 1) == 7.0
    assert p.capacity_mAh_g == pytest.approx(169.89, abs=0.01)
    assert p.voltage_V == 3.43 and p.specific_energy_Wh_kg == pytest.approx(3.43 * 169.89, abs=0.05)
    assert p.omega_eV == pytest.approx(0.1158, abs=1e-4)  # 1.856e-20 J = 115.8 meV
    assert p.kappa_aJ_per_nm == (0.50148,) * 3
    assert p.site_density_per_nm3 == pytest.approx(13.793)
    assert padhi1997.LIFEPO4.a_A == 10.332 and padhi1997.FEPO4.c_A == 4.788


def test_lfp_stiffness_is_the_lifepo4_row_and_feeds_stiffness():
    p = lfp_params()
    C = Stiffness.from_voigt(p.stiffness_voigt())
    assert float(C.voigt_GPa[0, 0]) == 138.9 and float(C.voigt_GPa[1, 1]) == 198.0
    assert float(C.voigt_GPa[4, 4]) == maxisch_ceder2006.LIFEPO4.C55_GPa == 50.6
    B, _ = minimum_B(C, p.misfit_tensor())
    assert 0.05 < float(B) < 1.0  # order of Cogswell & Bazant's 0.19 GPa (see test_coherency)


def test_source_records():
    b = bazant_lfp.bazant_lfp()
    assert b.coherency_B_GPa == 0.1916 and b.reorganization_energy_kT == 8.3
    assert (b.exchange_rate_A_m2, b.charge_transfer_alpha) == (0.16, 0.5)  # lfp.md, Bai et al. (2011)
    assert conditions.STANDARD_TEMPERATURE_K == 298.15
    b4 = pfhub.benchmark4("c")
    assert b4.precipitate_stiffness_factor == 1.1 and len(b4.bulk_coefficients) == 11
    assert pfhub.benchmark1().c_alpha == 0.3


def test_material_params_has_no_unsourced_defaults():
    """Every number of MaterialParams is passed in: only the citations have a default, and the LFP
    record takes its kinetics and temperature from the cited modules."""
    defaulted = {f.name for f in dataclasses.fields(MaterialParams)
                 if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    assert defaulted == {"citations"}
    p, b = lfp_params(), bazant_lfp.bazant_lfp()
    assert (p.exchange_rate_A_m2, p.charge_transfer_alpha, p.reorganization_energy_kT) == (
        b.exchange_rate_A_m2, b.charge_transfer_alpha, b.reorganization_energy_kT)
    assert p.temperature_K == conditions.STANDARD_TEMPERATURE_K
    kwargs = {f.name: getattr(p, f.name) for f in dataclasses.fields(MaterialParams)}
    del kwargs["temperature_K"]
    with pytest.raises(TypeError, match="temperature_K"):
        MaterialParams(**kwargs)
