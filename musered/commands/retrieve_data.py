"""``musered retrieve-data DATASET...``: fetch raw data and calibrations from the ESO archive."""

from __future__ import annotations

import sys

import click

from ..errors import MuseredError


@click.command("retrieve-data")
@click.argument("datasets", nargs=-1)
@click.option("--help-query", is_flag=True,
              help="Print the archive's queryable columns for MUSE (keys of archive_filter) and exit.")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), default=None, metavar="DATE",
              help="Only files observed on or after this UT date (YYYY-MM-DD).")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), default=None, metavar="DATE",
              help="Only files observed on or before this UT date (YYYY-MM-DD).")
@click.option("--calib", "calib_nights", multiple=True, metavar="NIGHT",
              help="Also retrieve all calibrations of this night (YYYY-MM-DD); repeatable, or comma-separated.")
@click.option("--ins-mode", default=None, metavar="MODE",
              help="Only files of this instrument mode (WFM-AO-N, WFM-NOAO-N, NFM-AO-N ...): the "
                   "--calib nights' calibrations and the datasets' science files (not the calibrations "
                   "the archive associates with them).")
@click.option("--force", is_flag=True,
              help="Ask the calibration selector again for every science file, not only the "
                   "ones whose calibrations are not all retrieved yet.")
@click.option("--dry-run", is_flag=True, help="List what would be downloaded; download nothing.")
@click.option("--no-update-db", is_flag=True, help="Do not run update-db afterwards.")
@click.option("--username", default=None,
              help="ESO user name (default: settings retrieve_data.username; anonymous if none). "
                   "Password from $MUSERED_ESO_PASSWORD or the keyring.")
@click.option("--progress/--no-progress", default=None,
              help="Show progress bars (default: when the terminal is interactive).")
@click.pass_obj
def command(app, datasets, help_query, start, end, calib_nights, ins_mode, force, dry_run, no_update_db,
            username, progress) -> None:
    """Retrieve the raw files of DATASET(s) and their calibrations from the ESO archive.

    Science files come from a TAP query built from the dataset's archive_filter; their
    calibrations from the archive's calibration selector. Files already in raw_path are
    not downloaded again, and science files whose calibrations were all retrieved are
    remembered in the database, so an interrupted run resumes where it stopped.
    Every download is verified (FITS structure, size, checksum) before entering raw_path.
    Exits with status 1 if any requested file could not be retrieved.
    """
    from ..retrievedata import archive_columns, retrieve_data

    if help_query:
        _print_columns(*archive_columns(app.settings, username))
        return
    report = retrieve_data(app.settings, app.database, datasets, start=start, end=end, calib_nights=calib_nights,
                           ins_mode=ins_mode, force=force, dry_run=dry_run, update_db=not no_update_db,
                           username=username, progress=sys.stderr.isatty() if progress is None else progress,
                           echo=click.echo)
    missing = report.missing
    if missing:
        click.echo(f"{len(missing)} requested files were not retrieved:", err=True)
        for dp_id in sorted(missing):
            click.echo(f"  {dp_id}: {missing[dp_id]}", err=True)
        raise MuseredError(report.failure_message(listed=True))


def _print_columns(config, columns) -> None:
    click.echo(f"Queryable columns of {config.tap_table} at {config.tap_url} "
               f"(archive_filter keys; instrument = {config.instrument!r} is implied):")
    width = max((len(c["column_name"]) for c in columns), default=10)
    for col in columns:
        unit = f"[{col['unit']}]" if col["unit"] else ""
        click.echo(f"  {col['column_name']:<{width}}  {col['datatype']:<8} {unit:<8} {col['description']}")
