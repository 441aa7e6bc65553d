"""The typed view of loaded settings: :class:`Settings`, :class:`Dataset`, :class:`Run`."""

from __future__ import annotations

import copy
import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MuseredError
from .keys import COMMON_BLOCK, DEFAULT_ENGINE
from .values import first_unknown, parse_date, where_text
from .yamlio import dump_yaml


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
    esorex: str = "esorex"
    _object_map: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def where(self) -> str:
        """How messages name this file."""
        return where_text(self.path)

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
        from ..db import sqlite_url

        return sqlite_url(self.db)

    def recipe_block(self, name: str) -> dict[str, Any]:
        """A deep copy of the block ``recipes.<name>``, ``{}`` when absent."""
        return copy.deepcopy(self.recipes.get(name, {}))

    def recipe_engine(self, recipe: Any, params_name: str | None = None) -> str:
        """What runs ``recipe`` (a ``recipes.base.Recipe``): ``musered`` or ``drs``.

        The block (``recipes.<params_name or recipe.name>.engine``) wins over
        ``recipes.common.engine``; ``common: {engine: drs}`` leaves the recipes without a DRS
        counterpart (muse_std_combine, image_align, mpdaf_combine) to musered, while a
        recipe's own block asking for drs is refused at load. A ``--params`` block asking
        for drs on such a recipe is a MuseredError here.
        """
        from recipes.drs import DRS_RECIPES

        block_name = params_name or recipe.name
        block = self.recipes.get(block_name, {})
        if "engine" in block:
            engine = block["engine"]
            if engine == "drs" and recipe.name not in DRS_RECIPES:
                raise MuseredError(f"{self.where}: recipes.{block_name}.engine: {recipe.name} has no ESO DRS "
                                   "counterpart (esorex --recipes); use engine: musered")
            return engine
        engine = self.recipes.get(COMMON_BLOCK, {}).get("engine", DEFAULT_ENGINE)
        return engine if engine != "drs" or recipe.name in DRS_RECIPES else DEFAULT_ENGINE

    def object_to_dataset(self) -> dict[str, str]:
        """Header OBJECT value -> dataset name (a dataset without OBJECT maps its own name)."""
        return dict(self._object_map)

    def run_of(self, night: str | dt.date) -> str | None:
        """Name of the first run (file order) whose [start_date, end_date] holds ``night``."""
        day = night if isinstance(night, dt.date) else parse_date(night, None)
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
            recipe.validate(common, block)
        except ValueError as exc:
            key = first_unknown(block, known)
            keypath = f"recipes.{block_name}.params" + (f".{key}" if key else "")
            raise MuseredError(f"{self.where}: {keypath}: {exc}") from None
        try:
            return recipe.validate(common, block, overrides)
        except ValueError as exc:
            raise MuseredError(f"command line: {exc}") from None

    def dump(self) -> str:
        """The substituted settings as YAML (what ``musered settings`` prints)."""
        return dump_yaml(self.data)
