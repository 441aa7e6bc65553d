"""The sky as lines plus continuum (muse_scipost ``skymethod`` ``model`` and ``subtract-model``).

* ``model``: :func:`fit_sky_model` fits the SKY_LINES fluxes by linear least squares with
  the mean LSF of the exposure's slices (LSF_PROFILE, :func:`recipes.algorithms.lsfmodel.evaluate_lsf`,
  or a Gaussian whose width is fitted on the brightest line when no LSF_PROFILE is given)
  plus a smooth continuum, to the sky spectrum of :func:`recipes.algorithms.skysub.measure_sky`;
  the continuum is then the residual spectrum − lines (or SKY_CONTINUUM when given);
  :func:`fit_exposure_model` does all this for one exposure;
* ``subtract-model``: the given SKY_LINES and SKY_CONTINUUM (:func:`given_model`);
* :func:`subtract_model` removes lines (each row with its own slice's LSF) and continuum
  from every row.

Units: table units (1e-20 erg/s/cm²/Å per spaxel after flux calibration); line fluxes in
table units × Å (per spaxel) inside, per arcsec² in the SKY_LINES/SKY_CONTINUUM files
(:data:`SPAXEL_AREA_ARCSEC2` converts); wavelengths in Å.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from recipes.base import RecipeError
from recipes.kernels.binstats import stable_bin_order
from recipes.algorithms.origin import unpack_origin
from recipes.algorithms.pixtable import PixTable
from recipes.algorithms.skysub import SkySpectrum, sky_spectrum

#: Half-width [Å] of the window in which a line's LSF is evaluated.
LINE_WINDOW = 8.0
#: Knot spacing [Å] of the smooth continuum fitted together with the line fluxes.
CONTINUUM_KNOTS = 20.0
#: Rows per chunk of the whole-table passes (bounds their float64 temporaries).
_CHUNK = 8_000_000
#: WFM spaxel [arcsec²]: SKY_LINES and SKY_CONTINUUM fluxes are per arcsec², the rows per spaxel.
SPAXEL_AREA_ARCSEC2 = 0.04


# --------------------------------------------------------------------------------------
# SKY_LINES and SKY_CONTINUUM
# --------------------------------------------------------------------------------------


def read_sky_lines(path: Path) -> Table:
    """SKY_LINES: ``name``, ``group``, ``lambda`` [Å], ``flux`` [1e-20 erg/s/cm²/arcsec²]
    and, when present, ``dq`` (rows with dq > 0 are dropped, as the DRS does) from the
    first table extension.

    The flux unit may be spelt the DRS way (``10**(-20)*erg/(s cm^2 arcsec^2)``) or the
    astropy way (``10**(-20)*erg/(s*cm**2*arcsec**2)``); ``erg/(s cm^2 arcsec^2)`` without
    the 1e-20 is scaled by 1e20; no unit means 1e-20 erg/s/cm²/arcsec². Other units are a
    RecipeError. The unit is read from TUNIT, not parsed by astropy (which rejects the DRS
    spelling).
    """
    path = Path(path)
    try:
        with fits.open(path) as hl:
            hdu = hl[1]
            table = Table(hdu.data)
            units = {(hdu.columns[i].name or "").lower(): (hdu.columns[i].unit or "") for i in range(len(hdu.columns))}
    except (OSError, ValueError, IndexError, TypeError) as exc:
        raise RecipeError(f"{path}: cannot read SKY_LINES ({str(exc).splitlines()[0]})") from None
    cols = {c.lower(): c for c in table.colnames}
    if "lambda" not in cols or "flux" not in cols:
        raise RecipeError(f"{path}: SKY_LINES needs columns lambda and flux")
    unit = "".join(units.get("flux", "").split()).replace("**", "^").replace("*", "")
    scale = {"": 1.0, "10^(-20)erg/(scm^2arcsec^2)": 1.0, "erg/(scm^2arcsec^2)": 1e20}.get(unit)
    if scale is None:
        raise RecipeError(f"{path}: SKY_LINES flux unit '{units['flux']}' not supported "
                          "(expected 10**(-20)*erg/(s cm^2 arcsec^2))")
    keep = np.asarray(table[cols["dq"]]) <= 0 if "dq" in cols else np.ones(len(table), dtype=bool)
    table = table[keep]
    out = Table({"lambda": np.asarray(table[cols["lambda"]], dtype=np.float64),
                 "flux": np.asarray(table[cols["flux"]], dtype=np.float64) * scale})  # fmt: skip
    out["name"] = [str(x).strip() for x in table[cols["name"]]] if "name" in cols else [f"L{x:.2f}" for x in out["lambda"]]
    out["group"] = np.asarray(table[cols["group"]], dtype=np.int32) if "group" in cols else 0
    return out


def read_sky_continuum(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SKY_CONTINUUM: ``lambda`` [Å] and ``flux`` (table units)."""
    path = Path(path)
    try:
        table = Table.read(path, hdu=1)
    except (OSError, ValueError, IndexError) as exc:
        raise RecipeError(f"{path}: cannot read SKY_CONTINUUM ({str(exc).splitlines()[0]})") from None
    cols = {c.lower(): c for c in table.colnames}
    if "lambda" not in cols or "flux" not in cols:
        raise RecipeError(f"{path}: SKY_CONTINUUM needs columns lambda and flux")
    lam = np.asarray(table[cols["lambda"]], dtype=np.float64)
    order = np.argsort(lam)
    return lam[order], np.asarray(table[cols["flux"]], dtype=np.float64)[order]


# --------------------------------------------------------------------------------------
# line + continuum model
# --------------------------------------------------------------------------------------


#: ``lsf(ifu, slice, line_lambda, dlam) -> profile [1/Å]``
LsfFunction = Callable[[int, int, float, np.ndarray], np.ndarray]


def gaussian_lsf(sigma: float) -> LsfFunction:
    """An LSF that is the same unit-area Gaussian of ``sigma`` [Å] in every slice."""
    norm = 1.0 / (math.sqrt(2 * math.pi) * sigma)

    def lsf(ifu: int, slice_no: int, lam_line: float, dlam: np.ndarray) -> np.ndarray:
        return norm * np.exp(-0.5 * (np.asarray(dlam) / sigma) ** 2)

    return lsf


def profile_lsf(profile: dict) -> LsfFunction:
    """The LSF of an LSF_PROFILE (:func:`recipes.algorithms.lsfmodel.read_lsf_profile` result)."""
    from recipes.algorithms.lsfmodel import evaluate_lsf

    def lsf(ifu: int, slice_no: int, lam_line: float, dlam: np.ndarray) -> np.ndarray:
        return evaluate_lsf(profile, ifu, slice_no, lam_line, dlam)

    return lsf


def fit_line_width(spectrum: SkySpectrum, lines: Table) -> float:
    """Gaussian σ [Å] of the brightest catalogue line in the spectrum's range (fit of a
    Gaussian plus constant within ±5 Å). RecipeError when no line can be fitted."""
    from scipy.optimize import curve_fit

    lo, hi = spectrum.lam[0] + 6.0, spectrum.lam[-1] - 6.0
    cand = [(float(f), float(lam)) for lam, f in zip(lines["lambda"], lines["flux"]) if lo < lam < hi]
    for _, lam0 in sorted(cand, reverse=True)[:5]:
        sel = np.abs(spectrum.lam - lam0) < 5.0
        x, y = spectrum.lam[sel], spectrum.data[sel]
        if x.size < 8:
            continue
        base = float(np.median(np.concatenate([y[:3], y[-3:]])))
        amp = float(y.max() - base)
        if amp <= 0:
            continue

        def gauss(xx, a, c, s, b):
            return a * np.exp(-0.5 * ((xx - c) / s) ** 2) + b

        try:
            p, _ = curve_fit(gauss, x, y, p0=(amp, lam0, 1.1, base), maxfev=2000)
        except (RuntimeError, ValueError):
            continue
        sigma = abs(float(p[2]))
        if 0.3 < sigma < 4.0:
            return sigma
    raise RecipeError("cannot measure the sky-line width: no bright SKY_LINES line in the data (give LSF_PROFILE)")


@dataclass
class SkyModel:
    """Sky lines (``lam`` [Å], fitted ``flux`` [table units × Å], ``name``, ``group``) and the
    continuum sampled at ``cont_lam`` [Å] (``cont``)."""

    lam: np.ndarray
    flux: np.ndarray
    name: list[str]
    group: np.ndarray
    cont_lam: np.ndarray
    cont: np.ndarray

    def continuum(self, lam) -> np.ndarray:
        return np.interp(np.asarray(lam, dtype=np.float64), self.cont_lam, self.cont)

    def lines_table(self) -> Table:
        return Table({"name": self.name, "group": self.group, "lambda": self.lam, "flux": self.flux})

    def continuum_table(self) -> Table:
        return Table({"lambda": self.cont_lam, "flux": self.cont})


def _hat_basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Linear B-spline (hat) functions on ``knots`` evaluated at ``x``: (len(x), len(knots))."""
    basis = np.zeros((x.size, knots.size))
    j = np.clip(np.searchsorted(knots, x) - 1, 0, knots.size - 2)
    t = np.clip((x - knots[j]) / (knots[j + 1] - knots[j]), 0.0, 1.0)
    rows = np.arange(x.size)
    basis[rows, j] = 1 - t
    basis[rows, j + 1] += t
    return basis


def fit_sky_model(
    spectrum: SkySpectrum,
    lines: Table,
    mean_lsf: Callable[[float, np.ndarray], np.ndarray],
    continuum: tuple[np.ndarray, np.ndarray] | None = None,
) -> SkyModel:
    """Fit the line fluxes and the continuum to ``spectrum``.

    ``mean_lsf(line_lambda, dlam)`` is the exposure's mean LSF [1/Å]. The lines inside the
    spectrum's range and a hat-function continuum (knots every 20 Å) are fitted together
    by linear least squares (bins weighted by their row counts); the final continuum is
    the spectrum minus the fitted lines (the DRS keeps that residual), or the given
    SKY_CONTINUUM interpolated onto the spectrum's wavelengths.
    """
    lam = spectrum.lam
    inside = (np.asarray(lines["lambda"]) > lam[0] - 3.0) & (np.asarray(lines["lambda"]) < lam[-1] + 3.0)
    sel = lines[inside]
    line_lam = np.asarray(sel["lambda"], dtype=np.float64)
    columns = [mean_lsf(float(ll), lam - ll) * (np.abs(lam - ll) < LINE_WINDOW) for ll in line_lam]
    if continuum is None:
        knots = np.linspace(lam[0], lam[-1], max(2, int(math.ceil((lam[-1] - lam[0]) / CONTINUUM_KNOTS)) + 1))
        cont_basis = _hat_basis(lam, knots)
        target = spectrum.data
    else:
        cont_basis = np.zeros((lam.size, 0))
        target = spectrum.data - np.interp(lam, continuum[0], continuum[1])
    design = np.column_stack([*columns, cont_basis]) if columns else cont_basis
    w = np.sqrt(spectrum.count.astype(np.float64))
    ok = np.isfinite(target)
    coef, *_ = np.linalg.lstsq(design[ok] * w[ok, None], target[ok] * w[ok], rcond=None)
    flux = coef[: line_lam.size]
    line_model = design[:, : line_lam.size] @ flux if line_lam.size else np.zeros(lam.size)
    if continuum is None:
        cont = spectrum.data - line_model
    else:
        cont = np.interp(lam, continuum[0], continuum[1])
    return SkyModel(line_lam, flux, [str(n) for n in sel["name"]], np.asarray(sel["group"], dtype=np.int32),
                    lam.copy(), cont)  # fmt: skip


def mean_slice_lsf(pt: PixTable, lsf: LsfFunction) -> Callable[[float, np.ndarray], np.ndarray]:
    """The mean over the table's (IFU, slice) pairs of ``lsf`` (for fitting the mean spectrum)."""
    ifu, slice_, _, _ = unpack_origin(pt.origin)
    pairs = np.flatnonzero(np.bincount(ifu.astype(np.int64) * 64 + slice_))  # = np.unique, without a sort

    def mean(lam_line: float, dlam: np.ndarray) -> np.ndarray:
        total = np.zeros(np.shape(dlam))
        for pair in pairs:
            i, s = divmod(int(pair), 64)
            total += lsf(i, s, lam_line, dlam)
        return total / max(pairs.size, 1)

    return mean


def subtract_model(pt: PixTable, model: SkyModel, lsf: LsfFunction) -> None:
    """Subtract lines (each row with its own slice's LSF) and continuum, in place.

    Works one (IFU, slice) group at a time (a chunk of rows without lines), so that no
    float64 column of the whole table is needed.
    """
    data = pt.columns["data"]
    if not model.lam.size:
        for c in range(0, pt.nrows, _CHUNK):
            data[c : c + _CHUNK] -= model.continuum(pt.lam[c : c + _CHUNK]).astype(np.float32)
        return
    ifu, slice_, _, _ = unpack_origin(pt.origin)
    key = ifu.astype(np.int64) * 64 + slice_
    del ifu, slice_
    # rows grouped by (IFU, slice) as a stable argsort would, by a counting sort (O(n))
    order, starts = stable_bin_order(key, 32 * 64)
    del key
    for k in np.flatnonzero(np.diff(starts)):
        rows = order[starts[k] : starts[k + 1]]
        i, s = divmod(int(k), 64)
        lam = pt.lam[rows].astype(np.float64)
        lam_order = np.argsort(lam)
        sorted_lam = lam[lam_order]
        acc = np.zeros(rows.size)
        for ll, f in zip(model.lam, model.flux):
            lo, hi = np.searchsorted(sorted_lam, [ll - LINE_WINDOW, ll + LINE_WINDOW])
            if hi <= lo:
                continue
            idx = lam_order[lo:hi]
            acc[idx] += f * lsf(i, s, float(ll), lam[idx] - ll)
        data[rows] -= (model.continuum(lam) + acc).astype(np.float32)


# --------------------------------------------------------------------------------------
# one exposure
# --------------------------------------------------------------------------------------


def read_lsf(paths: Sequence[Path]) -> LsfFunction | None:
    """The LSF of the LSF_PROFILE files (one per IFU, merged), None without any."""
    if not paths:
        return None
    from recipes.algorithms.lsfmodel import read_lsf_profile

    profile: dict = {}
    for path in paths:
        profile.update(read_lsf_profile(Path(path)))
    return profile_lsf(profile)


def given_model(lines_path: Path, continuum_path: Path) -> SkyModel:
    """``subtract-model``: the SKY_LINES and SKY_CONTINUUM of the files, per spaxel."""
    lines = read_sky_lines(lines_path)
    clam, cflux = read_sky_continuum(continuum_path)
    flux = np.asarray(lines["flux"], float) * SPAXEL_AREA_ARCSEC2
    return SkyModel(np.asarray(lines["lambda"], float), flux, [str(x) for x in lines["name"]],
                    np.asarray(lines["group"], np.int32), clam, cflux * SPAXEL_AREA_ARCSEC2)  # fmt: skip


def fit_exposure_model(
    pt: PixTable, spectrum: SkySpectrum, lines: Table, lsf: LsfFunction | None, continuum_path: Path | None,
    sampling: float, csampling: float,
) -> tuple[SkyModel, LsfFunction]:  # fmt: skip
    """``model``: lines and continuum fitted to the exposure's sky ``spectrum`` (``sampling``
    Å bins) with the mean of the slices' ``lsf`` (without one, a Gaussian of the width
    measured on the data); the continuum from SKY_CONTINUUM when given, else the fit's,
    rebinned to ``csampling`` Å. Returns the model and the LSF to subtract it with."""
    if lsf is None:
        inside = (np.asarray(lines["lambda"]) > spectrum.lam[0]) & (np.asarray(lines["lambda"]) < spectrum.lam[-1])
        # without LSF_PROFILE the width is measured on the data (unused when no line is in range)
        lsf = gaussian_lsf(fit_line_width(spectrum, lines) if inside.any() else 1.1)
    continuum = read_sky_continuum(continuum_path) if continuum_path is not None else None
    if continuum is not None:
        continuum = (continuum[0], continuum[1] * SPAXEL_AREA_ARCSEC2)
    model = fit_sky_model(spectrum, lines, mean_slice_lsf(pt, lsf), continuum)
    if continuum is None and abs(csampling - sampling) > 1e-9:
        cs = sky_spectrum(model.cont_lam, model.cont, np.zeros(model.cont.size), csampling, 0.0)
        model.cont_lam, model.cont = cs.lam, cs.data
    return model, lsf


def lines_product(model: SkyModel) -> tuple[Table, list[tuple[str, object, str]]]:
    """SKY_LINES of a fitted model (fluxes per arcsec², 1e-20 erg/s/cm²/arcsec²) and its
    ``ESO QC SCIPOST LINEi NAME/AWAV/FLUX``."""
    qc: list[tuple[str, object, str]] = []
    for i, (name, lam, flux) in enumerate(zip(model.name, model.lam, model.flux), start=1):
        qc += [(f"ESO QC SCIPOST LINE{i} NAME", name, "sky line"),
               (f"ESO QC SCIPOST LINE{i} AWAV", float(lam), "[Angstrom] wavelength"),
               (f"ESO QC SCIPOST LINE{i} FLUX", float(flux / SPAXEL_AREA_ARCSEC2),
                "[1e-20 erg/s/cm2/arcsec2] flux")]  # fmt: skip
    table = model.lines_table()
    table["flux"] = table["flux"] / SPAXEL_AREA_ARCSEC2
    return table, qc


def continuum_product(model: SkyModel, csampling: float) -> tuple[Table, list[tuple[str, object, str]]]:
    """SKY_CONTINUUM of a fitted model (per arcsec²) and its ``ESO QC SCIPOST CONT FLUX``
    (integral over λ, ``csampling`` Å bins) and ``CONT MAXDEV`` (largest deviation from a
    31-bin running mean)."""
    table = model.continuum_table()
    table["flux"] = table["flux"] / SPAXEL_AREA_ARCSEC2
    cont = np.asarray(table["flux"], float)
    smooth = np.convolve(cont, np.ones(31) / 31.0, mode="same") if cont.size > 31 else cont
    return table, [
        ("ESO QC SCIPOST CONT FLUX", float(np.nansum(cont) * csampling), "[1e-20 erg/s/cm2/arcsec2] total"),
        ("ESO QC SCIPOST CONT MAXDEV", float(np.nanmax(np.abs(cont - smooth))), "max deviation from smooth"),
    ]
