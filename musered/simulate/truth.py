"""Ground truth of a simulation: written beside the raw data, read back by tests.

Layout of ``OUTDIR/truth/``:

* ``truth.json`` — scalars: profile, seed, per-IFU CCD state (gains e-/adu, RON e-,
  bias levels and gradients in adu, dark current e-/pixel/hour, hot pixels, dead
  columns), per-frame facts (kind, night, exposure time, per-IFU per-port frame bias
  level and expected data-region mean in adu, number of cosmic rays), per-exposure
  pointing (commanded offsets and true pointing errors in arcsec, rotation in degrees,
  seeing, airmass), the source catalogue (RA/Dec in degrees and fluxes) and the nebula.
* ``instrument.fits`` — one table per IFU ``SLICES_nn`` (48 rows): ``SliceCCD``,
  ``SliceSky``, ``left``/``right``/``centre`` (6 coefficients each, x(y) in trimmed-CCD
  FITS 1-based coordinates), ``wlc`` (3×7 coefficients, λ(x, y) in Å, DRS WAVECAL form),
  ``lsf`` (FWHM in Å as polynomial in (λ-7000)/1000), ``throughput`` (slice flat
  factor), ``illum`` (sky illumination offset and slope along the slice), ``edge_sigma``;
  a ``RESPONSE`` table (``lambda``, ``throughput``, ``sensitivity`` in e-/s/Å per
  erg/s/cm²/Å, ``extinction`` mag/airmass); and ``QE_nn`` images (mini profile only: the
  full-size maps are regenerated from the seed by :meth:`Truth.qe_map`).
* ``cosmics.fits`` — table of every cosmic-ray pixel: ``frame``, ``ifu``, ``x``, ``y``
  (trimmed 1-based) and ``electrons``.
* ``skycube.fits`` (mini profile) — the true scene (stars + nebula, no sky, no
  atmosphere) on the reference grid of the first exposure: 0.2" spaxels, 1.25 Å planes,
  lines convolved with the mean LSF, in 1e-20 erg/s/cm²/Å per spaxel; stars as Moffat
  profiles of the mean seeing of the OBJECT exposures (:meth:`Truth.skycube` re-renders
  it for the seeing of one exposure).

:meth:`Truth.flat_normalisation` gives the grey factor that the pipeline's flux scale
carries on top of the true sensitivity (the flat-field normalisation), so that a
STD_RESPONSE can be compared with the truth on an absolute scale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.algorithms.slice_layout import SliceGeometry

from ..errors import MuseredError
from .detector import CCDState, qe_map


def write_instrument(path: Path, sim, lam: np.ndarray) -> None:
    """Write ``instrument.fits`` for simulator ``sim``."""
    from . import sources as src

    hdus = [fits.PrimaryHDU()]
    hdus[0].header["PROFILE"] = sim.profile.name
    hdus[0].header["SEED"] = sim.seed
    for lay in sim.layouts:
        sl = lay.slices
        cols = [
            fits.Column("SliceCCD", "J", array=[s.slice_ccd for s in sl]),
            fits.Column("SliceSky", "J", array=[s.slice_sky for s in sl]),
            fits.Column("left", "6D", array=np.array([s.left for s in sl])),
            fits.Column("right", "6D", array=np.array([s.right for s in sl])),
            fits.Column("centre", "6D", array=np.array([s.centre for s in sl])),
            fits.Column("wlc", "21D", dim="(7,3)", array=np.array([s.wlc for s in sl])),
            fits.Column("lsf", "3D", array=np.array([s.lsf for s in sl])),
            fits.Column("throughput", "D", array=[s.throughput for s in sl]),
            fits.Column("illum", "2D", array=sim.illumination[lay.ifu - 1]),
            fits.Column("edge_sigma", "D", array=[s.edge_sigma for s in sl]),
        ]
        hdus.append(fits.BinTableHDU.from_columns(cols, name=f"SLICES_{lay.ifu:02d}"))
    hdus.append(fits.BinTableHDU.from_columns([
        fits.Column("lambda", "D", array=lam),
        fits.Column("throughput", "D", array=src.throughput_curve(lam)),
        fits.Column("sensitivity", "D", array=src.sensitivity(lam)),
        fits.Column("extinction", "D", array=src.extinction(lam)),
    ], name="RESPONSE"))
    if sim.profile.name == "mini":
        for ifu in range(1, sim.profile.n_ifus + 1):
            hdus.append(fits.ImageHDU(sim.qe(ifu), name=f"QE_{ifu:02d}"))
    fits.HDUList(hdus).writeto(path, overwrite=True)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=False))


def write_cosmics(path: Path, rows: list) -> None:
    arr = np.array(rows, dtype=object).reshape(-1, 5)
    cols = [
        fits.Column("frame", "40A", array=[str(r[0]) for r in arr]),
        fits.Column("ifu", "J", array=[int(r[1]) for r in arr]),
        fits.Column("y", "J", array=[int(r[2]) for r in arr]),
        fits.Column("x", "J", array=[int(r[3]) for r in arr]),
        fits.Column("electrons", "E", array=[float(r[4]) for r in arr]),
    ]
    fits.BinTableHDU.from_columns(cols, name="COSMICS").writeto(path, overwrite=True)


@dataclass
class Truth:
    """What :func:`load_truth` returns. ``data`` is the parsed truth.json."""

    outdir: Path
    data: dict

    @property
    def profile(self) -> str:
        return self.data["profile"]

    @property
    def frames(self) -> dict:
        """``{filename: {kind, night, exptime, bias_level, bias_mean, n_cosmics, ...}}``."""
        return self.data["frames"]

    @property
    def exposures(self) -> dict:
        """``{filename: {offset, pointing_error, posang, seeing, airmass, ra, dec}}``."""
        return self.data["exposures"]

    @property
    def sources(self) -> list:
        return self.data["sources"]

    def ccd(self, ifu: int) -> CCDState:
        return CCDState.from_dict(self.data["ccds"][ifu - 1])

    def slices(self, ifu: int) -> list[SliceGeometry]:
        """The 48 slices of IFU ``ifu`` (edges, wavelength solution, LSF, flat factors)."""
        with fits.open(self.outdir / "truth" / "instrument.fits") as hl:
            t = hl[f"SLICES_{ifu:02d}"].data
            return [SliceGeometry(
                ifu=ifu, slice_ccd=int(r["SliceCCD"]), slice_sky=int(r["SliceSky"]),
                left=np.array(r["left"], float), right=np.array(r["right"], float),
                centre=np.array(r["centre"], float), wlc=np.array(r["wlc"], float).reshape(3, 7),
                lsf=np.array(r["lsf"], float), throughput=float(r["throughput"]),
                edge_sigma=float(r["edge_sigma"]),
            ) for r in t]

    def illumination(self, ifu: int) -> np.ndarray:
        """(48, 2): sky illumination offset and slope along each slice of ``ifu``."""
        with fits.open(self.outdir / "truth" / "instrument.fits") as hl:
            return np.array(hl[f"SLICES_{ifu:02d}"].data["illum"], float)

    def response(self) -> dict[str, np.ndarray]:
        with fits.open(self.outdir / "truth" / "instrument.fits") as hl:
            t = hl["RESPONSE"].data
            return {n: np.array(t[n], float) for n in t.columns.names}

    def qe_map(self, ifu: int) -> np.ndarray:
        """Pixel QE map of IFU ``ifu`` (trimmed CCD, float32)."""
        with fits.open(self.outdir / "truth" / "instrument.fits") as hl:
            name = f"QE_{ifu:02d}"
            if name in hl:
                return np.array(hl[name].data)
        shape = tuple(self.data["trimmed_shape"])
        return qe_map(self.ccd(ifu), shape)

    def skycube(self, seeing: float | None = None) -> tuple[np.ndarray, fits.Header] | None:
        """The true scene cube and its header (None without ``skycube.fits``).

        ``seeing`` (arcsec FWHM): render the stars for that seeing instead of the stored
        mean seeing (same grid and nebula), to compare with one exposure.
        """
        p = self.outdir / "truth" / "skycube.fits"
        if not p.exists():
            return None
        with fits.open(p) as hl:
            data, header = np.array(hl[1].data), hl[1].header.copy()
        if seeing is None:
            return data, header
        from .skycube import scene_cube

        lo = float(header["CRVAL3"])
        hdu = scene_cube(self.scene(), float(header["CRVAL1"]), float(header["CRVAL2"]), (data.shape[1] - 1) // 2,
                         (lo, lo + header["CD3_3"] * (data.shape[0] - 0.5)), float(seeing),
                         float(header["LSFFWHM"]))[1]  # fmt: skip
        return np.array(hdu.data), hdu.header.copy()

    def scene(self):
        """The simulated field (:class:`musered.simulate.sources.Scene`) rebuilt from truth.json."""
        from . import sources as src

        s = self.sources
        neb = s["nebula"]
        return src.Scene(
            stars=[src.PointSource(st["xi"], st["eta"], st["temperature"], st["flux5500"], st["name"])
                   for st in s["stars"]],
            nebula=src.Nebula([(b["xi"], b["eta"], b["sigma"], b["weight"]) for b in neb["blobs"]],
                              neb["surface_halpha"], {k: (v["lambda"], v["ratio"]) for k, v in neb["lines"].items()}),
            sky_continuum=s["sky_continuum_5500"],
        )  # fmt: skip

    def flat_normalisation(self, lam: np.ndarray | float, step: float = 10.0) -> np.ndarray:
        """Grey factor c(λ) between the pipeline's flat-fielded counts and the true rate.

        muse_flat divides by the CCD mean of the lamp flat and muse_scibasic/muse_scipost
        multiply back the mean flat of the slice pixels per λ bin (PIXTABLE_FLAT_FIELD).
        What remains per 1.25 Å in a flat-fielded pixel-table row is therefore the true
        rate (e-/s/Å per spaxel of the scene × :func:`sources.sensitivity`) times the mean,
        over the slice pixels at λ, of slice throughput × spaxels per CCD pixel
        (``width_sky`` / slice width at mid-height) × edge transmission (the erf-blurred
        edge) × pixel QE × pixel height in Å / 1.25 — c(λ) ≈ 0.95 for the mini layout.
        A STD_RESPONSE carries it: response = 2.5 log10(sensitivity · c) [mag].

        Slice pixels are those with centres between the true 50 % edges (the pixel-table
        rule) and not flagged by the BADPIX_TABLE (dead and low-QE pixels: QE < 0.9, hot
        pixels); the mean is taken in ``step`` Å bins over all IFUs and interpolated to
        ``lam`` (Å).
        """
        from scipy.special import erf

        from recipes.algorithms.instrument import NOMINAL_DISPERSION

        from .profiles import get_profile

        width_sky = get_profile(self.profile).layout.width_sky
        ny, nx = self.data["trimmed_shape"]
        ymid = (ny + 1) / 2.0
        lo, hi = self.data["lambda_range"]
        edges = np.arange(lo - 100.0, hi + 100.0 + step, step)
        sums = np.zeros(edges.size - 1)
        counts = np.zeros(edges.size - 1)
        y = np.arange(1, ny + 1, dtype=float)
        for ifu in range(1, int(self.data["n_ifus"]) + 1):
            qe = self.qe_map(ifu)
            bad = qe < 0.9
            hot = np.asarray(self.ccd(ifu).hot_pixels)
            if hot.size:
                bad[hot[:, 0].astype(int), hot[:, 1].astype(int)] = True
            for g in self.slices(ifu):
                xl, xr = g.edges_at(y)
                x0, x1 = int(np.ceil(xl.min())), int(np.floor(xr.max()))
                xs = np.arange(max(x0, 1), min(x1, nx) + 1, dtype=float)
                xx, yy = np.meshgrid(xs, y)
                inside = (xx >= np.ceil(xl)[:, None]) & (xx <= np.floor(xr)[:, None])
                inside &= ~bad[yy.astype(int) - 1, xx.astype(int) - 1]
                xx, yy = xx[inside], yy[inside]
                left, right = g.edges_at(yy)
                sig = np.sqrt(2.0) * g.edge_sigma
                edge = 0.5 * (erf((xx - left) / sig) - erf((xx - right) / sig))
                height = g.wavelength(xx, yy + 0.5) - g.wavelength(xx, yy - 0.5)
                lm, rm = g.edges_at(ymid)
                wmid = float(rm - lm)  # the simulator spreads a spaxel over the mid-height width
                value = g.throughput * width_sky / wmid * edge * qe[yy.astype(int) - 1, xx.astype(int) - 1] * height
                idx = np.searchsorted(edges, g.wavelength(xx, yy)) - 1
                ok = (idx >= 0) & (idx < sums.size)
                sums += np.bincount(idx[ok], weights=value[ok], minlength=sums.size)
                counts += np.bincount(idx[ok], minlength=sums.size)
        good = counts > 0
        centres = 0.5 * (edges[1:] + edges[:-1])
        return np.interp(lam, centres[good], sums[good] / counts[good] / NOMINAL_DISPERSION)


def load_truth(outdir: str | Path) -> Truth:
    """Read the truth of the simulation in ``outdir`` (see the module docstring)."""
    outdir = Path(outdir)
    p = outdir / "truth" / "truth.json"
    if not p.exists():
        raise MuseredError(f"{p}: no simulator truth here (run `musered simulate {outdir}` first)")
    return Truth(outdir=outdir, data=json.loads(p.read_text()))
