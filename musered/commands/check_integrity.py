"""``musered check-integrity``: verify the FITS checksums of the raw files."""

from __future__ import annotations

import click

from ..errors import MuseredError


@click.command("check-integrity")
@click.argument("selectors", nargs=-1, metavar="[NIGHT|NAME|GLOB]...")
@click.option("--report", is_flag=True, help="Summarise the checks done so far (verify nothing).")
@click.option("--recheck", is_flag=True, help="Verify again the files already verified and unchanged.")
@click.pass_obj
def command(app, selectors, report, recheck) -> None:
    """Verify the CHECKSUM and DATASUM keywords of the raw files (astropy).

    Every raw file of the database is verified, or those picked by the arguments: a
    night (2017-06-16), a run, an exposure name, a file name, or a glob. Results are kept
    in the database: a later run verifies only new or changed files. Invalid and
    missing files are listed on stderr and the command exits with status 1.
    """
    from ..integrity import check_integrity, integrity_summary

    if report:
        if selectors or recheck:
            raise MuseredError("--report summarises every check so far: give no file selection or --recheck")
        summary = integrity_summary(app.settings, app.database)
        click.echo(f"{summary['files']} files")
        for key in ("valid", "unverified", "not verified", "invalid", "missing"):
            click.echo(f"{key + ':':<14}{summary[key]}")
        if summary["bad"]:
            click.echo("\nInvalid or missing files:")
            for path in summary["bad"]:
                click.echo(f"  {path}")
        return

    def progress(i: int, n: int, result) -> None:
        click.echo(f"{i}/{n} : {result.path} : {result.status.upper()} ({result.reason})")

    result = check_integrity(app.settings, app.database, selectors, recheck=recheck, progress=progress)
    click.echo(result.summary())
    if result.bad:
        for check in result.bad:
            click.echo(f"  {check.path}: {check.status}: {check.reason}", err=True)
        count = len(result.bad)
        raise MuseredError(f"{count} raw file{'' if count == 1 else 's'} failed the integrity check (listed above)")
