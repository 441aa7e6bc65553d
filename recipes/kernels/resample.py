"""Pixel table → cube resampling (the DRS ``muse_resampling_cube``; recipes.md §3.10).

Everything here works in **output voxel coordinates**: for every pixel-table row the caller
supplies 0-based fractional voxel positions ``fx``, ``fy`` (spatial) and ``fz`` (spectral),
so voxel ``(iz, iy, ix)`` has its centre at integer ``(fz, fy, fx)``. The cell (nearest
voxel) of a row is ``floor(f + 0.5)`` on each axis. Only rows with ``dq == 0`` and finite
``data``/``stat`` take part.

Definitions (shared by the numba kernels and the numpy twin
:func:`recipes.kernels.resample_reference.resample_reference`):

* **cosmic-ray rejection** (``crsigma > 0``): for each cell, the values of its rows and of
  the rows in the neighbouring cells ±1 in λ and ±1 along the slice direction (``crdir``:
  ``x``, ``y`` or ``none``) form a sample of n values; with n ≥ 3, rows *of the cell* above
  ``centre + crsigma·σ`` are rejected. ``median``: centre = median, σ = 1.4826·MAD;
  ``mean``: mean and standard deviation; ``iraf``: centre = median, σ = √stat of the row.
  σ = 0 rejects nothing (:mod:`recipes.kernels.resample_crreject`).
* **weights**, with d = (fx − ix, fy − iy, fz − iz) in voxel units and r = |d|, over rows
  whose cell lies within ±``ld`` of the voxel on every axis:
  ``nearest``: only the closest row of the voxel's own cell (ties: the first row);
  ``linear``: 1/r; ``quadratic``: 1/r²; ``renka``: ((R − r)/(R·r))² for r < R, else 0,
  with R = rc·√3 (``rc`` times the voxel diagonal, as the DRS scales it);
  ``drizzle``: the overlap volume of the row's footprint (``pixfrac`` × one voxel on each
  axis, centred on the row) with the voxel (overlaps ≤ 1e-10 voxel count as none); ``lanczos``: Π sinc(d)·sinc(d/ld) over the
  axes (|d| < ld). r is floored at 1e-10 so a row at a voxel centre dominates instead of
  dividing by zero. Weights are multiplied by the table's ``weight`` column when given
  (:mod:`recipes.kernels.resample_weights`).
* **output**: DATA = Σwd/Σw (an intensive weighted mean, so the cube keeps the surface-
  brightness units of the table), STAT = Σw²σ²/(Σw)², WEIGHT = Σw; voxels with Σw = 0 are
  NaN in DATA and STAT.

Memory: :func:`resample_cube` processes wavelength slabs. A parallel pass counts rows per
output plane, planes are grouped so that one slab (plus its ld/CR margin) holds at most
``max_rows`` rows, and per slab only those rows are gathered, given voxel coordinates
(through the caller's ``spatial`` function), binned into a pixel grid (counting sort)
and reordered by cell, so that neighbouring cells are neighbours in memory
(:mod:`recipes.kernels.resample_slab`). Then, in parallel over output planes, ``nearest``
looks at the voxel's own cell, and the other kernels scatter each row of the planes
within ±ld into the voxels within ±ld of its cell (drizzle skips the zero overlaps axis
by axis). Rows are visited in cell order, which is the order a per-voxel gather over the
±ld cells would sum them in, so the results equal the twin's. Peak extra memory ≈ 2
bytes per table row (each row's plane) plus ≈ 70 bytes × ``max_rows`` plus the output
cubes. The spatial mapping of pixel-table positions is :func:`recipes.kernels.skycoords.spatial_coords`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit

from recipes.kernels.resample_crreject import CRDIRS, CRTYPES, cr_reject
from recipes.kernels.resample_slab import build_grid, cell_of, gather_slab, plane_counts, select_rows, spectral_coords
from recipes.kernels.resample_weights import METHODS, resample_slab

_METHOD_CODE = {name: i for i, name in enumerate(METHODS)}
_CRTYPE_CODE = {name: i for i, name in enumerate(CRTYPES)}
_CRDIR_CODE = {name: i for i, name in enumerate(CRDIRS)}
SpatialFunction = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class ResampleOptions:
    """Resampling parameters with the DRS names (voxel units for ``rc`` and ``pixfrac``)."""

    method: str = "drizzle"
    pixfrac: tuple[float, float, float] = (0.8, 0.8, 0.8)
    ld: int = 1
    rc: float = 1.25
    crtype: str = "median"
    crsigma: float = 15.0
    crdir: str = "x"

    def __post_init__(self) -> None:
        if self.method not in _METHOD_CODE:
            raise ValueError(f"resample must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.crtype not in _CRTYPE_CODE:
            raise ValueError(f"crtype must be one of {', '.join(CRTYPES)}, not {self.crtype!r}")
        if self.crdir not in _CRDIR_CODE:
            raise ValueError(f"crdir must be one of {', '.join(CRDIRS)}, not {self.crdir!r}")
        if len(self.pixfrac) != 3 or min(self.pixfrac) <= 0:
            raise ValueError(f"pixfrac needs three positive values, not {self.pixfrac!r}")
        if self.ld < 1 and self.method != "nearest":
            raise ValueError(f"ld must be >= 1, not {self.ld}")
        if self.rc <= 0:
            raise ValueError(f"rc must be positive, not {self.rc}")

    @property
    def renka_radius(self) -> float:
        """The renka critical radius in voxels: ``rc`` times the voxel diagonal √3.

        This scaling reproduces muse_scipost_make_cube 2.8.7 exactly (checked: DRS and
        musered cubes of the same table agree to the last bit for rc = 1.25).
        """
        return float(self.rc) * math.sqrt(3.0)

    @property
    def loop_distance(self) -> int:
        """Cells searched around a voxel on each axis (0 for nearest)."""
        return 0 if self.method == "nearest" else int(self.ld)

    @property
    def margin(self) -> int:
        """Extra planes of rows a slab needs on each side (loop distance + CR neighbours)."""
        return self.loop_distance + (1 if self.crsigma > 0 else 0)


@dataclass
class ResampleResult:
    """Resampled cube ``[z, y, x]``: DATA and STAT (float32, NaN where empty), WEIGHT = Σw."""

    data: np.ndarray
    stat: np.ndarray
    weight: np.ndarray | None
    n_rejected: int


def plan_slabs(counts: np.ndarray, nz: int, margin: int, max_rows: int) -> list[tuple[int, int]]:
    """Group output planes into slabs [z0, z1) whose rows (with ±margin planes) ≤ max_rows.

    ``counts[i]`` holds the rows of cell plane ``i - margin``. A slab has at least one plane.
    """
    csum = np.concatenate([[0], np.cumsum(counts)])
    slabs = []
    z0 = 0
    while z0 < nz:
        z1 = z0 + 1
        while z1 < nz and csum[z1 + 1 + 2 * margin] - csum[z0] <= max_rows:
            z1 += 1
        slabs.append((z0, z1))
        z0 = z1
    return slabs


def resample_cube(
    lam: np.ndarray,
    dq: np.ndarray,
    data: np.ndarray,
    stat: np.ndarray,
    weight: np.ndarray | None,
    spatial: SpatialFunction,
    spectral: tuple[int, float, float, float],
    shape: tuple[int, int, int],
    options: ResampleOptions,
    max_rows: int = 10_000_000,
    keep_weight: bool = False,
) -> ResampleResult:
    """Resample pixel-table columns onto a cube of ``shape = (nz, ny, nx)``.

    ``spatial(idx)`` returns 0-based fractional voxel coordinates ``(fx, fy)`` (float64) of
    rows ``idx``; ``spectral = (kind, crval3, cd3_3, crpix3)`` maps λ [Å] to planes
    (``SPECTRAL_LINEAR`` or ``SPECTRAL_LOG``). Memory is bounded by ``max_rows`` per slab.
    """
    nz, ny, nx = (int(s) for s in shape)
    kind, crval, cd, crpix = int(spectral[0]), float(spectral[1]), float(spectral[2]), float(spectral[3])
    ld = options.loop_distance
    margin = options.margin
    method = _METHOD_CODE[options.method]
    hx, hy, hz = (0.5 * p for p in options.pixfrac)
    out_data = np.empty((nz, ny, nx), dtype=np.float32)
    out_stat = np.empty((nz, ny, nx), dtype=np.float32)
    out_weight = np.zeros((nz, ny, nx) if keep_weight else (0, 0, 0), dtype=np.float32)
    nplanes = nz + 2 * margin
    cellz = np.empty(lam.size, dtype=np.int16 if nplanes < 32767 else np.int32)
    counts = plane_counts(lam, dq, data, stat, kind, crval, cd, crpix, -margin, nplanes, cellz)
    no_weight = np.zeros(0, dtype=np.float32)
    n_rejected = 0
    for z0, z1 in plan_slabs(counts, nz, margin, max_rows):
        zlo = z0 - margin
        nzext = (z1 - z0) + 2 * margin
        idx = select_rows(cellz, zlo + margin, z1 + 2 * margin)  # cellz = plane + margin
        fz = spectral_coords(lam, idx, kind, crval, cd, crpix)
        fx, fy = spatial(idx)
        order, start = build_grid(np.ascontiguousarray(fx, dtype=np.float64),
                                  np.ascontiguousarray(fy, dtype=np.float64), fz, nx, ny, ld, zlo, nzext)  # fmt: skip
        # rows in cell order: neighbouring cells are then neighbours in memory
        fx, fy, fz, d, s, w = gather_slab(order, idx, fx, fy, fz, data, stat,
                                          weight if weight is not None else no_weight)  # fmt: skip
        del idx, order
        nxp, nyp = nx + 2 * ld, ny + 2 * ld
        if options.crsigma > 0:
            reject = cr_reject(
                start, nxp, nyp, nzext, margin - ld, nzext - margin + ld, d, s,
                _CRTYPE_CODE[options.crtype], float(options.crsigma), _CRDIR_CODE[options.crdir],
            )  # fmt: skip
            # rows of margin cells are counted by the slab that owns their plane
            n_rejected += int(_count_owned(reject, fz, z0, z1))
        else:
            reject = np.zeros(d.size, dtype=np.bool_)
        resample_slab(
            start, nx, ny, ld, -zlo, z1 - z0, fx, fy, fz, d, s, w, reject,
            method, hx, hy, hz, options.renka_radius, ld, out_data, out_stat, out_weight, z0,
        )  # fmt: skip
    return ResampleResult(out_data, out_stat, out_weight if keep_weight else None, n_rejected)


@njit(cache=True)
def _count_owned(reject, fz, z0, z1):
    n = 0
    for k in range(reject.size):
        if reject[k]:
            iz = cell_of(fz[k])
            if z0 <= iz < z1:
                n += 1
    return n
