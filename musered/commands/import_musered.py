"""``musered import-musered [SOURCE] [--to PATH] [--dry-run]``: import a MuseRed database."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("import-musered")
@click.argument("source", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--to", "target", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The musered database to write (default: next to SOURCE, musered.db -> musered.musered.db).")
@click.option("--version", "versions", multiple=True, metavar="VERSION",
              help="Import only this reduction version (repeatable; default: every version).")
@click.option("--dry-run", is_flag=True, help="Show what would be imported; write nothing.")
@click.pass_obj
def command(app, source: Path | None, target: Path | None, versions: tuple[str, ...], dry_run: bool) -> None:
    """Import a MuseRed database into a musered database, never altering it.

    SOURCE (default: the settings' db) is read read-only: its raw table (derived
    columns recomputed from the current settings; differences from MuseRed's night and
    run are listed), its reduced_<version> records (one row per product file; files not
    on disk are recorded as 'missing' and never used), flags_<version>, the qc_* tables,
    weather_conditions and gto_logs. Importing again adds nothing. Then set `db:` in the
    settings to the new file.
    """
    from ..db import Database, sqlite_url
    from ..db.migrate import import_target_for
    from ..errors import MuseredError
    from ..museredimport import import_musered

    settings = app.settings
    source = (source or Path(settings.db)).expanduser().resolve()
    target = (target.expanduser().resolve() if target else import_target_for(source).resolve())
    if target == source:
        raise MuseredError(f"--to {target}: that is the source; musered never writes into a MuseRed database")
    if dry_run and not target.exists():
        database = Database("sqlite://")  # nothing on disk: the would-be target, in memory
    else:
        database = Database(sqlite_url(target))
    try:
        report = import_musered(source, database, settings, versions=list(versions) or None, dry_run=dry_run)
    finally:
        database.dispose()
    report.target = str(target)
    click.echo(report.summary())
    if not dry_run and Path(settings.db).expanduser().resolve() != target:
        click.echo(f"Next: set `db: {target}` in {settings.path or 'the settings'} (musered reads that file).")
