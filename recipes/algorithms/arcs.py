"""Arc exposures: which lamp each one shows, and their reduction to one combined image
per lamp (shared by muse_wavecal and muse_lsf).

- :func:`arc_lamp` / :func:`group_by_lamp`: the DRS lamp (Ne, Xe, HgCd) of every ARC
  from ``ESO INS LAMPi NAME/ST`` and ``ESO INS SHUTi ST`` (lamp on, shutter open); an
  unknown lamp or a frame with no or several arc lamps is an error naming the file;
- :func:`reduce_arcs`: per lamp, overscan correction (the MASTER_BIAS levels are the
  reference), trim, MASTER_BIAS, adu → count, variance RON² + Poisson, combination;
  optional MASTER_DARK and MASTER_FLAT;
- :func:`fit_inputs`: data and variance for the line fits, flagged pixels without weight.

Images are one IFU's trimmed CCD, 0-based ``[y, x]``, in count.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.base import RecipeError
from recipes.algorithms.ccdinputs import combine_options
from recipes.algorithms.linecatalog import LAMP_IONS
from recipes.algorithms.overscan import OverscanSpec, bias_reference
from recipes.algorithms.preprocess import combine_frames, prepare, subtract_dark
from recipes.algorithms.rawccd import badpix_mask, check_compatible, load_raw_ccd
from recipes.io import CcdImage, read_badpix_table, read_image_product
from recipes.kernels.overscan import SATURATION_LIMIT

ArcGroups = dict[str, list[tuple[Path, fits.Header]]]

#: Calibration-unit lamp names in ``ESO INS LAMPi NAME`` and the DRS lamp each stands for,
#: as the DRS 2.8.7 binary names them (CU-LAMP3 and CU-LAMP6 are two Ne lamps); its
#: wavecal run on simulated arcs confirmed Ne, Xe and HgCd on LAMP3/4/5 (docs/simulator.md).
#: The DRS lamp names themselves are accepted too.
LAMP_NAMES = {"CU-LAMP3": "Ne", "CU-LAMP4": "Xe", "CU-LAMP5": "HgCd", "CU-LAMP6": "Ne"}
#: Continuum lamps (lamp flats); ignored when looking for the arc lamp.
CONTINUUM_LAMPS = ("CU-LAMP1", "CU-LAMP2")


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


def group_by_lamp(paths: list[Path], primaries: list[fits.Header]) -> ArcGroups:
    """The arcs by DRS lamp name, in the order the lamps first appear: ``{lamp: [(path,
    primary header), ...]}`` (RecipeError from :func:`arc_lamp` naming the odd file)."""
    groups: ArcGroups = {}
    for path, header in zip(paths, primaries):
        groups.setdefault(arc_lamp(path, header), []).append((path, header))
    return groups


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
