"""Radial-velocity correction of a pixel table (muse_scipost ``rvcorr``, recipes.md §3.9).

:func:`rv_correction` is the observer's velocity towards the target [km/s] in the chosen
frame (``bary``, ``helio``, ``geo``; astropy, no network access); :func:`apply_rvcorr`
scales every wavelength by (1 + v/c). Wavelengths in Å (air), velocities in km/s.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from recipes.base import RecipeError
from recipes.io import hkey
from recipes.algorithms.pixtable import PixTable, pkey

C_KMS = 299792.458


def rv_correction(header: fits.Header, kind: str, where: str = "pixel table") -> float:
    """Observer velocity correction [km/s] (``bary``, ``helio``, ``geo``; ``none`` → 0).

    Positive means the observed wavelengths are multiplied by (1 + v/c) to reach the
    chosen frame. ``geo`` is the observatory's rotation only. Uses RA/DEC, MJD-OBS and
    the ``ESO TEL GEO*`` site; no network access (IERS auto-download off).
    """
    if kind == "none":
        return 0.0
    from astropy import units as u
    from astropy.coordinates import EarthLocation, SkyCoord
    from astropy.time import Time
    from astropy.utils import iers

    try:
        ra, dec = float(header["RA"]), float(header["DEC"])
        mjd = float(header["MJD-OBS"])
    except (KeyError, TypeError, ValueError):
        raise RecipeError(f"{where}: header lacks RA/DEC/MJD-OBS for rvcorr={kind}") from None
    site = EarthLocation.from_geodetic(
        float(header.get("ESO TEL GEOLON", -70.404167)) * u.deg,
        float(header.get("ESO TEL GEOLAT", -24.627222)) * u.deg,
        float(header.get("ESO TEL GEOELEV", 2635.0)) * u.m,
    )
    exptime = float(header.get("EXPTIME", 0.0) or 0.0)
    with iers.conf.set_temp("auto_download", False), iers.conf.set_temp("auto_max_age", None):
        t = Time(mjd + 0.5 * exptime / 86400.0, format="mjd", scale="utc")
        coord = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
        if kind == "geo":
            # the observatory's rotation about the Earth's axis, projected on the target
            _, vel = site.get_gcrs_posvel(t)
            los = coord.gcrs.cartesian.xyz.value
            return float(np.dot(vel.xyz.to_value(u.km / u.s), los / np.linalg.norm(los)))
        frame = {"bary": "barycentric", "helio": "heliocentric"}[kind]
        return float(coord.radial_velocity_correction(kind=frame, obstime=t, location=site).to_value(u.km / u.s))


def apply_rvcorr(pt: PixTable, velocity_kms: float) -> None:
    """λ ← λ·(1 + v/c) in place; records ``ESO DRS MUSE PIXTABLE RVCORR`` [km/s]."""
    if velocity_kms:
        pt.columns["lambda"] *= np.float32(1.0 + velocity_kms / C_KMS)
    pt.header[hkey(pkey("RVCORR"))] = (float(velocity_kms), "[km/s] radial-velocity correction applied")
