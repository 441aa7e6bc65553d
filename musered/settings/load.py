"""Entry points: read the settings file, or build settings from a parsed tree."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import MuseredError
from .checks import build_settings
from .keys import DEFAULT_SETTINGS_FILE, SETTINGS_ENV
from .model import Settings
from .substitute import Substituter, check_top_level
from .values import fail_at, kind_of, where_text
from .yamlio import parse_yaml


def load_settings(path: str | Path | None = None, version: str | None = None) -> Settings:
    """Read the settings file: ``path``, else ``$MUSERED_SETTINGS``, else ``./settings.yml``.

    ``version`` (``musered --redversion``) replaces the file's ``version`` before
    substitution, so ``{version}`` in ``reduced_path`` and elsewhere follows it.
    """
    if path is None or str(path) == "":
        path = os.environ.get(SETTINGS_ENV) or DEFAULT_SETTINGS_FILE
    path = Path(path).expanduser()
    if path.is_dir():
        raise MuseredError(f"settings file {path} is a folder (use --settings FILE)")
    if not path.is_file():
        raise MuseredError(f"settings file {path} not found (use --settings or ${SETTINGS_ENV})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise MuseredError(f"settings file {path} cannot be read: {reason}") from None
    path = path.resolve()
    data = parse_yaml(text, where_text(path))
    return settings_from_dict(data, base_dir=path.parent, path=path, version=version)


def settings_from_dict(
    data: Mapping[str, Any] | None, base_dir: str | Path = ".", path: Path | None = None,
    version: str | None = None,
) -> Settings:
    """Build settings from an already parsed tree (tests, tools); ``data`` is not modified.
    ``version``: as for :func:`load_settings`."""
    where = where_text(path)
    base_dir = Path(base_dir).expanduser().resolve()
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        fail_at(where, None, f"the file must hold a mapping of settings, not {kind_of(data)}")
    if version is not None:
        data = {**data, "version": check_version(version)}
    top = check_top_level(data, where)
    subst = Substituter(top, where, base_dir)
    tree = subst.substitute_all()
    return build_settings(tree, where, base_dir, Path(path) if path is not None else None)


def check_version(version: object) -> str:
    """A reduction version given on the command line (``--redversion``) as text: one
    non-empty word, usable in a folder name (it is substituted into ``reduced_path``)."""
    text = str(version).strip()
    if not text or any(c.isspace() for c in text) or "/" in text or "\\" in text or text in (".", ".."):
        raise MuseredError(f"--redversion {version!r}: must be one word usable as a folder name (e.g. 0.2)")
    return text
