"""muse_scipost: pixel tables of one (or more) exposures → calibrated cube (recipes.md §3.9).

The recipe reads as its steps, per exposure (inputs grouped by DATE-OBS):

1. read the IFU pixel tables (PIXTABLE_OBJECT, one per IFU), check that every table
   comes from the same instrument mode, cut them to [``lambdamin``, ``lambdamax``] and merge
   them (:func:`recipes.algorithms.postprocess.merge_ifus`, which multiplies each IFU by its
   flat-field spectrum);
2. flux calibration with STD_RESPONSE, EXTINCT_TABLE and optional STD_TELLURIC
   (:func:`recipes.algorithms.postprocess.flux_calibrate`);
3. sky subtraction (``skymethod``, :mod:`recipes.algorithms.skysub`, :mod:`~recipes.algorithms.skymodel`):
   the sky spaxels are the darkest ``skymodel_fraction`` of the white image after ignoring
   the darkest ``skymodel_ignore``; ``simple`` subtracts their spectrum, ``model`` fits SKY_LINES with
   the LSF (LSF_PROFILE) plus a continuum, ``subtract-model`` subtracts the given
   SKY_LINES and SKY_CONTINUUM; with ``save`` containing ``skymodel`` the products
   SKY_IMAGE, SKY_MASK, SKY_SPECTRUM (and SKY_LINES, SKY_CONTINUUM for ``model``);
4. radial-velocity correction (``rvcorr``);
5. astrometry: field pixels → projected coordinates with ASTROMETRY_WCS (or the default
   solution), the pointing and the position angle, with the DAR correction relative to
   ``lambdaref`` (skipped for NFM and ``lambdaref`` < 0; :mod:`recipes.algorithms.astrometry`,
   :mod:`recipes.algorithms.dar`); ``astrometry=false`` uses the default solution;
   ``darcheck`` measures (``check``) or also removes (``correct``) the residual centroid
   drift of the brightest source with wavelength;
6. OFFSET_LIST: the exposure's reference position is corrected (RA − RA_OFFSET,
   DEC − DEC_OFFSET, degrees) and its data scaled by FLUX_SCALE
   (:func:`recipes.algorithms.offsets.apply_offsets`); ``save`` ``individual`` → PIXTABLE_REDUCED,
   ``positioned`` → PIXTABLE_POSITIONED;

then for all exposures together:

7. weights (``weight``: ``exptime``, ``fwhm`` = EXPTIME / seeing², ``none``) and
   combination (``save`` ``combined`` → PIXTABLE_COMBINED);
8. resampling (``resample``, ``dx``, ``dy``, ``dlambda``, ``pixfrac``, ``ld``, ``rc``,
   ``crtype``, ``crsigma``) onto OUTPUT_WCS or a grid fitted to the data → DATACUBE_FINAL
   (unless ``save`` lacks ``cube``) and one IMAGE_FOV per ``filter``
   (:mod:`recipes.algorithms.resampling`, :mod:`recipes.algorithms.cube`).

Step 2b, ``autocalib``: ``deepfield`` divides every slice by its sky illumination, the
ratio of its sky-line fluxes (above each spaxel's own continuum) to those of the mean
spectrum of the source-free spaxels (:func:`recipes.algorithms.autocal.deepfield_factors`;
products AUTOCAL_MASK, AUTOCAL_FACTORS with ``save`` ``autocal``); ``user`` applies a
given AUTOCAL_FACTORS table.

Not implemented: Raman-line removal (issue 16): an AO exposure given RAMAN_LINES (associated
by default for AO modes, as MuseRed does) is reduced without it, with a WARNING and a
header record (:func:`recipes.algorithms.raman.note_not_removed`); ``format``
Euro3D/sdpCube (not accepted by the parameter).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.calibs import ASTROMETRY_WCS, AUTOCAL_FACTORS, EXTINCT_TABLE, FILTER_LIST, LSF_PROFILE, OFFSET_LIST, OUTPUT_WCS, RAMAN_LINES, SKY_CONTINUUM, SKY_LINES, STD_RESPONSE, STD_TELLURIC
from recipes.base import Param, ParamValue, Product, Recipe, RecipeError
from recipes.algorithms import autocal, raman, skymodel, skysub
from recipes.algorithms.astrometry import project_to_sky, read_astrometry
from recipes.algorithms.combination import exposure_weight, merge_tables, to_positioned
from recipes.algorithms.cube import collapse, filter_extensions, load_filter, primary_from, write_datacube
from recipes.algorithms.cube import write_image_fov
from recipes.algorithms.cubeqc import fwhm_qc, product_qc
from recipes.algorithms.dar import check_dar
from recipes.io import hkey
from recipes.algorithms.offsets import apply_offsets, read_offsets, record_offset
from recipes.algorithms.pixtable import PixTable, pkey
from recipes.algorithms.postprocess import flux_calibrate, group_exposures, merge_ifus
from recipes.algorithms.postprocess import read_extinction, read_response, read_telluric
from recipes.algorithms.resampling import check_lambda_range, check_resample, grid_from_header, grid_from_pixtable
from recipes.algorithms.resampling import make_cube, read_output_wcs, resample_options, resample_params
from recipes.algorithms.rvcorr import apply_rvcorr, rv_correction
from recipes.provenance import add_qc, product_header

INPUT_TAG = "PIXTABLE_OBJECT"
SAVE_CHOICES = ("cube", "autocal", "raman", "skymodel", "individual", "positioned", "combined", "stacked")

PARAMS = (
    Param("save", tuple, "cube,skymodel", "products to save, comma list of: " + ", ".join(SAVE_CHOICES),
          choices=SAVE_CHOICES),
    *resample_params(crsigma=15.0, pixfrac="0.8,0.8"),
    Param("weight", str, "exptime", "exposure weighting: exptime, fwhm (EXPTIME / seeing^2) or none",
          choices=("exptime", "fwhm", "none")),
    Param("filter", tuple, "white", "comma-separated filter names (EXTNAMEs of FILTER_LIST) for IMAGE_FOV"),
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
    Param("sky_crsigma", tuple, "15.,15.", "cube,spectrum sigma clipping when building the sky spectrum",
          item=float, length=2),
    Param("rvcorr", str, "bary", "radial-velocity correction: bary, helio, geo or none",
          choices=("bary", "helio", "geo", "none")),
    Param("astrometry", bool, True, "apply the astrometric solution (the default one without ASTROMETRY_WCS)"),
)  # fmt: skip


def check(params: Mapping[str, ParamValue | None]) -> None:
    """Cross-parameter rules: lambdamin < lambdamax, the sky spaxels fit in the field
    (skymodel_fraction + skymodel_ignore <= 1), 1 to 3 pixfrac values."""
    check_lambda_range(params)
    if params["skymodel_fraction"] + params["skymodel_ignore"] > 1.0:
        raise ValueError("skymodel_fraction + skymodel_ignore must not exceed 1")
    check_resample(params)


# --------------------------------------------------------------------------------------
# products
# --------------------------------------------------------------------------------------


class _Writer:
    """Writes the products of the run into its folder and collects them."""

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

    def mask(self, name: str, tag: str, template: fits.Header, image: skysub.FieldImage, mask: np.ndarray,
             qc: list, product_qc: dict | None = None) -> None:  # fmt: skip
        """SKY_MASK, AUTOCAL_MASK: ``mask`` (1 = used) on the white image's field-pixel grid."""
        h = self.header(tag, template)
        add_qc(h, qc)
        path = self.outdir / name
        fits.HDUList([fits.PrimaryHDU(header=h), skysub.mask_image_hdu(image, mask)]).writeto(
            path, overwrite=True, output_verify="silentfix")
        self.add(path, tag, product_qc)

    def sky(self, sky: skysub.SkyMeasurement, template: fits.Header, n: int) -> None:
        """SKY_IMAGE, SKY_MASK and SKY_SPECTRUM of exposure ``n``."""
        h = self.header("SKY_IMAGE", template)
        path = self.outdir / f"SKY_IMAGE_{n:04d}.fits"
        fits.HDUList([fits.PrimaryHDU(header=h), fits.ImageHDU(sky.image.data.astype(np.float32), name="DATA")]
                     ).writeto(path, overwrite=True, output_verify="silentfix")  # fmt: skip
        self.add(path, "SKY_IMAGE")
        self.mask(f"SKY_MASK_{n:04d}.fits", "SKY_MASK", template, sky.image, sky.mask,
                  [("ESO QC SCIPOST LOWLIMIT", sky.low, "lowest value in the sky mask"),
                   ("ESO QC SCIPOST THRESHOLD", sky.high, "highest value in the sky mask")],
                  {"LOWLIMIT": sky.low, "THRESHOLD": sky.high})  # fmt: skip
        self.table(f"SKY_SPECTRUM_{n:04d}.fits", "SKY_SPECTRUM", template, sky.spectrum.table())


# --------------------------------------------------------------------------------------
# one exposure
# --------------------------------------------------------------------------------------


def autocalibrate(pt: PixTable, params: Mapping, frames: Mapping[str, list[Path]], writer: _Writer, n: int) -> None:
    """Step 2b (``autocalib``): per-slice factors from the sky lines (``deepfield``) or
    from AUTOCAL_FACTORS (``user``), divided out in place."""
    if params["autocalib"] == "user":
        path = _first(frames, "AUTOCAL_FACTORS")
        if path is None:
            raise RecipeError("autocalib=user needs an AUTOCAL_FACTORS table")
        autocal.apply_autocal(pt, autocal.read_autocal_factors(path), str(path))
    elif params["autocalib"] == "deepfield":
        found = autocal.deepfield_factors(pt, params["sky_crsigma"])
        autocal.apply_autocal(pt, found.factors)
        if "autocal" in params["save"]:
            writer.mask(f"AUTOCAL_MASK_{n:04d}.fits", "AUTOCAL_MASK", pt.header, found.image, found.mask,
                        [("ESO QC SCIPOST LOWLIMIT", found.low, "lowest value in the mask"),
                         ("ESO QC SCIPOST THRESHOLD", found.threshold, "source threshold of the white image")])
            writer.table(f"AUTOCAL_FACTORS_{n:04d}.fits", "AUTOCAL_FACTORS", pt.header, found.factors)


def subtract_sky(pt: PixTable, params: Mapping, frames: Mapping[str, list[Path]], writer: _Writer, n: int) -> None:
    """Step 3 on the merged, flux-calibrated table (field pixels), in place."""
    method = params["skymethod"]
    if method == "none":
        return
    lines_path, cont_path = _first(frames, "SKY_LINES"), _first(frames, "SKY_CONTINUUM")
    lsf = skymodel.read_lsf(list(frames.get("LSF_PROFILE", []) or []))
    if method == "subtract-model":
        if lines_path is None or cont_path is None:
            raise RecipeError("skymethod=subtract-model needs SKY_LINES and SKY_CONTINUUM")
        if lsf is None:
            raise RecipeError("skymethod=subtract-model needs LSF_PROFILE")
        skymodel.subtract_model(pt, skymodel.given_model(lines_path, cont_path), lsf)
        pt.header[hkey(pkey("SKYSUB"))] = (True, "sky subtracted (subtract-model)")
        return
    sky = skysub.measure_sky(pt, params["sky_crsigma"], params["skymodel_fraction"], params["skymodel_ignore"],
                             params["skymodel_sampling"])  # fmt: skip
    save = "skymodel" in params["save"]
    template = pt.header
    if save:
        writer.sky(sky, template, n)
    if method == "simple":
        skysub.subtract_spectrum(pt, sky.spectrum)
        pt.header[hkey(pkey("SKYSUB"))] = (True, "sky subtracted (simple)")
        return
    if lines_path is None:
        raise RecipeError("skymethod=model needs SKY_LINES (the list of sky lines to fit)")
    model, lsf = skymodel.fit_exposure_model(pt, sky.spectrum, skymodel.read_sky_lines(lines_path), lsf, cont_path,
                                             params["skymodel_sampling"], params["skymodel_csampling"])  # fmt: skip
    skymodel.subtract_model(pt, model, lsf)
    pt.header[hkey(pkey("SKYSUB"))] = (True, "sky subtracted (model)")
    if save:
        writer.table(f"SKY_LINES_{n:04d}.fits", "SKY_LINES", template, *skymodel.lines_product(model))
        writer.table(f"SKY_CONTINUUM_{n:04d}.fits", "SKY_CONTINUUM", template,
                     *skymodel.continuum_product(model, params["skymodel_csampling"]))  # fmt: skip


def reduce_exposure(
    members: list[Path], params: Mapping, frames: Mapping[str, list[Path]], writer: _Writer, n: int, calib: dict,
) -> PixTable:
    """Steps 1-6 for one exposure (its IFU tables); returns its projected (reduced) table."""
    names = [str(p) for p in members]
    lmin, lmax = params["lambdamin"], params["lambdamax"]
    tables = [PixTable.read(path).cut_lambda(lmin, lmax, inplace=True) for path in members]
    pt = merge_ifus(tables, names)  # 1.
    if pt.nrows == 0:
        raise RecipeError(f"{names[0]}: no rows between lambdamin={lmin} and lambdamax={lmax} Angstrom")
    mode = str(pt.header.get("ESO INS MODE", "WFM"))
    raman.note_not_removed(pt, calib["raman"], mode, names[0])
    flux_calibrate(pt, calib["response"], calib["extinction"], calib["telluric"], names[0])  # 2.
    autocalibrate(pt, params, frames, writer, n)  # 2b.
    subtract_sky(pt, params, frames, writer, n)  # 3.
    apply_rvcorr(pt, rv_correction(pt.header, params["rvcorr"], names[0]))  # 4.
    cd, crpix = read_astrometry(calib["astrometry"] if params["astrometry"] else None, mode)  # 5.
    lambdaref = params["lambdaref"]
    if mode.upper().startswith("NFM"):
        lambdaref = -1.0  # NFM has an atmospheric dispersion corrector
    project_to_sky(pt, cd, crpix, lambdaref, names[0])
    if params["darcheck"] != "none":
        check_dar(pt, correct=params["darcheck"] == "correct")
    if calib["offsets"] is not None:  # 6.
        shift = apply_offsets(pt, calib["offsets"], Path(names[0]))
        if shift is not None:
            record_offset(pt.header, 1, str(pt.header.get("DATE-OBS", "")), shift)
    pt.update_limits()
    if "individual" in params["save"]:
        writer.add(pt.write(writer.outdir / f"PIXTABLE_REDUCED_{n:04d}.fits"), "PIXTABLE_REDUCED")
    if "positioned" in params["save"]:
        path = to_positioned(pt, pt.reference()).write(writer.outdir / f"PIXTABLE_POSITIONED_{n:04d}.fits")
        writer.add(path, "PIXTABLE_POSITIONED")
    return pt


# --------------------------------------------------------------------------------------
# the recipe
# --------------------------------------------------------------------------------------


def run(frames: Mapping[str, list[Path]], params: Mapping, outdir: Path) -> list[Product]:
    """Write DATACUBE_FINAL.fits, IMAGE_FOV_nnnn.fits and the ``save`` products in ``outdir``."""
    outdir = Path(outdir)
    paths = [Path(p) for p in frames.get(INPUT_TAG, [])]
    if not paths:
        raise RecipeError(f"{RECIPE.name} needs at least one {INPUT_TAG}")
    for tag in ("STD_RESPONSE", "EXTINCT_TABLE"):
        if _first(frames, tag) is None:
            raise RecipeError(f"{RECIPE.name} needs a {tag} calibration")
    filters = [load_filter(name, _first(frames, "FILTER_LIST")) for name in params["filter"]]  # fail before the work
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
    saves = params["save"]
    exposures = group_exposures(paths)
    reduced = []
    for n, members in enumerate(exposures, start=1):
        pt = reduce_exposure(members, params, frames, writer, n, calib)
        w = exposure_weight(pt, params["weight"], str(members[0]))  # 7.
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
        write_cube(pt, params, filters, wcs_header, output_wcs, first_header, writer)  # 8.
    return writer.products


def write_cube(pt: PixTable, params: Mapping, filters, wcs_header, output_wcs, template: fits.Header,
               writer: _Writer) -> None:  # fmt: skip
    """Step 8: resample onto the grid and write DATACUBE_FINAL and the IMAGE_FOVs.

    Consumes ``pt``: its columns are dropped as soon as the cube no longer needs them
    (origin before resampling, the rest after), which lowers the peak memory of a full
    exposure by several GB; its header stays.
    """
    if wcs_header is not None:
        grid = grid_from_header(wcs_header, pt, params["dlambda"], where=str(output_wcs))
    else:
        grid = grid_from_pixtable(pt, params["dx"], params["dy"], params["dlambda"])
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
    extra = filter_extensions(images, grid, bunit) if params["format"] == "xCube" else []
    h = writer.header("DATACUBE_FINAL", template)
    h[hkey("ESO DRS MUSE RESAMPLE NREJECTED")] = (result.n_rejected, "pixels rejected as cosmic rays")
    for key in ("ESO DRS MUSE PIXTABLE FLUXCAL", "ESO DRS MUSE PIXTABLE SKYSUB", "ESO DRS MUSE PIXTABLE RVCORR",
                "ESO DRS MUSE PIXTABLE DAR CORRECT", raman.RAMAN_KEY):  # fmt: skip
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


RECIPE = Recipe(
    name="muse_scipost",
    inputs=(INPUT_TAG,),
    calibs=(
        EXTINCT_TABLE,
        STD_RESPONSE,
        STD_TELLURIC.optional(),
        ASTROMETRY_WCS,
        OFFSET_LIST,
        FILTER_LIST,
        OUTPUT_WCS,
        SKY_LINES,
        SKY_CONTINUUM,
        LSF_PROFILE.optional(),
        RAMAN_LINES,
        AUTOCAL_FACTORS,
    ),
    outputs=("DATACUBE_FINAL", "IMAGE_FOV", "PIXTABLE_REDUCED", "PIXTABLE_POSITIONED", "PIXTABLE_COMBINED",
             "SKY_IMAGE", "SKY_MASK", "SKY_SPECTRUM", "SKY_LINES", "SKY_CONTINUUM", "AUTOCAL_MASK",
             "AUTOCAL_FACTORS"),  # fmt: skip
    params=PARAMS,
    run=run,
    group="exposure",
    step="scipost",
    from_recipe="muse_scibasic",
    min_inputs=1,
    check=check,
    description="Flux-calibrate, sky-subtract and position the pixel tables of an exposure and resample "
    "them onto a cube.",
    summary_qc=(("CR rejected", "NREJECTED"),),
)
