"""Orchestration of ``musered simulate``: nights → frames → raw files, statics, truth."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..errors import MuseredError
from . import nightlog, statics, truth
from .exposure import Simulator
from .plan import FramePlan, Target, lst_seconds, night_plan
from .profiles import get_profile
from .rawfile import extension_header, primary_header, write_raw
from .skycube import scene_cube

DEFAULT_START = dt.date(2024, 3, 10)


@dataclass
class SimulationResult:
    outdir: Path
    raw_files: list[Path] = field(default_factory=list)
    nightlogs: list[Path] = field(default_factory=list)
    statics: dict[str, Path] = field(default_factory=dict)
    nights: list[str] = field(default_factory=list)


def targets_for(start: dt.date, dataset: str) -> tuple[Target, Target]:
    """Science field transiting at 01:30 UT and standard star transiting at 00:05 UT of the
    first night, both at Dec -30° (close to the Paranal zenith)."""
    d1 = dt.datetime.combine(start + dt.timedelta(days=1), dt.time(0, 0))
    ra_f = (lst_seconds(d1 + dt.timedelta(hours=1, minutes=30)) / 240.0) % 360.0
    ra_s = (lst_seconds(d1 + dt.timedelta(minutes=5)) / 240.0) % 360.0
    return Target(dataset, round(ra_f, 5), -30.0), Target(statics.STD_NAME, round(ra_s, 5), -30.2)


def write_settings(outdir: Path, dataset: str) -> Path:
    """``OUTDIR/settings.yml``: raw_path and muse_calib_path here, and the dataset."""
    from recipes.registry import step_recipe

    # exp-combine (drs) resamples the reduced pixel tables of every exposure at once: its
    # source recipe keeps them, and it takes the offsets exp-align stores as OFFSET_LIST_drs.
    combine = step_recipe("exp-combine", "drs")
    data = {
        "workdir": ".",
        "raw_path": "{workdir}/raw",
        "reduced_path": "{workdir}/reduced/{version}",
        "muse_calib_path": "{workdir}/muse-calib",
        "version": "0.1",
        "datasets": {dataset: {"OBJECT": [dataset]}},
        "recipes": {
            combine.from_recipe: {"params": {"save": "cube,individual"}},
            combine.name: {"frames": {"OFFSET_LIST": "OFFSET_LIST_drs"}},
        },
    }
    path = outdir / "settings.yml"
    path.write_text("# written by `musered simulate`\n" + yaml.safe_dump(data, sort_keys=False))
    return path


def simulate(outdir: str | Path, profile: str = "mini", nights: int = 1, seed: int = 0,
             dataset: str = "SIMFIELD", exposures: int = 4, dark: bool = False,
             start: dt.date = DEFAULT_START, kinds: set[str] | None = None, ifus: int | None = None,
             progress: Callable[[str], None] | None = None) -> SimulationResult:
    """Simulate ``nights`` nights into ``outdir`` (raw/, muse-calib/, truth/, settings.yml).

    ``kinds`` restricts the frame types written (e.g. ``{"BIAS"}``), ``ifus`` the number
    of IFUs (extensions) of the profile; both exist to keep tests and the DRS cross-check
    small. Same arguments and seed → identical files.
    """
    prof = get_profile(profile)
    if nights < 1 or exposures < 0:
        raise MuseredError(f"simulate: --nights must be >= 1 and --exposures >= 0 (got {nights}, {exposures})")
    if not dataset or any(c in dataset for c in "/\\ "):
        raise MuseredError(f"simulate: bad dataset name '{dataset}' (no spaces or slashes)")
    if ifus is not None:
        from dataclasses import replace

        if not 1 <= ifus <= prof.n_ifus:
            raise MuseredError(f"simulate: ifus must be 1..{prof.n_ifus}")
        prof = replace(prof, n_ifus=ifus)
    outdir = Path(outdir)
    rawdir, tdir = outdir / "raw", outdir / "truth"
    for d in (rawdir, tdir):
        d.mkdir(parents=True, exist_ok=True)
    sim = Simulator(prof, seed)
    field_t, std_t = targets_for(start, dataset)
    res = SimulationResult(outdir=outdir)
    res.statics = statics.write_statics(outdir / "muse-calib", sim, (std_t.ra, std_t.dec))
    frames_truth, exposures_truth, cosmics = {}, {}, []
    index = 0
    plan_rng = np.random.default_rng([sim.seed, 6])
    for n in range(nights):
        night = start + dt.timedelta(days=n)
        plan = night_plan(night, field_t, std_t, plan_rng, n_exposures=exposures, dark=dark,
                          flat_exptime=prof.flat_exptime, arc_exptime=prof.arc_exptime,
                          illum_exptime=prof.illum_exptime)
        res.nights.append(night.isoformat())
        seeing = float(np.mean([f.seeing for f in plan if f.kind == "OBJECT"] or [0.8]))
        res.nightlogs.append(nightlog.write_nightlog(
            rawdir, night, nightlog.weather_rows(night, plan_rng, seeing)))
        for frame in plan:
            index += 1
            if kinds and frame.kind not in kinds:
                continue
            path = rawdir / frame.filename
            ft = write_frame(sim, frame, index, path)
            frames_truth[frame.filename] = ft["frame"]
            cosmics += [[frame.filename, *c] for c in ft["cosmics"]]
            if frame.kind in ("OBJECT", "STD"):
                exposures_truth[frame.filename] = _exposure_truth(frame)
            res.raw_files.append(path)
            if progress:
                progress(f"{frame.filename} {frame.kind}{' ' + frame.lamp if frame.lamp and frame.lamp != 'cont' else ''}")
    truth.write_instrument(tdir / "instrument.fits", sim, sim.lam)
    truth.write_cosmics(tdir / "cosmics.fits", cosmics)
    if prof.name == "mini":
        obj = [f for f in exposures_truth.values() if f["kind"] == "OBJECT"]
        seeing = float(np.mean([o["seeing"] for o in obj])) if obj else 0.8
        half = int(math.ceil(math.hypot(prof.layout.width_sky * 2, prof.n_ifus * 6) + 12))
        scene_cube(sim.scene, field_t.ra, field_t.dec, half, prof.lambda_range, seeing,
                   prof.layout.lsf_fwhm).writeto(tdir / "skycube.fits", overwrite=True)
    truth.write_json(tdir / "truth.json", {
        "profile": prof.name, "seed": sim.seed, "n_ifus": prof.n_ifus,
        "trimmed_shape": list(sim.trimmed_shape), "raw_shape": list(prof.detector.raw_shape),
        "lambda_range": list(prof.lambda_range), "dataset": dataset, "nights": res.nights,
        "target": {"name": field_t.name, "ra": field_t.ra, "dec": field_t.dec},
        "standard": {"name": std_t.name, "ra": std_t.ra, "dec": std_t.dec},
        "ccds": [c.to_dict() for c in sim.ccds],
        "frames": frames_truth, "exposures": exposures_truth,
        "sources": _sources_truth(sim, field_t),
        "conventions": {
            "coordinates": "trimmed-CCD FITS 1-based for polynomials; 0-based [y, x] arrays",
            "offset": "commanded pointing offset (xi east, eta north) in arcsec from the target",
            "pointing_error": "true minus header pointing (xi, eta) in arcsec",
            "posang": "deg, field +y axis from north towards east",
            "bias_level": "adu at the first raw row of each port; bias_mean: expected mean over the data region",
        },
    })
    write_settings(outdir, dataset)
    return res


def write_frame(sim: Simulator, frame: FramePlan, index: int, path: Path) -> dict:
    """Render and write one raw frame; ``index`` selects its random streams.

    Returns ``{"frame": per-frame truth, "cosmics": [[ifu, y, x, e-], ...]}``.
    """
    per_ifu = {}

    def make(ifu: int):
        raw, tr = sim.render_ifu(frame, ifu, index)
        per_ifu[ifu] = tr
        return raw

    exts = [(extension_header(sim.profile, ifu, sim.ccds[ifu - 1].gain, sim.ccds[ifu - 1].ron),
             (lambda ifu=ifu: make(ifu))) for ifu in range(1, sim.profile.n_ifus + 1)]
    write_raw(path, primary_header(frame, sim.profile), exts)
    ifus = sorted(per_ifu)
    return {
        "frame": {
            "kind": frame.kind, "night": frame.night, "exptime": frame.exptime,
            "dpr_type": frame.dpr_type, "lamp": frame.lamp, "tpl_start": frame.tpl_start,
            "bias_level": [per_ifu[i]["bias_level"] for i in ifus],
            "bias_mean": [per_ifu[i]["bias_mean"] for i in ifus],
            "n_cosmics": sum(len(per_ifu[i]["cosmics"]) for i in ifus),
        },
        "cosmics": [c for i in ifus for c in per_ifu[i]["cosmics"]],
    }


def _exposure_truth(frame: FramePlan) -> dict:
    return {
        "kind": frame.kind, "offset": list(frame.offset), "pointing_error": list(frame.pointing_error),
        "posang": frame.posang, "seeing": frame.seeing, "airmass": frame.airmass,
        "ra": frame.ra, "dec": frame.dec,
        "true_ra": frame.ra + frame.pointing_error[0] / 3600.0 / math.cos(math.radians(frame.dec)),
        "true_dec": frame.dec + frame.pointing_error[1] / 3600.0,
    }


def _sources_truth(sim: Simulator, field_t: Target) -> dict:
    cosd = math.cos(math.radians(field_t.dec))
    stars = [{
        "name": s.name, "xi": s.xi, "eta": s.eta,
        "ra": field_t.ra + s.xi / 3600.0 / cosd, "dec": field_t.dec + s.eta / 3600.0,
        "flux5500": s.flux5500, "temperature": s.temperature,
    } for s in sim.scene.stars]
    neb = sim.scene.nebula
    return {
        "stars": stars,
        "nebula": {"surface_halpha": neb.surface,
                   "blobs": [{"xi": b[0], "eta": b[1], "sigma": b[2], "weight": b[3]} for b in neb.blobs],
                   "lines": {k: {"lambda": v[0], "ratio": v[1]} for k, v in neb.lines.items()}},
        "sky_continuum_5500": sim.scene.sky_continuum,
        "units": "flux5500 erg/s/cm2/A; surface erg/s/cm2/arcsec2; xi/eta arcsec from the target",
    }
