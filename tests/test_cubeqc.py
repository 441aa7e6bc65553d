"""Point-source QC of final cubes (recipes/cubeqc.py): detection, positions, FWHM, keywords."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits

from recipes.algorithms.cube import CubeGrid
from recipes.algorithms.cubeqc import detect_apertures, fit_source, fwhm_qc
from recipes.provenance import add_qc
from recipes.algorithms.sourcedetect import FWHM_TO_SIGMA

SPAXEL = 0.2  # arcsec
NZ, NY, NX = 5, 120, 140
GRID = CubeGrid(NX, NY, NZ, 70.0, 60.0, 150.0, 2.0, (-SPAXEL / 3600, 0.0, 0.0, SPAXEL / 3600), 1.0, 6000.0, 1.25)


def gaussian(x0, y0, fwhm_x, fwhm_y, amp):
    yy, xx = np.mgrid[0:NY, 0:NX]
    sx, sy = fwhm_x * FWHM_TO_SIGMA, fwhm_y * FWHM_TO_SIGMA
    return amp * np.exp(-0.5 * (((xx - x0) / sx) ** 2 + ((yy - y0) / sy) ** 2))


def moffat(x0, y0, fwhm, beta, amp):
    yy, xx = np.mgrid[0:NY, 0:NX]
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    return amp * (1 + ((xx - x0) ** 2 + (yy - y0) ** 2) / alpha**2) ** (-beta)


# (x, y) 0-based, FWHM x, y [pix], amplitude; listed in the raster order of their apertures
# (the DRS keeps the first detection level that finds anything: all four are within a
# factor 3 of the brightest, so all are found at that level)
STARS = [(100.3, 15.7, 3.5, 3.5, 400.0), (25.55, 40.2, 4.0, 4.0, 300.0), (70.8, 63.35, 3.0, 4.2, 800.0),
         (42.1, 100.6, 5.0, 5.0, 350.0)]  # fmt: skip


def make_cube(stars, seed=3, noise=1.0):
    rng = np.random.default_rng(seed)
    image = sum((gaussian(*s) for s in stars), np.zeros((NY, NX)))
    cube = image[None] + rng.normal(0, noise, (NZ, NY, NX)) + 5.0  # a flat background
    cube[:, :, :2] = np.nan  # the NaN border of a resampled cube
    return cube.astype(np.float32)


def qc_dict(triples):
    return {k: v for k, v, _ in triples}


def test_gaussian_stars_positions_and_fwhm():
    qc = qc_dict(fwhm_qc(make_cube(STARS), GRID, "ESO QC SCIPOST"))
    assert qc["ESO QC SCIPOST NDET"] == len(STARS)
    assert qc["ESO QC SCIPOST LAMBDA"] == pytest.approx(6000.0 + 1.25 * (NZ // 2))
    for k, (x, y, fx, fy, _) in enumerate(STARS, start=1):
        assert abs(qc[f"ESO QC SCIPOST POS{k} X"] - (x + 1)) < 0.1  # 1-based, as the DRS writes them
        assert abs(qc[f"ESO QC SCIPOST POS{k} Y"] - (y + 1)) < 0.1
        assert qc[f"ESO QC SCIPOST FWHM{k} X"] == pytest.approx(fx * SPAXEL, rel=0.02)  # arcsec
        assert qc[f"ESO QC SCIPOST FWHM{k} Y"] == pytest.approx(fy * SPAXEL, rel=0.02)
    means = [0.5 * (fx + fy) * SPAXEL for _, _, fx, fy, _ in STARS]
    assert qc["ESO QC SCIPOST FWHM NVALID"] == len(STARS)
    assert qc["ESO QC SCIPOST FWHM MEDIAN"] == pytest.approx(np.median(means), rel=0.02)
    assert qc["ESO QC SCIPOST FWHM MAD"] == pytest.approx(np.median(np.abs(np.array(means) - np.median(means))),
                                                          abs=0.01)  # fmt: skip


def test_moffat_star_fwhm():
    image = moffat(30.4, 25.7, 4.0, 2.5, 300.0) + np.random.default_rng(1).normal(0, 0.5, (NY, NX))
    apertures, sigma = detect_apertures(image)
    assert len(apertures) == 1 and sigma == 50.0
    src = fit_source(image, apertures[0])
    assert abs(src.x - 30.4) < 0.1 and abs(src.y - 25.7) < 0.1
    assert src.fwhm_x == pytest.approx(4.0, rel=0.02) and src.fwhm_y == pytest.approx(4.0, rel=0.02)


def test_detection_ladder_finds_faint_sources_only_when_needed():
    # one bright star: found at 50 sigma, the faint one (below that level) is not counted
    bright_and_faint = [(20.0, 20.0, 3.5, 3.5, 2000.0), (90.0, 85.0, 3.5, 3.5, 12.0)]
    assert detect_apertures(make_cube(bright_and_faint)[2].astype(float))[1] == 50.0
    assert qc_dict(fwhm_qc(make_cube(bright_and_faint), GRID, "ESO QC EXPCOMB"))["ESO QC EXPCOMB NDET"] == 1
    # a faint star alone: the ladder goes down until it is found
    apertures, sigma = detect_apertures(make_cube(bright_and_faint[1:])[2].astype(float))
    assert len(apertures) == 1 and sigma < 50.0


def test_no_stars_gives_ndet_zero():
    for cube in (make_cube([]), np.full((NZ, NY, NX), np.nan, np.float32), np.zeros((NZ, NY, NX), np.float32)):
        qc = qc_dict(fwhm_qc(cube, GRID, "ESO QC SCIPOST"))
        assert qc["ESO QC SCIPOST NDET"] == 0
        assert not any(k.startswith(("ESO QC SCIPOST POS", "ESO QC SCIPOST FWHM")) for k in qc)


def test_single_hot_pixel_is_not_a_source():
    cube = make_cube([])
    cube[:, 30, 40] = 1e4  # removed by the 3 x 3 opening
    assert qc_dict(fwhm_qc(cube, GRID, "ESO QC SCIPOST"))["ESO QC SCIPOST NDET"] == 0


def test_failed_fit_is_marked_as_the_drs_does():
    cube = make_cube([])
    cube[:, 30:40, 40:50] = 500.0  # a flat-topped square: no star profile fits it inside its box
    cube[:, 30:40, 40:50] += np.random.default_rng(0).normal(0, 1, (NZ, 10, 10)).astype(np.float32)
    triples = fwhm_qc(cube, GRID, "ESO QC SCIPOST")
    qc = qc_dict(triples)
    assert qc["ESO QC SCIPOST NDET"] == 1
    assert qc["ESO QC SCIPOST POS1 X"] == pytest.approx(45.5, abs=0.2)
    fwhm = qc["ESO QC SCIPOST FWHM1 X"]
    assert fwhm == -1.0 or fwhm > 1.5  # either marked failed or as wide as the square (>= 10 px)


def test_pixel_grid_reports_pixels_and_keywords_fit_fits_cards():
    grid = CubeGrid(NX, NY, NZ, 1.0, 1.0, 0.0, 0.0, (1.0, 0.0, 0.0, 1.0), 1.0, 6000.0, 1.25, celestial=False)
    triples = fwhm_qc(make_cube(STARS[:1]), grid, "ESO QC EXPCOMB")
    qc = qc_dict(triples)
    assert qc["ESO QC EXPCOMB FWHM1 X"] == pytest.approx(3.5, rel=0.02)
    assert "[pix]" in dict((k, c) for k, _, c in triples)["ESO QC EXPCOMB FWHM1 X"]
    header = fits.Header()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "card is too long" truncation
        add_qc(header, fwhm_qc(make_cube(STARS), GRID, "ESO QC EXPCOMB"))
        text = header.tostring()
    assert "ESO QC EXPCOMB FWHM4 Y" in text and header["ESO QC EXPCOMB NDET"] == 4


def test_close_neighbours_are_each_fitted_on_their_own():
    # 2.3 FWHM apart: two apertures; each fit box holds both stars, the other aperture's
    # pixels are left out, so neither fit jumps to the brighter neighbour
    pair = [(70.3, 50.6, 3.5, 3.5, 800.0), (70.6, 58.7, 3.5, 3.5, 400.0)]
    qc = qc_dict(fwhm_qc(make_cube(pair), GRID, "ESO QC SCIPOST"))
    assert qc["ESO QC SCIPOST NDET"] == 2
    for k, (x, y, fx, _, _) in enumerate(pair, start=1):
        assert abs(qc[f"ESO QC SCIPOST POS{k} X"] - (x + 1)) < 0.1
        assert abs(qc[f"ESO QC SCIPOST POS{k} Y"] - (y + 1)) < 0.1
        assert qc[f"ESO QC SCIPOST FWHM{k} X"] == pytest.approx(fx * SPAXEL, rel=0.05)
