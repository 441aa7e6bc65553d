"""The tables of ``musered info`` as plain text, and their rendering with rich.

Every view builds an :class:`InfoTable` (a title, column names and rows of text) or
:class:`Heading` lines that tests assert on; :func:`render` prints lines, headings and
tables, :func:`make_console` gives a plain-text console unless the output is a colour
terminal. ``--`` (:data:`NONE`) stands for a zero count or a missing value, and is dimmed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

NONE = "--"


@dataclass
class InfoTable:
    """A table as text: what ``render`` prints and what tests assert on."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    empty: str = "nothing to show"

    def column(self, name: str) -> list[str]:
        """The cells of one column, top to bottom."""
        index = self.columns.index(name)
        return [row[index] for row in self.rows]

    def cell(self, row_key: str, column: str) -> str:
        """The cell of the row whose first column is ``row_key``."""
        index = self.columns.index(column)
        for row in self.rows:
            if row[0] == row_key:
                return row[index]
        raise KeyError(row_key)


@dataclass(frozen=True)
class Heading:
    """A highlighted line (``★ Recipe: muse_bias``); ``style`` is a rich style."""

    text: str
    style: str = "bold green"


def _is_count(text: str) -> bool:
    # count columns are right-aligned
    return text == NONE or text.replace(".", "", 1).isdigit()


def make_console(file: IO[str], no_color: bool = False):
    """A rich console; plain text (no ANSI codes, wide lines) unless a colour terminal."""
    from rich.console import Console

    plain = no_color or not file.isatty()
    if plain:
        return Console(file=file, color_system=None, force_terminal=False, highlight=False,
                       emoji=False, width=400, soft_wrap=True)
    return Console(file=file, highlight=False, emoji=False)


def render(console, items: Iterable[str | Heading | InfoTable]) -> None:
    """Print lines, headings and tables; an empty table prints its ``empty`` message."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    for item in items:
        if isinstance(item, str):
            console.print(Text(item))
            continue
        if isinstance(item, Heading):
            console.print(Text(item.text, style=item.style))
            continue
        console.print()
        console.print(Text(item.title, style="bold"))
        if not item.rows:
            console.print(Text(f"  ({item.empty})"))
            continue
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
        for i, name in enumerate(item.columns):
            numeric = i > 0 and all(_is_count(row[i]) for row in item.rows)
            table.add_column(name, justify="right" if numeric else "left", no_wrap=True)
        for row in item.rows:
            table.add_row(*(Text(cell, style="dim" if cell == NONE else "") for cell in row))
        console.print(table)


def text_of(value) -> str:
    """A value as table text: ``--`` for None, ``yes``/``no``, floats with ``%g``."""
    import datetime as dt

    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    return str(value)
