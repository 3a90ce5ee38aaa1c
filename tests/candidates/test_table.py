"""The candidate table and its atomic CSV / Parquet writer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import candidates
from mechanics.errors import InputError

REQUIRED = ["composition_id", "formula", "x_Fe", "x_Mn", "x_Co", "x_Ni", "x_Mg", "misfit_a_pct",
            "misfit_b_pct", "misfit_c_pct", "volume_change_pct", "coherency_B_min_GPa", "habit_normal_a",
            "habit_normal_b", "habit_normal_c", "spinodal_suppressed", "voltage_V", "capacity_mAh_g",
            "specific_energy_Wh_kg", "omega_eV", "source"]


@pytest.fixture(scope="module")
def table():
    space = candidates.olivine_space(("Fe", "Mn", "Co"), step=0.5, dopants={"Mg": (0.0, 0.05)})
    return space, candidates.candidate_table(space, source="literature")


def test_one_row_per_candidate_with_the_contract_columns(table):
    space, df = table
    assert list(df["composition_id"]) == [c.id for c in space]
    assert list(df["composition_id"]) == [candidates.composition_id(c.fractions) for c in space]
    assert "candidate_id" not in df.columns  # the simulation key is screening's, not a property
    assert set(REQUIRED) <= set(df.columns)
    assert (df["source"] == "literature").all()
    assert df["spinodal_suppressed"].dtype == bool
    fractions = df[["x_Fe", "x_Mn", "x_Co", "x_Ni", "x_Mg"]].to_numpy()
    np.testing.assert_allclose(fractions.sum(axis=1), 1.0)
    assert (df["x_Ni"] == 0).all()
    lfp = df.set_index("formula").loc["LiFePO4"]
    assert lfp["misfit_a_pct"] == pytest.approx(5.20, abs=0.006)
    assert lfp["specific_energy_Wh_kg"] == pytest.approx(lfp["voltage_V"] * lfp["capacity_mAh_g"])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_write_table_round_trips(table, tmp_path, suffix):
    _, df = table
    path = candidates.write_table(df, tmp_path / "out" / f"candidates{suffix}")
    back = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert list(back.columns) == list(df.columns)
    pd.testing.assert_frame_equal(back, df, check_exact=False, rtol=1e-12)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def test_write_table_refuses_other_extensions(table, tmp_path):
    _, df = table
    with pytest.raises(InputError) as info:
        candidates.write_table(df, tmp_path / "candidates.xlsx")
    assert info.value.field == "--out"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError):
        candidates.check_table_path("table")
    assert candidates.check_table_path("t.PARQUET").name == "t.PARQUET"


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "candidates.parquet"
    target.write_bytes(b"previous")
    unserialisable = pd.DataFrame({"a": [object()]})  # pyarrow cannot convert a bare object
    with pytest.raises(Exception):  # noqa: B017 - pyarrow's own error type
        candidates.write_table(unserialisable, target)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["candidates.parquet"]


def test_an_unwritable_out_is_an_input_error_naming_it(table, tmp_path):
    _, df = table
    (tmp_path / "notes.txt").write_text("keep")
    with pytest.raises(InputError) as info:
        candidates.write_table(df, tmp_path / "notes.txt" / "candidates.csv")
    assert info.value.field == "--out" and "is a file" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_empty_space_is_an_input_error():
    with pytest.raises(InputError) as info:
        candidates.candidate_table([])
    assert info.value.field == "space"


def test_the_docs_example_runs(tmp_path, monkeypatch):
    # docs/candidates.md's first python block, executed as written (writes candidates.parquet in cwd)
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "candidates.md").read_text(encoding="utf-8")
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "docs/candidates.md", "exec"), namespace)
    assert len(namespace["space"]) == 36 and len(namespace["df"]) == 36
    assert (tmp_path / "candidates.parquet").is_file()
