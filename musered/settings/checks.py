"""Stage 4: type checks and normalisation of every section, building :class:`Settings`."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .keys import (
    BLOCK_KEYS, COMMON_BLOCK, DATASET_KEYS, EXECUTOR_KEYS, EXECUTOR_KINDS, FRAME_TAG, FRAMES_KEYS, INIT_KEYS,
    KEY_NAME, LOGLEVELS, MUSERED_ONLY_BLOCK_KEYS, MUSERED_ONLY_INIT_KEYS, RUN_KEYS, UNMANAGED_BLOCKS,
)
from .model import Dataset, Run, Settings
from .values import fail_at, first_unknown, is_scalar, kind_of, parse_date, raw_columns, scalar_text, suggest

logger = logging.getLogger("musered.settings")


def build_settings(tree: dict[str, Any], where: str, base_dir: Path, path: Path | None) -> Settings:
    checker = Checker(where, base_dir)
    muse_calib_path = Path(tree["muse_calib_path"]) if "muse_calib_path" in tree else None
    loglevel = tree["loglevel"].strip().lower()
    if loglevel not in LOGLEVELS:
        fail_at(where, "loglevel", f"must be one of {', '.join(LOGLEVELS)}, not {tree['loglevel']!r}")
    tree["loglevel"] = loglevel
    datasets, object_map = checker.datasets(tree["datasets"])
    runs = checker.runs(tree["runs"])
    tree["additional_keywords"] = additional = checker.additional_keywords(tree["additional_keywords"])
    tree["frames"] = frames = checker.global_frames(tree["frames"], additional)
    tree["flags"] = flags = checker.flags(tree["flags"])
    tree["executor"] = executor = checker.executor(tree["executor"])
    tree["recipes"] = recipes = checker.recipes(tree["recipes"])
    db_env = tree.get("db_env")
    return Settings(
        path=path,
        base_dir=base_dir,
        data=tree,
        workdir=Path(tree["workdir"]),
        db=Path(tree["db"]),
        db_env=db_env.strip() if db_env else None,
        raw_path=Path(tree["raw_path"]),
        reduced_path=Path(tree["reduced_path"]),
        muse_calib_path=muse_calib_path,
        version=tree["version"],
        revision=tree["revision"],
        loglevel=loglevel,
        night_cutoff=checker.night_cutoff(tree["night_cutoff"]),
        additional_keywords=additional,
        datasets=datasets,
        runs=runs,
        static_calib=checker.static_calib(tree["static_calib"], muse_calib_path),
        frames=frames,
        flags=flags,
        retrieve_data=checker.mapping(tree["retrieve_data"], "retrieve_data"),
        recipes=recipes,
        executor=executor,
        _object_map=object_map,
    )


class Checker:
    """Type checks and normalisation of each section, with errors naming the key path."""

    def __init__(self, where: str, base_dir: Path):
        self.where = where
        self.base_dir = base_dir

    def fail(self, keypath: str, reason: str):
        fail_at(self.where, keypath, reason)

    def mapping(self, value: Any, keypath: str, what: str = "a mapping") -> dict:
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
        for key in value:
            if key not in allowed:
                hint = suggest(str(key), allowed)
                self.fail(f"{keypath}.{key}", f"unknown key{hint} (allowed: {', '.join(allowed)})")

    def date(self, value: Any, keypath: str) -> dt.date:
        day = parse_date(value, None)
        if day is None:
            self.fail(keypath, f"must be a date YYYY-MM-DD, not {value!r}")
        return day

    def night_cutoff(self, value: str) -> dt.time:
        match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*", value)
        if match:
            hour, minute, second = (int(g) if g else 0 for g in match.groups())
            if hour < 24 and minute < 60 and second < 60:
                return dt.time(hour, minute, second)
        self.fail("night_cutoff", f"must be a UT time HH:MM (e.g. '20:40'), not {value!r}")

    def additional_keywords(self, value: Any) -> list[str]:
        words = self.names(value, "additional_keywords", "a FITS keyword or a list of keywords")
        return [" ".join(w.split()) for w in words]

    def datasets(self, value: Any) -> tuple[dict[str, Dataset], dict[str, str]]:
        section = self.mapping(value, "datasets", "a mapping of dataset names to their definition")
        datasets: dict[str, Dataset] = {}
        owner: dict[str, str] = {}
        for name, conf in section.items():
            name = scalar_text(name)
            keypath = f"datasets.{name}"
            conf = self.mapping(conf, keypath, "a mapping with OBJECT and archive_filter")
            self.check_keys(conf, keypath, DATASET_KEYS)
            objects = self.names(conf.get("OBJECT"), f"{keypath}.OBJECT", "an OBJECT name or a list of names")
            objects = objects or [name]
            for obj in objects:
                if obj in owner and owner[obj] != name:
                    self.fail(f"{keypath}.OBJECT", f"OBJECT {obj!r} already belongs to dataset {owner[obj]}")
                owner[obj] = name
            archive_filter = self.mapping(conf.get("archive_filter"), f"{keypath}.archive_filter")
            datasets[name] = Dataset(name=name, objects=objects, archive_filter=archive_filter)
        return datasets, owner

    def runs(self, value: Any) -> dict[str, Run]:
        section = self.mapping(value, "runs", "a mapping of run names to {start_date, end_date}")
        runs: dict[str, Run] = {}
        for name, conf in section.items():
            name = scalar_text(name)
            keypath = f"runs.{name}"
            conf = self.mapping(conf, keypath, "a mapping with start_date and end_date")
            self.check_keys(conf, keypath, RUN_KEYS)
            for key in RUN_KEYS:
                if conf.get(key) is None:
                    self.fail(f"{keypath}.{key}", "is missing (a run needs start_date and end_date)")
            start = self.date(conf["start_date"], f"{keypath}.start_date")
            end = self.date(conf["end_date"], f"{keypath}.end_date")
            if end < start:
                self.fail(keypath, f"end_date {end} is before start_date {start}")
            runs[name] = Run(name=name, start_date=start, end_date=end)
        return runs

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

    def static_calib(
        self, value: Any, muse_calib_path: Path | None
    ) -> dict[str, dict[Path, tuple[dt.date | None, dt.date | None]]]:
        """Relative file names are taken in muse_calib_path (as MuseRed did), else base_dir."""
        section = self.mapping(value, "static_calib", "a mapping of tags to {file: validity}")
        folder = muse_calib_path or self.base_dir
        out: dict[str, dict[Path, tuple[dt.date | None, dt.date | None]]] = {}
        for tag, files in section.items():
            keypath = f"static_calib.{tag}"
            self.frame_tag(tag, keypath)
            if isinstance(files, str):
                files = {files: None}
            files = self.mapping(files, keypath, "a file name or a mapping {file: validity}")
            out[tag] = {}
            for name, validity in files.items():
                file_path = Path(os.path.expanduser(scalar_text(name)))
                file_path = file_path if file_path.is_absolute() else folder / file_path
                out[tag][file_path] = self.validity(validity, f"{keypath}.{name}")
        return out

    def frame_tag(self, tag: Any, keypath: str) -> str:
        if not isinstance(tag, str) or not FRAME_TAG.match(tag):
            self.fail(keypath, f"{tag!r} is not a frame tag (upper case, like MASTER_BIAS)")
        return tag

    def global_frames(self, value: Any, additional_keywords: list[str]) -> dict[str, Any]:
        section = self.mapping(value, "frames", "a mapping with an exclude block")
        self.check_keys(section, "frames", ("exclude",))
        if "exclude" not in section:
            return {}
        exclude = self.mapping(section["exclude"], "frames.exclude", "a mapping {raw: [queries], TAG: [names]}")
        columns = raw_columns(additional_keywords)
        out: dict[str, Any] = {}
        for key, items in exclude.items():
            keypath = f"frames.exclude.{key}"
            if key == "raw":
                queries = items if isinstance(items, list) else [items]
                out["raw"] = [self.raw_query(q, f"{keypath}[{i}]", columns) for i, q in enumerate(queries)]
            else:
                self.frame_tag(key, keypath)
                out[key] = self.names(items, keypath, "an exposure name, a TPL_START or a list of them")
        return {"exclude": out}

    def raw_query(self, value: Any, keypath: str, columns: tuple[str, ...]) -> dict[str, Any]:
        query = self.mapping(value, keypath, "a mapping {raw column: value or [values]}")
        if not query:
            self.fail(keypath, "an empty query would exclude every raw file")
        out: dict[str, Any] = {}
        for column, wanted in query.items():
            if columns and column not in columns:
                self.fail(f"{keypath}.{column}", f"unknown raw column{suggest(str(column), columns)}")
            items = wanted if isinstance(wanted, list) else [wanted]
            texts = self.names(items, f"{keypath}.{column}", "a value or a list of values")
            # numbers stay numbers (EXPTIME: 600); dates become ISO text like the night column
            values = [item if isinstance(item, (int, float)) else text for item, text in zip(items, texts)]
            out[column] = values if isinstance(wanted, list) else values[0]
        return out

    def flags(self, value: Any) -> dict[str, str]:
        section = self.mapping(value, "flags", "a mapping of flag names to descriptions")
        out = {}
        for name, description in section.items():
            if not isinstance(name, str) or not KEY_NAME.match(name):
                self.fail(f"flags.{name}", "flag names are words like MY_FLAG")
            if description is not None and not is_scalar(description):
                self.fail(f"flags.{name}", f"must be a description text, not {kind_of(description)}")
            out[name] = "" if description is None else scalar_text(description)
        return out

    def executor(self, value: Any) -> dict[str, Any]:
        kind_path = "executor.kind" if isinstance(value, Mapping) else "executor"
        if isinstance(value, str):
            value = {"kind": value}
        what = f"one of {', '.join(EXECUTOR_KINDS)} or a mapping {{kind, jobs, address, cluster}}"
        conf = self.mapping(value, "executor", what)
        self.check_keys(conf, "executor", EXECUTOR_KEYS)
        kind = conf.get("kind")
        if kind is None:
            kind = "dask" if conf.get("address") or conf.get("cluster") else "serial"
        if not isinstance(kind, str) or kind.strip().lower() not in EXECUTOR_KINDS:
            self.fail(kind_path, f"must be one of {', '.join(EXECUTOR_KINDS)}, not {kind!r}")
        kind = kind.strip().lower()
        jobs = conf.get("jobs")
        if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
            self.fail("executor.jobs", f"must be a whole number >= 1, not {jobs!r}")
        address = conf.get("address")
        if address is not None and not isinstance(address, str):
            self.fail("executor.address", f"must be a scheduler address like tcp://host:8786, not {address!r}")
        cluster = conf.get("cluster")
        if cluster is not None:
            cluster = self.mapping(cluster, "executor.cluster", "a mapping of dask-jobqueue cluster options")
        if kind != "dask" and (address or cluster):
            self.fail("executor", f"address and cluster need kind: dask, not {kind}")
        if address and cluster:
            self.fail("executor", "give address (a running scheduler) or cluster (one to start), not both")
        out = {"kind": kind, "jobs": jobs, "address": address, "cluster": cluster}
        # Dask options: worker processes (false: threads) and seconds to wait for workers.
        if conf.get("processes") is not None:
            if not isinstance(conf["processes"], bool):
                self.fail("executor.processes", f"must be true or false, not {conf['processes']!r}")
            out["processes"] = conf["processes"]
        if conf.get("timeout") is not None:
            timeout = conf["timeout"]
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
                self.fail("executor.timeout", f"must be a number of seconds > 0, not {timeout!r}")
            out["timeout"] = timeout
        return out

    # -- recipe blocks ------------------------------------------------------------------

    def recipes(self, value: Any) -> dict[str, dict[str, Any]]:
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
        if "exclude_flags" in out and not isinstance(out["exclude_flags"], bool):
            out["exclude_flags"] = self.names(out["exclude_flags"], f"{keypath}.exclude_flags",
                                              "true, false or a list of flag names")
        if common:
            for key in ("from_recipe", "filt", "method"):
                if key in out:
                    self.fail(f"{keypath}.{key}", "belongs in a recipe block, not in common")
        return out

    def init(self, init: dict[str, Any], keypath: str) -> dict[str, Any]:
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
                    recipe.merge_params({key: common[key]})
                except ValueError as exc:
                    self.fail(f"recipes.common.params.{key}", f"{exc} (for {recipe.name})")
        for name, block in blocks.items():
            recipe = registry.get(name)
            if recipe is None or name == COMMON_BLOCK:
                continue
            known = {p.name for p in recipe.params}
            unknown = first_unknown(block["params"], known)
            if unknown is not None:
                valid = ", ".join(sorted(known)) or "none"
                hint = suggest(unknown, known) or "."
                self.fail(f"recipes.{name}.params.{unknown}",
                          f"unknown parameter of {name}{hint} Valid parameters: {valid}")
            try:
                recipe.merge_params(block["params"])
            except ValueError as exc:
                self.fail(f"recipes.{name}.params", str(exc))
