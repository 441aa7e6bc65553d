"""Association and target discovery on hand-made catalogs (no recipe runs)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import pytest
from astropy.io import fits

from musered.association import associate, night_order
from musered.calibfiles import StaticFolder
from musered.db.models import Flag, Raw, Reduced
from musered.errors import MuseredError
from musered.settings import settings_from_dict
from musered.catalog import Catalog, ProductFrame, raw_frame
from musered.targets import check_selection, discover_targets, select_targets
from recipes import calibs
from recipes.base import Calib, Product, Recipe

MODE = "WFM-NOAO-N"
NIGHT = "2017-06-16"


def _run(frames, params, outdir):  # never called: association only
    return [Product(outdir / "x.fits", "PIXTABLE_OBJECT")]


def calib(tag: str, required: bool = True) -> Calib:
    """The declared policy of a tag (recipes.calibs), required or not as the test says."""
    return replace(getattr(calibs, tag, Calib(tag)), required=required)


def exposure_recipe(*calibs: Calib, inputs=("OBJECT",)) -> Recipe:
    return Recipe(name="muse_test", inputs=inputs, calibs=calibs, outputs=("PIXTABLE_OBJECT",),
                  params=(), run=_run, group="exposure")


def sequence_recipe(*calibs: Calib) -> Recipe:
    return Recipe(name="muse_seq", inputs=("FLAT",), calibs=calibs, outputs=("MASTER_FLAT",),
                  params=(), run=_run, group="sequence")


def settings(tmp_path, **data):
    data.setdefault("workdir", str(tmp_path))
    return settings_from_dict(data, base_dir=tmp_path)


def at(night: str, hour: float) -> dt.datetime:
    """A UT time `hour` hours after noon of the night's date (hour 12 -> midnight)."""
    return dt.datetime.fromisoformat(night) + dt.timedelta(hours=12 + hour)


def obj(name="2017-06-17T01:00:00.000", night=NIGHT, hour=13.0, mode=MODE, **kw):
    return raw_frame(path=f"/raw/MUSE.{name}.fits", name=name, night=night, DATE_OBS=at(night, hour),
                     DPR_TYPE=kw.pop("DPR_TYPE", "OBJECT"), TPL_START=kw.pop("TPL_START", name[:19]),
                     INS_MODE=mode, OBJECT=kw.pop("OBJECT", "IC4406"), **kw)


RED = {"root": Path("/nonexistent")}


@pytest.fixture(autouse=True)
def reduced_root(tmp_path):
    RED["root"] = tmp_path / "reduced"
    yield RED["root"]


def product(tag, night, name=None, mode=MODE, hour=-1.0, recipe="muse_x", output_dir=None,
            write=True, **kw):
    """A reduced row (and an empty file at its path unless ``write`` is False)."""
    name = name or f"{night}T10:00:00"
    path = RED["root"] / tag / f"{name}.{mode}" / f"{tag}.fits"
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return ProductFrame(path=path, recipe_name=recipe,
                        name=name, PRO_CATG=tag, night=night, DATE_OBS=at(night, hour), INS_MODE=mode,
                        OBJECT=kw.get("OBJECT"), TPL_START=name, output_dir=output_dir or tag,
                        date_run=kw.get("date_run", dt.datetime(2020, 1, 1)))


def associate_one(tmp_path, recipe, raws, products, st=None, flags=None):
    st = st or settings(tmp_path)
    catalog = Catalog.build(raws, products, flags, st)
    targets, skipped = discover_targets(recipe, catalog, st, st.recipe_block(recipe.name))
    assert len(targets) == 1, (targets, skipped)
    return associate(recipe, targets[0], catalog, st, st.recipe_block(recipe.name))


def test_night_order_nearest_first_next_before_previous():
    assert [k for k, _ in night_order(NIGHT, 2)] == [0, 1, -1, 2, -2]
    assert night_order(NIGHT, 1)[1][1] == "2017-06-17"


def test_same_night_wins_over_neighbours(tmp_path):
    recipe = exposure_recipe(calib("MASTER_BIAS"))
    products = [product("MASTER_BIAS", "2017-06-17"), product("MASTER_BIAS", NIGHT),
                product("MASTER_BIAS", "2017-06-15")]
    result = associate_one(tmp_path, recipe, [obj()], products)
    assert result.frames["MASTER_BIAS"] == [products[1].path]
    assert result.frames["OBJECT"] == [Path("/raw/MUSE.2017-06-17T01:00:00.000.fits")]
    assert any("night offset +0" in line for line in result.log["MASTER_BIAS"])


def test_next_night_before_previous_night(tmp_path):
    recipe = exposure_recipe(calib("MASTER_BIAS"))
    products = [product("MASTER_BIAS", "2017-06-15"), product("MASTER_BIAS", "2017-06-17")]
    result = associate_one(tmp_path, recipe, [obj()], products)
    assert result.frames["MASTER_BIAS"] == [products[1].path]


def test_offsets_limit_default_and_configured(tmp_path):
    recipe = exposure_recipe(calib("MASTER_BIAS"), calib("STD_RESPONSE"))
    products = [product("MASTER_BIAS", "2017-06-14"), product("MASTER_BIAS", "2017-06-19"),
                product("STD_RESPONSE", "2017-06-12")]
    # default offset 1 for MASTER_BIAS: -2 is out of reach
    with pytest.raises(MuseredError) as err:
        associate_one(tmp_path, recipe, [obj()], products)
    message = str(err.value)
    assert "no MASTER_BIAS" in message and "night 2017-06-16" in message
    assert "2017-06-17 (+1)" in message and "2017-06-15 (-1)" in message
    assert "2017-06-14" not in message
    # frames.offsets: the nearest within reach, -2 before +3; STD_RESPONSE default 5 reaches -4
    st = settings(tmp_path, recipes={"muse_test": {"frames": {"offsets": {"MASTER_BIAS": 3}}}})
    result = associate_one(tmp_path, recipe, [obj()], products, st)
    assert result.frames["MASTER_BIAS"] == [products[0].path]
    assert result.frames["STD_RESPONSE"] == [products[2].path]
    assert any("offset -4" in line for line in result.log["STD_RESPONSE"])


def test_ins_mode_matching_for_flats_not_for_bias(tmp_path):
    recipe = exposure_recipe(calib("MASTER_BIAS"), calib("MASTER_FLAT"))
    products = [product("MASTER_BIAS", NIGHT, mode="WFM-AO-N"),
                product("MASTER_FLAT", NIGHT, mode="WFM-AO-N"),
                product("MASTER_FLAT", "2017-06-17", mode=MODE)]
    result = associate_one(tmp_path, recipe, [obj()], products)
    assert result.frames["MASTER_BIAS"] == [products[0].path]  # bias: any mode
    assert result.frames["MASTER_FLAT"] == [products[2].path]
    assert any("rejected" in line and "INS_MODE WFM-AO-N, need WFM-NOAO-N" in line
               for line in result.log["MASTER_FLAT"])


def test_several_candidates_closest_in_time_and_logged(tmp_path):
    recipe = exposure_recipe(calib("MASTER_BIAS"))
    far = product("MASTER_BIAS", NIGHT, name="2017-06-16T08:00:00", hour=-4)
    near = product("MASTER_BIAS", NIGHT, name="2017-06-17T08:00:00", hour=20)
    result = associate_one(tmp_path, recipe, [obj(hour=16)], [far, near])
    assert result.frames["MASTER_BIAS"] == [near.path]
    line = [x for x in result.log["MASTER_BIAS"] if x.startswith("reduced:")][0]
    assert "closest in time among 2" in line and "2017-06-16T08:00:00" in line


def test_product_set_with_several_files_is_returned_whole(tmp_path):
    recipe = exposure_recipe(calib("MASTER_BIAS"))
    one = product("MASTER_BIAS", NIGHT)
    two = ProductFrame(**{**one.__dict__, "path": one.path.with_name("MASTER_BIAS-02.fits")})
    two.path.touch()
    result = associate_one(tmp_path, recipe, [obj()], [two, one])
    assert result.frames["MASTER_BIAS"] == sorted([one.path, two.path])


def test_product_whose_file_disappeared_is_rejected(tmp_path):
    recipe = exposure_recipe(calib("MASTER_BIAS"))
    gone = product("MASTER_BIAS", NIGHT, write=False)
    there = product("MASTER_BIAS", "2017-06-15")
    result = associate_one(tmp_path, recipe, [obj()], [gone, there])
    assert result.frames["MASTER_BIAS"] == [there.path]
    assert any("is missing" in line for line in result.log["MASTER_BIAS"])


def test_global_product_exclusion_by_name(tmp_path):
    recipe = exposure_recipe(calib("MASTER_BIAS"))
    bad = product("MASTER_BIAS", NIGHT, name="2017-06-16T10:00:00")
    good = product("MASTER_BIAS", "2017-06-17", name="2017-06-17T10:00:00")
    st = settings(tmp_path, frames={"exclude": {"MASTER_BIAS": ["2017-06-16T10:00:00"]}})
    result = associate_one(tmp_path, recipe, [obj()], [bad, good], st)
    assert result.frames["MASTER_BIAS"] == [good.path]
    assert any("excluded by frames.exclude.MASTER_BIAS" in line for line in result.log["MASTER_BIAS"])


def test_products_of_excluded_raw_files_are_rejected(tmp_path):
    recipe = exposure_recipe(calib("MASTER_FLAT"))
    flats = [flat("2017-06-16T10:00:01", "2017-06-16T10:00:00"),
             flat("2017-06-16T10:00:30", "2017-06-16T10:00:00", hour=-1.9)]
    made = product("MASTER_FLAT", NIGHT, name="2017-06-16T10:00:00")
    other = product("MASTER_FLAT", "2017-06-17", name="2017-06-17T10:00:00")
    st = settings(tmp_path, frames={"exclude": {"FLAT": ["2017-06-16T10:00:00"]}})
    result = associate_one(tmp_path, recipe, [obj(), *flats], [made, other], st)
    assert result.frames["MASTER_FLAT"] == [other.path]
    assert any("made from excluded raw files" in line for line in result.log["MASTER_FLAT"])
    # one raw file of the sequence still usable: the product stays usable
    st = settings(tmp_path, frames={"exclude": {"raw": [{"name": "2017-06-16T10:00:01"}]}})
    result = associate_one(tmp_path, recipe, [obj(), *flats], [made, other], st)
    assert result.frames["MASTER_FLAT"] == [made.path]


def flat(name, tpl, night=NIGHT, mode=MODE, hour=-2.0, **kw):
    return raw_frame(path=f"/raw/MUSE.{name}.fits", name=name, night=night, DATE_OBS=at(night, hour),
                     DPR_TYPE="FLAT,LAMP", TPL_START=tpl, INS_MODE=mode, OBJECT="FLAT,LAMP", **kw)


def test_sequences_grouped_by_tpl_start_and_mode(tmp_path):
    st = settings(tmp_path)
    raws = [flat("2017-06-16T10:00:01", "2017-06-16T10:00:00"),
            flat("2017-06-16T10:00:30", "2017-06-16T10:00:00", hour=-1.9),
            flat("2017-06-16T11:00:01", "2017-06-16T11:00:00", mode="WFM-AO-N", hour=-1),
            obj()]
    recipe = sequence_recipe()
    targets, skipped = discover_targets(recipe, Catalog.build(raws, [], {}, st), st, {})
    assert [t.name for t in targets] == ["2017-06-16T10:00:00", "2017-06-16T11:00:00"]
    assert str(targets[0].folder) == "MASTER_FLAT/2017-06-16T10:00:00.WFM-NOAO-N"
    assert len(targets[0].inputs["FLAT"]) == 2 and targets[1].INS_MODE == "WFM-AO-N"
    st2 = settings(tmp_path, recipes={"muse_seq": {"init": {"output_dir": "flats"}}})
    targets, _ = discover_targets(recipe, Catalog.build(raws, [], {}, st2), st2, st2.recipe_block("muse_seq"))
    assert str(targets[1].folder) == "flats/2017-06-16T11:00:00.WFM-AO-N"


def test_exclusions_by_night_name_tpl_start_column_and_flags(tmp_path):
    raws = [
        obj("2017-06-15T01:00:00.000", night="2017-06-14"),
        obj("2017-06-17T01:00:00.000"),
        obj("2017-06-18T01:00:00.000", night="2017-06-17", TPL_START="2017-06-18T00:50:00"),
        obj("2017-06-19T01:00:00.000", night="2017-06-18", extra={"OBS_OBSERVER": "bob"}),
        obj("2017-06-20T01:00:00.000", night="2017-06-19", excluded=True),
        obj("2017-06-21T01:00:00.000", night="2017-06-20"),
        obj("2017-06-22T01:00:00.000", night="2017-06-21"),
    ]
    st = settings(tmp_path, additional_keywords=["ESO OBS OBSERVER"], frames={"exclude": {
        "raw": [{"night": "2017-06-14"}, {"name": "2017-06-17T01:00:00.000"},
                {"OBS_OBSERVER": ["alice", "bob"]}],
        "OBJECT": ["2017-06-18T00:50:00"]}})
    catalog = Catalog.build(raws, [], {"2017-06-21T01:00:00.000": ["BAD_SEEING"]}, st, exclude_flags=True)
    targets, skipped = discover_targets(exposure_recipe(), catalog, st, {})
    assert [t.name for t in targets] == ["2017-06-22T01:00:00.000"]
    reasons = {s.name: s.reason for s in skipped}
    assert "frames.exclude.raw: {'night': '2017-06-14'}" in reasons["2017-06-15T01:00:00.000"]
    assert "name" in reasons["2017-06-17T01:00:00.000"]
    assert "frames.exclude.OBJECT" in reasons["2017-06-18T01:00:00.000"]
    assert "OBS_OBSERVER" in reasons["2017-06-19T01:00:00.000"]
    assert "database" in reasons["2017-06-20T01:00:00.000"]
    assert "BAD_SEEING" in reasons["2017-06-21T01:00:00.000"]
    # without exclude_flags (MuseRed's default) the flagged exposure is processed
    catalog = Catalog.build(raws, [], {"2017-06-21T01:00:00.000": ["BAD_SEEING"]}, st)
    targets, _ = discover_targets(exposure_recipe(), catalog, st, {})
    assert "2017-06-21T01:00:00.000" in [t.name for t in targets]


def test_excluded_raw_files_leave_a_sequence(tmp_path):
    raws = [flat("2017-06-16T10:00:01", "2017-06-16T10:00:00"),
            flat("2017-06-16T10:00:30", "2017-06-16T10:00:00", hour=-1.9),
            flat("2017-06-16T11:00:01", "2017-06-16T11:00:00", hour=-1)]
    st = settings(tmp_path, frames={"exclude": {"raw": [{"name": "2017-06-16T10:00:30"}],
                                                "FLAT": ["2017-06-16T11:00:00"]}})
    targets, skipped = discover_targets(sequence_recipe(), Catalog.build(raws, [], {}, st), st, {})
    assert [t.name for t in targets] == ["2017-06-16T10:00:00"]
    assert targets[0].inputs["FLAT"] == [Path("/raw/MUSE.2017-06-16T10:00:01.fits")]
    assert any("not used" in line for line in targets[0].log)
    assert skipped[0].name == "2017-06-16T11:00:00" and "frames.exclude.FLAT" in skipped[0].reason


def write_static(path: Path, catg: str, mode: str | None = None) -> Path:
    header = fits.Header()
    header["HIERARCH ESO PRO CATG"] = catg
    if mode:
        header["HIERARCH ESO INS MODE"] = mode
    fits.PrimaryHDU(header=header).writeto(path)
    return path


def test_static_calib_validity_then_calib_path_then_archive(tmp_path):
    folder = tmp_path / "calib"
    folder.mkdir()
    old = write_static(tmp_path / "geo_old.fits", "GEOMETRY_TABLE")
    new = write_static(tmp_path / "geo_new.fits", "GEOMETRY_TABLE")
    default = write_static(folder / "geometry_table_wfm.fits", "GEOMETRY_TABLE")
    write_static(folder / "geometry_table_nfm.fits", "GEOMETRY_TABLE")
    astro_nfm = write_static(folder / "astrometry_a.fits", "ASTROMETRY_WCS", "NFM-AO-N")
    astro_wfm = write_static(folder / "astrometry_b.fits", "ASTROMETRY_WCS", MODE)
    (folder / "notes.txt").write_text("not a FITS file")
    st = settings(tmp_path, muse_calib_path=str(folder), static_calib={"GEOMETRY_TABLE": {
        str(old): {"start_date": "2017-01-01", "end_date": "2017-06-10"},
        str(new): {"start_date": "2017-06-11", "end_date": "2017-06-30"}}})
    recipe = exposure_recipe(calib("GEOMETRY_TABLE"), calib("ASTROMETRY_WCS"), calib("BADPIX_TABLE"))
    archive = raw_frame(path="/raw/M.MUSE.2017-06-01T00:00:00.000.fits", name="M.MUSE.2017",
                        night="2017-06-01", PRO_CATG="BADPIX_TABLE")
    archive_far = raw_frame(path="/raw/M.MUSE.2016-01-01T00:00:00.000.fits", name="M.MUSE.2016",
                            night="2016-01-01", PRO_CATG="BADPIX_TABLE")
    result = associate_one(tmp_path, recipe, [obj(), archive_far, archive], [], st)
    assert result.frames["GEOMETRY_TABLE"] == [new]
    assert result.frames["ASTROMETRY_WCS"] == [astro_wfm]      # header INS MODE matches
    assert result.frames["BADPIX_TABLE"] == [archive.path]     # closest archive product
    # outside every validity range: the muse_calib_path file of the mode family (wfm)
    result = associate_one(tmp_path, recipe, [obj("2018-01-02T01:00:00.000", night="2018-01-01"),
                                              archive], [], st)
    assert result.frames["GEOMETRY_TABLE"] == [default]
    assert any("no file valid on night 2018-01-01" in line for line in result.log["GEOMETRY_TABLE"])
    nfm = associate_one(tmp_path, recipe, [obj(mode="NFM-AO-N"), archive], [], st)
    assert nfm.frames["ASTROMETRY_WCS"] == [astro_nfm]
    assert nfm.frames["GEOMETRY_TABLE"] == [new]


def test_static_folder_cache_follows_changes(tmp_path):
    write_static(tmp_path / "a.fits", "LINE_CATALOG")
    first = StaticFolder.of(tmp_path)
    assert StaticFolder.of(tmp_path) is first
    write_static(tmp_path / "b.fits", "FILTER_LIST")
    import os
    os.utime(tmp_path, ns=(first.folder.stat().st_mtime_ns + 10**9,) * 2)
    assert "FILTER_LIST" in StaticFolder.of(tmp_path).by_catg


def test_custom_frames_file_glob_folder_validity_and_named_product(tmp_path):
    folder = tmp_path / "bias"
    folder.mkdir()
    a = write_static(folder / "MASTER_BIAS-01.fits", "MASTER_BIAS")
    b = write_static(folder / "MASTER_BIAS-02.fits", "MASTER_BIAS")
    flats = tmp_path / "flats"
    flats.mkdir()
    f = write_static(flats / "anything.fits", "MASTER_FLAT")
    resp17 = write_static(tmp_path / "resp17.fits", "STD_RESPONSE")
    resp18 = write_static(tmp_path / "resp18.fits", "STD_RESPONSE")
    wcs = write_static(tmp_path / "wcs.fits", "OUTPUT_WCS")
    recipe = exposure_recipe(calib("MASTER_BIAS"), calib("MASTER_FLAT"), calib("STD_RESPONSE"),
                             calib("TRACE_TABLE"), calib("OUTPUT_WCS"), calib("OFFSET_LIST"),
                             calib("TWILIGHT_CUBE"))
    offsets = product("OFFSET_LIST", NIGHT, name="OFFSET_LIST_drs", recipe="muse_exp_align",
                      OBJECT="IC4406")
    st = settings(tmp_path, recipes={"muse_test": {"frames": {
        "MASTER_BIAS": str(folder),                       # folder: files named MASTER_BIAS*
        "MASTER_FLAT": str(flats),                        # folder: by PRO.CATG
        "TRACE_TABLE": str(tmp_path / "bias" / "*-02.fits"),  # glob
        "STD_RESPONSE": {"resp17.fits": {"start_date": "2017-01-01", "end_date": "2017-12-31"},
                         "resp18.fits": {"start_date": "2018-01-01"}},   # relative to base_dir
        "OUTPUT_WCS": "wcs.fits",
        "OFFSET_LIST": "drs",                             # product named OFFSET_LIST_drs
        "TWILIGHT_CUBE": {"twi.fits": {"end_date": "2016-01-01"}},  # not valid: database
    }}})
    twilight = product("TWILIGHT_CUBE", NIGHT)
    result = associate_one(tmp_path, recipe, [obj()], [offsets, twilight], st)
    assert result.frames["MASTER_BIAS"] == [a, b]
    assert result.frames["MASTER_FLAT"] == [f]
    assert result.frames["TRACE_TABLE"] == [b]
    assert result.frames["STD_RESPONSE"] == [resp17]
    assert result.frames["OUTPUT_WCS"] == [wcs]
    assert result.frames["OFFSET_LIST"] == [offsets.path]
    assert result.frames["TWILIGHT_CUBE"] == [twilight.path]
    assert resp18.exists()
    # a dataset-named product ({OBJECT}_{name}) is found by the short name too
    by_dataset = product("OFFSET_LIST", NIGHT, name="IC4406_imphot", recipe="muse_exp_align", OBJECT="IC4406")
    st.recipes["muse_test"]["frames"]["OFFSET_LIST"] = "imphot"
    result = associate_one(tmp_path, recipe, [obj()], [offsets, twilight, by_dataset], st)
    assert result.frames["OFFSET_LIST"] == [by_dataset.path]


def test_special_frames_only_from_settings_and_missing_file_is_an_error(tmp_path):
    recipe = exposure_recipe(calib("OUTPUT_WCS", required=False))
    wcs = product("OUTPUT_WCS", NIGHT)  # present in reduced, but special tags are not searched
    result = associate_one(tmp_path, recipe, [obj()], [wcs])
    assert "OUTPUT_WCS" not in result.frames
    assert any("only taken from" in line for line in result.log["OUTPUT_WCS"])
    st = settings(tmp_path, recipes={"muse_test": {"frames": {"OUTPUT_WCS": "missing/wcs.fits"}}})
    with pytest.raises(MuseredError, match="frames.OUTPUT_WCS: file .*missing/wcs.fits does not exist"):
        associate_one(tmp_path, recipe, [obj()], [], st)
    st = settings(tmp_path, recipes={"muse_test": {"frames": {"OUTPUT_WCS": "OUTPUT_WCS_nope"}}})
    with pytest.raises(MuseredError, match="neither a file nor a OUTPUT_WCS product"):
        associate_one(tmp_path, recipe, [obj()], [], st)


def test_default_excluded_include_and_exclude(tmp_path):
    recipe = exposure_recipe(calib("MASTER_BIAS"), calib("MASTER_DARK", required=False),
                             calib("NONLINEARITY_GAIN", required=False))
    products = [product("MASTER_BIAS", NIGHT), product("MASTER_DARK", NIGHT)]
    result = associate_one(tmp_path, recipe, [obj()], products)
    assert set(result.frames) == {"OBJECT", "MASTER_BIAS"}
    st = settings(tmp_path, recipes={"muse_test": {"frames": {"include": ["MASTER_DARK"],
                                                              "exclude": "MASTER_BIAS"}}})
    result = associate_one(tmp_path, recipe, [obj()], products, st)
    assert set(result.frames) == {"OBJECT", "MASTER_DARK"}
    assert "NONLINEARITY_GAIN" not in result.log


def test_missing_required_tag_error_lists_what_was_searched(tmp_path):
    recipe = exposure_recipe(calib("MASTER_FLAT"))
    wrong_mode = product("MASTER_FLAT", "2017-06-17", mode="NFM-AO-N")
    with pytest.raises(MuseredError) as err:
        associate_one(tmp_path, recipe, [obj()], [wrong_mode])
    message = str(err.value)
    assert "\n" not in message
    for part in ("no MASTER_FLAT for muse_test 2017-06-17T01:00:00.000", "night 2017-06-16",
                 "2017-06-16 (+0), 2017-06-17 (+1), 2017-06-15 (-1)",
                 "rejected MASTER_FLAT 2017-06-17T10:00:00", "INS_MODE NFM-AO-N, need WFM-NOAO-N",
                 "static_calib.MASTER_FLAT not set", "muse_calib_path not set"):
        assert part in message, part


def test_every_missing_required_tag_is_named(tmp_path):
    recipe = exposure_recipe(calib("MASTER_BIAS"), calib("TRACE_TABLE"), calib("WAVECAL_TABLE"))
    with pytest.raises(MuseredError) as err:
        associate_one(tmp_path, recipe, [obj()], [product("TRACE_TABLE", NIGHT)])
    message = str(err.value)
    assert "no MASTER_BIAS" in message and "no WAVECAL_TABLE" in message and "no TRACE_TABLE" not in message


def test_optional_tag_not_found_is_logged(tmp_path):
    result = associate_one(tmp_path, exposure_recipe(calib("SKY_LINES", required=False)), [obj()], [])
    assert "SKY_LINES" not in result.frames
    assert result.log["SKY_LINES"][-1] == "optional, not found: not used"


def illum(name, hour, temp, night=NIGHT, mode=MODE):
    return raw_frame(path=f"/raw/MUSE.{name}.fits", name=name, night=night, DATE_OBS=at(night, hour),
                     DPR_TYPE="FLAT,LAMP,ILLUM", TPL_START=name, INS_MODE=mode, INS_TEMP7_VAL=temp)


def test_illum_closest_temperature_within_two_hours_whatever_the_mode(tmp_path):
    """MuseRed's find_illum: the exposure's night, within 2 h the closest in INS TEMP7, and
    any INS_MODE (attached ILLUMs are WFM-NOAO-N even for AO science)."""
    recipe = exposure_recipe(calib("ILLUM", required=False))
    exposure = obj(hour=13.0, mode="WFM-AO-N", INS_TEMP7_VAL=10.0)
    near_time = illum("i1", 13.1, 10.5)
    near_temp = illum("i2", 14.5, 10.1)
    too_late = illum("i3", 15.5, 10.0)
    other_night = illum("i5", 13.0, 10.0, night="2017-06-17")
    excluded = replace(illum("i6", 13.0, 10.0), excluded="flagged (BAD)")
    result = associate_one(tmp_path, recipe, [exposure, near_time, near_temp, too_late, other_night, excluded], [])
    assert result.frames["ILLUM"] == [near_temp.path]
    log = " | ".join(result.log["ILLUM"])
    assert "closest in temperature of 2 within 2 h" in log and "ΔT 0.10 K" in log
    assert "rejected ILLUM MUSE.i6.fits: flagged (BAD)" in log


def test_illum_none_within_two_hours_the_closest_in_time_unless_too_warm(tmp_path):
    recipe = exposure_recipe(calib("ILLUM", required=False))
    exposure = obj(hour=13.0, INS_TEMP7_VAL=10.0)
    early, late = illum("i1", 9.0, 10.9), illum("i2", 18.0, 10.0)
    result = associate_one(tmp_path, recipe, [exposure, early, late], [])
    assert result.frames["ILLUM"] == [early.path]  # 4 h away beats 5 h, ΔT 0.9 K is accepted
    assert "none within 2 h: the closest in time of 2" in result.log["ILLUM"][-1]
    warm = illum("i1", 9.0, 11.2)  # MuseRed: "ILLUM with Temp difference > 1°, not using it"
    result = associate_one(tmp_path, recipe, [exposure, warm, late], [])
    assert "ILLUM" not in result.frames
    assert any("temperature differs by more than 1 K" in line for line in result.log["ILLUM"])


def test_illum_of_a_sequence_is_chosen_from_its_mean_time_and_temperature(tmp_path):
    """A twilight sequence: the reference is the mean of its frames (MuseRed averages
    INS TEMP7 and MJD-OBS), not its first frame."""
    recipe = Recipe(name="muse_seq", inputs=("SKYFLAT",), calibs=(calibs.ILLUM,), outputs=("TWILIGHT_CUBE",),
                    params=(), run=_run, group="sequence")
    frames = [obj(f"2017-06-17T01:0{i}:00.000", hour=13.0 + i, DPR_TYPE="FLAT,SKY", TPL_START="2017-06-17T01:00:00",
                  INS_TEMP7_VAL=10.0 + i) for i in range(3)]  # mean: hour 14, 11.0 K
    by_first = illum("i1", 13.0, 10.0)        # ideal for the first frame, 1 h / 1 K from the mean
    by_mean = illum("i2", 15.5, 11.0)         # 1.5 h from the mean, same temperature
    result = associate_one(tmp_path, recipe, frames + [by_first, by_mean], [])
    assert result.frames["ILLUM"] == [by_mean.path]


def test_raman_lines_only_for_ao_modes(tmp_path):
    static = tmp_path / "calib"
    static.mkdir()
    raman = write_static(static / "raman_lines.fits", "RAMAN_LINES")
    st = settings(tmp_path, muse_calib_path=str(static))
    recipe = exposure_recipe(calibs.RAMAN_LINES)
    ao = associate_one(tmp_path, recipe, [obj(mode="WFM-AO-N")], [], st)
    assert ao.frames["RAMAN_LINES"] == [raman]
    noao = associate_one(tmp_path, recipe, [obj(mode="WFM-NOAO-N")], [], st)
    assert "RAMAN_LINES" not in noao.frames
    assert noao.log["RAMAN_LINES"] == ["only used for INS_MODE *-AO-*, not WFM-NOAO-N"]
    # a block can still drop it (MuseRed's muse_scipost_rec: frames.exclude: [RAMAN_LINES])
    st = settings(tmp_path, muse_calib_path=str(static),
                  recipes={"muse_test": {"frames": {"exclude": ["RAMAN_LINES"]}}})
    assert "RAMAN_LINES" not in associate_one(tmp_path, recipe, [obj(mode="WFM-AO-N")], [], st).frames


def test_a_frames_only_tag_needs_no_include(tmp_path):
    """AUTOCAL_FACTORS, like MuseRed's SPECIAL_FRAMES, is used as soon as the block names it."""
    factors = tmp_path / "autocal.fits"
    fits.PrimaryHDU().writeto(factors)
    st = settings(tmp_path, recipes={"muse_test": {"frames": {"AUTOCAL_FACTORS": str(factors)}}})
    result = associate_one(tmp_path, exposure_recipe(calibs.AUTOCAL_FACTORS), [obj()], [], st)
    assert result.frames["AUTOCAL_FACTORS"] == [factors]


def test_exposures_from_products_and_selection(tmp_path):
    st = settings(tmp_path, runs={"P99": {"start_date": "2017-06-15", "end_date": "2017-06-16"}},
                  recipes={"muse_post": {"from_recipe": "muse_scibasic"}})
    recipe = Recipe(name="muse_post", inputs=("PIXTABLE_OBJECT",), calibs=(), outputs=("DATACUBE_FINAL",),
                    params=(), run=_run, group="exposure")
    pix = [product("PIXTABLE_OBJECT", n, name=f"{n}T23:00:00.000", recipe="muse_scibasic",
                   output_dir="scibasic", OBJECT="IC4406") for n in ("2017-06-16", "2017-06-17")]
    other = product("PIXTABLE_OBJECT", "2017-06-17", name="2017-06-17T23:00:00.000",
                    recipe="muse_scibasic_test", output_dir="x")
    catalog = Catalog.build([], pix + [other], {}, st)
    targets, _ = discover_targets(recipe, catalog, st, st.recipe_block("muse_post"))
    assert [str(t.folder) for t in targets] == ["post/2017-06-16T23:00:00.000", "post/2017-06-17T23:00:00.000"]
    assert targets[1].inputs == {"PIXTABLE_OBJECT": [pix[1].path]}
    assert [t.name for t in select_targets(targets, ["P99"], st)] == ["2017-06-16T23:00:00.000"]
    assert len(select_targets(targets, ["2017-06-1*"], st)) == 2
    assert len(select_targets(targets, ["2017-06-17"], st)) == 1
    assert len(select_targets(targets, None, st)) == 2
    check_selection(["P99", "2017-06-17", "IC4406"], catalog, st)
    with pytest.raises(MuseredError, match="nothing matches '2017-13-01'"):
        check_selection(["2017-13-01"], catalog, st)


def test_dataset_targets(tmp_path):
    st = settings(tmp_path, datasets={"IC4406": {}}, recipes={"muse_comb": {"from_recipe": "muse_scipost"}})
    recipe = Recipe(name="muse_comb", inputs=("PIXTABLE_REDUCED",), calibs=(), outputs=("DATACUBE_FINAL",),
                    params=(), run=_run, group="dataset", command="exp-combine")
    pix = [product("PIXTABLE_REDUCED", n, name=f"{n}T23:00:00.000", recipe="muse_scipost",
                   OBJECT="IC4406") for n in ("2017-06-16", "2017-06-17")]
    flagged = raw_frame(path="/raw/x.fits", name="2017-06-17T23:00:00.000", night="2017-06-17", DPR_TYPE="OBJECT")
    catalog = Catalog.build([flagged], pix, {"2017-06-17T23:00:00.000": ["BAD"]}, st, exclude_flags=True)
    targets, _ = discover_targets(recipe, catalog, st, st.recipe_block("muse_comb"), dataset_suffix="_drs")
    assert [(t.name, str(t.folder), t.members) for t in targets] == [
        ("IC4406_drs", "comb/IC4406_drs", ("2017-06-16T23:00:00.000",))]
    # without exclude_flags (MuseRed's default) the flagged exposure is combined too
    catalog = Catalog.build([flagged], pix, {"2017-06-17T23:00:00.000": ["BAD"]}, st)
    targets, _ = discover_targets(recipe, catalog, st, st.recipe_block("muse_comb"), dataset_suffix="_drs")
    assert targets[0].members == ("2017-06-16T23:00:00.000", "2017-06-17T23:00:00.000")


def test_catalog_from_database(tmp_path):
    from musered.db import Database, sqlite_url

    db = Database(sqlite_url(tmp_path / "db.sqlite"))
    with db.session() as session:
        session.add(Raw(path="/raw/a.fits", filename="a.fits", name="2017-06-17T01:00:00.000", night=NIGHT,
                        DATE_OBS=at(NIGHT, 13), DPR_TYPE="OBJECT", INS_MODE=MODE, OBJECT="IC4406",
                        extra={"OBS_OBSERVER": "bob"}, header={}))
        session.add(Raw(path="/raw/b.fits", filename="b.fits", name="2017-06-17T02:00:00.000", night=NIGHT,
                        DATE_OBS=at(NIGHT, 14), DPR_TYPE="OBJECT", INS_MODE=MODE, excluded=True, header={}))
        session.add(Reduced(recipe_name="muse_bias", name="2017-06-16T10:00:00", PRO_CATG="MASTER_BIAS",
                            path="/red/MASTER_BIAS.fits", night=NIGHT, version="0.1",
                            date_run=dt.datetime(2020, 1, 1)))
        session.add(Reduced(recipe_name="muse_bias", name="2017-06-15T10:00:00", PRO_CATG="MASTER_BIAS",
                            path="/red/failed.fits", night=NIGHT, version="0.1", status="failed",
                            date_run=dt.datetime(2020, 1, 1)))
        session.add(Flag(name="2017-06-17T01:00:00.000", flag="BAD", date=dt.datetime(2020, 1, 1)))
    st = settings(tmp_path)
    catalog = Catalog.from_database(db, st, exclude_flags=True)
    assert [p.path for p in catalog.products] == [Path("/red/MASTER_BIAS.fits")]  # not the failed one
    reasons = {r.name: r.excluded for r in catalog.raws}
    assert reasons["2017-06-17T01:00:00.000"] == "flagged (BAD)"
    assert "database" in reasons["2017-06-17T02:00:00.000"]
    assert catalog.raws[0].columns["extra"] == {"OBS_OBSERVER": "bob"}
    db.dispose()


def test_a_static_calibration_is_never_taken_from_a_product(tmp_path):
    """muse_scipost writes the SKY_LINES it fitted; the next exposure must get the static
    line list, not that product (it was taken first when every tag searched `reduced`)."""
    static = tmp_path / "calib"
    static.mkdir()
    line_list = write_static(static / "sky_lines.fits", "SKY_LINES")
    fitted = product("SKY_LINES", NIGHT, name="2017-06-17T00:00:00.000", recipe="muse_scipost")
    st = settings(tmp_path, muse_calib_path=str(static))
    result = associate_one(tmp_path, exposure_recipe(calibs.SKY_LINES), [obj()], [fitted], st)
    assert result.frames["SKY_LINES"] == [line_list]
    assert not any("reduced" in line for line in result.log["SKY_LINES"])


def test_no_recipe_is_fed_its_own_earlier_product(tmp_path):
    """A --force re-run of a recipe that writes one of its own calibration tags must not
    take its earlier product (here: a recipe named muse_x that writes and reads TWILIGHT_CUBE)."""
    recipe = Recipe(name="muse_x", inputs=("OBJECT",), calibs=(calibs.TWILIGHT_CUBE,), outputs=("TWILIGHT_CUBE",),
                    params=(), run=lambda *a: [], group="exposure")
    own = product("TWILIGHT_CUBE", NIGHT, recipe="muse_x")
    other = product("TWILIGHT_CUBE", "2017-06-17", recipe="muse_twilight")
    result = associate_one(tmp_path, recipe, [obj()], [own, other])
    assert result.frames["TWILIGHT_CUBE"] == [other.path]
    assert any("a product of this recipe (never its own input)" in line for line in result.log["TWILIGHT_CUBE"])
