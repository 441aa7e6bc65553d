"""The instrument model: read-out geometry from headers, slice layout, wavelength solution."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from recipes.base import RecipeError
from recipes.algorithms.instrument import (
    FULL_DETECTOR, GEO_SLICE_SKY, DetectorFormat, detector_geometry,
    polyval_y, raw_shape, slice_field_centre, trim, trimmed_shape,
)
from recipes.algorithms.slice_layout import make_ifu_layout
from musered.simulate.profiles import FULL, MINI


def _header(fmt: DetectorFormat) -> fits.Header:
    h = fits.Header()
    h["NAXIS1"], h["NAXIS2"] = fmt.raw_shape[1], fmt.raw_shape[0]
    for k, (v, c) in fmt.out_keywords([1.1, 1.12, 1.14, 1.16], [2.4, 2.5, 2.6, 2.7]).items():
        h["HIERARCH " + k] = (v, c)
    return h


def test_full_geometry_matches_the_format_spec():
    q = detector_geometry(_header(FULL_DETECTOR))
    assert [p.out for p in q] == [1, 2, 3, 4]
    assert raw_shape(q) == (4240, 4224) and trimmed_shape(q) == (4112, 4096)
    q1, q2, q3, q4 = q
    # bottom-left port, FITS columns 1-32 prescan, 33-2080 data, 2081-2112 overscan
    assert (q1.prescan_x[1].start, q1.prescan_x[1].stop) == (0, 32)
    assert (q1.data[1].start, q1.data[1].stop) == (32, 2080)
    assert (q1.overscan_x[1].start, q1.overscan_x[1].stop) == (2080, 2112)
    assert (q1.data[0].start, q1.data[0].stop) == (32, 2088)
    assert (q1.overscan_y[0].start, q1.overscan_y[0].stop) == (2088, 2120)
    # right half mirrored: overscan towards the centre, prescan on the outer edge
    assert (q2.overscan_x[1].start, q2.overscan_x[1].stop) == (2112, 2144)
    assert (q2.data[1].start, q2.data[1].stop) == (2144, 4192)
    assert (q2.prescan_x[1].start, q2.prescan_x[1].stop) == (4192, 4224)
    assert (q3.data[0].start, q3.data[0].stop) == (2152, 4208)
    assert (q3.prescan_y[0].start, q3.prescan_y[0].stop) == (4208, 4240)
    assert q4.trimmed == (slice(2056, 4112), slice(0, 2048))
    assert q2.gain == pytest.approx(1.12) and q4.ron == pytest.approx(2.7)


@pytest.mark.parametrize("fmt", [MINI.detector, DetectorFormat(64, 48, 8, 8, 8, 8), DetectorFormat(100, 80, 32, 32, 32, 32)])
def test_geometry_round_trip_tiles_the_raw_image(fmt):
    q = detector_geometry(_header(fmt))
    ny, nx = fmt.raw_shape
    cover = np.zeros((ny, nx), int)
    for p in q:
        for reg in (p.data, p.prescan_x, p.overscan_x, p.prescan_y, p.overscan_y):
            cover[reg] += 1
    # every pixel outside the 4 corner blocks of each port is used exactly once
    assert cover.max() == 1
    raw = np.arange(ny * nx).reshape(ny, nx)
    t = trim(raw, q)
    assert t.shape == fmt.trimmed_shape
    assert len(np.unique(t)) == t.size
    for p in q:
        assert p.nx == fmt.nx and p.ny == fmt.ny
        np.testing.assert_array_equal(t[p.trimmed], raw[p.data])


def test_geometry_missing_keyword_names_it():
    h = _header(MINI.detector)
    del h["ESO DET OUT3 OVSCX"]
    with pytest.raises(RecipeError, match="ESO DET OUT3 OVSCX"):
        detector_geometry(h, "x.fits[CHAN01]")


def test_geometry_size_mismatch_is_an_error():
    h = _header(MINI.detector)
    h["NAXIS1"] = 4224
    with pytest.raises(RecipeError, match="does not match"):
        detector_geometry(h, "x.fits[CHAN01]")


@pytest.mark.parametrize("profile", [FULL, MINI])
def test_slice_layout_stays_on_the_ccd(profile):
    shape = profile.detector.trimmed_shape
    lay = make_ifu_layout(1, shape, profile.layout, np.random.default_rng(0))
    y = np.array([1.0, shape[0] / 2, shape[0]])
    prev_right = -np.inf
    for s in lay.slices:
        left, right = s.edges_at(y)
        width = right - left
        assert np.all(width > 0.9 * profile.layout.slice_width)
        assert np.all(left > prev_right + 0.5 * profile.layout.slice_gap)
        prev_right = right.max()
        # curvature and tilt within the instrument's range
        assert np.ptp(left) < profile.layout.tilt + 2 * profile.layout.curvature
    assert lay.slices[0].edges_at(y)[0].min() > 10
    assert prev_right < shape[1] - 10
    if profile is FULL:
        assert 40 < lay.slices[0].edges_at(y)[0].min() < 44
        assert 4040 < prev_right < 4060


def test_wavelength_solution_has_the_nominal_dispersion():
    lay = make_ifu_layout(1, FULL.detector.trimmed_shape, FULL.layout, np.random.default_rng(2))
    for s in lay.slices[::7]:
        xc = polyval_y(s.centre, 2056.5)
        lam = s.wavelength(xc, np.array([1.0, 2056.5, 2057.5, 4112.0]))
        assert 4150 < lam[0] < 4250 and 9250 < lam[-1] < 9400
        assert lam[2] - lam[1] == pytest.approx(1.25, abs=0.02)
        assert s.lsf_fwhm(7000.0) == pytest.approx(2.5, rel=0.1)


def test_slice_sky_mapping_covers_the_field():
    assert sorted(GEO_SLICE_SKY) == list(range(1, 49))
    pos = {slice_field_centre(2, s, 2, 75.0) for s in range(1, 49)}
    assert len(pos) == 48
    xs = sorted({p[0] for p in pos})
    assert xs == [-112.5, -37.5, 37.5, 112.5]
    ys = sorted({p[1] for p in pos})
    assert ys[0] == 0.5 and ys[-1] == 11.5  # IFU 2 of 2 is the upper 12 rows
