"""``musered report``: write a static HTML report of the reduction (see :mod:`musered.report`)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Folder of the report (default: {reduced_path}/report).")
@click.pass_obj
def command(app, out: Path | None) -> None:
    """Write an HTML page of every recipe run: status, runtime, QC, one plot each and links
    to the products. Open DIR/index.html in a browser; no server is needed.
    """
    from ..report import build_report

    index = build_report(app.settings, app.database, out)
    click.echo(f"Report written to {index}")
