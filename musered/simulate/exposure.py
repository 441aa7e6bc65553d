"""Render one raw exposure: light per slice (numba), dark, QE, cosmic rays, read-out.

:class:`Simulator` holds the instrument (slice layouts, CCD states, scene) of one
simulation and produces, for a :class:`~musered.simulate.plan.FramePlan`, the raw uint16
image of each IFU (``render_ifu``) plus the per-frame truth (frame bias levels, cosmic
rays).
"""

from __future__ import annotations

import numpy as np

from recipes.algorithms.instrument import SPAXEL_ARCSEC, detector_geometry, polyval_y, slice_field_centre
from recipes.algorithms.slice_layout import IFULayout, make_ifu_layout
from musered.simulate.render import digitise_block, render_slice

from . import sources as src
from .detector import (
    CCDState, bias_structure, expected_bias_mean, make_ccd_state, port_block, qe_map,
)
from .plan import FramePlan
from .profiles import Profile

#: Peak electron rates per pixel (e-/s) of the calibration light sources.
FLAT_PEAK_RATE = 1500.0
TWILIGHT_PEAK_RATE = 1200.0
ARC_PEAK_LINE = 60000.0  # e- in the brightest line of each lamp per pixel along x
COSMIC_RATE = 0.02  # events per second per million pixels
LAMBDA_STEP = 0.5  # Å, sampling of the continuum spectra handed to the kernel


class Simulator:
    """The simulated instrument and sky for one ``seed``."""

    def __init__(self, profile: Profile, seed: int, scene: src.Scene | None = None):
        self.profile = profile
        self.seed = int(seed)
        fmt = profile.detector
        self.trimmed_shape = fmt.trimmed_shape
        self.layouts: list[IFULayout] = []
        self.ccds: list[CCDState] = []
        for ifu in range(1, profile.n_ifus + 1):
            rng = np.random.default_rng([self.seed, 1, ifu])
            self.layouts.append(make_ifu_layout(ifu, self.trimmed_shape, profile.layout, rng))
            self.ccds.append(make_ccd_state(ifu, fmt, np.random.default_rng([self.seed, 2, ifu])))
        rng = np.random.default_rng([self.seed, 3])
        n = profile.n_ifus
        # sky-versus-lamp illumination per slice: offset and linear slope along the slice
        self.illumination = np.stack([1.0 + rng.normal(0, 0.02, (n, 48)),
                                      rng.normal(0, 0.02, (n, 48))], axis=-1)
        w = profile.layout.width_sky * 4 * SPAXEL_ARCSEC
        h = n * 12 * SPAXEL_ARCSEC
        self.scene = scene or src.make_scene(np.random.default_rng([self.seed, 4]), (w, h))
        lo, hi = profile.lambda_range
        self.lam = np.arange(lo - 60.0, hi + 60.0, LAMBDA_STEP)
        self._qe: dict[int, np.ndarray] = {}
        self._bias2d: dict[tuple, np.ndarray] = {}
        #: rms (adu) of the frame-to-frame bias level drift (the overscan tracks it)
        self.bias_drift = 0.3
        self.geometry = detector_geometry(self.ext_geometry_header(), "simulator")

    # ---------------------------------------------------------------- helpers
    def ext_geometry_header(self, ifu: int = 1) -> dict:
        fmt = self.profile.detector
        st = self.ccds[ifu - 1]
        h = {k: v[0] for k, v in fmt.out_keywords(st.gain, st.ron).items()}
        h["NAXIS1"], h["NAXIS2"] = fmt.raw_shape[1], fmt.raw_shape[0]
        return h

    def _bias_structure(self, amplitude: float, shape: tuple[int, int]) -> np.ndarray:
        key = (amplitude, shape)
        if key not in self._bias2d:
            self._bias2d[key] = bias_structure(amplitude, shape)
        return self._bias2d[key]

    def qe(self, ifu: int) -> np.ndarray:
        if ifu not in self._qe:
            self._qe[ifu] = qe_map(self.ccds[ifu - 1], self.trimmed_shape)
        return self._qe[ifu]

    # ---------------------------------------------------------------- light
    def _spectra(self, frame: FramePlan):
        """Continuum spectra (e-/s/Å per spaxel) and lines for a frame; maps come later."""
        lam = self.lam
        sc = self.scene
        conts, lines = [], []
        if frame.kind in ("FLAT", "ILLUM"):
            conts.append(("lamp", src.lamp_continuum(lam) * FLAT_PEAK_RATE / self.profile.layout.dispersion))
        elif frame.kind == "SKYFLAT":
            # the twilight fades: later frames are fainter by 2x each
            fade = 0.5 ** (frame.tpl_expno - 1)
            conts.append(("twilight", src.twilight_continuum(lam) * TWILIGHT_PEAK_RATE * fade
                          / self.profile.layout.dispersion))
        elif frame.kind == "ARC":
            ll, lf = src.arc_lines(frame.lamp)
            inr = (ll > lam[0]) & (ll < lam[-1])
            eff = src.throughput_curve(ll) / src.throughput_curve(ll).max()
            flux = lf * eff
            if inr.any():
                flux = flux / flux[inr].max()
            lines.append(("arc", ll, flux * ARC_PEAK_LINE / max(frame.exptime, 1e-3)))
        elif frame.kind in ("STD", "OBJECT"):
            sens = src.sensitivity(lam)
            ext = 10 ** (-0.4 * src.extinction(lam) * frame.airmass)
            area = SPAXEL_ARCSEC**2
            conts.append(("sky", sc.sky_spectrum(lam) * sens * area))
            sl, sf = src.sky_lines()
            lines.append(("sky", sl, sf * src.sensitivity(sl) * area))
            if frame.kind == "STD":
                conts.append(("std", src.std_reference_flux(lam) * ext * sens))
            else:
                for s in sc.stars:
                    conts.append((s.name, s.spectrum(lam) * ext * sens))
                nl = np.array([v[0] for v in sc.nebula.lines.values()])
                nf = np.array([v[1] for v in sc.nebula.lines.values()]) * sc.nebula.surface
                nf = nf * 10 ** (-0.4 * src.extinction(nl) * frame.airmass) * src.sensitivity(nl) * area
                lines.append(("nebula", nl, nf))
        return conts, lines

    def _maps(self, frame: FramePlan, ifu: int, sl, conts, lines, nsamp: int):
        """Spatial weights of each component at ``nsamp`` samples along slice ``sl``."""
        s = -0.5 + (np.arange(nsamp) + 0.5) / nsamp
        ws = self.profile.layout.width_sky
        xc, yc = slice_field_centre(ifu, sl.slice_sky, self.profile.n_ifus, ws)
        a, b = self.illumination[ifu - 1, sl.slice_ccd - 1]
        illum = a + b * s
        sky_light = frame.kind in ("SKYFLAT", "STD", "OBJECT")
        ones = np.ones(nsamp)
        if sky_light:
            xi, eta = src.field_to_sky(xc + s * ws, np.full(nsamp, yc), frame.posang)
            xi = xi + frame.offset[0] + frame.pointing_error[0]
            eta = eta + frame.offset[1] + frame.pointing_error[1]
        cmaps = []
        for name, _ in conts:
            if name in ("lamp",):
                cmaps.append(ones)
            elif name in ("twilight", "sky"):
                cmaps.append(illum)
            elif name == "std":
                cmaps.append(illum * self._psf(xi, eta, 0.0, 0.0, frame.seeing))
            else:
                star = next(st for st in self.scene.stars if st.name == name)
                cmaps.append(illum * self._psf(xi, eta, star.xi, star.eta, frame.seeing))
        lmaps = []
        for name, *_ in lines:
            if name == "arc":
                lmaps.append(ones)
            elif name == "sky":
                lmaps.append(illum)
            else:
                lmaps.append(illum * self.scene.nebula.brightness(xi, eta))
        return cmaps, lmaps

    @staticmethod
    def _psf(xi, eta, x0, y0, fwhm):
        """Fraction of a point source's flux falling in a spaxel centred at (xi, eta)."""
        r2 = (xi - x0) ** 2 + (eta - y0) ** 2
        return src.moffat(r2, fwhm) * SPAXEL_ARCSEC**2

    def electrons(self, frame: FramePlan, ifu: int) -> np.ndarray:
        """Expected electrons on the trimmed CCD of ``ifu`` (float32), before noise."""
        img = np.zeros(self.trimmed_shape, dtype=np.float32)
        if frame.kind not in ("BIAS", "DARK"):
            conts, lines = self._spectra(frame)
            cspec = np.array([c[1] for c in conts]) if conts else np.zeros((0, self.lam.size))
            if lines:
                ll = np.concatenate([x[1] for x in lines])
                lf = np.concatenate([x[2] for x in lines])
                lg = np.concatenate([np.full(len(x[1]), i) for i, x in enumerate(lines)])
                order = np.argsort(ll)
                ll, lf, lg = ll[order], lf[order], lg[order].astype(np.int64)
            else:
                ll, lf, lg = np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
            nsamp = int(4 * self.profile.layout.width_sky)
            cmax = cspec.max(axis=1) if len(cspec) else np.zeros(0)
            ymid = (self.trimmed_shape[0] + 1) / 2.0
            for sl in self.layouts[ifu - 1].slices:
                cm, lm = self._maps(frame, ifu, sl, conts, lines, nsamp)
                cmaps = np.array(cm) if cm else np.zeros((0, nsamp))
                lmaps = np.array(lm) if lm else np.zeros((1, nsamp))
                wmid = float(polyval_y(sl.right, ymid) - polyval_y(sl.left, ymid))
                scale = frame.exptime * sl.throughput * self.profile.layout.width_sky / wmid
                # skip components that add < 1e-3 e- to every pixel of this slice (far
                # Moffat wings): the kernel cost grows with the number of components
                keep = cmaps.max(axis=1) * cmax * scale * 2.0 >= 1e-3
                render_slice(img, sl.left, sl.right, sl.edge_sigma, sl.wlc, sl.lsf, scale,
                             float(self.lam[0]), LAMBDA_STEP, np.ascontiguousarray(cspec[keep]),
                             np.ascontiguousarray(cmaps[keep]), ll, lf, lg, lmaps)
        st = self.ccds[ifu - 1]
        if frame.exptime <= 0 and frame.kind == "BIAS":
            return img  # no light, no dark: skip the QE map
        if frame.exptime > 0:
            img += np.float32(st.dark_current * frame.exptime / 3600.0)
            hp = st.hot_pixels
            img[hp[:, 0].astype(int), hp[:, 1].astype(int)] += (hp[:, 2] * frame.exptime / 3600.0).astype(np.float32)
        img *= self.qe(ifu)
        return img

    def cosmics(self, frame: FramePlan, ifu: int, img: np.ndarray, rng: np.random.Generator) -> list:
        """Add cosmic-ray hits (short tracks of 1-4 pixels) to ``img``; return their list."""
        ny, nx = img.shape
        n = rng.poisson(COSMIC_RATE * frame.exptime * ny * nx / 1e6) if frame.exptime > 0 else 0
        out = []
        for _ in range(n):
            y, x = int(rng.integers(2, ny - 6)), int(rng.integers(2, nx - 6))
            e = float(rng.uniform(500.0, 20000.0))
            length = int(rng.integers(1, 5))
            dy, dx = (1, 0) if rng.random() < 0.5 else (0, 1)
            for k in range(length):
                img[y + k * dy, x + k * dx] += e / length
                out.append([ifu, y + k * dy + 1, x + k * dx + 1, round(e / length, 1)])
        return out

    # ---------------------------------------------------------------- read-out
    def render_ifu(self, frame: FramePlan, ifu: int, frame_index: int) -> tuple[np.ndarray, dict]:
        """Raw uint16 image of ``ifu`` for ``frame`` and this IFU's frame truth."""
        rng = np.random.default_rng([self.seed, 5, frame_index, ifu])
        st = self.ccds[ifu - 1]
        img = self.electrons(frame, ifu)
        crs = self.cosmics(frame, ifu, img, rng)
        raw = np.empty(self.profile.detector.raw_shape, dtype=np.uint16)
        levels, means = [], []
        for p, q in enumerate(self.geometry):
            block, r_off, c_off = port_block(q)
            level = float(st.bias_level[p] + rng.normal(0, 1.0) * self.bias_drift)
            bias2d = self._bias_structure(st.bias_pattern, (q.ny, q.nx))
            key = (self.seed * 1000003 + frame_index * 1009 + ifu * 17 + p) % (2**63)
            digitise_block(raw[block], img[q.trimmed], bias2d, r_off, c_off, level,
                           float(st.bias_gradient[p]),
                           float(st.gain[p]), float(st.ron[p]), key)
            levels.append(round(level, 4))
            means.append(round(expected_bias_mean(st, p, q, level), 4))
        return raw, {"bias_level": levels, "bias_mean": means, "cosmics": crs}
