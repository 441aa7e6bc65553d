"""``musered update-db [--force]``: ingest raw headers and night logs into the database."""

from __future__ import annotations

import sys

import click


@click.command("update-db")
@click.option("-f", "--force", is_flag=True, help="Re-read every file (after changing datasets, runs or exclusions).")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (default: when the terminal is interactive).")
@click.pass_obj
def command(app, force: bool, progress: bool | None) -> None:
    """Add new and changed raw files of raw_path to the raw table.

    Walks raw_path recursively for *.fits, *.fits.fz and *.fits.gz, reads their primary
    headers, and ingests the weather block of ESO night logs (*.NL.txt). Unreadable
    files are listed with the reason; they do not stop the scan, and the command still
    succeeds (exit status 0) since everything readable was ingested.
    """
    from ..ingest import update_db

    if progress is None:
        progress = sys.stderr.isatty()
    report = update_db(app.settings, app.database, force=force, progress=progress)
    click.echo(report.summary())
