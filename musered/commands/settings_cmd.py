"""``musered settings``: print the settings as musered reads them (substituted, defaults in)."""

from __future__ import annotations

import difflib
from typing import Any

import click

from ..errors import MuseredError
from ..settings import dump_yaml


@click.command("settings")
@click.argument("key", required=False)
@click.pass_obj
def command(app: Any, key: str | None) -> None:
    """Print the fully substituted settings, or the value at KEY (e.g. recipes.muse_bias).

    Defaults are filled in, {key} references replaced, paths made absolute.
    """
    settings = app.settings
    if key is None:
        click.echo(settings.dump(), nl=False)
        return
    value = _lookup(settings.data, key, settings.where)
    if isinstance(value, (dict, list)):
        click.echo(dump_yaml(value), nl=False)
    else:
        click.echo("" if value is None else str(value))


def _lookup(data: dict, key: str, where: str) -> Any:
    """The value at a dotted key path; MuseredError with the closest key otherwise."""
    value: Any = data
    done: list[str] = []
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            choices = [str(k) for k in value] if isinstance(value, dict) else []
            close = difflib.get_close_matches(part, choices, n=1)
            hint = f"; did you mean {'.'.join(done + [close[0]])}?" if close else ""
            raise MuseredError(f"{where}: no setting {key}{hint}")
        value = value[part]
        done.append(part)
    return value
