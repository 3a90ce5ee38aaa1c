"""The candidate table: one row per candidate (pandas), written atomically as CSV or Parquet."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from chemoscreen.io import atomic_write
from mechanics.errors import InputError

from .properties import CandidateProperties, properties
from .space import OLIVINE_METALS, Candidate

TABLE_FORMATS = {".csv": "csv", ".parquet": "parquet"}


def _row(props: CandidateProperties) -> dict[str, object]:
    p = props.params
    u = props.uncertainties
    row: dict[str, object] = {"composition_id": props.composition_id, "formula": props.formula}
    row.update({f"x_{m}": float(props.fractions.get(m, 0.0)) for m in OLIVINE_METALS})
    row.update({
        "a_lithiated_A": p.lithiated.a_A, "b_lithiated_A": p.lithiated.b_A, "c_lithiated_A": p.lithiated.c_A,
        "a_delithiated_A": p.delithiated.a_A, "b_delithiated_A": p.delithiated.b_A,
        "c_delithiated_A": p.delithiated.c_A,
        "misfit_a_pct": 100.0 * props.misfit[0],
        "misfit_b_pct": 100.0 * props.misfit[1],
        "misfit_c_pct": 100.0 * props.misfit[2],
        "misfit_a_pct_std": 100.0 * u["misfit_a"],
        "misfit_b_pct_std": 100.0 * u["misfit_b"],
        "misfit_c_pct_std": 100.0 * u["misfit_c"],
        "volume_change_pct": 100.0 * props.volume_change,
        "volume_change_pct_std": 100.0 * u["volume_change"],
        "coherency_B_min_GPa": props.coherency_B_min_GPa,
        "habit_normal_a": props.habit_normal[0],
        "habit_normal_b": props.habit_normal[1],
        "habit_normal_c": props.habit_normal[2],
        "coherent_spinodal_margin_eV": props.coherent_spinodal_margin_eV,
        "coherent_critical_temperature_K": props.coherent_critical_temperature_K,
        "spinodal_suppressed": bool(props.spinodal_suppressed),
        "voltage_V": props.voltage_V,
        "voltage_V_std": u["voltage_V"],
        "capacity_mAh_g": props.capacity_mAh_g,
        "specific_energy_Wh_kg": props.specific_energy_Wh_kg,
        "omega_eV": p.omega_eV,
        "kappa_aJ_per_nm": p.kappa_aJ_per_nm[0],
        "site_density_per_nm3": p.site_density_per_nm3,
        "source": props.source,
    })
    return row


def candidate_table(
    space: Iterable[Candidate],
    source: str = "literature",
    *,
    temperature_K: float = 298.15,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per candidate with fractions, misfits (%), descriptors and electrochemistry.

    Columns: ``composition_id`` (:func:`candidates.composition_id`, the candidate's ``.id``),
    ``formula``, ``x_Fe`` … ``x_Mg`` (0 where absent), cell edges of both states (Å),
    ``misfit_{a,b,c}_pct`` (+ ``_std``), ``volume_change_pct`` (+ ``_std``),
    ``coherency_B_min_GPa``, ``habit_normal_{a,b,c}``, ``coherent_spinodal_margin_eV``,
    ``coherent_critical_temperature_K``, ``spinodal_suppressed``, ``voltage_V`` (+ ``_std``),
    ``capacity_mAh_g``, ``specific_energy_Wh_kg``, ``omega_eV``, ``kappa_aJ_per_nm``,
    ``site_density_per_nm3``, ``source``.
    """
    candidates = list(space)
    if not candidates:
        raise InputError("space", "at least one candidate", candidates)
    rows = [
        _row(properties(c, source, temperature_K=temperature_K, cache_dir=cache_dir))
        for c in tqdm(candidates, desc=f"candidates ({source})", disable=None if progress else True)
    ]
    return pd.DataFrame(rows)


def check_table_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it ends in .csv or .parquet, else ``InputError`` naming ``--out``.

    Call it before computing a table so a bad ``--out`` fails at once.
    """
    target = Path(path)
    if target.suffix.lower() not in TABLE_FORMATS:
        raise InputError("--out", "a file name ending in .csv or .parquet", str(path))
    return target


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` to ``path`` as CSV (``.csv``) or Parquet (``.parquet``), atomically.

    The table goes to a temporary file in the target folder and is renamed into place
    (:func:`chemoscreen.io.atomic_write`), so a failed write leaves nothing half-written. Missing
    parent folders are created.

    Args:
        df: the table.
        path: the target file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: (field ``--out``) another extension, or a folder that cannot be written (read-only,
            under a file) or a target that is a folder.
    """
    target = check_table_path(path)
    kind = TABLE_FORMATS[target.suffix.lower()]

    def write(tmp: Path) -> None:
        if kind == "csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)

    return atomic_write(target, write, field="--out", make_parents=True)
