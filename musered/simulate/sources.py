"""Light sources of the simulator: spectra and their spatial distribution along slices.

Units: spectra of astronomical sources are in erg/s/cm²/Å (point sources: total flux;
extended sources: per arcsec²); :func:`sensitivity` turns them into detected electrons
per second per Å (telescope area × instrument efficiency × photon energy). Lamp and
twilight spectra are given directly in electrons per second per Å per spaxel.
Sky positions are tangent-plane offsets (ξ east, η north) in arcsec from the target
reference position; field positions are spaxels (0.2") in the instrument frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from recipes.algorithms.instrument import SPAXEL_ARCSEC, read_data_table, throughput_curve

#: VLT collecting area (cm²), 8.0 m pupil minus the 1.5 m central obstruction (DRS value).
VLT_AREA_CM2 = 483250.7
H_CGS, C_CGS, K_CGS = 6.62607015e-27, 2.99792458e10, 1.380649e-16
MOFFAT_BETA = 2.5


def sensitivity(lam) -> np.ndarray:
    """Detected e-/s/Å per erg/s/cm²/Å at the telescope (area × efficiency / photon energy)."""
    lam = np.asarray(lam, dtype=float)
    return VLT_AREA_CM2 * throughput_curve(lam) * lam * 1e-8 / (H_CGS * C_CGS)


def planck_shape(lam, temperature: float) -> np.ndarray:
    """Blackbody B_λ(T) normalised to 1 at 5500 Å (λ in Å)."""
    def bb(x):
        xc = np.asarray(x, dtype=float) * 1e-8
        return 1.0 / (xc**5 * np.expm1(H_CGS * C_CGS / (xc * K_CGS * temperature)))

    return bb(lam) / bb(5500.0)


def extinction(lam) -> np.ndarray:
    """Paranal-like extinction (mag/airmass) interpolated from the shipped table."""
    t = read_data_table("extinction_paranal.csv")
    return np.interp(lam, t["lambda"], t["extinction"])


def std_reference_flux(lam) -> np.ndarray:
    """Reference flux of the simulated standard SIMSTAR1 (erg/s/cm²/Å)."""
    t = read_data_table("std_simstar1.csv")
    return np.interp(lam, t["lambda"], t["flux"])


def moffat(r2, fwhm: float, beta: float = MOFFAT_BETA):
    """Moffat surface density (per arcsec²) normalised to unit total flux; r² in arcsec²."""
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return (beta - 1.0) / (math.pi * alpha**2) * (1.0 + r2 / alpha**2) ** (-beta)


def field_to_sky(xf, yf, posang: float):
    """Sky offsets (ξ east, η north; arcsec) of field positions (spaxels) at ``posang`` (deg).

    At position angle 0, +x points west and +y north (north up, east left, like the DRS
    cube with CD1_1 < 0); ``posang`` turns the field's +y axis from north towards east.
    """
    t = math.radians(posang)
    x = np.asarray(xf, dtype=float) * SPAXEL_ARCSEC
    y = np.asarray(yf, dtype=float) * SPAXEL_ARCSEC
    xi = -x * math.cos(t) + y * math.sin(t)
    eta = x * math.sin(t) + y * math.cos(t)
    return xi, eta


@dataclass
class PointSource:
    """A star: tangent-plane position (arcsec) and a blackbody spectrum."""

    xi: float
    eta: float
    temperature: float
    flux5500: float  # erg/s/cm²/Å at 5500 Å
    name: str = ""

    def spectrum(self, lam):
        return self.flux5500 * planck_shape(lam, self.temperature)


@dataclass
class Nebula:
    """Extended emission-line nebula: sum of elliptical Gaussian blobs × line ratios.

    ``surface`` is the Hα surface brightness (erg/s/cm²/arcsec²) at a blob peak of weight 1.
    """

    blobs: list[tuple[float, float, float, float]]  # (xi, eta, sigma_arcsec, weight)
    surface: float
    lines: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (λ air Å, ratio to Hα)

    def brightness(self, xi, eta):
        """Relative surface brightness (Hα units) at sky offsets (arcsec)."""
        out = np.zeros(np.broadcast(xi, eta).shape)
        for bx, by, s, w in self.blobs:
            out += w * np.exp(-0.5 * ((xi - bx) ** 2 + (eta - by) ** 2) / s**2)
        return out


#: Nebular lines (air wavelengths, Å) and their ratios to Hα used for the simulated nebula.
NEBULAR_LINES = {
    "Hbeta": (4861.333, 0.30),
    "[OIII]4959": (4958.911, 0.40),
    "[OIII]5007": (5006.843, 1.20),
    "[NII]6548": (6548.050, 0.12),
    "Halpha": (6562.819, 1.00),
    "[NII]6583": (6583.460, 0.36),
    "[SII]6716": (6716.440, 0.20),
    "[SII]6731": (6730.810, 0.15),
}


@dataclass
class Scene:
    """The science field: stars, a nebula, and the sky (continuum + lines)."""

    stars: list[PointSource]
    nebula: Nebula
    sky_continuum: float = 8e-18  # erg/s/cm²/Å/arcsec² at 5500 Å

    def sky_spectrum(self, lam):
        """Sky continuum (erg/s/cm²/Å/arcsec²): flat in F_λ with a slow rise to the red."""
        lam = np.asarray(lam, dtype=float)
        return self.sky_continuum * (1.0 + 0.25 * (lam - 5500.0) / 3000.0)


#: Stars of the simulated field per zone (see :func:`make_scene`) and their closest
#: allowed separation [arcsec]: 1.5 × the typical 0.8″ seeing keeps every star a peak of
#: its own for exp-align's detection (its local-maximum search spans ±0.6″); photometry
#: of the closer pairs needs a model of the blend (musered/cubetruth.py).
STARS_CENTRE, STARS_ARM = 5, 3
STAR_SEPARATION = 1.2


def _place_stars(rng: np.random.Generator, zones, placed: list[np.ndarray]) -> None:
    """Append to ``placed`` one position per zone in ``zones`` (callables drawing a
    candidate (ξ, η) from ``rng``), each at least STAR_SEPARATION from the others when
    possible in 200 draws, else the draw farthest from them (tiny fields, 1-IFU tests)."""
    for zone in zones:
        best, best_distance = None, -1.0
        for _ in range(200):
            candidate = np.asarray(zone(rng), dtype=float)
            distance = min((float(np.hypot(*(candidate - p))) for p in placed), default=np.inf)
            if distance > best_distance:
                best, best_distance = candidate, distance
            if distance >= STAR_SEPARATION:
                break
        placed.append(best)


def make_scene(rng: np.random.Generator, field_arcsec: tuple[float, float]) -> Scene:
    """A random but reproducible field: 11 well-separated stars and a two-blob nebula.

    ``field_arcsec`` = (w, h), the field's long side (along the slices, +x west at
    position angle 0) and short side [arcsec]; the science exposures are rotated by
    0/90/180/270° and dithered by < 1″ (:mod:`.plan`), so on the mini field (14.4″ × 4.8″)
    they overlap only in a central square. Stars (ξ east, η north):

    - STARS_CENTRE in the central square |ξ|, |η| ≤ 0.21 h, seen by every exposure;
    - STARS_ARM in an eastern arm (ξ from w/6 to 0.39 w, |η| ≤ 0.1 h), seen by the
      exposures at 0° and 180°, and STARS_ARM in the same arm towards the north, seen by
      those at 90° and 270°;

    so each exposure holds ≥ 5 stars (exp-align's default ``srcmin``) with ≥ 4 in common
    with the others. The western and southern ends of the field stay free of stars: there
    the scene is sky only (sky-subtraction checks, the noise of the combined cube).
    """
    w, h = max(field_arcsec), min(field_arcsec)
    centre, arm_lo, arm_hi, arm_half = 0.21 * h, w / 6.0, 0.39 * w, 0.1 * h

    def central(r):
        return r.uniform(-centre, centre, 2)

    def east(r):
        return r.uniform(arm_lo, arm_hi), r.uniform(-arm_half, arm_half)

    def north(r):
        return r.uniform(-arm_half, arm_half), r.uniform(arm_lo, arm_hi)

    positions: list[np.ndarray] = []
    _place_stars(rng, [central] * STARS_CENTRE + [east] * STARS_ARM + [north] * STARS_ARM, positions)
    stars = [PointSource(
        xi=float(xi), eta=float(eta), temperature=float(rng.uniform(3500, 9000)),
        flux5500=float(10 ** rng.uniform(-16.3, -15.3)), name=f"star{i + 1}",
    ) for i, (xi, eta) in enumerate(positions)]
    neb = Nebula(
        blobs=[(float(rng.uniform(-2, 2)), float(rng.uniform(-2, 2)), 3.0, 1.0),
               (float(rng.uniform(-5, 5)), float(rng.uniform(-3, 3)), 1.5, 0.6)],
        surface=2e-16, lines={k: v for k, v in NEBULAR_LINES.items()},
    )
    return Scene(stars=stars, nebula=neb)


def sky_lines() -> tuple[np.ndarray, np.ndarray]:
    """Night-sky lines: air wavelengths (Å) and fluxes (erg/s/cm²/arcsec²)."""
    t = read_data_table("sky_lines.csv")
    return t["lambda"], t["flux"] * 1e-18


def arc_lines(lamp: str) -> tuple[np.ndarray, np.ndarray]:
    """Lines of one arc lamp (``Ne``, ``Xe``, ``HgCd``): air wavelengths and relative fluxes."""
    t = read_data_table("arc_lines.csv")
    sel = t["lamp"] == lamp
    return t["lambda"][sel], t["flux"][sel]


def lamp_continuum(lam) -> np.ndarray:
    """Relative continuum-lamp spectrum seen by the CCD (halogen 3000 K × instrument)."""
    lam = np.asarray(lam, dtype=float)
    s = planck_shape(lam, 3000.0) * throughput_curve(lam)
    return s / s.max()


def twilight_continuum(lam) -> np.ndarray:
    """Relative twilight spectrum seen by the CCD: solar 5800 K blackbody × Rayleigh λ⁻⁴
    scattering × instrument+telescope efficiency (smooth; no Fraunhofer lines)."""
    lam = np.asarray(lam, dtype=float)
    s = planck_shape(lam, 5800.0) * (lam / 5500.0) ** -4 * throughput_curve(lam)
    return s / s.max()
