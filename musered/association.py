"""Association: which files feed one recipe run.

:func:`associate` is a pure function of a :class:`~musered.targets.Catalog` (a snapshot
of the database), the settings and one target. It returns an :class:`Association`: the
frames by tag, and per tag a human-readable log of what was searched, chosen and
rejected. A required tag that cannot be found raises :class:`MuseredError` whose one-line
message names the tag, the night, the nights searched and the candidates rejected.

Each calibration tag T of a target on night N is looked up in this order:

1. the recipe block's ``frames.T`` (common block, then the recipe or ``--params`` block):
   a file, a glob, a folder (files named ``T*`` in it, else those whose PRO.CATG is T),
   a list of those, or ``{path: {start_date, end_date}}`` (the file valid on N). A bare
   name that is not a file (``OFFSET_LIST_drs``, or just ``drs``) names a product in
   ``reduced``. Special tags (OFFSET_LIST, OUTPUT_WCS, SKY_MASK, AUTOCAL_FACTORS) come only
   from here;
2. products in ``reduced`` with PRO_CATG = T on night N, then N+1, N-1, N+2, N-2, ... up
   to offset(T) nights (default 1; STD_RESPONSE and STD_TELLURIC 5, TWILIGHT_CUBE 3;
   ``frames.offsets`` overrides); MASTER_FLAT, LSF_PROFILE, STD_RESPONSE and STD_TELLURIC
   must match the target's INS_MODE; products excluded by the global
   ``frames.exclude.T`` are rejected; among several runs on the first night that has one,
   the closest in time to the target wins (ties: the name), and the choice is logged;
   products whose file has disappeared are rejected;
3. static calibrations: the ``static_calib`` file whose validity holds N, else the file of
   ``muse_calib_path`` whose primary ``ESO PRO CATG`` is T (several: the one whose
   ``ESO INS MODE`` or file name matches the mode, then the first by name), else an
   archive-delivered product ingested into ``raw`` with PRO_CATG = T (closest night).

The ILLUM flat of an exposure is a raw file: same night and INS_MODE, within 2 h, the
closest in instrument temperature (INS TEMP7 VAL), then in time. MASTER_DARK and
NONLINEARITY_GAIN are only looked up when ``frames.include`` lists them; ``frames.exclude``
drops tags. Raw files excluded in the catalog never enter.
"""

from __future__ import annotations

import datetime as dt
import glob
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MuseredError
from .targets import Catalog, ProductFrame, Target

logger = logging.getLogger(__name__)

DEFAULT_OFFSET = 1
DEFAULT_OFFSETS: dict[str, int] = {"STD_RESPONSE": 5, "STD_TELLURIC": 5, "TWILIGHT_CUBE": 3}
MODE_MATCHED_TAGS = frozenset({"MASTER_FLAT", "LSF_PROFILE", "STD_RESPONSE", "STD_TELLURIC"})
DEFAULT_EXCLUDED_TAGS = frozenset({"MASTER_DARK", "NONLINEARITY_GAIN"})
SPECIAL_TAGS = frozenset({"OFFSET_LIST", "OUTPUT_WCS", "SKY_MASK", "AUTOCAL_FACTORS"})
ILLUM_MAX_DELAY = dt.timedelta(hours=2)
FITS_SUFFIXES = (".fits", ".fits.fz", ".fits.gz", ".fit")


@dataclass
class Association:
    """The frames chosen for one target, and per tag what was searched and why."""

    target: Target
    frames: dict[str, list[Path]] = field(default_factory=dict)
    log: dict[str, list[str]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """Printable description: each tag, its files, then the search log indented."""
        out = []
        for tag in sorted(set(self.frames) | set(self.log)):
            paths = self.frames.get(tag, [])
            head = f"{tag}: " + (f"{len(paths)} file(s)" if paths else "not used")
            out.append(head)
            out.extend(f"    {p}" for p in paths)
            out.extend(f"    - {line}" for line in self.log.get(tag, []))
        return out


# ---------------------------------------------------------------- configuration

def frames_config(settings, block: Mapping[str, Any] | None) -> dict[str, Any]:
    """``recipes.common.frames`` updated by the block's ``frames`` (offsets merged,
    include/exclude lists concatenated)."""
    common = (settings.recipe_block("common") or {}).get("frames") or {}
    own = (block or {}).get("frames") or {}
    for where, conf in (("recipes.common.frames", common), ("frames", own)):
        if not isinstance(conf, Mapping):
            raise MuseredError(f"settings {where} must be a mapping, not {type(conf).__name__}")
    merged: dict[str, Any] = {}
    for conf in (common, own):
        for key, value in conf.items():
            if key in ("include", "exclude"):
                merged[key] = _as_list(merged.get(key)) + _as_list(value)
            elif key == "offsets":
                if not isinstance(value, Mapping):
                    raise MuseredError("settings frames.offsets must map a tag to a number of nights")
                merged["offsets"] = {**merged.get("offsets", {}), **value}
            else:
                merged[key] = value
    for tag, nights in merged.get("offsets", {}).items():
        if isinstance(nights, bool) or not isinstance(nights, int) or nights < 0:
            raise MuseredError(f"settings frames.offsets.{tag} must be a number of nights >= 0, not {nights!r}")
    return merged


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def wanted_calibs(recipe, conf: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """(tag, required) pairs to look up: the recipe's calibs minus default-excluded ones
    (unless included) and minus excluded tags, plus included undeclared tags (optional)."""
    include = set(conf.get("include", []))
    exclude = set(conf.get("exclude", []))
    out = []
    for calib in recipe.calibs:
        default_off = calib.default_excluded or calib.tag in DEFAULT_EXCLUDED_TAGS
        if calib.tag in exclude or (default_off and calib.tag not in include):
            continue
        out.append((calib.tag, calib.required))
    declared = {c.tag for c in recipe.calibs}
    out.extend((tag, False) for tag in sorted(include - declared - exclude))
    return out


def offset_of(tag: str, conf: Mapping[str, Any]) -> int:
    return int(conf.get("offsets", {}).get(tag, DEFAULT_OFFSETS.get(tag, DEFAULT_OFFSET)))


def night_order(night: str, offset: int) -> list[tuple[int, str]]:
    """Nights to search, nearest first, the following night before the previous one.

    >>> night_order("2017-06-16", 1)
    [(0, '2017-06-16'), (1, '2017-06-17'), (-1, '2017-06-15')]
    """
    base = dt.date.fromisoformat(night)
    order = [0]
    for k in range(1, offset + 1):
        order += [k, -k]
    return [(k, (base + dt.timedelta(days=k)).isoformat()) for k in order]


# ---------------------------------------------------------------- association

def associate(recipe, target: Target, catalog: Catalog, settings,
              block: Mapping[str, Any] | None = None) -> Association:
    """Frames (inputs and calibrations) for one target; MuseredError for a missing one."""
    conf = frames_config(settings, block)
    result = Association(target=target)
    for tag, paths in target.inputs.items():
        result.frames[tag] = list(paths)
        result.log[tag] = [f"{len(paths)} input file(s) of {target.kind} {target.name}"]
    if target.log:
        first = next(iter(target.inputs), "inputs")
        result.log.setdefault(first, []).extend(target.log)
    excluded_products = catalog.excluded_products(settings)
    missing = []
    for tag, required in wanted_calibs(recipe, conf):
        log: list[str] = []
        paths = find_calibration(tag, target, catalog, settings, conf, excluded_products, log)
        result.log[tag] = log
        if paths:
            result.frames[tag] = paths
        elif required:
            missing.append(f"no {tag} for {recipe.name} {target.name} (night {target.night}, "
                           f"INS_MODE {target.INS_MODE}): " + "; ".join(log))
        else:
            log.append("optional, not found: not used")
    if missing:  # every missing tag at once, so one dry-run shows all that is lacking
        raise MuseredError(" | ".join(missing))
    return result


def find_calibration(tag: str, target: Target, catalog: Catalog, settings,
                     conf: Mapping[str, Any], excluded_products: Mapping[Path, str],
                     log: list[str]) -> list[Path]:
    """Files for one calibration tag following the documented order; ``log`` records it."""
    if tag in conf:
        paths = custom_frames(tag, conf[tag], target, catalog, settings, log)
        if paths:
            return paths
    elif tag in SPECIAL_TAGS:
        log.append(f"{tag} is only taken from the recipe block's frames.{tag}, which is not set")
        return []
    else:
        log.append(f"frames.{tag}: not set")
    if tag in SPECIAL_TAGS:
        return []
    if tag == "ILLUM":
        return find_illum(target, catalog, log)
    paths = find_reduced(tag, target, catalog, offset_of(tag, conf), excluded_products, log)
    if paths:
        return paths
    return find_static(tag, target, catalog, settings, log)


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


def _stamp(product: ProductFrame) -> str:
    return f"{product.name} (night {product.night}, {product.recipe_name})"


def _delay(a: dt.datetime | None, b: dt.datetime | None) -> float:
    if a is None or b is None:
        return float("inf")
    return abs((a - b).total_seconds())


def find_reduced(tag: str, target: Target, catalog: Catalog, offset: int,
                 excluded_products: Mapping[Path, str], log: list[str]) -> list[Path]:
    """Step 2: a product set of ``reduced`` on the nearest night (see module docstring)."""
    if target.night is None:
        log.append("reduced: not searched, the target has no night")
        return []
    searched = []
    for k, night in night_order(target.night, offset):
        searched.append(f"{night} ({k:+d})")
        sets: dict[tuple, list[ProductFrame]] = {}
        for product in catalog.products_by_tag_night.get((tag, night), []):
            reason = excluded_products.get(product.path)
            if reason is None and tag in MODE_MATCHED_TAGS and product.INS_MODE != target.INS_MODE:
                reason = f"INS_MODE {product.INS_MODE}, need {target.INS_MODE}"
            if reason is None and not product.path.is_file():
                reason = f"file {product.path} is missing (deleted since it was made?)"
            if reason is not None:
                line = f"rejected {tag} {_stamp(product)}: {reason}"
                if line not in log:
                    log.append(line)
                continue
            sets.setdefault(product.set_key, []).append(product)
        if not sets:
            continue
        ranked = sorted(sets.items(), key=lambda kv: (
            min(_delay(p.DATE_OBS, target.DATE_OBS) for p in kv[1]), kv[0]))
        key, products = ranked[0]
        delay = min(_delay(p.DATE_OBS, target.DATE_OBS) for p in products)
        when = f", {delay / 3600:.1f} h from the target" if delay != float("inf") else ""
        line = f"reduced: {_stamp(products[0])}, night offset {k:+d}{when}"
        if len(ranked) > 1:
            others = ", ".join(kv[0][1] for kv in ranked[1:])
            line += f"; closest in time among {len(ranked)} (not used: {others})"
        log.append(line)
        return sorted(p.path for p in products)
    log.append(f"reduced: no {tag} on nights {', '.join(searched)}")
    return []


def find_illum(target: Target, catalog: Catalog, log: list[str]) -> list[Path]:
    """The ILLUM raw flat of the same night and mode within 2 h, closest in temperature."""
    candidates = []
    for raw in catalog.raws_by_tag.get("ILLUM", []):
        if raw.night != target.night:
            continue
        reason = raw.excluded
        if reason is None and raw.INS_MODE != target.INS_MODE:
            reason = f"INS_MODE {raw.INS_MODE}, need {target.INS_MODE}"
        delay = _delay(raw.DATE_OBS, target.DATE_OBS)
        if reason is None and delay > ILLUM_MAX_DELAY.total_seconds():
            reason = f"{delay / 3600:.1f} h from the exposure (more than 2 h)"
        if reason:
            log.append(f"rejected ILLUM {raw.path.name}: {reason}")
            continue
        dtemp = (abs(raw.INS_TEMP7_VAL - target.INS_TEMP7_VAL)
                 if raw.INS_TEMP7_VAL is not None and target.INS_TEMP7_VAL is not None else float("inf"))
        candidates.append((dtemp, delay, str(raw.path), raw))
    if not candidates:
        log.append(f"no usable ILLUM raw file on night {target.night}")
        return []
    dtemp, delay, _, raw = min(candidates)
    temp = f", ΔT {dtemp:.2f} K" if dtemp != float("inf") else ""
    log.append(f"ILLUM {raw.path.name}: {delay / 60:.0f} min from the exposure{temp}"
               f" (best of {len(candidates)})")
    return [raw.path]


def find_static(tag: str, target: Target, catalog: Catalog, settings, log: list[str]) -> list[Path]:
    """Step 3: static_calib validity, then muse_calib_path by PRO.CATG, then archive products."""
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
        if tag in MODE_MATCHED_TAGS and raw.INS_MODE and raw.INS_MODE != target.INS_MODE:
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


def describe(associations: Sequence[Association]) -> list[str]:
    """Lines for ``--dry-run``: each target, then its frames and search log."""
    out = []
    for assoc in associations:
        t = assoc.target
        out.append(f"{t.name} ({t.kind}, night {t.night}, {t.INS_MODE}) -> {t.folder}")
        out.extend("  " + line for line in assoc.lines())
    return out
