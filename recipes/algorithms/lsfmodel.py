"""The line spread function (LSF) as muse_lsf writes it: the profile grid, widths, and the
LSF_PROFILE product (method ``interpolate``), read by the sky modelling of scipost.

* :class:`ProfileGrid`: ``lsf_size`` offsets Δλ over [−lsf_range, +lsf_range] at
  ``lambda_size`` line-wavelength nodes;
* :func:`profile_fwhm`, :func:`box_gauss_fwhm`, :func:`gaussian_fwhm`: widths;
* :func:`cube_hdu`: one IFU's cube ``CHANnn.LSF_PROFILE`` with the DRS 2.8.7 WCS;
  :class:`LsfCube`, :func:`read_lsf_profile` and :func:`evaluate_lsf`: the product read back.

The profile is measured from arc frames by :mod:`recipes.algorithms.lsffit`.

**What the profile is.** Arc pixels integrate the light over their width in λ (≈ 1.25 Å
along y), so the samples describe the LSF convolved with that pixel box, expressed per Å:
a line of flux F centred at λ_line puts ``F · dλ_pix · P(λ_pix − λ_line)`` into a pixel
of the same CCD whose centre is at λ_pix. The DRS ``interpolate`` method likewise
regresses pixel values, and this is what a pixel-table sky model needs. Its FWHM is that
of the optical LSF convolved with the pixel width (Gaussian of FWHM 2.5 Å, 1.25 Å pixels:
2.648 Å); :func:`box_gauss_fwhm` gives that width and :func:`gaussian_fwhm` takes the
pixel back out for a Gaussian-like LSF. ``∫ P dΔλ = 1`` by construction (the flux
normalisation; not forced afterwards).

Units: wavelengths and offsets in Å (air), profile values in 1/Å. Coordinates of the
polynomials: trimmed-CCD FITS 1-based (pixel centres at integers); arrays 0-based [y, x].
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.base import RecipeError
from recipes.io import chan_name

#: Wavelength range of the LSF nodes: the nominal MUSE range (kMuseNominalLambdaMin/Max),
#: as the DRS 2.8.7 writes it (CRVAL2 = 4650, CD2_2 = 160.34 Å for lambda_size = 30),
#: whatever the CCD covers; nodes beyond the lines used repeat the nearest profile.
NODES_LAMBDA_RANGE = (4650.0, 9300.0)


@dataclass(frozen=True)
class ProfileGrid:
    """The sampling of LSF_PROFILE: offsets ``dlam`` (Å, lsf_size values from −lsf_range
    to +lsf_range) and wavelength nodes ``lam`` (Å, lambda_size values)."""

    dlam: np.ndarray
    lam: np.ndarray

    @classmethod
    def make(cls, lsf_range: float, lsf_size: int, lambda_size: int,
             lam_range: tuple[float, float] = NODES_LAMBDA_RANGE) -> ProfileGrid:  # fmt: skip
        """``lsf_size`` offsets over ±``lsf_range`` and ``lambda_size`` nodes over ``lam_range``."""
        return cls(np.linspace(-lsf_range, lsf_range, lsf_size), np.linspace(*lam_range, lambda_size))


# --------------------------------------------------------------------------------------
# Widths


def profile_fwhm(dlam: np.ndarray, profile: np.ndarray) -> float:
    """Full width at half maximum (Å) of a sampled profile, with linear interpolation of
    the half-maximum crossings on either side of the peak; NaN if a side never drops
    below half."""
    profile = np.asarray(profile, dtype=np.float64)
    k = int(np.argmax(profile))
    half = 0.5 * profile[k]
    if not half > 0:
        return float("nan")
    below_left = np.flatnonzero(profile[:k] < half)
    below_right = np.flatnonzero(profile[k:] < half)
    if below_left.size == 0 or below_right.size == 0:
        return float("nan")
    i = below_left[-1]  # profile[i] < half <= profile[i + 1]
    xl = dlam[i] + (half - profile[i]) / (profile[i + 1] - profile[i]) * (dlam[i + 1] - dlam[i])
    j = k + below_right[0]  # profile[j - 1] >= half > profile[j]
    xr = dlam[j - 1] + (profile[j - 1] - half) / (profile[j - 1] - profile[j]) * (dlam[j] - dlam[j - 1])
    return float(xr - xl)


_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def box_gauss_fwhm(fwhm: float, width: float) -> float:
    """FWHM (Å) of a Gaussian of ``fwhm`` (Å) convolved with a box of ``width`` (Å): the
    width a pixel-sampled profile shows (exact, by root finding on the analytic profile)."""
    from scipy.optimize import brentq
    from scipy.special import ndtr

    if width <= 0:
        return float(fwhm)
    sig = fwhm / _FWHM_PER_SIGMA

    def shape(d: float) -> float:
        return float(ndtr((d + width / 2) / sig) - ndtr((d - width / 2) / sig))

    half = 0.5 * shape(0.0)
    return 2.0 * brentq(lambda d: shape(d) - half, 0.0, fwhm + width)


def gaussian_fwhm(fwhm_measured: float, width: float) -> float:
    """The FWHM (Å) of the Gaussian LSF that, integrated over pixels of ``width`` Å, shows
    ``fwhm_measured`` (inverse of :func:`box_gauss_fwhm`); NaN when ``fwhm_measured`` is
    not wider than such a pixel can explain. Meaningful for Gaussian-like LSFs only."""
    from scipy.optimize import brentq

    if not np.isfinite(fwhm_measured) or box_gauss_fwhm(1e-3, width) >= fwhm_measured:
        return float("nan")
    return float(brentq(lambda f: box_gauss_fwhm(f, width) - fwhm_measured, 1e-3, fwhm_measured))


# --------------------------------------------------------------------------------------
# The LSF_PROFILE product (method=interpolate)

#: Extension name of one IFU's cube in the merged file (recipes.md §4.4).
EXTNAME_SUFFIX = ".LSF_PROFILE"


def cube_header(grid: ProfileGrid) -> fits.Header:
    """WCS of an LSF cube as the DRS 2.8.7 writes it: ``WCSAXES = 2``, axis 1 = Δλ
    (``CTYPE1 = 'PARAM'``), axis 2 = line wavelength (``'AWAV'``), linear CRPIX/CRVAL/CD
    in Angstrom; the third FITS axis (no WCS) is the CCD slice 1..48."""
    header = fits.Header()
    dl = float(grid.dlam[1] - grid.dlam[0]) if grid.dlam.size > 1 else 1.0
    dn = float(grid.lam[1] - grid.lam[0]) if grid.lam.size > 1 else 1.0
    header["WCSAXES"] = 2
    header["CD1_1"] = (dl, "[Angstrom] step of the wavelength offset")
    header["CD1_2"] = 0.0
    header["CD2_1"] = 0.0
    header["CD2_2"] = (dn, "[Angstrom] step of the line wavelength")
    header["CRPIX1"] = 1.0
    header["CRPIX2"] = 1.0
    header["CRVAL1"] = (float(grid.dlam[0]), "[Angstrom] first wavelength offset")
    header["CRVAL2"] = (float(grid.lam[0]), "[Angstrom] first line wavelength (air)")
    header["CTYPE1"] = ("PARAM", "wavelength offset from the line")
    header["CTYPE2"] = ("AWAV", "line wavelength (air)")
    header["CUNIT1"] = "Angstrom"
    header["CUNIT2"] = "Angstrom"
    header["BUNIT"] = ("Angstrom**-1", "profile per unit wavelength offset")
    return header


def cube_hdu(ifu: int, cube: np.ndarray, grid: ProfileGrid, extra: fits.Header | None = None) -> fits.ImageHDU:
    """The ``CHANnn.LSF_PROFILE`` extension of the merged file: float32
    ``cube[slice, node, offset]`` (the DRS single-IFU file names it ``LSF_PROFILE``)."""
    header = cube_header(grid)
    if extra is not None:
        for card in extra.cards:
            header.append(card, end=True)
    header["EXTNAME"] = chan_name(ifu) + EXTNAME_SUFFIX
    return fits.ImageHDU(np.ascontiguousarray(cube, dtype=np.float32), header=header)


@dataclass
class LsfCube:
    """The LSF of one IFU: ``data[slice − 1, node, offset]`` (1/Å) on ``grid``; ``header``
    holds the WCS and the QC of the extension."""

    ifu: int
    data: np.ndarray
    grid: ProfileGrid
    header: fits.Header


def _axis(header: fits.Header, n: int, size: int, where: str) -> np.ndarray:
    try:
        step = float(header.get(f"CD{n}_{n}", header.get(f"CDELT{n}")))
        start = float(header["CRVAL{}".format(n)]) - (float(header.get(f"CRPIX{n}", 1.0)) - 1.0) * step
    except (KeyError, TypeError, ValueError):
        raise RecipeError(f"{where}: LSF_PROFILE extension lacks a linear WCS on axis {n}") from None
    return start + step * np.arange(size)


def read_lsf_profile(path: Path) -> dict[int, LsfCube]:
    """All IFU cubes of an LSF_PROFILE file: merged ``CHANnn.LSF_PROFILE`` extensions, or
    a single-IFU file whose primary ``EXTNAME`` is ``CHANnn`` with the cube in the first
    image HDU. Returns ``{ifu: LsfCube}``; RecipeError naming the file otherwise."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"{path}: LSF_PROFILE does not exist")
    pattern = re.compile(r"^CHAN(\d\d)" + re.escape(EXTNAME_SUFFIX) + "$")
    cubes: dict[int, LsfCube] = {}
    try:
        with fits.open(path) as hdul:
            for hdu in hdul:
                match = pattern.match(str(hdu.header.get("EXTNAME", "")).strip())
                single = re.match(r"^CHAN(\d\d)$", str(hdul[0].header.get("EXTNAME", "")).strip())
                if match is None and not (single and hdu.data is not None and hdu.header.get("NAXIS") == 3):
                    continue
                ifu = int((match or single).group(1))
                data = np.array(hdu.data, dtype=np.float64)
                where = f"{path}[{hdu.header.get('EXTNAME', ifu)}]"
                if data.ndim != 3:
                    raise RecipeError(f"{where}: LSF cube is not 3-D")
                grid = ProfileGrid(_axis(hdu.header, 1, data.shape[2], where),
                                   _axis(hdu.header, 2, data.shape[1], where))  # fmt: skip
                cubes[ifu] = LsfCube(ifu=ifu, data=data, grid=grid, header=hdu.header.copy())
    except (OSError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RecipeError(f"{path}: cannot read LSF_PROFILE ({reason})") from None
    if not cubes:
        raise RecipeError(f"{path}: no CHANnn{EXTNAME_SUFFIX} extension (not an interpolate LSF_PROFILE)")
    return cubes


def evaluate_lsf(profile: dict[int, LsfCube], ifu: int, slice_no: int, lam, dlam) -> np.ndarray:
    """The LSF (1/Å) of CCD slice ``slice_no`` (1..48) of ``ifu`` at line wavelength ``lam``
    and offset ``dlam`` = λ − λ_line (Å); ``lam`` and ``dlam`` broadcast.

    Bilinear interpolation in the cube; 0 beyond the sampled offsets; wavelengths beyond
    the nodes take the nearest node. ``profile`` is what :func:`read_lsf_profile` returns.
    A pixel of width w (Å) centred at λ_pix receives ``F · w · evaluate_lsf(..., λ_pix − λ_line)``
    of a line of flux F (the profile includes the pixel integration, see the module doc).
    """
    try:
        cube = profile[ifu]
    except KeyError:
        raise RecipeError(f"LSF_PROFILE has no IFU {ifu} (has {sorted(profile)})") from None
    if not 1 <= slice_no <= cube.data.shape[0]:
        raise RecipeError(f"LSF_PROFILE of IFU {ifu} has no slice {slice_no} (1..{cube.data.shape[0]})")
    image = cube.data[slice_no - 1]
    lam, dlam = np.broadcast_arrays(np.asarray(lam, dtype=np.float64), np.asarray(dlam, dtype=np.float64))
    nodes, offsets = cube.grid.lam, cube.grid.dlam
    if nodes.size > 1:
        fn = np.clip((lam - nodes[0]) / (nodes[1] - nodes[0]), 0.0, nodes.size - 1.0)
    else:
        fn = np.zeros(lam.shape)
    fo = (dlam - offsets[0]) / (offsets[1] - offsets[0])
    outside = (fo < 0) | (fo > offsets.size - 1)
    fo = np.clip(fo, 0.0, offsets.size - 1.0)
    n0 = np.minimum(fn.astype(int), max(nodes.size - 2, 0))
    o0 = np.minimum(fo.astype(int), offsets.size - 2)
    an, ao = fn - n0, fo - o0
    n1 = np.minimum(n0 + 1, nodes.size - 1)
    value = ((1 - an) * ((1 - ao) * image[n0, o0] + ao * image[n0, o0 + 1])
             + an * ((1 - ao) * image[n1, o0] + ao * image[n1, o0 + 1]))  # fmt: skip
    return np.where(outside, 0.0, value)
