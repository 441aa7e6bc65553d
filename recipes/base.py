"""The recipe declaration: what a recipe consumes, produces and accepts as parameters.

A recipe module (``recipes/steps/<name>.py``) defines one module-level ``RECIPE``, a
:class:`Recipe` built from plain data and a ``run`` function. The declaration says all the
manager needs to know; the manager holds no recipe name:

- ``group``: what one run reduces: ``sequence`` (a calibration TPL_START, run by
  process-calib), ``exposure`` (one exposure, process-exp), ``dataset`` (the exposures of a
  settings dataset, exp-align or exp-combine by ``method``) or ``run`` (the nights of a
  settings run, std-combine);
- ``step``: its flag on the command line (``--bias``) or, for dataset recipes, its
  ``--method``; ``by_default``: whether the command runs it when no step is named;
- ``inputs``: the raw tags (``BIAS``) or product tags (``PIXTABLE_OBJECT``) it consumes;
  product inputs come from ``from_recipe`` (overridable by a settings block's
  ``from_recipe``);
- ``calibs``: each calibration tag with its association policy (:class:`Calib`: night
  offset, INS_MODE matching, where it may come from, in order);
- ``outputs``: the product tags it may write; ``params``: typed parameters (DRS names);
  ``check``: cross-parameter rules, run by :meth:`Recipe.validate`.

The order of the steps is not declared: :func:`recipes.registry.step_order` derives it from
outputs and inputs.

``run(frames, params, outdir)`` gets the input files by tag (inputs and calibrations
alike), the validated parameters (typed: bool, int, float, str, or a tuple for list
parameters), and an existing empty folder. It writes its products there and returns them
as :class:`Product`. It never touches a database, never guesses paths, and never deletes
what it wrote when it fails: the runner gave it a staging folder and owns the cleanup.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ParamValue = bool | int | float | str | tuple
GROUPS = ("sequence", "exposure", "run", "dataset")

# Where a calibration may come from, in the order they are searched:
FRAMES = "frames"    # the settings block's frames.<TAG> (a file, glob, folder or stored product name)
REDUCED = "reduced"  # a product of another recipe in ``reduced``, the nearest night within the offset
RAW = "raw"          # a raw file of the same night within ``max_delay_hours``, closest in temperature
STATIC = "static"    # static_calib, then muse_calib_path, then an archive product ingested as raw
SOURCES = (FRAMES, REDUCED, RAW, STATIC)


class RecipeError(Exception):
    """Bad input detected by a recipe (too few frames, mixed modes, corrupt file...).

    Its message is one line that names the file or frame at fault; the runner reports it
    without a traceback and goes on with the other targets.
    """


@dataclass(frozen=True)
class Param:
    """One recipe parameter, spelled as in the DRS (``losigmabadpix``).

    ``kind`` is one of ``bool``, ``int``, ``float``, ``str`` or ``tuple`` (a comma-separated
    list in settings and in the DRS, a tuple of ``item`` values inside; ``length`` fixes
    its size, and a single value is then repeated). ``choices`` restricts the allowed
    values (for a tuple: each item); ``minimum``/``maximum`` bound numbers (inclusive).
    """

    name: str
    kind: type
    default: ParamValue | None
    help: str
    choices: tuple[ParamValue, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    item: type = str
    length: int | None = None

    def convert(self, value: Any) -> ParamValue | None:
        """Convert a settings or command-line value; raise ValueError with a one-line reason.

        >>> Param("save", tuple, "cube", "").convert("cube, individual")
        ('cube', 'individual')
        >>> Param("crsigma", tuple, "15,15", "", item=float, length=2).convert(7)
        (7.0, 7.0)
        >>> Param("nifu", int, 0, "").convert("3.5")
        Traceback (most recent call last):
        ...
        ValueError: parameter nifu must be an integer, not '3.5'
        """
        if value is None:
            return None
        if self.kind is tuple:
            return self._convert_tuple(value)
        converted = self._scalar(value, self.kind)
        self._check_value(converted, value)
        return converted

    def _convert_tuple(self, value: Any) -> tuple:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        else:
            parts = [value]
        items = tuple(self._scalar(p, self.item) for p in parts)
        if self.length is not None:
            if len(items) == 1:
                items = items * self.length
            if len(items) != self.length:
                raise ValueError(f"parameter {self.name} must be {self.length} comma-separated values, "
                                 f"not {value!r}")
        for item in items:
            self._check_value(item, value)
        return items

    def _scalar(self, value: Any, kind: type) -> ParamValue:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "t", "yes", "1"):
                return True
            if isinstance(value, str) and value.strip().lower() in ("false", "f", "no", "0"):
                return False
            raise ValueError(f"parameter {self.name} must be true or false, not {value!r}")
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(f"parameter {self.name} must be an integer, not {value!r}")
            try:
                return int(value)
            except (TypeError, ValueError):
                raise ValueError(f"parameter {self.name} must be an integer, not {value!r}") from None
        if kind is float:
            if isinstance(value, bool):
                raise ValueError(f"parameter {self.name} must be a number, not {value!r}")
            try:
                return float(value)
            except (TypeError, ValueError):
                raise ValueError(f"parameter {self.name} must be a number, not {value!r}") from None
        return str(value)

    def _check_value(self, converted: ParamValue, value: Any) -> None:
        if self.choices is not None and converted not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise ValueError(f"parameter {self.name} must be one of {allowed}, not {value!r}")
        number = isinstance(converted, (int, float)) and not isinstance(converted, bool)
        if self.minimum is not None and number and converted < self.minimum:
            raise ValueError(f"parameter {self.name} must be >= {self.minimum}, not {value!r}")
        if self.maximum is not None and number and converted > self.maximum:
            raise ValueError(f"parameter {self.name} must be <= {self.maximum}, not {value!r}")


def format_param(value: ParamValue | None) -> str:
    """A parameter value as the DRS prints it (``PARAMi VALUE``, esorex options): tuples
    comma-separated, ``true``/``false``, whole numbers without a trailing ``.0`` (the DRS's
    ``%g``, without its rounding to 6 digits).

    >>> format_param((15.0, 15.0, 1.0)), format_param(True), format_param(None), format_param(0.3125)
    ('15,15,1', 'true', '', '0.3125')
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(format_param(v) for v in value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class Calib:
    """A calibration tag a recipe can use, with its association policy.

    ``required`` tags must be found; optional ones are used when found. ``default_excluded``
    tags (MASTER_DARK) are only looked up when a settings block's ``frames.include`` names
    them. ``sources`` are searched in order (see :data:`SOURCES`); a static calibration
    (SKY_LINES, EXTINCT_TABLE ...) has no ``reduced`` source and is never taken from a
    product. ``offset``: nights searched either side for a reduced product (settings
    ``frames.offsets`` override it); ``match_mode``: the product (or raw file) must have the
    target's INS_MODE. The ``raw`` source takes a file of the target's night: among those
    within ``max_delay_hours`` the closest in instrument temperature, else the closest in
    time; with ``max_temp_diff`` (K) a file warmer or colder than that is not used.
    ``modes``: INS_MODE patterns (``fnmatch``) the tag is looked up for (RAMAN_LINES:
    ``("*-AO-*",)``); empty: every mode.
    The common tags are declared once in :mod:`recipes.calibs`.
    """

    tag: str
    required: bool = True
    default_excluded: bool = False
    sources: tuple[str, ...] = (FRAMES, REDUCED, STATIC)
    offset: int = 1
    match_mode: bool = False
    max_delay_hours: float = 2.0
    max_temp_diff: float | None = None
    modes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown or not self.sources:
            raise ValueError(f"calibration {self.tag}: sources must be some of {', '.join(SOURCES)}, "
                             f"not {self.sources}")
        if isinstance(self.modes, str):  # a bare string would match character by character
            raise ValueError(f"calibration {self.tag}: modes must be a tuple of patterns, not {self.modes!r}")

    def optional(self, **changes: Any) -> Calib:
        """This tag, not required (and with any other field changed)."""
        return replace(self, required=False, **changes)


@dataclass(frozen=True)
class Product:
    """A file a recipe wrote: its path, PRO.CATG tag, the IFUs it covers and its QC values."""

    path: Path
    tag: str
    ifus: tuple[int, ...] = ()
    qc: dict[str, float | int | str] = field(default_factory=dict)


RunFunction = Callable[[Mapping[str, list[Path]], Mapping[str, ParamValue | None], Path], list[Product]]
CheckFunction = Callable[[Mapping[str, ParamValue | None]], None]


@dataclass(frozen=True)
class Recipe:
    """A recipe declaration (see the module docstring for what each field means).

    ``min_inputs``: the fewest input frames accepted (checked by the runner before a run).
    ``output_dir``: its folder in the reduced tree (default: the first output tag for
    sequences, the name without ``muse_`` otherwise). ``runs_source_first``: when its step
    is chosen alone, the step of ``from_recipe`` runs first (``--standard`` reduces the
    standard star's raw file first). ``summary_qc``: the main QC values of the runner's
    summary table, as (label, glob pattern on QC keys): the mean of the matching values.
    """

    name: str
    inputs: tuple[str, ...]
    calibs: tuple[Calib, ...]
    outputs: tuple[str, ...]
    params: tuple[Param, ...]
    run: RunFunction
    group: str = "sequence"
    step: str = ""
    by_default: bool = True
    from_recipe: str | None = None
    command: str | None = None
    output_dir: str | None = None
    runs_source_first: bool = False
    min_inputs: int = 1
    check: CheckFunction | None = None
    description: str = ""
    summary_qc: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"recipe {self.name}: group must be one of {', '.join(GROUPS)}, not {self.group!r}")
        if self.group == "dataset" and self.command not in ("exp-align", "exp-combine"):
            raise ValueError(f"recipe {self.name}: a dataset recipe names its command (exp-align or exp-combine)")

    @property
    def step_name(self) -> str:
        """The command-line flag or method: ``step``, else the name without ``muse_``."""
        return self.step or self.name.removeprefix("muse_").replace("_", "")

    @property
    def command_name(self) -> str:
        """The musered command that runs this recipe."""
        if self.command:
            return self.command
        return {"sequence": "process-calib", "exposure": "process-exp", "run": "std-combine"}[self.group]

    @property
    def default_output_dir(self) -> str:
        if self.output_dir:
            return self.output_dir
        return self.outputs[0] if self.group == "sequence" else self.name.removeprefix("muse_")

    def param(self, name: str) -> Param:
        for param in self.params:
            if param.name == name:
                return param
        raise KeyError(name)

    def defaults(self) -> dict[str, ParamValue | None]:
        return {param.name: param.convert(param.default) for param in self.params}

    def validate(self, *blocks: Mapping[str, Any] | None) -> dict[str, ParamValue | None]:
        """Typed parameters: defaults overridden by each block in turn (common, recipe
        block, command line), then the recipe's ``check``.

        Raises ValueError naming an unknown parameter and listing the valid ones, or
        describing a value of the wrong type or out of range.
        """
        merged = self.defaults()
        known = {param.name: param for param in self.params}
        for block in blocks:
            for key, value in (block or {}).items():
                if key not in known:
                    valid = ", ".join(sorted(known)) or "none"
                    raise ValueError(f"unknown parameter {key!r} for {self.name}; valid parameters: {valid}")
                merged[key] = known[key].convert(value)
        if self.check is not None:
            self.check(merged)
        return merged

    @property
    def required_calibs(self) -> tuple[str, ...]:
        return tuple(c.tag for c in self.calibs if c.required)

    def calib(self, tag: str) -> Calib | None:
        return next((c for c in self.calibs if c.tag == tag), None)
