"""Calibration tables in the DRS layout: TRACE_TABLE, TRACE_SAMPLES, WAVECAL_TABLE and
WAVECAL_RESIDUALS (recipes.md §4.2-4.3), rows of one IFU each.

Both polynomial tables hold coefficients of raw powers of **absolute 1-based
trimmed-CCD coordinates**: TRACE_TABLE x(y) in pixels (centre ``tc0_*``, left ``tc1_*``,
right ``tc2_*``), WAVECAL_TABLE λ(x, y) = Σ ``wlcIJ`` x^I y^J in Å (air). A merged file has
one ``CHANnn`` table extension per IFU; the DRS single-IFU form of TRACE_TABLE (primary
``EXTNAME = CHANnn``) is read too.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from recipes.base import RecipeError
from recipes.algorithms.tracing import Trace
from recipes.algorithms.wavesolution import SliceSolution
from recipes.io import chan_name, read_table_product


# --------------------------------------------------------------------------------------
# TRACE_TABLE and TRACE_SAMPLES


def trace_table(trace: Trace) -> Table:
    """TRACE_TABLE rows of one IFU: SliceNo, Width, tc0_* (centre), MSE0, tc1_* (left),
    MSE1, tc2_* (right), MSE2; coefficients of raw powers of the 1-based row y."""
    table = Table()
    table["SliceNo"] = np.arange(1, trace.nslice + 1, dtype=np.int32)
    table["Width"] = trace.width.astype(np.float32)
    table["Width"].unit = "pix"
    for k, coeffs in enumerate((trace.centre, trace.left, trace.right)):
        for j in range(coeffs.shape[1]):
            table[f"tc{k}_{j:02d}"] = coeffs[:, j].astype(np.float64)
            table[f"tc{k}_{j:02d}"].unit = "pix"
        table[f"MSE{k}"] = trace.mse[:, k].astype(np.float64)
        table[f"MSE{k}"].unit = "pix"
    return table


def trace_from_table(table: Table, where: str) -> Trace:
    """A :class:`Trace` (coefficients only) from TRACE_TABLE rows; the order is recovered
    from the number of ``tc0_*`` columns, as the DRS does."""
    names = table.colnames
    ncoef = sum(1 for n in names if n.startswith("tc0_"))
    needed = [f"tc{k}_{j:02d}" for k in range(3) for j in range(ncoef)] + ["SliceNo"]
    missing = [n for n in needed if n not in names]
    if ncoef == 0 or missing:
        raise RecipeError(f"{where}: not a TRACE_TABLE (missing column {missing[0] if missing else 'tc0_00'})")
    order = np.argsort(np.asarray(table["SliceNo"]))
    coeffs = [np.stack([np.asarray(table[f"tc{k}_{j:02d}"], dtype=np.float64)[order] for j in range(ncoef)], axis=1)
              for k in range(3)]  # fmt: skip
    mse = np.stack([np.asarray(table[f"MSE{k}"], dtype=np.float64)[order] if f"MSE{k}" in names
                    else np.zeros(len(table)) for k in range(3)], axis=1)  # fmt: skip
    width = np.asarray(table["Width"], dtype=np.float64)[order] if "Width" in names else np.zeros(len(table))
    return Trace(centre=coeffs[0], left=coeffs[1], right=coeffs[2], mse=mse, width=width, samples=None)


def read_trace(path: Path, ifu: int) -> Trace:
    """The TRACE_TABLE of one IFU: merged form (table extension ``CHANnn``) or the DRS
    single-IFU form (primary ``EXTNAME = CHANnn``, table in the first extension)."""
    path = Path(path)
    where = f"{path}[{chan_name(ifu)}]"
    try:
        with fits.open(path) as hdul:
            names = [str(h.header.get("EXTNAME", "")).strip() for h in hdul]
            if names[0] == chan_name(ifu) and len(hdul) > 1 and isinstance(hdul[1], fits.BinTableHDU):
                return trace_from_table(Table(hdul[1].data), where)
    except (OSError, ValueError, TypeError) as exc:
        raise RecipeError(f"{path}: cannot read TRACE_TABLE ({str(exc).splitlines()[0]})") from None
    table, _ = read_table_product(path, ifu)
    return trace_from_table(table, where)


def samples_table(trace: Trace) -> Table:
    """TRACE_SAMPLES rows: slice, y, mid, left, right (float32, 1-based pix), all trace points."""
    s = trace.samples
    ncut, nslice = s.left.shape
    table = Table()
    table["slice"] = np.repeat(np.arange(1, nslice + 1, dtype=np.int32), ncut)
    table["y"] = np.tile(s.y, nslice).astype(np.float32)
    table["mid"] = s.centre.T.ravel().astype(np.float32)
    table["left"] = s.left.T.ravel().astype(np.float32)
    table["right"] = s.right.T.ravel().astype(np.float32)
    return table


# --------------------------------------------------------------------------------------
# WAVECAL_TABLE and WAVECAL_RESIDUALS


def read_wavecal_table(path: Path, ifu: int) -> dict[int, np.ndarray]:
    """Wavelength solutions of one IFU from WAVECAL_TABLE (§4.3): ``{SliceNo: wlc[I, J]}``
    with λ(x, y) = Σ wlc[I, J] x^I y^J in Å, x and y absolute 1-based trimmed-CCD pixels.

    The orders are recovered from the ``wlcIJ`` column names.
    """
    table, _ = read_table_product(Path(path), ifu)
    where = f"{Path(path).name}[{chan_name(ifu)}]"
    cols = [(int(m.group(1)), int(m.group(2)), n) for n in table.colnames if (m := re.fullmatch(r"wlc(\d)(\d)", n))]
    if "SliceNo" not in table.colnames or not cols:
        raise RecipeError(f"{where}: not a WAVECAL_TABLE (needs SliceNo and wlcIJ columns)")
    xorder = max(c[0] for c in cols)
    yorder = max(c[1] for c in cols)
    out = {}
    for r, slice_no in enumerate(np.asarray(table["SliceNo"], dtype=int)):
        wlc = np.zeros((xorder + 1, yorder + 1))
        for i, j, name in cols:
            wlc[i, j] = float(table[name][r])
        if not np.all(np.isfinite(wlc)):
            raise RecipeError(f"{where}: slice {slice_no} has a non-finite wavelength solution")
        out[int(slice_no)] = wlc
    return out


def wavecal_table(solutions: list[SliceSolution], xorder: int, yorder: int) -> Table:
    """WAVECAL_TABLE rows: SliceNo, wlcIJ (I ≤ xorder, J ≤ yorder), MSE."""
    table = Table()
    table["SliceNo"] = np.array([s.slice_no for s in solutions], dtype=np.int32)
    for i in range(xorder + 1):
        for j in range(yorder + 1):
            table[f"wlc{i}{j}"] = np.array([s.wlc[i, j] for s in solutions], dtype=np.float64)
            table[f"wlc{i}{j}"].unit = "Angstrom"
    table["MSE"] = np.array([s.mse for s in solutions], dtype=np.float64)
    return table


def residuals_table(solutions: list[SliceSolution]) -> Table:
    """WAVECAL_RESIDUALS rows: one per line position per fit iteration."""
    names = ("slice", "iteration", "x", "y", "lambda", "residual", "rejlimit")
    cols: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for sol in solutions:
        m = sol.measurements
        for iteration, idx, resid, limit in sol.residual_log:
            cols["slice"].append(np.full(idx.size, sol.slice_no, dtype=np.uint8))
            cols["iteration"].append(np.full(idx.size, iteration, dtype=np.int32))
            cols["x"].append(np.rint(m.x[idx]).astype(np.int32))
            cols["y"].append(m.y[idx].astype(np.float32))
            cols["lambda"].append(m.lam[idx].astype(np.float32))
            cols["residual"].append(resid.astype(np.float64))
            cols["rejlimit"].append(np.full(idx.size, limit, dtype=np.float64))
    return Table({k: np.concatenate(v) for k, v in cols.items()})
