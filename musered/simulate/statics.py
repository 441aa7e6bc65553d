"""Static calibrations in DRS formats, written to ``OUTDIR/muse-calib/``.

The real ones (cpl-plugin-muse-calib) are not installable here; these are made from the
same instrument model and data tables as the simulated raw data. Every file carries
``ESO PRO CATG`` in its primary header so that a folder scan finds it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.algorithms.instrument import SPAXEL_ARCSEC, read_data_table, slice_field_centre


STD_NAME = "SIMSTAR1"
STD_RA, STD_DEC = 150.0, -30.0


def _primary(catg: str, **extra) -> fits.PrimaryHDU:
    hdu = fits.PrimaryHDU()
    hdu.header["HIERARCH ESO PRO CATG"] = catg
    hdu.header["INSTRUME"] = "MUSE"
    hdu.header["ORIGIN"] = "musered simulate"
    for k, v in extra.items():
        hdu.header[k] = v
    return hdu


def line_catalog(path: Path) -> None:
    """LINE_CATALOG: float32 ``lambda`` (Å, air) and ``flux``, str ``ion``, int ``quality``;
    ``VERSION = 3`` in the primary header (the DRS checks it)."""
    t = read_data_table("arc_lines.csv")
    order = np.argsort(t["lambda"])
    cols = [
        fits.Column("lambda", "E", unit="Angstrom", array=t["lambda"][order].astype(np.float32)),
        fits.Column("flux", "E", array=t["flux"][order].astype(np.float32)),
        fits.Column("ion", "20A", array=t["ion"][order]),
        fits.Column("quality", "J", array=t["quality"][order].astype(np.int32)),
    ]
    hl = fits.HDUList([_primary("LINE_CATALOG", VERSION=3),
                       fits.BinTableHDU.from_columns(cols, name="LINE_CATALOG")])
    hl.writeto(path, overwrite=True)


def geometry_table(path: Path, sim) -> None:
    """GEOMETRY_TABLE: per IFU and CCD slice the field position (0.2" pixels) of the slice
    centre, its angle (0) and its length on the sky, plus error columns (0)."""
    n = sim.profile.n_ifus
    ws = sim.profile.layout.width_sky
    rows = []
    for lay in sim.layouts:
        for s in lay.slices:
            x, y = slice_field_centre(lay.ifu, s.slice_sky, n, ws)
            rows.append((lay.ifu, s.slice_ccd, s.slice_sky, x, y, 0.0, ws))
    a = np.array(rows, dtype=float)
    cols = [
        fits.Column("SubField", "J", array=a[:, 0].astype(int)),
        fits.Column("SliceCCD", "J", array=a[:, 1].astype(int)),
        fits.Column("SliceSky", "J", array=a[:, 2].astype(int)),
        fits.Column("x", "D", unit="pix", array=a[:, 3]),
        fits.Column("y", "D", unit="pix", array=a[:, 4]),
        fits.Column("angle", "D", unit="deg", array=a[:, 5]),
        fits.Column("width", "D", unit="pix", array=a[:, 6]),
        fits.Column("xerr", "D", unit="pix", array=np.zeros(len(a))),
        fits.Column("yerr", "D", unit="pix", array=np.zeros(len(a))),
        fits.Column("angleerr", "D", unit="deg", array=np.zeros(len(a))),
        fits.Column("widtherr", "D", unit="pix", array=np.zeros(len(a))),
    ]
    fits.HDUList([_primary("GEOMETRY_TABLE"),
                  fits.BinTableHDU.from_columns(cols, name="GEOMETRY_TABLE")]).writeto(path, overwrite=True)


def astrometry_wcs(path: Path) -> None:
    """ASTROMETRY_WCS: the nominal WFM solution (0.2" spaxels, no rotation, no distortion)."""
    hdu = _primary("ASTROMETRY_WCS")
    h = hdu.header
    h["WCSAXES"] = 2
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    h["CRPIX1"], h["CRPIX2"] = 0.0, 0.0
    h["CRVAL1"], h["CRVAL2"] = 0.0, 0.0
    h["CD1_1"] = -SPAXEL_ARCSEC / 3600.0
    h["CD1_2"] = 0.0
    h["CD2_1"] = 0.0
    h["CD2_2"] = SPAXEL_ARCSEC / 3600.0
    fits.HDUList([hdu]).writeto(path, overwrite=True)


def extinct_table(path: Path) -> None:
    """EXTINCT_TABLE: ``lambda`` (Å) and ``extinction`` (mag/airmass)."""
    t = read_data_table("extinction_paranal.csv")
    cols = [fits.Column("lambda", "D", unit="Angstrom", array=t["lambda"]),
            fits.Column("extinction", "D", unit="mag", array=t["extinction"])]
    fits.HDUList([_primary("EXTINCT_TABLE"),
                  fits.BinTableHDU.from_columns(cols, name="EXTINCT_TABLE")]).writeto(path, overwrite=True)


def std_flux_table(path: Path, ra: float = STD_RA, dec: float = STD_DEC) -> None:
    """STD_FLUX_TABLE: one extension per star (here SIMSTAR1) with ``lambda``, ``flux``,
    ``fluxerr`` (erg/s/cm²/Å); the star's RA/DEC in the extension header."""
    t = read_data_table("std_simstar1.csv")
    cols = [fits.Column("lambda", "D", unit="Angstrom", array=t["lambda"]),
            fits.Column("flux", "D", unit="erg/s/cm**2/Angstrom", array=t["flux"]),
            fits.Column("fluxerr", "D", unit="erg/s/cm**2/Angstrom", array=t["fluxerr"])]
    ext = fits.BinTableHDU.from_columns(cols, name=STD_NAME)
    ext.header["RA"], ext.header["DEC"] = ra, dec
    fits.HDUList([_primary("STD_FLUX_TABLE"), ext]).writeto(path, overwrite=True)


def filter_list(path: Path) -> None:
    """FILTER_LIST: synthetic smooth-edged passbands (``lambda``, ``throughput``) named like
    the DRS ones (white, Johnson_V, Cousins_R, Cousins_I); shapes are approximations."""
    lam = np.arange(4000.0, 10001.0, 5.0)

    def band(lo, hi, edge=60.0):
        return 1.0 / (1 + np.exp(-(lam - lo) / edge)) / (1 + np.exp((lam - hi) / edge))

    bands = {"white": np.where((lam >= 4650) & (lam <= 9300), 1.0, 0.0),
             "Johnson_V": band(4900, 5900), "Cousins_R": band(5700, 7200),
             "Cousins_I": band(7200, 8900)}
    hdus = [_primary("FILTER_LIST")]
    for name, thr in bands.items():
        hdus.append(fits.BinTableHDU.from_columns(
            [fits.Column("lambda", "D", unit="Angstrom", array=lam),
             fits.Column("throughput", "D", array=thr)], name=name))
    fits.HDUList(hdus).writeto(path, overwrite=True)


#: The SKY_LINES flux unit as the DRS writes and checks it (any other spelling, e.g. the
#: astropy ``10**(-20)*erg/(s*cm**2*arcsec**2)``, makes its sky fit fail: "Singular matrix").
SKY_FLUX_UNIT = "10**(-20)*erg/(s cm^2 arcsec^2)"


def sky_lines_table(path: Path) -> None:
    """SKY_LINES in the DRS format: ``name`` (str), ``group`` (int), ``lambda`` (Å),
    ``flux`` (1e-20 erg/s/cm²/arcsec², synthetic), ``dq`` (int, 0 = use), one row per line."""
    t = read_data_table("sky_lines.csv")
    groups = {"OI": 1, "NaI": 2, "OH": 0}
    cols = [fits.Column("name", "16A", array=[f"{i}{lam:.0f}" for i, lam in zip(t["ion"], t["lambda"])]),
            fits.Column("group", "J", array=[groups.get(i, 3) for i in t["ion"]]),
            fits.Column("lambda", "D", unit="Angstrom", array=t["lambda"]),
            fits.Column("flux", "D", unit=SKY_FLUX_UNIT, array=t["flux"] * 100.0),
            fits.Column("dq", "J", array=np.zeros(len(t["lambda"]), dtype=np.int32))]
    fits.HDUList([_primary("SKY_LINES"),
                  fits.BinTableHDU.from_columns(cols, name="LINES")]).writeto(path, overwrite=True)


def badpix_table(path: Path, sim) -> None:
    """BADPIX_TABLE: one extension ``CHANnn`` per IFU with ``xpos``, ``ypos`` (1-based
    UNTRIMMED raw coordinates), ``status`` (Euro3D bits: 256 hot, 64 low QE, 8192 dead)
    and ``value``."""
    hdus = [_primary("BADPIX_TABLE")]
    for st in sim.ccds:
        rows = []
        ny = sim.trimmed_shape[0]
        for y, x, rate in st.hot_pixels:
            rows.append((int(y), int(x), 256, float(rate)))
        for y, x in st.low_qe_pixels:
            rows.append((int(y), int(x), 64, 0.5))
        for x in st.dead_columns:
            rows.extend((y, int(x), 8192, 0.0) for y in range(ny))
        xs, ys = [], []
        for y, x, _, _ in rows:
            rx, ry = trimmed_to_raw(sim.geometry, x, y)
            xs.append(rx + 1)
            ys.append(ry + 1)
        cols = [fits.Column("xpos", "J", array=xs), fits.Column("ypos", "J", array=ys),
                fits.Column("status", "J", array=[r[2] for r in rows]),
                fits.Column("value", "E", array=[r[3] for r in rows])]
        hdus.append(fits.BinTableHDU.from_columns(cols, name=f"CHAN{st.ifu:02d}"))
    fits.HDUList(hdus).writeto(path, overwrite=True)


def trimmed_to_raw(quadrants, x: int, y: int) -> tuple[int, int]:
    """0-based raw (x, y) of 0-based trimmed pixel (x, y)."""
    for q in quadrants:
        tr, tc = q.trimmed
        if tr.start <= y < tr.stop and tc.start <= x < tc.stop:
            return q.data[1].start + x - tc.start, q.data[0].start + y - tr.start
    raise ValueError(f"pixel ({x}, {y}) outside the trimmed CCD")


STATICS = {
    "LINE_CATALOG": "line_catalog.fits",
    "GEOMETRY_TABLE": "geometry_table.fits",
    "ASTROMETRY_WCS": "astrometry_wcs.fits",
    "EXTINCT_TABLE": "extinct_table.fits",
    "STD_FLUX_TABLE": "std_flux_table.fits",
    "FILTER_LIST": "filter_list.fits",
    "SKY_LINES": "sky_lines.fits",
    "BADPIX_TABLE": "badpix_table.fits",
}


def write_statics(folder: Path, sim, std_radec: tuple[float, float] = (STD_RA, STD_DEC)) -> dict[str, Path]:
    """Write every static calibration into ``folder``; returns ``{PRO CATG: path}``."""
    folder.mkdir(parents=True, exist_ok=True)
    p = {k: folder / v for k, v in STATICS.items()}
    line_catalog(p["LINE_CATALOG"])
    geometry_table(p["GEOMETRY_TABLE"], sim)
    astrometry_wcs(p["ASTROMETRY_WCS"])
    extinct_table(p["EXTINCT_TABLE"])
    std_flux_table(p["STD_FLUX_TABLE"], *std_radec)
    filter_list(p["FILTER_LIST"])
    sky_lines_table(p["SKY_LINES"])
    badpix_table(p["BADPIX_TABLE"], sim)
    return p
