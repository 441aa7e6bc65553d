"""muse_scipost_make_cube and the cube grid: WCS, products, astropy/MPDAF, OUTPUT_WCS, errors."""

from __future__ import annotations

import shutil
import subprocess
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from test_resample import DEC0, RA0, SPAXEL_DEG, synthetic_pixtable

from recipes.base import RecipeError
from recipes.algorithms.cube import CubeGrid
from recipes.algorithms.projection import tan_deproject
from recipes.algorithms.resampling import grid_from_pixtable
from recipes.kernels.skycoords import POS_POSITIONED, spatial_coords
from recipes.steps.make_cube import RECIPE, run
from recipes.algorithms.pixtable import WCS_PIXEL, WCS_PROJECTED


def _flat(ra, dec, lam):
    return 50.0 + 0.01 * (lam - 6000.0)


def _point_source(ra_s, dec_s, sigma=0.8, flux=2000.0):
    def truth(ra, dec, lam):
        u = (ra - ra_s) * np.cos(np.deg2rad(dec_s)) / SPAXEL_DEG
        v = (dec - dec_s) / SPAXEL_DEG
        return 10.0 + flux * np.exp(-0.5 * (u**2 + v**2) / sigma**2) / (2 * np.pi * sigma**2) + 0 * lam

    return truth


def _run(tmp_path, frames, **params):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return run(frames, RECIPE.validate(params), out)


def test_wcs_round_trip_and_agreement_with_astropy():
    grid = CubeGrid(40, 30, 10, 20.3, 15.7, 150.0, -45.0, (-0.2 / 3600, 0.0, 0.0, 0.2 / 3600), 1.0, 4750.0, 1.25)
    wcs = WCS(grid.header(3))
    rng = np.random.default_rng(0)
    px, py = rng.uniform(-0.5, 39.5, 1000), rng.uniform(-0.5, 29.5, 1000)
    ra, dec = grid.pixel_to_world(px, py)
    a_ra, a_dec, a_lam = wcs.wcs_pix2world(px, py, np.zeros_like(px), 0)
    np.testing.assert_allclose(ra, a_ra, atol=1e-10)
    np.testing.assert_allclose(dec, a_dec, atol=1e-10)
    back_x, back_y = grid.world_to_pixel(ra, dec)
    assert np.abs(back_x - px).max() < 0.01 and np.abs(back_y - py).max() < 0.01  # spaxels
    assert np.abs(back_x - px).max() < 1e-6
    # the resampler's numba projection of positioned rows agrees with astropy
    xpos = (ra - 150.0).astype(np.float32)
    ypos = (dec + 45.0).astype(np.float32)
    fx, fy = spatial_coords(xpos, ypos, np.arange(px.size), POS_POSITIONED, 150.0, -45.0, grid.crval1, grid.crval2,
                            grid.crpix1, grid.crpix2, grid.cdinv)  # fmt: skip
    e_x, e_y, _ = wcs.wcs_world2pix(150.0 + xpos.astype(float), -45.0 + ypos.astype(float), np.full(px.size, 4750.0), 0)
    assert np.abs(fx - e_x).max() < 1e-6 and np.abs(fy - e_y).max() < 1e-6
    # spectral axis: AWAV in Angstrom, plane 0 at CRVAL3
    lam = wcs.spectral.pixel_to_world([0, 9]).to_value("Angstrom")  # astropy works in metres inside
    np.testing.assert_allclose(lam, [4750.0, 4750.0 + 9 * 1.25])


@pytest.mark.parametrize("state", ["positioned", WCS_PROJECTED])
def test_point_source_lands_on_its_spaxel(tmp_path, state):
    ra_s, dec_s = tan_deproject(1.3 * SPAXEL_DEG, -2.2 * SPAXEL_DEG, RA0, DEC0)
    pt = synthetic_pixtable(_point_source(ra_s, dec_s), nx=20, ny=18, nlam=10, state=state, seed=7, jitter=0.05)
    path = pt.write(tmp_path / "PIXTABLE_REDUCED_0001.fits")
    products = _run(tmp_path, {"PIXTABLE_REDUCED": [path]}, resample="drizzle")
    cube_path = next(p.path for p in products if p.tag == "DATACUBE_FINAL")
    with fits.open(cube_path) as hdul:
        data = hdul["DATA"].data
        wcs = WCS(hdul["DATA"].header).celestial
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # cube corners may hold no data
        image = np.nanmean(data, axis=0) - 10.0
    peak = np.unravel_index(np.nanargmax(image), image.shape)
    ex, ey = wcs.wcs_world2pix(ra_s, dec_s, 0)
    assert (peak[1], peak[0]) == (int(np.floor(ex + 0.5)), int(np.floor(ey + 0.5)))
    # centroid within a tenth of a spaxel of the injected position
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    box = (np.abs(xx - ex) < 5) & (np.abs(yy - ey) < 5) & np.isfinite(image)
    w = np.where(box, image, 0)
    cx, cy = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
    assert abs(cx - ex) < 0.1 and abs(cy - ey) < 0.1


def test_products_follow_the_drs_layout_and_open_in_astropy(tmp_path):
    pt = synthetic_pixtable(_flat, nx=12, ny=10, nlam=16, seed=1)
    path = pt.write(tmp_path / "PIXTABLE_REDUCED_0001.fits")
    products = _run(tmp_path, {"PIXTABLE_REDUCED": [path]}, stacked=True, format="xCube")
    tags = [p.tag for p in products]
    assert tags == ["DATACUBE_FINAL", "IMAGE_FOV", "OBJECT_RESAMPLED"]
    cube_path = products[0].path
    with fits.open(cube_path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "DATA", "STAT", "WHITE"]
        assert hdul[0].data is None and hdul[0].header["HIERARCH ESO PRO CATG"] == "DATACUBE_FINAL"
        assert hdul[0].header["HIERARCH ESO PRO REC1 ID"] == "muse_scipost_make_cube"
        h = hdul["DATA"].header
        assert (h["CTYPE1"], h["CTYPE2"], h["CTYPE3"], h["CUNIT3"]) == ("RA---TAN", "DEC--TAN", "AWAV", "Angstrom")
        assert h["CD1_1"] == pytest.approx(-0.2 / 3600) and h["CD2_2"] == pytest.approx(0.2 / 3600)
        assert h["CD3_3"] == 1.25 and h["CRPIX3"] == 1
        assert h["BITPIX"] == -32 and hdul["DATA"].data.ndim == 3
        assert hdul["STAT"].header["HDUCLAS2"] == "ERROR" and hdul["STAT"].header["HDUCLAS3"] == "MSE"
        wcs = WCS(h)
        # astropy normalises the spectral unit to metres: CUNIT3 Angstrom was understood
        assert wcs.naxis == 3 and wcs.wcs.ctype[2] == "AWAV" and wcs.wcs.cd[2, 2] == pytest.approx(1.25e-10)
        data = hdul["DATA"].data
        lam = wcs.spectral.pixel_to_world(np.arange(data.shape[0])).to_value("Angstrom")
        # the flat source: DATA reproduces 50 + 0.01 (lam - 6000) plane by plane
        med = np.nanmedian(data, axis=(1, 2))
        np.testing.assert_allclose(med[1:-1], 50 + 0.01 * (lam[1:-1] - 6000), rtol=1e-4)
        assert np.all(hdul["STAT"].data[np.isfinite(data)] > 0)
    with fits.open(products[1].path) as hdul:
        assert hdul[0].header["HIERARCH ESO DRS MUSE FILTER NAME"] == "white"
        assert WCS(hdul["DATA"].header).naxis == 2
        assert 0 < hdul[0].header["HIERARCH ESO DRS MUSE FILTER FRACTION"] < 5
    with fits.open(products[2].path) as hdul:
        assert hdul["DATA"].data.shape[1] == 12 * 10  # one column per (IFU, slice, CCD x)


def test_cube_opens_in_mpdaf(tmp_path):
    mpdaf_obj = pytest.importorskip("mpdaf.obj", reason="mpdaf is not installed")
    pt = synthetic_pixtable(_flat, nx=12, ny=10, nlam=16, seed=2)
    path = pt.write(tmp_path / "PIXTABLE_REDUCED_0001.fits")
    products = _run(tmp_path, {"PIXTABLE_REDUCED": [path]})
    cube = mpdaf_obj.Cube(str(products[0].path))
    assert cube.shape[0] >= 16 and cube.var is not None
    assert cube.wcs.get_step(unit="arcsec") == pytest.approx([0.2, 0.2])
    with fits.open(products[0].path) as hdul:
        crval3 = hdul["DATA"].header["CRVAL3"]
    assert cube.wave.get_start(unit="Angstrom") == pytest.approx(crval3)
    assert cube.wave.get_step(unit="Angstrom") == pytest.approx(1.25)
    dec, ra = cube.wcs.pix2sky([[0, 0]])[0]
    assert abs(ra - RA0) < 0.01 and abs(dec - DEC0) < 0.01
    image = mpdaf_obj.Image(str(products[1].path))  # IMAGE_FOV
    assert image.shape == cube.shape[1:]


def test_output_wcs_puts_two_exposures_on_one_grid(tmp_path):
    a = synthetic_pixtable(_flat, nx=12, ny=10, nlam=12, seed=3).write(tmp_path / "a.fits")
    b = synthetic_pixtable(_flat, nx=12, ny=10, nlam=12, seed=4, shift=(2.0, 1.0)).write(tmp_path / "b.fits")
    first = _run(tmp_path, {"PIXTABLE_REDUCED": [a]})[0].path
    ref = tmp_path / "OUTPUT_WCS.fits"
    first.rename(ref)
    second = _run(tmp_path, {"PIXTABLE_REDUCED": [b], "OUTPUT_WCS": [ref]})[0].path
    with fits.open(ref) as h1, fits.open(second) as h2:
        assert h1["DATA"].data.shape == h2["DATA"].data.shape
        for key in ("CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CRVAL3", "CD3_3"):
            assert h1["DATA"].header[key] == h2["DATA"].header[key]


def test_output_wcs_that_misses_the_data_is_an_error(tmp_path):
    pt = synthetic_pixtable(_flat, nx=8, ny=8, nlam=8, seed=5)
    path = pt.write(tmp_path / "pt.fits")
    header = CubeGrid(20, 20, 10, 1.0, 1.0, RA0 + 1.0, DEC0, (-SPAXEL_DEG, 0, 0, SPAXEL_DEG), 1.0, 6000.0, 1.25).header()
    far = tmp_path / "far_wcs.fits"
    fits.PrimaryHDU(np.zeros((10, 20, 20), np.float32), header=header).writeto(far)
    with pytest.raises(RecipeError, match="far_wcs.fits.*does not overlap"):
        _run(tmp_path, {"PIXTABLE_REDUCED": [path], "OUTPUT_WCS": [far]})


def test_filter_list_images_and_unknown_filters(tmp_path):
    pt = synthetic_pixtable(_flat, nx=8, ny=8, nlam=40, seed=6)
    path = pt.write(tmp_path / "pt.fits")
    flist = tmp_path / "filter_list.fits"
    curve = Table({"lambda": [6010.0, 6015.0, 6035.0, 6040.0], "throughput": [0.0, 1.0, 1.0, 0.0]})
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(curve, name="Narrow_6015")]).writeto(flist)
    products = _run(tmp_path, {"PIXTABLE_REDUCED": [path], "FILTER_LIST": [flist]}, filter="white,Narrow_6015")
    images = [p for p in products if p.tag == "IMAGE_FOV"]
    assert [p.qc["FILTER"] for p in images] == ["white", "Narrow_6015"]
    with fits.open(images[1].path) as hdul:
        image = hdul["DATA"].data
        assert hdul[0].header["HIERARCH ESO DRS MUSE FILTER FRACTION"] == pytest.approx(100.0, abs=0.5)
    # the filter-weighted mean of 50 + 0.01 (lam - 6000) over a filter centred on 6025
    assert np.nanmedian(image) == pytest.approx(50.25, abs=0.01)
    with pytest.raises(RecipeError, match="(?i)filter_list.fits.*unknown filter 'Johnson_V'.*narrow_6015"):
        _run(tmp_path, {"PIXTABLE_REDUCED": [path], "FILTER_LIST": [flist]}, filter="Johnson_V")
    with pytest.raises(RecipeError, match="unknown filter 'Johnson_V'"):
        _run(tmp_path, {"PIXTABLE_REDUCED": [path]}, filter="Johnson_V")


def test_pixel_unit_tables_give_pixel_axes(tmp_path):
    pt = synthetic_pixtable(lambda x, y, lam: 7.0 + 0 * lam, nx=9, ny=7, nlam=8, state=WCS_PIXEL, seed=8)
    path = pt.write(tmp_path / "PIXTABLE_OBJECT_0001-01.fits")
    products = _run(tmp_path, {"PIXTABLE_OBJECT": [path]}, lambdamin=6002.0, lambdamax=6006.0)
    with fits.open(products[0].path) as hdul:
        h = hdul["DATA"].header
        assert (h["CTYPE1"], h["CTYPE2"], h["CD1_1"], h["CD2_2"]) == ("PIXEL", "PIXEL", 1.0, 1.0)
        assert h["CRVAL3"] >= 6002.0
        data = hdul["DATA"].data
        np.testing.assert_allclose(data[np.isfinite(data)], 7.0, rtol=1e-6)


def test_offset_list_shifts_the_exposure(tmp_path):
    pt = synthetic_pixtable(_point_source(RA0, DEC0), nx=16, ny=16, nlam=6, seed=9, jitter=0.05)
    path = pt.write(tmp_path / "pt.fits")
    dra = 2 * SPAXEL_DEG / np.cos(np.deg2rad(DEC0))  # two spaxels east
    offsets = Table({"DATE_OBS": [pt.header["DATE-OBS"]], "MJD_OBS": [pt.header["MJD-OBS"]],
                     "RA_OFFSET": [dra], "DEC_OFFSET": [0.0], "FLUX_SCALE": [2.0]})  # fmt: skip
    olist = tmp_path / "OFFSET_LIST.fits"
    offsets.write(olist)
    plain = _run(tmp_path, {"PIXTABLE_REDUCED": [path]})[0].path
    plain.rename(tmp_path / "plain.fits")
    moved = _run(tmp_path, {"PIXTABLE_REDUCED": [path], "OFFSET_LIST": [olist]})[0].path

    def centre(p):
        with fits.open(p) as hdul, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # empty cube corners
            img = np.nanmean(hdul["DATA"].data, axis=0)
            wcs = WCS(hdul["DATA"].header).celestial
            hdr = hdul[0].header
        py, px = np.unravel_index(np.nanargmax(img), img.shape)
        return wcs.wcs_pix2world(px, py, 0), np.nanmax(img), hdr

    (ra1, _), peak1, _ = centre(tmp_path / "plain.fits")
    (ra2, _), peak2, hdr = centre(moved)
    # the offset is subtracted from the exposure's reference: the source moves west by dra
    assert (ra1 - ra2) == pytest.approx(dra, abs=0.3 * SPAXEL_DEG)
    assert peak2 == pytest.approx(2 * peak1, rel=0.05)
    assert hdr["HIERARCH ESO DRS MUSE OFFSET1 DRA"] == pytest.approx(dra)


@pytest.mark.parametrize(
    "params,match",
    [
        ({"lambdamin": 7000.0, "lambdamax": 6000.0}, "lambdamin"),
        ({"pixfrac": "0.8,0.8,0.8,0.8"}, "pixfrac"),
        ({"pixfrac": "0.8,0"}, "pixfrac"),
    ],
)
def test_bad_parameters_are_refused_at_validation(params, match):
    with pytest.raises(ValueError, match=match) as info:
        RECIPE.validate(params)
    assert "\n" not in str(info.value)


def test_no_rows_in_the_wavelength_range_is_a_one_line_error(tmp_path):
    path = synthetic_pixtable(_flat, nx=4, ny=4, nlam=4, seed=10).write(tmp_path / "pt.fits")
    with pytest.raises(RecipeError, match="no pixel-table rows") as info:
        _run(tmp_path, {"PIXTABLE_REDUCED": [path]}, lambdamin=9000.0, lambdamax=9500.0)
    assert "\n" not in str(info.value)


def test_parameter_declaration_matches_the_drs():
    defaults = RECIPE.defaults()
    assert defaults == {
        "lambdamin": 4000.0, "lambdamax": 10000.0, "resample": "drizzle", "dx": 0.0, "dy": 0.0, "dlambda": 0.0,
        "crtype": "median", "crsigma": 15.0, "rc": 1.25, "pixfrac": (0.8, 0.8), "ld": 1, "format": "Cube",
        "stacked": False, "filter": ("white",),
    }  # fmt: skip
    with pytest.raises(ValueError, match="resample"):
        RECIPE.validate({"resample": "cubic"})
    with pytest.raises(ValueError, match="ld"):
        RECIPE.validate({"ld": 0})


def test_mixed_instrument_modes_are_rejected(tmp_path):
    a = synthetic_pixtable(_flat, nx=4, ny=4, nlam=4, seed=11)
    b = synthetic_pixtable(_flat, nx=4, ny=4, nlam=4, seed=12)
    b.header["HIERARCH ESO INS MODE"] = "NFM-AO-N"
    pa, pb = a.write(tmp_path / "a.fits"), b.write(tmp_path / "b.fits")
    with pytest.raises(RecipeError, match="b.fits: INS MODE 'NFM-AO-N'"):
        _run(tmp_path, {"PIXTABLE_REDUCED": [pa, pb]})


def test_output_wcs_with_a_log_wavelength_axis(tmp_path):
    pt = synthetic_pixtable(lambda x, y, lam: 3.0 + 0 * lam, nx=8, ny=8, nlam=30, seed=13)
    path = pt.write(tmp_path / "pt.fits")
    grid = grid_from_pixtable(pt)
    header = grid.header(3)
    header["CTYPE3"] = "AWAV-LOG"
    header["CRVAL3"], header["CD3_3"] = 6005.0, 1.0
    image_fov = tmp_path / "log_wcs.fits"  # a header without NAXISn: dimensions fitted to the data
    fits.PrimaryHDU(header=header).writeto(image_fov)
    cube_path = _run(tmp_path, {"PIXTABLE_REDUCED": [path], "OUTPUT_WCS": [image_fov]}, resample="linear")[0].path
    with fits.open(cube_path) as hdul:
        h = hdul["DATA"].header
        assert h["CTYPE3"] == "AWAV-LOG"
        data = hdul["DATA"].data
        lam = WCS(h).spectral.pixel_to_world(np.arange(data.shape[0])).to_value("Angstrom")
    # planes follow lambda = CRVAL3 exp(CD3_3 (p - CRPIX3) / CRVAL3) from 6005 A up to the data's end
    np.testing.assert_allclose(lam[:3], 6005.0 * np.exp(np.arange(3) / 6005.0), rtol=1e-9)
    assert lam[-1] == pytest.approx(float(pt.lam.max()), abs=1.0)
    np.testing.assert_allclose(data[np.isfinite(data)], 3.0, rtol=1e-6)


@pytest.mark.drs
@pytest.mark.skipif(shutil.which("esorex") is None, reason="esorex not on PATH (apt-get install esorex cpl-plugin-muse)")
def test_same_cube_as_esorex_muse_scipost_make_cube(tmp_path):
    """The DRS reads our pixel table and, without CR rejection, makes the same cube."""

    def truth(x, y, lam):
        return 100.0 + 20 * np.sin(x / 5.0) * np.cos(y / 4.0) + 0.01 * (lam - 6000)

    pt = synthetic_pixtable(truth, nx=30, ny=20, nlam=30, state=WCS_PIXEL, seed=5, noise=True)
    pt.header["INSTRUME"], pt.header["OBJECT"] = "MUSE", "synthetic"
    path = pt.write(tmp_path / "PIXTABLE_OBJECT_0001-01.fits")
    sof = tmp_path / "cube.sof"
    sof.write_text(f"{path} PIXTABLE_OBJECT\n")
    for method in ("nearest", "linear", "quadratic", "renka", "lanczos", "drizzle"):
        drs_dir = tmp_path / f"drs_{method}"
        drs_dir.mkdir()
        proc = subprocess.run(
            ["esorex", f"--output-dir={drs_dir}", f"--log-dir={drs_dir}", "muse_scipost_make_cube",
             "--crsigma=-1", f"--resample={method}", str(sof)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        drs_cube = drs_dir / "DATACUBE_FINAL.fits"
        if not drs_cube.exists():
            pytest.skip(f"esorex muse_scipost_make_cube did not run: {proc.stdout[-300:]}")
        ours = _run(tmp_path, {"PIXTABLE_OBJECT": [path]}, resample=method, crsigma=-1.0)[0].path
        with fits.open(drs_cube) as drs, fits.open(ours) as us:
            for key in ("NAXIS1", "NAXIS2", "NAXIS3", "CTYPE1", "CRPIX1", "CRPIX2", "CRPIX3", "CD3_3"):
                assert drs["DATA"].header[key] == us["DATA"].header[key], (method, key)
            for key in ("CRVAL1", "CRVAL2", "CRVAL3"):
                assert drs["DATA"].header[key] == pytest.approx(us["DATA"].header[key], abs=1e-5), (method, key)
            for ext in ("DATA", "STAT"):
                np.testing.assert_allclose(us[ext].data, drs[ext].data, rtol=1e-6, equal_nan=True, err_msg=method)
