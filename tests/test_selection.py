"""Exposure selection by database query (musered.selection): MuseRed's ``select`` and
``names_with_selection``, their settings shape, and the queries MuseRed users write,
checked against MuseRed's own example database."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest
import yaml

import musered_example
from conftest import write_raw_fits
from musered.errors import MuseredError
from musered.selection import ExposureSelection, describe, query_problem, selected_names

NAMES = [f"2017-06-16T01:{10 + 5 * i:02d}:00.000" for i in range(4)]
AIRMASS = [1.01, 1.05, 1.10, 1.30]


@pytest.fixture
def db(tmp_path):
    """Four OBJECT exposures of FIELD (airmass 1.01 ... 1.30) and one bias, ingested."""
    from musered.db import Database
    from musered.ingest import update_db
    from musered.settings import load_settings

    settings_path = tmp_path / "settings.yml"
    settings_path.write_text(yaml.safe_dump({"workdir": str(tmp_path), "datasets": {"FIELD": {}}}))
    for name, airmass in zip(NAMES, AIRMASS):
        write_raw_fits(tmp_path / "raw" / f"MUSE.{name}.fits", OBJECT="FIELD", TEL_AIRM_START=airmass)
    write_raw_fits(tmp_path / "raw" / "MUSE.2017-06-16T10:00:00.000.fits", "BIAS", TEL_AIRM_START=1.5)
    settings = load_settings(settings_path)
    database = Database(settings.database_url())
    update_db(settings, database, progress=False)
    return database


def test_sql_text_and_mappings_pick_names(db):
    assert selected_names(db, {"raw": '"TEL_AIRM_START" < 1.07'}, "0.1") == {NAMES[0], NAMES[1]}
    assert selected_names(db, {"raw": "TEL_AIRM_START BETWEEN 1.04 AND 1.2 AND OBJECT = 'FIELD'"}, "0.1") \
        == {NAMES[1], NAMES[2]}
    assert selected_names(db, {"raw": {"name": NAMES[3]}}, "0.1") == {NAMES[3]}
    assert selected_names(db, {"raw": {"name": NAMES[:2], "TEL_AIRM_START": {">": 1.02}}}, "0.1") == {NAMES[1]}
    assert selected_names(db, {"raw": {"DPR_TYPE": "BIAS"}}, "0.1") == {"2017-06-16T10:00:00.000"}
    assert selected_names(db, {"raw": {"night": dt.date(2017, 6, 15), "OBJECT": "FIELD"}}, "0.1") == set(NAMES)


def test_several_tables_are_a_union_and_versioned_tables_read_this_version(db):
    from musered.db.models import Flag, Reduced

    with db.session() as session:
        session.add(Flag(name=NAMES[2], flag="BAD_SLICE", comment="", date=dt.datetime(2026, 1, 1)))
        for version, name in (("0.1", NAMES[0]), ("0.2", NAMES[1])):
            session.add(Reduced(recipe_name="muse_scipost", name=name, PRO_CATG="PIXTABLE_REDUCED", path="x",
                                version=version, date_run=dt.datetime(2026, 1, 1)))
    with db.engine.begin() as conn:
        conn.exec_driver_sql('CREATE TABLE "qc_IMAGE_FOV" (id INTEGER PRIMARY KEY, name TEXT, version TEXT, '
                             '"QC_SCIPOST_FWHM_MEDIAN" FLOAT)')
        conn.exec_driver_sql(f"""INSERT INTO "qc_IMAGE_FOV" (name, version, "QC_SCIPOST_FWHM_MEDIAN") VALUES
                             ('{NAMES[3]}', '0.1', 0.6), ('{NAMES[0]}', '0.2', 0.5)""")
    assert selected_names(db, {"flags": "flag = 'BAD_SLICE'", "raw": {"name": NAMES[0]}}, "0.1") == {NAMES[0], NAMES[2]}
    assert selected_names(db, {"reduced": {"recipe_name": "muse_scipost"}}, "0.1") == {NAMES[0]}
    assert selected_names(db, {"reduced": {"recipe_name": "muse_scipost"}}, "0.2") == {NAMES[1]}
    assert selected_names(db, {"reduced_0_2": "recipe_name = 'muse_scipost'"}, "0.1") == {NAMES[1]}  # MuseRed's name
    assert selected_names(db, {"qc_IMAGE_FOV": '"QC_SCIPOST_FWHM_MEDIAN" < 0.8'}, "0.1") == {NAMES[3]}
    # the read-only guard is lifted afterwards: the pooled connection still writes
    with db.session() as session:
        session.add(Flag(name=NAMES[1], flag="BAD_SLICE", comment="", date=dt.datetime(2026, 1, 1)))
    assert selected_names(db, {"flags": "flag = 'BAD_SLICE'"}, "0.1") == {NAMES[1], NAMES[2]}


@pytest.mark.parametrize(("queries", "message"), [
    ({"raw": "NOPE < 1.07"}, "recipes.b.select.raw: 'NOPE < 1.07': no such column: NOPE"),
    ({"raw": '"TEL_AIRM_STRAT" < 1.07'}, 'recipes.b.select.raw: no column "TEL_AIRM_STRAT" in table raw'),
    ({"raw": "EXPTIME > 1; DROP TABLE raw"}, "recipes.b.select.raw: one SQL condition, without ';'"),
    ({"raw": "EXPTIME >"}, "recipes.b.select.raw: 'EXPTIME >': incomplete input"),
    ({"raw": {"AIRMASS": 1.0}}, "recipes.b.select.raw: table raw has no column 'AIRMASS'"),
    ({"raw": {"EXPTIME": {"~": 1}}}, "recipes.b.select.raw: unknown operator '~'"),
    ({"qa_raw": "x > 1"}, "recipes.b.select.qa_raw: no table 'qa_raw' in the database (tables with a name column:"),
    ({"weather_conditions": "night = '2017-06-15'"},
     "recipes.b.select.weather_conditions: table weather_conditions has no name column"),
    ({}, "recipes.b.select: must be a mapping"),
])
def test_mistakes_are_one_line_errors(db, queries, message):
    with pytest.raises(MuseredError) as err:
        selected_names(db, queries, "0.1", where="recipes.b.select")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_reason_names_the_query():
    selection = ExposureSelection("names_with_selection GTO26", {"raw": "run = 'GTO26'"}, frozenset({"a"}), "GTO26")
    assert selection.reason == "not selected by names_with_selection GTO26: raw: run = 'GTO26'"
    assert selection.picks("a") and not selection.picks("b")
    assert describe({"raw": {"OBS_NAME": "IC4406", "name": ["a", "b"]}, "flags": "flag = 'X'"}) == \
        "raw: OBS_NAME=IC4406, name=[a, b] or flags: flag = 'X'"
    assert ExposureSelection("names_with_selection all", None, None, "all").picks("anything")


def test_settings_check_the_shape_at_load(tmp_path):
    from musered.settings import settings_from_dict

    def block(**keys):
        return {"workdir": str(tmp_path), "recipes": {"combine_runs": keys}}

    select = {"raw": ' "TEL_AIRM_START" < 1.07 ', "flags": {"night": dt.date(2017, 6, 15)}}
    settings = settings_from_dict(block(select=select))
    assert settings.recipe_block("combine_runs")["select"] == {"raw": '"TEL_AIRM_START" < 1.07',
                                                                 "flags": {"night": "2017-06-15"}}
    settings = settings_from_dict(block(names_with_selection={"GTO26": {"raw": "run = 'GTO26'"}, "all": None}))
    assert settings.recipe_block("combine_runs")["names_with_selection"] == {"GTO26": {"raw": "run = 'GTO26'"},
                                                                               "all": None}
    for keys, message in [
        ({"select": "run = 'GTO26'"}, "recipes.combine_runs.select: must be a mapping"),
        ({"select": {"raw": "a; b"}}, "recipes.combine_runs.select.raw: one SQL condition, without ';'"),
        ({"select": {"raw": ["a"]}}, "recipes.combine_runs.select.raw: \"SQL condition\" or {column: value}"),
        ({"select": {"raw": {"EXPTIME": {"<": [[[1]]]}}}}, "recipes.combine_runs.select.raw.EXPTIME: a value"),
        ({"names_with_selection": {"a/b": {"raw": "x"}}}, "recipes.combine_runs.names_with_selection.a/b: an output"),
        ({"names_with_selection": {"A": "run = 'x'"}},
         "recipes.combine_runs.names_with_selection.A: must be a mapping"),
    ]:
        with pytest.raises(MuseredError) as err:
            settings_from_dict(block(**keys))
        assert message in str(err.value), (keys, str(err.value))
    with pytest.raises(MuseredError, match="recipes.common.select: belongs in a recipe block"):
        settings_from_dict({"workdir": str(tmp_path), "recipes": {"common": {"select": {"raw": "x > 1"}}}})


def test_query_problem_accepts_what_musered_users_write():
    assert query_problem({"raw": '"TEL_AIRM_START" < 1.07'}) is None
    assert query_problem({"qa_raw": '"PR_fwhmV" < 0.6'}) is None
    assert query_problem({"raw": {"OBS_NAME": "IC4406", "EXPTIME": {">=": 20, "<": 100}, "night": [1, 2]}}) is None
    assert query_problem({"raw": ""}) == ("raw", "an empty SQL condition")


# ---------------------------------------------------------------- MuseRed's example set

example = pytest.mark.skipif(not musered_example.available(),
                             reason="MuseRed's example set (../shared/data/musered-example) is not available")

# Queries as MuseRed users write them in settings (raw columns are MuseRed's).
MUSERED_QUERIES = [
    '"TEL_AIRM_START" < 1.063',
    "TEL_AIRM_START < 1.07 AND DPR_TYPE = 'OBJECT'",
    '"OCS_SGS_FWHM_MED" < 0.4',
    "INS_DROT_POSANG BETWEEN 100 AND 230",
    "run = 'GTO17' AND EXPTIME > 20",
    "OBS_NAME = 'IC4406' AND name < '2017-06-16T01:40'",
    "night = '2017-06-18'",
    "INS_TEMP7_VAL > 11.5 AND DPR_TYPE = 'FLAT,LAMP,ILLUM'",
]


@pytest.fixture(scope="module")
def example_db(tmp_path_factory):
    from musered.db import Database
    from musered.ingest import update_db
    from musered.settings import load_settings

    settings_path = musered_example.example_folder(tmp_path_factory.mktemp("example"))
    settings = load_settings(settings_path)
    database = Database(settings.database_url())
    update_db(settings, database, progress=False)
    return database


def musered_select(condition: str) -> set[str]:
    """``SELECT name FROM raw WHERE condition`` on MuseRed's own database, read-only."""
    connection = sqlite3.connect(f"file:{musered_example.EXAMPLE_DB}?mode=ro", uri=True)
    try:
        return {name for (name,) in connection.execute(f"SELECT name FROM raw WHERE {condition}")}
    finally:
        connection.close()


@example
@pytest.mark.parametrize("condition", MUSERED_QUERIES)
def test_musered_sql_selects_what_musered_selected(example_db, condition):
    expected = musered_select(condition)
    assert expected, condition  # each query picks something in MuseRed's database
    assert selected_names(example_db, {"raw": condition}, "0.1") == expected


@example
def test_musered_mappings_and_the_expected_exposures(example_db):
    rows = musered_example.example_rows("raw")
    assert selected_names(example_db, {"raw": {"OBS_NAME": "IC4406"}}, "0.1") == \
        {r["name"] for r in rows if r["OBS_NAME"] == "IC4406"}
    low = selected_names(example_db, {"raw": {"TEL_AIRM_START": {"<": 1.063}, "DPR_TYPE": "OBJECT"}}, "0.1")
    assert low == {"2017-06-16T01:34:56.867", "2017-06-16T01:37:47.867"}
    assert selected_names(example_db, {"raw": '"TEL_AIRM_START" < 1.07'}, "0.1") >= {
        r["name"] for r in rows if r["DPR_TYPE"] == "OBJECT"}  # every IC4406 exposure (airmass 1.062-1.065)
