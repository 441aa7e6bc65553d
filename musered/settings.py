"""The settings file: load, substitute, validate and give typed access.

One YAML file (``--settings FILE``, else ``$MUSERED_SETTINGS``, else ``./settings.yml``)
holds every option; docs/settings.md is the user reference. Loading happens in stages:

1. parse with a safe YAML loader (anchors, aliases and ``<<:`` merge keys work);
2. drop MuseRed-only sections (``cpl``, ``GTO_logs``, ``plugins``) with one warning each,
   reject unknown top-level keys (with the closest known key suggested);
3. substitute ``{key}`` (a top-level key with a single value) in every string and every
   mapping key of the tree, to any depth of references; ``{{``/``}}`` are literal braces;
4. check types and build the typed view (:class:`Settings`).

Every problem is a :class:`~musered.errors.MuseredError` with a one-line message naming
the file, the key path (``recipes.muse_scipost.init.output_dir``) and the reason.

Conventions: dates are :class:`datetime.date` (UT nights, ISO ``YYYY-MM-DD``); paths are
absolute :class:`~pathlib.Path`, relative ones being taken from the settings file's folder
(``base_dir``); ``night_cutoff`` is a UT :class:`datetime.time`.
"""

from __future__ import annotations

import copy
import datetime as dt
import difflib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import MuseredError

logger = logging.getLogger("musered.settings")

SETTINGS_ENV = "MUSERED_SETTINGS"
DEFAULT_SETTINGS_FILE = "settings.yml"

# Top-level keys holding one value each; they can be substituted as {key}.
DEFAULTS: dict[str, Any] = {
    "workdir": ".",
    "db": "{workdir}/musered.db",
    "db_env": None,
    "raw_path": "{workdir}/raw",
    "reduced_path": "{workdir}/reduced/{version}",
    "muse_calib_path": None,
    "version": "0.1",
    "revision": "1",
    "loglevel": "info",
    "night_cutoff": "20:40",
}
# Top-level sections, with the value an absent or empty section gets.
SECTIONS: dict[str, Any] = {
    "additional_keywords": [],
    "datasets": {},
    "runs": {},
    "static_calib": {},
    "frames": {},
    "flags": {},
    "retrieve_data": {},
    "recipes": {},
    "executor": "serial",
}
KNOWN_KEYS = tuple(DEFAULTS) + tuple(SECTIONS)
PATH_KEYS = ("workdir", "db", "raw_path", "reduced_path", "muse_calib_path")
# Keys MuseRed understood and musered has no use for: warned about once, then ignored.
MUSERED_ONLY_KEYS = {
    "cpl": "python-cpl/esorex options; musered runs its own recipes",
    "GTO_logs": "muselog GTO observer databases are not imported by musered",
    "plugins": "MuseRed plugins are not supported",
}
# Top-level keys starting with this prefix belong to the user: free values for {substitution}
# and anchor holders, never interpreted.
USER_KEY_PREFIX = "_"
LOGLEVELS = ("debug", "info", "warning", "error")
EXECUTOR_KINDS = ("serial", "process", "dask")
EXECUTOR_KEYS = ("kind", "jobs", "address", "cluster", "processes", "timeout")
DATASET_KEYS = ("OBJECT", "archive_filter")
RUN_KEYS = ("start_date", "end_date")

# Recipe blocks (recipes.<name>): keys musered reads.
BLOCK_KEYS = ("params", "init", "frames", "from_recipe", "filt", "method", "exclude_flags")
INIT_KEYS = ("output_dir",)
FRAMES_KEYS = ("exclude", "include", "offsets")
# Keys of MuseRed recipe blocks that musered has no use for: warned about, then dropped.
MUSERED_ONLY_BLOCK_KEYS = (
    "DPR_TYPE", "name", "max_exps", "superflat_from", "imphot_recipe", "filters",
    "mean_waves", "fsf_recipe", "names_with_selection", "select", "use_scale",
)
MUSERED_ONLY_INIT_KEYS = ("temp_dir", "log_dir", "use_drs_output", "nifu", "tag", "version", "verbose")
# Blocks of MuseRed tools that musered does not run: kept as written, never validated.
UNMANAGED_BLOCKS = ("imphot", "zap", "superflat", "fsf")
COMMON_BLOCK = "common"

_FRAME_TAG = re.compile(r"[A-Z][A-Z0-9_]*\Z")
_KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# '{{', '}}', '{name}', or a lone brace (an error).
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


# ---------------------------------------------------------------------------------------
# Typed view
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """A dataset: the header OBJECT values it gathers and its ESO archive query."""

    name: str
    objects: list[str]
    archive_filter: dict[str, Any]


@dataclass(frozen=True)
class Run:
    """A named range of nights, both ends included."""

    name: str
    start_date: dt.date
    end_date: dt.date

    def contains(self, night: dt.date) -> bool:
        return self.start_date <= night <= self.end_date


@dataclass
class Settings:
    """The loaded settings: ``data`` is the fully substituted tree, the rest typed views.

    Paths are absolute. ``static_calib`` maps a tag to ``{file: (start, end)}`` where a
    ``None`` end is open. ``frames`` holds the global exclusions normalised to
    ``{'exclude': {'raw': [{column: value or [values]}...], TAG: [names]}}``.
    ``recipes`` holds the blocks by name, validated and normalised (see docs/settings.md).
    ``executor`` is ``{'kind', 'jobs', 'address', 'cluster'}`` (plus the Dask options
    ``processes`` and ``timeout`` when given).
    """

    path: Path | None
    base_dir: Path
    data: dict[str, Any]
    workdir: Path
    db: Path
    db_env: str | None
    raw_path: Path
    reduced_path: Path
    muse_calib_path: Path | None
    version: str
    revision: str
    loglevel: str
    night_cutoff: dt.time
    additional_keywords: list[str]
    datasets: dict[str, Dataset]
    runs: dict[str, Run]
    static_calib: dict[str, dict[Path, tuple[dt.date | None, dt.date | None]]]
    frames: dict[str, Any]
    flags: dict[str, str]
    retrieve_data: dict[str, Any]
    recipes: dict[str, dict[str, Any]]
    executor: dict[str, Any]
    _object_map: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def where(self) -> str:
        """How messages name this file."""
        return _where(self.path)

    def database_url(self) -> str:
        """The SQLAlchemy URL: from the variable named by ``db_env``, else SQLite on ``db``."""
        if self.db_env:
            url = os.environ.get(self.db_env)
            if not url:
                raise MuseredError(
                    f"{self.where}: db_env: environment variable {self.db_env} is not set "
                    "(it must hold the database URL)"
                )
            return url
        from .db import sqlite_url

        return sqlite_url(self.db)

    def recipe_block(self, name: str) -> dict[str, Any]:
        """A deep copy of the block ``recipes.<name>``, ``{}`` when absent."""
        return copy.deepcopy(self.recipes.get(name, {}))

    def object_to_dataset(self) -> dict[str, str]:
        """Header OBJECT value -> dataset name (a dataset without OBJECT maps its own name)."""
        return dict(self._object_map)

    def run_of(self, night: str | dt.date) -> str | None:
        """Name of the first run (file order) whose [start_date, end_date] holds ``night``."""
        day = night if isinstance(night, dt.date) else _parse_date(night, None)
        if day is None:
            raise MuseredError(f"{night!r} is not a night (YYYY-MM-DD)")
        for run in self.runs.values():
            if run.contains(day):
                return run.name
        return None

    def recipe_params(
        self,
        recipe: Any,
        params_name: str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Merged parameters of ``recipe`` (a ``recipes.base.Recipe``) for one run.

        Precedence: recipe defaults < ``recipes.common.params`` (only the parameters this
        recipe knows) < ``recipes.<params_name or recipe.name>.params`` < ``overrides``
        (command line). A ``params_name`` block that does not exist, an unknown parameter
        or a bad value is a MuseredError naming the block.
        """
        block_name = params_name or recipe.name
        if params_name is not None and params_name not in self.recipes:
            known = ", ".join(sorted(b for b in self.recipes if b != COMMON_BLOCK)) or "none"
            raise MuseredError(
                f"{self.where}: recipes.{params_name}: no such block for --params; "
                f"blocks in the settings: {known}"
            )
        known = {param.name for param in recipe.params}
        common = {k: v for k, v in self.recipes.get(COMMON_BLOCK, {}).get("params", {}).items() if k in known}
        block = self.recipes.get(block_name, {}).get("params", {})
        try:
            recipe.merge_params(common, block)
        except ValueError as exc:
            key = _first_unknown(block, known)
            keypath = f"recipes.{block_name}.params" + (f".{key}" if key else "")
            raise MuseredError(f"{self.where}: {keypath}: {exc}") from None
        try:
            return recipe.merge_params(common, block, overrides)
        except ValueError as exc:
            raise MuseredError(f"command line: {exc}") from None

    def dump(self) -> str:
        """The substituted settings as YAML (what ``musered settings`` prints)."""
        return dump_yaml(self.data)


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


def load_settings(path: str | Path | None = None) -> Settings:
    """Read the settings file: ``path``, else ``$MUSERED_SETTINGS``, else ``./settings.yml``."""
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
    data = parse_yaml(text, _where(path))
    return settings_from_dict(data, base_dir=path.parent, path=path)


def settings_from_dict(
    data: Mapping[str, Any] | None, base_dir: str | Path = ".", path: Path | None = None
) -> Settings:
    """Build settings from an already parsed tree (tests, tools); ``data`` is not modified."""
    where = _where(path)
    base_dir = Path(base_dir).expanduser().resolve()
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        _fail(where, None, f"the file must hold a mapping of settings, not {_kind(data)}")
    top = _check_top_level(data, where)
    subst = _Substituter(top, where, base_dir)
    tree = subst.substitute_all()
    return _build(tree, where, base_dir, Path(path) if path is not None else None)


def parse_yaml(text: str, where: str = "settings") -> Any:
    """Parse YAML text safely; a syntax error is one line with line and column (1-based)."""
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        position = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        context = ""
        if exc.context and exc.problem:
            context = " ".join(exc.context.split())
            if exc.context_mark is not None and exc.context_mark is not mark:
                context += f" started at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}"
            context = f" ({context})"
        raise MuseredError(f"{where}: YAML syntax error{position}: {problem}{context}") from None
    except yaml.YAMLError as exc:
        raise MuseredError(f"{where}: YAML error: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
    for key, line in loader.duplicates:
        logger.warning("%s: line %d: duplicate key %r, the last value wins", where, line, key)
    return data


class _Loader(yaml.SafeLoader):
    """Safe loader that keeps ``20:40`` as text and records duplicate keys.

    YAML 1.1 reads ``20:40`` as the base-60 integer 1240, which would turn a night cutoff
    into nonsense; musered has no use for base-60 numbers, so they stay strings.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self.duplicates: list[tuple[str, int]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    self.duplicates.append((key_node.value, key_node.start_mark.line + 1))
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _construct_no_sexagesimal(base):
    def construct(loader: yaml.SafeLoader, node: yaml.ScalarNode):
        if ":" in node.value:
            return loader.construct_scalar(node)
        return base(loader, node)

    return construct


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_no_sexagesimal(yaml.SafeLoader.construct_yaml_int))
_Loader.add_constructor(
    "tag:yaml.org,2002:float", _construct_no_sexagesimal(yaml.SafeLoader.construct_yaml_float)
)


def dump_yaml(value: Any) -> str:
    """YAML text of a settings (sub)tree, in the file's key order, without anchors."""
    return yaml.dump(
        value, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100
    )


class _Dumper(yaml.SafeDumper):
    """Dump shared subtrees (YAML aliases in the input) in full, without &id001 anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


# ---------------------------------------------------------------------------------------
# Stage 2: top-level keys
# ---------------------------------------------------------------------------------------


def _check_top_level(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Known keys with defaults filled in; MuseRed-only keys warned about and dropped."""
    top: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            _fail(where, str(key), "top-level keys must be names")
        value = _plain(value)
        if key in MUSERED_ONLY_KEYS:
            logger.warning("%s: %s: MuseRed-only setting (%s), ignored", where, key, MUSERED_ONLY_KEYS[key])
            continue
        if key not in KNOWN_KEYS and not key.startswith(USER_KEY_PREFIX):
            _fail(where, key, f"unknown setting{_suggest(key, KNOWN_KEYS)}")
        top[key] = value
    for key, default in DEFAULTS.items():
        if top.get(key) is None:
            top[key] = default
        elif key in ("version", "revision"):
            if not _is_scalar(top[key]) or isinstance(top[key], (bool, dt.date)):
                _fail(where, key, f"must be a single value (text or number), not {_kind(top[key])}")
        elif not isinstance(top[key], str):
            _fail(where, key, f"must be text, not {_kind(top[key])}")
        if key != "db_env" and not str(top[key]).strip():
            _fail(where, key, "is empty (remove it to get the default)")
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


# ---------------------------------------------------------------------------------------
# Stage 3: substitution
# ---------------------------------------------------------------------------------------


class _Substituter:
    """Substitute ``{key}`` everywhere, resolving references between top-level values.

    Each top-level value is resolved once, depth first (``{a}`` -> ``{b}`` -> ...), so any
    depth works and a cycle is caught on the way. Resolved text is never parsed again, so
    ``{{`` gives a literal ``{`` even after several levels.
    """

    def __init__(self, top: dict[str, Any], where: str, base_dir: Path):
        self.top = top
        self.where = where
        self.base_dir = base_dir
        self.scalars = {k: v for k, v in top.items() if _is_scalar(v)}
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
            _fail(self.where, cycle[0], f"reference cycle {' -> '.join('{' + k + '}' for k in cycle)}")
        self.stack.append(name)
        value = self.scalars[name]
        text = self.render(value, name) if isinstance(value, str) else _scalar_text(value)
        self.stack.pop()
        if name in PATH_KEYS:
            text = _absolute_text(text, self.base_dir)
        self.resolved[name] = text
        return text

    def render(self, text: str, keypath: str) -> str:
        def fail(reason: str):
            _fail(self.where, keypath, reason)

        def replace(match: re.Match) -> str:
            token = match.group(0)
            if token == "{{":
                return "{"
            if token == "}}":
                return "}"
            name = match.group(1)
            if name is None:
                fail(f"unmatched {token!r} in {text!r} (write {token * 2} for a literal brace)")
            if not _KEY_NAME.match(name):
                fail(f"{token!r} in {text!r} is not a settings key (write {{{{ and }}}} for literal braces)")
            if name not in self.scalars:
                if name in self.top:
                    fail(f"{{{name}}} cannot be substituted: {name} is not a single value")
                if name in DEFAULTS:
                    fail(f"{{{name}}} cannot be substituted: {name} is not set")
                fail(f"unknown key {{{name}}} in {text!r}{_suggest(name, self.scalars, braces=True)}")
            return self.resolve(name)

        return _TOKEN.sub(replace, text)

    def tree(self, value: Any, keypath: str) -> Any:
        value = _plain(value)
        if isinstance(value, str):
            return self.render(value, keypath)
        if isinstance(value, Mapping):
            out: dict[Any, Any] = {}
            for key, item in value.items():
                child = f"{keypath}.{key}"
                new_key = self.render(key, child) if isinstance(key, str) else key
                if new_key in out:
                    _fail(self.where, child, f"key {new_key!r} appears twice after substitution")
                out[new_key] = self.tree(item, child)
            return out
        if isinstance(value, list):
            return [self.tree(item, f"{keypath}[{i}]") for i, item in enumerate(value)]
        return value


# ---------------------------------------------------------------------------------------
# Stage 4: types
# ---------------------------------------------------------------------------------------


def _build(tree: dict[str, Any], where: str, base_dir: Path, path: Path | None) -> Settings:
    checker = _Checker(where, base_dir)
    muse_calib_path = Path(tree["muse_calib_path"]) if "muse_calib_path" in tree else None
    loglevel = tree["loglevel"].strip().lower()
    if loglevel not in LOGLEVELS:
        _fail(where, "loglevel", f"must be one of {', '.join(LOGLEVELS)}, not {tree['loglevel']!r}")
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


class _Checker:
    """Type checks and normalisation of each section, with errors naming the key path."""

    def __init__(self, where: str, base_dir: Path):
        self.where = where
        self.base_dir = base_dir

    def fail(self, keypath: str, reason: str):
        _fail(self.where, keypath, reason)

    def mapping(self, value: Any, keypath: str, what: str = "a mapping") -> dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(keypath, f"must be {what}, not {_kind(value)}")
        return dict(value)

    def names(self, value: Any, keypath: str, what: str = "a name or a list of names") -> list[str]:
        """A scalar or a list of scalars, as a list of text (dates in ISO form)."""
        if value is None:
            return []
        items = value if isinstance(value, list) else [value]
        out = []
        for i, item in enumerate(items):
            if not _is_scalar(item) or isinstance(item, bool):
                where = f"{keypath}[{i}]" if isinstance(value, list) else keypath
                self.fail(where, f"must be {what}, not {_kind(item)}")
            out.append(_scalar_text(item))
        return out

    def check_keys(self, value: Mapping, keypath: str, allowed: tuple[str, ...]) -> None:
        for key in value:
            if key not in allowed:
                hint = _suggest(str(key), allowed)
                self.fail(f"{keypath}.{key}", f"unknown key{hint} (allowed: {', '.join(allowed)})")

    def date(self, value: Any, keypath: str) -> dt.date:
        day = _parse_date(value, None)
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
            name = _scalar_text(name)
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
            name = _scalar_text(name)
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
                file_path = Path(os.path.expanduser(_scalar_text(name)))
                file_path = file_path if file_path.is_absolute() else folder / file_path
                out[tag][file_path] = self.validity(validity, f"{keypath}.{name}")
        return out

    def frame_tag(self, tag: Any, keypath: str) -> str:
        if not isinstance(tag, str) or not _FRAME_TAG.match(tag):
            self.fail(keypath, f"{tag!r} is not a frame tag (upper case, like MASTER_BIAS)")
        return tag

    def global_frames(self, value: Any, additional_keywords: list[str]) -> dict[str, Any]:
        section = self.mapping(value, "frames", "a mapping with an exclude block")
        self.check_keys(section, "frames", ("exclude",))
        if "exclude" not in section:
            return {}
        exclude = self.mapping(section["exclude"], "frames.exclude", "a mapping {raw: [queries], TAG: [names]}")
        columns = _raw_columns(additional_keywords)
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
                self.fail(f"{keypath}.{column}", f"unknown raw column{_suggest(str(column), columns)}")
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
            if not isinstance(name, str) or not _KEY_NAME.match(name):
                self.fail(f"flags.{name}", "flag names are words like MY_FLAG")
            if description is not None and not _is_scalar(description):
                self.fail(f"flags.{name}", f"must be a description text, not {_kind(description)}")
            out[name] = "" if description is None else _scalar_text(description)
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
            elif isinstance(key, str) and _FRAME_TAG.match(key):
                # Older MuseRed files put OFFSET_LIST next to params; it belongs in frames.
                logger.warning("%s: %s: frame given outside 'frames:', read as %s.frames.%s",
                               self.where, child, keypath, key)
                moved_frames[key] = value
            else:
                hint = _suggest(str(key), BLOCK_KEYS)
                self.fail(child, f"unknown key{hint} (allowed: {', '.join(BLOCK_KEYS)})")
        out["params"] = self.mapping(out.get("params"), f"{keypath}.params", "a mapping of recipe parameters")
        for key, value in out["params"].items():
            if not isinstance(key, str):
                self.fail(f"{keypath}.params.{key}", "parameter names are words")
            if value is not None and not _is_scalar(value):
                self.fail(f"{keypath}.params.{key}", f"must be a single value, not {_kind(value)}")
        init = self.mapping(out.get("init"), f"{keypath}.init", "a mapping of run options (output_dir)")
        out["init"] = self.init(init, f"{keypath}.init")
        frames = self.mapping(out.get("frames"), f"{keypath}.frames", "a mapping of frame options")
        out["frames"] = self.recipe_frames({**moved_frames, **frames}, f"{keypath}.frames")
        for key in ("from_recipe", "filt", "method"):
            if key in out and not isinstance(out[key], str):
                self.fail(f"{keypath}.{key}", f"must be text, not {_kind(out[key])}")
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
                hint = _suggest(str(key), INIT_KEYS)
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
            elif isinstance(key, str) and _FRAME_TAG.match(key):
                out[key] = self.custom_frame(value, child)
            else:
                hint = _suggest(str(key), FRAMES_KEYS)
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
                out[os.path.expanduser(_scalar_text(name))] = {"start_date": start, "end_date": end}
            return out
        self.fail(keypath, f"must be a path, a list of paths or {{path: validity}}, not {_kind(value)}")

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
            unknown = _first_unknown(block["params"], known)
            if unknown is not None:
                valid = ", ".join(sorted(known)) or "none"
                hint = _suggest(unknown, known) or "."
                self.fail(f"recipes.{name}.params.{unknown}",
                          f"unknown parameter of {name}{hint} Valid parameters: {valid}")
            try:
                recipe.merge_params(block["params"])
            except ValueError as exc:
                self.fail(f"recipes.{name}.params", str(exc))


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def _where(path: Path | None) -> str:
    return str(path) if path is not None else "settings"


def _fail(where: str, keypath: str | None, reason: str):
    prefix = f"{where}: {keypath}: " if keypath else f"{where}: "
    raise MuseredError(prefix + " ".join(reason.split()))


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}" if not isinstance(value, str) else f"text {value!r}"


def _plain(value: Any) -> Any:
    """Paths and times given by Python callers (settings_from_dict) as the text YAML would give."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dt.time):
        return value.strftime("%H:%M:%S")
    return value


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, dt.date))


def _scalar_text(value: Any) -> str:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def _absolute_text(text: str, base_dir: Path) -> str:
    """Expand ``~`` and take a relative path from ``base_dir``; normalised, symlinks kept."""
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(text)))


def _parse_date(value: Any, default: dt.date | None) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            return default
    return default


def _suggest(name: str, candidates: Any, braces: bool = False) -> str:
    close = difflib.get_close_matches(name, [str(c) for c in candidates], n=1, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean {{{close[0]}}}?" if braces else f"; did you mean {close[0]}?"


def _first_unknown(params: Mapping[str, Any], known: set[str]) -> str | None:
    return next((key for key in params if key not in known), None)


def _raw_columns(additional_keywords: list[str]) -> tuple[str, ...]:
    """Columns a global raw exclusion may query: the raw table's and additional keywords'."""
    from .db.models import Raw
    from .ingest import keyword_column

    internal = ("header", "extra")
    columns = tuple(c for c in Raw.__table__.columns.keys() if c not in internal)
    return columns + tuple(keyword_column(k) for k in additional_keywords)
