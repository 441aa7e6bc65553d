"""``musered flags add|remove|list``: quality flags on exposures (see :mod:`musered.flags`)."""

from __future__ import annotations

import sys

import click


@click.group("flags")
def command() -> None:
    """Add, remove and list exposure flags.

    Flagged exposures are still processed and combined; a recipe block with
    `exclude_flags: true` (any flag) or `exclude_flags: [FLAG, ...]` leaves them out of
    that step (exp-combine, exp-align, std-combine ...), which lists them with the reason.

    NAME is an exposure name (2017-06-16T01:34:56.867) or a glob ("2017-06-16T0*").
    Valid flags: BAD_CENTERING, BAD_IMAQUALITY, BAD_SKY_FLUX, BAD_SKY_SUB, BAD_SLICE,
    SATELLITE, SHORT_EXPTIME, SLICE_GRADIENT, the alignment flags (BAD_ALIGNMENT,
    IMPHOT_*) and those under `flags` in the settings (`musered flags list --defined`).
    """


@command.command("add")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("--flag", "-f", "flag", required=True, metavar="FLAG", help="The flag to set.")
@click.option("--comment", "-c", default=None, metavar="TEXT", help="Why (kept with the flag).")
@click.pass_obj
def add(app, names, flag, comment) -> None:
    """Flag exposures with FLAG (again: update the comment and date)."""
    from ..flags import add_flag

    added, updated = add_flag(app.database, names, flag, comment, settings=app.settings)
    canonical = _canonical(app, flag)
    for name in added:
        click.echo(f"{name}: flagged {canonical}")
    for name in updated:
        click.echo(f"{name}: already flagged {canonical}" + (", comment updated" if comment is not None else ""))


@command.command("remove")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("--flag", "-f", "flag", default=None, metavar="FLAG", help="Only this flag (default: all flags).")
@click.pass_obj
def remove(app, names, flag) -> None:
    """Remove FLAG (or every flag) from exposures."""
    from ..flags import remove_flag

    removed = remove_flag(app.database, names, flag, settings=app.settings)
    click.echo(f"removed {removed} flag{'s' if removed != 1 else ''}")


@command.command("list")
@click.argument("names", nargs=-1, metavar="[NAME...]")
@click.option("--flag", "-f", "flag", default=None, metavar="FLAG", help="Only exposures with this flag.")
@click.option("--defined", is_flag=True, help="List the valid flags and their descriptions instead.")
@click.option("--no-color", is_flag=True, help="Plain text without colours (also when output is piped).")
@click.pass_obj
def list_(app, names, flag, defined, no_color) -> None:
    """List the flags of exposures (every flagged exposure without NAME)."""
    from .. import info
    from ..flags import QUALITY_FLAGS, known_flags, list_flags

    if defined:
        table = info.InfoTable("Flags", ["flag", "description", "from"])
        for name, description in known_flags(app.settings).items():
            table.rows.append([name, description or info.NONE, "musered" if name in QUALITY_FLAGS
                               and QUALITY_FLAGS[name] == description else "settings"])
    else:
        table = info.InfoTable("Flagged exposures", ["name", "night", "OBJECT", "flag", "comment", "date"],
                               empty="no flagged exposures")
        for e in list_flags(app.database, names, flag, settings=app.settings):
            table.rows.append([e.name, e.night or info.NONE, e.OBJECT or info.NONE, e.flag,
                               e.comment or info.NONE, e.date.strftime("%Y-%m-%d %H:%M")])
    info.render(info.make_console(sys.stdout, no_color=no_color), [table])


def _canonical(app, flag: str) -> str:
    from ..flags import check_flag

    return check_flag(flag, app.settings)
