"""Association on MuseRed's example set (IC4406, 2017-06): for every calibration sequence and
science exposure, our runner chooses MuseRed's raw frames and calibration nights.

No recipe runs. Each step goes through the runner (:func:`musered.runner.run_steps`, serial
executor) with its recipe's ``run`` replaced by a placeholder writing one empty file per
product tag, so the runner installs and records products (with the frames of each run in
``reduced.frames``) and the next step finds them as after a real run. Then every step is
associated again through the ``--dry-run`` path, which must choose the same frames.

The reference is independent of our code: MuseRed's ``reduced_0_1`` records (what it
reduced), its ``raw`` table (the files of each sequence), its ``find_calib`` and
``find_illum`` rules re-implemented below from MuseRed's frames.py and musered.py over those
tables, and the product header of exposure 1 (``ESO PRO REC1/REC2``).
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from astropy.io import fits
from rich.console import Console
from sqlalchemy import select

import musered_example as example
from musered.db import Database
from musered.db.models import Reduced
from musered.executors import SerialExecutor
from musered.flags import add_flag
from musered.ingest import update_db
from musered.runner import run_step, run_steps
from musered.settings import load_settings
from recipes import registry
from recipes.base import REDUCED, Product

pytestmark = pytest.mark.skipif(not example.available(), reason="MuseRed example material not found")

EXPOSURE_1 = "2017-06-16T01:34:56.867"
FLAGGED = "2017-06-16T01:40:40.868"  # flags_0_1: BAD_SLICE, SLICE_GRADIENT
STATIC = {  # the static files the example settings name, and the DRS ones of muse_calib_path
    "BADPIX_TABLE": "badpix_table.fits", "GEOMETRY_TABLE": "geometry_table_wfm_gto17.fits",
    "ASTROMETRY_WCS": "astrometry_wcs_wfm_gto17.fits", "SKY_LINES": "sky_lines.fits",
    "RAMAN_LINES": "raman_lines.fits", "EXTINCT_TABLE": "extinct_table.fits", "FILTER_LIST": "filter_list.fits",
    "STD_FLUX_TABLE": "std_flux_table.fits", "LINE_CATALOG": "line_catalog.fits",
    "VIGNETTING_MASK": "vignetting_mask.fits",
}
# What MuseRed reduces, per recipe: the raw DPR.TYPE of a sequence (MuseRed's recipe classes).
SEQUENCE_TYPES = {"muse_bias": "BIAS", "muse_flat": "FLAT,LAMP", "muse_wavecal": "WAVE", "muse_lsf": "WAVE",
                  "muse_twilight": "FLAT,SKY"}
EXPOSURE_RECIPES = ("muse_scibasic", "muse_standard", "muse_scipost", "muse_scipost_rec", "muse_scipost_make_cube")
ILLUM_USERS = ("muse_scibasic", "muse_twilight")  # MuseRed's use_illum
CHAIN_TAGS = ("MASTER_BIAS", "MASTER_FLAT", "TRACE_TABLE", "WAVECAL_TABLE", "LSF_PROFILE", "TWILIGHT_CUBE",
              "STD_RESPONSE", "STD_TELLURIC")
# The product header of exposure 1 (MuseRed's tests/data): scibasic (REC1) and scipost_rec (REC2).
TRUTH_SCIBASIC = {"OBJECT": "MUSE.2017-06-16T01:34:56.867.fits", "ILLUM": "MUSE.2017-06-16T01:25:02.867.fits",
                  "BADPIX_TABLE": "badpix_table.fits", "GEOMETRY_TABLE": "geometry_table_wfm_gto17.fits",
                  "MASTER_BIAS": "MASTER_BIAS", "MASTER_FLAT": "MASTER_FLAT", "TRACE_TABLE": "TRACE_TABLE",
                  "TWILIGHT_CUBE": "TWILIGHT_CUBE", "WAVECAL_TABLE": "WAVECAL_TABLE"}
TRUTH_SCIPOST_REC = {"ASTROMETRY_WCS": "astrometry_wcs_wfm_gto17.fits", "EXTINCT_TABLE": "extinct_table.fits",
                     "STD_RESPONSE": "STD_RESPONSE", "STD_TELLURIC": "STD_TELLURIC"}
# ... and the product sets those calibrations came from (the only ones in MuseRed's records).
TRUTH_SETS = {"MASTER_BIAS": "2017-06-16T10:40:27", "MASTER_FLAT": "2017-06-16T12:15:46",
              "TRACE_TABLE": "2017-06-16T12:15:46", "WAVECAL_TABLE": "2017-06-16T12:32:03",
              "TWILIGHT_CUBE": "2017-06-18T22:04:55", "STD_RESPONSE": "2017-06-19T09:32:26.112",
              "STD_TELLURIC": "2017-06-19T09:32:26.112"}


# ---------------------------------------------------------------- MuseRed's rules

def musered_excludes() -> dict[str, set[str]]:
    """MuseRed's ``frames.exclude`` names per DPR_TYPE, from its settings file."""
    conf = yaml.safe_load(example.EXAMPLE_SETTINGS.read_text())["frames"]["exclude"]
    return {key: {item for item in items if isinstance(item, str)} for key, items in conf.items() if key != "raw"}


def musered_calib_night(records: list[dict], night: str, tag: str, mode: str) -> str | None:
    """MuseRed's ``FramesFinder.find_calib`` on its ``reduced_0_1`` records: the night of
    the product it takes (same night, then +1, -1, +2, ... within its day offset)."""
    day_off = {"STD_TELLURIC": 5, "STD_RESPONSE": 5, "TWILIGHT_CUBE": 3}.get(tag, 1)
    excluded = musered_excludes().get(tag, set())
    base = dt.date.fromisoformat(night)
    for off in [0] + [k * d for k in range(1, day_off + 1) for d in (1, -1)]:
        day = (base + dt.timedelta(days=off)).isoformat()
        found = [r for r in records if r["DPR_TYPE"] == tag and r["night"] == day and r["name"] not in excluded
                 and (tag not in ("MASTER_FLAT", "STD_RESPONSE", "STD_TELLURIC", "LSF_PROFILE")
                      or r["INS_MODE"] == mode)]
        if found:
            return day
    return None


def musered_illum(raws: list[dict], members: list[dict]) -> str | None:
    """MuseRed's ``find_illum``: the FLAT,LAMP,ILLUM of the night; within 2 h of the mean
    MJD-OBS the closest to the mean INS.TEMP7, else the closest in time; none if ΔT > 1."""
    ref_temp = sum(m["INS_TEMP7_VAL"] for m in members) / len(members)
    ref_mjd = sum(m["MJD_OBS"] for m in members) / len(members)
    illums = sorted(({"file": r["filename"].removesuffix(".fz"), "temp": abs(r["INS_TEMP7_VAL"] - ref_temp),
                      "hours": abs(r["MJD_OBS"] - ref_mjd) * 24}
                     for r in raws if r["DPR_TYPE"] == "FLAT,LAMP,ILLUM" and r["night"] == members[0]["night"]),
                    key=lambda i: i["hours"])
    if not illums:
        return None
    close = sorted((i for i in illums if i["hours"] < 2), key=lambda i: i["temp"])
    best = close[0] if close else illums[0]
    return None if best["temp"] > 1 else best["file"]


# ---------------------------------------------------------------- our reduction, without recipes

def placeholder(recipe):
    """``recipe`` whose run writes one empty file per product tag (muse_scibasic: only the
    pixel table of the raw tag it was given, as the real one)."""
    raw_tags = set(recipe.inputs)

    def run(frames, params, outdir):
        tags = recipe.outputs
        if recipe.name == "muse_scibasic":
            tags = [f"PIXTABLE_{tag}" for tag in frames if tag in raw_tags]
        products = []
        for tag in tags:
            fits.PrimaryHDU().writeto(Path(outdir) / f"{tag}.fits")
            products.append(Product(Path(outdir) / f"{tag}.fits", tag))
        return products

    return replace(recipe, run=run)


def example_workdir(root: Path) -> tuple:
    """MuseRed's folder with its settings (muse_calib_path pointed at minimal static files
    carrying their PRO.CATG, the files its blocks name), ingested by our update-db."""
    calib = root / "muse-calib"
    calib.mkdir(parents=True)
    for tag, name in STATIC.items():
        header = fits.Header()
        header["HIERARCH ESO PRO CATG"] = tag
        fits.PrimaryHDU(header=header).writeto(calib / name)
    text = example.EXAMPLE_SETTINGS.read_text().replace("~/lib/musedrs/muse-calib", str(calib))
    settings = load_settings(example.example_folder(root / "work", settings_text=text))
    for name in ("OFFSET_LIST_new.fits", "reduced/0.1/exp_combine/IC4406/DATACUBE_FINAL.fits"):
        (root / "work" / name).parent.mkdir(parents=True, exist_ok=True)
        fits.PrimaryHDU().writeto(root / "work" / name)
    database = Database(settings.database_url())
    update_db(settings, database, progress=False)
    return settings, database, calib


def our_steps():
    """(recipe, params block) in the order a MuseRed user runs them on this set."""
    calib = registry.recipes_of("process-calib")
    exp = registry.recipes_of("process-exp")
    steps = [(r, None) for r in calib + exp if r.by_default]
    by_name = {r.name: r for r in exp}
    return steps + [(by_name["muse_scipost"], "muse_scipost_rec"), (by_name["muse_scipost_make_cube"], None)]


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    """Our records after the chain, by (block, target): {night, INS_MODE, frames by tag}."""
    settings, database, calib = example_workdir(tmp_path_factory.mktemp("example"))
    for flag in ("BAD_SLICE", "SLICE_GRADIENT"):  # MuseRed's flags_0_1
        assert add_flag(database, [FLAGGED], flag, settings=settings) == ([FLAGGED], [])
    executor, quiet = SerialExecutor(), Console(file=io.StringIO())
    for recipe, block in our_steps():
        run_steps(settings, database, [placeholder(recipe)], executor=executor, params_block=block,
                  progress=False, report=False, console=quiet)
    with database.session() as session:
        rows = session.scalars(select(Reduced)).all()
        records = {}
        for row in rows:
            records[(row.recipe_name, row.name)] = {
                "night": row.night, "INS_MODE": row.INS_MODE,
                "frames": {tag: [Path(f["path"]) for f in files] for tag, files in row.frames.items()}}
        products = {Path(row.path): (row.name, row.night) for row in rows}
    dry = {}
    for recipe, block in our_steps():  # the --dry-run path: every target again, nothing run
        summary = run_step(settings, database, recipe, None, params_block=block, dry_run=True, force=True,
                           progress=False, report=False, console=quiet)
        dry.update({(block or recipe.name, a.target.name): a.frames for a in summary.associations})
    yield {"records": records, "products": products, "dry": dry, "calib": calib}
    database.dispose()


def musered_targets() -> set[tuple[str, str, str, str]]:
    """(recipe, name, night, INS_MODE) MuseRed reduced, minus the bias its settings now
    exclude (``frames.exclude.BIAS``, night 2017-06-13) but reduced_0_1 still records."""
    excluded = musered_excludes()["BIAS"]
    return {(r["recipe_name"], r["name"], r["night"], r["INS_MODE"]) for r in example.example_rows("reduced_0_1")
            if r["recipe_name"] in (*SEQUENCE_TYPES, *EXPOSURE_RECIPES) and r["name"] not in excluded}


def musered_raw_frames(recipe: str, name: str) -> set[str]:
    """The raw files MuseRed gives a sequence (its DPR.TYPE and TPL_START) or exposure."""
    rows = example.example_rows("raw")
    if recipe in SEQUENCE_TYPES:
        chosen = [r for r in rows if r["DPR_TYPE"] == SEQUENCE_TYPES[recipe] and r["TPL_START"] == name]
    else:
        chosen = [r for r in rows if r["name"] == name]
    return {r["filename"].removesuffix(".fz") for r in chosen}


# ---------------------------------------------------------------- the comparisons

def test_same_sequences_exposures_and_raw_frames_as_musered(reduced):
    ours = {(recipe, name, rec["night"], rec["INS_MODE"]) for (recipe, name), rec in reduced["records"].items()
            if recipe in (*SEQUENCE_TYPES, *EXPOSURE_RECIPES)}
    theirs = musered_targets()
    raw_agree = []
    for recipe, name, _night, _mode in sorted(ours & theirs):
        if recipe in (*SEQUENCE_TYPES, "muse_scibasic"):
            frames = reduced["records"][(recipe, name)]["frames"]
            inputs = {p.name for tag in registry.get_recipe(recipe).inputs for p in frames.get(tag, [])}
            raw_agree.append(inputs == musered_raw_frames(recipe, name))
    for kind, recipes in (("calibration sequences", SEQUENCE_TYPES), ("exposure runs", EXPOSURE_RECIPES)):
        both, either = ({t for t in group if t[0] in recipes} for group in (ours & theirs, ours | theirs))
        print(f"\n{kind} agreeing with MuseRed: {len(both)}/{len(either)}", end="")
    print(f"\nraw frames agreeing (sequences, scibasic): {sum(raw_agree)}/{len(raw_agree)}")
    assert ours - theirs == set() and theirs - ours == set()
    assert len({t for t in theirs if t[0] in SEQUENCE_TYPES}) == 13 and all(raw_agree)


def test_same_calibration_nights_as_musered_find_calib(reduced):
    theirs_records = example.example_rows("reduced_0_1")
    agree, disagree, by_kind = 0, [], {"sequences": 0, "exposures": 0}
    for (recipe, name), rec in sorted(reduced["records"].items()):
        if recipe not in (*SEQUENCE_TYPES, *EXPOSURE_RECIPES):
            continue
        block = recipe if recipe != "muse_scipost_rec" else "muse_scipost"
        declared = registry.get_recipe(block).calibs
        for tag in [c.tag for c in declared if REDUCED in c.sources and not c.default_excluded]:
            assert tag in CHAIN_TAGS, tag
            paths = rec["frames"].get(tag, [])
            ours = reduced["products"][paths[0]][1] if paths else None
            expected = musered_calib_night(theirs_records, rec["night"], tag, rec["INS_MODE"])
            if ours == expected:
                agree += 1
                by_kind["sequences" if recipe in SEQUENCE_TYPES else "exposures"] += 1
            else:
                disagree.append((recipe, name, tag, ours, expected))
    print(f"\ncalibration nights agreeing with MuseRed's find_calib: {agree}/{agree + len(disagree)} ({by_kind})")
    assert not disagree


def test_exposure_1_as_musered_product_header(reduced):
    header = fits.getheader(example.EXAMPLE_PRODUCT)

    def used(rec: str, kinds: tuple[str, ...]) -> dict[str, str]:
        return {header[f"ESO PRO {rec} {k}{i} CATG"]: header[f"ESO PRO {rec} {k}{i} NAME"].removesuffix(".fz")
                for k in kinds for i in range(1, 30) if f"ESO PRO {rec} {k}{i} CATG" in header}

    # the hard-coded truth is the header's: file names of raw and static files, the tag
    # starting the name of a product (MASTER_BIAS-01.fits, TWILIGHT_CUBE.fits)
    for truth, found in ((TRUTH_SCIBASIC, used("REC1", ("RAW", "CAL"))), (TRUTH_SCIPOST_REC, used("REC2", ("CAL",)))):
        assert set(found) == set(truth)
        assert all(found[t] == n if n.endswith(".fits") else found[t].startswith(n) for t, n in truth.items())
    ours = reduced["records"][("muse_scibasic", EXPOSURE_1)]["frames"]
    assert set(ours) == set(TRUTH_SCIBASIC)  # MASTER_DARK is not used by default, as in MuseRed
    rec = reduced["records"][("muse_scipost_rec", EXPOSURE_1)]["frames"]
    assert "RAMAN_LINES" not in rec  # muse_scipost_rec: frames.exclude: [RAMAN_LINES]
    for frames, truth in ((ours, TRUTH_SCIBASIC), (rec, TRUTH_SCIPOST_REC)):
        for tag, name in truth.items():
            path = frames[tag][0]
            assert path.name == name if name.endswith(".fits") else reduced["products"][path][0] == TRUTH_SETS[tag]


def test_illum_as_musered_find_illum(reduced):
    raws = example.example_rows("raw")
    by_name = {r["name"]: r for r in raws}
    checked = 0
    for (recipe, name), rec in reduced["records"].items():
        if recipe not in ILLUM_USERS:
            continue
        members = ([r for r in raws if r["DPR_TYPE"] == SEQUENCE_TYPES[recipe] and r["TPL_START"] == name]
                   if recipe in SEQUENCE_TYPES else [by_name[name]])
        ours = [p.name for p in rec["frames"].get("ILLUM", [])]
        expected = musered_illum(raws, members)
        assert ours == ([expected] if expected else []), (recipe, name)
        checked += 1
    assert checked == 8  # 6 science exposures, the standard, the twilight sequence
    assert reduced["records"][("muse_scibasic", EXPOSURE_1)]["frames"]["ILLUM"][0].name == \
        "MUSE.2017-06-16T01:25:02.867.fits"  # MuseRed's product header, ESO PRO REC1 RAW2 NAME


def test_static_sky_lines_raman_for_ao_and_astrometry_for_make_cube(reduced):
    calib = reduced["calib"]
    scipost = {n: r["frames"] for (b, n), r in reduced["records"].items() if b == "muse_scipost"}
    assert len(scipost) == 6
    for frames in scipost.values():
        assert frames["SKY_LINES"] == [calib / "sky_lines.fits"]   # never an exposure's own fitted lines
        assert frames["RAMAN_LINES"] == [calib / "raman_lines.fits"]  # WFM-AO-N
        assert frames["ASTROMETRY_WCS"] == [calib / "astrometry_wcs_wfm_gto17.fits"]
    cubes = [r["frames"] for (b, _), r in reduced["records"].items() if b == "muse_scipost_make_cube"]
    assert len(cubes) == 6
    assert all(f["ASTROMETRY_WCS"] == [calib / "astrometry_wcs_wfm_gto17.fits"] for f in cubes)


def test_dry_run_chooses_what_the_runs_used(reduced):
    """After the chain (scipost has written SKY_LINES products), the --dry-run association of
    every target is the one its run recorded."""
    recorded = {key: rec["frames"] for key, rec in reduced["records"].items()}
    assert set(reduced["dry"]) == set(recorded)
    assert all(reduced["dry"][key] == recorded[key] for key in recorded)


def test_flagged_exposure_is_still_processed(reduced):
    """MuseRed processes flagged exposures (they are only left out of exp-* with exclude_flags)."""
    for block in ("muse_scibasic", "muse_scipost", "muse_scipost_make_cube"):
        assert (block, FLAGGED) in reduced["records"], block
