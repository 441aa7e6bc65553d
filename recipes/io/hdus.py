"""Where each HDU of a FITS file is, and how to read one header or image without astropy's
file layer.

astropy finds extension n by parsing every header before it (as astropy Header objects,
≈ 1 ms per header of a MUSE raw file); a merged product has 73 extensions and is read
once per IFU, so that re-parsing dominated the I/O of a 24-IFU reduction.
:func:`fits_index` instead reads only the structural cards of each header with the block
reader of :mod:`recipes.io.fitsblocks`, once per file version (cached on path, size and
mtime): reading IFU n of a product parses only that IFU's headers
(:func:`read_hdu_header`), and arrays are read by byte offset with BZERO/BSCALE/BLANK
applied as astropy does (:func:`read_hdu_image`). :func:`read_primary_header` reads the
primary header blocks the same way and lets astropy build the Header from them.

Tile-compressed ``.fits.fz`` files and anything else astropy must decode are opened with
:func:`open_hdul`. Every problem becomes a one-line :class:`RecipeError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.base import RecipeError
from recipes.io.fitsblocks import (
    BLOCK,
    PRIMARY_READ,
    HeaderError,
    data_bytes,
    parse_cards,
    read_header_bytes,
    read_primary_bytes,
)

#: FITS BITPIX → stored (big-endian) numpy type.
NUMPY_TYPE = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
#: First read of an extension header: product and raw extension headers hold 1-4 blocks.
EXTENSION_READ = 4 * BLOCK
_STRUCTURE = frozenset(("SIMPLE", "XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "EXTNAME", "BZERO", "BSCALE",
                        "BLANK", "ZIMAGE"))  # fmt: skip
_INDEX_CACHE: dict[tuple[str, int, int], list[HduInfo]] = {}
_INDEX_CACHE_SIZE = 64


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def is_compressed(path: Path) -> bool:
    """Tile-compressed (``.fz``): its images must be decoded by astropy."""
    return str(path).endswith(".fz")


def open_hdul(path: Path, scaled: bool) -> fits.HDUList:
    """The file opened by astropy (memory-mapped, HDUs loaded lazily); ``scaled``: apply
    BZERO/BSCALE on access. RecipeError naming the file when missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"{path}: file does not exist (deleted since ingestion?)")
    try:
        return fits.open(path, memmap=True, do_not_scale_image_data=not scaled, lazy_load_hdus=True)
    except (OSError, ValueError, TypeError) as exc:
        raise RecipeError(f"{path}: cannot read FITS file ({one_line(exc)})") from None


def read_primary_header(path: Path) -> fits.Header:
    """The primary header of a FITS file (.fits, .fits.fz, .fits.gz) as an astropy Header,
    every card with its comment (products copy them). RecipeError naming the file if it
    is missing or its primary header unreadable. The cards are those of the file (astropy's
    ``fits.open`` adds ``EXTEND = T`` to a primary with extensions in memory; a structural
    key, never copied into products). For typed values only (no comments, no astropy),
    see ``musered.fitsheader.read_primary_values``."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"{path}: file does not exist (deleted since ingestion?)")
    try:
        raw, _ = read_primary_bytes(path)
        return fits.Header.fromstring(raw.decode("ascii"))
    except (HeaderError, OSError, ValueError) as exc:
        raise RecipeError(f"{path}: cannot read primary header ({one_line(exc)})") from None


@dataclass(frozen=True)
class HduInfo:
    """Position and structure of one HDU (byte offsets from the start of the file).

    ``shape`` is numpy order (NAXISn … NAXIS1); ``bzero``/``bscale`` the integer scaling;
    ``blank`` the BLANK value or None; ``compressed`` True for tile-compressed images.
    """

    index: int
    name: str
    xtension: str
    header_offset: int
    data_offset: int
    data_size: int
    bitpix: int
    shape: tuple[int, ...]
    bzero: float
    bscale: float
    blank: int | None
    compressed: bool


def _structural(key: str) -> bool:
    # the keyword field of a card (parse_cards' filter): HIERARCH and CONTINUE cards are no structure
    return key in _STRUCTURE or key.startswith("NAXIS")


def _scan_index(path: Path) -> list[HduInfo]:
    size = path.stat().st_size
    hdus: list[HduInfo] = []
    with open(path, "rb") as f:
        offset = 0
        while offset < size:
            f.seek(offset)
            head = f.read(EXTENSION_READ if hdus else PRIMARY_READ)
            if hdus and not head[:BLOCK].strip(b"\0 "):
                return hdus  # padding after the last HDU
            if not hdus and not head.startswith(b"SIMPLE  ="):
                raise HeaderError("not a FITS file (no SIMPLE card)")
            try:
                raw, length = read_header_bytes(f, head)
            except HeaderError as exc:
                raise HeaderError(f"HDU {len(hdus)}: {exc}") from None
            cards = parse_cards(raw, _structural)
            first = "XTENSION" if hdus else "SIMPLE"
            if first not in cards:
                raise HeaderError(f"HDU {len(hdus)} does not start with {first}")
            bitpix, naxis = cards.get("BITPIX"), cards.get("NAXIS", 0)
            if not isinstance(bitpix, int) or not isinstance(naxis, int) or naxis < 0:
                raise HeaderError(f"HDU {len(hdus)}: corrupt header (BITPIX = {bitpix!r}, NAXIS = {naxis!r})")
            nbytes = data_bytes(cards)
            blank, name = cards.get("BLANK"), cards.get("EXTNAME")
            data_offset = offset + length
            hdus.append(
                HduInfo(
                    index=len(hdus),
                    name="" if name is None else str(name).strip(),
                    xtension=str(cards.get("XTENSION", "")).strip(),
                    header_offset=offset,
                    data_offset=data_offset,
                    data_size=nbytes,
                    bitpix=bitpix,
                    shape=tuple(int(cards[f"NAXIS{i}"]) for i in range(naxis, 0, -1)),
                    bzero=float(cards.get("BZERO", 0.0)),
                    bscale=float(cards.get("BSCALE", 1.0)),
                    blank=int(blank) if blank is not None else None,
                    compressed=cards.get("ZIMAGE") is True,
                )
            )
            offset = data_offset + -(-nbytes // BLOCK) * BLOCK
    return hdus


def fits_index(path: Path) -> list[HduInfo]:
    """The HDUs of a FITS file (see :class:`HduInfo`), scanned once per file version.

    Cached on (path, size, mtime): a rewritten file is scanned again. RecipeError naming
    the file when it is missing or its structure is broken.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise RecipeError(f"{path}: file does not exist (deleted since ingestion?)") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    hdus = _INDEX_CACHE.get(key)
    if hdus is None:
        try:
            hdus = _scan_index(path)
        except (HeaderError, OSError, ValueError, KeyError) as exc:
            raise RecipeError(f"{path}: corrupt FITS structure ({one_line(exc)})") from None
        if len(_INDEX_CACHE) >= _INDEX_CACHE_SIZE:
            _INDEX_CACHE.pop(next(iter(_INDEX_CACHE)))
        _INDEX_CACHE[key] = hdus
    return hdus


def read_hdu_header(path: Path, hdu: HduInfo) -> fits.Header:
    """The full header of one indexed HDU, parsed by astropy (only this one)."""
    with open(path, "rb") as f:
        f.seek(hdu.header_offset)
        raw = f.read(hdu.data_offset - hdu.header_offset)
    return fits.Header.fromstring(raw.decode("ascii", errors="replace"))


def read_hdu_image(path: Path, hdu: HduInfo, dtype: type) -> np.ndarray:
    """The image of one indexed HDU as a native ``dtype`` array, with BZERO/BSCALE applied
    as astropy does (``stored · BSCALE + BZERO``, BLANK → NaN for float outputs).

    ValueError when the HDU is not an uncompressed image or the file is truncated.
    """
    if hdu.compressed or hdu.xtension not in ("", "IMAGE") or hdu.bitpix not in NUMPY_TYPE:
        raise ValueError("not an uncompressed image")
    count = int(np.prod(hdu.shape, dtype=np.int64)) if hdu.shape else 0
    with open(path, "rb") as f:
        f.seek(hdu.data_offset)
        stored = np.fromfile(f, dtype=NUMPY_TYPE[hdu.bitpix], count=count)
    if stored.size != count:
        raise ValueError(f"data ends after {stored.size} of {count} values")
    stored = stored.reshape(hdu.shape)
    scaled = hdu.bitpix > 0 and (hdu.bzero != 0.0 or hdu.bscale != 1.0)
    if not scaled:
        if stored.dtype.byteorder == ">" and stored.dtype.newbyteorder("=") == np.dtype(dtype):
            # the stored type is the wanted one: swap the bytes in place, no second array
            # (4x faster than astype on a 4k x 4k image)
            stored.byteswap(inplace=True)
            out = stored.view(stored.dtype.newbyteorder("="))
        else:
            out = stored.astype(dtype)  # byte swap and cast in one pass
        if hdu.bitpix > 0 and hdu.blank is not None and np.dtype(dtype).kind == "f":
            out[stored == hdu.blank] = np.nan
        return out
    values = stored.astype(np.float64) * hdu.bscale + hdu.bzero
    if hdu.blank is not None:
        values[stored == hdu.blank] = np.nan
    return values.astype(dtype)
