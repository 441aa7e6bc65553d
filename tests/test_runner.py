"""The runner with tiny recipes defined here (not shipped): atomic install, provenance,
failures, skipping, dry-run, executors."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
from pathlib import Path

import pytest
from astropy.io import fits
from rich.console import Console
from sqlalchemy import select

from musered.db import Raw, Reduced
from musered.errors import MuseredError
from musered.executors import make_executor
from musered.runner import failure_message, run_step, run_steps
from musered.settings import settings_from_dict
from recipes.base import Calib, Param, Product, Recipe, RecipeError

MODE = "WFM-NOAO-N"


def _average(frames, params, outdir):
    """Average the TEST VAL keyword of the BIAS inputs; negative values are bad input,
    an average of zero crashes (1 / 0), as a buggy recipe would."""
    log = logging.getLogger("recipes.test_average")
    values = [fits.getval(p, "HIERARCH ESO TEST VAL") for p in frames["BIAS"]]
    log.info("averaging %d frames", len(values))
    for path, value in zip(frames["BIAS"], values):
        if value < 0:
            raise RecipeError(f"{Path(path).name}: negative TEST VAL {value}")
    mean = sum(values) / len(values)
    inverse = 1.0 / mean
    header = fits.Header()
    header["HIERARCH ESO PRO CATG"] = "MASTER_TEST"
    header["HIERARCH ESO TEST MEAN"] = mean * params["avgscale"]
    path = outdir / "MASTER_TEST.fits"
    fits.PrimaryHDU(header=header).writeto(path)
    return [Product(path, "MASTER_TEST", ifus=(1, 2), qc={"ESO QC MEAN": mean * params["avgscale"],
                                                          "ESO QC INV": inverse, "NFRAMES": len(values)})]


AVERAGE = Recipe(name="muse_average", inputs=("BIAS",), outputs=("MASTER_TEST",),
                 calibs=(Calib("MASTER_DARK", required=False, default_excluded=True),),
                 params=(Param("avgscale", float, 1.0, "factor applied to the mean"),), run=_average)


def _use_master(frames, params, outdir):
    (path := outdir / "sub" / "USED.fits").parent.mkdir()
    header = fits.Header()
    header["HIERARCH ESO TEST MASTER"] = str(frames["MASTER_TEST"][0])
    fits.PrimaryHDU(header=header).writeto(path)
    return [Product(Path("sub/USED.fits"), "PIXTABLE_OBJECT")]


USE_MASTER = Recipe(name="muse_use_master", inputs=("OBJECT",), outputs=("PIXTABLE_OBJECT",),
                    calibs=(Calib("MASTER_TEST"),), params=(), run=_use_master, group="exposure")


def _bad_contract(frames, params, outdir):
    return [Product(outdir / "never-written.fits", "MASTER_TEST")]


BAD_CONTRACT = Recipe(name="muse_average", inputs=("BIAS",), outputs=("MASTER_TEST",), calibs=(),
                      params=(Param("avgscale", float, 1.0, "factor"),), run=_bad_contract)


@pytest.fixture
def env(tmp_path, database):
    """Settings, a database, three BIAS sequences: TEST VAL (2, 4) -> mean 3 on 2017-06-16,
    (-1, 5) -> RecipeError on 2017-06-17, (0, 0) -> ZeroDivisionError on 2017-06-18; and two
    OBJECT exposures, on the nights 2017-06-16 and 2017-06-19."""
    settings = settings_from_dict({"workdir": str(tmp_path), "recipes": {
        "common": {"params": {"avgscale": 2.0}},
        "muse_average": {"params": {"avgscale": 3.0}},
        "muse_average_alt": {"params": {"avgscale": 10.0}, "init": {"output_dir": "alt"}},
    }}, base_dir=tmp_path)
    raw = tmp_path / "raw"
    raw.mkdir()
    with database.session() as session:
        for night, values in (("2017-06-16", (2.0, 4.0)), ("2017-06-17", (-1.0, 5.0)),
                              ("2017-06-18", (0.0, 0.0))):
            tpl = f"{night}T10:00:00"
            for i, value in enumerate(values):
                name = f"{night}T10:00:{i:02d}.000"
                session.add(_raw(raw, name, night, "BIAS", tpl, value))
        session.add(_raw(raw, "2017-06-17T01:00:00.000", "2017-06-16", "OBJECT", "2017-06-17T00:59:00", 1.0))
        session.add(_raw(raw, "2017-06-20T01:00:00.000", "2017-06-19", "OBJECT", "2017-06-20T00:59:00", 1.0))
    return settings, database, tmp_path


def _raw(folder: Path, name: str, night: str, dpr_type: str, tpl: str, value: float) -> Raw:
    path = folder / f"MUSE.{name}.fits"
    header = fits.Header()
    header["HIERARCH ESO TEST VAL"] = value
    fits.PrimaryHDU(header=header).writeto(path)
    return Raw(path=str(path), filename=path.name, name=name, night=night, DPR_TYPE=dpr_type,
               DATE_OBS=dt.datetime.fromisoformat(name), TPL_START=tpl, INS_MODE=MODE,
               OBJECT=dpr_type, header={})


def quiet() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=250, color_system=None), out


def rows(database, **where):
    with database.session() as session:
        query = select(Reduced)
        for key, value in where.items():
            query = query.where(getattr(Reduced, key) == value)
        return session.scalars(query.order_by(Reduced.name)).all()


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


def test_success_installs_folder_and_records_provenance(env):
    settings, database, tmp = env
    console, out = quiet()
    summary = run_step(settings, database, AVERAGE, ["2017-06-16"], progress=False, console=console)
    assert [(r.name, r.status) for r in summary.results] == [("2017-06-16T10:00:00", "ok")]
    folder = settings.reduced_path / "MASTER_TEST" / f"2017-06-16T10:00:00.{MODE}"
    assert sorted(p.name for p in folder.iterdir()) == ["MASTER_TEST.fits", "log.txt"]
    assert folder.stat().st_mode & 0o777 == folder.parent.stat().st_mode & 0o777  # not mkdtemp's 0700
    assert fits.getval(folder / "MASTER_TEST.fits", "HIERARCH ESO TEST MEAN") == 9.0  # 3 * block scale
    assert "averaging 2 frames" in (folder / "log.txt").read_text()
    assert leftovers(settings.reduced_path) == []
    (row,) = rows(database)
    assert (row.recipe_name, row.name, row.PRO_CATG, row.night, row.INS_MODE, row.TPL_START, row.status) == (
        "muse_average", "2017-06-16T10:00:00", "MASTER_TEST", "2017-06-16", MODE, "2017-06-16T10:00:00", "ok")
    assert row.path == str(folder / "MASTER_TEST.fits") and row.log_path == str(folder / "log.txt")
    assert row.DATE_OBS == dt.datetime(2017, 6, 16, 10, 0, 0)
    assert row.params == {"avgscale": 3.0} and row.qc["ESO QC MEAN"] == 9.0 and row.ifus == [1, 2]
    assert row.version == "0.1" and row.output_dir == "MASTER_TEST" and row.runtime >= 0
    assert set(row.software) >= {"musered", "recipes", "numpy"}
    inputs = row.frames["BIAS"]
    assert len(inputs) == 2
    for item in inputs:
        assert item["md5"] == hashlib.md5(Path(item["path"]).read_bytes()).hexdigest()
    text = out.getvalue()
    assert "2017-06-16T10:00:00" in text and "ESO QC MEAN=9" in text


def test_params_precedence_and_params_block(env):
    settings, database, tmp = env
    console, _ = quiet()
    run_step(settings, database, AVERAGE, ["2017-06-16"], cli_params={"avgscale": 5}, progress=False,
             console=console)
    assert rows(database)[0].params == {"avgscale": 5.0}
    summary = run_step(settings, database, AVERAGE, ["2017-06-16"], params_block="muse_average_alt",
                       progress=False, console=console)
    assert summary.recipe == "muse_average_alt" and summary.results[0].status == "ok"
    (alt,) = rows(database, recipe_name="muse_average_alt")
    assert alt.params == {"avgscale": 10.0} and "/alt/2017-06-16T10:00:00." in alt.path
    import dataclasses

    no_block = dataclasses.replace(AVERAGE, name="muse_average_noblock")
    run_step(settings, database, no_block, ["2017-06-16"], progress=False, console=console)
    assert rows(database, recipe_name="muse_average_noblock")[0].params == {"avgscale": 2.0}  # common
    with pytest.raises(MuseredError, match="no_such_block"):
        run_step(settings, database, AVERAGE, params_block="no_such_block", progress=False, console=console)
    with pytest.raises(MuseredError, match="avgscale"):
        run_step(settings, database, AVERAGE, cli_params={"avgscale": "big"}, progress=False, console=console)


def test_failures_leave_nothing_and_others_go_on(env):
    settings, database, tmp = env
    console, out = quiet()
    summary = run_step(settings, database, AVERAGE, progress=False, console=console)
    status = {r.name: r for r in summary.results}
    assert status["2017-06-16T10:00:00"].status == "ok"
    bad, crash = status["2017-06-17T10:00:00"], status["2017-06-18T10:00:00"]
    assert bad.status == "failed" and bad.reason == "MUSE.2017-06-17T10:00:00.000.fits: negative TEST VAL -1.0"
    assert crash.status == "failed" and crash.reason.startswith("ZeroDivisionError: float division by zero")
    assert "traceback in" in crash.reason
    assert "Traceback (most recent call last)" in crash.log_path.read_text()
    assert "_average" in crash.log_path.read_text()
    assert not summary.ok
    message = summary.failure_message()
    assert "2 target(s) failed" in message and "2017-06-17T10:00:00" in message and "ZeroDivisionError" in message
    folders = sorted(p.name for p in (settings.reduced_path / "MASTER_TEST").iterdir())
    assert folders == [f"2017-06-16T10:00:00.{MODE}"]
    assert [r.name for r in rows(database)] == ["2017-06-16T10:00:00"]
    assert leftovers(settings.reduced_path) == []


def test_contract_violation_is_a_failure(env):
    settings, database, tmp = env
    summary = run_step(settings, database, BAD_CONTRACT, ["2017-06-16"], progress=False, console=quiet()[0])
    assert summary.results[0].status == "failed"
    assert "never-written.fits, which it did not write" in summary.results[0].reason
    assert rows(database) == [] and leftovers(settings.reduced_path) == []


def test_done_targets_are_skipped_unless_force(env):
    settings, database, tmp = env
    console, _ = quiet()
    run_step(settings, database, AVERAGE, ["2017-06-16"], progress=False, console=console)
    (first,) = rows(database)
    again = run_step(settings, database, AVERAGE, ["2017-06-16"], progress=False, console=console)
    assert again.results[0].status == "done" and rows(database)[0].id == first.id
    forced = run_step(settings, database, AVERAGE, ["2017-06-16"], force=True, cli_params={"avgscale": 1},
                      progress=False, console=console)
    assert forced.results[0].status == "ok"
    (second,) = rows(database)
    assert second.id != first.id and second.params == {"avgscale": 1.0}
    assert fits.getval(second.path, "HIERARCH ESO TEST MEAN") == 3.0
    assert leftovers(settings.reduced_path) == []
    # a product deleted by hand: the target is no longer done
    Path(second.path).unlink()
    redo = run_step(settings, database, AVERAGE, ["2017-06-16"], progress=False, console=console)
    assert redo.results[0].status == "ok" and len(rows(database)) == 1


def test_failed_database_write_restores_the_previous_folder(env, monkeypatch):
    settings, database, tmp = env
    console, _ = quiet()
    run_step(settings, database, AVERAGE, ["2017-06-16"], progress=False, console=console)
    (row,) = rows(database)
    before = Path(row.path).read_bytes()

    class Broken:
        def session(self):
            raise RuntimeError("disk full")

    # the catalog is read through the real database, the install through the broken one
    import musered.runner as runner

    real_install = runner.install_products

    def install(settings_, database_, *args):
        return real_install(settings_, Broken(), *args)

    monkeypatch.setattr(runner, "install_products", install)
    summary = run_step(settings, database, AVERAGE, ["2017-06-16"], force=True, cli_params={"avgscale": 7},
                       progress=False, console=console)
    assert summary.results[0].status == "failed" and "disk full" in summary.results[0].reason
    assert Path(row.path).read_bytes() == before
    assert rows(database)[0].id == row.id and leftovers(settings.reduced_path) == []


def test_dry_run_prints_association_and_writes_nothing(env):
    settings, database, tmp = env
    console, out = quiet()
    summary = run_step(settings, database, AVERAGE, ["2017-06-1*"], dry_run=True, console=console)
    assert {r.status for r in summary.results} == {"dry-run"} and len(summary.results) == 3
    text = out.getvalue()
    assert f"2017-06-16T10:00:00 (sequence, night 2017-06-16, {MODE}) -> MASTER_TEST/2017-06-16T10:00:00.{MODE}" in text
    assert "BIAS: 2 file(s)" in text and "MUSE.2017-06-16T10:00:01.000.fits" in text
    assert "params (muse_average): avgscale=3.0" in text
    assert rows(database) == [] and not settings.reduced_path.exists()


def test_missing_calibration_fails_one_exposure_with_searched_nights(env):
    settings, database, tmp = env
    console, out = quiet()
    run_step(settings, database, AVERAGE, ["2017-06-16"], progress=False, console=console)
    summary = run_step(settings, database, USE_MASTER, progress=False, console=console)
    status = {r.name: r for r in summary.results}
    ok = status["2017-06-17T01:00:00.000"]
    assert ok.status == "ok"
    used = Path(rows(database, recipe_name="muse_use_master")[0].path)
    assert used.parts[-3:] == ("2017-06-17T01:00:00.000", "sub", "USED.fits")
    assert used.parts[-4] == "use_master"
    assert "MASTER_TEST/2017-06-16T10:00:00" in fits.getval(used, "HIERARCH ESO TEST MASTER")
    missing = status["2017-06-20T01:00:00.000"]
    assert missing.status == "failed"
    assert "no MASTER_TEST" in missing.reason and "night 2017-06-19" in missing.reason
    assert "2017-06-20 (+1), 2017-06-18 (-1)" in missing.reason
    again = run_step(settings, database, USE_MASTER, ["2017-06-17T01:00:00.000"], progress=False,
                     console=console)
    assert [r.status for r in again.results] == ["done"]  # product in a subfolder counts


def test_selection_typo_is_an_error_and_excluded_targets_are_reported(env):
    settings, database, tmp = env
    with pytest.raises(MuseredError, match="nothing matches '2071-06-16'"):
        run_step(settings, database, AVERAGE, ["2071-06-16"], progress=False, console=quiet()[0])
    with database.session() as session:
        for raw in session.scalars(select(Raw).where(Raw.night == "2017-06-17")):
            raw.excluded = True
    console, out = quiet()
    summary = run_step(settings, database, AVERAGE, ["2017-06-17"], progress=False, console=console)
    assert [(r.name, r.status) for r in summary.results] == [("2017-06-17T10:00:00", "excluded")]
    assert summary.ok and "nothing" not in out.getvalue()


def test_process_pool_with_two_jobs(env):
    settings, database, tmp = env
    console, _ = quiet()
    summary = run_step(settings, database, AVERAGE, jobs=2, progress=False, console=console)
    assert sorted(r.status for r in summary.results) == ["failed", "failed", "ok"]
    (row,) = rows(database)
    assert "averaging 2 frames" in Path(row.log_path).read_text()
    assert leftovers(settings.reduced_path) == []


def test_dask_local_cluster_shared_between_steps(env):
    settings, database, tmp = env
    console, _ = quiet()
    with make_executor({"kind": "dask", "processes": False}, jobs=2) as executor:
        first = run_step(settings, database, AVERAGE, executor=executor, progress=False, console=console)
        second = run_step(settings, database, USE_MASTER, ["2017-06-17T01:00:00.000"], executor=executor,
                          progress=False, console=console)
    assert sorted(r.status for r in first.results) == ["failed", "failed", "ok"]
    assert [r.status for r in second.results] == ["ok"]
    assert len(rows(database)) == 2 and leftovers(settings.reduced_path) == []


def test_too_few_inputs_and_deleted_raw_file_fail_before_running(env):
    import dataclasses

    settings, database, tmp = env
    console, out = quiet()
    needs_three = dataclasses.replace(AVERAGE, min_inputs=3)
    summary = run_step(settings, database, needs_three, ["2017-06-16"], progress=False, console=console)
    assert summary.results[0].reason == "muse_average needs at least 3 BIAS frame(s), found 2"
    (tmp / "raw" / "MUSE.2017-06-16T10:00:01.000.fits").unlink()
    summary = run_step(settings, database, AVERAGE, ["2017-06-16", "2017-06-17"], progress=False,
                       console=console)
    status = {r.name: r for r in summary.results}
    assert status["2017-06-16T10:00:00"].status == "failed"
    assert "MUSE.2017-06-16T10:00:01.000.fits does not exist" in status["2017-06-16T10:00:00"].reason
    assert "negative TEST VAL" in status["2017-06-17T10:00:00"].reason  # the other target ran
    assert rows(database) == [] and not (settings.reduced_path / "MASTER_TEST").exists() or \
        list((settings.reduced_path / "MASTER_TEST").iterdir()) == []


def test_run_steps_share_an_executor_and_go_on_after_failures(env):
    settings, database, tmp = env
    console, _ = quiet()
    summaries = run_steps(settings, database, [AVERAGE, USE_MASTER], jobs=2, progress=False, console=console)
    assert [s.recipe for s in summaries] == ["muse_average", "muse_use_master"]
    assert sorted(r.status for r in summaries[1].results) == ["failed", "ok"]  # saw step one's product
    message = failure_message(summaries)
    assert message.count("target(s) failed") == 2 and "no MASTER_TEST" in message
    assert failure_message(summaries[:0]) is None


def test_main_qc_of_the_summary_table():
    from musered.runner import main_qc

    qc = {"CHAN01 QC BIAS INPUT1 NSATURATED": 0, "CHAN01 QC BIAS MASTER1 RON": 2.5,
          "CHAN02 QC BIAS MASTER1 RON": 2.7, "CHAN01 QC BIAS MASTER1 MEDIAN": 0.01, "NAME": "x"}
    assert main_qc(qc, (("RON", "CHAN?? QC BIAS MASTER? RON"), ("NONE", "NOPE*"))) == {"RON": "2.6 (mean of 2)"}
    assert list(main_qc(qc)) == ["CHAN01 QC BIAS MASTER1 RON", "CHAN02 QC BIAS MASTER1 RON",
                                 "CHAN01 QC BIAS MASTER1 MEDIAN"]
