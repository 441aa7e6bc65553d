"""`musered simulate`: raw format, headers, night plan, truth, statics and ingestion."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter

import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner

from musered.cli import cli
from musered.errors import MuseredError
from musered.nights import night_of
from musered.simulate import load_truth, simulate
from musered.simulate.plan import Target, night_plan
from musered.simulate.profiles import FULL, MINI
from musered.simulate.rawfile import extension_header, primary_header
from recipes.algorithms.instrument import detector_geometry, trim

PRIMARY_KEYS = [
    "TELESCOP", "INSTRUME", "OBJECT", "RA", "DEC", "EQUINOX", "EXPTIME", "MJD-OBS", "DATE-OBS",
    "UTC", "LST", "ARCFILE", "ORIGFILE", "ESO DPR CATG", "ESO DPR TYPE", "ESO DPR TECH",
    "ESO TPL ID", "ESO TPL START", "ESO TPL NEXP", "ESO TPL EXPNO", "ESO OBS ID", "ESO OBS NAME",
    "ESO OBS PROG ID", "ESO OBS TARG NAME", "ESO INS MODE", "ESO INS OPTI1 NAME",
    "ESO INS OPTI2 NAME", "ESO INS DROT MODE", "ESO INS DROT POSANG", "ESO INS LAMPNUM",
    "ESO INS TEMP7 VAL", "ESO DET READ CURNAME", "ESO DET READ CURID", "ESO DET BINX",
    "ESO DET BINY", "ESO TEL AIRM START", "ESO TEL AIRM END", "ESO TEL GEOLAT", "ESO TEL GEOLON",
    "ESO TEL GEOELEV", "ESO TEL AMBI FWHM START", "ESO TEL AMBI FWHM END",
]
EXT_KEYS = ["EXTNAME", "ESO DET CHIP NAME", "ESO DET CHIP ID", "ESO DET CHIP DATE",
            "ESO DET CHIP INDEX", "ESO DET CHIP LIVE", "ESO DET CHIP NX", "ESO DET CHIP NY"]
OUT_KEYS = ["NAME", "ID", "INDEX", "X", "Y", "NX", "NY", "PRSCX", "PRSCY", "OVSCX", "OVSCY",
            "GAIN", "CONAD", "RON"]


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """One mini night (2 science exposures) written through the command line."""
    out = tmp_path_factory.mktemp("sim") / "night"
    res = CliRunner().invoke(cli, ["simulate", str(out), "--seed", "7", "--exposures", "2",
                                   "--dataset", "NGC1", "--dark"])
    assert res.exit_code == 0, res.output
    assert "Wrote" in res.output
    return out


def _frames(out):
    return sorted((out / "raw").glob("MUSE.*.fits"))


@pytest.mark.parametrize("profile", [FULL, MINI])
def test_headers_carry_the_format_keywords(profile):
    plan = night_plan(dt.date(2024, 3, 10), Target("F", 150.0, -30.0), Target("S", 140.0, -30.0),
                      np.random.default_rng(0), n_exposures=1)
    arc = next(f for f in plan if f.kind == "ARC" and f.lamp == "Xe")
    h = primary_header(arc, profile)
    for k in PRIMARY_KEYS:
        assert k in h, k
    assert isinstance(h["UTC"], float) and isinstance(h["LST"], float)
    assert h["ESO DPR TYPE"] == "WAVE" and h["ESO DPR CATG"] == "CALIB"
    on = [i for i in range(1, h["ESO INS LAMPNUM"] + 1) if h[f"ESO INS LAMP{i} ST"]]
    assert [h[f"ESO INS LAMP{i} NAME"] for i in on] == ["CU-LAMP4"]
    assert all(h[f"ESO INS SHUT{i} ST"] for i in on)
    e = extension_header(profile, 3, [1.1, 1.12, 1.14, 1.16], [2.5, 2.5, 2.6, 2.6])
    for k in EXT_KEYS + [f"ESO DET OUT{n} {k}" for n in range(1, 5) for k in OUT_KEYS]:
        assert k in e, k
    assert e["EXTNAME"] == "CHAN03" and e["BITPIX"] == 16 and e["BZERO"] == 32768
    q = detector_geometry(e)
    assert (e["NAXIS2"], e["NAXIS1"]) == profile.detector.raw_shape
    assert (e["ESO DET CHIP NY"], e["ESO DET CHIP NX"]) == profile.detector.trimmed_shape
    if profile is FULL:
        assert (e["NAXIS1"], e["NAXIS2"]) == (4224, 4240)
        assert [(p.nx, p.ny, p.prscx, p.ovscy) for p in q] == [(2048, 2056, 32, 32)] * 4
        assert [(e[f"ESO DET OUT{n} X"], e[f"ESO DET OUT{n} Y"]) for n in range(1, 5)] == [
            (1, 1), (4096, 1), (4096, 4112), (1, 4112)]


def test_night_plan_follows_the_night_rule():
    plan = night_plan(dt.date(2024, 3, 10), Target("F", 150.0, -30.0), Target("S", 140.0, -30.0),
                      np.random.default_rng(1), n_exposures=4, dark=True)
    kinds = Counter(f.kind for f in plan)
    assert kinds == {"BIAS": 11, "FLAT": 11, "ARC": 15, "ILLUM": 2, "SKYFLAT": 3, "STD": 1,
                     "OBJECT": 4, "DARK": 3}
    assert {night_of(f.date_obs, dt.time(20, 40)) for f in plan} == {"2024-03-10"}
    # evening twilight before the science, calibrations after it
    t = {k: [f.date_obs for f in plan if f.kind == k] for k in kinds}
    assert max(t["SKYFLAT"]) < min(t["OBJECT"]) < max(t["OBJECT"]) < min(t["BIAS"])
    # one template per sequence with consistent numbering
    for k in ("BIAS", "FLAT", "ARC", "OBJECT"):
        seq = [f for f in plan if f.kind == k]
        assert len({f.tpl_start for f in seq}) == 1
        assert [f.tpl_expno for f in seq] == list(range(1, len(seq) + 1))
        assert all(f.tpl_nexp == len(seq) for f in seq)
    assert Counter(f.lamp for f in plan if f.kind == "ARC") == {"Ne": 5, "Xe": 5, "HgCd": 5}
    obj = [f for f in plan if f.kind == "OBJECT"]
    assert [f.posang for f in obj] == [0.0, 90.0, 180.0, 270.0]
    assert all(max(abs(o) for o in f.offset) <= 2.0 for f in obj)
    assert len({f.filename for f in plan}) == len(plan)


def test_raw_files_are_muse_format(night):
    files = _frames(night)
    assert len(files) == 11 + 11 + 15 + 1 + 3 + 1 + 2 + 3
    for path in files[:3] + files[-2:]:
        with fits.open(path, do_not_scale_image_data=True) as hl:
            assert hl[0].header["NAXIS"] == 0 and hl[0].data is None
            assert [h.name for h in hl[1:]] == ["CHAN01", "CHAN02"]
            for h in hl[1:]:
                assert h.header["BITPIX"] == 16 and h.header["BZERO"] == 32768
                assert h.header["BSCALE"] == 1
                assert (h.header["NAXIS2"], h.header["NAXIS1"]) == MINI.detector.raw_shape
            assert hl[0].header["ARCFILE"] == path.name
            assert path.name == f"MUSE.{hl[0].header['DATE-OBS']}.fits"
        data = fits.getdata(path, 1)
        assert data.dtype == np.uint16 and 900 < np.median(data) < 65535


def test_bias_levels_and_gains_match_truth(night):
    truth = load_truth(night)
    biases = [p for p in _frames(night) if truth.frames[p.name]["kind"] == "BIAS"]
    assert len(biases) == 11
    with fits.open(biases[0]) as hl:
        for ifu in (1, 2):
            ccd = truth.ccd(ifu)
            h = hl[f"CHAN{ifu:02d}"].header
            q = detector_geometry(h)
            raw = hl[f"CHAN{ifu:02d}"].data.astype(float)
            for p, port in enumerate(q):
                assert h[f"ESO DET OUT{p + 1} GAIN"] == pytest.approx(ccd.gain[p])
                assert h[f"ESO DET OUT{p + 1} RON"] == pytest.approx(ccd.ron[p])
                lvl = truth.frames[biases[0].name]["bias_mean"][ifu - 1][p]
                assert np.mean(raw[port.data]) == pytest.approx(lvl, abs=0.05)
                # the overscan tracks the level (same gradient, no 2-D structure)
                ovs = raw[port.overscan_x]
                noise = ccd.ron[p] / ccd.gain[p]
                assert abs(np.mean(ovs) - np.mean(raw[port.data])) < 0.5
                assert np.std(ovs) == pytest.approx(np.hypot(noise, 0.3), rel=0.15)


def test_flat_edges_and_dead_columns_follow_truth(night):
    truth = load_truth(night)
    flat = next(p for p in _frames(night) if truth.frames[p.name]["kind"] == "FLAT")
    with fits.open(flat) as hl:
        h = hl["CHAN01"].header
        q = detector_geometry(h)
        img = trim(hl["CHAN01"].data.astype(float), q)
    bias = np.median(img[:, :10])
    y = img.shape[0] // 4  # a row inside the bottom ports
    prof = img[y] - bias
    for s in truth.slices(1)[5:40:7]:
        left, right = s.edges_at(y + 1)
        plateau = np.median(prof[int(left) + 3:int(right) - 3])
        # 50 % crossing of the plateau, linear interpolation, converted to 1-based x
        i = int(np.floor(left)) - 2  # 0-based index of the pixel 1 px left of the edge
        seg = prof[i:i + 4] / plateau
        k = np.nonzero(seg >= 0.5)[0][0]
        assert k >= 1
        x50 = i + k - 1 + (0.5 - seg[k - 1]) / (seg[k] - seg[k - 1]) + 1
        assert x50 == pytest.approx(left, abs=0.15)
    for x in truth.ccd(1).dead_columns:  # zero QE: bias level only (950-1100 adu)
        for half in (img[: img.shape[0] // 2, x], img[img.shape[0] // 2:, x]):
            assert np.max(np.abs(half - np.median(half))) < 30
            assert np.median(half) < 1150 < np.median(img)


def test_arc_lines_fall_at_the_truth_wavelengths(night):
    truth = load_truth(night)
    arc = next(p for p in _frames(night)
               if truth.frames[p.name]["kind"] == "ARC" and truth.frames[p.name]["lamp"] == "Ne")
    with fits.open(arc) as hl:
        img = trim(hl["CHAN02"].data.astype(float), detector_geometry(hl["CHAN02"].header))
    s = truth.slices(2)[20]
    x = int(round(float(np.mean(s.edges_at(400.0)))))  # 1-based central column
    col = img[:, x - 1] - np.median(img[:, x - 1])
    ycen = np.arange(1, img.shape[0] + 1)
    lam = s.wavelength(x, ycen)
    k = np.argmax(col)
    win = slice(k - 3, k + 4)
    y_peak = np.sum(ycen[win] * col[win]) / np.sum(col[win])
    lam_peak = float(s.wavelength(x, y_peak))
    catalog = np.array([6402.248, 6506.528, 6382.991, 6334.428, 6266.495, 6143.063, 6929.467,
                        6678.276, 6217.281, 6163.594, 6074.338, 6096.163, 6717.043])
    assert np.min(np.abs(catalog - lam_peak)) < 0.1
    assert lam.min() < lam_peak < lam.max()


def test_truth_round_trips(night):
    truth = load_truth(night)
    files = {p.name for p in _frames(night)}
    assert set(truth.frames) == files
    assert truth.profile == "mini" and truth.data["n_ifus"] == 2
    assert set(truth.exposures) == {f for f in files if truth.frames[f]["kind"] in ("OBJECT", "STD")}
    obj = [e for e in truth.exposures.values() if e["kind"] == "OBJECT"]
    assert [e["posang"] for e in obj] == [0.0, 90.0]
    assert len(truth.sources["stars"]) >= 5
    sl = truth.slices(1)
    assert len(sl) == 48 and sl[0].wlc.shape == (3, 7) and sl[0].left.shape == (6,)
    # the simulator rebuilt from the same seed gives the same instrument
    from musered.simulate.exposure import Simulator

    sim = Simulator(MINI, 7)
    for a, b in zip(sim.layouts[0].slices, sl):
        np.testing.assert_allclose(a.left, b.left)
        np.testing.assert_allclose(a.wlc, b.wlc)
        assert a.slice_sky == b.slice_sky
    np.testing.assert_array_equal(truth.qe_map(2), sim.qe(2))
    np.testing.assert_allclose(truth.illumination(1), sim.illumination[0])
    r = truth.response()
    assert np.all(r["sensitivity"] > 0) and r["lambda"].size > 100
    cube, hdr = truth.skycube()
    assert cube.ndim == 3 and hdr["CTYPE3"] == "AWAV" and np.nanmax(cube) > 0
    # the scene rebuilt from truth.json renders the stored cube; another seeing moves only stars
    same, _ = truth.skycube(hdr["SEEING"])
    np.testing.assert_array_equal(same, cube)
    sharp, _ = truth.skycube(0.5 * hdr["SEEING"])
    assert sharp.max() > 1.5 * cube.max()
    np.testing.assert_allclose(sharp.sum(axis=(1, 2)), cube.sum(axis=(1, 2)), rtol=0.02)  # flux kept
    # the flat-field normalisation: QE, slice throughput, edges and pixel size of the layout
    lam = np.linspace(6000.0, 6900.0, 10)
    c = truth.flat_normalisation(lam)
    assert np.all((c > 0.9) & (c < 1.0)) and np.ptp(c) < 0.05
    assert truth.data["ccds"][0]["gain"] == truth.ccd(1).gain.tolist()


def test_static_calibrations_have_drs_formats(night):
    calib = night / "muse-calib"
    catgs = {}
    for p in calib.glob("*.fits"):
        catgs[fits.getheader(p)["ESO PRO CATG"]] = p
    assert set(catgs) == {"LINE_CATALOG", "GEOMETRY_TABLE", "ASTROMETRY_WCS", "EXTINCT_TABLE",
                          "STD_FLUX_TABLE", "FILTER_LIST", "SKY_LINES", "BADPIX_TABLE"}
    with fits.open(catgs["LINE_CATALOG"]) as hl:
        assert hl[0].header["VERSION"] == 3
        t = hl[1].data
        assert hl[1].columns["lambda"].format == "E" and hl[1].columns["flux"].format == "E"
        assert t["lambda"].dtype.kind == "f" and t["lambda"].dtype.itemsize == 4
        assert t["quality"].dtype.kind == "i" and "NeI" in set(t["ion"])
    with fits.open(catgs["GEOMETRY_TABLE"]) as hl:
        t = hl[1].data
        assert len(t) == 96 and set(t["SubField"]) == {1, 2}
    with fits.open(catgs["BADPIX_TABLE"]) as hl:
        assert [h.name for h in hl[1:]] == ["CHAN01", "CHAN02"]
        t = hl["CHAN01"].data
        dead = t[t["status"] == 8192]
        # untrimmed raw coordinates: a dead column is dark in a raw flat
        truth = load_truth(night)
        flat = next(p for p in _frames(night) if truth.frames[p.name]["kind"] == "FLAT")
        raw = fits.getdata(flat, "CHAN01")
        vals = raw[dead["ypos"] - 1, dead["xpos"] - 1]
        assert np.median(vals) < 1200 and np.median(raw) > 1500


def test_settings_and_nightlog_written(night):
    text = (night / "settings.yml").read_text()
    assert "muse_calib_path" in text and "NGC1" in text
    log = (night / "raw" / "MUSE.2024-03-10.NL.txt").read_text()
    assert "Weather observations\nTime\tConditions\tComment\n" in log


def test_mini_night_ingests_correctly(night):
    ingest = pytest.importorskip("musered.ingest")
    from musered.db import Database, sqlite_url
    from musered.db.models import Raw
    from musered.settings import load_settings

    settings = load_settings(night / "settings.yml")
    db = Database(sqlite_url(night / "musered.db"))
    ingest.update_db(settings, db, progress=False)
    with db.session() as s:
        rows = s.query(Raw).all()
        per = Counter((r.night, r.DPR_TYPE) for r in rows)
        objs = {r.OBJECT for r in rows if r.DPR_TYPE == "OBJECT"}
    assert per == {("2024-03-10", "BIAS"): 11, ("2024-03-10", "FLAT,LAMP"): 11,
                   ("2024-03-10", "WAVE"): 15, ("2024-03-10", "FLAT,LAMP,ILLUM"): 1,
                   ("2024-03-10", "FLAT,SKY"): 3, ("2024-03-10", "STD"): 1,
                   ("2024-03-10", "OBJECT"): 2, ("2024-03-10", "DARK"): 3}
    assert objs == {"NGC1"}


def test_same_seed_same_bytes(tmp_path):
    def digest(out):
        simulate(out, seed=11, kinds={"BIAS", "ARC"}, ifus=1, exposures=0)
        return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in _frames(out)}

    a = digest(tmp_path / "a")
    b = digest(tmp_path / "b")
    assert a == b and len(a) == 26
    simulate(tmp_path / "c", seed=12, kinds={"BIAS"}, ifus=1, exposures=0)
    c = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in _frames(tmp_path / "c")}
    assert not set(c.values()) & set(a.values())


def test_bad_arguments_are_one_line_errors(tmp_path):
    with pytest.raises(MuseredError, match="profile"):
        simulate(tmp_path, profile="huge")
    with pytest.raises(MuseredError, match="dataset"):
        simulate(tmp_path, dataset="a b")
    res = CliRunner().invoke(cli, ["simulate", str(tmp_path / "x"), "--start", "tomorrow"])
    assert res.exit_code == 1 and "Error: simulate: --start 'tomorrow'" in res.output
