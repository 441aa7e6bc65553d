"""recipes.kernels.binstats: the numba per-bin σ-clipped mean against its numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from recipes.kernels.binstats import clipped_bin_mean, clipped_bin_mean_reference


@pytest.mark.parametrize("sigma", [0.0, 3.0, 15.0])
def test_kernel_matches_reference(sigma):
    rng = np.random.default_rng(3)
    nbins = 57
    bins = rng.integers(0, nbins - 2, 20_000)  # the last two bins stay empty
    values = rng.normal(10.0, 1.0, bins.size)
    values[rng.integers(0, bins.size, 200)] += rng.uniform(20, 200, 200)  # cosmic rays
    values[bins == 5] = 4.0  # a constant bin: MAD 0, everything kept
    mean, keep = clipped_bin_mean(bins, values, nbins, sigma)
    ref_mean, ref_keep = clipped_bin_mean_reference(bins, values, nbins, sigma)
    np.testing.assert_array_equal(keep, ref_keep)
    np.testing.assert_array_equal(mean, ref_mean)  # same summation order: bit-identical
    assert np.isnan(mean[-2:]).all() and mean[5] == 4.0
    if sigma == 3.0:
        others = np.delete(mean[:-2], 5)
        assert (~keep).sum() >= 200 and np.all(np.abs(others - 10.0) < 0.2)


def test_even_and_odd_counts_and_empty_input():
    # bin 0: 1, 2, 3, 100 (median 2.5, MAD 1 → 100 rejected at 3σ); bin 1: 5, 6, 7
    bins = np.array([0, 0, 1, 0, 1, 0, 1])
    values = np.array([1.0, 2.0, 5.0, 3.0, 6.0, 100.0, 7.0])
    mean, keep = clipped_bin_mean(bins, values, 2, 3.0)
    np.testing.assert_allclose(mean, [2.0, 6.0])
    assert keep.tolist() == [True, True, True, True, True, False, True]
    mean, keep = clipped_bin_mean(np.zeros(0, int), np.zeros(0), 3, 3.0)
    assert np.isnan(mean).all() and keep.size == 0
