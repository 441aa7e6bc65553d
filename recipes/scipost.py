"""muse_scipost: pixel tables of one (or more) exposures → calibrated cube (recipes.md §3.9).

The recipe reads as its steps, per exposure (inputs grouped by DATE-OBS):

1. read the IFU pixel tables (PIXTABLE_OBJECT, one per IFU), check that every table
   comes from the same instrument mode, cut them to [``lambdamin``, ``lambdamax``] and merge
   them (:func:`recipes.postprocess.merge_ifus`, which multiplies each IFU by its
   flat-field spectrum);
2. flux calibration with STD_RESPONSE, EXTINCT_TABLE and optional STD_TELLURIC
   (:func:`recipes.postprocess.flux_calibrate`);
3. sky subtraction (``skymethod``, :mod:`recipes.skysub`): the sky spaxels are the darkest
   ``skymodel_fraction`` of the white image after ignoring the darkest
   ``skymodel_ignore``; ``simple`` subtracts their spectrum, ``model`` fits SKY_LINES with
   the LSF (LSF_PROFILE) plus a continuum, ``subtract-model`` subtracts the given
   SKY_LINES and SKY_CONTINUUM; with ``save`` containing ``skymodel`` the products
   SKY_IMAGE, SKY_MASK, SKY_SPECTRUM (and SKY_LINES, SKY_CONTINUUM for ``model``);
4. radial-velocity correction (``rvcorr``);
5. astrometry: field pixels → projected coordinates with ASTROMETRY_WCS (or the default
   solution), the pointing and the position angle, with the DAR correction relative to
   ``lambdaref`` (skipped for NFM and ``lambdaref`` < 0); ``astrometry=false`` uses the
   default solution; ``darcheck`` measures (``check``) or also removes (``correct``) the
   residual centroid drift of the brightest source with wavelength;
6. OFFSET_LIST: the exposure's reference position is corrected (RA − RA_OFFSET,
   DEC − DEC_OFFSET, degrees) and its data scaled by FLUX_SCALE
   (:func:`recipes.make_cube.apply_offsets`); ``save`` ``individual`` → PIXTABLE_REDUCED,
   ``positioned`` → PIXTABLE_POSITIONED;

then for all exposures together:

7. weights (``weight``: ``exptime``, ``fwhm`` = EXPTIME / seeing², ``none``) and
   combination (``save`` ``combined`` → PIXTABLE_COMBINED);
8. resampling (``resample``, ``dx``, ``dy``, ``dlambda``, ``pixfrac``, ``ld``, ``rc``,
   ``crtype``, ``crsigma``) onto OUTPUT_WCS or a grid fitted to the data → DATACUBE_FINAL
   (unless ``save`` lacks ``cube``) and one IMAGE_FOV per ``filter`` (:mod:`recipes.cube`).

Step 2b, ``autocalib``: ``deepfield`` divides every slice by its sky illumination, the
ratio of its sky-line fluxes (above each spaxel's own continuum) to those of the mean
spectrum of the source-free spaxels (:func:`recipes.postprocess.autocal_factors`;
products AUTOCAL_MASK, AUTOCAL_FACTORS with ``save`` ``autocal``); ``user`` applies a
given AUTOCAL_FACTORS table.

Not implemented (RecipeError when asked for): Raman-line removal (RAMAN_LINES with AO
data); ``format`` Euro3D/sdpCube (not accepted by the parameter).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .base import Calib, Param, Product, Recipe, RecipeError
from .cube import collapse, grid_from_header, grid_from_pixtable, load_filter, make_cube, primary_from
from .cube import read_output_wcs, write_datacube, write_image_fov
from .cubeqc import fwhm_qc, product_qc
from .io import hkey, read_primary_header
from .make_cube import apply_offsets, merge_tables, read_offsets, resample_options, resample_params, to_positioned
from .pixtable import PixTable, pkey
from .postprocess import (
    SPECTRAL_SAMPLING,
    apply_autocal,
    apply_rvcorr,
    autocal_factors,
    check_dar,
    check_mode,
    flux_calibrate,
    merge_ifus,
    project_to_sky,
    read_astrometry,
    read_extinction,
    read_response,
    read_telluric,
    rv_correction,
)
from . import skysub
from .provenance import add_qc, product_header
from .registry import register

INPUT_TAG = "PIXTABLE_OBJECT"
SAVE_CHOICES = ("cube", "autocal", "raman", "skymodel", "individual", "positioned", "combined", "stacked")
SPAXEL_AREA_ARCSEC2 = 0.04  # WFM spaxel; SKY_LINES fluxes are per arcsec²

PARAMS = (
    Param("save", str, "cube,skymodel", "products to save, comma list of: " + ", ".join(SAVE_CHOICES)),
    *resample_params(crsigma=15.0, pixfrac="0.8,0.8"),
    Param("weight", str, "exptime", "exposure weighting: exptime, fwhm (EXPTIME / seeing^2) or none",
          choices=("exptime", "fwhm", "none")),
    Param("filter", str, "white", "comma-separated filter names (EXTNAMEs of FILTER_LIST) for IMAGE_FOV"),
    Param("autocalib", str, "none", "slice autocalibration: none, deepfield (from the sky) or user (AUTOCAL_FACTORS)",
          choices=("none", "deepfield", "user")),
    Param("raman_width", float, 20.0, "window [Angstrom] around Raman lines (AO data)", minimum=0.0),
    Param("skymethod", str, "model", "sky subtraction: none, subtract-model, model or simple",
          choices=("none", "subtract-model", "model", "simple")),
    Param("lambdamin", float, 4000.0, "cut off the data below this wavelength [Angstrom] after loading"),
    Param("lambdamax", float, 10000.0, "cut off the data above this wavelength [Angstrom] after loading"),
    Param("lambdaref", float, 7000.0, "reference wavelength [Angstrom] of the DAR correction; < 0 disables"),
    Param("darcheck", str, "none", "empirical DAR check by centroiding: none, check or correct",
          choices=("none", "check", "correct")),
    Param("skymodel_fraction", float, 0.1, "fraction of the field (after ignoring) used as sky",
          minimum=1e-3, maximum=1.0),
    Param("skymodel_ignore", float, 0.05, "darkest fraction of the field ignored as artefacts",
          minimum=0.0, maximum=0.99),
    Param("skymodel_sampling", float, 0.3125, "sampling [Angstrom] of the sky spectrum", minimum=0.01, maximum=10.0),
    Param("skymodel_csampling", float, 0.3125, "sampling [Angstrom] of the sky continuum",
          minimum=0.01, maximum=10.0),
    Param("sky_crsigma", str, "15.,15.", "cube,spectrum sigma clipping when building the sky spectrum"),
    Param("rvcorr", str, "bary", "radial-velocity correction: bary, helio, geo or none",
          choices=("bary", "helio", "geo", "none")),
    Param("astrometry", bool, True, "apply the astrometric solution (the default one without ASTROMETRY_WCS)"),
)  # fmt: skip


# --------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------


def check_params(params: Mapping) -> dict:
    """Validated parameters (defaults filled in); RecipeError with a one-line reason."""
    try:
        merged = RECIPE.merge_params({k: v for k, v in params.items() if v is not None})
    except ValueError as exc:
        raise RecipeError(str(exc)) from None
    save = [s.strip() for s in str(merged["save"]).split(",") if s.strip()]
    bad = [s for s in save if s not in SAVE_CHOICES]
    if bad:
        raise RecipeError(f"parameter save: unknown product(s) {', '.join(bad)}; valid: {', '.join(SAVE_CHOICES)}")
    merged["save"] = ",".join(save)
    if merged["lambdamin"] >= merged["lambdamax"]:
        raise RecipeError(f"lambdamin ({merged['lambdamin']}) must be below lambdamax ({merged['lambdamax']})")
    if merged["skymodel_fraction"] + merged["skymodel_ignore"] > 1.0:
        raise RecipeError("skymodel_fraction + skymodel_ignore must not exceed 1")
    sky_crsigma(merged)
    resample_options(merged)
    return merged


def sky_crsigma(params: Mapping) -> tuple[float, float]:
    """``sky_crsigma`` "cube,spectrum" → two floats (one value: both)."""
    try:
        parts = [float(p) for p in str(params["sky_crsigma"]).split(",") if p.strip()]
    except ValueError:
        value = params["sky_crsigma"]
        raise RecipeError(f"parameter sky_crsigma must be 'cube,spectrum' numbers, not {value!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise RecipeError(f"parameter sky_crsigma must be 'cube,spectrum', not {params['sky_crsigma']!r}")
    return parts[0], parts[1]


# --------------------------------------------------------------------------------------
# one exposure
# --------------------------------------------------------------------------------------


class _Writer:
    """Collects written products; removes them all if the recipe fails."""

    def __init__(self, outdir: Path, params: Mapping, raws: list[tuple[Path, str]], calibs: list[tuple[Path, str]]):
        self.outdir, self.params, self.raws, self.calibs = outdir, params, raws, calibs
        self.products: list[Product] = []

    def header(self, catg: str, template: fits.Header) -> fits.Header:
        return product_header(catg, RECIPE.name, self.params, self.raws, self.calibs, template=primary_from(template))

    def add(self, path: Path, tag: str, qc: dict | None = None) -> None:
        self.products.append(Product(Path(path), tag, (), dict(qc or {})))

    def table(self, name: str, tag: str, template: fits.Header, table, qc: list | None = None) -> None:
        h = self.header(tag, template)
        if qc:
            add_qc(h, qc)
        path = self.outdir / name
        fits.HDUList([fits.PrimaryHDU(header=h), fits.BinTableHDU(table, name=tag)]).writeto(
            path, overwrite=True, output_verify="silentfix"
        )
        self.add(path, tag, {k.replace("ESO QC SCIPOST ", ""): v for k, v, _ in (qc or [])})

    def cleanup(self) -> None:
        for product in self.products:
            product.path.unlink(missing_ok=True)


def group_exposures(paths: list[Path]) -> list[list[Path]]:
    """Group the input tables by DATE-OBS (time order) from their primary headers, after
    checking that all come from one instrument mode (the tables are read per exposure)."""
    groups: dict[str, list[Path]] = {}
    mode = None
    for path in paths:
        header = read_primary_header(path)
        mode = check_mode(header, mode, str(path))
        groups.setdefault(str(header.get("DATE-OBS", "")), []).append(path)
    return [groups[k] for k in sorted(groups)]



def subtract_sky(pt: PixTable, params: Mapping, frames: Mapping[str, list[Path]], writer: _Writer, n: int) -> None:
    """Step 3 on the merged, flux-calibrated table (field pixels), in place."""
    method = params["skymethod"]
    if method == "none":
        return
    save = "skymodel" in params["save"].split(",")
    lines_path = _first(frames, "SKY_LINES")
    cont_path = _first(frames, "SKY_CONTINUUM")
    lsf_paths = list(frames.get("LSF_PROFILE", []) or [])
    lsf = None
    if lsf_paths:
        from .lsfmodel import read_lsf_profile

        profile: dict = {}
        for path in lsf_paths:
            profile.update(read_lsf_profile(Path(path)))
        lsf = skysub.profile_lsf(profile)
    if method == "subtract-model":
        if lines_path is None or cont_path is None:
            raise RecipeError("skymethod=subtract-model needs SKY_LINES and SKY_CONTINUUM")
        if lsf is None:
            raise RecipeError("skymethod=subtract-model needs LSF_PROFILE")
        lines = skysub.read_sky_lines(lines_path)
        clam, cflux = skysub.read_sky_continuum(cont_path)
        # SKY_LINES / SKY_CONTINUUM fluxes are per arcsec², the table rows per spaxel
        flux = np.asarray(lines["flux"], float) * SPAXEL_AREA_ARCSEC2
        model = skysub.SkyModel(np.asarray(lines["lambda"], float), flux, [str(x) for x in lines["name"]],
                                np.asarray(lines["group"], np.int32), clam, cflux * SPAXEL_AREA_ARCSEC2)  # fmt: skip
        skysub.subtract_model(pt, model, lsf)
        pt.header[hkey(pkey("SKYSUB"))] = (True, "sky subtracted (subtract-model)")
        return
    cube_sigma, spec_sigma = sky_crsigma(params)
    image = skysub.white_image(pt, cube_sigma)
    mask, low, high = skysub.sky_mask(image, float(params["skymodel_fraction"]), float(params["skymodel_ignore"]))
    rows = skysub.rows_in_mask(pt, image, mask)
    spectrum = skysub.sky_spectrum(pt.lam[rows], pt.data[rows], pt.stat[rows], float(params["skymodel_sampling"]),
                                   spec_sigma)  # fmt: skip
    template = pt.header
    if save:
        h = writer.header("SKY_IMAGE", template)
        path = writer.outdir / f"SKY_IMAGE_{n:04d}.fits"
        fits.HDUList([fits.PrimaryHDU(header=h), fits.ImageHDU(image.data.astype(np.float32), name="DATA")]).writeto(
            path, overwrite=True, output_verify="silentfix")
        writer.add(path, "SKY_IMAGE")
        h = writer.header("SKY_MASK", template)
        add_qc(h, [("ESO QC SCIPOST LOWLIMIT", low, "lowest value in the sky mask"),
                   ("ESO QC SCIPOST THRESHOLD", high, "highest value in the sky mask")])  # fmt: skip
        path = writer.outdir / f"SKY_MASK_{n:04d}.fits"
        fits.HDUList([fits.PrimaryHDU(header=h), skysub.mask_image_hdu(image, mask)]).writeto(
            path, overwrite=True, output_verify="silentfix")
        writer.add(path, "SKY_MASK", {"LOWLIMIT": low, "THRESHOLD": high})
        writer.table(f"SKY_SPECTRUM_{n:04d}.fits", "SKY_SPECTRUM", template, spectrum.table())
    if method == "simple":
        skysub.subtract_spectrum(pt, spectrum)
        pt.header[hkey(pkey("SKYSUB"))] = (True, "sky subtracted (simple)")
        return
    if lines_path is None:
        raise RecipeError("skymethod=model needs SKY_LINES (the list of sky lines to fit)")
    lines = skysub.read_sky_lines(lines_path)
    if lsf is None:
        inside = (np.asarray(lines["lambda"]) > spectrum.lam[0]) & (np.asarray(lines["lambda"]) < spectrum.lam[-1])
        # without LSF_PROFILE the width is measured on the data (unused when no line is in range)
        lsf = skysub.gaussian_lsf(skysub.fit_line_width(spectrum, lines) if inside.any() else 1.1)
    continuum = skysub.read_sky_continuum(cont_path) if cont_path is not None else None
    if continuum is not None:
        continuum = (continuum[0], continuum[1] * SPAXEL_AREA_ARCSEC2)
    model = skysub.fit_sky_model(spectrum, lines, skysub.mean_slice_lsf(pt, lsf), continuum)
    csampling = float(params["skymodel_csampling"])
    if continuum is None and abs(csampling - float(params["skymodel_sampling"])) > 1e-9:
        cs = skysub.sky_spectrum(model.cont_lam, model.cont, np.zeros(model.cont.size), csampling, 0.0)
        model.cont_lam, model.cont = cs.lam, cs.data
    skysub.subtract_model(pt, model, lsf)
    pt.header[hkey(pkey("SKYSUB"))] = (True, "sky subtracted (model)")
    if save:
        qc = []
        for i, (name, lam, flux) in enumerate(zip(model.name, model.lam, model.flux), start=1):
            qc += [(f"ESO QC SCIPOST LINE{i} NAME", name, "sky line"),
                   (f"ESO QC SCIPOST LINE{i} AWAV", float(lam), "[Angstrom] wavelength"),
                   (f"ESO QC SCIPOST LINE{i} FLUX", float(flux / SPAXEL_AREA_ARCSEC2),
                    "[1e-20 erg/s/cm2/arcsec2] flux")]  # fmt: skip
        table = model.lines_table()
        table["flux"] = table["flux"] / SPAXEL_AREA_ARCSEC2
        writer.table(f"SKY_LINES_{n:04d}.fits", "SKY_LINES", template, table, qc)
        ctable = model.continuum_table()
        ctable["flux"] = ctable["flux"] / SPAXEL_AREA_ARCSEC2
        cont = np.asarray(ctable["flux"], float)
        smooth = np.convolve(cont, np.ones(31) / 31.0, mode="same") if cont.size > 31 else cont
        writer.table(f"SKY_CONTINUUM_{n:04d}.fits", "SKY_CONTINUUM", template, ctable, [
            ("ESO QC SCIPOST CONT FLUX", float(np.nansum(cont) * csampling), "[1e-20 erg/s/cm2/arcsec2] total"),
            ("ESO QC SCIPOST CONT MAXDEV", float(np.nanmax(np.abs(cont - smooth))), "max deviation from smooth"),
        ])  # fmt: skip


#: ``autocalib=deepfield`` source mask: spaxels of the white image above median +
#: AUTOCAL_NSIGMA × MAD are sources, grown by AUTOCAL_GROW × the seeing FWHM (header, or
#: AUTOCAL_DEFAULT_FWHM [arcsec]) so that their wings stay out of the sky spectrum.
AUTOCAL_NSIGMA = 3.0
AUTOCAL_GROW = 1.5
AUTOCAL_DEFAULT_FWHM = 0.8
_SPAXEL_ARCSEC = 0.2


def autocalibrate(pt: PixTable, params: Mapping, frames: Mapping[str, list[Path]], writer: _Writer, n: int) -> None:
    """Step 2b (``autocalib``): per-slice factors from the sky lines (``deepfield``) or
    from AUTOCAL_FACTORS (``user``), divided out in place."""
    mode = params["autocalib"]
    if mode == "none":
        return
    if mode == "user":
        path = _first(frames, "AUTOCAL_FACTORS")
        if path is None:
            raise RecipeError("autocalib=user needs an AUTOCAL_FACTORS table")
        try:
            factors = Table.read(path, hdu=1)
        except (OSError, ValueError, IndexError) as exc:
            raise RecipeError(f"{path}: cannot read AUTOCAL_FACTORS ({str(exc).splitlines()[0]})") from None
        apply_autocal(pt, factors, str(path))
        return
    cube_sigma, spec_sigma = sky_crsigma(params)
    image = skysub.white_image(pt, cube_sigma)
    seeing = [float(pt.header[k]) for k in ("ESO TEL AMBI FWHM START", "ESO TEL AMBI FWHM END")
              if k in pt.header and float(pt.header[k]) > 0]  # fmt: skip
    fwhm = float(np.mean(seeing)) if seeing else AUTOCAL_DEFAULT_FWHM
    grow = min(10, int(round(AUTOCAL_GROW * fwhm / _SPAXEL_ARCSEC)))  # WFM spaxels
    mask, threshold = skysub.source_free_mask(image, AUTOCAL_NSIGMA, grow)
    if not mask.any():
        raise RecipeError("autocalib=deepfield: no source-free spaxel in the white image")
    rows = skysub.rows_in_mask(pt, image, mask)
    spectrum = skysub.sky_spectrum(pt.lam[rows], pt.data[rows], pt.stat[rows], SPECTRAL_SAMPLING, spec_sigma)
    del rows
    factors = autocal_factors(pt, spectrum)
    apply_autocal(pt, factors)
    if "autocal" in params["save"].split(","):
        h = writer.header("AUTOCAL_MASK", pt.header)
        low = float(np.nanmin(np.where(mask, image.data, np.nan)))
        add_qc(h, [("ESO QC SCIPOST LOWLIMIT", low, "lowest value in the mask"),
                   ("ESO QC SCIPOST THRESHOLD", threshold, "source threshold of the white image")])  # fmt: skip
        path = writer.outdir / f"AUTOCAL_MASK_{n:04d}.fits"
        fits.HDUList([fits.PrimaryHDU(header=h), skysub.mask_image_hdu(image, mask)]).writeto(
            path, overwrite=True, output_verify="silentfix")
        writer.add(path, "AUTOCAL_MASK")
        writer.table(f"AUTOCAL_FACTORS_{n:04d}.fits", "AUTOCAL_FACTORS", pt.header, factors)


def reduce_exposure(
    members: list[Path], params: Mapping, frames: Mapping[str, list[Path]], writer: _Writer, n: int, calib: dict,
) -> PixTable:
    """Steps 1-6 for one exposure (its IFU tables); returns its projected (reduced) table."""
    names = [str(p) for p in members]
    lmin, lmax = float(params["lambdamin"]), float(params["lambdamax"])
    tables = [PixTable.read(path).cut_lambda(lmin, lmax, inplace=True) for path in members]
    pt = merge_ifus(tables, names)
    if pt.nrows == 0:
        raise RecipeError(f"{names[0]}: no rows between lambdamin={lmin} and lambdamax={lmax} Angstrom")
    mode = str(pt.header.get("ESO INS MODE", "WFM"))
    if calib["raman"] is not None and "-AO-" in f"-{mode}-":  # WFM-AO-E/N, NFM-AO-N
        raise RecipeError(f"{calib['raman']}: Raman-line removal for AO data is not implemented by musered")
    flux_calibrate(pt, calib["response"], calib["extinction"], calib["telluric"], names[0])
    autocalibrate(pt, params, frames, writer, n)
    subtract_sky(pt, params, frames, writer, n)
    apply_rvcorr(pt, rv_correction(pt.header, str(params["rvcorr"]), names[0]))
    cd, crpix = read_astrometry(calib["astrometry"] if params["astrometry"] else None, mode)
    lambdaref = float(params["lambdaref"])
    if mode.upper().startswith("NFM"):
        lambdaref = -1.0  # NFM has an atmospheric dispersion corrector
    project_to_sky(pt, cd, crpix, lambdaref, names[0])
    if params["darcheck"] != "none":
        check_dar(pt, correct=params["darcheck"] == "correct")
    if calib["offsets"] is not None:
        shift = apply_offsets(pt, calib["offsets"], Path(names[0]))
        if shift is not None:
            pt.header[hkey("ESO DRS MUSE OFFSET1 DATE-OBS")] = str(pt.header.get("DATE-OBS", ""))
            pt.header[hkey("ESO DRS MUSE OFFSET1 DRA")] = (shift[0], "[deg] RA offset")
            pt.header[hkey("ESO DRS MUSE OFFSET1 DDEC")] = (shift[1], "[deg] DEC offset")
            pt.header[hkey("ESO DRS MUSE FLUX SCALE1")] = (shift[2], "flux scale")
    pt.update_limits()
    saves = params["save"].split(",")
    if "individual" in saves:
        path = pt.write(writer.outdir / f"PIXTABLE_REDUCED_{n:04d}.fits")
        writer.add(path, "PIXTABLE_REDUCED")
    if "positioned" in saves:
        path = to_positioned(pt, pt.reference()).write(writer.outdir / f"PIXTABLE_POSITIONED_{n:04d}.fits")
        writer.add(path, "PIXTABLE_POSITIONED")
    return pt


def exposure_weight(pt: PixTable, kind: str, where: str) -> float | None:
    """Weight of one exposure: EXPTIME (``exptime``), EXPTIME / FWHM² (``fwhm``), None (``none``)."""
    if kind == "none":
        return None
    exptime = float(pt.header.get("EXPTIME", 0.0) or 0.0)
    if exptime <= 0:
        raise RecipeError(f"{where}: weight={kind} needs a positive EXPTIME")
    if kind == "exptime":
        return exptime
    keys = ("ESO TEL AMBI FWHM START", "ESO TEL AMBI FWHM END", "ESO TEL IA FWHM", "ESO TEL AG FWHMX")
    fwhm = [float(pt.header[k]) for k in keys if k in pt.header and float(pt.header[k]) > 0]
    if not fwhm:
        raise RecipeError(f"{where}: weight=fwhm needs a seeing keyword ({', '.join(keys)})")
    return exptime / float(np.mean(fwhm[:2])) ** 2


# --------------------------------------------------------------------------------------
# the recipe
# --------------------------------------------------------------------------------------


def run(frames: Mapping[str, list[Path]], params: Mapping, outdir: Path) -> list[Product]:
    """Write DATACUBE_FINAL.fits, IMAGE_FOV_nnnn.fits and the ``save`` products in ``outdir``."""
    outdir = Path(outdir)
    params = check_params(params)
    paths = [Path(p) for p in frames.get(INPUT_TAG, [])]
    if not paths:
        raise RecipeError(f"{RECIPE.name} needs at least one {INPUT_TAG}")
    for tag in ("STD_RESPONSE", "EXTINCT_TABLE"):
        if _first(frames, tag) is None:
            raise RecipeError(f"{RECIPE.name} needs a {tag} calibration")
    filter_list = _first(frames, "FILTER_LIST")
    names = [f.strip() for f in str(params["filter"]).split(",") if f.strip()]
    filters = [load_filter(name, filter_list) for name in names]  # unknown names fail before the work
    output_wcs = _first(frames, "OUTPUT_WCS")
    wcs_header = read_output_wcs(output_wcs) if output_wcs is not None else None
    offset_list = _first(frames, "OFFSET_LIST")
    calib = {
        "response": read_response(_first(frames, "STD_RESPONSE")),
        "extinction": read_extinction(_first(frames, "EXTINCT_TABLE")),
        "telluric": read_telluric(p) if (p := _first(frames, "STD_TELLURIC")) else None,
        "astrometry": _first(frames, "ASTROMETRY_WCS"),
        "offsets": read_offsets(offset_list) if offset_list is not None else None,
        "raman": _first(frames, "RAMAN_LINES"),
    }
    calib_tags = ("STD_RESPONSE", "STD_TELLURIC", "EXTINCT_TABLE", "ASTROMETRY_WCS", "OFFSET_LIST", "FILTER_LIST",
                  "OUTPUT_WCS", "SKY_LINES", "SKY_CONTINUUM", "LSF_PROFILE", "AUTOCAL_FACTORS")  # fmt: skip
    calibs = [(Path(p), tag) for tag in calib_tags for p in (frames.get(tag) or [])]
    writer = _Writer(outdir, params, [(p, INPUT_TAG) for p in paths], calibs)
    saves = params["save"].split(",")
    try:
        exposures = group_exposures(paths)
        reduced = []
        for n, members in enumerate(exposures, start=1):
            pt = reduce_exposure(members, params, frames, writer, n, calib)
            w = exposure_weight(pt, str(params["weight"]), str(members[0]))
            # a single exposure's constant weight cancels in the weighted mean of every
            # voxel: its column (1.3 GB for a full exposure) is only made when saved
            if w is not None and (len(exposures) > 1 or "combined" in saves):
                pt.columns["weight"] = np.full(pt.nrows, w, dtype=np.float32)
            reduced.append(pt)
        del exposures
        first_header = reduced[0].header.copy()
        nexp = len(reduced)
        pt = merge_tables(reduced)
        del reduced
        if nexp > 1:
            pt.header[hkey(pkey("COMBINED"))] = (nexp, "combined exposures")
        if params["weight"] != "none":
            pt.header[hkey(pkey("WEIGHTED"))] = (True, "exposures weighted")
        if "combined" in saves:
            writer.add(pt.write(outdir / "PIXTABLE_COMBINED.fits"), "PIXTABLE_COMBINED")
        if "cube" in saves:
            write_cube(pt, params, filters, wcs_header, output_wcs, first_header, writer)
    except BaseException:
        writer.cleanup()
        raise
    return writer.products


def write_cube(pt: PixTable, params: Mapping, filters, wcs_header, output_wcs, template: fits.Header,
               writer: _Writer) -> None:  # fmt: skip
    """Step 8: resample onto the grid and write DATACUBE_FINAL and the IMAGE_FOVs.

    Consumes ``pt``: its columns are dropped as soon as the cube no longer needs them
    (origin before resampling, the rest after), which lowers the peak memory of a full
    exposure by several GB; its header stays.
    """
    if wcs_header is not None:
        grid = grid_from_header(wcs_header, pt, float(params["dlambda"]), where=str(output_wcs))
    else:
        grid = grid_from_pixtable(pt, float(params["dx"]), float(params["dy"]), float(params["dlambda"]))
    bunit = pt.default_units()["data"]
    pt.columns.pop("origin", None)
    result = make_cube(pt, grid, resample_options(params))
    pt.columns.clear()
    images = []
    for i, flt in enumerate(filters, start=1):
        image, fraction = collapse(result.data, grid, flt)
        path = write_image_fov(writer.outdir / f"IMAGE_FOV_{i:04d}.fits", writer.header("IMAGE_FOV", template),
                               grid, image, flt, fraction, bunit)  # fmt: skip
        writer.add(path, "IMAGE_FOV", {"FILTER": flt.name, "FRACTION": round(fraction, 4)})
        images.append((flt.name, image))
    extra = []
    if params["format"] == "xCube":
        for name, image in images:
            hdu = fits.ImageHDU(image, header=grid.header(2), name=name)
            hdu.header["BUNIT"] = bunit
            extra.append(hdu)
    h = writer.header("DATACUBE_FINAL", template)
    h[hkey("ESO DRS MUSE RESAMPLE NREJECTED")] = (result.n_rejected, "pixels rejected as cosmic rays")
    for key in ("ESO DRS MUSE PIXTABLE FLUXCAL", "ESO DRS MUSE PIXTABLE SKYSUB", "ESO DRS MUSE PIXTABLE RVCORR",
                "ESO DRS MUSE PIXTABLE DAR CORRECT"):  # fmt: skip
        if key in pt.header:
            h[hkey(key.replace("PIXTABLE ", ""))] = pt.header[key]
    source_qc = fwhm_qc(result.data, grid, "ESO QC SCIPOST")  # NDET, LAMBDA, POSk, FWHMk, FWHM MEDIAN ...
    add_qc(h, source_qc)
    path = write_datacube(writer.outdir / "DATACUBE_FINAL.fits", h, grid, result.data, result.stat, bunit, extra)
    writer.products.insert(0, Product(path, "DATACUBE_FINAL", (), {"NREJECTED": result.n_rejected,
                                                                    **product_qc(source_qc, "ESO QC SCIPOST")}))


def _first(frames: Mapping[str, list[Path]], tag: str) -> Path | None:
    paths = list(frames.get(tag, []) or [])
    return Path(paths[0]) if paths else None


RECIPE = register(
    Recipe(
        name="muse_scipost",
        inputs=(INPUT_TAG,),
        calibs=(
            Calib("EXTINCT_TABLE"),
            Calib("STD_RESPONSE"),
            Calib("STD_TELLURIC", required=False),
            Calib("ASTROMETRY_WCS", required=False),
            Calib("OFFSET_LIST", required=False),
            Calib("FILTER_LIST", required=False),
            Calib("OUTPUT_WCS", required=False),
            Calib("SKY_LINES", required=False),
            Calib("SKY_CONTINUUM", required=False, default_excluded=True),
            Calib("LSF_PROFILE", required=False),
            Calib("RAMAN_LINES", required=False, default_excluded=True),
            Calib("AUTOCAL_FACTORS", required=False, default_excluded=True),
        ),
        outputs=("DATACUBE_FINAL", "IMAGE_FOV", "PIXTABLE_REDUCED", "PIXTABLE_POSITIONED", "PIXTABLE_COMBINED",
                 "SKY_IMAGE", "SKY_MASK", "SKY_SPECTRUM", "SKY_LINES", "SKY_CONTINUUM", "AUTOCAL_MASK",
                 "AUTOCAL_FACTORS"),  # fmt: skip
        params=PARAMS,
        run=run,
        target="exposure",
        min_inputs=1,
        description="Flux-calibrate, sky-subtract and position the pixel tables of an exposure and resample "
        "them onto a cube.",
        summary_qc=(("CR rejected", "NREJECTED"),),
    )
)
