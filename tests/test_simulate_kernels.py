"""The simulator's numba kernels agree with their numpy twins."""

from __future__ import annotations

import numpy as np
import pytest

from recipes.algorithms.slice_layout import LayoutParams, make_ifu_layout
from musered.simulate.render import (
    digitise_block, digitise_block_reference, render_slice, render_slice_reference,
)


@pytest.fixture(scope="module")
def slice_geom():
    params = LayoutParams(slice_width=18.5, slice_gap=3.5, stack_gap=6.0, first_edge=30.0,
                          curvature=0.4, tilt=1.0, lambda_start=5950.0, width_sky=18.0)
    lay = make_ifu_layout(1, (300, 1120), params, np.random.default_rng(3))
    return lay.slices[5]


def _args(sl, with_lines=True, with_cont=True):
    rng = np.random.default_rng(1)
    cont = rng.uniform(1, 20, (2, 1200)) if with_cont else np.zeros((0, 1200))
    cmaps = rng.uniform(0, 2, (cont.shape[0], 36)) if with_cont else np.zeros((0, 36))
    if with_lines:
        lam = np.sort(rng.uniform(5950, 6300, 12))
        flux = rng.uniform(100, 1000, 12)
        grp = rng.integers(0, 2, 12).astype(np.int64)
    else:
        lam, flux, grp = np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
    lmaps = rng.uniform(0.5, 1.5, (2, 36))
    return (sl.left, sl.right, sl.edge_sigma, sl.wlc, sl.lsf, 1.7, 5900.0, 0.5, cont, cmaps,
            lam, flux, grp, lmaps)


@pytest.mark.parametrize("lines,cont", [(True, True), (True, False), (False, True)])
def test_render_slice_matches_numpy(slice_geom, lines, cont):
    args = _args(slice_geom, lines, cont)
    fast = np.zeros((300, 1120))
    ref = np.zeros((300, 1120))
    render_slice(fast, *args)
    render_slice_reference(ref, *args)
    assert fast.max() > 10
    np.testing.assert_allclose(fast, ref, rtol=1e-9, atol=1e-9)


def test_render_slice_conserves_line_flux(slice_geom):
    """A line far from the range edges deposits its flux × scale × edge profile (per row sum)."""
    sl = slice_geom
    img = np.zeros((300, 1120))
    lam = np.array([6100.0])
    render_slice(img, sl.left, sl.right, 0.0, sl.wlc, sl.lsf, 1.0, 5900.0, 0.5,
                 np.zeros((0, 10)), np.zeros((0, 36)), lam, np.array([500.0]),
                 np.zeros(1, np.int64), np.ones((1, 36)))
    # with sharp edges each column inside the slice gets the full line flux
    cols = img.sum(axis=0)
    inside = cols[cols > 0]
    np.testing.assert_allclose(inside, 500.0, rtol=1e-6)


def test_render_slice_continuum_and_lines_share_one_flux_scale(slice_geom):
    """Lines (Gaussian integrated over each pixel's λ extent) and continua (sampled at the
    pixel centre × the pixel height in Å) give the same flux per Å: a continuum of 1 e-/Å
    fills each column with its λ span, whatever the local dispersion dλ/dy, and a narrow
    line of flux F puts F in each column (sharp edges, no QE)."""
    from recipes.algorithms.instrument import wavecal_eval

    sl = slice_geom
    lam0, step = 5900.0, 0.5
    cont = np.ones((1, 1200))  # 1 e-/Å from 5900 to 6500 Å
    img = np.zeros((300, 1120))
    render_slice(img, sl.left, sl.right, 0.0, sl.wlc, sl.lsf, 1.0, lam0, step, cont, np.ones((1, 36)),
                 np.zeros(0), np.zeros(0), np.zeros(0, np.int64), np.ones((1, 36)))  # fmt: skip
    cols = np.flatnonzero((img > 0).all(axis=0))  # columns inside the slice on every row
    assert cols.size > 15
    x = cols + 1.0
    span = wavecal_eval(sl.wlc, x, 300.5) - wavecal_eval(sl.wlc, x, 0.5)
    np.testing.assert_allclose(img[:, cols].sum(axis=0), span, rtol=2e-4)
    # the same flux as lines, one every 20 Å, integrated over the pixels of each column
    lines = np.arange(5960.0, 6260.0, 20.0)
    img[:] = 0.0
    render_slice(img, sl.left, sl.right, 0.0, sl.wlc, sl.lsf, 1.0, lam0, step, np.zeros((0, 10)),
                 np.zeros((0, 36)), lines, np.full(lines.size, 20.0), np.zeros(lines.size, np.int64),
                 np.ones((1, 36)))  # fmt: skip
    lam_c = wavecal_eval(sl.wlc, x[None, :], np.arange(1, 301, dtype=float)[:, None])
    inner = (lam_c > 5950.0) & (lam_c < 6270.0)
    line_flux = np.where(inner, img[:, cols], 0).sum(axis=0)
    np.testing.assert_allclose(line_flux, 20.0 * lines.size, rtol=1e-6)


def test_digitise_matches_reference_without_noise():
    out = np.zeros((60, 50), np.uint16)
    ref = np.zeros_like(out)
    sig = np.zeros((40, 30))
    off = np.linspace(-1, 2, 40 * 30).reshape(40, 30)
    digitise_block(out, sig, off, 10, 12, 1000.3, 2.5, 1.1, 0.0, 7)
    digitise_block_reference(ref, sig, off, 10, 12, 1000.3, 2.5, 1.1, 0.0, 7)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("signal", [0.0, 3.0, 5000.0])
def test_digitise_noise_statistics(signal):
    out = np.zeros((420, 400), np.uint16)
    sig = np.full((400, 400), signal)
    gain, ron = 1.0, 2.5
    digitise_block(out, sig, np.zeros_like(sig), 20, 0, 1000.0, 0.0, gain, ron, 11)
    d = out[20:, :].astype(float) - 1000.0
    var = signal + ron**2 + 1 / 12  # photon + read noise + rounding
    assert abs(d.mean() - signal) < 5 * np.sqrt(var / d.size)
    assert abs(d.var() / var - 1) < 0.03
    # prescan rows carry read noise only
    p = out[:20].astype(float) - 1000.0
    assert abs(p.var() / (ron**2 + 1 / 12) - 1) < 0.1


def test_digitise_is_deterministic_and_seeded():
    sig = np.full((100, 90), 50.0)
    a = np.zeros((110, 100), np.uint16)
    b = np.zeros_like(a)
    c = np.zeros_like(a)
    digitise_block(a, sig, np.zeros_like(sig), 5, 5, 900.0, 1.0, 1.2, 2.6, 123)
    digitise_block(b, sig, np.zeros_like(sig), 5, 5, 900.0, 1.0, 1.2, 2.6, 123)
    digitise_block(c, sig, np.zeros_like(sig), 5, 5, 900.0, 1.0, 1.2, 2.6, 124)
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.5


def test_digitise_clips_to_uint16():
    out = np.zeros((10, 10), np.uint16)
    digitise_block(out, np.full((10, 10), 1e7), np.zeros((10, 10)), 0, 0, 1000.0, 0.0, 1.0, 2.0, 1)
    assert (out == 65535).all()
