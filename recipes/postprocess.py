"""Pure pixel-table steps of muse_scipost (recipes.md §3.9): one exposure, in order.

* :func:`merge_ifus` — the IFU tables of one exposure → one table (same exposure, same
  instrument mode, each IFU once); each IFU's ``PIXTABLE_FLAT_FIELD`` spectrum is
  multiplied back into its rows first (:func:`apply_flat_field_spectrum`);
* :func:`flux_calibrate` — count → 1e-20 erg/s/cm²/Å with STD_RESPONSE, EXTINCT_TABLE
  and STD_TELLURIC (:func:`read_response`, :func:`read_extinction`, :func:`read_telluric`);
* :func:`dar_offsets` — differential atmospheric refraction (Filippenko 1982 refractive
  index, plane-parallel atmosphere), applied during :func:`project_to_sky`;
* :func:`rv_correction` / :func:`apply_rvcorr` — barycentric/heliocentric/geocentric λ scaling;
* :func:`project_to_sky` — field pixels → projected (gnomonic) coordinates with
  ASTROMETRY_WCS and the exposure's ``RA``/``DEC``/``ESO INS DROT POSANG``.

Conventions
-----------
Wavelengths in Å (air); angles in degrees unless a name says ``rad``; arrays 0-based.

*Flat-field spectrum.* muse_scibasic divides every pixel by the normalised master flat,
which also divides out the lamp spectrum; the table carries the mean flat spectrum per
1.25 Å (``PIXTABLE_FLAT_FIELD``). :func:`apply_flat_field_spectrum` **multiplies** each row
by that spectrum (linear interpolation in λ), so that the data become counts as an average
pixel of that IFU would record them, and sets ``ESO DRS MUSE PIXTABLE FFSPEC = T``.
muse_standard must do the same before it derives STD_RESPONSE, so that the response
matches the data it is applied to.

*Flux calibration* (the DRS formula, recipes.md §3.9 step 3)::

    f [1e-20 erg/s/cm²/Å] = count / EXPTIME / 1.25 Å / 10**(0.4 R(λ)) * 10**(0.4 k(λ) X) / T(λ) * 1e20

with R the STD_RESPONSE ``response`` [mag] (so ``10**(0.4 R)`` is the detected
count/s/Å per erg/s/cm²/Å), k the extinction [mag/airmass], X the mean airmass of the
exposure (``ESO TEL AIRM START/END``) and T the STD_TELLURIC ``ftelluric`` scaled to X
(1 outside the table): :func:`recipes.fluxcal.apply_response`, shared with muse_standard.
The variance gets the square of the factor.

*Astrometry.* With ASTROMETRY_WCS CD matrix ``C`` and reference pixel ``(p1, p2)``, a
row at field pixel (x, y) has intermediate coordinates ``(u, v) = C · (x − p1, y − p2)``
[deg]; the position angle P (``ESO INS DROT POSANG``, the field's +y axis from north
towards east) turns them into tangent-plane offsets east/north of the pointing::

    ξ = u cos P + v sin P,   η = −u sin P + v cos P

(at P = 0 and the nominal C = diag(−0.2″, +0.2″) field +x points west, +y north). The
table is then stored ``projected (intermediate)`` about the header ``RA``/``DEC``
(:mod:`recipes.pixtable`): xpos = φ = atan2(ξ, −η), ypos = θ − π/2 = −atan(√(ξ²+η²)) [rad].

*OFFSET_LIST* (recipes.md §4.8): ``RA_OFFSET``/``DEC_OFFSET`` are in degrees of RA and
Dec (an RA difference, **not** multiplied by cos δ) and are **subtracted** from the
exposure's reference: RA_corr = RA − RA_OFFSET, DEC_corr = DEC − DEC_OFFSET
(:func:`recipes.make_cube.apply_offsets`, shared with muse_scipost_make_cube and
muse_exp_combine). A pointing that is truly at RA_true = RA + δ is thus corrected by
RA_OFFSET = −δ.

*DAR.* The image at λ is displaced towards the zenith by ΔR(λ) = R(λ) − R(λref),
R = 206265″·(n(λ) − 1)·tan z; the correction moves every row by −ΔR along the
parallactic angle q (zenith direction, from north through east): Δξ = −ΔR sin q,
Δη = −ΔR cos q.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy import ndimage

from . import fluxcal
from .base import RecipeError
from .io import hkey
from .kernels.resample import project_rows
from .pixtable import WCS_PIXEL, WCS_PROJECTED, PixTable, pkey, set_wcs_state, unpack_origin

logger = logging.getLogger(__name__)

#: kMuseSpectralSamplingA: the pixel width in λ the DRS flux calibration divides by.
SPECTRAL_SAMPLING = 1.25
#: Wavelength step [Å] of the grid on which project_to_sky evaluates the DAR shift.
DAR_GRID_STEP = 0.01
FLUX_UNIT = "10**(-20)*erg/s/cm**2/Angstrom"
STAT_UNIT = "(10**(-20)*erg/s/cm**2/Angstrom)**2"
ARCSEC_PER_RAD = 206264.80624709636
#: Default astrometric solutions (CD in deg/pixel) when no ASTROMETRY_WCS is given.
DEFAULT_SPAXEL_ARCSEC = {"WFM": 0.2, "NFM": 0.025}
C_KMS = 299792.458


# --------------------------------------------------------------------------------------
# merging the IFUs of one exposure
# --------------------------------------------------------------------------------------


def apply_flat_field_spectrum(pt: PixTable, where: str = "pixel table") -> bool:
    """Multiply the rows by the table's PIXTABLE_FLAT_FIELD spectrum (see module doc).

    Returns False (and leaves the table alone) when there is no such extension or it was
    already applied (``... PIXTABLE FFSPEC`` true).
    """
    if pt.flat_field is None or bool(pt.header.get(pkey("FFSPEC"), False)):
        return False
    table = pt.flat_field
    names = {c.lower(): c for c in table.colnames}
    if "lambda" not in names or "data" not in names or len(table) < 2:
        raise RecipeError(f"{where}: PIXTABLE_FLAT_FIELD needs columns lambda and data (2+ rows)")
    lam = np.asarray(table[names["lambda"]], dtype=np.float64)
    spec = np.asarray(table[names["data"]], dtype=np.float64)
    order = np.argsort(lam)
    factor = np.interp(pt.lam, lam[order], spec[order]).astype(np.float32)
    pt.columns["data"] *= factor
    pt.columns["stat"] *= factor * factor
    pt.header[hkey(pkey("FFSPEC"))] = (True, "data multiplied by the flat-field spectrum")
    return True


def merge_ifus(tables: Sequence[PixTable], names: Sequence[str] | None = None) -> PixTable:
    """One exposure's IFU tables → one table (pixel coordinates, rows in input order).

    Checks that all share DATE-OBS and ``ESO INS MODE`` and that no IFU appears twice;
    applies each IFU's flat-field spectrum before concatenating and records
    ``ESO DRS MUSE PIXTABLE MERGED`` (number of IFUs). RecipeError naming the file at fault.
    """
    if not tables:
        raise RecipeError("no pixel table to merge")
    names = list(names) if names is not None else [f"table {i + 1}" for i in range(len(tables))]
    first = tables[0].header
    seen: dict[int, str] = {}
    for pt, name in zip(tables, names):
        for key in ("DATE-OBS", "ESO INS MODE"):
            if str(pt.header.get(key, "")).strip() != str(first.get(key, "")).strip():
                raise RecipeError(
                    f"{name}: {key} {pt.header.get(key)!r} differs from {first.get(key)!r} of {names[0]}"
                )
        if pt.wcs_state != WCS_PIXEL:
            raise RecipeError(f"{name}: pixel table is already {pt.wcs_state}, expected field pixels")
        if pt.nrows:
            ifus = np.flatnonzero(np.bincount(unpack_origin(pt.origin)[0], minlength=32))  # sorted, no sort
            for ifu in ifus.tolist():
                if ifu in seen:
                    raise RecipeError(f"{name}: IFU {ifu} also comes from {seen[ifu]}")
                seen[ifu] = name
        apply_flat_field_spectrum(pt, name)
    merged = PixTable.concatenate(list(tables), consume=True)
    merged.flat_field = None  # applied per IFU; a merged table has no single spectrum
    merged.header[hkey(pkey("MERGED"))] = (len(tables), "number of merged IFUs")
    merged.header[hkey(pkey("FFSPEC"))] = (True, "data multiplied by the flat-field spectrum")
    for key in [k for k in merged.header if k.startswith(pkey("EXP"))]:
        if key.endswith(("FIRST", "LAST")):
            del merged.header[key]
    merged.header[hkey(pkey("EXP1", "FIRST"))] = 0
    merged.header[hkey(pkey("EXP1", "LAST"))] = merged.nrows - 1
    return merged


def check_mode(pt: PixTable | fits.Header, mode: str | None, where: str) -> str:
    """The ``ESO INS MODE`` of a table (or of its primary header); RecipeError when it
    differs from ``mode``."""
    header = pt.header if isinstance(pt, PixTable) else pt
    this = str(header.get("ESO INS MODE", "")).strip()
    if not this:
        raise RecipeError(f"{where}: pixel table header lacks ESO INS MODE")
    if mode is not None and this != mode:
        raise RecipeError(f"{where}: pixel table from instrument mode {this}, the others are {mode}")
    return this


# --------------------------------------------------------------------------------------
# flux-calibration tables
# --------------------------------------------------------------------------------------


def read_response(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """STD_RESPONSE (recipes.md §4.9): ``lambda`` [Å], ``response`` [mag] (:mod:`recipes.fluxcal`)."""
    lam, resp, _ = fluxcal.read_response(Path(path))
    return lam, resp


def read_telluric(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """STD_TELLURIC: ``lambda`` [Å], ``ftelluric`` (transmission at airmass 1, ≤ 1)."""
    lam, ftell, _ = fluxcal.read_telluric(Path(path))
    return lam, ftell


def read_extinction(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """EXTINCT_TABLE: ``lambda`` [Å], ``extinction`` [mag/airmass]."""
    return fluxcal.read_extinction(Path(path))


def header_airmass(header: fits.Header, where: str = "pixel table") -> float:
    """Mean of ``ESO TEL AIRM START/END`` (RecipeError when neither is there)."""
    values = [float(header[k]) for k in ("ESO TEL AIRM START", "ESO TEL AIRM END") if k in header]
    if not values:
        raise RecipeError(f"{where}: header lacks ESO TEL AIRM START/END (airmass)")
    return float(np.mean(values))


def flux_calibrate(
    pt: PixTable,
    response: tuple[np.ndarray, np.ndarray],
    extinction: tuple[np.ndarray, np.ndarray],
    telluric: tuple[np.ndarray, np.ndarray] | None = None,
    where: str = "pixel table",
    chunk: int = 4_000_000,
) -> None:
    """Convert ``pt`` in place from count to 1e-20 erg/s/cm²/Å (formula in the module doc).

    Rows outside the response's wavelength range get the nearest response value (as
    :func:`numpy.interp`); the telluric correction is 1 outside its table.
    """
    if bool(pt.header.get(pkey("FLUXCAL"), False)):
        raise RecipeError(f"{where}: pixel table is already flux calibrated")
    try:
        exptime = float(pt.header["EXPTIME"])
    except (KeyError, TypeError, ValueError):
        raise RecipeError(f"{where}: header lacks a numeric EXPTIME") from None
    if exptime <= 0:
        raise RecipeError(f"{where}: EXPTIME {exptime} must be positive for flux calibration")
    airmass = header_airmass(pt.header, where)
    for s in range(0, pt.nrows, chunk):  # chunks: the factor is computed in float64
        sel = slice(s, s + chunk)
        try:
            data, stat = fluxcal.apply_response(pt.lam[sel], pt.data[sel], pt.stat[sel], exptime, airmass, response,
                                                extinction, telluric)  # fmt: skip
        except RecipeError as exc:
            raise RecipeError(f"{where}: {exc}") from None
        pt.columns["data"][sel], pt.columns["stat"][sel] = data, stat
    pt.units["data"], pt.units["stat"] = FLUX_UNIT, STAT_UNIT
    pt.header[hkey(pkey("FLUXCAL"))] = (True, "flux calibrated")


# --------------------------------------------------------------------------------------
# differential atmospheric refraction
# --------------------------------------------------------------------------------------


def refractive_index_minus_one(lam, temperature_c: float, pressure_hpa: float, humidity_pct: float) -> np.ndarray:
    """(n − 1) of moist air at air wavelength ``lam`` [Å] (Filippenko 1982, PASP 94, 715).

    Edlén's dry-air formula at 15 °C, 760 mmHg, scaled to temperature and pressure, minus
    the water-vapour term (partial pressure from the relative humidity, Magnus formula).
    """
    sigma2 = (1e4 / np.asarray(lam, dtype=np.float64)) ** 2  # (1/λ[µm])²
    p_mmhg = pressure_hpa * 0.750061683
    t = temperature_c
    n15 = 64.328 + 29498.1 / (146.0 - sigma2) + 255.4 / (41.0 - sigma2)
    ntp = n15 * p_mmhg * (1.0 + (1.049 - 0.0157 * t) * 1e-6 * p_mmhg) / (720.883 * (1.0 + 0.003661 * t))
    e_hpa = humidity_pct / 100.0 * 6.1094 * math.exp(17.625 * t / (t + 243.04))
    f_mmhg = e_hpa * 0.750061683
    water = (0.0624 - 0.000680 * sigma2) / (1.0 + 0.003661 * t) * f_mmhg
    return (ntp - water) * 1e-6


def parallactic_angle(header: fits.Header, where: str = "pixel table") -> float:
    """Parallactic angle [deg] (zenith direction from north through east) of the pointing.

    ``ESO TEL PARANG START/END`` when present, else from RA, DEC, LST [s] and
    ``ESO TEL GEOLAT``.
    """
    values = [float(header[k]) for k in ("ESO TEL PARANG START", "ESO TEL PARANG END") if k in header]
    if values:
        return float(np.mean(values))
    try:
        ra, dec = float(header["RA"]), float(header["DEC"])
        lst = float(header["LST"]) / 240.0  # s → deg
        lat = float(header.get("ESO TEL GEOLAT", -24.627222))
    except (KeyError, TypeError, ValueError):
        raise RecipeError(f"{where}: header lacks RA/DEC/LST (or ESO TEL PARANG) for the DAR correction") from None
    ha, d, phi = map(math.radians, (lst - ra, dec, lat))
    return math.degrees(math.atan2(math.sin(ha), math.tan(phi) * math.cos(d) - math.sin(d) * math.cos(ha)))


def dar_offsets(
    lam, lambdaref: float, header: fits.Header, where: str = "pixel table"
) -> tuple[np.ndarray, np.ndarray]:
    """DAR corrections (Δξ east, Δη north) [arcsec] to add to positions at ``lam`` [Å].

    Atmosphere from ``ESO TEL AMBI TEMP`` [°C], ``… RHUM`` [%], ``… PRES START/END``
    [hPa]; zenith distance from the airmass (sec z); direction from
    :func:`parallactic_angle`. Zero shift at ``lambdaref``.
    """
    temp = float(header.get("ESO TEL AMBI TEMP", 11.5))
    rhum = float(header.get("ESO TEL AMBI RHUM", 14.5))
    pres = [float(header[k]) for k in ("ESO TEL AMBI PRES START", "ESO TEL AMBI PRES END") if k in header]
    pressure = float(np.mean(pres)) if pres else 743.0
    airmass = header_airmass(header, where)
    tanz = math.sqrt(max(airmass * airmass - 1.0, 0.0))
    n = refractive_index_minus_one(lam, temp, pressure, rhum)
    nref = refractive_index_minus_one(np.array([lambdaref]), temp, pressure, rhum)[0]
    shift = ARCSEC_PER_RAD * (n - nref) * tanz  # towards the zenith [arcsec]
    q = math.radians(parallactic_angle(header, where))
    return -shift * math.sin(q), -shift * math.cos(q)


# --------------------------------------------------------------------------------------
# radial-velocity correction
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# astrometry
# --------------------------------------------------------------------------------------


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
    pt.units["xpos"] = pt.units["ypos"] = "rad"
    if do_dar:
        pt.header[hkey(pkey("DAR CORRECT"))] = (float(lambdaref), "[Angstrom] DAR reference wavelength")
    pt.update_limits()


# --------------------------------------------------------------------------------------
# empirical DAR check (darcheck)
# --------------------------------------------------------------------------------------


def tangent_offsets(pt: PixTable) -> tuple[np.ndarray, np.ndarray]:
    """Tangent-plane offsets (ξ east, η north) [rad] of a projected table's rows."""
    phi = pt.xpos.astype(np.float64)
    r = np.tan(-pt.ypos.astype(np.float64))
    return r * np.sin(phi), -r * np.cos(phi)


def _set_tangent(pt: PixTable, xi: np.ndarray, eta: np.ndarray) -> None:
    pt.columns["xpos"] = np.arctan2(xi, -eta).astype(np.float32)
    pt.columns["ypos"] = (-np.arctan(np.hypot(xi, eta))).astype(np.float32)


def centroid_drift(
    pt: PixTable, nbands: int = 8, radius_arcsec: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid (ξ, η) [arcsec] of the brightest source in ``nbands`` wavelength bands.

    The source is the brightest 0.2″ spaxel of the white image (a 3×3 box sum); each
    band's centroid uses the background-subtracted (band median) positive flux within
    ``radius_arcsec``. Returns (band centre λ [Å], ξ, η); NaN where a band has no flux.
    """
    if pt.wcs_state != WCS_PROJECTED:
        raise RecipeError("darcheck needs a projected pixel table")
    xi, eta = (a * ARCSEC_PER_RAD for a in tangent_offsets(pt))
    good = (pt.dq == 0) & np.isfinite(pt.data)
    ix = np.floor(xi / 0.2 + 0.5).astype(np.int64)
    iy = np.floor(eta / 0.2 + 0.5).astype(np.int64)
    x0, y0 = ix[good].min(), iy[good].min()
    nx, ny = ix[good].max() - x0 + 1, iy[good].max() - y0 + 1
    flat = (iy[good] - y0) * nx + (ix[good] - x0)
    total = np.bincount(flat, weights=pt.data[good].astype(np.float64), minlength=nx * ny)
    count = np.bincount(flat, minlength=nx * ny)
    with np.errstate(invalid="ignore", divide="ignore"):
        image = np.where(count > 0, total / np.maximum(count, 1), np.nan).reshape(ny, nx)
    padded = np.nan_to_num(np.pad(image, 1), nan=0.0)
    box = sum(padded[1 + dy : 1 + dy + ny, 1 + dx : 1 + dx + nx] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    py, px = np.unravel_index(int(np.argmax(box)), box.shape)
    cx, cy = (px + x0) * 0.2, (py + y0) * 0.2
    lam = pt.lam
    edges = np.linspace(float(lam[good].min()), float(lam[good].max()), nbands + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    out_x = np.full(nbands, np.nan)
    out_y = np.full(nbands, np.nan)
    near = good & ((xi - cx) ** 2 + (eta - cy) ** 2 < radius_arcsec**2)
    for b in range(nbands):
        band = good & (lam >= edges[b]) & (lam <= edges[b + 1])
        if not band.any():
            continue
        bg = float(np.median(pt.data[band]))
        sel = near & band
        w = np.clip(pt.data[sel].astype(np.float64) - bg, 0.0, None)
        if w.sum() > 0:
            out_x[b] = float(np.sum(w * xi[sel]) / w.sum())
            out_y[b] = float(np.sum(w * eta[sel]) / w.sum())
    return centres, out_x, out_y


def check_dar(pt: PixTable, correct: bool = False, order: int = 2) -> float:
    """``darcheck``: the maximum centroid drift [arcsec] of the brightest source with λ.

    Records ``ESO DRS MUSE PIXTABLE DAR CHECK`` (the drift); with ``correct`` a polynomial
    of ``order`` in λ fitted to the band centroids (relative to their mean) is removed
    from every row and the remaining drift is recorded as ``… DAR CORRECT RESIDUAL``.
    """
    lam, cx, cy = centroid_drift(pt)
    ok = np.isfinite(cx) & np.isfinite(cy)
    if ok.sum() < 3:
        raise RecipeError("darcheck: no source bright enough to measure the DAR drift")
    dx, dy = cx[ok] - cx[ok].mean(), cy[ok] - cy[ok].mean()
    drift = float(np.max(np.hypot(dx, dy)))
    pt.header[hkey(pkey("DAR CHECK"))] = (drift, "[arcsec] max centroid drift with wavelength")
    if correct:
        deg = min(order, int(ok.sum()) - 1)
        px = np.polyfit(lam[ok], dx, deg)
        py = np.polyfit(lam[ok], dy, deg)
        xi, eta = tangent_offsets(pt)
        lam_rows = pt.lam.astype(np.float64)
        xi -= np.polyval(px, lam_rows) / ARCSEC_PER_RAD
        eta -= np.polyval(py, lam_rows) / ARCSEC_PER_RAD
        _set_tangent(pt, xi, eta)
        lam2, cx2, cy2 = centroid_drift(pt)
        ok2 = np.isfinite(cx2) & np.isfinite(cy2)
        residual = float(np.max(np.hypot(cx2[ok2] - cx2[ok2].mean(), cy2[ok2] - cy2[ok2].mean())))
        pt.header[hkey(pkey("DAR CORRECT RESIDUAL"))] = (residual, "[arcsec] drift after the correction")
        pt.update_limits()
    return drift


# --------------------------------------------------------------------------------------
# slice autocalibration (autocalib)
# --------------------------------------------------------------------------------------

#: Wavelength bin [Å] of the slice autocalibration factors.
AUTOCAL_BIN = 250.0
#: A sky line window is where the sky spectrum exceeds its running median (over
#: AUTOCAL_MEDIAN_WIDTH Å) by this factor, widened by AUTOCAL_LINE_PAD Å on each side so
#: that it holds the whole line at every slice's LSF and wavelength sampling.
AUTOCAL_LINE_CONTRAST = 1.3
AUTOCAL_MEDIAN_WIDTH = 51.25
AUTOCAL_LINE_PAD = 3.75
#: Bin [Å] of the per-spaxel continuum that is subtracted under the line windows.
AUTOCAL_CONT_BIN = 40.0
#: Spaxel columns further than this many σ from their slice's weighted median are dropped.
AUTOCAL_CLIP = 4.0
#: A line whose field-wide mean ratio exceeds that of the other lines by more than
#: max(5 σ, this) is spatially variable emission (a nebula), not sky, and is dropped.
AUTOCAL_EXCESS = 0.01
_AUTOCAL_CHUNK = 8_000_000
_NXSLICE = 256  # xslice field of the origin word (8 bits)


def sky_line_windows(sky, sampling: float = SPECTRAL_SAMPLING) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) [Å] of the sky-line windows of the spectrum ``sky`` (a callable of λ with
    a ``lam`` array): where it exceeds its running median by AUTOCAL_LINE_CONTRAST,
    widened by AUTOCAL_LINE_PAD on each side; adjacent windows merge."""
    grid = np.arange(float(np.min(sky.lam)), float(np.max(sky.lam)) + sampling, sampling)
    flux = sky(grid)
    size = max(3, int(round(AUTOCAL_MEDIAN_WIDTH / sampling)) | 1)
    cont = ndimage.median_filter(flux, size=size, mode="nearest")
    peak = (flux > AUTOCAL_LINE_CONTRAST * cont) & (flux > 0)
    pad = int(round(AUTOCAL_LINE_PAD / sampling))
    inside = ndimage.binary_dilation(peak, iterations=pad) if pad > 0 and peak.any() else peak
    edges = np.diff(np.concatenate([[0], inside.astype(np.int8), [0]]))
    first, last = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return grid[first] - 0.5 * sampling, grid[last] + 0.5 * sampling


def _column_line_fluxes(pt: PixTable, sky, lo: np.ndarray, hi: np.ndarray):
    """Per spaxel column (one xslice of one slice) and sky-line window: the line flux of the
    data and of ``sky`` above the column's own continuum (the mean of its rows outside the
    windows per AUTOCAL_CONT_BIN Å bin, so that stars and other continuum sources drop
    out), and the variance of the data's. Good rows only, in chunks (full-size tables).

    Returns ``(columns, num, den, var, rows)``: the occupied column keys
    ((ifu·64 + slice)·256 + xslice), three (ncolumn, nline) arrays, and the window rows
    used per column."""
    nline = lo.size
    lut = np.full(32 * 64 * _NXSLICE, -1, dtype=np.int64)
    lam0 = float(pt.lam.min())
    nbin = int((float(pt.lam.max()) - lam0) // AUTOCAL_CONT_BIN) + 1

    def chunk_rows(c):
        part = slice(c, c + _AUTOCAL_CHUNK)
        good = np.flatnonzero((pt.dq[part] == 0) & np.isfinite(pt.data[part]))
        ifu, slice_, xs, _ = unpack_origin(pt.origin[part][good])
        col = (ifu.astype(np.int64) * 64 + slice_) * _NXSLICE + xs
        lam = pt.lam[part][good].astype(np.float64)
        k = np.searchsorted(lo, lam, side="right") - 1
        line = np.where((k >= 0) & (lam <= hi[np.maximum(k, 0)]), k, -1)
        return part, good, col, lam, line

    starts = range(0, pt.nrows, _AUTOCAL_CHUNK)
    for c in starts:  # the occupied columns -> dense indices
        _, _, col, _, _ = chunk_rows(c)
        lut[col] = 0
    columns = np.flatnonzero(lut == 0)
    lut[columns] = np.arange(columns.size)
    ncol = columns.size
    n_off = np.zeros(ncol * nbin)
    c_data = np.zeros(ncol * nbin)
    c_sky = np.zeros(ncol * nbin)
    for c in starts:  # pass 1: the continuum of each column and λ bin, outside the windows
        part, good, col, lam, line = chunk_rows(c)
        off = line < 0
        key = lut[col[off]] * nbin + ((lam[off] - lam0) // AUTOCAL_CONT_BIN).astype(np.int64)
        n_off += np.bincount(key, minlength=ncol * nbin)
        c_data += np.bincount(key, weights=pt.data[part][good][off], minlength=ncol * nbin)
        c_sky += np.bincount(key, weights=sky(lam[off]), minlength=ncol * nbin)
    usable = n_off >= 5
    c_data = np.where(usable, c_data / np.maximum(n_off, 1), 0.0)
    c_sky = np.where(usable, c_sky / np.maximum(n_off, 1), 0.0)
    num = np.zeros(ncol * nline)
    den = np.zeros(ncol * nline)
    var = np.zeros(ncol * nline)
    rows = np.zeros(ncol, dtype=np.int64)
    for c in starts:  # pass 2: line fluxes above that continuum
        part, good, col, lam, line = chunk_rows(c)
        on = np.flatnonzero(line >= 0)
        icol = lut[col[on]]
        cb = icol * nbin + ((lam[on] - lam0) // AUTOCAL_CONT_BIN).astype(np.int64)
        on, icol, cb = on[usable[cb]], icol[usable[cb]], cb[usable[cb]]
        key = icol * nline + line[on]
        num += np.bincount(key, weights=pt.data[part][good][on] - c_data[cb], minlength=ncol * nline)
        den += np.bincount(key, weights=sky(lam[on]) - c_sky[cb], minlength=ncol * nline)
        var += np.bincount(key, weights=pt.stat[part][good][on], minlength=ncol * nline)
        rows += np.bincount(icol, minlength=ncol)
    shape = (ncol, nline)
    return columns, num.reshape(shape), den.reshape(shape), var.reshape(shape), rows


def _weighted_median(values: np.ndarray, weights: np.ndarray, group: np.ndarray, ngroup: int) -> np.ndarray:
    """Per group, the value at half of the cumulated weight (0 where a group has none)."""
    order = np.lexsort((values, group))
    v, w, g = values[order], weights[order], group[order]
    cw = np.cumsum(w)
    total = np.bincount(g, weights=w, minlength=ngroup)
    before = np.concatenate([[0.0], np.cumsum(total)[:-1]])
    out = np.zeros(ngroup)
    has = total > 0
    # first element of each group whose cumulated weight reaches half of the group's
    target = before + 0.5 * total
    idx = np.searchsorted(cw, target[has], side="left")
    out[has] = v[np.minimum(idx, v.size - 1)]
    return out


def _fit_slices(ratio: np.ndarray, weight: np.ndarray, group: np.ndarray, ngroup: int, s: np.ndarray):
    """Per slice, the weighted straight-line fit ratio = a + b·s over its columns (s: the
    column's position along the slice, −½…½), after σ-clipping columns about the slice's
    weighted median (cosmic rays, residuals of bright stars). Returns (a, b, Σweight)."""
    weight = weight.copy()
    for _ in range(3):
        med = _weighted_median(ratio, weight, group, ngroup)
        weight[np.abs(ratio - med[group]) * np.sqrt(weight) > AUTOCAL_CLIP] = 0.0

    def wsum(x):
        return np.bincount(group, weights=weight * x, minlength=ngroup)

    w, sx, sxx, r, rx = wsum(np.ones_like(ratio)), wsum(s), wsum(s * s), wsum(ratio), wsum(ratio * s)
    det = w * sxx - sx * sx
    fit = (w > 0) & (det > 1e-6 * np.maximum(w * sxx, 1e-300))  # a slope needs columns spread along the slice
    b = np.where(fit, (w * rx - sx * r) / np.where(fit, det, 1.0), 0.0)
    a = np.where(w > 0, (r - b * sx) / np.maximum(w, 1e-300), 1.0)
    return a, b, w


def autocal_factors(pt: PixTable, sky, bin_width: float = AUTOCAL_BIN) -> Table:
    """``autocalib=deepfield``: per (IFU, slice) correction factors from the sky lines.

    ``sky(lam)`` is a mean sky spectrum (e.g. of the source-free spaxels). Sky lines are
    uniform on the sky, so the ratio of a slice's line flux to that of ``sky`` is the
    slice's sky illumination relative to the calibration: for every spaxel column and
    line window (:func:`sky_line_windows`) the flux above the column's own continuum
    (which takes out stars, galaxies' continua and the sky continuum) is summed over the
    whole window (independent of the slice's LSF and λ sampling); a column's ratio is
    Σ data / Σ sky over the kept lines, with weight (Σ sky)² / Σ variance. Per slice a
    straight line along the slice is fitted to the columns (σ-clipped), and the factor is
    its value at the slice centre. Lines whose ratio is higher than the others' over the
    field (nebular emission) are dropped and the fit repeated. The factors are normalised
    to a row-weighted mean of 1 (the response keeps the flux scale) and, the illumination
    being achromatic, repeated for every ``bin_width`` Å bin (the DRS layout).
    Table columns (AUTOCAL_FACTORS): ``ifu``, ``sli``, ``lmin``, ``lmax`` [Å], ``corr``,
    ``npts`` (sky-line window rows of the slice); the data are *divided* by ``corr``
    (the fitted slope along the slice is not kept: the DRS table has no place for it). A
    slice without usable sky-line rows gets 1.
    """
    lo, hi = sky_line_windows(sky)
    columns, num, den, var, rows = _column_line_fluxes(pt, sky, lo, hi)
    slices, group = np.unique(columns // _NXSLICE, return_inverse=True)
    xs = columns % _NXSLICE
    xmin = np.full(slices.size, np.inf)
    xmax = np.full(slices.size, -np.inf)
    np.minimum.at(xmin, group, xs)
    np.maximum.at(xmax, group, xs)
    s = (xs - 0.5 * (xmin[group] + xmax[group])) / np.maximum(xmax[group] - xmin[group], 1.0)
    ok = (den > 0) & (var > 0)
    ratio = np.where(ok, num / np.where(ok, den, 1.0), 0.0)
    weight = np.where(ok, den * den / np.where(ok, var, 1.0), 0.0)
    used = weight.sum(axis=0) > 0
    for _ in range(4):
        n, d, v = num[:, used].sum(1), den[:, used].sum(1), var[:, used].sum(1)
        good = (d > 0) & (v > 0)
        a, b, wsum = _fit_slices(np.where(good, n / np.where(good, d, 1.0), 0.0),
                                 np.where(good, d * d / np.where(good, v, 1.0), 0.0), group, slices.size, s)
        model = (a[group] + b[group] * s)[:, None]
        wl = weight.sum(axis=0)
        excess = np.sum(weight * (ratio - model), axis=0) / np.maximum(wl, 1e-300)
        if not used.any():
            break
        limit = np.maximum(5.0 / np.sqrt(np.maximum(wl, 1e-300)), AUTOCAL_EXCESS)
        keep = (wl > 0) & (excess - np.median(excess[used]) < limit)
        if (keep == used).all() or not keep.any():
            break
        used = keep
    measured = wsum > 0
    nrows = np.bincount(group, weights=rows, minlength=slices.size)
    norm = float(np.sum(nrows[measured] * a[measured]) / np.sum(nrows[measured])) if measured.any() else 1.0
    corr = np.where(measured, a / norm, 1.0)
    lam_lo = math.floor(float(pt.lam.min()) / bin_width) * bin_width
    nbin = int(math.floor((float(pt.lam.max()) - lam_lo) / bin_width)) + 1
    b_idx = np.tile(np.arange(nbin), slices.size)
    return Table({
        "ifu": np.repeat(slices // 64, nbin).astype(np.int32), "sli": np.repeat(slices % 64, nbin).astype(np.int32),
        "lmin": lam_lo + b_idx * bin_width, "lmax": lam_lo + (b_idx + 1) * bin_width,
        "corr": np.repeat(corr, nbin), "npts": np.repeat(np.where(measured, nrows, 0), nbin).astype(np.int32),
    })  # fmt: skip


def apply_autocal(pt: PixTable, factors: Table, where: str = "AUTOCAL_FACTORS") -> int:
    """Divide each row by the factor of its (IFU, slice, λ bin); returns the rows corrected.

    Rows whose slice or bin has no entry are left alone. Records ``… PIXTABLE AUTOCAL``.
    """
    cols = {c.lower(): c for c in factors.colnames}
    for need in ("ifu", "sli", "lmin", "lmax", "corr"):
        if need not in cols:
            raise RecipeError(f"{where}: autocalibration table lacks column {need}")
    lmin = np.asarray(factors[cols["lmin"]], dtype=np.float64)
    lmax = np.asarray(factors[cols["lmax"]], dtype=np.float64)
    corr = np.asarray(factors[cols["corr"]], dtype=np.float64)
    if len(factors) == 0:
        return 0
    width = float(np.median(lmax - lmin))
    if not width > 0:
        raise RecipeError(f"{where}: autocalibration bins must have lmax > lmin")
    lo = float(lmin.min())
    fb = np.floor((lmin - lo) / width + 0.5).astype(np.int64)
    nbin = int(fb.max()) + 1
    lut = np.ones((32, 64, nbin), dtype=np.float64)
    usable = np.isfinite(corr) & (corr > 0)
    f_ifu = np.asarray(factors[cols["ifu"]], dtype=np.int64)
    f_sli = np.asarray(factors[cols["sli"]], dtype=np.int64)
    if ((f_ifu < 0) | (f_ifu > 31) | (f_sli < 0) | (f_sli > 63)).any():
        raise RecipeError(f"{where}: autocalibration table has IFU/slice numbers out of range")
    lut[f_ifu[usable], f_sli[usable], fb[usable]] = corr[usable]
    ifu, slice_, _, _ = unpack_origin(pt.origin)
    b = np.floor((pt.lam.astype(np.float64) - lo) / width).astype(np.int64)
    inside = (b >= 0) & (b < nbin)
    factor = np.ones(pt.nrows, dtype=np.float32)
    factor[inside] = lut[ifu[inside], slice_[inside], b[inside]]
    pt.columns["data"] /= factor
    pt.columns["stat"] /= factor * factor
    pt.header[hkey(pkey("AUTOCAL"))] = (True, "slice autocalibration applied")
    return int(np.count_nonzero(factor != 1.0))
