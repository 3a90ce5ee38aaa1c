"""Composition spaces: grids, ids, and every validation error path."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys

import pytest

import candidates
from candidates.space import MAX_INACTIVE_FRACTION
from mechanics.errors import InputError


@pytest.mark.parametrize(("metals", "step"), [(("Fe", "Mn"), 0.25), (("Fe", "Mn", "Co", "Ni"), 0.25),
                                              (("Fe", "Mn", "Co"), 0.1), (("Ni",), 0.5)])
def test_grid_has_every_simplex_point_once(metals, step):
    space = candidates.olivine_space(metals=metals, step=step)
    n, k = round(1 / step), len(metals)
    # stars and bars: C(n + k - 1, k - 1) compositions
    assert len(space) == math.comb(n + k - 1, k - 1)
    assert len({c.id for c in space}) == len(space)
    for c in space:
        assert math.isclose(sum(c.fractions.values()), 1.0, abs_tol=1e-12)
        assert set(c.fractions) <= set(metals)
        for x in c.fractions.values():  # every fraction on the grid
            assert abs(x / step - round(x / step)) < 1e-9


def test_metals_may_be_a_comma_string_like_the_cli():
    assert [c.id for c in candidates.olivine_space("Fe,Mn", 0.5)] == [
        c.id for c in candidates.olivine_space(("Fe", "Mn"), 0.5)]


def test_candidate_fields():
    c = candidates.explicit_space([{"Fe": 0.5, "Mn": 0.5}])[0]
    assert c.fractions == {"Fe": 0.5, "Mn": 0.5}
    comp = c.composition
    assert comp["Li"] == 1 and comp["P"] == 1 and comp["O"] == 4
    assert comp["Fe"] == 0.5 and comp["Mn"] == 0.5
    assert c.formula == comp.reduced_formula
    assert candidates.explicit_space([{"Fe": 1.0}])[0].formula == "LiFePO4"
    assert c.history[0]["generator"] == "explicit_space"


def test_dopants_scale_the_active_fractions():
    space = candidates.olivine_space(("Fe", "Mn"), 0.5, dopants={"Mg": (0.0, 0.1)})
    assert len(space) == 3 * 2
    doped = [c for c in space if c.fraction("Mg") > 0]
    assert len(doped) == 3
    half = next(c for c in doped if c.fraction("Fe") > 0 and c.fraction("Mn") > 0)
    assert half.fractions == pytest.approx({"Fe": 0.45, "Mn": 0.45, "Mg": 0.1})
    assert half.active_fraction == pytest.approx(0.9)


def test_max_components_keeps_binaries():
    space = candidates.olivine_space(("Fe", "Mn", "Co"), 0.25, max_components=2)
    assert all(len(c.fractions) <= 2 for c in space)
    assert len(space) == 3 + 3 * 3  # three end members, three edges with three interior points each


def test_id_is_stable_and_order_independent():
    a = candidates.explicit_space([{"Fe": 0.5, "Mn": 0.5}])[0]
    b = candidates.explicit_space([{"Mn": 0.5, "Fe": 0.5}])[0]
    c = candidates.olivine_space(("Mn", "Fe"), 0.5)[1]
    assert a.id == b.id == c.id
    # the id is a published format (MLflow runs are resumed by it): sha256 of the canonical text
    expected = hashlib.sha256(b"Fe=0.500000;Mn=0.500000").hexdigest()[:12]
    assert a.id == expected
    # fractions that agree to 6 decimals share an id, others differ
    third = candidates.explicit_space([{"Fe": 1 / 3, "Mn": 2 / 3}])[0]
    assert third.id == candidates.explicit_space([{"Fe": 0.3333333, "Mn": 0.6666667}])[0].id
    assert third.id != a.id


def test_id_is_the_same_in_another_process():
    code = ("import candidates; print(candidates.explicit_space([{'Fe': 0.25, 'Co': 0.75}])[0].id)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == candidates.explicit_space([{"Co": 0.75, "Fe": 0.25}])[0].id


def test_explicit_space_drops_duplicates_and_zero_fractions():
    space = candidates.explicit_space([{"Fe": 1.0, "Mn": 0.0}, {"Fe": 1.0}, {"Mn": 1.0}])
    assert [c.formula for c in space] == ["LiFePO4", "LiMnPO4"]
    assert space[0].fractions == {"Fe": 1.0}


def test_custom_space_records_its_parameters():
    line = ({"Fe": 1 - t, "Mn": t} for t in (0.0, 0.3, 0.7))
    space = candidates.custom_space(line, name="fe_mn_line", points=3)
    assert len(space) == 3
    assert space[1].history[0]["generator"] == "fe_mn_line"
    assert space[1].history[0]["parameters"]["points"] == 3


def _error(call, *args, **kwargs) -> InputError:
    with pytest.raises(InputError) as info:
        call(*args, **kwargs)
    return info.value


@pytest.mark.parametrize(
    ("fractions", "field", "phrase"),
    [
        ({"Xx": 1.0}, "compositions[0].Xx", "element symbol"),
        ({"Fe": 0.5, "O": 0.5}, "compositions[0].O", "metal"),
        ({"Fe": 0.5, "Zn": 0.5}, "compositions[0].Zn", "olivine"),
        ({"Fe": 0.9, "Al": 0.1}, "compositions[0].Al", "charge-balanced"),
        ({"Fe": 0.9, "Ti": 0.1}, "compositions[0].Ti", "charge-balanced"),
        ({"Fe": 0.5, "Mn": 0.4}, "compositions[0]", "summing to 1"),
        ({"Fe": 1.2, "Mn": -0.2}, "compositions[0].Mn", ">= 0"),
        ({"Fe": "half", "Mn": 0.5}, "compositions[0].Fe", "real number"),
        ({"Fe": float("nan"), "Mn": 0.5}, "compositions[0].Fe", "finite"),
        ({"Mg": 1.0}, "compositions[0]", "redox-active"),
        ({"Fe": 0.7, "Mg": 0.3}, "compositions[0]", "inactive dopants"),
        ({}, "compositions[0]", "at least one metal"),
    ],
)
def test_explicit_space_errors_name_the_field(fractions, field, phrase):
    error = _error(candidates.explicit_space, [fractions])
    assert error.field == field
    assert phrase in str(error)


def test_inactive_limit_is_inclusive():
    (c,) = candidates.explicit_space([{"Fe": 1 - MAX_INACTIVE_FRACTION, "Mg": MAX_INACTIVE_FRACTION}])
    assert c.active_fraction == pytest.approx(1 - MAX_INACTIVE_FRACTION)


def test_explicit_space_rejects_non_lists():
    assert _error(candidates.explicit_space, {"Fe": 1.0}).field == "compositions"
    assert _error(candidates.explicit_space, []).field == "compositions"
    assert _error(candidates.explicit_space, [["Fe", 1.0]]).field == "compositions[0]"


@pytest.mark.parametrize(
    ("kwargs", "field", "phrase"),
    [
        ({"step": 0.3}, "step", "divides 1"),
        ({"step": 0.0}, "step", "(0, 1]"),
        ({"step": 1.5}, "step", "(0, 1]"),
        ({"step": "0.25"}, "step", "real number"),
        ({"metals": ("Fe", "Uu")}, "metals", "element symbol"),
        ({"metals": ("Fe", "Fe")}, "metals", "each metal once"),
        ({"metals": ()}, "metals", "at least one"),
        ({"metals": ("Fe", "Mg")}, "metals", "dopants="),
        ({"metals": ("Fe", "Al")}, "metals", "charge-balanced"),
        ({"dopants": {"Mn": 0.05}}, "dopants.Mn", "inactive dopant"),
        ({"dopants": {"Mg": 0.5}}, "dopants.Mg", "levels in"),
        ({"dopants": {"Mg": ()}}, "dopants.Mg", "at least one level"),
        ({"dopants": ["Mg"]}, "dopants", "mapping"),
        ({"max_components": 0}, "max_components", "positive integer"),
    ],
)
def test_olivine_space_errors_name_the_field(kwargs, field, phrase):
    error = _error(candidates.olivine_space, **{"metals": ("Fe", "Mn"), "step": 0.5, **kwargs})
    assert error.field == field
    assert phrase in str(error)


def test_steps_that_divide_one_within_float_tolerance_are_accepted():
    assert len(candidates.olivine_space(("Fe", "Mn"), 0.1)) == 11
    assert len(candidates.olivine_space(("Fe", "Mn"), 1 / 3)) == 4


def test_candidates_pickle_and_round_trip_through_json():
    import json
    import pickle

    (c,) = candidates.explicit_space([{"Fe": 0.75, "Mn": 0.25}])
    assert pickle.loads(pickle.dumps(c)) == c  # Ray ships candidates to workers by pickle
    back = candidates.Candidate.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c and back.history == c.history and hash(back) == hash(c)
    with pytest.raises(InputError) as info:
        candidates.Candidate.from_dict({**c.to_dict(), "id": "0" * 12})
    assert info.value.field == "id"


# --- the chemist's formula (display only; Candidate.formula stays pymatgen's reduced formula) ---


@pytest.mark.parametrize(("given", "expected"), [
    ({"Co": 0.75, "Ni": 0.25}, "LiCo0.75Ni0.25PO4"),
    ({"Fe": 1.0}, "LiFePO4"),
    ({"Mn": 2 / 3, "Fe": 1 / 3}, "LiFe0.333333Mn0.666667PO4"),
    ("Li1Co0.75Ni0.25P1O4", "LiCo0.75Ni0.25PO4"),   # pymatgen's form, as the issue quotes it
    ("Li2Fe2P2O8", "LiFePO4"),                      # per formula unit of one P
    ("FePO4", "FePO4"),                             # not a lithiated olivine: returned as it came
    ("not a formula", "not a formula"),
])
def test_chemist_formula(given, expected):
    from candidates.space import chemist_formula

    assert chemist_formula(given) == expected


def test_display_formula_keeps_the_machine_formula():
    from candidates.space import chemist_formula

    for c in candidates.olivine_space(metals=("Fe", "Mn", "Co", "Ni"), step=0.25):
        assert c.display_formula == chemist_formula(c.formula) == chemist_formula(c.fractions)
        assert c.formula == c.composition.reduced_formula
        assert c.display_formula.startswith("Li") and "Li1" not in c.display_formula
        assert c.display_formula.endswith("PO4") and "P1O" not in c.display_formula
