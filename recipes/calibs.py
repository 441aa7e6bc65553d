"""The calibration tags of MUSE and where each may come from: declared once, used by the
recipe declarations (``calibs=(MASTER_BIAS, MASTER_DARK, TRACE_TABLE.optional(), ...)``).

Policy (see :class:`recipes.base.Calib`): products of the night-time chain are searched in
``reduced`` on the nearest night (STD_* within 5 nights, TWILIGHT_CUBE 3, others 1); those
that depend on the instrument mode must match it. Static calibrations (line lists,
extinction, filters, geometry ...) come only from the settings (``frames``,
``static_calib``, ``muse_calib_path``) or the archive, never from a product: a recipe that
writes SKY_LINES (muse_scipost fits the sky lines of an exposure) must not feed it to the
next exposure. Per-dataset frames (OFFSET_LIST, OUTPUT_WCS ...) are only taken from the
block's ``frames``. ILLUM is a raw file taken within 2 h of the exposure.
"""

from __future__ import annotations

from recipes.base import FRAMES, RAW, REDUCED, STATIC, Calib

ONLY_FRAMES = (FRAMES,)
STATIC_SOURCES = (FRAMES, STATIC)

# Products of the calibration and standard-star chain.
MASTER_BIAS = Calib("MASTER_BIAS")
MASTER_DARK = Calib("MASTER_DARK", required=False, default_excluded=True)
MASTER_FLAT = Calib("MASTER_FLAT", match_mode=True)
TRACE_TABLE = Calib("TRACE_TABLE")
WAVECAL_TABLE = Calib("WAVECAL_TABLE")
LSF_PROFILE = Calib("LSF_PROFILE", match_mode=True)
TWILIGHT_CUBE = Calib("TWILIGHT_CUBE", offset=3)
STD_RESPONSE = Calib("STD_RESPONSE", offset=5, match_mode=True)
STD_TELLURIC = Calib("STD_TELLURIC", offset=5, match_mode=True)
SKY_CONTINUUM = Calib("SKY_CONTINUUM", required=False, default_excluded=True)

# Raw frames used as calibrations.
ILLUM = Calib("ILLUM", required=False, sources=(FRAMES, RAW), match_mode=True, max_delay_hours=2.0)

# Static calibrations: never a product.
BADPIX_TABLE = Calib("BADPIX_TABLE", required=False, sources=STATIC_SOURCES)
GEOMETRY_TABLE = Calib("GEOMETRY_TABLE", sources=STATIC_SOURCES)
LINE_CATALOG = Calib("LINE_CATALOG", sources=STATIC_SOURCES)
VIGNETTING_MASK = Calib("VIGNETTING_MASK", required=False, sources=STATIC_SOURCES)
EXTINCT_TABLE = Calib("EXTINCT_TABLE", sources=STATIC_SOURCES)
STD_FLUX_TABLE = Calib("STD_FLUX_TABLE", sources=STATIC_SOURCES)
TELLURIC_REGIONS = Calib("TELLURIC_REGIONS", required=False, sources=STATIC_SOURCES)
FILTER_LIST = Calib("FILTER_LIST", required=False, sources=STATIC_SOURCES)
ASTROMETRY_WCS = Calib("ASTROMETRY_WCS", required=False, sources=STATIC_SOURCES)
SKY_LINES = Calib("SKY_LINES", required=False, sources=STATIC_SOURCES)
RAMAN_LINES = Calib("RAMAN_LINES", required=False, default_excluded=True, sources=STATIC_SOURCES)

# Frames of one dataset or exposure, named in the settings block only.
OFFSET_LIST = Calib("OFFSET_LIST", required=False, sources=ONLY_FRAMES)
OUTPUT_WCS = Calib("OUTPUT_WCS", required=False, sources=ONLY_FRAMES)
SKY_MASK = Calib("SKY_MASK", required=False, sources=ONLY_FRAMES)
AUTOCAL_FACTORS = Calib("AUTOCAL_FACTORS", required=False, default_excluded=True, sources=ONLY_FRAMES)
REFERENCE_IMAGE = Calib("REFERENCE_IMAGE", sources=STATIC_SOURCES)
NONLINEARITY_GAIN = Calib("NONLINEARITY_GAIN", required=False, default_excluded=True, sources=STATIC_SOURCES)
