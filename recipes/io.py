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
    """Ask the OS to start reading one IFU's image data of a raw file in the background.

    A hint only (``posix_fadvise(WILLNEED)``): returns at once, never raises. Recipes
    call it for the next IFU while they compute the current one, so that disk reads
    overlap with computation.
    """
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        with fits.open(path, memmap=True, do_not_scale_image_data=True, lazy_load_hdus=True) as hdul:
            index = hdul.index_of(chan_name(ifu))
            info = hdul.fileinfo(index)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, int(info["datLoc"]), int(info["datSpan"]), os.POSIX_FADV_WILLNEED)
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


def _find_image_hdus(hdul: fits.HDUList, ifu: int) -> tuple[int, int | None, int | None]:
    name = chan_name(ifu)
    names = [str(h.header.get("EXTNAME", "")).strip() for h in hdul]
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
    zeros for a missing STAT). ``header`` is the DATA extension header.
    """
    path = Path(path)
    with _open(path, scaled=True) as hdul:
        try:
            data_i, dq_i, stat_i = _find_image_hdus(hdul, ifu)
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
    """Read the ``CHANnn`` table extension of a table product: ``(table, header)``."""
    path = Path(path)
    name = chan_name(ifu)
    with _open(path, scaled=True) as hdul:
        try:
            hdu = hdul[name]
        except KeyError:
            raise RecipeError(f"{path}: no table extension {name}") from None
        except (OSError, ValueError) as exc:
            raise RecipeError(f"{path}: corrupt FITS structure ({_one_line(exc)})") from None
        if not isinstance(hdu, fits.BinTableHDU):
            raise RecipeError(f"{path}[{name}]: not a binary table")
        from astropy.table import Table
        try:
            return Table(hdu.data.copy() if hdu.data is not None else None), hdu.header.copy()
        except (OSError, ValueError, TypeError) as exc:
            raise RecipeError(f"{path}[{name}]: cannot read table ({_one_line(exc)})") from None


def read_badpix_table(path: Path, ifu: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Known bad pixels of one IFU from a BADPIX_TABLE: ``(xpos, ypos, status)``.

    ``xpos``/``ypos`` are 1-based **untrimmed raw** coordinates as in the DRS table;
    ``status`` holds Euro3D bits. An IFU without an extension has no bad pixels.
    """
    path = Path(path)
    with _open(path, scaled=True) as hdul:
        names = [str(h.header.get("EXTNAME", "")).strip() for h in hdul]
        if chan_name(ifu) not in names:
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
