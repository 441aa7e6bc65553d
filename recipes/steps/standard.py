"""muse_standard: response curve and telluric correction from a standard star (recipes.md §3.8).

The recipe reads as its steps (one exposure per run):

1. read the exposure's PIXTABLE_STD tables (one per IFU), check they share the exposure
   and the instrument mode, multiply each IFU by its flat-field spectrum and merge them
   (:func:`recipes.algorithms.postprocess.merge_ifus`, as muse_scipost does, so that the
   response fits the data it is applied to); cut to [``lambdamin``, ``lambdamax``];
2. project to the sky with the default astrometric solution of the mode, with the DAR
   correction about ``lambdaref`` for WFM (``lambdaref`` < 0 or NFM: none);
3. resample to DATACUBE_STD (drizzle, 0.2″ spaxels, 1.25 Å planes; recipes.md §3.10);
4. detect the sources on the median (white) image and integrate each one per wavelength
   plane with ``profile`` (:mod:`recipes.algorithms.stdstar`, :mod:`recipes.algorithms.psffit`):
   ``moffat`` and ``gaussian`` fit the profile plus a constant background in every plane;
   ``smoffat`` fits the Moffat to means of ``SMOFFAT_BIN`` planes, smooths its centre,
   width and β in λ (cubic polynomials, σ-clipped) and refits only amplitude and
   background per plane; ``circle``/``square`` sum an aperture of radius / half-size
   3 × FWHM minus the median of the surrounding annulus; ``auto`` is smoffat for WFM and
   circle for NFM; the spectra go to STD_FLUXES;
5. pick the standard (``select``: ``distance`` = the detection nearest to the star's
   STD_FLUX_TABLE position, ``flux`` = the brightest); the STD_FLUX_TABLE extension is
   chosen by the exposure's pointing (or its OBS TARG NAME);
6. sensitivity, telluric bands, extrapolation and smoothing (:mod:`recipes.algorithms.fluxcal`):
   STD_RESPONSE (``lambda``, ``response``, ``resperr``) and STD_TELLURIC (``lambda``,
   ``ftelluric``, ``ftellerr`` on the cube's wavelength grid, 1 outside the bands); both
   say ``ESO DRS MUSE FLUX FFCORR = T`` (made from flat-field-spectrum corrected data);
7. ``darcheck``: ``check`` measures the star's centroid drift over λ and records it
   (``ESO DRS MUSE DAR CHECK MAX`` [arcsec]); ``correct`` also removes it from the rows
   and resamples and extracts again.

QC (primary headers): DATACUBE_STD ``ESO QC STANDARD NDET``, ``LAMBDA``, ``POSk X/Y``
(1-based cube pixels), ``FWHMk X/Y`` [arcsec], ``FWHM NVALID/MEDIAN/MAD``;
STD_RESPONSE ``ESO QC STANDARD STARNAME``, ``THRUnnnn`` (only where the ±100 Å window
was measured, not extrapolated) and ``ZP V/R/I`` (AB zeropoint, when FILTER_LIST has
Johnson_V, Cousins_R, Cousins_I). The collapsed ``filter`` images are appended to
DATACUBE_STD as extensions named after the filters.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.algorithms import fluxcal, stdstar
from recipes.calibs import EXTINCT_TABLE, FILTER_LIST, STD_FLUX_TABLE, TELLURIC_REGIONS
from recipes.base import Param, ParamValue, Product, Recipe, RecipeError
from recipes.algorithms.cube import collapse, load_filter, primary_from, write_datacube
from recipes.algorithms.fluxcal import write_response, write_telluric
from recipes.algorithms.fluxcal_tables import read_extinction, read_std_flux_table, read_telluric_regions
from recipes.io import hkey
from recipes.algorithms.pixtable import pkey
from recipes.algorithms.postprocess import FLUX_FFCORR, header_airmass
from recipes.algorithms.resampling import check_lambda_range
from recipes.provenance import add_qc, product_header

logger = logging.getLogger(__name__)

PROFILES = ("gaussian", "moffat", "smoffat", "circle", "square", "auto")

PARAMS = (
    Param("profile", str, "auto", "flux integration: gaussian, moffat, smoffat (profile fits), circle, square "
          "(apertures); auto = smoffat for WFM, circle for NFM", choices=PROFILES),
    Param("select", str, "distance", "standard star: flux (brightest) or distance (nearest to the reference "
          "position)", choices=("flux", "distance")),
    Param("smooth", str, "ppoly", "response smoothing: none, median (15 A half-width), ppoly (piecewise cubic "
          "over 2x150 A + 15 A sliding mean)", choices=("none", "median", "ppoly")),
    Param("lambdamin", float, 4000.0, "cut off the data below this wavelength [Angstrom] after loading"),
    Param("lambdamax", float, 10000.0, "cut off the data above this wavelength [Angstrom] after loading"),
    Param("lambdaref", float, 7000.0, "reference wavelength [Angstrom] of the DAR correction; < 0 disables"),
    Param("darcheck", str, "none", "check the DAR correction by centroiding (check) and also correct it "
          "empirically (correct)", choices=("none", "check", "correct")),
    Param("filter", tuple, "white", "comma-separated filter names (EXTNAMEs of FILTER_LIST) for the images "
          "appended to DATACUBE_STD; add Johnson_V,Cousins_R,Cousins_I for the zeropoint QC"),
)  # fmt: skip


def check(params: Mapping[str, ParamValue | None]) -> None:
    """Cross-parameter rule: lambdamin < lambdamax."""
    check_lambda_range(params)


def _first(frames: Mapping[str, list[Path]], tag: str) -> Path | None:
    paths = list(frames.get(tag, []) or [])
    return Path(paths[0]) if paths else None


def _number(header: fits.Header, keys: tuple[str, ...], where: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(header[k]) for k in keys)
    except (KeyError, TypeError, ValueError):
        raise RecipeError(f"{where}: header lacks a numeric {what}") from None


def run(frames: Mapping[str, list[Path]], params: Mapping, outdir: Path) -> list[Product]:
    """Write DATACUBE_STD.fits, STD_FLUXES.fits, STD_RESPONSE.fits, STD_TELLURIC.fits."""
    outdir = Path(outdir)
    paths = [Path(p) for p in frames.get("PIXTABLE_STD", [])]
    if not paths:
        raise RecipeError("muse_standard needs the PIXTABLE_STD tables of one standard-star exposure")
    for tag in ("EXTINCT_TABLE", "STD_FLUX_TABLE"):
        if _first(frames, tag) is None:
            raise RecipeError(f"muse_standard needs a {tag}")
    lambdaref = params["lambdaref"]
    filters = [load_filter(name, _first(frames, "FILTER_LIST")) for name in params["filter"]]  # bad names fail early
    # zeropoint QC only for the V, R, I filters asked for, as the DRS does
    zp_filters = {stdstar.ZP_FILTERS[f.name]: f for f in filters if f.name in stdstar.ZP_FILTERS}
    extinction = read_extinction(frames["EXTINCT_TABLE"][0])
    regions = (read_telluric_regions(p) if (p := _first(frames, "TELLURIC_REGIONS"))
               else fluxcal.DEFAULT_TELLURIC_REGIONS)  # fmt: skip

    pt = stdstar.load_exposure(paths, params["lambdamin"], params["lambdamax"])  # 1.
    where = str(paths[0])
    header = pt.header
    (exptime,) = _number(header, ("EXPTIME",), where, "EXPTIME")
    airmass = header_airmass(header, where)
    pointing = _number(header, ("RA", "DEC"), where, "RA/DEC pointing")
    reference = read_std_flux_table(frames["STD_FLUX_TABLE"][0], *pointing,
                                    name=str(header.get("ESO OBS TARG NAME", "")) or None)  # fmt: skip
    mode = str(header.get("ESO INS MODE", "WFM"))
    profile = params["profile"]
    if profile == "auto":
        profile = "circle" if mode.upper().startswith("NFM") else "smoffat"

    grid, cube = stdstar.build_cube(pt, lambdaref, where)  # 2., 3.
    white = stdstar.white_image(cube.data)  # 4.
    sources = stdstar.detect_sources(white)[: stdstar.MAX_SOURCES]
    if not sources:
        raise RecipeError(f"{where}: no source detected in the standard-star cube (threshold "
                          f"{stdstar.DETECTION_SIGMA:g} sigma above the background)")  # fmt: skip
    fwhm0 = stdstar.white_fwhm(white, sources[0])
    fits_ = [stdstar.extract(cube.data, cube.stat, src, profile, fwhm0) for src in sources]
    ref_pos = (reference.ra, reference.dec) if reference.ra is not None else pointing
    selected = stdstar.select_standard(sources, fits_, params["select"], grid, ref_pos)  # 5.
    star = fits_[selected]

    dar_max = None
    if params["darcheck"] != "none":  # 7. (before 6., which it changes)
        shape_fit = star if profile in ("moffat", "smoffat", "gaussian") else stdstar.extract(
            cube.data, cube.stat, sources[selected], "moffat", fwhm0)  # aperture sums carry no centroid
        dx, dy, dar_max = stdstar.dar_drift(shape_fit, grid, lambdaref)
        logger.info("DAR check: largest centroid drift %.3f arcsec", dar_max)
        if params["darcheck"] == "correct" and np.isfinite(dar_max):
            stdstar.shift_rows(pt, grid, dx, dy)
            grid, cube = stdstar.build_cube(pt, lambdaref, where, grid)  # same grid: positions stay valid
            fits_[selected] = star = stdstar.extract(cube.data, cube.stat, sources[selected], profile, fwhm0)

    lam = grid.wavelengths()  # 6.
    resp, err = fluxcal.sensitivity(lam, star.flux, star.var, exptime, airmass, extinction, reference)
    resp, err = fluxcal.fill_gaps(lam, resp, err)
    resp_t, err_t, ftell, ftellerr = fluxcal.telluric_correction(lam, resp, err, regions, airmass)
    lam_x, resp_x, err_x = fluxcal.extrapolate(lam, resp_t, err_t)
    resp_s, err_s = fluxcal.smooth_response(lam_x, resp_x, err_x, params["smooth"])

    # -- products ------------------------------------------------------------------
    raws = [(p, "PIXTABLE_STD") for p in paths]
    calibs = [(p, tag) for tag in ("EXTINCT_TABLE", "STD_FLUX_TABLE", "TELLURIC_REGIONS", "FILTER_LIST")
              if (p := _first(frames, tag))]  # fmt: skip
    base = primary_from(header)

    # The response is fitted to flat-field-spectrum corrected data (step 1); the DRS
    # muse_scipost reverts that correction on its tables when this flag is absent or F,
    # which put star fluxes 2-29 % low across 6000-6800 A (issue 14).
    ffcorr = bool(header.get(pkey("FFSPEC"), False))

    def header_for(catg: str) -> fits.Header:
        h = product_header(catg, RECIPE.name, params, raws, calibs, template=base)
        if catg in ("STD_RESPONSE", "STD_TELLURIC"):
            h[hkey(FLUX_FFCORR)] = (ffcorr, "Data was flat-field spectrum corrected")
        h[hkey("ESO DRS MUSE FLUX NOBJ")] = (len(sources), "number of detected sources")
        h[hkey("ESO DRS MUSE FLUX NSEL")] = (selected + 1, "source selected as the standard star")
        if dar_max is not None:
            h[hkey("ESO DRS MUSE DAR CHECK MAX")] = (round(dar_max, 4), "[arcsec] largest centroid drift")
        return h

    cube_qc = stdstar.cube_qc(sources, fits_, grid)
    resp_qc = stdstar.response_qc(reference.name, lam_x, resp_s, (float(lam[0]), float(lam[-1])), zp_filters)
    h = header_for("DATACUBE_STD")
    add_qc(h, [(k, v, c) for k, (v, c) in cube_qc.items()])
    extra = []
    for flt in filters:
        image, fraction = collapse(cube.data, grid, flt)
        hdu = fits.ImageHDU(image, header=grid.header(2), name=flt.name)
        hdu.header["BUNIT"] = "count"
        hdu.header[hkey("ESO DRS MUSE FILTER FRACTION")] = (round(fraction, 4), "[%] fraction of filter covered")
        extra.append(hdu)
    strip = lambda qc: {k.removeprefix("ESO "): v for k, (v, _) in qc.items()}  # noqa: E731
    h_resp = header_for("STD_RESPONSE")
    add_qc(h_resp, [(k, v, c) for k, (v, c) in resp_qc.items()])
    return [
        Product(write_datacube(outdir / "DATACUBE_STD.fits", h, grid, cube.data, cube.stat, "count", extra),
                "DATACUBE_STD", (), strip(cube_qc)),
        Product(stdstar.write_std_fluxes(outdir / "STD_FLUXES.fits", header_for("STD_FLUXES"), grid, sources, fits_),
                "STD_FLUXES"),
        Product(write_response(outdir / "STD_RESPONSE.fits", h_resp, lam_x, resp_s, err_s), "STD_RESPONSE", (),
                strip(resp_qc)),
        Product(write_telluric(outdir / "STD_TELLURIC.fits", header_for("STD_TELLURIC"), lam, ftell, ftellerr),
                "STD_TELLURIC"),
    ]  # fmt: skip


RECIPE = Recipe(
    name="muse_standard",
    inputs=("PIXTABLE_STD",),
    calibs=(
        EXTINCT_TABLE,
        STD_FLUX_TABLE,
        TELLURIC_REGIONS,
        FILTER_LIST,
    ),
    outputs=("DATACUBE_STD", "STD_FLUXES", "STD_RESPONSE", "STD_TELLURIC"),
    params=PARAMS,
    run=run,
    group="exposure",
    step="standard",
    from_recipe="muse_scibasic",
    runs_source_first=True,
    min_inputs=1,
    check=check,
    description="Response curve and telluric correction from a standard-star exposure.",
    summary_qc=(("FWHM", "QC STANDARD FWHM MEDIAN"),),
)
