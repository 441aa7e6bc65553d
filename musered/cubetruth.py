"""A reduced datacube against the simulator's truth: star fluxes, centroids and noise.

The stars of a simulated field are known (position, spectrum) and so is each exposure
(pointing, rotation, seeing, exposure time). :func:`cube_scene` builds what a cube made
from some of those exposures should show, summed over the continuum planes (away from
sky and nebular lines): per star, the mean over the exposures covering each spaxel
(weighted by EXPTIME) of the star's Moffat profile at that exposure's seeing, times the
star's spectrum. Fluxes and positions come from one joint least-squares fit of those star
images (amplitude and a small shift each) to the cube, so blended neighbours do not leak
into each other; the noise from sky-only spaxels.

Astrometry: muse_exp_align measures offsets *relative* to its first exposure, so a combined
cube keeps that exposure's pointing error; a single-exposure cube keeps its own. The model
places the stars where a perfect alignment puts them: true position − the reference
exposure's pointing error. Units: 1e-20 erg/s/cm²/Å per spaxel (the DRS cube unit),
positions in arcsec (ξ east, η north) from the simulated target.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy.ndimage import binary_erosion

from .errors import MuseredError

#: Stars are fitted on the spaxels within FIT_RADIUS [arcsec] of any star, and reported
#: when their core (CORE_RADIUS, ≈ 1 seeing FWHM) holds data.
FIT_RADIUS, CORE_RADIUS = 2.0, 0.8
#: Planes this close [Å] to a sky or nebular line, or to the cube's ends, are not continuum.
LINE_WINDOW, EDGE_WINDOW = 5.0, 15.0


@dataclass
class CubeScene:
    """A cube summed over its continuum planes, next to the truth's expectation."""

    path: Path
    band: np.ndarray          # (ny, nx) Σ over the continuum planes of DATA
    variance: np.ndarray      # (ny, nx) Σ over the same planes of STAT
    inner: np.ndarray         # (ny, nx) bool: data in every plane, 2 spaxels inside the edge
    models: np.ndarray        # (n_stars, ny, nx) each star's expected band image
    by_exposure: np.ndarray   # (n_exposures, n_stars, ny, nx) the part each exposure brings
    d_xi: np.ndarray          # (n_stars, ny, nx) derivatives of the images by the star's ξ, η [/arcsec]
    d_eta: np.ndarray
    names: list[str]
    xi: np.ndarray            # (ny, nx) spaxel centres [arcsec] in the ideal (aligned) frame
    eta: np.ndarray
    star_xi: np.ndarray       # (n_stars,) true star positions [arcsec]
    star_eta: np.ndarray
    planes: np.ndarray        # indices of the continuum planes
    exposures: list[str]      # truth keys (raw file names) of the exposures in the cube

    @property
    def model(self) -> np.ndarray:
        return self.models.sum(axis=0)


def cube_exposures(header: fits.Header) -> list[str]:
    """Raw file names (``MUSE.<DATE-OBS>.fits``) of the exposures in a cube: the
    ``ESO DRS MUSE OFFSETi DATE-OBS`` keys of a combined cube, else its DATE-OBS."""
    dates = [header[f"ESO DRS MUSE OFFSET{i} DATE-OBS"] for i in range(1, 1000)
             if f"ESO DRS MUSE OFFSET{i} DATE-OBS" in header]
    if not dates and "DATE-OBS" in header:
        dates = [header["DATE-OBS"]]
    return [f"MUSE.{str(d).strip()}.fits" for d in dates]


def continuum_planes(lam: np.ndarray, truth) -> np.ndarray:
    """Indices of the planes (wavelengths ``lam`` [Å]) free of sky and nebular lines."""
    from .simulate.sources import sky_lines

    lines = [v["lambda"] for v in truth.sources["nebula"]["lines"].values()] + list(sky_lines()[0])
    ok = np.all(np.abs(lam[:, None] - np.asarray(lines)[None, :]) > LINE_WINDOW, axis=1)
    ok &= (lam > lam[0] + EDGE_WINDOW) & (lam < lam[-1] - EDGE_WINDOW)
    return np.flatnonzero(ok)


def cube_scene(path: Path, truth) -> CubeScene:
    """Read the cube at ``path`` and build the truth's expectation for it (module doc)."""
    from recipes.algorithms.instrument import SPAXEL_ARCSEC

    from .simulate.profiles import get_profile
    from .simulate.sources import moffat

    with fits.open(path) as hdul:
        header = hdul[0].header.copy()
        cube = hdul["DATA"]
        h = cube.header.copy()
        nz = int(h["NAXIS3"])
        lam = h["CRVAL3"] + h["CD3_3"] * (np.arange(nz) + 1.0 - h["CRPIX3"])
        planes = continuum_planes(lam, truth)
        data = np.asarray(cube.data[planes], dtype=np.float64)
        variance = np.nansum(np.asarray(hdul["STAT"].data[planes], dtype=np.float64), axis=0)
    band = np.nansum(data, axis=0)
    inner = binary_erosion(np.all(np.isfinite(data), axis=0), iterations=2)
    names = [name for name in cube_exposures(header) if name in truth.exposures]
    exposures = [truth.exposures[name] for name in names]
    if not exposures:
        raise MuseredError(f"{path}: none of its exposures is in the simulator's truth")

    ny, nx = band.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    ra, dec = WCS(h).celestial.all_pix2world(xx.astype(float), yy.astype(float), 0)
    target = truth.data["target"]
    cos_dec = math.cos(math.radians(target["dec"]))
    reference = exposures[0]["pointing_error"]
    # ideal frame: where the cube would put the sky if every exposure were aligned on the
    # reference (whose own pointing error no relative alignment can see)
    xi = (ra - target["ra"]) * 3600.0 * cos_dec + reference[0]
    eta = (dec - target["dec"]) * 3600.0 + reference[1]

    layout = get_profile(truth.profile).layout
    half_w = layout.width_sky * 4 * SPAXEL_ARCSEC / 2.0          # 4 stacks of slices
    half_h = int(truth.data["n_ifus"]) * 12 * SPAXEL_ARCSEC / 2.0  # 12 slices per IFU
    weights, covers = [], []
    for name, e in zip(names, exposures):
        t = math.radians(e["posang"])
        dx = xi - (e["offset"][0] + e["pointing_error"][0])
        dy = eta - (e["offset"][1] + e["pointing_error"][1])
        # field coordinates (sources.field_to_sky is its own inverse)
        fx, fy = -dx * math.cos(t) + dy * math.sin(t), dx * math.sin(t) + dy * math.cos(t)
        covers.append((np.abs(fx) < half_w) & (np.abs(fy) < half_h))
        weights.append(float(truth.frames[name]["exptime"]))
    total = np.sum([w * c for w, c in zip(weights, covers)], axis=0)
    scene = truth.scene()

    def images(dxi: float, deta: float) -> np.ndarray:
        """(n_exposures, n_stars, ny, nx): each exposure's share of each star's band image,
        with the stars moved by (dxi, deta) arcsec."""
        out = np.zeros((len(exposures), len(scene.stars), ny, nx))
        with np.errstate(invalid="ignore", divide="ignore"):
            share = [np.where(total > 0, w * c / total, 0.0) for w, c in zip(weights, covers)]
        for s, star in enumerate(scene.stars):
            r2 = (xi - star.xi - dxi) ** 2 + (eta - star.eta - deta) ** 2
            flux = float(np.sum(star.spectrum(lam[planes]))) * 1e20
            for k, e in enumerate(exposures):
                out[k, s] = share[k] * moffat(r2, e["seeing"]) * SPAXEL_ARCSEC**2 * flux
        return out

    step = 0.01  # arcsec, for the derivatives of the images with respect to position
    by_exposure = images(0.0, 0.0)
    d_xi = (images(step, 0.0) - images(-step, 0.0)).sum(axis=0) / (2 * step)
    d_eta = (images(0.0, step) - images(0.0, -step)).sum(axis=0) / (2 * step)
    return CubeScene(Path(path), band, variance, inner, by_exposure.sum(axis=0), by_exposure, d_xi, d_eta,
                     [st.name for st in scene.stars], xi, eta, np.array([st.xi for st in scene.stars]),
                     np.array([st.eta for st in scene.stars]), planes, names)


@dataclass(frozen=True)
class StarFit:
    """One star in a cube: measured / true flux and position offset [arcsec] (cube − truth)."""

    ratio: float
    dxi: float
    deta: float


def fit_stars(scene: CubeScene) -> dict[str, StarFit]:
    """Joint weighted (1/STAT) least-squares fit of every star's image to the band image,
    with amplitude and linearised shift per star: band ≈ Σ a·(M + δξ ∂M/∂ξ + δη ∂M/∂η).
    Reported for the stars whose core (CORE_RADIUS) holds data."""
    discs = [np.hypot(scene.xi - x, scene.eta - y) < FIT_RADIUS for x, y in zip(scene.star_xi, scene.star_eta)]
    fitted = np.any(discs, axis=0) & scene.inner & (scene.variance > 0)
    sigma = np.sqrt(scene.variance[fitted])
    columns = np.concatenate([scene.models[:, fitted], scene.d_xi[:, fitted], scene.d_eta[:, fitted]]).T
    columns /= sigma[:, None]
    n = len(scene.names)
    # stars with light in the fitted spaxels (the others' columns are 0)
    used = np.flatnonzero(np.abs(columns[:, :n]).sum(axis=0) > 1e-6 * np.abs(columns[:, :n]).sum())
    keep = np.concatenate([used, used + n, used + 2 * n])
    solution, *_ = np.linalg.lstsq(columns[:, keep], scene.band[fitted] / sigma, rcond=None)
    out = {}
    spaxel = math.hypot(scene.xi[0, 1] - scene.xi[0, 0], scene.eta[0, 1] - scene.eta[0, 0])  # arcsec
    core_pixels = math.pi * CORE_RADIUS**2 / spaxel**2
    for k, s in enumerate(used):
        core = np.hypot(scene.xi - scene.star_xi[s], scene.eta - scene.star_eta[s]) < CORE_RADIUS
        if (core & scene.inner).sum() < 0.95 * core_pixels:
            continue
        a = solution[k]
        out[scene.names[s]] = StarFit(float(a), float(solution[k + used.size] / a),
                                      float(solution[k + 2 * used.size] / a))
    return out


def star_flux_ratios(scene: CubeScene, core_fraction: float = 0.95) -> dict[str, float]:
    """Measured / expected flux in the FIT_RADIUS disc around each star (the part with
    data), for the stars with data on ``core_fraction`` of their core. The model carries
    the same blending by neighbours and the same PSF, so the ratio is the flux calibration
    of the stars."""
    model = scene.model
    spaxel = math.hypot(scene.xi[0, 1] - scene.xi[0, 0], scene.eta[0, 1] - scene.eta[0, 0])  # arcsec
    core_pixels = math.pi * CORE_RADIUS**2 / spaxel**2
    out = {}
    for name, x, y in zip(scene.names, scene.star_xi, scene.star_eta):
        r = np.hypot(scene.xi - x, scene.eta - y)
        if ((r < CORE_RADIUS) & scene.inner).sum() < core_fraction * core_pixels:
            continue
        disc = _disc(scene, scene.names.index(name))
        out[name] = float(scene.band[disc].sum() / model[disc].sum())
    return out


def _disc(scene: CubeScene, s: int) -> np.ndarray:
    return (np.hypot(scene.xi - scene.star_xi[s], scene.eta - scene.star_eta[s]) < FIT_RADIUS) & scene.inner


def relative_flux_ratios(combined: CubeScene, singles: list[CubeScene]) -> dict[str, float]:
    """Flux ratio of each star in a combined cube over what its single-exposure cubes
    predict: Σ_k share_k ρ_k, with ρ_k the star's ratio in exposure k's own cube and
    share_k exposure k's part of the model light in the star's disc of the combined cube
    (its weight where it covers the disc). 1 when combining changes no flux. Stars to
    which an exposure with a share > 2 % brings light that its own cube does not measure
    are left out."""
    ratios = star_flux_ratios(combined)
    # at the edge of a single exposure, half a core suffices: the model is cut the same way
    single = {scene.exposures[0]: star_flux_ratios(scene, 0.5) for scene in singles if len(scene.exposures) == 1}
    out = {}
    for name, ratio in ratios.items():
        s = combined.names.index(name)
        light = combined.by_exposure[:, :, _disc(combined, s)].sum(axis=(1, 2))
        shares = light / light.sum()
        expected, complete = 0.0, True
        for exposure, share in zip(combined.exposures, shares):
            if share <= 0.02:
                continue
            rho = single.get(exposure, {}).get(name)
            if rho is None:
                complete = False
                break
            expected += share * rho
        if complete:
            out[name] = ratio / (expected / shares[shares > 0.02].sum())
    return out


def noise_ratio(scene: CubeScene, max_planes: int = 300) -> tuple[float, int]:
    """Measured noise over the one STAT predicts, in sky-only spaxels (stars below 5 % of
    the noise per plane): robust σ (1.4826 MAD) of (DATA − its median along λ)/√STAT
    over up to ``max_planes`` continuum planes; and the number of spaxels used."""
    planes = scene.planes[:: max(1, int(math.ceil(scene.planes.size / max_planes)))]
    with fits.open(scene.path) as hdul:
        data = np.asarray(hdul["DATA"].data[planes], dtype=np.float64)
        stat = np.asarray(hdul["STAT"].data[planes], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # spaxels outside the data: all NaN
        per_plane = np.sqrt(np.nanmedian(stat, axis=0))
    sky = scene.inner & (scene.model / scene.planes.size < 0.05 * per_plane)
    if not sky.any():
        return float("nan"), 0
    d, v = data[:, sky], stat[:, sky]
    r = (d - np.median(d, axis=0)) / np.sqrt(v)
    r = r[np.isfinite(r)]
    return float(1.4826 * np.median(np.abs(r - np.median(r)))), int(sky.sum())
