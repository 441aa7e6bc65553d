"""The pixel-table steps of muse_scibasic for one IFU (recipes.md §3.7 steps 2-7).

:func:`pixtable_steps`: the pixel table of the flat-fielded image
(:func:`recipes.algorithms.pixtable_build.pixtable_for_ifu`); the sky-line zero point
(:mod:`recipes.algorithms.skyline_shift`); ``crop`` to the useful range of the instrument
mode (:func:`crop_range`; the NaD notch of the AO modes flagged NOTCH_NAD,
:func:`notch_range`); ILLUM and TWILIGHT_CUBE (:mod:`recipes.algorithms.illumination`);
the attached PIXTABLE_FLAT_FIELD (mean master-flat spectrum on a 1.25 Å grid).

Units: data count, stat count², λ Å (air), xpos/ypos field pixels (0.2").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
from astropy.io import fits

from recipes.base import RecipeError
from recipes.io import CcdImage, hkey
from recipes.kernels.pixtable_build import compact_rows, gather_pixels, shift_lambda
from recipes.algorithms.cube import CubeGrid
from recipes.algorithms.illumination import apply_per_slice, apply_twilight, slice_illumination
from recipes.algorithms.pixtable import PixTable, pkey
from recipes.algorithms.pixtable_build import IfuGeometry, flat_field_spectrum, pixtable_for_ifu, slice_xoffsets
from recipes.algorithms.skyline_shift import lambda_shift
from recipes.algorithms.tracing import Trace
from recipes.provenance import add_qc

logger = logging.getLogger(__name__)

DQ_NOTCH_NAD = 1 << 27
#: Useful wavelength range per instrument mode (Å), recipes.md §3.7 ``crop``.
CROP_NOMINAL = (4750.0, 9350.0)
CROP_AO_NOMINAL = (4700.0, 9350.0)
CROP_EXTENDED = (4600.0, 9350.0)
#: Range blocked by the sodium notch filter of the AO modes (Å), flagged NOTCH_NAD.
#: Values of the DRS constants as we recall them (kMuseNa2LambdaMin/Max for WFM-AO and
#: the NFM notch); not verified against a DRS run (recipes.md §7).
NAD_NOTCH_WFM = (5755.0, 6008.0)
NAD_NOTCH_NFM = (5780.0, 6050.0)


def crop_range(mode: str) -> tuple[float, float]:
    """Useful λ range of an ``ESO INS MODE`` (WFM-NOAO-N, WFM-AO-E, NFM-AO-N ...)."""
    m = mode.strip().upper()
    if m.endswith("-E"):
        return CROP_EXTENDED
    if m.startswith("WFM-AO"):
        return CROP_AO_NOMINAL
    return CROP_NOMINAL


def notch_range(mode: str) -> tuple[float, float] | None:
    """NaD notch range of the AO modes, None otherwise."""
    m = mode.strip().upper()
    if m.startswith("NFM"):
        return NAD_NOTCH_NFM
    if m.startswith("WFM-AO"):
        return NAD_NOTCH_WFM
    return None


def pixtable_steps(
    image: CcdImage,
    ifu: int,
    params: Mapping,
    header: fits.Header,
    tables: tuple[Trace, dict[int, np.ndarray], IfuGeometry],
    flat: CcdImage,
    illum: CcdImage | None,
    twilight: tuple[np.ndarray, CubeGrid] | None,
) -> tuple[PixTable, list[tuple[str, object, str]]]:
    """Steps 2–7 for one IFU: the finished pixel table and its QC.

    ``image``: the flat-fielded exposure (:func:`recipes.algorithms.exposure.reduce_exposure`);
    ``tables``: the IFU's trace, wavelength solution and geometry
    (:func:`recipes.algorithms.pixtable_build.ifu_tables`); ``flat``: its MASTER_FLAT;
    ``illum``: the flat-fielded ILLUM exposure or None; ``twilight``: the TWILIGHT_CUBE
    (:func:`recipes.algorithms.illumination.read_twilight_cube`) or None. ``params``: the
    typed muse_scibasic parameters (``skylines`` [Å], ``skyhalfwidth``, ``skybinsize``,
    ``skyreject``, ``crop``)."""
    trace, wavecal, geometry = tables
    pt = pixtable_for_ifu(image, ifu, trace, wavecal, geometry, header)
    # the flat at the table's pixels, for its spectrum (step 7): same trace, so the same
    # rows; λ before the sky-line shift, as the flat has no sky lines
    if flat.data.shape != image.data.shape:
        raise RecipeError(
            f"IFU {ifu}: MASTER_FLAT is {flat.data.shape[::-1]} pixels, the data {image.data.shape[::-1]}"
        )
    flat_data, flat_dq = gather_pixels(flat.data, flat.dq, pt.origin, slice_xoffsets(trace, image.data.shape))
    flat_lam = pt.lam
    qc: list[tuple[str, object, str]] = []
    # 3. sky-line zero point
    lines = list(params["skylines"])
    shift = 0.0
    if lines:
        hi, lo, niter = params["skyreject"]
        shift, found = lambda_shift(pt, lines, params["skyhalfwidth"], params["skybinsize"], (hi, lo, int(niter)))
        for line, off, err in found:
            logger.info("IFU %d: sky line %.3f A offset %+.4f +- %.4f A", ifu, line, off, err)
        if not found:
            logger.warning("IFU %d: none of the sky lines %s could be measured; no wavelength shift", ifu, lines)
        if shift != 0.0:
            flat_lam = pt.lam.copy()
            shift_lambda(pt.lam, shift)  # in float64, rounded once to float32
    qc.append(("ESO QC SCIBASIC LAMBDA SHIFT", float(shift), "[Angstrom]"))
    # 4. crop by instrument mode
    mode = str(header.get("ESO INS MODE", "WFM-NOAO-N"))
    flat_cols = {"lambda": flat_lam, "data": flat_data, "dq": flat_dq}  # all the spectrum needs
    if params["crop"]:
        lo, hi = crop_range(mode)
        keep = (pt.lam >= lo) & (pt.lam <= hi)
        if not keep.all():
            # in place, column by column: no second full-size table (13 M rows per IFU)
            same = flat_lam is pt.lam
            for name in list(pt.columns):
                pt.columns[name] = compact_rows(keep, pt.columns[name])
            flat_cols = {k: (pt.lam if k == "lambda" and same else compact_rows(keep, v)) for k, v in flat_cols.items()}
        notch = notch_range(mode)
        if notch is not None:
            pt.dq[(pt.lam >= notch[0]) & (pt.lam <= notch[1])] |= DQ_NOTCH_NAD
        logger.info("IFU %d: %s mode, cropped to %.1f...%.1f A", ifu, mode, lo, hi)
    if pt.nrows == 0:
        raise RecipeError(f"IFU {ifu}: no pixel left after cropping to the {mode} range")
    # 5. ILLUM
    if illum is not None:
        factors = slice_illumination(illum, trace)
        apply_per_slice(pt, factors)
        for s, f in enumerate(factors, start=1):
            pt.header[hkey(pkey(f"ILLUM{s}"))] = float(f)  # ILLUM1 .. ILLUM48, as the DRS
        pt.header[hkey(pkey("ILLUM MEAN"))] = float(np.nanmean(factors))
        pt.header[hkey(pkey("ILLUM STDEV"))] = float(np.nanstd(factors))
    # 6. TWILIGHT_CUBE
    if twilight is not None:
        nbad = apply_twilight(pt, *twilight)
        if nbad:
            logger.warning("IFU %d: %d pixels outside the positive TWILIGHT_CUBE were not corrected", ifu, nbad)
    # 7. flat-field spectrum
    pt.flat_field = flat_field_spectrum(flat_cols["lambda"], flat_cols["data"], flat_cols["dq"])
    pt.update_limits()
    add_qc(pt.header, qc)
    return pt, qc
