"""Stage 4, recipe blocks: the ``recipes`` section, block by block.

Each block (``recipes.muse_bias``, ``recipes.common``...) has its keys checked, its
``params`` validated against the registered recipe of the same name (and ``common``
against every recipe that has the parameter), its ``init`` run options and its
``frames`` options (exclude/include, offsets, custom frames) normalised. Blocks of
:data:`.keys.UNMANAGED_BLOCKS` are kept as written. MuseRed-only options are dropped
with a warning, so a MuseRed settings file loads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from .checkbase import BaseChecker
from .keys import (
    BLOCK_KEYS, COMMON_BLOCK, ENGINES, FRAME_TAG, FRAMES_KEYS, INIT_KEYS, MUSERED_ONLY_BLOCK_KEYS,
    MUSERED_ONLY_INIT_KEYS, UNMANAGED_BLOCKS,
)
from .values import first_unknown, is_scalar, kind_of, scalar_text, suggest

logger = logging.getLogger("musered.settings")


class RecipeChecker(BaseChecker):
    """The checks of the ``recipes`` section, on top of the typed reads."""

    def recipes(self, value: Any) -> dict[str, dict[str, Any]]:
        """Every block checked; recipe parameters validated once all blocks are read."""
        section = self.mapping(value, "recipes", "a mapping of recipe blocks")
        blocks: dict[str, dict[str, Any]] = {}
        for name, block in section.items():
            if not isinstance(name, str):
                self.fail(f"recipes.{name}", "block names are words like muse_bias")
            keypath = f"recipes.{name}"
            block = self.mapping(block, keypath, "a mapping (params, init, frames, ...)")
            if name in UNMANAGED_BLOCKS:
                blocks[name] = block
            else:
                blocks[name] = self.block(block, keypath, common=name == COMMON_BLOCK)
        if any(name not in UNMANAGED_BLOCKS for name in blocks):
            self.recipe_params(blocks)
        return blocks

    def block(self, block: dict[str, Any], keypath: str, common: bool) -> dict[str, Any]:
        """One managed block with ``params``, ``init`` and ``frames`` always present."""
        out: dict[str, Any] = {}
        moved_frames: dict[str, Any] = {}
        for key, value in block.items():
            child = f"{keypath}.{key}"
            if key in BLOCK_KEYS:
                out[key] = value
            elif key in MUSERED_ONLY_BLOCK_KEYS or key in MUSERED_ONLY_INIT_KEYS:
                # MuseRed also read recipes.common.temp_dir etc. as recipe options.
                logger.warning("%s: %s: MuseRed-only recipe option, ignored", self.where, child)
            elif isinstance(key, str) and FRAME_TAG.match(key):
                # Older MuseRed files put OFFSET_LIST next to params; it belongs in frames.
                logger.warning("%s: %s: frame given outside 'frames:', read as %s.frames.%s",
                               self.where, child, keypath, key)
                moved_frames[key] = value
            else:
                hint = suggest(str(key), BLOCK_KEYS)
                self.fail(child, f"unknown key{hint} (allowed: {', '.join(BLOCK_KEYS)})")
        out["params"] = self.mapping(out.get("params"), f"{keypath}.params", "a mapping of recipe parameters")
        for key, value in out["params"].items():
            if not isinstance(key, str):
                self.fail(f"{keypath}.params.{key}", "parameter names are words")
            if value is not None and not is_scalar(value):
                self.fail(f"{keypath}.params.{key}", f"must be a single value, not {kind_of(value)}")
        init = self.mapping(out.get("init"), f"{keypath}.init", "a mapping of run options (output_dir)")
        out["init"] = self.init(init, f"{keypath}.init")
        frames = self.mapping(out.get("frames"), f"{keypath}.frames", "a mapping of frame options")
        out["frames"] = self.recipe_frames({**moved_frames, **frames}, f"{keypath}.frames")
        for key in ("from_recipe", "filt", "method"):
            if key in out and not isinstance(out[key], str):
                self.fail(f"{keypath}.{key}", f"must be text, not {kind_of(out[key])}")
        if "engine" in out and out["engine"] not in ENGINES:
            hint = suggest(str(out["engine"]), ENGINES)
            self.fail(f"{keypath}.engine", f"unknown engine {out['engine']!r}{hint} (allowed: {', '.join(ENGINES)})")
        if "exclude_flags" in out and not isinstance(out["exclude_flags"], bool):
            out["exclude_flags"] = self.names(out["exclude_flags"], f"{keypath}.exclude_flags",
                                              "true, false or a list of flag names")
        self.selections(out, keypath)
        if common:
            for key in ("from_recipe", "filt", "method", "select", "names_with_selection"):
                if key in out:
                    self.fail(f"{keypath}.{key}", "belongs in a recipe block, not in common")
        return out

    def selections(self, block: dict[str, Any], keypath: str) -> None:
        """``select: {TABLE: query}`` and ``names_with_selection: {NAME: {TABLE: query}}``
        (:mod:`musered.selection`): their shape; tables and columns are checked when a
        command runs the queries. As in MuseRed, ``select`` is not read when
        ``names_with_selection`` is given."""
        from ..selection import normalized_queries, query_problem

        def checked(value: Any, child: str) -> dict[str, Any]:
            problem = query_problem(value)
            if problem is not None:
                self.fail(f"{child}.{problem[0]}" if problem[0] else child, problem[1])
            return normalized_queries(value)

        if block.get("select") is not None:
            block["select"] = checked(block["select"], f"{keypath}.select")
        if block.get("names_with_selection") is not None:
            entries = self.mapping(block["names_with_selection"], f"{keypath}.names_with_selection",
                                   "a mapping {OUTPUT_NAME: {TABLE: query}}")
            for name, queries in entries.items():
                child = f"{keypath}.names_with_selection.{name}"
                if not isinstance(name, str) or not name or "/" in name or name.strip() != name:
                    self.fail(child, "an output name is a plain name without '/' or spaces around it")
                entries[name] = None if queries is None else checked(queries, child)
            if not entries:
                self.fail(f"{keypath}.names_with_selection", "names no output")
            block["names_with_selection"] = entries
            if block.get("select") is not None:
                logger.warning("%s: %s.select: not read when names_with_selection is given (as in MuseRed)",
                               self.where, keypath)

    def init(self, init: dict[str, Any], keypath: str) -> dict[str, Any]:
        """The run options of a block (``output_dir``...), MuseRed-only ones dropped."""
        out = {}
        for key, value in init.items():
            if key in MUSERED_ONLY_INIT_KEYS:
                logger.warning("%s: %s.%s: MuseRed-only recipe option, ignored", self.where, keypath, key)
            elif key in INIT_KEYS:
                if not isinstance(value, str) or not value.strip():
                    self.fail(f"{keypath}.{key}", f"must be a folder name, not {value!r}")
                out[key] = value
            else:
                hint = suggest(str(key), INIT_KEYS)
                self.fail(f"{keypath}.{key}", f"unknown run option{hint} (allowed: {', '.join(INIT_KEYS)})")
        return out

    def recipe_frames(self, frames: dict[str, Any], keypath: str) -> dict[str, Any]:
        """exclude/include as lists of tags, offsets as {TAG: nights}, custom frames kept.

        A custom frame is a path, glob, folder or product name (``OFFSET_LIST_drs``), a list
        of those, or ``{path: validity}``; ``~`` is expanded, relative paths are left for
        association to take from ``base_dir``.
        """
        out: dict[str, Any] = {}
        for key, value in frames.items():
            child = f"{keypath}.{key}"
            if key in ("exclude", "include"):
                tags = self.names(value, child, "a frame tag or a list of tags")
                out[key] = [self.frame_tag(tag, child) for tag in tags]
            elif key == "offsets":
                offsets = self.mapping(value, child, "a mapping {TAG: nights}")
                for tag, nights in offsets.items():
                    self.frame_tag(tag, f"{child}.{tag}")
                    if isinstance(nights, bool) or not isinstance(nights, int) or nights < 0:
                        self.fail(f"{child}.{tag}", f"must be a number of nights >= 0, not {nights!r}")
                out[key] = offsets
            elif isinstance(key, str) and FRAME_TAG.match(key):
                out[key] = self.custom_frame(value, child)
            else:
                hint = suggest(str(key), FRAMES_KEYS)
                self.fail(child, f"unknown key{hint}; expected exclude, include, offsets or a frame TAG")
        return out

    def custom_frame(self, value: Any, keypath: str) -> Any:
        """A path, a list of paths or ``{path: {start_date, end_date}}``, ``~`` expanded."""
        if isinstance(value, str):
            return os.path.expanduser(value)
        if isinstance(value, list):
            return [os.path.expanduser(v) for v in self.names(value, keypath, "a path or a list of paths")]
        if isinstance(value, Mapping):
            out = {}
            for name, validity in value.items():
                start, end = self.validity(validity, f"{keypath}.{name}")
                out[os.path.expanduser(scalar_text(name))] = {"start_date": start, "end_date": end}
            return out
        self.fail(keypath, f"must be a path, a list of paths or {{path: validity}}, not {kind_of(value)}")

    def recipe_params(self, blocks: dict[str, dict[str, Any]]) -> None:
        """Validate the params of blocks named after a registered recipe, and of common."""
        from recipes.registry import all_recipes

        registry = all_recipes()
        common = blocks.get(COMMON_BLOCK, {}).get("params", {})
        for key in common:
            owners = [r for r in registry.values() if any(p.name == key for p in r.params)]
            if registry and not owners:
                logger.warning("%s: recipes.common.params.%s: not a parameter of any musered recipe, ignored",
                               self.where, key)
            for recipe in owners:
                try:
                    recipe.validate({key: common[key]})
                except ValueError as exc:
                    self.fail(f"recipes.common.params.{key}", f"{exc} (for {recipe.name})")
        for name, block in blocks.items():
            recipe = registry.get(name)
            if recipe is None or name == COMMON_BLOCK:
                continue
            if block.get("engine") == "drs":
                from recipes.drs import DRS_RECIPES

                if name not in DRS_RECIPES:
                    self.fail(f"recipes.{name}.engine", f"{name} has no ESO DRS counterpart (esorex --recipes); "
                              "use engine: musered")
            known = {p.name for p in recipe.params}
            unknown = first_unknown(block["params"], known)
            if unknown is not None:
                valid = ", ".join(sorted(known)) or "none"
                hint = suggest(unknown, known) or "."
                self.fail(f"recipes.{name}.params.{unknown}",
                          f"unknown parameter of {name}{hint} Valid parameters: {valid}")
            try:
                recipe.validate(block["params"])
            except ValueError as exc:
                self.fail(f"recipes.{name}.params", str(exc))
