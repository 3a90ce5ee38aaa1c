"""Stable identities of candidates and sweeps.

A candidate's identity is what determines its simulation result: its composition (and the property
source that turns the composition into parameters), the simulation settings and the version of the
eigenstrain law. Two runs with the same ``candidate_id`` are the same computation, so a sweep logs each
``candidate_id`` at most once. A sweep's identity is the set of candidate identities it covers: rerunning
the same command finds the same parent run and resumes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping


def _digest(payload: object, length: int) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def composition_key(fractions: Mapping[str, float]) -> dict[str, float]:
    """Metal-site fractions rounded to 1e-9 with zero entries dropped, so 0.1 + 0.2 equals 0.3."""
    return {str(el): round(float(x), 9) for el, x in sorted(fractions.items()) if round(float(x), 9) != 0.0}


def candidate_id(
    fractions: Mapping[str, float],
    settings: Mapping[str, object],
    model_version: str,
    source: str = "literature",
) -> str:
    """16 hex digits of SHA-256 over (composition, property source, settings, model version)."""
    return _digest(
        {
            "composition": composition_key(fractions),
            "source": source,
            "settings": dict(settings),
            "model": model_version,
        },
        16,
    )


def sweep_id(candidate_ids: Iterable[str], settings: Mapping[str, object], model_version: str) -> str:
    """12 hex digits over the sorted candidate ids, the settings and the model version."""
    payload = {"candidates": sorted(candidate_ids), "settings": dict(settings), "model": model_version}
    return _digest(payload, 12)
