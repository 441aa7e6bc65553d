"""Parameters and input checks shared by the CCD-level recipes (bias to scibasic).

- the DRS parameter declarations ``nifu``, ``overscan``/``ovsc*``, the image
  combination (``combine``, ``nlow`` ... ``hsigma``) and ``merge``, and
  :func:`combine_options`, the keyword arguments of
  :func:`recipes.algorithms.preprocess.combine_frames` from the validated parameters;
- the input files: :func:`raw_inputs`, :func:`optional_calib`, :func:`select_ifus`
  (the IFUs 1..24 to process), :func:`check_modes`;
- exposure times: :func:`exposure_times` (EXPTIME [s]) and :func:`exposure_factors`
  (scaling every input to the exposure time of the first).

Every check raises :class:`recipes.base.RecipeError` with one line naming the file at fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.base import Param, RecipeError
from recipes.algorithms.overscan import OVSCREJECT_METHODS
from recipes.io import chan_name, list_ifus

NIFU_PARAM = Param(
    "nifu", int, 0,
    "IFU to handle: 1..24 one IFU; 0 all IFUs serially; -1 all IFUs (the DRS runs them in "
    "parallel; musered runs them in turn, each parallel over pixels)",
    minimum=-1, maximum=24,
)  # fmt: skip
OVERSCAN_PARAMS = (
    Param(
        "overscan", str, "vpoly",
        "none: only check overscan levels against the reference (stop if discrepant); offset: "
        "shift each exposure to the reference overscan level; vpoly[:order,frms,fchisq]: fit a "
        "polynomial in y to the vertical overscan and subtract it row by row (default order 15, "
        "frms = fchisq = 1.00001)",
    ),
    Param("ovscreject", str, "dcr", "outlier rejection for the overscan statistics: dcr, fit (iterative "
          "constant fit) or none", choices=OVSCREJECT_METHODS),
    Param("ovscsigma", float, 30.0, "stop if an overscan level differs from the reference by more than "
          "ovscsigma x stdev; for vpoly the rejection sigma of the iterative fit (the level check then "
          "uses 100 x stdev)", minimum=0.0),
    Param("ovscignore", int, 3, "overscan pixels next to the data section excluded from statistics and "
          "fits", minimum=0),
)  # fmt: skip
COMBINE_PARAMS = (
    Param("combine", str, "sigclip", "image combination: average, median, minmax or sigclip",
          choices=("average", "median", "minmax", "sigclip")),
    Param("nlow", int, 1, "minmax: number of lowest pixels rejected", minimum=0),
    Param("nhigh", int, 1, "minmax: number of highest pixels rejected", minimum=0),
    Param("nkeep", int, 1, "minmax: minimum number of pixels kept", minimum=1),
    Param("lsigma", float, 3.0, "sigclip: low rejection threshold (sigma)", minimum=0.0),
    Param("hsigma", float, 3.0, "sigclip: high rejection threshold (sigma)", minimum=0.0),
)  # fmt: skip
MERGE_PARAM = Param(
    "merge", bool, False,
    "DRS: merge the per-IFU products into one file. musered always writes the merged layout "
    "(one file, CHANnn.DATA/DQ/STAT extensions); the value is recorded for provenance",
)  # fmt: skip


def combine_options(params: Mapping) -> dict:
    """The combination keyword arguments of :func:`recipes.algorithms.preprocess.combine_frames`
    from validated (typed) parameters; a recipe that declares only ``combine`` (muse_wavecal,
    muse_lsf) gets the DRS defaults of the others."""
    return {
        "method": params.get("combine", "sigclip"),
        "nlow": params.get("nlow", 1),
        "nhigh": params.get("nhigh", 1),
        "nkeep": params.get("nkeep", 1),
        "lsigma": params.get("lsigma", 3.0),
        "hsigma": params.get("hsigma", 3.0),
    }


def raw_inputs(frames: Mapping[str, list[Path]], tag: str, recipe: str, minimum: int) -> list[Path]:
    """The raw files of ``tag``; RecipeError naming them when fewer than ``minimum``."""
    paths = [Path(p) for p in frames.get(tag, [])]
    if len(paths) < minimum:
        names = ", ".join(p.name for p in paths) or "none"
        raise RecipeError(f"{recipe} needs at least {minimum} {tag} frames, got {len(paths)} ({names})")
    for path in paths:
        if not path.exists():
            raise RecipeError(f"{path}: raw file does not exist (deleted since ingestion?)")
    return paths


def optional_calib(frames: Mapping[str, list[Path]], tag: str) -> Path | None:
    """The first file of an optional calibration tag, or None."""
    paths = list(frames.get(tag, []) or [])
    return Path(paths[0]) if paths else None


def select_ifus(paths: list[Path], nifu: int) -> list[int]:
    """IFUs to process (``nifu`` 1..24 one, 0/-1 all of the first input); every input must
    hold them (RecipeError naming the file that lacks one)."""
    present = list_ifus(paths[0])
    if not present:
        raise RecipeError(f"{paths[0]}: no CHANnn image extensions")
    wanted = present if nifu <= 0 else [nifu]
    for path in paths:
        have = set(present) if path == paths[0] else set(list_ifus(path))
        missing = [i for i in wanted if i not in have]
        if missing:
            raise RecipeError(f"{path}: no extension {chan_name(missing[0])}")
    return wanted


def check_modes(paths: list[Path], primaries: list[fits.Header]) -> None:
    """Inputs must share ESO INS MODE and DET READ CURID (RecipeError naming the odd file)."""
    for key, label in (("ESO INS MODE", "INS MODE"), ("ESO DET READ CURID", "DET READ CURID")):
        ref = primaries[0].get(key)
        for path, header in zip(paths[1:], primaries[1:]):
            if header.get(key) != ref:
                raise RecipeError(
                    f"{path}: {label} {header.get(key)!r} differs from {ref!r} of {paths[0].name}; "
                    "inputs must share one instrument mode and detector setup"
                )


def exposure_times(paths: list[Path], primaries: list[fits.Header], kind: str) -> np.ndarray:
    """EXPTIME [s] of every input; RecipeError naming the file when it is missing or <= 0
    (``kind`` names the frame type in the message, e.g. "lamp flat")."""
    times = []
    for path, header in zip(paths, primaries):
        try:
            t = float(header["EXPTIME"])
        except (KeyError, TypeError, ValueError):
            raise RecipeError(f"{path}: EXPTIME missing or not a number") from None
        if not t > 0:
            raise RecipeError(f"{path}: EXPTIME must be > 0 for a {kind}, not {t}")
        times.append(t)
    return np.array(times)


def exposure_factors(paths: list[Path], primaries: list[fits.Header], scale: bool) -> np.ndarray:
    """Factors bringing every flat to the exposure time of the first (ones if not ``scale``)."""
    if not scale:
        return np.ones(len(paths))
    times = exposure_times(paths, primaries, "lamp flat")
    return times[0] / times
