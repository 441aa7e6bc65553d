"""The Python API: ``mr = MuseRed("settings.yml")``, with MuseRed's names, for notebooks.

Everything here is a thin layer over the functions the commands call (the CLI and the
API share one implementation): the database tables as :class:`~musered.apitable.Table`
(``mr.raw``, ``mr.reduced``, ``mr.db[name]``, ``mr.qc[PRO_CATG]``), the lists MuseRed users
know (``mr.nights``, ``mr.runs``, ``mr.exposures``, ``mr.calib_exposures``), flags
(:mod:`musered.apiflags`), calibration lookups (:mod:`musered.apiframes`), selections
(``select_dates``, ``get_processed``, ``get_files`` ...), the processing steps
(:mod:`musered.apirun`) and the ``info`` views (:mod:`musered.apiinfo`).

Conventions: ``mr.reduced`` is the ``reduced`` table restricted to the settings' version
(MuseRed's ``reduced_{version}``) and answers to ``DPR_TYPE`` for our ``PRO_CATG``; the
lists are read from the database on every access (no stale cache after ``update_db``);
errors are :class:`~musered.errors.MuseredError` with a one-line message. docs/python-api.md
is the user guide, with examples that run as doctests on MuseRed's example set.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .apiinfo import InfoMixin
from .apirun import RunMixin
from .apitable import Table, TableSet
from .errors import MuseredError

__all__ = ["MuseRed"]

logger = logging.getLogger(__name__)


class QcTables(Mapping):
    """``mr.qc``: the QC tables by product type (``mr.qc["MASTER_FLAT"]`` is the table
    ``qc_MASTER_FLAT`` restricted to the settings' version; ``mr.db["qc_MASTER_FLAT"]``
    holds every version), listed as they are now in the database."""

    def __init__(self, tables: TableSet, version: str):
        self.tables = tables
        self.version = version

    def _types(self) -> list[str]:
        from .qctables import QC_PREFIX, qc_table_names

        return [name.removeprefix(QC_PREFIX) for name in qc_table_names(self.tables.database)]

    def __getitem__(self, pro_catg: str) -> Table:
        from .apitable import NoSuchTable
        from .qctables import qc_table_name

        if pro_catg not in self._types():
            raise NoSuchTable(f"no QC table for {pro_catg} (QC tables: {', '.join(self._types()) or 'none'})")
        return self.tables.table(qc_table_name(pro_catg), fixed={"version": self.version})

    def __iter__(self):
        return iter(self._types())

    def __len__(self) -> int:
        return len(self._types())


class MuseRed(RunMixin, InfoMixin):
    """A reduction: its settings and database, with MuseRed's Python API (module docstring).

    ``settings_file`` as ``--settings`` (default ``$MUSERED_SETTINGS``, else
    ``./settings.yml``); ``version`` replaces the settings' version (``--redversion``);
    ``loglevel`` sets the terminal log level of musered and the recipes (default: the
    settings' ``loglevel``, when nothing has configured logging yet).
    """

    def __init__(self, settings_file: str | Path | None = "settings.yml", version: str | None = None,
                 loglevel: str | None = None):
        from .apiflags import FlagList
        from .apiframes import Frames
        from .db import Database
        from .settings import load_settings

        self.settings_file = settings_file
        self.settings = load_settings(settings_file, version=version)
        self.database = Database(self.settings.database_url())
        self.db = TableSet(self.database)
        self.frames = Frames(self.settings, self.database)
        self.flags = FlagList(self.settings, self.database)
        self._setup_logging(loglevel)

    def __repr__(self) -> str:
        return f"<MuseRed {self.settings.path} version {self.version}>"

    # ------------------------------------------------------------ settings

    @property
    def conf(self) -> dict[str, Any]:
        """The substituted settings tree (MuseRed's ``mr.conf``)."""
        return self.settings.data

    @property
    def version(self) -> str:
        return self.settings.version

    @property
    def datasets(self) -> dict:
        """Dataset name -> :class:`~musered.settings.Dataset` (OBJECT names, archive filter)."""
        return self.settings.datasets

    @property
    def raw_path(self) -> Path:
        return self.settings.raw_path

    @property
    def reduced_path(self) -> Path:
        return self.settings.reduced_path

    def set_loglevel(self, level: str) -> None:
        """Terminal log level of musered and the recipes (debug, info, warning, error)."""
        for name in ("musered", "recipes"):
            logging.getLogger(name).setLevel(level.upper())

    def _setup_logging(self, loglevel: str | None) -> None:
        # A notebook or a script has no logging set up: show musered's messages as the CLI
        # does. Under the CLI, pytest or the user's own configuration the handlers are
        # theirs, and only an explicit loglevel changes the level.
        if not logging.getLogger("musered").handlers and not logging.getLogger().handlers:
            from .cli import setup_logging

            setup_logging(loglevel or self.settings.loglevel)
        elif loglevel is not None:
            self.set_loglevel(loglevel)

    # ------------------------------------------------------------ tables

    @property
    def raw(self) -> Table:
        """The ``raw`` table: one row per raw file."""
        return self.db.table("raw")

    @property
    def rawc(self):
        """The SQLAlchemy columns of ``raw`` (``mr.rawc.EXPTIME > 100``)."""
        return self.raw.c

    @property
    def reduced(self) -> Table:
        """The products of this version (one row per file); ``DPR_TYPE`` means ``PRO_CATG``."""
        return self._reduced(self.version)

    def _reduced(self, version: str) -> Table:
        return self.db.table("reduced", fixed={"version": version}, aliases={"DPR_TYPE": "PRO_CATG"})

    @property
    def qc(self) -> QcTables:
        """The QC tables of this version by product type (``mr.qc["MASTER_BIAS"]``)."""
        return QcTables(self.db, self.version)

    @property
    def weather_conditions(self) -> Table:
        return self.db.table("weather_conditions")

    def get_table(self, name: str) -> Table:
        """A table by name: ``raw``, ``reduced`` (this version), MuseRed's ``reduced_0_1``
        (the ``reduced`` rows of version 0.1), ``qc_<PRO_CATG>``, or any database table."""
        if name == "reduced":
            return self.reduced
        if name.startswith("reduced_") and name not in self.db:
            return self._reduced(name.removeprefix("reduced_").replace("_", "."))
        if name not in self.db:
            raise MuseredError(f"unknown table {name!r}; tables: {', '.join(self.db.tables)}")
        return self.db[name]

    def get_astropy_table(self, name: str, indexes: Sequence[str] | None = None):
        """A table as an astropy Table (missing values masked; JSON columns as objects)."""
        from .apitable import rows_to_table

        table = self.get_table(name)
        out = rows_to_table(table.all(), table.columns)
        if indexes:
            out.add_index(list(indexes))
        return out

    def select_column(self, name: str, notnull: bool = True, distinct: bool = False, where: Any = None,
                      table: str = "raw") -> list:
        """The values of one column (``where``: an SQLAlchemy clause or SQL text)."""
        clauses = [where] if where is not None else []
        return self.get_table(table).values(name, *clauses, distinct=distinct, notnull=notnull)

    # ------------------------------------------------------------ what there is

    @property
    def nights(self) -> list[str]:
        """Every night with raw files (calibration-only and excluded nights included)."""
        from .info import nights

        return nights(self.settings, self.database)

    @property
    def runs(self) -> list[str]:
        """The settings' runs that hold raw files."""
        from .info import runs

        return [run.name for run in runs(self.settings, self.database)]

    @property
    def exposures(self) -> dict[str, list[str]]:
        """Dataset (the OBJECT after mapping) -> its science exposure names, excluded
        files left out (flagged exposures are kept, as in MuseRed)."""
        from .info import exposures

        return exposures(self.settings, self.database)

    @property
    def calib_exposures(self) -> dict[str, list[str]]:
        """DPR TYPE -> the TPL_STARTs of its sequences (science included), without the
        sequences whose files are all excluded."""
        from .info import calib_sequences

        return calib_sequences(self.settings, self.database)

    # ------------------------------------------------------------ selections

    def select_dates(self, dpr_type: str | None = None, table: str = "raw", column: str = "name") -> list[str]:
        """The distinct values of ``column`` (exposure names, TPL_START, nights) of the rows
        of ``dpr_type`` (a DPR TYPE in raw, a PRO.CATG in reduced), sorted, without the
        excluded ones (:meth:`Frames.get_excludes <musered.apiframes.Frames.get_excludes>`)."""
        return self.frames.filter_valid(self.prepare_dates(None, dpr_type, column, table),
                                        DPR_TYPE=dpr_type, column=column)

    def prepare_dates(self, dates: str | Sequence[str] | None, DPR_TYPE: str | None = None,
                      datecol: str = "name", table: str = "raw") -> list[str]:
        """The values of ``datecol`` picked by ``dates`` — nights, runs, exposure names,
        TPL_STARTs, globs, as ``--date`` reads them (:func:`musered.dateselect.select_dates`);
        every value when ``dates`` is None. A date that picks nothing is a MuseredError."""
        from .dateselect import select_dates

        selectors = [dates] if isinstance(dates, str) else list(dates or [])
        return select_dates(self.settings, self.database, selectors, column=datecol, table=table,
                            dpr_types=[DPR_TYPE] if DPR_TYPE else None, option="dates")

    def get_processed(self, table: str = "reduced", filter_names: Sequence[str] | None = None,
                      **clauses: Any) -> set[str]:
        """The names (targets) of the rows matching ``clauses`` (``recipe_name=...``), only
        those among ``filter_names`` when given; empty when the table does not exist."""
        try:
            tbl = self.get_table(table)
        except MuseredError:
            return set()
        processed = {row["name"] for row in tbl.find(**clauses)}
        return processed & set(filter_names) if filter_names else processed

    def get_flagged(self, exclude_flags: bool | Sequence[str]) -> list[str]:
        """Exposures carrying one of the flags (``True``: any flag)."""
        if exclude_flags is True:
            return self.flags.find()
        if isinstance(exclude_flags, (list, tuple, set)):
            return self.flags.find(*exclude_flags)
        raise MuseredError("exclude_flags must be a list of flags, or True for every flag")

    def get_files(self, DPR_TYPE: str, first_only: bool = False, remove_excludes: bool = False,
                  select: Mapping[str, str | Mapping] | None = None, exclude_flags: bool | Sequence[str] | None = None,
                  return_explist: bool = False, **clauses: Any):
        """Product files of type ``DPR_TYPE`` (PRO.CATG) of this version matching ``clauses``
        (``OBJECT=``, ``recipe_name=`` ...), by target name; only those on disk (status
        ``ok``: not the ``missing`` records of an import) unless ``clauses`` name a status.

        ``first_only``: one file per target; ``remove_excludes``: without excluded targets;
        ``exclude_flags``: without exposures carrying those flags (True: any); ``select``:
        only targets named by ``{table: "SQL condition" or {column: value}}``, as
        exp-combine's ``select`` reads it (:mod:`musered.selection`); ``return_explist``:
        also return the names kept.
        """
        dropped: set[str] = set()
        if remove_excludes:
            dropped |= self.frames.get_excludes()
        if exclude_flags is not None:
            dropped |= set(self.get_flagged(exclude_flags))
        if select is not None:
            from .selection import selected_names

            clauses["name"] = sorted(selected_names(self.database, select, self.version, where="select"))
        clauses.setdefault("status", "ok")
        files: list[str] = []
        names: list[str] = []
        for row in self.reduced.find(DPR_TYPE=DPR_TYPE, order_by=["name", "path"], **clauses):
            if row["name"] in dropped or (first_only and names and names[-1] == row["name"]):
                continue
            if not names or names[-1] != row["name"]:
                names.append(row["name"])
            files.append(row["path"])
        logger.info("Selected %d files of %d targets", len(files), len(names))
        return (files, names) if return_explist else files
