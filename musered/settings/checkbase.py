"""Stage 4 building blocks: typed reads of settings values, errors naming the key path.

:class:`BaseChecker` reads one value as a mapping, a list of names, a date, a validity
range or a frame tag, and fails with a one-line :class:`~musered.errors.MuseredError`
naming the file and the key path (through :func:`.values.fail_at`). The section checks
(:mod:`.checks`) and the recipe-block checks (:mod:`.checkrecipes`) are built on it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .keys import FRAME_TAG, RUN_KEYS
from .values import fail_at, is_scalar, kind_of, parse_date, scalar_text, suggest


class BaseChecker:
    """Typed reads of settings values; ``where`` (the file) starts every error message."""

    def __init__(self, where: str, base_dir: Path):
        self.where = where
        self.base_dir = base_dir

    def fail(self, keypath: str, reason: str):
        """Raise the MuseredError of ``keypath`` (never returns)."""
        fail_at(self.where, keypath, reason)

    def mapping(self, value: Any, keypath: str, what: str = "a mapping") -> dict:
        """A mapping as a dict; ``None`` (an empty YAML section) is ``{}``."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(keypath, f"must be {what}, not {kind_of(value)}")
        return dict(value)

    def names(self, value: Any, keypath: str, what: str = "a name or a list of names") -> list[str]:
        """A scalar or a list of scalars, as a list of text (dates in ISO form)."""
        if value is None:
            return []
        items = value if isinstance(value, list) else [value]
        out = []
        for i, item in enumerate(items):
            if not is_scalar(item) or isinstance(item, bool):
                where = f"{keypath}[{i}]" if isinstance(value, list) else keypath
                self.fail(where, f"must be {what}, not {kind_of(item)}")
            out.append(scalar_text(item))
        return out

    def check_keys(self, value: Mapping, keypath: str, allowed: tuple[str, ...]) -> None:
        """Fail on the first key not in ``allowed``, suggesting the closest one."""
        for key in value:
            if key not in allowed:
                hint = suggest(str(key), allowed)
                self.fail(f"{keypath}.{key}", f"unknown key{hint} (allowed: {', '.join(allowed)})")

    def date(self, value: Any, keypath: str) -> dt.date:
        """A date (YAML date or ``YYYY-MM-DD`` text)."""
        day = parse_date(value, None)
        if day is None:
            self.fail(keypath, f"must be a date YYYY-MM-DD, not {value!r}")
        return day

    def validity(self, value: Any, keypath: str) -> tuple[dt.date | None, dt.date | None]:
        """``None`` (always valid) or ``{start_date, end_date}``, either end optional."""
        conf = self.mapping(value, keypath, "a validity range {start_date, end_date}")
        self.check_keys(conf, keypath, RUN_KEYS)
        start, end = (
            None if conf.get(key) is None else self.date(conf[key], f"{keypath}.{key}") for key in RUN_KEYS
        )
        if start and end and end < start:
            self.fail(keypath, f"end_date {end} is before start_date {start}")
        return start, end

    def frame_tag(self, tag: Any, keypath: str) -> str:
        """``tag`` itself if it is a frame tag (upper case, like MASTER_BIAS)."""
        if not isinstance(tag, str) or not FRAME_TAG.match(tag):
            self.fail(keypath, f"{tag!r} is not a frame tag (upper case, like MASTER_BIAS)")
        return tag
