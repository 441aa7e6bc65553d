"""``mr.flags``: MuseRed's ``QAFlags`` vocabulary over :mod:`musered.flags`.

``mr.flags.add(names, mr.flags.BAD_SLICE, ...)``, ``remove``, ``list``, ``find``,
``as_table`` and the flags as attributes, as in MuseRed; every call goes to the functions
of :mod:`musered.flags` that ``musered flags add|remove|list`` use, so names and globs,
validation and messages are the same. A flag here is its name (a string: MuseRed's is an
Enum member whose ``.name`` is that string); a flag is set or not (MuseRed's integer
values are not kept) and may carry a comment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _names(exps: str | Sequence[str]) -> list[str]:
    if isinstance(exps, (bytes, bytearray)) or (not isinstance(exps, str) and
                                                any(not isinstance(e, str) for e in exps)):
        raise TypeError("exposure names should be given as str")
    return [exps] if isinstance(exps, str) else list(exps)


def _flag_name(flag: Any) -> str:
    return getattr(flag, "name", flag)  # a MuseRed Enum member pasted from old code


class FlagList:
    """The quality flags of one database (module docstring)."""

    def __init__(self, settings, database):
        self.settings = settings
        self.database = database

    @property
    def flags(self) -> dict[str, str]:
        """Flag name -> description: the pre-defined flags and the settings' ``flags``."""
        from .flags import known_flags

        return known_flags(self.settings)

    @property
    def names(self) -> list[str]:
        return list(self.flags)

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self.flags:
            return name
        raise AttributeError(f"no flag {name!r}; flags: {', '.join(self.flags)}")

    def __dir__(self) -> list[str]:
        return sorted(set(self.names) | set(super().__dir__()))

    def add(self, exps: str | Sequence[str], *flags: Any, comment: str | None = None) -> list[str]:
        """Flag the exposures (names or globs) with each flag; the exposures newly flagged."""
        from .flags import add_flag

        added: list[str] = []
        for flag in flags:
            new, _ = add_flag(self.database, _names(exps), _flag_name(flag), comment, settings=self.settings)
            added += [name for name in new if name not in added]
        return added

    def remove(self, exps: str | Sequence[str], *flags: Any) -> int:
        """Remove each flag (every flag when none is given) from the exposures; the number
        of flags removed. Removing a flag that is not set is a MuseredError (a typo?)."""
        from .flags import remove_flag

        if not flags:
            return remove_flag(self.database, _names(exps), None, settings=self.settings)
        return sum(remove_flag(self.database, _names(exps), _flag_name(flag), settings=self.settings)
                   for flag in flags)

    def list(self, exps: str | Sequence[str]) -> list[str] | list[list[str]]:
        """The flags of an exposure (sorted), or one list per exposure for a list of names."""
        from .flags import flags_by_exposure

        by_name = flags_by_exposure(self.database)
        names = _names(exps)
        out = [by_name.get(name, []) for name in names]
        return out[0] if isinstance(exps, str) else out

    def find(self, *flags: Any, _and: bool = False) -> list[str]:
        """The exposures (sorted) carrying any of the flags (all of them with ``_and``);
        with no flag, every flagged exposure."""
        from .flags import check_flag, flags_by_exposure

        wanted = {check_flag(_flag_name(flag), self.settings) for flag in flags}
        by_name = flags_by_exposure(self.database)
        if not wanted:
            return sorted(by_name)
        test = wanted.issubset if _and else (lambda have: bool(wanted & have))
        return sorted(name for name, have in by_name.items() if test(set(have)))

    def as_table(self):
        """An astropy Table: one row per flagged exposure, a column per flag set anywhere
        (1 where set, masked elsewhere)."""
        from astropy.table import MaskedColumn, Table

        from .flags import list_flags

        entries = list_flags(self.database, settings=self.settings)
        names = sorted({e.name for e in entries})
        used = [f for f in self.flags if any(e.flag == f for e in entries)]
        have = {(e.name, e.flag) for e in entries}
        table = Table()
        table["name"] = names
        for flag in used:
            table[flag] = MaskedColumn([1] * len(names), dtype=int,
                                       mask=[(name, flag) not in have for name in names])
        return table
