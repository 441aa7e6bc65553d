"""muse_bias: combine raw biases into a MASTER_BIAS (recipes.md §3.1).

Per IFU, the recipe reads as its steps:

1. read the N raw biases once (uint16) and check they share mode and detector setup;
2. raw quadrant levels (QC BIAS LEVELn) and saturated pixels (QC BIAS INPUTi NSATURATED);
3. overscan statistics and correction (default vpoly), the first input as reference;
4. read noise per port from differences of consecutive biases in random 9×9 windows
   (:func:`recipes.algorithms.masterbias.measure_ron`; QC BIAS MASTERn RON/RONERR in
   count); STAT starts as RON² (adu²);
5. trim and combine (default sigclip) in bounded row blocks → DATA (adu), STAT ≈ RON²/N;
6. bad columns (hot above ``hisigmabadpix``, dark below ``losigmabadpix``) into DQ
   (:func:`recipes.algorithms.masterbias.flag_bad_columns`);
7. QC of the master per port; write ``CHANnn.DATA/DQ/STAT`` into MASTER_BIAS.fits.

With ``overscan=vpoly`` or ``offset`` the DATA hold the residual 2-D bias structure
relative to the overscan (median ≈ 0); with ``none`` the full level. A malformed
``overscan`` is refused when the parameters are validated (``check``). Units: DATA adu,
STAT adu², QC RON count (= e-). QC values are written into each ``CHANnn.DATA`` header
(the merged layout has one set per IFU) and returned as ``"CHANnn QC ..."`` keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.base import Param, Product, Recipe
from recipes.calibs import BADPIX_TABLE
from recipes.io import CcdImage, hkey, read_badpix_table, read_primary_header, write_ifu_images
from recipes.kernels.overscan import SATURATION_LIMIT, grouped_median, histogram_u16
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
from recipes.algorithms.masterbias import flag_bad_columns, measure_ron, port_statistics
from recipes.algorithms.overscan import OverscanSpec, check_overscan_params, overscan_correction
from recipes.algorithms.preprocess import DQ_DARKPIXEL, DQ_HOTPIXEL, combine_frames, prepare
from recipes.algorithms.rawccd import badpix_mask, check_compatible, load_raw_stack


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
    flag_bad_columns(master, quadrants, params["losigmabadpix"], params["hisigmabadpix"])

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
    primaries = [read_primary_header(p) for p in paths]
    check_modes(paths, primaries)
    ifus = select_ifus(paths, params["nifu"])
    header = product_header(
        "MASTER_BIAS", RECIPE.name, params, [(p, "BIAS") for p in paths],
        [(badpix, "BADPIX_TABLE")] if badpix else [], template=primaries[0],
    )  # fmt: skip
    out = Path(outdir) / "MASTER_BIAS.fits"
    qc = write_ifu_images(out, header, ifus, paths,
                          lambda ifu: master_bias_ifu(paths, primaries, ifu, params, badpix), "adu", "(adu)**2")
    return [Product(out, "MASTER_BIAS", tuple(ifus), qc)]


RECIPE = Recipe(
    name="muse_bias",
    inputs=("BIAS",),
    calibs=(BADPIX_TABLE,),
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
    group="sequence",
    step="bias",
    min_inputs=3,
    check=check_overscan_params,
    description="Combine raw biases into a master bias; measure read noise and bias structure.",
)
