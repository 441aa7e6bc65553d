"""muse_lsf: the slice- and wavelength-dependent line spread function (recipes.md §3.5).

Per IFU, the recipe reads as its steps:

1. group the ARC (and ARC_LSF) exposures by lamp (:func:`recipes.algorithms.arcs.arc_lamp`: one
   known arc lamp lit with its shutter open, else an error naming the file) and check
   they share mode and detector setup; every lamp must have catalogue lines;
2. per lamp, the basic processing and ``combine`` of muse_wavecal
   (:func:`recipes.algorithms.arcs.reduce_arcs`: overscan with the MASTER_BIAS levels as
   reference, trim, bias, adu → count, variance RON² + Poisson, BADPIX_TABLE, optional
   MASTER_DARK and MASTER_FLAT);
3. per slice (TRACE_TABLE edges, WAVECAL_TABLE λ(x, y)) and lamp, the bright isolated
   catalogue lines of quality ≥ ``line_quality``
   (:func:`recipes.algorithms.lsffit.select_lines`), their pixels within ±``lsf_range`` Å
   in every column, as offsets from the line and normalised by the line flux of that
   column (:func:`recipes.algorithms.lsffit.collect_slice_samples`);
4. the profile of the slice on ``lsf_size`` offsets × ``lambda_size`` wavelength nodes
   by local regression (window ±``lsf_regression_window`` Å) and a low-order polynomial
   in λ (:func:`recipes.algorithms.lsffit.fit_slice_profile`);
5. QC ``ESO QC LSF SLICEj FWHM MEAN/STDEV/MIN/MAX`` (Å, over the nodes inside the range
   of the lines used) and the cube ``CHANnn.LSF_PROFILE`` in LSF_PROFILE.fits.

Product layout (merged, recipes.md §4.4): primary HDU with provenance, then per IFU one
float32 image extension ``CHANnn.LSF_PROFILE`` of NAXIS1 = ``lsf_size`` (Δλ from
−lsf_range to +lsf_range), NAXIS2 = ``lambda_size`` (line wavelength, 4650–9300 Å) and
NAXIS3 = 48 (CCD slice), values in 1/Å, with the WCS the DRS 2.8.7 writes (checked on
its product): ``WCSAXES = 2``, ``CTYPE1 = 'PARAM'``, ``CTYPE2 = 'AWAV'``, CRPIX/CRVAL/CD
in Angstrom. The DRS's single-IFU file (``LSF_PROFILE-nn.fits``, extension
``LSF_PROFILE``) holds the same cube. Read it with
:func:`recipes.algorithms.lsfmodel.read_lsf_profile` and evaluate it with
:func:`recipes.algorithms.lsfmodel.evaluate_lsf`. The QC keywords sit in each extension
header and are returned as ``"CHANnn QC LSF ..."``.

Only ``method=interpolate`` is implemented; ``hermit`` and ``save_subtracted=true`` are
refused with a clear error when the parameters are validated (``check``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.base import Param, Product, Recipe, RecipeError
from recipes.calibs import BADPIX_TABLE, LINE_CATALOG, MASTER_BIAS, MASTER_DARK, MASTER_FLAT, TRACE_TABLE, WAVECAL_TABLE
from recipes.io import chan_name, read_primary_header, read_table_product
from recipes.provenance import add_qc, product_header
from recipes.algorithms.arcs import ArcGroups, group_by_lamp, reduce_arcs
from recipes.algorithms.calibtables import read_wavecal_table, trace_from_table
from recipes.algorithms.ccdinputs import (
    MERGE_PARAM,
    NIFU_PARAM,
    OVERSCAN_PARAMS,
    check_modes,
    optional_calib,
    raw_inputs,
    select_ifus,
)
from recipes.algorithms.instrument import detector_geometry, trimmed_shape
from recipes.algorithms.linecatalog import LineCatalog, lamp_ions, read_line_catalog
from recipes.algorithms.lsffit import (
    LineSamples,
    collect_slice_samples,
    fit_slice_profile,
    ifu_wavelength_range,
    select_lines,
    slice_fwhm_qc,
)
from recipes.algorithms.lsfmodel import ProfileGrid, cube_hdu
from recipes.algorithms.overscan import check_bias_overscan, check_overscan_params


def trimmed_rows(path: Path, ifu: int) -> int:
    """Rows of the trimmed CCD of ``ifu`` in a raw file, from its ``ESO DET OUTn`` keys."""
    where = f"{path}[{chan_name(ifu)}]"
    try:
        header = fits.getheader(path, chan_name(ifu))
    except (KeyError, IndexError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RecipeError(f"{where}: cannot read the extension header ({reason})") from None
    return trimmed_shape(detector_geometry(header, where=where))[0]


def lsf_ifu(
    groups: ArcGroups,
    ifu: int,
    params: Mapping,
    calibs: Mapping[str, Path | None],
    catalog: LineCatalog,
) -> tuple[np.ndarray, ProfileGrid, list[tuple[str, object, str]]]:
    """The LSF cube ``[slice, node, offset]`` of one IFU, its grid and its QC."""
    where = f"{chan_name(ifu)}"
    table, _ = read_table_product(calibs["TRACE_TABLE"], ifu)
    trace = trace_from_table(table, f"{calibs['TRACE_TABLE']}[{where}]")
    wlcs = read_wavecal_table(calibs["WAVECAL_TABLE"], ifu)
    lsf_range = params["lsf_range"]
    line_quality = params["line_quality"]
    first = next(iter(groups.values()))[0][0]
    ny = trimmed_rows(first, ifu)
    if trace.nslice == 0:
        raise RecipeError(f"{calibs['TRACE_TABLE']}[{where}]: TRACE_TABLE has no slices")
    missing = [s + 1 for s in range(trace.nslice) if s + 1 not in wlcs]
    if missing:
        raise RecipeError(f"{calibs['WAVECAL_TABLE']}[{where}]: no wavelength solution for slice {missing[0]}")
    lam_min, lam_max = ifu_wavelength_range(trace, wlcs, ny)
    grid = ProfileGrid.make(lsf_range, params["lsf_size"], params["lambda_size"])
    lines = {lamp: select_lines(catalog, lamp_ions(lamp), line_quality, lsf_range) for lamp in groups}
    usable = {lamp: lam[(lam > lam_min + lsf_range) & (lam < lam_max - lsf_range)] for lamp, lam in lines.items()}
    if not any(lam.size for lam in usable.values()):
        raise RecipeError(
            f"{calibs['LINE_CATALOG']}: no isolated line of quality >= {line_quality} of lamp(s) "
            f"{', '.join(groups)} within {lam_min:.0f}-{lam_max:.0f} A (IFU {ifu})"
        )
    # the pixels are reduced only once the cheap checks have passed
    images, _ = reduce_arcs(groups, ifu, params, calibs["MASTER_BIAS"], calibs.get("MASTER_DARK"),
                            calibs.get("MASTER_FLAT"), calibs.get("BADPIX_TABLE"))  # fmt: skip
    cube = np.zeros((trace.nslice, grid.lam.size, grid.dlam.size))
    qc: list[tuple[str, object, str]] = []
    window = params["lsf_regression_window"]
    for s in range(trace.nslice):
        parts = []
        try:
            for lamp, image in images.items():
                if usable[lamp].size:
                    parts.append(collect_slice_samples(image.data, image.stat, image.dq, trace, wlcs[s + 1], s,
                                                       usable[lamp], lsf_range))  # fmt: skip
        except RecipeError as exc:
            raise RecipeError(f"{calibs['WAVECAL_TABLE']}[{where}]: {exc}") from None
        samples = LineSamples.concatenate(parts)
        if samples.dlam.size == 0:
            raise RecipeError(
                f"{first.name}[{where}] slice {s + 1}: no usable arc-line pixels "
                "(lines too faint, flagged or off the slice); "
                "check the ARC frames, TRACE_TABLE and WAVECAL_TABLE"
            )
        try:
            profile = fit_slice_profile(samples, grid, window)
        except ValueError as exc:
            raise RecipeError(f"{first.name}[{where}] slice {s + 1}: LSF fit failed ({exc})") from None
        cube[s] = profile.image
        qc += slice_fwhm_qc(profile, grid, s + 1)
    return cube, grid, qc


def run(frames: Mapping[str, list[Path]], params: Mapping, outdir: Path) -> list[Product]:
    """Build LSF_PROFILE.fits in ``outdir`` from ``frames["ARC"]`` (and ``ARC_LSF``)."""
    arcs = [(Path(p), "ARC") for p in frames.get("ARC", []) or []]
    arcs += [(Path(p), "ARC_LSF") for p in frames.get("ARC_LSF", []) or []]
    paths = raw_inputs({"ARC": [p for p, _ in arcs]}, "ARC", RECIPE.name, RECIPE.min_inputs)
    calibs: dict[str, Path | None] = {}
    for tag in ("MASTER_BIAS", "TRACE_TABLE", "WAVECAL_TABLE", "LINE_CATALOG"):
        calibs[tag] = optional_calib(frames, tag)
        if calibs[tag] is None:
            raise RecipeError(f"muse_lsf needs a {tag} calibration, none was given")
    for tag in ("MASTER_DARK", "MASTER_FLAT", "BADPIX_TABLE"):
        calibs[tag] = optional_calib(frames, tag)
    check_bias_overscan(calibs["MASTER_BIAS"], params)
    catalog = read_line_catalog(calibs["LINE_CATALOG"])
    primaries = [read_primary_header(p) for p in paths]
    check_modes(paths, primaries)
    groups = group_by_lamp(paths, primaries)
    for lamp in groups:
        ions = lamp_ions(lamp)
        if not select_lines(catalog, ions, 0, 0.0).size:
            raise RecipeError(f"{calibs['LINE_CATALOG']}: no lines of lamp {lamp} (ions {', '.join(ions)})")
    ifus = select_ifus(paths, params["nifu"])
    used_calibs = [(p, tag) for tag, p in calibs.items() if p is not None]
    header = product_header("LSF_PROFILE", RECIPE.name, params, arcs, used_calibs, template=primaries[0])
    out = Path(outdir) / "LSF_PROFILE.fits"
    qc: dict[str, float | int | str] = {}
    fits.PrimaryHDU(header=header).writeto(out, overwrite=True, output_verify="silentfix")
    for ifu in ifus:
        cube, grid, ifu_qc = lsf_ifu(groups, ifu, params, calibs, catalog)
        extra = fits.Header()
        add_qc(extra, ifu_qc)
        hdu = cube_hdu(ifu, cube, grid, extra)
        fits.append(out, hdu.data, header=hdu.header, output_verify="silentfix")
        for key, value, _ in ifu_qc:
            qc[f"{chan_name(ifu)} {key[4:]}"] = value
    return [Product(out, "LSF_PROFILE", tuple(ifus), qc)]


def check(params: Mapping) -> None:
    """Rules beyond single-parameter bounds: a well-formed ``overscan``, a regression
    window smaller than the LSF range; ``method=hermit`` and ``save_subtracted=true`` are
    refused, not implemented in musered."""
    check_overscan_params(params)
    if params["method"] != "interpolate":
        raise ValueError("parameter method=hermit is not implemented in musered; use method=interpolate")
    if params["save_subtracted"]:
        raise ValueError("parameter save_subtracted=true (PIXTABLE_SUBTRACTED) is not implemented in musered")
    if params["lsf_regression_window"] >= params["lsf_range"]:
        raise ValueError(f"parameter lsf_regression_window ({params['lsf_regression_window']}) must be smaller "
                         f"than lsf_range ({params['lsf_range']})")  # fmt: skip


RECIPE = Recipe(
    name="muse_lsf",
    inputs=("ARC", "ARC_LSF"),
    calibs=(
        MASTER_BIAS,
        TRACE_TABLE,
        WAVECAL_TABLE,
        LINE_CATALOG,
        MASTER_DARK,
        MASTER_FLAT.optional(),
        BADPIX_TABLE,
    ),
    outputs=("LSF_PROFILE",),
    params=(
        NIFU_PARAM,
        *OVERSCAN_PARAMS,
        Param("save_subtracted", bool, False, "save the arc pixel table minus the LSF model "
              "(PIXTABLE_SUBTRACTED; not implemented in musered, must stay false)"),
        Param("line_quality", int, 3, "minimal quality flag in the line catalogue for selection", minimum=0),
        Param("lsf_range", float, 7.5, "wavelength window (half size, Angstrom) around each line to estimate "
              "the LSF", minimum=0.5),
        Param("lsf_size", int, 150, "image size in LSF (wavelength offset) direction", minimum=5),
        Param("lambda_size", int, 30, "image size in line wavelength direction", minimum=1),
        Param("lsf_regression_window", float, 0.7, "size of the regression window in LSF direction "
              "(Angstrom; musered fits the points within +- this offset of each sample)", minimum=0.05),
        MERGE_PARAM,
        Param("combine", str, "sigclip", "type of lampwise image combination to use",
              choices=("average", "median", "minmax", "sigclip")),
        Param("method", str, "interpolate", "LSF generation method: interpolate (LSF cube); hermit "
              "(Gauss-Hermite parameter table; not implemented in musered)", choices=("interpolate", "hermit")),
    ),  # fmt: skip
    run=run,
    group="sequence",
    step="lsf",
    min_inputs=1,
    check=check,
    description="Measure the slice- and wavelength-dependent line spread function from arc exposures.",
    summary_qc=(("FWHM", "CHAN?? QC LSF SLICE* FWHM MEAN"),),
)
