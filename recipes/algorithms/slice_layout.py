"""The simulated slice layout of one IFU: where its 48 slices fall on the trimmed CCD.

:func:`make_ifu_layout` draws, for a simulator profile (:class:`LayoutParams`), each
slice's 50 % edges (quadratic bow + tilt), its wavelength solution (an exact polynomial
of xorder 2, yorder 2, stored in the DRS WAVECAL shape xorder 2, yorder 6), its Gaussian
LSF width and its relative throughput (:class:`SliceGeometry`). The simulator renders
frames from it and writes it as truth; the recipes never use it (they measure the same
quantities from the calibration frames).

Conventions: polynomials in trimmed-CCD FITS 1-based pixel coordinates (pixel centres at
integers), y in rows, as the DRS tables; wavelengths in Å (air); widths in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recipes.algorithms.instrument import GEO_SLICE_SKY, NOMINAL_DISPERSION, polyval_y, wavecal_eval


def _poly_from_t(coeffs_t, y0: float, s: float, order: int) -> np.ndarray:
    """Convert ``sum_k c_k t^k`` with ``t = (y - y0)/s`` into coefficients in y (length order+1)."""
    out = np.zeros(order + 1)
    # (y - y0)^k / s^k expanded by the binomial theorem
    from math import comb

    for k, c in enumerate(coeffs_t):
        for j in range(k + 1):
            out[j] += c * comb(k, j) * (-y0) ** (k - j) / s**k
    return out


@dataclass
class SliceGeometry:
    """Truth for one CCD slice of one IFU (trimmed-CCD FITS 1-based coordinates, y in rows).

    ``left``, ``right``, ``centre``: polynomial coefficients (increasing powers of y, order 5)
    of the 50 % edges and the centre, x(y) in pixels. ``wlc``: WAVECAL-style coefficients
    ``wlc[I, J]`` (xorder 2, yorder 6) with λ = Σ wlc[I,J] x^I y^J in Å. ``lsf``: coefficients
    of the Gaussian LSF FWHM in Å as a polynomial in ``(λ - 7000 Å)/1000 Å``.
    ``throughput``: relative slice efficiency (flat structure), ``edge_sigma``: Gaussian
    blur of the slice edges in pixels.
    """

    ifu: int
    slice_ccd: int
    slice_sky: int
    left: np.ndarray
    right: np.ndarray
    centre: np.ndarray
    wlc: np.ndarray
    lsf: np.ndarray
    throughput: float
    edge_sigma: float

    def edges_at(self, y) -> tuple[np.ndarray, np.ndarray]:
        """Left and right 50 % edges (1-based x) at 1-based rows ``y``."""
        return polyval_y(self.left, y), polyval_y(self.right, y)

    def wavelength(self, x, y):
        """Air wavelength (Å) at 1-based trimmed-CCD coordinates."""
        return wavecal_eval(self.wlc, x, y)

    def lsf_fwhm(self, lam):
        """Gaussian LSF FWHM (Å) at wavelength ``lam`` (Å)."""
        return polyval_y(self.lsf, (np.asarray(lam, dtype=float) - 7000.0) / 1000.0)


@dataclass(frozen=True)
class LayoutParams:
    """Parameters of the slice layout of a profile (pixels of the trimmed CCD, Å)."""

    slice_width: float = 75.0  # px
    slice_gap: float = 8.0  # px between slices of a stack
    stack_gap: float = 20.0  # px between stacks
    first_edge: float = 42.0  # 1-based x of the first slice's left edge
    curvature: float = 1.3  # px, quadratic bow of the edges over the CCD height
    tilt: float = 3.4  # px, max linear tilt over the CCD height
    edge_sigma: float = 0.8  # px, Gaussian blur of the edges
    lambda_start: float = 4200.0  # Å at y = 1 of the reference slice
    dispersion: float = NOMINAL_DISPERSION  # Å/px
    dispersion_curv: float = 2e-6  # Å/px², quadratic term in (y - ymid)
    lsf_fwhm: float = 2.5  # Å at 7000 Å
    width_sky: float = 75.0  # spaxels along a slice on the sky


@dataclass
class IFULayout:
    """The 48 slices of one IFU on a CCD of ``shape`` (trimmed, ``(ny, nx)``)."""

    ifu: int
    shape: tuple[int, int]
    slices: list[SliceGeometry] = field(default_factory=list)


def make_ifu_layout(ifu: int, shape: tuple[int, int], params: LayoutParams,
                    rng: np.random.Generator) -> IFULayout:
    """Build the slice layout of IFU ``ifu`` with small random per-slice perturbations.

    The edges are quadratic in y (curvature + tilt), the width changes slightly along y;
    the wavelength solution is λ = λ0_s + D·(y-1) + d2·(y-ymid)² + b1·u + b2·u² with
    ``u = (x - xc_s)/(W/2)`` and ``xc_s`` the slice centre at mid height, which is an exact
    polynomial of xorder 2, yorder 2 in absolute 1-based coordinates (stored as xorder 2,
    yorder 6 with zeros, the DRS default shape).
    """
    ny, nx = shape
    ymid = (ny + 1) / 2.0
    half = ny / 2.0
    pitch = params.slice_width + params.slice_gap
    # total width: 48 slices, 11 gaps inside each of the 4 stacks, 3 gaps between stacks
    total = 48 * params.slice_width + 44 * params.slice_gap + 3 * params.stack_gap
    x0 = params.first_edge + rng.normal(0, 0.3)
    if x0 + total > nx - 10:
        raise ValueError(f"slice layout ({total:.0f} px) does not fit a CCD {nx} px wide")
    ifu_tilt = rng.uniform(-1, 1) * params.tilt * 0.5
    out = IFULayout(ifu=ifu, shape=shape)
    for k in range(48):
        stack = k // 12
        left0 = x0 + k * pitch - stack * params.slice_gap + stack * params.stack_gap
        left0 += rng.normal(0, 0.2)
        width = params.slice_width + rng.normal(0, 0.4)
        tilt = ifu_tilt + rng.uniform(-0.5, 0.5) * params.tilt
        tilt = float(np.clip(tilt, -params.tilt, params.tilt))
        curv = params.curvature * (1 + 0.1 * rng.normal())
        dw = rng.normal(0, 0.15)  # width change over the height
        # x(t) = x_mid + tilt/2 t + curv (t^2 - 1/3) with t in [-1, 1]
        lt = [left0 - curv / 3, tilt / 2 - dw / 2, curv]
        rt = [left0 + width - curv / 3, tilt / 2 + dw / 2, curv]
        left = _poly_from_t(lt, ymid, half, 5)
        right = _poly_from_t(rt, ymid, half, 5)
        centre = 0.5 * (left + right)
        xc = float(polyval_y(centre, ymid))
        lam0 = params.lambda_start + rng.normal(0, 3.0)
        b1 = rng.normal(0, 0.6)
        b2 = 0.4 + rng.normal(0, 0.1)
        wlc = np.zeros((3, 7))
        # λ = lam0 + D (y-1) + d2 (y-ymid)^2 + b1 u + b2 u^2, u = (x - xc)/(W/2)
        hw = width / 2.0
        ypoly = _poly_from_t([lam0 + params.dispersion * (ymid - 1), params.dispersion * half,
                              params.dispersion_curv * half**2], ymid, half, 6)
        wlc[0] = ypoly
        wlc[0, 0] += -b1 * xc / hw + b2 * xc**2 / hw**2
        wlc[1, 0] = b1 / hw - 2 * b2 * xc / hw**2
        wlc[2, 0] = b2 / hw**2
        lsf = np.array([params.lsf_fwhm * (1 + rng.normal(0, 0.02)), -0.08, 0.06])
        out.slices.append(SliceGeometry(
            ifu=ifu, slice_ccd=k + 1, slice_sky=GEO_SLICE_SKY[k], left=left, right=right,
            centre=centre, wlc=wlc, lsf=lsf, throughput=float(1 + rng.normal(0, 0.03)),
            edge_sigma=params.edge_sigma,
        ))
    return out
