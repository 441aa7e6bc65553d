"""The alignment preview: exposures combined with their offsets applied, sources marked.

:func:`plot_alignment` draws, from the products of one exp-align run, a PNG with two
panels: the PREVIEW_FOV mosaic (the white-light images averaged after correction, see
:func:`recipes.steps.exp_align.mosaic`) with every exposure's detected sources marked at their
corrected positions (RA_CORR, DEC_CORR of its SOURCE_LIST; one colour per exposure), and
the offsets themselves [arcsec] per exposure. When the offsets are right the markers of the
exposures sit on top of each other and on single stars; doubled stars or scattered markers
show a bad alignment at a glance.

For the ``image`` method (no PREVIEW_FOV), the mosaic is rebuilt from the IMAGE_FOV inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from .errors import MuseredError


def plot_alignment(out: Path, offset_list: Path, preview: Path | None = None,
                   source_lists: Sequence[Path] = (), fov_images: Sequence[Path] = (),
                   title: str = "") -> Path:  # fmt: skip
    """Write the alignment preview PNG ``out`` and return its path.

    ``preview``: a PREVIEW_FOV; without it the mosaic is made from ``fov_images`` (IMAGE_FOV
    files) and the OFFSET_LIST. ``source_lists``: SOURCE_LIST files to mark.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        offsets = Table.read(offset_list)
    except (OSError, ValueError) as exc:
        raise MuseredError(f"{offset_list}: cannot read OFFSET_LIST ({str(exc).splitlines()[0]})") from None
    if preview is not None:
        with fits.open(preview) as hdul:
            hdu = hdul["DATA"] if "DATA" in hdul else hdul[1]
            image = np.asarray(hdu.data, dtype=float)
            wcs = WCS(hdu.header, naxis=2)
    elif fov_images:
        from recipes.algorithms.fov import mosaic, read_fov

        # one image per exposure of the OFFSET_LIST (the inputs may hold several filters)
        by_mjd = {}
        listed = np.asarray(offsets["MJD_OBS"], float)
        for im in (read_fov(p) for p in fov_images):
            if np.any(np.abs(listed - im.mjd_obs) < 1e-6):
                by_mjd.setdefault(round(im.mjd_obs, 6), im)
        if not by_mjd:
            raise MuseredError(f"alignment plot: no IMAGE_FOV matches the exposures of {offset_list}")
        images = [by_mjd[k] for k in sorted(by_mjd)]
        dra, ddec = _offsets_for(images, offsets)
        data, _, header = mosaic(images, dra, ddec)
        image, wcs = np.asarray(data, dtype=float), WCS(header)
    else:
        raise MuseredError("alignment plot: need a PREVIEW_FOV or the IMAGE_FOV images")

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 5), gridspec_kw={"width_ratios": [1.4, 1]})
    finite = image[np.isfinite(image)]
    lo, hi = (np.percentile(finite, [5, 99.5]) if finite.size else (0.0, 1.0))
    # a square-root stretch keeps the faint stars visible next to the bright ones
    norm = matplotlib.colors.PowerNorm(0.5, vmin=lo, vmax=hi if hi > lo else lo + 1, clip=True)
    ax.imshow(image, origin="lower", cmap="Greys", norm=norm)
    colours = plt.get_cmap("tab10")
    for k, path in enumerate(source_lists):
        table = Table.read(path)
        if len(table) == 0:
            continue
        x, y = wcs.all_world2pix(np.asarray(table["RA_CORR"], float), np.asarray(table["DEC_CORR"], float), 0)
        ax.scatter(x, y, s=60, facecolors="none", edgecolors=[colours(k % 10)], linewidths=1.0,
                   label=f"exp {k + 1} ({len(table)})")
    if source_lists:
        ax.legend(loc="upper right", fontsize=7, framealpha=0.7)
    ax.set_xlabel("x [pix]")
    ax.set_ylabel("y [pix]")
    ax.set_title("exposures combined with offsets applied")

    dec = np.deg2rad(float(np.nanmean(wcs.wcs.crval[1])))
    ra_arcsec = np.asarray(offsets["RA_OFFSET"], float) * 3600.0 * np.cos(dec)
    dec_arcsec = np.asarray(offsets["DEC_OFFSET"], float) * 3600.0
    for k, (a, b) in enumerate(zip(ra_arcsec, dec_arcsec)):
        ax2.scatter([a], [b], color=colours(k % 10), s=40)
        ax2.annotate(str(k + 1), (a, b), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax2.axhline(0, color="0.7", lw=0.5)
    ax2.axvline(0, color="0.7", lw=0.5)
    ax2.set_xlabel("RA_OFFSET × cos δ [arcsec]")
    ax2.set_ylabel("DEC_OFFSET [arcsec]")
    ax2.set_title("offsets (subtracted from each exposure)")
    span = max(1.0, float(np.nanmax(np.abs(np.concatenate([ra_arcsec, dec_arcsec])))) * 1.3)
    ax2.set_xlim(span, -span)          # east left, as on the sky
    ax2.set_ylim(-span, span)
    ax2.set_aspect("equal")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _offsets_for(images, offsets: Table) -> tuple[np.ndarray, np.ndarray]:
    """RA/DEC offsets [deg] of each image, matched by MJD-OBS (0 when absent)."""
    mjd = np.asarray(offsets["MJD_OBS"], float)
    dra, ddec = np.zeros(len(images)), np.zeros(len(images))
    for k, im in enumerate(images):
        hit = np.flatnonzero(np.abs(mjd - im.mjd_obs) < 1e-6)
        if hit.size:
            dra[k] = float(offsets["RA_OFFSET"][hit[0]])
            ddec[k] = float(offsets["DEC_OFFSET"][hit[0]])
    return dra, ddec
