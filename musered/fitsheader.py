"""The ingest's reading of primary headers: every card as a typed value, fast.

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
