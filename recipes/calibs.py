"""The calibration tags of MUSE and where each may come from: declared once, used by the
recipe declarations (``calibs=(MASTER_BIAS, MASTER_DARK, TRACE_TABLE.optional(), ...)``).

Policy (see :class:`recipes.base.Calib`), MuseRed's (``FramesFinder.find_calib``,
``MuseRed.find_illum``) unless said otherwise:

- products of the night-time chain are searched in ``reduced`` on the nearest night
  (STD_* within 5 nights, TWILIGHT_CUBE 3, others 1; the next night before the previous);
  MASTER_FLAT, LSF_PROFILE and STD_* must have the target's INS_MODE;
- static calibrations (line lists, extinction, filters, geometry, astrometry ...) come
  only from the settings (``frames``, ``static_calib``, ``muse_calib_path``) or the
  archive, never from a product: muse_scipost writes the SKY_LINES it fitted, which must
  not feed the next exposure. RAMAN_LINES is looked up for AO modes only (the DRS ignores
  it otherwise); a settings block drops it with ``frames.exclude`` (MuseRed's example
  ``muse_scipost_rec``);
- ILLUM is a raw lamp flat of the target's night, whatever its INS_MODE (attached ILLUMs
  are WFM-NOAO-N even for AO science): among those within 2 h of the target (the mean
  time of its raw files) the closest in INS TEMP7 to their mean temperature, else the
  closest in time; not used when that temperature differs by more than 1 K;
- per-exposure and per-dataset frames (OFFSET_LIST, OUTPUT_WCS, SKY_MASK,
  AUTOCAL_FACTORS) are only taken from the block's ``frames`` (setting one is enough);
  MASTER_DARK, SKY_CONTINUUM and NONLINEARITY_GAIN only when the block's
  ``frames.include`` names them.
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
ILLUM = Calib("ILLUM", required=False, sources=(FRAMES, RAW), max_delay_hours=2.0, max_temp_diff=1.0)

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
RAMAN_LINES = Calib("RAMAN_LINES", required=False, sources=STATIC_SOURCES, modes=("*-AO-*",))

# Frames of one dataset or exposure, named in the settings block only (as MuseRed's SPECIAL_FRAMES).
OFFSET_LIST = Calib("OFFSET_LIST", required=False, sources=ONLY_FRAMES)
OUTPUT_WCS = Calib("OUTPUT_WCS", required=False, sources=ONLY_FRAMES)
SKY_MASK = Calib("SKY_MASK", required=False, sources=ONLY_FRAMES)
AUTOCAL_FACTORS = Calib("AUTOCAL_FACTORS", required=False, sources=ONLY_FRAMES)
REFERENCE_IMAGE = Calib("REFERENCE_IMAGE", sources=STATIC_SOURCES)
NONLINEARITY_GAIN = Calib("NONLINEARITY_GAIN", required=False, default_excluded=True, sources=STATIC_SOURCES)
