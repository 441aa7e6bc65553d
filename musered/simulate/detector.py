"""Detector state of the simulated CCDs: bias, gain, read noise, dark, QE and defects.

Everything is drawn once per simulation from the seed (per IFU, so that one IFU can be
regenerated alone) and recorded in the truth files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recipes.algorithms.instrument import DetectorFormat


@dataclass
class CCDState:
    """One IFU's CCD. Per-port arrays are ordered OUT1..OUT4.

    ``bias_level`` (adu) is the level at the first raw row of each port block,
    ``bias_gradient`` (adu) the linear rise over the port block height (it shows in the
    overscan too, as the DRS ``vpoly`` correction expects); ``bias_pattern`` the amplitude
    (adu) of a fixed 2-D structure in the data region only (see :func:`bias_structure`).
    ``dark_current`` in e-/pixel/hour; ``hot_pixels`` rows of (y, x, e-/hour) in 0-based
    trimmed coordinates; ``dead_columns`` 0-based trimmed x of columns with zero QE;
    ``low_qe_pixels`` rows of (y, x) with QE 0.5.
    """

    ifu: int
    gain: np.ndarray
    ron: np.ndarray
    bias_level: np.ndarray
    bias_gradient: np.ndarray
    bias_pattern: float
    dark_current: float
    qe_rms: float
    hot_pixels: np.ndarray
    dead_columns: np.ndarray
    low_qe_pixels: np.ndarray
    qe_seed: int

    def to_dict(self) -> dict:
        return {
            "ifu": self.ifu, "gain": self.gain.tolist(), "ron": self.ron.tolist(),
            "bias_level": self.bias_level.tolist(), "bias_gradient": self.bias_gradient.tolist(),
            "bias_pattern": self.bias_pattern, "dark_current": self.dark_current,
            "qe_rms": self.qe_rms, "hot_pixels": self.hot_pixels.tolist(),
            "dead_columns": self.dead_columns.tolist(), "low_qe_pixels": self.low_qe_pixels.tolist(),
            "qe_seed": self.qe_seed,
        }

    @classmethod
    def from_dict(cls, d: dict) -> CCDState:
        return cls(
            ifu=d["ifu"], gain=np.array(d["gain"]), ron=np.array(d["ron"]),
            bias_level=np.array(d["bias_level"]), bias_gradient=np.array(d["bias_gradient"]),
            bias_pattern=d["bias_pattern"], dark_current=d["dark_current"], qe_rms=d["qe_rms"],
            hot_pixels=np.array(d["hot_pixels"], dtype=float).reshape(-1, 3),
            dead_columns=np.array(d["dead_columns"], dtype=int),
            low_qe_pixels=np.array(d["low_qe_pixels"], dtype=int).reshape(-1, 2),
            qe_seed=d["qe_seed"],
        )


def make_ccd_state(ifu: int, fmt: DetectorFormat, rng: np.random.Generator) -> CCDState:
    """Draw the CCD state of IFU ``ifu`` (levels 950-1100 adu, gain 1.1-1.2, RON 2.4-2.7 e-)."""
    ny, nx = fmt.trimmed_shape
    n_hot = max(5, int(30 * ny * nx / 16.8e6))
    hot = np.column_stack([rng.integers(0, ny, n_hot), rng.integers(0, nx, n_hot),
                           rng.uniform(200.0, 5000.0, n_hot)]).astype(float)
    dead = np.sort(rng.choice(np.arange(50, nx - 50), size=2, replace=False))
    n_low = max(5, int(50 * ny * nx / 16.8e6))
    low = np.column_stack([rng.integers(0, ny, n_low), rng.integers(0, nx, n_low)])
    return CCDState(
        ifu=ifu, gain=rng.uniform(1.1, 1.2, 4).round(4), ron=rng.uniform(2.4, 2.7, 4).round(4),
        bias_level=rng.uniform(950.0, 1100.0, 4).round(2),
        bias_gradient=rng.uniform(0.5, 2.0, 4).round(3), bias_pattern=0.3,
        dark_current=float(rng.uniform(0.5, 1.5)), qe_rms=0.01, hot_pixels=hot,
        dead_columns=dead.astype(int), low_qe_pixels=low.astype(int),
        qe_seed=int(rng.integers(0, 2**31)),
    )


def qe_map(state: CCDState, shape: tuple[int, int]) -> np.ndarray:
    """Pixel QE map (float32, trimmed CCD): 1 + N(0, qe_rms), dead columns 0, low-QE pixels 0.5."""
    rng = np.random.default_rng(state.qe_seed)
    qe = rng.standard_normal(shape, dtype=np.float32)
    qe *= np.float32(state.qe_rms)
    qe += np.float32(1.0)
    qe[:, state.dead_columns] = 0.0
    if len(state.low_qe_pixels):
        qe[state.low_qe_pixels[:, 0], state.low_qe_pixels[:, 1]] = 0.5
    return qe


def bias_structure(amplitude: float, shape: tuple[int, int]) -> np.ndarray:
    """Fixed 2-D bias structure of one port's data region (adu, float32, [y, x] 0-based).

    A slow horizontal ripple plus a decaying ramp over the first 40 columns read out, both
    scaled by ``amplitude``; the overscan does not see it (only vpoly's polynomial in y is).
    """
    ny, nx = shape
    x = np.arange(nx, dtype=np.float32)
    y = np.arange(ny, dtype=np.float32)
    row = amplitude * (np.cos(2 * np.pi * x / max(nx / 3.0, 8.0)) + np.exp(-x / 20.0))
    col = 1.0 + 0.2 * np.sin(2 * np.pi * y / max(ny, 8))
    return (col[:, None] * row[None, :]).astype(np.float32)


def port_block(q) -> tuple[tuple[slice, slice], int, int]:
    """Raw block ``(rows, cols)`` covering a port's prescans, data and overscans, and the
    offset of its data region inside the block."""
    r0 = min(q.prescan_y[0].start, q.data[0].start, q.overscan_y[0].start)
    r1 = max(q.prescan_y[0].stop, q.data[0].stop, q.overscan_y[0].stop)
    c0 = min(q.prescan_x[1].start, q.data[1].start, q.overscan_x[1].start)
    c1 = max(q.prescan_x[1].stop, q.data[1].stop, q.overscan_x[1].stop)
    return (slice(r0, r1), slice(c0, c1)), q.data[0].start - r0, q.data[1].start - c0


def expected_bias_mean(state: CCDState, port: int, q, level: float) -> float:
    """Mean expected raw level (adu) over the data region of ``port`` (0-based index):
    the frame level, the mean of the vertical gradient and of the 2-D structure."""
    block, r_off, _ = port_block(q)
    nr = block[0].stop - block[0].start
    rows = np.arange(r_off, r_off + q.ny)
    grad = state.bias_gradient[port] * float(np.mean(rows / nr))
    s = float(bias_structure(state.bias_pattern, (q.ny, q.nx)).mean())
    return level + grad + s
