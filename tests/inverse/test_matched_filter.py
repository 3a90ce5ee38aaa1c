"""The dislocation matched filter (inverse.dislocations.MatchedFilter), both paths: numpy/scipy FFTs (the
CPU's, device=None) and torch FFTs on a device (the calibration's GPU; here torch on the CPU), against its
definition summed directly in numpy: g_i(p) = Σ_r w(r) U_i(r − p)·R(r),
G_ij(p) = Σ_r w(r) U_i(r − p)·U_j(r − p), b̂ = G⁻¹g, Δχ² = gᵀG⁻¹g (components ε00, ε11, ε01), and against
each other."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from inverse.dislocations import MatchedFilter, edge_dislocation_strain
from inverse.images import crystal_rotation

COMPS = ([0, 1, 0], [0, 1, 1])


def _direct(mask, weight, pixel_nm, rotation, psf_px, residual):
    """Δχ² and b̂ by the direct sums over every pixel pair (O(N²); a 9 × 11 grid)."""
    h, w = mask.shape
    wm = np.where(mask, weight, 0.0)
    dy, dx = np.mgrid[-(h - 1):h, -(w - 1):w].astype(float)
    templates = []
    for i in range(2):
        u = edge_dislocation_strain(dy * pixel_nm, dx * pixel_nm, 1.0, rotation[i], core_nm=pixel_nm)
        u = u[..., COMPS[0], COMPS[1]]
        if psf_px > 0:
            u = ndimage.gaussian_filter(u, (psf_px, psf_px, 0), mode="constant")
        templates.append(u)  # templates[i][dr + h − 1, dc + w − 1] = U_i at offset (dr, dc) = r − p
    r = residual[..., COMPS[0], COMPS[1]]
    delta = np.zeros((h, w))
    burgers = np.zeros((h, w, 2))
    rows, cols = np.mgrid[0:h, 0:w]
    for p0 in range(h):
        for p1 in range(w):
            shifted = [t[rows - p0 + h - 1, cols - p1 + w - 1] for t in templates]  # U_i(r − p), (H, W, 3)
            g = np.array([np.sum(wm[..., None] * s * r) for s in shifted])
            gram = np.array([[np.sum(wm[..., None] * a * b) for b in shifted] for a in shifted])
            gram += 1e-12 * np.trace(gram) * np.eye(2) + 1e-300 * np.eye(2)
            b = np.linalg.solve(gram, g)
            burgers[p0, p1] = b
            delta[p0, p1] = g @ b if mask[p0, p1] else 0.0
    return delta, burgers


@pytest.mark.parametrize("psf_px", [0.0, 1.2])
def test_fft_filter_equals_the_direct_sums(psf_px):
    """1e-9 relative to the map's largest value: float64 FFT round-off on a 9 × 11 grid is ~1e-14;
    the tolerance only leaves room for the 2 × 2 inverse of a nearly singular G on a masked border."""
    rng = np.random.default_rng(3)
    h, w = 9, 11
    mask = np.ones((h, w), bool)
    mask[0, :3] = mask[-2:, -1] = False
    weight = rng.uniform(0.5, 2.0, (h, w)) * 1e6
    residual = rng.normal(scale=1e-3, size=(h, w, 2, 2))
    residual[..., 1, 0] = residual[..., 0, 1]
    rot = crystal_rotation(25.0)
    ref_delta, ref_burgers = _direct(mask, weight, 3.0, rot, psf_px, residual)
    maps = {device: MatchedFilter(mask, weight, 3.0, rot, psf_px=psf_px, device=device)(residual)
            for device in (None, "cpu")}
    for delta, burgers in maps.values():
        assert isinstance(delta, np.ndarray) and delta.shape == (h, w) and burgers.shape == (h, w, 2)
        np.testing.assert_allclose(delta, ref_delta, rtol=0, atol=1e-9 * np.abs(ref_delta).max())
        np.testing.assert_allclose(burgers[mask], ref_burgers[mask], rtol=0,
                                   atol=1e-9 * np.abs(ref_burgers[mask]).max())
    # the torch path against the numpy path: the same transforms, so float64 round-off apart
    (d_np, b_np), (d_torch, b_torch) = maps[None], maps["cpu"]
    np.testing.assert_allclose(d_torch, d_np, rtol=0, atol=1e-12 * np.abs(d_np).max())
    np.testing.assert_allclose(b_torch[mask], b_np[mask], rtol=0, atol=1e-12 * np.abs(b_np[mask]).max())


@pytest.mark.gpu
def test_cuda_filter_equals_the_cpu_filter():
    """Same inputs, the CUDA (torch) path against the CPU (numpy) path, float64 both: 1e-10 relative
    (cuFFT and scipy's FFT round differently)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    rng = np.random.default_rng(4)
    n = 48
    mask = np.zeros((n, n), bool)
    mask[5:44, 3:40] = True
    residual = rng.normal(scale=1e-3, size=(n, n, 2, 2))
    rot = crystal_rotation(-10.0)
    cpu = MatchedFilter(mask, np.full((n, n), 1e6), 5.0, rot, psf_px=1.5)(residual)
    gpu = MatchedFilter(mask, np.full((n, n), 1e6), 5.0, rot, psf_px=1.5, device="cuda")(residual)
    for a, b in zip(gpu, cpu, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10 * np.abs(b).max())
