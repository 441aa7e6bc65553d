"""muse_scipost on the simulator's mini profile (2 IFUs, 2 exposures) against its truth.

The module fixture simulates a night (BIAS, FLAT, ARC, a standard star, 2 OBJECT exposures
at position angles 0° and 90°), runs muse_bias, muse_flat, muse_wavecal, muse_scibasic and
muse_standard, and then muse_scipost with several ``skymethod`` values onto the grid of
the truth cube (OUTPUT_WCS = the simulator's ``skycube`` WCS), so that cube and truth
compare spaxel by spaxel; the truth cube is rendered for the seeing of the exposure.

Two STD_RESPONSE curves: the truth's sensitivity (detected e-/s/Å per erg/s/cm²/Å) times
the flat-field normalisation c(λ) ≈ 0.95 (``Truth.flat_normalisation``: the mean QE,
slice throughput, CCD pixel per spaxel, edge and pixel height in Å of the slice pixels,
which the flat-fielded counts carry), for the tests of scipost alone; and the pipeline's
own, from the standard exposure, for the end-to-end flux test.

The simulator has no atmospheric refraction and no radial-velocity shift: the truth
comparisons run with ``lambdaref=-1`` and ``rvcorr=none``; DAR is tested on its own.
The true pointing error of each exposure is corrected with an OFFSET_LIST (RA_OFFSET =
−error, see recipes/algorithms/offsets.py for the sign convention). The simulated sky reaches
each slice with its own ±2 % illumination factor, which no calibration frame of the mini
night records at the slice level (the twilight cube is smooth). The comparisons run with
``autocalib=none`` and carry it (≈ ±1 % on a star); ``autocalib=deepfield``, which
measures it from the sky lines, is tested on its own against the truth (``deepfield``).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from recipes.base import RecipeError

pytestmark = pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")

SKY_WINDOW = 5.0  # Å around sky and nebular lines left out of continuum statistics


def _raw_of(base: Path, dpr_type: str) -> list[Path]:
    return [p for p in sorted((base / "raw").glob("*.fits")) if fits.getheader(p)["HIERARCH ESO DPR TYPE"] == dpr_type]


def _table(path: Path, name: str, cols: dict) -> Path:
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(k, "D", array=np.asarray(v, dtype=float)) for k, v in cols.items()], name=name)]).writeto(
        path, overwrite=True)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """Simulated night, calibrations and the PIXTABLE_OBJECT files of both exposures."""
    from musered.simulate.run import simulate
    from musered.simulate.truth import load_truth
    from recipes.steps import bias
    from recipes.steps import flat
    from recipes.steps import scibasic
    from recipes.steps import standard
    from recipes.steps import wavecal

    base = tmp_path_factory.mktemp("scipost-night")
    simulate(base, profile="mini", kinds={"BIAS", "FLAT", "ARC", "STD", "OBJECT"}, exposures=2, ifus=2)
    for name in ("bias", "flat", "wavecal", "std", "standard"):
        (base / name).mkdir()
    bias.RECIPE.run({"BIAS": _raw_of(base, "BIAS")}, bias.RECIPE.validate(), base / "bias")
    mb = base / "bias" / "MASTER_BIAS.fits"
    flat.RECIPE.run({"FLAT": _raw_of(base, "FLAT,LAMP"), "MASTER_BIAS": [mb]}, flat.RECIPE.validate(),
                    base / "flat")  # fmt: skip
    wavecal.RECIPE.run(
        {"ARC": _raw_of(base, "WAVE"), "MASTER_BIAS": [mb], "TRACE_TABLE": [base / "flat" / "TRACE_TABLE.fits"],
         "LINE_CATALOG": [base / "muse-calib" / "line_catalog.fits"]},
        wavecal.RECIPE.validate(), base / "wavecal",
    )  # fmt: skip
    calibs = {
        "MASTER_BIAS": [mb], "MASTER_FLAT": [base / "flat" / "MASTER_FLAT.fits"],
        "TRACE_TABLE": [base / "flat" / "TRACE_TABLE.fits"], "WAVECAL_TABLE": [base / "wavecal" / "WAVECAL_TABLE.fits"],
        "GEOMETRY_TABLE": [base / "muse-calib" / "geometry_table.fits"],
        "BADPIX_TABLE": [base / "muse-calib" / "badpix_table.fits"],
    }  # fmt: skip
    truth = load_truth(base)
    exposures = []
    for i, raw in enumerate(_raw_of(base, "OBJECT")):
        out = base / f"sci{i}"
        out.mkdir()
        products = scibasic.RECIPE.run({"OBJECT": [raw], **calibs}, scibasic.RECIPE.validate(), out)
        tables = sorted(p.path for p in products if p.tag == "PIXTABLE_OBJECT")
        exposures.append({"tables": tables, "truth": truth.exposures[raw.name], "header": fits.getheader(raw)})
    # the pipeline's own response: standard exposure -> muse_scibasic -> muse_standard
    products = scibasic.RECIPE.run({"STD": _raw_of(base, "STD"), **calibs}, scibasic.RECIPE.validate(),
                                   base / "std")  # fmt: skip
    static = base / "muse-calib"
    products = standard.RECIPE.run(
        {"PIXTABLE_STD": sorted(p.path for p in products if p.tag == "PIXTABLE_STD"),
         "EXTINCT_TABLE": [static / "extinct_table.fits"], "STD_FLUX_TABLE": [static / "std_flux_table.fits"]},
        standard.RECIPE.validate(), base / "standard",
    )  # fmt: skip
    pipeline = {p.tag: [p.path] for p in products if p.tag in ("STD_RESPONSE", "STD_TELLURIC")}
    return {"base": base, "truth": truth, "exposures": exposures, "static": static, "pipeline": pipeline}


def _sky_true(lam: np.ndarray, truth) -> np.ndarray:
    """True sky continuum per 0.2″ spaxel, 1e-20 erg/s/cm²/Å (sources.Scene.sky_spectrum)."""
    sc = truth.sources["sky_continuum_5500"]
    return sc * (1.0 + 0.25 * (lam - 5500.0) / 3000.0) * 0.04 * 1e20


def _line_free(lam: np.ndarray, truth) -> np.ndarray:
    from musered.simulate.sources import sky_lines

    lines = [v["lambda"] for v in truth.sources["nebula"]["lines"].values()] + list(sky_lines()[0])
    return np.all(np.abs(lam[:, None] - np.asarray(lines)[None, :]) > SKY_WINDOW, axis=1)


@pytest.fixture(scope="module")
def calib(night):
    """STD_RESPONSE (truth sensitivity × flat normalisation c(λ)), STD_TELLURIC (1),
    OUTPUT_WCS on the truth grid, and per-exposure OFFSET_LIST correcting the pointing error."""
    base, truth, static = night["base"], night["truth"], night["static"]
    resp = truth.response()
    lam, sens = resp["lambda"], resp["sensitivity"]
    c = truth.flat_normalisation(lam)
    assert 0.9 < c.min() and c.max() < 1.0  # QE, throughput, edges and pixel size of the mini layout
    _, th = truth.skycube()
    wcs = fits.PrimaryHDU()
    for card in th.cards:
        if card.keyword.startswith(("CTYPE", "CUNIT", "CRPIX", "CRVAL", "CD")):
            wcs.header.append(card)
    output_wcs = base / "output_wcs.fits"
    wcs.writeto(output_wcs)
    offsets = []
    for i, exp in enumerate(night["exposures"]):
        h, err = exp["header"], exp["truth"]["pointing_error"]
        cosd = math.cos(math.radians(h["DEC"]))
        path = base / f"offsets{i}.fits"
        Table({"DATE_OBS": [h["DATE-OBS"]], "MJD_OBS": [h["MJD-OBS"]],
               "RA_OFFSET": [-err[0] / 3600.0 / cosd], "DEC_OFFSET": [-err[1] / 3600.0],
               "FLUX_SCALE": [1.0]}).write(path)  # fmt: skip
        offsets.append(path)
    response = _table(base / "resp.fits", "STD_RESPONSE", {"lambda": lam, "response": 2.5 * np.log10(sens * c),
                                                           "resperr": np.full(lam.size, 0.01)})  # fmt: skip
    telluric = _table(base / "tell.fits", "STD_TELLURIC", {"lambda": lam, "ftelluric": np.ones(lam.size),
                                                           "ftellerr": np.zeros(lam.size)})  # fmt: skip
    return {"STD_RESPONSE": [response], "STD_TELLURIC": [telluric], "OUTPUT_WCS": [output_wcs], "offsets": offsets,
            "EXTINCT_TABLE": [static / "extinct_table.fits"], "ASTROMETRY_WCS": [static / "astrometry_wcs.fits"],
            "SKY_LINES": [static / "sky_lines.fits"], "FILTER_LIST": [static / "filter_list.fits"]}


def _frames(night, calib, exposure: int, offsets: bool = True, output_wcs: bool = True) -> dict:
    frames = {"PIXTABLE_OBJECT": night["exposures"][exposure]["tables"]}
    for tag in ("STD_RESPONSE", "STD_TELLURIC", "EXTINCT_TABLE", "ASTROMETRY_WCS", "SKY_LINES", "FILTER_LIST"):
        frames[tag] = calib[tag]
    if output_wcs:
        frames["OUTPUT_WCS"] = calib["OUTPUT_WCS"]
    if offsets:
        frames["OFFSET_LIST"] = [calib["offsets"][exposure]]
    return frames


def _scipost(night, name: str, frames: dict, **params):
    from recipes.steps.scipost import RECIPE

    out = night["base"] / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    base_params = {"lambdaref": -1.0, "rvcorr": "none", "autocalib": "none"}
    base_params.update(params)
    return RECIPE.run(frames, RECIPE.validate(base_params), out)


def _cube(products) -> tuple[np.ndarray, fits.Header]:
    path = next(p.path for p in products if p.tag == "DATACUBE_FINAL")
    with fits.open(path) as hdul:
        return np.array(hdul["DATA"].data), hdul["DATA"].header.copy()


@pytest.fixture(scope="module")
def cubes(night, calib):
    """{skymethod: (cube, header)} of exposure 1 on the truth grid, and the truth cube (at the
    exposure's seeing) cut to it. ``none`` runs without autocalib (the nebula test)."""
    out = {}
    for method in ("simple", "model", "none"):
        products = _scipost(night, f"out-{method}", _frames(night, calib, 0), skymethod=method,
                            save="cube,skymodel,individual")  # fmt: skip
        out[method] = _cube(products)
        if method == "model":
            out["products"] = products
    data, h = out["simple"]
    out["truth"] = _truth_like(night, data, h, exposure=0)
    out["lam"] = h["CRVAL3"] + h["CD3_3"] * (np.arange(data.shape[0]) + 1 - h["CRPIX3"])
    return out


def _truth_like(night, data: np.ndarray, h: fits.Header, exposure: int | None = None) -> np.ndarray:
    """The truth cube cut to a cube made on its grid (OUTPUT_WCS), NaN-padded to its shape;
    stars for the seeing of ``exposure`` (default: the mean seeing of the night)."""
    seeing = None if exposure is None else night["exposures"][exposure]["truth"]["seeing"]
    truth, th = night["truth"].skycube(seeing)
    z0 = int(round((h["CRVAL3"] - th["CRVAL3"]) / th["CD3_3"]))
    assert z0 >= 0 and h["CRPIX1"] == th["CRPIX1"] and h["CRPIX2"] == th["CRPIX2"]
    nz, ny, nx = data.shape
    cut = truth[z0 : z0 + nz, :ny, :nx]
    out = np.full((cut.shape[0], ny, nx), np.nan, dtype=np.float32)
    out[:, : cut.shape[1], : cut.shape[2]] = cut
    return out


def _inner(cube: np.ndarray, planes: np.ndarray, margin: int = 3) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    valid = np.all(np.isfinite(cube[planes]), axis=0)
    return binary_erosion(valid, iterations=margin)


def _planes(cubes, night, edge: float = 15.0) -> np.ndarray:
    lam = cubes["lam"]
    nz = min(lam.size, cubes["truth"].shape[0])
    ok = _line_free(lam, night["truth"]) & (lam > lam[0] + edge) & (lam < lam[-1] - edge)
    ok[nz:] = False
    return np.flatnonzero(ok)


# --------------------------------------------------------------------------------------
# against the truth
# --------------------------------------------------------------------------------------


def _star_ratios(night, data: np.ndarray, h: fits.Header, truth: np.ndarray, planes: np.ndarray) -> dict:
    """{star: cube / truth} of the continuum-plane sums in a 1.2″ radius aperture, for the
    stars whose aperture lies inside the data."""
    from astropy.wcs import WCS

    inner = _inner(data, planes)
    img = np.nansum(data[planes], axis=0)
    timg = truth[planes].sum(axis=0)
    w = WCS(h).celestial
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    out = {}
    for star in night["truth"].sources["stars"]:
        x, y = w.wcs_world2pix(star["ra"], star["dec"], 0)
        ap = np.hypot(xx - x, yy - y) < 6.0
        if ap.sum() > 100 and inner[ap].all() and np.isfinite(timg[ap]).all():
            out[star["name"]] = float(img[ap].sum() / timg[ap].sum())
    return out


def _nebula_ratio(data: np.ndarray, truth: np.ndarray, lam: np.ndarray) -> float:
    """[SII] 6716+6731 over the inner field, each above its local continuum (no sky lines
    near), cube / truth."""
    lam = lam[: truth.shape[0]]
    line = np.flatnonzero((lam > 6710) & (lam < 6738))
    cont = np.flatnonzero(((lam > 6690) & (lam < 6704)) | ((lam > 6745) & (lam < 6760)))
    inner = _inner(data, np.concatenate([line, cont]))

    def line_flux(cube):
        spec = np.nansum(cube[:, inner], axis=1)
        fit = np.polyfit(lam[cont], spec[cont], 1)
        return float(np.sum(spec[line] - np.polyval(fit, lam[line])))

    return line_flux(data) / line_flux(truth)


def test_point_source_fluxes_within_two_percent(night, cubes):
    """Measured 0.983-1.009 (the aperture sums also hold the drizzle's broadening of the
    PSF and the ±2 % sky illumination of the star's slices)."""
    ratios = _star_ratios(night, *cubes["simple"], cubes["truth"], _planes(cubes, night))
    assert len(ratios) >= 2
    assert all(abs(r - 1) < 0.02 for r in ratios.values()), " ".join(f"{k}={v:.3f}" for k, v in ratios.items())


def test_nebula_line_flux_in_a_large_aperture(night, cubes):
    """Emission lines keep their flux through the chain: the simulator integrates each line
    over every pixel's λ extent, the pipeline's flat-fielded rows are flux densities that
    the resampler averages, and the truth cube integrates over its planes. Measured 1.018;
    the [SII] flux of one 600 s exposure has 1.7 % of photon and read noise, so 2 % is
    the limit here (1 % is tested on a 20× brighter nebula below). The former 5 % deficit
    was the test's own response (c(λ) measured on the faint sky, 1.2 % high from the dark
    current) and the former autocalib=deepfield (2.5 %; it now uses the sky lines)."""
    data, _ = cubes["none"]
    ratio = _nebula_ratio(data, cubes["truth"], cubes["lam"])
    assert abs(ratio - 1) < 0.02, ratio


def test_sky_line_fluxes_through_the_chain(night, cubes):
    """Sky lines (uniform on the sky, bright) keep their flux from the simulator's CCD to
    the cube: the mean spectrum of the inner field without sky subtraction, each isolated
    line above its local continuum, against the truth (not extincted: the pipeline's
    extinction correction raises it by 10^(0.4 k(λ) X)). Measured: 0.990-1.008 per line,
    1.001 in total; the spread is noise and the ±2 % per-slice sky illumination."""
    from musered.simulate.sources import extinction, sky_lines

    data, _ = cubes["none"]
    lam = cubes["lam"]
    inner = _inner(data, np.flatnonzero((lam > lam[0] + 15) & (lam < lam[-1] - 15)))
    assert inner.sum() > 500
    spec = np.nanmean(data[:, inner], axis=1)
    nebula = np.array([v["lambda"] for v in night["truth"].sources["nebula"]["lines"].values()])
    airmass = night["exposures"][0]["truth"]["airmass"]
    sl, sf = sky_lines()
    measured, expected = [], []
    for ll, flux in zip(sl, sf):
        others = np.concatenate([sl[sl != ll], nebula])
        if not (lam[0] + 25 < ll < lam[-1] - 25) or np.min(np.abs(others - ll)) < 12 or flux < 1.5e-16:
            continue
        core = np.abs(lam - ll) < 7
        cont = (np.abs(lam - ll) > 9) & (np.abs(lam - ll) < 25) & np.all(np.abs(lam[:, None] - others) > 9, axis=1)
        fit = np.polyfit(lam[cont] - ll, spec[cont], 1)
        measured.append(float(np.sum(spec[core] - np.polyval(fit, lam[core] - ll)) * 1.25))
        expected.append(flux * 0.04 * 1e20 * 10 ** (0.4 * float(extinction(ll)) * airmass))
    ratios = np.array(measured) / np.array(expected)
    assert ratios.size >= 6
    assert abs(np.sum(measured) / np.sum(expected) - 1) < 0.01, ratios
    assert np.all(np.abs(ratios - 1) < 0.02), ratios


def test_fluxes_with_the_pipeline_response(night, calib, cubes):
    """End to end: standard exposure → muse_scibasic → muse_standard → STD_RESPONSE and
    STD_TELLURIC → muse_scipost of a science exposure → star and nebula fluxes vs the
    truth within 2 % (measured: stars 0.992-1.018, [SII] 1.017 with its 1.7 % noise;
    the response's −0.01 mag, see test_standard, raises them by 0.9 %)."""
    frames = {**_frames(night, calib, 0), **night["pipeline"]}
    data, h = _cube(_scipost(night, "out-pipeline-stars", frames, skymethod="simple", save="cube"))
    ratios = _star_ratios(night, data, h, cubes["truth"], _planes(cubes, night))
    assert len(ratios) >= 2
    assert all(abs(r - 1) < 0.02 for r in ratios.values()), " ".join(f"{k}={v:.3f}" for k, v in ratios.items())
    data, _ = _cube(_scipost(night, "out-pipeline-nebula", frames, skymethod="none", save="cube"))
    ratio = _nebula_ratio(data, cubes["truth"], cubes["lam"])
    assert abs(ratio - 1) < 0.02, ratio


@pytest.fixture(scope="module")
def bright_nebula(night, calib):
    """The first science exposure again, with the nebula 20× brighter (same seed: same
    instrument, pointing and noise streams), reduced with the night's calibrations: its
    [SII] flux is measured to ≈ 0.1 %, where the real scene's has ≈ 1.7 % of noise."""
    from musered.simulate import sources
    from musered.simulate.run import simulate
    from musered.simulate.truth import load_truth
    from recipes.steps import scibasic

    base = night["base"] / "bright-nebula"
    shutil.rmtree(base, ignore_errors=True)
    make_scene = sources.make_scene

    def brighter(rng, field):
        scene = make_scene(rng, field)
        scene.nebula.surface *= 20.0
        return scene

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sources, "make_scene", brighter)
        simulate(base, profile="mini", kinds={"OBJECT"}, exposures=2, ifus=2)
    raw = _raw_of(base, "OBJECT")[0]
    assert fits.getheader(raw)["DATE-OBS"] == night["exposures"][0]["header"]["DATE-OBS"]
    calibs = {tag: [night["base"] / sub / f"{tag}.fits"] for tag, sub in (
        ("MASTER_BIAS", "bias"), ("MASTER_FLAT", "flat"), ("TRACE_TABLE", "flat"), ("WAVECAL_TABLE", "wavecal"))}
    calibs["GEOMETRY_TABLE"] = [night["static"] / "geometry_table.fits"]
    calibs["BADPIX_TABLE"] = [night["static"] / "badpix_table.fits"]
    products = scibasic.RECIPE.run({"OBJECT": [raw], **calibs}, scibasic.RECIPE.validate(), base)
    tables = sorted(p.path for p in products if p.tag == "PIXTABLE_OBJECT")
    truth = load_truth(base)
    return tables, truth


@pytest.mark.parametrize("response", ["truth", "pipeline"])
def test_bright_nebula_line_flux_within_one_percent(night, calib, bright_nebula, response):
    """[SII] of the 20× brighter nebula over the inner field, no sky subtraction: measured
    1.00 with the truth response and 1.01 with the pipeline's (its −0.01 mag)."""
    tables, truth = bright_nebula
    frames = {**_frames(night, calib, 0), "PIXTABLE_OBJECT": tables}
    if response == "pipeline":
        frames.update(night["pipeline"])
    data, h = _cube(_scipost(night, f"out-bright-{response}", frames, skymethod="none", save="cube"))
    cube, th = truth.skycube(night["exposures"][0]["truth"]["seeing"])
    z0 = int(round((h["CRVAL3"] - th["CRVAL3"]) / th["CD3_3"]))
    nz, ny, nx = data.shape
    cut = np.full((min(nz, cube.shape[0] - z0), ny, nx), np.nan, dtype=np.float32)
    part = cube[z0 : z0 + cut.shape[0], :ny, :nx]
    cut[:, : part.shape[1], : part.shape[2]] = part
    lam = h["CRVAL3"] + h["CD3_3"] * (np.arange(nz) + 1 - h["CRPIX3"])
    ratio = _nebula_ratio(data, cut, lam)
    assert abs(ratio - 1) < 0.01, ratio


def _centroid(img: np.ndarray, x: float, y: float, inside: np.ndarray, radius: float = 2.5) -> tuple[float, float]:
    """First moment in a disc of ``radius`` spaxels, re-centred until it converges.

    0.5″ (less than one seeing FWHM): the simulated stars are as close as ~1″, and in a wider
    disc a neighbour's wing, broadened differently by the resampling than in the truth cube,
    pulls the re-centring (up to 0.08″ with 0.8″)."""
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    for _ in range(10):
        m = (np.hypot(xx - x, yy - y) < radius) & inside
        nx, ny = (float(np.sum(img[m] * a[m]) / np.sum(img[m])) for a in (xx, yy))
        if math.hypot(nx - x, ny - y) < 1e-4:
            break
        x, y = nx, ny
    return x, y


def _centroids(cube: np.ndarray, truth: np.ndarray, h: fits.Header, stars, planes) -> list[tuple[float, float]]:
    """(Δx, Δy) [arcsec] of each star's centroid (continuum planes, 0.5″ radius) in ``cube``
    minus that in ``truth``, for stars whose disc lies well inside the cube's data."""
    from astropy.wcs import WCS

    img, timg = np.nansum(cube[planes], axis=0), np.nansum(truth[planes], axis=0)
    inside = _inner(cube, planes)
    w = WCS(h).celestial
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    out = []
    for star in stars:
        x, y = w.wcs_world2pix(star["ra"], star["dec"], 0)
        m = np.hypot(xx - x, yy - y) < 4.0
        if m.sum() < 30 or not inside[m].all():
            continue
        (cx, cy), (tx, ty) = _centroid(img, x, y, inside), _centroid(timg, x, y, inside)
        out.append(((cx - tx) * 0.2, (cy - ty) * 0.2))
    return out


def test_centroids_match_injected_positions(night, calib, cubes):
    """Centroids of the stars (continuum planes) against the truth cube's, which holds the
    injected positions with the same blending; both exposures (0° and 90°)."""
    planes = _planes(cubes, night)
    stars = night["truth"].sources["stars"]
    data, h = cubes["simple"]
    offsets = _centroids(data, cubes["truth"], h, stars, planes)
    products = _scipost(night, "out-rotated", _frames(night, calib, 1), skymethod="simple", save="cube")
    rdata, rh = _cube(products)
    offsets += _centroids(rdata, _truth_like(night, rdata, rh, exposure=1), rh, stars, planes)
    assert len(offsets) >= 5
    assert np.max(np.hypot(*np.array(offsets).T)) < 0.05


def test_offset_list_sign_convention(night, calib, cubes):
    """Without the OFFSET_LIST the stars appear displaced by minus the true pointing error."""
    planes = _planes(cubes, night)
    products = _scipost(night, "out-nooffset", _frames(night, calib, 0, offsets=False), skymethod="simple",
                        save="cube")  # fmt: skip
    data, h = _cube(products)
    stars = night["truth"].sources["stars"]
    offsets = np.array(_centroids(data, _truth_like(night, data, h, exposure=0), h, stars, planes))
    assert len(offsets) >= 2
    err = night["exposures"][0]["truth"]["pointing_error"]  # (ξ east, η north) arcsec; +x is west
    expected = np.array([err[0], -err[1]])  # cube x grows westwards: −ξ → +x
    assert np.abs(np.median(offsets, axis=0) - expected).max() < 0.05


@pytest.mark.parametrize("method", ["simple", "model"])
def test_sky_residual_below_one_percent(night, cubes, method):
    """Spaxels without scene continuum: mean of (cube − truth) per plane, over the planes
    away from the nebular lines (which the darkest spaxels also contain), < 1 % of the sky."""
    data, _ = cubes[method]
    truth, lam = cubes["truth"], cubes["lam"]
    nz = truth.shape[0]
    planes = _planes(cubes, night)
    cont_img = truth[planes].mean(axis=0)
    sky = _sky_true(lam[:nz], night["truth"])
    from musered.simulate.sources import extinction

    sky_obs = sky * 10 ** (0.4 * extinction(lam[:nz]) * night["exposures"][0]["truth"]["airmass"])
    inner = _inner(data, planes)
    sel = inner & (cont_img < 0.005 * np.median(sky_obs))
    assert sel.sum() > 30
    nebula = [v["lambda"] for v in night["truth"].sources["nebula"]["lines"].values()]
    lam_ok = np.all(np.abs(lam[:nz, None] - np.asarray(nebula)[None, :]) > SKY_WINDOW, axis=1)
    lam_ok &= (lam[:nz] > lam[0] + 15) & (lam[:nz] < lam[nz - 1] - 15)
    resid = np.nanmean(data[:nz][:, sel] - truth[:, sel], axis=1)[lam_ok] / sky_obs[lam_ok]
    assert abs(np.mean(resid)) < 0.01, np.mean(resid)
    assert np.mean(np.abs(resid)) < 0.01 + 0.02, np.mean(np.abs(resid))
    if method == "model":
        tags = {p.tag for p in cubes["products"]}
        assert {"SKY_MASK", "SKY_SPECTRUM", "SKY_LINES", "SKY_CONTINUUM", "PIXTABLE_REDUCED"} <= tags


def test_nearest_cube_noise_matches_its_stat(night, calib, cubes):
    """(cube − truth)/√STAT of a nearest-neighbour cube (skymethod=simple), in the spaxels
    without scene continuum and the planes away from lines: std 1 ± 0.1 (measured 1.08,
    1.00 from the MAD: a few cosmic-ray remnants). The mean is −1/(2σ) ≈ −0.12, not 0:
    STAT holds the Poisson variance of the *measured* counts, so upward fluctuations get
    the larger variance (≈ 20 e- per pixel here, σ ≈ 4.5 e-)."""
    from musered.simulate.sources import extinction

    data, h = _cube(_scipost(night, "out-nearest", _frames(night, calib, 0), skymethod="simple",
                             resample="nearest", save="cube"))  # fmt: skip
    path = night["base"] / "out-nearest" / "DATACUBE_FINAL.fits"
    with fits.open(path) as hdul:
        assert hdul["STAT"].header["HDUCLAS3"] == "MSE"  # STAT is a variance
        stat = np.array(hdul["STAT"].data)
    truth = _truth_like(night, data, h, exposure=0)
    lam = h["CRVAL3"] + h["CD3_3"] * (np.arange(data.shape[0]) + 1 - h["CRPIX3"])
    planes = _planes({"lam": lam, "truth": truth}, night)
    sky = _sky_true(lam[planes], night["truth"]) * 10 ** (
        0.4 * extinction(lam[planes]) * night["exposures"][0]["truth"]["airmass"])
    faint = np.nanmax(truth[planes] / sky[:, None, None], axis=0) < 0.005
    z = (data[planes] - truth[planes]) / np.sqrt(stat[planes])
    good = np.isfinite(z) & faint[None]
    assert good.sum() > 50000
    assert z[good].std() == pytest.approx(1.0, abs=0.1)
    assert -0.2 < z[good].mean() < 0.0


# --------------------------------------------------------------------------------------
# products and WCS
# --------------------------------------------------------------------------------------


def test_cube_wcs_opens_in_astropy(night, calib):
    from astropy.wcs import WCS

    products = _scipost(night, "out-fitted", _frames(night, calib, 0, output_wcs=False), skymethod="simple",
                        save="cube,individual", filter="white,Cousins_R", lambdaref=7000.0, darcheck="check",
                        rvcorr="bary")  # fmt: skip
    reduced = fits.getheader(next(p.path for p in products if p.tag == "PIXTABLE_REDUCED"))
    assert reduced["ESO DRS MUSE PIXTABLE DAR CORRECT"] == 7000.0
    assert 0.0 <= reduced["ESO DRS MUSE PIXTABLE DAR CHECK"] < 0.2  # the simulator has no DAR: ≈ the model's 0.05″
    assert reduced["ESO DRS MUSE PIXTABLE WCS"].startswith("projected") and reduced["ESO DRS MUSE PIXTABLE FLUXCAL"]
    assert abs(reduced["ESO DRS MUSE PIXTABLE RVCORR"]) > 0.1
    path = next(p.path for p in products if p.tag == "DATACUBE_FINAL")
    with fits.open(path) as hdul:
        h = hdul["DATA"].header
        assert hdul["STAT"].header["HDUCLAS2"] == "ERROR" and hdul["DATA"].header["BUNIT"].startswith("10**(-20)")
        assert hdul[0].header["HIERARCH ESO PRO CATG"] == "DATACUBE_FINAL"
    assert (h["CTYPE1"], h["CTYPE2"], h["CTYPE3"], h["CUNIT3"]) == ("RA---TAN", "DEC--TAN", "AWAV", "Angstrom")
    wcs = WCS(h)
    scale = np.abs(wcs.celestial.pixel_scale_matrix.diagonal()) * 3600
    np.testing.assert_allclose(scale, [0.2, 0.2], rtol=1e-9)
    assert abs(h["CD3_3"] - 1.25) < 1e-9
    assert wcs.spectral.pixel_to_world(0).to_value("Angstrom") == pytest.approx(h["CRVAL3"], abs=1e-6)
    ra, dec, _ = wcs.wcs_pix2world(h["CRPIX1"] - 1, h["CRPIX2"] - 1, 0, 0)
    assert abs(dec - night["exposures"][0]["header"]["DEC"]) < 0.01
    fov = [p for p in products if p.tag == "IMAGE_FOV"]
    assert [p.qc["FILTER"] for p in fov] == ["white", "Cousins_R"]


@pytest.fixture(scope="module")
def combined(night, calib):
    """Both exposures (0° and 90°) in one muse_scipost run, one OFFSET_LIST for both."""
    frames = _both_exposures(night, calib, "offsets_both.fits")
    return _scipost(night, "out-combined", frames, skymethod="simple", save="cube,combined")


def _both_exposures(night, calib, offsets_name: str) -> dict:
    """Frames of one scipost run over both exposures, with one OFFSET_LIST of both rows."""
    rows = [Table.read(p) for p in calib["offsets"]]
    offsets = night["base"] / offsets_name
    Table({c: [r[c][0] for r in rows] for c in rows[0].colnames}).write(offsets, overwrite=True)
    frames = _frames(night, calib, 0)
    frames["PIXTABLE_OBJECT"] = [p for e in night["exposures"] for p in e["tables"]]
    frames["OFFSET_LIST"] = [offsets]
    return frames


def test_two_exposures_combined(night, cubes, combined):
    data, h = _cube(combined)
    with fits.open(next(p.path for p in combined if p.tag == "PIXTABLE_COMBINED")) as hdul:
        ph = hdul[0].header
        assert ph["ESO DRS MUSE PIXTABLE COMBINED"] == 2 and ph["ESO DRS MUSE PIXTABLE WEIGHTED"]
        assert ph["ESO DRS MUSE PIXTABLE WCS"].startswith("positioned")
    single, _ = cubes["simple"]
    assert np.isfinite(data[400]).sum() > 1.5 * np.isfinite(single[400]).sum()  # the rotated field adds area
    planes = _planes(cubes, night)
    offsets = _centroids(data, _truth_like(night, data, h), h, night["truth"].sources["stars"], planes)
    assert len(offsets) >= 3 and np.max(np.hypot(*np.array(offsets).T)) < 0.05


def test_cube_opens_in_mpdaf(combined):
    mpdaf = pytest.importorskip("mpdaf.obj", reason="mpdaf is not installed")
    cube = mpdaf.Cube(str(next(p.path for p in combined if p.tag == "DATACUBE_FINAL")))
    assert cube.wave.get_step(unit="Angstrom") == pytest.approx(1.25)
    assert cube.wcs.get_step(unit="arcsec") == pytest.approx([0.2, 0.2])
    assert np.isfinite(cube.data.filled(np.nan)).any()


@pytest.fixture(scope="module")
def deepfield(night, calib):
    """Both exposures in one muse_scipost run with ``autocalib=deepfield`` (factors saved)."""
    frames = _both_exposures(night, calib, "offsets_deepfield.fits")
    return _scipost(night, "out-deepfield", frames, skymethod="simple", autocalib="deepfield", save="cube,autocal")


def _slice_factor_errors(night, path: Path) -> np.ndarray:
    """AUTOCAL_FACTORS per slice (mean over its λ bins) / the true sky illumination of the
    slice (the offset ``a`` of a + b·s: the mean over the slice), each normalised to a
    mean of 1, minus 1."""
    factors = Table.read(path)
    assert set(factors.colnames) >= {"ifu", "sli", "lmin", "lmax", "corr", "npts"}
    key = np.asarray(factors["ifu"]) * 64 + np.asarray(factors["sli"])
    slices = np.unique(key)
    corr = np.array([np.mean(np.asarray(factors["corr"])[key == k]) for k in slices])
    true = np.array([night["truth"].illumination(int(k // 64))[int(k % 64) - 1, 0] for k in slices])
    return corr / corr.mean() - true / true.mean()


def test_deepfield_factors_match_the_slice_illumination(night, deepfield):
    """The simulated sky reaches each slice with its own illumination (±2 %, truth ``illum``);
    ``deepfield`` measures it from the sky lines. Measured rms of factor − truth over the
    96 slices: 0.50 % and 0.49 % for the two exposures (their noise alone, from STAT:
    ≈ 0.4 %), 0.36 % for their mean; the old darkest-half medians: 5.7 % and 3.1 %.
    Bounds: 0.6 % per exposure (margin for noise), 0.5 % (the goal) for the mean."""
    paths = sorted(p.path for p in deepfield if p.tag == "AUTOCAL_FACTORS")
    assert len(paths) == 2
    errors = [_slice_factor_errors(night, path) for path in paths]
    assert all(e.size == 96 for e in errors)
    spread = np.std([night["truth"].illumination(i)[:, 0] for i in (1, 2)])
    assert spread > 0.015  # the test has something to recover
    rms = [float(np.std(e)) for e in errors]
    assert max(rms) < 0.006, rms
    assert float(np.std(0.5 * (errors[0] + errors[1]))) < 0.005, rms


def test_deepfield_keeps_star_fluxes(night, cubes, combined, deepfield):
    """Stars in the two-exposure cube with ``autocalib=deepfield`` against the same cube
    without it and against the truth. The factors differ from 1 by the slices' true
    illumination only, so stars move by what it carries into their 1.2″ apertures:
    measured 0.984–1.010 of the truth, |Δ| ≤ 1.3 % from ``none`` (dividing by the true
    factors gives 0.986–1.016, |Δ| ≤ 0.8 %); the former darkest-half medians took stars
    down by 2–5 %."""
    planes = _planes(cubes, night)
    data, h = _cube(deepfield)
    ratios = _star_ratios(night, data, h, _truth_like(night, data, h), planes)
    plain, ph = _cube(combined)
    before = _star_ratios(night, plain, ph, _truth_like(night, plain, ph), planes)
    assert len(ratios) >= 3 and ratios.keys() == before.keys()
    text = " ".join(f"{k}={v:.3f}/{before[k]:.3f}" for k, v in ratios.items())
    assert all(abs(r - 1) < 0.02 for r in ratios.values()), text
    assert all(abs(ratios[k] / before[k] - 1) < 0.015 for k in ratios), text


# --------------------------------------------------------------------------------------
# bad input: one-line RecipeError
# --------------------------------------------------------------------------------------


def _assert_one_line(exc: pytest.ExceptionInfo, *words: str) -> None:
    text = str(exc.value)
    assert "\n" not in text
    for word in words:
        assert word in text, text


def test_output_wcs_that_misses_the_exposure(night, calib, tmp_path):
    hdu = fits.PrimaryHDU()
    h = fits.open(calib["OUTPUT_WCS"][0])[0].header
    for card in h.cards:
        if card.keyword.startswith(("CTYPE", "CUNIT", "CRPIX", "CRVAL", "CD")):
            hdu.header.append(card)
    hdu.header["CRVAL2"] = h["CRVAL2"] + 1.0
    path = tmp_path / "far_wcs.fits"
    hdu.writeto(path)
    frames = _frames(night, calib, 0)
    frames["OUTPUT_WCS"] = [path]
    with pytest.raises(RecipeError) as exc:
        _scipost(night, "out-bad-wcs", frames, skymethod="none", save="cube")
    _assert_one_line(exc, "far_wcs.fits", "overlap")


def test_unknown_filter(night, calib):
    with pytest.raises(RecipeError) as exc:
        _scipost(night, "out-bad-filter", _frames(night, calib, 0), filter="white,Johnson_Z")
    _assert_one_line(exc, "Johnson_Z", "filter_list.fits")


@pytest.mark.parametrize("params, word", [
    ({"skymodel_fraction": 1.5}, "skymodel_fraction"),
    ({"lambdamin": 9000.0, "lambdamax": 5000.0}, "lambdamin"),
    ({"skymodel_fraction": 0.6, "skymodel_ignore": 0.6}, "skymodel_ignore"),
    ({"save": "cube,everything"}, "everything"),
    ({"sky_crsigma": "a,b"}, "sky_crsigma"),
    ({"pixfrac": "0.8,0.8,0.8,0.8"}, "pixfrac"),
    ({"autocalib": "sometimes"}, "autocalib"),
])  # fmt: skip
def test_parameters_out_of_range(params, word):
    """Refused with a one-line reason when the parameters are validated (the runner does
    it once, before the run)."""
    from recipes.steps.scipost import RECIPE

    with pytest.raises(ValueError) as exc:
        RECIPE.validate({"lambdaref": -1.0, "rvcorr": "none", **params})
    _assert_one_line(exc, word)


def test_list_parameters_are_typed():
    from recipes.steps.scipost import RECIPE

    params = RECIPE.validate({"save": "cube, individual", "sky_crsigma": "7", "filter": "white,Johnson_V"})
    assert params["save"] == ("cube", "individual") and params["sky_crsigma"] == (7.0, 7.0)
    assert params["filter"] == ("white", "Johnson_V") and params["pixfrac"] == (0.8, 0.8)
    assert RECIPE.defaults()["sky_crsigma"] == (15.0, 15.0) and RECIPE.param("sky_crsigma").default == "15.,15."


def test_pixel_table_from_another_mode(night, calib, tmp_path):
    tables = night["exposures"][0]["tables"]
    other = tmp_path / tables[1].name
    shutil.copy(tables[1], other)
    with fits.open(other, mode="update") as hdul:
        hdul[0].header["HIERARCH ESO INS MODE"] = "WFM-AO-N"
    frames = _frames(night, calib, 0)
    frames["PIXTABLE_OBJECT"] = [tables[0], other]
    with pytest.raises(RecipeError) as exc:
        _scipost(night, "out-bad-mode", frames)
    _assert_one_line(exc, other.name, "WFM-AO-N")


def test_ao_exposure_with_raman_lines_is_reduced_and_says_raman_was_not_removed(night, calib, tmp_path, caplog):
    """Raman-line removal is not implemented (issue 16): an AO exposure given RAMAN_LINES is
    reduced, with a WARNING and ``RAMAN = F`` in its pixel table and cube; outside AO modes
    RAMAN_LINES is ignored, as by the DRS."""
    raman = _table(tmp_path / "raman_lines.fits", "RAMAN_LINES", {"lambda": [6825.4, 6827.3], "flux": [1.0, 1.0]})
    tables = []
    for table in night["exposures"][0]["tables"]:
        tables.append(tmp_path / table.name)
        shutil.copy(table, tables[-1])
        with fits.open(tables[-1], mode="update") as hdul:
            hdul[0].header["HIERARCH ESO INS MODE"] = "WFM-AO-N"
    frames = {**_frames(night, calib, 0), "PIXTABLE_OBJECT": tables, "RAMAN_LINES": [raman]}
    with caplog.at_level("WARNING", logger="recipes"):
        products = _scipost(night, "out-raman-ao", frames, skymethod="none", save="cube,individual")
    assert any("RAMAN_LINES raman_lines.fits given but the Raman lines are NOT removed" in r.getMessage()
               and r.levelname == "WARNING" for r in caplog.records)
    cube = next(p.path for p in products if p.tag == "DATACUBE_FINAL")
    reduced = next(p.path for p in products if p.tag == "PIXTABLE_REDUCED")
    assert fits.getheader(cube)["HIERARCH ESO DRS MUSE RAMAN"] is False
    assert fits.getheader(reduced)["HIERARCH ESO DRS MUSE PIXTABLE RAMAN"] is False
    assert "raman_lines.fits" not in repr(fits.getheader(cube))  # not listed as a calibration used
    frames = {**_frames(night, calib, 0), "RAMAN_LINES": [raman]}  # the WFM-NOAO-N original
    products = _scipost(night, "out-raman-noao", frames, skymethod="none", save="cube")
    cube = next(p.path for p in products if p.tag == "DATACUBE_FINAL")
    assert "HIERARCH ESO DRS MUSE RAMAN" not in fits.getheader(cube)


def test_missing_response(night, calib):
    frames = _frames(night, calib, 0)
    del frames["STD_RESPONSE"]
    with pytest.raises(RecipeError) as exc:
        _scipost(night, "out-no-response", frames)
    _assert_one_line(exc, "STD_RESPONSE")


# --------------------------------------------------------------------------------------
# pure steps
# --------------------------------------------------------------------------------------


def test_refractive_index_and_dar_direction():
    from recipes.algorithms.dar import dar_offsets, refractive_index_minus_one

    # dry standard air (15 °C, 1013.25 hPa) at the HeNe line 6328 Å: n − 1 = 2.7653e-4 (Edlén)
    n = refractive_index_minus_one(np.array([6328.0]), 15.0, 1013.25, 0.0)[0]
    assert n == pytest.approx(2.7653e-4, rel=5e-4)
    h = fits.Header({"ESO TEL AIRM START": 1.5, "ESO TEL AIRM END": 1.5, "ESO TEL PARANG START": 0.0,
                     "ESO TEL AMBI TEMP": 10.0, "ESO TEL AMBI RHUM": 10.0,
                     "ESO TEL AMBI PRES START": 743.0})  # fmt: skip
    dxi, deta = dar_offsets(np.array([5000.0, 7000.0, 9000.0]), 7000.0, h)
    # blue light is displaced towards the zenith (north here), so its correction points south
    assert abs(dxi).max() < 1e-12 and deta[1] == 0.0 and deta[0] < -0.3 and 0 < deta[2] < 0.3


def test_flux_calibration_formula():
    from recipes.algorithms.pixtable import make_pixtable
    from recipes.algorithms.fluxcal import telluric_at_airmass
    from recipes.algorithms.postprocess import flux_calibrate

    n = 4
    h = fits.Header({"EXPTIME": 100.0, "ESO TEL AIRM START": 1.2, "ESO TEL AIRM END": 1.4})
    pt = make_pixtable({"xpos": np.zeros(n), "ypos": np.zeros(n), "lambda": [5000.0, 6000.0, 7000.0, 8000.0],
                        "data": np.full(n, 250.0), "dq": np.zeros(n), "stat": np.full(n, 250.0),
                        "origin": np.zeros(n)}, h)  # fmt: skip
    response = (np.array([4000.0, 9000.0]), np.array([30.0, 30.0]))
    extinction = (np.array([4000.0, 9000.0]), np.array([0.2, 0.2]))
    telluric = (np.array([7500.0, 8500.0]), np.array([0.5, 0.5]))
    flux_calibrate(pt, response, extinction, telluric)
    expected = 250.0 / 100.0 / 1.25 / 10 ** (0.4 * 30.0) * 10 ** (0.4 * 0.2 * 1.3) * 1e20
    t_x = telluric_at_airmass(0.5, 1.3)  # ftelluric is given at airmass 1
    np.testing.assert_allclose(pt.data, [expected] * 3 + [expected / t_x], rtol=1e-6)
    np.testing.assert_allclose(pt.stat, (pt.data / 250.0) ** 2 * 250.0, rtol=1e-5)
    with pytest.raises(RecipeError, match="already flux calibrated"):
        flux_calibrate(pt, response, extinction)


def test_projection_follows_the_position_angle():
    """Field +y points north at posang 0 and east at posang 90 (module doc of postprocess)."""
    from recipes.algorithms.pixtable import make_pixtable
    from recipes.algorithms.astrometry import project_to_sky

    cd = np.array([[-0.2 / 3600, 0.0], [0.0, 0.2 / 3600]])
    for posang, (e_ra, e_dec) in ((0.0, (0.0, 2.0)), (90.0, (2.0, 0.0))):
        h = fits.Header({"RA": 150.0, "DEC": 0.0, "HIERARCH ESO INS DROT POSANG": posang})
        pt = make_pixtable({"xpos": [0.0], "ypos": [10.0], "lambda": [6000.0], "data": [1.0], "dq": [0],
                            "stat": [1.0], "origin": [0]}, h)  # fmt: skip
        project_to_sky(pt, cd, (0.0, 0.0))
        ra, dec = pt.celestial()
        assert (ra[0] - 150.0) * 3600 == pytest.approx(e_ra, abs=1e-4)
        assert dec[0] * 3600 == pytest.approx(e_dec, abs=1e-4)


def test_sky_mask_fractions_and_clipped_means():
    from recipes.algorithms.skysub import FieldImage, clipped_bin_mean, sky_mask

    image = FieldImage(np.arange(100, dtype=float).reshape(10, 10), 0, 0)
    mask, low, high = sky_mask(image, 0.1, 0.05)
    assert mask.sum() == 10 and (low, high) == (5.0, 14.0)
    values = np.array([1.0, 1.1, 0.9, 1.0, 50.0, 2.0, 2.0, 2.1, 1.9])
    bins = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    mean, keep = clipped_bin_mean(bins, values, 2, 5.0)
    np.testing.assert_allclose(mean, [1.0, 2.0])
    assert not keep[4] and keep.sum() == 8


def test_source_free_mask_keeps_the_sky_of_bright_slices():
    """The deepfield source mask thresholds above the median (it does not take a darkest
    fraction): every slice row of a ±2 % illuminated sky keeps its spaxels, a star and its
    wings (grown by ``grow``) are left out."""
    from recipes.algorithms.skysub import FieldImage, sky_mask, source_free_mask

    rng = np.random.default_rng(5)
    rows = 1.0 + 0.02 * rng.standard_normal(24)
    data = 100.0 * rows[:, None] * np.ones((24, 40)) + rng.normal(0, 0.5, (24, 40))
    yy, xx = np.mgrid[:24, :40]
    data += 400.0 * np.exp(-0.5 * ((xx - 20) ** 2 + (yy - 12) ** 2) / 1.5**2)
    data[0, 0] = np.nan
    image = FieldImage(data.astype(np.float32), 0, 0)
    mask, threshold = source_free_mask(image, 3.0, 3)
    assert not mask[12, 20] and not mask[12, 24] and not mask[0, 0]  # star, its wing, no data
    assert mask[:, 1:11].sum(axis=1).min() == 10  # every row keeps its sky away from the star
    assert threshold > 100.0
    darkest, _, _ = sky_mask(image, 0.5, 0.0)
    assert darkest[np.argmax(rows)].sum() < 5  # what ranking by brightness did to the brightest slice


def test_sky_line_windows_hold_whole_lines():
    """Each window covers its line above AUTOCAL_LINE_CONTRAST × the running median, plus
    AUTOCAL_LINE_PAD Å on both sides; a flat continuum gives none."""
    from recipes.algorithms.autocal import AUTOCAL_LINE_PAD, sky_line_windows
    from recipes.algorithms.skysub import SkySpectrum

    lam = np.arange(6000.0, 6400.0, 1.25)
    flux = 10.0 + 200.0 * np.exp(-0.5 * ((lam - 6150.0) / 1.1) ** 2) + 50.0 * np.exp(-0.5 * ((lam - 6300.0) / 1.1) ** 2)
    ones = np.ones(lam.size)
    lo, hi = sky_line_windows(SkySpectrum(lam, flux, ones, ones))
    assert lo.size == 2
    for centre, a, b in zip((6150.0, 6300.0), lo, hi):
        assert a < centre - 1.1 * 2 - AUTOCAL_LINE_PAD + 1.25 and b > centre + 1.1 * 2 + AUTOCAL_LINE_PAD - 1.25
        assert b - a < 20.0
    lo, hi = sky_line_windows(SkySpectrum(lam, np.full(lam.size, 10.0), ones, ones))
    assert lo.size == 0


def test_darcheck_removes_an_injected_drift():
    from recipes.algorithms.pixtable import make_pixtable, WCS_PROJECTED, set_wcs_state
    from recipes.algorithms.dar import ARCSEC_PER_RAD, _set_tangent, check_dar, centroid_drift

    rng = np.random.default_rng(1)
    lam = np.repeat(np.linspace(5000, 9000, 40), 900)
    gx, gy = np.meshgrid(np.arange(-15, 15) * 0.2, np.arange(-15, 15) * 0.2)
    gx, gy = np.tile(gx.ravel(), 40), np.tile(gy.ravel(), 40)
    drift = 0.3 * (lam - 7000) / 2000  # arcsec, east
    data = 100 * np.exp(-0.5 * ((gx - drift) ** 2 + gy**2) / 0.35**2) + rng.normal(0, 0.1, lam.size)
    h = fits.Header()
    set_wcs_state(h, WCS_PROJECTED, (150.0, 0.0))
    n = lam.size
    pt = make_pixtable({"xpos": np.zeros(n), "ypos": np.zeros(n), "lambda": lam, "data": data, "dq": np.zeros(n),
                        "stat": np.ones(n), "origin": np.zeros(n)}, h)  # fmt: skip
    _set_tangent(pt, gx / ARCSEC_PER_RAD, gy / ARCSEC_PER_RAD)
    measured = check_dar(pt, correct=True)
    assert measured > 0.2
    assert pt.header["ESO DRS MUSE PIXTABLE DAR CORRECT RESIDUAL"] < 0.03
    _, cx, _ = centroid_drift(pt)
    assert np.nanmax(np.abs(cx - np.nanmean(cx))) < 0.03


def test_radial_velocity_correction():
    from recipes.algorithms.pixtable import make_pixtable
    from recipes.algorithms.rvcorr import C_KMS, apply_rvcorr, rv_correction

    h = fits.Header({"RA": 121.3, "DEC": -30.0, "MJD-OBS": 60380.07, "EXPTIME": 600.0})
    bary, helio = rv_correction(h, "bary"), rv_correction(h, "helio")
    assert 0.1 < abs(bary) < 30.5 and abs(bary - helio) < 0.05 and rv_correction(h, "none") == 0.0
    assert abs(rv_correction(h, "geo")) < 0.5  # Earth rotation at Paranal: ≤ 0.43 km/s
    pt = make_pixtable({"xpos": [0.0], "ypos": [0.0], "lambda": [6000.0], "data": [1.0], "dq": [0], "stat": [1.0],
                        "origin": [0]}, h)  # fmt: skip
    apply_rvcorr(pt, bary)
    assert pt.lam[0] == pytest.approx(6000.0 * (1 + bary / C_KMS), abs=1e-3)
    assert pt.header["ESO DRS MUSE PIXTABLE RVCORR"] == pytest.approx(bary)
    with pytest.raises(RecipeError, match="MJD-OBS"):
        rv_correction(fits.Header({"RA": 1.0, "DEC": 2.0}), "bary")


def test_sky_model_with_slice_lsf_profiles(tmp_path):
    """skymethod=model's pure steps: two slices with different LSF widths (LSF_PROFILE),
    lines fitted on the mean spectrum and subtracted with each slice's own LSF."""
    from recipes.algorithms.lsfmodel import ProfileGrid, cube_hdu, read_lsf_profile
    from recipes.algorithms.origin import pack_origin
    from recipes.algorithms.pixtable import make_pixtable
    from recipes.algorithms.skymodel import fit_sky_model, gaussian_lsf, mean_slice_lsf, profile_lsf, subtract_model
    from recipes.algorithms.skysub import sky_spectrum

    sigmas = {1: 0.9, 2: 1.3}
    dlam = np.linspace(-8, 8, 161)
    grid = ProfileGrid(dlam, np.array([5900.0, 6500.0]))
    cube = np.zeros((48, 2, dlam.size))
    for s, sig in sigmas.items():
        cube[s - 1] = np.exp(-0.5 * (dlam / sig) ** 2) / (math.sqrt(2 * math.pi) * sig)
    path = tmp_path / "LSF_PROFILE.fits"
    fits.HDUList([fits.PrimaryHDU(), cube_hdu(1, cube, grid)]).writeto(path)
    lines = Table({"name": ["a", "b", "c"], "group": [0, 0, 0], "lambda": [6100.0, 6203.5, 6300.3],
                   "flux": [1.0, 1.0, 1.0]})  # fmt: skip
    truth_flux = np.array([500.0, 300.0, 900.0])
    rng = np.random.default_rng(3)
    n = 40000
    slice_no = np.repeat([1, 2], n // 2)
    lam = rng.uniform(6000.0, 6400.0, n)
    sky = 100.0 + 0.02 * (lam - 6200.0)
    for ll, f in zip(lines["lambda"], truth_flux):
        sky += f * np.exp(-0.5 * ((lam - ll) / np.vectorize(sigmas.get)(slice_no)) ** 2) / (
            math.sqrt(2 * math.pi) * np.vectorize(sigmas.get)(slice_no))
    data = sky + rng.normal(0, 0.5, n)
    origin = pack_origin(np.ones(n, int), slice_no, np.full(n, 10), np.full(n, 100), np.zeros(n, int))
    pt = make_pixtable({"xpos": np.zeros(n), "ypos": np.zeros(n), "lambda": lam, "data": data, "dq": np.zeros(n),
                        "stat": np.full(n, 0.25), "origin": origin})  # fmt: skip
    lsf = profile_lsf(read_lsf_profile(path))
    spectrum = sky_spectrum(pt.lam, pt.data, pt.stat, 0.3125, 15.0)
    model = fit_sky_model(spectrum, lines, mean_slice_lsf(pt, lsf))
    np.testing.assert_allclose(model.flux, truth_flux, rtol=0.02)
    before = pt.data.copy()
    subtract_model(pt, model, lsf)
    # one Gaussian of the mean width for both slices (the fallback without LSF_PROFILE)
    single = make_pixtable({**pt.columns, "data": before}, pt.header)
    subtract_model(single, fit_sky_model(spectrum, lines, mean_slice_lsf(pt, gaussian_lsf(1.1))), gaussian_lsf(1.1))
    for s in (1, 2):
        resid = pt.data[slice_no == s]
        # noise 0.5; the rest comes from the 0.3125 Å bins of the spectrum at line peaks of ~400
        assert abs(np.mean(resid)) < 0.05 and np.std(resid) < 1.5
        assert np.std(single.data[slice_no == s]) > 3 * np.std(resid)
