"""The names the settings file may use: top-level keys, sections, recipe-block keys."""

from __future__ import annotations

import re
from typing import Any

SETTINGS_ENV = "MUSERED_SETTINGS"
DEFAULT_SETTINGS_FILE = "settings.yml"

# Top-level keys holding one value each; they can be substituted as {key}.
DEFAULTS: dict[str, Any] = {
    "workdir": ".",
    "db": "{workdir}/musered.db",
    "db_env": None,
    "raw_path": "{workdir}/raw",
    "reduced_path": "{workdir}/reduced/{version}",
    "muse_calib_path": None,
    "version": "0.1",
    "revision": "1",
    "loglevel": "info",
    "night_cutoff": "20:40",
    # the esorex of recipes with `engine: drs`: a command looked up on PATH, or a path
    "esorex": "esorex",
}
# Top-level sections, with the value an absent or empty section gets.
SECTIONS: dict[str, Any] = {
    "additional_keywords": [],
    "datasets": {},
    "runs": {},
    "static_calib": {},
    "frames": {},
    "flags": {},
    "retrieve_data": {},
    "recipes": {},
    "executor": "serial",
    "plugins": {},
}
KNOWN_KEYS = tuple(DEFAULTS) + tuple(SECTIONS)
PATH_KEYS = ("workdir", "db", "raw_path", "reduced_path", "muse_calib_path")
# Keys MuseRed understood and musered has no use for: warned about once, then ignored.
MUSERED_ONLY_KEYS = {
    "cpl": "python-cpl/esorex options; musered runs its own recipes",
    "GTO_logs": "muselog GTO observer databases are not imported by musered",
}
# Top-level keys starting with this prefix belong to the user: free values for {substitution}
# and anchor holders, never interpreted.
USER_KEY_PREFIX = "_"
LOGLEVELS = ("debug", "info", "warning", "error")
EXECUTOR_KINDS = ("serial", "process", "dask")
EXECUTOR_KEYS = ("kind", "jobs", "address", "cluster", "processes", "timeout")
DATASET_KEYS = ("OBJECT", "archive_filter")
RUN_KEYS = ("start_date", "end_date")
# The plugins section (MuseRed's plugins.yml format): folders put on sys.path while the
# plugins load, and the commands as "module:function" or "file.py:function".
PLUGIN_KEYS = ("paths", "commands")

# Recipe blocks (recipes.<name>): keys musered reads.
BLOCK_KEYS = ("params", "init", "frames", "from_recipe", "filt", "method", "exclude_flags", "select",
              "names_with_selection", "engine")
# What runs a recipe (``engine:``): our recipe, or the ESO DRS through esorex (recipes.drs).
ENGINES = ("musered", "drs")
DEFAULT_ENGINE = "musered"
INIT_KEYS = ("output_dir",)
FRAMES_KEYS = ("exclude", "include", "offsets")
# Keys of MuseRed recipe blocks that musered has no use for: warned about, then dropped.
MUSERED_ONLY_BLOCK_KEYS = (
    "DPR_TYPE", "name", "max_exps", "superflat_from", "imphot_recipe", "filters",
    "mean_waves", "fsf_recipe", "use_scale",
)
MUSERED_ONLY_INIT_KEYS = ("temp_dir", "log_dir", "use_drs_output", "nifu", "tag", "version", "verbose")
# Blocks of MuseRed tools that musered does not run: kept as written, never validated.
UNMANAGED_BLOCKS = ("imphot", "zap", "superflat", "fsf")
COMMON_BLOCK = "common"

FRAME_TAG = re.compile(r"[A-Z][A-Z0-9_]*\Z")
KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# '{{', '}}', '{name}', or a lone brace (an error).
TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
