"""The Python API (musered.api) on MuseRed's example set, and docs/python-api.md as doctests.

Expected values come from MuseRed's own tests (tests/test_musered.py of musevlt/musered)
and from MuseRed's example database read independently (``musered_example.example_rows``).
"""

from __future__ import annotations

import datetime as dt
import doctest
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import musered_example

pytestmark = pytest.mark.skipif(not musered_example.available(),
                                reason="MuseRed's example set (../shared/data/musered-example) is not available")

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"
MODE = "WFM-AO-N"
# MuseRed's MASTER_BIAS sequences of the example (its reduced_0_1 records) and their nights.
MASTER_BIAS = {"2017-06-14T09:01:03": "2017-06-13", "2017-06-16T10:40:27": "2017-06-15",
               "2017-06-18T11:03:09": "2017-06-17", "2017-06-20T10:38:50": "2017-06-19"}


def example_settings_text() -> str:
    """MuseRed's settings with muse_calib_path in the folder (header-only static files)."""
    text = musered_example.EXAMPLE_SETTINGS.read_text()
    return text.replace("muse_calib_path: '~/lib/musedrs/muse-calib'", "muse_calib_path: '{workdir}/muse-calib'")


def make_example(folder: Path) -> Path:
    """The example folder with raw headers, static calibrations and an ingested database."""
    from musered.api import MuseRed

    settings = musered_example.example_folder(folder, settings_text=example_settings_text())
    musered_example.write_static_calib(folder / "muse-calib")
    MuseRed(settings).update_db()
    return folder


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    return make_example(tmp_path_factory.mktemp("example"))


@pytest.fixture
def folder(example, tmp_path, monkeypatch) -> Path:
    """A private copy of the example folder, as the current directory."""
    copy = tmp_path / "work"
    shutil.copytree(example, copy)
    monkeypatch.chdir(copy)
    return copy


@pytest.fixture
def mr(folder):
    from musered import MuseRed

    return MuseRed("settings.yml")


def add_products(mr, rows: list[dict], version: str = "0.1") -> None:
    """Product records (and their files, header only) as a recipe run would leave them."""
    from astropy.io import fits

    from musered.db import Reduced

    with mr.database.session() as session:
        for row in rows:
            path = Path(row["path"])
            path.parent.mkdir(parents=True, exist_ok=True)
            header = fits.Header()
            header["HIERARCH ESO PRO CATG"] = row["PRO_CATG"]
            fits.PrimaryHDU(header=header).writeto(path, overwrite=True)
            session.add(Reduced(version=version, date_run=dt.datetime(2024, 1, 1), INS_MODE=MODE, **row))


def master_bias_rows(folder: Path) -> list[dict]:
    return [dict(recipe_name="muse_bias", name=tpl, TPL_START=tpl, night=night, PRO_CATG="MASTER_BIAS",
                 path=str(folder / f"reduced/0.1/MASTER_BIAS/{tpl}.{MODE}/MASTER_BIAS-{ifu:02d}.fits"))
            for tpl, night in MASTER_BIAS.items() for ifu in (1, 2)]


def museredfile_rows(dpr_type: str) -> list[dict]:
    return [r for r in musered_example.example_rows("raw") if r["DPR_TYPE"] == dpr_type]


# ---------------------------------------------------------------- the package


def test_import_musered_stays_cheap_and_exports_museredclass():
    code = ("import sys, musered; print('musered.api' in sys.modules, 'sqlalchemy' in sys.modules); "
            "from musered import MuseRed; import musered.api; print(MuseRed is musered.api.MuseRed)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    assert out == ["False", "False", "True"]
    import musered

    with pytest.raises(AttributeError):
        musered.NotAThing  # noqa: B018


def test_settings_and_version_override(folder):
    from musered import MuseRed

    mr = MuseRed("settings.yml")
    assert (mr.version, mr.conf["version"], mr.reduced_path) == ("0.1", "0.1", folder / "reduced" / "0.1")
    assert list(mr.datasets) == ["IC4406"]
    other = MuseRed("settings.yml", version="0.2")
    assert (other.version, other.reduced_path) == ("0.2", folder / "reduced" / "0.2")


# ---------------------------------------------------------------- lists


def test_exposures_and_calibration_sequences_as_museredlists_them(mr):
    raw = musered_example.example_rows("raw")
    # MuseRed's settings exclude the night 2017-06-13 (raw block) and the BIAS 2017-06-14T09:01:03.
    def valid(r):
        return r["night"] != "2017-06-13" and not (r["DPR_TYPE"] == "BIAS" and r["TPL_START"] == "2017-06-14T09:01:03")

    assert mr.exposures == {"IC4406": sorted(r["name"] for r in raw if r["DPR_TYPE"] == "OBJECT" and valid(r))}
    assert len(mr.exposures["IC4406"]) == 6
    groups: dict[str, dict[str, bool]] = {}
    for r in raw:
        if r["DPR_TYPE"]:
            seqs = groups.setdefault(r["DPR_TYPE"], {})
            seqs[r["TPL_START"]] = seqs.get(r["TPL_START"], True) and valid(r)
    expected = {k: sorted(t for t, ok in v.items() if ok) for k, v in groups.items() if any(v.values())}
    assert mr.calib_exposures == expected
    assert "OBJECT" in mr.calib_exposures and "2017-06-14T09:01:03" not in mr.calib_exposures["BIAS"]


def test_nights_and_runs(mr):
    raw = musered_example.example_rows("raw")
    with_type = {r["night"] for r in raw if r["DPR_TYPE"]}
    assert with_type <= set(mr.nights) <= {r["night"] for r in raw}
    assert mr.nights == sorted(mr.nights) and "2017-06-13" in mr.nights  # excluded nights are listed
    assert mr.runs == ["GTO17"]


def test_select_dates_and_prepare_dates(mr, folder):
    # MuseRed's test_select_date
    assert mr.select_dates("FLAT,SKY") == ["2017-06-18T22:07:08.110", "2017-06-18T22:08:29.111",
                                           "2017-06-18T22:09:50.110", "2017-06-18T22:11:12.111"]
    add_products(mr, master_bias_rows(folder))
    assert mr.select_dates("MASTER_BIAS", table="reduced") == ["2017-06-16T10:40:27", "2017-06-18T11:03:09",
                                                                "2017-06-20T10:38:50"]
    assert mr.select_dates("MASTER_BIAS", table="reduced", column="night") == ["2017-06-15", "2017-06-17",
                                                                               "2017-06-19"]
    assert mr.prepare_dates("2017-06-16T01:4*", DPR_TYPE="OBJECT") == [
        "2017-06-16T01:40:40.868", "2017-06-16T01:43:32.868", "2017-06-16T01:46:25.866", "2017-06-16T01:49:19.866"]
    assert mr.prepare_dates("GTO17", DPR_TYPE="OBJECT") == mr.exposures["IC4406"]
    from musered.errors import MuseredError

    with pytest.raises(MuseredError, match="2017-07-01"):
        mr.prepare_dates("2017-07-01")


# ---------------------------------------------------------------- tables


def test_raw_table_queries_like_dataset(mr):
    raw = mr.raw
    assert len(raw) == raw.count() == (raw.count(DPR_TYPE="BIAS") + raw.count(DPR_TYPE={"!=": "BIAS"})
                                       + raw.count(DPR_TYPE=None))
    assert raw.count(DPR_TYPE="BIAS") == len(museredfile_rows("BIAS")) == 44
    names = [r["name"] for r in raw.find(DPR_TYPE="OBJECT", order_by="-name", _limit=2)]
    assert names == ["2017-06-16T01:49:19.866", "2017-06-16T01:46:25.866"]
    assert raw.count(DPR_TYPE=["FLAT,SKY", "STD"]) == 5
    long = raw.count(EXPTIME={">": 100})
    assert long == raw.count("EXPTIME > 100") == raw.count(mr.rawc.EXPTIME > 100) > 0
    assert raw.count(mr.rawc.EXPTIME > 20, DPR_TYPE="OBJECT") == 6  # clauses of mr.rawc combine
    assert raw.count(DATE_OBS={"between": ["2017-06-16T01:30", "2017-06-16T01:50"]}) == 6
    assert raw.count(DATE_OBS={"between": ["2017-06-16T01:20", "2017-06-16T02:00"]}) == 6 + 2  # + 2 ILLUM
    assert raw.count(name={"like": "2017-06-16T01:4%"}, DPR_TYPE="OBJECT") == 4
    assert raw.find_one(name="2017-06-16T01:34:56.867")["OBJECT"] == "IC4406"
    assert raw.find_one(name="no such exposure") is None
    assert raw.count(TPL_START=None) == sum(r["TPL_START"] is None for r in musered_example.example_rows("raw"))
    assert [row["DPR_TYPE"] for row in raw.distinct("DPR_TYPE")] == sorted(
        {r["DPR_TYPE"] for r in musered_example.example_rows("raw")}, key=lambda t: (t is not None, t))
    assert sum(1 for _ in raw) == len(raw.all()) == len(raw)


def test_table_errors_are_one_line_messages(mr):
    from musered.errors import MuseredError

    with pytest.raises(MuseredError, match="no column 'AIRMASS'.*columns: id"):
        mr.raw.count(AIRMASS=1.2)
    with pytest.raises(MuseredError, match="unknown operator 'around'"):
        mr.raw.count(EXPTIME={"around": 3})
    with pytest.raises(MuseredError, match="not an ISO date"):
        mr.raw.count(DATE_OBS="yesterday")
    with pytest.raises(MuseredError, match="unknown table 'qc_NOPE'"):
        mr.get_table("qc_NOPE")
    with pytest.raises(KeyError):
        mr.db["qc_NOPE"]
    assert mr.db.get("qc_NOPE") is None


def test_db_mapping_and_sql(mr):
    assert "raw" in mr.db and "reduced" in mr.db and "nope" not in mr.db
    assert mr.db["raw"].count() == mr.raw.count()
    rows = mr.db.query("SELECT DPR_TYPE, count(*) AS n FROM raw WHERE night = :night GROUP BY DPR_TYPE "
                       "ORDER BY DPR_TYPE", night="2017-06-17")
    assert rows == [{"DPR_TYPE": "BIAS", "n": 11}, {"DPR_TYPE": "FLAT,LAMP", "n": 11}, {"DPR_TYPE": "WAVE", "n": 15}]
    assert mr.select_column("DPR_TYPE", distinct=True) == sorted(
        {r["DPR_TYPE"] for r in musered_example.example_rows("raw")} - {None})
    # MuseRed's test_select_column
    assert len(mr.select_column("DPR_TYPE")) == 143 == mr.raw.count() - mr.raw.count(DPR_TYPE=None)
    assert len(mr.select_column("DPR_TYPE", distinct=True)) == 8


def test_reduced_is_this_version_with_museredcolumn_names(mr, folder):
    add_products(mr, master_bias_rows(folder))
    add_products(mr, master_bias_rows(folder)[:2], version="0.2")
    assert mr.reduced.count() == 8 and mr.get_table("reduced_0_2").count() == 2
    assert mr.reduced.count(DPR_TYPE="MASTER_BIAS") == mr.reduced.count(PRO_CATG="MASTER_BIAS") == 8
    assert mr.get_processed(recipe_name="muse_bias") == set(MASTER_BIAS)
    assert mr.get_processed(recipe_name="muse_bias", filter_names=["2017-06-16T10:40:27", "x"]) == {
        "2017-06-16T10:40:27"}
    assert mr.get_processed(table="qc_MASTER_BIAS") == set()  # no such table: nothing processed
    from musered import MuseRed

    assert MuseRed("settings.yml", version="0.2").reduced.count() == 2


def test_qc_tables_by_product_type(mr):
    from musered.qctables import write_qc_rows

    rows = [dict(name=tpl, version=version, recipe_name="muse_bias", filename="MASTER_BIAS.fits", hdu=f"CHAN{k:02d}",
                 QC_BIAS_MASTER_RON=2.5 + k) for tpl in MASTER_BIAS for version in ("0.1", "0.2") for k in (1, 2)]
    with mr.database.engine.begin() as conn:
        write_qc_rows(conn, "MASTER_BIAS", rows)
    assert list(mr.qc) == ["MASTER_BIAS"] and "MASTER_BIAS" in mr.qc and "MASTER_FLAT" not in mr.qc
    assert mr.qc["MASTER_BIAS"].count() == 8 and mr.db["qc_MASTER_BIAS"].count() == 16
    assert mr.qc["MASTER_BIAS"].count(QC_BIAS_MASTER_RON={">": 3}, hdu="CHAN02") == 4
    assert mr.get_processed(table="qc_MASTER_BIAS", version="0.1") == set(MASTER_BIAS)
    with pytest.raises(KeyError, match="no QC table for MASTER_FLAT .QC tables: MASTER_BIAS"):
        mr.qc["MASTER_FLAT"]


def test_update_qc_reads_the_products(mr, folder):
    from astropy.io import fits

    from musered.errors import MuseredError

    rows = master_bias_rows(folder)
    add_products(mr, rows)
    fits.setval(rows[2]["path"], "HIERARCH ESO QC BIAS MASTER RON", value=2.75)
    (report,) = mr.update_qc("MASTER_BIAS")
    assert (report.files_read, report.rows) == (8, {"MASTER_BIAS": 1})
    assert mr.qc["MASTER_BIAS"].find_one()["QC_BIAS_MASTER_RON"] == 2.75
    assert [r.files_skipped for r in mr.update_qc(recipe_name="muse_bias")] == [1]  # the file with QC
    with pytest.raises(MuseredError, match="no products of muse_flat"):
        mr.update_qc(recipe_name="muse_flat")


def test_get_files_selects_like_museredexp_combine(mr, folder):
    rows = [dict(recipe_name="muse_scipost", name=name, night="2017-06-15", OBJECT="IC4406",
                 PRO_CATG="PIXTABLE_REDUCED",
                 path=str(folder / f"reduced/0.1/scipost/{name}/PIXTABLE_REDUCED_0001_{k:02d}.fits"))
            for name in mr.exposures["IC4406"] for k in (1, 2)]
    add_products(mr, rows)
    add_products(mr, [dict(rows[0], path=rows[0]["path"].replace("_01.fits", "_09.fits"), status="missing")])
    first = mr.exposures["IC4406"][0]
    mr.flags.add(first, mr.flags.SHORT_EXPTIME)
    files = mr.get_files("PIXTABLE_REDUCED", OBJECT="IC4406", recipe_name="muse_scipost")
    assert len(files) == 12 and files == sorted(files)
    files, names = mr.get_files("PIXTABLE_REDUCED", first_only=True, exclude_flags=True, return_explist=True,
                                OBJECT="IC4406")
    assert names == mr.exposures["IC4406"][1:] and [Path(f).name for f in files] == [
        "PIXTABLE_REDUCED_0001_01.fits"] * 5
    _, names = mr.get_files("PIXTABLE_REDUCED", return_explist=True, OBJECT="IC4406",
                            select={"raw": "EXPTIME > 20 AND name < '2017-06-16T01:40'"})
    assert names == mr.exposures["IC4406"][:2]
    _, names = mr.get_files("PIXTABLE_REDUCED", return_explist=True, OBJECT="IC4406",
                            select={"raw": {"name": mr.exposures["IC4406"][-1]}})
    assert names == mr.exposures["IC4406"][-1:]
    assert mr.get_flagged(True) == mr.get_flagged(["SHORT_EXPTIME"]) == [first]
    assert mr.get_flagged(["BAD_SLICE"]) == []


def test_astropy_table(mr):
    table = mr.get_astropy_table("raw", indexes=["name"])
    assert len(table) == mr.raw.count()
    assert table.colnames[:3] == mr.raw.columns[:3]
    row = table.loc["2017-06-18T22:08:29.111"]
    assert row["DPR_TYPE"] == "FLAT,SKY" and row["DATE_OBS"].startswith("2017-06-18T22:08:29")
    assert table["EXPTIME"].dtype.kind == "f" and table["extra"].dtype.kind == "O"
    from musered.apitable import rows_to_table

    table = rows_to_table([{"a": 1, "b": None, "c": dt.datetime(2017, 6, 16, 1, 2, 3), "d": {"k": 1}},
                           {"a": None, "b": None, "c": None, "d": None}], ["a", "b", "c", "d"])
    assert list(table["a"].mask) == [False, True] and table["a"].dtype.kind == "i"
    assert table["b"].mask.all() and table["c"][0] == "2017-06-16T01:02:03" and table["d"][0] == {"k": 1}


# ---------------------------------------------------------------- frames and flags


def test_frames_find_calib_as_museredtest_frames(mr, folder):
    from musered.errors import MuseredError

    add_products(mr, master_bias_rows(folder))
    found = mr.frames.find_calib("2017-06-17", "MASTER_BIAS", MODE)
    assert len(found) == 2 and all(f"2017-06-18T11:03:09.{MODE}/MASTER_BIAS-0" in f for f in found)
    with pytest.raises(MuseredError, match="could not find MASTER_BIAS for night 2017-06-13.*excluded"):
        mr.frames.find_calib("2017-06-13", "MASTER_BIAS", MODE)
    with pytest.raises(MuseredError, match="could not find MASTER_BIAS for night 2017-06-18"):
        mr.frames.find_calib("2017-06-18", "MASTER_BIAS", MODE)
    found = mr.frames.find_calib("2017-06-18", "MASTER_BIAS", MODE, day_off=1)
    assert all("2017-06-20T10:38:50" in f for f in found)
    assert mr.frames.is_valid("2017-06-16T10:40:27")
    assert mr.frames.is_valid("2017-06-16T10:40:27", DPR_TYPE="MASTER_BIAS")
    assert not mr.frames.is_valid("2017-06-14T09:01:03")
    assert mr.frames.filter_valid(list(MASTER_BIAS), DPR_TYPE="MASTER_BIAS") == list(MASTER_BIAS)[1:]


def test_frames_get_static(mr, folder):
    from musered.errors import MuseredError

    assert mr.frames.get_static("STD_FLUX_TABLE") == str(folder / "muse-calib" / "std_flux_table.fits")
    assert mr.frames.get_static("GEOMETRY_TABLE", date="2017-06-16").endswith("geometry_table_wfm_gto17.fits")
    assert mr.frames.get_static("GEOMETRY_TABLE", date="2017-09-21").endswith("geometry_table_wfm_gto19.fits")
    assert mr.frames.static_by_catg["RAMAN_LINES"] == ["raman_lines.fits"]
    with pytest.raises(MuseredError, match="could not find a static SKY_FLAT_TABLE"):
        mr.frames.get_static("SKY_FLAT_TABLE")


def test_flags_as_museredtest_flags(mr):
    from musered.errors import MuseredError

    flags = mr.flags
    assert "MY_FLAG" in flags.names and set(flags.names) <= set(dir(flags))
    assert flags.BAD_CENTERING == "BAD_CENTERING"
    with pytest.raises(AttributeError):
        flags.NOT_A_FLAG  # noqa: B018
    a, b, c = "2017-06-16T01:34:56.867", "2017-06-16T01:40:40.868", "2017-06-16T01:43:32.868"
    assert flags.add(a, flags.BAD_SLICE, flags.SLICE_GRADIENT) == [a]
    assert flags.add([a, b, c], flags.SHORT_EXPTIME) == [a, b, c]
    assert flags.remove(c, flags.SHORT_EXPTIME) == 1
    with pytest.raises(TypeError):
        flags.add(b"2017-06-16T01:43:32.868", flags.SHORT_EXPTIME)
    with pytest.raises(MuseredError, match="nothing to remove"):
        flags.remove(c, flags.BAD_IMAQUALITY)
    assert flags.list(a) == ["BAD_SLICE", "SHORT_EXPTIME", "SLICE_GRADIENT"]
    assert flags.list([b, c]) == [["SHORT_EXPTIME"], []]
    assert flags.find(flags.SHORT_EXPTIME, flags.BAD_SLICE) == [a, b]
    assert flags.find(flags.SHORT_EXPTIME, flags.BAD_SLICE, _and=True) == [a]
    assert flags.find() == [a, b]
    assert repr(flags.as_table()).splitlines()[1:] == [
        "          name          BAD_SLICE SHORT_EXPTIME SLICE_GRADIENT",
        "         str23            int64       int64         int64     ",
        "----------------------- --------- ------------- --------------",
        "2017-06-16T01:34:56.867         1             1              1",
        "2017-06-16T01:40:40.868        --             1             --",
    ]


# ---------------------------------------------------------------- processing


def test_steps_by_museredname():
    from musered.apirun import chosen_recipes
    from musered.errors import MuseredError

    assert [r.name for r in chosen_recipes("process-exp", "standard")] == ["muse_scibasic", "muse_standard"]
    assert [r.name for r in chosen_recipes("process-calib", ["muse_flat", "bias"])] == ["muse_bias", "muse_flat"]
    assert "muse_dark" not in [r.name for r in chosen_recipes("process-calib", None)]
    with pytest.raises(MuseredError, match="unknown recipe 'superbias'"):
        chosen_recipes("process-calib", "superbias")


def test_process_calib_dry_run_shows_the_association(mr, capsys):
    mr.process_calib("bias", "2017-06-16*", dry_run=True)
    out = capsys.readouterr().out
    assert out.startswith(f"2017-06-16T10:40:27 (sequence, night 2017-06-15, {MODE}) -> MASTER_BIAS/")
    assert "BIAS: 11 file(s)" in out and "badpix_table.fits" in out
    assert not (Path(mr.reduced_path) / "MASTER_BIAS").exists()


def test_processing_errors_name_what_is_missing(mr, capsys):
    from musered.errors import MuseredError

    with pytest.raises(MuseredError, match="muse_scibasic: 1 target.*no MASTER_BIAS"):
        mr.process_exp("scibasic", "2017-06-16T01:34:56.867", dry_run=True)
    with pytest.raises(MuseredError, match="unknown dataset 'NGC1'"):
        mr.exp_align("NGC1", dry_run=True)
    with pytest.raises(MuseredError, match="dataset 'NGC1' is not in the settings"):
        mr.retrieve_data("NGC1", dry_run=True)
    with pytest.raises(MuseredError, match="exp-combine: .*--nope"):
        mr._run_command("exp-combine", ["IC4406", "--nope"])


def test_clean_and_copy_reduced(mr, folder):
    add_products(mr, master_bias_rows(folder), version="0.2")
    assert mr.clean().records == 0
    assert mr.copy_reduced("0.2", ["bias"], dry_run=True).records == 8 and mr.reduced.count() == 0
    assert mr.copy_reduced("0.2", ["muse_bias"], names=["2017-06-16T10:40:27"]).records == 2
    assert mr.reduced.count() == 2
    report = mr.clean(recipe_list="bias")
    assert (report.done, report.records) == (False, 2) and mr.reduced.count() == 2
    assert mr.clean("bias", force=True).records == 2 and mr.reduced.count() == 0


# ---------------------------------------------------------------- info


def test_info_methods_print_the_views_of_the_commands(mr, capsys):
    from musered.errors import MuseredError

    mr.info()
    out = capsys.readouterr().out
    assert out.startswith("Reduction version 0.1") and "IC4406" in out and "GTO17" in out
    mr.info(header=False, show_tables=["raw"])
    out = capsys.readouterr().out
    assert not out.startswith("Reduction") and "Raw files per night" in out and "Processed" not in out
    mr.list_nights()
    assert "2017-06-13" in capsys.readouterr().out
    mr.list_exposures()
    assert capsys.readouterr().out.count("IC4406") == 6
    mr.info_raw(night="2017-06-18", DPR_TYPE=["FLAT,SKY", "STD"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("MUSE.")]
    assert len(rows) == 5 and sum("FLAT,SKY" in line for line in rows) == 4 and "2017-06-15" not in out
    mr.info_warnings()
    mr.info_exp("2017-06-16T01:34:56.867")
    assert "no processed data in version 0.1" in capsys.readouterr().out
    with pytest.raises(MuseredError, match="mode must be list, summary or detail"):
        mr.info_warnings(mode="verbose")


# ---------------------------------------------------------------- the guide


def test_python_api_guide_runs_as_doctests(tmp_path, monkeypatch):
    # A MuseRed user's folder: settings, raw files, MuseRed's database and reduced tree.
    folder = tmp_path / "example"
    musered_example.example_folder(folder, with_musered_db=True, settings_text=example_settings_text())
    musered_example.write_static_calib(folder / "muse-calib")
    musered_example.write_example_reduced(folder)
    monkeypatch.chdir(folder)
    results = doctest.testfile(str(DOC), module_relative=False, globs={}, encoding="utf-8",
                               optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert results.attempted > 50
    assert results.failed == 0, "docs/python-api.md: see the doctest report above"
