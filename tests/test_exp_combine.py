"""muse_exp_combine on pixel tables of a known scene, and the `musered exp-combine` command."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from recipes.base import RecipeError
from recipes.algorithms.cube import CubeGrid
from recipes.algorithms.cubelist_exposures import exposure_weights
from recipes.steps.exp_combine import RECIPE
from recipes.algorithms.origin import pack_origin
from recipes.algorithms.pixtable import PixTable, make_pixtable, set_wcs_state
from recipes.algorithms.projection import celestial_to_native

RA0, DEC0 = 150.0, 2.0
COSD = np.cos(np.deg2rad(DEC0))
SPAXEL = 0.2  # arcsec
LAM = 5000.0 + 1.25 * np.arange(12)  # Å
# point sources: (east offset ["], north offset ["], total flux per plane)
SOURCES = [(-1.3, 0.7, 4.0e4), (1.1, -1.2, 2.5e4)]
FWHM = 0.8  # arcsec
SIGMA_NOISE = 1.0  # per pixel-table row
# pointing errors of exposures 1..3 (exposure 0 is the reference) ["], and the dithers
POINTING_ERRORS = [(0.0, 0.0), (0.35, -0.25), (-0.3, 0.4), (0.2, 0.3)]
DITHERS = [(0.0, 0.0), (0.53, 0.31), (-0.47, 0.62), (0.28, -0.55)]
CR = (2, 0.0, -1.8, 6)  # exposure, east ["], north ["], plane: a cosmic ray in one exposure


def background(east, north):
    """Smooth background surface brightness per spaxel (per plane)."""
    return 100.0 + 3.0 * east - 2.0 * north


def scene(east, north):
    """True value of a 0.2″ pixel centred at (east, north) ["]: background + Gaussian sources."""
    s = FWHM / 2.3548
    value = background(east, north)
    for ex, ny, flux in SOURCES:
        r2 = (east - ex) ** 2 + (north - ny) ** 2
        value = value + flux * SPAXEL**2 / (2 * np.pi * s * s) * np.exp(-0.5 * r2 / (s * s))
    return value


def make_exposure(i, rng, exptime=600.0, half=3.0, cosmic=True, constant=None, mjd=None):
    """Projected pixel table of exposure ``i``: a regular 0.2″ grid shifted by the dither,
    values from the scene at the true position; the header pointing is wrong by
    POINTING_ERRORS[i] (the true position is the recorded one plus that error)."""
    dx, dy = DITHERS[i]
    ex_err, no_err = POINTING_ERRORS[i]
    offs = np.arange(-half, half + 1e-9, SPAXEL)
    east, north = np.meshgrid(offs + dx, offs + dy, indexing="xy")
    east, north = east.ravel(), north.ravel()
    nsp = east.size
    east = np.repeat(east, LAM.size)
    north = np.repeat(north, LAM.size)
    lam = np.tile(LAM, nsp) + rng.uniform(-0.3, 0.3, east.size)
    true = scene(east + ex_err, north + no_err) if constant is None else np.full(east.size, constant)
    data = true + rng.normal(0, SIGMA_NOISE, east.size)
    if cosmic and i == CR[0]:
        k = np.argmin((east - CR[1]) ** 2 + (north - CR[2]) ** 2 + 100 * (lam - LAM[CR[3]]) ** 2)
        data[k] += 5000.0
    ra = RA0 + east / 3600 / COSD
    dec = DEC0 + north / 3600
    xpos, ypos = celestial_to_native(ra, dec, RA0, DEC0)
    h = fits.Header()
    h["OBJECT"] = "FIELD"
    h["EXPTIME"] = exptime
    h["MJD-OBS"] = mjd if mjd is not None else 58000.0 + 0.01 * i
    h["DATE-OBS"] = f"2017-09-04T00:{10 + i:02d}:00.000"
    h["HIERARCH ESO INS MODE"] = "WFM-NOAO-N"
    n = east.size
    cols = {
        "xpos": xpos, "ypos": ypos, "lambda": lam, "data": data, "dq": np.zeros(n, np.int32),
        "stat": np.full(n, SIGMA_NOISE**2), "origin": pack_origin(np.ones(n, int), np.ones(n, int),
                                                                   np.ones(n, int), np.ones(n, int), 0),
    }  # fmt: skip
    pt = make_pixtable(cols, h, data="10**(-20)*erg/s/cm**2/Angstrom", stat="(10**(-20)*erg/s/cm**2/Angstrom)**2")
    set_wcs_state(pt.header, "projected", (RA0, DEC0))
    return pt


def offset_list(path, exposures=range(4)):
    rows = []
    for i in exposures:
        ex_err, no_err = POINTING_ERRORS[i]
        # RA_OFFSET is subtracted from the reference: a pointing truly at RA + δ needs −δ
        rows.append((f"2017-09-04T00:{10 + i:02d}:00.000", 58000.0 + 0.01 * i, -ex_err / 3600 / COSD,
                     -no_err / 3600, 1.0))
    t = Table(rows=rows, names=("DATE_OBS", "MJD_OBS", "RA_OFFSET", "DEC_OFFSET", "FLUX_SCALE"))
    t.write(path, overwrite=True)
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pixtables")
    rng = np.random.default_rng(7)
    paths = [make_exposure(i, rng).write(folder / f"PIXTABLE_REDUCED_{i}.fits") for i in range(4)]
    return paths, offset_list(folder / "OFFSET_LIST.fits")


def run(tmp_path, frames, **params):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    products = RECIPE.run(frames, RECIPE.validate(params), out)
    return out, {p.tag: p for p in products}


def read_cube(path):
    with fits.open(path) as hdul:
        h = hdul["DATA"].header
        grid = CubeGrid(h["NAXIS1"], h["NAXIS2"], h["NAXIS3"], h["CRPIX1"], h["CRPIX2"], h["CRVAL1"], h["CRVAL2"],
                        (h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"]), h["CRPIX3"], h["CRVAL3"], h["CD3_3"])
        return grid, hdul["DATA"].data.astype(np.float64), hdul["STAT"].data.astype(np.float64), hdul[0].header


def sky_of(grid):
    """(east, north) ["] of every spaxel centre relative to (RA0, DEC0)."""
    py, px = np.mgrid[0 : grid.ny, 0 : grid.nx]
    ra, dec = grid.pixel_to_world(px, py)
    return (ra - RA0) * 3600 * COSD, (dec - DEC0) * 3600


def test_fluxes_centroids_noise_and_cosmic_ray(tmp_path, tables):
    paths, offsets = tables
    out, products = run(tmp_path, {"PIXTABLE_REDUCED": paths, "OFFSET_LIST": [offsets]})
    assert set(products) == {"DATACUBE_FINAL", "IMAGE_FOV", "EXPMAP"}
    grid, data, stat, header = read_cube(out / "DATACUBE_FINAL.fits")
    assert header["ESO PRO CATG"] == "DATACUBE_FINAL" and header["ESO PRO DATANCOM"] == 4
    assert header["ESO DRS MUSE OFFSET2 DRA"] == pytest.approx(-0.35 / 3600 / COSD)
    east, north = sky_of(grid)
    planes = slice(1, grid.nz - 1)  # the edge planes see rows from one side only
    cube = data[planes]
    source = cube - background(east, north)[None]
    for ex, no, flux in SOURCES:
        near = (east - ex) ** 2 + (north - no) ** 2 < 1.6**2
        per_plane = np.nansum(np.where(near[None], source, 0.0), axis=(1, 2))
        assert np.all(np.abs(per_plane / flux - 1) < 0.01), per_plane / flux
        w = np.where(near[None], source, 0.0).sum(axis=0)
        ce, cn = (w * east).sum() / w.sum(), (w * north).sum() / w.sum()
        assert np.hypot(ce - ex, cn - no) < 0.05, (ce - ex, cn - no)
    # noise: residuals against the true scene in the source-free background
    far = np.all([(east - ex) ** 2 + (north - no) ** 2 > 2.5**2 for ex, no, _ in SOURCES], axis=0)
    far &= (np.abs(east) < 2.2) & (np.abs(north) < 2.2)  # all four exposures overlap
    resid = (cube - scene(east, north)[None])[:, far] / np.sqrt(stat[planes][:, far])
    assert abs(np.nanstd(resid) - 1) < 0.1
    # the cosmic ray (5000 above a noise of 1) is gone
    _, ce, cn, cz = CR
    ix, iy = np.unravel_index(np.argmin((east - ce) ** 2 + (north - cn) ** 2), east.shape)[::-1]
    patch = data[cz - 1 : cz + 2, iy - 1 : iy + 2, ix - 1 : ix + 2] - scene(east, north)[None, iy - 1 : iy + 2,
                                                                                         ix - 1 : ix + 2]
    assert np.nanmax(np.abs(patch)) < 5
    assert products["DATACUBE_FINAL"].qc["NREJECTED"] >= 1
    with fits.open(out / "EXPMAP.fits") as hdul:
        expmap = hdul["DATA"].data
    assert expmap[grid.ny // 2, grid.nx // 2] == 2400.0  # the centre sees all four exposures
    assert set(np.unique(expmap)) <= {0.0, 600.0, 1200.0, 1800.0, 2400.0} and expmap[0, 0] < 2400.0


def test_without_offsets_or_rejection_the_test_fails(tmp_path, tables):
    paths, _ = tables
    out, products = run(tmp_path, {"PIXTABLE_REDUCED": paths}, crsigma=0)
    grid, data, _, _ = read_cube(out / "DATACUBE_FINAL.fits")
    east, north = sky_of(grid)
    _, ce, cn, cz = CR
    ix, iy = np.unravel_index(np.argmin((east - ce) ** 2 + (north - cn) ** 2), east.shape)[::-1]
    patch = data[cz - 1 : cz + 2, iy - 1 : iy + 2, ix - 1 : ix + 2] - scene(east, north)[None, iy - 1 : iy + 2,
                                                                                         ix - 1 : ix + 2]
    assert np.nanmax(np.abs(patch)) > 50  # the cosmic ray stays without rejection
    ex, no, _ = SOURCES[0]
    source = data[1:-1] - background(east, north)[None]
    near = (east - ex) ** 2 + (north - no) ** 2 < 1.6**2
    w = np.where(near[None], source, 0.0).sum(axis=0)
    ce2, cn2 = (w * east).sum() / w.sum(), (w * north).sum() / w.sum()
    assert np.hypot(ce2 - ex, cn2 - no) > 0.1  # the pointing errors blur and shift it


def test_weights(tmp_path):
    rng = np.random.default_rng(3)
    levels, exptimes = [10.0, 12.0, 20.0], [600.0, 300.0, 1200.0]
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for i, (level, exptime) in enumerate(zip(levels, exptimes)):
        pt = make_exposure(0, rng, exptime=exptime, constant=level, cosmic=False, mjd=58000.0 + i)
        pt.columns["data"][:] = level  # no noise: the weighted mean is exact
        paths.append(pt.write(folder / f"pt{i}.fits"))
    frames = {"PIXTABLE_REDUCED": paths}
    (tmp_path / "a").mkdir()
    out, _ = run(tmp_path / "a", frames, crsigma=0)
    _, data, _, header = read_cube(out / "DATACUBE_FINAL.fits")
    want = np.dot(levels, exptimes) / np.sum(exptimes)
    np.testing.assert_allclose(np.nanmedian(data), want, rtol=1e-5)
    assert header["ESO DRS MUSE WEIGHT2"] == pytest.approx(0.5)
    (tmp_path / "b").mkdir()
    out, _ = run(tmp_path / "b", frames, crsigma=0, weight="none")
    _, data, _, _ = read_cube(out / "DATACUBE_FINAL.fits")
    np.testing.assert_allclose(np.nanmedian(data), np.mean(levels), rtol=1e-5)


def test_weight_kinds():
    h = [fits.Header({"EXPTIME": 600.0}), fits.Header({"EXPTIME": 300.0})]
    assert exposure_weights(h, ["a", "b"], "exptime") == [1.0, 0.5]
    assert exposure_weights(h, ["a", "b"], "none") is None
    h[0]["HIERARCH ESO TEL AMBI FWHM START"], h[0]["HIERARCH ESO TEL AMBI FWHM END"] = 0.8, 1.0
    h[1]["HIERARCH ESO TEL IA FWHM"] = 0.45
    assert exposure_weights(h, ["a", "b"], "fwhm") == pytest.approx([1.0, 0.5 * 4])
    h[0]["HIERARCH ESO DRS MUSE WEIGHT"] = 2.0
    with pytest.raises(RecipeError, match="b: ESO DRS MUSE WEIGHT"):
        exposure_weights(h, ["a", "b"], "header")
    h[1]["HIERARCH ESO DRS MUSE WEIGHT"] = 1.0
    assert exposure_weights(h, ["a", "b"], "header") == [2.0, 0.5]


def test_output_wcs_respected(tmp_path, tables):
    paths, offsets = tables
    wcs = fits.Header()
    wcs["NAXIS"], wcs["NAXIS1"], wcs["NAXIS2"] = 2, 21, 17
    wcs["CTYPE1"], wcs["CTYPE2"] = "RA---TAN", "DEC--TAN"
    wcs["CRPIX1"], wcs["CRPIX2"] = 11.0, 9.0
    wcs["CRVAL1"], wcs["CRVAL2"] = RA0 + 0.3 / 3600 / COSD, DEC0 - 0.2 / 3600
    wcs["CD1_1"], wcs["CD2_2"], wcs["CD1_2"], wcs["CD2_1"] = -0.3 / 3600, 0.3 / 3600, 0.0, 0.0
    path = tmp_path / "OUTPUT_WCS.fits"
    fits.PrimaryHDU(np.zeros((17, 21), np.float32), header=wcs).writeto(path)
    out, _ = run(tmp_path, {"PIXTABLE_REDUCED": paths, "OFFSET_LIST": [offsets], "OUTPUT_WCS": [path]})
    grid, data, _, _ = read_cube(out / "DATACUBE_FINAL.fits")
    assert (grid.nx, grid.ny) == (21, 17)
    assert grid.crval1 == pytest.approx(wcs["CRVAL1"]) and grid.cd[0] == pytest.approx(-0.3 / 3600)
    assert grid.crpix1 == 11.0 and grid.crpix2 == 9.0
    # flux still conserved on the coarser grid (intensive → scale by the spaxel area)
    east, north = sky_of(grid)
    ex, no, flux = SOURCES[0]
    near = (east - ex) ** 2 + (north - no) ** 2 < 1.6**2
    src = (data[1:-1] - background(east, north)[None])[:, near].sum(axis=1) * (0.3 / SPAXEL) ** 2
    assert np.all(np.abs(src / flux - 1) < 0.03)


def test_combined_pixtable(tmp_path, tables):
    paths, offsets = tables
    out, products = run(tmp_path, {"PIXTABLE_REDUCED": paths, "OFFSET_LIST": [offsets]}, save="combined")
    assert set(products) == {"PIXTABLE_COMBINED"}
    pt = PixTable.read(out / "PIXTABLE_COMBINED.fits")
    assert pt.header["ESO DRS MUSE PIXTABLE COMBINED"] == 4
    assert pt.header["ESO DRS MUSE PIXTABLE EXP4 LAST"] == pt.nrows - 1
    assert pt.header["ESO PRO CATG"] == "PIXTABLE_COMBINED"
    assert pt.weight is not None and pt.wcs_state == "positioned"


def test_nan_flux_scale_means_one_and_exposures_are_named_apart(tmp_path, tables, caplog):
    """muse_exp_align writes FLUX_SCALE = NaN (astropy reads it back masked): no scaling, no
    warning; the log names the exposures by DATE-OBS, not by their shared file name."""
    import logging
    import warnings

    paths, offsets = tables
    table = Table.read(offsets)
    table["FLUX_SCALE"] = np.nan
    table.write(tmp_path / "OFFSET_LIST_nan.fits")
    (tmp_path / "ref").mkdir()
    ref, _ = run(tmp_path / "ref", {"PIXTABLE_REDUCED": paths, "OFFSET_LIST": [offsets]})
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="recipes.steps.exp_combine"):
        warnings.simplefilter("error")
        out, _ = run(tmp_path, {"PIXTABLE_REDUCED": paths, "OFFSET_LIST": [tmp_path / "OFFSET_LIST_nan.fits"]})
    _, data, _, _ = read_cube(out / "DATACUBE_FINAL.fits")
    _, expected, _, _ = read_cube(ref / "DATACUBE_FINAL.fits")   # FLUX_SCALE 1.0
    np.testing.assert_allclose(data, expected, rtol=1e-6)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("combining"))
    assert all(f"2017-09-04T00:{10 + i:02d}:00.000" in line for i in range(4)), line


def test_bad_inputs(tmp_path, tables):
    paths, _ = tables
    out = tmp_path / "o"
    out.mkdir()
    params = RECIPE.validate({})
    with pytest.raises(RecipeError, match="at least 2"):
        RECIPE.run({"PIXTABLE_REDUCED": paths[:1]}, params, out)
    with pytest.raises(ValueError, match="save must be one of cube, combined"):
        RECIPE.validate({"save": "everything"})
    with pytest.raises(ValueError, match="lambdamin"):
        RECIPE.validate({"lambdamin": 9000.0, "lambdamax": 5000.0})
    bad = tmp_path / "OFFSET_LIST.fits"
    Table({"X": [1.0]}).write(bad)
    with pytest.raises(RecipeError, match="OFFSET_LIST.fits: OFFSET_LIST needs"):
        RECIPE.run({"PIXTABLE_REDUCED": paths, "OFFSET_LIST": [bad]}, params, out)
    with pytest.raises(RecipeError, match="missing.fits: file does not exist"):
        RECIPE.run({"PIXTABLE_REDUCED": [*paths, tmp_path / "missing.fits"]}, params, out)
    assert list(out.iterdir()) == []


# --------------------------------------------------------------------------------------
# the command


def _names():
    return [f"2017-09-04T00:{10 + i:02d}:00.000" for i in range(4)]


AIRMASS = [1.02, 1.08, 1.15, 1.40]  # TEL_AIRM_START of the four raw exposures


@pytest.fixture
def project(tmp_path):
    """Settings with dataset FIELD; four raw exposures in the database, and for each a
    PIXTABLE_REDUCED from muse_scipost and a DATACUBE_FINAL from muse_scipost_make_cube
    (cubes on one grid), the reduced rows inserted directly."""
    import datetime as dt
    from pathlib import Path

    import yaml
    from click.testing import CliRunner

    from conftest import write_raw_fits
    from musered.cli import cli
    from musered.db import Database
    from musered.db.models import Reduced
    from musered.settings import load_settings
    from recipes.algorithms.cube import write_datacube

    offsets = offset_list(tmp_path / "OFFSET_LIST_new.fits")
    data = {"workdir": str(tmp_path), "datasets": {"FIELD": {"OBJECT": "FIELD"}},
            "recipes": {"muse_exp_combine": {"frames": {"OFFSET_LIST": str(offsets)}},
                        "combine_stored": {"frames": {"OFFSET_LIST": "OFFSET_LIST_drs"}}}}
    settings_path = tmp_path / "settings.yml"
    settings_path.write_text(yaml.safe_dump(data))
    for name, airmass in zip(_names(), AIRMASS):
        write_raw_fits(tmp_path / "raw" / f"MUSE.{name}.fits", OBJECT="FIELD", TEL_AIRM_START=airmass)
    result = CliRunner().invoke(cli, ["--settings", str(settings_path), "update-db"])
    assert result.exit_code == 0, result.output
    settings = load_settings(settings_path)
    database = Database(settings.database_url())
    rng = np.random.default_rng(11)
    grid = CubeGrid(9, 8, 6, 5.0, 4.5, RA0, DEC0, (-0.2 / 3600, 0.0, 0.0, 0.2 / 3600), 1.0, 5000.0, 1.25)
    truth = rng.uniform(10, 20, grid.shape)
    with database.session() as session:
        for i, name in enumerate(_names()):
            date = dt.datetime.fromisoformat(name)
            common = dict(name=name, night="2017-09-03", DATE_OBS=date, OBJECT="FIELD", INS_MODE="WFM-NOAO-N",
                          version="0.1", date_run=dt.datetime(2026, 1, 1), status="ok")
            folder = Path(settings.reduced_path) / "scipost" / name
            folder.mkdir(parents=True)
            path = make_exposure(i, rng, half=1.0).write(folder / "PIXTABLE_REDUCED_0001.fits")
            session.add(Reduced(recipe_name="muse_scipost", PRO_CATG="PIXTABLE_REDUCED", path=str(path),
                                output_dir="scipost", **common))
            folder = Path(settings.reduced_path) / "scipost_make_cube" / name
            folder.mkdir(parents=True)
            cube = (truth + rng.normal(0, 1, grid.shape)).astype(np.float32)
            path = write_datacube(folder / "DATACUBE_FINAL.fits", fits.Header({"OBJECT": "FIELD"}), grid, cube,
                                  np.ones(grid.shape, np.float32))
            session.add(Reduced(recipe_name="muse_scipost_make_cube", PRO_CATG="DATACUBE_FINAL", path=str(path),
                                output_dir="scipost_make_cube", **common))
    return settings_path, database, Path(settings.reduced_path)


def invoke(settings_path, *args):
    from click.testing import CliRunner

    from musered.cli import cli

    result = CliRunner().invoke(cli, ["--settings", str(settings_path), "exp-combine", *args])
    assert "Traceback" not in result.output, result.output
    return result


def stored(database, name):
    from sqlalchemy import select

    from musered.db.models import Reduced

    with database.session() as session:
        return {r.PRO_CATG: (r.recipe_name, r.path, r.frames) for r in
                session.scalars(select(Reduced).where(Reduced.name == name)).all()}


def test_command_dry_run(project):
    settings_path, database, reduced = project
    result = invoke(settings_path, "FIELD", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "exp_combine/FIELD_drs" in result.output and "OFFSET_LIST_new.fits" in result.output
    assert result.output.count("PIXTABLE_REDUCED_0001.fits") == 4
    assert not (reduced / "exp_combine").exists() and not stored(database, "FIELD_drs")


def test_command_drs_name_and_flags(project):
    import datetime as dt
    from pathlib import Path

    import yaml
    from click.testing import CliRunner

    from conftest import write_raw_fits
    from musered.cli import cli
    from musered.db.models import Flag

    settings_path, database, reduced = project
    result = invoke(settings_path, "FIELD")
    assert result.exit_code == 0, result.output
    rows = stored(database, "FIELD_drs")
    assert {"DATACUBE_FINAL", "IMAGE_FOV", "EXPMAP"} <= set(rows)
    recipe, path, frames = rows["DATACUBE_FINAL"]
    assert recipe == "muse_exp_combine" and Path(path).parent == reduced / "exp_combine" / "FIELD_drs"
    assert len(frames["PIXTABLE_REDUCED"]) == 4 and len(frames["OFFSET_LIST"]) == 1
    result = invoke(settings_path, "FIELD")
    assert result.exit_code == 0 and "done" in result.output  # already done, not re-run

    # MuseRed's policy: a flagged exposure is combined unless the block says exclude_flags
    with database.session() as session:
        session.add(Flag(name=_names()[2], flag="BAD_IMAQUALITY", comment="test", date=dt.datetime(2026, 1, 1)))
    result = invoke(settings_path, "FIELD", "--name", "flagged")
    assert result.exit_code == 0, result.output
    recipe, path, frames = stored(database, "FIELD_flagged")["DATACUBE_FINAL"]
    assert len(frames["PIXTABLE_REDUCED"]) == 4 and "left out" not in result.output
    log = (Path(path).parent / "log.txt").read_text()
    assert f"exposure {_names()[2]} used although flagged (BAD_IMAQUALITY)" in log
    assert "4 exposure(s) used" in log and "0 exposure(s) left out" in log

    # exclude_flags: true (any flag) or a list of names; an exposure of the dataset with no
    # product of from_recipe is named too: a combined cube never loses one silently
    offsets = str(settings_path.parent / "OFFSET_LIST_new.fits")
    data = yaml.safe_load(settings_path.read_text())
    data["recipes"]["combine_clean"] = {"frames": {"OFFSET_LIST": offsets}, "exclude_flags": True}
    data["recipes"]["combine_satellite"] = {"frames": {"OFFSET_LIST": offsets}, "exclude_flags": ["SATELLITE"]}
    settings_path.write_text(yaml.safe_dump(data))
    late = "2017-09-04T00:30:00.000"
    write_raw_fits(settings_path.parent / "raw" / f"MUSE.{late}.fits", OBJECT="FIELD")
    assert CliRunner().invoke(cli, ["--settings", str(settings_path), "update-db"]).exit_code == 0
    result = invoke(settings_path, "FIELD", "--params", "combine_clean", "--name", "noflag")
    assert result.exit_code == 0, result.output
    recipe, path, frames = stored(database, "FIELD_noflag")["DATACUBE_FINAL"]
    assert Path(path).parent == reduced / "exp_combine" / "FIELD_noflag"
    used = [Path(f["path"]).parent.name for f in frames["PIXTABLE_REDUCED"]]
    assert _names()[2] not in used and len(used) == 3
    assert "FIELD_noflag: 2 exposure(s) left out:" in result.output
    assert f"  {_names()[2]}: flagged (BAD_IMAQUALITY)" in result.output
    assert f"  {late}: no PIXTABLE_REDUCED product from muse_scipost" in result.output
    log = (Path(path).parent / "log.txt").read_text()
    assert "3 exposure(s) used" in log and f"{_names()[2]}: flagged (BAD_IMAQUALITY)" in log and late in log
    result = invoke(settings_path, "FIELD", "--params", "combine_satellite", "--name", "satellite")
    assert result.exit_code == 0, result.output
    frames = stored(database, "FIELD_satellite")["DATACUBE_FINAL"][2]
    assert len(frames["PIXTABLE_REDUCED"]) == 4 and "1 exposure(s) left out" in result.output
    # the dry run names them as well
    result = invoke(settings_path, "FIELD", "--params", "combine_clean", "--name", "dry", "--dry-run")
    assert result.exit_code == 0 and f"exposure {_names()[2]} left out: flagged (BAD_IMAQUALITY)" in result.output
    assert f"  {late}: no PIXTABLE_REDUCED product" in result.output


def test_command_stored_offset_list(project):
    import datetime as dt
    import shutil

    from musered.db.models import Reduced

    settings_path, database, reduced = project
    folder = reduced / "exp_align" / "FIELD_OFFSET_LIST_drs"
    folder.mkdir(parents=True)
    path = shutil.copy(settings_path.parent / "OFFSET_LIST_new.fits", folder / "OFFSET_LIST.fits")
    with database.session() as session:
        session.add(Reduced(recipe_name="muse_exp_align", name="FIELD_OFFSET_LIST_drs", PRO_CATG="OFFSET_LIST",
                            path=str(path), night="2017-09-03", OBJECT="FIELD", version="0.1",
                            date_run=dt.datetime(2026, 1, 1), status="ok"))
    result = invoke(settings_path, "FIELD", "--params", "combine_stored", "--name", "stored")
    assert result.exit_code == 0, result.output
    recipe, _, frames = stored(database, "FIELD_stored")["DATACUBE_FINAL"]
    assert recipe == "combine_stored" and frames["OFFSET_LIST"][0]["path"] == str(path)


def test_command_mpdaf_method(project):
    from pathlib import Path

    settings_path, database, reduced = project
    result = invoke(settings_path, "FIELD", "--method", "mpdaf")
    assert result.exit_code == 0, result.output
    rows = stored(database, "FIELD_mpdaf")
    assert set(rows) == {"DATACUBE_FINAL", "EXPMAP_CUBE", "EXPMAP_IMAGE", "STATPIX", "IMAGE_FOV"}
    recipe, path, frames = rows["DATACUBE_FINAL"]
    assert recipe == "mpdaf_combine" and Path(path).parent == reduced / "exp_combine" / "FIELD_mpdaf"
    assert len(frames["DATACUBE_FINAL"]) == 4
    assert all("scipost_make_cube" in f["path"] for f in frames["DATACUBE_FINAL"])


def test_command_errors_are_one_line(project):
    settings_path, database, reduced = project
    result = invoke(settings_path, "NOPE")
    assert result.exit_code == 1 and "unknown dataset 'NOPE'" in result.output
    result = invoke(settings_path, "FIELD", "--params", "nope")
    assert result.exit_code == 1 and "--params nope: no such block" in result.output
    table = next((reduced / "scipost").glob("*/PIXTABLE_REDUCED_0001.fits"))
    table.write_bytes(b"not a FITS file")
    result = invoke(settings_path, "FIELD", "--name", "broken")
    last = result.output.strip().splitlines()[-1]  # after the runner's log and summary table
    assert result.exit_code == 1 and last.startswith("Error: muse_exp_combine: 1 target(s) failed: FIELD_broken")
    assert "PIXTABLE_REDUCED_0001.fits: cannot read pixel table" in last


# --------------------------------------------------------------------------------------
# exposure selection by database query (MuseRed's select and names_with_selection)


def add_blocks(settings_path, **blocks):
    import yaml

    data = yaml.safe_load(settings_path.read_text())
    data["recipes"].update(blocks)
    settings_path.write_text(yaml.safe_dump(data))


def test_select_on_raw_columns_combines_exactly_the_selected_exposures(project):
    from pathlib import Path

    settings_path, database, reduced = project
    add_blocks(settings_path, combine_low={"select": {"raw": '"TEL_AIRM_START" < 1.2'}})
    result = invoke(settings_path, "FIELD", "--method", "mpdaf", "--params", "combine_low", "--name", "low")
    assert result.exit_code == 0, result.output
    recipe, path, frames = stored(database, "FIELD_low")["DATACUBE_FINAL"]
    used = sorted(Path(f["path"]).parent.name for f in frames["DATACUBE_FINAL"])
    assert recipe == "combine_low" and used == _names()[:3]
    reason = 'not selected by select: raw: "TEL_AIRM_START" < 1.2'
    assert f"FIELD_low: 1 exposure(s) left out:\n  {_names()[3]}: {reason}" in result.output
    log = (Path(path).parent / "log.txt").read_text()
    assert "3 exposure(s) used" in log and f"{_names()[3]}: {reason}" in log
    # a list of names, as a mapping; and a selection that picks none of the dataset
    add_blocks(settings_path, combine_two={"select": {"raw": {"name": [_names()[0], _names()[3]]}}},
               combine_none={"select": {"raw": "TEL_AIRM_START > 2"}})
    result = invoke(settings_path, "FIELD", "--method", "mpdaf", "--params", "combine_two", "--name", "two")
    assert result.exit_code == 0, result.output
    frames = stored(database, "FIELD_two")["DATACUBE_FINAL"][2]
    assert sorted(Path(f["path"]).parent.name for f in frames["DATACUBE_FINAL"]) == [_names()[0], _names()[3]]
    result = invoke(settings_path, "FIELD", "--method", "mpdaf", "--params", "combine_none", "--name", "none")
    assert result.exit_code == 1 and "nothing to combine: FIELD (every exposure left out" in result.output
    assert "not selected by select: raw: TEL_AIRM_START > 2" in result.output


def test_names_with_selection_makes_one_product_per_entry(project):
    from pathlib import Path

    from musered import MuseRed
    from musered.errors import MuseredError

    settings_path, database, reduced = project
    add_blocks(settings_path, combine_runs={"method": "mpdaf", "names_with_selection": {
        "FIELD_early": {"raw": {"name": _names()[:2]}}, "FIELD_high": {"raw": "TEL_AIRM_START >= 1.1"}}})
    mr = MuseRed(settings_path)
    summary = mr.exp_combine("FIELD", params_name="combine_runs")
    assert [(r.name, r.status) for r in summary.results] == [("FIELD_early", "ok"), ("FIELD_high", "ok")]
    assert sorted(summary.results[0].left_out) == _names()[2:]
    assert summary.results[1].left_out == {
        n: "not selected by names_with_selection FIELD_high: raw: TEL_AIRM_START >= 1.1" for n in _names()[:2]}
    for name, expected in (("FIELD_early", _names()[:2]), ("FIELD_high", _names()[2:])):
        recipe, path, frames = stored(database, name)["DATACUBE_FINAL"]
        assert Path(path).parent == reduced / "exp_combine" / name
        assert sorted(Path(f["path"]).parent.name for f in frames["DATACUBE_FINAL"]) == expected
    # --name picks one entry; an unknown one is an error
    result = invoke(settings_path, "FIELD", "--params", "combine_runs", "--name", "FIELD_high")
    assert result.exit_code == 0 and result.output.count("combined cube in") == 1 and "done" in result.output
    result = invoke(settings_path, "FIELD", "--params", "combine_runs", "--name", "FIELD_late")
    assert result.exit_code == 1 and "--name FIELD_late: not an entry of recipes.combine_runs.names_with_selection " \
        "(FIELD_early, FIELD_high)" in result.output
    with pytest.raises(MuseredError, match="combine one dataset at a time"):
        mr.exp_combine(["FIELD", "FIELD"], params_name="combine_runs")


def test_bad_selection_sql_is_a_one_line_error(project):
    settings_path, database, reduced = project
    add_blocks(settings_path, combine_bad={"select": {"raw": "AIRMASS < 1.2"}})
    result = invoke(settings_path, "FIELD", "--method", "mpdaf", "--params", "combine_bad")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: recipes.combine_bad.select.raw: 'AIRMASS < 1.2': no such column: AIRMASS"]
    assert not (reduced / "exp_combine").exists()
