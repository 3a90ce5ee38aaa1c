"""End-member lattices (and optionally stiffness) from the CHGNet pretrained potential, cached on disk.

Optional: needs the ``chgnet`` extra (``pip install 'chemoscreen[chgnet]'``); its weights ship inside
the wheel and load offline. CHGNet: Deng et al., Nat. Mach. Intell. 5, 1031 (2023).

Relaxation: ASE, cell and positions together (``FrechetCellFilter``), LBFGS to max force
``fmax`` = 0.02 eV/Å, one torch thread (several workers share the CPU). Results are cached as JSON
under ``cache_dir`` (argument; else ``$CHEMOSCREEN_CACHE/chgnet``; else ``~/.cache/chemoscreen/chgnet``),
keyed by the sha256 of the starting structure and every setting that changes the answer.

Accuracy (project measurements on LiFePO4/FePO4 and LiMnPO4/MnPO4): lattices come out 0.9–1.5 %
too large (GGA-like), misfits within about one percentage point of experiment per axis, except Co
(CHGNet shrinks a by 5–6 % on delithiation against ~1 % measured). Finite-strain elastic constants
are 29–66 % too soft against DFT, so ``properties(source="chgnet")`` keeps the literature stiffness
and uses CHGNet only for lattices.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from monty.json import MontyEncoder
from pymatgen.core import Structure

from chemoscreen.io import atomic_write
from mechanics.errors import InputError
from mechanics.parameters.base import OrthorhombicLattice

from .structures import end_member_structure

DEFAULT_MODEL = "0.3.0"
DEFAULT_FMAX_EV_A = 0.02
DEFAULT_MAX_STEPS = 500
CACHE_ENV = "CHEMOSCREEN_CACHE"
CACHE_SCHEMA = "chemoscreen.chgnet_relaxation/1"
EV_PER_A3_TO_GPA = 160.21766208


class OptionalDependencyError(ImportError):
    """An optional extra needed for the requested source is not installed."""


def _import_chgnet():
    try:
        from chgnet.model import CHGNet
        from chgnet.model.dynamics import CHGNetCalculator
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise OptionalDependencyError(
            "source='chgnet' needs the optional CHGNet extra: pip install 'chemoscreen[chgnet]' "
            f"({error})"
        ) from error
    return CHGNet, CHGNetCalculator


def chgnet_available() -> bool:
    try:
        _import_chgnet()
    except OptionalDependencyError:
        return False
    return True


@cache
def _load_model(model: str):
    CHGNet, _ = _import_chgnet()
    with contextlib.redirect_stdout(io.StringIO()):  # CHGNet prints its banner unconditionally
        return CHGNet.load(model_name=model, use_device="cpu", verbose=False)


def _calculator(model: str):
    _, CHGNetCalculator = _import_chgnet()
    with contextlib.redirect_stdout(io.StringIO()):  # "CHGNet will run on cpu"
        return CHGNetCalculator(model=_load_model(model), use_device="cpu")


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``$CHEMOSCREEN_CACHE/chgnet``, else ``~/.cache/chemoscreen/chgnet``."""
    if cache_dir is not None:
        return Path(cache_dir)
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else Path.home() / ".cache" / "chemoscreen") / "chgnet"


def structure_hash(structure: Structure, **settings: Any) -> str:
    """sha256 of lattice, species, fractional coordinates (rounded to 1e-6) and the settings."""
    payload = {
        "lattice": np.round(structure.lattice.matrix, 6).tolist(),
        "species": [str(site.species) for site in structure],
        "frac_coords": np.round(np.mod(structure.frac_coords, 1.0), 6).tolist(),
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Relaxation:
    """Result of one CHGNet relaxation.

    Fields: key (cache key), lattice (relaxed a, b, c in Å; orthorhombic edges), angles_deg,
    energy_eV_per_atom, magmoms_muB (per site), steps, converged, fmax_eV_A, model, wall_s (of the
    original run), structure (relaxed, pymatgen dict), cached (read from disk this time).
    """

    key: str
    lattice: OrthorhombicLattice
    angles_deg: tuple[float, float, float]
    energy_eV_per_atom: float
    magmoms_muB: tuple[float, ...]
    steps: int
    converged: bool
    fmax_eV_A: float
    model: str
    wall_s: float
    structure: dict[str, Any]
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["lattice"] = list(self.lattice.edges_A)
        data.pop("cached")
        return {"schema": CACHE_SCHEMA, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Relaxation:
        data = {k: v for k, v in data.items() if k != "schema"}
        data["lattice"] = OrthorhombicLattice(*data["lattice"])
        data["angles_deg"] = tuple(data["angles_deg"])
        data["magmoms_muB"] = tuple(data["magmoms_muB"])
        return cls(**data, cached=True)


def relax(
    structure: Structure,
    *,
    model: str = DEFAULT_MODEL,
    fmax_eV_A: float = DEFAULT_FMAX_EV_A,
    max_steps: int = DEFAULT_MAX_STEPS,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> Relaxation:
    """Relax cell and positions of ``structure`` with CHGNet (ASE FrechetCellFilter + LBFGS)."""
    if not (isinstance(fmax_eV_A, (int, float)) and fmax_eV_A > 0):
        raise InputError("fmax_eV_A", "a positive force threshold in eV/Å", fmax_eV_A)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise InputError("max_steps", "a positive integer", max_steps)
    import chgnet

    settings = {"model": model, "chgnet": chgnet.__version__, "fmax_eV_A": float(fmax_eV_A),
                "max_steps": max_steps, "filter": "FrechetCellFilter", "optimizer": "LBFGS"}
    key = structure_hash(structure, **settings)
    path = resolve_cache_dir(cache_dir) / f"{key}.json"
    if use_cache and path.is_file():
        return Relaxation.from_json(json.loads(path.read_text(encoding="utf-8")))

    from ase.filters import FrechetCellFilter
    from ase.optimize import LBFGS
    from pymatgen.io.ase import AseAtomsAdaptor

    start = time.perf_counter()
    with _torch_threads(1):
        calculator = _calculator(model)
        atoms = AseAtomsAdaptor.get_atoms(structure)
        atoms.calc = calculator
        optimizer = LBFGS(FrechetCellFilter(atoms), logfile=None)
        converged = bool(optimizer.run(fmax=fmax_eV_A, steps=max_steps))
        energy = float(atoms.get_potential_energy()) / len(atoms)
        magmoms = calculator.results.get("magmoms", np.zeros(len(atoms)))
    relaxed = AseAtomsAdaptor.get_structure(atoms)
    a, b, c = relaxed.lattice.abc
    result = Relaxation(
        key=key,
        lattice=OrthorhombicLattice(float(a), float(b), float(c)),
        angles_deg=tuple(float(x) for x in relaxed.lattice.angles),
        energy_eV_per_atom=energy,
        magmoms_muB=tuple(float(m) for m in np.ravel(magmoms)),
        steps=int(optimizer.get_number_of_steps()),
        converged=converged,
        fmax_eV_A=float(fmax_eV_A),
        model=model,
        wall_s=time.perf_counter() - start,
        structure=relaxed.as_dict(),
    )
    if use_cache:
        data = result.to_json()
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1, cls=MontyEncoder),
                                                      encoding="utf-8"),
                     field="cache_dir", make_parents=True)
    return result


def relax_end_member(metal: str, state: str = "lithiated", **kwargs: Any) -> Relaxation:
    """Relax LiMPO4 (``state='lithiated'``) or MPO4 starting from the literature Pnma cell."""
    return relax(end_member_structure(metal, state), **kwargs)


def finite_strain_stiffness(
    structure: Structure,
    *,
    strains: tuple[float, ...] = (-0.01, -0.005, 0.005, 0.01),
    model: str = DEFAULT_MODEL,
    fmax_eV_A: float = DEFAULT_FMAX_EV_A,
    max_steps: int = 200,
) -> np.ndarray:
    """6×6 Voigt stiffness (GPa) by finite strains with ion relaxation (slow: 6·len(strains) runs).

    For each Voigt component j and engineering strain δ, the cell is deformed by F = 1 + ε(δ e_j)
    (tensor shear ε_ij = δ/2), ions are relaxed at fixed cell and the stress σ(δ) is recorded;
    C_ij = least-squares slope dσ_i/dδ, then symmetrised. Start from a relaxed ``structure``.
    Known to be 29–66 % too soft for LiFePO4 (project reference): trends only.
    """
    from ase.optimize import LBFGS
    from pymatgen.io.ase import AseAtomsAdaptor

    pairs = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
    stiffness = np.zeros((6, 6))
    with _torch_threads(1):
        calculator = _calculator(model)
        for j, (p, q) in enumerate(pairs):
            stresses = []
            for delta in strains:
                strain = np.zeros((3, 3))
                strain[p, q] += delta if p == q else delta / 2
                strain[q, p] = strain[p, q]
                atoms = AseAtomsAdaptor.get_atoms(structure)
                atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
                atoms.calc = calculator
                LBFGS(atoms, logfile=None).run(fmax=fmax_eV_A, steps=max_steps)
                stresses.append(atoms.get_stress(voigt=True) * EV_PER_A3_TO_GPA)
            stiffness[:, j] = np.polyfit(np.asarray(strains), np.asarray(stresses), 1)[0]
    return 0.5 * (stiffness + stiffness.T)
