"""What to reduce: the targets of a recipe in a :class:`~musered.catalog.Catalog`, and the
command-line selection of targets.

A **target** is what one recipe run reduces, named as MuseRed names it; its kind is the
recipe's declared group:

- ``sequence`` (calibration recipes): the raw files with the recipe's input tags sharing
  one TPL_START and INS_MODE; name ``{TPL_START}``, folder
  ``{output_dir or first output tag}/{TPL_START}.{INS_MODE}``;
- ``exposure`` (science recipes): one exposure, name ``raw.name`` (the archive-file
  timestamp), folder ``{output_dir or short recipe name}/{name}``; its inputs are either
  its raw file (scibasic) or the products of that exposure from ``from_recipe``;
- ``dataset`` (exp_align, exp_combine): the products of every exposure of a settings
  dataset; name ``{dataset}`` (a command may add a suffix), folder
  ``{output_dir or short recipe name}/{name}``;
- ``run`` (std_combine): the products of the exposures on the nights of a settings run;
  name ``{run}``, no night of its own.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .catalog import Catalog, ProductFrame, RawFrame, excluded_exposures
from .errors import MuseredError
from .matching import any_matches
from .selection import ExposureSelection, describe

# A dataset's exposures are its raw files of this tag (DPR TYPE OBJECT) with its OBJECT.
SCIENCE_TAG = "OBJECT"

# ---------------------------------------------------------------- targets

@dataclass
class Target:
    """One unit of work for a recipe (see the module docstring for names and folders)."""

    kind: str                      # sequence | exposure | dataset
    name: str
    output_dir: str
    folder: PurePosixPath          # relative to reduced_path
    night: str | None
    DATE_OBS: dt.datetime | None
    INS_MODE: str | None
    TPL_START: str | None
    OBJECT: str | None
    INS_TEMP7_VAL: float | None = None
    inputs: dict[str, list[Path]] = field(default_factory=dict)
    members: tuple[str, ...] = ()  # exposure names of the input raw files / products
    log: list[str] = field(default_factory=list)
    nights: tuple[str, ...] = ()   # run targets: the nights of their inputs
    problem: str | None = None     # why this target cannot run (it fails with this reason)
    left_out: dict[str, str] = field(default_factory=dict)  # dataset/run: exposure -> why not used


@dataclass(frozen=True)
class Skipped:
    """A would-be target left out because its raw files are excluded or flagged."""

    name: str
    reason: str
    night: str | None = None


def output_dir_for(recipe, block: Mapping[str, Any]) -> str:
    """``init.output_dir`` of the block, else the recipe's declared folder (its first output
    tag for sequences, its name without ``muse_`` otherwise)."""
    init = block.get("init") or {}
    if init.get("output_dir"):
        return str(init["output_dir"])
    return recipe.default_output_dir


def from_recipe_of(recipe, block: Mapping[str, Any]) -> str | None:
    """Where the product inputs come from: the block's ``from_recipe``, else the declaration's."""
    return block.get("from_recipe") or recipe.from_recipe


def discover_targets(recipe, catalog: Catalog, settings, block: Mapping[str, Any] | None = None,
                     dataset_suffix: str = "", inputs_query: Mapping[str, Any] | None = None,
                     exposure_selection: ExposureSelection | None = None,
                     ) -> tuple[list[Target], list[Skipped]]:  # fmt: skip
    """All targets of ``recipe`` in the catalog, sorted by time, and those skipped (why).

    ``inputs_query``: only raw files and products whose columns match it enter as inputs
    (exp-align ``--date``: ``{"night": [...]}``; std-combine ``--mode``: ``{"INS_MODE": ...}``).
    ``exposure_selection`` (dataset recipes: a block's ``select`` or one
    ``names_with_selection`` entry, :mod:`musered.selection`): only the exposures it picks
    are used, the others are left out with its reason; its ``output_name`` names the target.
    """
    block = block or {}
    output_dir = output_dir_for(recipe, block)
    if inputs_query:
        catalog = catalog.matching(inputs_query)
    if recipe.group == "sequence":
        return _sequence_targets(recipe, catalog, output_dir)
    if recipe.group == "exposure":
        return _exposure_targets(recipe, catalog, settings, block, output_dir)
    if recipe.group == "dataset":
        return _dataset_targets(recipe, catalog, settings, block, output_dir, dataset_suffix, exposure_selection)
    if recipe.group == "run":
        return _run_targets(recipe, catalog, settings, block, output_dir)
    raise MuseredError(f"recipe {recipe.name}: unknown group {recipe.group!r}")


def _sort_key(target: Target):
    return (target.DATE_OBS or dt.datetime.max, target.name)


def _sequence_targets(recipe, catalog: Catalog, output_dir: str):
    groups: dict[tuple[str, str], list[RawFrame]] = defaultdict(list)
    for raw in catalog.raws:
        if raw.tag in recipe.inputs:
            groups[(raw.TPL_START or raw.name or raw.path.name, raw.INS_MODE or "")].append(raw)
    targets, skipped = [], []
    for (tpl, mode), raws in groups.items():
        raws.sort(key=lambda r: (r.DATE_OBS or dt.datetime.max, str(r.path)))
        used = [r for r in raws if r.excluded is None]
        log = [f"{r.path.name}: not used, {r.excluded}" for r in raws if r.excluded]
        if not used:
            skipped.append(Skipped(tpl, f"all {len(raws)} raw files excluded ({raws[0].excluded})",
                                   raws[0].night))
            continue
        inputs: dict[str, list[Path]] = defaultdict(list)
        for r in used:
            inputs[r.tag].append(r.path)
        first = used[0]
        folder_name = f"{tpl}.{mode}" if mode else tpl
        targets.append(Target(
            kind="sequence", name=tpl, output_dir=output_dir,
            folder=PurePosixPath(output_dir, folder_name), night=first.night,
            DATE_OBS=first.DATE_OBS, INS_MODE=first.INS_MODE, TPL_START=first.TPL_START,
            OBJECT=first.OBJECT, INS_TEMP7_VAL=first.INS_TEMP7_VAL, inputs=dict(inputs),
            members=tuple(r.name for r in used if r.name), log=log,
        ))
    return sorted(targets, key=_sort_key), skipped


def _exposure_targets(recipe, catalog: Catalog, settings, block, output_dir: str):
    targets, skipped = [], []
    for raw in catalog.raws:
        if raw.tag not in recipe.inputs:
            continue
        name = raw.name or raw.path.name
        if raw.excluded:
            skipped.append(Skipped(name, raw.excluded, raw.night))
            continue
        targets.append(Target(
            kind="exposure", name=name, output_dir=output_dir,
            folder=PurePosixPath(output_dir, name), night=raw.night, DATE_OBS=raw.DATE_OBS,
            INS_MODE=raw.INS_MODE, TPL_START=raw.TPL_START, OBJECT=raw.OBJECT,
            INS_TEMP7_VAL=raw.INS_TEMP7_VAL, inputs={raw.tag: [raw.path]}, members=(name,),
        ))
    by_name = _product_inputs_by_exposure(recipe, catalog, block)
    excluded_names = excluded_exposures(catalog)
    for name, (products, log) in by_name.items():
        if name in excluded_names:
            skipped.append(Skipped(name, excluded_names[name], products[0].night))
            continue
        first = min(products, key=lambda p: (p.DATE_OBS or dt.datetime.max, str(p.path)))
        inputs: dict[str, list[Path]] = defaultdict(list)
        for p in sorted(products, key=lambda p: str(p.path)):
            inputs[p.PRO_CATG].append(p.path)
        targets.append(Target(
            kind="exposure", name=name, output_dir=output_dir,
            folder=PurePosixPath(output_dir, name), night=first.night, DATE_OBS=first.DATE_OBS,
            INS_MODE=first.INS_MODE, TPL_START=first.TPL_START, OBJECT=first.OBJECT,
            INS_TEMP7_VAL=_temperature_of(catalog, name), inputs=dict(inputs),
            members=(name,), log=log,
        ))
    return sorted(targets, key=_sort_key), skipped


def _temperature_of(catalog: Catalog, name: str) -> float | None:
    raw = catalog.raws_by_name.get(name)
    return raw.INS_TEMP7_VAL if raw is not None else None


def _product_inputs_by_exposure(recipe, catalog: Catalog, block) -> dict[str, tuple[list[ProductFrame], list[str]]]:
    """Per exposure name, the product set feeding ``recipe``: products with an input tag,
    from the ``from_recipe`` block when given; several runs -> the latest one (logged)."""
    from_recipe = from_recipe_of(recipe, block)
    sets: dict[str, dict[tuple, list[ProductFrame]]] = defaultdict(lambda: defaultdict(list))
    for p in catalog.products:
        if p.PRO_CATG in recipe.inputs and (from_recipe is None or p.recipe_name == from_recipe):
            sets[p.name][p.set_key].append(p)
    out = {}
    for name, by_set in sets.items():
        ranked = sorted(by_set.items(),
                        key=lambda kv: (max(p.date_run or dt.datetime.min for p in kv[1]), kv[0]),
                        reverse=True)
        key, products = ranked[0]
        log = []
        if len(ranked) > 1:
            others = ", ".join(f"{k[0]}:{k[2]}" for k, _ in ranked[1:])
            log.append(f"inputs from {key[0]} ({key[2]}), the latest run; not used: {others}")
        out[name] = (products, log)
    return out


def _dataset_targets(recipe, catalog: Catalog, settings, block, output_dir: str, suffix: str,
                     selection: ExposureSelection | None = None):
    """One target per settings dataset: the latest input products of each of its exposures.

    The dataset's exposures are its raw OBJECT files (OBJECT is the dataset name) and the
    exposures with input products of that OBJECT. Each one left out is named with its
    reason in ``Target.left_out`` (and the target's log): not picked by the selection,
    excluded or flagged (the block's ``exclude_flags``), no input product of
    ``from_recipe``, or its products excluded by ``frames.exclude.<PRO_CATG>``. Flagged
    exposures that are used are logged as such. The target is named
    ``{dataset}{suffix}``, or the selection's ``output_name``.
    """
    from_recipe = from_recipe_of(recipe, block)
    excluded_names = excluded_exposures(catalog)
    excluded_products = catalog.excluded_products(settings)
    where = f" from {from_recipe}" if from_recipe else ""
    missing = f"no {'/'.join(recipe.inputs)} product{where}"
    names = list(getattr(settings, "datasets", {}) or {})
    targets, skipped = [], []
    by_exposure = _product_inputs_by_exposure(recipe, catalog, block)
    for dataset in names:
        inputs: dict[str, list[Path]] = defaultdict(list)
        members, log, firsts, left_out = [], [], [], {}
        exposures = {raw.name for raw in catalog.raws if raw.name and raw.tag == SCIENCE_TAG and raw.OBJECT == dataset}
        exposures |= {name for name, (products, _) in by_exposure.items() if products[0].OBJECT == dataset}
        for name in sorted(exposures):
            products, set_log = by_exposure.get(name, ([], []))
            usable = [p for p in products if p.path not in excluded_products]
            if selection is not None and not selection.picks(name):
                left_out[name] = selection.reason
            elif name in excluded_names:
                left_out[name] = excluded_names[name]
            elif not products:
                left_out[name] = missing
            elif not usable:
                left_out[name] = excluded_products[products[0].path]
            if name in left_out:
                log.append(f"exposure {name} left out: {left_out[name]}")
                continue
            members.append(name)
            log.extend(f"{name}: {line}" for line in set_log)
            log.extend(f"{p.path.name} of {name} not used: {excluded_products[p.path]}"
                       for p in products if p not in usable)
            if catalog.flags.get(name):
                log.append(f"exposure {name} used although flagged ({', '.join(sorted(catalog.flags[name]))}): "
                           "the block's exclude_flags does not exclude it")
            firsts.append(min(usable, key=lambda p: (p.DATE_OBS or dt.datetime.max, str(p.path))))
            for p in sorted(usable, key=lambda p: str(p.path)):
                inputs[p.PRO_CATG].append(p.path)
        if not members:
            reason = f"no {'/'.join(recipe.inputs)} products{where} for this dataset"
            if any(why != missing for why in left_out.values()):
                reason = f"every exposure left out ({summarize_left_out(left_out)})"
            elif left_out:
                reason += f" ({len(left_out)} exposure(s) without one: {summarize_left_out(left_out, names_only=True)})"
            skipped.append(Skipped(dataset, reason))
            continue
        first = min(firsts, key=lambda p: (p.DATE_OBS or dt.datetime.max, str(p.path)))
        name = selection.output_name if selection is not None and selection.output_name else f"{dataset}{suffix}"
        if selection is not None and selection.names is not None:
            log.insert(0, f"exposures selected by {selection.label}: {describe(selection.queries)}")
        targets.append(Target(
            kind="dataset", name=name, output_dir=output_dir, folder=PurePosixPath(output_dir, name),
            night=first.night, DATE_OBS=first.DATE_OBS, INS_MODE=first.INS_MODE,
            TPL_START=first.TPL_START, OBJECT=dataset, inputs=dict(inputs),
            members=tuple(members), log=log, left_out=left_out,
        ))
    return sorted(targets, key=_sort_key), skipped


def summarize_left_out(left_out: Mapping[str, str], limit: int = 5, names_only: bool = False) -> str:
    """``name (reason); ...`` (or ``name, ...``) for at most ``limit`` exposures, then how
    many more."""
    items = [name if names_only else f"{name} ({reason})" for name, reason in sorted(left_out.items())]
    sep = ", " if names_only else "; "
    more = f"{sep}and {len(items) - limit} more" if len(items) > limit else ""
    return sep.join(items[:limit]) + more


def _run_targets(recipe, catalog: Catalog, settings, block, output_dir: str):
    """One target per settings run: the latest input products of each exposure on the
    run's nights (no night of its own); products of excluded exposures (flagged ones with
    the block's ``exclude_flags``) are left out, and so are files that have disappeared:
    an exposure with no product left is named in ``Target.left_out``. Inputs of several
    instrument modes make the target fail with its reason (``Target.problem``)."""
    excluded = catalog.excluded_products(settings)
    excluded_names = excluded_exposures(catalog)
    by_exposure = _product_inputs_by_exposure(recipe, catalog, block)
    targets, skipped = [], []
    for run in (getattr(settings, "runs", {}) or {}).values():
        inputs: dict[str, list[Path]] = defaultdict(list)
        members, log, modes, nights, left_out = [], [], set(), set(), {}
        for name in sorted(by_exposure):
            products, set_log = by_exposure[name]
            if not products[0].night or not run.contains(dt.date.fromisoformat(products[0].night)):
                continue
            usable = []
            for p in products:
                reason = excluded.get(p.path) or (None if p.path.is_file() else f"file {p.path} is missing")
                if reason:
                    log.append(f"{p.path.name} of {name} not used: {reason}")
                else:
                    usable.append(p)
            if not usable:
                left_out[name] = excluded_names.get(name) or excluded.get(products[0].path) \
                    or f"file {products[0].path} is missing"
                continue
            members.append(name)
            log.extend(f"{name}: {line}" for line in set_log)
            modes.add(usable[0].INS_MODE or "?")
            nights.add(usable[0].night)
            for p in sorted(usable, key=lambda p: (p.night or "", p.name)):
                inputs[p.PRO_CATG].append(p.path)
        if not members:
            where = from_recipe_of(recipe, block)
            reason = (f"every exposure left out ({summarize_left_out(left_out)})" if left_out else
                      f"no {'/'.join(recipe.inputs)} products" + (f" from {where}" if where else "")
                      + f" on the nights of run {run.name}")
            skipped.append(Skipped(run.name, reason))
            continue
        problem = None
        if len(modes) > 1:
            problem = f"inputs of several instrument modes ({', '.join(sorted(modes))}): choose one with --mode"
        targets.append(Target(
            kind="run", name=run.name, output_dir=output_dir, folder=PurePosixPath(output_dir, run.name),
            night=None, DATE_OBS=None, INS_MODE=sorted(modes)[0] if len(modes) == 1 else None,
            TPL_START=None, OBJECT=None, inputs=dict(inputs), members=tuple(members),
            log=[f"nights {', '.join(sorted(nights))}"] + log, nights=tuple(sorted(nights)), problem=problem,
            left_out=left_out,
        ))
    return targets, skipped


# ---------------------------------------------------------------- selection

def target_matches(target: Target, selector: str, settings) -> bool:
    """Does a command-line selector pick this target?

    A selector is a night (``2017-06-16``), a run name, a dataset name, a TPL_START, an
    exposure name, or a glob on any of those (``"2017-06-16*"``).
    """
    from .dateselect import selector_matches

    return selector_matches(selector, [target.name, target.TPL_START, target.OBJECT, *target.members],
                            nights=[target.night, *target.nights], runs=getattr(settings, "runs", {}))


def select_targets(targets: Sequence[Target], selection: Sequence[str] | None, settings) -> list[Target]:
    """Targets picked by any selector (:func:`musered.dateselect.pick`: a run, a night, a
    target or member name, else another value); all of them when the selection is empty."""
    from .dateselect import pick

    if not selection:
        return list(targets)
    runs = getattr(settings, "runs", {}) or {}
    picked = {id(t) for s in selection for t in pick(s, targets, _selector_key, runs)}
    return [t for t in targets if id(t) in picked]


def _selector_key(target: Target):
    return ([target.name, *target.members], [target.TPL_START, target.OBJECT], [target.night, *target.nights])


def check_selection(selection: Sequence[str] | None, catalog: Catalog, settings) -> None:
    """MuseredError for a selector that names nothing known (typo guard).

    Known: runs, datasets, and the nights, exposure names, TPL_STARTs and OBJECTs of any raw
    or reduced row (globs allowed). A selector that is known but has no target for one
    recipe is not an error: that step simply has nothing to do.
    """
    if not selection:
        return
    runs = getattr(settings, "runs", {}) or {}
    datasets = getattr(settings, "datasets", {}) or {}
    known: set[str] = set(runs) | set(datasets)
    for raw in catalog.raws:
        known.update(v for v in (raw.night, raw.name, raw.TPL_START, raw.OBJECT) if v)
    for p in catalog.products:
        known.update(v for v in (p.night, p.name, p.TPL_START, p.OBJECT) if v)
    for selector in selection:
        if not any_matches(sorted(known), selector):
            raise MuseredError(
                f"nothing matches {selector!r}: not a night, run, dataset, TPL_START or "
                "exposure name in the database"
            )
