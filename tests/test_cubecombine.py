"""The mpdaf method of exp-combine: sigma-clipped combination of cubes on one grid."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from recipes.base import RecipeError
from recipes.algorithms.cube import CubeGrid, write_datacube
from recipes.algorithms.cubelist import combine_cubes
from recipes.steps.mpdaf_combine import RECIPE
from recipes.kernels.cubecombine import combine_reference, combine_slab

GRID = CubeGrid(7, 6, 5, 4.0, 3.5, 150.0, 2.0, (-0.2 / 3600, 0.0, 0.0, 0.2 / 3600), 1.0, 4800.0, 1.25)


def _stack(n=6, m=3000, seed=1):
    rng = np.random.default_rng(seed)
    data = rng.normal(10.0, 1.0, (n, m)).astype(np.float32)
    var = rng.uniform(0.5, 1.5, (n, m)).astype(np.float32)
    data[rng.random((n, m)) < 0.1] = np.nan  # missing voxels
    hit = rng.random((n, m)) < 0.05
    data[hit] += rng.uniform(20, 200, hit.sum()).astype(np.float32)  # outliers
    data[:, :3] = np.nan  # no data at all
    data[1:, 3] = np.nan  # a single value
    data[:, 4] = 7.0  # identical values: sigma 0
    return data, var


@pytest.mark.parametrize("method", ["sigclip", "median"])
@pytest.mark.parametrize("var_mode", ["propagate", "stat_mean", "stat_one"])
@pytest.mark.parametrize("mad", [False, True])
@pytest.mark.parametrize("n", [6, 15])  # rank-counting median (<= 12 values) and insertion sort
def test_kernel_matches_reference(method, var_mode, mad, n):
    data, var = _stack(n=n)
    scale = np.linspace(0.9, 1.1, n)
    offset = np.linspace(-0.1, 0.2, n)
    # 2 sigma: clipping happens often, so the iterations and the median are exercised
    kw = dict(method=method, nmax=2, nclip_low=2.0, nclip_up=2.5, nstop=2, var_mode=var_mode, mad=mad)
    got = combine_slab(data, var, scale, offset, **kw)
    want = combine_reference(data, var, scale, offset, **kw)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, equal_nan=True)
    np.testing.assert_array_equal(got[2], want[2])
    np.testing.assert_array_equal(got[3], want[3])
    np.testing.assert_array_equal(got[4], want[4])


def test_kernel_semantics():
    data, var = _stack()
    mean, v, expmap, valid, selected = combine_slab(data, var, nclip_low=3.0, nclip_up=3.0)
    assert np.all(np.isnan(mean[:3])) and np.all(expmap[:3] == 0)
    assert mean[3] == data[0, 3] and v[3] == var[0, 3] and expmap[3] == 1
    assert mean[4] == 7.0 and expmap[4] == np.sum(~np.isnan(data[:, 4]))
    np.testing.assert_array_equal(valid, np.sum(~np.isnan(data), axis=1))
    # with the standard deviation (MPDAF's default) one large outlier among ~6 values
    # inflates sigma so much that it survives; the MAD rejects the outliers
    clean, _, kept, _, selected = combine_slab(data, var, nclip_low=3.0, nclip_up=3.0, mad=True)
    good = kept >= 3
    good[:5] = False
    hits = np.isnan(data) | (data < 20)  # voxels with at most one outlier
    single = good & (np.sum(~hits, axis=0) <= 1)
    assert np.abs(clean[single] - 10.0).max() < 3.0
    assert np.abs(mean[single] - 10.0).max() > 10.0
    assert selected.sum() < valid.sum()


def test_kernel_nmax_zero_is_plain_mean():
    data, var = _stack()
    mean, v, expmap, _, _ = combine_slab(data, var, nmax=0)
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning, match="empty slice"):
        want = np.nanmean(data.astype(np.float64), axis=0)
    np.testing.assert_allclose(mean, want, rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(expmap, np.sum(~np.isnan(data), axis=0))


def _write_cubes(tmp_path, n=4, seed=3, grid=GRID):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(5, 50, grid.shape).astype(np.float32)
    paths = []
    for i in range(n):
        data = (truth + rng.normal(0, 1.0, grid.shape)).astype(np.float32)
        stat = np.full(grid.shape, 1.0, dtype=np.float32)
        data[:, 0, i] = np.nan
        if i == 2:
            data[2, 3, 3] += 500.0  # a cosmic ray in one cube only
        h = fits.Header()
        h["OBJECT"] = "FIELD"
        h["EXPTIME"] = 600.0
        path = write_datacube(tmp_path / f"cube{i}.fits", h, grid, data, stat)
        paths.append(path)
    return paths, truth


def test_recipe_products(tmp_path):
    paths, truth = _write_cubes(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    # with 4 values, one outlier lies at most (n-1)/sqrt(n) = 1.5 population sigmas from
    # the mean: only the MAD can reject it
    params = RECIPE.validate({"nclip": "3,3", "mad": True})
    products = RECIPE.run({"DATACUBE_FINAL": paths}, params, out)
    tags = sorted(p.tag for p in products)
    assert tags == ["DATACUBE_FINAL", "EXPMAP_CUBE", "EXPMAP_IMAGE", "IMAGE_FOV", "STATPIX"]
    with fits.open(out / "DATACUBE_FINAL.fits") as hdul:
        data, stat = hdul["DATA"].data, hdul["STAT"].data
        assert hdul["DATA"].header["CRVAL3"] == 4800.0 and hdul[0].header["ESO PRO CATG"] == "DATACUBE_FINAL"
    assert abs(data[2, 3, 3] - truth[2, 3, 3]) < 4  # the cosmic ray is gone
    with fits.open(out / "EXPMAP_CUBE.fits") as hdul:
        expmap = hdul["DATA"].data
    np.testing.assert_allclose(stat, 1.0 / expmap, rtol=1e-6)  # k unit variances: 1/k
    assert expmap[2, 3, 3] <= 3 and expmap[0, 0, 0] <= 3 and expmap.max() == 4
    table = Table.read(out / "STATPIX.fits")
    assert list(table["NPIX_NAN"]) == [GRID.nz] * 4
    assert table["NPIX_REJECTED"][2] >= 1
    with fits.open(out / "IMAGE_FOV_0001.fits") as hdul:
        assert hdul["DATA"].data.shape == (GRID.ny, GRID.nx)


def test_slabs_do_not_change_the_result(tmp_path):
    paths, _ = _write_cubes(tmp_path)
    params = RECIPE.validate({})
    a = combine_cubes(paths, params, max_voxels=GRID.nx * GRID.ny)  # one plane per slab
    b = combine_cubes(paths, params)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[3], b[3])


def test_files_read_directly_equal_astropy_conversion(tmp_path):
    """float32 cubes are read by pread + byte swap; other encodings (float64, scaled
    integers) through astropy. Both must give the same numbers; so must a truncated file
    fail with its name."""
    paths, _ = _write_cubes(tmp_path)
    converted = []
    for p in paths:
        with fits.open(p) as hdul:
            hdul["DATA"].data = hdul["DATA"].data.astype(np.float64)  # BITPIX -64: astropy path
            hdul["STAT"].data = hdul["STAT"].data.astype(np.float64)
            converted.append(tmp_path / f"f64_{p.name}")
            hdul.writeto(converted[-1])
    params = RECIPE.validate({})
    fast, slow = combine_cubes(paths, params, max_voxels=3 * GRID.nx * GRID.ny), combine_cubes(converted, params)
    for a, b in zip(fast[1:6], slow[1:6]):
        np.testing.assert_array_equal(a, b)
    cut = tmp_path / "cut.fits"
    cut.write_bytes(paths[0].read_bytes()[: -2880 * 2])  # the end of STAT is missing
    with pytest.raises(RecipeError, match="cut.fits"):
        combine_cubes([cut, paths[1]], params)


@pytest.mark.parametrize("nclip", [5.0, 2.0])
def test_kernel_many_blocks_and_output_views(nclip):
    """Several blocks of the parallel kernel. With 4 values and 5 sigma nothing can be
    clipped, so every voxel is finished from the sums; at 2 sigma the voxels with an
    outlier take the general path. All equal the reference, also when writing into the
    caller's arrays (int16 expmap, as the recipe does)."""
    rng = np.random.default_rng(7)
    n, m = 4, 3 * 4096 + 123
    data = rng.normal(10.0, 1.0, (n, m)).astype(np.float32)
    var = rng.uniform(0.5, 1.5, (n, m)).astype(np.float32)
    data[rng.random((n, m)) < 0.05] = np.nan
    data[:, 5000:5100] = np.nan
    data[0, 6000:6050] = 1e4  # one value far out (at 2 sigma: rejected)
    kw = dict(nclip_low=nclip, nclip_up=nclip)
    want = combine_reference(data, var, **kw)
    got = combine_slab(data, var, **kw)
    out = (np.empty(m, np.float32), np.empty(m, np.float32), np.empty(m, np.int16))
    into = combine_slab(data, var, out=out, **kw)
    assert into[0] is out[0] and into[2].dtype == np.int16
    finite = (~np.isnan(data[:, 6000:6050])).sum(axis=0)
    if nclip == 2.0:
        assert np.all(want[2][6000:6050][finite >= 3] < finite[finite >= 3])  # the outlier is out
    else:
        np.testing.assert_array_equal(want[2][6000:6050], finite)
    for result in (got, into):
        np.testing.assert_allclose(result[0], want[0], rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(result[1], want[1], rtol=1e-5, equal_nan=True)
        for i in (2, 3, 4):
            np.testing.assert_array_equal(result[i], want[i])
    with pytest.raises(ValueError, match="out must be"):
        combine_slab(data, var, out=(out[0], out[1], np.empty(m, np.float32)))


def test_kernel_swaps_file_byte_order_in_place():
    """``swap_bytes``: stacks holding the other byte order (FITS pixels as read) give the
    same result as native ones, and hold native values afterwards."""
    data, var = _stack(n=5, m=2 * 4096 + 77)
    want = combine_slab(data, var)
    raw_data, raw_var = data.byteswap(), var.byteswap()  # the same values, bytes reversed
    got = combine_slab(raw_data, raw_var, swap_bytes=True)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(raw_data, data)
    with pytest.raises(ValueError, match="swap_bytes"):
        combine_slab(raw_data[:, ::2], None, swap_bytes=True)


def test_bad_inputs(tmp_path):
    paths, _ = _write_cubes(tmp_path, n=2)
    out = tmp_path / "out"
    out.mkdir()
    other = CubeGrid(7, 6, 5, 4.0, 3.5, 150.001, 2.0, GRID.cd, 1.0, 4800.0, 1.25)
    odd = write_datacube(tmp_path / "odd.fits", fits.Header(), other, np.zeros(other.shape), np.ones(other.shape))
    with pytest.raises(RecipeError, match="odd.fits: WCS differs"):
        RECIPE.run({"DATACUBE_FINAL": [*paths, odd]}, RECIPE.validate({}), out)
    with pytest.raises(RecipeError, match="at least 2"):
        RECIPE.run({"DATACUBE_FINAL": paths[:1]}, RECIPE.validate({}), out)
    with pytest.raises(ValueError, match="nclip must be a number"):
        RECIPE.validate({"nclip": "a,b"})
    with pytest.raises(ValueError, match="nclip must be one positive number or 'low,high'"):
        RECIPE.validate({"nclip": "3,4,5"})
    assert RECIPE.validate({"nclip": "3,4"})["nclip"] == (3.0, 4.0)
    assert list(out.iterdir()) == []


def test_equals_mpdaf(tmp_path):
    mpdaf_obj = pytest.importorskip("mpdaf.obj", reason="mpdaf is not installed")
    paths, _ = _write_cubes(tmp_path, n=5)
    out = tmp_path / "out"
    out.mkdir()
    params = RECIPE.validate({"nclip": "3.0", "nmax": 2, "nstop": 2})
    RECIPE.run({"DATACUBE_FINAL": paths}, params, out)
    cube, expmap, statpix = mpdaf_obj.CubeList([str(p) for p in paths]).combine(nmax=2, nclip=3.0, nstop=2)
    with fits.open(out / "DATACUBE_FINAL.fits") as hdul:
        np.testing.assert_allclose(hdul["DATA"].data, cube.data.filled(np.nan), rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(hdul["STAT"].data, cube.var.filled(np.nan), rtol=1e-5, equal_nan=True)
    with fits.open(out / "EXPMAP_CUBE.fits") as hdul:
        np.testing.assert_array_equal(hdul["DATA"].data, expmap.data.filled(0))
    ours = Table.read(out / "STATPIX.fits")
    assert list(ours["NPIX_NAN"]) == list(statpix["NPIX_NAN"])
    assert list(ours["NPIX_REJECTED"]) == list(statpix["NPIX_REJECTED"])
