"""The DRS engine (recipes/drs, `engine: drs`) with a fake esorex: no ESO software needed.

The fake (a Python script put first on PATH) answers ``--params``/``--version`` like
esorex 3.13.6 and, for a run, records its argv and SOF and writes single-IFU DRS files
(primary ``EXTNAME = CHANnn``, DATA/DQ/STAT) for each IFU of its raw inputs, as
``esorex muse_bias --nifu=k --merge=false`` does. ``FAKE_ESOREX_MODE`` makes it fail
with DRS error lines, log errors and succeed, or succeed without writing a product.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import stat
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from musered.db import Raw
from musered.errors import MuseredError
from musered.runner import run_step
from musered.settings import settings_from_dict
from recipes.base import Param, Product, Recipe, RecipeError
from recipes.drs import params as drs_params_module
from recipes.drs import run_esorex
from recipes.drs.esorex import error_message, esorex_version
from recipes.drs.sof import read_sof
from recipes.io.products import read_image_product

FAKE = textwrap.dedent('''\
    #!{python}
    """A fake esorex: --params, --version, and muse_bias runs writing per-IFU files."""
    import json, os, re, sys
    from pathlib import Path
    from astropy.io import fits
    import numpy as np
    argv = sys.argv[1:]
    if "--version" in argv:
        print("\\n     ***** ESO Recipe Execution Tool, version 3.13.6  *****\\n")
        sys.exit(0)
    if argv[0] == "--params":
        print("Caller Parameters :\\n\\n  help : FALSE\\n\\nRecipe Parameters :\\n")
        print("  nifu                  : 0\\n  overscan              : vpoly\\n  lsigma : 3.0\\n"
              "  merge                 : FALSE")
        sys.exit(0)
    opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    recipe = next(a for a in argv if not a.startswith("--"))
    sof = argv[-1]
    lines = [l.split() for l in open(sof).read().splitlines() if l.strip()]
    with open(os.environ["FAKE_ESOREX_RECORD"], "a") as rec:
        rec.write(json.dumps({{"argv": argv, "cwd": os.getcwd(), "sof": lines}}) + "\\n")
    mode = os.environ.get("FAKE_ESOREX_MODE", "ok")
    print("00:00:00 [ INFO  ] " + recipe + ": MUSE Instrument Pipeline v2.8.7")
    if mode == "fail":
        print("00:00:01 [ ERROR ] " + recipe + ": [tid=000] Dumping the 2 most recent error(s) out of 2:",
              file=sys.stderr)
        print("00:00:01 [ ERROR ] " + recipe + ": [tid=000] No valid raw tag(s) found!", file=sys.stderr)
        print("00:00:01 [ ERROR ] esorex: [tid=000] Execution of recipe failed, status = -1", file=sys.stderr)
        sys.exit(255)
    if mode == "errors":
        print("00:00:01 [ ERROR ] " + recipe + ": [tid=000] No lines with quality >= 1 found", file=sys.stderr)
    if mode == "nothing":
        sys.exit(0)
    raws = [p for p, tag in lines if tag == "BIAS"]
    with fits.open(raws[0]) as h:
        present = [int(x.name[4:]) for x in h[1:] if x.name.startswith("CHAN")]
    nifu = int(opts["nifu"])
    for ifu in (present if nifu == -1 else [nifu]):
        level = float(os.environ.get("FAKE_LEVEL", "0")) + ifu
        p = fits.Header()
        p["EXTNAME"] = "CHAN%02d" % ifu
        p["HIERARCH ESO PRO CATG"] = "MASTER_BIAS"
        p["HIERARCH ESO PRO REC1 ID"] = recipe
        p["HIERARCH ESO PRO REC1 PIPE ID"] = "muse/2.8.7"
        p["HIERARCH ESO QC BIAS MASTER1 MEDIAN"] = level
        p["HIERARCH ESO DRS MUSE OVSC1 MEAN"] = 1000.0 + ifu
        data = np.full((4, 5), level, np.float32)
        hdus = [fits.PrimaryHDU(header=p), fits.ImageHDU(data, name="DATA"),
                fits.ImageHDU(np.zeros((4, 5), np.int32), name="DQ"),
                fits.ImageHDU(np.ones((4, 5), np.float32), name="STAT")]
        hdus[1].header["ERRDATA"] = "STAT"
        fits.HDUList(hdus).writeto("MASTER_BIAS-%02d.fits" % ifu)
    print("00:00:02 [ INFO  ] " + recipe + ": [tid=000] Saving image as MASTER_BIAS")
''')


@pytest.fixture
def fake_esorex(tmp_path, monkeypatch):
    """A fake esorex first on PATH; returns the file its runs are recorded in."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "esorex"
    script.write_text(FAKE.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    record = tmp_path / "esorex-runs.jsonl"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ESOREX_RECORD", str(record))
    # the answers of --params/--version are cached per process: each test has its own fake
    drs_params_module.drs_params.cache_clear()
    esorex_version.cache_clear()
    yield record
    drs_params_module.drs_params.cache_clear()
    esorex_version.cache_clear()


def runs(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def raw_bias(path: Path, ifus) -> Path:
    hdus = [fits.PrimaryHDU()] + [fits.ImageHDU(np.zeros((3, 3), np.int16), name=f"CHAN{i:02d}") for i in ifus]
    fits.HDUList(hdus).writeto(path)
    return path


def _ours(frames, params, outdir):
    """Our engine's stand-in: one MASTER_BIAS product without IFU extensions."""
    header = fits.Header()
    header["HIERARCH ESO PRO CATG"] = "MASTER_BIAS"
    path = outdir / "MASTER_BIAS.fits"
    fits.PrimaryHDU(header=header).writeto(path)
    return [Product(path, "MASTER_BIAS", (1,))]


BIAS = Recipe(name="muse_bias", inputs=("BIAS",), calibs=(), outputs=("MASTER_BIAS",), run=_ours,
              params=(Param("overscan", str, "vpoly", "overscan model"),
                      Param("lsigma", float, 3.0, "low rejection"),
                      Param("nifu", int, 0, "IFU (the engine sets it)"),
                      Param("ourstuff", int, 7, "a parameter the DRS does not have")))


def test_sof_parameters_nifu_and_merge(tmp_path, fake_esorex, caplog):
    raws = [raw_bias(tmp_path / f"b{i}.fits", (1, 3)) for i in range(2)]
    badpix = raw_bias(tmp_path / "badpix.fits", ())
    out = tmp_path / "out"
    out.mkdir()
    params = {"overscan": "dcr", "lsigma": 2.5, "nifu": 5, "ourstuff": 7}
    with caplog.at_level(logging.INFO, logger="recipes"):
        products = run_esorex(BIAS, {"BIAS": raws, "BADPIX_TABLE": [badpix]}, params, out, "esorex")
    calls = runs(fake_esorex)
    # one run per IFU present in the raw inputs, not the nifu of the settings
    assert [c["argv"][c["argv"].index("muse_bias") + 1] for c in calls] == ["--nifu=1", "--nifu=3"]
    for call in calls:
        assert "--overscan=dcr" in call["argv"] and "--lsigma=2.5" in call["argv"]
        assert "--merge=false" in call["argv"]
        assert not any(a.startswith("--ourstuff") for a in call["argv"])
        assert Path(call["cwd"]).resolve() == out.resolve()
        assert f"--output-dir={out}" in call["argv"]
        assert call["sof"] == [[str(raws[0].resolve()), "BIAS"], [str(raws[1].resolve()), "BIAS"],
                               [str(badpix.resolve()), "BADPIX_TABLE"]]
    assert read_sof(out / "esorex.sof") == [(raws[0].resolve(), "BIAS"), (raws[1].resolve(), "BIAS"),
                                            (badpix.resolve(), "BADPIX_TABLE")]
    assert "parameters unknown to the DRS recipe, not passed: ourstuff" in caplog.text
    assert "Saving image as MASTER_BIAS" in caplog.text  # esorex's output goes to the run log
    # merged into our layout: one file, CHANnn.DATA/DQ/STAT, per-IFU parts gone
    assert [(p.path.name, p.tag, p.ifus) for p in products] == [("MASTER_BIAS.fits", "MASTER_BIAS", (1, 3))]
    assert sorted(f.name for f in out.glob("*.fits")) == ["MASTER_BIAS.fits"]
    with fits.open(products[0].path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "CHAN01.DATA", "CHAN01.DQ", "CHAN01.STAT",
                                          "CHAN03.DATA", "CHAN03.DQ", "CHAN03.STAT"]
        assert "EXTNAME" not in hdul[0].header and "ESO QC BIAS MASTER1 MEDIAN" not in hdul[0].header
        assert hdul[0].header["ESO PRO REC1 PIPE ID"] == "muse/2.8.7"
        assert hdul["CHAN03.DATA"].header["ERRDATA"] == "CHAN03.STAT"
        assert hdul["CHAN03.DATA"].header["ESO DRS MUSE OVSC1 MEAN"] == 1003.0
    image = read_image_product(products[0].path, 3)
    assert np.all(image.data == 3.0) and np.all(image.stat == 1.0)
    assert image.header["ESO QC BIAS MASTER1 MEDIAN"] == 3.0
    assert products[0].qc == {"CHAN01 QC BIAS MASTER1 MEDIAN": 1.0, "CHAN03 QC BIAS MASTER1 MEDIAN": 3.0}


def test_all_ifus_run_once_with_nifu_minus_one(tmp_path, fake_esorex):
    raws = [raw_bias(tmp_path / "b.fits", range(1, 25))]
    out = tmp_path / "out"
    out.mkdir()
    products = run_esorex(BIAS, {"BIAS": raws}, {}, out)
    assert [c["argv"][c["argv"].index("muse_bias") + 1] for c in runs(fake_esorex)] == ["--nifu=-1"]
    assert products[0].ifus == tuple(range(1, 25))
    assert np.all(read_image_product(products[0].path, 24).data == 24.0)


def test_drs_error_line_is_the_recipe_error(tmp_path, fake_esorex, monkeypatch, caplog):
    raws = [raw_bias(tmp_path / "b.fits", (1,))]
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("FAKE_ESOREX_MODE", "fail")
    with pytest.raises(RecipeError, match=r"exit status 255\): muse_bias: No valid raw tag\(s\) found!$"):
        run_esorex(BIAS, {"BIAS": raws}, {}, out)
    monkeypatch.setenv("FAKE_ESOREX_MODE", "nothing")
    with pytest.raises(RecipeError, match="exited 0 but wrote no product"):
        run_esorex(BIAS, {"BIAS": raws}, {}, out)
    # errors the DRS recovers from: the run succeeds, its ERROR lines are warnings of the log
    monkeypatch.setenv("FAKE_ESOREX_MODE", "errors")
    with caplog.at_level(logging.INFO, logger="recipes"):
        products = run_esorex(BIAS, {"BIAS": raws}, {}, out)
    assert products[0].ifus == (1,)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("No lines with quality >= 1 found" in m for m in warned)


def test_error_message_parsing():
    assert error_message("00:05:33 [ ERROR ] muse_standard: [tid=000]   [65/84] 'Data not found' (10) "
                         "at cpl_column_get_mean:cpl_column.c:20966") \
        == "muse_standard: [65/84] 'Data not found' (10) at cpl_column_get_mean:cpl_column.c:20966"
    assert error_message("00:05:33 [ INFO  ] muse_bias: ERROR in the text") is None
    assert error_message("[ ERROR ] muse_bias: [tid=000] Dumping the 2 most recent error(s)") is None


def test_engine_settings(tmp_path):
    def load(recipes, **top):
        return settings_from_dict({"workdir": str(tmp_path), "recipes": recipes, **top}, base_dir=tmp_path)

    with pytest.raises(MuseredError, match=r"recipes\.muse_scipost\.engine: unknown engine 'esorex'"):
        load({"muse_scipost": {"engine": "esorex"}})
    with pytest.raises(MuseredError, match=r"recipes\.muse_std_combine\.engine: muse_std_combine has no ESO DRS"):
        load({"muse_std_combine": {"engine": "drs"}})
    with pytest.raises(MuseredError, match=r"recipes\.mpdaf_combine\.engine: mpdaf_combine has no ESO DRS"):
        load({"mpdaf_combine": {"engine": "drs"}})
    from recipes.registry import all_recipes

    registry = all_recipes()
    settings = load({"common": {"engine": "drs"}, "muse_bias": {"engine": "musered"}})
    assert settings.recipe_engine(registry["muse_bias"]) == "musered"      # the block wins
    assert settings.recipe_engine(registry["muse_scipost"]) == "drs"       # from common
    assert settings.recipe_engine(registry["muse_std_combine"]) == "musered"  # no DRS peer
    assert load({}).recipe_engine(registry["muse_scipost"]) == "musered"   # the default
    assert load({}).esorex == "esorex"
    assert load({}, esorex="~/cpl/bin/esorex").esorex == str(Path("~/cpl/bin/esorex").expanduser())
    assert load({}, esorex="bin/esorex").esorex == str(tmp_path / "bin" / "esorex")


@pytest.fixture
def bias_env(tmp_path, database):
    raw = tmp_path / "raw"
    raw.mkdir()
    with database.session() as session:
        for i in range(2):
            name = f"2017-06-16T10:00:{i:02d}.000"
            path = raw_bias(raw / f"MUSE.{name}.fits", (1, 2))
            session.add(Raw(path=str(path), filename=path.name, name=name, night="2017-06-16", DPR_TYPE="BIAS",
                            DATE_OBS=dt.datetime.fromisoformat(name), TPL_START="2017-06-16T10:00:00",
                            INS_MODE="WFM-NOAO-N", OBJECT="BIAS", header={}))
    return tmp_path, database


def test_runner_installs_and_records_drs_products(bias_env, fake_esorex, monkeypatch):
    from tests.test_runner import quiet, rows

    tmp_path, database = bias_env

    def settings(engine):
        return settings_from_dict({"workdir": str(tmp_path), "recipes": {"muse_bias": {"engine": engine}}},
                                  base_dir=tmp_path)

    console, out = quiet()
    dry = run_step(settings("drs"), database, BIAS, dry_run=True, console=console, progress=False)
    assert dry.count("dry-run") == 1 and "engine: drs (esorex " in out.getvalue()
    summary = run_step(settings("drs"), database, BIAS, console=console, progress=False)
    assert summary.ok and summary.count("ok") == 1, summary.failure_message()
    (row,) = rows(database, recipe_name="muse_bias")
    assert Path(row.path).name == "MASTER_BIAS.fits" and row.ifus == [1, 2]
    assert row.software["engine"] == "drs"
    assert row.software["esorex"] == "3.13.6" and row.software["drs"] == "muse/2.8.7"
    assert row.qc["CHAN02 QC BIAS MASTER1 MEDIAN"] == 2.0
    assert {f["path"] for f in row.frames["BIAS"]} == {str(p) for p in (tmp_path / "raw").glob("*.fits")}
    log = (Path(row.path).parent / "log.txt").read_text()
    assert "running esorex --log-level=off" in log and "Saving image as MASTER_BIAS" in log
    # the same engine: done; another engine: run again (by our recipe this time)
    assert run_step(settings("drs"), database, BIAS, console=console, progress=False).count("done") == 1
    assert len(runs(fake_esorex)) == 2
    again = run_step(settings("musered"), database, BIAS, console=console, progress=False)
    assert again.count("ok") == 1 and len(runs(fake_esorex)) == 2
    (row,) = rows(database, recipe_name="muse_bias")
    assert row.software["engine"] == "musered" and row.ifus == [1]
    # a DRS failure fails the target with the DRS's line, no folder, no new row
    monkeypatch.setenv("FAKE_ESOREX_MODE", "fail")
    failed = run_step(settings("drs"), database, BIAS, console=console, progress=False)
    assert "No valid raw tag(s) found!" in failed.failure_message()
    (row,) = rows(database, recipe_name="muse_bias")
    assert row.software["engine"] == "musered"


def test_runner_without_esorex_is_one_line_error(bias_env, monkeypatch):
    tmp_path, database = bias_env
    settings = settings_from_dict({"workdir": str(tmp_path), "esorex": "/nonexistent/esorex",
                                   "recipes": {"muse_bias": {"engine": "drs"}}}, base_dir=tmp_path)
    with pytest.raises(MuseredError, match="engine drs, but esorex '/nonexistent/esorex' is not found"):
        run_step(settings, database, BIAS, progress=False, report=False)


# ---------------------------------------------------------------- the real DRS, end to end



@pytest.fixture(scope="module")
def mixed_chain(tmp_path_factory):
    """The full-format 1-IFU night with one exposure: our bias, flat, wavecal, twilight,
    scibasic, standard and scipost; then muse_scipost again with engine drs. Returns the
    night folder, our DATACUBE_FINAL (a copy) and the two command outputs."""
    from click.testing import CliRunner

    from musered.cli import cli
    from musered.simulate.run import simulate

    night = tmp_path_factory.mktemp("drs_engine") / "night"
    simulate(night, profile="full", ifus=1, exposures=1)
    settings = night / "settings.yml"
    # no LSF_PROFILE is made (fewest steps): the DRS's default sky model needs one
    settings.write_text(settings.read_text().replace("      save: cube,individual\n",
                                                     "      save: cube,individual\n      skymethod: simple\n"))
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(night)
        for args in (["update-db"], ["process-calib", "--bias", "--flat", "--wavecal", "--twilight"],
                     ["process-exp", "--scibasic", "--standard", "--scipost"]):
            result = runner.invoke(cli, args)
            assert result.exit_code == 0, result.output
        (ours,) = (night / "reduced" / "0.1" / "scipost").glob("*/DATACUBE_FINAL.fits")
        ours_copy = night / "ours_DATACUBE_FINAL.fits"
        shutil.copy(ours, ours_copy)
        settings.write_text(settings.read_text().replace("  muse_scipost:\n", "  muse_scipost:\n    engine: drs\n"))
        dry = runner.invoke(cli, ["process-exp", "--scipost", "--dry-run"])
        drs = runner.invoke(cli, ["process-exp", "--scipost"])
    return night, ours_copy, dry, drs


@pytest.mark.drs
@pytest.mark.skipif(shutil.which("esorex") is None, reason="esorex not on PATH (apt-get install esorex cpl-plugin-muse)")
def test_drs_scipost_in_a_mixed_chain(mixed_chain):
    import sqlite3

    night, ours, dry, drs = mixed_chain
    assert dry.exit_code == 0 and "engine: drs (esorex " in dry.output, dry.output
    assert drs.exit_code == 0, drs.output
    (cube,) = (night / "reduced" / "0.1" / "scipost").glob("*/DATACUBE_FINAL.fits")
    assert fits.getval(cube, "ESO PRO REC2 ID") == "muse_scipost"  # the DRS's chain on our pixel table
    with sqlite3.connect(night / "musered.db") as db:
        (software,) = db.execute("select software from reduced where recipe_name='muse_scipost' "
                                 "and PRO_CATG='DATACUBE_FINAL' and path=?", (str(cube),)).fetchone()
    software = json.loads(software)
    assert software["engine"] == "drs" and software["drs"].startswith("muse/"), software
    assert "esorex.sof" in {p.name for p in cube.parent.iterdir()}
    a, b = fits.getdata(ours, "DATA"), fits.getdata(cube, "DATA")
    assert a.shape == b.shape
    white_a, white_b = np.nansum(a, axis=0), np.nansum(b, axis=0)
    good = np.isfinite(white_a) & np.isfinite(white_b) & (np.isfinite(a).sum(axis=0) > 0.8 * a.shape[0])
    bright = good & (white_a >= np.percentile(white_a[good], 95))
    ratio = np.median(white_b[bright] / white_a[bright])
    # measured 2026-12-08: 1.0003 over the 181 brightest spaxels (10-90 %: 0.998-1.002)
    assert ratio == pytest.approx(1.0, abs=0.03), ratio
