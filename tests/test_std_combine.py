"""musered std-combine: the combination of response curves (recipes.algorithms.curves), the
muse_std_combine recipe run through the runner (selection of runs and nights, what is
recorded and found again by association, redone only when its inputs change), and the command."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import select

from musered.commands.std_combine import std_combine
from musered.cli import cli
from musered.db import Reduced
from musered.errors import MuseredError
from musered.ingest import update_db
from musered.settings import settings_from_dict
from recipes.algorithms.curves import combine_curves
from recipes.algorithms.fluxcal import read_response, read_telluric, write_response, write_telluric

sys.path.insert(0, str(Path(__file__).parent))
from conftest import write_raw_fits  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")

SETTINGS = {
    "runs": {"GTO17": {"start_date": "2017-06-14", "end_date": "2017-06-18"},
             "GTO18": {"start_date": "2017-07-01", "end_date": "2017-07-05"}},
}
# standard-star exposures (name -> response offset [mag] of that night)
STDS = {"2017-06-14T23:30:00.000": 0.10, "2017-06-15T23:30:00.000": -0.05, "2017-06-16T23:30:00.000": 0.02,
        "2017-07-02T23:30:00.000": 0.30}
LAM = np.linspace(4150.0, 9800.0, 400)


def true_response(lam):
    return 20.0 + np.sin(lam / 700.0)


def true_telluric(lam):
    return np.where(np.abs(lam - 7640.0) < 60.0, 0.7, 1.0)


def add_standard_products(settings, database, names=STDS, mode="WFM-NOAO-N"):
    """STD_RESPONSE and STD_TELLURIC products of muse_standard for each standard exposure."""
    from astropy.io import fits

    now = dt.datetime(2024, 1, 1)
    with database.session() as session:
        for name, offset in names.items():
            folder = Path(settings.reduced_path) / "standard" / name
            folder.mkdir(parents=True, exist_ok=True)
            start = dt.datetime.fromisoformat(name)
            mjd = 40587.0 + (start - dt.datetime(1970, 1, 1)).total_seconds() / 86400.0
            header = fits.Header({"OBJECT": "GD153", "HIERARCH ESO INS MODE": mode, "DATE-OBS": name,
                                  "MJD-OBS": mjd})
            resp = write_response(folder / "STD_RESPONSE.fits", header, LAM, true_response(LAM) + offset,
                                  np.full(LAM.size, 0.02))
            tell = write_telluric(folder / "STD_TELLURIC.fits", header, LAM, true_telluric(LAM) ** (1 + offset),
                                  np.full(LAM.size, 0.01))
            night = name[:10]
            for tag, path in (("STD_RESPONSE", resp), ("STD_TELLURIC", tell)):
                session.add(Reduced(recipe_name="muse_standard", name=name, PRO_CATG=tag, path=str(path),
                                    night=night, INS_MODE=mode, OBJECT="GD153", version="0.1", date_run=now,
                                    output_dir="standard", status="ok"))


@pytest.fixture
def setup(tmp_path, database):
    settings = settings_from_dict({"workdir": str(tmp_path), **SETTINGS}, base_dir=tmp_path)
    for name in STDS:
        write_raw_fits(settings.raw_path / f"MUSE.{name}.fits", kind="STD")
    update_db(settings, database, progress=False)
    add_standard_products(settings, database)
    return settings, database


# --------------------------------------------------------------------------------------
# Combination


def test_median_and_mean_of_curves():
    lam = np.linspace(5000, 6000, 11)
    curves = [(lam, np.full(11, v), np.full(11, e)) for v, e in ((1.0, 0.1), (2.0, 0.1), (10.0, 0.2))]
    grid, value, error, scatter = combine_curves(curves, "median")
    assert np.array_equal(grid, lam)
    assert np.allclose(value, 2.0)
    assert np.allclose(error, 1.2533 * np.sqrt((0.01 + 0.01 + 0.04) / 3 / 3))
    assert np.allclose(scatter, 1.4826 * 1.0)
    _, value, error, _ = combine_curves(curves, "mean")
    w = np.array([100.0, 100.0, 25.0])
    assert np.allclose(value, (w * [1, 2, 10]).sum() / w.sum())
    assert np.allclose(error, 1 / np.sqrt(w.sum()))
    # zero errors: equal weights
    _, value, _, _ = combine_curves([(lam, np.full(11, 1.0), np.zeros(11)),
                                                (lam, np.full(11, 3.0), np.zeros(11))], "mean")
    assert np.allclose(value, 2.0)


def test_curves_on_other_grids_are_interpolated_on_the_common_range():
    a = np.linspace(4000, 9000, 501)
    b = np.linspace(4500, 9500, 51)
    grid, value, _, scatter = combine_curves([(a, a / 1000, a * 0), (b, b / 1000 + 0.2, b * 0)], "median")
    assert grid[0] == 4500 and grid[-1] == 9000 and grid.size == 451
    assert np.allclose(value, grid / 1000 + 0.1) and np.allclose(scatter, 1.4826 * 0.1)


@pytest.mark.parametrize("curves, method, message", [
    ([], "median", "nothing to combine"),
    ([(np.array([1.0, 2.0]), np.ones(2), np.ones(2)), (np.array([3.0, 4.0]), np.ones(2), np.ones(2))],
     "median", "share no wavelength range"),
    ([(np.array([1.0, 2.0]), np.ones(2), np.ones(2))], "sum", "unknown method 'sum'"),
])
def test_combine_errors(curves, method, message):
    with pytest.raises(ValueError, match=message):
        combine_curves(curves, method)


# --------------------------------------------------------------------------------------
# Selection, products, records


def combine(settings, database, selectors=(), **options):
    """std-combine without a terminal: {target name: TargetResult}."""
    from rich.console import Console

    summary = std_combine(settings, database, tuple(selectors), console=Console(quiet=True), **options)
    return {r.name: r for r in summary.results}


def test_run_is_combined_recorded_and_found_by_association(setup):
    from musered.calibfiles import custom_frames
    from musered.catalog import Catalog
    from musered.targets import Target

    settings, database = setup
    results = combine(settings, database, ["GTO17"])
    assert [(name, r.status) for name, r in results.items()] == [("GTO17", "ok")]
    folder = Path(settings.reduced_path) / "std_combine" / "GTO17"
    assert sorted(p.name for p in folder.iterdir()) == ["STD_RESPONSE.fits", "STD_TELLURIC.fits", "log.txt"]
    lam, resp, err = read_response(folder / "STD_RESPONSE.fits")
    assert np.allclose(lam, LAM) and np.allclose(resp, true_response(LAM) + 0.02)  # median of +0.10 -0.05 +0.02
    assert np.allclose(err, 1.2533 * 0.02 / np.sqrt(3))
    lam, tell, _ = read_telluric(folder / "STD_TELLURIC.fits")
    assert np.allclose(tell, true_telluric(LAM) ** 1.02) and tell.max() <= 1.0
    with database.session() as session:
        rows = session.scalars(select(Reduced).where(Reduced.recipe_name == "muse_std_combine")).all()
        qc = {r.PRO_CATG: r.qc for r in rows}
        assert sorted(qc) == ["STD_RESPONSE", "STD_TELLURIC"]
        row = rows[0]
        assert row.name == "GTO17" and row.night is None and row.INS_MODE == "WFM-NOAO-N" and row.status == "ok"
        assert len(row.frames["STD_RESPONSE"]) == 3 and all(f["md5"] for f in row.frames["STD_RESPONSE"])
        assert Path(row.log_path).is_file() and row.params == {"method": "median"}
    assert qc["STD_RESPONSE"]["QC STDCOMBINE NINPUT"] == 3 and qc["STD_RESPONSE"]["QC STDCOMBINE NNIGHT"] == 3
    assert qc["STD_RESPONSE"]["QC STDCOMBINE SCATTER MEDIAN"] == pytest.approx(1.4826 * 0.07)  # MAD of .08 .07 0
    assert qc["STD_TELLURIC"]["QC STDCOMBINE SCATTER MEDIAN"] == 0.0  # 1 outside the band
    assert "STD_RESPONSE: median of 3" in Path(row.log_path).read_text()
    from astropy.io import fits

    header = fits.getheader(folder / "STD_RESPONSE.fits")
    assert header["HIERARCH ESO PRO CATG"] == "STD_RESPONSE" and header["HIERARCH ESO QC STDCOMBINE NINPUT"] == 3
    assert header["HIERARCH ESO PRO REC1 ID"] == "muse_std_combine"

    # a science exposure of the run names the combined products in its frames block
    catalog = Catalog.from_database(database, settings)
    target = Target(kind="exposure", name="2017-06-16T01:00:00.000", output_dir="scipost",
                    folder=PurePosixPath("scipost"), night="2017-06-15", DATE_OBS=None, INS_MODE="WFM-NOAO-N",
                    TPL_START=None, OBJECT="NGC300")
    log: list[str] = []
    assert custom_frames("STD_RESPONSE", "GTO17", target, catalog, settings, log) == [folder / "STD_RESPONSE.fits"]

    from musered import report

    run = next(r for r in report.collect_runs(database) if r.recipe_name == "muse_std_combine")
    choice = report.choose_plot(run)
    assert choice.caption == "combined response curve (inputs in grey)"
    assert report.render_plot(run, Path(settings.reduced_path) / "plots")[1].read_bytes()[:4] == b"\x89PNG"


def test_unchanged_inputs_are_not_recombined_but_new_flags_are(setup):
    from musered.flags import add_flag

    settings, database = setup
    assert combine(settings, database, ["GTO17"])["GTO17"].status == "ok"
    again = combine(settings, database, ["GTO17"])["GTO17"]
    assert again.status == "done" and again.reason == "already done"
    assert combine(settings, database, ["GTO17"], force=True)["GTO17"].status == "ok"
    assert combine(settings, database, ["GTO17"], method="mean")["GTO17"].status == "ok"  # other parameters
    # a flagged standard is still combined (MuseRed's policy) ...
    add_flag(database, ["2017-06-14T23:30:00.000"], "BAD_CENTERING", settings=settings)
    kept = combine(settings, database, ["GTO17"], method="mean")["GTO17"]
    assert kept.status == "done" and kept.left_out == {}
    # ... and leaves it when the block says exclude_flags: the inputs changed, so it is redone
    settings = settings_from_dict({**settings.data, "recipes": {"muse_std_combine": {"exclude_flags": True}}},
                                  base_dir=settings.base_dir)
    result = combine(settings, database, ["GTO17"], method="median")["GTO17"]
    assert result.status == "ok" and result.qc["QC STDCOMBINE NINPUT"] == 2
    assert result.left_out == {"2017-06-14T23:30:00.000": "flagged (BAD_CENTERING)"}
    lam, resp, _ = read_response(Path(settings.reduced_path) / "std_combine" / "GTO17" / "STD_RESPONSE.fits")
    assert np.allclose(resp, true_response(LAM) + (0.02 - 0.05) / 2)
    with database.session() as session:
        assert session.query(Reduced).filter_by(recipe_name="muse_std_combine").count() == 2
    leftovers = [p.name for p in (Path(settings.reduced_path) / "std_combine").iterdir()]
    assert leftovers == ["GTO17"]


def test_nights_are_grouped_by_run_or_named(setup):
    settings, database = setup
    results = combine(settings, database, ["2017-06-15", "2017-07-02"])
    assert {name: r.status for name, r in results.items()} == {"GTO17": "ok", "GTO18": "ok"}
    for run, offset in (("GTO17", -0.05), ("GTO18", 0.30)):  # one night each: that night's curve
        _, resp, _ = read_response(Path(settings.reduced_path) / "std_combine" / run / "STD_RESPONSE.fits")
        assert np.allclose(resp, true_response(LAM) + offset)
    named = combine(settings, database, ["GTO17", "2017-07-02"], name="ALL", method="mean")
    assert list(named) == ["ALL"] and named["ALL"].qc["QC STDCOMBINE NINPUT"] == 4
    every = combine(settings, database, method="mean", force=True)
    assert [(name, r.status) for name, r in every.items()] == [("GTO17", "ok"), ("GTO18", "ok")]
    lam, resp, _ = read_response(Path(settings.reduced_path) / "std_combine" / "GTO18" / "STD_RESPONSE.fits")
    assert np.allclose(resp, true_response(LAM) + 0.30)


def test_dry_run_writes_nothing(setup):
    from io import StringIO

    from rich.console import Console

    settings, database = setup
    out = StringIO()
    summary = std_combine(settings, database, ("GTO17",), dry_run=True, console=Console(file=out, width=300))
    assert [r.status for r in summary.results] == ["dry-run"]
    assert out.getvalue().count("/standard/2017-06-1") == 6  # 3 STD_RESPONSE, 3 STD_TELLURIC
    assert not (Path(settings.reduced_path) / "std_combine").exists()


def test_selection_errors(setup, tmp_path):
    settings, database = setup
    with pytest.raises(MuseredError, match="'GTO99' is neither a run"):
        combine(settings, database, ["GTO99"])
    with pytest.raises(MuseredError, match="night 2017-08-01 is in no run"):
        combine(settings, database, ["2017-08-01"])
    add_standard_products(settings, database, {"2017-06-17T23:30:00.000": 0.0}, mode="WFM-AO-N")
    failed = combine(settings, database, ["GTO17"])["GTO17"]
    assert failed.status == "failed"
    assert "several instrument modes (WFM-AO-N, WFM-NOAO-N): choose one with --mode" in failed.reason
    ao = combine(settings, database, ["GTO17"], mode="WFM-AO-N")["GTO17"]
    assert ao.status == "ok" and ao.qc["QC STDCOMBINE NINPUT"] == 1
    skipped = combine(settings, database, ["2017-06-18"])["GTO17"]
    assert skipped.status == "excluded" and "no STD_RESPONSE/STD_TELLURIC products from muse_standard" in skipped.reason
    bare = settings_from_dict({"workdir": str(tmp_path)}, base_dir=tmp_path)
    with pytest.raises(MuseredError, match="no runs in the settings"):
        combine(bare, database)


def test_an_unreadable_input_fails_the_run_in_one_line(setup):
    settings, database = setup
    Path(settings.reduced_path, "standard", "2017-06-15T23:30:00.000", "STD_RESPONSE.fits").write_bytes(b"junk" * 100)
    failed = combine(settings, database, ["GTO17"])["GTO17"]
    assert failed.status == "failed" and "STD_RESPONSE.fits" in failed.reason and "\n" not in failed.reason
    assert not (Path(settings.reduced_path) / "std_combine" / "GTO17").exists()
    with database.session() as session:
        assert session.query(Reduced).filter_by(recipe_name="muse_std_combine").count() == 0


# --------------------------------------------------------------------------------------
# The command


@pytest.fixture
def settings_file(setup, tmp_path, monkeypatch):
    settings, database = setup
    # The command must open the database the fixture filled (SQLite or PostgreSQL).
    monkeypatch.setenv("MUSERED_TEST_STD_DB", database.url)
    path = tmp_path / "settings.yml"
    path.write_text(yaml.safe_dump({"workdir": str(tmp_path), **SETTINGS, "db_env": "MUSERED_TEST_STD_DB",
                                    "recipes": {"muse_std_combine": {"method": "mean"}}}))
    return path


def test_cli_std_combine(settings_file, setup):
    def run(*args):
        result = CliRunner().invoke(cli, ["--settings", str(settings_file), "std-combine", *args])
        assert "Traceback" not in result.output
        return result

    result = run("GTO17")
    assert result.exit_code == 0, result.output
    assert "GTO17: ok, STD_RESPONSE.fits, STD_TELLURIC.fits in std_combine/GTO17" in result.output
    product = Path(setup[0].reduced_path) / "std_combine" / "GTO17" / "STD_RESPONSE.fits"
    _, resp, _ = read_response(product)
    assert np.allclose(resp, true_response(LAM) + (0.10 - 0.05 + 0.02) / 3)  # the block's method: mean
    assert "GTO17: done" in run("GTO17").output
    assert "GTO17: ok" in run("GTO17", "--method", "median").output
    for args, message in ((["GTO99"], "'GTO99' is neither a run"),
                          (["2017-06-18"], "nothing combined: GTO17: no STD_RESPONSE"),
                          (["2017-06-14", "--mode", "NFM-AO-N"], "nothing combined: GTO17: no STD_RESPONSE"),
                          (["--params", "nope"], "no block recipes.nope")):
        result = run(*args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
