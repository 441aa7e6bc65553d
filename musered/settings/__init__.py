"""The settings file: load, substitute, validate and give typed access.

One YAML file (``--settings FILE``, else ``$MUSERED_SETTINGS``, else ``./settings.yml``)
holds every option; docs/settings.md is the user reference. Loading happens in stages:

1. parse with a safe YAML loader (anchors, aliases and ``<<:`` merge keys work);
2. drop MuseRed-only sections (``cpl``, ``GTO_logs``) with one warning each,
   reject unknown top-level keys (with the closest known key suggested);
3. substitute ``{key}`` (a top-level key with a single value) in every string and every
   mapping key of the tree, to any depth of references; ``{{``/``}}`` are literal braces;
4. check types and build the typed view (:class:`Settings`).

Every problem is a :class:`~musered.errors.MuseredError` with a one-line message naming
the file, the key path (``recipes.muse_scipost.init.output_dir``) and the reason.

Conventions: dates are :class:`datetime.date` (UT nights, ISO ``YYYY-MM-DD``); paths are
absolute :class:`~pathlib.Path`, relative ones being taken from the settings file's folder
(``base_dir``); ``night_cutoff`` is a UT :class:`datetime.time`.

Modules: :mod:`.keys` (the names the file may use), :mod:`.yamlio` (stage 1),
:mod:`.substitute` (stages 2-3), :mod:`.checks` (stage 4, with :mod:`.checkbase` and
:mod:`.checkrecipes` for the recipe blocks), :mod:`.model` (the typed view),
:mod:`.values` (shared helpers), :mod:`.load` (the entry points).
"""

from .keys import DEFAULT_SETTINGS_FILE, SETTINGS_ENV
from .load import load_settings, settings_from_dict
from .model import Dataset, Run, Settings
from .yamlio import dump_yaml, parse_yaml

__all__ = [
    "DEFAULT_SETTINGS_FILE", "SETTINGS_ENV", "Dataset", "Run", "Settings",
    "dump_yaml", "load_settings", "parse_yaml", "settings_from_dict",
]
