"""The slice-edge kernel (recipes.kernels.trace): numba against its numpy twin, and accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf
from scipy.stats import norm

from recipes.kernels.trace import edge_blur, edge_walk, find_edge, find_edge_reference


def integrated_step(x: np.ndarray, edge: float, sigma: float) -> np.ndarray:
    """Pixel-integrated Gaussian-blurred unit step rising at ``edge`` (pixels centred on x)."""

    def antiderivative(u: np.ndarray) -> np.ndarray:
        z = (u - edge) / sigma
        return (u - edge) * 0.5 * (1 + erf(z / np.sqrt(2))) + sigma * np.exp(-z * z / 2) / np.sqrt(2 * np.pi)

    return antiderivative(x + 0.5) - antiderivative(x - 0.5)


def slice_profile(x: np.ndarray, left: float, right: float, sigma: float, slope: float = 0.0) -> np.ndarray:
    """A slice plateau of level ~1000 between blurred edges, with a linear illumination slope."""
    return 1000.0 * (integrated_step(x, left, sigma) - integrated_step(x, right, sigma)) * (1 + slope * (x - left))


@pytest.mark.parametrize("sigma", [0.3, 0.6, 0.8, 1.0])
def test_edge_at_half_level_is_exact_for_symmetric_blur(sigma: float) -> None:
    rng = np.random.default_rng(3)
    x = np.arange(200.0)
    errors = []
    for left in rng.uniform(50, 51, 20):
        right = left + 75.3
        prof = slice_profile(x, left, right, sigma, slope=0.002)
        errors += [find_edge(prof, left + 0.7, True, 0.0, 8, 0.0) - left, find_edge(prof, right - 0.6, False, 0.0, 8, 0.0) - right]
    errors = np.array(errors)
    assert np.sqrt(np.mean(errors**2)) < 0.003
    assert np.abs(errors).max() < 0.01


def test_other_edge_fractions_follow_the_blur() -> None:
    x = np.arange(200.0)
    sigma, left, right = 0.9, 60.37, 135.81
    prof = slice_profile(x, left, right, sigma)
    for frac in (0.3, 0.7):
        z = norm.ppf(frac)
        # The intrinsic profile crosses `frac` at left + sigma*z (rising), right - sigma*z.
        assert find_edge(prof, left, True, z, 8, 0.0) == pytest.approx(left + sigma * z, abs=0.03)
        assert find_edge(prof, right, False, z, 8, 0.0) == pytest.approx(right - sigma * z, abs=0.03)


def test_narrow_slices_and_gaps_of_the_mini_profile() -> None:
    # 18.5 px slices with 3.5 px gaps and 0.6 px blur: the gap holds only the edge wings.
    x = np.arange(120.0)
    edges = [(10.3, 28.8), (32.3, 50.8), (54.35, 72.85)]
    prof = sum(slice_profile(x, lo, hi, 0.6, slope=0.003) for lo, hi in edges)
    for lo, hi in edges:
        for guess, rising, truth in ((lo + 0.4, True, lo), (hi - 0.3, False, hi)):
            npl = int(hi - lo) - 8
            assert find_edge(prof, guess, rising, 0.0, npl, 0.0) == pytest.approx(truth, abs=0.003)
            assert find_edge_reference(prof, guess, rising, 0.0, npl, 0.0) == pytest.approx(truth, abs=0.003)


def test_kernel_matches_numpy_reference() -> None:
    rng = np.random.default_rng(5)
    x = np.arange(150.0)
    for _ in range(40):
        left = rng.uniform(30, 40)
        right = left + rng.uniform(60, 80)
        prof = slice_profile(x, left, right, rng.uniform(0.4, 1.2), slope=rng.uniform(-0.004, 0.004))
        prof = prof + rng.normal(0, 5, x.size)
        z = rng.choice([0.0, -0.4, 0.6])
        npl = int(rng.choice([4, 8]))
        for guess, rising in ((left + rng.uniform(-1.5, 1.5), True), (right + rng.uniform(-1.5, 1.5), False)):
            fast = find_edge(prof, guess, rising, z, npl, 0.0)
            slow = find_edge_reference(prof, guess, rising, z, npl, 0.0)
            assert fast == pytest.approx(slow, abs=1e-6)


def test_missing_edge_gives_nan() -> None:
    prof = np.full(100, 500.0)
    assert np.isnan(find_edge(prof, 50.0, True, 0.0, 8, 0.0))
    assert np.isnan(find_edge_reference(prof, 50.0, True, 0.0, 8, 0.0))


def test_edge_walk_follows_tilted_slices() -> None:
    x = np.arange(300.0)
    ncut = 21
    shift = np.linspace(-4, 4, ncut)  # a slice tilted by 8 px over the cuts
    cuts = np.stack([slice_profile(x, 40.2 + s, 115.6 + s, 0.8) + slice_profile(x, 124.0 + s, 199.1 + s, 0.8) for s in shift])
    left, right = edge_walk(cuts, np.array([40.0, 124.0]), np.array([116.0, 199.0]), ncut // 2, 0.0, 0.0)
    assert np.allclose(left[:, 0], 40.2 + shift, atol=0.002)
    assert np.allclose(right[:, 1], 199.1 + shift, atol=0.002)
    # And each point is what the numpy reference finds from the same guess chain.
    for k in range(ncut):
        assert left[k, 1] == pytest.approx(find_edge_reference(cuts[k], left[k, 1], True, 0.0, 8, 0.0), abs=1e-6)


def test_flagged_pixel_on_the_edge_uses_the_typical_blur() -> None:
    x = np.arange(150.0)
    for left in (40.15, 40.5, 40.85):
        prof = slice_profile(x, left, left + 20.5, 0.6)
        prof[40] = np.nan  # a dead column right on the 50 % crossing
        fast = find_edge(prof, left + 0.3, True, 0.0, 8, 0.6)
        slow = find_edge_reference(prof, left + 0.3, True, 0.0, 8, 0.6)
        assert fast == pytest.approx(left, abs=0.01)
        assert fast == pytest.approx(slow, abs=1e-6)


@pytest.mark.parametrize("sigma", [0.5, 0.8, 1.1])
def test_edge_blur_measures_the_blur(sigma: float) -> None:
    x = np.arange(150.0)
    prof = slice_profile(x, 40.3, 115.7, sigma)
    assert edge_blur(prof, 40.0, True, 8) == pytest.approx(sigma, abs=0.01)
    assert edge_blur(prof, 116.0, False, 8) == pytest.approx(sigma, abs=0.01)
