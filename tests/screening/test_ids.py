"""Candidate and sweep identities: what must and must not change them."""

from __future__ import annotations

from screening.ids import candidate_id, sweep_id

SETTINGS = {"grid_points": 16, "fidelity": "periodic", "seed": 0}


def test_candidate_id_ignores_order_round_off_and_zero_fractions():
    a = candidate_id({"Fe": 0.3, "Mn": 0.7}, SETTINGS, "models:/lfp-chemomech/1")
    assert a == candidate_id({"Mn": 0.7, "Fe": 0.1 + 0.2, "Co": 0.0}, dict(reversed(SETTINGS.items())),
                             "models:/lfp-chemomech/1")
    assert len(a) == 16 and int(a, 16) >= 0


def test_candidate_id_changes_with_what_changes_the_result():
    base = candidate_id({"Fe": 1.0}, SETTINGS, "vegard")
    assert candidate_id({"Fe": 0.75, "Mn": 0.25}, SETTINGS, "vegard") != base
    assert candidate_id({"Fe": 1.0}, {**SETTINGS, "fidelity": "particle"}, "vegard") != base
    assert candidate_id({"Fe": 1.0}, SETTINGS, "models:/lfp-chemomech/2") != base
    assert candidate_id({"Fe": 1.0}, SETTINGS, "vegard", source="chgnet") != base


def test_sweep_id_is_a_function_of_the_candidate_set():
    ids = ["b", "a", "c"]
    assert sweep_id(ids, SETTINGS, "vegard") == sweep_id(sorted(ids), SETTINGS, "vegard")
    assert sweep_id(ids[:2], SETTINGS, "vegard") != sweep_id(ids, SETTINGS, "vegard")
