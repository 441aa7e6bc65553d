"""Stages 2 and 3: check the top-level keys, then substitute ``{key}`` through the tree."""

from __future__ import annotations

import copy
import datetime as dt
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .keys import DEFAULTS, KEY_NAME, KNOWN_KEYS, MUSERED_ONLY_KEYS, PATH_KEYS, SECTIONS, TOKEN, USER_KEY_PREFIX
from .values import absolute_text, fail_at, is_scalar, kind_of, plain, scalar_text, suggest

logger = logging.getLogger("musered.settings")


def check_top_level(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Known keys with defaults filled in; MuseRed-only keys warned about and dropped."""
    top: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            fail_at(where, str(key), "top-level keys must be names")
        value = plain(value)
        if key in MUSERED_ONLY_KEYS:
            logger.warning("%s: %s: MuseRed-only setting (%s), ignored", where, key, MUSERED_ONLY_KEYS[key])
            continue
        if key not in KNOWN_KEYS and not key.startswith(USER_KEY_PREFIX):
            fail_at(where, key, f"unknown setting{suggest(key, KNOWN_KEYS)}")
        top[key] = value
    for key, default in DEFAULTS.items():
        if top.get(key) is None:
            top[key] = default
        elif key in ("version", "revision"):
            if not is_scalar(top[key]) or isinstance(top[key], (bool, dt.date)):
                fail_at(where, key, f"must be a single value (text or number), not {kind_of(top[key])}")
        elif not isinstance(top[key], str):
            fail_at(where, key, f"must be text, not {kind_of(top[key])}")
        if key != "db_env" and not str(top[key]).strip():
            fail_at(where, key, "is empty (remove it to get the default)")
    for key, default in SECTIONS.items():
        if top.get(key) is None:
            top[key] = copy.deepcopy(default)
    # Keep the file's order, defaults first for the keys the file does not set.
    ordered = {key: top[key] for key in KNOWN_KEYS}
    ordered.update((key, value) for key, value in top.items() if key not in ordered)
    if ordered["db_env"] is None:
        del ordered["db_env"]
    if ordered["muse_calib_path"] is None:
        del ordered["muse_calib_path"]
    return ordered


class Substituter:
    """Substitute ``{key}`` everywhere, resolving references between top-level values.

    Each top-level value is resolved once, depth first (``{a}`` -> ``{b}`` -> ...), so any
    depth works and a cycle is caught on the way. Resolved text is never parsed again, so
    ``{{`` gives a literal ``{`` even after several levels.
    """

    def __init__(self, top: dict[str, Any], where: str, base_dir: Path):
        self.top = top
        self.where = where
        self.base_dir = base_dir
        self.scalars = {k: v for k, v in top.items() if is_scalar(v)}
        self.resolved: dict[str, str] = {}
        self.stack: list[str] = []

    def substitute_all(self) -> dict[str, Any]:
        tree: dict[str, Any] = {}
        for key, value in self.top.items():
            if key in self.scalars:
                text = self.resolve(key)
                # version: 0.1 (a YAML float) is the text '0.1'; user values keep their type.
                tree[key] = text if key in DEFAULTS or isinstance(value, str) else value
            else:
                tree[key] = self.tree(value, key)
        return tree

    def resolve(self, name: str) -> str:
        if name in self.resolved:
            return self.resolved[name]
        if name in self.stack:
            cycle = self.stack[self.stack.index(name):] + [name]
            fail_at(self.where, cycle[0], f"reference cycle {' -> '.join('{' + k + '}' for k in cycle)}")
        self.stack.append(name)
        value = self.scalars[name]
        text = self.render(value, name) if isinstance(value, str) else scalar_text(value)
        self.stack.pop()
        if name in PATH_KEYS:
            text = absolute_text(text, self.base_dir)
        self.resolved[name] = text
        return text

    def render(self, text: str, keypath: str) -> str:
        def fail(reason: str):
            fail_at(self.where, keypath, reason)

        def replace(match: re.Match) -> str:
            token = match.group(0)
            if token == "{{":
                return "{"
            if token == "}}":
                return "}"
            name = match.group(1)
            if name is None:
                fail(f"unmatched {token!r} in {text!r} (write {token * 2} for a literal brace)")
            if not KEY_NAME.match(name):
                fail(f"{token!r} in {text!r} is not a settings key (write {{{{ and }}}} for literal braces)")
            if name not in self.scalars:
                if name in self.top:
                    fail(f"{{{name}}} cannot be substituted: {name} is not a single value")
                if name in DEFAULTS:
                    fail(f"{{{name}}} cannot be substituted: {name} is not set")
                fail(f"unknown key {{{name}}} in {text!r}{suggest(name, self.scalars, braces=True)}")
            return self.resolve(name)

        return TOKEN.sub(replace, text)

    def tree(self, value: Any, keypath: str) -> Any:
        value = plain(value)
        if isinstance(value, str):
            return self.render(value, keypath)
        if isinstance(value, Mapping):
            out: dict[Any, Any] = {}
            for key, item in value.items():
                child = f"{keypath}.{key}"
                new_key = self.render(key, child) if isinstance(key, str) else key
                if new_key in out:
                    fail_at(self.where, child, f"key {new_key!r} appears twice after substitution")
                out[new_key] = self.tree(item, child)
            return out
        if isinstance(value, list):
            return [self.tree(item, f"{keypath}[{i}]") for i, item in enumerate(value)]
        return value
