"""CHGNet source: cache handling (fast) and real relaxations of LiFePO4 / FePO4 (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

import candidates
from candidates import chgnet_source, literature


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(chgnet_source.CACHE_ENV, raising=False)
    assert chgnet_source.resolve_cache_dir().parts[-3:] == (".cache", "chemoscreen", "chgnet")
    monkeypatch.setenv(chgnet_source.CACHE_ENV, str(tmp_path / "root"))
    assert chgnet_source.resolve_cache_dir() == tmp_path / "root" / "chgnet"
    assert chgnet_source.resolve_cache_dir(tmp_path / "mine") == tmp_path / "mine"


def test_structure_hash_changes_with_structure_and_settings():
    lfp = candidates.end_member_structure("Fe")
    fp = candidates.end_member_structure("Fe", "delithiated")
    key = chgnet_source.structure_hash(lfp, model="0.3.0", fmax_eV_A=0.02)
    same = candidates.end_member_structure("Fe")
    assert key == chgnet_source.structure_hash(same, model="0.3.0", fmax_eV_A=0.02)
    assert key != chgnet_source.structure_hash(fp, model="0.3.0", fmax_eV_A=0.02)
    assert key != chgnet_source.structure_hash(lfp, model="0.3.0", fmax_eV_A=0.05)


def test_relax_rejects_bad_settings():
    from mechanics.errors import InputError

    s = candidates.end_member_structure("Fe")
    with pytest.raises(InputError) as info:
        chgnet_source.relax(s, fmax_eV_A=0.0)
    assert info.value.field == "fmax_eV_A"
    with pytest.raises(InputError) as info:
        chgnet_source.relax(s, max_steps=0)
    assert info.value.field == "max_steps"


# Project measurements (reference/candidates.md): CHGNet 0.3.0 strains LiFePO4 -> FePO4 along a, b, c
# (%) and the experimental ones (Padhi 1997). Our start differs (LiFePO4 positions on the FePO4 cell),
# and the two potentials measured there differ by 0.2-0.55 points, so 0.3 points against the CHGNet
# figures and 1.0 point against experiment.
CHGNET_FE_STRAIN_PCT = (-4.53, -3.74, 2.63)
EXPERIMENT_FE_STRAIN_PCT = (-4.94, -3.66, 1.92)


@pytest.mark.slow
@pytest.mark.skipif(not chgnet_source.chgnet_available(), reason="needs the chgnet extra")
def test_chgnet_relaxes_lfp_and_fp_near_experiment(tmp_path):
    results = {}
    for state, formula in (("lithiated", "LiFePO4"), ("delithiated", "FePO4")):
        result = chgnet_source.relax_end_member("Fe", state, cache_dir=tmp_path)
        assert result.converged and not result.cached
        # 3 %, not 2 %: CHGNet is GGA-like (lattices 0.9-1.5 % large) and overestimates FePO4's c by
        # 2.2 % (reference/candidates.md)
        experiment = literature.lattice_entry(formula).lattice.edges_A
        np.testing.assert_allclose(result.lattice.edges_A, experiment, rtol=0.03)
        np.testing.assert_allclose(result.angles_deg, 90.0, atol=0.1)
        relaxed = Structure.from_dict(result.structure)
        assert SpacegroupAnalyzer(relaxed, symprec=0.1).get_space_group_number() == 62
        results[state] = result
    # magnetic moments tell the charge state: Fe2+ 3.90, Fe3+ 4.41 muB (reference/candidates.md)
    fe_moments = {s: max(r.magmoms_muB) for s, r in results.items()}
    assert fe_moments["lithiated"] == pytest.approx(3.90, abs=0.1)
    assert fe_moments["delithiated"] == pytest.approx(4.41, abs=0.1)

    li, de = (np.asarray(results[s].lattice.edges_A) for s in ("lithiated", "delithiated"))
    strain_pct = 100 * (de / li - 1)
    np.testing.assert_allclose(strain_pct, CHGNET_FE_STRAIN_PCT, atol=0.3)
    np.testing.assert_allclose(strain_pct, EXPERIMENT_FE_STRAIN_PCT, atol=1.0)

    again = chgnet_source.relax_end_member("Fe", "lithiated", cache_dir=tmp_path)
    assert again.cached and again.lattice == results["lithiated"].lattice
    assert len(list(tmp_path.glob("*.json"))) == 2
    assert json.loads(next(tmp_path.glob("*.json")).read_text())["schema"] == chgnet_source.CACHE_SCHEMA

    (lfp,) = candidates.explicit_space([{"Fe": 1.0}])
    props = candidates.properties(lfp, source="chgnet", cache_dir=tmp_path)
    assert props.params.lithiated == results["lithiated"].lattice
    assert props.misfit == pytest.approx(tuple(li / de - 1))
    assert props.source == "chgnet" and any("CHGNet" in c for c in props.citations)


@pytest.mark.slow
@pytest.mark.skipif(not chgnet_source.chgnet_available(), reason="needs the chgnet extra")
def test_finite_strain_stiffness_reproduces_the_measured_chgnet_softness(tmp_path):
    # reference/candidates.md measured CHGNet C11/C22/C33 = 98/97/120 GPa for LiFePO4 (24 strained cells,
    # ion relaxation, pymatgen fit); our fit uses the same strains with a plain least-squares slope, so
    # 5 %. Both are far below the DFT values (138.9/198.0/173.0 GPa), the reason the chgnet source keeps
    # the literature stiffness.
    relaxed = chgnet_source.relax_end_member("Fe", "lithiated", cache_dir=tmp_path)
    C = chgnet_source.finite_strain_stiffness(Structure.from_dict(relaxed.structure))
    np.testing.assert_allclose(np.diag(C)[:3], (98.0, 97.0, 120.0), rtol=0.05)
    dft, _, _ = literature.stiffness_entry("LiFePO4")
    assert (np.diag(C)[:3] < 0.8 * np.diag(dft)[:3]).all()
    assert np.allclose(C, C.T) and np.linalg.eigvalsh(C).min() > 0


@pytest.mark.slow
@pytest.mark.skipif(not chgnet_source.chgnet_available(), reason="needs the chgnet extra")
def test_chgnet_mn_strain_and_charge_states_match_the_project_measurement(tmp_path):
    # reference/candidates.md: CHGNet LiMnPO4 -> MnPO4 strain (-6.72, -2.26, +3.70) %, Mn2+ 4.66 and
    # Mn3+ 3.95 muB. Same 0.3-point bound as for Fe (different starting cell, shallow MnPO4 minimum).
    li = chgnet_source.relax_end_member("Mn", "lithiated", cache_dir=tmp_path)
    de = chgnet_source.relax_end_member("Mn", "delithiated", cache_dir=tmp_path)
    strain_pct = 100 * (np.asarray(de.lattice.edges_A) / np.asarray(li.lattice.edges_A) - 1)
    np.testing.assert_allclose(strain_pct, (-6.72, -2.26, 3.70), atol=0.3)
    assert max(li.magmoms_muB) == pytest.approx(4.66, abs=0.1)
    assert max(de.magmoms_muB) == pytest.approx(3.95, abs=0.1)
