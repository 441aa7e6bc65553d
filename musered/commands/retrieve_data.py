"""``musered retrieve-data DATASET...``: fetch raw data and calibrations from the ESO archive."""

from __future__ import annotations

import datetime as dt
import sys

import click

from ..errors import MuseredError


def _parse_night(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise MuseredError(f"--calib {value!r}: expected an ISO night YYYY-MM-DD") from None


@click.command("retrieve-data")
@click.argument("datasets", nargs=-1)
@click.option("--help-query", is_flag=True,
              help="Print the archive's queryable columns for MUSE (keys of archive_filter) and exit.")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), default=None, metavar="DATE",
              help="Only files observed on or after this UT date (YYYY-MM-DD).")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), default=None, metavar="DATE",
              help="Only files observed on or before this UT date (YYYY-MM-DD).")
@click.option("--calib", "calib_nights", multiple=True, metavar="NIGHT",
              help="Also retrieve all calibrations of this night (YYYY-MM-DD); repeatable.")
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
def command(app, datasets, help_query, start, end, calib_nights, force, dry_run, no_update_db,
            username, progress) -> None:
    """Retrieve the raw files of DATASET(s) and their calibrations from the ESO archive.

    Science files come from a TAP query built from the dataset's archive_filter; their
    calibrations from the archive's calibration selector. Files already in raw_path are
    not downloaded again, and science files whose calibrations were all retrieved are
    remembered in the database, so an interrupted run resumes where it stopped.
    Every download is verified (FITS structure, size, checksum) before entering raw_path.
    Exits with status 1 if any requested file could not be retrieved.
    """
    from ..archive import Archive, ArchiveConfig, Retriever

    settings = app.settings
    config = ArchiveConfig.from_settings(settings.retrieve_data, username=username)
    archive = Archive(config)

    if help_query:
        _print_columns(archive)
        return

    if not datasets and not calib_nights:
        raise MuseredError("give at least one DATASET (or --calib NIGHT); "
                           f"datasets in the settings: {', '.join(settings.datasets) or 'none'}")
    for name in datasets:
        if name not in settings.datasets:
            raise MuseredError(f"dataset {name!r} is not in the settings "
                               f"(known: {', '.join(settings.datasets) or 'none'})")
        if not settings.datasets[name].archive_filter:
            raise MuseredError(f"dataset {name!r} has no archive_filter in the settings")
    nights = [_parse_night(n) for n in calib_nights]
    start = start.date() if start else None
    end = end.date() if end else None
    if start and end and end < start:
        raise MuseredError(f"--end {end} is before --start {start}")

    if progress is None:
        progress = sys.stderr.isatty()
    raw_path = settings.raw_path
    if not dry_run:
        try:
            raw_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MuseredError(f"cannot create raw_path {raw_path}: {exc.strerror}") from None
        if config.username:
            archive.login(config.username, interactive=sys.stdin.isatty())
    # also for --dry-run: the record of complete science files decides what is asked for
    database = app.database

    from rich.console import Console

    retriever = Retriever(archive, raw_path, database, progress=progress, console=Console(stderr=True))
    reports = []
    for name in datasets:
        report = retriever.retrieve_dataset(name, settings.datasets[name].archive_filter,
                                            start=start, end=end, force=force, dry_run=dry_run)
        click.echo(f"{name}: {_n(report.queried, 'science file')} in the archive, "
                   f"{report.local} already in raw_path; calibrations asked for {report.associated} of them "
                   f"({report.present} files already in raw_path)")
        reports.append(report)
    for night in nights:
        report = retriever.retrieve_night_calibrations(night, settings.night_cutoff, dry_run=dry_run)
        click.echo(f"night {night}: {_n(report.queried, 'calibration file')} in the archive, "
                   f"{report.local} already in raw_path")
        reports.append(report)

    if dry_run:
        planned = {f.dp_id: f for r in reports for f in r.planned}
        click.echo(f"Would download {_n(len(planned), 'file')}"
                   + (f" ({_size(sum(f.size or 0 for f in planned.values()))} known)" if planned else ""))
        for item in sorted(planned.values(), key=lambda f: f.dp_id):
            size = _size(item.size) if item.size is not None else "?"
            click.echo(f"  {item.dp_id}  {item.kind}  {size}")
        return

    downloaded = [p for r in reports for p in r.downloaded]
    nbytes = sum(r.bytes for r in reports)
    missing: dict[str, str] = {}
    for r in reports:
        missing.update(r.missing)
    click.echo(f"Downloaded {_n(len(downloaded), 'file')} ({_size(nbytes)}) into {raw_path}")

    if not no_update_db:
        from ..ingest import update_db

        click.echo(update_db(settings, database, progress=progress).summary())

    if missing:
        click.echo(f"{len(missing)} requested files were not retrieved:", err=True)
        for dp_id in sorted(missing):
            click.echo(f"  {dp_id}: {missing[dp_id]}", err=True)
        raise MuseredError(f"{len(missing)} requested files were not retrieved (listed above); "
                           "run retrieve-data again to resume")


def _print_columns(archive) -> None:
    columns = archive.columns()
    click.echo(f"Queryable columns of {archive.config.tap_table} at {archive.config.tap_url} "
               f"(archive_filter keys; instrument = {archive.config.instrument!r} is implied):")
    width = max((len(c["column_name"]) for c in columns), default=10)
    for col in columns:
        unit = f"[{col['unit']}]" if col["unit"] else ""
        click.echo(f"  {col['column_name']:<{width}}  {col['datatype']:<8} {unit:<8} {col['description']}")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _size(nbytes: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} TB"
