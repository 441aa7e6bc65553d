"""Astrometry of a pixel table: field pixels → projected sky coordinates (muse_scipost step 5).

With ASTROMETRY_WCS CD matrix ``C`` and reference pixel ``(p1, p2)`` (:func:`read_astrometry`,
or the mode's default solution), a row at field pixel (x, y) has intermediate coordinates
``(u, v) = C · (x − p1, y − p2)`` [deg]; the position angle P (``ESO INS DROT POSANG``,
the field's +y axis from north towards east) turns them into tangent-plane offsets
east/north of the pointing::

    ξ = u cos P + v sin P,   η = −u sin P + v cos P

(at P = 0 and the nominal C = diag(−0.2″, +0.2″) field +x points west, +y north); the
DAR correction of :func:`recipes.algorithms.dar.dar_offsets` is added to (ξ, η). The table
is then stored ``projected (intermediate)`` about the header ``RA``/``DEC``
(:mod:`recipes.algorithms.pixtable`): xpos = φ = atan2(ξ, −η),
ypos = θ − π/2 = −atan(√(ξ²+η²)) [rad]. Angles in degrees unless a name says rad.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.base import RecipeError
from recipes.io import hkey
from recipes.kernels.skycoords import project_rows
from recipes.algorithms.dar import ARCSEC_PER_RAD, dar_offsets
from recipes.algorithms.pixtable import WCS_PIXEL, WCS_PROJECTED, PixTable, pkey, set_wcs_state

logger = logging.getLogger(__name__)

#: Wavelength step [Å] of the grid on which project_to_sky evaluates the DAR shift.
DAR_GRID_STEP = 0.01
#: Default astrometric solutions (CD in deg/pixel) when no ASTROMETRY_WCS is given.
DEFAULT_SPAXEL_ARCSEC = {"WFM": 0.2, "NFM": 0.025}


def read_astrometry(path: Path | None, mode: str) -> tuple[np.ndarray, tuple[float, float]]:
    """(CD 2×2 [deg/pixel], (CRPIX1, CRPIX2)) from ASTROMETRY_WCS, or the default solution.

    The default is the nominal spaxel scale of the mode (0.2″ WFM, 0.025″ NFM), east left.
    """
    if path is None:
        scale = DEFAULT_SPAXEL_ARCSEC["NFM" if mode.upper().startswith("NFM") else "WFM"] / 3600.0
        logger.warning("no ASTROMETRY_WCS given, using the default %s solution", mode)
        return np.array([[-scale, 0.0], [0.0, scale]]), (0.0, 0.0)
    path = Path(path)
    try:
        with fits.open(path) as hdul:
            header = next((h.header for h in hdul if "CTYPE1" in h.header), None)
    except (OSError, ValueError) as exc:
        raise RecipeError(f"{path}: cannot read ASTROMETRY_WCS ({str(exc).splitlines()[0]})") from None
    if header is None:
        raise RecipeError(f"{path}: ASTROMETRY_WCS has no header with CTYPE1")
    try:
        if "CD1_1" in header or "CD2_2" in header:
            cd = np.array([[float(header.get("CD1_1", 0.0)), float(header.get("CD1_2", 0.0))],
                           [float(header.get("CD2_1", 0.0)), float(header.get("CD2_2", 0.0))]])  # fmt: skip
        else:
            c1, c2 = float(header["CDELT1"]), float(header["CDELT2"])
            cd = np.array([[c1 * float(header.get("PC1_1", 1.0)), c1 * float(header.get("PC1_2", 0.0))],
                           [c2 * float(header.get("PC2_1", 0.0)), c2 * float(header.get("PC2_2", 1.0))]])  # fmt: skip
        crpix = (float(header.get("CRPIX1", 0.0)), float(header.get("CRPIX2", 0.0)))
    except (KeyError, TypeError, ValueError):
        raise RecipeError(f"{path}: ASTROMETRY_WCS needs numeric CD (or CDELT/PC) and CRPIX keys") from None
    if abs(np.linalg.det(cd)) == 0:
        raise RecipeError(f"{path}: ASTROMETRY_WCS has a singular CD matrix")
    return cd, crpix


def set_celestial_wcs(header: fits.Header, cd: np.ndarray, crpix: tuple[float, float]) -> None:
    """The celestial WCS keywords of a projected pixel table, as the DRS writes them:
    CTYPE1/2 ``RA---TAN``/``DEC--TAN``, CUNIT1/2 ``deg``, CRPIX1/2 and the CD matrix [deg per
    field pixel] of the astrometric solution rotated by the position angle. The rows do not
    depend on them (they hold native spherical coordinates about RA/DEC); DRS
    muse_exp_combine and muse_scipost_make_cube refuse a table without them
    (``Data not found: CTYPE1``, then ``Unsupported mode`` in muse_wcs_position_celestial).
    """
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CUNIT1"], header["CUNIT2"] = "deg", "deg"
    header["CRPIX1"], header["CRPIX2"] = float(crpix[0]), float(crpix[1])
    for i in range(2):
        for j in range(2):
            header[f"CD{i + 1}_{j + 1}"] = float(cd[i, j])


def project_to_sky(
    pt: PixTable,
    cd: np.ndarray,
    crpix: tuple[float, float],
    lambdaref: float = -1.0,
    where: str = "pixel table",
    chunk: int = 4_000_000,
    reference: bool = False,
) -> None:
    """Field pixels → ``projected (intermediate)`` coordinates about the header RA/DEC, in place.

    The work is done by the parallel kernel :func:`recipes.kernels.resample.project_rows`;
    ``reference=True`` runs the plain numpy version instead (tests compare the two).

    When ``lambdaref > 0`` the DAR correction of :func:`dar_offsets` is added to the
    tangent-plane offsets of every row and
    ``ESO DRS MUSE PIXTABLE DAR CORRECT`` records ``lambdaref``. Conventions in the
    module doc.
    """
    if pt.wcs_state != WCS_PIXEL:
        raise RecipeError(f"{where}: pixel table is already {pt.wcs_state}")
    try:
        ra0, dec0 = float(pt.header["RA"]), float(pt.header["DEC"])
    except (KeyError, TypeError, ValueError):
        raise RecipeError(f"{where}: header lacks a numeric RA/DEC pointing") from None
    posang = math.radians(float(pt.header.get("ESO INS DROT POSANG", 0.0)))
    cp, sp = math.cos(posang), math.sin(posang)
    # rotation of the intermediate coordinates by the position angle, then deg → rad
    m = np.array([[cp, sp], [-sp, cp]]) @ np.asarray(cd, dtype=np.float64) * (math.pi / 180.0)
    do_dar = lambdaref > 0
    if reference:  # plain numpy, chunks of float64 temporaries; the twin of the kernel below
        for s in range(0, pt.nrows, chunk):
            sel = slice(s, s + chunk)
            x = pt.xpos[sel].astype(np.float64) - crpix[0]
            y = pt.ypos[sel].astype(np.float64) - crpix[1]
            xi = m[0, 0] * x + m[0, 1] * y
            eta = m[1, 0] * x + m[1, 1] * y
            if do_dar:
                dxi, deta = dar_offsets(pt.lam[sel], lambdaref, pt.header, where)
                xi += dxi / ARCSEC_PER_RAD
                eta += deta / ARCSEC_PER_RAD
            pt.columns["xpos"][sel] = np.arctan2(xi, -eta)
            pt.columns["ypos"][sel] = -np.arctan(np.hypot(xi, eta))
    elif pt.nrows:
        # DAR on a 0.01 Å grid, interpolated per row by the kernel: the shift is smooth
        # (|d²ΔR/dλ²| < 1e-6 ″/Å²), so the interpolation error (< 1e-11″) is far below the
        # float32 resolution of the positions
        lo = hi = 0.0
        grid_xi = grid_eta = np.zeros(0)
        if do_dar:
            lo, hi = float(pt.lam.min()), float(pt.lam.max())
            grid = lo + DAR_GRID_STEP * np.arange(int(math.ceil((hi - lo) / DAR_GRID_STEP)) + 2)
            grid_xi, grid_eta = (a / ARCSEC_PER_RAD for a in dar_offsets(grid, lambdaref, pt.header, where))
        project_rows(pt.xpos, pt.ypos, pt.lam, m, float(crpix[0]), float(crpix[1]), lo, DAR_GRID_STEP,
                     np.ascontiguousarray(grid_xi), np.ascontiguousarray(grid_eta), pt.xpos, pt.ypos)  # fmt: skip
    set_wcs_state(pt.header, WCS_PROJECTED, (ra0, dec0))
    set_celestial_wcs(pt.header, np.array([[cp, sp], [-sp, cp]]) @ np.asarray(cd, dtype=np.float64), crpix)
    pt.units["xpos"] = pt.units["ypos"] = "rad"
    if do_dar:
        pt.header[hkey(pkey("DAR CORRECT"))] = (float(lambdaref), "[Angstrom] DAR reference wavelength")
    pt.update_limits()
