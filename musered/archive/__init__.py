"""The ESO archive: query, calibration association, login and download.

One :class:`Archive` (:mod:`.client`) holds four replaceable parts:

- **query** (:class:`TapQuery`, :mod:`.query`) — ADQL over the archive's TAP service for
  raw data (``tap_obs``, table ``dbo.raw``) with pyvo. The archive replaced its WDB query
  forms by TAP; astroquery 0.4.11 (the latest release) still speaks WDB, the 0.4.12
  development line speaks TAP, so we talk TAP ourselves and need no pre-release.
- **associate** (:class:`CalSelector`, :mod:`.eso`) — the archive's calibration selector
  in raw-to-raw mode, through astroquery's ``Eso.get_associated_files``.
- **login** (:class:`EsoLogin`, :mod:`.eso`) — the OIDC token through astroquery; the
  password comes from an environment variable or the keyring, never from settings,
  never printed.
- **download** (:class:`AstroqueryDownloader`, :mod:`.eso`) — astroquery's
  ``Eso.retrieve_data`` into a staging folder, then :func:`verify_delivery`
  (:mod:`.verify`) before the file may enter ``raw_path``.

:class:`Retriever` (:mod:`.retrieve`) drives them: what ``raw_path`` lacks, in batches,
recorded in the database. :mod:`.config` holds the ``retrieve_data`` settings block and
:class:`ArchiveError`, :mod:`.files` the file record and the files already on disk,
:mod:`.helpers` small shared text and batching helpers.

Every URL comes from the installed astroquery (class attributes, and ``conf.tap_obs_url``
when it has TAP) and can be overridden by the ``retrieve_data`` settings block
(``tap_url``, ``calselector_url``, ``download_url``, ``auth_url``), set on our own
``EsoClass`` instance and pyvo service — that is how the tests point them at a local server.

Conventions: ``dp_id`` is the archive identifier, the file name without extension
(``MUSE.2017-06-16T01:34:56.867``; night logs ``MUSE.2017-06-16T01:34:56.867.NL``).
Sizes are bytes; dates are UT.

This package re-exports the names callers use, so ``from musered.archive import X``
works as it did when the client was one module.
"""

from .client import Archive
from .config import (
    DEFAULT_TAP_TABLE,
    DEFAULT_TAP_URL,
    KEYRING_SERVICE,
    PASSWORD_ENV,
    ArchiveConfig,
    ArchiveError,
    astroquery_defaults,
)
from .eso import AstroqueryDownloader, CalSelector, EsoLogin, astroquery_messages, make_eso, parse_association
from .files import FITS_SUFFIXES, NIGHTLOG_SUFFIX, ArchiveFile, local_files
from .query import (
    WDB_DATE_FIELDS,
    WDB_FORM_OPTIONS,
    WDB_TO_TAP_COLUMNS,
    TapQuery,
    adql_condition,
    adql_literal,
    filter_terms,
)
from .retrieve import RetrievalReport, Retriever
from .verify import FITS_BLOCK, Rejected, verify_delivery, verify_fits

__all__ = [
    "DEFAULT_TAP_TABLE", "DEFAULT_TAP_URL", "FITS_BLOCK", "FITS_SUFFIXES", "KEYRING_SERVICE",
    "NIGHTLOG_SUFFIX", "PASSWORD_ENV", "WDB_DATE_FIELDS", "WDB_FORM_OPTIONS", "WDB_TO_TAP_COLUMNS",
    "Archive", "ArchiveConfig", "ArchiveError", "ArchiveFile", "AstroqueryDownloader", "CalSelector",
    "EsoLogin", "Rejected", "RetrievalReport", "Retriever", "TapQuery",
    "adql_condition", "adql_literal", "astroquery_defaults", "astroquery_messages", "filter_terms",
    "local_files", "make_eso", "parse_association", "verify_delivery", "verify_fits",
]
