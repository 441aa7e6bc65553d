"""Benchmark: our muse_bias against ``esorex muse_bias`` on the same full-size raw biases.

Generates N full-size raw biases (4224 x 4240 per IFU, the real DET OUT geometry from
recipes.instrument.FULL_DETECTOR, known levels, 2-D structure, vertical drift, RON) with
``--ifus`` IFUs each, then runs, each in its own process with the same thread count
(OMP_NUM_THREADS = NUMBA_NUM_THREADS = --threads):

* ours: ``recipes.bias.RECIPE.run`` (after a warm-up on tiny frames so numba's on-disk
  cache is filled and JIT compilation is not timed);
* the DRS: ``esorex muse_bias`` (``--nifu=1``, or ``-1`` for several IFUs; skipped when
  esorex is not installed).

Prints wall times, their ratio, peak resident memory of each process, and the median
|difference| of the two master biases (ours - DRS) plus our QC LEVEL/RON vs the truth.

    .venv/bin/python bench/calib_vs_drs.py --ifus 1 --nframes 11 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recipes.instrument import FULL_DETECTOR, detector_geometry  # noqa: E402
from recipes.io import hkey, read_image_product  # noqa: E402

LEVELS = (1010.3, 1020.7, 1030.1, 1040.6)  # adu
GAINS = (1.10, 1.15, 1.20, 1.25)  # count/adu
RONS = (2.6, 2.8, 3.0, 3.2)  # e-


def make_frames(outdir: Path, nframes: int, ifus: int, seed: int = 1) -> list[Path]:
    """Full-size raw biases following muse-raw-format.md (BITPIX 16, BZERO 32768)."""
    rng = np.random.default_rng(seed)
    fmt = FULL_DETECTOR
    ny, nx = fmt.raw_shape
    yy = np.arange(ny, dtype=np.float32)[:, None]
    xx = np.arange(nx, dtype=np.float32)[None, :]
    structure = (1.5 * np.sin(xx / nx * 3.0) * np.cos(yy / ny * 2.0)).astype(np.float32)
    drift = (3.0 * np.sin(yy / ny * 2.5)).astype(np.float32)
    paths = []
    for k in range(nframes):
        path = outdir / f"MUSE.2017-06-16T10:{40 + k:02d}:00.000.fits"
        paths.append(path)
        if path.exists():
            continue
        primary = fits.Header()
        for key, value in {
            "INSTRUME": "MUSE", "EXPTIME": 0.0, "DATE-OBS": f"2017-06-16T10:{40 + k:02d}:00.000",
            "MJD-OBS": 57920.44 + k * 1e-3, "UTC": 38400.0 + k, "LST": 1000.0 + k,
            "ESO DPR CATG": "CALIB", "ESO DPR TYPE": "BIAS", "ESO DPR TECH": "IFU",
            "ESO INS MODE": "WFM-NOAO-N", "ESO TPL START": "2017-06-16T10:40:00",
            "ESO DET READ CURID": 1, "ESO DET READ CURNAME": "SCI1.0", "ESO DET BINX": 1, "ESO DET BINY": 1,
        }.items():  # fmt: skip
            primary[hkey(key)] = value
        hdus = [fits.PrimaryHDU(header=primary)]
        for ifu in range(1, ifus + 1):
            header = fits.Header()
            header["EXTNAME"] = f"CHAN{ifu:02d}"
            for key, value in {
                "ESO DET CHIP NAME": f"CCD{ifu:02d}", "ESO DET CHIP ID": f"ID{ifu:02d}",
                "ESO DET CHIP DATE": "2014-01-01", "ESO DET CHIP INDEX": ifu, "ESO DET CHIP LIVE": True,
                "ESO DET CHIP NX": 2 * fmt.nx, "ESO DET CHIP NY": 2 * fmt.ny,
            }.items():  # fmt: skip
                header[hkey(key)] = value
            for key, value in fmt.out_keywords(GAINS, RONS, chip_index=ifu).items():
                header[hkey(key)] = value
            image = np.empty((ny, nx), dtype=np.float32)
            quadrants = detector_geometry(header)
            for i, q in enumerate(quadrants):
                r0 = 0 if not q.y_flip else ny // 2
                c0 = 0 if not q.x_flip else nx // 2
                block = (slice(r0, r0 + ny // 2), slice(c0, c0 + nx // 2))
                noise = rng.standard_normal((ny // 2, nx // 2), dtype=np.float32) * np.float32(RONS[i] / GAINS[i])
                image[block] = LEVELS[i] + drift[block[0]] + noise
                image[q.data] += structure[q.data]
            data = np.clip(np.rint(image), 0, 65535).astype(np.uint16)
            hdus.append(fits.ImageHDU(data, header=header))
        fits.HDUList(hdus).writeto(path, overwrite=True)
    return paths


def timed(cmd: list[str], env: dict, log: Path, cwd: Path | None = None) -> tuple[float, float]:
    """Run a command in ``cwd``; wall time (s) and peak RSS (GB) of the process."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"command failed ({status}): {' '.join(cmd)}; see {log}")
    return wall, usage.ru_maxrss / 1024**2


OURS = """
import json, sys
from pathlib import Path
from recipes.bias import RECIPE
paths = [Path(p) for p in json.loads(sys.argv[1])]
params = RECIPE.merge_params({"nifu": int(sys.argv[3])})
RECIPE.run({"BIAS": paths}, params, Path(sys.argv[2]))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outdir", type=Path, default=Path("/tmp/musered-bench-bias"))
    parser.add_argument("--nframes", type=int, default=11)
    parser.add_argument("--ifus", type=int, default=1, help="IFUs per raw file (1..24)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-drs", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the generated frames")
    args = parser.parse_args()

    raw_dir = args.outdir / f"raw_{args.ifus}ifu"
    raw_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = make_frames(raw_dir, args.nframes, args.ifus)
    print(f"frames: {args.nframes} x {args.ifus} IFU(s) of {FULL_DETECTOR.raw_shape[1]}x{FULL_DETECTOR.raw_shape[0]} "
          f"in {raw_dir} ({time.perf_counter() - t0:.1f} s to make)")

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), NUMBA_NUM_THREADS=str(args.threads))
    nifu = 1 if args.ifus == 1 else 0
    python = sys.executable

    # warm-up: fill numba's on-disk cache so compilation is not timed
    warm = args.outdir / "warm"
    shutil.rmtree(warm, ignore_errors=True)
    warm.mkdir()
    subprocess.run([python, "-c", "import sys; sys.path.insert(0, 'tests'); import calib_helpers as h; "
                    "import numpy as np; from pathlib import Path; from recipes.bias import RECIPE; "
                    f"d = Path('{warm}'); rng = np.random.default_rng(0); hdr = h.ext_header(h.SMALL, 1); "
                    "ps = [h.write_raw(d / f'b{i}.fits', h.primary_header(index=i), "
                    "{1: (h.make_raw_image(h.SMALL, hdr, rng), hdr)}) for i in range(3)]; "
                    "RECIPE.run({'BIAS': ps}, RECIPE.merge_params({}), d)"],
                   cwd=ROOT, env=env, check=True)

    ours_dir = args.outdir / "ours"
    shutil.rmtree(ours_dir, ignore_errors=True)
    ours_dir.mkdir()
    ours_wall, ours_mem = timed([python, "-c", OURS, json.dumps([str(p) for p in paths]), str(ours_dir), str(nifu)],
                                dict(env, PYTHONPATH=str(ROOT)), args.outdir / "ours.log")
    print(f"ours : {ours_wall:7.1f} s   peak RSS {ours_mem:5.2f} GB")
    ours_file = ours_dir / "MASTER_BIAS.fits"
    header = read_image_product(ours_file, 1).header
    for n in range(1, 5):
        print(f"   port {n}: QC LEVEL {header[f'ESO QC BIAS LEVEL{n} MEDIAN']:.3f} (truth mean-level "
              f"{LEVELS[n - 1]:.1f} + drift/structure median), RON {header[f'ESO QC BIAS MASTER{n} RON']:.3f} "
              f"(truth {RONS[n - 1]:.3f}) count")

    esorex = shutil.which("esorex")
    if args.skip_drs or esorex is None:
        print("DRS  : skipped" + ("" if esorex else " (esorex not installed)"))
        return
    drs_dir = args.outdir / "drs"
    shutil.rmtree(drs_dir, ignore_errors=True)
    drs_dir.mkdir()
    sof = drs_dir / "bias.sof"
    sof.write_text("".join(f"{p} BIAS\n" for p in paths))
    # several IFUs: the DRS's fastest mode, IFUs in parallel over the same thread count.
    # Per-IFU products (--merge=false): with --nifu=-1 --merge=true esorex 2.8.7 fails to
    # move the products after merging. esorex writes into its working directory first.
    drs_nifu = 1 if args.ifus == 1 else -1
    cmd = [esorex, f"--output-dir={drs_dir}", f"--log-dir={drs_dir}", "muse_bias", f"--nifu={drs_nifu}",
           "--merge=false", str(sof)]
    drs_wall, drs_mem = timed(cmd, env, args.outdir / "drs.log", cwd=drs_dir)
    print(f"DRS  : {drs_wall:7.1f} s   peak RSS {drs_mem:5.2f} GB")
    print(f"ratio ours/DRS wall time: {ours_wall / drs_wall:.3f}  (threads: {args.threads})")
    products = sorted(drs_dir.glob("MASTER_BIAS*.fits"))
    if not products:
        print("DRS wrote no MASTER_BIAS; see", args.outdir / "drs.log")
        return
    diffs = []
    for ifu in range(1, args.ifus + 1):
        ours = read_image_product(ours_file, ifu)
        drs_path = products[0] if len(products) == 1 else drs_dir / f"MASTER_BIAS-{ifu:02d}.fits"
        drs = read_image_product(drs_path, ifu)
        diffs.append(np.median(np.abs(ours.data - drs.data)))
        if ifu == 1:
            print(f"   IFU 1 median(ours)={np.median(ours.data):.4f}  median(DRS)={np.median(drs.data):.4f} adu; "
                  f"median STAT ours={np.median(ours.stat):.4f} DRS={np.median(drs.stat):.4f} adu^2")
            for n in range(1, 5):
                key = f"ESO QC BIAS MASTER{n} RON"
                if key in drs.header or key in fits.getheader(drs_path):
                    value = drs.header.get(key, fits.getheader(drs_path).get(key))
                    print(f"   port {n}: RON ours {ours.header[key]:.3f}  DRS {value:.3f} count")
    print(f"median |ours - DRS| master bias: {np.median(diffs):.4f} adu (over {len(diffs)} IFU(s))")
    if not args.keep:
        shutil.rmtree(raw_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
