"""image_align: offsets and flux scales of exposures against a reference image (the role
imphot plays for MuseRed); exp-align ``--method image``.

For each IMAGE_FOV (the filter named by ``filter``, one per exposure, in MJD-OBS order):
resample the REFERENCE_IMAGE onto its grid, fit ``muse = a · [ref ⊗ PSF](x − dx, y − dy)
+ b`` (PSF ``psf`` with ``beta``, start FWHM ``fwhm`` and shifts within ``maxshift``) and
turn the shift into sky offsets (:mod:`recipes.algorithms.alignment_reference`).

OFFSET_LIST (recipes.md §4.8) has one row per exposure with the same sign convention as
muse_exp_align: ``RA_CORR = RA − RA_OFFSET``, ``DEC_CORR = DEC − DEC_OFFSET`` [deg; RA_OFFSET
a pure RA difference]. Unlike muse_exp_align the offsets are absolute (relative to the
reference image, so no exposure gets 0 by construction). ``FLUX_SCALE = median(a) / a_i``:
multiplying exposure i by it brings every exposure to the median photometric level of the
set. The fitted values are in the primary header as ``ESO QC IMALIGN {DX,DY,SCALE,BKG,
FWHM}i`` (pixels, MUSE/reference flux ratio, image units, arcsec).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from recipes.calibs import REFERENCE_IMAGE
from recipes.base import Param, ParamValue, Product, Recipe, RecipeError
from recipes.algorithms.alignment_reference import (
    ImageFit,
    fit_exposure,
    read_reference,
    resample_reference,
    shift_to_sky,
)
from recipes.algorithms.fov import read_fov
from recipes.provenance import add_qc, product_header

logger = logging.getLogger(__name__)

PARAMS = (
    Param("filter", str, "white", "IMAGE_FOV filter to align (ESO DRS MUSE FILTER NAME)"),
    Param("psf", str, "moffat", "PSF model fitted: moffat (fixed beta) or gaussian", choices=("moffat", "gaussian")),
    Param("beta", float, 2.5, "Moffat beta (fixed)", minimum=1.1),
    Param("fwhm", float, 0.8, "initial PSF FWHM [arcsec]", minimum=0.05),
    Param("maxshift", float, 5.0, "largest offset searched by the cross-correlation start [arcsec]", minimum=0.1),
)


def check(params: Mapping[str, ParamValue | None]) -> None:
    """Cross-parameter rule: ``filter`` names one filter."""
    if not params["filter"].strip() or "," in params["filter"]:
        raise ValueError(f"parameter filter names the one IMAGE_FOV filter to align, not {params['filter']!r}")


def run(frames: Mapping[str, list[Path]], params: Mapping[str, ParamValue | None], outdir: Path) -> list[Product]:
    """Write OFFSET_LIST.fits (see the module docstring)."""
    paths = list(frames.get("IMAGE_FOV", []))
    refs = list(frames.get("REFERENCE_IMAGE", []))
    if not refs:
        raise RecipeError("image_align needs a REFERENCE_IMAGE (settings: frames: REFERENCE_IMAGE: file)")
    if not paths:
        raise RecipeError("image_align needs at least one IMAGE_FOV")
    flt = params["filter"].strip()
    images = sorted((im for im in (read_fov(p) for p in paths) if im.filter_name.lower() == flt.lower()),
                    key=lambda im: im.mjd_obs)
    if not images:
        raise RecipeError(f"no IMAGE_FOV of filter {flt!r} among {len(paths)} input(s)")
    ref, ref_wcs = read_reference(Path(refs[0]))
    fits_: list[ImageFit] = []
    offsets = []
    for im in images:
        resampled = resample_reference(ref, ref_wcs, im)
        fit = fit_exposure(im.data, resampled, params["fwhm"] / im.spaxel, params["psf"], params["beta"],
                           params["maxshift"] / im.spaxel, where=im.label)
        fits_.append(fit)
        offsets.append(shift_to_sky(im, fit.dx, fit.dy))
        logger.info("%s: shift (%.3f, %.3f) pix, scale %.4f, FWHM %.3f pix on %d pixels", im.label,
                    fit.dx, fit.dy, fit.scale, fit.fwhm, fit.npix)
    scales = np.array([f.scale for f in fits_])
    table = Table()
    table["DATE_OBS"] = [im.date_obs for im in images]
    table["MJD_OBS"] = np.array([im.mjd_obs for im in images])
    table["RA_OFFSET"] = np.array([o[0] for o in offsets])
    table["DEC_OFFSET"] = np.array([o[1] for o in offsets])
    table["FLUX_SCALE"] = np.median(scales) / scales
    table["RA_OFFSET"].unit = table["DEC_OFFSET"].unit = "deg"
    raws = [(im.path, "IMAGE_FOV") for im in images]
    header = product_header("OFFSET_LIST", "image_align", dict(params), raws, [(Path(refs[0]), "REFERENCE_IMAGE")],
                            template=images[0].header)
    qc = []
    for k, (im, f) in enumerate(zip(images, fits_), start=1):
        qc += [(f"ESO QC IMALIGN DX{k}", f.dx, "[pix]"), (f"ESO QC IMALIGN DY{k}", f.dy, "[pix]"),
               (f"ESO QC IMALIGN SCALE{k}", f.scale, "MUSE/reference"),
               (f"ESO QC IMALIGN BKG{k}", f.background, "background"),
               (f"ESO QC IMALIGN FWHM{k}", f.fwhm * im.spaxel, "[arcsec] PSF FWHM")]
    add_qc(header, qc)
    path = outdir / "OFFSET_LIST.fits"
    fits.HDUList([fits.PrimaryHDU(header=header), fits.table_to_hdu(table)]).writeto(path, overwrite=True)
    return [Product(path, "OFFSET_LIST", (), {k.removeprefix("ESO QC IMALIGN "): v for k, v, _ in qc})]


RECIPE = Recipe(
    name="image_align",
    inputs=("IMAGE_FOV",),
    calibs=(REFERENCE_IMAGE,),
    outputs=("OFFSET_LIST",),
    params=PARAMS,
    run=run,
    group="dataset",
    command="exp-align",
    step="image",
    from_recipe="muse_scipost",
    min_inputs=1,
    check=check,
    description="Offsets and flux scales of exposures fitted against a reference image (e.g. HST).",
    summary_qc=(("FWHM", "FWHM?*"), ("SCALE", "SCALE?*")),
)
