"""Resampling, plain numpy twin of :func:`recipes.kernels.resample.resample_cube` for tests.

It loops over voxels and evaluates the definitions of :mod:`recipes.kernels.resample`
directly, O(voxels × rows): small inputs only.
"""

from __future__ import annotations

import numpy as np

from recipes.kernels.resample import ResampleOptions, ResampleResult
from recipes.kernels.resample_crreject import MAD_TO_SIGMA
from recipes.kernels.resample_weights import MIN_OVERLAP, RMIN


def resample_reference(
    fx: np.ndarray,
    fy: np.ndarray,
    fz: np.ndarray,
    data: np.ndarray,
    stat: np.ndarray,
    dq: np.ndarray,
    weight: np.ndarray | None,
    shape: tuple[int, int, int],
    options: ResampleOptions,
) -> ResampleResult:
    """Straightforward numpy implementation of the definitions above (O(voxels × rows))."""
    nz, ny, nx = shape
    ld = options.loop_distance
    fx, fy, fz = (np.asarray(a, dtype=np.float64) for a in (fx, fy, fz))
    d = np.asarray(data, dtype=np.float64)
    s = np.asarray(stat, dtype=np.float64)
    cx, cy, cz = (np.floor(a + 0.5).astype(np.int64) for a in (fx, fy, fz))
    margin = options.margin
    valid = (
        (np.asarray(dq) == 0) & np.isfinite(d) & np.isfinite(s)
        & (cx >= -ld) & (cx < nx + ld) & (cy >= -ld) & (cy < ny + ld) & (cz >= -margin) & (cz < nz + margin)
    )  # fmt: skip
    reject = np.zeros(d.size, dtype=bool)
    if options.crsigma > 0:
        sx, sy = {"x": (1, 0), "y": (0, 1), "none": (0, 0)}[options.crdir]
        cells = {(a, b, c) for a, b, c, v in zip(cz, cy, cx, valid) if v and -ld <= a < nz + ld}
        for z, y, x in cells:
            hood = valid & (np.abs(cz - z) <= 1)
            if sx:
                hood &= (cy == y) & (np.abs(cx - x) <= 1)
            elif sy:
                hood &= (cx == x) & (np.abs(cy - y) <= 1)
            else:
                hood &= (cy == y) & (cx == x)
            vals = d[hood]
            if vals.size < 3:
                continue
            own = valid & (cz == z) & (cy == y) & (cx == x)
            if options.crtype == "mean":
                centre, sigma = vals.mean(), vals.std(ddof=1)
                limit = centre + options.crsigma * sigma if sigma > 0 else np.inf
            elif options.crtype == "median":
                centre = np.median(vals)
                sigma = MAD_TO_SIGMA * np.median(np.abs(vals - centre))
                limit = centre + options.crsigma * sigma if sigma > 0 else np.inf
            else:
                sig = np.sqrt(np.maximum(s, 0))
                limit = np.where(sig > 0, np.median(vals) + options.crsigma * sig, np.inf)
            reject |= own & (d > limit)
    use = valid & ~reject
    w_col = np.ones_like(d) if weight is None else np.asarray(weight, dtype=np.float64)
    hx, hy, hz = (0.5 * p for p in options.pixfrac)
    out_d = np.full(shape, np.nan, dtype=np.float64)
    out_s = np.full(shape, np.nan, dtype=np.float64)
    out_w = np.zeros(shape, dtype=np.float64)

    def overlap(delta, half):
        width = np.minimum(delta + half, 0.5) - np.maximum(delta - half, -0.5)
        return np.where(width > MIN_OVERLAP, width, 0.0)

    def lanczos(delta, a):
        x = np.pi * delta
        with np.errstate(invalid="ignore", divide="ignore"):
            val = np.where(np.abs(delta) < 1e-12, 1.0, a * np.sin(x) * np.sin(x / a) / (x * x))
        return np.where(np.abs(delta) < a, val, 0.0)

    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if options.method == "nearest":
                    rows = np.flatnonzero(use & (cz == z) & (cy == y) & (cx == x))
                    if rows.size == 0:
                        continue
                    r2 = (fx[rows] - x) ** 2 + (fy[rows] - y) ** 2 + (fz[rows] - z) ** 2
                    k = rows[np.argmin(r2)]
                    out_d[z, y, x], out_s[z, y, x], out_w[z, y, x] = d[k], s[k], 1.0
                    continue
                rows = np.flatnonzero(use & (np.abs(cz - z) <= ld) & (np.abs(cy - y) <= ld) & (np.abs(cx - x) <= ld))
                ddx, ddy, ddz = fx[rows] - x, fy[rows] - y, fz[rows] - z
                r = np.maximum(np.sqrt(ddx**2 + ddy**2 + ddz**2), RMIN)
                if options.method == "linear":
                    w = 1 / r
                elif options.method == "quadratic":
                    w = 1 / r**2
                elif options.method == "renka":
                    rc = options.renka_radius
                    w = np.where(r < rc, ((rc - r) / (rc * r)) ** 2, 0.0)
                elif options.method == "drizzle":
                    w = overlap(ddx, hx) * overlap(ddy, hy) * overlap(ddz, hz)
                else:
                    w = lanczos(ddx, ld) * lanczos(ddy, ld) * lanczos(ddz, ld)
                w = w * w_col[rows]
                sw = w.sum()
                out_w[z, y, x] = sw
                if sw != 0:
                    out_d[z, y, x] = (w * d[rows]).sum() / sw
                    out_s[z, y, x] = (w**2 * s[rows]).sum() / sw**2
    owned = reject & (cz >= 0) & (cz < nz)
    return ResampleResult(out_d, out_s, out_w, int(owned.sum()))
