"""A fast reader of FITS primary headers: the header blocks only, one regex over the cards.

It reads only the primary header blocks (2880 bytes each) and parses the 80-character
cards with one regular expression, several times faster than opening the file with
astropy. ``.fits.fz`` files are read the same way (their primary HDU is the empty MUSE
primary header); ``.fits.gz`` through :mod:`gzip`. Keys are spelled as astropy spells
them (``HIERARCH`` dropped): ``'ESO DPR TYPE'``. Bad files raise :class:`HeaderError`
whose text is the reason (empty, not FITS, truncated, non-ASCII).
"""

from __future__ import annotations

import gzip
import math
import re
import zlib
from pathlib import Path
from typing import Any

BLOCK = 2880
CARD = 80


class HeaderError(Exception):
    """A file whose primary header cannot be read; ``str()`` is the reason."""


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


def _open_raw(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _read_header_bytes(path: Path) -> tuple[bytes, int]:
    """The primary header up to (excluding) its END card, and its padded length in bytes."""
    first_read = BLOCK * 16
    try:
        with _open_raw(path) as fh:
            buf = fh.read(first_read)
            if not buf:
                raise HeaderError("empty file")
            if not buf.startswith(b"SIMPLE  ="):
                raise HeaderError(f"not a FITS file (starts with {_preview(buf)})")
            search_from = 0
            while True:
                end = buf.find(_END_CARD, search_from)
                while end != -1 and end % CARD:
                    end = buf.find(_END_CARD, end + 1)
                if end != -1:
                    break
                search_from = max(0, len(buf) - len(buf) % CARD - CARD)
                more = fh.read(len(buf))  # double the buffer each round
                if not more:
                    raise HeaderError(f"truncated header (no END card in {len(buf)} bytes)")
                buf += more
    except HeaderError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise HeaderError(f"unreadable: {exc.strerror or exc}") from None
    return buf[:end], -(-(end + CARD) // BLOCK) * BLOCK


def _preview(buf: bytes) -> str:
    text = buf[:40].decode("ascii", "replace")
    text = "".join(ch if ch.isprintable() else "?" for ch in text).strip()
    return repr(text[:30] + ("..." if len(text) > 30 else ""))


_LOGICAL = {"T": True, "F": False}


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


def parse_header_cards(raw: bytes) -> dict[str, Any]:
    """Keyword → value of the header cards (first occurrence wins, as astropy's lookup).

    HIERARCH keywords are stored without ``HIERARCH`` (``ESO DPR TYPE``); long strings
    (``&`` + ``CONTINUE``) are joined; COMMENT, HISTORY and blank cards are left out.
    Values are JSON-safe: str, int, float (finite), bool or None.
    """
    if raw.translate(None, _PRINTABLE):
        raise HeaderError("not a FITS file (non-printable bytes in the header)")
    text = raw.decode("ascii")
    lines = "\n".join([text[i : i + CARD] for i in range(0, len(text), CARD)])
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


def read_primary_header(path: str | Path, check_size: bool = True) -> dict[str, Any]:
    """The primary header of a FITS file (.fits, .fits.fz, .fits.gz) as a dict.

    Raises :class:`HeaderError` for an empty, non-FITS or truncated file. With
    ``check_size`` an uncompressed-on-disk file must be a whole number of 2880-byte
    blocks and hold the primary data its header announces (cheap truncation checks;
    skipped for .gz, whose size says nothing without decompressing).
    """
    path = Path(path)
    raw, header_bytes = _read_header_bytes(path)
    header = parse_header_cards(raw)
    if header.get("SIMPLE") is not True:
        raise HeaderError("not a standard FITS file (SIMPLE is not T)")
    if check_size and not path.name.endswith(".gz"):
        size = path.stat().st_size
        data_bytes = _primary_data_bytes(header)
        if size < header_bytes + data_bytes:
            raise HeaderError(
                f"truncated file ({size} bytes, the primary HDU alone needs {header_bytes + data_bytes})"
            )
        if size % BLOCK:
            raise HeaderError(f"truncated file ({size} bytes is not a multiple of {BLOCK})")
    return header


def _primary_data_bytes(header: dict[str, Any]) -> int:
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
    return count * abs(bitpix) // 8
