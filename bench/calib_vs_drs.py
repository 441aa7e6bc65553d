"""Benchmark: our calibration recipes against the ESO DRS (``esorex``) on the same full-size frames.

Each recipe is run twice on identical inputs, each run in its own process with the same
thread count (OMP_NUM_THREADS = NUMBA_NUM_THREADS = --threads): ours (``recipes``, after a
warm-up that fills numba's on-disk cache so JIT compilation is not timed) and
``esorex <recipe>`` (skipped when esorex is not installed or with --skip-drs). esorex always
runs in its own output/log folder under --outdir, with that folder as working directory.

* ``bias``: N full-size raw biases made here (4224 x 4240 per IFU, the real DET OUT
  geometry from recipes.algorithms.instrument.FULL_DETECTOR, known levels, 2-D structure, vertical
  drift, RON) with ``--ifus`` IFUs each; ``muse_bias`` (DRS ``--nifu=1``, or ``-1`` for
  several IFUs). Accuracy: QC RON of the master bias against the injected RON.
* ``flat``, ``wavecal``, ``lsf``: one full-size IFU simulated by
  ``musered.simulate.simulate(OUTDIR/sim_full, profile="full", ifus=1)`` (11 BIAS, 11 FLAT,
  15 ARC: 5 each of CU-LAMP3 Ne, CU-LAMP4 Xe, CU-LAMP5 HgCd), reused when already there.
  Each side runs its own chain: its muse_bias (not timed) → muse_flat (+ the simulator's
  BADPIX_TABLE) → muse_wavecal (its TRACE_TABLE, the simulator's LINE_CATALOG) → muse_lsf
  (its TRACE_TABLE and WAVECAL_TABLE); selecting a later recipe runs the earlier ones too.
  Accuracy against ``musered.simulate.truth.load_truth``: trace edges (left and right 50 %
  edges, every row of every slice) in px; λ(x, y) over the pixels inside the true slice
  edges in Å (as tests/test_wavecal.py ``solution_errors``); the FWHM of the LSF profile
  at 9 wavelengths 4800–9200 Å per slice against the true Gaussian FWHM integrated over
  one pixel (``recipes.algorithms.lsfmodel.box_gauss_fwhm``) in Å.

Prints per-recipe details, then one table: wall times, their ratio, peak resident memory
of each process, and the accuracy of each side against the truth.

    .venv/bin/python bench/calib_vs_drs.py --recipes bias --ifus 1 --nframes 11 --threads 2
    .venv/bin/python bench/calib_vs_drs.py --recipes flat,wavecal,lsf --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.units import UnitsWarning

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recipes.algorithms.instrument import FULL_DETECTOR, detector_geometry  # noqa: E402
from recipes.io import hkey, read_image_product  # noqa: E402

# the DRS tables carry units such as "No" (SliceNo) that astropy cannot parse
warnings.simplefilter("ignore", UnitsWarning)

LEVELS = (1010.3, 1020.7, 1030.1, 1040.6)  # adu
GAINS = (1.10, 1.15, 1.20, 1.25)  # count/adu
RONS = (2.6, 2.8, 3.0, 3.2)  # e-

RECIPE_NAMES = ("bias", "flat", "wavecal", "lsf")
SPECTRAL_CHAIN = ("flat", "wavecal", "lsf")  # each needs the products of the ones before
LSF_WAVELENGTHS = np.linspace(4800.0, 9200.0, 9)  # Å, where the LSF FWHM is checked
NOMINAL_RANGE = (4750.0, 9300.0)  # Å, inside the nominal range, away from the CCD ends


@dataclass
class BenchRow:
    """One line of the summary table; times in s, memory in GB, accuracy as text."""

    recipe: str
    ours_s: float
    ours_gb: float
    drs_s: float | None = None
    drs_gb: float | None = None
    ours_acc: str = "-"
    drs_acc: str = "-"


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
from recipes.steps.bias import RECIPE
paths = [Path(p) for p in json.loads(sys.argv[1])]
params = RECIPE.validate({"nifu": int(sys.argv[3])})
RECIPE.run({"BIAS": paths}, params, Path(sys.argv[2]))
"""

# One of our recipes by DRS name: argv = name, {tag: [paths]}, {param: value}, outdir.
OURS_RECIPE = """
import json, sys
from pathlib import Path
from recipes.registry import get_recipe
recipe = get_recipe(sys.argv[1])
frames = {tag: [Path(p) for p in paths] for tag, paths in json.loads(sys.argv[2]).items()}
recipe.run(frames, recipe.validate(json.loads(sys.argv[3])), Path(sys.argv[4]))
"""


def drs_product(folder: Path, tag: str) -> Path:
    """The esorex product ``TAG.fits`` or, per IFU without merging, ``TAG-01.fits``."""
    found = sorted(folder.glob(f"{tag}.fits")) + sorted(folder.glob(f"{tag}-*.fits"))
    if not found:
        raise SystemExit(f"esorex wrote no {tag} in {folder}; see the logs there")
    return found[0]


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# --------------------------------------------------------------------------- bias


def bench_bias(args: argparse.Namespace, env: dict) -> BenchRow:
    """muse_bias on ``--nframes`` generated raw biases of ``--ifus`` IFUs."""
    raw_dir = args.outdir / f"raw_{args.ifus}ifu"
    raw_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = make_frames(raw_dir, args.nframes, args.ifus)
    print(f"frames: {args.nframes} x {args.ifus} IFU(s) of {FULL_DETECTOR.raw_shape[1]}x{FULL_DETECTOR.raw_shape[0]} "
          f"in {raw_dir} ({time.perf_counter() - t0:.1f} s to make)")

    nifu = 1 if args.ifus == 1 else 0
    python = sys.executable

    # warm-up: fill numba's on-disk cache so compilation is not timed
    warm = fresh_dir(args.outdir / "warm")
    subprocess.run([python, "-c", "import sys; sys.path.insert(0, 'tests'); import calib_helpers as h; "
                    "import numpy as np; from pathlib import Path; from recipes.steps.bias import RECIPE; "
                    f"d = Path('{warm}'); rng = np.random.default_rng(0); hdr = h.ext_header(h.SMALL, 1); "
                    "ps = [h.write_raw(d / f'b{i}.fits', h.primary_header(index=i), "
                    "{1: (h.make_raw_image(h.SMALL, hdr, rng), hdr)}) for i in range(3)]; "
                    "RECIPE.run({'BIAS': ps}, RECIPE.validate({}), d)"],
                   cwd=ROOT, env=env, check=True)

    ours_dir = fresh_dir(args.outdir / "ours")
    ours_wall, ours_mem = timed([python, "-c", OURS, json.dumps([str(p) for p in paths]), str(ours_dir), str(nifu)],
                                dict(env, PYTHONPATH=str(ROOT)), args.outdir / "ours.log")
    row = BenchRow("muse_bias", ours_wall, ours_mem)
    print(f"ours : {ours_wall:7.1f} s   peak RSS {ours_mem:5.2f} GB")
    ours_file = ours_dir / "MASTER_BIAS.fits"
    header = read_image_product(ours_file, 1).header
    ron_err = []
    for n in range(1, 5):
        ron_err.append(header[f"ESO QC BIAS MASTER{n} RON"] / RONS[n - 1] - 1)
        print(f"   port {n}: QC LEVEL {header[f'ESO QC BIAS LEVEL{n} MEDIAN']:.3f} (truth mean-level "
              f"{LEVELS[n - 1]:.1f} + drift/structure median), RON {header[f'ESO QC BIAS MASTER{n} RON']:.3f} "
              f"(truth {RONS[n - 1]:.3f}) count")
    row.ours_acc = f"IFU1 RON max {100 * np.max(np.abs(ron_err)):.1f} %"

    esorex = shutil.which("esorex")
    if args.skip_drs or esorex is None:
        print("DRS  : skipped" + ("" if esorex else " (esorex not installed)"))
        return row
    drs_dir = fresh_dir(args.outdir / "drs")
    sof = drs_dir / "bias.sof"
    sof.write_text("".join(f"{p} BIAS\n" for p in paths))
    # several IFUs: the DRS's fastest mode, IFUs in parallel over the same thread count.
    # Per-IFU products (--merge=false): with --nifu=-1 --merge=true esorex 2.8.7 fails to
    # move the products after merging. esorex writes into its working directory first.
    drs_nifu = 1 if args.ifus == 1 else -1
    cmd = [esorex, f"--output-dir={drs_dir}", f"--log-dir={drs_dir}", "muse_bias", f"--nifu={drs_nifu}",
           "--merge=false", str(sof)]
    drs_wall, drs_mem = timed(cmd, env, args.outdir / "drs.log", cwd=drs_dir)
    row.drs_s, row.drs_gb = drs_wall, drs_mem
    print(f"DRS  : {drs_wall:7.1f} s   peak RSS {drs_mem:5.2f} GB")
    print(f"ratio ours/DRS wall time: {ours_wall / drs_wall:.3f}  (threads: {args.threads})")
    products = sorted(drs_dir.glob("MASTER_BIAS*.fits"))
    if not products:
        print("DRS wrote no MASTER_BIAS; see", args.outdir / "drs.log")
        return row
    diffs = []
    for ifu in range(1, args.ifus + 1):
        ours = read_image_product(ours_file, ifu)
        drs_path = products[0] if len(products) == 1 else drs_dir / f"MASTER_BIAS-{ifu:02d}.fits"
        drs = read_image_product(drs_path, ifu)
        diffs.append(np.median(np.abs(ours.data - drs.data)))
        if ifu == 1:
            print(f"   IFU 1 median(ours)={np.median(ours.data):.4f}  median(DRS)={np.median(drs.data):.4f} adu; "
                  f"median STAT ours={np.median(ours.stat):.4f} DRS={np.median(drs.stat):.4f} adu^2")
            drs_err = []
            for n in range(1, 5):
                key = f"ESO QC BIAS MASTER{n} RON"
                if key in drs.header or key in fits.getheader(drs_path):
                    value = drs.header.get(key, fits.getheader(drs_path).get(key))
                    drs_err.append(value / RONS[n - 1] - 1)
                    print(f"   port {n}: RON ours {ours.header[key]:.3f}  DRS {value:.3f} count")
            if drs_err:
                row.drs_acc = f"IFU1 RON max {100 * np.max(np.abs(drs_err)):.1f} %"
    print(f"median |ours - DRS| master bias: {np.median(diffs):.4f} adu (over {len(diffs)} IFU(s))")
    if not args.keep:
        shutil.rmtree(raw_dir, ignore_errors=True)
    return row


# --------------------------------------------------------------- flat, wavecal, lsf


def simulated_ifu(outdir: Path, profile: str, seed: int) -> Path:
    """``outdir`` holding one simulated IFU of ``profile`` (BIAS, FLAT, ARC only); an
    existing simulation with the same profile and seed is reused."""
    marker = outdir / "truth" / "truth.json"
    if marker.exists():
        data = json.loads(marker.read_text())
        if (data["profile"], data["seed"], data["n_ifus"]) == (profile, seed, 1):
            return outdir
        shutil.rmtree(outdir)
    from musered.simulate import simulate

    t0 = time.perf_counter()
    simulate(outdir, profile=profile, ifus=1, exposures=0, seed=seed, kinds={"BIAS", "FLAT", "ARC"})
    print(f"simulated {profile} IFU in {outdir} ({time.perf_counter() - t0:.1f} s)")
    return outdir


def raw_by_type(sim: Path) -> dict[str, list[Path]]:
    """The simulated raw files by ``ESO DPR TYPE`` (BIAS, FLAT,LAMP, WAVE)."""
    out: dict[str, list[Path]] = {}
    for path in sorted((sim / "raw").glob("MUSE.*.fits")):
        out.setdefault(fits.getheader(path)["HIERARCH ESO DPR TYPE"], []).append(path)
    return out


def chain_inputs(sim: Path, stage: str, products: dict[str, Path]) -> dict[str, list[Path]]:
    """Input frames of ``stage`` (bias, flat, wavecal, lsf) by DRS tag; ``products`` holds
    the calibrations made earlier in the same chain (tag -> file)."""
    raws = raw_by_type(sim)
    calib = sim / "muse-calib"
    if stage == "bias":
        return {"BIAS": raws["BIAS"]}
    if stage == "flat":
        return {"FLAT": raws["FLAT,LAMP"], "MASTER_BIAS": [products["MASTER_BIAS"]],
                "BADPIX_TABLE": [calib / "badpix_table.fits"]}
    frames = {"ARC": raws["WAVE"], "MASTER_BIAS": [products["MASTER_BIAS"]],
              "TRACE_TABLE": [products["TRACE_TABLE"]], "LINE_CATALOG": [calib / "line_catalog.fits"]}
    if stage == "wavecal":
        frames["BADPIX_TABLE"] = [calib / "badpix_table.fits"]
    else:
        frames["WAVECAL_TABLE"] = [products["WAVECAL_TABLE"]]
    return frames


STAGE_RECIPE = {"bias": "muse_bias", "flat": "muse_flat", "wavecal": "muse_wavecal", "lsf": "muse_lsf"}
STAGE_PRODUCTS = {"bias": ("MASTER_BIAS",), "flat": ("TRACE_TABLE",), "wavecal": ("WAVECAL_TABLE",),
                  "lsf": ("LSF_PROFILE",)}


def run_ours(stage: str, frames: dict[str, list[Path]], outdir: Path, env: dict, log: Path) -> tuple[float, float]:
    """Our recipe of ``stage`` on one IFU in a fresh process: wall time (s), peak RSS (GB)."""
    cmd = [sys.executable, "-c", OURS_RECIPE, STAGE_RECIPE[stage],
           json.dumps({tag: [str(p) for p in paths] for tag, paths in frames.items()}),
           json.dumps({"nifu": 1}), str(outdir)]
    return timed(cmd, dict(env, PYTHONPATH=str(ROOT)), log, cwd=ROOT)


def run_drs(esorex: str, stage: str, frames: dict[str, list[Path]], outdir: Path, env: dict) -> tuple[float, float]:
    """``esorex muse_<stage> --nifu=1`` with outdir as output, log and working folder."""
    sof = outdir / f"{stage}.sof"
    sof.write_text("".join(f"{p} {tag}\n" for tag, paths in frames.items() for p in paths))
    cmd = [esorex, f"--output-dir={outdir}", f"--log-dir={outdir}", STAGE_RECIPE[stage], "--nifu=1",
           "--merge=false", str(sof)]
    return timed(cmd, env, outdir / "esorex.out", cwd=outdir)


def warm_up(args: argparse.Namespace, env: dict, stages: list[str]) -> None:
    """Our chain on a simulated mini IFU: numba compiles once and caches on disk, so the
    full-size runs below time the work, not the compilation."""
    sim = simulated_ifu(args.outdir / "sim_mini", "mini", args.seed)
    products: dict[str, Path] = {}
    for stage in ["bias", *stages]:
        out = fresh_dir(args.outdir / "warm" / stage)
        run_ours(stage, chain_inputs(sim, stage, products), out, env, out / "ours.log")
        products.update({tag: out / f"{tag}.fits" for tag in STAGE_PRODUCTS[stage]})


def trace_accuracy(table_path: Path, truth_slices: list, ny: int) -> dict[str, tuple[float, float]]:
    """RMS and max |fitted - true| (px) of the centre and of both edges (left and right
    together) over every row of the 48 slices; 1-based coordinates as in TRACE_TABLE."""
    from astropy.table import Table

    from recipes.algorithms.instrument import polyval_y

    table = Table.read(table_path, hdu=1)
    y = np.arange(1, ny + 1, dtype=float)
    errs = {}
    for k, name in ((0, "centre"), (1, "left"), (2, "right")):
        fitted = np.array([polyval_y([table[f"tc{k}_{j:02d}"][s] for j in range(6)], y) for s in range(48)])
        errs[name] = fitted - np.array([polyval_y(getattr(truth_slices[s], name), y) for s in range(48)])
    out = {name: (float(np.sqrt(np.mean(e**2))), float(np.abs(e).max())) for name, e in errs.items()}
    edges = np.concatenate([errs["left"], errs["right"]])
    out["edges"] = (float(np.sqrt(np.mean(edges**2))), float(np.abs(edges).max()))
    return out


def wavecal_accuracy(table_path: Path, truth_slices: list, shape: tuple[int, int],
                     lam_range: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Per slice RMS and max |λ - truth| (Å) over the pixels inside the true slice edges
    (as tests/test_wavecal.py ``solution_errors``), and the RMS over all those pixels;
    with ``lam_range`` (Å) only the pixels whose true λ lies inside it."""
    from astropy.table import Table

    from recipes.algorithms.instrument import polyval_y, wavecal_eval
    from recipes.algorithms.wavesolution import evaluate_2d

    table = Table.read(table_path, hdu=1)
    ny, nx = shape
    rows = {int(n): i for i, n in enumerate(table["SliceNo"])}
    y = np.arange(1, ny + 1, dtype=float)[:, None]
    rms, worst, sum2, count = [], [], 0.0, 0
    for s, geom in enumerate(truth_slices):
        if s + 1 not in rows:  # a slice without a solution counts as failed
            rms.append(np.inf)
            worst.append(np.inf)
            continue
        wlc = np.array([[table[f"wlc{i}{j}"][rows[s + 1]] for j in range(7)] for i in range(3)])
        left, right = polyval_y(geom.left, y), polyval_y(geom.right, y)
        # only the columns the slice can touch, to keep the arrays small
        x = np.arange(max(1, int(left.min())), min(nx, int(np.ceil(right.max())) + 1) + 1, dtype=float)[None, :]
        inside = (x >= left + 0.5) & (x <= right - 0.5)
        yy, xx = np.broadcast_to(y, inside.shape)[inside], np.broadcast_to(x, inside.shape)[inside]
        true = wavecal_eval(geom.wlc, xx, yy)
        err = evaluate_2d(wlc, xx, yy) - true
        if lam_range is not None:
            err = err[(true >= lam_range[0]) & (true <= lam_range[1])]
        rms.append(np.sqrt(np.mean(err**2)))
        worst.append(np.abs(err).max())
        sum2 += float(np.sum(err**2))
        count += err.size
    return np.array(rms), np.array(worst), float(np.sqrt(sum2 / max(count, 1)))


def lsf_accuracy(profile_path: Path, truth_slices: list, ny: int) -> np.ndarray:
    """(48, 9): FWHM (Å) of the LSF profile minus the true Gaussian FWHM integrated over
    one pixel, at LSF_WAVELENGTHS along the centre of each slice (mid-CCD column)."""
    from recipes.algorithms.lsfmodel import box_gauss_fwhm, evaluate_lsf, profile_fwhm, read_lsf_profile

    cubes = read_lsf_profile(profile_path)
    ifu = 1 if 1 in cubes else next(iter(cubes))
    grid = cubes[ifu].grid
    rows = np.arange(1, ny + 1, dtype=float)
    out = np.empty((len(truth_slices), LSF_WAVELENGTHS.size))
    for s, geom in enumerate(truth_slices):
        xc = np.polynomial.polynomial.polyval(ny / 2, geom.centre)
        lam_rows = geom.wavelength(xc, rows)
        for k, lam in enumerate(LSF_WAVELENGTHS):
            y = float(np.interp(lam, lam_rows, rows))
            pixel = float(geom.wavelength(xc, y + 0.5) - geom.wavelength(xc, y - 0.5))
            measured = profile_fwhm(grid.dlam, evaluate_lsf(cubes, ifu, geom.slice_ccd, lam, grid.dlam))
            out[s, k] = measured - box_gauss_fwhm(float(geom.lsf_fwhm(lam)), pixel)
    return out


def worst_slices(values: np.ndarray, n: int = 3) -> str:
    """The ``n`` slices (1-based) with the largest ``values``, as text."""
    order = np.argsort(np.nan_to_num(values, nan=np.inf))[::-1][:n]
    return ", ".join(f"{k + 1} ({values[k]:.3g})" for k in order)


def describe_accuracy(stage: str, label: str, path: Path, sim: Path) -> str:
    """Print the details of ``stage``'s product against the truth; return the table text."""
    from musered.simulate.truth import load_truth

    truth = load_truth(sim)
    slices = truth.slices(1)
    ny, nx = truth.data["trimmed_shape"]
    if stage == "flat":
        acc = trace_accuracy(path, slices, ny)
        print(f"   {label:4s} trace vs truth (RMS/max px): "
              + ", ".join(f"{k} {r:.4f}/{m:.4f}" for k, (r, m) in acc.items()))
        return f"edges {acc['edges'][0]:.4f}/{acc['edges'][1]:.4f} px"
    if stage == "wavecal":
        cells = []
        for lam_range in (None, NOMINAL_RANGE):
            rms, worst, total = wavecal_accuracy(path, slices, (ny, nx), lam_range)
            where = "all in-slice pixels" if lam_range is None else "in-slice pixels of %g-%g Å" % lam_range
            print(f"   {label:4s} λ vs truth over {where}: RMS {total:.4f} Å, median slice RMS "
                  f"{np.median(rms):.4f} Å, {int(np.sum(worst > 0.05))} slices with max |err| > 0.05 Å; "
                  f"worst slices (max |err| Å): {worst_slices(worst)}")
            cells.append(f"{total:.4f}/{worst.max():.3f}")
        return f"λ {cells[0]} Å ({'%g-%g' % NOMINAL_RANGE}: {cells[1]})"
    dev = lsf_accuracy(path, slices, ny)
    good = np.isfinite(dev)
    rms = float(np.sqrt(np.mean(dev[good] ** 2))) if good.any() else np.nan
    worst = float(np.abs(dev[good]).max()) if good.any() else np.nan
    print(f"   {label:4s} FWHM - truth (Gauss*pixel, Å): RMS {rms:.4f}, max |.| {worst:.4f}, median per λ "
          f"{np.round(np.nanmedian(dev, axis=0), 4).tolist()} at {LSF_WAVELENGTHS.tolist()} Å; "
          f"{int((~good).sum())} undefined; worst slices (max |.| Å): "
          f"{worst_slices(np.nanmax(np.abs(dev), axis=1))}")
    return f"FWHM {rms:.4f}/{worst:.3f} Å"


def bench_spectral(args: argparse.Namespace, env: dict, selected: list[str]) -> list[BenchRow]:
    """flat / wavecal / lsf on one simulated full-size IFU, each side with its own chain."""
    last = max(SPECTRAL_CHAIN.index(s) for s in selected)
    stages = list(SPECTRAL_CHAIN[: last + 1])
    sim = simulated_ifu(args.outdir / "sim_full", "full", args.seed)
    counts = {k: len(v) for k, v in raw_by_type(sim).items()}
    print(f"full-size IFU: {counts} in {sim}")
    t0 = time.perf_counter()
    warm_up(args, env, stages)
    print(f"warm-up of our chain on a mini IFU: {time.perf_counter() - t0:.1f} s")

    esorex = shutil.which("esorex")
    use_drs = not args.skip_drs and esorex is not None
    if not use_drs:
        print("DRS  : skipped" + ("" if esorex else " (esorex not installed)"))
    ours: dict[str, Path] = {}
    drs: dict[str, Path] = {}
    rows = []
    for stage in ["bias", *stages]:
        ours_dir = fresh_dir(args.outdir / "chain" / "ours" / stage)
        ours_wall, ours_mem = run_ours(stage, chain_inputs(sim, stage, ours), ours_dir, env, ours_dir / "ours.log")
        ours.update({tag: ours_dir / f"{tag}.fits" for tag in STAGE_PRODUCTS[stage]})
        row = BenchRow(STAGE_RECIPE[stage], ours_wall, ours_mem)
        line = f"{STAGE_RECIPE[stage]:13s} ours {ours_wall:7.1f} s ({ours_mem:.2f} GB)"
        if use_drs:
            drs_dir = fresh_dir(args.outdir / "chain" / "drs" / stage)
            row.drs_s, row.drs_gb = run_drs(esorex, stage, chain_inputs(sim, stage, drs), drs_dir, env)
            drs.update({tag: drs_product(drs_dir, tag) for tag in STAGE_PRODUCTS[stage]})
            line += f"   DRS {row.drs_s:7.1f} s ({row.drs_gb:.2f} GB)   ratio {ours_wall / row.drs_s:.3f}"
        print(line + ("" if stage in selected else "   (input of the next recipe, not in the table)"), flush=True)
        if stage not in selected:
            continue
        tag = STAGE_PRODUCTS[stage][0]
        row.ours_acc = describe_accuracy(stage, "ours", ours[tag], sim)
        if use_drs:
            row.drs_acc = describe_accuracy(stage, "DRS", drs[tag], sim)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- main


def print_table(rows: list[BenchRow], threads: int) -> None:
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\nthreads: {threads}; load average now {load}; accuracy vs the simulator's truth as RMS/max")
    head = ("recipe", "ours s", "DRS s", "ours/DRS", "RSS ours/DRS GB", "accuracy ours", "accuracy DRS")
    lines = [head]
    for r in rows:
        ratio = None if r.drs_s is None else r.ours_s / r.drs_s
        lines.append((r.recipe, num(r.ours_s, ".1f"), num(r.drs_s, ".1f"), num(ratio, ".3f"),
                      f"{r.ours_gb:.2f}/{num(r.drs_gb, '.2f')}", r.ours_acc, r.drs_acc))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for n, line in enumerate(lines):
        print(" | ".join(cell.ljust(w) if i in (0, 5, 6) else cell.rjust(w)
                         for i, (cell, w) in enumerate(zip(line, widths))))
        if n == 0:
            print("-+-".join("-" * w for w in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPE_NAMES),
                        help=f"comma-separated subset of {','.join(RECIPE_NAMES)} (default: all)")
    parser.add_argument("--outdir", type=Path, default=Path("/tmp/musered-bench-calib"))
    parser.add_argument("--nframes", type=int, default=11, help="bias: raw biases to make")
    parser.add_argument("--ifus", type=int, default=1, help="bias: IFUs per raw file (1..24)")
    parser.add_argument("--seed", type=int, default=0, help="flat/wavecal/lsf: simulator seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-drs", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the generated frames and products")
    args = parser.parse_args()
    selected = [name.strip() for name in args.recipes.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(RECIPE_NAMES))
    if unknown or not selected:
        parser.error(f"--recipes: unknown {', '.join(unknown) or '(empty)'}; choose from {','.join(RECIPE_NAMES)}")
    args.outdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), NUMBA_NUM_THREADS=str(args.threads))

    rows = []
    if "bias" in selected:
        rows.append(bench_bias(args, env))
    spectral = [name for name in SPECTRAL_CHAIN if name in selected]
    if spectral:
        rows += bench_spectral(args, env, spectral)
    print_table(rows, args.threads)
    if not args.keep:
        for name in ("sim_full", "sim_mini", "warm", "ours", "drs", "chain"):
            shutil.rmtree(args.outdir / name, ignore_errors=True)


if __name__ == "__main__":
    main()
