"""Small raw MUSE frames with known truth, for the calibration tests.

Frames follow muse-raw-format.md exactly (empty primary, ``CHANnn`` uint16 extensions
stored as BITPIX=16/BZERO=32768, ``ESO DET OUTn`` keywords from
:class:`recipes.algorithms.instrument.DetectorFormat`), only smaller: by default 4 ports of
64 x 48 pixels with 8-pixel pre/overscans.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.algorithms.instrument import DetectorFormat, detector_geometry
from recipes.io import hkey

SMALL = DetectorFormat(nx=64, ny=48, prscx=8, prscy=8, ovscx=8, ovscy=8)
GAINS = (1.10, 1.15, 1.20, 1.25)  # count/adu
RONS = (2.6, 2.8, 3.0, 3.2)  # e-
LEVELS = (1010.3, 1020.7, 1030.1, 1040.6)  # adu


def ext_header(fmt: DetectorFormat, ifu: int, gains=GAINS, rons=RONS) -> fits.Header:
    header = fits.Header()
    header["EXTNAME"] = f"CHAN{ifu:02d}"
    header[hkey("ESO DET CHIP NAME")] = f"CCD{ifu:02d}"
    header[hkey("ESO DET CHIP ID")] = f"ID{ifu:02d}"
    header[hkey("ESO DET CHIP NX")] = 2 * fmt.nx
    header[hkey("ESO DET CHIP NY")] = 2 * fmt.ny
    for key, value in fmt.out_keywords(gains, rons, chip_index=ifu).items():
        header[hkey(key)] = value
    return header


def primary_header(dpr_type: str = "BIAS", exptime: float = 0.0, mode: str = "WFM-NOAO-N", index: int = 0) -> fits.Header:
    header = fits.Header()
    header["INSTRUME"] = "MUSE"
    header["EXPTIME"] = exptime
    header["DATE-OBS"] = f"2017-06-16T10:{40 + index // 60:02d}:{index % 60:02d}.000"
    header["MJD-OBS"] = 57920.44 + index * 1e-4
    header[hkey("ESO DPR CATG")] = "CALIB"
    header[hkey("ESO DPR TYPE")] = dpr_type
    header[hkey("ESO DPR TECH")] = "IFU"
    header[hkey("ESO INS MODE")] = mode
    header[hkey("ESO TPL START")] = "2017-06-16T10:40:27"
    header[hkey("ESO DET READ CURID")] = 1
    header[hkey("ESO DET READ CURNAME")] = "SCI1.0"
    return header


def trimmed_to_raw(fmt: DetectorFormat, trimmed: np.ndarray, header: fits.Header) -> tuple[np.ndarray, list]:
    """Place a trimmed-frame array into a raw-sized float array (zeros elsewhere)."""
    quadrants = detector_geometry(header)
    raw = np.zeros(fmt.raw_shape, dtype=np.float64)
    for q in quadrants:
        raw[q.data] = trimmed[q.trimmed]
    return raw, quadrants


def make_raw_image(
    fmt: DetectorFormat,
    header: fits.Header,
    rng: np.random.Generator,
    levels=LEVELS,
    structure: np.ndarray | None = None,
    signal_e: np.ndarray | None = None,
    drift_amplitude: float = 0.0,
    rons=RONS,
    gains=GAINS,
) -> np.ndarray:
    """A raw uint16 image: port level + vertical drift (data and overscan alike) +
    2-D structure (adu, data only) + Poisson signal (e-, data only) + read noise."""
    shape = fmt.raw_shape
    struct = np.zeros(fmt.trimmed_shape) if structure is None else structure
    raw_struct, quadrants = trimmed_to_raw(fmt, struct, header)
    image = np.empty(shape, dtype=np.float64)
    rows = np.arange(shape[0])
    drift = drift_amplitude * np.sin(rows / shape[0] * 2.5)[:, None]
    for i, q in enumerate(quadrants):
        # the port's whole raw block: data + its prescans and overscans
        r0 = min(q.data[0].start, q.overscan_y[0].start, q.prescan_y[0].start)
        r1 = max(q.data[0].stop, q.overscan_y[0].stop, q.prescan_y[0].stop)
        c0 = min(q.data[1].start, q.overscan_x[1].start, q.prescan_x[1].start)
        c1 = max(q.data[1].stop, q.overscan_x[1].stop, q.prescan_x[1].stop)
        block = (slice(r0, r1), slice(c0, c1))
        noise = rng.normal(0.0, rons[i] / gains[i], size=(r1 - r0, c1 - c0))
        image[block] = levels[i] + drift[r0:r1] + noise
        image[q.data] += raw_struct[q.data]
        if signal_e is not None:
            electrons = rng.poisson(np.clip(signal_e[q.trimmed], 0, None)).astype(np.float64)
            image[q.data] += electrons / gains[i]
    return np.clip(np.rint(image), 0, 65535).astype(np.uint16)


def write_raw(path: Path, primary: fits.Header, images: dict[int, tuple[np.ndarray, fits.Header]]) -> Path:
    """Write a raw file: empty primary + CHANnn uint16 extensions (BZERO=32768)."""
    hdus = [fits.PrimaryHDU(header=primary)]
    for ifu in sorted(images):
        image, header = images[ifu]
        hdu = fits.ImageHDU(image.astype(np.uint16), header=header.copy())
        hdus.append(hdu)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return Path(path)


def smooth_structure(fmt: DetectorFormat, amplitude: float = 1.5) -> np.ndarray:
    """A smooth 2-D bias structure (adu) on the trimmed frame, zero mean per port-ish."""
    ny, nx = fmt.trimmed_shape
    y, x = np.mgrid[0:ny, 0:nx]
    return amplitude * (np.sin(x / nx * 3.0) * np.cos(y / ny * 2.0) + 0.3 * (x / nx - 0.5))
