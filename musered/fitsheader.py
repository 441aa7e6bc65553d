"""The ingest's reading of primary headers (every card as a typed value, fast), and of the
QC keywords of every header of a product (:func:`read_qc_headers`, for update-qc).

The header blocks are read and parsed by the block reader the recipes use
(:mod:`recipes.io.fitsblocks`: only the primary header blocks, one regular expression over
the cards), several times faster than opening the file with astropy. ``.fits.fz`` files
are read the same way (their primary HDU is the empty MUSE primary header); ``.fits.gz``
through :mod:`gzip`. On top of that, update-db rejects what is not a whole raw file
(:func:`read_primary_values`). Keys are spelled as astropy spells them (``HIERARCH``
dropped): ``'ESO DPR TYPE'``. Bad files raise :class:`~recipes.io.fitsblocks.HeaderError`
whose text is the reason (empty, not FITS, truncated, non-ASCII).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recipes.io.fitsblocks import BLOCK, HeaderError, data_bytes, parse_cards, read_primary_bytes


def read_primary_values(path: str | Path, check_size: bool = True) -> dict[str, Any]:
    """The primary header of a FITS file (.fits, .fits.fz, .fits.gz) as ``{keyword: value}``
    (str, int, float, bool or None; no comments, no COMMENT/HISTORY cards; see
    :func:`recipes.io.fitsblocks.parse_cards`).

    Raises HeaderError for an empty, non-FITS or truncated file. With ``check_size`` an
    uncompressed-on-disk file must be a whole number of 2880-byte blocks and hold the
    primary data its header announces (cheap truncation checks; skipped for .gz, whose
    size says nothing without decompressing). For an astropy Header with comments (what
    products copy), see :func:`recipes.io.read_primary_header`.
    """
    path = Path(path)
    raw, header_bytes = read_primary_bytes(path)
    header = parse_cards(raw)
    if header.get("SIMPLE") is not True:
        raise HeaderError("not a standard FITS file (SIMPLE is not T)")
    if check_size and not path.name.endswith(".gz"):
        size = path.stat().st_size
        needed = header_bytes + data_bytes(header)
        if size < needed:
            raise HeaderError(f"truncated file ({size} bytes, the primary HDU alone needs {needed})")
        if size % BLOCK:
            raise HeaderError(f"truncated file ({size} bytes is not a multiple of {BLOCK})")
    return header


def read_qc_headers(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """The ``ESO QC`` keywords of every header of a product, as ``[(hdu, {keyword: value})]``
    in file order, headers without QC left out.

    ``hdu`` is MuseRed's: ``PRIMARY`` for the primary header, else the EXTNAME without a
    ``.DATA`` suffix (``CHAN01.DATA`` → ``CHAN01``); the ``.DQ`` and ``.STAT`` headers are
    skipped (they repeat the DATA ones). Keywords as astropy spells them
    (``ESO QC BIAS MASTER1 RON``). The HDUs are located by
    :func:`recipes.io.hdus.fits_index` and only their HIERARCH cards are parsed.
    Raises HeaderError for a file that is not readable FITS.
    """
    from recipes.base import RecipeError
    from recipes.io.hdus import fits_index

    path = Path(path)
    try:
        hdus = fits_index(path)
    except RecipeError as exc:
        raise HeaderError(str(exc).split(": ", 1)[-1]) from None
    out = []
    with open(path, "rb") as stream:
        for hdu in hdus:
            name = "PRIMARY" if hdu.index == 0 else hdu.name or str(hdu.index)
            base, _, ext = name.partition(".")
            if ext in ("DQ", "STAT"):
                continue
            stream.seek(hdu.header_offset)
            raw = stream.read(hdu.data_offset - hdu.header_offset)
            cards = parse_cards(raw, lambda key: key == "HIERARCH")
            qc = {key: value for key, value in cards.items() if key.startswith("ESO QC ")}
            if qc:
                out.append((base if ext == "DATA" else name, qc))
    return out
