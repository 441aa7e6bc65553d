"""Reading raw MUSE files: the IFUs present, one IFU as uint16 counts, read-ahead hints.

Raw files (muse-raw-format.md): an empty primary HDU, then image extensions ``CHANnn``
(``BITPIX=16``, ``BZERO=32768``: uint16 counts in adu). Uncompressed files are located
through :func:`recipes.io.hdus.fits_index` and the signed 16-bit storage is turned into
the unsigned values by flipping the sign bit (XOR 0x8000, with the byte swap, in one
parallel pass: :func:`recipes.kernels.overscan.decode_bzero16`), which gives exactly the
scaled values. Tile-compressed ``.fits.fz`` files and other integer encodings go through
astropy's scaled read. Arrays are numpy ``[y, x]``, 0-based.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.base import RecipeError
from recipes.io.hdus import NUMPY_TYPE, fits_index, is_compressed, one_line, open_hdul, read_hdu_header
from recipes.io.keywords import chan_name
from recipes.kernels.overscan import decode_bzero16

_CHAN_RE = re.compile(r"^CHAN(\d\d)$")
_CHAN_ANY_RE = re.compile(r"^CHAN(\d\d)(\.DATA)?$")


def list_ifus(path: Path) -> list[int]:
    """IFU numbers of the ``CHANnn`` extensions of a raw file (or ``CHANnn.DATA`` of a product)."""
    ifus = []
    with open_hdul(path, scaled=False) as hdul:
        try:
            for hdu in hdul:
                match = _CHAN_ANY_RE.match(str(hdu.header.get("EXTNAME", "")).strip())
                if match and hdu is not hdul[0]:
                    ifus.append(int(match.group(1)))
            if not ifus and _CHAN_RE.match(str(hdul[0].header.get("EXTNAME", "")).strip()):
                ifus.append(int(hdul[0].header["EXTNAME"][4:6]))
        except (OSError, ValueError) as exc:
            raise RecipeError(f"{path}: corrupt FITS structure ({one_line(exc)})") from None
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
    if is_compressed(path):
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
        if hdu.bitpix not in NUMPY_TYPE:
            raise ValueError(f"BITPIX {hdu.bitpix} is not a FITS image type")
        if hdu.data_offset + hdu.data_size > path.stat().st_size:
            raise ValueError("data run past the end of the file")
        raw = np.memmap(path, dtype=NUMPY_TYPE[hdu.bitpix], mode="r", offset=hdu.data_offset, shape=hdu.shape)
        try:
            image = _to_uint16(raw, header, False, out)
        finally:
            del raw
    except (OSError, ValueError, TypeError) as exc:
        raise RecipeError(f"{where}: cannot read image data ({one_line(exc)}; truncated file?)") from None
    return image, header


def _read_raw_ifu_astropy(path: Path, ifu: int, out: np.ndarray | None) -> tuple[np.ndarray, fits.Header]:
    name = chan_name(ifu)
    compressed = is_compressed(path)
    with open_hdul(path, scaled=compressed) as hdul:
        try:
            hdu = hdul[name]
        except KeyError:
            raise RecipeError(f"{path}: no extension {name}") from None
        except (OSError, ValueError) as exc:
            raise RecipeError(f"{path}: corrupt FITS structure before {name} ({one_line(exc)})") from None
        header = hdu.header.copy()
        where = f"{path}[{name}]"
        try:
            raw = hdu.data
        except (OSError, ValueError, TypeError) as exc:
            raise RecipeError(f"{where}: cannot read image data ({one_line(exc)})") from None
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
            raise RecipeError(f"{where}: cannot read image data ({one_line(exc)}; truncated file?)") from None
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
