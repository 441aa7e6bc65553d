"""The observing plan of a simulated night: what is taken when, with which template.

A Paranal night ``D`` (ISO date of the evening) runs: twilight sky flats at dusk
(≈ 23:10 UT on D), a standard star, an ILLUM flat and the dithered science exposures of
the field during the night (UT date D+1), a second ILLUM flat after the science, and the
daytime calibrations in the morning of D+1 (bias, lamp flats, arcs, optional darks). With
the default 20:40 UT night cutoff all of them belong to night D.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import numpy as np

PARANAL_LAT = -24.627222
PARANAL_LON = -70.404167
PARANAL_ELEV = 2635.0
#: Largest commanded dither of the science exposures along each axis [arcsec]: a few
#: spaxels, as in the MUSE deep-field patterns (offsets ≲ 1″ between 90° rotations), so
#: that the rotated exposures of the 4.8″-wide mini field still share their central stars.
DITHER = 0.6


@dataclass
class FramePlan:
    """One raw frame to simulate (all the header-relevant facts)."""

    kind: str  # BIAS, DARK, FLAT, ILLUM, ARC, SKYFLAT, STD, OBJECT
    date_obs: dt.datetime
    exptime: float
    night: str
    dpr_catg: str
    dpr_type: str
    tpl_id: str
    tpl_start: str
    tpl_nexp: int
    tpl_expno: int
    object: str
    lamp: str | None = None  # Ne, Xe, HgCd for arcs; "cont" for lamp flats
    ra: float = 0.0  # header pointing (deg)
    dec: float = 0.0
    posang: float = 0.0
    offset: tuple[float, float] = (0.0, 0.0)  # commanded offset (ξ east, η north) arcsec
    pointing_error: tuple[float, float] = (0.0, 0.0)  # true minus header pointing, arcsec
    airmass: float = 1.0
    seeing: float = 0.8
    temp7: float = 10.0
    target: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return f"MUSE.{date_obs_string(self.date_obs)}.fits"


def date_obs_string(t: dt.datetime) -> str:
    """``YYYY-MM-DDThh:mm:ss.sss`` as the archive writes DATE-OBS."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def mjd(t: dt.datetime) -> float:
    """Modified Julian Date of a naive UTC datetime."""
    return (t - dt.datetime(1858, 11, 17)).total_seconds() / 86400.0


def lst_seconds(t: dt.datetime, lon_deg: float = PARANAL_LON) -> float:
    """Local mean sidereal time in seconds (GMST, IAU 1982 approximation)."""
    d = mjd(t) - 51544.5
    gmst_h = (18.697374558 + 24.06570982441908 * d) % 24.0
    return ((gmst_h + lon_deg / 15.0) % 24.0) * 3600.0


def _hour_angle_dec_lat(ra: float, dec: float, lst_s: float) -> tuple[float, float, float]:
    return math.radians(lst_s / 240.0 - ra), math.radians(dec), math.radians(PARANAL_LAT)


def zenith_cos(ra: float, dec: float, lst_s: float) -> float:
    """cos z of (ra, dec) deg at Paranal at local sidereal time ``lst_s`` [s]."""
    ha, d, lat = _hour_angle_dec_lat(ra, dec, lst_s)
    return math.sin(lat) * math.sin(d) + math.cos(lat) * math.cos(d) * math.cos(ha)


def airmass_young_irvine(cosz: float) -> float:
    """Airmass of zenith distance z (from cos z) by Young & Irvine (1967),
    sec z · (1 − 0.0012 (sec² z − 1)): the formula of the DRS (``muse_astro_compute_airmass``);
    capped at 3 (cos z ≤ 1/3, or the source below the horizon)."""
    secz = 1.0 / max(cosz, 1.0 / 3.0)
    return float(min(secz * (1.0 - 0.0012 * (secz * secz - 1.0)), 3.0))


def effective_airmass(ra: float, dec: float, lst_start_s: float, exptime: float) -> float:
    """Airmass of an exposure as the DRS computes it (``muse_astro_compute_airmass``): the
    Young & Irvine airmass at start, middle and end, weighted 1/6, 2/3, 1/6 (Simpson), the
    sidereal time advancing by EXPTIME [s] from ``lst_start_s`` (header LST). For an airmass
    monotonic in time it lies between the start and end values."""
    steps = [airmass_young_irvine(zenith_cos(ra, dec, lst_start_s + f * exptime)) for f in (0.0, 0.5, 1.0)]
    return (steps[0] + 4.0 * steps[1] + steps[2]) / 6.0


def parallactic_angle(ra: float, dec: float, lst_s: float) -> float:
    """Parallactic angle [deg], -180..180: the direction of the zenith seen from the source,
    from north through east (ESO ``TEL PARANG``; negative east of the meridian). The same
    formula as the recipes' fallback ``recipes.algorithms.dar.parallactic_angle``."""
    ha, d, lat = _hour_angle_dec_lat(ra, dec, lst_s)
    return math.degrees(math.atan2(math.sin(ha), math.tan(lat) * math.cos(d) - math.sin(d) * math.cos(ha)))


def header_pointing(frame: FramePlan) -> tuple[float, float, float]:
    """RA, DEC [deg] and LST [s] at the start, rounded as the raw header writes them."""
    return round(frame.ra, 6), round(frame.dec, 6), round(lst_seconds(frame.date_obs), 3)


def telescope_keywords(frame: FramePlan) -> dict[str, float]:
    """``TEL AIRM START/END`` (Young & Irvine airmass at the start and end) and ``TEL PARANG
    START/END`` [deg] of a frame, from its header RA/DEC/LST and EXPTIME like the DRS
    (the sidereal time advances by EXPTIME). Six decimals so that the DRS's effective
    airmass (:func:`effective_airmass`), which the simulator renders, is inside the
    interval."""
    ra, dec, lst = header_pointing(frame)
    end = lst + frame.exptime
    a0, a1 = (airmass_young_irvine(zenith_cos(ra, dec, t)) for t in (lst, end))
    # round outward (the lower value down, the upper up): the interval keeps the effective
    # airmass even when it changes by less than 1e-6 (short exposures near the zenith)
    lo, hi = math.floor(min(a0, a1) * 1e6) / 1e6, math.ceil(max(a0, a1) * 1e6) / 1e6
    return {
        "ESO TEL AIRM START": lo if a0 <= a1 else hi,
        "ESO TEL AIRM END": hi if a0 <= a1 else lo,
        "ESO TEL PARANG START": round(parallactic_angle(ra, dec, lst), 4),
        "ESO TEL PARANG END": round(parallactic_angle(ra, dec, end), 4),
    }


def frame_airmass(frame: FramePlan) -> float:
    """The airmass a frame is rendered with: the DRS's effective airmass of its header."""
    ra, dec, lst = header_pointing(frame)
    return effective_airmass(ra, dec, lst, frame.exptime)


@dataclass(frozen=True)
class Target:
    name: str
    ra: float
    dec: float


def _tpl_start(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S")


def _jitter(rng: np.random.Generator) -> dt.timedelta:
    return dt.timedelta(milliseconds=int(rng.integers(0, 999)))


def night_plan(night: dt.date, field: Target, std: Target, rng: np.random.Generator,
               n_exposures: int = 4, dark: bool = False, exptime: float = 600.0,
               flat_exptime: float = 15.0, arc_exptime: float = 5.0,
               illum_exptime: float = 10.0) -> list[FramePlan]:
    """All frames of night ``night`` in time order.

    Science: ``n_exposures`` exposures of ``field`` in one template, dithered by up to
    ``DITHER`` arcsec per axis and rotated by 0/90/180/270 degrees in turn, each with a
    random true pointing error (σ 0.3″ per axis; recorded, not in the header).
    """
    iso = night.isoformat()
    d0 = dt.datetime.combine(night, dt.time(0, 0))
    d1 = d0 + dt.timedelta(days=1)
    frames: list[FramePlan] = []
    seeing0 = float(rng.uniform(0.6, 1.0))

    def seq(kind, start, n, exptime, dpr_catg, dpr_type, tpl_id, obj, step, **kw):
        lamps = kw.pop("lamps", None)
        exptimes = kw.pop("exptimes", None)
        t = start
        out = []
        for i in range(n):
            e = exptimes[i] if exptimes else exptime
            f = FramePlan(kind=kind, date_obs=t + _jitter(rng), exptime=e, night=iso,
                          dpr_catg=dpr_catg, dpr_type=dpr_type, tpl_id=tpl_id,
                          tpl_start=_tpl_start(start - dt.timedelta(seconds=20)), tpl_nexp=n,
                          tpl_expno=i + 1, object=obj, lamp=lamps[i] if lamps else kw.get("lamp"),
                          **{k: v for k, v in kw.items() if k != "lamp"})
            out.append(f)
            t = t + dt.timedelta(seconds=e + step)
        return out

    # dusk twilight: sky getting darker, exposure time grows
    zen_ra = (lst_seconds(d0 + dt.timedelta(hours=23, minutes=10)) / 240.0) % 360.0
    frames += seq("SKYFLAT", d0 + dt.timedelta(hours=23, minutes=10), 3, 0.0, "CALIB", "FLAT,SKY",
                  "MUSE_wfm_cal_skyflat", "SKYFLAT", 40.0, exptimes=[5.0, 10.0, 20.0],
                  ra=zen_ra, dec=PARANAL_LAT, seeing=seeing0)
    t_std = d1 + dt.timedelta(minutes=5)
    frames += seq("STD", t_std, 1, 60.0, "CALIB", "STD", "MUSE_wfm_cal_specphot", std.name, 60.0,
                  ra=std.ra, dec=std.dec,
                  seeing=seeing0, target=std.name)
    frames += seq("ILLUM", d1 + dt.timedelta(minutes=20), 1, illum_exptime, "CALIB",
                  "FLAT,LAMP,ILLUM", "MUSE_wfm_cal_illum", "ILLUM", 30.0, lamp="cont")
    t = d1 + dt.timedelta(minutes=25)
    tpl = _tpl_start(t - dt.timedelta(seconds=20))
    for i in range(n_exposures):
        posang = float((90 * i) % 360)
        off = (0.0, 0.0) if i == 0 else (float(rng.uniform(-DITHER, DITHER)), float(rng.uniform(-DITHER, DITHER)))
        err = (float(rng.normal(0, 0.3)), float(rng.normal(0, 0.3)))
        ra = field.ra + off[0] / 3600.0 / math.cos(math.radians(field.dec))
        dec = field.dec + off[1] / 3600.0
        tt = t + _jitter(rng)
        frames.append(FramePlan(
            kind="OBJECT", date_obs=tt, exptime=exptime, night=iso, dpr_catg="SCIENCE",
            dpr_type="OBJECT", tpl_id="MUSE_wfm_obs_genericoffset", tpl_start=tpl,
            tpl_nexp=n_exposures, tpl_expno=i + 1, object=field.name, ra=ra, dec=dec,
            posang=posang, offset=off, pointing_error=err,
            seeing=float(np.clip(seeing0 + rng.normal(0, 0.08), 0.5, 1.4)),
            temp7=10.0 - 0.3 * i, target=field.name,
        ))
        t = t + dt.timedelta(seconds=exptime + 90.0)
    if n_exposures > 2:
        frames += seq("ILLUM", t + dt.timedelta(minutes=2), 1, illum_exptime, "CALIB",
                      "FLAT,LAMP,ILLUM", "MUSE_wfm_cal_illum", "ILLUM", 30.0, lamp="cont",
                      temp7=10.0 - 0.3 * n_exposures)
    # morning calibrations
    m = d1 + dt.timedelta(hours=10, minutes=5)
    frames += seq("BIAS", m, 11, 0.0, "CALIB", "BIAS", "MUSE_wfm_cal_bias", "BIAS", 70.0)
    frames += seq("FLAT", m + dt.timedelta(minutes=20), 11, flat_exptime, "CALIB", "FLAT,LAMP",
                  "MUSE_wfm_cal_specflat", "FLAT,LAMP", 45.0, lamp="cont")
    lamps = ["Ne"] * 5 + ["Xe"] * 5 + ["HgCd"] * 5
    frames += seq("ARC", m + dt.timedelta(minutes=40), 15, arc_exptime, "CALIB", "WAVE",
                  "MUSE_wfm_cal_wave", "WAVE", 40.0, lamps=lamps)
    if dark:
        frames += seq("DARK", m + dt.timedelta(hours=1, minutes=10), 3, 1800.0, "CALIB", "DARK",
                      "MUSE_wfm_cal_dark", "DARK", 30.0)
    for f in frames:
        f.temp7 = f.temp7 if f.kind in ("OBJECT", "ILLUM") else 10.0
        if f.kind in ("BIAS", "DARK", "FLAT", "ARC", "ILLUM"):
            # lamp and dark frames: the telescope parked at the zenith, not tracking
            f.ra, f.dec = (lst_seconds(f.date_obs) / 240.0) % 360.0, PARANAL_LAT
        f.airmass = frame_airmass(f)
    frames.sort(key=lambda f: f.date_obs)
    return frames
