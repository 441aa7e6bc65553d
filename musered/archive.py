"""The ESO archive: query, calibration association, login and download.

One :class:`Archive` holds four replaceable parts:

- **query** (:class:`TapQuery`) — ADQL over the archive's TAP service for raw data
  (``tap_obs``, table ``dbo.raw``) with pyvo. The archive replaced its WDB query forms by
  TAP; astroquery 0.4.11 (the latest release) still speaks WDB, the 0.4.12 development
  line speaks TAP, so we talk TAP ourselves and need no pre-release.
- **associate** (:class:`CalSelector`) — the archive's calibration selector in
  raw-to-raw mode, through astroquery's ``Eso.get_associated_files``.
- **login** (:class:`EsoLogin`) — the OIDC token through astroquery; the password comes
  from an environment variable or the keyring, never from settings, never printed.
- **download** (:class:`AstroqueryDownloader`) — astroquery's ``Eso.retrieve_data`` into
  a staging folder, then :func:`verify_delivery` before the file may enter ``raw_path``.

Every URL comes from the installed astroquery (class attributes, and ``conf.tap_obs_url``
when it has TAP) and can be overridden by the ``retrieve_data`` settings block
(``tap_url``, ``calselector_url``, ``download_url``, ``auth_url``), set on our own
``EsoClass`` instance and pyvo service — that is how the tests point them at a local server.

Conventions: ``dp_id`` is the archive identifier, the file name without extension
(``MUSE.2017-06-16T01:34:56.867``; night logs ``MUSE.2017-06-16T01:34:56.867.NL``).
Sizes are bytes; dates are UT.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import shutil
import tempfile
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from dataclasses import field as dc_field
from pathlib import Path

from .errors import MuseredError

logger = logging.getLogger(__name__)

# Used when astroquery has no TAP configuration (0.4.11; 0.4.12.dev has conf.tap_obs_url).
DEFAULT_TAP_URL = "https://archive.eso.org/tap_obs"
DEFAULT_TAP_TABLE = "dbo.raw"
# astroquery stores ESO passwords under this keyring service (Eso.login(store_password=True)).
KEYRING_SERVICE = "astroquery:www.eso.org"
PASSWORD_ENV = "MUSERED_ESO_PASSWORD"

FITS_SUFFIXES = (".fits.fz", ".fits.Z", ".fits.gz", ".fits")
NIGHTLOG_SUFFIX = ".NL.txt"
FITS_BLOCK = 2880
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_OPERATORS = ("<=", ">=", "!=", "<>", "=", "<", ">", "not like ", "not in ", "not between ",
              "like ", "in ", "between ", "is ")


class ArchiveError(MuseredError):
    """The archive failed or refused a request (one-line message naming the service)."""


@dataclass(frozen=True)
class ArchiveConfig:
    """The ``retrieve_data`` settings block, with the archive's defaults.

    ``username`` may also come from ``--username``; ``password_env`` names the
    environment variable read before the keyring; ``store_password`` stores a password
    typed at the prompt in the keyring. ``batch_size`` is the number of science files per
    calselector request and per download batch.
    """

    instrument: str = "MUSE"
    tap_url: str | None = None          # None: astroquery's, see astroquery_defaults()
    tap_table: str = DEFAULT_TAP_TABLE
    calselector_url: str | None = None
    download_url: str | None = None
    auth_url: str | None = None
    username: str | None = None
    password_env: str = PASSWORD_ENV
    store_password: bool = False
    row_limit: int = 100_000
    batch_size: int = 100

    def __post_init__(self) -> None:
        for key, value in astroquery_defaults().items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)

    @classmethod
    def from_settings(cls, block: dict | None, username: str | None = None) -> ArchiveConfig:
        block = dict(block or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(block) - set(known))
        if unknown:
            raise MuseredError(
                f"unknown key(s) in settings retrieve_data: {', '.join(unknown)} "
                f"(valid: {', '.join(known)})")
        for key in ("row_limit", "batch_size"):
            if key in block and (not isinstance(block[key], int) or block[key] < 1):
                raise MuseredError(f"settings retrieve_data.{key} must be a positive integer, "
                                   f"not {block[key]!r}")
        if username:
            block["username"] = username
        for key in ("instrument", "tap_url", "tap_table", "calselector_url", "download_url",
                    "auth_url", "password_env"):
            if key in block and (not isinstance(block[key], str) or not block[key]):
                raise MuseredError(f"settings retrieve_data.{key} must be a non-empty string")
        if not _IDENTIFIER.match(block.get("tap_table", DEFAULT_TAP_TABLE)):
            raise MuseredError(f"settings retrieve_data.tap_table is not a table name: "
                               f"{block['tap_table']!r}")
        return cls(**block)


def astroquery_defaults() -> dict[str, str]:
    """The archive URLs of the installed astroquery (its class attributes and config)."""
    from astroquery.eso import EsoClass, conf

    return {
        "tap_url": getattr(conf, "tap_obs_url", None) or DEFAULT_TAP_URL,
        "calselector_url": EsoClass.CALSELECTOR_URL,
        "download_url": EsoClass.DOWNLOAD_URL,
        "auth_url": EsoClass.AUTH_URL,
    }


@dataclass(frozen=True)
class ArchiveFile:
    """One file known to the archive; ``size`` in bytes (the archive's estimate) or None."""

    dp_id: str
    dp_cat: str = ""
    dp_type: str = ""
    object: str = ""
    date_obs: str = ""
    size: int | None = None

    @property
    def kind(self) -> str:
        if self.dp_id.endswith(".NL"):
            return "night log"
        return "science" if self.dp_cat == "SCIENCE" else (self.dp_cat.lower() or "calib")


# --------------------------------------------------------------------------------------
# Query: TAP with pyvo


def adql_literal(value) -> str:
    """An ADQL literal: numbers as they are, strings quoted with '' escaping."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (dt.date, dt.datetime)):
        value = value.isoformat()
    return "'" + str(value).replace("'", "''") + "'"


def adql_condition(column: str, value) -> str:
    """One WHERE term from an ``archive_filter`` item.

    ``{target: IC4406}`` -> ``target = 'IC4406'``; a list gives ``in (...)``; a string
    starting with an operator (``"like 'IC44%'"``, ``">= '2017-06-01'"``,
    ``"between 'a' and 'b'"``) is passed on as written, as astroquery does.
    """
    if not isinstance(column, str) or not _IDENTIFIER.match(column):
        raise MuseredError(f"archive_filter key {column!r} is not a column name "
                           "(see musered retrieve-data --help-query)")
    if isinstance(value, (list, tuple)):
        if not value:
            raise MuseredError(f"archive_filter {column}: empty list")
        return f"{column} in ({', '.join(adql_literal(v) for v in value)})"
    if isinstance(value, str):
        text = value.strip()
        if any(text.lower().startswith(op) for op in _OPERATORS):
            return f"{column} {text}"
    if value is None:
        return f"{column} is null"
    return f"{column} = {adql_literal(value)}"


# MuseRed's archive_filter used the WDB "Raw Data Query Form" field names
# (astroquery.Eso.query_instrument column_filters); the TAP table names some differently.
WDB_TO_TAP_COLUMNS = {"obs_targ_name": "target"}
# WDB date fields (UT dates, both ends included) -> a condition on the TAP exposure start.
WDB_DATE_FIELDS = ("stime", "etime")
# WDB form options that are not filters.
WDB_FORM_OPTIONS = ("max_rows_returned", "wdbo", "top", "tab_dp_id")


def filter_terms(archive_filter: dict) -> list[str]:
    """ADQL WHERE terms of a dataset's ``archive_filter``, accepting MuseRed's WDB names.

    ``obs_targ_name`` becomes ``target``; ``stime``/``etime`` (UT dates, inclusive) become
    bounds on ``exp_start``; WDB form options (``max_rows_returned`` ...) are dropped. Each
    translation is logged once, so that a MuseRed settings file works unchanged and the
    user learns the TAP spelling.
    """
    terms = []
    for key, value in archive_filter.items():
        if key in WDB_FORM_OPTIONS:
            logger.warning("archive_filter %s: a WDB form option, not a filter: ignored "
                           "(use retrieve_data.row_limit for the number of rows)", key)
            continue
        if key in WDB_DATE_FIELDS:
            try:
                day = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value).strip()[:10])
            except ValueError:
                raise MuseredError(f"archive_filter {key}: {value!r} is not a date (YYYY-MM-DD)") from None
            if key == "stime":
                terms.append(f"exp_start >= {adql_literal(day.isoformat())}")
            else:
                terms.append(f"exp_start < {adql_literal((day + dt.timedelta(days=1)).isoformat())}")
            logger.info("archive_filter %s (WDB form name): exp_start %s %s", key,
                        ">=" if key == "stime" else "<=", day.isoformat())
            continue
        if key in WDB_TO_TAP_COLUMNS:
            logger.info("archive_filter %s (WDB form name) is the archive's TAP column %s",
                        key, WDB_TO_TAP_COLUMNS[key])
            key = WDB_TO_TAP_COLUMNS[key]
        terms.append(adql_condition(key, value))
    return terms


class TapQuery:
    """Queries of the archive's raw-data table over TAP (synchronous, pyvo)."""

    def __init__(self, config: ArchiveConfig):
        self.config = config

    def run(self, adql: str):
        """Run ``adql``; an astropy Table, or ArchiveError with a one-line reason."""
        import pyvo

        logger.debug("TAP %s: %s", self.config.tap_url, adql)
        try:
            service = pyvo.dal.TAPService(self.config.tap_url)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # VOTable and overflow chatter
                table = service.run_sync(adql, maxrec=self.config.row_limit).to_table()
        except pyvo.dal.DALQueryError as exc:
            raise ArchiveError(f"archive query rejected by {self.config.tap_url}: "
                               f"{_one_line(exc.reason or exc)}") from None
        except pyvo.dal.DALServiceError as exc:
            raise ArchiveError(f"archive query failed at {self.config.tap_url}: "
                               f"{_service_reason(exc)}") from None
        except (pyvo.dal.DALFormatError, ValueError, OSError) as exc:
            raise ArchiveError(f"archive query failed at {self.config.tap_url}: {_one_line(exc)}") from None
        if len(table) >= self.config.row_limit:
            logger.warning("the archive returned %d rows, the row limit: results may be incomplete "
                           "(raise retrieve_data.row_limit or narrow the query with --start/--end)",
                           len(table))
        return table

    def columns(self) -> list[dict[str, str]]:
        """The queryable columns of the raw-data table: name, datatype, unit, description."""
        table = self.run(
            "select column_name, datatype, unit, description from TAP_SCHEMA.columns "
            f"where table_name = {adql_literal(self.config.tap_table)}")
        return [{name: _text(row[name]) for name in ("column_name", "datatype", "unit", "description")}
                for row in table]

    def _files(self, terms: list[str]) -> list[ArchiveFile]:
        terms = [adql_condition("instrument", self.config.instrument), *terms]
        table = self.run(
            "select dp_id, dp_cat, dp_type, object, date_obs, access_estsize "
            f"from {self.config.tap_table} where {' and '.join(terms)} order by dp_id")
        files = []
        for row in table:
            size = row["access_estsize"]
            try:
                size = int(size) * 1024 if size is not None and str(size) not in ("", "--") else None
            except (TypeError, ValueError):
                size = None
            files.append(ArchiveFile(_text(row["dp_id"]), _text(row["dp_cat"]), _text(row["dp_type"]),
                                     _text(row["object"]), _text(row["date_obs"]), size))
        return files

    def science_files(self, archive_filter: dict, start: dt.date | None = None,
                      end: dt.date | None = None) -> list[ArchiveFile]:
        """Science files matching a dataset's ``archive_filter``, observed in [start, end] (UT dates)."""
        filters = dict(archive_filter)
        terms = filter_terms(filters)
        if "dp_cat" not in filters:
            terms.append("dp_cat = 'SCIENCE'")
        if start is not None:
            terms.append(f"exp_start >= {adql_literal(start.isoformat())}")
        if end is not None:
            terms.append(f"exp_start < {adql_literal((end + dt.timedelta(days=1)).isoformat())}")
        return self._files(terms)

    def calibration_files(self, night: dt.date, cutoff: dt.time) -> list[ArchiveFile]:
        """All calibration files of an observing night [night + cutoff, night + 1 day + cutoff)."""
        begin = dt.datetime.combine(night, cutoff)
        end = begin + dt.timedelta(days=1)
        return self._files(["dp_cat = 'CALIB'",
                            f"exp_start >= {adql_literal(begin.isoformat())}",
                            f"exp_start < {adql_literal(end.isoformat())}"])

    def sizes(self, dp_ids: Iterable[str]) -> dict[str, int]:
        """Estimated sizes (bytes) of the given files, for the progress bar."""
        ids = sorted(set(dp_ids))
        sizes: dict[str, int] = {}
        for chunk in _chunks(ids, 500):
            for item in self._files([adql_condition("dp_id", chunk)]):
                if item.size is not None:
                    sizes[item.dp_id] = item.size
        return sizes


# --------------------------------------------------------------------------------------
# astroquery: Eso instance, calselector, login, download


def make_eso(config: ArchiveConfig):
    """A fresh astroquery ``EsoClass`` pointed at the configured URLs."""
    from astroquery.eso import EsoClass

    eso = EsoClass()
    # class attributes in astroquery; set on our instance only
    eso.CALSELECTOR_URL = config.calselector_url
    eso.DOWNLOAD_URL = config.download_url
    eso.AUTH_URL = config.auth_url
    return eso


class _ListHandler(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]):
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def astroquery_messages() -> Iterator[list[logging.LogRecord]]:
    """Collect astroquery's log records instead of printing them.

    astroquery reports failed downloads only in its log; we keep those messages to tell
    the user why a file is missing, and keep its chatter out of the progress bar.
    """
    from astroquery import log as aq_log

    records: list[logging.LogRecord] = []
    saved = aq_log.handlers[:], aq_log.level, aq_log.propagate
    aq_log.handlers[:] = [_ListHandler(records)]
    aq_log.setLevel(logging.INFO)
    aq_log.propagate = False
    try:
        yield records
    finally:
        aq_log.handlers[:], level, aq_log.propagate = saved
        aq_log.setLevel(level)
        for record in records:
            logger.debug("astroquery: %s", record.getMessage())


class CalSelector:
    """Raw calibrations associated with science files, from the archive's calselector."""

    def __init__(self, eso, config: ArchiveConfig):
        self.eso = eso
        self.config = config

    def associate(self, dp_ids: list[str]) -> dict[str, set[str]]:
        """For each science ``dp_id``, the ids of its associated raw files (not itself).

        Files the service returned no association tree for are absent from the result.
        """
        result: dict[str, set[str]] = {}
        for batch in _chunks(sorted(set(dp_ids)), self.config.batch_size):
            with tempfile.TemporaryDirectory(prefix="musered-calsel-") as tmp, astroquery_messages():
                try:
                    union = set(self.eso.get_associated_files(batch, mode="raw", savexml=True,
                                                              destination=tmp))
                except Exception as exc:  # requests, XML and astroquery errors alike
                    raise ArchiveError(f"calibration selector failed at {self.config.calselector_url}: "
                                       f"{_one_line(exc)}") from None
                trees = sorted(Path(tmp).glob("*.xml"))
                for path in trees:
                    try:
                        main, associated = parse_association(path.read_bytes())
                    except ET.ParseError as exc:
                        raise ArchiveError(f"calibration selector returned invalid XML ({path.name}): "
                                           f"{exc}") from None
                    for name in main:
                        result.setdefault(name, set()).update(associated - {name})
                parsed = set().union(*(result.get(d, set()) for d in batch)) - set(batch)
                if union - parsed:
                    logger.debug("calselector union has %d files outside the per-file trees",
                                 len(union - parsed))
        return result


def parse_association(xml: bytes) -> tuple[set[str], set[str]]:
    """(main files, all files) of one calselector association tree."""
    root = ET.fromstring(xml)
    main_files = root.find("mainFiles")
    main = {f.attrib["name"] for f in main_files.iter("file")} if main_files is not None else set()
    everything = {f.attrib["name"] for f in root.iter("file") if "name" in f.attrib}
    return main, everything


class EsoLogin:
    """Log in to the ESO portal: password from ``$MUSERED_ESO_PASSWORD`` or the keyring."""

    def __init__(self, eso, config: ArchiveConfig):
        self.eso = eso
        self.config = config

    def password(self, username: str, interactive: bool = False) -> str:
        env = os.environ.get(self.config.password_env)
        if env:
            return env
        import keyring
        import keyring.errors

        try:
            stored = keyring.get_password(KEYRING_SERVICE, username)
        except keyring.errors.KeyringError as exc:
            logger.debug("keyring unavailable: %s", exc)
            stored = None
        if stored:
            return stored
        if interactive:
            import click

            typed = click.prompt(f"ESO password for {username}", hide_input=True, err=True)
            if self.config.store_password:
                keyring.set_password(KEYRING_SERVICE, username, typed)
            return typed
        raise MuseredError(
            f"no password for ESO user {username}: set ${self.config.password_env} or store it in "
            f"the keyring (keyring set {KEYRING_SERVICE} {username})")

    def login(self, username: str, interactive: bool = False) -> None:
        """Obtain a token; MuseredError if refused. The password never reaches a message."""
        from astroquery import cache_conf

        password = self.password(username, interactive)
        # astroquery's public login() reads only the keyring and prompts otherwise; its
        # _authenticate() is the token request proper (same in 0.4.11 and 0.4.12.dev).
        # The password travels as a query parameter: never cache that response.
        try:
            with cache_conf.set_temp("cache_active", False), astroquery_messages():
                ok = self.eso._authenticate(username=username, password=password)
        except Exception as exc:
            reason = _one_line(exc).replace(password, "***")
            reason = re.sub(r"password=[^&\s]*", "password=***", reason)
            raise ArchiveError(f"ESO login failed for {username} at {self.config.auth_url}: "
                               f"{reason}") from None
        if not ok:
            raise ArchiveError(f"ESO login refused for {username} at {self.config.auth_url} "
                               "(wrong user name or password?)")
        logger.info("Logged in to the ESO archive as %s", username)


class Rejected(Exception):
    """A delivered file that must not enter raw_path; the message says why."""


class AstroqueryDownloader:
    """Download one file with astroquery into a staging folder (``.part`` then rename)."""

    def __init__(self, eso):
        self.eso = eso

    def fetch(self, dp_id: str, staging: Path) -> Path:
        """The delivered file in ``staging`` (``.fits.Z`` already uncompressed by astroquery).

        Raises Rejected with astroquery's reason when nothing was delivered.
        """
        with astroquery_messages() as records:
            try:
                files = self.eso.retrieve_data([dp_id], destination=str(staging),
                                               continuation=True, unzip=True)
            except Exception as exc:
                raise Rejected(_one_line(exc)) from None
        if isinstance(files, str):
            files = [files]
        if not files:
            errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
            if not errors:
                raise Rejected("the archive delivered nothing")
            # "Failed to download <url>. <reason>": the url is the id again
            reason = re.sub(r"^Failed to download \S+?\.\s+", "download failed: ", _one_line(errors[-1]))
            raise Rejected(reason)
        return Path(files[0])


def verify_delivery(path: Path, dp_id: str) -> None:
    """Check a delivered file before it may enter raw_path; Rejected says what is wrong.

    FITS files: the first card is ``SIMPLE``, every header parses, the HDUs add up to the
    file size (a truncated body fails), and CHECKSUM/DATASUM match when present. Night
    logs: plain text. An HTML page (the archive's login page) fails both.
    """
    name = path.name
    if not name.startswith(dp_id):
        raise Rejected(f"delivered as {name}, expected a file named after {dp_id}")
    size = path.stat().st_size
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
    if not head.startswith(b"SIMPLE  ="):
        raise Rejected(f"not a FITS file (starts with {head[:20]!r})")
    if size % FITS_BLOCK:
        raise Rejected(f"truncated: {size} bytes is not a whole number of FITS blocks")
    _verify_fits_structure(path, size)


def _verify_fits_structure(path: Path, size: int) -> None:
    from astropy.io import fits

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
                    if "CHECKSUM" in hdu.header and hdu.verify_checksum() == 0:
                        raise Rejected(f"CHECKSUM mismatch in HDU {index}")
                    if "DATASUM" in hdu.header and hdu.verify_datasum() == 0:
                        raise Rejected(f"DATASUM mismatch in HDU {index}")
        except Rejected:
            raise
        except Exception as exc:
            raise Rejected(f"unreadable FITS: {_one_line(exc)}") from None
    problems = [str(w.message) for w in caught if "truncat" in str(w.message).lower()
                or "header size" in str(w.message).lower()]
    if problems:
        raise Rejected(f"corrupt FITS: {_one_line(problems[0])}")


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip()[:200].lower()
    return start.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")) or b"<html" in start


# --------------------------------------------------------------------------------------
# The facade


class Archive:
    """The ESO archive as musered uses it; each part can be replaced (tests, mirrors)."""

    def __init__(self, config: ArchiveConfig, *, eso=None, query=None, associator=None,
                 downloader=None, login=None):
        self.config = config
        self._eso = eso
        self.query = query or TapQuery(config)
        self._associator = associator
        self._downloader = downloader
        self._login = login

    @property
    def eso(self):
        if self._eso is None:
            self._eso = make_eso(self.config)
        return self._eso

    @property
    def associator(self):
        if self._associator is None:
            self._associator = CalSelector(self.eso, self.config)
        return self._associator

    @property
    def downloader(self):
        if self._downloader is None:
            self._downloader = AstroqueryDownloader(self.eso)
        return self._downloader

    @property
    def login_part(self):
        if self._login is None:
            self._login = EsoLogin(self.eso, self.config)
        return self._login

    def columns(self) -> list[dict[str, str]]:
        return self.query.columns()

    def science_files(self, archive_filter: dict, start=None, end=None) -> list[ArchiveFile]:
        return self.query.science_files(archive_filter, start, end)

    def calibration_files(self, night: dt.date, cutoff: dt.time) -> list[ArchiveFile]:
        return self.query.calibration_files(night, cutoff)

    def sizes(self, dp_ids: Iterable[str]) -> dict[str, int]:
        return self.query.sizes(dp_ids)

    def associate(self, dp_ids: list[str]) -> dict[str, set[str]]:
        return self.associator.associate(dp_ids)

    def login(self, username: str, interactive: bool = False) -> None:
        self.login_part.login(username, interactive)

    def fetch(self, dp_id: str, staging: Path) -> Path:
        return self.downloader.fetch(dp_id, staging)


# --------------------------------------------------------------------------------------
# Retrieval: de-duplication, batches, verification, the calibration record


def local_files(raw_path: Path) -> dict[str, Path]:
    """Files already in ``raw_path`` by archive id (any of .fits/.fits.fz/.fits.Z/.fits.gz,
    night logs ``<id>.NL.txt`` as ``<id>.NL``); hidden folders (staging) are skipped."""
    found: dict[str, Path] = {}
    if not raw_path.is_dir():
        return found
    for folder, dirs, names in os.walk(raw_path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.endswith(NIGHTLOG_SUFFIX):
                found[name[: -len(".txt")]] = Path(folder, name)
                continue
            for suffix in FITS_SUFFIXES:
                if name.endswith(suffix):
                    found[name[: -len(suffix)]] = Path(folder, name)
                    break
    return found


@dataclass
class RetrievalReport:
    """What a retrieval did; ``missing`` maps requested ids to why they are not in raw_path."""

    queried: int = 0                                  # files matching the query
    local: int = 0                                    # ... of which already in raw_path
    associated: int = 0                               # science files sent to the calselector
    present: int = 0                                  # requested ids already in raw_path
    downloaded: list[Path] = dc_field(default_factory=list)
    bytes: int = 0
    missing: dict[str, str] = dc_field(default_factory=dict)
    planned: list[ArchiveFile] = dc_field(default_factory=list)   # --dry-run
    completed: list[str] = dc_field(default_factory=list)         # science files recorded complete

    def merge(self, other: RetrievalReport) -> None:
        self.queried += other.queried
        self.local += other.local
        self.associated += other.associated
        self.present += other.present
        self.downloaded += other.downloaded
        self.bytes += other.bytes
        self.missing.update(other.missing)
        self.planned += other.planned
        self.completed += other.completed


class Retriever:
    """Fetch what raw_path lacks: science files, their calibrations, whole nights.

    Downloads land in ``raw_path/.retrieve-incoming/<pid>`` (same file system, hidden
    from update-db), are checked by :func:`verify_delivery` and only then renamed into
    ``raw_path``; rejected files are deleted and reported as missing.
    """

    STAGING = ".retrieve-incoming"

    def __init__(self, archive: Archive, raw_path: Path, database=None, *, progress: bool = True,
                 console=None):
        self.archive = archive
        self.raw_path = Path(raw_path)
        self.database = database
        self.progress = progress
        self.console = console
        self._local: dict[str, Path] | None = None

    @property
    def local(self) -> dict[str, Path]:
        if self._local is None:
            self._local = local_files(self.raw_path)
        return self._local

    # -- record of science files with all their calibrations --------------------------------
    def completed(self) -> set[str]:
        if self.database is None:
            return set()
        from sqlalchemy import select

        from .db.models import Retrieved

        with self.database.session() as session:
            return set(session.scalars(select(Retrieved.dp_id)))

    def _record(self, dataset: str, done: dict[str, int]) -> None:
        if self.database is None or not done:
            return
        from sqlalchemy import select

        from .db.models import Retrieved

        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        with self.database.session() as session:
            query = select(Retrieved).where(Retrieved.dp_id.in_(list(done)))
            rows = {r.dp_id: r for r in session.scalars(query)}
            for dp_id, n_calib in done.items():
                row = rows.get(dp_id) or Retrieved(dp_id=dp_id)
                row.dataset, row.n_calib, row.date = dataset, n_calib, now
                session.add(row)

    # -- public entry points ----------------------------------------------------------------
    def retrieve_dataset(self, dataset: str, archive_filter: dict, *, start=None, end=None,
                         force: bool = False, dry_run: bool = False) -> RetrievalReport:
        """Science files of a dataset missing from raw_path, then the calibrations of
        every science file not yet recorded complete (all of them with ``force``)."""
        report = RetrievalReport()
        science = self.archive.science_files(archive_filter, start, end)
        report.queried = len(science)
        report.local = sum(f.dp_id in self.local for f in science)
        by_id = {f.dp_id: f for f in science}
        done = set() if force else self.completed()
        to_associate = [f.dp_id for f in science if f.dp_id not in done]
        report.associated = len(to_associate)
        logger.debug("%s: %d science files in the archive, %d in raw_path, %d to associate",
                     dataset, report.queried, report.local, report.associated)
        # science files recorded complete but no longer here: fetch them alone
        lost = [by_id[d] for d in sorted(by_id) if d in done and d not in self.local]
        if lost:
            report.merge(self._download(lost, dry_run))
        for batch in _chunks(to_associate, self.config.batch_size):
            associations = self.archive.associate(batch)
            calib_ids = set().union(*(associations.get(d, set()) for d in batch)) - set(by_id)
            calibs = self._describe(sorted(calib_ids))
            wanted = [by_id[d] for d in batch] + calibs
            report.merge(self._download(wanted, dry_run))
            if dry_run:
                continue
            complete = {}
            for dp_id in batch:
                if dp_id not in associations:
                    report.missing.setdefault(dp_id, "no calibration association returned by the archive")
                    continue
                if dp_id in self.local and all(c in self.local for c in associations[dp_id]):
                    complete[dp_id] = len(associations[dp_id])
            self._record(dataset, complete)
            report.completed += list(complete)
        return report

    def retrieve_night_calibrations(self, night: dt.date, cutoff: dt.time, *,
                                    dry_run: bool = False) -> RetrievalReport:
        """Every calibration file of an observing night that raw_path lacks."""
        files = self.archive.calibration_files(night, cutoff)
        logger.debug("night %s: %d calibration files in the archive", night, len(files))
        report = self._download(files, dry_run)
        report.queried = len(files)
        report.local = report.present
        return report

    @property
    def config(self) -> ArchiveConfig:
        return self.archive.config

    # -- internals ---------------------------------------------------------------------------
    def _describe(self, dp_ids: list[str]) -> list[ArchiveFile]:
        """ArchiveFile records (with sizes when the archive knows them) for calselector ids."""
        missing = [d for d in dp_ids if d not in self.local]
        sizes = self.archive.sizes([d for d in missing if not d.endswith(".NL")]) if missing else {}
        return [ArchiveFile(d, dp_cat="" if d.endswith(".NL") else "CALIB", size=sizes.get(d))
                for d in dp_ids]

    def _download(self, files: list[ArchiveFile], dry_run: bool) -> RetrievalReport:
        report = RetrievalReport()
        todo = []
        seen = set()
        for item in files:
            if item.dp_id in seen:
                continue
            seen.add(item.dp_id)
            if item.dp_id in self.local:
                report.present += 1
            else:
                todo.append(item)
        if dry_run:
            report.planned = todo
            return report
        if not todo:
            return report
        with self._staging() as staging, self._progress(todo) as advance:
            for item in todo:
                path, reason = self._fetch_one(item, staging)
                if path is None:
                    report.missing[item.dp_id] = reason
                    logger.warning("%s: %s", item.dp_id, reason)
                    advance(item, 0)
                else:
                    size = path.stat().st_size
                    report.downloaded.append(path)
                    report.bytes += size
                    self.local[item.dp_id] = path
                    advance(item, size)
        # astroquery swallows some failures: compare requested with what is really here
        for item in todo:
            if item.dp_id not in self.local and item.dp_id not in report.missing:
                report.missing[item.dp_id] = "requested but not received"
        return report

    @contextlib.contextmanager
    def _staging(self) -> Iterator[Path]:
        """This process's staging folder, ``raw_path/.retrieve-incoming/<pid>``.

        Removed with its content afterwards, even on error or interrupt; folders left by
        processes that no longer run (killed) are removed first.
        """
        parent = self.raw_path / self.STAGING
        for folder in parent.glob("*") if parent.is_dir() else []:
            if folder.is_dir() and folder.name.isdigit() and not _process_alive(int(folder.name)):
                shutil.rmtree(folder, ignore_errors=True)
        staging = parent / str(os.getpid())
        staging.mkdir(parents=True, exist_ok=True)
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                parent.rmdir()

    def _fetch_one(self, item: ArchiveFile, staging: Path) -> tuple[Path | None, str]:
        try:
            delivered = self.archive.fetch(item.dp_id, staging)
            verify_delivery(delivered, item.dp_id)
        except Rejected as exc:
            for leftover in staging.glob(item.dp_id + "*"):
                leftover.unlink()
            return None, str(exc)
        target = self.raw_path / delivered.name
        os.replace(delivered, target)
        return target, ""

    @contextlib.contextmanager
    def _progress(self, todo: list[ArchiveFile]):
        if not self.progress:
            yield lambda item, size: None
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        known = [f.size for f in todo if f.size is not None]
        total_bytes = sum(known) if len(known) == len(todo) else None
        state = {"files": 0, "bytes": 0}

        def bytes_text() -> str:
            total = f" / {_human(total_bytes)}" if total_bytes else ""
            return f"{_human(state['bytes'])}{total}"

        # one live display: files and bytes as two tasks of the same Progress
        with Progress(TextColumn("{task.description:>6}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                      TimeRemainingColumn(), console=self.console, transient=True) as bar:
            files_task = bar.add_task("files", total=len(todo), detail=f"0/{len(todo)}")
            bytes_task = bar.add_task("bytes", total=total_bytes, detail=bytes_text())

            def advance(item: ArchiveFile, size: int) -> None:
                state["files"] += 1
                state["bytes"] += size
                bar.update(files_task, advance=1, detail=f"{state['files']}/{len(todo)} {item.dp_id}")
                bar.update(bytes_task, advance=size, detail=bytes_text())

            yield advance


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


# --------------------------------------------------------------------------------------
# helpers


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _human(nbytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(nbytes) < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} TB"


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode()
    text = str(value)
    return "" if text == "--" else text


def _one_line(exc) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def _service_reason(exc) -> str:
    code = getattr(exc, "code", None)
    reason = getattr(exc, "reason", None) or str(exc)
    text = _one_line(reason)
    if code and str(code) not in text:
        text = f"HTTP {code}: {text}"
    return text
