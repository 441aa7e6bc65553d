"""The installer: a finished run's staging folder becomes a product folder of the reduced
tree and rows of ``reduced``, all or nothing; and what "already done" means.

:func:`install_products` renames the staging folder into place (an older folder is replaced
only after the new one is in place, and restored if recording fails) and records every
product with its provenance in one transaction (``software``: our versions, the engine
that ran the recipe, ``musered`` or ``drs``, and for drs the esorex and pipeline versions). :func:`failure_log` keeps the reason,
traceback and recipe log of a failed run under ``logs/failed/``. :func:`is_done`: products
exist in the target's folder and were made from the same inputs with the same parameters
by the same engine.

Only the rows of the settings' ``version`` are read, replaced or written. Records copied
from another version (``musered copy-reduced``) keep the paths of that version's products:
a product counts for its target when its folder ends with the target's folder
(``MASTER_BIAS/2017-06-16T10:40:27.WFM-NOAO-N``), under whichever ``reduced_path``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import shutil
import traceback
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select

from recipes.base import Product, Recipe

from . import __version__
from .db.models import Reduced
from .targets import Target
from .worker import LOG_NAME, JobResult, one_line

logger = logging.getLogger(__name__)

DEFAULT_ENGINE = "musered"  # what made the products recorded before engines existed


def done_records(database, block_name: str, version: str) -> dict[str, list[tuple[Path, dict, Any, str]]]:
    """Per target name, the (path, input frames, params, engine) of the block's status-ok
    products of reduction ``version``."""
    with database.session() as session:
        rows = session.execute(select(Reduced.name, Reduced.path, Reduced.frames, Reduced.params,
                                      Reduced.software).where(
            Reduced.recipe_name == block_name, Reduced.status == "ok", Reduced.version == str(version))).all()
    out: dict[str, list[tuple[Path, dict, Any, str]]] = {}
    for name, path, frames, recorded, software in rows:
        engine = (software or {}).get("engine", DEFAULT_ENGINE)
        out.setdefault(name, []).append((Path(path), frames or {}, recorded, engine))
    return out


def is_done(records: Mapping[str, list[tuple[Path, dict, Any, str]]], recipe: Recipe, target: Target,
             final: Path, params: Mapping[str, Any], engine: str = DEFAULT_ENGINE) -> bool:
    """Products of this target exist in its folder (``final``, or the same folder of the
    reduced tree of the version they were copied from), made from the same inputs (the
    target's input files: a dataset or run whose exposures changed is redone) with the
    same parameters by the same ``engine`` (switching a recipe to the DRS redoes it)."""
    products = [r for r in records.get(target.name, []) if in_target_folder(r[0], final, target)]
    if not products or not all(r[0].is_file() for r in products):
        return False
    wanted = {tag: sorted(str(p) for p in paths) for tag, paths in target.inputs.items()}
    safe_params = json_safe(dict(params))
    for _path, frames, recorded, made_by in products:
        made_from = {tag: sorted(f["path"] for f in frames.get(tag, [])) for tag in wanted}
        if made_from != wanted or (recorded is not None and recorded != safe_params) or made_by != engine:
            return False
    return True


def in_target_folder(path: Path, final: Path, target: Target) -> bool:
    """Is ``path`` a product of ``target``: inside ``final``, or inside a folder ending with
    ``target.folder`` (a record copied from another version's reduced tree)?"""
    if path.is_relative_to(final):
        return True
    parts, folder = path.parts, target.folder.parts
    return any(parts[i:i + len(folder)] == folder for i in range(len(parts) - len(folder)))


class InstallError(Exception):
    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


def check_products(recipe: Recipe, products: list[Product], tmp: Path) -> list[tuple[Product, Path]]:
    """Each product as (product, path relative to the run folder); the contract is checked."""
    if not products:
        raise InstallError(f"recipe {recipe.name} wrote no products")
    out = []
    root = tmp.resolve()
    for product in products:
        path = Path(product.path)
        path = (path if path.is_absolute() else root / path).resolve()
        if not path.is_relative_to(root):
            raise InstallError(f"recipe {recipe.name} returned {path}, outside its output folder")
        if not path.is_file():
            raise InstallError(f"recipe {recipe.name} returned {path.name}, which it did not write")
        if product.tag not in recipe.outputs:
            raise InstallError(f"recipe {recipe.name} returned tag {product.tag}, not one of its "
                                f"outputs ({', '.join(recipe.outputs)})")
        out.append((product, path.relative_to(root)))
    return out


def install_products(settings, database, block_name, params, target, assoc, tmp, final, products,
             outcome) -> list[Path]:
    """Rename the run folder into place and record its products in one transaction."""
    old = None
    try:
        if final.exists():
            old = final.with_name(f"{final.name}.old-{uuid.uuid4().hex[:8]}")
            final.rename(old)
        tmp.rename(final)
    except OSError as exc:
        if old is not None and not final.exists():
            old.rename(final)
        raise InstallError(f"could not move the products into {final}: {exc.strerror or exc}",
                            traceback.format_exc()) from None
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    frames = {tag: [{"path": str(p), "md5": outcome.md5.get(str(p))} for p in paths]
              for tag, paths in assoc.frames.items()}
    software = {**software_versions(), "engine": DEFAULT_ENGINE, **outcome.software}
    paths = [final / rel for _product, rel in products]
    try:
        with database.session() as session:
            # the rows this run replaces: this version's products of the target, its own or
            # copied from another version (those files are kept: they belong to that version)
            stale = session.scalars(select(Reduced).where(
                Reduced.recipe_name == block_name, Reduced.name == target.name,
                Reduced.version == str(settings.version))).all()
            for row in stale:
                if in_target_folder(Path(row.path), final, target):
                    session.delete(row)
            for (product, _rel), path in zip(products, paths):
                session.add(Reduced(
                    recipe_name=block_name, name=target.name, PRO_CATG=product.tag, path=str(path),
                    night=target.night, DATE_OBS=target.DATE_OBS, OBJECT=target.OBJECT,
                    INS_MODE=target.INS_MODE, TPL_START=target.TPL_START,
                    version=str(settings.version), revision=_text(getattr(settings, "revision", None)),
                    date_run=now, params=json_safe(params), frames=frames,
                    qc=json_safe(dict(product.qc)), status="ok", runtime=outcome.runtime,
                    log_path=str(final / LOG_NAME), output_dir=target.output_dir,
                    ifus=[int(i) for i in product.ifus], software=software,
                ))
    except Exception as exc:
        shutil.rmtree(final, ignore_errors=True)
        if old is not None:
            old.rename(final)
        raise InstallError(f"could not record the products in the database: {one_line(exc)}",
                            traceback.format_exc()) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return paths


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def software_versions() -> dict[str, str]:
    import numpy

    import recipes

    return {"musered": __version__, "recipes": getattr(recipes, "__version__", "?"),
            "numpy": numpy.__version__}


def json_safe(value: Any) -> Any:
    """Plain JSON values: numpy scalars to Python, NaN/inf to None, paths to text."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def failure_log(settings, block_name: str, target: Target, tmp: Path, outcome: JobResult) -> Path | None:
    """Save reason, traceback and the run's recipe log under logs/failed/; None if it fails."""
    folder = Path(settings.reduced_path) / "logs" / "failed"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    path = folder / f"{block_name}.{target.folder.name}.{stamp}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        recipe_log = (tmp / LOG_NAME).read_text(encoding="utf-8", errors="replace") \
            if (tmp / LOG_NAME).is_file() else ""
        path.write_text(f"{block_name} {target.name}: {outcome.reason}\n\n"
                        + (outcome.traceback + "\n" if outcome.traceback else "")
                        + ("--- recipe log ---\n" + recipe_log if recipe_log else ""), encoding="utf-8")
    except OSError as exc:
        logger.warning("could not write the failure log %s: %s", path, exc)
        return None
    return path
