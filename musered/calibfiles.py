"""Calibration files named by the settings rather than found among the products: a
recipe block's custom ``frames.<TAG>`` (file, glob, folder, list, validity ranges, or the
name of a stored product) and the static calibrations (``static_calib`` with validity,
``muse_calib_path`` by PRO.CATG, archive products ingested as raw). Used by
:mod:`musered.association` for the ``frames`` and ``static`` sources.
"""

from __future__ import annotations

import datetime as dt
import glob
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recipes.base import Calib

from .catalog import Catalog
from .errors import MuseredError
from .targets import Target

logger = logging.getLogger(__name__)

FITS_SUFFIXES = (".fits", ".fits.fz", ".fits.gz", ".fit")


def _in_validity(night: str | None, start: Any, end: Any) -> bool:
    if night is None:
        return start is None and end is None
    day = dt.date.fromisoformat(night)
    start = _as_date(start)
    end = _as_date(end)
    return (start is None or start <= day) and (end is None or day <= end)


def _as_date(value: Any) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise MuseredError(f"settings: {value!r} is not a date (YYYY-MM-DD)") from None


def _resolve(settings, value: str) -> Path:
    path = Path(os.path.expanduser(str(value)))
    if not path.is_absolute():
        path = Path(getattr(settings, "base_dir", ".")) / path
    return path


def custom_frames(tag: str, value: Any, target: Target, catalog: Catalog, settings,
                  log: list[str]) -> list[Path]:
    """Files from the recipe block's ``frames.<tag>`` (see the module docstring)."""
    key = f"frames.{tag}"
    if isinstance(value, Mapping):
        for path, validity in value.items():
            validity = validity or {}
            if not isinstance(validity, Mapping):
                raise MuseredError(f"settings {key}: validity of {path} must be "
                                   "{start_date, end_date}")
            if _in_validity(target.night, validity.get("start_date"), validity.get("end_date")):
                paths = custom_frames(tag, str(path), target, catalog, settings, log)
                log[-1] += f" (valid {validity.get('start_date')} to {validity.get('end_date')})"
                return paths
        log.append(f"{key}: no entry valid on night {target.night}")
        return []
    if isinstance(value, (list, tuple)):
        paths = []
        for item in value:
            paths += custom_frames(tag, item, target, catalog, settings, log)
        return paths
    if not isinstance(value, (str, os.PathLike)):
        raise MuseredError(f"settings {key} must be a path, glob, folder or "
                           f"{{path: validity}}, not {value!r}")
    text = str(value)
    if any(c in text for c in "*?["):
        paths = sorted(Path(p) for p in glob.glob(str(_resolve(settings, text))))
        if not paths:
            raise MuseredError(f"settings {key}: no file matches {text}")
        log.append(f"{key}: {len(paths)} file(s) matching {text}")
        return paths
    path = _resolve(settings, text)
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.name.startswith(tag) and p.name.endswith(FITS_SUFFIXES))
        if not paths:
            paths = sorted(StaticFolder.of(path).by_catg.get(tag, {}))
        if not paths:
            raise MuseredError(f"settings {key}: no {tag} file in folder {path}")
        log.append(f"{key}: {len(paths)} file(s) from folder {path}")
        return paths
    if path.is_file():
        log.append(f"{key}: file {path}")
        return [path]
    if os.sep not in text and "/" not in text:
        return _named_product(tag, text, target, catalog, key, log)
    raise MuseredError(f"settings {key}: file {path} does not exist")


def _named_product(tag: str, name: str, target: Target, catalog: Catalog, key: str,
                   log: list[str]) -> list[Path]:
    """A product of ``reduced`` with PRO_CATG ``tag`` named ``name``, ``{tag}_{name}``
    (``OFFSET_LIST_drs``), ``{OBJECT}_{name}`` or ``{OBJECT}_{tag}_{name}`` (exp-align stores
    its dataset target as ``IC4406_OFFSET_LIST_drs``, so ``drs`` and ``OFFSET_LIST_drs``
    both find it), preferring the target's OBJECT, then the latest run."""
    names = {name, f"{tag}_{name}", f"{target.OBJECT}_{name}", f"{target.OBJECT}_{tag}_{name}"}
    found = [p for p in catalog.products if p.PRO_CATG == tag and p.name in names]
    same_object = [p for p in found if p.OBJECT == target.OBJECT]
    found = same_object or found
    if not found:
        raise MuseredError(f"settings {key}: {name!r} is neither a file nor a {tag} product "
                           "name in the database")
    key_chosen = max((p.date_run or dt.datetime.min, p.set_key) for p in found)[1]
    paths = sorted(p.path for p in found if p.set_key == key_chosen)
    log.append(f"{key}: product {key_chosen[1]!r} of {key_chosen[0]} in the database")
    return paths


def find_static(calib: Calib, target: Target, catalog: Catalog, settings, log: list[str]) -> list[Path]:
    """static_calib validity, then muse_calib_path by PRO.CATG, then archive products."""
    tag = calib.tag
    entries = (getattr(settings, "static_calib", {}) or {}).get(tag) or {}
    for path, (start, end) in entries.items():
        if _in_validity(target.night, start, end):
            path = _resolve(settings, str(path))
            if not path.is_file():
                raise MuseredError(f"settings static_calib.{tag}: file {path} does not exist")
            log.append(f"static_calib: {path} (valid {start} to {end})")
            return [path]
    if entries:
        log.append(f"static_calib.{tag}: no file valid on night {target.night}")
    else:
        log.append(f"static_calib.{tag} not set")
    folder = getattr(settings, "muse_calib_path", None)
    if folder:
        static = StaticFolder.of(Path(folder))
        files = static.by_catg.get(tag, {})
        if files:
            chosen = _pick_by_mode(files, target.INS_MODE)
            note = f" (first of {len(files)} matching the mode)" if len(files) > 1 else ""
            log.append(f"muse_calib_path: {chosen}{note}")
            return [chosen]
        log.append(f"muse_calib_path {folder}: no file with PRO.CATG {tag}")
    else:
        log.append("muse_calib_path not set")
    archive = []
    for raw in catalog.raws_by_tag.get(tag, []):
        if raw.DPR_TYPE or raw.PRO_CATG != tag:
            continue
        if raw.excluded:
            log.append(f"rejected archive {tag} {raw.path.name}: {raw.excluded}")
            continue
        if calib.match_mode and raw.INS_MODE and raw.INS_MODE != target.INS_MODE:
            log.append(f"rejected archive {tag} {raw.path.name}: INS_MODE {raw.INS_MODE}, "
                       f"need {target.INS_MODE}")
            continue
        gap = (abs((dt.date.fromisoformat(raw.night) - dt.date.fromisoformat(target.night)).days)
               if raw.night and target.night else 10**6)
        archive.append((gap, str(raw.path), raw))
    if archive:
        gap, _, raw = min(archive)
        log.append(f"archive product in raw: {raw.path} (night {raw.night})")
        return [raw.path]
    log.append(f"no archive {tag} product in raw")
    return []


def _pick_by_mode(files: Mapping[Path, str | None], mode: str | None) -> Path:
    """Among static files of one PRO.CATG: header INS MODE equal to the mode, else the
    file name containing the mode family (``wfm``/``nfm``), else the first by name."""
    ordered = sorted(files)
    if mode:
        exact = [p for p in ordered if files[p] == mode]
        if exact:
            return exact[0]
        family = mode.split("-")[0].lower()
        named = [p for p in ordered if family in p.name.lower()]
        if named:
            return named[0]
    return ordered[0]


class StaticFolder:
    """The primary PRO.CATG (and INS.MODE) of each FITS file of a folder, cached per
    folder and refreshed when the folder's modification time changes."""

    _cache: dict[Path, tuple[int, StaticFolder]] = {}

    def __init__(self, folder: Path):
        from astropy.io import fits

        self.folder = folder
        self.by_catg: dict[str, dict[Path, str | None]] = {}
        if not folder.is_dir():
            raise MuseredError(f"static calibration folder {folder} does not exist")
        for path in sorted(folder.iterdir()):
            if not path.name.endswith(FITS_SUFFIXES):
                continue
            try:
                header = fits.getheader(path, 0)
            except (OSError, ValueError) as exc:
                logger.warning("skipping unreadable static calibration %s: %s", path, exc)
                continue
            catg = header.get("HIERARCH ESO PRO CATG")
            if catg:
                self.by_catg.setdefault(str(catg), {})[path] = header.get("HIERARCH ESO INS MODE")

    @classmethod
    def of(cls, folder: Path) -> StaticFolder:
        folder = Path(folder).expanduser().resolve()
        stamp = folder.stat().st_mtime_ns if folder.is_dir() else -1
        cached = cls._cache.get(folder)
        if cached is None or cached[0] != stamp:
            cached = (stamp, cls(folder))
            cls._cache[folder] = cached
        return cached[1]
