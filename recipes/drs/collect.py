"""What esorex wrote, as Products: per-IFU files merged into our layout, tags from ``ESO PRO CATG``.

The DRS run per IFU (``--nifu=k``, ``--merge=false``) writes one file per IFU and tag,
``MASTER_BIAS-01.fits``, whose primary header has ``EXTNAME = CHANnn`` and whose
extensions are ``DATA``/``DQ``/``STAT`` (images) or one unnamed table. Our recipes and
the association expect one file per tag with every IFU (recipes/io/products.py: a
primary header, then ``CHANnn.DATA/DQ/STAT`` or ``CHANnn`` tables, as the DRS's own
``--merge=true`` writes), except pixel tables, which both write one file per IFU
(``PIXTABLE_OBJECT_0001-01.fits``). :func:`merge_ifu_files` makes that layout,
extension by extension so that one IFU at a time is in memory.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from astropy.io import fits

from recipes.base import Product, RecipeError
from recipes.io.keywords import chan_name, fitting_comment, hkey

logger = logging.getLogger("recipes.drs")

_IFU_FILE = re.compile(r"^(?P<stem>.+)-(?P<ifu>\d\d)\.fits$")
_CHAN = re.compile(r"^CHAN(\d\d)$")
# Primary keywords that belong to one IFU: in the merged file they go to that IFU's first
# extension (our products keep QC and DRS keywords there, recipes/io/products.py).
_PER_IFU_PREFIXES = ("ESO QC ", "ESO DRS MUSE ", "ESO DET CHIP", "ESO DET OUT")
# Checksums of the per-IFU file are wrong for the merged one (astropy writes new ones).
_DROPPED = ("EXTNAME", "DATAMD5", "CHECKSUM", "DATASUM")
_POINTERS = ("SCIDATA", "QUALDATA", "ERRDATA")


def product_ifu(header: fits.Header, path: Path) -> int | None:
    """The IFU of a single-IFU DRS file (primary ``EXTNAME = CHANnn``), else None."""
    match = _CHAN.match(str(header.get("EXTNAME", "")).strip())
    if match and _IFU_FILE.match(path.name):
        return int(match.group(1))
    return None


def keeps_ifu_files(tag: str) -> bool:
    """Pixel tables stay one file per IFU (the DRS and our scibasic both write them so)."""
    return tag.startswith("PIXTABLE_")


def collect_products(outdir: Path, outputs: Sequence[str], skip: Iterable[Path] = ()) -> list[Product]:
    """The FITS files in ``outdir`` (not in ``skip``) as Products, per-IFU ones merged.

    Files whose ``ESO PRO CATG`` is not one of ``outputs`` are logged and left out (they
    stay in the folder, unrecorded). QC values are the primary's ``ESO QC`` keywords, as
    ``"CHANnn QC ..."`` for a product of IFUs, ``"QC ..."`` otherwise.
    """
    skipped = {Path(p).resolve() for p in skip}
    groups: dict[tuple[str, str], list[tuple[int, Path]]] = {}
    products: list[Product] = []
    for path in sorted(Path(outdir).glob("*.fits")):
        if path.resolve() in skipped:
            continue
        try:
            header = fits.getheader(path)
        except (OSError, ValueError) as exc:
            raise RecipeError(f"esorex wrote {path.name}, which is not readable FITS ({exc})") from None
        tag = str(header.get("ESO PRO CATG", "")).strip()
        if tag not in outputs:
            logger.warning("esorex wrote %s (PRO CATG %r), not an output of this recipe: not recorded",
                           path.name, tag or None)
            continue
        ifu = product_ifu(header, path)
        if ifu is None:
            products.append(Product(path, tag, (), _qc(header)))
        elif keeps_ifu_files(tag):
            products.append(Product(path, tag, (ifu,), _qc(header, ifu)))
        else:
            stem = _IFU_FILE.match(path.name).group("stem")
            groups.setdefault((tag, stem), []).append((ifu, path))
    for (tag, stem), members in sorted(groups.items()):
        members.sort()
        merged = merge_ifu_files([p for _, p in members], Path(outdir) / f"{stem}.fits")
        qc: dict[str, float | int | str] = {}
        for ifu, path in members:
            qc.update(_qc(fits.getheader(path), ifu))
        for _, path in members:  # merged: the per-IFU parts would be a second copy of the product
            path.unlink()
        products.append(Product(merged, tag, tuple(i for i, _ in members), qc))
    return products


def _qc(header: fits.Header, ifu: int | None = None) -> dict[str, float | int | str]:
    prefix = f"{chan_name(ifu)} " if ifu is not None else ""
    return {prefix + card.keyword[4:]: card.value for card in header.cards
            if card.keyword.startswith("ESO QC ")}


def merge_ifu_files(paths: Sequence[Path], target: Path) -> Path:
    """Merge single-IFU DRS files (primary ``EXTNAME = CHANnn``) into ``target``.

    The primary header is the first file's without its per-IFU keywords; each file's
    extensions follow as ``CHANnn.<EXTNAME>`` (``CHANnn`` for an unnamed one, a table),
    the first of them carrying that IFU's QC/DRS/detector keywords from its primary.
    """
    first = fits.getheader(paths[0])
    primary = fits.Header()
    for card in first.cards:
        if card.keyword in _DROPPED or card.keyword.startswith(_PER_IFU_PREFIXES):
            continue
        primary.append(card, end=True)
    if "PIPEFILE" in primary:
        primary["PIPEFILE"] = target.name
    fits.PrimaryHDU(header=primary).writeto(target, overwrite=True, checksum=True)
    for path in paths:
        with fits.open(path, memmap=True) as hdul:
            ifu = product_ifu(hdul[0].header, Path(path))
            if ifu is None:
                raise RecipeError(f"{path}: not a single-IFU DRS file (no EXTNAME = CHANnn), cannot merge")
            name = chan_name(ifu)
            own = [card for card in hdul[0].header.cards
                   if card.keyword.startswith(_PER_IFU_PREFIXES)]
            names = {str(h.header.get("EXTNAME", "")).strip() for h in hdul[1:]}
            for k, hdu in enumerate(hdul[1:]):
                header = hdu.header.copy()
                ext = str(header.get("EXTNAME", "")).strip()
                header["EXTNAME"] = f"{name}.{ext}" if ext else name
                for key in _POINTERS:
                    if str(header.get(key, "")).strip() in names:
                        header[key] = f"{name}.{header[key].strip()}"
                if k == 0:
                    for card in own:
                        # the same card is longer as HIERARCH in an extension: shorten its comment
                        comment = fitting_comment(card.keyword, card.value, card.comment)
                        header[hkey(card.keyword)] = (card.value, comment)
                for key in ("CHECKSUM", "DATASUM"):
                    header.remove(key, ignore_missing=True)
                fits.append(target, hdu.data, header=header, checksum=True)
    return target
