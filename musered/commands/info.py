"""``musered info``: inspect the database and the state of the reduction (MuseRed's options)."""

from __future__ import annotations

import sys

import click


@click.command("info")
@click.option("--datasets", is_flag=True, help="Datasets with their exposure counts.")
@click.option("--nights", is_flag=True, help="Every night of the raw table, with its file counts.")
@click.option("--runs", is_flag=True, help="Runs that have raw files, with exposures (and how many flagged).")
@click.option("--calibs", is_flag=True, help="Calibration sequences (TPL_START) per DPR TYPE.")
@click.option("--exps", is_flag=True, help="Science exposures per OBJECT, with flags and processed products.")
@click.option("--qc", "qc_type", default=None, metavar="PRO_CATG",
              help="QC values of this product type (MASTER_FLAT ...), per target; --date selects them.")
@click.option("--columns", "qc_columns", default=None, metavar="GLOBS",
              help="With --qc: the QC columns to show (comma-separated globs, '*' for all; "
                   "default: the recipe's main QC values).")
@click.option("--raw", "raw_terms", multiple=True, metavar="KEY=VALUE",
              help="Raw files matching KEY=VALUE (as info-raw; repeat, or list several after one --raw).")
@click.option("--excluded", is_flag=True,
              help="Count excluded files and products in the report, and list the exclusions and flags.")
@click.option("--tables", "parts", is_flag=False, flag_value="db", default=None, metavar="[raw,calib,science]",
              help="Report tables to show (comma-separated: raw, calib, science); alone: the database tables.")
@click.option("--date", "dates", multiple=True, metavar="DATE",
              help="Only these nights (a night, a glob such as 2017-06-1*, a run); with --qc: targets.")
@click.option("--run", "runs_filter", multiple=True, metavar="RUN", help="Only the nights of this run (repeatable).")
@click.option("--no-header", is_flag=True, help="Without the version, datasets and runs above the report.")
@click.option("--no-color", is_flag=True, help="Plain text without colours (also when output is piped).")
@click.argument("more_terms", nargs=-1, metavar="[KEY=VALUE]...")
@click.pass_obj
def command(app, datasets, nights, runs, calibs, exps, qc_type, qc_columns, raw_terms, excluded, parts, dates,
            runs_filter, no_header, no_color, more_terms) -> None:
    """Show what the database holds and what has been processed in this version.

    Without option: the reduction version and file counts, datasets, runs, raw files
    per night, processed calibrations per night and processed science data (exposures
    and datasets), counting product types per recipe as MuseRed does.

    Examples: musered info --nights; musered info --qc MASTER_FLAT --date "2017-06-16T*"
    """
    from .. import info
    from ..errors import MuseredError

    if more_terms and not raw_terms:
        raise MuseredError(f"unexpected argument {more_terms[0]!r} (KEY=VALUE terms go with --raw or info-raw)")
    settings, database = app.settings, app.database
    console = info.make_console(sys.stdout, no_color=no_color)
    if qc_type:
        from ..infoqc import qc_tables

        info.render(console, qc_tables(settings, database, qc_type, dates, qc_columns))
        return
    keep = info.NightFilter.from_options(settings, dates, runs_filter)
    snap = info.Snapshot.load(settings, database)
    items: list = []
    if raw_terms:
        items.append(info.raw_query_table(settings, database, [*raw_terms, *more_terms], keep, snap=snap))
    if datasets:
        items.append(info.datasets_table(settings, database, keep, snap=snap))
    if nights:
        items.append(info.nights_table(settings, database, keep, snap=snap))
    if runs:
        items.append(info.runs_table(settings, database, keep, snap=snap))
    if calibs:
        items.append(info.calib_sequences_table(settings, database, keep, snap=snap))
    if exps:
        items.append(info.exposures_table(settings, database, keep, snap=snap))
    if parts == "db":
        items.append(info.tables_table(database))
    if not items:
        items = info.report_items(settings, database, keep, parts, excluded, header=not no_header, snap=snap)
    if excluded:
        items += info.excluded_tables(settings, database, keep, snap=snap)
    info.render(console, items)

