"""Association: which files feed one recipe run.

:func:`associate` is a pure function of a :class:`~musered.catalog.Catalog` (a snapshot
of the database), the settings and one target. It returns an :class:`Association`: the
frames by tag, and per tag a human-readable log of what was searched, chosen and
rejected. A required tag that cannot be found raises :class:`MuseredError` whose one-line
message names the tag, the night, the nights searched and the candidates rejected.

Each calibration tag T of a target on night N is looked up in the sources its declaration
(:class:`recipes.base.Calib`, the common tags in :mod:`recipes.calibs`) lists, in order:

- ``frames``: the recipe block's ``frames.T`` (common block, then the recipe or ``--params``
  block): a file, a glob, a folder (files named ``T*`` in it, else those whose PRO.CATG is
  T), a list of those, or ``{path: {start_date, end_date}}`` (the file valid on N). A bare
  name that is not a file (``OFFSET_LIST_drs``, or just ``drs``) names a product in
  ``reduced``. Tags declared with this source only (OFFSET_LIST, OUTPUT_WCS, SKY_MASK,
  AUTOCAL_FACTORS) come only from here;
- ``reduced``: products with PRO_CATG = T on night N, then N+1, N-1, N+2, N-2, ... up to
  the declared offset (``frames.offsets`` overrides); with ``match_mode`` they must have the
  target's INS_MODE; products of the consuming recipe itself are never used (a re-run
  must not feed on its own output); products excluded by the global ``frames.exclude.T``
  are rejected; among several runs on the first night that has one, the closest in time
  to the target wins (ties: the name), and the choice is logged; products whose file has
  disappeared are rejected;
- ``raw``: a raw file with tag T (the ILLUM flat) of the target's night (and INS_MODE
  with ``match_mode``), as MuseRed's ``find_illum``: the reference is the mean time and
  mean INS TEMP7 VAL of the target's raw files; among the files within
  ``max_delay_hours`` the closest in temperature (then time), else the closest in time;
  not used when its temperature differs by more than ``max_temp_diff``;
- ``static``: the ``static_calib`` file whose validity holds N, else the file of
  ``muse_calib_path`` whose primary ``ESO PRO CATG`` is T (several: the one whose
  ``ESO INS MODE`` or file name matches the mode, then the first by name), else an
  archive-delivered product ingested into ``raw`` with PRO_CATG = T (closest night).

Tags declared ``default_excluded`` (MASTER_DARK) are only looked up when ``frames.include``
lists them; ``frames.exclude`` drops tags; ``frames.include`` may add undeclared tags
(optional, all sources). A tag declared with ``modes`` (RAMAN_LINES: AO modes) is only
looked up for a target whose INS_MODE matches one. Raw files excluded in the catalog
never enter.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipes.base import FRAMES, RAW, REDUCED, STATIC, Calib

from .errors import MuseredError
from .catalog import Catalog, ProductFrame
from .calibfiles import custom_frames, find_static
from .targets import Target

logger = logging.getLogger(__name__)



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


def wanted_calibs(recipe, conf: Mapping[str, Any]) -> list[Calib]:
    """The calibrations to look up: the recipe's declared ones minus default-excluded ones
    (unless included) and minus excluded tags, plus included undeclared tags (optional)."""
    include = set(conf.get("include", []))
    exclude = set(conf.get("exclude", []))
    out = [calib for calib in recipe.calibs
           if calib.tag not in exclude and (not calib.default_excluded or calib.tag in include)]
    declared = {c.tag for c in recipe.calibs}
    out.extend(Calib(tag, required=False) for tag in sorted(include - declared - exclude))
    return out


def offset_of(calib: Calib, conf: Mapping[str, Any]) -> int:
    """Nights searched either side: ``frames.offsets.<TAG>``, else the declaration's."""
    return int(conf.get("offsets", {}).get(calib.tag, calib.offset))


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
              block: Mapping[str, Any] | None = None, block_name: str | None = None) -> Association:
    """Frames (inputs and calibrations) for one target; MuseredError for a missing one.

    ``block_name``: the settings block the recipe runs under (``--params``); its products,
    like the recipe's own, are never taken as calibrations."""
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
    own = {recipe.name, block_name or recipe.name}
    for calib in wanted_calibs(recipe, conf):
        tag = calib.tag
        if calib.modes and not any(fnmatch.fnmatchcase(target.INS_MODE or "", m) for m in calib.modes):
            result.log[tag] = [f"only used for INS_MODE {' or '.join(calib.modes)}, not {target.INS_MODE}"]
            continue
        log: list[str] = []
        paths = find_calibration(calib, target, catalog, settings, conf, excluded_products, log, own)
        result.log[tag] = log
        if paths:
            result.frames[tag] = paths
        elif calib.required:
            missing.append(f"no {tag} for {recipe.name} {target.name} (night {target.night}, "
                           f"INS_MODE {target.INS_MODE}): " + "; ".join(log))
        else:
            log.append("optional, not found: not used")
    if missing:  # every missing tag at once, so one dry-run shows all that is lacking
        raise MuseredError(" | ".join(missing))
    return result


def find_calibration(calib: Calib, target: Target, catalog: Catalog, settings,
                     conf: Mapping[str, Any], excluded_products: Mapping[Path, str],
                     log: list[str], own: frozenset[str] | set[str] = frozenset()) -> list[Path]:
    """Files for one calibration from its declared sources, in order; ``log`` records the
    search. ``own``: recipe blocks whose products must not be used (the consumer's)."""
    tag = calib.tag
    for source in calib.sources:
        if source == FRAMES:
            if tag not in conf:
                only = calib.sources == (FRAMES,)
                log.append(f"{tag} is only taken from the recipe block's frames.{tag}, which is not set"
                           if only else f"frames.{tag}: not set")
                continue
            paths = custom_frames(tag, conf[tag], target, catalog, settings, log)
        elif source == REDUCED:
            paths = find_reduced(calib, target, catalog, offset_of(calib, conf), excluded_products, log, own)
        elif source == RAW:
            paths = find_raw(calib, target, catalog, log)
        elif source == STATIC:
            paths = find_static(calib, target, catalog, settings, log)
        else:  # the declaration checks its sources; this is a new one the manager lacks
            raise MuseredError(f"calibration {tag}: unknown source {source!r}")
        if paths:
            return paths
    return []


def _stamp(product: ProductFrame) -> str:
    return f"{product.name} (night {product.night}, {product.recipe_name})"


def _delay(a: dt.datetime | None, b: dt.datetime | None) -> float:
    if a is None or b is None:
        return float("inf")
    return abs((a - b).total_seconds())


def find_reduced(calib: Calib, target: Target, catalog: Catalog, offset: int,
                 excluded_products: Mapping[Path, str], log: list[str],
                 own: frozenset[str] | set[str] = frozenset()) -> list[Path]:
    """A product set of ``reduced`` on the nearest night (see the module docstring)."""
    tag = calib.tag
    if target.night is None:
        log.append("reduced: not searched, the target has no night")
        return []
    searched = []
    for k, night in night_order(target.night, offset):
        searched.append(f"{night} ({k:+d})")
        sets: dict[tuple, list[ProductFrame]] = {}
        for product in catalog.products_by_tag_night.get((tag, night), []):
            reason = excluded_products.get(product.path)
            if reason is None and product.recipe_name in own:
                reason = "a product of this recipe (never its own input)"
            if reason is None and calib.match_mode and product.INS_MODE != target.INS_MODE:
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


def find_raw(calib: Calib, target: Target, catalog: Catalog, log: list[str]) -> list[Path]:
    """A raw file of the tag (the ILLUM flat) for the target, as MuseRed's ``find_illum``
    (see the module docstring): within ``max_delay_hours`` the closest in temperature,
    else the closest in time; rejected beyond ``max_temp_diff``."""
    tag = calib.tag
    max_delay = calib.max_delay_hours * 3600.0
    when, temp = reference_of(target, catalog)
    candidates = []
    for raw in catalog.raws_by_tag.get(tag, []):
        if raw.night != target.night:
            continue
        reason = raw.excluded
        if reason is None and calib.match_mode and raw.INS_MODE != target.INS_MODE:
            reason = f"INS_MODE {raw.INS_MODE}, need {target.INS_MODE}"
        if reason:
            log.append(f"rejected {tag} {raw.path.name}: {reason}")
            continue
        dtemp = abs(raw.INS_TEMP7_VAL - temp) if raw.INS_TEMP7_VAL is not None and temp is not None else None
        candidates.append((_delay(raw.DATE_OBS, when), dtemp, str(raw.path), raw))
    if not candidates:
        log.append(f"no usable {tag} raw file on night {target.night}")
        return []
    within = [c for c in candidates if c[0] < max_delay]
    if within:  # unknown temperatures rank last
        delay, dtemp, _, raw = min(within, key=lambda c: (c[1] is None, c[1] or 0.0, c[0], c[2]))
        how = f"closest in temperature of {len(within)} within {calib.max_delay_hours:g} h"
    else:
        delay, dtemp, _, raw = min(candidates, key=lambda c: (c[0], c[2]))
        how = f"none within {calib.max_delay_hours:g} h: the closest in time of {len(candidates)}"
    temp_text = f", ΔT {dtemp:.2f} K" if dtemp is not None else ", temperature unknown"
    line = f"{tag} {raw.path.name}: {delay / 60:.0f} min from the target{temp_text} ({how})"
    if calib.max_temp_diff is not None and dtemp is not None and dtemp > calib.max_temp_diff:
        log.append(f"rejected {line}: temperature differs by more than {calib.max_temp_diff:g} K")
        return []
    log.append(line)
    return [raw.path]


def reference_of(target: Target, catalog: Catalog) -> tuple[dt.datetime | None, float | None]:
    """The mean DATE-OBS and mean INS TEMP7 VAL of the target's raw files (a calibration
    sequence has several); the target's own values when its raw files are unknown."""
    raws = [catalog.raws_by_name[name] for name in target.members if name in catalog.raws_by_name]
    times = [r.DATE_OBS for r in raws if r.DATE_OBS is not None]
    temps = [r.INS_TEMP7_VAL for r in raws if r.INS_TEMP7_VAL is not None]
    when = (times[0] + sum((t - times[0] for t in times), dt.timedelta()) / len(times)
            if times else target.DATE_OBS)
    temp = sum(temps) / len(temps) if temps else target.INS_TEMP7_VAL
    return when, temp


def describe(associations: Sequence[Association]) -> list[str]:
    """Lines for ``--dry-run``: each target, then its frames and search log."""
    out = []
    for assoc in associations:
        t = assoc.target
        out.append(f"{t.name} ({t.kind}, night {t.night}, {t.INS_MODE}) -> {t.folder}")
        out.extend("  " + line for line in assoc.lines())
    return out
