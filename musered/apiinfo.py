"""The ``info`` methods of :class:`musered.api.MuseRed`: the views of ``musered info``.

Each method builds the same tables as its command (:mod:`musered.info`) and prints them
(plain text unless the output is a colour terminal); MuseRed's names are kept:
``list_datasets``, ``list_nights``, ``list_runs``, ``list_calibs``, ``list_exposures``,
``info`` (the report), ``info_exp``, ``info_raw(**query)``, ``info_qc`` and
``info_warnings``.
``date_list`` and ``run`` restrict the views to those nights or runs, as ``--date`` and
``--run`` do. Where a command assembles its views (``info-exp``, ``info-warnings``), the
method assembles the same ones in two lines.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class InfoMixin:
    """Printing methods (module docstring); needs ``settings`` and ``database``."""

    settings: Any
    database: Any

    def _show(self, items: list) -> None:
        from .info import make_console, render

        render(make_console(sys.stdout), items)

    def _keep(self, date_list=None, run=None):
        from .info import NightFilter

        return NightFilter.from_options(self.settings, _as_list(date_list), _as_list(run))

    def list_datasets(self) -> None:
        """The datasets with their OBJECT names and exposure counts (``info --datasets``)."""
        from .info import datasets_table

        self._show([datasets_table(self.settings, self.database)])

    def list_nights(self) -> None:
        """Every night with its run and raw file counts (``info --nights``)."""
        from .info import nights_table

        self._show([nights_table(self.settings, self.database)])

    def list_runs(self) -> None:
        """The runs with their dates and exposure counts (``info --runs``)."""
        from .info import runs_table

        self._show([runs_table(self.settings, self.database)])

    def list_calibs(self) -> None:
        """The calibration sequences of each DPR TYPE (``info --calibs``)."""
        from .info import calib_sequences_table

        self._show([calib_sequences_table(self.settings, self.database)])

    def list_exposures(self) -> None:
        """The science exposures, their flags and products (``info --exps``)."""
        from .info import exposures_table

        self._show([exposures_table(self.settings, self.database)])

    def info(self, date_list: str | Sequence[str] | None = None, run: str | Sequence[str] | None = None,
             header: bool = True, show_tables: Sequence[str] = ("raw", "calib", "science"),
             excluded: bool = False) -> None:
        """The report of ``musered info``: version and counts, datasets and runs
        (``header``), then the ``show_tables`` among raw files per night, processed
        calibrations per night and processed science data; ``excluded`` counts the
        excluded files and records too (``--excluded``)."""
        from .info import report_items

        parts = ",".join(_as_list(show_tables))
        self._show(report_items(self.settings, self.database, self._keep(date_list, run), parts, excluded,
                                header=header))

    def info_exp(self, expname: str | Sequence[str], full: bool = True, recipes: str | Sequence[str] | None = None,
                 night: bool = False) -> None:
        """What was done for an exposure (a name, a run, a glob) or, with ``night``, for
        the targets of a night: GTO logs, weather, each recipe run with its products, log,
        runtime, warnings and (``full``) its input frames (``musered info-exp``)."""
        from .infoexp import info_exp, report_items

        names = _as_list(expname)
        reports = info_exp(self.settings, self.database, names, night=night, recipes=_as_list(recipes),
                           short=not full)
        items = [item for report in reports for item in report_items(report, full=full)]
        self._show(items or [f"no processed data in version {self.settings.version} for {', '.join(names)}"])

    def info_qc(self, dpr_type: str, date_list: str | Sequence[str] | None = None, columns: str | None = None) -> None:
        """The QC values of a product type (``MASTER_FLAT``) of this version, one table per
        target that ``date_list`` picks (names, nights, runs, globs; all without it)
        (``musered info --qc``); ``columns``: QC column globs, ``*`` for all."""
        from .infoqc import qc_tables

        self._show(qc_tables(self.settings, self.database, dpr_type, _as_list(date_list), columns))

    def info_warnings(self, date_list: str | Sequence[str] | None = None, recipes: str | Sequence[str] | None = None,
                      mode: str = "list") -> None:
        """The recipe runs of this version that logged warnings (``musered info-warnings``):
        ``mode`` list (one line per run), summary (counts per name and recipe) or detail
        (the messages of each log)."""
        from . import infowarnings
        from .errors import MuseredError

        runs = infowarnings.warning_runs(self.settings, self.database, _as_list(date_list), _as_list(recipes))
        if mode == "detail":
            self._show(infowarnings.detail_items(runs))
        elif mode in ("list", "summary"):
            self._show([infowarnings.list_table(runs) if mode == "list" else infowarnings.summary_table(runs)])
        else:
            raise MuseredError(f"info_warnings: mode must be list, summary or detail, not {mode!r}")

    def info_raw(self, **query: Any) -> None:
        """Raw files matching ``column=value`` terms (``info-raw night:2017-06-17``):
        a list of values matches any of them, ``*`` is a wildcard."""
        from .info import raw_query_table

        terms = [f"{key}={item}" for key, value in query.items()
                 for item in (value if isinstance(value, (list, tuple)) else [value])]
        self._show([raw_query_table(self.settings, self.database, terms)])
