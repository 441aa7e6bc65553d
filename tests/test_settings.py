"""Settings: loading, substitution, defaults, typed access and every error message."""

from __future__ import annotations

import datetime as dt
import logging
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from musered.cli import cli
from musered.errors import MuseredError
from musered.settings import load_settings, parse_yaml, settings_from_dict
from recipes.base import Param, Product, Recipe
from recipes.registry import RECIPES

REPO = Path(__file__).resolve().parents[1]


def write(folder: Path, text: str, name: str = "settings.yml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def load_text(folder: Path, text: str):
    return load_settings(write(folder, text))


def error_of(folder: Path, text: str) -> str:
    with pytest.raises(MuseredError) as info:
        load_text(folder, text)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def warnings_log(caplog):
    """Warnings of the musered loggers (the CLI turns their propagation off)."""
    logger = logging.getLogger("musered")
    propagate, logger.propagate = logger.propagate, True
    caplog.set_level(logging.WARNING, logger="musered.settings")
    yield caplog
    logger.propagate = propagate


def _no_run(frames, params, outdir):
    return [Product(path=outdir / "x.fits", tag="X")]


TINY = Recipe(
    name="muse_tiny",
    inputs=("BIAS",),
    calibs=(),
    outputs=("MASTER_TINY",),
    params=(
        Param("nsigma", float, 3.0, "clipping threshold", minimum=0),
        Param("method", str, "median", "combination", choices=("median", "mean")),
        Param("saveimages", bool, False, "save images"),
    ),
    run=_no_run,
)


@pytest.fixture
def tiny_recipe(monkeypatch):
    monkeypatch.setitem(RECIPES, TINY.name, TINY)
    return TINY


# -- defaults and paths -------------------------------------------------------------------


def test_defaults(tmp_path):
    s = settings_from_dict({}, base_dir=tmp_path)
    assert s.workdir == tmp_path
    assert s.db == tmp_path / "musered.db"
    assert s.raw_path == tmp_path / "raw"
    assert s.reduced_path == tmp_path / "reduced" / "0.1"
    assert s.muse_calib_path is None and s.db_env is None
    assert (s.version, s.revision, s.loglevel) == ("0.1", "1", "info")
    assert s.night_cutoff == dt.time(20, 40)
    assert s.additional_keywords == [] and s.datasets == {} and s.runs == {}
    assert s.executor == {"kind": "serial", "jobs": None, "address": None, "cluster": None}
    assert s.database_url() == f"sqlite:///{tmp_path / 'musered.db'}"
    assert s.path is None and s.base_dir == tmp_path


def test_numbers_become_text_and_defaults_follow(tmp_path):
    s = load_text(tmp_path, "version: 0.1\nrevision: 2\n")
    assert s.version == "0.1" and s.revision == "2"
    s = load_text(tmp_path, "version: 1.2\n")
    assert s.reduced_path == tmp_path / "reduced" / "1.2"
    assert s.data["version"] == "1.2"


def test_relative_paths_from_settings_folder_and_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    folder = tmp_path / "conf"
    folder.mkdir()
    s = load_text(folder, """
        workdir: '../work'
        db: 'db/my.db'
        muse_calib_path: '~/calib'
        """)
    assert s.workdir == tmp_path / "work"
    assert s.db == folder / "db" / "my.db"
    assert s.raw_path == tmp_path / "work" / "raw"
    assert s.muse_calib_path == home / "calib"
    assert s.path == folder / "settings.yml" and s.base_dir == folder


# -- substitution -------------------------------------------------------------------------


def test_multi_level_substitution_everywhere(tmp_path):
    s = load_text(tmp_path, """
        _root: /data/muse
        workdir: '{_root}/ic4406'
        version: '0.2'
        recipes:
          muse_scipost:
            init:
              output_dir: 'scipost-{version}'
            frames:
              OFFSET_LIST: ['{reduced_path}/a.fits', '{workdir}/b.fits']
        """)
    assert s.reduced_path == Path("/data/muse/ic4406/reduced/0.2")
    block = s.recipe_block("muse_scipost")
    assert block["init"]["output_dir"] == "scipost-0.2"
    assert block["frames"]["OFFSET_LIST"] == ["/data/muse/ic4406/reduced/0.2/a.fits", "/data/muse/ic4406/b.fits"]


def test_substitution_in_mapping_keys(tmp_path):
    s = load_text(tmp_path, """
        workdir: /w
        static_calib:
          GEOMETRY_TABLE:
            '{workdir}/geo_{version}.fits': {start_date: 2017-04-01}
        recipes:
          muse_standard:
            frames:
              STD_RESPONSE:
                '{workdir}/std_{revision}.fits': {end_date: 2017-06-30}
        """)
    assert s.static_calib["GEOMETRY_TABLE"] == {Path("/w/geo_0.1.fits"): (dt.date(2017, 4, 1), None)}
    frames = s.recipe_block("muse_standard")["frames"]
    assert frames["STD_RESPONSE"] == {"/w/std_1.fits": {"start_date": None, "end_date": dt.date(2017, 6, 30)}}


def test_double_braces_are_literal_even_through_references(tmp_path):
    s = load_text(tmp_path, """
        _fmt: 'a{{b}}c'
        _literal: '{{workdir}}'
        _via: 'x-{_literal}'
        retrieve_data:
          pattern: '{{version}} is {version}'
        """)
    assert s.data["_fmt"] == "a{b}c"
    assert s.data["_via"] == "x-{workdir}"
    assert s.retrieve_data["pattern"] == "{version} is 0.1"


def test_unknown_substitution_key_names_file_key_path_and_suggestion(tmp_path):
    message = error_of(tmp_path, """
        recipes:
          muse_scipost:
            init:
              output_dir: 'scipost-{versoin}'
        """)
    assert str(tmp_path / "settings.yml") in message
    assert "recipes.muse_scipost.init.output_dir" in message
    assert "{versoin}" in message and "did you mean {version}" in message


def test_reference_cycle_names_the_keys(tmp_path):
    message = error_of(tmp_path, "workdir: '{db}/w'\n")
    assert "reference cycle" in message
    assert "{workdir}" in message and "{db}" in message
    message = error_of(tmp_path, "_a: '{_b}'\n_b: '{_c}'\n_c: '{_a}'\n")
    assert "{_a} -> {_b} -> {_c} -> {_a}" in message


def test_bad_substitutions(tmp_path):
    assert "unmatched '{'" in error_of(tmp_path, "_x: 'a{b'\n")
    assert "unmatched '}'" in error_of(tmp_path, "_x: 'a}b'\n")
    assert "is not a settings key" in error_of(tmp_path, "_x: 'a{0}b'\n")
    message = error_of(tmp_path, "_x: '{runs}'\nruns: {}\n")
    assert "_x" in message and "{runs} cannot be substituted: runs is not a single value" in message
    message = error_of(tmp_path, "_x: '{db_env}'\n")
    assert "db_env is not set" in message


def test_keys_colliding_after_substitution(tmp_path):
    message = error_of(tmp_path, """
        static_calib:
          BADPIX_TABLE:
            'bp_{version}.fits': {}
            'bp_0.1.fits': {}
        """)
    assert "static_calib.BADPIX_TABLE.bp_0.1.fits" in message and "twice" in message


# -- YAML ---------------------------------------------------------------------------------


def test_yaml_syntax_error_has_line_and_column(tmp_path):
    message = error_of(tmp_path, "workdir: '.'\nruns:\n  GTO17: [2017\n  GTO19: 3\n")
    assert str(tmp_path / "settings.yml") in message
    assert "YAML syntax error at line" in message and "column" in message
    message = error_of(tmp_path, "a: b\n c: d\n")
    assert "line 2, column 3" in message


def test_anchors_aliases_and_merge_keys(tmp_path):
    s = load_text(tmp_path, """
        runs:
          GTO17: &GTO17
            start_date: 2017-04-01
            end_date: 2017-06-30
          GTO17b:
            <<: *GTO17
            end_date: 2017-05-31
        static_calib:
          ASTROMETRY_WCS:
            astrometry_wcs_wfm_gto17.fits: *GTO17
        """)
    assert s.runs["GTO17b"].start_date == dt.date(2017, 4, 1)
    assert s.runs["GTO17b"].end_date == dt.date(2017, 5, 31)
    (validity,) = s.static_calib["ASTROMETRY_WCS"].values()
    assert validity == (dt.date(2017, 4, 1), dt.date(2017, 6, 30))


def test_duplicate_keys_warn(tmp_path, warnings_log):
    load_text(tmp_path, "version: '1'\nversion: '2'\n")
    assert any("line 2: duplicate key 'version'" in r.getMessage() for r in warnings_log.records)


def test_unsafe_yaml_is_refused(tmp_path):
    message = error_of(tmp_path, "workdir: !!python/object/apply:os.getcwd []\n")
    assert "YAML syntax error" in message


# -- top-level keys -----------------------------------------------------------------------


def test_unknown_top_level_key_suggests(tmp_path):
    message = error_of(tmp_path, "dataset:\n  IC4406: {}\n")
    assert "dataset: unknown setting; did you mean datasets?" in message


def test_musered_only_sections_warn_once_and_are_ignored(tmp_path, warnings_log):
    s = load_text(tmp_path, """
        cpl:
          recipe_path: '~/.local/lib/esopipes-plugins'
          log_dir: '{workdir}/logs/{nothing}'
        GTO_logs:
          db: ["{workdir}/db_logs/GTO-17-P99.db"]
        """)
    assert "cpl" not in s.data and "GTO_logs" not in s.data
    messages = [r.getMessage() for r in warnings_log.records]
    assert sum("cpl: MuseRed-only setting" in m for m in messages) == 1
    assert sum("GTO_logs: MuseRed-only setting" in m for m in messages) == 1


def test_top_level_types(tmp_path):
    assert "version: must be a single value (text or number), not a list" in error_of(tmp_path, "version: [1]\n")
    message = error_of(tmp_path, "night_cutoff: 25:99\n")
    assert "night_cutoff: must be a UT time HH:MM" in message and "'25:99'" in message
    assert "workdir: must be text" in error_of(tmp_path, "workdir: {a: 1}\n")
    assert "loglevel: must be one of debug, info, warning, error" in error_of(tmp_path, "loglevel: loud\n")
    message = error_of(tmp_path, "datasets: 3\n")
    assert str(tmp_path / "settings.yml") in message and "datasets: must be a mapping" in message
    assert "reduced_path: is empty (remove it to get the default)" in error_of(tmp_path, "reduced_path: ''\n")
    assert "additional_keywords[0]: must be a FITS keyword" in error_of(tmp_path, "additional_keywords: [[1]]\n")


def test_night_cutoff_unquoted_is_a_time(tmp_path):
    assert load_text(tmp_path, "night_cutoff: 21:30\n").night_cutoff == dt.time(21, 30)
    assert load_text(tmp_path, "night_cutoff: '9:05:30'\n").night_cutoff == dt.time(9, 5, 30)
    assert load_text(tmp_path, "loglevel: DEBUG\n").loglevel == "debug"


def test_empty_and_non_mapping_files(tmp_path):
    assert load_text(tmp_path, "").version == "0.1"
    assert "must hold a mapping of settings" in error_of(tmp_path, "- a\n- b\n")


# -- datasets, runs, static calibrations, global frames ----------------------------------


def test_datasets(tmp_path):
    s = load_text(tmp_path, """
        datasets:
          IC4406:
            archive_filter:
              obs_targ_name: IC4406
          MOSAIC:
            OBJECT: [MOSAIC-1, MOSAIC-2]
          UDF:
            OBJECT: UDF-10
        """)
    assert s.datasets["IC4406"].objects == ["IC4406"]
    assert s.datasets["IC4406"].archive_filter == {"obs_targ_name": "IC4406"}
    assert s.datasets["MOSAIC"].objects == ["MOSAIC-1", "MOSAIC-2"]
    assert s.object_to_dataset() == {
        "IC4406": "IC4406", "MOSAIC-1": "MOSAIC", "MOSAIC-2": "MOSAIC", "UDF-10": "UDF",
    }


def test_dataset_errors(tmp_path):
    message = error_of(tmp_path, "datasets:\n  A: {OBJECTS: X}\n")
    assert "datasets.A.OBJECTS: unknown key; did you mean OBJECT?" in message
    message = error_of(tmp_path, "datasets:\n  A: {OBJECT: X}\n  B: {OBJECT: [Y, X]}\n")
    assert "datasets.B.OBJECT: OBJECT 'X' already belongs to dataset A" in message
    assert "datasets.A.archive_filter: must be a mapping" in error_of(tmp_path, "datasets:\n  A: {archive_filter: 3}\n")


def test_runs_and_run_of(tmp_path):
    s = load_text(tmp_path, """
        runs:
          GTO17: {start_date: 2017-04-01, end_date: '2017-06-30'}
          GTO19: {start_date: 2017-09-15, end_date: 2017-09-30}
        """)
    assert s.runs["GTO17"].end_date == dt.date(2017, 6, 30)
    assert s.run_of("2017-06-30") == "GTO17"
    assert s.run_of(dt.date(2017, 9, 15)) == "GTO19"
    assert s.run_of("2017-07-01") is None
    assert "runs.GTO17.end_date: is missing" in error_of(tmp_path, "runs:\n  GTO17: {start_date: 2017-04-01}\n")
    message = error_of(tmp_path, "runs:\n  R: {start_date: 2017-04-01, end_date: 'soon'}\n")
    assert "runs.R.end_date: must be a date YYYY-MM-DD, not 'soon'" in message
    message = error_of(tmp_path, "runs:\n  R: {start_date: 2017-04-02, end_date: 2017-04-01}\n")
    assert "runs.R: end_date 2017-04-01 is before start_date 2017-04-02" in message


def test_static_calib(tmp_path):
    s = load_text(tmp_path, """
        muse_calib_path: /calib
        static_calib:
          BADPIX_TABLE:
            badpix_table.fits:
              start_date: 2015-05-11
            /elsewhere/badpix_old.fits:
              start_date: 2014-09-17
              end_date: 2015-05-10
          LINE_CATALOG: line_catalog.fits
        """)
    assert s.static_calib["BADPIX_TABLE"] == {
        Path("/calib/badpix_table.fits"): (dt.date(2015, 5, 11), None),
        Path("/elsewhere/badpix_old.fits"): (dt.date(2014, 9, 17), dt.date(2015, 5, 10)),
    }
    assert s.static_calib["LINE_CATALOG"] == {Path("/calib/line_catalog.fits"): (None, None)}
    message = error_of(tmp_path, "static_calib:\n  badpix: {a.fits: {}}\n")
    assert "static_calib.badpix: 'badpix' is not a frame tag" in message
    message = error_of(tmp_path, "static_calib:\n  BADPIX_TABLE: {a.fits: {start: 2015-01-01}}\n")
    assert "static_calib.BADPIX_TABLE.a.fits.start: unknown key; did you mean start_date?" in message


def test_global_frame_exclusions(tmp_path):
    s = load_text(tmp_path, """
        additional_keywords: [ESO OBS OBSERVER]
        frames:
          exclude:
            raw:
              - night: ["2018-08-11", 2018-08-18]
              - DPR_TYPE: WAVE
                TPL_START: 2018-08-15T19:20:20
              - OBS_OBSERVER: someone
                EXPTIME: [600, 900.5]
            BIAS: '2017-06-14T09:01:03'
            MUSE_EXP: ['2017-06-16T01:34:56.867']
        """)
    assert s.frames == {"exclude": {
        "raw": [
            {"night": ["2018-08-11", "2018-08-18"]},
            {"DPR_TYPE": "WAVE", "TPL_START": "2018-08-15T19:20:20"},
            {"OBS_OBSERVER": "someone", "EXPTIME": [600, 900.5]},
        ],
        "BIAS": ["2017-06-14T09:01:03"],
        "MUSE_EXP": ["2017-06-16T01:34:56.867"],
    }}
    message = error_of(tmp_path, "frames:\n  exclude:\n    raw:\n      - nigth: 2018-08-11\n")
    assert "frames.exclude.raw[0].nigth: unknown raw column; did you mean night?" in message
    assert "frames.exclud: unknown key" in error_of(tmp_path, "frames:\n  exclud: {}\n")
    assert "would exclude every raw file" in error_of(tmp_path, "frames:\n  exclude:\n    raw: [{}]\n")
    assert "raw[0].header: unknown raw column" in error_of(tmp_path, "frames:\n  exclude:\n    raw: [{header: x}]\n")


def test_flags_retrieve_data(tmp_path):
    s = load_text(tmp_path, """
        flags:
          MY_FLAG: "this is a super useful flag"
          OTHER:
        retrieve_data:
          username: MUSE-GTO
          store_password: False
        """)
    assert s.flags == {"MY_FLAG": "this is a super useful flag", "OTHER": ""}
    assert s.retrieve_data == {"username": "MUSE-GTO", "store_password": False}
    assert "flags.bad flag: flag names are words" in error_of(tmp_path, "flags:\n  bad flag: x\n")


# -- executor and database ----------------------------------------------------------------


def test_executor_forms(tmp_path):
    assert settings_from_dict({"executor": "process"}, tmp_path).executor["kind"] == "process"
    ex = settings_from_dict({"executor": {"kind": "process", "jobs": 2}}, tmp_path).executor
    assert ex == {"kind": "process", "jobs": 2, "address": None, "cluster": None}
    ex = settings_from_dict({"executor": {"address": "tcp://h:8786"}}, tmp_path).executor
    assert ex["kind"] == "dask" and ex["address"] == "tcp://h:8786"
    ex = settings_from_dict({"executor": {"kind": "dask", "cluster": {"kind": "slurm", "cores": 8}}}, tmp_path).executor
    assert ex["cluster"] == {"kind": "slurm", "cores": 8}
    ex = settings_from_dict({"executor": {"kind": "dask", "jobs": 2, "processes": False, "timeout": 30}}, tmp_path).executor
    assert ex == {"kind": "dask", "jobs": 2, "address": None, "cluster": None, "processes": False, "timeout": 30}
    assert "executor.timeout: must be a number of seconds > 0" in error_of(tmp_path, "executor: {timeout: -1}\n")
    assert "executor: must be one of serial, process, dask" in error_of(tmp_path, "executor: threads\n")
    assert "executor.jobs: must be a whole number >= 1" in error_of(tmp_path, "executor: {kind: process, jobs: 0}\n")
    assert "executor: address and cluster need kind: dask" in error_of(tmp_path, "executor: {kind: serial, address: x}\n")
    assert "executor.job: unknown key; did you mean jobs?" in error_of(tmp_path, "executor: {job: 2}\n")


def test_db_env(tmp_path, monkeypatch):
    s = load_text(tmp_path, "db_env: MXDF_DB\n")
    monkeypatch.setenv("MXDF_DB", "postgresql+psycopg://u@h/db")
    assert s.database_url() == "postgresql+psycopg://u@h/db"
    monkeypatch.delenv("MXDF_DB")
    with pytest.raises(MuseredError, match="db_env: environment variable MXDF_DB is not set"):
        s.database_url()


# -- finding the file ----------------------------------------------------------------------


def test_missing_file(tmp_path, monkeypatch):
    with pytest.raises(MuseredError) as info:
        load_settings(tmp_path / "nope.yml")
    assert str(info.value) == f"settings file {tmp_path / 'nope.yml'} not found (use --settings or $MUSERED_SETTINGS)"
    with pytest.raises(MuseredError, match="is a folder"):
        load_settings(tmp_path)


def test_file_lookup_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MUSERED_SETTINGS", raising=False)
    with pytest.raises(MuseredError, match="settings file settings.yml not found"):
        load_settings()
    write(tmp_path, "version: '3'\n")
    assert load_settings().version == "3"
    write(tmp_path, "version: '4'\n", name="other.yml")
    monkeypatch.setenv("MUSERED_SETTINGS", str(tmp_path / "other.yml"))
    assert load_settings().version == "4"
    assert load_settings(tmp_path / "settings.yml").version == "3"


# -- recipe blocks -------------------------------------------------------------------------


def test_recipe_blocks_are_normalised(tmp_path):
    s = load_text(tmp_path, """
        recipes:
          common:
            params: {saveimages: true}
          muse_wavecal:
            frames:
              exclude: MASTER_DARK
              include: [MASTER_FLAT]
              offsets: {STD_TELLURIC: 5}
              MASTER_BIAS: '~/bias/'
          muse_exp_align:
            from_recipe: muse_scipost_rec
            filt: white
          muse_exp_combine:
            exclude_flags: [SATELLITE]
          mpdaf_combine:
            from_recipe: muse_scipost_make_cube
            params: {method: sigclip, version: 0.1}
        """)
    block = s.recipe_block("muse_wavecal")
    assert block["frames"]["exclude"] == ["MASTER_DARK"]
    assert block["frames"]["include"] == ["MASTER_FLAT"]
    assert block["frames"]["offsets"] == {"STD_TELLURIC": 5}
    assert block["frames"]["MASTER_BIAS"] == str(Path("~/bias/").expanduser()) + "/"
    assert block["params"] == {} and block["init"] == {}
    assert s.recipe_block("muse_exp_align")["filt"] == "white"
    assert s.recipe_block("muse_exp_combine")["exclude_flags"] == ["SATELLITE"]
    assert s.recipe_block("nothing") == {}
    copy = s.recipe_block("muse_wavecal")
    copy["frames"]["exclude"].append("X")
    assert s.recipe_block("muse_wavecal")["frames"]["exclude"] == ["MASTER_DARK"]


def test_recipe_block_errors(tmp_path):
    message = error_of(tmp_path, "recipes:\n  muse_bias:\n    parms: {a: 1}\n")
    assert "recipes.muse_bias.parms: unknown key; did you mean params?" in message
    message = error_of(tmp_path, "recipes:\n  muse_bias:\n    init: {outputdir: x}\n")
    assert "recipes.muse_bias.init.outputdir: unknown run option; did you mean output_dir?" in message
    message = error_of(tmp_path, "recipes:\n  muse_bias:\n    frames: {offsets: {MASTER_BIAS: -1}}\n")
    assert "recipes.muse_bias.frames.offsets.MASTER_BIAS: must be a number of nights >= 0" in message
    message = error_of(tmp_path, "recipes:\n  muse_bias:\n    frames: {exclude: [master_dark]}\n")
    assert "'master_dark' is not a frame tag" in message
    message = error_of(tmp_path, "recipes:\n  muse_bias:\n    params: {a: [1, 2]}\n")
    assert "recipes.muse_bias.params.a: must be a single value, not a list" in message
    message = error_of(tmp_path, "recipes:\n  common:\n    from_recipe: muse_scipost\n")
    assert "recipes.common.from_recipe: belongs in a recipe block" in message
    assert "recipes.muse_bias: must be a mapping" in error_of(tmp_path, "recipes:\n  muse_bias: 3\n")


def test_musered_recipe_options_and_tools(tmp_path, warnings_log):
    s = load_text(tmp_path, """
        recipes:
          common:
            temp_dir: '{workdir}/tmp'
          muse_scipost:
            OFFSET_LIST: drs
            DPR_TYPE: OBJECT
            init: {output_dir: scipost, use_drs_output: false}
          imphot:
            from_recipe: muse_scipost_rec
            params:
              hst_filters: [F775W, F814W]
              hst_img_dir: '{workdir}/HST'
          zap:
            anything: goes
        """)
    assert s.recipe_block("common")["init"] == {}
    block = s.recipe_block("muse_scipost")
    assert block["frames"] == {"OFFSET_LIST": "drs"}
    assert block["init"] == {"output_dir": "scipost"} and "DPR_TYPE" not in block
    assert s.recipe_block("imphot")["params"]["hst_img_dir"] == f"{tmp_path}/HST"
    assert s.recipe_block("zap") == {"anything": "goes"}
    messages = " | ".join(r.getMessage() for r in warnings_log.records)
    assert "recipes.common.temp_dir: MuseRed-only recipe option, ignored" in messages
    assert "recipes.muse_scipost.OFFSET_LIST: frame given outside 'frames:'" in messages
    assert "recipes.muse_scipost.DPR_TYPE: MuseRed-only recipe option" in messages
    assert "recipes.muse_scipost.init.use_drs_output: MuseRed-only recipe option" in messages


def test_registered_recipe_params_are_validated(tmp_path, tiny_recipe):
    message = error_of(tmp_path, "recipes:\n  muse_tiny:\n    params: {nsigmaa: 2}\n")
    assert str(tmp_path / "settings.yml") in message
    assert "recipes.muse_tiny.params.nsigmaa: unknown parameter of muse_tiny; did you mean nsigma?" in message
    assert "Valid parameters: method, nsigma, saveimages" in message
    message = error_of(tmp_path, "recipes:\n  muse_tiny:\n    params: {zzz: 1}\n")
    assert "recipes.muse_tiny.params.zzz: unknown parameter of muse_tiny. Valid parameters: method," in message
    message = error_of(tmp_path, "recipes:\n  muse_tiny:\n    params: {method: mode}\n")
    assert "recipes.muse_tiny.params: parameter method must be one of median, mean" in message
    message = error_of(tmp_path, "recipes:\n  common:\n    params: {nsigma: many}\n")
    assert "recipes.common.params.nsigma: parameter nsigma must be a number" in message
    # blocks named after no recipe are only checked when used through --params
    load_text(tmp_path, "recipes:\n  muse_tiny_alt:\n    params: {nsigmaa: 2}\n")


def test_recipe_params_precedence(tmp_path, tiny_recipe, warnings_log):
    s = load_text(tmp_path, """
        recipes:
          common:
            params: {saveimages: true, nsigma: 4, other_recipe_param: 1}
          muse_tiny:
            params: {nsigma: 5}
          muse_tiny_alt:
            params: {method: mean, nsigmaa: 1}
          muse_tiny_ok:
            params: {method: mean}
        """)
    assert any("recipes.common.params.other_recipe_param: not a parameter of any musered recipe" in r.getMessage()
               for r in warnings_log.records)
    assert s.recipe_params(tiny_recipe) == {"nsigma": 5.0, "method": "median", "saveimages": True}
    assert s.recipe_params(tiny_recipe, overrides={"nsigma": "6"})["nsigma"] == 6.0
    assert s.recipe_params(tiny_recipe, "muse_tiny_ok") == {"nsigma": 4.0, "method": "mean", "saveimages": True}
    with pytest.raises(MuseredError, match=r"recipes.muse_tiny_alt.params.nsigmaa: unknown parameter 'nsigmaa'"):
        s.recipe_params(tiny_recipe, "muse_tiny_alt")
    with pytest.raises(MuseredError, match=r"recipes.muse_tiny_nope: no such block for --params; blocks in the settings: muse_tiny, "):
        s.recipe_params(tiny_recipe, "muse_tiny_nope")
    with pytest.raises(MuseredError, match=r"command line: parameter method must be one of"):
        s.recipe_params(tiny_recipe, overrides={"method": "max"})


# -- the example file, the dump and the command --------------------------------------------


def test_example_settings_file_loads(tmp_path, warnings_log):
    example = REPO / "settings.yml.example"
    s = load_settings(example)
    assert s.workdir == REPO
    assert s.reduced_path == REPO / "reduced" / "0.1"
    assert s.datasets["IC4406"].objects == ["IC4406", "IC4406-something"]
    assert s.datasets["IC4406"].archive_filter["obs_targ_name"] == "IC4406"
    assert s.runs["GTO17"].start_date == dt.date(2017, 4, 1)
    geometry = s.static_calib["GEOMETRY_TABLE"]
    assert geometry[s.muse_calib_path / "geometry_table_wfm_gto17.fits"] == (dt.date(2017, 4, 1), dt.date(2017, 6, 30))
    assert s.frames["exclude"]["raw"][0] == {"night": ["2018-08-11", "2018-08-18"]}
    rec = s.recipe_block("muse_scipost_rec")
    assert rec["frames"]["exclude"] == ["RAMAN_LINES"]
    assert rec["init"]["output_dir"] == "scipost-not-recentered"
    assert s.recipe_block("muse_scipost")["frames"]["OFFSET_LIST"] == f"{REPO}/OFFSET_LIST_new.fits"
    cube = s.recipe_block("muse_scipost_make_cube")
    assert cube["frames"]["OUTPUT_WCS"] == f"{REPO}/reduced/0.1/exp_combine/IC4406/DATACUBE_FINAL.fits"
    assert s.recipe_block("mpdaf_combine")["from_recipe"] == "muse_scipost_make_cube"
    assert s.executor["kind"] == "serial"
    assert s.run_of("2017-06-16") == "GTO17"
    assert warnings_log.records == []


def test_dump_round_trips(tmp_path):
    s = load_text(tmp_path, """
        runs:
          GTO17: &GTO17 {start_date: 2017-04-01, end_date: 2017-06-30}
        static_calib:
          GEOMETRY_TABLE: {geo.fits: *GTO17}
        """)
    text = s.dump()
    assert "&" not in text and "*" not in text
    again = yaml.safe_load(text)
    assert again == s.data
    assert again["reduced_path"] == str(tmp_path / "reduced" / "0.1")


def test_parse_yaml_keeps_sexagesimal_as_text():
    assert parse_yaml("a: 20:40\nb: 190:20:30.15\nc: 12\nd: 1.5\n") == {
        "a": "20:40", "b": "190:20:30.15", "c": 12, "d": 1.5,
    }


def test_settings_command_prints_substituted_values(tmp_path):
    path = write(tmp_path, """
        workdir: '/data/{version}'
        version: 0.3
        recipes:
          muse_bias:
            init: {output_dir: 'bias-{revision}'}
        """)
    result = CliRunner().invoke(cli, ["--settings", str(path), "settings"])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert printed["workdir"] == "/data/0.3"
    assert printed["reduced_path"] == "/data/0.3/reduced/0.3"
    assert printed["recipes"]["muse_bias"]["init"]["output_dir"] == "bias-1"
    result = CliRunner().invoke(cli, ["--settings", str(path), "settings", "reduced_path"])
    assert result.output == "/data/0.3/reduced/0.3\n"
    result = CliRunner().invoke(cli, ["--settings", str(path), "settings", "recipes.muse_bias.init"])
    assert yaml.safe_load(result.output) == {"output_dir": "bias-1"}
    result = CliRunner().invoke(cli, ["--settings", str(path), "settings", "recipes.muse_bais"])
    assert result.exit_code == 1
    assert "no setting recipes.muse_bais; did you mean recipes.muse_bias?" in result.output


def test_settings_command_errors_are_one_line(tmp_path):
    missing = tmp_path / "missing.yml"
    result = CliRunner().invoke(cli, ["--settings", str(missing), "settings"])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: settings file {missing} not found (use --settings or $MUSERED_SETTINGS)"
    assert "Traceback" not in result.output
    bad = write(tmp_path, "workdir: '{workdri}'\n")
    result = CliRunner().invoke(cli, ["--settings", str(bad), "settings"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "workdir: unknown key {workdri}" in lines[0] and "did you mean {workdir}" in lines[0]


def test_settings_from_dict_takes_python_values_and_leaves_them_alone(tmp_path):
    data = {
        "raw_path": tmp_path / "raw-files",
        "night_cutoff": dt.time(12, 0),
        "runs": {"R": {"start_date": dt.date(2017, 1, 1), "end_date": "2017-01-31"}},
        "static_calib": {"GEOMETRY_TABLE": {tmp_path / "geo.fits": None}},
        "recipes": {"muse_bias": {"frames": {"exclude": "MASTER_DARK"}}},
    }
    before = repr(data)
    s = settings_from_dict(data, base_dir=tmp_path)
    assert s.raw_path == tmp_path / "raw-files"
    assert s.night_cutoff == dt.time(12, 0)
    assert s.static_calib["GEOMETRY_TABLE"] == {tmp_path / "geo.fits": (None, None)}
    assert s.run_of("2017-01-31") == "R"
    assert repr(data) == before
    assert data["recipes"]["muse_bias"]["frames"]["exclude"] == "MASTER_DARK"
