"""The correlative image set (ARCHITECTURE §4.2): model, validation, readers and writers.

Formats: ``.npz`` (read with ``allow_pickle=False``), ``.h5``/``.hdf5`` (the same names as datasets,
scalars also accepted as file attributes), and a TIFF stack with a JSON sidecar (``particle.tif`` +
``particle.json``; the sidecar holds the scalars and ``"channels"``, the names of the stack's pages in
order; a composition map on its own grid lives in a second TIFF named by ``"composition_file"``).

Frames: image x = increasing column index, y = increasing row index. The solver grid uses axis 0 = row
= y and axis 1 = column = x; ``crystal_angle_deg`` θ turns image +x towards image +y onto crystal a, so
crystal a = (cos θ, sin θ) and crystal c = (−sin θ, cos θ) in image (x, y).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chemoscreen.io import atomic_files, check_writable
from mechanics.errors import InputError

STRAIN_FIELDS = ("strain_xx", "strain_yy", "strain_xy")
REFERENCES = ("LiMPO4", "MPO4", "unknown")
# The largest one-σ composition noise a file may declare. The noisiest composition maps in our references
# are STXM Li-fraction maps with σ ≈ 0.07 (Zhao et al., Nature 621, 289 (2023); shared/reference/lfp.md);
# 0.1 admits them with margin. Values outside [0, 1] are accepted within 5σ (a Gaussian pixel lies beyond
# 5σ with probability 6e-7), at least 0.05; with this cap the tolerance never exceeds 0.5, so X stays in
# [-0.5, 1.5], the range the screening's phase field also treats as the limit of a sane composition.
MAX_COMPOSITION_SIGMA = 0.1
MIN_COMPOSITION_TOLERANCE = 0.05
# The smallest particle calibration can fit: each particle brings three unknown reference offsets and the
# law two slopes its smoothness prior does not fix (five unknowns against three strain rows per pixel); a
# single pixel leaves the normal equations singular. A 3 x 3 block (27 rows) leaves the robust reweighting
# and the cross-validated smoothness residual degrees of freedom.
MIN_PARTICLE_PIXELS = 9
_SCALARS = ("pixel_size_nm", "crystal_angle_deg", "composition_pixel_size_nm", "strain_reference")


@dataclass(frozen=True)
class ImageSet:
    """One particle's correlative maps.

    Fields:
      composition: (Hc, Wc) Li fraction X, NaN outside the particle; (H, W) unless
        ``composition_pixel_size_nm`` gives it its own grid.
      strain_xx, strain_yy, strain_xy: (H, W) image-frame strain (tensor shear).
      mask: (H, W) bool particle pixels on the strain grid.
      pixel_size_nm: strain-grid pitch (nm).
      crystal_angle_deg: image +x → crystal a, towards image +y (degrees).
      composition_pixel_size_nm: pitch of the composition grid (nm), or None for the strain grid.
      composition_sigma, strain_sigma: one-σ noise (scalar, or a map on the grid of the field), or None.
      strain_reference: ``"LiMPO4"``, ``"MPO4"`` or ``"unknown"``.
      coverage: (H, W) area fraction of each strain pixel covered by the particle (e.g. a virtual
        ADF image normalised to the interior), or None: the forward model's outline is then the mask's
        pixel staircase (see :func:`inverse.forward.rim_elements`).
      source, sha256: where the set was read from (empty for in-memory sets).
      truth: the ``truth_*`` entries written by ``synth`` (never read by calibration).
    """

    composition: np.ndarray
    strain_xx: np.ndarray
    strain_yy: np.ndarray
    strain_xy: np.ndarray
    mask: np.ndarray
    pixel_size_nm: float
    crystal_angle_deg: float = 0.0
    composition_pixel_size_nm: float | None = None
    composition_sigma: float | np.ndarray | None = None
    strain_sigma: float | np.ndarray | None = None
    strain_reference: str = "unknown"
    coverage: np.ndarray | None = None
    source: str = ""
    sha256: str = ""
    truth: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.strain_xx.shape

    def strain_grid(self) -> np.ndarray:
        """(H, W, 2, 2) strain on the solver grid axes (0 = y = rows, 1 = x = columns)."""
        return image_to_grid(self.strain_xx, self.strain_yy, self.strain_xy)


# -- frames ---------------------------------------------------------------------------------------------
def crystal_rotation(angle_deg: float) -> np.ndarray:
    """R (2, 2) whose rows are crystal a and c in grid coordinates (axis 0 = y, axis 1 = x).

    Tensors transform as ε_crystal = R ε_grid Rᵀ and C_grid_ijkl = R_pi R_qj R_rk R_sl C_crystal_pqrs.
    """
    t = np.deg2rad(angle_deg)
    return np.array([[np.sin(t), np.cos(t)], [np.cos(t), -np.sin(t)]])


def image_to_grid(exx: np.ndarray, eyy: np.ndarray, exy: np.ndarray) -> np.ndarray:
    return np.stack([np.stack([eyy, exy], -1), np.stack([exy, exx], -1)], -2)


def grid_to_crystal(tensor: np.ndarray, angle_deg: float) -> np.ndarray:
    r = crystal_rotation(angle_deg)
    return np.einsum("pi,...ij,qj->...pq", r, tensor, r)


def crystal_to_grid(tensor: np.ndarray, angle_deg: float) -> np.ndarray:
    r = crystal_rotation(angle_deg)
    return np.einsum("pi,...pq,qj->...ij", r, tensor, r)


def stiffness_to_grid(stiffness_crystal: np.ndarray, angle_deg: float) -> np.ndarray:
    """In-plane stiffness (2, 2, 2, 2) from crystal (a, c) components to grid components."""
    r = crystal_rotation(angle_deg)
    return np.einsum("pi,qj,rk,sl,pqrs->ijkl", r, r, r, r, np.asarray(stiffness_crystal, float))


# -- validation -----------------------------------------------------------------------------------------
def _scalar(raw: dict, name: str, default=None, positive: bool = False):
    if name not in raw or raw[name] is None:
        return default
    value = np.asarray(raw[name])
    if value.size != 1:
        raise InputError(name, "a scalar", f"array of shape {value.shape}")
    try:
        number = float(value.reshape(()))
    except (TypeError, ValueError) as exc:
        raise InputError(name, "a number", value.reshape(()).item()) from exc
    if not np.isfinite(number) or (positive and number <= 0):
        raise InputError(name, "a finite number > 0" if positive else "a finite number", number)
    return number


def _sigma(raw: dict, name: str, shape: tuple[int, int], upper: float | None = None):
    """A one-σ noise: a scalar > 0 or a map of the field's shape (NaN allowed where the field is missing);
    ``upper`` bounds it."""
    if name not in raw or raw[name] is None:
        return None
    value = np.asarray(raw[name])
    if value.dtype.kind not in "fiu":
        raise InputError(name, "a number or a float array (one-σ noise)", f"{value.dtype} array")
    value = value.astype(float)
    bound = f" and <= {upper:g}" if upper is not None else ""
    if value.size == 1:
        number = float(value.reshape(()))
        if not np.isfinite(number) or number <= 0 or (upper is not None and number > upper):
            raise InputError(name, f"a one-σ noise > 0{bound} (scalar or map)", number)
        return number
    if value.shape != shape:
        raise InputError(name, f"a scalar or an array of shape {shape}", f"shape {value.shape}")
    if np.isinf(value).any():
        raise InputError(name, "finite noise values (NaN only where the field is missing)",
                         f"{int(np.isinf(value).sum())} infinite values")
    finite = value[np.isfinite(value)]
    if np.any(finite <= 0) or (upper is not None and np.any(finite > upper)):
        raise InputError(name, f"noise values > 0{bound}", f"range [{finite.min():.3g}, {finite.max():.3g}]")
    return value


def _no_infinity(name: str, arr: np.ndarray) -> None:
    """NaN marks a missing pixel; ±inf is a corrupt value, never read as missing."""
    infinite = np.isinf(arr)
    if infinite.any():
        raise InputError(name, "finite values (NaN only for missing pixels outside the particle)",
                         f"{int(infinite.sum())} infinite pixels")


def _coverage(raw: dict, shape: tuple[int, int], mask: np.ndarray):
    """The optional covered area fraction per pixel: in [0, 1] (NaN read as 0) and > 0 on the mask."""
    if "coverage" not in raw or raw["coverage"] is None:
        return None
    value = np.asarray(raw["coverage"])
    if value.shape != shape or value.dtype.kind not in "fiu":
        raise InputError("coverage", f"a float array of shape {shape} (area fraction per pixel)",
                         f"{value.dtype} array of shape {value.shape}")
    value = np.nan_to_num(value.astype(float), nan=0.0)
    if np.any(value < 0) or np.any(value > 1 + 1e-6):
        raise InputError("coverage", "covered area fractions in [0, 1]",
                         f"range [{value.min():.3g}, {value.max():.3g}]")
    if np.any(value[mask] <= 0):
        raise InputError("coverage", "a fraction > 0 at every mask pixel",
                         f"{int(np.sum(value[mask] <= 0))} mask pixels at 0")
    return np.clip(value, 0.0, 1.0)


def _text(value) -> str:
    arr = np.asarray(value)
    item = arr.reshape(()).item() if arr.size == 1 else value
    return item.decode() if isinstance(item, bytes) else str(item)


def validate(raw: dict, source: str = "", sha256: str = "") -> ImageSet:
    """Build an :class:`ImageSet` from a mapping of §4.2 names; every violation raises InputError."""
    for name in ("composition", *STRAIN_FIELDS, "pixel_size_nm"):
        if name not in raw:
            raise InputError(name, "present in the image set (ARCHITECTURE §4.2)", "missing")
    strains = []
    for name in STRAIN_FIELDS:
        arr = np.asarray(raw[name])
        if arr.ndim != 2 or arr.dtype.kind not in "fiu":
            raise InputError(name, "a 2-D float array (H, W)", f"{arr.dtype} array of shape {arr.shape}")
        strains.append(arr.astype(float))
        _no_infinity(name, strains[-1])
    shape = strains[0].shape
    for name, arr in zip(STRAIN_FIELDS, strains):
        if arr.shape != shape:
            raise InputError(name, f"shape {shape} like strain_xx", arr.shape)
    pixel = _scalar(raw, "pixel_size_nm", positive=True)
    comp_pixel = _scalar(raw, "composition_pixel_size_nm", positive=True)
    comp = np.asarray(raw["composition"])
    if comp.ndim != 2 or comp.dtype.kind not in "fiu":
        raise InputError("composition", "a 2-D float array", f"{comp.dtype} array of shape {comp.shape}")
    comp = comp.astype(float)
    _no_infinity("composition", comp)
    if comp_pixel is None and comp.shape != shape:
        raise InputError(
            "composition",
            f"shape {shape} like the strain maps (or set composition_pixel_size_nm for its own grid)",
            comp.shape,
        )
    angle = _scalar(raw, "crystal_angle_deg", default=0.0)
    reference = _text(raw["strain_reference"]) if "strain_reference" in raw else "unknown"
    if reference not in REFERENCES:
        raise InputError("strain_reference", f"one of {REFERENCES}", reference)
    comp_sigma = _sigma(raw, "composition_sigma", comp.shape, upper=MAX_COMPOSITION_SIGMA)
    strain_sigma = _sigma(raw, "strain_sigma", shape)

    finite_strain = np.all([np.isfinite(s) for s in strains], axis=0)
    if "mask" in raw and raw["mask"] is not None:
        mask = np.asarray(raw["mask"])
        if mask.shape != shape or mask.dtype.kind not in "biu":
            raise InputError("mask", f"a bool array of shape {shape}", f"{mask.dtype} {mask.shape}")
        mask = mask.astype(bool)
        bad = mask & ~finite_strain
        if bad.any():
            raise InputError("strain_xx", "finite strain at every mask pixel", f"{int(bad.sum())} NaN pixels")
    else:
        mask = finite_strain & (np.isfinite(comp) if comp.shape == shape else True)
    n_particle = int(mask.sum())
    if n_particle < MIN_PARTICLE_PIXELS:
        raise InputError("mask", f"at least {MIN_PARTICLE_PIXELS} particle pixels (a 3 x 3 block: the fit "
                         "has five unknowns the smoothness prior does not fix, three strain rows per pixel)",
                         f"{n_particle} particle pixels")
    finite = np.isfinite(comp)
    if not finite.any():
        raise InputError("composition", "finite Li fractions inside the particle", "all NaN")
    # values outside [0, 1] are allowed only within the noise: 5σ, per pixel for a σ map (module constants)
    sig = comp_sigma if comp_sigma is not None else 0.0
    tolerance = np.maximum(MIN_COMPOSITION_TOLERANCE, 5.0 * np.nan_to_num(np.broadcast_to(sig, comp.shape)))
    excess = np.maximum(-comp, comp - 1.0) - tolerance
    if np.any(excess[finite] > 0):
        inside = comp[finite]
        widest = float(tolerance[finite].max())
        raise InputError(
            "composition",
            f"Li fraction X in [0, 1] within noise (±{widest:.3g}: 5 × composition_sigma, at least "
            f"{MIN_COMPOSITION_TOLERANCE:g})",
            f"range [{inside.min():.3g}, {inside.max():.3g}]",
        )
    coverage = _coverage(raw, shape, mask)
    truth = {k: np.asarray(v) for k, v in raw.items() if k.startswith("truth_")}
    return ImageSet(
        composition=comp,
        strain_xx=strains[0],
        strain_yy=strains[1],
        strain_xy=strains[2],
        mask=mask,
        pixel_size_nm=pixel,
        crystal_angle_deg=angle,
        composition_pixel_size_nm=comp_pixel,
        composition_sigma=comp_sigma,
        strain_sigma=strain_sigma,
        strain_reference=reference,
        coverage=coverage,
        source=source,
        sha256=sha256,
        truth=truth,
    )


# -- readers --------------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first local header, or an empty archive


def _read_npz(path: Path) -> dict:
    """The arrays of an .npz; an empty, truncated or corrupt file or an object array is an InputError
    naming the file (a file that is not a zip at all is never handed to numpy's pickle detection)."""
    import zipfile
    import zlib

    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        raise InputError("images", "an .npz image set (a zip of .npy arrays)", f"{path}: empty file")
    if head not in _ZIP_MAGIC:
        raise InputError("images", "an .npz image set (a zip of .npy arrays)",
                         f"{path}: not a zip archive (starts with {head!r})")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # object arrays need pickle: refuse them
            raise InputError("images", "an .npz without pickled objects", f"{path}: {exc}") from None
        raise InputError("images", "an intact .npz image set",
                         f"{path}: corrupt array ({exc})") from None
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError, KeyError) as exc:
        raise InputError("images", "an intact .npz image set",
                         f"{path}: truncated or corrupt ({type(exc).__name__}: {exc})") from None


def _read_h5(path: Path) -> dict:
    import h5py

    out: dict = {}
    with h5py.File(path, "r") as fh:
        for key, value in fh.attrs.items():
            out[key] = value
        for key, ds in fh.items():
            if isinstance(ds, h5py.Dataset):
                out[key] = ds[()]
    return out


def _read_tiff(path: Path) -> dict:
    import tifffile

    sidecar = path.with_suffix(".json")
    if not sidecar.exists():
        raise InputError("images", f"a JSON sidecar {sidecar.name} beside the TIFF stack", "missing")
    try:
        meta = json.loads(sidecar.read_text())
    except json.JSONDecodeError as exc:
        raise InputError("sidecar", "valid JSON", str(exc)) from exc
    channels = meta.pop("channels", None)
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise InputError("channels", "a list of page names in the JSON sidecar", channels)
    stack = tifffile.imread(path)
    if stack.ndim == 2:
        stack = stack[None]
    if stack.shape[0] != len(channels):
        raise InputError("channels", f"{stack.shape[0]} names, one per TIFF page", len(channels))
    out = dict(meta)
    for name, page in zip(channels, stack):
        out[name] = page.astype(bool) if name == "mask" else page
    comp_file = out.pop("composition_file", None)
    if comp_file is not None:
        comp_path = path.parent / comp_file
        if not comp_path.exists():
            raise InputError("composition_file", "an existing TIFF beside the stack", str(comp_file))
        out["composition"] = tifffile.imread(comp_path)
    return out


def load_images(path) -> ImageSet:
    """Read and validate one image set (``.npz``, ``.h5``/``.hdf5``, ``.tif``/``.tiff`` + ``.json``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("images", "an existing image-set file", str(path))
    suffix = path.suffix.lower()
    readers = {".npz": _read_npz, ".h5": _read_h5, ".hdf5": _read_h5, ".tif": _read_tiff, ".tiff": _read_tiff}
    if suffix not in readers:
        raise InputError("images", f"a file ending in one of {sorted(readers)}", path.name)
    try:
        raw = readers[suffix](path)
    except InputError:
        raise
    except (OSError, ValueError, KeyError, EOFError) as exc:  # h5py and tifffile on corrupt files
        raise InputError("images", f"a readable {suffix} image set",
                         f"{path}: {type(exc).__name__}: {exc}") from None
    return validate(raw, source=str(path), sha256=file_sha256(path))


# -- writers --------------------------------------------------------------------------------------------
def as_mapping(images: ImageSet) -> dict:
    """The §4.2 names of an image set (None fields left out), truth included."""
    out = {
        "composition": images.composition,
        "strain_xx": images.strain_xx,
        "strain_yy": images.strain_yy,
        "strain_xy": images.strain_xy,
        "mask": images.mask,
        "pixel_size_nm": images.pixel_size_nm,
        "crystal_angle_deg": images.crystal_angle_deg,
        "strain_reference": images.strain_reference,
    }
    for name in ("composition_pixel_size_nm", "composition_sigma", "strain_sigma", "coverage"):
        if getattr(images, name) is not None:
            out[name] = getattr(images, name)
    out.update(images.truth)
    return out


WRITABLE_SUFFIXES = (".npz", ".h5", ".hdf5", ".tif", ".tiff")


def check_image_path(path, field: str = "out") -> Path:
    """Check, before any work, that an image set can be written to ``path``: a suffix :func:`save_images`
    writes and a folder that can be created and written.

    Raises:
        InputError: (``field``) another suffix, or a folder under a file, read-only or not creatable.
    """
    path = Path(path)
    if path.suffix.lower() not in WRITABLE_SUFFIXES:
        raise InputError(field, "a path ending in .npz, .h5, .hdf5, .tif or .tiff", path.name)
    return check_writable(path, field=field, make_parents=True)


def save_images(images: ImageSet, path, *, field: str = "out") -> Path:
    """Write an image set atomically (temporary file, then rename) as .npz, .h5 or TIFF + JSON sidecar.

    Args:
        images: the image set.
        path: the target (its suffix picks the format).
        field: the option ``path`` came from, named in errors (``--out`` on the command line).

    Returns:
        ``path``.

    Raises:
        InputError: see :func:`check_image_path`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITABLE_SUFFIXES:
        raise InputError(field, "a path ending in .npz, .h5, .hdf5, .tif or .tiff", path.name)
    data = as_mapping(images)
    with atomic_files(field=field, make_parents=True) as staging:
        tmp_path = staging.temp(path)
        if suffix == ".npz":
            arrays = {k: np.asarray(v) for k, v in data.items()}
            with open(tmp_path, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        elif suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(tmp_path, "w") as fh:
                for k, v in data.items():
                    fh.create_dataset(k, data=np.asarray(v) if not isinstance(v, str) else v)
        else:
            _write_tiff(data, path, tmp_path, staging)
    return path


def _write_tiff(data: dict, path: Path, tmp_path: Path, staging) -> None:
    """Strain-grid maps as pages of ``tmp_path``; scalars (and small truth arrays) in the sidecar, and a
    composition map on its own grid in a second TIFF, both staged in ``staging`` beside ``path``."""
    import tifffile

    shape = np.asarray(data["strain_xx"]).shape
    pages, channels, meta = [], [], {}
    comp = np.asarray(data["composition"])
    for key, value in data.items():
        arr = np.asarray(value)
        if key == "composition" and arr.shape != shape:
            continue
        if arr.shape == shape:
            pages.append(arr.astype(np.float32))
            channels.append(key)
        elif arr.ndim == 0:
            meta[key] = arr.item()
        elif key.startswith("truth_"):
            meta[key] = arr.tolist()
    meta["channels"] = channels
    if comp.shape != shape:
        comp_name = f"{path.stem}_composition.tif"
        tifffile.imwrite(staging.temp(path.parent / comp_name), comp.astype(np.float32))
        meta["composition_file"] = comp_name
    tifffile.imwrite(tmp_path, np.stack(pages))
    staging.temp(path.with_suffix(".json")).write_text(json.dumps(meta, indent=1))
