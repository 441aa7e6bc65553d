"""The LINE_CATALOG of the arc lamps: reading, per-lamp selection, blends and merging.

A catalogue (DRS format ``VERSION = 3``) lists per line ``lambda`` (Å, air), ``flux``,
``ion`` and ``quality`` (0: not used, 1: for pattern matching, ≥ 2: also for the fits).
Each arc lamp (Ne, Xe, HgCd) shows the lines of its ions (:data:`LAMP_IONS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.base import RecipeError

# Ions of the catalogue that each arc lamp shows (``ion`` column of LINE_CATALOG).
LAMP_IONS: dict[str, tuple[str, ...]] = {
    "Ne": ("NeI", "NeII"),
    "Xe": ("XeI", "XeII"),
    "HgCd": ("HgI", "HgII", "CdI", "CdII"),
}
# A catalogue line with another line of the same lamp closer than this (Å) that is
# brighter than BLEND_FLUX of it is a blend: identified but left out of the fit.
BLEND_DISTANCE = 8.0
BLEND_FLUX = 0.01


@dataclass
class LineCatalog:
    """Rows of LINE_CATALOG: λ (Å, air, increasing), flux, ion name and quality flag."""

    lam: np.ndarray
    flux: np.ndarray
    ion: np.ndarray
    quality: np.ndarray

    def for_lamp(self, lamp: str, where: str = "LINE_CATALOG") -> LineCatalog:
        """All catalogue lines of one lamp (any quality; blends need the unused ones too).

        RecipeError for an unknown lamp or a lamp without a line of quality ≥ 1, at once:
        the DRS 2.8.7 spins for many minutes in that case instead.
        """
        if lamp not in LAMP_IONS:
            raise RecipeError(f"{where}: unknown arc lamp {lamp!r} (known: {', '.join(LAMP_IONS)})")
        ions = {i.lower() for i in LAMP_IONS[lamp]}
        sel = np.array([str(i).strip().lower() in ions for i in self.ion], dtype=bool)
        if not (sel & (self.quality >= 1)).any():
            ions = ", ".join(LAMP_IONS[lamp])
            raise RecipeError(f"{where}: no usable lines (quality >= 1) for lamp {lamp} (ions {ions})")
        return LineCatalog(self.lam[sel], self.flux[sel], self.ion[sel], self.quality[sel])

    @property
    def usable(self) -> np.ndarray:
        """Mask of lines usable for pattern matching (quality ≥ 1)."""
        return self.quality >= 1

    def blended(self) -> np.ndarray:
        """Mask of lines with a neighbour within BLEND_DISTANCE brighter than BLEND_FLUX of them."""
        near = np.abs(self.lam[:, None] - self.lam[None, :]) < BLEND_DISTANCE
        bright = self.flux[None, :] > BLEND_FLUX * self.flux[:, None]
        np.fill_diagonal(near, False)
        return (near & bright).any(axis=1)


def read_line_catalog(path: Path) -> LineCatalog:
    """LINE_CATALOG rows (RecipeError naming the file when it is not a VERSION 3 catalogue)."""
    path = Path(path)
    try:
        with fits.open(path) as hdul:
            version = hdul[0].header.get("VERSION")
            tables = [h for h in hdul[1:] if isinstance(h, fits.BinTableHDU)]
            if not tables:
                raise RecipeError(f"{path}: LINE_CATALOG has no binary table")
            data = tables[0].data
            names = [n.lower() for n in (data.names if data is not None else [])]
            missing = [c for c in ("lambda", "flux", "ion", "quality") if c not in names]
            if missing:
                raise RecipeError(f"{path}: LINE_CATALOG lacks column(s) {', '.join(missing)}")
            n = 0 if data is None else len(data)
            col = {c.lower(): c for c in data.names} if data is not None else {}
            lam = np.asarray(data[col["lambda"]], dtype=np.float64) if n else np.zeros(0)
            flux = np.asarray(data[col["flux"]], dtype=np.float64) if n else np.zeros(0)
            ion = np.array([str(i).strip() for i in data[col["ion"]]]) if n else np.zeros(0, dtype=str)
            quality = np.asarray(data[col["quality"]], dtype=np.int64) if n else np.zeros(0, dtype=np.int64)
    except (OSError, ValueError, TypeError) as exc:
        raise RecipeError(f"{path}: cannot read LINE_CATALOG ({str(exc).splitlines()[0]})") from None
    if version is None or int(version) != 3:
        raise RecipeError(f"{path}: LINE_CATALOG VERSION is {version!r}, the DRS format needs VERSION = 3")
    if n == 0:
        raise RecipeError(f"{path}: LINE_CATALOG is empty")
    if np.any(np.diff(lam) < 0):
        order = np.argsort(lam, kind="stable")
        lam, flux, ion, quality = lam[order], flux[order], ion[order], quality[order]
    return LineCatalog(lam, flux, ion, quality)


def merged_catalog(catalogs: Mapping[str, LineCatalog]) -> LineCatalog:
    """All lamps' lines in one catalogue (``lampwise=false``), sorted by λ."""
    parts = list(catalogs.values())
    lam = np.concatenate([c.lam for c in parts])
    order = np.argsort(lam, kind="stable")
    return LineCatalog(
        lam[order],
        np.concatenate([c.flux for c in parts])[order],
        np.concatenate([c.ion for c in parts])[order],
        np.concatenate([c.quality for c in parts])[order],
    )


def lamp_ions(lamps: str) -> tuple[str, ...]:
    """Catalogue ions of a lamp name, or of several joined by ``+`` (``"Ne+Xe"``)."""
    ions: list[str] = []
    for lamp in lamps.split("+"):
        if lamp not in LAMP_IONS:
            raise RecipeError(f"unknown arc lamp {lamp!r} (known: {', '.join(LAMP_IONS)})")
        ions.extend(LAMP_IONS[lamp])
    return tuple(ions)
