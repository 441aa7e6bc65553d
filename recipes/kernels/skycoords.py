"""Pixel-table positions to output pixels and field pixels to the sky (numba, parallel).

:func:`spatial_coords` maps pixel-table positions to 0-based fractional output pixels (the
gnomonic projection of FITS WCS; numpy twin:
:meth:`recipes.algorithms.cube.CubeGrid.world_to_pixel`); :func:`project_rows` maps field
pixels to projected coordinates for muse_scipost (numpy twin: the ``reference`` path of
``recipes.algorithms.astrometry.project_to_sky``). Angles in degrees unless stated
(projected coordinates in radians, as the DRS stores them).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

POS_PIXEL, POS_PROJECTED, POS_POSITIONED = 0, 1, 2


@njit(cache=True, parallel=True)
def spatial_coords(xpos, ypos, idx, mode, ref_ra, ref_dec, crval1, crval2, crpix1, crpix2, cdinv):
    """0-based fractional output pixels ``(fx, fy)`` (float64) of rows ``idx``.

    ``mode``: ``POS_PIXEL`` (linear: CDinv·(x − crval) + crpix − 1), ``POS_PROJECTED``
    (xpos = φ, ypos = θ − π/2 [rad] about ``ref_ra/ref_dec``) or ``POS_POSITIONED``
    (xpos/ypos = RA/Dec − ref [deg]); celestial positions go through the gnomonic (TAN)
    projection about ``crval1/2`` [deg] as FITS WCS does. ``cdinv`` is the inverse of the
    2×2 CD matrix, row-major (pix/deg or pix/pix).
    """
    n = idx.size
    fx = np.empty(n, dtype=np.float64)
    fy = np.empty(n, dtype=np.float64)
    d2r = math.pi / 180.0
    r2d = 180.0 / math.pi
    a0 = crval1 * d2r
    d0 = crval2 * d2r
    sd0 = math.sin(d0)
    cd0 = math.cos(d0)
    dp = ref_dec * d2r
    sdp = math.sin(dp)
    cdp = math.cos(dp)
    # a projected table on a grid tangent at its own reference (the usual case): the
    # gnomonic projection is undone directly, ξ = r sin φ, η = −r cos φ with r = tan(−y),
    # instead of going through (RA, Dec) (equal to rounding, ≈ 1e-12 pixel)
    same_tangent = mode == POS_PROJECTED and ref_ra == crval1 and ref_dec == crval2
    for k in prange(n):
        i = idx[k]
        x = np.float64(xpos[i])
        y = np.float64(ypos[i])
        if mode == POS_PIXEL:
            u = x - crval1
            v = y - crval2
        elif same_tangent:
            r = math.tan(-y) * r2d
            u = r * math.sin(x)
            v = -r * math.cos(x)
        else:
            if mode == POS_PROJECTED:
                # θ = y + π/2 without losing the small y to rounding
                st = math.cos(y)
                ct = -math.sin(y)
                dra = math.atan2(ct * math.sin(x), st * cdp + ct * sdp * math.cos(x))
                ra = ref_ra * d2r + dra
                dec = math.asin(st * sdp - ct * cdp * math.cos(x))
            else:
                ra = (ref_ra + x) * d2r
                dec = (ref_dec + y) * d2r
            da = ra - a0
            sd = math.sin(dec)
            cdd = math.cos(dec)
            cosc = sd0 * sd + cd0 * cdd * math.cos(da)
            u = cdd * math.sin(da) / cosc * r2d
            v = (cd0 * sd - sd0 * cdd * math.cos(da)) / cosc * r2d
        fx[k] = cdinv[0] * u + cdinv[1] * v + crpix1 - 1.0
        fy[k] = cdinv[2] * u + cdinv[3] * v + crpix2 - 1.0
    return fx, fy


@njit(cache=True, parallel=True)
def project_rows(xpos, ypos, lam, m, crpix1, crpix2, dar_lo, dar_step, dar_xi, dar_eta, out_x, out_y):
    """Field pixels → projected coordinates (muse_scipost astrometry, numpy twin: the
    ``reference`` path of :func:`recipes.algorithms.postprocess.project_to_sky`).

    Per row: (ξ, η) = ``m`` · (xpos − crpix1, ypos − crpix2) [rad] (``m`` 2×2 float64, the
    rotated CD matrix in rad/pixel), plus the DAR offsets [rad] interpolated linearly in λ
    on the grid ``dar_lo + k·dar_step`` [Å] (``dar_xi``/``dar_eta``; empty: no DAR); then
    ``out_x`` = φ = atan2(ξ, −η), ``out_y`` = θ − π/2 = −atan(√(ξ² + η²)). The outputs may
    be the input position columns (each row is read before it is written).
    """
    n = xpos.size
    ngrid = dar_xi.size
    for i in prange(n):
        x = np.float64(xpos[i]) - crpix1
        y = np.float64(ypos[i]) - crpix2
        xi = m[0, 0] * x + m[0, 1] * y
        eta = m[1, 0] * x + m[1, 1] * y
        if ngrid > 1:
            t = (np.float64(lam[i]) - dar_lo) / dar_step
            k = min(max(int(math.floor(t)), 0), ngrid - 2)
            f = t - k
            xi += dar_xi[k] * (1.0 - f) + dar_xi[k + 1] * f
            eta += dar_eta[k] * (1.0 - f) + dar_eta[k + 1] * f
        out_x[i] = math.atan2(xi, -eta)
        out_y[i] = -math.atan(math.hypot(xi, eta))
