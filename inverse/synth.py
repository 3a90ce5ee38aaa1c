"""Synthetic correlative image sets with known ground truth (``chemoscreen synth``).

A free-standing platelet is rendered on a fine grid (``oversample`` sub-pixels per image pixel) from an
analytic shape and composition field X(r): two phases (X ≈ 0.03 and 0.97) separated by curved, diffuse
phase boundaries, plus solid-solution patches with graded intermediate X. The eigenstrain
ε⁰(X) = diag(f_a(X), f_c(X)) (crystal frame; Vegard, bowed or a table) is converted to total strain by the
finite-element free-platelet model (:mod:`mechanics.elasticity.platelet`, generalized plane stress, LFP
stiffness; or,
with ``stiffness_ratio``, the composition-dependent stiffness of :mod:`inverse.stiffness`) on the fine
grid. Added to it: the Volterra strain of edge dislocations sitting on phase boundaries (isotropic,
infinite body, Hirth & Lothe, *Theory of Dislocations* (1982) eq. 3-43, core-regularised), a uniform
strain-reference offset, a Gaussian PSF per modality, area averaging onto the image pixels, a
registration offset of the composition map, and Gaussian noise. The covered area fraction of every strain
pixel is written as ``coverage`` (the particle's sub-pixel outline). Everything the fit must recover is
stored under ``truth_*``.

The strain reference is treated to first order (infinitesimal strain, as everywhere in chemoscreen):
"MPO4" adds nothing, "LiMPO4" adds −ε⁰(1), "unknown" adds ``strain_offset``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from inverse.dislocations import edge_dislocation_strain
from inverse.forward import eigenstrain_grid, lfp_material, platelet_solver
from inverse.images import ImageSet, crystal_rotation, crystal_to_grid
from inverse.settings import SHAPES, SynthSettings, with_overrides
from mechanics.errors import InputError


# -- laws -----------------------------------------------------------------------------------------------
def law_table(law, misfit_ac: tuple[float, float],
              bow_ac: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Samples (X (n,), ε⁰ (n, 2) for a, c) of a law given as "vegard", "bowed", a file or a mapping.

    Vegard: f_i = X·ε_i(1). Bowed: f_i = X·ε_i(1) + b_i·X(1 − X). A table (JSON ``{"X", "a", "c"}`` or a
    CSV with header ``X,a,c``) is interpolated linearly and must start at X = 0 with ε⁰ = 0.
    """
    x = np.linspace(0.0, 1.0, 101)
    m = np.asarray(misfit_ac, float)
    if isinstance(law, str) and law == "vegard":
        return x, x[:, None] * m
    if isinstance(law, str) and law == "bowed":
        return x, x[:, None] * m + np.asarray(bow_ac, float) * (x * (1 - x))[:, None]
    if isinstance(law, (str, Path)):
        path = Path(law)
        if not path.is_file():
            raise InputError("law", "'vegard', 'bowed' or an existing JSON/CSV table", str(law))
        if path.suffix.lower() == ".json":
            try:
                law = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise InputError("law", "a JSON table {X, a, c}", str(exc)) from exc
        else:
            try:
                arr = np.genfromtxt(path, delimiter=",", names=True)
                law = {k: arr[k] for k in arr.dtype.names}
            except (ValueError, TypeError) as exc:
                raise InputError("law", "a CSV table with header X,a,c", str(exc)) from exc
    if not isinstance(law, dict) or not {"X", "a", "c"} <= set(law):
        raise InputError("law", "'vegard', 'bowed' or a table with keys X, a, c", law)
    tx = np.asarray(law["X"], float)
    ta, tc = np.asarray(law["a"], float), np.asarray(law["c"], float)
    if tx.ndim != 1 or tx.size < 2 or ta.shape != tx.shape or tc.shape != tx.shape:
        raise InputError("law", "X, a, c of equal length >= 2", (tx.shape, ta.shape, tc.shape))
    if not (np.all(np.isfinite(tx)) and np.all(np.isfinite(ta)) and np.all(np.isfinite(tc))):
        raise InputError("law", "finite numbers in X, a and c (the table has NaN or inf)",
                         {"X": tx.tolist(), "a": ta.tolist(), "c": tc.tolist()})
    if np.any(np.diff(tx) <= 0) or tx[0] != 0.0 or tx[-1] != 1.0:
        raise InputError("law.X", "strictly ascending from 0 to 1", tx.tolist())
    if ta[0] != 0.0 or tc[0] != 0.0:
        raise InputError("law", "ε⁰(0) = 0 (strain measured from the delithiated lattice)", (ta[0], tc[0]))
    return x, np.stack([np.interp(x, tx, ta), np.interp(x, tx, tc)], -1)


# -- geometry and composition (analytic, in nm) ----------------------------------------------------------
def _inside(shape: str, y: np.ndarray, x: np.ndarray, length: float, angle_deg: float) -> np.ndarray:
    t = np.deg2rad(angle_deg)
    u = (x - length / 2) * np.cos(t) + (y - length / 2) * np.sin(t)  # along crystal a
    v = -(x - length / 2) * np.sin(t) + (y - length / 2) * np.cos(t)  # along crystal c
    if shape == "disc":
        return np.hypot(u, v) < 0.42 * length
    if shape == "ellipse":  # platelets of LFP are elongated along c
        return (u / (0.30 * length)) ** 2 + (v / (0.42 * length)) ** 2 < 1
    if shape == "hexagon":
        r = 0.42 * length
        ok = np.ones_like(u, dtype=bool)
        for k in range(6):
            phi = np.pi / 6 + k * np.pi / 3
            ok &= u * np.cos(phi) + v * np.sin(phi) < r * np.cos(np.pi / 6) * (0.8 if k % 3 == 0 else 1.0)
        return ok
    raise InputError("shape", f"one of {SHAPES}", shape)


class _Composition:
    """X(y, x) in nm coordinates: curved diffuse phase boundaries plus graded solid-solution patches."""

    def __init__(self, rng: np.random.Generator, length: float, width_nm: float) -> None:
        self.length = length
        self.width = width_nm
        angle = rng.uniform(0, 2 * np.pi)
        self.centre = length / 2 + 0.55 * length * np.array([np.sin(angle), np.cos(angle)])
        self.radius = 0.5 * length * rng.uniform(0.8, 1.0)
        self.k = rng.normal(size=(3, 2)) * 2 * np.pi / length * 1.5
        self.phase = rng.uniform(0, 2 * np.pi, 3)
        self.amp = 0.06 * length
        self.patch_centres = length / 2 + rng.uniform(-0.22, 0.22, size=(2, 2)) * length
        self.patch_size = 0.11 * length
        self.grad_dir = rng.normal(size=(2, 2))
        self.grad_dir /= np.linalg.norm(self.grad_dir, axis=1, keepdims=True)

    def level(self, y, x):
        r = np.hypot(y - self.centre[0], x - self.centre[1]) - self.radius
        wobble = sum(
            self.amp * np.sin(self.k[m, 0] * y + self.k[m, 1] * x + self.phase[m]) for m in range(3)
        )
        return r + wobble

    def two_phase(self, y, x):
        return 0.03 + 0.94 * 0.5 * (1 + np.tanh(self.level(y, x) / self.width))

    def __call__(self, y, x):
        x2 = self.two_phase(y, x)
        weight = np.zeros_like(y)
        graded = np.zeros_like(y)
        for c, g in zip(self.patch_centres, self.grad_dir):
            d2 = ((y - c[0]) ** 2 + (x - c[1]) ** 2) / (2 * self.patch_size**2)
            w = np.exp(-d2)
            along = ((y - c[0]) * g[0] + (x - c[1]) * g[1]) / (2.2 * self.patch_size)
            weight += w
            graded += w * (0.5 + 0.42 * np.tanh(along))
        blend = np.clip(1.4 * weight, 0, 1)
        ss = graded / np.maximum(weight, 1e-12)
        return (1 - blend) * x2 + blend * ss


def _blur(field: np.ndarray, mask: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian PSF restricted to the particle (normalised convolution), field (H, W, ...)."""
    from scipy import ndimage

    if sigma_px <= 0:
        return field
    sig = (sigma_px, sigma_px) + (0,) * (field.ndim - 2)
    m = mask.reshape(mask.shape + (1,) * (field.ndim - 2)).astype(float)
    num = ndimage.gaussian_filter(np.where(m > 0, field, 0.0), sig)
    den = ndimage.gaussian_filter(np.broadcast_to(m, field.shape).astype(float), sig)
    return np.where(m > 0, num / np.maximum(den, 1e-12), 0.0)


def _block_mean(field: np.ndarray, mask: np.ndarray, k: int):
    """Area average of in-mask sub-pixels over k×k blocks; returns (mean, coverage fraction)."""
    h, w = mask.shape[0] // k, mask.shape[1] // k
    m = mask[: h * k, : w * k].reshape(h, k, w, k).astype(float)
    f = field[: h * k, : w * k].reshape(h, k, w, k, *field.shape[2:])
    mm = m.reshape(m.shape + (1,) * (field.ndim - 2))
    cover = m.mean(axis=(1, 3))
    total = (f * mm).sum(axis=(1, 3))
    denom = np.maximum(m.sum(axis=(1, 3)), 1e-12).reshape(h, w, *(1,) * (field.ndim - 2))
    return total / denom, cover


def synthesize(settings: SynthSettings | None = None, **overrides) -> ImageSet:
    """A synthetic LFP platelet image set with known truth (see the module docstring).

    Args:
        settings: what to render (:class:`~inverse.settings.SynthSettings`); None: the defaults.
        **overrides: fields of ``SynthSettings`` to replace in ``settings``, a shorthand for
            ``synthesize(SynthSettings(seed=3))``; validated by the dataclass.

    Returns:
        The :class:`~inverse.images.ImageSet`, with the ground truth under ``truth``.

    Raises:
        InputError: a bad setting or law table.
        TypeError: an override that is not a settings field.
    """
    s = with_overrides(SynthSettings, settings, overrides, "synthesize")
    size_px, pixel_size_nm, oversample = s.size_px, s.pixel_size_nm, s.oversample
    crystal_angle_deg, stiffness_ratio = s.crystal_angle_deg, s.stiffness_ratio
    material = s.material or lfp_material()
    misfit = material.misfit
    x_law, f_law = law_table(s.law, (misfit[0], misfit[2]), s.bow_ac)
    rng = np.random.default_rng(s.seed)
    length = size_px * pixel_size_nm
    width_nm = 1.5 * pixel_size_nm if s.boundary_width_nm is None else s.boundary_width_nm
    comp_field = _Composition(rng, length, width_nm)

    # strain modality on the fine grid
    n_f, h_f = size_px * oversample, pixel_size_nm / oversample
    yf, xf = (np.mgrid[:n_f, :n_f] + 0.5) * h_f
    mask_f = _inside(s.shape, yf, xf, length, crystal_angle_deg)
    x_f = np.where(mask_f, comp_field(yf, xf), 0.0)
    f_f = np.stack([np.interp(x_f, x_law, f_law[:, i]) for i in range(2)], -1)
    eig_f = eigenstrain_grid(f_f, crystal_angle_deg)[None]
    if stiffness_ratio is None:
        solver = platelet_solver(mask_f, crystal_angle_deg, h_f, material.stiffness_voigt())
        strain_f = solver.apply(eig_f)[0]
    else:  # C(X) = X·C_LFP + (1 − X)·r·C_FP (inverse.stiffness), matrix-free solver with two materials
        from inverse.joint import single_thread
        from inverse.stiffness import contrast_stiffness, contrast_weights
        from mechanics.elasticity import PlateletPCG

        pcg = PlateletPCG(mask_f, contrast_stiffness(crystal_angle_deg, "stress", material.stiffness_voigt()),
                          h_f, weights=contrast_weights(x_f, float(stiffness_ratio)), rtol=1e-10)
        with single_thread():
            strain_f = pcg.apply(eig_f)[0]

    # dislocations on phase boundaries, away from the rim and from each other
    from scipy import ndimage

    rot = crystal_rotation(crystal_angle_deg)
    inner = ndimage.binary_erosion(mask_f, iterations=4 * oversample)
    boundary = inner & (np.abs(comp_field.two_phase(yf, xf) - 0.5) < 0.2) & (np.abs(x_f - 0.5) < 0.3)
    cand = np.argwhere(boundary)
    rng.shuffle(cand)
    chosen: list[np.ndarray] = []
    for p in cand:
        if len(chosen) == s.n_dislocations:
            break
        if all(np.hypot(*(p - q)) > 10 * oversample for q in chosen):
            chosen.append(p)
    disl_strain = np.zeros_like(strain_f)
    records = []
    for p in chosen:
        axis = int(rng.integers(2))
        sign = rng.choice([-1.0, 1.0])
        centre = (p + 1.0) * h_f  # a fine-pixel corner
        disl_strain += edge_dislocation_strain(
            yf - centre[0], xf - centre[1], s.burgers_nm, sign * rot[axis], core_nm=h_f
        )
        angle = crystal_angle_deg + (0.0 if axis == 0 else 90.0) + (0.0 if sign > 0 else 180.0)
        records.append([centre[0] / pixel_size_nm - 0.5, centre[1] / pixel_size_nm - 0.5, angle,
                        s.burgers_nm])
    disl_strain *= mask_f[..., None, None]

    if s.strain_reference == "unknown":
        off = np.asarray(s.strain_offset, float)
        off_cr = np.array([[off[0], off[2]], [off[2], off[1]]])
    elif s.strain_reference == "LiMPO4":
        off_cr = -np.diag(f_law[-1])
    else:
        off_cr = np.zeros((2, 2))
    off_grid = crystal_to_grid(off_cr, crystal_angle_deg)

    total_f = _blur(strain_f + disl_strain, mask_f, s.strain_psf_nm / h_f)
    strain_c, cover = _block_mean(total_f, mask_f, oversample)
    mask_c = cover >= 0.5
    clean_c, _ = _block_mean(strain_f, mask_f, oversample)
    resid_c, _ = _block_mean(disl_strain, mask_f, oversample)
    noise = rng.normal(scale=s.strain_sigma, size=(size_px, size_px, 3))
    measured = strain_c + off_grid
    nan = np.where(mask_c, 1.0, np.nan)
    exx = (measured[..., 1, 1] + noise[..., 0]) * nan
    eyy = (measured[..., 0, 0] + noise[..., 1]) * nan
    exy = (measured[..., 0, 1] + noise[..., 2]) * nan

    # composition modality on its own grid, displaced by the registration offset
    p_c = s.composition_pixel_size_nm or pixel_size_nm
    n_c = int(round(length / p_c))
    k = max(oversample, 2)
    yc, xc = (np.mgrid[: n_c * k, : n_c * k] + 0.5) * (p_c / k)
    yc, xc = yc + s.registration_offset_nm[0], xc + s.registration_offset_nm[1]
    mask_cf = _inside(s.shape, yc, xc, length, crystal_angle_deg)
    comp_cf = _blur(np.where(mask_cf, comp_field(yc, xc), 0.0), mask_cf, s.composition_psf_nm / (p_c / k))
    comp_c, cover_c = _block_mean(comp_cf, mask_cf, k)
    noisy = comp_c + rng.normal(scale=s.composition_sigma, size=comp_c.shape)
    comp_obs = np.where(cover_c >= 0.5, noisy, np.nan)

    # truth: composition on the strain grid without blur, noise or offset
    truth_x, _ = _block_mean(x_f, mask_f, oversample)
    truth = {
        "truth_law_X": x_law,
        "truth_law_a": f_law[:, 0],
        "truth_law_c": f_law[:, 1],
        "truth_composition": np.where(mask_c, truth_x, np.nan),
        "truth_strain_xx": clean_c[..., 1, 1] * nan,
        "truth_strain_yy": clean_c[..., 0, 0] * nan,
        "truth_strain_xy": clean_c[..., 0, 1] * nan,
        "truth_residual_xx": resid_c[..., 1, 1] * nan,
        "truth_residual_yy": resid_c[..., 0, 0] * nan,
        "truth_residual_xy": resid_c[..., 0, 1] * nan,
        "truth_dislocations": np.asarray(records, float).reshape(-1, 4),  # row_px, col_px, b angle, b nm
        "truth_strain_offset": np.array([off_cr[0, 0], off_cr[1, 1], off_cr[0, 1]]),
        "truth_shift_px": np.asarray(s.registration_offset_nm, float) / p_c * (p_c / pixel_size_nm),
    }
    if stiffness_ratio is not None:
        truth["truth_stiffness_ratio"] = np.float64(stiffness_ratio)
    return ImageSet(
        composition=comp_obs,
        strain_xx=exx,
        strain_yy=eyy,
        strain_xy=exy,
        mask=mask_c,
        pixel_size_nm=float(pixel_size_nm),
        crystal_angle_deg=float(crystal_angle_deg),
        composition_pixel_size_nm=None if s.composition_pixel_size_nm is None else float(p_c),
        composition_sigma=s.composition_sigma * s.declared_noise_factor,
        strain_sigma=s.strain_sigma * s.declared_noise_factor,
        strain_reference=s.strain_reference,
        coverage=np.where(cover > 0, cover, 0.0) if s.coverage else None,
        truth=truth,
    )
