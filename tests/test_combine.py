"""The numba combination kernel against its numpy twin, and its statistics."""

import numpy as np
import pytest

from recipes.kernels.combine import METHODS, combine, combine_reference


def _stack(rng, n=9, ny=23, nx=31, masked=0.1, outliers=0.05):
    data = rng.normal(100.0, 2.0, size=(n, ny, nx)).astype(np.float32)
    hit = rng.random(data.shape) < outliers
    data[hit] += rng.choice([-1.0, 1.0], size=hit.sum()).astype(np.float32) * rng.uniform(30, 300, hit.sum()).astype(np.float32)
    stat = rng.uniform(3.0, 5.0, size=data.shape).astype(np.float32)
    dq = np.where(rng.random(data.shape) < masked, 1 << rng.integers(0, 20, size=data.shape), 0).astype(np.int32)
    dq[:, 0, :5] = 4  # some pixels flagged in every input
    return data, dq, stat


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 9])
def test_kernel_matches_reference(method, n):
    rng = np.random.default_rng(n * 17 + len(method))
    data, dq, stat = _stack(rng, n=n)
    kwargs = dict(nlow=1, nhigh=2, nkeep=2, lsigma=2.5, hsigma=3.0)
    got = combine(data, dq, stat, method, **kwargs)
    ref = combine_reference(data, dq, stat, method, **kwargs)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_allclose(got[2], ref[2], rtol=1e-5)


def test_all_flagged_pixels_keep_their_flags():
    rng = np.random.default_rng(1)
    data, dq, stat = _stack(rng, n=5)
    out = combine(data, dq, stat, "average")
    assert (out[1][0, :5] & 4).all()
    assert np.allclose(out[0][0, :5], data[:, 0, :5].mean(axis=0), rtol=1e-6)
    good = dq.any(axis=0) == False  # noqa: E712
    assert (out[1][good] == 0).all()


def test_sigclip_rejects_outliers_and_propagates_variance():
    rng = np.random.default_rng(2)
    n = 11
    data = rng.normal(0.0, 1.0, size=(n, 200, 200)).astype(np.float32)
    data[3, 50, 50] = 1000.0  # a cosmic ray
    stat = np.ones_like(data)
    dq = np.zeros(data.shape, np.int32)
    value, flags, var = combine(data, dq, stat, "sigclip")
    assert abs(value[50, 50]) < 1.5
    # variance ≈ σ²/N where few good values are clipped
    assert np.median(var) == pytest.approx(1.0 / n, rel=0.02)
    # and matches the empirical scatter of the combined pixels
    assert value.std() ** 2 == pytest.approx(np.mean(var), rel=0.1)


def test_minmax_rejects_extremes_but_keeps_nkeep():
    data = np.array([1, 2, 3, 100], np.float32)[:, None, None]
    dq = np.zeros(data.shape, np.int32)
    stat = np.ones(data.shape, np.float32)
    assert combine(data, dq, stat, "minmax", nlow=1, nhigh=1, nkeep=1)[0][0, 0] == pytest.approx(2.5)
    # rejecting 3+3 of 4 would leave nothing: fewer are rejected to keep 2
    value = combine(data, dq, stat, "minmax", nlow=3, nhigh=3, nkeep=2)[0][0, 0]
    assert value == pytest.approx(combine_reference(data, dq, stat, "minmax", nlow=3, nhigh=3, nkeep=2)[0][0, 0])
    assert value == pytest.approx(2.5)


def test_median_value_and_unknown_method():
    data = np.array([5, 1, 3, 2, 4], np.float32)[:, None, None]
    dq = np.zeros(data.shape, np.int32)
    stat = np.full(data.shape, 2.0, np.float32)
    value, _, var = combine(data, dq, stat, "median")
    assert value[0, 0] == 3
    assert var[0, 0] == pytest.approx(10 / 25 * np.pi / 2)
    with pytest.raises(ValueError, match="unknown combine method"):
        combine(data, dq, stat, "mode")
