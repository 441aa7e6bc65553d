"""Render spectra onto a MUSE CCD and digitise them (numba), with numpy references.

Two jobs, each a numba kernel plus a short numpy twin that the tests compare:

* :func:`render_slice` adds the light of one slice to a trimmed CCD image (electrons):
  for every pixel inside the slice (edges blurred by an erf of width ``edge_sigma``) it
  finds the position along the slice on the sky, the wavelengths of its centre and of its
  lower/upper borders from the slice's λ(x, y) polynomial, and sums
  (a) continuum components ``map_k(s) * cont_k(λ_c) * dλ`` (continuum sampled at the
  pixel centre) and (b) emission lines ``map_g(s) * F_m * [Φ((λ_hi-λ_m)/σ) - Φ((λ_lo-λ_m)/σ)]``
  (Gaussian LSF integrated over the pixel, σ = FWHM(λ)/2.3548).
* :func:`digitise_block` turns expected electrons into raw adu for one read-out port:
  Poisson photon noise, bias level with a vertical gradient, gain, Gaussian read noise,
  rounding and clipping to uint16. Each image row draws from its own xorshift64* stream
  seeded by splitmix64 from (key, row), so the result does not depend on thread
  scheduling.

Coordinates: arrays are ``[y, x]`` 0-based; the slice polynomials (edges, λ) take
trimmed-CCD FITS 1-based coordinates (pixel centre of array index i is i + 1).
"""

from __future__ import annotations

import math

import numba
import numpy as np

_SQRT2 = math.sqrt(2.0)
_FWHM2SIG = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@numba.njit(cache=True, inline="always")
def _poly(c, y):
    v = 0.0
    for k in range(c.shape[0] - 1, -1, -1):
        v = v * y + c[k]
    return v


@numba.njit(cache=True, inline="always")
def _interp_map(maps, k, s):
    """Linear interpolation of ``maps[k]`` sampled at sample centres across s in [-0.5, 0.5]."""
    n = maps.shape[1]
    t = (s + 0.5) * n - 0.5
    if t <= 0.0:
        return maps[k, 0]
    if t >= n - 1:
        return maps[k, n - 1]
    i = int(t)
    f = t - i
    return maps[k, i] * (1.0 - f) + maps[k, i + 1] * f


@numba.njit(cache=True, parallel=True)
def render_slice(image, left, right, edge_sigma, wlc, lsf, scale,
                 cont_lam0, cont_dlam, cont_spec, cont_maps,
                 line_lam, line_flux, line_group, line_maps):  # pragma: no cover - numba
    """Add the light of one slice to ``image`` (float32/64 ``[y, x]``, electrons).

    Parameters
    ----------
    left, right : float64[5+1]
        Edge polynomials x(y), 1-based coordinates, increasing powers.
    edge_sigma : float
        Gaussian blur of the edges (px).
    wlc : float64[3, 7]
        λ(x, y) = Σ wlc[I, J] x^I y^J in Å.
    lsf : float64[n]
        FWHM(λ) in Å as a polynomial in (λ - 7000)/1000.
    scale : float
        Multiplier for the whole slice (throughput × exposure time × spaxels per pixel
        are folded in by the caller; here it is applied as is).
    cont_lam0, cont_dlam, cont_spec : float, float, float64[K, L]
        Continuum spectra on a regular grid (per spaxel, per Å).
    cont_maps : float64[K, S]
        Spatial weight of each continuum component at S samples along the slice
        (sample i at s = -0.5 + (i + 0.5)/S, s = sky offset from the slice centre in
        slice lengths).
    line_lam, line_flux, line_group : float64[M], float64[M], int64[M]
        Emission lines sorted by wavelength, flux per spaxel, and their spatial group.
    line_maps : float64[G, S]
        Spatial weight of each line group along the slice.
    """
    ny, nx = image.shape
    ncont = cont_spec.shape[0]
    nline = line_lam.shape[0]
    nsamp = cont_maps.shape[1]
    nspec = cont_spec.shape[1]
    for iy in numba.prange(ny):
        y = iy + 1.0
        xl = _poly(left, y)
        xr = _poly(right, y)
        w = xr - xl
        # λ(x, y) = A + B x + C x^2 at the row centre and at its borders
        a0 = _poly(wlc[0], y)
        b0 = _poly(wlc[1], y)
        c0 = _poly(wlc[2], y)
        alo = _poly(wlc[0], y - 0.5)
        blo = _poly(wlc[1], y - 0.5)
        clo = _poly(wlc[2], y - 0.5)
        ahi = _poly(wlc[0], y + 0.5)
        bhi = _poly(wlc[1], y + 0.5)
        chi = _poly(wlc[2], y + 0.5)
        pad = 5.0 * edge_sigma + 1.0
        i0 = max(int(math.floor(xl - pad)) - 1, 0)
        i1 = min(int(math.ceil(xr + pad)), nx)
        for ix in range(i0, i1):
            x = ix + 1.0
            if edge_sigma > 0:
                if x - xl > 6.0 * edge_sigma and xr - x > 6.0 * edge_sigma:
                    ew = 1.0  # erf is 1 to double precision this far inside
                else:
                    ew = 0.5 * (math.erf((x - xl) / (_SQRT2 * edge_sigma))
                                - math.erf((x - xr) / (_SQRT2 * edge_sigma)))
            else:
                ew = 1.0 if (x >= xl and x < xr) else 0.0
            if ew < 1e-7:
                continue
            s = 0.5 - (x - xl) / w
            lc = a0 + b0 * x + c0 * x * x
            llo = alo + blo * x + clo * x * x
            lhi = ahi + bhi * x + chi * x * x
            val = 0.0
            dl = lhi - llo
            if ncont > 0:
                # interpolation weights shared by all components (same s, same λ)
                tm = (s + 0.5) * nsamp - 0.5
                if tm <= 0.0:
                    im, fm = 0, 0.0
                elif tm >= nsamp - 1:
                    im, fm = nsamp - 2, 1.0
                else:
                    im = int(tm)
                    fm = tm - im
                ts = (lc - cont_lam0) / cont_dlam
                if ts <= 0.0:
                    isp, fs = 0, 0.0
                elif ts >= nspec - 1:
                    isp, fs = nspec - 2, 1.0
                else:
                    isp = int(ts)
                    fs = ts - isp
                for k in range(ncont):
                    m = cont_maps[k, im] * (1.0 - fm) + cont_maps[k, im + 1] * fm
                    c = cont_spec[k, isp] * (1.0 - fs) + cont_spec[k, isp + 1] * fs
                    val += m * c * dl
            if nline > 0:
                sig = _poly(lsf, (lc - 7000.0) / 1000.0) * _FWHM2SIG
                reach = 7.0 * sig + abs(dl)
                j0 = np.searchsorted(line_lam, lc - reach)
                j1 = np.searchsorted(line_lam, lc + reach)
                for j in range(j0, j1):
                    m = _interp_map(line_maps, line_group[j], s)
                    if m != 0.0:
                        frac = 0.5 * (math.erf((lhi - line_lam[j]) / (_SQRT2 * sig))
                                      - math.erf((llo - line_lam[j]) / (_SQRT2 * sig)))
                        val += m * line_flux[j] * frac
            image[iy, ix] += val * ew * scale


def render_slice_reference(image, left, right, edge_sigma, wlc, lsf, scale,
                           cont_lam0, cont_dlam, cont_spec, cont_maps,
                           line_lam, line_flux, line_group, line_maps) -> None:
    """Pure-numpy twin of :func:`render_slice` (same arguments, same result)."""
    from scipy.special import erf

    ny, nx = image.shape
    y = np.arange(1, ny + 1, dtype=float)[:, None]
    x = np.arange(1, nx + 1, dtype=float)[None, :]
    pv = np.polynomial.polynomial.polyval
    xl, xr = pv(y, left), pv(y, right)
    ew = 0.5 * (erf((x - xl) / (_SQRT2 * edge_sigma)) - erf((x - xr) / (_SQRT2 * edge_sigma)))
    s = 0.5 - (x - xl) / (xr - xl)

    def lam_at(yy):
        return sum(pv(yy, wlc[i]) * x**i for i in range(wlc.shape[0]))

    lc, llo, lhi = lam_at(y), lam_at(y - 0.5), lam_at(y + 0.5)
    nsamp = cont_maps.shape[1] if cont_maps.size else line_maps.shape[1]
    grid = -0.5 + (np.arange(nsamp) + 0.5) / nsamp
    val = np.zeros(image.shape)
    lgrid = cont_lam0 + cont_dlam * np.arange(cont_spec.shape[1]) if cont_spec.size else None
    for k in range(cont_spec.shape[0]):
        m = np.interp(s, grid, cont_maps[k])
        val += m * np.interp(lc, lgrid, cont_spec[k]) * (lhi - llo)
    sig = pv((lc - 7000.0) / 1000.0, lsf) * _FWHM2SIG
    for j in range(line_lam.shape[0]):
        m = np.interp(s, grid, line_maps[line_group[j]])
        frac = 0.5 * (erf((lhi - line_lam[j]) / (_SQRT2 * sig)) - erf((llo - line_lam[j]) / (_SQRT2 * sig)))
        reach = 7.0 * sig + np.abs(lhi - llo)
        val += np.where(np.abs(lc - line_lam[j]) < reach, m * line_flux[j] * frac, 0.0)
    contrib = val * ew * scale
    # the kernel visits only x in [floor(left - pad), ceil(right + pad)], pad = 5 sigma + 1
    pad = 5.0 * edge_sigma + 1.0
    inside = (x >= np.floor(xl - pad)) & (x <= np.ceil(xr + pad))
    contrib = np.where(inside & (ew >= 1e-7), contrib, 0.0)
    image += contrib.astype(image.dtype)


# --------------------------------------------------------------------------------------
# Counter-based random numbers and digitisation
# --------------------------------------------------------------------------------------

@numba.njit(cache=True, inline="always")
def _splitmix(z):
    z = (z + numba.uint64(0x9E3779B97F4A7C15))
    z = (z ^ (z >> numba.uint64(30))) * numba.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> numba.uint64(27))) * numba.uint64(0x94D049BB133111EB)
    return z ^ (z >> numba.uint64(31))


@numba.njit(cache=True, inline="always")
def _xorshift(state):
    """xorshift64* step: returns (new state, uniform in (0, 1))."""
    state ^= state >> numba.uint64(12)
    state ^= state << numba.uint64(25)
    state ^= state >> numba.uint64(27)
    out = state * numba.uint64(0x2545F4914F6CDD1D)
    return state, ((out >> numba.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True, parallel=True)
def digitise_block(out, signal, offset, r0, c0, level, gradient, gain, ron_e, key):  # pragma: no cover
    """Write one read-out port into ``out`` (uint16 view of the port's raw block).

    ``signal`` (electrons, float) and ``offset`` (adu, noise-free fixed bias structure)
    cover the data region that starts at row ``r0``, column ``c0`` of ``out``;
    prescan/overscan pixels receive neither. Every pixel gets
    ``level + gradient * (row / nrows) + offset + (Poisson(signal) + N(0, ron_e))/gain``
    adu, rounded and clipped to [0, 65535]. Below 10 e- the photon noise is an exact
    Poisson deviate; above, photon and read noise are drawn together as one Gaussian of
    variance ``signal + ron_e**2``. Each row has its own xorshift64* stream seeded from
    (``key``, row) with splitmix64, so results do not depend on thread scheduling.
    """
    nr, nc = out.shape
    sr, sc = signal.shape
    k1 = _splitmix(numba.uint64(key))
    for r in numba.prange(nr):
        st = _splitmix(k1 ^ _splitmix(numba.uint64(r) + numba.uint64(0x632BE59BD9B4E019)))
        if st == 0:
            st = numba.uint64(1)
        base = level + gradient * (r / nr)
        spare = 0.0
        have = False
        rr = r - r0
        for c in range(nc):
            # a standard normal deviate (Marsaglia polar method, pairs)
            if have:
                g = spare
                have = False
            else:
                while True:
                    st, u1 = _xorshift(st)
                    st, u2 = _xorshift(st)
                    a = 2.0 * u1 - 1.0
                    b = 2.0 * u2 - 1.0
                    q = a * a + b * b
                    if q < 1.0 and q > 0.0:
                        break
                f = math.sqrt(-2.0 * math.log(q) / q)
                g = a * f
                spare = b * f
                have = True
            cc = c - c0
            v = base
            if rr >= 0 and rr < sr and cc >= 0 and cc < sc:
                lam = signal[rr, cc]
                v += offset[rr, cc]
                if lam >= 10.0:
                    e = lam + math.sqrt(lam + ron_e * ron_e) * g
                elif lam > 0.0:
                    lim = math.exp(-lam)
                    k = 0
                    p = 1.0
                    while True:
                        st, u = _xorshift(st)
                        p *= u
                        if p <= lim:
                            break
                        k += 1
                    e = k + ron_e * g
                else:
                    e = ron_e * g
            else:
                e = ron_e * g
            v = math.floor(v + e / gain + 0.5)
            if v < 0.0:
                v = 0.0
            elif v > 65535.0:
                v = 65535.0
            out[r, c] = numba.uint16(v)


def digitise_block_reference(out, signal, offset, r0, c0, level, gradient, gain, ron_e, key) -> None:
    """Noise-free numpy twin of :func:`digitise_block`: identical to the kernel when
    ``ron_e`` is 0 and ``signal`` is 0 (the noise itself is checked statistically)."""
    nr, nc = out.shape
    v = level + gradient * (np.arange(nr)[:, None] / nr) + np.zeros((1, nc))
    e = np.zeros((nr, nc))
    sr, sc = signal.shape
    e[r0:r0 + sr, c0:c0 + sc] = np.floor(signal + 0.5)
    o = np.zeros((nr, nc))
    o[r0:r0 + sr, c0:c0 + sc] = offset
    v = np.clip(np.floor(v + o + e / gain + 0.5), 0, 65535)
    out[...] = v.astype(np.uint16)
