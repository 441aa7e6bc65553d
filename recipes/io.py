"""Reading raw MUSE files and writing/reading DRS-layout products.

Raw files (muse-raw-format.md): an empty primary HDU, then image extensions ``CHANnn``
(``BITPIX=16``, ``BZERO=32768``: uint16 counts in adu). astropy cannot memory-map scaled
data, so the fast path opens with ``do_not_scale_image_data=True`` and flips the sign bit
(XOR 0x8000), which gives exactly the scaled values in one pass. Tile-compressed
``.fits.fz`` files and other integer encodings go through astropy's scaled read.

Products follow the DRS merged layout (recipes.md §4.1): a primary header with provenance,
then per IFU ``CHANnn.DATA`` (float32), ``CHANnn.DQ`` (int32 Euro3D bits) and
``CHANnn.STAT`` (float32 variance) image extensions, or one table extension ``CHANnn``
per IFU for table products. :class:`ProductWriter` streams the extensions to disk one IFU
at a time so that a 24-IFU product never sits in memory. Readers accept the merged form
and the single-IFU DRS form (primary ``EXTNAME=CHANnn`` with ``DATA``/``DQ``/``STAT``).

Uncompressed files are located through :func:`fits_index` (the structural cards of every
header, scanned once per file version and cached): reading IFU n of a 73-extension product
parses only that IFU's headers, and the arrays are read by byte offset with BZERO/BSCALE/
BLANK applied as astropy does (:func:`read_hdu_image`).

Every problem with an input file becomes a one-line :class:`RecipeError` naming the file.
Arrays are numpy ``[y, x]``, 0-based.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits

from .base import RecipeError

if TYPE_CHECKING:  # astropy.table is slow to import; only table products need it
    from astropy.table import Table
from .kernels.overscan import decode_bzero16

_CHAN_RE = re.compile(r"^CHAN(\d\d)$")
_CHAN_ANY_RE = re.compile(r"^CHAN(\d\d)(\.DATA)?$")

#: Keywords that describe an HDU's structure and must not be copied between headers.
STRUCTURAL_KEYS = frozenset(
    (
        "SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND",
        "PCOUNT", "GCOUNT", "BZERO", "BSCALE", "BLANK", "CHECKSUM", "DATASUM", "EXTNAME",
        "TFIELDS", "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZNAXIS1", "ZNAXIS2", "ZTILE1", "ZTILE2",
        "ZCMPTYPE", "ZNAME1", "ZVAL1", "ZNAME2", "ZVAL2", "ZQUANTIZ", "ZDITHER0", "ZSIMPLE",
        "ZEXTEND", "ZTENSION", "ZPCOUNT", "ZGCOUNT", "ZHECKSUM", "ZDATASUM",
    )
)  # fmt: skip


@dataclass
class CcdImage:
    """A trimmed CCD image: DATA (float32), DQ (int32 Euro3D bits), STAT (float32 variance).

    ``header`` carries the extension keywords (``ESO DET ...``, QC, ``ESO DRS MUSE ...``).
    Units are stated by the producer (``adu``/``(adu)**2`` for biases, ``count``/
    ``(count)**2`` after gain conversion).
    """

    data: np.ndarray
    dq: np.ndarray
    stat: np.ndarray
    header: fits.Header


def hkey(key: str) -> str:
    """Spell a long keyword (``ESO QC ...``) as ``HIERARCH ...`` so astropy does not warn."""
    return key if len(key) <= 8 and " " not in key else "HIERARCH " + key


def fit_comments(header: fits.Header) -> fits.Header:
    """Shorten the comments that do not fit on their 80-character card, in place.

    astropy would cut them too, but with a VerifyWarning per card at write time, which the
    user sees in the log; the value is never touched. Returns ``header``.
    """
    for index, card in enumerate(header.cards):
        if not card.comment or card.keyword in ("COMMENT", "HISTORY", ""):
            continue
        comment = fitting_comment(card.keyword, card.value, card.comment)
        if comment != card.comment:
            header.comments[index] = comment
    return header


def fitting_comment(keyword: str, value: object, comment: str) -> str:
    """``comment``, shortened so that the card ``keyword = value / comment`` fits 80 characters."""
    if not comment:
        return comment
    bare = len(fits.Card(hkey(keyword), value).image.rstrip())
    room = 80 - bare - 3  # " / "
    return comment if len(comment) <= room else comment[: max(room, 0)].rstrip()


def chan_name(ifu: int) -> str:
    """Extension name of an IFU: ``CHAN01`` .. ``CHAN24``."""
    return f"CHAN{ifu:02d}"


def _open(path: Path, scaled: bool) -> fits.HDUList:
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"{path}: file does not exist (deleted since ingestion?)")
    try:
        return fits.open(path, memmap=True, do_not_scale_image_data=not scaled, lazy_load_hdus=True)
    except (OSError, ValueError, TypeError) as exc:
        raise RecipeError(f"{path}: cannot read FITS file ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _is_compressed(path: Path) -> bool:
    return str(path).endswith(".fz")


def read_primary_header(path: Path) -> fits.Header:
    """The primary header of a FITS file (RecipeError naming the file if unreadable)."""
    with _open(path, scaled=False) as hdul:
        try:
            return hdul[0].header.copy()
        except (OSError, ValueError, IndexError) as exc:
            raise RecipeError(f"{path}: cannot read primary header ({_one_line(exc)})") from None


def list_ifus(path: Path) -> list[int]:
    """IFU numbers of the ``CHANnn`` extensions of a raw file (or ``CHANnn.DATA`` of a product)."""
    ifus = []
    with _open(path, scaled=False) as hdul:
        try:
            for hdu in hdul:
                match = _CHAN_ANY_RE.match(str(hdu.header.get("EXTNAME", "")).strip())
                if match and hdu is not hdul[0]:
                    ifus.append(int(match.group(1)))
            if not ifus and _CHAN_RE.match(str(hdul[0].header.get("EXTNAME", "")).strip()):
                ifus.append(int(hdul[0].header["EXTNAME"][4:6]))
        except (OSError, ValueError) as exc:
            raise RecipeError(f"{path}: corrupt FITS structure ({_one_line(exc)})") from None
    return sorted(set(ifus))


def read_raw_ifu(path: Path, ifu: int, out: np.ndarray | None = None) -> tuple[np.ndarray, fits.Header]:
    """Read one IFU of a raw file: ``(image uint16 [y, x] in adu, extension header)``.

    The image is a native-endian uint16 copy (one pass over the data), written into
    ``out`` when given (e.g. one plane of a preallocated stack; it must have the image's
    shape); the extension header is returned as a copy. RecipeError naming the file when the extension is
    missing, truncated or not a 2-D integer image.
    """
    path = Path(path)
    name = chan_name(ifu)
    if _is_compressed(path):
        return _read_raw_ifu_astropy(path, ifu, out)
    hdus = fits_index(path)
    hdu = next((h for h in hdus if h.name == name), None)
    if hdu is None:
        raise RecipeError(f"{path}: no extension {name}")
    where = f"{path}[{name}]"
    header = read_hdu_header(path, hdu)
    if len(hdu.shape) != 2 or hdu.xtension not in ("", "IMAGE"):
        raise RecipeError(f"{where}: not a 2-D image")
    if out is not None and out.shape != hdu.shape:
        raise RecipeError(f"{where}: image is {hdu.shape[::-1]} pixels, expected {out.shape[::-1]}")
    try:
        if hdu.bitpix not in _NUMPY_TYPE:
            raise ValueError(f"BITPIX {hdu.bitpix} is not a FITS image type")
        if hdu.data_offset + hdu.data_size > path.stat().st_size:
            raise ValueError("data run past the end of the file")
        raw = np.memmap(path, dtype=_NUMPY_TYPE[hdu.bitpix], mode="r", offset=hdu.data_offset, shape=hdu.shape)
        try:
            image = _to_uint16(raw, header, False, out)
        finally:
            del raw
    except (OSError, ValueError, TypeError) as exc:
        raise RecipeError(f"{where}: cannot read image data ({_one_line(exc)}; truncated file?)") from None
    return image, header


def _read_raw_ifu_astropy(path: Path, ifu: int, out: np.ndarray | None) -> tuple[np.ndarray, fits.Header]:
    name = chan_name(ifu)
    compressed = _is_compressed(path)
    with _open(path, scaled=compressed) as hdul:
        try:
            hdu = hdul[name]
        except KeyError:
            raise RecipeError(f"{path}: no extension {name}") from None
        except (OSError, ValueError) as exc:
            raise RecipeError(f"{path}: corrupt FITS structure before {name} ({_one_line(exc)})") from None
        header = hdu.header.copy()
        where = f"{path}[{name}]"
        try:
            raw = hdu.data
        except (OSError, ValueError, TypeError) as exc:
            raise RecipeError(f"{where}: cannot read image data ({_one_line(exc)})") from None
        if raw is None or raw.ndim != 2:
            raise RecipeError(f"{where}: not a 2-D image")
        expected = (int(header.get("NAXIS2", raw.shape[0])), int(header.get("NAXIS1", raw.shape[1])))
        if compressed:
            expected = (int(header.get("ZNAXIS2", expected[0])), int(header.get("ZNAXIS1", expected[1])))
        if raw.shape != expected:
            raise RecipeError(f"{where}: image is {raw.shape}, header says {expected} (truncated?)")
        try:
            if out is not None and out.shape != raw.shape:
                raise RecipeError(f"{where}: image is {raw.shape[::-1]} pixels, expected {out.shape[::-1]}")
            image = _to_uint16(raw, header, compressed, out)
        except (OSError, ValueError, TypeError) as exc:
            raise RecipeError(f"{where}: cannot read image data ({_one_line(exc)}; truncated file?)") from None
    return image, header


def prefetch_raw_ifu(path: Path, ifu: int) -> None:
    """Ask the OS to start reading one IFU's image data of a raw file (``CHANnn``) or a
    merged product (``CHANnn.DATA/DQ/STAT``) in the background.

    A hint only (``posix_fadvise(WILLNEED)``): returns at once, never raises. Recipes
    call it for the next IFU while they compute the current one, so that disk reads
    overlap with computation.
    """
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        name = chan_name(ifu)
        hdus = [h for h in fits_index(Path(path)) if h.name == name or h.name.startswith(name + ".")]
        fd = os.open(path, os.O_RDONLY)
        try:
            for hdu in hdus:
                os.posix_fadvise(fd, hdu.data_offset, hdu.data_size, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)
    except Exception:  # noqa: BLE001 - a failed hint must never stop a reduction
        return


def _to_uint16(raw: np.ndarray, header: fits.Header, scaled: bool, out: np.ndarray | None = None) -> np.ndarray:
    if out is None:
        out = np.empty(raw.shape, dtype=np.uint16)
    if (
        not scaled
        and raw.dtype.kind == "i"
        and raw.dtype.itemsize == 2
        and float(header.get("BZERO", 0)) == 32768.0
        and float(header.get("BSCALE", 1)) == 1.0
    ):
        # Signed 16-bit storage with BZERO=32768: flipping the sign bit is the unsigned value.
        # byte swap and sign flip in one parallel numba pass
        return decode_bzero16(raw, out)
    if not scaled:
        bzero = float(header.get("BZERO", 0.0))
        bscale = float(header.get("BSCALE", 1.0))
        values = raw.astype(np.float64) * bscale + bzero
    else:
        values = np.asarray(raw, dtype=np.float64)
    if values.size and (np.nanmin(values) < 0 or np.nanmax(values) > 65535):
        raise ValueError("pixel values outside the 16-bit unsigned range")
    np.rint(values, out=values)
    out[...] = values
    return out


# --------------------------------------------------------------------------------------
# Products
# --------------------------------------------------------------------------------------

_HDUCLASS = {
    "DATA": {"HDUCLAS2": ("DATA", "this extension contains the data itself")},
    "DQ": {
        "HDUCLAS2": ("QUALITY", "this extension contains bad pixel mask"),
        "HDUCLAS3": ("FLAG32BIT", "bad pixels marked with Euro3D bits"),
    },
    "STAT": {
        "HDUCLAS2": ("ERROR", "this extension contains variance"),
        "HDUCLAS3": ("MSE", "the extension contains variances (sigma**2)"),
    },
}


def _image_header(extname: str, kind: str, base: fits.Header | None, bunit: str | None) -> fits.Header:
    header = fits.Header()
    header["EXTNAME"] = (extname, "This extension contains " + kind.lower())
    if base is not None and kind == "DATA":
        for card in base.cards:
            if card.keyword not in STRUCTURAL_KEYS and card.keyword not in ("COMMENT", "HISTORY", ""):
                header.append(card, end=True)
    if bunit is not None:
        header["BUNIT"] = bunit
    header["HDUCLASS"] = ("ESO", "class name (ESO format)")
    header["HDUDOC"] = ("DICD", "document with class description")
    header["HDUVERS"] = ("DICD version 6", "version number (according to spec v2.5.1)")
    header["HDUCLAS1"] = ("IMAGE", "Image data format")
    for key, value in _HDUCLASS[kind].items():
        header[key] = value
    prefix = extname.rsplit(".", 1)[0] + "." if "." in extname else ""
    if kind != "DATA":
        header["SCIDATA"] = (prefix + "DATA", "pointer to the data extension")
    if kind != "DQ":
        header["QUALDATA"] = (prefix + "DQ", "pointer to the bad pixel mask extension")
    if kind != "STAT":
        header["ERRDATA"] = (prefix + "STAT", "pointer to the variance extension")
    return header


class ProductWriter:
    """Write a merged product file one IFU at a time.

    ``ProductWriter(path, primary_header)`` writes the primary HDU at once; then
    :meth:`add_image` appends ``CHANnn.DATA/DQ/STAT`` and :meth:`add_table` a ``CHANnn``
    table extension. Each extension goes straight to disk, so memory holds one IFU only.
    Writes go to ``path`` only; an existing file is replaced.
    """

    def __init__(self, path: Path, primary_header: fits.Header):
        self.path = Path(path)
        self.ifus: list[int] = []
        primary = fits.PrimaryHDU(header=primary_header.copy())
        primary.writeto(self.path, overwrite=True, output_verify="silentfix")

    def _append(self, hdu: fits.hdu.base.ExtensionHDU) -> None:
        fits.append(self.path, hdu.data, header=hdu.header, output_verify="silentfix")

    def add_image(
        self,
        ifu: int,
        image: CcdImage,
        bunit: str,
        stat_bunit: str,
    ) -> None:
        """Append ``CHANnn.DATA`` (with ``image.header``), ``CHANnn.DQ`` and ``CHANnn.STAT``."""
        name = chan_name(ifu)
        data = np.ascontiguousarray(image.data, dtype=np.float32)
        dq = np.ascontiguousarray(image.dq, dtype=np.int32)
        stat = np.ascontiguousarray(image.stat, dtype=np.float32)
        self._append(fits.ImageHDU(data, header=_image_header(name + ".DATA", "DATA", image.header, bunit)))
        self._append(fits.ImageHDU(dq, header=_image_header(name + ".DQ", "DQ", None, None)))
        self._append(fits.ImageHDU(stat, header=_image_header(name + ".STAT", "STAT", None, stat_bunit)))
        self.ifus.append(ifu)

    def add_table(self, ifu: int, table: "Table", header: fits.Header | None = None) -> None:
        """Append one binary-table extension ``CHANnn`` (``header`` keys are added to it)."""
        hdu = fits.BinTableHDU(table)
        if header is not None:
            for card in header.cards:
                if card.keyword not in STRUCTURAL_KEYS and card.keyword not in ("COMMENT", "HISTORY", ""):
                    hdu.header.append(card, end=True)
        hdu.header["EXTNAME"] = chan_name(ifu)
        self._append(hdu)
        self.ifus.append(ifu)


def write_ifu_images(
    path: Path,
    primary_header: fits.Header,
    ifus: Sequence[int],
    raw_paths: Sequence[Path],
    build: Callable[[int], CcdImage],
    bunit: str,
    stat_bunit: str,
) -> dict[str, object]:
    """Write a merged CCD-image product (MASTER_BIAS, MASTER_DARK ...) one IFU at a time.

    For each IFU in ``ifus``: hint the OS to read the next IFU of every raw file in
    ``raw_paths`` (so disk reads overlap with this IFU's computation), call
    ``build(ifu)`` for its :class:`CcdImage` and append it as ``CHANnn.DATA/DQ/STAT``
    (DATA in ``bunit``, STAT in ``stat_bunit``). Returns the QC of all IFUs as
    ``{"CHANnn QC ...": value}`` (the ``ESO QC`` keywords of each DATA header, without
    ``ESO``). On any error, including an interrupt, ``path`` is removed: nothing
    half-written stays behind.
    """
    path = Path(path)
    qc: dict[str, object] = {}
    try:
        writer = ProductWriter(path, primary_header)
        for k, ifu in enumerate(ifus):
            if k + 1 < len(ifus):
                for raw in raw_paths:
                    prefetch_raw_ifu(raw, ifus[k + 1])
            image = build(ifu)
            writer.add_image(ifu, image, bunit, stat_bunit)
            for card in image.header.cards:
                if card.keyword.startswith("ESO QC "):
                    qc[f"{chan_name(ifu)} {card.keyword[4:]}"] = card.value
            del image  # one IFU in memory at a time
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return qc


def _find_image_hdus(names: Sequence[str], ifu: int) -> tuple[int, int | None, int | None]:
    """HDU indices of DATA, DQ (or None) and STAT (or None) of one IFU, from the EXTNAMEs
    of all HDUs (merged ``CHANnn.DATA`` form or single-IFU form); KeyError if absent."""
    name = chan_name(ifu)
    if name + ".DATA" in names:
        data = names.index(name + ".DATA")
        dq = names.index(name + ".DQ") if name + ".DQ" in names else None
        stat = names.index(name + ".STAT") if name + ".STAT" in names else None
        return data, dq, stat
    if names and names[0] == name and "DATA" in names:
        return (
            names.index("DATA"),
            names.index("DQ") if "DQ" in names else None,
            names.index("STAT") if "STAT" in names else None,
        )
    raise KeyError(name)


def read_image_product(path: Path, ifu: int) -> CcdImage:
    """Read one IFU of a CCD image product (merged ``CHANnn.*`` or single-IFU form).

    Returns native-endian float32 DATA/STAT and int32 DQ (zeros when the file has no DQ,
    zeros for a missing STAT). ``header`` is the DATA extension header. Uncompressed files
    are read through :func:`fits_index` (no header but the DATA one is parsed; the
    arrays are read by offset), ``.fz`` files through astropy.
    """
    path = Path(path)
    if _is_compressed(path):
        return _read_image_product_astropy(path, ifu)
    hdus = fits_index(path)
    try:
        data_i, dq_i, stat_i = _find_image_hdus([h.name for h in hdus], ifu)
    except KeyError:
        raise RecipeError(f"{path}: no image extension for IFU {ifu} ({chan_name(ifu)}.DATA)") from None
    try:
        header = read_hdu_header(path, hdus[data_i])
        data = read_hdu_image(path, hdus[data_i], np.float32)
        dq = read_hdu_image(path, hdus[dq_i], np.int32) if dq_i is not None else np.zeros(data.shape, np.int32)
        stat = (
            read_hdu_image(path, hdus[stat_i], np.float32) if stat_i is not None else np.zeros(data.shape, np.float32)
        )
    except (OSError, ValueError, TypeError) as exc:
        raise RecipeError(f"{path}[{chan_name(ifu)}]: cannot read image data ({_one_line(exc)})") from None
    if data.ndim != 2 or dq.shape != data.shape or stat.shape != data.shape:
        raise RecipeError(f"{path}[{chan_name(ifu)}]: DATA, DQ and STAT shapes differ")
    return CcdImage(data=data, dq=dq, stat=stat, header=header)


def _read_image_product_astropy(path: Path, ifu: int) -> CcdImage:
    with _open(path, scaled=True) as hdul:
        try:
            data_i, dq_i, stat_i = _find_image_hdus([str(h.header.get("EXTNAME", "")).strip() for h in hdul], ifu)
        except KeyError:
            raise RecipeError(f"{path}: no image extension for IFU {ifu} ({chan_name(ifu)}.DATA)") from None
        except (OSError, ValueError) as exc:
            raise RecipeError(f"{path}: corrupt FITS structure ({_one_line(exc)})") from None
        try:
            header = hdul[data_i].header.copy()
            data = np.array(hdul[data_i].data, dtype=np.float32)
            dq = np.array(hdul[dq_i].data, dtype=np.int32) if dq_i is not None else np.zeros(data.shape, np.int32)
            stat = (
                np.array(hdul[stat_i].data, dtype=np.float32) if stat_i is not None else np.zeros(data.shape, np.float32)
            )
        except (OSError, ValueError, TypeError) as exc:
            raise RecipeError(f"{path}[{chan_name(ifu)}]: cannot read image data ({_one_line(exc)})") from None
    if data.ndim != 2 or dq.shape != data.shape or stat.shape != data.shape:
        raise RecipeError(f"{path}[{chan_name(ifu)}]: DATA, DQ and STAT shapes differ")
    return CcdImage(data=data, dq=dq, stat=stat, header=header)


def read_table_product(path: Path, ifu: int) -> tuple["Table", fits.Header]:
    """Read the ``CHANnn`` table extension of a table product: ``(table, header)``.

    Only that extension is parsed (located through :func:`fits_index`)."""
    path = Path(path)
    name = chan_name(ifu)
    hdu_info = next((h for h in fits_index(path)[1:] if h.name == name), None)
    if hdu_info is None:
        raise RecipeError(f"{path}: no table extension {name}")
    if hdu_info.xtension != "BINTABLE" or hdu_info.compressed:
        raise RecipeError(f"{path}[{name}]: not a binary table")
    from astropy.table import Table

    try:
        with open(path, "rb") as f:
            f.seek(hdu_info.header_offset)
            size = hdu_info.data_offset + hdu_info.data_size - hdu_info.header_offset
            raw = f.read(size)
        if len(raw) != size:
            raise ValueError("table data run past the end of the file")
        hdu = fits.BinTableHDU.fromstring(raw)
        return Table(hdu.data.copy() if hdu.data is not None else None), hdu.header.copy()
    except (OSError, ValueError, TypeError) as exc:
        raise RecipeError(f"{path}[{name}]: cannot read table ({_one_line(exc)})") from None


def read_badpix_table(path: Path, ifu: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Known bad pixels of one IFU from a BADPIX_TABLE: ``(xpos, ypos, status)``.

    ``xpos``/``ypos`` are 1-based **untrimmed raw** coordinates as in the DRS table;
    ``status`` holds Euro3D bits. An IFU without an extension has no bad pixels.
    """
    path = Path(path)
    if chan_name(ifu) not in [h.name for h in fits_index(path)[1:]]:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    table, _ = read_table_product(path, ifu)
    missing = [c for c in ("xpos", "ypos", "status") if c not in table.colnames]
    if missing:
        raise RecipeError(f"{path}[{chan_name(ifu)}]: BADPIX_TABLE lacks column(s) {', '.join(missing)}")
    return (
        np.asarray(table["xpos"], dtype=np.int64),
        np.asarray(table["ypos"], dtype=np.int64),
        np.asarray(table["status"], dtype=np.int64),
    )


# --------------------------------------------------------------------------------------
# A structural index of a FITS file: where each HDU's header and data start
#
# astropy finds extension n by parsing every header before it (as astropy Header objects,
# ≈ 1 ms per header of a MUSE raw file); a merged product has 73 extensions and is read
# once per IFU, so that re-parsing dominated the I/O of a 24-IFU reduction. The index
# reads only the structural cards of each 2880-byte header block, once per file version.

_BLOCK = 2880
_INDEX_CACHE: dict[tuple[str, int, int], list["HduInfo"]] = {}
_INDEX_CACHE_SIZE = 64
_NUMPY_TYPE = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


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


def _card_value(card: str) -> str:
    """The value field of a fixed-format card, without comment and (for strings) quotes."""
    text = card[10:]
    stripped = text.lstrip()
    if stripped.startswith("'"):
        body = stripped[1:]
        out, i = [], 0
        while i < len(body):  # '' inside a string is one quote
            if body[i] == "'":
                if body[i + 1 : i + 2] == "'":
                    out.append("'")
                    i += 2
                    continue
                break
            out.append(body[i])
            i += 1
        return "".join(out).rstrip()
    return text.split("/", 1)[0].strip()


def _scan_index(path: Path) -> list[HduInfo]:
    size = path.stat().st_size
    hdus: list[HduInfo] = []
    with open(path, "rb") as f:
        offset = 0
        while offset < size:
            f.seek(offset)
            cards: dict[str, str] = {}
            nblocks = 0
            ended = False
            while not ended:
                block = f.read(_BLOCK)
                if len(block) < _BLOCK:
                    if not hdus:
                        raise ValueError("not a FITS file (short header)")
                    if block.strip(b"\0 ") == b"":
                        return hdus  # padding after the last HDU
                    raise ValueError(f"truncated header of HDU {len(hdus)}")
                nblocks += 1
                text = block.decode("ascii", errors="replace")
                for k in range(0, _BLOCK, 80):
                    card = text[k : k + 80]
                    key = card[:8].rstrip()
                    if key == "END":
                        ended = True
                        break
                    if card[8:10] == "= " and key not in cards:
                        cards[key] = card
            first = "SIMPLE" if not hdus else "XTENSION"
            if first not in cards:
                if hdus and text.strip(" \0") == "":
                    return hdus
                raise ValueError(f"HDU {len(hdus)} does not start with {first}")
            value = {key: _card_value(card) for key, card in cards.items()}
            bitpix = int(value["BITPIX"])
            naxis = int(value.get("NAXIS", "0"))
            axes = [int(value[f"NAXIS{i}"]) for i in range(1, naxis + 1)]
            pcount = int(value.get("PCOUNT", "0"))
            gcount = int(value.get("GCOUNT", "1"))
            nelem = int(np.prod(axes, dtype=np.int64)) if axes else 0
            nbytes = abs(bitpix) // 8 * gcount * (pcount + nelem) if axes else 0
            data_offset = offset + nblocks * _BLOCK
            blank = value.get("BLANK")
            hdus.append(
                HduInfo(
                    index=len(hdus),
                    name=value.get("EXTNAME", "").strip(),
                    xtension=value.get("XTENSION", "").strip(),
                    header_offset=offset,
                    data_offset=data_offset,
                    data_size=nbytes,
                    bitpix=bitpix,
                    shape=tuple(axes[::-1]),
                    bzero=float(value.get("BZERO", "0").replace("D", "E")),
                    bscale=float(value.get("BSCALE", "1").replace("D", "E")),
                    blank=int(blank) if blank is not None else None,
                    compressed=value.get("ZIMAGE", "F") == "T",
                )
            )
            offset = data_offset + -(-nbytes // _BLOCK) * _BLOCK
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
        except (OSError, ValueError, KeyError) as exc:
            raise RecipeError(f"{path}: corrupt FITS structure ({_one_line(exc)})") from None
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
    if hdu.compressed or hdu.xtension not in ("", "IMAGE") or hdu.bitpix not in _NUMPY_TYPE:
        raise ValueError("not an uncompressed image")
    count = int(np.prod(hdu.shape, dtype=np.int64)) if hdu.shape else 0
    with open(path, "rb") as f:
        f.seek(hdu.data_offset)
        stored = np.fromfile(f, dtype=_NUMPY_TYPE[hdu.bitpix], count=count)
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
