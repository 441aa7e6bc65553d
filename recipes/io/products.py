"""Writing and reading products in the DRS merged layout (recipes.md §4.1).

A product is a primary header with provenance, then per IFU ``CHANnn.DATA`` (float32),
``CHANnn.DQ`` (int32 Euro3D bits) and ``CHANnn.STAT`` (float32 variance) image
extensions, or one table extension ``CHANnn`` per IFU for table products.
:class:`ProductWriter` streams the extensions to disk one IFU at a time so that a 24-IFU
product never sits in memory. Readers accept the merged form and the single-IFU DRS form
(primary ``EXTNAME=CHANnn`` with ``DATA``/``DQ``/``STAT``); uncompressed files are read
through :func:`recipes.io.hdus.fits_index` (only the wanted IFU's headers are parsed).

A writer writes into the path it is given and never removes it: the runner gave the
recipe a staging folder and owns the cleanup of a failed run. Arrays are numpy
``[y, x]``, 0-based.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits

from recipes.base import RecipeError
from recipes.io.hdus import fits_index, is_compressed, one_line, open_hdul, read_hdu_header, read_hdu_image
from recipes.io.keywords import STRUCTURAL_KEYS, chan_name
from recipes.io.raw import prefetch_raw_ifu

if TYPE_CHECKING:  # astropy.table is slow to import; only table products need it
    from astropy.table import Table


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
    ``ESO``). On an error the partial file stays: the runner's staging folder holds it
    and the runner discards it.
    """
    path = Path(path)
    qc: dict[str, object] = {}
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
    if is_compressed(path):
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
        raise RecipeError(f"{path}[{chan_name(ifu)}]: cannot read image data ({one_line(exc)})") from None
    if data.ndim != 2 or dq.shape != data.shape or stat.shape != data.shape:
        raise RecipeError(f"{path}[{chan_name(ifu)}]: DATA, DQ and STAT shapes differ")
    return CcdImage(data=data, dq=dq, stat=stat, header=header)


def _read_image_product_astropy(path: Path, ifu: int) -> CcdImage:
    with open_hdul(path, scaled=True) as hdul:
        try:
            data_i, dq_i, stat_i = _find_image_hdus([str(h.header.get("EXTNAME", "")).strip() for h in hdul], ifu)
        except KeyError:
            raise RecipeError(f"{path}: no image extension for IFU {ifu} ({chan_name(ifu)}.DATA)") from None
        except (OSError, ValueError) as exc:
            raise RecipeError(f"{path}: corrupt FITS structure ({one_line(exc)})") from None
        try:
            header = hdul[data_i].header.copy()
            data = np.array(hdul[data_i].data, dtype=np.float32)
            dq = np.array(hdul[dq_i].data, dtype=np.int32) if dq_i is not None else np.zeros(data.shape, np.int32)
            stat = (
                np.array(hdul[stat_i].data, dtype=np.float32) if stat_i is not None else np.zeros(data.shape, np.float32)
            )
        except (OSError, ValueError, TypeError) as exc:
            raise RecipeError(f"{path}[{chan_name(ifu)}]: cannot read image data ({one_line(exc)})") from None
    if data.ndim != 2 or dq.shape != data.shape or stat.shape != data.shape:
        raise RecipeError(f"{path}[{chan_name(ifu)}]: DATA, DQ and STAT shapes differ")
    return CcdImage(data=data, dq=dq, stat=stat, header=header)


def read_table_product(path: Path, ifu: int) -> tuple["Table", fits.Header]:
    """Read the ``CHANnn`` table extension of a table product: ``(table, header)``.

    Only that extension is parsed (located through :func:`fits_index`). A single-IFU DRS
    file (primary ``EXTNAME = CHANnn``, the table in the first extension, unnamed) is
    read too."""
    path = Path(path)
    name = chan_name(ifu)
    hdus = fits_index(path)
    hdu_info = next((h for h in hdus[1:] if h.name == name), None)
    if hdu_info is None and hdus[0].name == name and len(hdus) > 1:
        hdu_info = hdus[1]
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
        raise RecipeError(f"{path}[{name}]: cannot read table ({one_line(exc)})") from None


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
