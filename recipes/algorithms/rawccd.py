"""Raw CCD input: one IFU of a raw exposure read once as uint16, with its port geometry.

- :class:`RawCcd` and :func:`load_raw_ccd`: the image (adu), its headers and the four
  read-out ports from ``ESO DET OUTn ...`` (:func:`recipes.algorithms.instrument.detector_geometry`;
  never a hard-coded size);
- :func:`load_raw_stack`: several exposures of one IFU in one padded uint16 stack, the
  layout :func:`recipes.algorithms.preprocess.combine_frames` reads fastest;
- :func:`check_compatible`: inputs combined together share mode and detector setup;
- :func:`badpix_mask`: BADPIX_TABLE rows (raw 1-based coordinates) as a trimmed DQ map.

Arrays are 0-based ``[y, x]``; raw values in adu.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.base import RecipeError
from recipes.algorithms.instrument import Quadrant, detector_geometry, trimmed_shape
from recipes.io import chan_name, read_primary_header, read_raw_ifu


@dataclass
class RawCcd:
    """One IFU of one raw exposure: the uint16 image (adu) and its headers and geometry."""

    path: Path
    ifu: int
    image: np.ndarray
    header: fits.Header
    primary: fits.Header
    quadrants: list[Quadrant]

    @property
    def where(self) -> str:
        return f"{self.path.name}[{chan_name(self.ifu)}]"

    @property
    def shape(self) -> tuple[int, int]:
        """Trimmed shape ``(ny, nx)``."""
        return trimmed_shape(self.quadrants)

    def setup(self) -> tuple:
        """What must agree between inputs combined together: port layout and read mode."""
        ports = tuple(
            (q.out, q.data, q.trimmed, q.overscan_x, q.overscan_y) for q in self.quadrants
        )
        return (self.image.shape, ports, str(self.primary.get("ESO DET READ CURID", "")))


def load_raw_ccd(
    path: Path, ifu: int, primary: fits.Header | None = None, out: np.ndarray | None = None
) -> RawCcd:
    """Read one IFU of a raw file and its geometry (RecipeError naming the file).

    ``out`` receives the uint16 image (see :func:`load_raw_stack`)."""
    path = Path(path)
    image, header = read_raw_ifu(path, ifu, out)
    if primary is None:
        primary = read_primary_header(path)
    quadrants = detector_geometry(header, where=f"{path}[{chan_name(ifu)}]")
    return RawCcd(path, ifu, image, header, primary, quadrants)


#: Extra columns of padding per plane of a raw stack: planes a multiple of 4 KiB apart
#: alias in the CPU caches when a kernel reads the same pixel of every plane.
STACK_PAD = 32


#: Largest raw stack (bytes) :func:`load_raw_stack` accepts: with the three outputs and
#: the per-thread row buffers this bounds the memory of one IFU's combination.
MAX_STACK_BYTES = 6 * 1024**3


def load_raw_stack(
    paths: list[Path], ifu: int, primaries: list[fits.Header], max_bytes: int = MAX_STACK_BYTES
) -> list[RawCcd]:
    """Read one IFU of several raw files into one uint16 stack (read once, no copies).

    The images are views ``stack[i, :, :NAXIS1]`` of a ``[n, NAXIS2, NAXIS1 + pad]``
    array, the layout :func:`combine_frames` reads fastest (11 full-size frames: 0.4 GB).
    RecipeError naming the file when an image does not have the size of the first one,
    or when the stack would exceed ``max_bytes``.
    """
    first_image, first_header = read_raw_ifu(paths[0], ifu)
    ny, nx = first_image.shape
    need = len(paths) * ny * (nx + STACK_PAD) * 2
    if need > max_bytes:
        raise RecipeError(
            f"{Path(paths[0]).name}...: {len(paths)} raw frames of {chan_name(ifu)} need {need / 1024**3:.1f} GB, "
            f"more than the {max_bytes / 1024**3:.1f} GB allowed for one stack; combine fewer frames"
        )
    stack = np.empty((len(paths), ny, nx + STACK_PAD), dtype=np.uint16)
    stack[0, :, :nx] = first_image
    del first_image
    ccds = []
    for i, (path, primary) in enumerate(zip(paths, primaries)):
        if i == 0:
            where = f"{Path(path)}[{chan_name(ifu)}]"
            quadrants = detector_geometry(first_header, where=where)
            ccds.append(RawCcd(Path(path), ifu, stack[0, :, :nx], first_header, primary, quadrants))
        else:
            ccds.append(load_raw_ccd(path, ifu, primary, out=stack[i, :, :nx]))
    return ccds


def check_compatible(ccds: list[RawCcd]) -> None:
    """All inputs must share INS MODE, DET READ CURID and the port geometry.

    RecipeError naming the first file that differs from the first input.
    """
    first = ccds[0]
    mode = first.primary.get("ESO INS MODE")
    for ccd in ccds[1:]:
        if ccd.primary.get("ESO INS MODE") != mode:
            raise RecipeError(
                f"{ccd.path}: INS MODE {ccd.primary.get('ESO INS MODE')!r} differs from "
                f"{mode!r} of {first.path.name}; inputs must share one instrument mode"
            )
        if ccd.setup() != first.setup():
            raise RecipeError(
                f"{ccd.where}: detector setup (DET OUT geometry or DET READ CURID) differs from {first.where}"
            )


def badpix_mask(quadrants: list[Quadrant], xpos, ypos, status) -> np.ndarray:
    """Trimmed int32 DQ map from BADPIX_TABLE rows (1-based raw coordinates).

    Entries in prescans or overscans have no trimmed pixel and are ignored.
    """
    mask = np.zeros(trimmed_shape(quadrants), dtype=np.int32)
    x0 = np.asarray(xpos, dtype=np.int64) - 1
    y0 = np.asarray(ypos, dtype=np.int64) - 1
    st = np.asarray(status, dtype=np.int64).astype(np.int32)
    for q in quadrants:
        rows, cols = q.data
        inside = (y0 >= rows.start) & (y0 < rows.stop) & (x0 >= cols.start) & (x0 < cols.stop)
        ty = y0[inside] - rows.start + q.trimmed[0].start
        tx = x0[inside] - cols.start + q.trimmed[1].start
        np.bitwise_or.at(mask, (ty, tx), st[inside])
    return mask
