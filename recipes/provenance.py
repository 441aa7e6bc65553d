"""Provenance and QC keywords of products, in the ESO DRS convention.

Every product says what made it (recipes.md §2, architecture.md): ``ESO PRO CATG``,
``ESO PRO TYPE``, ``ESO PRO DID``, ``ESO PRO REC1 ID`` (the recipe), ``ESO PRO REC1 DRS ID``
and ``ESO PRO REC1 PIPE ID`` (musered recipes version), ``ESO PRO REC1 PARAMi NAME/VALUE``
(every parameter, in declaration order, values written as the DRS writes them),
``ESO PRO REC1 RAWi NAME/CATG`` and ``ESO PRO REC1 CALi NAME/CATG`` (file names and tags,
1-based), ``ESO PRO DATANCOM`` (number of raw frames combined). QC values are
``ESO QC ...`` keywords.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from astropy.io import fits

from recipes import __version__
from recipes.base import format_param
from recipes.io.keywords import STRUCTURAL_KEYS, fitting_comment, hkey

PIPE_ID = f"musered/{__version__}"


def qc_key(*parts: object) -> str:
    """``qc_key("BIAS", "MASTER1", "RON")`` -> ``"ESO QC BIAS MASTER1 RON"``."""
    return "ESO QC " + " ".join(str(p) for p in parts)


def product_header(
    catg: str,
    recipe: str,
    params: Mapping[str, object],
    raws: Sequence[tuple[Path, str]],
    calibs: Sequence[tuple[Path, str]] = (),
    template: fits.Header | None = None,
) -> fits.Header:
    """The primary header of a product.

    ``template`` (normally the primary header of the first raw input) is copied first,
    minus structural keywords and any earlier ``ESO PRO``/``ESO QC`` keywords, so that the
    product keeps the observation keywords (INS MODE, DET READ CURID, DATE-OBS ...) that
    association uses. ``raws``/``calibs`` are ``(path, tag)`` pairs; only file names are
    recorded, as the DRS does.
    """
    header = fits.Header()
    if template is not None:
        for card in template.cards:
            key = card.keyword
            if key in STRUCTURAL_KEYS or key.startswith(("ESO PRO ", "ESO QC ")) or key in ("COMMENT", "HISTORY", ""):
                continue
            header.append(card, end=True)
    header[hkey("ESO PRO DID")] = ("PRO-1.16", "PRO dictionary")
    header[hkey("ESO PRO CATG")] = (catg, "product category")
    header[hkey("ESO PRO TYPE")] = ("REDUCED", "Product type")
    header[hkey("ESO PRO TECH")] = (str(template.get("ESO DPR TECH", "IFU")) if template is not None else "IFU",
                              "technique")
    header[hkey("ESO PRO SCIENCE")] = (False, "science product")
    header[hkey("ESO PRO REC1 ID")] = (recipe, "recipe")
    header[hkey("ESO PRO REC1 DRS ID")] = (PIPE_ID, "DRS id")
    header[hkey("ESO PRO REC1 PIPE ID")] = (PIPE_ID, "pipeline id")
    for i, (name, value) in enumerate(params.items(), start=1):
        header[hkey(f"ESO PRO REC1 PARAM{i} NAME")] = (name, "")
        header[hkey(f"ESO PRO REC1 PARAM{i} VALUE")] = (format_param(value), "")
    for i, (path, tag) in enumerate(raws, start=1):
        # No comment: a MUSE file name leaves no room for one on a HIERARCH card.
        header[hkey(f"ESO PRO REC1 RAW{i} NAME")] = (Path(path).name, "")
        header[hkey(f"ESO PRO REC1 RAW{i} CATG")] = (tag, "raw tag")
    for i, (path, tag) in enumerate(calibs, start=1):
        header[hkey(f"ESO PRO REC1 CAL{i} NAME")] = (Path(path).name, "")
        header[hkey(f"ESO PRO REC1 CAL{i} CATG")] = (tag, "calibration tag")
    header[hkey("ESO PRO DATANCOM")] = (len(raws), "combined frames")
    return header


def recorded_params(header: fits.Header) -> dict[str, str]:
    """``{name: value}`` of the ``ESO PRO REC1 PARAMi`` keywords of a product header."""
    params = {}
    i = 1
    while f"ESO PRO REC1 PARAM{i} NAME" in header:
        params[str(header[hkey(f"ESO PRO REC1 PARAM{i} NAME")])] = str(header.get(f"ESO PRO REC1 PARAM{i} VALUE", ""))
        i += 1
    return params


def add_qc(header: fits.Header, values: Iterable[tuple[str, object, str]]) -> None:
    """Set ``(keyword, value, comment)`` triples; keywords are full (``ESO QC ...``).

    Floats are rounded to 6 significant digits; comments are shortened to fit the card
    (:func:`recipes.io.keywords.fitting_comment`)."""
    for key, value, comment in values:
        if isinstance(value, float):
            value = float(f"{value:.6g}") if abs(value) < 1e15 else value
        header[hkey(key)] = (value, fitting_comment(key, value, comment))
