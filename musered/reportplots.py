"""The report's plots: one PNG per product kind, drawn with matplotlib's Agg backend.

Each ``plot_*`` function reads product files with the recipes' own readers, draws one
figure and writes it to ``out`` (a ``.png`` path), returning ``out``. Per-IFU products
show the first IFU they hold (the title says which); the bias histogram overlays all
IFUs. Wavelengths are in Å, LSF widths are FWHM in Å, images are shown with a
zscale stretch. A product that cannot be read raises ``RecipeError`` or
``OSError``/``ValueError``; the report turns that into a note instead of a plot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, no server

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402

FIGSIZE = (6.4, 3.6)
DPI = 90
# Rows of a cube read at once when collapsing it (bounded memory on full-size cubes).
CUBE_CHUNK = 64


def _save(fig, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=DPI, format="png", bbox_inches="tight")  # no empty margins around thin images
    plt.close(fig)
    return out


def _stretch(image: np.ndarray) -> tuple[float, float]:
    """Display limits: IRAF's zscale (robust to cosmic rays, saturated and empty pixels),
    else the 1–99.5 percentiles."""
    from astropy.visualization import ZScaleInterval

    good = image[np.isfinite(image)]
    if good.size == 0:
        return 0.0, 1.0
    try:
        lo, hi = ZScaleInterval().get_limits(good)
    except (ValueError, IndexError):
        lo, hi = np.percentile(good, [1.0, 99.5])
    if not hi > lo:
        lo, hi = np.percentile(good, [1.0, 99.5])
    return (float(lo), float(hi)) if hi > lo else (float(lo) - 0.5, float(lo) + 0.5)


def _show(ax, image: np.ndarray, label: str | None = None) -> None:
    vmin, vmax = _stretch(image)
    im = ax.imshow(image, origin="lower", cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    # a colour bar exactly as tall as the image, whatever its aspect ratio
    cax = make_axes_locatable(ax).append_axes("right", size="4%", pad=0.08)
    ax.figure.colorbar(im, cax=cax, label=label)


# --------------------------------------------------------------------------------------
# Calibrations


def plot_ccd_histogram(path: Path, out: Path, title: str) -> Path:
    """Histogram of the DATA pixel values of every IFU of a master CCD image (bias, dark),
    5σ-clipped around the median so that hot pixels do not flatten it."""
    from recipes.io import list_ifus, read_image_product

    ifus = list_ifus(path)
    if not ifus:
        raise ValueError(f"{Path(path).name}: no CHANnn.DATA extension")
    fig, ax = plt.subplots(figsize=FIGSIZE)
    unit = "adu"
    for ifu in ifus:
        image = read_image_product(path, ifu)
        unit = image.header.get("BUNIT", unit)
        data = image.data
        good = data[np.isfinite(data)]
        med = float(np.median(good))
        mad = 1.4826 * float(np.median(np.abs(good - med))) or 1.0
        sel = good[np.abs(good - med) < 5 * mad]
        ax.hist(sel, bins=80, histtype="step", label=f"IFU {ifu}" if len(ifus) <= 8 else None)
    ax.set_yscale("log")
    ax.set_xlabel(f"pixel value [{unit}]")
    ax.set_ylabel("pixels")
    ax.set_title(title)
    if len(ifus) <= 8:
        ax.legend(fontsize="small")
    return _save(fig, out)


def plot_traces(trace_path: Path, out: Path, flat_path: Path | None = None) -> Path:
    """The slice edges (solid) and centres (dotted) of TRACE_TABLE over the master flat of
    the first IFU: the whole CCD, and a zoom on four slices in the middle of the CCD where
    a misplaced edge shows."""
    from recipes.algorithms.calibtables import read_trace
    from recipes.algorithms.instrument import polyval_y

    ifu = _first_table_ifu(trace_path)
    trace = read_trace(trace_path, ifu)
    nslice = trace.left.shape[0]
    image = None
    if flat_path is not None:
        from recipes.io import read_image_product

        image = read_image_product(flat_path, ifu).data
    ny = image.shape[0] if image is not None else 4112
    y = np.linspace(1, ny, 96)
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.6), gridspec_kw={"width_ratios": [1.3, 1]})
    k0 = max(nslice // 2 - 2, 0)
    zoom_slices = range(k0, min(k0 + 4, nslice))
    for ax, slices, lw in ((axes[0], range(nslice), 0.4), (axes[1], zoom_slices, 1.0)):
        if image is not None:
            _show(ax, image, "normalised flat" if ax is axes[1] else None)
            ax.set_aspect("auto")
        for k in slices:
            # FITS 1-based coordinates -> 0-based pixel centres of imshow
            for coeffs, style in ((trace.left[k], "-"), (trace.right[k], "-"), (trace.centre[k], ":")):
                ax.plot(polyval_y(coeffs, y) - 1, y - 1, style, color="tab:orange", lw=lw)
        ax.set_xlabel("x [pix]")
    xl = min(polyval_y(trace.left[k], y).min() for k in zoom_slices) - 6
    xr = max(polyval_y(trace.right[k], y).max() for k in zoom_slices) + 6
    axes[1].set_xlim(xl - 1, xr - 1)
    axes[1].set_ylim(0, ny - 1)
    axes[0].set_ylabel("y [pix]")
    axes[0].set_title(f"IFU {ifu}: {nslice} slices")
    axes[1].set_title(f"slices {zoom_slices[0] + 1}–{zoom_slices[-1] + 1} (CCD order)")
    fig.suptitle("Slice traces over the master flat")
    return _save(fig, out)


def _first_table_ifu(path: Path) -> int:
    import re

    with fits.open(path) as hdul:
        for hdu in hdul:
            match = re.match(r"^CHAN(\d\d)$", str(hdu.header.get("EXTNAME", "")).strip())
            if match:
                return int(match.group(1))
    raise ValueError(f"{Path(path).name}: no CHANnn table extension")


def plot_wavecal_residuals(path: Path, out: Path) -> Path:
    """WAVECAL_RESIDUALS of the first IFU: residual (Å) of every line kept in the last fit
    iteration of each slice, against wavelength."""
    from recipes.io import read_table_product

    ifu = _first_table_ifu(path)
    table, _ = read_table_product(path, ifu)
    slices = np.asarray(table["slice"], dtype=int)
    iteration = np.asarray(table["iteration"], dtype=int)
    lam = np.asarray(table["lambda"], dtype=float)
    resid = np.asarray(table["residual"], dtype=float)
    keep = np.zeros(len(table), dtype=bool)
    for s in np.unique(slices):
        sel = slices == s
        keep |= sel & (iteration == iteration[sel].max())
    fig, ax = plt.subplots(figsize=FIGSIZE)
    sc = ax.scatter(lam[keep], resid[keep], c=slices[keep], s=4, cmap="viridis")
    fig.colorbar(sc, ax=ax, label="slice")
    ax.axhline(0, color="k", lw=0.5)
    rms = float(np.sqrt(np.mean(resid[keep] ** 2))) if keep.any() else float("nan")
    ax.set_xlabel("wavelength [Å]")
    ax.set_ylabel("residual [Å]")
    ax.set_title(f"Wavelength residuals, IFU {ifu}: rms {rms:.4f} Å, {int(keep.sum())} lines")
    return _save(fig, out)


def plot_wavecal_rms(qc: Mapping[str, object], out: Path) -> Path:
    """Fit RMS per slice from the WAVECAL_TABLE QC (when no residual table was saved)."""
    import re

    pattern = re.compile(r"^CHAN(\d\d) QC WAVECAL SLICE(\d+) FIT RMS$")
    values: dict[int, dict[int, float]] = {}
    for key, value in qc.items():
        match = pattern.match(key)
        if match and isinstance(value, (int, float)):
            values.setdefault(int(match.group(1)), {})[int(match.group(2))] = float(value)
    if not values:
        raise ValueError("no QC WAVECAL SLICEj FIT RMS values")
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for ifu, by_slice in sorted(values.items()):
        slices = sorted(by_slice)
        ax.plot(slices, [by_slice[s] for s in slices], ".-", label=f"IFU {ifu}")
    ax.set_xlabel("slice")
    ax.set_ylabel("fit rms [Å]")
    ax.set_title("Wavelength solution fit rms per slice")
    if len(values) <= 8:
        ax.legend(fontsize="small")
    return _save(fig, out)


def plot_lsf_width(path: Path, out: Path) -> Path:
    """LSF FWHM (Å) against wavelength for every slice of the first IFU (grey) and their
    median (black)."""
    from recipes.algorithms.lsfmodel import profile_fwhm, read_lsf_profile

    cubes = read_lsf_profile(path)
    ifu = min(cubes)
    cube = cubes[ifu]
    nslice, nnode, _ = cube.data.shape
    fwhm = np.array([[profile_fwhm(cube.grid.dlam, cube.data[s, n]) for n in range(nnode)] for s in range(nslice)])
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for s in range(nslice):
        ax.plot(cube.grid.lam, fwhm[s], color="0.7", lw=0.6)
    ax.plot(cube.grid.lam, np.nanmedian(fwhm, axis=0), color="k", lw=1.5, label="median of slices")
    ax.set_xlabel("wavelength [Å]")
    ax.set_ylabel("LSF FWHM [Å]")
    ax.set_title(f"LSF width, IFU {ifu} ({nslice} slices)")
    ax.legend(fontsize="small")
    return _save(fig, out)


def plot_ccd_image(path: Path, out: Path, title: str) -> Path:
    """The DATA of the first IFU of a CCD image product (e.g. OBJECT_RED)."""
    from recipes.io import list_ifus, read_image_product

    ifus = list_ifus(path)
    if not ifus:
        raise ValueError(f"{Path(path).name}: no CHANnn.DATA extension")
    image = read_image_product(path, ifus[0])
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    _show(ax, image.data, _unit(image.header.get("BUNIT")))
    ax.set_title(f"{title}, IFU {ifus[0]}")
    return _save(fig, out)


# --------------------------------------------------------------------------------------
# Flux calibration


def plot_response(path: Path, out: Path, telluric: Path | None = None, inputs: Sequence[Path] = ()) -> Path:
    """STD_RESPONSE (response [mag, 2.5 log10 of count/s/Å per erg/s/cm²/Å] against
    wavelength, its error as a band) with the STD_TELLURIC correction (airmass 1) on a
    second axis when given, and the responses it was combined from (std-combine) in grey;
    read with the muse_standard readers of :mod:`recipes.algorithms.fluxcal`."""
    from recipes.algorithms.fluxcal import read_response, read_telluric

    lam, resp, err = read_response(path)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for k, source in enumerate(p for p in inputs if Path(p).is_file()):
        ilam, iresp, _ = read_response(source)
        ax.plot(ilam, iresp, color="0.6", lw=0.6, label="inputs" if k == 0 else None)
    ax.plot(lam, resp, color="tab:blue", label="combined" if inputs else "response")
    if inputs:
        ax.legend(fontsize="small", loc="lower right")
    if np.any(err > 0):
        ax.fill_between(lam, resp - err, resp + err, color="tab:blue", alpha=0.3, lw=0)
    ax.set_xlabel("wavelength [Å]")
    ax.set_ylabel("response [mag]", color="tab:blue")
    ax.set_title("Instrument response" + (" and telluric correction" if telluric is not None else ""))
    if telluric is not None:
        tl, tf, _ = read_telluric(telluric)
        ax2 = ax.twinx()
        ax2.plot(tl, tf, color="tab:red", lw=0.8)
        ax2.set_ylabel("telluric transmission", color="tab:red")
    return _save(fig, out)


# --------------------------------------------------------------------------------------
# Images and cubes


def _data_hdu(hdul: fits.HDUList, ndim: int):
    """The ``DATA`` extension with ``ndim`` axes, else the first image HDU with that many."""
    candidates = [h for h in hdul if getattr(h, "is_image", False) and h.header.get("NAXIS") == ndim]
    for hdu in candidates:
        if str(hdu.header.get("EXTNAME", "")).strip().upper() == "DATA":
            return hdu
    if candidates:
        return candidates[0]
    raise ValueError(f"no {ndim}-D image extension")


def plot_image(path: Path, out: Path, title: str) -> Path:
    """A 2-D image product (IMAGE_FOV, PREVIEW_FOV, EXPOSURE_MAP)."""
    with fits.open(path) as hdul:
        hdu = _data_hdu(hdul, 2)
        image = np.array(hdu.data, dtype=np.float32)
        unit = hdu.header.get("BUNIT")
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    _show(ax, image, _unit(unit))
    ax.set_xlabel("x [spaxel]")
    ax.set_ylabel("y [spaxel]")
    ax.set_title(title)
    return _save(fig, out)


def _unit(bunit: str | None) -> str | None:
    """A short label for a FITS BUNIT (MUSE's ``10**(-20)*erg/s/cm**2/Angstrom``)."""
    if not bunit:
        return None
    text = str(bunit).strip()
    text = text.replace("10**(-20)*", "1e-20 ").replace("cm**2", "cm²").replace("Angstrom", "Å")
    return text


def collapse_cube(path: Path, position: tuple[int, int] | None = None, white_light: bool = True,
                  ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, tuple[int, int], str | None]:
    """(white-light image = mean over wavelength, wavelengths in Å, spectrum = sum of the
    5×5 spaxels around ``position`` (x, y; default the brightest white-light spaxel),
    that position, BUNIT) of a cube product. Planes with no valid spaxel give NaN.
    ``white_light=False`` (only with a ``position``) skips the image: one pass less.

    The cube is read by wavelength chunks from a memory map, so full-size cubes (3681
    planes) do not need their whole size in memory.
    """
    with fits.open(path, memmap=True) as hdul:
        hdu = _data_hdu(hdul, 3)
        header = hdu.header
        data = hdu.data
        nlam = data.shape[0]
        if position is not None and not white_light:
            white = None
        else:
            white, count = _mean_image(data)
            if position is None:
                position = brightest(np.where(count >= 0.5 * nlam, white, np.nan))
        x0, y0 = position
        box = np.asarray(data[:, max(y0 - 2, 0):y0 + 3, max(x0 - 2, 0):x0 + 3], dtype=np.float64)
        valid = np.isfinite(box).any(axis=(1, 2))
        spectrum = np.where(valid, np.nansum(box, axis=(1, 2)), np.nan)
        step = float(header.get("CD3_3", header.get("CDELT3", 1.0)))
        lam = float(header.get("CRVAL3", 0.0)) + (np.arange(nlam) + 1 - float(header.get("CRPIX3", 1.0))) * step
        if str(header.get("CUNIT3", "Angstrom")).strip().lower() in ("m", "meter"):
            lam = lam * 1e10
        return white, lam, spectrum, (int(x0), int(y0)), header.get("BUNIT")


def _mean_image(data) -> tuple[np.ndarray, np.ndarray]:
    """(mean over the first axis ignoring NaN, count of valid planes), by chunks."""
    total = np.zeros(data.shape[1:], dtype=np.float64)
    count = np.zeros(data.shape[1:], dtype=np.int64)
    for start in range(0, data.shape[0], CUBE_CHUNK):
        block = np.asarray(data[start:start + CUBE_CHUNK], dtype=np.float64)
        good = np.isfinite(block)
        total += np.where(good, block, 0.0).sum(axis=0)
        count += good.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        white = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return white.astype(np.float32), count


def brightest(image: np.ndarray) -> tuple[int, int]:
    """(x, y) 0-based of the brightest finite pixel; the centre when there is none."""
    if not np.isfinite(image).any():
        return image.shape[1] // 2, image.shape[0] // 2
    y0, x0 = np.unravel_index(int(np.nanargmax(image)), image.shape)
    return int(x0), int(y0)


def plot_cube_image(path: Path, out: Path, title: str) -> Path:
    """The mean over wavelength of a cube (e.g. TWILIGHT_CUBE, whose few planes make a
    spectrum meaningless)."""
    white, lam, _spectrum, _pos, unit = collapse_cube(path)
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    _show(ax, white, _unit(unit))
    ax.set_xlabel("x [spaxel]")
    ax.set_ylabel("y [spaxel]")
    ax.set_title(f"{title}: mean of {lam.size} planes")
    return _save(fig, out)


def plot_cube(path: Path, out: Path, title: str, white_path: Path | None = None) -> Path:
    """A cube's white-light image (from ``white_path``, an IMAGE_FOV on the same grid, when
    given) beside the spectrum of the 5×5 spaxels around the image's brightest spaxel
    (marked on the image)."""
    image = None
    if white_path is not None:
        with fits.open(white_path) as hdul:
            image = np.array(_data_hdu(hdul, 2).data, dtype=np.float32)
    with fits.open(path, memmap=True) as hdul:
        shape = tuple(_data_hdu(hdul, 3).data.shape[1:])
    if image is not None and image.shape == shape:
        white = image
        _, lam, spectrum, (x0, y0), unit = collapse_cube(path, brightest(image), white_light=False)
    else:
        white, lam, spectrum, (x0, y0), unit = collapse_cube(path)
    label = _unit(unit)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11.0, 4.2), gridspec_kw={"width_ratios": [1, 1.6]})
    _show(ax1, white, label)
    ax1.add_patch(matplotlib.patches.Rectangle((x0 - 2.5, y0 - 2.5), 5, 5, fill=False, color="tab:red", lw=1.2))
    ax1.set_title("white-light image")
    ax1.set_xlabel("x [spaxel]")
    ax1.set_ylabel("y [spaxel]")
    ax2.plot(lam, spectrum, lw=0.7, color="k")
    ax2.set_xlabel("wavelength [Å]")
    ax2.set_ylabel("flux in 5×5 spaxels" + (f" [{label}]" if label else ""))
    ax2.set_title(f"spectrum at spaxel ({x0}, {y0}) (red box)")
    fig.suptitle(title)
    return _save(fig, out)
