"""muse_dark: combine raw darks into a MASTER_DARK (recipes.md §3.2).

Per IFU, the recipe reads as its steps:

1. read the N raw darks once and check they share mode and detector setup;
2. overscan correction (the MASTER_BIAS overscan levels are the reference), trim,
   subtract the MASTER_BIAS, convert adu → count with each port's GAIN, variance
   RON² + Poisson (count²), and scale each exposure to ``normalize`` seconds
   (``scale=true``; the DRS default 3600 s, i.e. count per pixel per hour);
3. combine (default sigclip) in bounded row blocks;
4. hot pixels: above median + ``hotsigma`` · σ, σ = 1.4826 · MAD (the median absolute
   deviation expressed as a Gaussian σ), get the HOTPIXEL bit
   (:func:`recipes.algorithms.masterdark.flag_hot_pixels`);
5. QC (median, mean, stdev, min, max of the unflagged pixels; DC/DCERR in count/pix/h
   from 100 random 33×33 windows, :func:`recipes.algorithms.masterdark.dark_current`)
   and write ``CHANnn.DATA/DQ/STAT`` into MASTER_DARK.fits.

Units: DATA count per ``normalize`` seconds (per mean exposure time when
``normalize < 0``), STAT its square. ``model=true`` (MODEL_DARK) is not implemented and
is refused when the parameters are validated (``check``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.base import Param, Product, Recipe, RecipeError
from recipes.calibs import BADPIX_TABLE, MASTER_BIAS
from recipes.io import CcdImage, read_badpix_table, read_image_product, read_primary_header, write_ifu_images
from recipes.kernels.overscan import SATURATION_LIMIT
from recipes.provenance import add_qc, product_header
from recipes.algorithms.ccdinputs import (
    COMBINE_PARAMS,
    MERGE_PARAM,
    NIFU_PARAM,
    OVERSCAN_PARAMS,
    check_modes,
    combine_options,
    optional_calib,
    raw_inputs,
    select_ifus,
)
from recipes.algorithms.masterdark import dark_current, exposure_scales, flag_hot_pixels
from recipes.algorithms.overscan import OverscanSpec, bias_reference, check_bias_overscan, check_overscan_params
from recipes.algorithms.preprocess import combine_frames, prepare
from recipes.algorithms.rawccd import badpix_mask, check_compatible, load_raw_stack


def master_dark_ifu(
    paths: list[Path], primaries: list[fits.Header], ifu: int, params: Mapping, bias_path: Path, badpix: Path | None
) -> CcdImage:
    """The master dark of one IFU, with its QC keywords in ``header``."""
    spec = OverscanSpec.from_params(params)
    ccds = load_raw_stack(paths, ifu, primaries)
    check_compatible(ccds)
    quadrants = ccds[0].quadrants
    bias = read_image_product(bias_path, ifu)
    reference = bias_reference(bias, quadrants, bias_path, spec)
    static_dq = badpix_mask(quadrants, *read_badpix_table(badpix, ifu)) if badpix is not None else None
    factors, post, unit = exposure_scales(paths, primaries, params["scale"], params["normalize"])
    qc: list[tuple[str, object, str]] = []
    for i, c in enumerate(ccds, start=1):
        nsat = int(sum((c.image[q.data] > SATURATION_LIMIT).sum() for q in quadrants))
        qc.append((f"ESO QC DARK INPUT{i} NSATURATED", nsat, "saturated pixels in raw input"))

    preps = [
        prepare(c, spec, "count", reference=reference, reference_name=bias_path.name, scale=f)
        for c, f in zip(ccds, factors)
    ]
    master = combine_frames(preps, bias=bias, static_dq=static_dq, **combine_options(params))
    del bias, preps
    if post != 1.0:
        master.data *= np.float32(post)
        master.stat *= np.float32(post * post)

    nhot = flag_hot_pixels(master, params["hotsigma"])
    good = master.dq == 0
    values = master.data[good] if good.any() else master.data.ravel()
    dc, dcerr = dark_current(master, 3600.0 / unit, seed=ifu)
    qc += [
        ("ESO QC DARK MASTER NBADPIX", nhot, "hot pixels in master dark"),
        ("ESO QC DARK MASTER MEDIAN", float(np.median(values)), "[count] master dark median"),
        ("ESO QC DARK MASTER MEAN", float(values.mean(dtype=np.float64)), "[count] master dark mean"),
        ("ESO QC DARK MASTER STDEV", float(values.std(dtype=np.float64)), "[count] master dark stdev"),
        ("ESO QC DARK MASTER MIN", float(values.min()), "[count] master dark minimum"),
        ("ESO QC DARK MASTER MAX", float(values.max()), "[count] master dark maximum"),
        ("ESO QC DARK MASTER DC", dc, "[count/pix/h] dark current"),
        ("ESO QC DARK MASTER DCERR", dcerr, "[count/pix/h] dark current error"),
        ("ESO QC DARK MASTER NSATURATED", int(((master.dq & (1 << 12)) != 0).sum()), "saturated pixels"),
    ]
    add_qc(master.header, qc)
    return master


def run(frames: Mapping[str, list[Path]], params: Mapping, outdir: Path) -> list[Product]:
    """Build MASTER_DARK.fits in ``outdir`` from ``frames["DARK"]`` (≥ 3) and a MASTER_BIAS."""
    paths = raw_inputs(frames, "DARK", RECIPE.name, RECIPE.min_inputs)
    bias_path = optional_calib(frames, "MASTER_BIAS")
    if bias_path is None:
        raise RecipeError("muse_dark needs a MASTER_BIAS calibration, none was given")
    badpix = optional_calib(frames, "BADPIX_TABLE")
    check_bias_overscan(bias_path, params)
    primaries = [read_primary_header(p) for p in paths]
    check_modes(paths, primaries)
    ifus = select_ifus(paths, params["nifu"])
    calibs = [(bias_path, "MASTER_BIAS")] + ([(badpix, "BADPIX_TABLE")] if badpix else [])
    header = product_header(
        "MASTER_DARK", RECIPE.name, params, [(p, "DARK") for p in paths], calibs, template=primaries[0]
    )
    out = Path(outdir) / "MASTER_DARK.fits"
    qc = write_ifu_images(out, header, ifus, paths,
                          lambda ifu: master_dark_ifu(paths, primaries, ifu, params, bias_path, badpix), "count",
                          "(count)**2")  # fmt: skip
    return [Product(out, "MASTER_DARK", tuple(ifus), qc)]


def check(params: Mapping) -> None:
    """Rules beyond single-parameter bounds: a well-formed ``overscan``; ``model=true``
    (MODEL_DARK) is refused, not implemented in musered."""
    check_overscan_params(params)
    if params["model"]:
        raise ValueError("parameter model=true (MODEL_DARK) is not implemented in musered; use model=false")


RECIPE = Recipe(
    name="muse_dark",
    inputs=("DARK",),
    calibs=(MASTER_BIAS, BADPIX_TABLE),
    outputs=("MASTER_DARK",),
    params=(
        NIFU_PARAM,
        *OVERSCAN_PARAMS,
        *COMBINE_PARAMS,
        Param("scale", bool, True, "scale the individual images to a common exposure time before combining"),
        Param("normalize", float, 3600.0, "normalize the master dark to this exposure time (s); a negative "
              "value disables the normalization"),
        Param("hotsigma", float, 5.0, "hot-pixel threshold in sigma (median absolute deviation as Gaussian "
              "sigma) above the median dark level", minimum=0.0),
        Param("model", bool, False, "fit a smooth MODEL_DARK (not implemented in musered: true is refused)"),
        MERGE_PARAM,
    ),  # fmt: skip
    run=run,
    group="sequence",
    step="dark",
    by_default=False,
    min_inputs=3,
    check=check,
    description="Combine raw darks into a master dark (count per normalize seconds) and flag hot pixels.",
)
