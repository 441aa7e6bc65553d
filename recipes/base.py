"""The recipe declaration: what a recipe consumes, produces and accepts as parameters.

A recipe module builds one module-level :class:`Recipe` from a small declaration and a
``run`` function. ``run(frames, params, outdir)`` gets the input files by tag (raw inputs
and calibrations alike), the merged and validated parameters (DRS names), and an existing
empty output folder; it writes its products there and returns them as :class:`Product`.
It never touches a database and never guesses paths.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ParamValue = bool | int | float | str


class RecipeError(Exception):
    """Bad input detected by a recipe (too few frames, mixed modes, corrupt file...).

    Its message is one line that names the file or frame at fault; the runner reports it
    without a traceback and goes on with the other targets.
    """


@dataclass(frozen=True)
class Param:
    """One recipe parameter, spelled as in the DRS (``losigmabadpix``).

    ``kind`` is one of ``bool``, ``int``, ``float``, ``str``. ``choices`` restricts the
    allowed values; ``minimum``/``maximum`` bound numbers (inclusive).
    """

    name: str
    kind: type
    default: ParamValue | None
    help: str
    choices: tuple[ParamValue, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def convert(self, value: Any) -> ParamValue | None:
        """Convert a settings or command-line value; raise ValueError with a one-line reason."""
        if value is None:
            return None
        if self.kind is bool:
            if isinstance(value, bool):
                converted: ParamValue = value
            elif isinstance(value, str) and value.strip().lower() in ("true", "t", "yes", "1"):
                converted = True
            elif isinstance(value, str) and value.strip().lower() in ("false", "f", "no", "0"):
                converted = False
            else:
                raise ValueError(f"parameter {self.name} must be true or false, not {value!r}")
        elif self.kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(f"parameter {self.name} must be an integer, not {value!r}")
            try:
                converted = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"parameter {self.name} must be an integer, not {value!r}") from None
        elif self.kind is float:
            if isinstance(value, bool):
                raise ValueError(f"parameter {self.name} must be a number, not {value!r}")
            try:
                converted = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"parameter {self.name} must be a number, not {value!r}") from None
        else:
            converted = str(value)
        if self.choices is not None and converted not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise ValueError(f"parameter {self.name} must be one of {allowed}, not {value!r}")
        if self.minimum is not None and isinstance(converted, (int, float)) and converted < self.minimum:
            raise ValueError(f"parameter {self.name} must be >= {self.minimum}, not {value!r}")
        if self.maximum is not None and isinstance(converted, (int, float)) and converted > self.maximum:
            raise ValueError(f"parameter {self.name} must be <= {self.maximum}, not {value!r}")
        return converted


@dataclass(frozen=True)
class Calib:
    """A calibration tag a recipe can use.

    ``required`` tags must be found by association; optional ones are used when found.
    ``default_excluded`` tags (MASTER_DARK, NONLINEARITY_GAIN) are only looked up when a
    settings block includes them.
    """

    tag: str
    required: bool = True
    default_excluded: bool = False


@dataclass(frozen=True)
class Product:
    """A file a recipe wrote: its path, PRO.CATG tag, the IFUs it covers and its QC values."""

    path: Path
    tag: str
    ifus: tuple[int, ...] = ()
    qc: dict[str, float | int | str] = field(default_factory=dict)


RunFunction = Callable[[Mapping[str, list[Path]], Mapping[str, ParamValue | None], Path], list[Product]]


@dataclass(frozen=True)
class Recipe:
    """A recipe declaration.

    ``name``: DRS name (``muse_bias``), also the default settings block and output folder.
    ``inputs``: raw tags consumed (``BIAS``); ``min_inputs`` the fewest raw frames accepted.
    ``calibs``: calibration tags. ``outputs``: product tags. ``params``: parameters.
    ``target``: what one run reduces: ``sequence`` (a calibration TPL_START),
    ``exposure`` (one science or standard exposure) or ``dataset``.
    ``summary_qc``: the main QC values for the summary table, as (label, key pattern).
    """

    name: str
    inputs: tuple[str, ...]
    calibs: tuple[Calib, ...]
    outputs: tuple[str, ...]
    params: tuple[Param, ...]
    run: RunFunction
    target: str = "sequence"
    min_inputs: int = 1
    description: str = ""
    # (label, glob pattern on QC keys) shown in the runner's summary table, e.g.
    # ("RON", "CHAN?? QC BIAS MASTER? RON"): the mean of the matching numeric values.
    summary_qc: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> Param:
        for param in self.params:
            if param.name == name:
                return param
        raise KeyError(name)

    def defaults(self) -> dict[str, ParamValue | None]:
        return {param.name: param.default for param in self.params}

    def merge_params(self, *blocks: Mapping[str, Any] | None) -> dict[str, ParamValue | None]:
        """Defaults overridden by each block in turn (common, recipe block, command line).

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
        return merged

    @property
    def required_calibs(self) -> tuple[str, ...]:
        return tuple(c.tag for c in self.calibs if c.required)
