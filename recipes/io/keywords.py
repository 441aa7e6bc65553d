"""Header keywords as products write them: HIERARCH spelling, comments that fit their
card, the structural keywords never copied between headers, IFU extension names.

:func:`fitting_comment` is the one place a comment is shortened to fit its 80-character
card (:func:`fit_comments` applies it to a whole header, :func:`recipes.provenance.add_qc`
to each QC card): astropy would cut such comments too, but with a VerifyWarning per card
at write time, which the user sees in the log. Values are never touched.
"""

from __future__ import annotations

from astropy.io import fits

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


def hkey(key: str) -> str:
    """Spell a long keyword (``ESO QC ...``) as ``HIERARCH ...`` so astropy does not warn."""
    return key if len(key) <= 8 and " " not in key else "HIERARCH " + key


def fitting_comment(keyword: str, value: object, comment: str) -> str:
    """``comment``, shortened (and right-stripped) so that the card ``keyword = value /
    comment`` fits 80 characters; unchanged when it fits. ``keyword`` as astropy spells it
    (``ESO QC ...``, without ``HIERARCH``)."""
    if not comment:
        return comment
    bare = len(fits.Card(hkey(keyword), value).image.rstrip())
    room = 80 - bare - 3  # " / "
    return comment if len(comment) <= room else comment[: max(room, 0)].rstrip()


def fit_comments(header: fits.Header) -> fits.Header:
    """Shorten, in place, the comments that do not fit on their card (:func:`fitting_comment`;
    COMMENT, HISTORY and blank cards are left alone). Returns ``header``."""
    for index, card in enumerate(header.cards):
        if not card.comment or card.keyword in ("COMMENT", "HISTORY", ""):
            continue
        comment = fitting_comment(card.keyword, card.value, card.comment)
        if comment != card.comment:
            header.comments[index] = comment
    return header


def chan_name(ifu: int) -> str:
    """Extension name of an IFU: ``CHAN01`` .. ``CHAN24``."""
    return f"CHAN{ifu:02d}"
