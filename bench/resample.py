"""Resampler speed and memory against plain numpy/scipy binning, on one pixel table.

Usage: ``.venv/bin/python bench/resample.py [NROWS]`` (default 3e7 rows).

Builds a MUSE-like positioned pixel table in memory: 300 × 300 spaxels of 0.2″ (slices
along x, one pixel per spaxel with sub-pixel scatter) and as many 1.25 Å planes as needed
for NROWS rows, with the rows in the order scibasic writes them (slice, CCD row, CCD column). Then, in the same run and on the same table:

1. peer A: ``numpy.histogramdd`` (sum and count per voxel → mean), after computing voxel
   coordinates with numpy (``CubeGrid.world_to_pixel`` of ``PixTable.celestial``);
2. peer B: ``scipy.stats.binned_statistic_dd(statistic="mean")`` on the same coordinates;
3. ours, end to end from the table (TAN projection included): ``nearest`` without CR
   rejection (the same job as the peers, nearest sample instead of the mean),
   ``drizzle`` without CR rejection and ``drizzle`` with the default ``crsigma=15``.

Times are wall-clock seconds (best of 2 runs for ours, one run for the peers, after a
numba warm-up on a tiny table); peak memory is the peak resident-set growth during the call
(sampled every 5 ms from /proc/self/status), so numba allocations count too. Prints the
ratio peer time / our time.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipes.algorithms.projection import tan_deproject  # noqa: E402
from recipes.algorithms.resampling import grid_from_pixtable, make_cube  # noqa: E402
from recipes.kernels.resample import ResampleOptions  # noqa: E402
from recipes.algorithms.origin import pack_origin  # noqa: E402
from recipes.algorithms.pixtable import WCS_POSITIONED, make_pixtable, set_wcs_state  # noqa: E402

SPAXEL_DEG = 0.2 / 3600


def build_table(nrows: int, nx: int = 300, ny: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    nlam = max(1, nrows // (nx * ny))
    n = nx * ny * nlam
    # rows in scibasic order: slice by slice (one spaxel row per slice here), then CCD row
    # (wavelength), then CCD column (position along the slice)
    k = np.arange(n, dtype=np.int64)
    iy, rest = np.divmod(k, nlam * nx)
    il, ix = np.divmod(rest, nx)
    del k, rest
    sx = ix + rng.uniform(-0.1, 0.1, n)
    sy = iy + rng.uniform(-0.1, 0.1, n)
    ra, dec = tan_deproject(-(sx - nx / 2) * SPAXEL_DEG, (sy - ny / 2) * SPAXEL_DEG, 150.0, 2.0)
    del sx, sy
    lam = 4750.0 + 1.25 * (il + rng.uniform(-0.4, 0.4, n))
    data = (100.0 + rng.normal(0, 3, n)).astype(np.float32)
    header = fits.Header()
    set_wcs_state(header, WCS_POSITIONED, (150.0, 2.0))
    header["HIERARCH ESO INS MODE"] = "WFM-NOAO-N"
    pt = make_pixtable(
        {"xpos": (ra - 150.0).astype(np.float32), "ypos": (dec - 2.0).astype(np.float32),
         "lambda": lam.astype(np.float32), "data": data, "dq": np.zeros(n, np.int32),
         "stat": np.full(n, 9.0, np.float32),
         "origin": pack_origin(1 + iy // 12 % 24, 1 + iy % 12, 1 + ix % 200, 1 + il % 4000, 0)},
        header, xpos="deg", ypos="deg",
    )  # fmt: skip
    return pt


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def measure(func):
    """(result, seconds, peak RSS growth in MB) of ``func()``."""
    base = rss_mb()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    result = func()
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    peak[0] = max(peak[0], rss_mb())
    return result, seconds, peak[0] - base


def main() -> None:
    nrows = int(float(sys.argv[1])) if len(sys.argv) > 1 else 30_000_000
    small = build_table(3000, nx=20, ny=15)
    for method in ("nearest", "drizzle"):
        make_cube(small, grid_from_pixtable(small), ResampleOptions(method=method))  # numba warm-up
    t0 = time.perf_counter()
    pt = build_table(nrows)
    grid = grid_from_pixtable(pt)
    print(f"pixel table: {pt.nrows:,} rows (built in {time.perf_counter() - t0:.1f} s); "
          f"cube {grid.nx} x {grid.ny} x {grid.nz} = {grid.nx * grid.ny * grid.nz:,} voxels")  # fmt: skip

    def coords():
        ra, dec = pt.celestial()
        fx, fy = grid.world_to_pixel(ra, dec)
        return np.column_stack([grid.plane_of(pt.lam), fy, fx])

    def peer_histogramdd():
        sample = coords()
        edges = [np.arange(n + 1) - 0.5 for n in grid.shape]
        counts, _ = np.histogramdd(sample, bins=edges)
        sums, _ = np.histogramdd(sample, bins=edges, weights=pt.data)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (sums / counts).astype(np.float32)

    def peer_binned_statistic():
        from scipy.stats import binned_statistic_dd

        sample = coords()
        edges = [np.arange(n + 1) - 0.5 for n in grid.shape]
        return binned_statistic_dd(sample, pt.data, statistic="mean", bins=edges).statistic.astype(np.float32)

    results = {}
    cube_a, t_a, m_a = measure(peer_histogramdd)
    results["numpy histogramdd (mean per voxel)"] = (t_a, m_a)
    del cube_a
    cube_b, t_b, m_b = measure(peer_binned_statistic)
    results["scipy binned_statistic_dd (mean)"] = (t_b, m_b)
    del cube_b
    ours = {
        "ours nearest, crsigma=0": ResampleOptions(method="nearest", crsigma=0.0),
        "ours drizzle, crsigma=0": ResampleOptions(method="drizzle", crsigma=0.0),
        "ours drizzle, crsigma=15 (default)": ResampleOptions(method="drizzle"),
    }
    for label, options in ours.items():
        best = None
        for _ in range(2):
            cube, seconds, mem = measure(lambda: make_cube(pt, grid, options))
            del cube
            best = (seconds, mem) if best is None or seconds < best[0] else best
        results[label] = best
    print(f"{'method':40s} {'time [s]':>9s} {'peak +RSS [MB]':>15s} {'histogramdd/this':>17s}")
    for label, (seconds, mem) in results.items():
        print(f"{label:40s} {seconds:9.2f} {mem:15.0f} {t_a / seconds:17.2f}")
    best_peer = min(t_a, t_b)
    print(f"ratio best peer / ours nearest: {best_peer / results['ours nearest, crsigma=0'][0]:.2f}; "
          f"best peer / ours drizzle (default CR): {best_peer / results['ours drizzle, crsigma=15 (default)'][0]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
