"""Edge dislocations in the image plane: their Volterra strain field, and fitting it to residuals.

A misfit dislocation at a phase boundary of a platelet imaged along [010] has its line along b (the
zone axis) and its Burgers vector in the a-c plane. Its strain (infinite isotropic body, plane strain,
Hirth & Lothe, *Theory of Dislocations* (1982) eq. 3-43) is linear in the Burgers vector, so near a
residual hot spot the calibration can fit (b_a, b_c) as nuisance parameters and keep the law from
absorbing the long-range 1/r tail.
"""

from __future__ import annotations

import numpy as np


def edge_dislocation_strain(dy, dx, burgers_nm, unit, nu=0.3, core_nm=1.0):
    """Volterra strain (grid frame, (..., 2, 2)) of an edge dislocation with Burgers vector b·unit.

    Local frame x' ∥ b, y' ⟂ b in plane; plane-strain isotropic stresses (Hirth & Lothe eq. 3-43)
    σ_xx = −D y(3x²+y²)/ρ⁴, σ_yy = D y(x²−y²)/ρ⁴, σ_xy = D x(x²−y²)/ρ⁴, D = μb/(2π(1−ν)), ρ² = r² + r₀²;
    strains ε = [(1−ν)σ − ν tr σ ...]/(2μ), so μ cancels.
    """
    perp = np.array([-unit[1], unit[0]])
    x = dy * unit[0] + dx * unit[1]
    y = dy * perp[0] + dx * perp[1]
    rho4 = (x * x + y * y + core_nm**2) ** 2
    pref = burgers_nm / (2 * np.pi * (1 - nu)) / 2.0  # D / (2μ)
    sxx = -pref * y * (3 * x * x + y * y) / rho4
    syy = pref * y * (x * x - y * y) / rho4
    sxy = pref * x * (x * x - y * y) / rho4
    exx = (1 - nu) * sxx - nu * syy
    eyy = (1 - nu) * syy - nu * sxx
    u, v = unit, perp  # local axes in grid coordinates: ε_grid = Qᵀ ε_local Q, Q = [u; v]
    e00 = u[0] * u[0] * exx + 2 * u[0] * v[0] * sxy + v[0] * v[0] * eyy
    e11 = u[1] * u[1] * exx + 2 * u[1] * v[1] * sxy + v[1] * v[1] * eyy
    e01 = u[0] * u[1] * exx + (u[0] * v[1] + u[1] * v[0]) * sxy + v[0] * v[1] * eyy
    return np.stack([np.stack([e00, e01], -1), np.stack([e01, e11], -1)], -2)


def unit_fields(shape: tuple[int, int], position_px: tuple[float, float], pixel_nm: float,
                rotation: np.ndarray, core_px: float = 1.0, mask: np.ndarray | None = None) -> np.ndarray:
    """Strain (2, H, W, 2, 2) of unit (1 nm) Burgers vectors along crystal a and c (rows of
    ``rotation``, grid coordinates) for a dislocation at ``position_px`` (row, col; pixel centres at
    integers). With ``mask`` (H, W) only its pixels are computed; the rest is zero."""
    if mask is None:
        mask = np.ones(shape, dtype=bool)
    rows, cols = np.nonzero(mask)
    dy = (rows - position_px[0]) * pixel_nm
    dx = (cols - position_px[1]) * pixel_nm
    out = np.zeros((2, *shape, 2, 2))
    for i in range(2):
        out[i, rows, cols] = edge_dislocation_strain(dy, dx, 1.0, rotation[i], core_nm=core_px * pixel_nm)
    return out


def refine_position(residual: np.ndarray, mask: np.ndarray, peak: tuple[int, int], pixel_nm: float,
                    rotation: np.ndarray, radius_px: float = 6.0, step_px: float = 0.5,
                    psf_px: float = 0.0, search_px: float | None = None) -> dict:
    """Best sub-pixel position and Burgers vector (b_a, b_c) in nm of one dislocation near ``peak``.

    Least squares of the residual (H, W, 2, 2) within ``radius_px`` of each trial position on unit
    fields blurred by the strain PSF (Gaussian σ = ``psf_px``, normalised on the mask), the core pixel
    (within 1 px) left out. The edge-dislocation strain is odd about the core, so a PSF wider than a
    pixel leaves the core near zero and puts the residual's peaks on the lobes, up to about 2σ away:
    the trial positions cover ±``search_px`` (default max(1, 2σ): a peak of the residual's norm) px,
    first on a 1 px grid, then on a ``step_px`` grid ±1 px around the best. A peak of
    :class:`MatchedFilter` sits on the core to within its 1 px grid and its unmasked templates: the
    calibration refines those with ``search_px=2``.
    """
    r0, c0 = int(peak[0]), int(peak[1])
    search = max(1.0, 2.0 * psf_px) if search_px is None else max(1.0, float(search_px))
    margin = int(np.ceil(3.0 * psf_px)) if psf_px > 0 else 0
    half = int(np.ceil(search + radius_px)) + 2 + margin
    sl = (slice(max(r0 - half, 0), min(r0 + half + 1, mask.shape[0])),
          slice(max(c0 - half, 0), min(c0 + half + 1, mask.shape[1])))
    rows, cols = np.mgrid[sl]
    local_mask, local_res = mask[sl], residual[sl]
    m = local_mask.astype(float)
    if psf_px > 0:
        from scipy import ndimage

        sig = (psf_px, psf_px, 0, 0)
        den = np.maximum(ndimage.gaussian_filter(m, psf_px, mode="constant"), 1e-12)[..., None, None]

        def blur(f):
            return ndimage.gaussian_filter(f * m[..., None, None], sig, mode="constant") / den
    else:
        def blur(f):
            return f

    def trial(pos):
        dist = np.hypot(rows - pos[0], cols - pos[1])
        use = local_mask & (dist <= radius_px) & (dist > 1.0)
        if use.sum() < 8:
            return None
        dy, dx = (rows - pos[0]) * pixel_nm, (cols - pos[1]) * pixel_nm
        fields = [blur(edge_dislocation_strain(dy, dx, 1.0, rotation[i], core_nm=pixel_nm))[use]
                  for i in range(2)]
        a = np.stack([f[:, [0, 1, 0], [0, 1, 1]].ravel() for f in fields], -1)
        y = local_res[use][:, [0, 1, 0], [0, 1, 1]].ravel()
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        return {"row": float(pos[0]), "col": float(pos[1]), "burgers_a_nm": float(coef[0]),
                "burgers_c_nm": float(coef[1]), "rss": float(np.sum((y - a @ coef) ** 2))}

    def best_of(centre, offsets):
        best = None
        for oy in offsets:
            for ox in offsets:
                out = trial((centre[0] + oy, centre[1] + ox))
                if out is not None and (best is None or out["rss"] < best["rss"]):
                    best = out
        return best

    centre = (float(peak[0]), float(peak[1]))
    if search > 1.0:  # coarse pass over the lobe distance
        coarse = best_of(centre, np.arange(-np.floor(search), np.floor(search) + 1e-9, 1.0))
        if coarse is not None:
            centre = (coarse["row"], coarse["col"])
    best = best_of(centre, np.arange(-1.0, 1.0 + 1e-9, step_px))
    return best or {"row": float(peak[0]), "col": float(peak[1]), "burgers_a_nm": 0.0,
                    "burgers_c_nm": 0.0, "rss": 0.0}


class MatchedFilter:
    """Δχ² (H, W) of adding one edge dislocation at each pixel to a residual, and its Burgers vector
    (H, W, 2) in nm: the generalised likelihood-ratio map of a dislocation with unknown (b_a, b_c).

    With unit fields U_i (i = a, c; blurred by the PSF, infinite body) and per-pixel weights w (1/σ²,
    0 off the mask), g_i(p) = Σ_r w(r) U_i(r − p)·R(r) and G_ij(p) = Σ_r w(r) U_i(r − p)·U_j(r − p)
    (components ε00, ε11, ε01) are cross-correlations, computed with FFTs; then b̂ = G⁻¹g and
    Δχ² = gᵀG⁻¹g, which is χ²(2) under noise alone. The template spectra and G⁻¹ depend only on the
    mask, the weights, the pixel, the crystal angle and the PSF: built once, each residual then costs
    three forward and two inverse FFTs.

    ``device``: None computes with numpy and scipy's FFTs (the CPU path); a torch device (the particle
    solver's GPU) moves the spectra and G⁻¹ there once, and each residual is filtered in torch (float64)
    on it, only the two maps coming back to the host for the peak search. Both give the same maps to
    float64 round-off (tested).
    """

    _COMPS = ([0, 1, 0], [0, 1, 1])

    def __init__(self, mask: np.ndarray, weight: np.ndarray, pixel_nm: float, rotation: np.ndarray,
                 psf_px: float = 0.0, device=None) -> None:
        from scipy import ndimage
        from scipy.fft import next_fast_len, rfft2

        self.mask = np.asarray(mask, dtype=bool)
        h, w = self.mask.shape
        self._shape = (next_fast_len(3 * h - 2), next_fast_len(3 * w - 2))
        self._wm = np.where(self.mask, weight, 0.0)
        dy, dx = np.mgrid[-(h - 1):h, -(w - 1):w].astype(float)
        templates = []
        for i in range(2):
            u = edge_dislocation_strain(dy * pixel_nm, dx * pixel_nm, 1.0, rotation[i], core_nm=pixel_nm)
            u = u[..., self._COMPS[0], self._COMPS[1]]  # (2H−1, 2W−1, 3)
            if psf_px > 0:
                u = ndimage.gaussian_filter(u, (psf_px, psf_px, 0), mode="constant")
            templates.append(u)
        # spectra of the flipped templates: a product with a field's spectrum is a cross-correlation
        self._spectra = [rfft2(t[::-1, ::-1], self._shape, axes=(0, 1), workers=-1) for t in templates]
        gram = np.empty((h, w, 2, 2))
        for i in range(2):
            for j in range(i, 2):
                gram[..., i, j] = gram[..., j, i] = self._correlate(
                    rfft2(self._wm, self._shape, workers=-1),
                    rfft2(np.sum(templates[i] * templates[j], axis=-1)[::-1, ::-1], self._shape, workers=-1))
        gram += 1e-12 * np.trace(gram, axis1=-2, axis2=-1)[..., None, None] * np.eye(2) + 1e-300 * np.eye(2)
        self._gram_inv = np.linalg.inv(gram)
        self._on_device = None if device is None else self._to_device(device)

    def _to_device(self, device) -> dict:
        """The filter's constants as torch tensors on ``device``, components first (contiguous planes)."""
        import torch

        kw = {"device": torch.device(device)}
        return {"spectra": [torch.as_tensor(np.ascontiguousarray(np.moveaxis(s, -1, 0)), **kw)
                            for s in self._spectra],
                "gram_inv": torch.as_tensor(self._gram_inv, **kw),
                "wm": torch.as_tensor(self._wm, **kw),
                "mask": torch.as_tensor(self.mask, **kw)}

    def _correlate(self, field_hat, template_hat) -> np.ndarray:
        """Σ_r field(r) template(r − p) for every pixel p, from the two spectra."""
        from scipy.fft import irfft2

        h, w = self.mask.shape
        return irfft2(field_hat * template_hat, self._shape, workers=-1)[h - 1:2 * h - 1, w - 1:2 * w - 1]

    def __call__(self, residual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Δχ² (H, W), b̂ (H, W, 2) in nm) for a residual (H, W, 2, 2) in the grid frame."""
        from scipy.fft import rfft2

        if self._on_device is not None:
            return self._filter_on_device(residual)
        r = residual[..., self._COMPS[0], self._COMPS[1]] * self._wm[..., None]  # (H, W, 3)
        r_hat = rfft2(r, self._shape, axes=(0, 1), workers=-1)
        g = np.stack([self._correlate(np.sum(r_hat * spec, axis=-1), 1.0) for spec in self._spectra], -1)
        b = np.einsum("hwij,hwj->hwi", self._gram_inv, g)
        delta = np.einsum("hwi,hwi->hw", g, b)
        return np.where(self.mask, delta, 0.0), b

    def _filter_on_device(self, residual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`__call__` in torch on the device: the same transforms over (3, H', W') planes."""
        import torch

        const = self._on_device
        h, w = self.mask.shape
        planes = np.moveaxis(residual[..., self._COMPS[0], self._COMPS[1]], -1, 0)  # (3, H, W)
        r = torch.as_tensor(np.ascontiguousarray(planes), device=const["wm"].device) * const["wm"]
        r_hat = torch.fft.rfft2(r, s=self._shape)
        g = torch.stack([torch.fft.irfft2(torch.sum(r_hat * spec, dim=0), s=self._shape)[h - 1:2 * h - 1,
                                                                                        w - 1:2 * w - 1]
                         for spec in const["spectra"]], -1)
        b = torch.einsum("hwij,hwj->hwi", const["gram_inv"], g)
        delta = torch.where(const["mask"], torch.einsum("hwi,hwi->hw", g, b), 0.0)
        return delta.cpu().numpy(), b.cpu().numpy()
