"""The true scene as a datacube (truth for the scipost/exp_combine tests, mini profile)."""

from __future__ import annotations

import math

import numpy as np
from astropy.io import fits
from scipy.special import erf

from recipes.algorithms.instrument import NOMINAL_DISPERSION, SPAXEL_ARCSEC

from . import sources as src


def scene_cube(scene: src.Scene, ra0: float, dec0: float, half_size: int,
               lam_range: tuple[float, float], seeing: float, lsf_fwhm: float) -> fits.HDUList:
    """Cube of ``scene`` (stars + nebula; no sky, no atmosphere) around (ra0, dec0).

    Grid: (2·half_size+1)² spaxels of 0.2", north up, east left, centred on the target
    reference; planes of 1.25 Å from ``lam_range[0]``. Stars are Moffat profiles of FWHM
    ``seeing``; nebular lines are Gaussians of FWHM ``lsf_fwhm`` integrated over each plane.
    Unit 1e-20 erg/s/cm²/Å per spaxel.
    """
    n = 2 * half_size + 1
    lam = np.arange(lam_range[0], lam_range[1], NOMINAL_DISPERSION)
    idx = np.arange(n) - half_size
    xi = -idx[None, :] * SPAXEL_ARCSEC * np.ones((n, 1))  # x grows to the west
    eta = idx[:, None] * SPAXEL_ARCSEC * np.ones((1, n))
    area = SPAXEL_ARCSEC**2
    cube = np.zeros((lam.size, n, n), dtype=np.float32)
    for s in scene.stars:
        img = src.moffat((xi - s.xi) ** 2 + (eta - s.eta) ** 2, seeing) * area
        cube += (s.spectrum(lam)[:, None, None] * img[None]).astype(np.float32)
    neb = scene.nebula.brightness(xi, eta) * scene.nebula.surface * area
    sig = lsf_fwhm / 2.3548
    lo, hi = lam - NOMINAL_DISPERSION / 2, lam + NOMINAL_DISPERSION / 2
    spec = np.zeros(lam.size)
    for lam_l, ratio in scene.nebula.lines.values():
        frac = 0.5 * (erf((hi - lam_l) / (math.sqrt(2) * sig)) - erf((lo - lam_l) / (math.sqrt(2) * sig)))
        spec += ratio * frac / NOMINAL_DISPERSION
    cube += (spec[:, None, None] * neb[None]).astype(np.float32)
    cube *= np.float32(1e20)
    h = fits.Header()
    h["BUNIT"] = "10**(-20)*erg/s/cm**2/Angstrom"
    h["CTYPE1"], h["CTYPE2"], h["CTYPE3"] = "RA---TAN", "DEC--TAN", "AWAV"
    h["CUNIT1"], h["CUNIT2"], h["CUNIT3"] = "deg", "deg", "Angstrom"
    h["CRPIX1"] = h["CRPIX2"] = half_size + 1.0
    h["CRPIX3"] = 1.0
    h["CRVAL1"], h["CRVAL2"], h["CRVAL3"] = ra0, dec0, float(lam[0])
    h["CD1_1"] = -SPAXEL_ARCSEC / 3600.0
    h["CD2_2"] = SPAXEL_ARCSEC / 3600.0
    h["CD1_2"] = h["CD2_1"] = 0.0
    h["CD3_3"] = NOMINAL_DISPERSION
    h["CD1_3"] = h["CD2_3"] = h["CD3_1"] = h["CD3_2"] = 0.0
    h["SEEING"] = (seeing, "[arcsec] Moffat FWHM of the stars")
    h["LSFFWHM"] = (lsf_fwhm, "[Angstrom] FWHM of the nebular lines")
    return fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(cube, header=h, name="DATA")])
