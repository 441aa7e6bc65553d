"""The origin word of a pixel-table row: where on which CCD the pixel was (recipes.md §4.6).

The DRS packs (IFU, slice, CCD x, CCD y) of every row into one 32-bit word
(muse_pixtable.h): slice in bits 0-5, IFU in bits 6-10, 1-based trimmed-CCD y in bits
11-23 and x − XOFFSET(slice) in bits 24-31, where XOFFSET is the slice's leftmost pixel
− 1, recorded per exposure, IFU and slice in the table header (:func:`xoffset_key`).
Files store the word as int32 (negative when bit 31 is set); in memory it is uint32.
IFU, slice and CCD coordinates are 1-based, as the DRS counts them.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from recipes.base import RecipeError
from recipes.algorithms.pixtable import pkey

#: Bit layout of ``origin`` (muse_pixtable.h): slice in bits 0-5, IFU in bits 6-10,
#: 1-based CCD y in bits 11-23, x − XOFFSET(slice) in bits 24-31.
MUSE_ORIGIN_SHIFT_IFU = 6
MUSE_ORIGIN_SHIFT_YPIX = 11
MUSE_ORIGIN_SHIFT_XSLICE = 24
_SLICE_MASK = 0x3F
_IFU_MASK = 0x1F
_YPIX_MASK = 0x1FFF
_XSLICE_MASK = 0xFF


def xoffset_key(ifu: int, slice_: int, exp: int = 0) -> str:
    """Header key of the per-slice x offset used by the origin column (DRS spelling)."""
    return pkey(f"EXP{exp}", f"IFU{ifu:02d}", f"SLICE{slice_:02d}", "XOFFSET")


def pack_origin(ifu, slice_, x, y, xoffset) -> np.ndarray:
    """Pack 1-based (IFU, slice, CCD x, CCD y) into the DRS origin word (uint32).

    ``x`` and ``y`` are 1-based trimmed-CCD pixel coordinates; ``xoffset`` is the slice's
    x offset (``x − xoffset`` must fit 0..255; the DRS uses the slice's leftmost pixel − 1).
    ValueError when a field does not fit its bits.
    """
    ifu = np.asarray(ifu, dtype=np.int64)
    slice_ = np.asarray(slice_, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    xs = np.asarray(x, dtype=np.int64) - np.asarray(xoffset, dtype=np.int64)
    for name, value, mask, low in (
        ("slice", slice_, _SLICE_MASK, 1),
        ("IFU", ifu, _IFU_MASK, 1),
        ("y", y, _YPIX_MASK, 1),
        ("x - xoffset", xs, _XSLICE_MASK, 0),
    ):
        if value.size and (value.min() < low or value.max() > mask):
            raise ValueError(f"origin field {name} outside {low}..{mask}")
    packed = (
        (xs << MUSE_ORIGIN_SHIFT_XSLICE)
        | (y << MUSE_ORIGIN_SHIFT_YPIX)
        | (ifu << MUSE_ORIGIN_SHIFT_IFU)
        | slice_
    )
    return packed.astype(np.uint32)


def unpack_origin(origin) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(ifu, slice, xslice, y)`` from origin words; CCD x = xslice + XOFFSET(ifu, slice).

    Accepts the int32 values read from a DRS file (negative when bit 31 is set).
    """
    o = np.asarray(origin)
    if o.dtype not in (np.dtype(np.int32), np.dtype(np.uint32)):
        o = o.astype(np.int64) & 0xFFFFFFFF
    # 32-bit words as they are (no int64 copy): each field is masked after the shift, so
    # the sign extension of an int32 with bit 31 set never reaches the kept bits
    ifu = ((o >> MUSE_ORIGIN_SHIFT_IFU) & _IFU_MASK).astype(np.int32, copy=False)
    slice_ = (o & _SLICE_MASK).astype(np.int32, copy=False)
    y = ((o >> MUSE_ORIGIN_SHIFT_YPIX) & _YPIX_MASK).astype(np.int32, copy=False)
    xs = ((o >> MUSE_ORIGIN_SHIFT_XSLICE) & _XSLICE_MASK).astype(np.int32, copy=False)
    return ifu, slice_, xs, y


def origin_to_ccd(origin, header: fits.Header, exp: int = 0) -> tuple[np.ndarray, ...]:
    """``(ifu, slice, x, y)`` 1-based CCD coordinates, x via the header XOFFSET keys.

    RecipeError when a needed ``... EXPe IFUnn SLICEmm XOFFSET`` key is missing.
    """
    ifu, slice_, xs, y = unpack_origin(origin)
    table = np.zeros((32, 64), dtype=np.int32)
    pairs = np.unique(ifu.astype(np.int64) * 64 + slice_) if ifu.size else np.zeros(0, np.int64)
    for pair in pairs:
        i, s = divmod(int(pair), 64)
        key = xoffset_key(i, s, exp)
        if key not in header:
            raise RecipeError(f"pixel table header lacks {key}")
        table[i, s] = int(header[key])
    return ifu, slice_, xs + table[ifu, slice_], y
