"""Benchmark: our muse_scibasic + muse_scipost against the ESO DRS (``esorex``) on one exposure.

One full-size simulated science exposure (24 IFUs of 4224 x 4240 pixels, ``--ifus`` fewer
for a quick partial run) is reduced twice, each recipe in its own process with the same
thread count (OMP_NUM_THREADS = NUMBA_NUM_THREADS = --threads):

* ours: ``recipes.steps.scibasic`` (all IFUs) → 24 PIXTABLE_OBJECT → ``recipes.steps.scipost`` →
  DATACUBE_FINAL, through the recipes' Python API, with the calibrations our own
  muse_bias / muse_flat / muse_wavecal made from the simulated raw calibrations; after a
  warm-up (one IFU through both recipes) that fills numba's on-disk cache, so JIT
  compilation is not timed;
* the DRS: ``esorex muse_scibasic --nifu=-1`` and ``esorex muse_scipost`` on the same raw
  exposure, with the MASTER_BIAS, MASTER_FLAT, TRACE_TABLE and WAVECAL_TABLE that
  ``esorex muse_bias / muse_flat / muse_wavecal --nifu=-1`` made from the same raw
  calibrations (per-IFU products, ``--merge=false``, as in calib_vs_drs.py).

Both sides get the simulator's static calibrations (GEOMETRY_TABLE, BADPIX_TABLE,
LINE_CATALOG, EXTINCT_TABLE, ASTROMETRY_WCS, SKY_LINES, FILTER_LIST) and the same
STD_RESPONSE, the simulator's true sensitivity (2.5 log10 of e-/s/Å per erg/s/cm²/Å),
and the same scipost parameters (DRS defaults except ``--skymethod``, default ``simple``:
the DRS ``model`` method needs an LSF_PROFILE, i.e. a further muse_lsf run of ≈ 20 min
per side, which this bench does not make).

Raw inputs come from the simulator's Python API (``musered.simulate``), only the frames
needed: the first OBJECT exposure of the night, ``--nbias`` BIAS, ``--nflat`` FLAT and
``--narc`` ARC per lamp (Ne, Xe, HgCd); fewer calibration frames than a real night keep
the two calibration chains (not timed) short and do not change the timed recipes.
Everything is cached in ``--workdir`` (``sim/``, ``calib/ours``, ``calib/drs``): a re-run
with the same ``--ifus``/``--seed``/frame counts reuses the simulation and the
calibrations and only re-times scibasic and scipost.

Measured per recipe: wall time and peak resident memory (``ru_maxrss`` of the recipe's
process from ``os.wait4``; esorex and our recipes are single processes with threads);
printed with the ratio ours/DRS per recipe and for the total. ``--profile`` also writes
cProfile statistics of our two recipes (``prof/scibasic.prof``, ``prof/scipost.prof``)
and prints their top functions.

    .venv/bin/python bench/scipost.py --workdir /tmp/musered-bench-scipost --post-ifus 12
    .venv/bin/python bench/scipost.py --ifus 2 --skip-drs --profile                  # quick

The DRS muse_scipost of all 24 IFUs needs > 19 GB (≈ 1 GB per IFU): on a 24 GB machine
give ``--post-ifus 12`` (scipost on the first 12 IFUs' tables, both sides; scibasic still
on all 24), see bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from astropy.io import fits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from calib_vs_drs import OURS_RECIPE, drs_product, fresh_dir, raw_by_type, timed  # noqa: E402

STATIC_FILES = {  # tag -> file name in the simulator's muse-calib/
    "GEOMETRY_TABLE": "geometry_table.fits", "BADPIX_TABLE": "badpix_table.fits",
    "LINE_CATALOG": "line_catalog.fits", "EXTINCT_TABLE": "extinct_table.fits",
    "ASTROMETRY_WCS": "astrometry_wcs.fits", "SKY_LINES": "sky_lines.fits", "FILTER_LIST": "filter_list.fits",
}  # fmt: skip
CALIB_PRODUCTS = {"bias": ("MASTER_BIAS",), "flat": ("MASTER_FLAT", "TRACE_TABLE"), "wavecal": ("WAVECAL_TABLE",)}

# Our recipe by DRS name, optionally under cProfile: argv = name, {tag: [paths]},
# {param: value}, outdir, profile output ("" = none).
OURS_PROFILED = """
import cProfile, json, sys
from pathlib import Path
code = {code!r}
if sys.argv[5]:
    cProfile.run(code, sys.argv[5])
else:
    exec(code)
""".format(code=OURS_RECIPE)


# --------------------------------------------------------------------------- inputs


def simulate_inputs(simdir: Path, ifus: int, seed: int, nbias: int, nflat: int, narc: int) -> Path:
    """Raw frames (``simdir/raw``), statics (``simdir/muse-calib``) and STD_RESPONSE
    (``simdir/std_response.fits``) of one full-size night reduced to the frames this bench
    needs; reused when ``simdir/bench.json`` records the same choices."""
    from musered.simulate import sources, statics
    from musered.simulate.exposure import Simulator
    from musered.simulate.plan import night_plan
    from musered.simulate.profiles import get_profile
    from musered.simulate.run import DEFAULT_START, targets_for, write_frame

    want = {"profile": "full", "ifus": ifus, "seed": seed, "nbias": nbias, "nflat": nflat, "narc": narc}
    marker = simdir / "bench.json"
    if marker.exists() and json.loads(marker.read_text()) == want:
        return simdir
    shutil.rmtree(simdir, ignore_errors=True)
    shutil.rmtree(simdir.parent / "calib", ignore_errors=True)  # made from the previous simulation
    (simdir / "raw").mkdir(parents=True)
    t0 = time.perf_counter()
    prof = get_profile("full")
    prof = replace(prof, n_ifus=ifus)
    sim = Simulator(prof, seed)
    field_t, std_t = targets_for(DEFAULT_START, "SIMFIELD")
    statics.write_statics(simdir / "muse-calib", sim, (std_t.ra, std_t.dec))
    # the same plan and random streams as `musered simulate --profile full --exposures 1`
    plan = night_plan(DEFAULT_START, field_t, std_t, np.random.default_rng([sim.seed, 6]), n_exposures=1,
                      flat_exptime=prof.flat_exptime, arc_exptime=prof.arc_exptime,
                      illum_exptime=prof.illum_exptime)  # fmt: skip
    quota = {"BIAS": nbias, "FLAT": nflat, "OBJECT": 1}
    taken: dict[str, int] = {}
    for index, frame in enumerate(plan, start=1):
        key = f"ARC {frame.lamp}" if frame.kind == "ARC" else frame.kind
        if taken.get(key, 0) >= (narc if frame.kind == "ARC" else quota.get(frame.kind, 0)):
            continue
        taken[key] = taken.get(key, 0) + 1
        write_frame(sim, frame, index, simdir / "raw" / frame.filename)
        print(f"   simulated {frame.filename} {key} ({time.perf_counter() - t0:.0f} s)", flush=True)
    lam = np.asarray(sim.lam, float)
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([
        fits.Column("lambda", "D", array=lam),
        fits.Column("response", "D", array=2.5 * np.log10(sources.sensitivity(lam))),
        fits.Column("resperr", "D", array=np.full(lam.size, 0.01)),
    ], name="STD_RESPONSE")]).writeto(simdir / "std_response.fits", overwrite=True)  # fmt: skip
    marker.write_text(json.dumps(want))
    print(f"simulated {sum(taken.values())} frames of {ifus} IFU(s) in {simdir} ({time.perf_counter() - t0:.0f} s)")
    return simdir


def static(sim: Path, tag: str) -> list[Path]:
    return [sim / "muse-calib" / STATIC_FILES[tag]]


def calib_frames(sim: Path, stage: str, products: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """Inputs of the calibration ``stage`` (bias, flat, wavecal); ``products`` holds the
    calibrations made earlier in the same chain (tag -> files, one per IFU for the DRS)."""
    raws = raw_by_type(sim)
    if stage == "bias":
        return {"BIAS": raws["BIAS"]}
    if stage == "flat":
        return {"FLAT": raws["FLAT,LAMP"], "MASTER_BIAS": products["MASTER_BIAS"],
                "BADPIX_TABLE": static(sim, "BADPIX_TABLE")}  # fmt: skip
    return {"ARC": raws["WAVE"], "MASTER_BIAS": products["MASTER_BIAS"], "TRACE_TABLE": products["TRACE_TABLE"],
            "LINE_CATALOG": static(sim, "LINE_CATALOG"), "BADPIX_TABLE": static(sim, "BADPIX_TABLE")}  # fmt: skip


def write_sof(path: Path, frames: dict[str, list[Path]]) -> Path:
    path.write_text("".join(f"{p} {tag}\n" for tag, paths in frames.items() for p in paths))
    return path


def run_ours(recipe: str, frames: dict[str, list[Path]], params: dict, outdir: Path, env: dict,
             profile: Path | None = None) -> tuple[float, float]:  # fmt: skip
    """Our ``recipe`` in a fresh process (cwd = outdir): wall time (s), peak RSS (GB)."""
    cmd = [sys.executable, "-c", OURS_PROFILED, recipe,
           json.dumps({tag: [str(p) for p in paths] for tag, paths in frames.items()}), json.dumps(params),
           str(outdir), str(profile or "")]  # fmt: skip
    code = env.get("MUSERED_BENCH_CODE", str(ROOT))
    return timed(cmd, dict(env, PYTHONPATH=code), outdir / "ours.log", cwd=outdir)


def run_drs(esorex: str, recipe: str, frames: dict[str, list[Path]], options: list[str], outdir: Path,
            env: dict) -> tuple[float, float]:  # fmt: skip
    """``esorex <recipe> <options>`` with outdir as output, log and working folder."""
    sof = write_sof(outdir / f"{recipe}.sof", frames)
    cmd = [esorex, f"--output-dir={outdir}", f"--log-dir={outdir}", recipe, *options, str(sof)]
    return timed(cmd, env, outdir / "esorex.out", cwd=outdir)


def run_drs_ifus(esorex: str, recipe: str, frames: dict[str, list[Path]], options: list[str], outdir: Path,
                 env: dict, ifus: int) -> tuple[float, float, list[Path]]:  # fmt: skip
    """esorex over all IFUs: with 24 IFUs one run with ``--nifu=-1`` (IFUs in parallel, the
    DRS's fastest mode); with fewer (a partial run: ``--nifu=-1`` wants all 24) one run per
    IFU (``--nifu=k``) in ``outdir/ifu_kk``. Summed wall time (s), peak RSS (GB) and the
    folders holding the products."""
    if ifus == 24:
        wall, mem = run_drs(esorex, recipe, frames, ["--nifu=-1", *options], outdir, env)
        return wall, mem, [outdir]
    wall, mem, folders = 0.0, 0.0, []
    for k in range(1, ifus + 1):
        sub = fresh_dir(outdir / f"ifu_{k:02d}")
        w, m = run_drs(esorex, recipe, frames, [f"--nifu={k}", *options], sub, env)
        wall, mem = wall + w, max(mem, m)
        folders.append(sub)
    return wall, mem, folders


def drs_products(folders: list[Path], tag: str) -> list[Path]:
    """Per-IFU esorex products ``TAG-nn.fits`` (or ``TAG.fits`` of a single-IFU run)."""
    found = []
    for folder in folders:
        found += sorted(folder.glob(f"{tag}-*.fits")) or [drs_product(folder, tag)]
    return found


def calibrate(side: str, sim: Path, workdir: Path, env: dict, esorex: str | None, ifus: int) -> dict[str, list[Path]]:
    """bias → flat → wavecal of one side (``ours`` or ``drs``), cached in workdir/calib/side."""
    base = workdir / "calib" / side
    products: dict[str, list[Path]] = {}
    for stage, tags in CALIB_PRODUCTS.items():
        out = base / stage
        done = out / "done.json"
        if done.exists():
            products.update({k: [Path(p) for p in v] for k, v in json.loads(done.read_text()).items()})
            continue
        fresh_dir(out)
        frames = calib_frames(sim, stage, products)
        if side == "ours":
            wall, mem = run_ours(f"muse_{stage}", frames, {"nifu": 0}, out, env)
            made = {tag: [out / f"{tag}.fits"] for tag in tags}
        else:
            # per-IFU products (--merge=false), see calib_vs_drs.py
            wall, mem, folders = run_drs_ifus(esorex, f"muse_{stage}", frames, ["--merge=false"], out, env, ifus)
            made = {tag: drs_products(folders, tag) for tag in tags}
        print(f"   {side:4s} muse_{stage:8s} {wall:7.1f} s  {mem:5.2f} GB  (calibration, not compared)", flush=True)
        products.update(made)
        done.write_text(json.dumps({k: [str(p) for p in v] for k, v in made.items()}))
    return products


# --------------------------------------------------------------------------- science


def science_calibs(sim: Path, calibs: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """muse_scibasic calibrations: the side's own bias/flat/trace/wavecal plus the statics."""
    out = {tag: calibs[tag] for tag in ("MASTER_BIAS", "MASTER_FLAT", "TRACE_TABLE", "WAVECAL_TABLE")}
    out["GEOMETRY_TABLE"] = static(sim, "GEOMETRY_TABLE")
    out["BADPIX_TABLE"] = static(sim, "BADPIX_TABLE")
    return out


def scipost_inputs(sim: Path, tables: list[Path], post_ifus: int | None = None) -> dict[str, list[Path]]:
    """muse_scipost frames: the pixel tables (of the first ``post_ifus`` IFUs) and calibrations."""
    tables = sorted(tables)[:post_ifus] if post_ifus else tables
    frames = {"PIXTABLE_OBJECT": tables, "STD_RESPONSE": [sim / "std_response.fits"]}
    for tag in ("EXTINCT_TABLE", "ASTROMETRY_WCS", "SKY_LINES", "FILTER_LIST"):
        frames[tag] = static(sim, tag)
    return frames


def object_raw(sim: Path) -> Path:
    return raw_by_type(sim)["OBJECT"][0]


def ours_science(args, sim: Path, calibs: dict, env: dict) -> dict[str, tuple[float, float]]:
    """Warm-up (1 IFU), then our scibasic (all IFUs) and scipost, each timed in its process."""
    work = args.workdir / "ours"
    basic = science_calibs(sim, calibs)
    raw = object_raw(sim)
    post_params = {"skymethod": args.skymethod}
    warm = fresh_dir(work / "warm")
    run_ours("muse_scibasic", {"OBJECT": [raw], **basic}, {"nifu": 1, "saveimage": False}, warm, env)
    run_ours("muse_scipost", scipost_inputs(sim, sorted(warm.glob("PIXTABLE_OBJECT_*.fits"))), post_params,
             fresh_dir(work / "warm" / "post"), env)  # fmt: skip
    prof = fresh_dir(args.workdir / "prof") if args.profile else None
    out = fresh_dir(work / "scibasic")
    # saveimage=false on both sides: OBJECT_RED is not needed downstream
    times = {"muse_scibasic": run_ours("muse_scibasic", {"OBJECT": [raw], **basic}, {"nifu": 0, "saveimage": False},
                                       out, env, prof / "scibasic.prof" if prof else None)}  # fmt: skip
    tables = sorted(out.glob("PIXTABLE_OBJECT_*.fits"))
    post = fresh_dir(work / "scipost")
    times["muse_scipost"] = run_ours("muse_scipost", scipost_inputs(sim, tables, args.post_ifus), post_params, post,
                                     env, prof / "scipost.prof" if prof else None)  # fmt: skip
    describe_cube(post / "DATACUBE_FINAL.fits", "ours")
    if prof:
        print_profile(prof)
    return times


def drs_science(args, sim: Path, calibs: dict, env: dict, esorex: str) -> dict[str, tuple[float, float]]:
    """esorex muse_scibasic (IFUs in parallel) and muse_scipost, each timed."""
    work = args.workdir / "drs"
    out = fresh_dir(work / "scibasic")
    frames = {"OBJECT": [object_raw(sim)], **science_calibs(sim, calibs)}
    wall, mem, folders = run_drs_ifus(esorex, "muse_scibasic", frames, ["--saveimage=false"], out, env, args.ifus)
    times = {"muse_scibasic": (wall, mem)}
    tables = sorted(p for folder in folders for p in folder.glob("PIXTABLE_OBJECT*.fits"))
    if not tables:
        raise SystemExit(f"esorex muse_scibasic wrote no PIXTABLE_OBJECT in {out}; see the logs there")
    print(f"   DRS  muse_scibasic {times['muse_scibasic'][0]:7.1f} s ({len(tables)} pixel tables)", flush=True)
    post = fresh_dir(work / "scipost")
    times["muse_scipost"] = run_drs(esorex, "muse_scipost", scipost_inputs(sim, tables, args.post_ifus),
                                    [f"--skymethod={args.skymethod}"], post, env)  # fmt: skip
    describe_cube(post / "DATACUBE_FINAL.fits", "DRS")
    return times


def describe_cube(path: Path, label: str) -> None:
    """Shape and median of DATACUBE_FINAL, so a broken run is visible next to its time."""
    if not path.exists():
        print(f"   {label}: no DATACUBE_FINAL in {path.parent}")
        return
    with fits.open(path, memmap=True) as hl:
        data = hl["DATA"].data
        nz = data.shape[0]
        plane = np.asarray(data[nz // 2], float)
        print(f"   {label:4s} DATACUBE_FINAL {data.shape[::-1]} (x, y, λ); plane {nz // 2}: "
              f"{np.isfinite(plane).mean():.1%} finite, median {np.nanmedian(plane):.4g} "
              f"{hl['DATA'].header.get('BUNIT', '')}")


def print_profile(folder: Path, top: int = 15) -> None:
    import pstats

    for name in ("scibasic", "scipost"):
        path = folder / f"{name}.prof"
        if path.exists():
            print(f"\n--- cProfile of our muse_{name} (cumulative, top {top}) ---")
            pstats.Stats(str(path)).sort_stats("tottime").print_stats(top)


# --------------------------------------------------------------------------- main


def print_table(ours: dict | None, drs: dict | None, args) -> None:
    """Wall time and peak RSS per recipe and in total, and the ratio ours/DRS."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    post = f" (muse_scipost on the first {args.post_ifus})" if args.post_ifus else ""
    print(f"\n{args.ifus} IFU(s){post}, threads {args.threads}, skymethod {args.skymethod}; load average now {load}")
    print(f"{'recipe':14s} | {'ours s':>8s} | {'DRS s':>8s} | {'ours/DRS':>8s} | {'peak GB ours':>12s} | "
          f"{'peak GB DRS':>11s}")
    print("-" * 76)
    ours, drs = ours or {}, drs or {}

    def cell(side: dict, name: str, k: int, fmt: str) -> str:
        return format(side[name][k], fmt) if name in side else "-"

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.3f}" if a is not None and b else "-"

    names = list(ours or drs)
    for name in names:
        print(f"{name:14s} | {cell(ours, name, 0, '.1f'):>8s} | {cell(drs, name, 0, '.1f'):>8s} | "
              f"{ratio(ours.get(name, (None,))[0], drs.get(name, (None,))[0]):>8s} | "
              f"{cell(ours, name, 1, '.2f'):>12s} | {cell(drs, name, 1, '.2f'):>11s}")
    tot = {label: (sum(v[0] for v in side.values()), max(v[1] for v in side.values())) if side else None
           for label, side in (("ours", ours), ("drs", drs))}  # fmt: skip
    t_o, t_d = tot["ours"], tot["drs"]
    print(f"{'total':14s} | {(f'{t_o[0]:.1f}' if t_o else '-'):>8s} | {(f'{t_d[0]:.1f}' if t_d else '-'):>8s} | "
          f"{ratio(t_o[0] if t_o else None, t_d[0] if t_d else None):>8s} | "
          f"{(f'{t_o[1]:.2f}' if t_o else '-'):>12s} | {(f'{t_d[1]:.2f}' if t_d else '-'):>11s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/musered-bench-scipost"),
                        help="simulation, calibrations and products (kept and reused)")
    parser.add_argument("--ifus", type=int, default=24, help="IFUs per raw frame (1..24): fewer for a quick run")
    parser.add_argument("--seed", type=int, default=0, help="simulator seed")
    parser.add_argument("--nbias", type=int, default=3)
    parser.add_argument("--nflat", type=int, default=3)
    parser.add_argument("--narc", type=int, default=1, help="arcs per lamp (Ne, Xe, HgCd)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skymethod", default="simple", choices=("none", "simple", "model"))
    parser.add_argument("--post-ifus", type=int, default=None,
                        help="muse_scipost on the pixel tables of the first N IFUs only (both sides): the DRS "
                             "scipost of a full exposure needs > 19 GB, more than this shared 24 GB machine has")
    parser.add_argument("--skip-drs", action="store_true")
    parser.add_argument("--skip-ours", action="store_true", help="only the DRS side (e.g. to re-time it)")
    parser.add_argument("--profile", action="store_true", help="cProfile our recipes (slower; workdir/prof)")
    parser.add_argument("--calib-only", action="store_true",
                        help="only simulate and make the (cached) calibrations of the selected sides")
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="tree whose recipes/ package times as 'ours' (e.g. an export of an older "
                             "commit, for before/after figures; default: this checkout)")
    args = parser.parse_args()
    if not 1 <= args.ifus <= 24:
        parser.error("--ifus must be 1..24")
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), NUMBA_NUM_THREADS=str(args.threads))
    esorex = shutil.which("esorex")
    use_drs = not args.skip_drs and esorex is not None
    if not use_drs:
        print("DRS: skipped" + ("" if esorex else " (esorex not installed)"))

    sim = simulate_inputs(args.workdir / "sim", args.ifus, args.seed, args.nbias, args.nflat, args.narc)
    if args.calib_only:
        for side in ([] if args.skip_ours else ["ours"]) + (["drs"] if use_drs else []):
            calibrate(side, sim, args.workdir, env, esorex, args.ifus)
        return
    ours = drs = None
    if not args.skip_ours:
        ours_env = dict(env, MUSERED_BENCH_CODE=str(args.code.resolve()))
        ours = ours_science(args, sim, calibrate("ours", sim, args.workdir, env, None, args.ifus), ours_env)
        save_result(args, "ours", ours)
    else:
        ours = load_result(args, "ours")
    if use_drs:
        drs = drs_science(args, sim, calibrate("drs", sim, args.workdir, env, esorex, args.ifus), env, esorex)
        save_result(args, "drs", drs)
    elif args.skip_drs:
        drs = load_result(args, "drs")
    if ours or drs:
        print_table(ours, drs, args)


def save_result(args, side: str, times: dict) -> None:
    """Print one side's times and keep them (with the load average) in the workdir, so
    that a later run timing only the other side can print the ratio."""
    for name, (wall, mem) in times.items():
        print(f"   {side:4s} {name:13s} {wall:7.1f} s  {mem:5.2f} GB", flush=True)
    if side == "ours" and args.code.resolve() != ROOT:
        return  # an older tree's times are not "ours" for later ratios
    record = {"times": times, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "load": os.getloadavg(),
              "skymethod": args.skymethod, "post_ifus": args.post_ifus}  # fmt: skip
    (args.workdir / f"result_{side}.json").write_text(json.dumps(record))


def load_result(args, side: str) -> dict | None:
    """Times of ``side`` kept by an earlier run in the same workdir (same skymethod)."""
    path = args.workdir / f"result_{side}.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if record["skymethod"] != args.skymethod or record.get("post_ifus") != args.post_ifus:
        return None
    load = ", ".join(f"{v:.1f}" for v in record["load"])
    print(f"{side}: times measured by an earlier run of this bench at {record['when']} (load average then {load})")
    return {name: tuple(v) for name, v in record["times"].items()}


if __name__ == "__main__":
    main()
