"""The resampling kernel: numba vs numpy reference, constant tables, noise, flux, cosmic rays.

``synthetic_pixtable`` (also used by test_make_cube.py) builds a small MUSE-like pixel table
from a known truth function: one "slice" per spaxel row along x, about one pixel per spaxel
and per 1.25 Å, with sub-pixel scatter of positions and wavelengths.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits

from recipes.algorithms.projection import tan_deproject
from recipes.algorithms.resampling import grid_from_pixtable, make_cube
from recipes.kernels.resample import CRTYPES, METHODS, ResampleOptions, plan_slabs, resample_cube
from recipes.kernels.resample_reference import resample_reference
from recipes.kernels.skycoords import POS_PROJECTED, spatial_coords
from recipes.algorithms.origin import pack_origin
from recipes.algorithms.pixtable import WCS_PIXEL, WCS_POSITIONED, WCS_PROJECTED, PixTable, make_pixtable, set_wcs_state
from recipes.algorithms.projection import celestial_to_native

RA0, DEC0 = 150.0, 2.0
SPAXEL_DEG = 0.2 / 3600


def synthetic_pixtable(
    truth, nx=16, ny=12, nlam=24, lam0=6000.0, seed=0, noise=False, state=WCS_POSITIONED,
    jitter=0.3, shift=(0.0, 0.0), ra0=RA0, dec0=DEC0,
) -> PixTable:  # fmt: skip
    """Pixel table sampling ``truth(ra, dec, lam)`` (or ``truth(x, y, lam)`` for pixel units).

    Field positions are spaxel units with the field centre at ``(ra0, dec0)`` (east left),
    offset by ``shift`` spaxels; ``stat`` = 4 + 0.05·truth; with ``noise`` the data get
    Gaussian noise of that variance.
    """
    rng = np.random.default_rng(seed)
    iy, ix, il = np.meshgrid(np.arange(ny), np.arange(nx), np.arange(nlam), indexing="ij")
    sx = ix + rng.uniform(-jitter, jitter, ix.shape) + shift[0]
    sy = iy + rng.uniform(-jitter, jitter, (ny, 1, 1)) + rng.uniform(-0.05, 0.05, ix.shape) + shift[1]
    lam = lam0 + 1.25 * (il + rng.uniform(-0.4, 0.4, (ny, nx, 1)))
    header = fits.Header()
    header["HIERARCH ESO INS MODE"] = "WFM-NOAO-N"
    header["MJD-OBS"] = 60000.0 + seed
    header["DATE-OBS"] = f"2023-02-25T00:00:{seed:02d}.000"
    if state == WCS_PIXEL:
        xa, ya = sx, sy
        xpos, ypos = sx, sy
        units = {"xpos": "pix", "ypos": "pix"}
    else:
        xi = -(sx - (nx - 1) / 2) * SPAXEL_DEG
        eta = (sy - (ny - 1) / 2) * SPAXEL_DEG
        xa, ya = tan_deproject(xi, eta, ra0, dec0)
        if state == WCS_POSITIONED:
            xpos, ypos = xa - ra0, ya - dec0
            units = {"xpos": "deg", "ypos": "deg"}
        else:
            xpos, ypos = celestial_to_native(xa, ya, ra0, dec0)
            units = {"xpos": "rad", "ypos": "rad"}
        set_wcs_state(header, state, (ra0, dec0))
    value = truth(xa, ya, lam)
    stat = 4.0 + 0.05 * np.abs(value)
    data = value + (rng.normal(0, 1, value.shape) * np.sqrt(stat) if noise else 0.0)
    origin = pack_origin(1 + iy // 12, 1 + iy % 12, 1 + ix, 1 + il, 0)
    return make_pixtable(
        {"xpos": xpos.ravel(), "ypos": ypos.ravel(), "lambda": lam.ravel(), "data": np.ravel(data),
         "dq": np.zeros(ix.size, np.int32), "stat": np.ravel(stat), "origin": origin.ravel()},
        header, **units,
    )  # fmt: skip


def _random_rows(seed=1, n=1500):
    rng = np.random.default_rng(seed)
    fx = rng.uniform(-1.2, 6.2, n)
    fy = rng.uniform(-1.2, 5.2, n)
    lam = 5000.0 + rng.uniform(-1.5, 7.5, n)  # plane = lam - 5000 (CRVAL3 5000, CD3_3 1, CRPIX3 1)
    data = rng.normal(10, 1, n).astype(np.float32)
    data[[7, 401, 903]] = (1000, 500, 300)  # cosmic rays (rows 50k are flagged)
    fx[[7, 401, 903]], fy[[7, 401, 903]] = (2.1, 3.2, 1.4), (1.9, 2.6, 3.1)  # inside the grid
    stat = rng.uniform(0.5, 2, n).astype(np.float32)
    dq = np.zeros(n, np.int32)
    dq[::50] = 1 << 5
    data[13] = np.nan
    weight = rng.uniform(0.5, 1.5, n).astype(np.float32)
    return fx, fy, lam, data, stat, dq, weight


CASES = [(m, 0.0, "median") for m in METHODS] + [(m, 3.0, c) for m in ("nearest", "drizzle") for c in CRTYPES]
CASES += [("linear", 3.0, "median"), ("renka", 3.0, "mean"), ("lanczos", 3.0, "iraf")]


@pytest.mark.parametrize("method,crsigma,crtype", CASES)
def test_numba_kernel_agrees_with_numpy_reference(method, crsigma, crtype):
    fx, fy, lam, data, stat, dq, weight = _random_rows()
    shape = (7, 5, 6)
    opts = ResampleOptions(method=method, crsigma=crsigma, crtype=crtype, pixfrac=(0.8, 0.7, 0.9), ld=1)
    ref = resample_reference(fx, fy, lam - 5000.0, data, stat, dq, weight, shape, opts)
    for max_rows in (10**9, 250):  # one slab, and many slabs with their margins
        got = resample_cube(lam, dq, data, stat, weight, lambda idx: (fx[idx], fy[idx]), (0, 5000.0, 1.0, 1.0),
                            shape, opts, max_rows=max_rows, keep_weight=True)  # fmt: skip
        np.testing.assert_array_equal(np.isnan(got.data), np.isnan(ref.data))
        np.testing.assert_allclose(got.data, ref.data, rtol=2e-6, equal_nan=True)
        np.testing.assert_allclose(got.stat, ref.stat, rtol=2e-6, equal_nan=True)
        np.testing.assert_allclose(got.weight, ref.weight, rtol=2e-6, atol=1e-12)
        assert got.n_rejected == ref.n_rejected
    if crsigma > 0 and crtype != "iraf":
        assert ref.n_rejected >= 1  # an injected cosmic ray was found


def test_larger_loop_distance_agrees_with_reference():
    fx, fy, lam, data, stat, dq, weight = _random_rows(seed=2, n=1000)
    opts = ResampleOptions(method="renka", rc=2.0, ld=2, crsigma=0)
    ref = resample_reference(fx, fy, lam - 5000.0, data, stat, dq, None, (7, 5, 6), opts)
    got = resample_cube(lam, dq, data, stat, None, lambda idx: (fx[idx], fy[idx]), (0, 5000.0, 1.0, 1.0),
                        (7, 5, 6), opts, max_rows=200)  # fmt: skip
    np.testing.assert_allclose(got.data, ref.data, rtol=2e-6, equal_nan=True)


def test_plan_slabs_bounds_rows_and_covers_all_planes():
    counts = np.array([5, 5, 5, 5, 5, 5, 5, 5, 5, 5])  # margin 1: planes -1..8
    slabs = plan_slabs(counts, 8, 1, 15)
    assert slabs[0][0] == 0 and slabs[-1][1] == 8
    assert all(b == c for (_, b), (c, _) in zip(slabs, slabs[1:]))
    for z0, z1 in slabs:
        assert z1 - z0 == 1 or counts[z0 : z1 + 2].sum() <= 15


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("state", [WCS_POSITIONED, WCS_PROJECTED, WCS_PIXEL])
def test_constant_pixel_table_gives_a_constant_cube(method, state):
    pt = synthetic_pixtable(lambda x, y, lam: np.full(np.shape(lam), 123.456), state=state, seed=4)
    grid = grid_from_pixtable(pt)
    result = make_cube(pt, grid, ResampleOptions(method=method), max_rows=2000)
    filled = np.isfinite(result.data)
    assert filled.mean() > (0.6 if method == "nearest" else 0.8)  # nearest leaves empty cells
    np.testing.assert_allclose(result.data[filled], 123.456, rtol=1e-6)


@pytest.mark.parametrize("state", [WCS_POSITIONED, WCS_PROJECTED, WCS_PIXEL])
def test_numba_projection_agrees_with_numpy(state):
    from recipes.algorithms.resampling import _spatial_mapper

    pt = synthetic_pixtable(lambda x, y, lam: 0 * lam, nx=9, ny=7, nlam=3, state=state, seed=5)
    grid = grid_from_pixtable(pt, dx=0.3 if state != WCS_PIXEL else 0.7)
    fx, fy = _spatial_mapper(pt, grid)(np.arange(pt.nrows))
    if state == WCS_PIXEL:
        ex, ey = grid.world_to_pixel(pt.xpos, pt.ypos)
    else:
        ex, ey = grid.world_to_pixel(*pt.celestial())
    assert np.abs(fx - ex).max() < 1e-6 and np.abs(fy - ey).max() < 1e-6
    assert fx.min() == pytest.approx(0.0, abs=1e-6) and fy.min() == pytest.approx(0.0, abs=1e-6)


def test_nearest_cube_residuals_are_unit_normal():
    def truth(ra, dec, lam):
        u = (ra - RA0) / SPAXEL_DEG
        v = (dec - DEC0) / SPAXEL_DEG
        return 200.0 + 6.0 * np.sin(u / 9.0) * np.cos(v / 7.0) + 0.02 * (lam - 6000.0)

    pt = synthetic_pixtable(truth, nx=30, ny=24, nlam=40, noise=True, seed=11)
    grid = grid_from_pixtable(pt)
    result = make_cube(pt, grid, ResampleOptions(method="nearest"))
    nz, ny, nx = grid.shape
    py, px = np.mgrid[0:ny, 0:nx]
    ra, dec = grid.pixel_to_world(px, py)
    expected = truth(ra[None], dec[None], grid.wavelengths()[:, None, None])
    good = np.isfinite(result.data)
    assert good.sum() > 20000  # jittered sampling leaves some cells empty
    z = (result.data - expected)[good] / np.sqrt(result.stat[good])
    assert abs(z.mean()) < 0.05
    assert z.std() == pytest.approx(1.0, abs=0.1)


def test_drizzle_conserves_the_flux_of_a_point_source():
    flux, sigma = 5000.0, 1.5  # total per plane (spaxel units), Gaussian sigma [spaxels]
    ra_s, dec_s = tan_deproject(0.7 * SPAXEL_DEG, -0.4 * SPAXEL_DEG, RA0, DEC0)

    def truth(ra, dec, lam):
        u = (ra - ra_s) * np.cos(np.deg2rad(dec_s)) / SPAXEL_DEG
        v = (dec - dec_s) / SPAXEL_DEG
        return flux * np.exp(-0.5 * (u**2 + v**2) / sigma**2) / (2 * np.pi * sigma**2) + 0 * lam

    # natural sampling: about one pixel per spaxel, as slices and CCD columns give it
    pt = synthetic_pixtable(truth, nx=26, ny=26, nlam=8, seed=21, jitter=0.03)
    fitted = grid_from_pixtable(pt)
    shifted = replace(fitted, crpix1=fitted.crpix1 + 0.5, crpix2=fitted.crpix2 + 0.3, nx=fitted.nx + 1,
                      ny=fitted.ny + 1)  # voxels straddling the samples  # fmt: skip
    for grid in (fitted, shifted):
        cube = make_cube(pt, grid, ResampleOptions(method="drizzle")).data
        totals = np.nansum(cube, axis=(1, 2))[1:-1]  # the end planes are partly outside the data
        np.testing.assert_allclose(totals, flux, rtol=0.01)


def test_cosmic_ray_in_one_of_several_overlapping_exposures_is_rejected():
    def truth(ra, dec, lam):
        return 100.0 + 0 * lam

    tables = [synthetic_pixtable(truth, nx=12, ny=10, nlam=12, noise=True, seed=s, shift=(0.1 * s, -0.05 * s))
              for s in range(4)]  # fmt: skip
    # the reference point is the same for all exposures, so the tables can be concatenated
    hit = 5 * 12 * 12 + 6 * 12 + 6  # a row near the field centre, mid-spectrum
    tables[2].columns["data"][hit] += 5e4
    pt = PixTable.concatenate(tables)
    grid = grid_from_pixtable(pt)
    clean = make_cube(pt, grid, ResampleOptions(method="drizzle", crtype="median", crsigma=15.0))
    dirty = make_cube(pt, grid, ResampleOptions(method="drizzle", crsigma=0.0))
    assert np.nanmax(dirty.data) > 1000  # without rejection the CR shows
    assert np.nanmax(clean.data) < 100 + 8 * np.sqrt(9.0)
    assert 1 <= clean.n_rejected <= max(1, pt.nrows // 1000)


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="resample"):
        ResampleOptions(method="cubic")
    with pytest.raises(ValueError, match="crtype"):
        ResampleOptions(crtype="sigclip")
    with pytest.raises(ValueError, match="pixfrac"):
        ResampleOptions(pixfrac=(0.0, 1.0, 1.0))


def test_weight_column_scales_contributions():
    pt = synthetic_pixtable(lambda x, y, lam: 10.0 + 0 * lam, nx=8, ny=6, nlam=5, seed=3)
    pt2 = synthetic_pixtable(lambda x, y, lam: 20.0 + 0 * lam, nx=8, ny=6, nlam=5, seed=3)
    both = PixTable.concatenate([pt, pt2])
    both.columns["weight"] = np.concatenate([np.full(pt.nrows, 3.0), np.full(pt.nrows, 1.0)]).astype(np.float32)
    grid = grid_from_pixtable(both)
    cube = make_cube(both, grid, ResampleOptions(method="drizzle", crsigma=0)).data
    # identical positions, weights 3:1 -> (3*10 + 20)/4
    np.testing.assert_allclose(cube[np.isfinite(cube)], 12.5, rtol=1e-6)



@pytest.mark.parametrize("lambdaref", [7000.0, -1.0])
def test_projection_kernel_agrees_with_the_numpy_path(lambdaref):
    """project_to_sky: the parallel kernel (DAR interpolated on a 0.01 Å grid) against the
    plain numpy path (DAR per row), at airmass 2 where the DAR is ≈ 2″ over the range."""
    from recipes.algorithms.pixtable import make_pixtable
    from recipes.algorithms.astrometry import project_to_sky

    rng = np.random.default_rng(5)
    n = 50_000
    h = fits.Header({"RA": 150.0, "DEC": -30.0, "HIERARCH ESO INS DROT POSANG": 33.0,
                     "HIERARCH ESO TEL AIRM START": 2.0, "HIERARCH ESO TEL AIRM END": 2.0,
                     "HIERARCH ESO TEL PARANG START": 57.0})  # fmt: skip
    cols = {"xpos": rng.uniform(-160, 160, n), "ypos": rng.uniform(-160, 160, n),
            "lambda": rng.uniform(4600, 9350, n), "data": np.ones(n), "dq": np.zeros(n), "stat": np.ones(n),
            "origin": np.zeros(n)}  # fmt: skip
    cd = np.array([[-0.2 / 3600, 1e-8], [2e-8, 0.2 / 3600]])
    fast, ref = make_pixtable(dict(cols), h.copy()), make_pixtable(dict(cols), h.copy())
    project_to_sky(fast, cd, (3.5, -2.0), lambdaref)
    project_to_sky(ref, cd, (3.5, -2.0), lambdaref, reference=True)
    for name in ("xpos", "ypos"):
        a, b = fast.columns[name], ref.columns[name]
        assert a.dtype == b.dtype == np.float32
        # float32 results: at most one unit in the last place apart
        assert np.max(np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))) <= 1
    assert list(fast.header.items()) == list(ref.header.items())


def test_projected_rows_on_their_own_tangent_point_match_the_spherical_path():
    """spatial_coords undoes the gnomonic projection directly when the grid is tangent at
    the table's reference; it must agree with the numpy path through (RA, Dec) to 1e-8
    pixel over a 140″ field with a rotated, sheared CD matrix."""
    from recipes.algorithms.projection import native_to_celestial, tan_project

    rng = np.random.default_rng(11)
    n = 20_000
    phi = rng.uniform(-np.pi, np.pi, n)
    ypos = rng.uniform(-np.arctan(np.radians(70.0 / 3600.0)), 0.0, n)
    cd = np.array([[-0.2, 0.01], [0.02, 0.2]]) / 3600.0
    cdinv = np.linalg.inv(cd).ravel()
    fx, fy = spatial_coords(phi, ypos, np.arange(n), POS_PROJECTED, 150.0, -30.0, 150.0, -30.0, 180.5, 170.5, cdinv)
    u, v = tan_project(*native_to_celestial(phi, ypos, 150.0, -30.0), 150.0, -30.0)
    ex = cdinv[0] * u + cdinv[1] * v + 179.5
    ey = cdinv[2] * u + cdinv[3] * v + 169.5
    assert np.abs(fx - ex).max() < 1e-8 and np.abs(fy - ey).max() < 1e-8
