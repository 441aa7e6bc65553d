"""The MUSE instrument model shared by the recipes and the simulator.

Everything geometric about a MUSE detector lives here so that the recipes and the
simulator agree by construction:

* :func:`detector_geometry` reads the four read-out ports of one CCD from the
  ``ESO DET OUTn ...`` keywords of a raw extension header and returns their data,
  prescan and overscan regions as 0-based numpy slices. Recipes must use it (never a
  hard-coded 4096).
* :func:`polyval_y` and :func:`wavecal_eval` evaluate the trace and wavelength
  polynomials of the DRS tables; the simulator's slice layout that they describe (edges,
  curvature, tilt, wavelength solution, LSF, flat structure) is
  :mod:`recipes.algorithms.slice_layout`.
* The mapping between CCD slices, sky slices and the field (0.2" spaxels), in the DRS
  convention of ``kMuseGeoSliceSky``.

Conventions: numpy arrays are indexed ``[y, x]`` and 0-based; the polynomials exported
in DRS tables (TRACE_TABLE, WAVECAL_TABLE) use trimmed-CCD FITS 1-based pixel
coordinates (pixel centres at integers), as the DRS does. Wavelengths are in Å in air,
angles in degrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recipes.base import RecipeError

#: Number of IFUs (CCDs, extensions CHAN01..CHAN24) of the real instrument.
N_IFUS = 24
#: Slices per IFU, and slices per slicer stack.
N_SLICES = 48
SLICES_PER_STACK = 12
N_STACKS = 4
#: Spaxel size of the wide-field mode, arcsec.
SPAXEL_ARCSEC = 0.2
#: Raw values above this are saturated (adu), kMuseSaturationLimit.
SATURATION_LIMIT = 65500
#: Nominal dispersion, Å per pixel along y (kMuseSpectralSamplingA).
NOMINAL_DISPERSION = 1.25
#: Sky slice number (1-based) of each CCD slice 1..48, kMuseGeoSliceSky of the DRS.
GEO_SLICE_SKY = (
    9, 8, 1, 10, 7, 2, 11, 6, 3, 12, 5, 4,
    21, 20, 13, 22, 19, 14, 23, 18, 15, 24, 17, 16,
    33, 32, 25, 34, 31, 26, 35, 30, 27, 36, 29, 28,
    45, 44, 37, 46, 43, 38, 47, 42, 39, 48, 41, 40,
)  # fmt: skip


# --------------------------------------------------------------------------------------
# Detector read-out geometry
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quadrant:
    """One read-out port (output) of a MUSE CCD, in 0-based numpy slices of the raw image.

    Attributes
    ----------
    out : int
        Output number n of ``ESO DET OUTn`` (1 = bottom-left, 2 = bottom-right,
        3 = top-right, 4 = top-left; counter-clockwise as the DRS requires).
    data : (slice, slice)
        ``(rows, cols)`` of the exposed data of this port in the RAW image.
    trimmed : (slice, slice)
        ``(rows, cols)`` of the same pixels in the TRIMMED image (prescans and overscans
        removed; shape ``(2*NY, 2*NX)``).
    prescan_x, overscan_x : (slice, slice)
        Column strips beside the data, over the data rows: the prescan on the outer CCD
        edge and the overscan towards the centre. ``overscan_x`` is the strip the DRS
        ``vpoly`` overscan correction fits as a polynomial in y.
    prescan_y, overscan_y : (slice, slice)
        Row strips below/above the data, over the data columns (prescan on the outer
        edge, overscan towards the centre).
    x_flip, y_flip : bool
        True when the port reads away from the CCD corner toward lower raw index, i.e.
        the port sits on the right (``x_flip``) or top (``y_flip``) half.
    nx, ny, prscx, prscy, ovscx, ovscy : int
        Sizes in pixels, from the header.
    gain : float
        ``ESO DET OUTn GAIN`` in e-/adu (``nan`` when absent).
    ron : float
        ``ESO DET OUTn RON`` in e- (``nan`` when absent).
    """

    out: int
    data: tuple[slice, slice]
    trimmed: tuple[slice, slice]
    prescan_x: tuple[slice, slice]
    overscan_x: tuple[slice, slice]
    prescan_y: tuple[slice, slice]
    overscan_y: tuple[slice, slice]
    x_flip: bool
    y_flip: bool
    nx: int
    ny: int
    prscx: int
    prscy: int
    ovscx: int
    ovscy: int
    gain: float
    ron: float


def _key(header, name: str, where: str):
    try:
        return header[name]
    except KeyError:
        raise RecipeError(f"{where}: header keyword '{name}' is missing") from None


def detector_geometry(header, where: str = "header") -> list[Quadrant]:
    """Read the four read-out ports of one raw CCD extension from its header.

    Parameters
    ----------
    header : astropy.io.fits.Header or mapping
        The header of a raw ``CHANnn`` extension carrying ``ESO DET OUTn X/Y/NX/NY/
        PRSCX/PRSCY/OVSCX/OVSCY`` (and optionally ``GAIN``/``RON``) for n = 1..4, and
        ``NAXIS1``/``NAXIS2`` (if absent the raw size is the sum of the port sizes).
    where : str
        Name used in error messages (e.g. ``"MUSE.2017-06-16T01:34:56.867.fits[CHAN01]"``).

    Returns
    -------
    list of Quadrant
        Sorted by output number. All slices are 0-based ``(rows, cols)`` numpy slices.
        The trimmed image has shape ``(NY_bottom + NY_top, NX_left + NX_right)``.

    Layout (as the DRS reads it): each port's ``X``/``Y`` is its CCD corner in the
    trimmed 1-based frame, so a port with ``X == 1`` is on the left half, otherwise the
    right half; ``Y == 1`` bottom, otherwise top. In the raw image a left port has its
    prescan at columns ``[0, PRSCX)``, data at ``[PRSCX, PRSCX+NX)`` and overscan after it;
    a right port is the mirror image measured from the right raw edge. Rows likewise.

    Raises
    ------
    RecipeError
        A required keyword is missing or the ports do not tile the image.
    """
    ports = []
    for n in range(1, 5):
        p = f"ESO DET OUT{n} "
        vals = {k: int(_key(header, p + k.upper(), where)) for k in
                ("x", "y", "nx", "ny", "prscx", "prscy", "ovscx", "ovscy")}
        vals["gain"] = float(header.get(p + "GAIN", np.nan))
        vals["ron"] = float(header.get(p + "RON", np.nan))
        vals["out"] = n
        ports.append(vals)
    left = [q for q in ports if q["x"] == 1]
    right = [q for q in ports if q["x"] != 1]
    bottom = [q for q in ports if q["y"] == 1]
    top = [q for q in ports if q["y"] != 1]
    if not (len(left) == len(right) == len(bottom) == len(top) == 2):
        raise RecipeError(
            f"{where}: ESO DET OUTn X/Y do not describe 4 ports at the CCD corners "
            f"({[(q['x'], q['y']) for q in ports]})"
        )
    width_l = left[0]["prscx"] + left[0]["nx"] + left[0]["ovscx"]
    width_r = right[0]["prscx"] + right[0]["nx"] + right[0]["ovscx"]
    height_b = bottom[0]["prscy"] + bottom[0]["ny"] + bottom[0]["ovscy"]
    height_t = top[0]["prscy"] + top[0]["ny"] + top[0]["ovscy"]
    naxis1 = int(header.get("NAXIS1", width_l + width_r) or width_l + width_r)
    naxis2 = int(header.get("NAXIS2", height_b + height_t) or height_b + height_t)
    if naxis1 != width_l + width_r or naxis2 != height_b + height_t:
        raise RecipeError(
            f"{where}: image {naxis1}x{naxis2} does not match the DET OUT geometry "
            f"{width_l + width_r}x{height_b + height_t}"
        )
    nx_left, ny_bottom = left[0]["nx"], bottom[0]["ny"]

    quadrants = []
    for q in ports:
        xf, yf = q["x"] != 1, q["y"] != 1
        if not xf:
            pre_c = slice(0, q["prscx"])
            dat_c = slice(q["prscx"], q["prscx"] + q["nx"])
            ovs_c = slice(q["prscx"] + q["nx"], q["prscx"] + q["nx"] + q["ovscx"])
            trim_c = slice(0, q["nx"])
        else:
            pre_c = slice(naxis1 - q["prscx"], naxis1)
            dat_c = slice(naxis1 - q["prscx"] - q["nx"], naxis1 - q["prscx"])
            ovs_c = slice(naxis1 - q["prscx"] - q["nx"] - q["ovscx"], naxis1 - q["prscx"] - q["nx"])
            trim_c = slice(nx_left, nx_left + q["nx"])
        if not yf:
            pre_r = slice(0, q["prscy"])
            dat_r = slice(q["prscy"], q["prscy"] + q["ny"])
            ovs_r = slice(q["prscy"] + q["ny"], q["prscy"] + q["ny"] + q["ovscy"])
            trim_r = slice(0, q["ny"])
        else:
            pre_r = slice(naxis2 - q["prscy"], naxis2)
            dat_r = slice(naxis2 - q["prscy"] - q["ny"], naxis2 - q["prscy"])
            ovs_r = slice(naxis2 - q["prscy"] - q["ny"] - q["ovscy"], naxis2 - q["prscy"] - q["ny"])
            trim_r = slice(ny_bottom, ny_bottom + q["ny"])
        quadrants.append(
            Quadrant(
                out=q["out"], data=(dat_r, dat_c), trimmed=(trim_r, trim_c),
                prescan_x=(dat_r, pre_c), overscan_x=(dat_r, ovs_c),
                prescan_y=(pre_r, dat_c), overscan_y=(ovs_r, dat_c),
                x_flip=xf, y_flip=yf, nx=q["nx"], ny=q["ny"], prscx=q["prscx"],
                prscy=q["prscy"], ovscx=q["ovscx"], ovscy=q["ovscy"],
                gain=q["gain"], ron=q["ron"],
            )
        )
    return quadrants


def trimmed_shape(quadrants: list[Quadrant]) -> tuple[int, int]:
    """Shape ``(ny, nx)`` of the trimmed CCD image described by ``quadrants``."""
    ny = max(q.trimmed[0].stop for q in quadrants)
    nx = max(q.trimmed[1].stop for q in quadrants)
    return ny, nx


def trim(raw: np.ndarray, quadrants: list[Quadrant]) -> np.ndarray:
    """Cut the data regions of a raw image into the trimmed CCD image (same dtype)."""
    out = np.empty(trimmed_shape(quadrants), dtype=raw.dtype)
    for q in quadrants:
        out[q.trimmed] = raw[q.data]
    return out


def raw_shape(quadrants: list[Quadrant]) -> tuple[int, int]:
    """Shape ``(NAXIS2, NAXIS1)`` of the raw image described by ``quadrants``."""
    ny = max(max(q.data[0].stop, q.overscan_y[0].stop, q.prescan_y[0].stop) for q in quadrants)
    nx = max(max(q.data[1].stop, q.overscan_x[1].stop, q.prescan_x[1].stop) for q in quadrants)
    return ny, nx


@dataclass(frozen=True)
class DetectorFormat:
    """Read-out format of one CCD: 4 identical ports of ``nx`` x ``ny`` data pixels.

    ``prscx/prscy`` prescans lie on the outer CCD edges, ``ovscx/ovscy`` overscans towards
    the centre. The real instrument is ``DetectorFormat(2048, 2056, 32, 32, 32, 32)``.
    """

    nx: int
    ny: int
    prscx: int = 32
    prscy: int = 32
    ovscx: int = 32
    ovscy: int = 32

    @property
    def raw_shape(self) -> tuple[int, int]:
        """``(NAXIS2, NAXIS1)`` of a raw extension."""
        return (2 * (self.prscy + self.ny + self.ovscy), 2 * (self.prscx + self.nx + self.ovscx))

    @property
    def trimmed_shape(self) -> tuple[int, int]:
        """``(ny, nx)`` of the trimmed CCD (``ESO DET CHIP NY/NX``)."""
        return (2 * self.ny, 2 * self.nx)

    def out_keywords(self, gains, rons, chip_index: int = 1) -> dict:
        """``ESO DET OUTn ...`` keywords for ports 1..4 (corners counter-clockwise).

        ``gains`` in e-/adu and ``rons`` in e-, one per port. ``CONAD`` = 1/GAIN.
        ``X``/``Y`` name the port's corner as on the real CCD (1 or 4096, 1 or 4112)
        whatever the format: the DRS identifies a port by these exact values
        (``muse_quadrants_overscan_get_window`` refuses any other), and only
        ``X == 1``/``Y == 1`` matters to :func:`detector_geometry`.
        """
        right, top = 2 * FULL_DETECTOR.nx, 2 * FULL_DETECTOR.ny
        corners = [(1, 1), (right, 1), (right, top), (1, top)]
        names = ["A", "B", "C", "D"]
        kw = {}
        for n, ((x, y), g, r) in enumerate(zip(corners, gains, rons), start=1):
            p = f"ESO DET OUT{n} "
            kw[p + "NAME"] = (f"OUT{n}{names[n - 1]}", "Description of output")
            kw[p + "ID"] = (names[n - 1], "Output ID as from manufacturer")
            kw[p + "INDEX"] = (n, "Output index")
            kw[p + "X"] = (x, "X location of output")
            kw[p + "Y"] = (y, "Y location of output")
            kw[p + "NX"] = (self.nx, "valid pixels along X")
            kw[p + "NY"] = (self.ny, "valid pixels along Y")
            kw[p + "PRSCX"] = (self.prscx, "Prescan region in X")
            kw[p + "PRSCY"] = (self.prscy, "Prescan region in Y")
            kw[p + "OVSCX"] = (self.ovscx, "Overscan region in X")
            kw[p + "OVSCY"] = (self.ovscy, "Overscan region in Y")
            kw[p + "GAIN"] = (round(float(g), 4), "Conversion from electrons to ADU")
            kw[p + "CONAD"] = (round(1.0 / float(g), 4), "Conversion from ADUs to electrons")
            kw[p + "RON"] = (round(float(r), 4), "Readout noise per output (e-)")
        return kw


FULL_DETECTOR = DetectorFormat(2048, 2056, 32, 32, 32, 32)


# --------------------------------------------------------------------------------------
# Trace and wavelength polynomials
# --------------------------------------------------------------------------------------



def polyval_y(coeffs, y):
    """Evaluate ``sum_k coeffs[k] * y**k`` (coefficients in increasing power)."""
    y = np.asarray(y, dtype=float)
    out = np.zeros_like(y)
    for c in coeffs[::-1]:
        out = out * y + c
    return out


def wavecal_eval(wlc: np.ndarray, x, y):
    """λ(x, y) = Σ_IJ wlc[I, J] x^I y^J (Å) with x, y trimmed-CCD FITS 1-based coordinates."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    out = np.zeros(np.broadcast(x, y).shape)
    for i in range(wlc.shape[0]):
        out = out + polyval_y(wlc[i], y) * x**i
    return out



# --------------------------------------------------------------------------------------
# Slices on the sky
# --------------------------------------------------------------------------------------


def slice_field_centre(ifu: int, slice_sky: int, n_ifus: int, width_sky: float) -> tuple[float, float]:
    """Field position (spaxels of 0.2", origin at the field centre) of a slice centre.

    Sky slice ``s`` (1..48) lies in stack ``(s-1)//12`` (x, left to right) and row
    ``(s-1)%12`` of its IFU; IFU 1 is the bottom strip of the field, each IFU 12 rows.
    """
    stack = (slice_sky - 1) // SLICES_PER_STACK
    row = (slice_sky - 1) % SLICES_PER_STACK
    x = (stack - (N_STACKS - 1) / 2.0) * width_sky
    y = (ifu - 1) * SLICES_PER_STACK + row - (n_ifus * SLICES_PER_STACK - 1) / 2.0
    return float(x), float(y)


def ccd_to_field_x(frac):
    """Position along the slice on the sky, in units of the slice length, from the CCD.

    ``frac`` = (x - left)/(right - left) is the fractional CCD position across the slice
    (0 at the left 50 % edge). The slicer mirrors the image: the sky offset from the slice
    centre, in slice lengths, is ``0.5 - frac`` (so ``xpos`` decreases with CCD x).
    """
    return 0.5 - np.asarray(frac, dtype=float)


def throughput_curve(lam):
    """Relative instrument + telescope efficiency (dimensionless, peak ≈ 0.35) vs λ in Å.

    A smooth synthetic curve shaped like the published MUSE end-to-end throughput
    (rising from the blue cut-off near 4700 Å, broad maximum at 6000-7000 Å, falling to
    the red). Not a measured curve.
    """
    lam = np.asarray(lam, dtype=float)
    blue = 1.0 / (1.0 + np.exp(-(lam - 4600.0) / 120.0))
    body = np.exp(-0.5 * ((lam - 6800.0) / 2600.0) ** 2)
    return 0.35 * blue * body


# --------------------------------------------------------------------------------------
# Shipped data tables (recipes/data, documented in recipes/data/README.md)
# --------------------------------------------------------------------------------------


def data_path(name: str):
    """Path of a shipped data file in ``recipes/data``."""
    from pathlib import Path

    return Path(__file__).parent.parent / "data" / name  # recipes/data


def read_data_table(name: str) -> dict[str, np.ndarray]:
    """Read a shipped CSV table (``#`` comment lines, then a header row) into columns.

    Numeric columns become float64 arrays (``quality`` int64), text columns str arrays.
    """
    path = data_path(name)
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    names = lines[0].split(",")
    rows = [ln.split(",") for ln in lines[1:]]
    out = {}
    for i, n in enumerate(names):
        col = [r[i] for r in rows]
        try:
            arr = np.array([float(v) for v in col])
            if n == "quality":
                arr = arr.astype(np.int64)
        except ValueError:
            arr = np.array(col)
        out[n] = arr
    return out
