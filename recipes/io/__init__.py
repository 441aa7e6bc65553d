"""FITS input and output of the recipes: raw MUSE files, DRS-layout products, headers.

The package is split along what each part knows:

- :mod:`recipes.io.fitsblocks`: the one reader of 2880-byte header blocks and their
  cards (shared with the ingest, which must not depend on astropy's speed);
- :mod:`recipes.io.hdus`: where each HDU of a file is (:func:`fits_index`), one header or
  image read by offset, the primary header as an astropy Header;
- :mod:`recipes.io.keywords`: HIERARCH spelling, comments fitted to their card,
  structural keywords, IFU extension names;
- :mod:`recipes.io.raw`: raw files (``CHANnn``, uint16 counts);
- :mod:`recipes.io.products`: merged products (``CHANnn.DATA/DQ/STAT``, ``CHANnn`` tables).

The names below are re-exported so that recipes import them from ``recipes.io``. Every
problem with an input file becomes a one-line :class:`~recipes.base.RecipeError` naming
the file. Arrays are numpy ``[y, x]``, 0-based.
"""

from recipes.io.hdus import HduInfo, fits_index, read_hdu_header, read_hdu_image, read_primary_header
from recipes.io.keywords import STRUCTURAL_KEYS, chan_name, fit_comments, fitting_comment, hkey
from recipes.io.products import (
    CcdImage,
    ProductWriter,
    read_badpix_table,
    read_image_product,
    read_table_product,
    write_ifu_images,
)
from recipes.io.raw import list_ifus, prefetch_raw_ifu, read_raw_ifu

__all__ = [
    "STRUCTURAL_KEYS",
    "CcdImage",
    "HduInfo",
    "ProductWriter",
    "chan_name",
    "fit_comments",
    "fits_index",
    "fitting_comment",
    "hkey",
    "list_ifus",
    "prefetch_raw_ifu",
    "read_badpix_table",
    "read_hdu_header",
    "read_hdu_image",
    "read_image_product",
    "read_primary_header",
    "read_raw_ifu",
    "read_table_product",
    "write_ifu_images",
]
