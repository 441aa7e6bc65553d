"""muse_bias: combine raw biases into a MASTER_BIAS (recipes.md §3.1).

Per IFU, the recipe reads as its steps:

1. read the N raw biases once (uint16) and check they share mode and detector setup;
2. raw quadrant levels (QC BIAS LEVELn) and saturated pixels (QC BIAS INPUTi NSATURATED);
3. overscan statistics and correction (default vpoly), the first input as reference;
4. read noise per port from differences of consecutive biases in random 9×9 windows
   (QC BIAS MASTERn RON/RONERR in count); STAT starts as RON² (adu²);
5. trim and combine (default sigclip) in bounded row blocks → DATA (adu), STAT ≈ RON²/N;
6. bad columns (hot above ``hisigmabadpix``, dark below ``losigmabadpix``) into DQ;
7. QC of the master per port; write ``CHANnn.DATA/DQ/STAT`` into MASTER_BIAS.fits.

With ``overscan=vpoly`` or ``offset`` the DATA hold the residual 2-D bias structure
relative to the overscan (median ≈ 0); with ``none`` the full level. Units: DATA adu,
STAT adu², QC RON count (= e-). QC values are written into each ``CHANnn.DATA`` header
(the merged layout has one set per IFU) and returned as ``"CHANnn QC ..."`` keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

from .base import Calib, Param, Product, Recipe, RecipeError
from .io import (
    CcdImage,
    hkey,
    read_badpix_table,
    read_primary_header,
    write_ifu_images,
)
from .kernels.overscan import SATURATION_LIMIT, grouped_median, histogram_u16
from .preprocess import (
    COMBINE_PARAMS,
    DQ_DARKPIXEL,
    DQ_HOTPIXEL,
    MERGE_PARAM,
    NIFU_PARAM,
    OVERSCAN_PARAMS,
    OverscanResult,
    OverscanSpec,
    RawCcd,
    badpix_mask,
    check_compatible,
    check_modes,
    combine_frames,
    combine_options,
    load_raw_stack,
    optional_calib,
    overscan_correction,
    prepare,
    raw_inputs,
    select_ifus,
)
from .provenance import add_qc, product_header
from .registry import register

#: Half size of the read-noise windows (9×9) and their number per port and pair, as CPL's
#: cpl_flux_get_noise_window defaults.
RON_HALFSIZE = 4
RON_NWINDOWS = 100


def measure_ron(
    ccds: list[RawCcd], overscans: list[OverscanResult], static_dq: np.ndarray | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read noise per port (adu) and its error, from consecutive-pair differences.

    For each pair and port, the standard deviation of the difference (overscan
    corrections removed) is measured in ``RON_NWINDOWS`` random windows of
    (2·RON_HALFSIZE+1)² pixels that avoid flagged or saturated pixels; RON = mean/√2
    over windows, averaged over pairs; the error is the scatter of the window values
    /√2, divided by √(number of pairs). Deterministic for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    quadrants = ccds[0].quadrants
    size = 2 * RON_HALFSIZE + 1
    ron = np.zeros(len(quadrants))
    err = np.zeros(len(quadrants))
    for p, q in enumerate(quadrants):
        (dr, dc), (tr, tc) = q.data, q.trimmed
        hy, hx = min(size, q.ny), min(size, q.nx)
        per_pair = []
        spreads = []
        for a, b in zip(range(len(ccds) - 1), range(1, len(ccds))):
            values = []
            for _ in range(RON_NWINDOWS * 3):
                if len(values) >= RON_NWINDOWS:
                    break
                y = int(rng.integers(0, q.ny - hy + 1))
                x = int(rng.integers(0, q.nx - hx + 1))
                win_a = ccds[a].image[dr.start + y : dr.start + y + hy, dc.start + x : dc.start + x + hx]
                win_b = ccds[b].image[dr.start + y : dr.start + y + hy, dc.start + x : dc.start + x + hx]
                if (win_a > SATURATION_LIMIT).any() or (win_b > SATURATION_LIMIT).any():
                    continue
                window = (slice(tr.start + y, tr.start + y + hy), slice(tc.start + x, tc.start + x + hx))
                if static_dq is not None and static_dq[window].any():
                    continue
                rows = slice(tr.start + y, tr.start + y + hy)
                shift = overscans[a].correction[p, rows] - overscans[b].correction[p, rows]
                diff = win_a.astype(np.float64) - win_b - shift[:, None]
                values.append(diff.std(ddof=1))
            if values:
                per_pair.append(np.mean(values) / np.sqrt(2))
                spreads.append(np.std(values, ddof=1) / np.sqrt(2) if len(values) > 1 else 0.0)
        if not per_pair:
            raise RecipeError(f"{ccds[0].where}: no clean window to measure the read noise of port {q.out}")
        ron[p] = np.mean(per_pair)
        err[p] = np.mean(spreads) / np.sqrt(len(per_pair))
    return ron, err


def flag_bad_columns(master: CcdImage, quadrants, losigma: float, hisigma: float) -> None:
    """Mark hot and dark columns of a master bias in its DQ (HOTPIXEL / DARKPIXEL bits).

    Per port, each column's mean is compared with the running median of its
    neighbours (31 columns, so the smooth 2-D bias structure does not count); a column
    deviating by more than ``hisigma`` (``losigma`` below) times the robust scatter of
    these deviations is a candidate, and in it the pixels that deviate from the column
    trend by more than ``hisigma`` (``losigma``) times the robust pixel σ of the port are
    flagged. Robust σ = 1.4826·MAD.
    """
    from scipy.ndimage import median_filter

    for q in quadrants:
        data = master.data[q.trimmed]
        dq = master.dq[q.trimmed]
        # column means (robust enough: a single hot pixel makes a candidate column, but
        # then only the pixels that deviate themselves are flagged)
        colmean = data.mean(axis=0, dtype=np.float64)
        trend = median_filter(colmean, size=min(31, colmean.size), mode="nearest")
        dev = colmean - trend
        sigma_col = 1.482602218505602 * np.median(np.abs(dev - np.median(dev)))
        step = max(1, data.shape[0] // 256)  # ~256 rows suffice for the pixel scatter
        resid = (data[::step] - trend[None, :]).ravel()
        sigma_pix = 1.482602218505602 * np.median(np.abs(resid - np.median(resid)))
        if sigma_col <= 0 or sigma_pix <= 0:
            continue
        for col in np.flatnonzero(dev > hisigma * sigma_col):
            hot = data[:, col] - trend[col] > hisigma * sigma_pix
            dq[hot, col] |= DQ_HOTPIXEL
        for col in np.flatnonzero(dev < -losigma * sigma_col):
            dark = data[:, col] - trend[col] < -losigma * sigma_pix
            dq[dark, col] |= DQ_DARKPIXEL


def port_statistics(image: CcdImage, q) -> dict[str, float]:
    """MEDIAN/MEAN/STDEV/MIN/MAX and SLOPE X/Y (adu/pix) of one port's unflagged pixels."""
    data = image.data[q.trimmed]
    good = image.dq[q.trimmed] == 0
    values = data[good] if good.any() else data.ravel()
    colmean = np.where(good, data, 0).sum(axis=0) / np.maximum(good.sum(axis=0), 1)
    rowmean = np.where(good, data, 0).sum(axis=1) / np.maximum(good.sum(axis=1), 1)
    slope_x = np.polyfit(np.arange(colmean.size), colmean, 1)[0] if colmean.size > 1 else 0.0
    slope_y = np.polyfit(np.arange(rowmean.size), rowmean, 1)[0] if rowmean.size > 1 else 0.0
    return {
        "MEDIAN": float(np.median(values)),
        "MEAN": float(values.mean(dtype=np.float64)),
        "STDEV": float(values.std(dtype=np.float64)),
        "MIN": float(values.min()),
        "MAX": float(values.max()),
        "SLOPE X": float(slope_x),
        "SLOPE Y": float(slope_y),
    }


def master_bias_ifu(
    paths: list[Path], primaries: list[fits.Header], ifu: int, params: Mapping, badpix: Path | None
) -> CcdImage:
    """The master bias of one IFU, with its QC and DRS keywords in ``header``."""
    spec = OverscanSpec.from_params(params)
    ccds = load_raw_stack(paths, ifu, primaries)
    check_compatible(ccds)
    quadrants = ccds[0].quadrants
    static_dq = badpix_mask(quadrants, *read_badpix_table(badpix, ifu)) if badpix is not None else None
    qc: list[tuple[str, object, str]] = []

    levels = np.array([[grouped_median(histogram_u16(c.image[q.data])) for q in quadrants] for c in ccds])
    for i, c in enumerate(ccds, start=1):
        nsat = int(sum((c.image[q.data] > SATURATION_LIMIT).sum() for q in quadrants))
        qc.append((f"ESO QC BIAS INPUT{i} NSATURATED", nsat, "saturated pixels in raw input"))

    overscans = []
    for i, c in enumerate(ccds):
        reference = (overscans[0].mean, overscans[0].stdev) if overscans else None
        overscans.append(overscan_correction(c, spec, reference, ccds[0].where))
    ron_adu, ronerr_adu = measure_ron(ccds, overscans, static_dq, seed=ifu)

    preps = [prepare(c, spec, "adu", ron_adu=ron_adu, overscan=o) for c, o in zip(ccds, overscans)]
    master = combine_frames(preps, static_dq=static_dq, **combine_options(params))
    flag_bad_columns(master, quadrants, float(params["losigmabadpix"]), float(params["hisigmabadpix"]))

    gains = np.array([q.gain for q in quadrants])
    for p, q in enumerate(quadrants):
        n = q.out
        qc.append((f"ESO QC BIAS LEVEL{n} MEAN", float(levels[:, p].mean()), "[adu] mean raw level"))
        qc.append((f"ESO QC BIAS LEVEL{n} STDEV", float(levels[:, p].std(ddof=1)) if len(ccds) > 1 else 0.0,
                   "[adu] stdev of raw levels"))  # fmt: skip
        qc.append((f"ESO QC BIAS LEVEL{n} MEDIAN", float(np.median(levels[:, p])), "[adu] median raw level"))
        for key, value in port_statistics(master, q).items():
            unit = "adu/pix" if key.startswith("SLOPE") else "adu"
            qc.append((f"ESO QC BIAS MASTER{n} {key}", value, f"[{unit}] master bias"))
        qc.append((f"ESO QC BIAS MASTER{n} RON", float(ron_adu[p] * gains[p]), "[count] read-out noise"))
        qc.append((f"ESO QC BIAS MASTER{n} RONERR", float(ronerr_adu[p] * gains[p]), "[count] RON error"))
    nbad = int(((master.dq & (DQ_HOTPIXEL | DQ_DARKPIXEL)) != 0).sum())
    qc.append(("ESO QC BIAS MASTER NBADPIX", nbad, "bad pixels in master bias"))
    qc.append(("ESO QC BIAS MASTER NSATURATED", int(((master.dq & (1 << 12)) != 0).sum()),
               "saturated pixels in master bias"))  # fmt: skip

    header = master.header
    for p, q in enumerate(quadrants):
        n = q.out
        # the reference level later recipes compare with / shift to (overscan=none/offset)
        header[hkey(f"ESO DRS MUSE OVSC{n} MEAN")] = (float(overscans[0].mean[p]), "[adu] overscan mean")
        header[hkey(f"ESO DRS MUSE OVSC{n} STDEV")] = (float(overscans[0].stdev[p]), "[adu] overscan stdev")
        if spec.method == "vpoly":
            header[hkey(f"ESO DRS MUSE OVSC{n} POLY NCOEFF")] = (int(max(o.ncoeff[p] for o in overscans)), "")
    add_qc(header, qc)
    return master


def run(frames: Mapping[str, list[Path]], params: Mapping, outdir: Path) -> list[Product]:
    """Build MASTER_BIAS.fits in ``outdir`` from ``frames["BIAS"]`` (≥ 3)."""
    paths = raw_inputs(frames, "BIAS", RECIPE.name, RECIPE.min_inputs)
    badpix = optional_calib(frames, "BADPIX_TABLE")
    OverscanSpec.from_params(params)  # reject a malformed overscan before reading any data
    primaries = [read_primary_header(p) for p in paths]
    check_modes(paths, primaries)
    ifus = select_ifus(paths, int(params.get("nifu", 0)))
    header = product_header(
        "MASTER_BIAS", RECIPE.name, params, [(p, "BIAS") for p in paths],
        [(badpix, "BADPIX_TABLE")] if badpix else [], template=primaries[0],
    )  # fmt: skip
    out = Path(outdir) / "MASTER_BIAS.fits"
    qc = write_ifu_images(out, header, ifus, paths,
                          lambda ifu: master_bias_ifu(paths, primaries, ifu, params, badpix), "adu", "(adu)**2")
    return [Product(out, "MASTER_BIAS", tuple(ifus), qc)]


RECIPE = register(
    Recipe(
        name="muse_bias",
        inputs=("BIAS",),
        calibs=(Calib("BADPIX_TABLE", required=False),),
        outputs=("MASTER_BIAS",),
        params=(
            NIFU_PARAM,
            *OVERSCAN_PARAMS,
            *COMBINE_PARAMS,
            Param("losigmabadpix", float, 30.0, "low sigma to find dark columns in the combined bias", minimum=0.0),
            Param("hisigmabadpix", float, 3.0, "high sigma to find bright columns in the combined bias", minimum=0.0),
            MERGE_PARAM,
        ),
        run=run,
        min_inputs=3,
        description="Combine raw biases into a master bias; measure read noise and bias structure.",
    )
)
