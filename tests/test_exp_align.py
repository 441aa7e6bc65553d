"""muse_exp_align (drs), image_align (image) and `musered exp-align`, on synthetic IMAGE_FOV.

The images are rendered from a known catalogue (Moffat sources, noise, background) on a
MUSE-like 0.2" grid whose WCS carries the rotation (0/90/180/270 deg) and an injected
pointing error: the header's CRVAL is the true pointing plus the error, so the sources'
apparent RA/Dec are the true ones plus the error. Aligning must find the errors relative to
the first exposure; subtracting the offsets (the DRS convention) must put every source back.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits
from astropy.table import Table
from click.testing import CliRunner

from recipes.base import RecipeError
from recipes.algorithms.cube import CubeGrid, Filter, white_filter, write_image_fov
from recipes.algorithms.alignment import align_images
from recipes.algorithms.fov import mosaic, read_fov, select_fovs
from recipes.algorithms.offsets_fit import compute_offsets
from recipes.steps.exp_align import DETECTION, RECIPE
from recipes.steps.image_align import RECIPE as IMAGE_RECIPE
from recipes.algorithms.sourcedetect import background, detect_sources

sys.path.insert(0, str(Path(__file__).parent))
from conftest import write_raw_fits  # noqa: E402

RA0, DEC0 = 150.0, -30.0
COSD = np.cos(np.deg2rad(DEC0))
SPAXEL = 0.2  # arcsec
FWHM_PIX = 3.5


def moffat_image(nx: int, ny: int, xs, ys, fluxes, fwhm: float = FWHM_PIX, beta: float = 2.5) -> np.ndarray:
    """Sum of unit-normalised Moffat profiles (0-based pixel centres), scaled by ``fluxes``."""
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    norm = (beta - 1.0) / (np.pi * alpha ** 2)
    image = np.zeros((ny, nx))
    for x, y, f in zip(xs, ys, fluxes):
        image += f * norm * (1.0 + ((xx - x) ** 2 + (yy - y) ** 2) / alpha ** 2) ** (-beta)
    return image


def catalogue(rng, n: int = 25, half: float = 10.0):
    """RA, Dec [deg] and flux of ``n`` sources within ±half arcsec of the field centre."""
    return (RA0 + rng.uniform(-half, half, n) / 3600.0 / COSD, DEC0 + rng.uniform(-half, half, n) / 3600.0,
            rng.uniform(800.0, 4000.0, n))


def exposure_grid(pointing, rotation: float, n: int) -> CubeGrid:
    th = np.deg2rad(rotation)
    c, s = np.cos(th), np.sin(th)
    d = SPAXEL / 3600.0
    cd = (-d * c, d * s, d * s, d * c)   # the north-up / east-left grid, rotated by `rotation`
    return CubeGrid(n, n, 1, (n + 1) / 2, (n + 1) / 2, pointing[0], pointing[1], cd, 1, 5000.0, 1.0)


def write_exposure(path: Path, index: int, cat, rng, *, dither=(0.0, 0.0), error=(0.0, 0.0), rotation=0.0,
                   n: int = 110, spurious: int = 0, cosmics: int = 0, scale: float = 1.0, noise: float = 0.5,
                   filter_name: str = "white", nan_rows: int = 0) -> Path:  # fmt: skip
    """An IMAGE_FOV of exposure ``index``; ``dither``/``error`` in arcsec (east, north).

    ``spurious`` extra point sources are present in this exposure only; ``cosmics`` single
    hot pixels.
    """
    true = (RA0 + dither[0] / 3600.0 / COSD, DEC0 + dither[1] / 3600.0)
    grid = exposure_grid(true, rotation, n)
    px, py = grid.world_to_pixel(cat[0], cat[1])
    fluxes = np.asarray(cat[2]) * scale
    if spurious:
        px = np.concatenate([px, rng.uniform(8, n - 8, spurious)])
        py = np.concatenate([py, rng.uniform(8, n - 8, spurious)])
        fluxes = np.concatenate([fluxes, rng.uniform(800.0, 3000.0, spurious)])
    image = moffat_image(n, n, px, py, fluxes) + rng.normal(0.0, noise, (n, n)) + 3.0
    for _ in range(cosmics):
        image[rng.integers(6, n - 6), rng.integers(6, n - 6)] += rng.uniform(100.0, 400.0)
    if nan_rows:
        image[:nan_rows] = np.nan
    header_grid = exposure_grid((true[0] + error[0] / 3600.0 / COSD, true[1] + error[1] / 3600.0), rotation, n)
    date = dt.datetime(2017, 6, 16, 1, 0, 0) + dt.timedelta(minutes=15 * index)
    primary = fits.Header()
    primary["DATE-OBS"] = date.isoformat(timespec="milliseconds")
    primary["MJD-OBS"] = 57920.0 + (date - dt.datetime(2017, 6, 16)).total_seconds() / 86400.0
    primary["EXPTIME"] = 600.0
    primary["OBJECT"] = "FIELD"
    primary["HIERARCH ESO INS MODE"] = "WFM-NOAO-N"
    white = white_filter()
    flt = white if filter_name == "white" else Filter(filter_name, white.lam, white.throughput)
    return write_image_fov(path, primary, header_grid, image.astype(np.float32), flt, 100.0)


ERRORS = [(0.0, 0.0), (1.1, -0.7), (-0.6, 0.9), (0.4, 0.5)]      # arcsec, exposure 0 = reference
DITHERS = [(0.0, 0.0), (1.5, 0.3), (-1.0, 1.4), (0.6, -1.6)]
ROTATIONS = [0.0, 90.0, 180.0, 270.0]


@pytest.fixture
def field(tmp_path):
    """Four exposures, rotations 0/90/180/270, 20 % spurious sources and cosmic rays each;
    the third has NaN rows along one edge (as the corners of a real field)."""
    rng = np.random.default_rng(11)
    cat = catalogue(rng)
    paths = [write_exposure(tmp_path / f"IMAGE_FOV_{i}.fits", i, cat, rng, dither=DITHERS[i], error=ERRORS[i],
                            rotation=ROTATIONS[i], spurious=5, cosmics=6, nan_rows=8 if i == 2 else 0)
             for i in range(4)]
    return paths, cat


def offsets_arcsec(path: Path) -> np.ndarray:
    t = Table.read(path)
    return np.column_stack([np.asarray(t["RA_OFFSET"]) * 3600.0 * COSD, np.asarray(t["DEC_OFFSET"]) * 3600.0])


# --------------------------------------------------------------------------------------
# detection


def test_background_ignores_the_darkest_pixels():
    rng = np.random.default_rng(0)
    image = rng.normal(10.0, 1.0, (100, 100))
    image[:5, :] = -1000.0                     # 5 % dead pixels are ignored
    bkg = background(image, 0.05, 0.1)
    assert bkg.npix == int(0.1 * (10000 - 500))
    assert 7.5 < bkg.median < 9.0               # the darkest tenth of N(10, 1)
    assert 0.0 < bkg.mad < 0.5


def test_detection_finds_stars_and_rejects_cosmics():
    rng = np.random.default_rng(1)
    n = 120
    xs, ys = rng.uniform(12, n - 12, 20), rng.uniform(12, n - 12, 20)
    image = moffat_image(n, n, xs, ys, rng.uniform(500, 3000, 20)) + rng.normal(0, 0.5, (n, n)) + 5.0
    hot = [(30, 40), (90, 15), (60, 100)]
    for y, x in hot:
        image[y, x] += 400.0
    det = detect_sources(image, fwhm=FWHM_PIX, threshold=15.0, srcmin=5, srcmax=80)
    s = det.sources
    assert 5 <= len(s) <= 80
    for y, x in hot:
        assert np.min(np.hypot(s.x - x, s.y - y)) > 2.0, "a cosmic ray passed the sharpness cut"
    d = np.array([np.min(np.hypot(xs - x, ys - y)) for x, y in zip(s.x, s.y)])
    assert np.median(d) < 0.1                   # centroids of real stars [pix]
    assert np.all((s.sharpness >= 0.2) & (s.sharpness <= 1.0))


def test_adaptive_threshold_moves_until_the_count_fits():
    rng = np.random.default_rng(2)
    n = 120
    xs, ys = rng.uniform(12, n - 12, 30), rng.uniform(12, n - 12, 30)
    image = moffat_image(n, n, xs, ys, np.geomspace(200, 5000, 30)) + rng.normal(0, 0.5, (n, n))
    few = detect_sources(image, fwhm=FWHM_PIX, threshold=1000.0, step=5.0, srcmin=10, srcmax=12)
    assert 10 <= len(few.sources) <= 12 and few.threshold < 1000.0 and few.iterations > 0
    many = detect_sources(image, fwhm=FWHM_PIX, threshold=0.001, step=1.0, srcmin=3, srcmax=5)
    assert 3 <= len(many.sources) <= 5 and many.threshold > 0.001
    with pytest.raises(RecipeError, match="no threshold gives"):
        detect_sources(np.random.default_rng(3).normal(0, 1, (60, 60)), fwhm=FWHM_PIX, srcmin=5, iterations=10)


def test_sources_near_bad_pixels_are_dropped():
    n = 80
    image = moffat_image(n, n, [40.0, 40.0], [20.0, 60.0], [3000.0, 3000.0]) + 1.0
    image[64:, :] = np.nan                      # the source at y=60 is 4 pix from NaN
    det = detect_sources(image, fwhm=FWHM_PIX, threshold=1.0, srcmin=1, bpixdistance=5.0)
    assert len(det.sources) == 1 and abs(det.sources.y[0] - 20.0) < 0.2


# --------------------------------------------------------------------------------------
# offsets


def test_compute_offsets_from_catalogues_with_outliers():
    rng = np.random.default_rng(4)
    stars = rng.uniform(-30, 30, (40, 2))
    truth = np.array([[0.0, 0.0], [2.5, -1.3], [-0.7, 3.1]])
    positions, fluxes = [], []
    for k in range(3):
        keep = rng.random(40) < 0.85
        p = stars[keep] + truth[k] + rng.normal(0, 0.02, (keep.sum(), 2))
        p = np.vstack([p, rng.uniform(-30, 30, (8, 2))])           # ~20 % spurious
        positions.append(p)
        fluxes.append(np.ones(len(p)))
    sol = compute_offsets(positions, fluxes, [30.0, 4.0, 2.0, 0.8], 60, True)
    np.testing.assert_allclose(np.column_stack([sol.xi, sol.eta]), truth, atol=0.02)
    assert sol.matched.all()


@pytest.mark.parametrize("seed", range(12))
def test_simulated_mini_field_aligns_every_rotated_exposure(seed):
    """The simulator's mini field (14.4″ × 4.8″) seen at 0/90/180/270° with the plan's
    dithers overlaps only in a central square: its stars (sources.make_scene) must still
    give each exposure ≥ srcmin = 5 detections and tie all four together, with ~20 %
    spurious detections added, to 0.05″."""
    import math

    from musered.simulate.plan import DITHER
    from musered.simulate.sources import field_to_sky, make_scene

    rng = np.random.default_rng(seed)
    scene = make_scene(np.random.default_rng([seed, 4]), (14.4, 4.8))
    stars = np.array([(s.xi, s.eta) for s in scene.stars])
    margin = 0.7          # detection keeps the kernel radius (3 pix) off the image edge
    positions, fluxes, injected = [], [], []
    for k in range(4):
        dither = np.zeros(2) if k == 0 else rng.uniform(-DITHER, DITHER, 2)
        error = rng.normal(0, 0.3, 2)
        centre = dither + error
        t = math.radians(90 * k)
        d = stars - centre        # field coordinates: field_to_sky is its own inverse
        fx, fy = -d[:, 0] * math.cos(t) + d[:, 1] * math.sin(t), d[:, 0] * math.sin(t) + d[:, 1] * math.cos(t)
        seen = (np.abs(fx) <= 7.2 - margin) & (np.abs(fy) <= 2.4 - margin)
        assert seen.sum() >= 5, (k, seen.sum())
        # header frame: stars appear displaced by minus the pointing error
        found = stars[seen] - error + rng.normal(0, 0.02, (seen.sum(), 2))
        n_fake = max(1, round(0.25 * seen.sum()))                 # ≈ 20 % of the detections
        fx_fake = rng.uniform(-7.2 + margin, 7.2 - margin, n_fake)
        fy_fake = rng.uniform(-2.4 + margin, 2.4 - margin, n_fake)
        fake = np.column_stack(field_to_sky(fx_fake / 0.2, fy_fake / 0.2, 90 * k)) + centre - error
        positions.append(np.vstack([found, fake]))
        fluxes.append(np.concatenate([np.ones(seen.sum()), rng.uniform(0.2, 1.0, n_fake)]))
        injected.append(error)
    sol = compute_offsets(positions, fluxes, RECIPE.validate({})["rsearch"], 60, True)
    assert sol.matched.all() and sol.nmatch.min() >= 2
    expected = -(np.array(injected) - injected[0])
    assert np.abs(np.column_stack([sol.xi, sol.eta]) - expected).max() < 0.05


def test_round_trip_recovers_injected_pointing_errors(field, tmp_path):
    paths, cat = field
    out = tmp_path / "out"
    out.mkdir()
    products = RECIPE.run({"IMAGE_FOV": paths}, RECIPE.validate({}), out)
    assert {p.tag for p in products} == {"OFFSET_LIST", "SOURCE_LIST", "PREVIEW_FOV"}
    found = offsets_arcsec(out / "OFFSET_LIST.fits")
    expected = np.array(ERRORS) - np.array(ERRORS[0])
    assert np.max(np.hypot(*(found - expected).T)) < 0.05
    table = Table.read(out / "OFFSET_LIST.fits")
    assert table.colnames == ["DATE_OBS", "MJD_OBS", "RA_OFFSET", "DEC_OFFSET", "FLUX_SCALE"]
    raw = fits.getdata(out / "OFFSET_LIST.fits", 1)
    assert raw["RA_OFFSET"][0] == 0.0 and np.all(np.isnan(raw["FLUX_SCALE"]))   # as the DRS writes it

    # Applying the offsets (subtracting them from the WCS reference) puts every source back.
    for k, path in enumerate(paths):
        with fits.open(path) as hdul:
            hdr = hdul["DATA"].header
            hdr["CRVAL1"] -= float(table["RA_OFFSET"][k])
            hdr["CRVAL2"] -= float(table["DEC_OFFSET"][k])
            fixed = tmp_path / f"fixed_{k}.fits"
            hdul.writeto(fixed)
        im = read_fov(fixed)
        det = detect_sources(im.data, fwhm=5.0, srcmax=80)
        ra, dec = im.pixel_to_world(det.sources.x, det.sources.y)
        d = np.hypot((ra[:, None] - cat[0][None, :]) * COSD, dec[:, None] - cat[1][None, :]).min(axis=1) * 3600
        real = d < 1.0                           # the injected spurious sources are elsewhere
        assert real.sum() >= 15
        assert np.median(d[real]) < 0.05, f"exposure {k}: sources {np.median(d[real]):.3f} arcsec off"

    # SOURCE_LIST: DRS columns, corrected positions on the catalogue
    sl = Table.read(out / "SOURCE_LIST_0002.fits")
    assert sl.colnames == ["Id", "X", "Y", "Flux", "Sharpness", "Roundness", "RA", "DEC", "RA_CORR", "DEC_CORR"]
    np.testing.assert_allclose(np.asarray(sl["RA"] - sl["RA_CORR"]), table["RA_OFFSET"][1])
    head = fits.getheader(out / "OFFSET_LIST.fits")
    assert head["ESO PRO CATG"] == "OFFSET_LIST" and head["ESO QC EXPALIGN NOMATCH"] == 0
    assert head["ESO QC EXPALIGN NDET1"] >= 5


def test_preview_is_a_mosaic_of_the_corrected_images(field, tmp_path):
    paths, cat = field
    images = select_fovs(paths, "white")
    params = RECIPE.validate({})
    result = align_images(images, params["rsearch"], params["nbins"], params["weight"],
                          **{key: params[key] for key in DETECTION})
    from astropy.wcs import WCS

    preview, expmap, header = mosaic(images, result.ra_offset, result.dec_offset)
    assert np.nanmax(expmap) == 4 * 600.0
    wcs = WCS(header)
    x, y = wcs.all_world2pix(cat[0], cat[1], 0)
    # the brightest catalogue star is a peak of the mosaic at its true position (nearest pixel)
    k = int(np.argmax(cat[2]))
    ix, iy = int(np.rint(x[k])), int(np.rint(y[k]))
    box = preview[iy - 3:iy + 4, ix - 3:ix + 4]
    assert np.unravel_index(np.nanargmax(box), box.shape) in {(3, 3), (2, 3), (3, 2), (4, 3), (3, 4)}


def test_bad_inputs_are_one_line_errors(tmp_path):
    rng = np.random.default_rng(5)
    cat = catalogue(rng)
    one = write_exposure(tmp_path / "a.fits", 0, cat, rng)
    with pytest.raises(RecipeError, match="at least 2 IMAGE_FOV"):
        RECIPE.run({"IMAGE_FOV": [one]}, RECIPE.validate({}), tmp_path)
    twin = write_exposure(tmp_path / "b.fits", 0, cat, rng)
    with pytest.raises(RecipeError, match="same MJD-OBS"):
        RECIPE.run({"IMAGE_FOV": [one, twin]}, RECIPE.validate({}), tmp_path)
    blank = []
    for i in range(2):
        path = write_exposure(tmp_path / f"blank{i}.fits", i, ([], [], []), rng, noise=0.0)
        blank.append(path)
    with pytest.raises(RecipeError, match=r"blank0.fits: no threshold gives 5\.\.80"):
        RECIPE.run({"IMAGE_FOV": blank}, RECIPE.validate({"iterations": 50}), tmp_path)
    other = write_exposure(tmp_path / "c.fits", 1, cat, rng, filter_name="Johnson_V")
    with pytest.raises(RecipeError, match="at least 2 IMAGE_FOV of filter 'white'"):
        RECIPE.run({"IMAGE_FOV": [one, other]}, RECIPE.validate({}), tmp_path)
    (tmp_path / "broken.fits").write_text("not fits")
    with pytest.raises(RecipeError, match="broken.fits: cannot read IMAGE_FOV"):
        RECIPE.run({"IMAGE_FOV": [one, tmp_path / "broken.fits"]}, RECIPE.validate({}), tmp_path)
    with pytest.raises(ValueError, match="rsearch must be a number"):
        RECIPE.validate({"rsearch": "a,b"})
    with pytest.raises(ValueError, match="rsearch must list positive radii"):
        RECIPE.validate({"rsearch": "30,-1"})
    with pytest.raises(ValueError, match="filter names the one IMAGE_FOV filter"):
        RECIPE.validate({"filter": "white,Johnson_V"})
    with pytest.raises(ValueError, match="override_detection"):
        RECIPE.validate({"override_detection": True})


def test_declaration_matches_the_drs():
    defaults = RECIPE.defaults()
    assert defaults["rsearch"] == (30.0, 4.0, 2.0, 0.8) and defaults["nbins"] == 60 and defaults["weight"] is True
    assert (defaults["fwhm"], defaults["threshold"], defaults["bkgignore"], defaults["bkgfraction"]) == \
        (5.0, 15.0, 0.05, 0.1)
    assert (defaults["step"], defaults["iterations"], defaults["srcmin"], defaults["srcmax"]) == (0.5, 100000, 5, 80)
    assert (defaults["roundmin"], defaults["roundmax"], defaults["sharpmin"], defaults["sharpmax"]) == \
        (-1.0, 1.0, 0.2, 1.0)
    assert defaults["bpixdistance"] == 5.0 and defaults["expmap"] is False
    assert RECIPE.group == "dataset" and RECIPE.inputs == ("IMAGE_FOV",)


def test_expmap_product(field, tmp_path):
    paths, _ = field
    products = RECIPE.run({"IMAGE_FOV": paths[:2]}, RECIPE.validate({"expmap": True}), tmp_path)
    expmap = next(p for p in products if p.tag == "EXPOSURE_MAP")
    head = fits.getheader(expmap.path)
    assert head["ESO QC EXPALIGN EXPTIME MAX"] == 1200.0


# --------------------------------------------------------------------------------------
# image method


def write_reference(path: Path, cat, spaxel: float = 0.05, n: int = 520) -> Path:
    """A sharp 'HST' image of the catalogue (0.05" pixels, north up), in units such that
    averaging it onto 0.2" pixels gives the MUSE pixel values (flux × 16 per source)."""
    grid = CubeGrid(n, n, 1, (n + 1) / 2, (n + 1) / 2, RA0, DEC0, (-spaxel / 3600, 0.0, 0.0, spaxel / 3600),
                    1, 5000.0, 1.0)
    px, py = grid.world_to_pixel(cat[0], cat[1])
    image = moffat_image(n, n, px, py, np.asarray(cat[2]) * (SPAXEL / spaxel) ** 2, fwhm=0.1 / spaxel)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image.astype(np.float32), header=grid.header(2))]).writeto(path)
    return path


def test_image_method_recovers_offsets_and_flux_scales(tmp_path):
    rng = np.random.default_rng(6)
    cat = catalogue(rng, 20)
    ref = write_reference(tmp_path / "hst.fits", cat)
    scales = [1.0, 0.8, 1.25]
    errors = [(0.3, -0.2), (1.0, -0.6), (-0.5, 0.8)]
    paths = [write_exposure(tmp_path / f"fov{i}.fits", i, cat, rng, dither=DITHERS[i], error=errors[i],
                            rotation=ROTATIONS[i], n=100, scale=scales[i], noise=0.2) for i in range(3)]
    out = tmp_path / "out"
    out.mkdir()
    products = IMAGE_RECIPE.run({"IMAGE_FOV": paths, "REFERENCE_IMAGE": [ref]}, IMAGE_RECIPE.validate({}), out)
    found = offsets_arcsec(products[0].path)
    assert np.max(np.hypot(*(found - np.array(errors)).T)) < 0.05       # absolute offsets
    fitted = np.array([products[0].qc[f"SCALE{k}"] for k in (1, 2, 3)])
    np.testing.assert_allclose(fitted / fitted[0], np.array(scales) / scales[0], rtol=0.03)
    flux_scale = np.asarray(Table.read(products[0].path)["FLUX_SCALE"])
    np.testing.assert_allclose(flux_scale * np.array(scales), np.median(scales), rtol=0.03)
    with pytest.raises(RecipeError, match="REFERENCE_IMAGE"):
        IMAGE_RECIPE.run({"IMAGE_FOV": paths}, IMAGE_RECIPE.validate({}), out)


# --------------------------------------------------------------------------------------
# the command


EXPOSURES = ["2017-06-16T01:00:00.000", "2017-06-16T01:15:00.000", "2017-06-16T01:30:00.000",
             "2017-06-17T01:00:00.000"]


@pytest.fixture
def project(tmp_path):
    """A settings file, raw exposures of dataset FIELD in the database, and an IMAGE_FOV
    from muse_scipost for each of them (the reduced rows inserted directly)."""
    from musered.cli import cli
    from musered.db import Database
    from musered.db.models import Reduced
    from musered.settings import load_settings

    rng = np.random.default_rng(7)
    cat = catalogue(rng)
    ref = write_reference(tmp_path / "hst.fits", cat)
    data = {"workdir": str(tmp_path), "datasets": {"FIELD": {"OBJECT": "FIELD"}},
            "recipes": {"image_align": {"frames": {"REFERENCE_IMAGE": str(ref)}}}}
    settings_path = tmp_path / "settings.yml"
    settings_path.write_text(yaml.safe_dump(data))
    for name in EXPOSURES:
        write_raw_fits(tmp_path / "raw" / f"MUSE.{name}.fits", OBJECT="FIELD")
    result = CliRunner().invoke(cli, ["--settings", str(settings_path), "update-db"])
    assert result.exit_code == 0, result.output
    settings = load_settings(settings_path)
    database = Database(settings.database_url())
    errors = [(0.0, 0.0), (0.9, -0.5), (-0.4, 0.7), (0.5, 0.5)]
    with database.session() as session:
        for i, name in enumerate(EXPOSURES):
            folder = Path(settings.reduced_path) / "scipost" / name
            folder.mkdir(parents=True)
            path = write_exposure(folder / "IMAGE_FOV_0001.fits", i, cat, rng, dither=DITHERS[i],
                                  error=errors[i], rotation=ROTATIONS[i], n=100, spurious=4, cosmics=4)
            date = dt.datetime.fromisoformat(name)
            night = (date - dt.timedelta(hours=12)).date().isoformat()
            session.add(Reduced(recipe_name="muse_scipost", name=name, PRO_CATG="IMAGE_FOV", path=str(path),
                                night=night, DATE_OBS=date, OBJECT="FIELD", INS_MODE="WFM-NOAO-N",
                                version="0.1", date_run=dt.datetime(2026, 1, 1), status="ok",
                                output_dir="scipost"))
    return settings_path, database, errors


def invoke(settings_path, *args):
    from musered.cli import cli

    result = CliRunner().invoke(cli, ["--settings", str(settings_path), "exp-align", *args])
    assert "Traceback" not in result.output, result.output
    return result


def stored(database, name):
    from sqlalchemy import select

    from musered.db.models import Reduced

    with database.session() as session:
        return [(r.recipe_name, r.PRO_CATG, r.path, r.frames) for r in
                session.scalars(select(Reduced).where(Reduced.name == name)).all()]


def test_command_dry_run_runs_nothing(project):
    settings_path, database, _ = project
    result = invoke(settings_path, "FIELD", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "IMAGE_FOV: 4 file(s)" in result.output
    assert stored(database, "FIELD_OFFSET_LIST_drs") == []


def test_command_stores_offsets_and_preview(project):
    from musered.calibfiles import _named_product
    from musered.catalog import Catalog
    from musered.targets import Target

    settings_path, database, errors = project
    result = invoke(settings_path, "FIELD")
    assert result.exit_code == 0, result.output
    rows = stored(database, "FIELD_OFFSET_LIST_drs")
    tags = sorted(tag for _, tag, _, _ in rows)
    assert tags == ["OFFSET_LIST", "PREVIEW_FOV", "SOURCE_LIST", "SOURCE_LIST", "SOURCE_LIST", "SOURCE_LIST"]
    offset_path = Path(next(p for _, tag, p, _ in rows if tag == "OFFSET_LIST"))
    found = offsets_arcsec(offset_path)
    assert np.max(np.hypot(*(found - np.array(errors)).T)) < 0.05
    png = offset_path.parent / "alignment.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "preview" in result.output

    # `frames: OFFSET_LIST: OFFSET_LIST_drs` of a FIELD target finds it
    from musered.settings import load_settings

    settings = load_settings(settings_path)
    catalog = Catalog.from_database(database, settings)
    target = Target(kind="dataset", name="FIELD", output_dir="x", folder=Path("x"), night=None, DATE_OBS=None,
                    INS_MODE=None, TPL_START=None, OBJECT="FIELD", inputs={}, members=())
    log: list[str] = []
    assert _named_product("OFFSET_LIST", "OFFSET_LIST_drs", target, catalog, "frames.OFFSET_LIST", log) == \
        [offset_path]
    # and so does the short form of the MuseRed settings, `OFFSET_LIST: drs`
    assert _named_product("OFFSET_LIST", "drs", target, catalog, "frames.OFFSET_LIST", log) == [offset_path]

    again = invoke(settings_path, "FIELD")
    assert again.exit_code == 0 and "1 already done" in again.output


def test_command_name_date_and_flags(project):
    settings_path, database, errors = project
    result = invoke(settings_path, "FIELD", "--name", "OFFSET_LIST_night1", "--date", "2017-06-15")
    assert result.exit_code == 0, result.output
    rows = stored(database, "FIELD_OFFSET_LIST_night1")
    offset = next(r for r in rows if r[1] == "OFFSET_LIST")
    assert len(offset[3]["IMAGE_FOV"]) == 3                      # the night of 2017-06-16 left out
    assert len(Table.read(offset[2])) == 3

    from musered.db.models import Flag

    with database.session() as session:
        session.add(Flag(name=EXPOSURES[1], flag="BAD_IMAQUALITY", comment="test", date=dt.datetime(2026, 1, 1)))
    # MuseRed's policy: flagged exposures are aligned unless the block says exclude_flags
    result = invoke(settings_path, "FIELD", "--name", "flagged")
    assert result.exit_code == 0, result.output
    offset = next(r for r in stored(database, "FIELD_flagged") if r[1] == "OFFSET_LIST")
    assert len(offset[3]["IMAGE_FOV"]) == 4 and "left out" not in result.output
    data = yaml.safe_load(settings_path.read_text())
    data["recipes"]["align_clean"] = {"exclude_flags": ["BAD_IMAQUALITY"]}
    settings_path.write_text(yaml.safe_dump(data))
    result = invoke(settings_path, "FIELD", "--params", "align_clean", "--name", "noflag", "--force")
    assert result.exit_code == 0, result.output
    offset = next(r for r in stored(database, "FIELD_noflag") if r[1] == "OFFSET_LIST")
    used = [Path(f["path"]).parent.name for f in offset[3]["IMAGE_FOV"]]
    assert EXPOSURES[1] not in used and len(used) == 3
    assert f"FIELD_noflag: 1 exposure(s) left out:\n  {EXPOSURES[1]}: flagged (BAD_IMAQUALITY)" in result.output


def test_command_image_method(project):
    settings_path, database, errors = project
    result = invoke(settings_path, "FIELD", "--method", "image")
    assert result.exit_code == 0, result.output
    rows = stored(database, "FIELD_OFFSET_LIST_image")
    offset = next(r for r in rows if r[1] == "OFFSET_LIST")
    assert offset[0] == "image_align"
    found = offsets_arcsec(Path(offset[2]))
    assert np.max(np.hypot(*(found - np.array(errors)).T)) < 0.05
    assert (Path(offset[2]).parent / "alignment.png").read_bytes()[:4] == b"\x89PNG"


def test_command_errors_are_one_line(project, tmp_path):
    settings_path, _, _ = project
    result = invoke(settings_path, "NOPE")
    assert result.exit_code != 0 and "unknown dataset 'NOPE'" in result.output
    result = invoke(settings_path, "FIELD", "--date", "2020-01-01")
    assert result.exit_code != 0 and "--date 2020-01-01" in result.output
    result = invoke(settings_path, "FIELD", "--date", "2017-06-16", "--name", "one")     # one exposure that night
    assert result.exit_code != 0 and "at least 2 IMAGE_FOV" in result.output
    result = invoke(settings_path, "FIELD", "--filter", "Johnson_V", "--name", "v")
    assert result.exit_code != 0 and "filter 'Johnson_V'" in result.output
    assert len(result.output.strip().splitlines()[-1]) > 0


# --------------------------------------------------------------------------------------
# against the installed ESO DRS (skipped without esorex)


@pytest.mark.skipif(shutil.which("esorex") is None, reason="esorex (ESO MUSE DRS) not installed")
def test_offsets_shapes_and_sign_agree_with_the_drs(tmp_path):
    """Same-orientation exposures: the DRS offsets equal ours (so the sign convention is the
    DRS's), its sharpness and roundness equal ours; its X/Y are ours minus 1 (the DRS writes
    0-based positions, and converts them to RA/Dec as if 1-based: a one-pixel error that only
    cancels between exposures of the same orientation, so ours differ from its by
    R(θ)·(1, 1) − (1, 1) pixels for rotated exposures)."""
    rng = np.random.default_rng(12)
    cat = catalogue(rng, 30)
    errors = [(0.0, 0.0), (0.8, -0.6), (-0.5, 0.9)]
    paths = [write_exposure(tmp_path / f"fov{i}.fits", i, cat, rng, dither=DITHERS[i], error=errors[i], n=120)
             for i in range(3)]
    (tmp_path / "sof").write_text("".join(f"{p} IMAGE_FOV\n" for p in paths))
    drs = tmp_path / "drs"
    drs.mkdir()
    run = subprocess.run(["esorex", "--log-level=off", "muse_exp_align", str(tmp_path / "sof")], cwd=drs,
                         capture_output=True, text=True, timeout=300)
    if not (drs / "OFFSET_LIST.fits").is_file():
        pytest.skip(f"esorex muse_exp_align did not run: {run.stdout[-300:]} {run.stderr[-300:]}")
    ours = tmp_path / "ours"
    ours.mkdir()
    RECIPE.run({"IMAGE_FOV": paths}, RECIPE.validate({}), ours)
    np.testing.assert_allclose(offsets_arcsec(ours / "OFFSET_LIST.fits"), offsets_arcsec(drs / "OFFSET_LIST.fits"),
                               atol=0.02)
    np.testing.assert_allclose(offsets_arcsec(ours / "OFFSET_LIST.fits"), np.array(errors), atol=0.02)
    theirs = Table.read(drs / "SOURCE_LIST_0002.fits")
    mine = Table.read(ours / "SOURCE_LIST_0002.fits")
    dx, dy, dsharp, dround = [], [], [], []
    for row in theirs:
        k = int(np.argmin(np.hypot(mine["X"] - 1 - row["X"], mine["Y"] - 1 - row["Y"])))
        dx.append(mine["X"][k] - 1 - row["X"])
        dy.append(mine["Y"][k] - 1 - row["Y"])
        dsharp.append(mine["Sharpness"][k] - row["Sharpness"])
        dround.append(mine["Roundness"][k] - row["Roundness"])
    assert len(theirs) >= 10
    # the centroid methods differ a little (most on blended sources): compare medians
    assert abs(np.median(dx)) < 0.03 and abs(np.median(dy)) < 0.03
    assert np.median(np.abs(dsharp)) < 0.005 and np.median(np.abs(dround)) < 0.005


def test_command_select_keeps_the_exposures_its_query_picks(project):
    settings_path, database, _ = project
    data = yaml.safe_load(settings_path.read_text())
    data["recipes"]["align_sel"] = {"select": {"raw": {"name": EXPOSURES[:3]}}}
    data["recipes"]["align_names"] = {"names_with_selection": {"A": {"raw": "EXPTIME > 1"}}}
    settings_path.write_text(yaml.safe_dump(data))
    result = invoke(settings_path, "FIELD", "--params", "align_sel", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "IMAGE_FOV: 3 file(s)" in result.output
    assert (f"FIELD_OFFSET_LIST_drs: 1 exposure(s) left out:\n  {EXPOSURES[3]}: not selected by select: raw: "
            f"name=[{', '.join(EXPOSURES[:3])}]") in result.output
    result = invoke(settings_path, "FIELD", "--params", "align_names")
    assert result.exit_code == 1 and "recipes.align_names.names_with_selection: read by exp-combine only" \
        in result.output
