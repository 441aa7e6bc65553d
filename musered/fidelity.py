"""How close reduced products come to the simulator's truth: the demo's closing table.

Each check reads products from the database and the truth written by ``musered simulate``
and returns :class:`Fidelity` rows (quantity, measured, goal, whether it is met). A check
whose products do not exist yet returns no row. Checks read the products of one reduction
``version`` (the settings' version).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from sqlalchemy import select

from .db import Database, Reduced


@dataclass(frozen=True)
class Fidelity:
    quantity: str
    measured: str
    goal: str
    ok: bool


def _products(database: Database, tag: str, version: str) -> list[Path]:
    with database.session() as session:
        rows = session.scalars(select(Reduced).where(Reduced.PRO_CATG == tag, Reduced.status == "ok",
                                                     Reduced.version == str(version))).all()
    return [Path(row.path) for row in rows if Path(row.path).is_file()]


def bias_levels(database: Database, truth, version: str) -> list[Fidelity]:
    """Master-bias raw level per output (QC BIAS LEVELn MEAN) vs the injected mean level of
    the input frames' data regions, in ADU."""
    products = _products(database, "MASTER_BIAS", version)
    if not products:
        return []
    differences = []
    for path in products:
        with fits.open(path) as hdul:
            inputs = [hdul[0].header.get(f"ESO PRO REC1 RAW{i} NAME") for i in range(1, 100)]
            inputs = [name for name in inputs if name]
            for hdu in hdul[1:]:
                extname = hdu.header.get("EXTNAME", "")
                if not extname.endswith(".DATA"):
                    continue
                ifu = int(extname[4:6])
                for port in range(1, 5):
                    measured = hdu.header.get(f"ESO QC BIAS LEVEL{port} MEAN")
                    injected = [truth.frames[name]["bias_mean"][ifu - 1][port - 1]
                                for name in inputs if name in truth.frames]
                    if measured is not None and injected:
                        differences.append(abs(measured - float(np.mean(injected))))
    if not differences:
        return []
    worst = max(differences)
    return [Fidelity("master bias level per output", f"max |Δ| {worst:.3f} ADU", "< 0.1 ADU", worst < 0.1)]


def _ifus(path: Path) -> list[int]:
    with fits.open(path) as hdul:
        return sorted({int(hdu.name[4:6]) for hdu in hdul[1:] if hdu.name.startswith("CHAN")})


def trace_edges(database: Database, truth, version: str) -> list[Fidelity]:
    """TRACE_TABLE slice edges and centres vs the injected ones, in pixels, every row."""
    from recipes.algorithms.instrument import polyval_y
    from recipes.io import read_table_product

    products = _products(database, "TRACE_TABLE", version)
    if not products:
        return []
    ny = truth.data["trimmed_shape"][0]
    y = np.arange(1, ny + 1, dtype=float)
    errors = []
    for path in products:
        for ifu in _ifus(path):
            table, _ = read_table_product(path, ifu)
            for s, geometry in enumerate(truth.slices(ifu)):
                for k, name in ((0, "centre"), (1, "left"), (2, "right")):
                    fitted = polyval_y([table[f"tc{k}_{j:02d}"][s] for j in range(6)], y)
                    errors.append(fitted - polyval_y(getattr(geometry, name), y))
    errors = np.concatenate(errors)
    rms, worst = float(np.sqrt(np.mean(errors**2))), float(np.abs(errors).max())
    return [Fidelity("trace edges and centres", f"RMS {rms:.4f}, max {worst:.3f} px",
                     "< 0.02 / 0.05 px", rms < 0.02 and worst < 0.05)]


def wavelengths(database: Database, truth, version: str) -> list[Fidelity]:
    """WAVECAL_TABLE λ(x, y) vs the injected solution over every pixel inside the slices, in Å."""
    from recipes.algorithms.instrument import polyval_y, wavecal_eval
    from recipes.io import read_table_product

    products = _products(database, "WAVECAL_TABLE", version)
    if not products:
        return []
    ny, nx = truth.data["trimmed_shape"]
    y = np.arange(1, ny + 1, dtype=float)[:, None]
    x = np.arange(1, nx + 1, dtype=float)[None, :]
    errors = []
    for path in products:
        for ifu in _ifus(path):
            table, _ = read_table_product(path, ifu)
            for s, geometry in enumerate(truth.slices(ifu)):
                inside = (x >= polyval_y(geometry.left, y) + 0.5) & (x <= polyval_y(geometry.right, y) - 0.5)
                yy = np.broadcast_to(y, inside.shape)[inside]
                xx = np.broadcast_to(x, inside.shape)[inside]
                fitted = np.array([[table[f"wlc{i}{j}"][s] for j in range(7)] for i in range(3)])
                errors.append(wavecal_eval(fitted, xx, yy) - wavecal_eval(geometry.wlc, xx, yy))
    errors = np.concatenate(errors)
    rms, worst = float(np.sqrt(np.mean(errors**2))), float(np.abs(errors).max())
    return [Fidelity("wavelength solution", f"RMS {rms:.4f}, max {worst:.3f} Å",
                     "< 0.01 / 0.05 Å", rms < 0.01 and worst < 0.05)]


def lsf_widths(database: Database, truth, version: str) -> list[Fidelity]:
    """LSF_PROFILE FWHM vs the injected LSF (widened by the pixel, as the profile records
    it) at 5 wavelengths of every slice, and the profile integrals."""
    from recipes.algorithms.lsfmodel import box_gauss_fwhm, evaluate_lsf, profile_fwhm, read_lsf_profile

    products = _products(database, "LSF_PROFILE", version)
    if not products:
        return []
    ny = truth.data["trimmed_shape"][0]
    lo, hi = truth.data["lambda_range"]
    wavelengths = np.linspace(lo + 0.15 * (hi - lo), hi - 0.15 * (hi - lo), 5)
    rows = np.arange(1.0, ny + 1.0)
    deviations, integrals = [], []
    for path in products:
        profile = read_lsf_profile(path)
        for ifu, cube in profile.items():
            for geometry in truth.slices(ifu):
                centre_x = np.polynomial.polynomial.polyval(ny / 2, geometry.centre)
                for lam in wavelengths:
                    y = np.interp(lam, geometry.wavelength(centre_x, rows), rows)
                    width = float(geometry.wavelength(centre_x, y + 0.5) - geometry.wavelength(centre_x, y - 0.5))
                    expected = box_gauss_fwhm(float(geometry.lsf_fwhm(lam)), width)
                    values = evaluate_lsf(profile, ifu, geometry.slice_ccd, lam, cube.grid.dlam)
                    deviations.append(abs(profile_fwhm(cube.grid.dlam, values) / expected - 1))
                    integrals.append(float(np.trapezoid(values, cube.grid.dlam)))
    worst = max(deviations)
    worst_integral = max(abs(value - 1) for value in integrals)
    return [
        Fidelity("LSF FWHM at 5 wavelengths", f"max {100 * worst:.2f} %", "< 2 %", worst < 0.02),
        Fidelity("LSF profile integral", f"1 ± {worst_integral:.4f}", "1 ± 0.01", worst_integral < 0.01),
    ]


def alignment_offsets(database: Database, truth, version: str) -> list[Fidelity]:
    """OFFSET_LIST offsets vs the injected pointing errors, relative to the first exposure,
    in arcsec. Convention (muse_exp_align): corrected RA = header RA − RA_OFFSET, so
    RA_OFFSET_i − RA_OFFSET_0 must equal (RA_i − trueRA_i) − (RA_0 − trueRA_0)."""
    from astropy.table import Table

    products = _products(database, "OFFSET_LIST", version)
    if not products:
        return []
    errors = []
    for path in products:
        table = Table.read(path)
        expected, measured = [], []
        for row in table:
            exposure = truth.exposures.get(f"MUSE.{str(row['DATE_OBS']).strip()}.fits")
            if exposure is None:
                continue
            cos_dec = np.cos(np.radians(exposure["dec"]))
            expected.append(((exposure["ra"] - exposure["true_ra"]) * cos_dec, exposure["dec"] - exposure["true_dec"]))
            measured.append((float(row["RA_OFFSET"]) * cos_dec, float(row["DEC_OFFSET"])))
        if len(expected) < 2:
            continue
        expected_arr, measured_arr = np.array(expected) * 3600, np.array(measured) * 3600
        errors.append((measured_arr - measured_arr[0]) - (expected_arr - expected_arr[0]))
    if not errors:
        return []
    worst = float(np.abs(np.concatenate(errors)).max())
    return [Fidelity("exposure offsets (exp-align)", f"max |Δ| {worst:.3f}\"", "< 0.05\"", worst < 0.05)]


def _rows(database: Database, tag: str, recipe: str, version: str) -> list[Reduced]:
    with database.session() as session:
        rows = session.scalars(select(Reduced).where(Reduced.PRO_CATG == tag, Reduced.recipe_name == recipe,
                                                     Reduced.status == "ok", Reduced.version == str(version))).all()
    return [row for row in rows if Path(row.path).is_file()]


def final_cube(database: Database, truth, version: str) -> list[Fidelity]:
    """The combined cube (muse_exp_combine DATACUBE_FINAL) against the scene
    (:mod:`musered.cubetruth`): star fluxes / truth, the same relative to the single
    exposures' scipost cubes (combining must not change fluxes), star positions, and the
    noise over the one its STAT predicts from the input variances."""
    from .cubetruth import cube_scene, fit_stars, noise_ratio, relative_flux_ratios, star_flux_ratios

    if truth.profile != "mini" or "stars" not in truth.sources:
        return []   # the full profile's cube is too large to model here
    from recipes.registry import step_recipe

    combine = step_recipe("exp-combine", "drs")
    rows = []
    for product in _rows(database, "DATACUBE_FINAL", combine.name, version):
        if not cube_exposures_of(product) & set(truth.exposures):
            continue   # not a cube of this simulation
        scene = cube_scene(Path(product.path), truth)
        ratios = star_flux_ratios(scene)
        if ratios:
            values = np.array(list(ratios.values()))
            worst = float(np.abs(values - 1).max())
            rows.append(Fidelity("star fluxes in the final cube / truth",
                                 f"{len(values)} stars, {values.min():.3f} … {values.max():.3f}", "1 ± 0.01",
                                 worst < 0.01))
        singles = [cube_scene(Path(cube.path), truth)
                   for cube in _rows(database, "DATACUBE_FINAL", combine.from_recipe, version)
                   if cube_exposures_of(cube) & set(scene.exposures)]
        relative = list(relative_flux_ratios(scene, singles).values())
        if relative:
            worst = float(np.abs(np.array(relative) - 1).max())
            rows.append(Fidelity("star fluxes final / single-exposure cubes", f"{len(relative)} stars, max |Δ| "
                                 f"{100 * worst:.2f} %", "< 1 %", worst < 0.01))
        stars = fit_stars(scene)
        if stars:
            worst = max(float(np.hypot(f.dxi, f.deta)) for f in stars.values())
            rows.append(Fidelity("star centroids in the final cube", f"{len(stars)} stars, max |Δ| {worst:.3f}\"",
                                 "< 0.05\"", worst < 0.05))
        ratio, n = noise_ratio(scene)
        if n:
            rows.append(Fidelity("final cube noise / √STAT (sky spaxels)", f"{ratio:.3f} ({n} spaxels)", "1 ± 0.1",
                                 abs(ratio - 1) < 0.1))
    return rows


def cube_exposures_of(row: Reduced) -> set[str]:
    """Raw names of the exposures in the cube of a database row (from its header)."""
    from .cubetruth import cube_exposures

    return set(cube_exposures(fits.getheader(row.path)))


CHECKS: tuple[Callable[[Database, object, str], list[Fidelity]], ...] = (
    bias_levels, trace_edges, wavelengths, lsf_widths, alignment_offsets, final_cube)


def fidelity_table(database: Database, truth, version: str) -> list[Fidelity]:
    """Every check that has products of reduction ``version`` to look at, in pipeline order."""
    rows: list[Fidelity] = []
    for check in CHECKS:
        rows.extend(check(database, truth, version))
    return rows
