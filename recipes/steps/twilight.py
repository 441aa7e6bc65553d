"""muse_twilight: twilight sky flats → illumination-correction cube (recipes.md §3.6).

The recipe reads as its steps:

1. per IFU: basic processing of the SKYFLAT frames (overscan, MASTER_BIAS, adu → count,
   optional MASTER_DARK) and their combination (default ``sigclip``), divided by the
   MASTER_FLAT (:func:`recipes.steps.scibasic.reduce_exposure`);
2. the IFU's pixel table (:func:`recipes.algorithms.pixtable_build.pixtable_for_ifu`) cut to
   [``lambdamin``, ``lambdamax``];
3. its integrated flux (sum of the good rows, count) → ``ESO DRS MUSE FLAT FLUX SKYn``
   and ``ESO QC TWILIGHTm INTFLUX``;
4. optional ILLUM: each slice divided by its relative illumination in the attached flat
   (:func:`recipes.steps.scibasic.slice_illumination`);
5. all IFUs merged, each scaled by (mean integrated flux) / (its integrated flux), and
   resampled (``resample``, ``crtype``, ``crsigma``) onto a cube in field pixels with
   ``dlambda`` planes; its white-light image (mean over the planes) is appended as the
   ``WHITE`` extension of DATACUBE_SKYFLAT;
6. smoothing (:func:`recipes.algorithms.twilightcube.smooth_cube`): the illuminated
   spaxels (white image above half its median) form the mask; each plane is median
   filtered (5 spaxels in x, 7 in y), normalised to mean 1 in the mask, fitted with a 2-D
   polynomial of ``xorder`` × ``yorder`` and normalised again → TWILIGHT_CUBE (DATA only,
   the same pixel WCS).

The vignetting step (VIGNETTING_MASK, NFM) is not implemented: NFM data are refused.
Units: DATACUBE_SKYFLAT in count (relative), TWILIGHT_CUBE dimensionless.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.calibs import BADPIX_TABLE, GEOMETRY_TABLE, ILLUM, MASTER_BIAS, MASTER_DARK, MASTER_FLAT, TRACE_TABLE, VIGNETTING_MASK, WAVECAL_TABLE
from recipes.base import Param, Product, Recipe, RecipeError
from recipes.algorithms.cube import CubeGrid, primary_from, write_datacube
from recipes.algorithms.resampling import grid_from_pixtable, make_cube
from recipes.io import hkey, read_primary_header
from recipes.kernels.resample import ResampleOptions
from recipes.algorithms.pixtable import PixTable
from recipes.algorithms.pixtable_build import pixtable_for_ifu
from recipes.algorithms.ccdinputs import (
    COMBINE_PARAMS,
    MERGE_PARAM,
    NIFU_PARAM,
    OVERSCAN_PARAMS,
    check_modes,
    optional_calib,
    raw_inputs,
    select_ifus,
)
from recipes.algorithms.overscan import check_bias_overscan, check_overscan_params
from recipes.provenance import add_qc, flat_flux_sky_key, product_header
from recipes.algorithms.exposure import check_calib_modes, reduce_exposure
from recipes.algorithms.illumination import apply_per_slice, slice_illumination
from recipes.algorithms.pixtable_build import ifu_tables
from recipes.algorithms.tracing import slice_mask
from recipes.algorithms.twilightcube import smooth_cube

logger = logging.getLogger(__name__)


def _stats(values: np.ndarray) -> tuple[float, ...]:
    return (float(np.median(values)), float(values.mean(dtype=np.float64)), float(values.std(dtype=np.float64)),
            float(values.min()), float(values.max()))  # fmt: skip


def write_twilight_cube(path: Path, primary: fits.Header, grid: CubeGrid, cube: np.ndarray) -> Path:
    """TWILIGHT_CUBE: header-only primary HDU and a ``DATA`` float32 cube with the pixel WCS."""
    header = grid.header(3)
    header["EXTNAME"] = ("DATA", "This extension contains data values")
    # as the DRS labels it: BUNIT count (the cube is relative, mean 1) and the ESO classes
    header["BUNIT"] = "count"
    header["HDUCLASS"] = ("ESO", "class name (ESO format)")
    header["HDUCLAS1"] = ("IMAGE", "Image data format")
    header["HDUCLAS2"] = ("DATA", "this extension contains the data itself")
    hdus = [fits.PrimaryHDU(header=primary), fits.ImageHDU(cube.astype(np.float32), header=header, name="DATA")]
    fits.HDUList(hdus).writeto(path, overwrite=True, output_verify="silentfix")
    return Path(path)


def run(frames: Mapping[str, list[Path]], params: Mapping, outdir: Path) -> list[Product]:
    """Write DATACUBE_SKYFLAT.fits and TWILIGHT_CUBE.fits in ``outdir`` from ``frames["SKYFLAT"]``."""
    paths = raw_inputs(frames, "SKYFLAT", RECIPE.name, RECIPE.min_inputs)
    calibs: dict[str, Path | None] = {
        tag: optional_calib(frames, tag)
        for tag in ("MASTER_BIAS", "MASTER_DARK", "MASTER_FLAT", "TRACE_TABLE", "WAVECAL_TABLE", "GEOMETRY_TABLE",
                    "BADPIX_TABLE", "ILLUM", "VIGNETTING_MASK")
    }  # fmt: skip
    for tag in RECIPE.required_calibs:
        if calibs[tag] is None:
            raise RecipeError(f"muse_twilight needs a {tag} calibration, none was given")
    if calibs["VIGNETTING_MASK"] is not None:
        raise RecipeError("muse_twilight: the vignetting correction (VIGNETTING_MASK) is not implemented in musered")
    lmin, lmax = params["lambdamin"], params["lambdamax"]
    options = ResampleOptions(method=params["resample"], crtype=params["crtype"], crsigma=params["crsigma"])
    check_bias_overscan(calibs["MASTER_BIAS"], params)
    primaries = [read_primary_header(p) for p in paths]
    check_modes(paths, primaries)
    mode = str(primaries[0].get("ESO INS MODE", "WFM-NOAO-N"))
    if mode.upper().startswith("NFM"):
        raise RecipeError(f"{paths[0].name}: NFM twilight flats need the vignetting step, not implemented in musered")
    check_calib_modes(paths[0], primaries[0], calibs)
    ifus = select_ifus(paths, params["nifu"])
    basic = {**params, "cr": "none"}
    illum_primary = read_primary_header(calibs["ILLUM"]) if calibs["ILLUM"] is not None else None

    tables: list[PixTable] = []
    fluxes: list[float] = []
    qc: list[tuple[str, object, str]] = []
    for ifu in ifus:
        image, _ = reduce_exposure(paths, primaries, ifu, basic, calibs)
        tables_ifu = ifu_tables(calibs, ifu)
        # Inside the traced slices only: between them the flat is close to 0 and the
        # flat-fielded values (±10⁸) would be all these statistics show.
        good = (image.dq == 0) & (slice_mask(tables_ifu[0], image.data.shape) > 0)
        for stat, value in zip(("MEDIAN", "MEAN", "STDEV", "MIN", "MAX"), _stats(image.data[good])):
            qc.append((f"ESO QC TWILIGHT{ifu} MASTER {stat}", value, f"[count] combined skyflat {stat.lower()}"))
        pt = pixtable_for_ifu(image, ifu, *tables_ifu, primaries[0]).cut_lambda(lmin, lmax)
        if pt.nrows == 0:
            raise RecipeError(f"{paths[0].name}: IFU {ifu} has no pixel between {lmin} and {lmax} Angstrom")
        flux = float(pt.data[pt.dq == 0].sum(dtype=np.float64))
        if not flux > 0:
            raise RecipeError(f"{paths[0].name}: IFU {ifu} has no positive twilight flux")
        qc.append((f"ESO QC TWILIGHT{ifu} MASTER INTFLUX", flux, "[count] integrated flux of the pixel table"))
        qc.append((f"ESO QC TWILIGHT{ifu} INTFLUX", flux, "[count] integrated flux"))
        if calibs["ILLUM"] is not None:
            illum, _ = reduce_exposure([calibs["ILLUM"]], [illum_primary], ifu, {**basic, "combine": "none"}, calibs)
            apply_per_slice(pt, slice_illumination(illum, tables_ifu[0]))
        tables.append(pt)
        fluxes.append(flux)
        del image
    mean_flux = float(np.mean(fluxes))
    for ifu, pt, flux in zip(ifus, tables, fluxes):
        f = np.float32(mean_flux / flux)
        pt.data[...] *= f
        pt.stat[...] *= f * f
    merged = PixTable.concatenate(tables)
    del tables
    grid = grid_from_pixtable(merged, 0.0, 0.0, params["dlambda"])
    result = make_cube(merged, grid, options)
    # planes beyond the data (the grid rounds its plane count up) are dropped: NaN planes
    # would leave the pixels of the last half plane uncorrected in muse_scibasic
    filled = np.flatnonzero(np.isfinite(result.data).any(axis=(1, 2)))
    if filled.size == 0:
        raise RecipeError(f"{paths[0].name}: the skyflat cube is empty")
    first, last = int(filled[0]), int(filled[-1]) + 1
    data, stat = result.data[first:last], result.stat[first:last]
    grid = replace(grid, nz=last - first, crval3=float(grid.wavelength_at(first)))
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            white = np.nanmean(data, axis=0).astype(np.float32)
    smooth, mask = smooth_cube(data, white, params["xorder"], params["yorder"])

    raws = [(p, "SKYFLAT") for p in paths] + ([(calibs["ILLUM"], "ILLUM")] if calibs["ILLUM"] is not None else [])
    cal_list = [(p, tag) for tag, p in calibs.items() if p is not None and tag != "ILLUM"]
    base = primary_from(merged.header)
    outdir = Path(outdir)
    qcd: dict[str, float | int | str] = {k[4:]: v for k, v, _ in qc}

    def header_for(catg: str) -> fits.Header:
        h = product_header(catg, RECIPE.name, params, raws, cal_list, base)
        for ifu, flux in zip(ifus, fluxes):
            h[hkey(flat_flux_sky_key(ifu))] = (flux, "[count]")
        h[hkey("ESO DRS MUSE RESAMPLE NREJECTED")] = result.n_rejected
        add_qc(h, qc)
        return h

    white_hdu = fits.ImageHDU(white, header=grid.header(2), name="WHITE")
    white_hdu.header["BUNIT"] = "count"
    sky_path = write_datacube(outdir / "DATACUBE_SKYFLAT.fits", header_for("DATACUBE_SKYFLAT"), grid,
                              data, stat, "count", [white_hdu])  # fmt: skip
    twi_path = write_twilight_cube(outdir / "TWILIGHT_CUBE.fits", header_for("TWILIGHT_CUBE"), grid, smooth)
    logger.info("twilight cube: %d planes of %g A, %d illuminated spaxels", grid.nz, grid.cd3, int(mask.sum()))
    return [
        Product(sky_path, "DATACUBE_SKYFLAT", tuple(ifus), qcd),
        Product(twi_path, "TWILIGHT_CUBE", tuple(ifus), {}),
    ]


def check(params: Mapping) -> None:
    """Rules beyond single-parameter bounds: a well-formed ``overscan`` and a wavelength
    range ``lambdamin`` < ``lambdamax``."""
    check_overscan_params(params)
    if params["lambdamin"] >= params["lambdamax"]:
        raise ValueError(f"parameter lambdamin ({params['lambdamin']}) must be below lambdamax "
                         f"({params['lambdamax']})")  # fmt: skip


RECIPE = Recipe(
    name="muse_twilight",
    inputs=("SKYFLAT",),
    calibs=(
        MASTER_BIAS,
        MASTER_FLAT,
        TRACE_TABLE,
        WAVECAL_TABLE,
        GEOMETRY_TABLE,
        MASTER_DARK,
        BADPIX_TABLE,
        ILLUM,
        VIGNETTING_MASK,
    ),
    outputs=("DATACUBE_SKYFLAT", "TWILIGHT_CUBE"),
    params=(
        NIFU_PARAM,
        *OVERSCAN_PARAMS,
        *COMBINE_PARAMS,
        Param("scale", bool, False, "scale the individual images to a common exposure time before combining"),
        Param("resample", str, "drizzle", "resampling kernel of the skyflat cube",
              choices=("nearest", "linear", "quadratic", "renka", "drizzle", "lanczos")),
        Param("crtype", str, "median", "statistic for cosmic-ray rejection while resampling: iraf, mean or "
              "median", choices=("iraf", "mean", "median")),
        Param("crsigma", float, 50.0, "cosmic-ray rejection sigma while resampling the skyflat cube",
              minimum=0.0),
        Param("lambdamin", float, 5000.0, "lower wavelength cut of the twilight cube [Angstrom]"),
        Param("lambdamax", float, 9000.0, "upper wavelength cut of the twilight cube [Angstrom]"),
        Param("dlambda", float, 250.0, "wavelength bin of the twilight cube [Angstrom]", minimum=0.001),
        Param("xorder", int, 2, "x order of the 2D polynomial fitted to each plane", minimum=0, maximum=10),
        Param("yorder", int, 2, "y order of the 2D polynomial fitted to each plane", minimum=0, maximum=10),
        Param("vignmaskedges", float, 0.02, "(expert) vignetting step, not implemented in musered; recorded"),
        Param("vignsmooth", str, "polyfit", "(expert) vignetting step, not implemented in musered; recorded",
              choices=("polyfit", "gaussian", "median")),
        Param("vignxpar", int, -1, "(expert) vignetting step, not implemented in musered; recorded"),
        Param("vignypar", int, -1, "(expert) vignetting step, not implemented in musered; recorded"),
        Param("vignnfmmask", int, 22, "(expert) vignetting step, not implemented in musered; recorded"),
        MERGE_PARAM,
    ),  # fmt: skip
    run=run,
    group="sequence",
    step="twilight",
    min_inputs=3,
    check=check,
    description="Combine twilight sky flats into a smooth 3D illumination-correction cube (TWILIGHT_CUBE).",
    summary_qc=(("intflux", "QC TWILIGHT? INTFLUX"),),
)
