"""``mr.frames``: MuseRed's ``FramesFinder`` questions, answered by our association.

MuseRed users ask ``mr.frames.find_calib(night, "MASTER_BIAS", "WFM-AO-N")`` (which
processed calibration a night would use), ``mr.frames.get_static("GEOMETRY_TABLE",
date=...)`` and ``mr.frames.is_valid(name)``. Here each answer comes from the functions
the runner uses — :func:`musered.association.find_reduced`,
:func:`musered.calibfiles.find_static` and the exclusions decided by
:class:`musered.catalog.Catalog` — on a fresh catalog of the database, so it is the
choice ``process-exp`` would make, with the declared policy of the tag
(:mod:`recipes.calibs`: mode matching, nights searched). Paths are returned as strings,
as MuseRed does; nothing found is a :class:`~musered.errors.MuseredError` whose message
is the search log.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from .errors import MuseredError


def declared_calib(tag: str):
    """The declaration of a calibration tag in :mod:`recipes.calibs` (an undeclared tag:
    the default policy, searched in the sources of a reduced product)."""
    from recipes import calibs
    from recipes.base import Calib

    declared = {v.tag: v for v in vars(calibs).values() if isinstance(v, Calib)}
    return declared.get(tag) or Calib(tag)


def _probe(night: str | None, ins_mode: str | None):
    """A target standing for "an exposure of this night and mode" for the lookups."""
    from .targets import Target

    return Target(kind="exposure", name="", output_dir="", folder=PurePosixPath("."), night=night,
                  DATE_OBS=None, INS_MODE=ins_mode, TPL_START=None, OBJECT=None)


class Frames:
    """Calibration lookups of one :class:`~musered.api.MuseRed` (module docstring)."""

    def __init__(self, settings, database):
        self.settings = settings
        self.database = database

    def _catalog(self, exclude_flags: bool = True):
        from .catalog import Catalog

        return Catalog.from_database(self.database, self.settings, exclude_flags)

    def find_calib(self, night: str, DPR_TYPE: str, ins_mode: str, day_off: int | None = None) -> list[str]:
        """The files of the processed ``DPR_TYPE`` (a PRO.CATG: MASTER_BIAS ...) that an
        exposure of ``night`` in ``ins_mode`` would use: that night only, or up to
        ``day_off`` nights either side (nearest first, the following night first)."""
        from .association import find_reduced

        catalog = self._catalog()
        log: list[str] = []
        paths = find_reduced(declared_calib(DPR_TYPE), _probe(night, ins_mode), catalog, day_off or 0,
                             catalog.excluded_products(self.settings), log)
        if not paths:
            raise MuseredError(f"could not find {DPR_TYPE} for night {night}: " + "; ".join(log))
        return [str(p) for p in paths]

    def get_static(self, catg: str, date: str | None = None) -> str:
        """The static calibration file of PRO.CATG ``catg`` valid on night ``date``:
        ``static_calib`` (by validity), else ``muse_calib_path``, else an archive product.
        Without ``date``, entries with a validity range do not apply."""
        from .calibfiles import find_static

        log: list[str] = []
        paths = find_static(declared_calib(catg), _probe(date, None), self._catalog(), self.settings, log)
        if not paths:
            raise MuseredError(f"could not find a static {catg}" + (f" for {date}" if date else "")
                               + ": " + "; ".join(log))
        return str(paths[0])

    @property
    def static_by_catg(self) -> dict[str, list[str]]:
        """File names of ``muse_calib_path`` by their PRO.CATG."""
        from .calibfiles import StaticFolder

        folder = self.settings.muse_calib_path
        if folder is None:
            raise MuseredError(f"{self.settings.where}: muse_calib_path is not set")
        return {catg: sorted(Path(p).name for p in files)
                for catg, files in sorted(StaticFolder.of(Path(folder)).by_catg.items())}

    def get_excludes(self, DPR_TYPE: str | None = None, column: str = "name") -> set[str]:
        """What must not be used, as values of ``column`` (``name``, ``TPL_START`` or
        ``night``): excluded raw files (the database flag and ``frames.exclude``; not the
        quality flags), calibration sequences whose files are all excluded, and products
        excluded by ``frames.exclude.<PRO_CATG>``; only those of ``DPR_TYPE`` (a DPR TYPE,
        raw tag or PRO.CATG) when given."""
        if column not in ("name", "TPL_START", "night"):
            raise MuseredError(f"get_excludes: column must be name, TPL_START or night, not {column!r}")
        catalog = self._catalog(exclude_flags=False)
        out: set[str] = set()
        sequences: dict[str, list] = {}
        for raw in catalog.raws:
            if DPR_TYPE is not None and DPR_TYPE not in (raw.DPR_TYPE, raw.tag):
                continue
            if raw.TPL_START:
                sequences.setdefault(raw.TPL_START, []).append(raw)
            if raw.excluded:
                out.add(getattr(raw, column))
        if column == "name":
            out |= {tpl for tpl, raws in sequences.items() if all(r.excluded for r in raws)}
        excluded = catalog.excluded_products(self.settings)
        for product in catalog.products:
            if product.path in excluded and (DPR_TYPE is None or product.PRO_CATG == DPR_TYPE):
                out.add(getattr(product, column))
        out.discard(None)
        return out

    def is_valid(self, name: str, DPR_TYPE: str | None = None, column: str = "name") -> bool:
        """``name`` is not among :meth:`get_excludes`."""
        return name not in self.get_excludes(DPR_TYPE, column)

    def filter_valid(self, names: Iterable[str], DPR_TYPE: str | None = None, column: str = "name") -> list[str]:
        """``names`` without the excluded ones, in their order."""
        excludes = self.get_excludes(DPR_TYPE, column)
        return [name for name in names if name not in excludes]
