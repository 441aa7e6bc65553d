"""Stage 4: type checks and normalisation of every section, building :class:`Settings`.

:func:`build_settings` runs the checks of :class:`Checker` over the substituted tree.
:class:`Checker` holds the checks of the top-level sections (datasets, runs,
static_calib, frames, flags, executor...); the ``recipes`` section is checked by
:class:`.checkrecipes.RecipeChecker`, and the typed reads both use come from
:class:`.checkbase.BaseChecker`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .checkrecipes import RecipeChecker
from .keys import DATASET_KEYS, EXECUTOR_KEYS, EXECUTOR_KINDS, KEY_NAME, LOGLEVELS, PLUGIN_KEYS, RUN_KEYS
from .model import Dataset, Run, Settings
from .values import absolute_text, fail_at, is_scalar, kind_of, raw_columns, scalar_text, suggest


def build_settings(tree: dict[str, Any], where: str, base_dir: Path, path: Path | None) -> Settings:
    """The typed settings of a substituted ``tree`` read from ``where`` (checked sections written back)."""
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
    tree["plugins"] = checker.plugins(tree["plugins"])
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
        esorex=esorex_command(tree["esorex"], base_dir),
        _object_map=object_map,
    )


def esorex_command(text: str, base_dir: Path) -> str:
    """The ``esorex`` setting: a bare name stays a command looked up on PATH when it runs;
    a path (with a ``/`` or ``~``) is taken from the settings folder."""
    text = text.strip()
    if "/" in text or text.startswith("~"):
        return absolute_text(text, base_dir)
    return text


class Checker(RecipeChecker):
    """Type checks and normalisation of each section, with errors naming the key path."""

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

    def plugins(self, value: Any) -> dict[str, list[str]]:
        """``{paths: [absolute folders], commands: ["module:function" or "/abs/file.py:function"]}``;
        relative folders and files are taken from the settings file's folder. Whether the
        modules import is checked when the commands load (:mod:`musered.plugins`)."""
        section = self.mapping(value, "plugins", "a mapping with paths and commands (MuseRed's plugins.yml)")
        self.check_keys(section, "plugins", PLUGIN_KEYS)
        paths = [str(self._folder(p)) for p in self.names(section.get("paths"), "plugins.paths", "a folder or a list")]
        commands = []
        for i, entry in enumerate(self.names(section.get("commands"), "plugins.commands",
                                             "'module:function' or a list of them")):
            source, sep, attribute = entry.strip().rpartition(":")
            if not sep or not source.strip() or not KEY_NAME.match(attribute.strip()):
                self.fail(f"plugins.commands[{i}]", f"{entry!r} is not 'module:function' or 'file.py:function'")
            source = source.strip()
            if source.endswith(".py") or "/" in source:
                source = str(self._folder(source))
            elif not all(KEY_NAME.match(part) for part in source.split(".")):
                self.fail(f"plugins.commands[{i}]", f"{source!r} is neither a module name nor a .py file")
            commands.append(f"{source}:{attribute.strip()}")
        return {"paths": paths, "commands": commands}

    def _folder(self, text: str) -> Path:
        path = Path(os.path.expanduser(text))
        return path if path.is_absolute() else self.base_dir / path
