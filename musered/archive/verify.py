"""Checks of a delivered file before it may enter ``raw_path``.

The archive may deliver a truncated body, an HTML login page in place of a proprietary
file, or a ``.fits.Z`` that could not be uncompressed; :func:`verify_delivery` turns each
into a :class:`Rejected` whose message is what the user is told.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from .files import NIGHTLOG_SUFFIX
from .helpers import one_line

FITS_BLOCK = 2880


class Rejected(Exception):
    """A delivered file that must not enter raw_path; the message says why."""


def verify_delivery(path: Path, dp_id: str) -> None:
    """Check a delivered file before it may enter raw_path; Rejected says what is wrong.

    FITS files: the first card is ``SIMPLE``, every header parses, the HDUs add up to the
    file size (a truncated body fails), and CHECKSUM/DATASUM match when present. Night
    logs: plain text. An HTML page (the archive's login page) fails both.
    """
    name = path.name
    if not name.startswith(dp_id):
        raise Rejected(f"delivered as {name}, expected a file named after {dp_id}")
    with open(path, "rb") as fh:
        head = fh.read(FITS_BLOCK)
    if _looks_like_html(head):
        raise Rejected("the archive sent an HTML page (its login page?) instead of the file; "
                       "log in with --username for proprietary data")
    if name.endswith(NIGHTLOG_SUFFIX):
        if b"\x00" in head:
            raise Rejected("night log is not a text file")
        return
    if name.endswith(".fits.Z") or name.endswith(".fits.gz"):
        raise Rejected("compressed delivery could not be uncompressed (is gunzip installed?)")
    if not name.endswith((".fits", ".fits.fz")):
        raise Rejected(f"unexpected file type {name}")
    verify_fits(path)


def verify_fits(path: Path) -> int:
    """Check a FITS file on disk: the first card is ``SIMPLE``, every header parses, the
    HDUs add up to the file size, and every CHECKSUM and DATASUM present matches (of the
    HDUs as stored: a tile-compressed ``.fits.fz`` is not uncompressed). Rejected says
    what is wrong; returns how many CHECKSUM/DATASUM keywords were verified (0: none)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(FITS_BLOCK)
    if not head.startswith(b"SIMPLE  ="):
        raise Rejected(f"not a FITS file (starts with {head[:20]!r})")
    if size % FITS_BLOCK:
        raise Rejected(f"truncated: {size} bytes is not a whole number of FITS blocks")
    return _verify_fits_structure(path, size)


def _verify_fits_structure(path: Path, size: int) -> int:
    from astropy.io import fits

    verified = 0

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # compressed HDUs as stored, so that their checksums are those of the file
            with fits.open(path, memmap=False, lazy_load_hdus=False,
                           disable_image_compression=True) as hdul:
                last = hdul.fileinfo(len(hdul) - 1)
                expected = last["datLoc"] + last["datSpan"]
                if expected != size:
                    raise Rejected(f"truncated or padded: {size} bytes, its FITS headers describe {expected}")
                for index, hdu in enumerate(hdul):
                    # DATASUM first: a changed data block is the likelier damage, and its
                    # message is the more precise one (CHECKSUM covers header and data)
                    if "DATASUM" in hdu.header:
                        if hdu.verify_datasum() == 0:
                            raise Rejected(f"DATASUM mismatch in HDU {index}")
                        verified += 1
                    if "CHECKSUM" in hdu.header:
                        if hdu.verify_checksum() == 0:
                            raise Rejected(f"CHECKSUM mismatch in HDU {index}")
                        verified += 1
        except Rejected:
            raise
        except Exception as exc:
            raise Rejected(f"unreadable FITS: {one_line(exc)}") from None
    problems = [str(w.message) for w in caught if "truncat" in str(w.message).lower()
                or "header size" in str(w.message).lower()]
    if problems:
        raise Rejected(f"corrupt FITS: {one_line(problems[0])}")
    return verified


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip()[:200].lower()
    return start.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")) or b"<html" in start
