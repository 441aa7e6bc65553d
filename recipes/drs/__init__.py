"""The ESO DRS as an engine: run a declared recipe with esorex instead of its ``run``.

Pure (never imports musered). :func:`run_esorex` has the contract of ``Recipe.run`` plus
the esorex command; :data:`DRS_RECIPES` lists the recipes of cpl-plugin-muse 2.8.7
(``esorex --recipes``), so that settings can refuse ``engine: drs`` on a recipe that has
no DRS counterpart without running esorex.
"""

from __future__ import annotations

from recipes.drs.esorex import engine_versions, esorex_version, run_esorex

# esorex --recipes, cpl-plugin-muse 2.8.7
DRS_RECIPES = frozenset((
    "muse_ampl", "muse_astrometry", "muse_bias", "muse_create_sky", "muse_dark", "muse_exp_align",
    "muse_exp_combine", "muse_flat", "muse_geometry", "muse_illum", "muse_lingain", "muse_lsf",
    "muse_qi_mask", "muse_scibasic", "muse_scipost", "muse_scipost_apply_astrometry",
    "muse_scipost_calibrate_flux", "muse_scipost_combine_pixtables", "muse_scipost_correct_dar",
    "muse_scipost_correct_rv", "muse_scipost_make_cube", "muse_scipost_raman",
    "muse_scipost_subtract_sky", "muse_scipost_subtract_sky_simple", "muse_standard",
    "muse_twilight", "muse_wavecal",
))
ENGINES = ("musered", "drs")

__all__ = ["DRS_RECIPES", "ENGINES", "engine_versions", "esorex_version", "run_esorex"]
