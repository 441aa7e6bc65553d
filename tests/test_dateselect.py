"""The one selector of nights and exposures: MuseRed's prepare_dates on its example set."""

from __future__ import annotations

import datetime as dt
import fnmatch
from pathlib import Path

import pytest

import musered_example
from musered.dateselect import select_dates, selector_matches
from musered.db import Database
from musered.errors import MuseredError
from musered.settings.model import Run

pytestmark = pytest.mark.skipif(not musered_example.available(), reason="MuseRed example set not in ../shared")


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    from musered.ingest import update_db
    from musered.settings import load_settings

    settings = load_settings(musered_example.example_folder(tmp_path_factory.mktemp("example")))
    database = Database(settings.database_url())
    update_db(settings, database, progress=False)
    return settings, database


def musered_prepare_dates(dates, dpr_type=None, datecol="name"):
    """MuseRed's prepare_dates rules, applied to MuseRed's own raw table (its run column):
    a run, a night, a value of ``datecol``, or a glob on those values."""
    rows = [r for r in musered_example.example_rows("raw")
            if (dpr_type is None or r["DPR_TYPE"] == dpr_type) and r[datecol] is not None
            and r["night"] != "2017-06-13"]                   # frames.exclude.raw of its settings
    alldates = sorted({r[datecol] for r in rows})
    out = []
    for date in dates:
        if any(r["run"] == date for r in rows):
            out += sorted({r[datecol] for r in rows if r["run"] == date})
        elif any(r["night"] == date for r in rows):
            out += sorted({r[datecol] for r in rows if r["night"] == date})
        elif date in alldates:
            out.append(date)
        elif "*" in date:
            out += fnmatch.filter(alldates, date)
    return sorted(set(out))


@pytest.mark.parametrize("dates, dpr_type, column", [
    (["2017-06-15"], "OBJECT", "name"),                       # a night: its exposures
    (["GTO17"], "OBJECT", "name"),                            # a run
    (["2017-06-16T01:3*"], "OBJECT", "name"),                 # a glob on exposure names
    (["2017-06-16T01:34:56.867", "2017-06-16T01:49:19.866"], "OBJECT", "name"),
    (["GTO17"], "BIAS", "night"),                             # nights of a run (process-calib)
    (["2017-06-17"], "WAVE", "TPL_START"),                    # sequences of a night
    (["2017-06-1*"], "FLAT,LAMP", "TPL_START"),
])
def test_same_selection_as_museRed(example, dates, dpr_type, column):
    settings, database = example
    expected = musered_prepare_dates(dates, dpr_type, column)
    assert expected, "the case must select something"
    assert select_dates(settings, database, dates, column=column, dpr_types=[dpr_type]) == expected


def test_no_selector_means_every_value_and_excluded_files_are_left_out(example):
    settings, database = example
    nights = select_dates(settings, database, [], column="night", dpr_types=["BIAS"])
    assert nights == musered_prepare_dates(["GTO17"], "BIAS", "night") == ["2017-06-15", "2017-06-17", "2017-06-19"]
    with_excluded = select_dates(settings, database, [], column="night", dpr_types=["BIAS"], include_excluded=True)
    assert "2017-06-13" in with_excluded


def test_a_selector_picking_nothing_is_one_line_error(example):
    settings, database = example
    with pytest.raises(MuseredError, match=r"^--date 2017-06-16T09\*: no raw files \(OBJECT\) match it"):
        select_dates(settings, database, ["2017-06-15", "2017-06-16T09*"], dpr_types=["OBJECT"])
    with pytest.raises(MuseredError, match="^--night GTO19: no products of version 0.1"):
        select_dates(settings, database, ["GTO19"], column="night", table="reduced", option="--night")


def test_reduced_rows_of_the_settings_version_only(example):
    from musered.db.models import Reduced

    settings, database = example
    now = dt.datetime(2026, 1, 1)
    with database.session() as session:
        for version, name in (("0.1", "2017-06-16T01:34:56.867"), ("0.2", "2017-06-16T01:37:47.867")):
            session.add(Reduced(recipe_name="muse_scibasic", name=name, PRO_CATG="PIXTABLE_OBJECT",
                                path=f"/x/{version}/{name}/p.fits", night="2017-06-15", version=version,
                                date_run=now))
    try:
        assert select_dates(settings, database, ["2017-06-15"], table="reduced") == ["2017-06-16T01:34:56.867"]
        assert select_dates(settings, database, ["GTO17"], column="night", table="reduced") == ["2017-06-15"]
    finally:
        with database.session() as session:
            session.query(Reduced).delete()


def test_selector_matches_is_what_targets_use():
    from musered.targets import Target, target_matches

    runs = {"GTO17": Run("GTO17", dt.date(2017, 4, 1), dt.date(2017, 6, 30))}

    class FakeSettings:
        pass

    settings = FakeSettings()
    settings.runs = runs
    target = Target(kind="exposure", name="2017-06-16T01:34:56.867", output_dir="x", folder=Path("x"),
                    night="2017-06-15", DATE_OBS=None, INS_MODE=None, TPL_START="2017-06-16T01:34:55",
                    OBJECT="IC4406", inputs={}, members=())
    for selector in ("GTO17", "2017-06-15", "2017-06-16T01:34:56.867", "2017-06-16T01:3*", "IC4406",
                     "2017-06-16T01:34:55", "2017-06-1?"):
        assert target_matches(target, selector, settings) is True
        assert selector_matches(selector, [target.name, target.TPL_START, target.OBJECT], [target.night], runs)
    for selector in ("GTO19", "2017-06-16", "2017-06-16T02*", "ic4406"):
        assert target_matches(target, selector, settings) is False


def test_select_targets_ranks_names_before_other_values():
    from musered.targets import Target, select_targets

    class FakeSettings:
        runs = {"GTO17": Run("GTO17", dt.date(2017, 4, 1), dt.date(2017, 6, 30))}

    def target(name):
        return Target(kind="exposure", name=name, output_dir="x", folder=Path("x"), night="2017-06-15",
                      DATE_OBS=None, INS_MODE=None, TPL_START="2017-06-16T01:34:55", OBJECT="IC4406",
                      inputs={}, members=())

    targets = [target("2017-06-16T01:34:56.867"), target("2017-06-16T01:40:40.868")]
    picked = lambda *selection: [t.name[11:] for t in select_targets(targets, selection, FakeSettings())]  # noqa: E731
    assert picked("*T01:3*") == ["01:34:56.867"]                          # names first, as MuseRed
    assert picked("2017-06-16T01:34:55") == ["01:34:56.867", "01:40:40.868"]  # else the template
    assert picked("IC4406") == picked("GTO17") == picked("2017-06-15") == ["01:34:56.867", "01:40:40.868"]
    assert picked("*T01:4*", "*T01:3*") == ["01:34:56.867", "01:40:40.868"]
    assert picked("GTO19") == [] and picked("2017-06-1?") == ["01:34:56.867", "01:40:40.868"]
