"""muse_exp_align: relative coordinate offsets of exposures from their IMAGE_FOV (recipes.md §3.11).

The recipe reads as its steps:

1. read the IMAGE_FOV inputs (primary header with DATE-OBS and MJD-OBS, a ``DATA`` image
   with a TAN WCS, as :func:`recipes.cube.write_image_fov` writes them); keep those of
   the filter named by ``filter`` (header ``ESO DRS MUSE FILTER NAME``; a musered
   parameter, the settings block's ``filt``), one per exposure, sorted by MJD-OBS; the
   first is the reference. At least two exposures with distinct MJD-OBS are required;
2. per image: background, point sources with the adaptive threshold, shape and
   bad-pixel cuts (:mod:`recipes.sourcedetect`); pixel positions to RA/Dec by the WCS;
3. offsets (:func:`compute_offsets`), in the tangent plane of the reference [arcsec]:
   for every pair of exposures, the first pair displacement is the one most of their
   source separations (within ±``rsearch[0]``) agree on to half a bin of the DRS's 2-D
   histogram (``rsearch[0]``/``nbins``; mean of those separations); a global weighted
   least-squares solution gives per-exposure offsets with the reference fixed at 0; then
   for each following radius of ``rsearch``, sources are matched pairwise (nearest neighbour
   within the radius after removing the current solution), the pair displacement is the
   mean of the matched separations (weighted by √(flux_i flux_j) with ``weight``), and
   the global solution is recomputed (pair weights: number of matches). Exposures that
   never match the reference's group keep offset 0 and count in QC NOMATCH;
4. write OFFSET_LIST, one SOURCE_LIST_nnnn per exposure and PREVIEW_FOV (the images,
   corrected, nearest-neighbour on a north-up TAN grid with the reference's spaxel size;
   pixels covered by several exposures are averaged).

Sign convention (checked against the ESO DRS 2.8.7 on the same images, and what
muse_scipost_make_cube / exp_combine apply): ``RA_OFFSET``/``DEC_OFFSET`` [deg] are the
apparent displacement of the exposure's sources relative to the reference exposure, so
the corrected coordinates are ``RA_CORR = RA − RA_OFFSET`` and ``DEC_CORR = DEC −
DEC_OFFSET``; RA_OFFSET is a pure difference of RA (not multiplied by cos δ). As the DRS,
``FLUX_SCALE`` is written as NaN (no flux scaling; consumers treat non-finite as 1).

SOURCE_LIST columns: Id, X, Y (FITS 1-based pixels), Flux, Sharpness, Roundness, RA, DEC,
RA_CORR, DEC_CORR [deg].
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning
from scipy.spatial import cKDTree

from .base import Param, Product, Recipe, RecipeError
from .provenance import add_qc, product_header
from .registry import register
from .sourcedetect import Detection, detect_sources

logger = logging.getLogger(__name__)

PARAMS = (
    Param("rsearch", str, "30.,4.,2.,0.8", "search radius (in arcsec) for each iteration of the offset computation"),
    Param("nbins", int, 60, "number of bins of the 2D histogram of the first iteration", minimum=2),
    Param("weight", bool, True, "use weighting"),
    Param("fwhm", float, 5.0, "FWHM in pixels of the convolution filter", minimum=0.5),
    Param("threshold", float, 15.0, "initial detection threshold: > 0 absolute level above the background, "
          "<= 0 that many MADs above the median background"),
    Param("bkgignore", float, 0.05, "fraction of the image to be ignored", minimum=0.0, maximum=1.0),
    Param("bkgfraction", float, 0.1, "fraction of the image (without the ignored part) taken as background",
          minimum=0.0, maximum=1.0),
    Param("step", float, 0.5, "increment/decrement of the threshold between detection iterations", minimum=0.0),
    Param("iterations", int, 100000, "maximum number of detection iterations", minimum=1),
    Param("srcmin", int, 5, "minimum number of sources which must be found", minimum=1),
    Param("srcmax", int, 80, "maximum number of sources which may be found", minimum=1),
    Param("roundmin", float, -1.0, "lower limit of the point-source roundness"),
    Param("roundmax", float, 1.0, "upper limit of the point-source roundness"),
    Param("sharpmin", float, 0.2, "lower limit of the point-source sharpness"),
    Param("sharpmax", float, 1.0, "upper limit of the point-source sharpness"),
    Param("expmap", bool, False, "write EXPOSURE_MAP (exposure time per pixel of the combined field)"),
    Param("bpixdistance", float, 5.0, "minimum distance [pix] of a source to the closest bad pixel", minimum=0.0),
    Param("override_detection", bool, False, "use the input SOURCE_LIST catalogues instead of detection"),
    Param("filter", str, "white", "musered: IMAGE_FOV filter to align on (ESO DRS MUSE FILTER NAME)"),
)


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------


@dataclass
class FovImage:
    """One IMAGE_FOV: its data (NaN = no data), WCS and observation keys."""

    path: Path
    data: np.ndarray
    wcs: WCS
    header: fits.Header          # primary header
    date_obs: str
    mjd_obs: float
    exptime: float
    filter_name: str

    @property
    def label(self) -> str:
        """``folder/file``: products of every exposure share one file name."""
        return f"{self.path.parent.name}/{self.path.name}"

    def pixel_to_world(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RA, Dec [deg] of 0-based pixels."""
        ra, dec = self.wcs.all_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
        return np.asarray(ra, float), np.asarray(dec, float)

    def world_to_pixel(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based pixels of RA, Dec [deg]."""
        x, y = self.wcs.all_world2pix(np.asarray(ra, float), np.asarray(dec, float), 0)
        return np.asarray(x, float), np.asarray(y, float)


def read_fov(path: Path) -> FovImage:
    """An IMAGE_FOV (the first image extension, ``DATA`` preferred). RecipeError naming the
    file when it cannot be read or lacks a celestial WCS, DATE-OBS or MJD-OBS."""
    path = Path(path)
    try:
        with fits.open(path) as hdul:
            primary = hdul[0].header.copy()
            hdu = hdul["DATA"] if "DATA" in hdul else next(
                (h for h in hdul if h.data is not None and h.header.get("NAXIS") == 2), None)
            if hdu is None:
                raise RecipeError(f"{path}: no 2-D image extension")
            data = np.asarray(hdu.data, dtype=np.float64)
            header = hdu.header.copy()
    except RecipeError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RecipeError(f"{path}: cannot read IMAGE_FOV ({str(exc).splitlines()[0]})") from None
    if data.ndim != 2:
        raise RecipeError(f"{path}: IMAGE_FOV data must be a 2-D image, not {data.ndim}-D")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header, naxis=2)
    if not wcs.has_celestial or "TAN" not in "".join(wcs.wcs.ctype):
        raise RecipeError(f"{path}: IMAGE_FOV needs a gnomonic (RA---TAN/DEC--TAN) WCS")
    date_obs = primary.get("DATE-OBS", header.get("DATE-OBS"))
    mjd = primary.get("MJD-OBS", header.get("MJD-OBS"))
    if date_obs is None or mjd is None:
        raise RecipeError(f"{path}: IMAGE_FOV needs DATE-OBS and MJD-OBS in its header")
    flt = str(primary.get("ESO DRS MUSE FILTER NAME", header.get("ESO DRS MUSE FILTER NAME", "white")))
    return FovImage(path, data, wcs, primary, str(date_obs), float(mjd),
                    float(primary.get("EXPTIME", 1.0) or 1.0), flt.strip())


def select_fovs(paths: Sequence[Path], filter_name: str) -> list[FovImage]:
    """The images of ``filter_name``, one per exposure, in MJD-OBS order (see step 1)."""
    images = [read_fov(p) for p in paths]
    chosen = [im for im in images if im.filter_name.lower() == filter_name.lower()]
    if not chosen:
        found = sorted({im.filter_name for im in images})
        raise RecipeError(f"no IMAGE_FOV of filter {filter_name!r} among {len(images)} input(s) "
                          f"(filters found: {', '.join(found) or 'none'})")
    chosen.sort(key=lambda im: (im.mjd_obs, str(im.path)))
    for a, b in zip(chosen, chosen[1:]):
        if abs(a.mjd_obs - b.mjd_obs) < 1e-8:
            raise RecipeError(f"{a.label} and {b.label}: same MJD-OBS {a.mjd_obs}; "
                              "each IMAGE_FOV must come from a different exposure")
    if len(chosen) < 2:
        raise RecipeError(f"muse_exp_align needs at least 2 IMAGE_FOV of filter {filter_name!r}, "
                          f"got {len(chosen)} ({chosen[0].label})")
    return chosen


def parse_rsearch(text: str) -> list[float]:
    """The ``rsearch`` list [arcsec], strictly positive. RecipeError otherwise."""
    try:
        radii = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise RecipeError(f"parameter rsearch must be a comma-separated list of radii, not {text!r}") from None
    if not radii or any(r <= 0 for r in radii):
        raise RecipeError(f"parameter rsearch must list positive radii [arcsec], not {text!r}")
    return radii


# --------------------------------------------------------------------------------------
# offsets
# --------------------------------------------------------------------------------------


@dataclass
class OffsetSolution:
    """Per-exposure offsets [arcsec] in the reference tangent plane (ξ east, η north),
    the apparent displacement relative to the reference exposure (index 0)."""

    xi: np.ndarray
    eta: np.ndarray
    nmatch: np.ndarray         # median number of matches with the other exposures
    matched: np.ndarray        # bool: connected to the reference by matches


def compute_offsets(positions: Sequence[np.ndarray], fluxes: Sequence[np.ndarray], radii: Sequence[float],
                    nbins: int = 60, weight: bool = True) -> OffsetSolution:  # fmt: skip
    """Offsets from source positions ``positions[i]`` (n_i × 2, arcsec in a common tangent
    plane) and fluxes; see the module docstring (step 3)."""
    n = len(positions)
    pos = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in positions]
    flx = [np.clip(np.asarray(f, dtype=np.float64), 0.0, None) for f in fluxes]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]

    # First iteration: the displacement most separations agree on. Each separation votes
    # for the others within half a histogram bin (r0 / nbins): a sharper peak than the
    # fixed bins of a 2-D histogram, which split a match over two bins and, on small fields
    # whose stars are ~1 bin apart, let the stars' mutual separations pull the mean.
    r0 = radii[0]
    tolerance = r0 / nbins
    pair_d: dict[tuple[int, int], tuple[np.ndarray, float]] = {}
    for i, j in pairs:
        if len(pos[i]) == 0 or len(pos[j]) == 0:
            continue
        sep = (pos[j][:, None, :] - pos[i][None, :, :]).reshape(-1, 2)
        sep = sep[(np.abs(sep[:, 0]) <= r0) & (np.abs(sep[:, 1]) <= r0)]
        if len(sep) == 0:
            continue
        votes = np.array([len(v) for v in cKDTree(sep).query_ball_point(sep, tolerance)])
        best = int(np.argmax(votes))
        chance = len(sep) * np.pi * tolerance**2 / (2.0 * r0) ** 2
        # a peak that chance alone would give is no match (e.g. exposures that do not overlap)
        if votes[best] < max(3.0, 3.0 * (chance + 1.0)):
            continue
        near = np.hypot(*(sep - sep[best]).T) <= tolerance
        centre = sep[near].mean(axis=0)
        near = np.hypot(*(sep - centre).T) <= tolerance
        pair_d[(i, j)] = (sep[near].mean(axis=0), float(near.sum()))
    solution, matched = _solve(n, pair_d)

    # with a single radius, the matches are the first-iteration peaks
    nmatch_pairs: dict[tuple[int, int], int] = {key: int(count) for key, (_, count) in pair_d.items()}
    for radius in radii[1:]:
        pair_d = {}
        nmatch_pairs = {}
        for i, j in pairs:
            if len(pos[i]) == 0 or len(pos[j]) == 0:
                continue
            predicted = solution[j] - solution[i]
            tree = cKDTree(pos[i])
            dist, idx = tree.query(pos[j] - predicted, distance_upper_bound=radius)
            ok = np.isfinite(dist)
            # mutual nearest neighbours only: a spurious source must not steal a match
            back = cKDTree(pos[j] - predicted).query(pos[i], distance_upper_bound=radius)[1]
            ok[ok] &= back[idx[ok]] == np.flatnonzero(ok)
            if ok.sum() < 2:
                continue
            sep = pos[j][ok] - pos[i][idx[ok]]
            # drop chance pairs: separations far from the median one (4 σ, at least 0.1")
            resid = np.hypot(*(sep - np.median(sep, axis=0)).T)
            good = resid <= max(4.0 * 1.4826 * np.median(resid), 0.1)
            ok[np.flatnonzero(ok)[~good]] = False
            sep = sep[good]
            if len(sep) < 2:
                continue
            w = np.sqrt(flx[j][ok] * flx[i][idx[ok]]) if weight else np.ones(int(ok.sum()))
            if not np.any(w > 0):
                w = np.ones_like(w)
            pair_d[(i, j)] = ((sep * w[:, None]).sum(axis=0) / w.sum(), float(ok.sum()))
            nmatch_pairs[(i, j)] = int(ok.sum())
        solution, matched = _solve(n, pair_d)

    nmatch = np.zeros(n)
    for k in range(n):
        counts = [c for (i, j), c in nmatch_pairs.items() if k in (i, j)]
        nmatch[k] = float(np.median(counts)) if counts else 0.0
    return OffsetSolution(solution[:, 0], solution[:, 1], nmatch, matched)


def _solve(n: int, pair_d: Mapping[tuple[int, int], tuple[np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares for offsets o (n × 2) with o[0] = 0 and o[j] − o[i] = d_ij,
    over the exposures connected to the reference; the others get 0."""
    connected = {0}
    grew = True
    while grew:
        grew = False
        for i, j in pair_d:
            if (i in connected) != (j in connected):
                connected |= {i, j}
                grew = True
    members = sorted(connected - {0})
    out = np.zeros((n, 2))
    matched = np.zeros(n, dtype=bool)
    matched[sorted(connected)] = True
    if not members:
        return out, matched
    column = {k: c for c, k in enumerate(members)}
    rows, rhs = [], []
    for (i, j), (d, w) in pair_d.items():
        if i not in connected or j not in connected:
            continue
        row = np.zeros(len(members))
        if j in column:
            row[column[j]] += 1.0
        if i in column:
            row[column[i]] -= 1.0
        sw = np.sqrt(max(w, 1e-12))
        rows.append(row * sw)
        rhs.append(np.asarray(d) * sw)
    sol, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    for k, c in column.items():
        out[k] = sol[c]
    return out, matched


def tangent_plane(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    """Gnomonic (ξ, η) [arcsec] of RA/Dec [deg] about (ra0, dec0) (n × 2)."""
    a = np.deg2rad(np.asarray(ra, float) - ra0)
    d = np.deg2rad(np.asarray(dec, float))
    d0 = np.deg2rad(dec0)
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a)
    xi = np.cos(d) * np.sin(a) / cosc
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a)) / cosc
    return np.rad2deg(np.column_stack([xi, eta])) * 3600.0


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------


@dataclass
class AlignResult:
    """What :func:`align_images` found: per exposure the detections and the offsets [deg]."""

    images: list[FovImage]
    detections: list[Detection]
    ra_offset: np.ndarray      # deg of RA, subtract from the exposure's RA
    dec_offset: np.ndarray     # deg, subtract from the exposure's Dec
    nmatch: np.ndarray
    matched: np.ndarray


def align_images(images: Sequence[FovImage], params: Mapping[str, object]) -> AlignResult:
    """Detect sources in every image and compute the offsets (steps 2-3)."""
    radii = parse_rsearch(str(params.get("rsearch", "30.,4.,2.,0.8")))
    detections = []
    for im in images:
        detections.append(detect_sources(
            im.data, fwhm=float(params.get("fwhm", 5.0)), threshold=float(params.get("threshold", 15.0)),
            bkgignore=float(params.get("bkgignore", 0.05)), bkgfraction=float(params.get("bkgfraction", 0.1)),
            step=float(params.get("step", 0.5)), iterations=int(params.get("iterations", 100000)),
            srcmin=int(params.get("srcmin", 5)), srcmax=int(params.get("srcmax", 80)),
            roundmin=float(params.get("roundmin", -1.0)), roundmax=float(params.get("roundmax", 1.0)),
            sharpmin=float(params.get("sharpmin", 0.2)), sharpmax=float(params.get("sharpmax", 1.0)),
            bpixdistance=float(params.get("bpixdistance", 5.0)), where=im.label))
        logger.info("%s: %d sources above %.4g (background %.4g, MAD %.3g)", im.label,
                    len(detections[-1].sources), detections[-1].threshold,
                    detections[-1].background.median, detections[-1].background.mad)
    ref = images[0]
    ra0, dec0 = (float(v) for v in ref.wcs.wcs.crval[:2])
    positions, fluxes = [], []
    for im, det in zip(images, detections):
        ra, dec = im.pixel_to_world(det.sources.x, det.sources.y)
        positions.append(tangent_plane(ra, dec, ra0, dec0))
        fluxes.append(det.sources.flux)
    sol = compute_offsets(positions, fluxes, radii, int(params.get("nbins", 60)), bool(params.get("weight", True)))
    for im, ok in zip(images, sol.matched):
        if not ok:
            logger.warning("%s: no source matches the other exposures; offset left at 0 (QC NOMATCH)",
                           im.label)
    cosd = np.cos(np.deg2rad(dec0))
    return AlignResult(list(images), detections, sol.xi / 3600.0 / cosd, sol.eta / 3600.0, sol.nmatch, sol.matched)


def run(frames: Mapping[str, list[Path]], params: Mapping[str, object], outdir: Path) -> list[Product]:
    """Write OFFSET_LIST.fits, SOURCE_LIST_nnnn.fits, PREVIEW_FOV.fits (+ EXPOSURE_MAP.fits)."""
    if params.get("override_detection"):
        raise RecipeError("override_detection=true (input SOURCE_LIST catalogues) is not supported by musered")
    paths = list(frames.get("IMAGE_FOV", []))
    if len(paths) < 2:
        raise RecipeError(f"muse_exp_align needs at least 2 IMAGE_FOV, got {len(paths)}")
    images = select_fovs(paths, str(params.get("filter") or "white").split(",")[0].strip())
    result = align_images(images, params)
    recipe_params = {k: v for k, v in params.items()}
    raws = [(im.path, "IMAGE_FOV") for im in images]
    template = images[0].header
    products: list[Product] = []

    # SOURCE_LIST per exposure
    for k, (im, det) in enumerate(zip(images, result.detections), start=1):
        s = det.sources
        ra, dec = im.pixel_to_world(s.x, s.y)
        table = Table()
        table["Id"] = np.arange(1, len(s) + 1, dtype=np.int32)
        table["X"] = s.x + 1.0
        table["Y"] = s.y + 1.0
        table["Flux"] = s.flux
        table["Sharpness"] = s.sharpness
        table["Roundness"] = s.roundness
        table["RA"] = ra
        table["DEC"] = dec
        table["RA_CORR"] = ra - result.ra_offset[k - 1]
        table["DEC_CORR"] = dec - result.dec_offset[k - 1]
        for col, unit in (("X", "pix"), ("Y", "pix"), ("RA", "deg"), ("DEC", "deg"), ("RA_CORR", "deg"),
                          ("DEC_CORR", "deg")):
            table[col].unit = unit
        header = product_header("SOURCE_LIST", "muse_exp_align", recipe_params, [raws[k - 1]], template=im.header)
        add_qc(header, [
            ("ESO QC EXPALIGN SRC POSITIONS", "detection", "origin of positions"),
            ("ESO QC EXPALIGN NDET", len(s), "Number of detected sources"),
            ("ESO QC EXPALIGN BKG MEDIAN", det.background.median, "background median"),
            ("ESO QC EXPALIGN BKG MAD", det.background.mad, "background MAD"),
            ("ESO QC EXPALIGN THRESHOLD", det.threshold, "detection level"),
        ])
        path = outdir / f"SOURCE_LIST_{k:04d}.fits"
        fits.HDUList([fits.PrimaryHDU(header=header), fits.table_to_hdu(table)]).writeto(path, overwrite=True)
        products.append(Product(path, "SOURCE_LIST", (), {"NDET": len(s)}))

    # OFFSET_LIST
    table = Table()
    table["DATE_OBS"] = [im.date_obs for im in images]
    table["MJD_OBS"] = np.array([im.mjd_obs for im in images])
    table["RA_OFFSET"] = result.ra_offset
    table["DEC_OFFSET"] = result.dec_offset
    table["FLUX_SCALE"] = np.full(len(images), np.nan)   # the DRS writes no flux scale
    table["RA_OFFSET"].unit = table["DEC_OFFSET"].unit = "deg"
    header = product_header("OFFSET_LIST", "muse_exp_align", recipe_params, raws, template=template)
    dra = result.ra_offset * 3600.0 * np.cos(np.deg2rad(float(images[0].wcs.wcs.crval[1])))
    ddec = result.dec_offset * 3600.0
    qc: list[tuple[str, object, str]] = []
    for k, det in enumerate(result.detections, start=1):
        qc.append((f"ESO QC EXPALIGN NDET{k}", len(det.sources), "detected sources"))
        qc.append((f"ESO QC EXPALIGN NMATCH{k}", int(result.nmatch[k - 1]), "median matches"))
    qc += [
        ("ESO QC EXPALIGN NMATCH MIN", int(result.nmatch.min()), "min of NMATCHi"),
        ("ESO QC EXPALIGN NOMATCH", int((~result.matched).sum()), "images without match"),
    ]
    for axis, values in (("RA", dra), ("DEC", ddec)):
        qc += [
            (f"ESO QC EXPALIGN OFFSET {axis} MIN", float(values.min()), "[arcsec]"),
            (f"ESO QC EXPALIGN OFFSET {axis} MAX", float(values.max()), "[arcsec]"),
            (f"ESO QC EXPALIGN OFFSET {axis} MEAN", float(values.mean()), "[arcsec]"),
            (f"ESO QC EXPALIGN OFFSET {axis} STDEV", float(values.std(ddof=1)), "[arcsec]"),
        ]
    add_qc(header, qc)
    path = outdir / "OFFSET_LIST.fits"
    fits.HDUList([fits.PrimaryHDU(header=header), fits.table_to_hdu(table)]).writeto(path, overwrite=True)
    products.insert(0, Product(path, "OFFSET_LIST", (), {k.removeprefix("ESO QC EXPALIGN "): v for k, v, _ in qc}))

    # PREVIEW_FOV (+ EXPOSURE_MAP)
    preview, expmap, wcs_header = mosaic(images, result.ra_offset, result.dec_offset)
    header = product_header("PREVIEW_FOV", "muse_exp_align", recipe_params, raws, template=template)
    path = outdir / "PREVIEW_FOV.fits"
    _write_image(path, header, preview, wcs_header, "DATA", template.get("BUNIT"))
    products.append(Product(path, "PREVIEW_FOV"))
    if params.get("expmap"):
        header = product_header("EXPOSURE_MAP", "muse_exp_align", recipe_params, raws, template=template)
        covered = expmap[expmap > 0]
        add_qc(header, [
            ("ESO QC EXPALIGN EXPTIME MIN", float(covered.min()) if covered.size else 0.0, "[s]"),
            ("ESO QC EXPALIGN EXPTIME MAX", float(expmap.max()), "[s]"),
            ("ESO QC EXPALIGN EXPTIME AVG", float(covered.mean()) if covered.size else 0.0, "[s]"),
            ("ESO QC EXPALIGN EXPTIME MED", float(np.median(covered)) if covered.size else 0.0,
             "[s]"),
        ])
        path = outdir / "EXPOSURE_MAP.fits"
        _write_image(path, header, expmap, wcs_header, "EXPMAP", "s")
        products.append(Product(path, "EXPOSURE_MAP"))
    return products


def mosaic(images: Sequence[FovImage], ra_offset: np.ndarray, dec_offset: np.ndarray,
           ) -> tuple[np.ndarray, np.ndarray, fits.Header]:  # fmt: skip
    """Average of the corrected images on a north-up TAN grid (nearest neighbour), the
    exposure time per pixel [s], and the grid's WCS cards. The grid has the reference's
    pixel size and its tangent point; it covers every input."""
    ref = images[0]
    ra0 = float(ref.wcs.wcs.crval[0]) - float(ra_offset[0])
    dec0 = float(ref.wcs.wcs.crval[1]) - float(dec_offset[0])
    scale = float(np.sqrt(abs(np.linalg.det(ref.wcs.pixel_scale_matrix)))) * 3600.0   # arcsec/pix
    corners = []
    for im, dra, ddec in zip(images, ra_offset, dec_offset):
        ny, nx = im.data.shape
        cx = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
        cy = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
        ra, dec = im.pixel_to_world(cx, cy)
        corners.append(tangent_plane(ra - dra, dec - ddec, ra0, dec0))
    corners = np.vstack(corners)
    lo = np.floor(corners.min(axis=0) / scale)
    hi = np.ceil(corners.max(axis=0) / scale)
    nx, ny = int(hi[0] - lo[0]), int(hi[1] - lo[1])
    header = fits.Header()
    header["WCSAXES"] = 2
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CUNIT1"], header["CUNIT2"] = "deg", "deg"
    # East left: ξ decreases with x; pixel 1 sits at ξ = hi - 0.5 pixels.
    header["CRPIX1"], header["CRPIX2"] = hi[0] + 0.5, -lo[1] + 0.5
    header["CRVAL1"], header["CRVAL2"] = ra0, dec0
    header["CD1_1"], header["CD1_2"], header["CD2_1"], header["CD2_2"] = -scale / 3600.0, 0.0, 0.0, scale / 3600.0
    out_wcs = WCS(header)
    total = np.zeros((ny, nx))
    count = np.zeros((ny, nx))
    expmap = np.zeros((ny, nx))
    yy, xx = np.mgrid[0:ny, 0:nx]
    ra, dec = out_wcs.all_pix2world(xx.ravel().astype(float), yy.ravel().astype(float), 0)
    for im, dra, ddec in zip(images, ra_offset, dec_offset):
        px, py = im.world_to_pixel(ra + dra, dec + ddec)
        ix, iy = np.rint(px).astype(np.int64), np.rint(py).astype(np.int64)
        inside = (ix >= 0) & (iy >= 0) & (ix < im.data.shape[1]) & (iy < im.data.shape[0])
        values = np.full(ix.size, np.nan)
        values[inside] = im.data[iy[inside], ix[inside]]
        good = np.isfinite(values).reshape(ny, nx)
        total[good] += values.reshape(ny, nx)[good]
        count[good] += 1
        expmap[good] += im.exptime
    with np.errstate(invalid="ignore", divide="ignore"):
        preview = np.where(count > 0, total / count, np.nan)
    return preview.astype(np.float32), expmap.astype(np.float32), header


def _write_image(path: Path, primary: fits.Header, data: np.ndarray, wcs: fits.Header, extname: str,
                 bunit: str | None) -> None:  # fmt: skip
    ext = fits.Header()
    ext["EXTNAME"] = extname
    if bunit:
        ext["BUNIT"] = bunit
    ext.extend(wcs.cards)
    fits.HDUList([fits.PrimaryHDU(header=primary), fits.ImageHDU(data, header=ext)]).writeto(path, overwrite=True)


RECIPE = register(Recipe(
    name="muse_exp_align",
    inputs=("IMAGE_FOV",),
    calibs=(),
    outputs=("OFFSET_LIST", "SOURCE_LIST", "PREVIEW_FOV", "EXPOSURE_MAP"),
    params=PARAMS,
    run=run,
    target="dataset",
    min_inputs=2,
    description="Create a coordinate offset table to align exposures (OFFSET_LIST) from their IMAGE_FOV.",
    summary_qc=(("NMATCH MIN", "NMATCH MIN"), ("NOMATCH", "NOMATCH")),
))
