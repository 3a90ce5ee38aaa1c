"""Point-spread functions of the two imaging modalities, as linear operators on masked maps.

A scanning probe (4D-STEM for strain, the focused X-ray beam of spectro-ptychography for X) reports at
each position the probe-weighted mean over the crystal it illuminates; outside the particle nothing
diffracts or absorbs at the Li edge, so the weights are renormalised over the particle:

    B_σ[f](r) = Σ_r' G_σ(r − r') m(r') f(r') / Σ_r' G_σ(r − r') m(r'),

a Gaussian of standard deviation σ (nm) restricted to the mask m (normalised convolution; Knutsson &
Westin, CVPR 1993). B_σ is linear and maps a uniform field to itself, so a uniform strain offset passes
unchanged and the calibration's design columns are simply blurred. It is implemented with torch FFTs
(the sampled Gaussian truncated at 4σ, zero padding, so the convolution is linear, not circular), so
that it runs on the device of the platelet solves and autograd differentiates through it in the joint
estimation of X.
"""

from __future__ import annotations

import numpy as np
import torch

from mechanics.errors import InputError
from mechanics.grid import next_fast_size


class MaskedGaussian:
    """B_σ on an (H, W) mask; ``sigma_px`` in pixels (0: identity on the mask).

    ``__call__`` takes a torch tensor (..., H, W) (any leading shape) and returns the blurred field,
    zero outside the mask; :meth:`apply_numpy` does the same for numpy arrays (H, W, ...) whose trailing
    axes are components (the layout of the calibration's strain maps).
    """

    def __init__(self, mask: np.ndarray, sigma_px: float, *, device=None, dtype=torch.float64) -> None:
        if not np.isfinite(sigma_px) or sigma_px < 0:
            raise InputError("psf sigma", "a Gaussian standard deviation >= 0 nm", sigma_px)
        self.sigma_px = float(sigma_px)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.mask = torch.as_tensor(np.asarray(mask, dtype=bool), device=self.device)
        m = self.mask.to(dtype)
        if self.sigma_px > 0:
            radius = max(1, int(4.0 * self.sigma_px + 0.5))  # scipy.ndimage's truncation at 4σ
            h, w = self.mask.shape
            # FFT size: field + kernel support, so the cyclic convolution equals the linear one
            self._fft_shape = (next_fast_size(h + 2 * radius), next_fast_size(w + 2 * radius))
            t = np.arange(-radius, radius + 1)
            g = np.exp(-0.5 * (t / self.sigma_px) ** 2)
            g /= g.sum()
            kernel = np.zeros(self._fft_shape)
            idx0, idx1 = t % self._fft_shape[0], t % self._fft_shape[1]
            kernel[np.ix_(idx0, idx1)] = np.outer(g, g)  # centred at (0, 0), wrapped
            self._kernel_hat = torch.fft.rfft2(torch.as_tensor(kernel, dtype=dtype, device=self.device))
            self._den = self._convolve(m[None])[0]
        self._m = m

    def _convolve(self, f: torch.Tensor) -> torch.Tensor:
        """Gaussian of f (N, H, W), zero padding (linear convolution through a padded FFT)."""
        h, w = f.shape[-2:]
        spec = torch.fft.rfft2(f, s=self._fft_shape) * self._kernel_hat
        return torch.fft.irfft2(spec, s=self._fft_shape)[..., :h, :w]

    def __call__(self, field: torch.Tensor) -> torch.Tensor:
        f = field.to(device=self.device, dtype=self.dtype)
        if self.sigma_px == 0:
            return f * self._m
        lead = f.shape[:-2]
        flat = (f * self._m).reshape(-1, *f.shape[-2:])
        out = self._convolve(flat) / torch.clamp(self._den, min=1e-12)
        return (out * self._m).reshape(*lead, *f.shape[-2:])

    def apply_numpy(self, field: np.ndarray, spatial_axes: tuple[int, int] = (0, 1)) -> np.ndarray:
        """B_σ of a numpy field whose spatial axes are ``spatial_axes`` (others are batch/components)."""
        arr = np.moveaxis(np.asarray(field, dtype=float), spatial_axes, (-2, -1))
        out = self(torch.as_tensor(np.ascontiguousarray(arr))).cpu().double().numpy()
        return np.moveaxis(out, (-2, -1), spatial_axes)


def psf_pixels(sigma_nm: float | None, pixel_nm: float, field: str) -> float:
    """σ in pixels of a PSF given in nm (None or 0: no blur), validated with the option's name."""
    if sigma_nm is None:
        return 0.0
    try:
        value = float(sigma_nm)
    except (TypeError, ValueError) as err:
        raise InputError(field, "a Gaussian PSF standard deviation >= 0 in nm", sigma_nm) from err
    if not np.isfinite(value) or value < 0:
        raise InputError(field, "a Gaussian PSF standard deviation >= 0 in nm", sigma_nm)
    return value / pixel_nm
