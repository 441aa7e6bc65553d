"""Queries of the archive's raw-data table over TAP, and ``archive_filter`` translation.

The archive replaced its WDB query forms by TAP (``tap_obs``, table ``dbo.raw``);
astroquery 0.4.11 still speaks WDB, so :class:`TapQuery` sends ADQL itself with pyvo.
:func:`filter_terms` turns a dataset's ``archive_filter`` (MuseRed's WDB field names
accepted) into ADQL WHERE terms. Dates are UT.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from collections.abc import Iterable

from ..errors import MuseredError
from .config import IDENTIFIER, ArchiveConfig, ArchiveError
from .files import ArchiveFile
from .helpers import cell_text, chunks, one_line, service_reason

# One logger for the whole archive client, named as before it became a package.
logger = logging.getLogger("musered.archive")

_OPERATORS = ("<=", ">=", "!=", "<>", "=", "<", ">", "not like ", "not in ", "not between ",
              "like ", "in ", "between ", "is ")


def adql_literal(value: object) -> str:
    """An ADQL literal: numbers as they are, strings quoted with '' escaping."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (dt.date, dt.datetime)):
        value = value.isoformat()
    return "'" + str(value).replace("'", "''") + "'"


def adql_condition(column: str, value: object) -> str:
    """One WHERE term from an ``archive_filter`` item.

    ``{target: IC4406}`` -> ``target = 'IC4406'``; a list gives ``in (...)``; a string
    starting with an operator (``"like 'IC44%'"``, ``">= '2017-06-01'"``,
    ``"between 'a' and 'b'"``) is passed on as written, as astroquery does.
    """
    if not isinstance(column, str) or not IDENTIFIER.match(column):
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
                               f"{one_line(exc.reason or exc)}") from None
        except pyvo.dal.DALServiceError as exc:
            raise ArchiveError(f"archive query failed at {self.config.tap_url}: "
                               f"{service_reason(exc)}") from None
        except (pyvo.dal.DALFormatError, ValueError, OSError) as exc:
            raise ArchiveError(f"archive query failed at {self.config.tap_url}: {one_line(exc)}") from None
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
        return [{name: cell_text(row[name]) for name in ("column_name", "datatype", "unit", "description")}
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
            files.append(ArchiveFile(cell_text(row["dp_id"]), cell_text(row["dp_cat"]), cell_text(row["dp_type"]),
                                     cell_text(row["object"]), cell_text(row["date_obs"]), size))
        return files

    def science_files(self, archive_filter: dict, start: dt.date | None = None,
                      end: dt.date | None = None, ins_mode: str | None = None) -> list[ArchiveFile]:
        """Science files matching a dataset's ``archive_filter``, observed in [start, end] (UT
        dates), of instrument mode ``ins_mode`` (``WFM-AO-N``) when given."""
        filters = dict(archive_filter)
        terms = filter_terms(filters)
        if "dp_cat" not in filters:
            terms.append("dp_cat = 'SCIENCE'")
        if start is not None:
            terms.append(f"exp_start >= {adql_literal(start.isoformat())}")
        if end is not None:
            terms.append(f"exp_start < {adql_literal((end + dt.timedelta(days=1)).isoformat())}")
        if ins_mode is not None:
            terms.append(adql_condition("ins_mode", ins_mode))
        return self._files(terms)

    def calibration_files(self, night: dt.date, cutoff: dt.time, ins_mode: str | None = None) -> list[ArchiveFile]:
        """All calibration files of an observing night [night + cutoff, night + 1 day + cutoff),
        only those of instrument mode ``ins_mode`` when given (MuseRed's ``--ins-mode``)."""
        begin = dt.datetime.combine(night, cutoff)
        end = begin + dt.timedelta(days=1)
        terms = ["dp_cat = 'CALIB'", f"exp_start >= {adql_literal(begin.isoformat())}",
                 f"exp_start < {adql_literal(end.isoformat())}"]
        if ins_mode is not None:
            terms.append(adql_condition("ins_mode", ins_mode))
        return self._files(terms)

    def sizes(self, dp_ids: Iterable[str]) -> dict[str, int]:
        """Estimated sizes (bytes) of the given files, for the progress bar."""
        ids = sorted(set(dp_ids))
        sizes: dict[str, int] = {}
        for chunk in chunks(ids, 500):
            for item in self._files([adql_condition("dp_id", chunk)]):
                if item.size is not None:
                    sizes[item.dp_id] = item.size
        return sizes
