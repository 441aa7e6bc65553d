"""Benchmark: one full-size simulated exposure vs. writing the same array with astropy.

Run: ``.venv/bin/python bench/simulate.py [--kind OBJECT|FLAT|ARC|BIAS] [--ifus 24]``

Two child processes, measured in the same run:

* ``simulate``: render one exposure of the ``full`` profile (24 IFUs of 4224 x 4240
  uint16 pixels: slices, spectra, noise, cosmic rays, read-out) and write it to disk,
  one IFU at a time (numba kernels compiled beforehand on a tiny frame).
* ``astropy``: write a file of the same size (primary + 24 uint16 extensions, astropy
  scales them to BZERO=32768) with ``astropy.io.fits`` alone — the floor any writer pays.

Prints both wall times, their ratio (goal: within 2x) and each child's peak RSS (goal for
the simulator: < 6 GB).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child_simulate(outdir: Path, kind: str, ifus: int) -> dict:
    import numpy as np

    from musered.simulate.exposure import Simulator
    from musered.simulate.plan import Target, night_plan
    from musered.simulate.profiles import FULL, MINI
    from musered.simulate.run import write_frame

    plan = night_plan(dt.date(2024, 3, 10), Target("F", 150.0, -30.0), Target("S", 140.0, -30.0),
                      np.random.default_rng(0), n_exposures=1)
    frame = next(f for f in plan if f.kind == kind)
    # compile (or load cached) kernels on a mini frame, outside the timing
    write_frame(Simulator(dataclasses.replace(MINI, n_ifus=1), 1), frame, 1, outdir / "warm.fits")
    t0 = time.perf_counter()
    sim = Simulator(dataclasses.replace(FULL, n_ifus=ifus), 1)
    write_frame(sim, frame, 1, outdir / "sim.fits")
    wall = time.perf_counter() - t0
    return {"wall": wall, "bytes": (outdir / "sim.fits").stat().st_size,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child_astropy(outdir: Path, ifus: int) -> dict:
    import numpy as np
    from astropy.io import fits

    from musered.simulate.profiles import FULL

    rng = np.random.default_rng(0)
    data = rng.integers(900, 1200, FULL.detector.raw_shape, dtype=np.uint16)
    t0 = time.perf_counter()
    hdus = [fits.PrimaryHDU()] + [fits.ImageHDU(data, name=f"CHAN{i:02d}") for i in range(1, ifus + 1)]
    fits.HDUList(hdus).writeto(outdir / "astropy.fits", overwrite=True)
    wall = time.perf_counter() - t0
    return {"wall": wall, "bytes": (outdir / "astropy.fits").stat().st_size,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(which: str, args, outdir: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", which, "--kind", args.kind, "--ifus", str(args.ifus),
           "--outdir", str(outdir)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", default="OBJECT", choices=["OBJECT", "FLAT", "ARC", "BIAS", "SKYFLAT", "STD"])
    ap.add_argument("--ifus", type=int, default=24)
    ap.add_argument("--child", choices=["simulate", "astropy"])
    ap.add_argument("--outdir")
    args = ap.parse_args()
    if args.child:
        outdir = Path(args.outdir)
        res = child_simulate(outdir, args.kind, args.ifus) if args.child == "simulate" \
            else child_astropy(outdir, args.ifus)
        print(json.dumps(res))
        return
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        tmp = Path(tmp)
        peer = run_child("astropy", args, tmp)
        sim = run_child("simulate", args, tmp)
    print(f"full-size {args.kind} exposure, {args.ifus} IFUs, {sim['bytes'] / 1e6:.0f} MB")
    print(f"  musered simulate (render + noise + write): {sim['wall']:7.2f} s   peak RSS {sim['maxrss_mb']:7.0f} MB")
    print(f"  astropy writeto of the same-size uint16:   {peer['wall']:7.2f} s   peak RSS {peer['maxrss_mb']:7.0f} MB")
    print(f"  ratio simulate / astropy: {sim['wall'] / peer['wall']:.2f}  (goal <= 2)")


if __name__ == "__main__":
    main()
