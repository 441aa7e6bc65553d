"""muse_std_combine: one STD_RESPONSE and STD_TELLURIC per run from several nights' standards.

A musered recipe (the DRS has none): its target is a run of the settings (``group="run"``,
``musered std-combine``), its inputs the STD_RESPONSE and STD_TELLURIC that muse_standard
made on the run's nights (the latest run of each standard exposure). The recipe reads as
its steps:

1. read every input curve (the muse_standard table formats, :mod:`recipes.algorithms.fluxcal`);
2. combine them per wavelength (:func:`recipes.algorithms.curves.combine_curves`, ``method``
   median or mean); a transmission is capped at 1;
3. write STD_RESPONSE.fits and STD_TELLURIC.fits with the first input's header as
   template and QC ``ESO QC STDCOMBINE NINPUT``, ``NNIGHT`` (nights from noon to noon UT,
   as at Paranal), ``SCATTER MEDIAN|MAX`` (the night-to-night 1.4826 · MAD, in the unit of
   the column: mag for the response).

Association uses the products by the run's name: ``frames: {STD_RESPONSE: GTO17,
STD_TELLURIC: GTO17}`` in the muse_scipost block.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from recipes.algorithms.curves import METHODS, combine_curves
from recipes.algorithms.fluxcal import read_response, read_telluric, write_response, write_telluric
from recipes.base import Param, Product, Recipe, RecipeError
from recipes.io import read_primary_header
from recipes.provenance import add_qc, product_header

logger = logging.getLogger(__name__)

TAGS = ("STD_RESPONSE", "STD_TELLURIC")
READERS = {"STD_RESPONSE": (read_response, write_response), "STD_TELLURIC": (read_telluric, write_telluric)}


def night_of(header) -> int | None:
    """The night of an observation as an integer MJD: noon to noon UT (Paranal, UT−4)."""
    mjd = header.get("MJD-OBS")
    return None if mjd is None else math.floor(float(mjd) - 0.5)


def run(frames: Mapping[str, list[Path]], params: Mapping[str, object], outdir: Path) -> list[Product]:
    """Write the combined STD_RESPONSE.fits and STD_TELLURIC.fits (see the module docstring)."""
    if not frames.get("STD_RESPONSE"):
        raise RecipeError("muse_std_combine needs at least one STD_RESPONSE")
    method = str(params["method"])
    products = []
    for tag in TAGS:
        paths = list(frames.get(tag, []))
        if not paths:
            continue
        read, write = READERS[tag]
        headers = [read_primary_header(p) for p in paths]
        try:
            lam, value, error, scatter = combine_curves([read(p) for p in paths], method)
        except ValueError as exc:
            raise RecipeError(f"{tag}: {exc}") from None
        if tag == "STD_TELLURIC":
            value = np.minimum(value, 1.0)  # a transmission: never above 1
        header = product_header(tag, "muse_std_combine", params, [(p, tag) for p in paths], template=headers[0])
        qc = {
            "NINPUT": len(paths),
            "NNIGHT": len({night_of(h) for h in headers}),
            "SCATTER MEDIAN": float(np.median(scatter)),
            "SCATTER MAX": float(np.max(scatter)),
        }
        add_qc(header, [(f"ESO QC STDCOMBINE {k}", v, "") for k, v in qc.items()])
        path = write(outdir / f"{tag}.fits", header, lam, value, error)
        for p, h in zip(paths, headers):
            logger.info("%s: %s (DATE-OBS %s)", tag, p, h.get("DATE-OBS"))
        logger.info("%s: %s of %d, %d wavelengths %.1f-%.1f A, night-to-night scatter median %.4g, max %.4g",
                    tag, method, len(paths), lam.size, lam[0], lam[-1], qc["SCATTER MEDIAN"], qc["SCATTER MAX"])
        products.append(Product(path, tag, (), {f"QC STDCOMBINE {k}": v for k, v in qc.items()}))
    return products


RECIPE = Recipe(
    name="muse_std_combine",
    inputs=TAGS,
    calibs=(),
    outputs=TAGS,
    params=(Param("method", str, "median", "how to combine the nights: median (as MuseRed) or inverse-variance "
                  "weighted mean", choices=METHODS),),
    run=run,
    group="run",
    step="stdcombine",
    from_recipe="muse_standard",
    min_inputs=1,
    description="Combine the response and telluric curves of a run's nights into one of each.",
    summary_qc=(("inputs", "QC STDCOMBINE NINPUT"), ("scatter", "QC STDCOMBINE SCATTER MEDIAN")),
)
