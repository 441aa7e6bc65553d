"""Provenance and QC keywords of products, in the ESO DRS convention.

Every product says what made it (recipes.md §2, architecture.md): ``ESO PRO CATG``,
``ESO PRO TYPE``, ``ESO PRO DID``, ``ESO PRO REC1 ID`` (the recipe), ``ESO PRO REC1 DRS ID``
and ``ESO PRO REC1 PIPE ID`` (musered recipes version), ``ESO PRO REC1 PARAMi NAME/VALUE``
(every parameter, in declaration order, values written as the DRS writes them:
:func:`recipes.base.format_param`), ``ESO PRO ANCESTOR`` (the raw ARCFILE), ``ESO PRO SCIENCE``
(T for the science chain, :data:`SCIENCE_CATGS`), ``DATE`` (creation time, UTC),
``ESO PRO REC1 RAWi NAME/CATG`` and ``ESO PRO REC1 CALi NAME/CATG`` (file names and tags,
1-based), ``ESO PRO DATANCOM`` (number of raw frames combined). QC values are
``ESO QC ...`` keywords.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from astropy.io import fits

from recipes import __version__
from recipes.base import format_param
from recipes.io.keywords import STRUCTURAL_KEYS, fitting_comment, hkey

PIPE_ID = f"musered/{__version__}"
#: Product tags the DRS marks ``ESO PRO SCIENCE = T`` (those made from the science
#: exposures by muse_scibasic and later; compared with DRS 2.8.7 products).
SCIENCE_CATGS = frozenset((
    "PIXTABLE_OBJECT", "PIXTABLE_STD", "PIXTABLE_SKY", "PIXTABLE_ASTROMETRY",
    "OBJECT_RED", "STD_RED", "SKY_RED", "ASTROMETRY_RED",
    "PIXTABLE_REDUCED", "PIXTABLE_POSITIONED", "PIXTABLE_COMBINED", "DATACUBE_FINAL", "IMAGE_FOV",
))  # fmt: skip


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
    # DATE is the file's creation time (UTC, as the DRS writes it); DATE-OBS stays the
    # observation's, copied from the template
    header["DATE"] = (datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
                      "file creation date (YYYY-MM-DDThh:mm:ss UT)")
    ancestor = _ancestor(template, raws)
    if ancestor:
        header[hkey("ESO PRO ANCESTOR")] = ancestor
    header[hkey("ESO PRO DID")] = ("PRO-1.16", "PRO dictionary")
    header[hkey("ESO PRO CATG")] = (catg, "product category")
    header[hkey("ESO PRO TYPE")] = ("REDUCED", "Product type")
    header[hkey("ESO PRO TECH")] = (str(template.get("ESO DPR TECH", "IFU")) if template is not None else "IFU",
                              "technique")
    header[hkey("ESO PRO SCIENCE")] = (catg in SCIENCE_CATGS, "science product")
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


def _ancestor(template: fits.Header | None, raws: Sequence[tuple[Path, str]]) -> str:
    """``ESO PRO ANCESTOR``: the raw file the product descends from, as the DRS records it
    (its ARCFILE; a product template passes its own ancestor on), else the first raw name."""
    if template is not None:
        for key in ("ESO PRO ANCESTOR", "ARCFILE"):
            if str(template.get(key, "")).strip():
                return str(template[key]).strip()
    return Path(raws[0][0]).name if raws else ""


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


# --------------------------------------------------------------------------------------
# keywords of single-IFU products (pixel tables) that DRS consumers read
# --------------------------------------------------------------------------------------

#: The DRS keyword of the integrated lamp-flat flux of the IFU (a pixel table's copy of the
#: MASTER_FLAT's ``ESO QC FLAT MASTER INTFLUX`` of that IFU) [count].
FLAT_FLUX_LAMP = "ESO DRS MUSE FLAT FLUX LAMP"
#: Raw-extension keywords the DRS copies into its pixel tables; the pre/overscan sizes are
#: left out as the DRS does (the tables hold trimmed data).
_DET_PREFIXES = ("ESO DET CHIP ", "ESO DET OUTPUTS", "ESO DET OUT")
_DET_SKIPPED = ("PRSCX", "PRSCY", "OVSCX", "OVSCY")


def flat_flux_sky_key(ifu: int | None = None) -> str:
    """``ESO DRS MUSE FLAT FLUX SKYn`` (no zero padding, as the DRS spells it in a
    TWILIGHT_CUBE) for one IFU, or ``... FLAT FLUX SKY`` (``ifu=None``: the copy in a
    pixel table)."""
    return "ESO DRS MUSE FLAT FLUX SKY" + ("" if ifu is None else str(ifu))


def flat_flux_sky(header: fits.Header, ifu: int) -> float | None:
    """The integrated twilight flux of ``ifu`` [count] from a TWILIGHT_CUBE primary header:
    ``... FLAT FLUX SKYn``, or the ``SKYnn`` spelling of products made by musered < 0.9
    (those files exist in users' reduced trees). None when absent."""
    for key in (flat_flux_sky_key(ifu), f"ESO DRS MUSE FLAT FLUX SKY{ifu:02d}"):
        if key in header:
            return float(header[key])
    return None


def set_ifu_keywords(
    header: fits.Header,
    ifu: int,
    raw_extension: fits.Header | None,
    flat_extension: fits.Header | None = None,
    twilight_primary: fits.Header | None = None,
    flat_primary: fits.Header | None = None,
) -> None:
    """Keywords of a single-IFU product (PIXTABLE_OBJECT/STD/SKY ...) that the DRS reads.

    - ``EXTNAME = CHANnn`` in the primary header: the DRS takes the IFU number of a
      pixel table from it (without it, two IFUs of one exposure are both "IFU 0" and one
      is dropped);
    - ``ESO DET CHIP ...``, ``ESO DET OUTPUTS``, ``ESO DET OUTn ...`` from the raw
      extension (the DRS's ``muse_quadrants`` functions read the port layout there);
    - ``ESO DRS MUSE FLAT FLUX LAMP``: ``ESO QC FLAT MASTER INTFLUX`` of the IFU's
      MASTER_FLAT data extension (or of ``flat_primary``, a single-IFU DRS master), and ``ESO DRS MUSE FLAT FLUX SKY``: the TWILIGHT_CUBE's
      ``FLAT FLUX SKYn`` of the IFU. DRS muse_scipost scales each IFU by these fluxes
      relative to the others when it merges the IFUs of an exposure (sky flux when all
      have one, lamp flux otherwise), which restores the relative IFU throughput that the
      per-IFU normalised flat removed. Absent inputs leave the keyword out.
    """
    header["EXTNAME"] = (f"CHAN{ifu:02d}", "Extension name")
    if raw_extension is not None:
        for card in raw_extension.cards:
            key = card.keyword
            if key.startswith(_DET_PREFIXES) and not key.endswith(_DET_SKIPPED):
                header[hkey(key)] = (card.value, card.comment)
    # ours: in CHANnn.DATA; a single-IFU DRS MASTER_FLAT: in the primary header
    for flat in (flat_extension, flat_primary):
        if flat is not None and "ESO QC FLAT MASTER INTFLUX" in flat:
            header[hkey(FLAT_FLUX_LAMP)] = float(flat["ESO QC FLAT MASTER INTFLUX"])
            break
    sky = flat_flux_sky(twilight_primary, ifu) if twilight_primary is not None else None
    if sky is not None:
        header[hkey(flat_flux_sky_key())] = sky
