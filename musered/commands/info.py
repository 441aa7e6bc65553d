"""``musered info``: inspect the database and the state of the reduction."""

from __future__ import annotations

import sys

import click


@click.command("info")
@click.option("--datasets", is_flag=True, help="Datasets with their OBJECT names and exposure counts.")
@click.option("--nights", is_flag=True, help="Raw files per night and DPR TYPE (OBJECT for science).")
@click.option("--runs", is_flag=True, help="Runs with their date ranges and exposure counts.")
@click.option("--exps", is_flag=True, help="Science exposures with flags and processed recipes.")
@click.option("--calibs", is_flag=True, help="Raw calibration sequences and processed calibrations.")
@click.option("--tables", is_flag=True, help="Database tables and their row counts.")
@click.option("--raw", "raw_terms", multiple=True, metavar="KEY=VALUE",
              help="Raw files matching KEY=VALUE (a column or an additional keyword; repeat, "
                   "or list several after one --raw; '*' is a wildcard).")
@click.option("--excluded", is_flag=True, help="Excluded raw files, per-tag exclusions and flagged exposures.")
@click.option("--date", "dates", multiple=True, metavar="YYYY-MM-DD", help="Only this night (repeatable).")
@click.option("--run", "runs_filter", multiple=True, metavar="RUN", help="Only the nights of this run (repeatable).")
@click.option("--no-color", is_flag=True, help="Plain text without colours (also when output is piped).")
@click.argument("more_terms", nargs=-1, metavar="[KEY=VALUE]...")
@click.pass_obj
def command(app, datasets, nights, runs, exps, calibs, tables, raw_terms, excluded, dates, runs_filter,
            no_color, more_terms) -> None:
    """Show what the database holds and what has been processed.

    Without option: the reduction version and file counts, datasets, runs, raw files
    per night, processed calibrations per night and processed exposures.

    Example: musered info --raw night=2017-06-15 DPR_TYPE=BIAS
    """
    from .. import info
    from ..errors import MuseredError

    if more_terms and not raw_terms:
        raise MuseredError(f"unexpected argument {more_terms[0]!r} (KEY=VALUE terms go with --raw)")
    settings, database = app.settings, app.database
    keep = info.NightFilter.from_options(settings, dates, runs_filter)
    items: list = []
    if raw_terms:
        items.append(info.raw_query_table(settings, database, [*raw_terms, *more_terms], keep))
    if datasets:
        items.append(info.datasets_table(settings, database, keep))
    if runs:
        items.append(info.runs_table(settings, database, keep))
    if nights:
        items.append(info.nights_table(database, keep))
    if calibs:
        items += [info.calib_sequences_table(database, keep), info.calibs_table(database, keep)]
    if exps:
        items += [info.exposures_table(database, keep), info.exps_processed_table(database, keep)]
    if excluded:
        items += info.excluded_tables(settings, database, keep)
    if tables:
        items.append(info.tables_table(database))
    if not items:
        items = [
            *info.overview_lines(settings, database),
            info.datasets_table(settings, database, keep),
            info.runs_table(settings, database, keep),
            info.nights_table(database, keep),
            info.calibs_table(database, keep),
            info.exps_processed_table(database, keep),
        ]
    info.render(info.make_console(sys.stdout, no_color=no_color), items)
