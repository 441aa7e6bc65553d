"""Headers and the raw FITS writer (format of docs muse-raw-format.md).

A raw file is an empty primary HDU with the observation keywords, then one image
extension ``CHANnn`` per IFU, BITPIX=16 with BZERO=32768 (uint16 counts), each carrying
the ``ESO DET CHIP`` and ``ESO DET OUTn`` keywords of its CCD. Extensions are written
one at a time straight to disk, so memory holds a single IFU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from astropy.io import fits

from .plan import (
    PARANAL_ELEV, PARANAL_LAT, PARANAL_LON, FramePlan, date_obs_string, header_pointing, lst_seconds, mjd,
    telescope_keywords, zenith_cos,
)
from .profiles import Profile

#: Lamp number, lamp name and what it emits. The DRS 2.8.7 binary knows CU-LAMP3 and
#: CU-LAMP6 (two Ne lamps), CU-LAMP4 (Xe) and CU-LAMP5 (HgCd); its wavecal run on our
#: frames identified all three lamps with these names (docs/simulator.md).
LAMPS = [(1, "CU-LAMP1", "cont"), (2, "CU-LAMP2", "cont"), (3, "CU-LAMP3", "Ne"),
         (4, "CU-LAMP4", "Xe"), (5, "CU-LAMP5", "HgCd")]

BLOCK = 2880


def _card(header: fits.Header, key: str, value, comment: str = "") -> None:
    """Append a card, HIERARCH for ESO keys, comment shortened to fit 80 characters."""
    if len(key) > 8 or " " in key:
        key = "HIERARCH " + key
    card = fits.Card(key, value)
    room = 80 - len(card.image.rstrip()) - 3
    header.append(fits.Card(key, value, comment[:max(room, 0)]), end=True)


def primary_header(frame: FramePlan, profile: Profile) -> fits.Header:
    """The primary header of a raw frame (all keywords musered and the DRS read)."""
    h = fits.Header()
    h["SIMPLE"] = True
    h["BITPIX"] = 8
    h["NAXIS"] = 0
    h["EXTEND"] = True
    name = frame.filename
    dobs = date_obs_string(frame.date_obs)
    utc = frame.date_obs.hour * 3600 + frame.date_obs.minute * 60 + frame.date_obs.second \
        + frame.date_obs.microsecond / 1e6
    for k, v, c in [
        ("ORIGIN", "ESO-PARANAL", "European Southern Observatory"),
        ("DATE", dobs, "Date the file was written"),
        ("TELESCOP", "ESO-VLT-U4", "ESO Telescope Name"),
        ("INSTRUME", "MUSE", "Instrument used."),
        ("OBJECT", frame.object, "Original target."),
        ("RA", round(frame.ra, 6), "[deg] pointing"),
        ("DEC", round(frame.dec, 6), "[deg] pointing"),
        ("EQUINOX", 2000.0, "Standard FK5"),
        ("RADESYS", "FK5", "Coordinate system"),
        ("EXPTIME", float(frame.exptime), "Integration time"),
        ("MJD-OBS", round(mjd(frame.date_obs), 8), "Obs start"),
        ("DATE-OBS", dobs, "Observing date"),
        ("UTC", round(utc, 3), "[s] UTC at start"),
        ("LST", round(lst_seconds(frame.date_obs), 3), "[s] LST at start"),
        ("PI-COI", "UNKNOWN", "PI-COI name."),
        ("OBSERVER", "SIMULATOR", "Name of observer."),
        ("ARCFILE", name, "Archive File Name"),
        ("ORIGFILE", name.replace(".fits", "") + "_0001.fits", "Original File Name"),
        ("ESO OBS ID", 200000000 + int(frame.night.replace("-", "")) % 100000, "Observation block ID"),
        ("ESO OBS NAME", f"{frame.object}-{frame.kind}", "OB name"),
        ("ESO OBS PROG ID", "60.A-9100(A)" if frame.dpr_catg == "CALIB" else "099.A-0001(A)", "ESO program identification"),
        ("ESO OBS TARG NAME", frame.target or frame.object, "OB target name"),
        ("ESO TPL ID", frame.tpl_id, "Template signature ID"),
        ("ESO TPL NAME", frame.tpl_id.replace("MUSE_", ""), "Template name"),
        ("ESO TPL START", frame.tpl_start, "TPL start time"),
        ("ESO TPL NEXP", frame.tpl_nexp, "Number of exposures within template"),
        ("ESO TPL EXPNO", frame.tpl_expno, "Exposure number within template"),
        ("ESO DPR CATG", frame.dpr_catg, "Observation category"),
        ("ESO DPR TYPE", frame.dpr_type, "Observation type"),
        ("ESO DPR TECH", "IFU", "Observation technique"),
        ("ESO INS MODE", "WFM-NOAO-N", "Instrument mode used."),
        ("ESO INS OPTI1 NAME", "Blue_Cut", "OPTIi name."),
        ("ESO INS OPTI2 NAME", "WFM", "OPTIi name."),
        ("ESO INS DROT MODE", "SKY", "Instrument derotator mode."),
        ("ESO INS DROT POSANG", float(frame.posang), "[deg] Position angle."),
        ("ESO INS TEMP7 VAL", round(float(frame.temp7), 3), "[C] Temperature value."),
        ("ESO INS LAMPNUM", len(LAMPS), "Number of lamps."),
    ]:
        _card(h, k, v, c)
    for i, lname, kind in LAMPS:
        on = (frame.kind == "ARC" and frame.lamp == kind) or (
            frame.kind in ("FLAT", "ILLUM") and kind == "cont")
        _card(h, f"ESO INS LAMP{i} NAME", lname, "Name of lamp.")
        _card(h, f"ESO INS LAMP{i} ST", bool(on), "Lamp activated.")
        _card(h, f"ESO INS SHUT{i} NAME", f"CU-SHUT{i}", "Name of shutter.")
        _card(h, f"ESO INS SHUT{i} ST", bool(on), "Shutter open.")
    fwhm = round(float(frame.seeing), 3)
    tel = telescope_keywords(frame)
    cosz = zenith_cos(*header_pointing(frame))
    for k, v, c in [
        ("ESO DET READ CURNAME", "SCI1.0", "Used readout mode name"),
        ("ESO DET READ CURID", 1, "Used readout mode id"),
        ("ESO DET BINX", 1, "Binning factor along X"),
        ("ESO DET BINY", 1, "Binning factor along Y"),
        ("ESO DET CHIPS", profile.n_ifus, "Number of chips"),
        ("ESO TEL AIRM START", tel["ESO TEL AIRM START"], "Airmass at start"),
        ("ESO TEL AIRM END", tel["ESO TEL AIRM END"], "Airmass at end"),
        ("ESO TEL ALT", round(math.degrees(math.asin(min(1.0, max(cosz, 0.0)))), 3), "[deg] Alt angle at start"),
        ("ESO TEL PARANG START", tel["ESO TEL PARANG START"], "[deg] Parallactic angle at start"),
        ("ESO TEL PARANG END", tel["ESO TEL PARANG END"], "[deg] Parallactic angle at end"),
        ("ESO TEL GEOLAT", PARANAL_LAT, "[deg] Tel geo latitude (+=North)"),
        ("ESO TEL GEOLON", PARANAL_LON, "[deg] Tel geo longitude (+=East)"),
        ("ESO TEL GEOELEV", PARANAL_ELEV, "[m] Elevation above sea level"),
        ("ESO TEL AMBI FWHM START", fwhm, "[arcsec] Observatory Seeing queried from AS"),
        ("ESO TEL AMBI FWHM END", fwhm, "[arcsec] Observatory Seeing queried from AS"),
        ("ESO TEL AMBI TEMP", 12.0, "[C] Observatory ambient temperature"),
        ("ESO TEL AMBI RHUM", 12.0, "[%] Observatory ambient relative humidity"),
        ("ESO TEL AMBI PRES START", 743.0, "[hPa] Observatory ambient air pressure"),
        ("ESO TEL AMBI PRES END", 743.0, "[hPa] Observatory ambient air pressure"),
    ]:
        _card(h, k, v, c)
    return h


def extension_header(profile: Profile, ifu: int, gains, rons) -> fits.Header:
    """Header of image extension ``CHANnn`` (without the data-describing cards)."""
    fmt = profile.detector
    ny, nx = fmt.raw_shape
    h = fits.Header()
    for k, v in [("XTENSION", "IMAGE"), ("BITPIX", 16), ("NAXIS", 2), ("NAXIS1", nx),
                 ("NAXIS2", ny), ("PCOUNT", 0), ("GCOUNT", 1), ("BZERO", 32768), ("BSCALE", 1)]:
        h[k] = v
    h["EXTNAME"] = (f"CHAN{ifu:02d}", "Extension name")
    tny, tnx = fmt.trimmed_shape
    for k, v, c in [
        ("ESO DET CHIP NAME", f"SIM-CCD{ifu:02d}", "Detector chip name"),
        ("ESO DET CHIP ID", f"ESO-CCD-SIM{ifu:02d}", "Detector chip identification"),
        ("ESO DET CHIP DATE", "2014-01-01", "Date of installation"),
        ("ESO DET CHIP INDEX", ifu, "Chip index"),
        ("ESO DET CHIP LIVE", True, "Detector alive"),
        ("ESO DET CHIP NX", tnx, "Physical active pixels in X"),
        ("ESO DET CHIP NY", tny, "Physical active pixels in Y"),
        ("ESO DET CHIP PSZX", 15.0, "[um] Size of pixel in X"),
        ("ESO DET CHIP PSZY", 15.0, "[um] Size of pixel in Y"),
        ("ESO DET OUTPUTS", 4, "Number of outputs"),
    ]:
        _card(h, k, v, c)
    for k, (v, c) in fmt.out_keywords(gains, rons, chip_index=ifu).items():
        _card(h, k, v, c)
    return h


def _pad(n: int) -> int:
    return (BLOCK - n % BLOCK) % BLOCK


def write_raw(path: Path, primary: fits.Header,
              extensions: Iterable[tuple[fits.Header, Callable[[], np.ndarray]]]) -> None:
    """Write a raw file: ``primary`` then, for each (header, make_data), the uint16 image.

    ``make_data`` is called only when its extension is written, so only one IFU is in
    memory at a time. Data go to disk as big-endian int16 with BZERO=32768 (value XOR
    0x8000), which is exactly how astropy stores uint16 scaled data.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        fh.write(primary.tostring().encode("ascii"))
        for header, make in extensions:
            data = make()
            if data.dtype != np.uint16 or data.shape != (header["NAXIS2"], header["NAXIS1"]):
                raise ValueError(f"{path.name}[{header['EXTNAME']}]: expected uint16 "
                                 f"{header['NAXIS2']}x{header['NAXIS1']}, got {data.dtype} {data.shape}")
            fh.write(header.tostring().encode("ascii"))
            buf = (data ^ np.uint16(0x8000)).astype(">u2", copy=False)
            fh.write(memoryview(np.ascontiguousarray(buf)).cast("B"))
            fh.write(b"\0" * _pad(data.nbytes))
            del data, buf
    tmp.replace(path)
