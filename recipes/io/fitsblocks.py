"""The one reader of FITS header blocks: 2880-byte blocks of 80-character cards.

Every header musered reads without astropy goes through here:

- the ingest (``musered.fitsheader.read_primary_values``): every card of a primary header
  as a typed value, several times faster than astropy;
- :func:`recipes.io.hdus.fits_index`: the structural cards (BITPIX, NAXISn, EXTNAME ...)
  of every HDU of a file, to locate its headers and data by byte offset;
- :func:`recipes.io.hdus.read_primary_header`: the bytes of a primary header, which astropy
  then turns into a :class:`~astropy.io.fits.Header` (products copy its cards and comments).

:func:`read_header_bytes` reads a header up to its END card (doubling its read each round),
:func:`parse_cards` types the values with one regular expression over the cards, and
:func:`data_bytes` sizes the data that follows. Keys are spelled as astropy spells them
(``HIERARCH`` dropped: ``'ESO DPR TYPE'``). Problems raise :class:`HeaderError` whose text
is the reason (empty, not FITS, truncated, non-ASCII, corrupt NAXISn/BITPIX).
"""

from __future__ import annotations

import gzip
import math
import re
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

BLOCK = 2880
CARD = 80
#: First read of a primary header: MUSE raw primaries hold 300-800 cards (4-12 blocks),
#: so one read nearly always reaches the END card.
PRIMARY_READ = 16 * BLOCK


class HeaderError(Exception):
    """A header that cannot be read; ``str()`` is the reason (one line)."""


_END_CARD = b"END" + b" " * 77
# One card per line: HIERARCH key, standard key with value indicator, or CONTINUE.
_CARD_RE = re.compile(
    r"^(?:HIERARCH +(?P<hkey>[^=\n]*?) *= ?|(?P<key>[A-Z0-9_-]{1,8}) *= |(?P<cont>CONTINUE)  )"
    r" *(?P<value>'(?:[^'\n]|'')*'|[^/\n]*?) *(?:/[^\n]*)?$",
    re.MULTILINE,
)
_INT_RE = re.compile(r"[+-]?\d+")
# FITS headers hold printable ASCII only (0x20-0x7E); anything else is a corrupt file.
_PRINTABLE = bytes(range(0x20, 0x7F))
_LOGICAL = {"T": True, "F": False}


def open_fits_stream(path: Path) -> IO[bytes]:
    """A binary stream of a FITS file; ``.gz`` files are decompressed on the fly."""
    path = Path(path)
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_header_bytes(stream: IO[bytes], start: bytes = b"", first_read: int = PRIMARY_READ) -> tuple[bytes, int]:
    """The header that starts at the stream's position: ``(cards before END, length)``.

    ``start``: bytes of this header already read from the stream (then reading goes on
    after them); otherwise ``first_read`` bytes are read first, and the buffer is doubled
    until an END card (``END`` and 77 blanks, on a card boundary) is found. ``length`` is
    the header's size in bytes, END card included, rounded up to whole 2880-byte blocks.
    The stream is left after the bytes read (possibly inside the data).
    HeaderError ``truncated header`` when the stream ends first.
    """
    buf = start or stream.read(first_read)
    search_from = 0
    while True:
        end = buf.find(_END_CARD, search_from)
        while end != -1 and end % CARD:
            end = buf.find(_END_CARD, end + 1)
        if end != -1:
            break
        search_from = max(0, len(buf) - len(buf) % CARD - CARD)
        more = stream.read(max(len(buf), BLOCK))  # double the buffer each round
        if not more:
            raise HeaderError(f"truncated header (no END card in {len(buf)} bytes)")
        buf += more
    return buf[:end], -(-(end + CARD) // BLOCK) * BLOCK


def read_primary_bytes(path: Path, first_read: int = PRIMARY_READ) -> tuple[bytes, int]:
    """The primary header of a file (.fits, .fits.fz, .fits.gz): ``(cards before END,
    length in bytes)`` as :func:`read_header_bytes`.

    HeaderError for an empty file, one that does not start with ``SIMPLE  =``, a
    truncated header, or a read error (``unreadable: ...``).
    """
    try:
        with open_fits_stream(path) as stream:
            head = stream.read(first_read)
            if not head:
                raise HeaderError("empty file")
            if not head.startswith(b"SIMPLE  ="):
                raise HeaderError(f"not a FITS file (starts with {_preview(head)})")
            return read_header_bytes(stream, head)
    except HeaderError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise HeaderError(f"unreadable: {getattr(exc, 'strerror', None) or exc}") from None


def _preview(buf: bytes) -> str:
    text = buf[:40].decode("ascii", "replace")
    text = "".join(ch if ch.isprintable() else "?" for ch in text).strip()
    return repr(text[:30] + ("..." if len(text) > 30 else ""))


def _parse_value(text: str) -> Any:
    if not text:
        return None
    if text[0] == "'":
        value = text[1:-1]
        return (value.replace("''", "'") if "''" in value else value).rstrip()
    if text in _LOGICAL:
        return _LOGICAL[text]
    if _INT_RE.fullmatch(text):
        return int(text)
    try:
        number = float(text.replace("D", "E").replace("d", "e"))
    except ValueError:
        return text  # complex values and oddities stay as written
    return number if math.isfinite(number) else text


def parse_cards(raw: bytes, keep: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """Keyword → value of header cards (``raw``: whole 80-character cards, no END needed).

    The first occurrence of a keyword wins, as astropy's lookup. HIERARCH keywords are
    stored without ``HIERARCH`` (``ESO DPR TYPE``); long strings (``&`` + ``CONTINUE``)
    are joined; COMMENT, HISTORY and blank cards are left out. Values are JSON-safe: str
    (trailing blanks removed), int, float (finite), bool or None (no value).

    ``keep``: a filter on the keyword field of each card (columns 1-8, blanks stripped:
    ``HIERARCH`` for HIERARCH cards, ``CONTINUE`` for continuations); only the cards it
    accepts are parsed, which makes reading a few standard keywords (the structure of an
    HDU) as cheap as looking at the first 8 characters of every card.
    HeaderError when the header holds non-printable bytes.
    """
    if raw.translate(None, _PRINTABLE):
        raise HeaderError("not a FITS file (non-printable bytes in the header)")
    text = raw.decode("ascii")
    starts = range(0, len(text), CARD)
    if keep is None:
        lines = "\n".join([text[i : i + CARD] for i in starts])
    else:
        lines = "\n".join([text[i : i + CARD] for i in starts if keep(text[i : i + 8].rstrip())])
    header: dict[str, Any] = {}
    last_key = None
    for hkey, key, cont, value in _CARD_RE.findall(lines):
        if cont:
            previous = header.get(last_key) if last_key else None
            if isinstance(previous, str) and previous.endswith("&") and value.startswith("'"):
                joined = previous[:-1] + _parse_value(value)
                header[last_key] = joined if joined.endswith("&") else joined.rstrip()
            continue
        name = (hkey if "  " not in hkey else " ".join(hkey.split())) if hkey else key
        if name not in header:
            header[name] = _parse_value(value)
            last_key = name
        else:
            last_key = None
    return header


def data_bytes(header: Mapping[str, Any]) -> int:
    """Size in bytes of the data of an HDU, without the padding to whole blocks:
    ``|BITPIX|/8 · GCOUNT · (PCOUNT + NAXIS1 · … · NAXISn)``, 0 without axes.

    ``header`` holds typed values (:func:`parse_cards`). HeaderError ``corrupt header``
    for a NAXISn that is not a non-negative integer or a BITPIX that is no FITS type.
    """
    naxis = header.get("NAXIS")
    if not isinstance(naxis, int) or naxis <= 0:
        return 0
    count = 1
    for axis in range(1, naxis + 1):
        length = header.get(f"NAXIS{axis}")
        if not isinstance(length, int) or length < 0:
            raise HeaderError(f"corrupt header (NAXIS{axis} = {length!r})")
        count *= length
    bitpix = header.get("BITPIX")
    if bitpix not in (8, 16, 32, 64, -32, -64):
        raise HeaderError(f"corrupt header (BITPIX = {bitpix!r})")
    pcount, gcount = header.get("PCOUNT", 0), header.get("GCOUNT", 1)
    if not isinstance(pcount, int) or not isinstance(gcount, int) or pcount < 0 or gcount < 0:
        raise HeaderError(f"corrupt header (PCOUNT = {pcount!r}, GCOUNT = {gcount!r})")
    return abs(bitpix) // 8 * gcount * (pcount + count)
