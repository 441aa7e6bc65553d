"""The gnomonic (TAN) projection in the two forms the pipeline uses (FITS paper II).

* cube grids (:class:`recipes.algorithms.cube.CubeGrid`): intermediate world coordinates
  (ξ, η) [deg] of (RA, Dec) [deg] about a reference (:func:`tan_project`,
  :func:`tan_deproject`);
* projected pixel tables (``ESO DRS MUSE PIXTABLE WCS = 'projected (intermediate)'``):
  native spherical coordinates with φp = 180°, stored as xpos = φ, ypos = θ − π/2 [rad]
  about the header RA/DEC (:func:`native_to_celestial`, :func:`celestial_to_native`).

All in float64; angles in degrees unless a name says rad.
"""

from __future__ import annotations

import numpy as np


def tan_project(ra, dec, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic projection: intermediate world coordinates (ξ, η) [deg] of (RA, Dec) [deg]."""
    a = np.deg2rad(np.asarray(ra, dtype=np.float64) - ra0)
    d = np.deg2rad(np.asarray(dec, dtype=np.float64))
    d0 = np.deg2rad(dec0)
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a)
    xi = np.cos(d) * np.sin(a) / cosc
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a)) / cosc
    return np.rad2deg(xi), np.rad2deg(eta)


def tan_deproject(xi, eta, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse gnomonic projection: (RA, Dec) [deg] of intermediate coordinates [deg]."""
    x = np.deg2rad(np.asarray(xi, dtype=np.float64))
    y = np.deg2rad(np.asarray(eta, dtype=np.float64))
    d0 = np.deg2rad(dec0)
    rho = np.hypot(x, y)
    c = np.arctan(rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(rho > 0, y * np.sin(c) / np.where(rho > 0, rho, 1), 0.0)
    dec = np.arcsin(np.cos(c) * np.sin(d0) + ratio * np.cos(d0))
    ra = ra0 + np.rad2deg(np.arctan2(x * np.sin(c), rho * np.cos(d0) * np.cos(c) - y * np.sin(d0) * np.sin(c)))
    return ra, np.rad2deg(dec)


def native_to_celestial(phi, theta_minus_halfpi, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """(RA, Dec) [deg] from projected pixel-table positions (φ, θ − π/2) [rad]."""
    phi = np.asarray(phi, dtype=np.float64)
    tm = np.asarray(theta_minus_halfpi, dtype=np.float64)
    st, ct = np.cos(tm), -np.sin(tm)  # sin θ, cos θ of θ = tm + π/2, without rounding tm away
    dp = np.deg2rad(dec0)
    dra = np.arctan2(ct * np.sin(phi), st * np.cos(dp) + ct * np.sin(dp) * np.cos(phi))
    dec = np.arcsin(st * np.sin(dp) - ct * np.cos(dp) * np.cos(phi))
    return ra0 + np.rad2deg(dra), np.rad2deg(dec)


def celestial_to_native(ra, dec, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Projected pixel-table positions (φ, θ − π/2) [rad] of (RA, Dec) [deg] about (ra0, dec0)."""
    a = np.deg2rad(np.asarray(ra, dtype=np.float64) - ra0)
    d = np.deg2rad(np.asarray(dec, dtype=np.float64))
    dp = np.deg2rad(dec0)
    # via the tangent plane (x, y) [rad]: R = cot θ, x = R sin φ, y = −R cos φ; this keeps
    # full precision for θ near π/2, where arcsin would not
    cosc = np.sin(dp) * np.sin(d) + np.cos(dp) * np.cos(d) * np.cos(a)
    x = np.cos(d) * np.sin(a) / cosc
    y = (np.cos(dp) * np.sin(d) - np.sin(dp) * np.cos(d) * np.cos(a)) / cosc
    return np.arctan2(x, -y), -np.arctan(np.hypot(x, y))
