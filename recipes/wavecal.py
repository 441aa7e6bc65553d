"""muse_wavecal: wavelength solution per slice from arc exposures (recipes.md §3.4).

The recipe reads as its steps:

1. LINE_CATALOG (``VERSION = 3``; ``lambda``, ``flux``, ``ion``, ``quality``) and the lamp
   of every ARC from ``ESO INS LAMPi NAME/ST`` and ``ESO INS SHUTi ST`` (lamp on, shutter
   open). An unknown lamp, a frame with no or several arc lamps, or a lamp without
   catalogue lines is an error before any pixel is read (the DRS 2.8.7 spins instead);
2. per IFU and lamp (``lampwise=true``): overscan correction, trim, MASTER_BIAS, adu →
   count, variance RON² + Poisson, combine (default sigclip); optional MASTER_DARK and
   MASTER_FLAT; flagged pixels get zero weight;
3. per slice of the TRACE_TABLE: detect, identify, centre and fit
   (:func:`recipes.wavesolution.calibrate_slice`: ``sigma``, ``dres``, ``tolerance``,
   ``xorder``, ``linesigma``, ``yorder``, ``fitsigma``, ``fitweighting``);
4. write WAVECAL_TABLE (one ``CHANnn`` table per IFU, 48 rows ``SliceNo``, ``wlcIJ``,
   ``MSE``; λ(x, y) in Å for absolute 1-based trimmed-CCD x, y) with the QC WAVECAL
   keywords in each table header; with ``residuals=true`` WAVECAL_RESIDUALS, with
   ``saveimages=true`` one ARC_RED_LAMP file per lamp, with ``wavemap=true`` WAVE_MAP.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .base import Calib, Param, Product, Recipe, RecipeError
from .dark import bias_reference, check_bias_overscan
from .flat import read_trace, subtract_dark
from .io import (
    CcdImage,
    ProductWriter,
    chan_name,
    read_badpix_table,
    read_image_product,
    read_primary_header,
)
from .kernels.overscan import SATURATION_LIMIT
from .preprocess import (
    COMBINE_PARAMS,
    MERGE_PARAM,
    NIFU_PARAM,
    OVERSCAN_PARAMS,
    OverscanSpec,
    badpix_mask,
    check_compatible,
    check_modes,
    combine_frames,
    combine_options,
    load_raw_ccd,
    optional_calib,
    prepare,
    raw_inputs,
    select_ifus,
)
from .provenance import add_qc, product_header
from .registry import register
from .tracing import Trace, slice_mask
from .wavesolution import LAMP_IONS, LineCatalog, SliceSolution, WaveParams, calibrate_slice, line_fwhm_angstrom

#: Calibration-unit lamp names in ``ESO INS LAMPi NAME`` and the DRS lamp each stands for,
#: as the DRS 2.8.7 binary names them (CU-LAMP3 and CU-LAMP6 are two Ne lamps); its
#: wavecal run on simulated arcs confirmed Ne, Xe and HgCd on LAMP3/4/5 (docs/simulator.md).
#: The DRS lamp names themselves are accepted too.
LAMP_NAMES = {"CU-LAMP3": "Ne", "CU-LAMP4": "Xe", "CU-LAMP5": "HgCd", "CU-LAMP6": "Ne"}
#: Continuum lamps (lamp flats); ignored when looking for the arc lamp.
CONTINUUM_LAMPS = ("CU-LAMP1", "CU-LAMP2")


# --------------------------------------------------------------------------------------
# Inputs


def read_line_catalog(path: Path) -> LineCatalog:
    """LINE_CATALOG rows (RecipeError naming the file when it is not a VERSION 3 catalogue)."""
    path = Path(path)
    try:
        with fits.open(path) as hdul:
            version = hdul[0].header.get("VERSION")
            tables = [h for h in hdul[1:] if isinstance(h, fits.BinTableHDU)]
            if not tables:
                raise RecipeError(f"{path}: LINE_CATALOG has no binary table")
            data = tables[0].data
            names = [n.lower() for n in (data.names if data is not None else [])]
            missing = [c for c in ("lambda", "flux", "ion", "quality") if c not in names]
            if missing:
                raise RecipeError(f"{path}: LINE_CATALOG lacks column(s) {', '.join(missing)}")
            n = 0 if data is None else len(data)
            col = {c.lower(): c for c in data.names} if data is not None else {}
            lam = np.asarray(data[col["lambda"]], dtype=np.float64) if n else np.zeros(0)
            flux = np.asarray(data[col["flux"]], dtype=np.float64) if n else np.zeros(0)
            ion = np.array([str(i).strip() for i in data[col["ion"]]]) if n else np.zeros(0, dtype=str)
            quality = np.asarray(data[col["quality"]], dtype=np.int64) if n else np.zeros(0, dtype=np.int64)
    except (OSError, ValueError, TypeError) as exc:
        raise RecipeError(f"{path}: cannot read LINE_CATALOG ({str(exc).splitlines()[0]})") from None
    if version is None or int(version) != 3:
        raise RecipeError(f"{path}: LINE_CATALOG VERSION is {version!r}, the DRS format needs VERSION = 3")
    if n == 0:
        raise RecipeError(f"{path}: LINE_CATALOG is empty")
    if np.any(np.diff(lam) < 0):
        order = np.argsort(lam, kind="stable")
        lam, flux, ion, quality = lam[order], flux[order], ion[order], quality[order]
    return LineCatalog(lam, flux, ion, quality)


def arc_lamp(path: Path, header: fits.Header) -> str:
    """The DRS lamp name (Ne, Xe, HgCd) of one arc exposure from its INS LAMP/SHUT keys."""
    lit = []
    i = 1
    while f"ESO INS LAMP{i} NAME" in header or i <= int(header.get("ESO INS LAMPNUM", 0) or 0):
        name = str(header.get(f"ESO INS LAMP{i} NAME", "")).strip()
        on = bool(header.get(f"ESO INS LAMP{i} ST", False))
        shutter = bool(header.get(f"ESO INS SHUT{i} ST", on))
        if on and shutter and name and name not in CONTINUUM_LAMPS:
            lit.append(name)
        i += 1
    if not lit:
        raise RecipeError(f"{path}: no arc lamp is on with its shutter open (ESO INS LAMPi ST / SHUTi ST)")
    lamps = []
    for name in lit:
        lamp = LAMP_NAMES.get(name, name if name in LAMP_IONS else None)
        if lamp is None:
            raise RecipeError(
                f"{path}: unknown arc lamp {name!r} (known: {', '.join(sorted(LAMP_NAMES))}, {', '.join(LAMP_IONS)})"
            )
        lamps.append(lamp)
    if len(set(lamps)) > 1:
        raise RecipeError(
            f"{path}: several arc lamps are on ({', '.join(lit)}); muse_wavecal needs one lamp per exposure"
        )
    return lamps[0]


def wave_params(params: Mapping) -> WaveParams:
    """The algorithm parameters; ``linesigma``/``fitsigma`` < 0 mean the DRS defaults."""
    linesigma = float(params["linesigma"])
    fitsigma = float(params["fitsigma"])
    return WaveParams(
        sigma=float(params["sigma"]),
        dres=float(params["dres"]),
        tolerance=float(params["tolerance"]),
        xorder=int(params["xorder"]),
        yorder=int(params["yorder"]),
        linesigma=linesigma if linesigma > 0 else 2.5,
        fitsigma=fitsigma if fitsigma > 0 else 3.0,
        fitweighting=str(params["fitweighting"]),
    )


def merged_catalog(catalogs: Mapping[str, LineCatalog]) -> LineCatalog:
    """All lamps' lines in one catalogue (``lampwise=false``), sorted by λ."""
    parts = list(catalogs.values())
    lam = np.concatenate([c.lam for c in parts])
    order = np.argsort(lam, kind="stable")
    return LineCatalog(
        lam[order],
        np.concatenate([c.flux for c in parts])[order],
        np.concatenate([c.ion for c in parts])[order],
        np.concatenate([c.quality for c in parts])[order],
    )


# --------------------------------------------------------------------------------------
# Per IFU


def reduce_arcs(
    groups: Mapping[str, list[tuple[Path, fits.Header]]],
    ifu: int,
    params: Mapping,
    bias_path: Path,
    dark_path: Path | None,
    flat_path: Path | None,
    badpix: Path | None,
) -> tuple[dict[str, CcdImage], list[tuple[str, object, str]]]:
    """Combined arc image (count) per lamp group of one IFU, and the saturation QC."""
    spec = OverscanSpec.from_params(params)
    flat = read_image_product(flat_path, ifu) if flat_path is not None else None
    images: dict[str, CcdImage] = {}
    qc: list[tuple[str, object, str]] = []
    nsat_total = 0
    index = 0
    bias = read_image_product(bias_path, ifu)
    for lamp_no, (lamp, members) in enumerate(groups.items(), start=1):
        ccds = [load_raw_ccd(p, ifu, h) for p, h in members]
        check_compatible(ccds)
        quadrants = ccds[0].quadrants
        reference = bias_reference(bias, quadrants, bias_path, spec)
        static_dq = badpix_mask(quadrants, *read_badpix_table(badpix, ifu)) if badpix is not None else None
        nsat_lamp = 0
        for c in ccds:
            index += 1
            nsat = int(sum((c.image[q.data] > SATURATION_LIMIT).sum() for q in quadrants))
            qc.append((f"ESO QC WAVECAL INPUT{index} NSATURATED", nsat, "saturated pixels"))
            nsat_lamp += nsat
        preps = [prepare(c, spec, "count", reference=reference, reference_name=bias_path.name) for c in ccds]
        image = combine_frames(preps, bias=bias, static_dq=static_dq, **combine_options(params))
        del preps, ccds
        if dark_path is not None:
            subtract_dark(image, dark_path, ifu, float(members[0][1].get("EXPTIME", 0.0)))
        if flat is not None:
            if flat.data.shape != image.data.shape:
                raise RecipeError(f"{flat_path}: MASTER_FLAT shape differs from the arcs")
            good = flat.data > 0
            image.data = np.where(good, image.data / np.where(good, flat.data, 1), 0).astype(np.float32)
            image.stat = np.where(good, image.stat / np.where(good, flat.data, 1) ** 2, 0).astype(np.float32)
            image.dq |= np.where(good, flat.dq, 1 << 14).astype(np.int32)
        qc.append((f"ESO QC WAVECAL NSATURATED LAMP{lamp_no}", nsat_lamp, f"saturated, {lamp}"))
        nsat_total += nsat_lamp
        images[lamp] = image
    qc.append(("ESO QC WAVECAL NSATURATED", nsat_total, "saturated pixels"))
    return images, qc


def fit_inputs(image: CcdImage) -> tuple[np.ndarray, np.ndarray]:
    """(data, variance) for the line fits: flagged pixels get infinite variance (no weight)."""
    bad = (image.dq != 0) | ~np.isfinite(image.data) | ~(image.stat > 0)
    data = np.where(bad, 0.0, image.data).astype(np.float64)
    var = np.where(bad, np.inf, image.stat).astype(np.float64)
    return data, var


def slice_qc(
    sol: SliceSolution, trace: Trace, ny: int, lamp_numbers: Mapping[str, int]
) -> list[tuple[str, object, str]]:
    """QC WAVECAL SLICEj keywords of one slice (recipes.md §3.4)."""
    j = sol.slice_no
    k = j - 1
    m = sol.measurements
    kept = sol.kept
    peak = m.flux / (np.sqrt(2 * np.pi) * m.sigma)
    fwhm = line_fwhm_angstrom(sol)
    p = f"ESO QC WAVECAL SLICE{j} "
    qc: list[tuple[str, object, str]] = [
        (p + "LINES NDET", sol.ndet, ""),
        (p + "LINES NID", sol.nid, ""),
    ]
    for stat, fn in (("MEAN", np.mean), ("STDEV", np.std), ("MIN", np.min), ("MAX", np.max)):
        qc.append((p + f"LINES PEAK {stat}", float(fn(peak[kept])), ""))
    for lamp, number in lamp_numbers.items():
        sel = kept & (m.lamp == lamp)
        if sel.any():
            for stat, fn in (("MEAN", np.mean), ("STDEV", np.std), ("MAX", np.max)):
                qc.append((p + f"LAMP{number} LINES PEAK {stat}", float(fn(peak[sel])), ""))
    for stat, fn in (("MEAN", np.mean), ("STDEV", np.std), ("MIN", np.min), ("MAX", np.max)):
        qc.append((p + f"LINES FWHM {stat}", float(fn(fwhm[kept])), ""))
    qc.append((p + "RESOL", float(np.mean(m.lam[kept] / fwhm[kept])), ""))
    qc.append((p + "FIT NLINES", sol.nfit_lines, ""))
    qc.append((p + "FIT RMS", float(sol.rms), ""))
    for label, y in (("BOTTOM", 1.0), ("TOP", float(ny))):
        xl = np.polynomial.polynomial.polyval(y, trace.left[k])
        xr = np.polynomial.polynomial.polyval(y, trace.right[k])
        qc.append((p + f"DWLEN {label}", float(sol.wavelength(xr, y) - sol.wavelength(xl, y)), ""))
    ypos = 0.5 * (ny + 1)
    qc.append((p + "WLPOS", ypos, ""))
    xc = np.polynomial.polynomial.polyval(ypos, trace.centre[k])
    qc.append((p + "WLEN", float(sol.wavelength(xc, ypos)), ""))
    return qc


def wavecal_table(solutions: list[SliceSolution], xorder: int, yorder: int) -> Table:
    """WAVECAL_TABLE rows: SliceNo, wlcIJ (I ≤ xorder, J ≤ yorder), MSE."""
    table = Table()
    table["SliceNo"] = np.array([s.slice_no for s in solutions], dtype=np.int32)
    for i in range(xorder + 1):
        for j in range(yorder + 1):
            table[f"wlc{i}{j}"] = np.array([s.wlc[i, j] for s in solutions], dtype=np.float64)
            table[f"wlc{i}{j}"].unit = "Angstrom"
    table["MSE"] = np.array([s.mse for s in solutions], dtype=np.float64)
    return table


def residuals_table(solutions: list[SliceSolution]) -> Table:
    """WAVECAL_RESIDUALS rows: one per line position per fit iteration."""
    names = ("slice", "iteration", "x", "y", "lambda", "residual", "rejlimit")
    cols: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for sol in solutions:
        m = sol.measurements
        for iteration, idx, resid, limit in sol.residual_log:
            cols["slice"].append(np.full(idx.size, sol.slice_no, dtype=np.uint8))
            cols["iteration"].append(np.full(idx.size, iteration, dtype=np.int32))
            cols["x"].append(np.rint(m.x[idx]).astype(np.int32))
            cols["y"].append(m.y[idx].astype(np.float32))
            cols["lambda"].append(m.lam[idx].astype(np.float32))
            cols["residual"].append(resid.astype(np.float64))
            cols["rejlimit"].append(np.full(idx.size, limit, dtype=np.float64))
    return Table({k: np.concatenate(v) for k, v in cols.items()})


def wave_map(solutions: list[SliceSolution], trace: Trace, shape: tuple[int, int]) -> np.ndarray:
    """λ (Å) of every pixel inside a slice, 0 outside."""
    mask = slice_mask(trace, shape)
    out = np.zeros(shape, dtype=np.float32)
    y1, x1 = np.mgrid[1 : shape[0] + 1, 1 : shape[1] + 1].astype(np.float64)
    for sol in solutions:
        sel = mask == sol.slice_no
        out[sel] = sol.wavelength(x1[sel], y1[sel])
    return out


def wavecal_ifu(
    groups: Mapping[str, list[tuple[Path, fits.Header]]],
    catalogs: Mapping[str, LineCatalog],
    ifu: int,
    params: Mapping,
    calibs: Mapping[str, Path | None],
) -> tuple[list[SliceSolution], list[tuple[str, object, str]], dict[str, CcdImage], Trace]:
    """Slice solutions, QC and the reduced arc images of one IFU."""
    images, qc = reduce_arcs(
        groups, ifu, params, calibs["MASTER_BIAS"], calibs["MASTER_DARK"], calibs["MASTER_FLAT"], calibs["BADPIX_TABLE"]
    )  # fmt: skip
    trace = read_trace(calibs["TRACE_TABLE"], ifu)
    arcs = {lamp: fit_inputs(img) for lamp, img in images.items()}
    shape = next(iter(images.values())).data.shape
    wp = wave_params(params)
    lamp_numbers = {lamp: n for n, lamp in enumerate(groups, start=1)}
    solutions = []
    for k in range(trace.nslice):
        try:
            sol = calibrate_slice(arcs, catalogs, trace, k, wp)
        except RecipeError as exc:
            first = next(iter(groups.values()))[0][0]
            raise RecipeError(f"{first.name}[{chan_name(ifu)}]: {exc}") from None
        solutions.append(sol)
        qc += slice_qc(sol, trace, shape[0], lamp_numbers)
    return solutions, qc, images, trace


def run(frames: Mapping[str, list[Path]], params: Mapping, outdir: Path) -> list[Product]:
    """Build WAVECAL_TABLE.fits (and the optional products) in ``outdir`` from ``frames["ARC"]``."""
    paths = raw_inputs(frames, "ARC", RECIPE.name, RECIPE.min_inputs)
    calibs: dict[str, Path | None] = {
        tag: optional_calib(frames, tag)
        for tag in ("MASTER_BIAS", "MASTER_DARK", "MASTER_FLAT", "TRACE_TABLE", "LINE_CATALOG", "BADPIX_TABLE")
    }
    for tag in ("MASTER_BIAS", "TRACE_TABLE", "LINE_CATALOG"):
        if calibs[tag] is None:
            raise RecipeError(f"muse_wavecal needs a {tag} calibration, none was given")
    if params.get("resample"):
        raise RecipeError(
            "muse_wavecal: resample=true (ARC_RESAMPLED) is not implemented in musered; use resample=false"
        )
    OverscanSpec.from_params(params)
    wave_params(params)
    check_bias_overscan(calibs["MASTER_BIAS"], params)
    primaries = [read_primary_header(p) for p in paths]
    check_modes(paths, primaries)
    # Lamps and catalogue first: fail at once on an unknown lamp or an empty catalogue.
    catalog = read_line_catalog(calibs["LINE_CATALOG"])
    groups: dict[str, list[tuple[Path, fits.Header]]] = {}
    for path, header in zip(paths, primaries):
        groups.setdefault(arc_lamp(path, header), []).append((path, header))
    catalogs = {lamp: catalog.for_lamp(lamp, str(calibs["LINE_CATALOG"])) for lamp in groups}
    if not params.get("lampwise", True):
        groups = {"+".join(groups): [m for members in groups.values() for m in members]}
        catalogs = {next(iter(groups)): merged_catalog(catalogs)}
    ifus = select_ifus(paths, int(params.get("nifu", 0)))
    raws = [(p, "ARC") for p in paths]
    cal_list = [(p, tag) for tag, p in calibs.items() if p is not None]
    outdir = Path(outdir)
    outputs = {"WAVECAL_TABLE": outdir / "WAVECAL_TABLE.fits"}
    if params.get("residuals"):
        outputs["WAVECAL_RESIDUALS"] = outdir / "WAVECAL_RESIDUALS.fits"
    if params.get("wavemap"):
        outputs["WAVE_MAP"] = outdir / "WAVE_MAP.fits"
    lamp_files = {lamp: outdir / f"ARC_RED_LAMP-{lamp}.fits" for lamp in groups} if params.get("saveimages") else {}
    written = list(outputs.values()) + list(lamp_files.values())
    qc_table: dict[str, float | int | str] = {}
    try:
        writers = {
            tag: ProductWriter(path, product_header(tag, RECIPE.name, params, raws, cal_list, primaries[0]))
            for tag, path in outputs.items()
        }
        lamp_writers = {}
        for lamp, path in lamp_files.items():
            members = groups[lamp]
            lamp_raws = [(p, "ARC") for p, _ in members]
            header = product_header("ARC_RED_LAMP", RECIPE.name, params, lamp_raws, cal_list, members[0][1])
            lamp_writers[lamp] = ProductWriter(path, header)
        for ifu in ifus:
            solutions, qc, images, trace = wavecal_ifu(groups, catalogs, ifu, params, calibs)
            header = fits.Header()
            add_qc(header, qc)
            table = wavecal_table(solutions, int(params["xorder"]), int(params["yorder"]))
            writers["WAVECAL_TABLE"].add_table(ifu, table, header)
            for key, value, _ in qc:
                qc_table[f"{chan_name(ifu)} {key[4:]}"] = value
            if "WAVECAL_RESIDUALS" in writers:
                writers["WAVECAL_RESIDUALS"].add_table(ifu, residuals_table(solutions))
            if "WAVE_MAP" in writers:
                shape = next(iter(images.values())).data.shape
                lam = wave_map(solutions, trace, shape)
                writers["WAVE_MAP"].add_image(
                    ifu, CcdImage(lam, np.zeros(shape, np.int32), np.zeros(shape, np.float32), fits.Header()),
                    "Angstrom", "Angstrom**2",
                )  # fmt: skip
            for lamp, writer in lamp_writers.items():
                writer.add_image(ifu, images[lamp], "count", "(count)**2")
            del images
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)  # nothing half-written stays behind
        raise
    products = [Product(outputs["WAVECAL_TABLE"], "WAVECAL_TABLE", tuple(ifus), qc_table)]
    for tag in ("WAVECAL_RESIDUALS", "WAVE_MAP"):
        if tag in outputs:
            products.append(Product(outputs[tag], tag, tuple(ifus), {}))
    products += [Product(path, "ARC_RED_LAMP", tuple(ifus), {}) for path in lamp_files.values()]
    return products


RECIPE = register(
    Recipe(
        name="muse_wavecal",
        inputs=("ARC",),
        calibs=(
            Calib("MASTER_BIAS"),
            Calib("TRACE_TABLE"),
            Calib("LINE_CATALOG"),
            Calib("MASTER_DARK", required=False, default_excluded=True),
            Calib("MASTER_FLAT", required=False, default_excluded=True),
            Calib("BADPIX_TABLE", required=False),
        ),
        outputs=("WAVECAL_TABLE", "WAVECAL_RESIDUALS", "ARC_RED_LAMP", "WAVE_MAP"),
        params=(
            NIFU_PARAM,
            *OVERSCAN_PARAMS,
            # The DRS exposes only the method here (nlow/nhigh/nkeep/lsigma/hsigma keep
            # their defaults, as in its own lampwise combination).
            COMBINE_PARAMS[0],
            Param("lampwise", bool, True, "identify and measure the lines on a separate combined image per lamp"),
            Param("sigma", float, 1.0, "detection threshold (sigma above the median) in the S/N spectrum of the "
                  "slice centre", minimum=0.0),
            Param("dres", float, 0.05, "allowed relative deviation from the nominal 1.25 A/pix dispersion in "
                  "pattern matching", minimum=0.0, maximum=0.5),
            Param("tolerance", float, 0.1, "tolerance of the pattern matching (difference of line-spacing ratios)",
                  minimum=0.0, maximum=1.0),
            Param("xorder", int, 2, "polynomial order across the slice (x): per-line curvature fits and final "
                  "2D fit", minimum=0, maximum=6),
            Param("yorder", int, 6, "polynomial order along the dispersion (y) in the final 2D fit",
                  minimum=1, maximum=10),
            Param("linesigma", float, -1.0, "rejection sigma of the per-line x-polynomial fits; < 0: 2.5"),
            Param("residuals", bool, False, "save the WAVECAL_RESIDUALS table (all line positions and residuals)"),
            Param("fitsigma", float, -1.0, "rejection sigma of the final 2D fit; < 0: 3.0"),
            Param("fitweighting", str, "cerrscatter", "weights of the final 2D fit: uniform, cerr (centring "
                  "error), scatter (per-line scatter) or cerrscatter (both)",
                  choices=("uniform", "cerr", "scatter", "cerrscatter")),
            Param("saveimages", bool, False, "save the reduced combined arc image of each lamp (ARC_RED_LAMP)"),
            Param("resample", bool, False, "save the arc resampled to 2D (not implemented in musered: true is "
                  "refused)"),
            Param("wavemap", bool, False, "save a wavelength map of the CCD (WAVE_MAP)"),
            MERGE_PARAM,
        ),  # fmt: skip
        run=run,
        min_inputs=1,
        description="Wavelength solution λ(x, y) per slice from arc exposures of the Ne, Xe and HgCd lamps.",
        summary_qc=(
            ("fit RMS", "CHAN?? QC WAVECAL SLICE* FIT RMS"),
            ("lines", "CHAN?? QC WAVECAL SLICE* LINES NID"),
            ("FWHM", "CHAN?? QC WAVECAL SLICE* LINES FWHM MEAN"),
        ),
    )
)
