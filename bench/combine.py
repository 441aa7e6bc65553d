"""Sigma-clipped cube combination: ours vs mpdaf ``CubeList.combine`` vs astropy ``sigma_clip``.

Usage: ``.venv/bin/python bench/combine.py [--nz NZ] [--ny NY] [--nx NX] [--ncubes N] [--dir DIR]``

Default size: 4 cubes of 460 × 300 × 300 float32 voxels (DATA + STAT), one eighth of
the full MUSE cube, so that a run takes about a minute and the files (1.3 GB) stay in
the page cache. ``--nz 3681`` is the full MUSE size: 10.6 GB of files, 3–6 minutes,
peak memory ≈ 14 GB (mostly mpdaf's float64 results); ours and mpdaf stream from the
files, astropy works on slabs of 460 planes. Ours reads each slab with ``pread`` into
two reused buffers and byte-swaps in place (astropy's memory-mapped read with a
converting copy was the slowest part), in a thread that overlaps the kernel; the kernel
sums over the cubes with the voxel index innermost (vectorised) and writes straight into
the output cube.

The cubes are written once to DIR (default a temporary folder; removed at the end):
a smooth spectrum per spaxel plus Gaussian noise (σ = 1, STAT = 1), NaN borders that
differ per cube, and cosmic rays (values +50…500) in 0.1 % of the voxels. Then, in the
same run and on the same files, with MPDAF's defaults (nmax = 2, nclip = 5, nstop = 2,
var = propagate):

1. ours: :func:`recipes.steps.mpdaf_combine.combine_cubes` (files read by slabs + the numba
   kernel, after a warm-up on a tiny stack), and the kernel alone on the in-memory stack;
2. mpdaf: ``CubeList(files).combine()`` (C + OpenMP), if mpdaf is installed;
3. astropy: read the stack, ``sigma_clip(stack, sigma=5, maxiters=2, cenfunc='median',
   stdfunc='std', axis=0)``, mean of the kept values, variance Σvar/n² of the kept values.

Wall-clock seconds (best of 2 for ours, one run for the peers) and, in brackets, the CPU
seconds of the process (all threads: on a shared machine the wall time also counts the
waits for a core); prints the ratio peer wall time / our wall time and how well the
results agree: ours vs mpdaf must be equal to float
precision; astropy clips at inclusive bounds and has no ``nstop``, so a few voxels may
differ: the fraction that agrees to 1e-5 is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipes.algorithms.cube import CubeGrid, write_datacube  # noqa: E402
from recipes.algorithms.cubelist import combine_cubes  # noqa: E402
from recipes.steps.mpdaf_combine import RECIPE  # noqa: E402
from recipes.kernels.cubecombine import combine_slab  # noqa: E402

PARAMS = RECIPE.validate({"nmax": 2, "nclip": "5.0", "nstop": 2, "var": "propagate"})


def write_cubes(folder: Path, n: int, shape: tuple[int, int, int], seed: int = 1) -> list[Path]:
    nz, ny, nx = shape
    grid = CubeGrid(nx, ny, nz, nx / 2, ny / 2, 150.0, 2.0, (-0.2 / 3600, 0.0, 0.0, 0.2 / 3600), 1.0, 4750.0, 1.25)
    rng = np.random.default_rng(seed)
    spectrum = (10 + 5 * np.sin(np.arange(nz) / 50.0)).astype(np.float32)
    paths = []
    for i in range(n):
        data = np.empty(shape, dtype=np.float32)
        step = max(1, 64_000_000 // (ny * nx))
        for z0 in range(0, nz, step):  # by slabs, to keep the generator's memory small
            z1 = min(nz, z0 + step)
            data[z0:z1] = spectrum[z0:z1, None, None] + rng.standard_normal((z1 - z0, ny, nx), dtype=np.float32)
        hits = rng.random(data.size, dtype=np.float32) < 1e-3
        flat = data.reshape(-1)
        flat[hits] += rng.uniform(50, 500, int(hits.sum())).astype(np.float32)
        data[:, : 2 + i, :] = np.nan  # borders that differ per cube
        data[:, :, nx - 1 - i :] = np.nan
        stat = np.ones(shape, dtype=np.float32)
        paths.append(write_datacube(folder / f"cube{i}.fits", fits.Header({"OBJECT": "BENCH"}), grid, data, stat))
        del data, stat, flat, hits
    return paths


class quiet_stdout:
    """Silence the C library's printf progress (file descriptor 1) during a call."""

    def __enter__(self):
        sys.stdout.flush()
        self.saved = os.dup(1)
        self.null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self.null, 1)

    def __exit__(self, *exc):
        os.dup2(self.saved, 1)
        os.close(self.null)
        os.close(self.saved)


def timed(fn):
    """(wall seconds, CPU seconds of the process (all threads), result) of ``fn()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def run_astropy(paths: list[Path], slab: int):
    from astropy.stats import sigma_clip

    with fits.open(paths[0]) as h:
        shape = h["DATA"].shape
    mean = np.empty(shape, dtype=np.float32)
    var = np.empty(shape, dtype=np.float32)
    for z0 in range(0, shape[0], slab):
        z1 = min(shape[0], z0 + slab)
        stack, vstack = [], []
        for p in paths:
            with fits.open(p, memmap=True) as h:
                stack.append(np.asarray(h["DATA"].section[z0:z1], dtype=np.float32))
                vstack.append(np.asarray(h["STAT"].section[z0:z1], dtype=np.float32))
        stack, vstack = np.stack(stack), np.stack(vstack)
        clipped = sigma_clip(stack, sigma=5.0, maxiters=2, cenfunc="median", stdfunc="std", axis=0, masked=True)
        kept = ~np.ma.getmaskarray(clipped)
        n = kept.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean[z0:z1] = clipped.mean(axis=0).filled(np.nan)
            var[z0:z1] = np.where(n > 0, np.where(kept, vstack, 0).sum(axis=0) / n.astype(np.float64) ** 2, np.nan)
    return mean, var


def agreement(a: np.ndarray, b, rtol: float = 1e-5, step: int = 64) -> tuple[float, float]:
    """(fraction of voxels equal within rtol (NaN == NaN), max |a − b| over finite pairs);
    ``b`` may be a masked array (masked = NaN). Compared by slabs of planes (memory)."""
    same, worst = 0, 0.0
    for z0 in range(0, a.shape[0], step):
        x = a[z0 : z0 + step].astype(np.float64)
        y = b[z0 : z0 + step]
        y = y.filled(np.nan) if np.ma.isMaskedArray(y) else np.asarray(y, dtype=np.float64)
        same += int(np.isclose(x, y, rtol=rtol, atol=0, equal_nan=True).sum())
        finite = np.isfinite(x) & np.isfinite(y)
        if finite.any():
            worst = max(worst, float(np.max(np.abs(x[finite] - y[finite]))))
    return same / a.size, worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nz", type=int, default=460)
    ap.add_argument("--ny", type=int, default=300)
    ap.add_argument("--nx", type=int, default=300)
    ap.add_argument("--ncubes", type=int, default=4)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # astropy unit-string and NaN-clipping chatter
    shape = (args.nz, args.ny, args.nx)
    folder = Path(tempfile.mkdtemp(prefix="bench_combine_", dir=args.dir))
    print(f"{args.ncubes} cubes of {args.nz} x {args.ny} x {args.nx} float32 (DATA + STAT) in {folder}; "
          f"{os.cpu_count()} cores")
    try:
        t, _, paths = timed(lambda: write_cubes(folder, args.ncubes, shape))
        print(f"wrote the cubes in {t:.1f} s")
        tiny = np.random.default_rng(0).normal(size=(3, 100)).astype(np.float32)
        combine_slab(tiny, np.ones_like(tiny))  # numba warm-up (compiled or cached)

        times = []
        for _ in range(2):  # best of 2; only one result is kept in memory at a time
            result = None
            t, cpu, result = timed(lambda: combine_cubes(paths, PARAMS))
            times.append((t, cpu))
        t_ours, cpu_ours = min(times)
        ours_data, ours_var = result[1], result[2]
        del result
        print(f"ours (files -> cube, numba):        {t_ours:8.2f} s ({cpu_ours:6.2f} cpu)")

        # the kernel alone on an in-memory stack (no I/O), when the stack fits in 4 GB
        if 8 * args.ncubes * ours_data.size <= 4e9:
            stack = np.stack([fits.getdata(p, "DATA").astype(np.float32).reshape(-1) for p in paths])
            vstack = np.stack([fits.getdata(p, "STAT").astype(np.float32).reshape(-1) for p in paths])
            kernel = lambda: combine_slab(stack, vstack, nmax=2, nclip_low=5.0, nclip_up=5.0, nstop=2)  # noqa: E731
            t_kernel, cpu_kernel = min(timed(kernel)[:2] for _ in range(2))
            del stack, vstack
            print(f"ours, kernel only (in memory):      {t_kernel:8.2f} s ({cpu_kernel:6.2f} cpu)")

        try:
            from mpdaf.obj import CubeList
        except ImportError:
            CubeList = None
            print("mpdaf: not installed, skipped")
        if CubeList is not None:
            import logging

            logging.getLogger("mpdaf").setLevel(logging.WARNING)
            with quiet_stdout():
                t_mpdaf, cpu_mpdaf, (cube, expmap, _) = timed(lambda: CubeList([str(p) for p in paths]).combine(
                    nmax=2, nclip=5.0, nstop=2, var="propagate"))  # fmt: skip
            frac_d, max_d = agreement(ours_data, cube.data)
            frac_v, _ = agreement(ours_var, cube.var)
            del cube, expmap
            print(f"mpdaf CubeList.combine (C/OpenMP): {t_mpdaf:8.2f} s ({cpu_mpdaf:6.2f} cpu)   "
                  f"ratio mpdaf/ours {t_mpdaf / t_ours:6.2f}x   "
                  f"agree: data {100 * frac_d:.4f} % (max |diff| {max_d:.2e}), var {100 * frac_v:.4f} %")

        t_astropy, cpu_astropy, (a_data, a_var) = timed(lambda: run_astropy(paths, slab=460))
        frac_d, max_d = agreement(ours_data, a_data)
        frac_v, _ = agreement(ours_var, a_var)
        print(f"astropy sigma_clip + mean:          {t_astropy:8.2f} s ({cpu_astropy:6.2f} cpu)   "
              f"ratio astropy/ours {t_astropy / t_ours:6.2f}x   "
              f"agree: data {100 * frac_d:.4f} % (max |diff| {max_d:.2e}), var {100 * frac_v:.4f} %")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
