"""Product keywords the ESO DRS reads or writes (issue 14), on synthetic headers and tables:
single-IFU keywords of pixel tables, keyword spelling (the old spelling still read), the
celestial WCS of projected tables, DATE/ANCESTOR/SCIENCE and PARAM values as the DRS
prints them. The recipe tests check the same keywords on real products
(test_scibasic, test_standard, test_twilight)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from recipes.algorithms.astrometry import project_to_sky, read_astrometry
from recipes.algorithms.origin import pack_origin
from recipes.algorithms.pixtable import PixTable, make_pixtable
from recipes.algorithms.postprocess import apply_flat_field_spectrum, merge_ifus
from recipes.base import format_param
from recipes.provenance import flat_flux_sky, flat_flux_sky_key, product_header, set_ifu_keywords


def _raw_extension() -> fits.Header:
    h = fits.Header()
    h["EXTNAME"] = "CHAN07"
    h["HIERARCH ESO DET CHIP NAME"] = "CCD07"
    h["HIERARCH ESO DET CHIP NX"] = 4096
    h["HIERARCH ESO DET OUTPUTS"] = 4
    for port, (x, y) in enumerate(((1, 1), (4096, 1), (4096, 4112), (1, 4112)), start=1):
        h[f"HIERARCH ESO DET OUT{port} X"] = x
        h[f"HIERARCH ESO DET OUT{port} Y"] = y
        h[f"HIERARCH ESO DET OUT{port} GAIN"] = 1.1 + port / 100
        h[f"HIERARCH ESO DET OUT{port} PRSCX"] = 32
        h[f"HIERARCH ESO DET OUT{port} OVSCY"] = 32
    h["HIERARCH ESO INS MODE"] = "WFM-NOAO-N"  # not a DET keyword: not copied
    return h


def _table(ifu: int, n: int = 200, header: fits.Header | None = None) -> PixTable:
    rng = np.random.default_rng(ifu)
    h = header.copy() if header is not None else fits.Header()
    h["DATE-OBS"] = "2024-03-11T00:25:00.545"
    h["RA"], h["DEC"] = 121.3, -30.0
    h["HIERARCH ESO INS MODE"] = "WFM-NOAO-N"
    h["EXTNAME"] = f"CHAN{ifu:02d}"
    xoff = np.full(n, 100)
    origin = pack_origin(np.full(n, ifu), rng.integers(1, 49, n), xoff + rng.integers(1, 80, n),
                         rng.integers(1, 4113, n), xoff)  # fmt: skip
    return make_pixtable(
        {"xpos": rng.uniform(0, 300, n), "ypos": rng.uniform(0, 300, n), "lambda": rng.uniform(4750, 9350, n),
         "data": rng.normal(100, 10, n), "dq": np.zeros(n, np.int32), "stat": np.full(n, 100.0),
         "origin": origin},
        h, xpos="pix", ypos="pix",
    )  # fmt: skip


def test_single_ifu_keywords_from_raw_flat_and_twilight():
    header = fits.Header()
    flat_ext = fits.Header({"HIERARCH ESO QC FLAT MASTER INTFLUX": 2.2e11})
    twilight = fits.Header({"HIERARCH ESO DRS MUSE FLAT FLUX SKY7": 2.9e10, "HIERARCH ESO DRS MUSE FLAT FLUX SKY1": 1.0})
    set_ifu_keywords(header, 7, _raw_extension(), flat_ext, twilight)
    assert header["EXTNAME"] == "CHAN07"
    assert header["ESO DET CHIP NAME"] == "CCD07" and header["ESO DET OUTPUTS"] == 4
    assert [header[f"ESO DET OUT{p} X"] for p in range(1, 5)] == [1, 4096, 4096, 1]
    assert header["ESO DET OUT3 GAIN"] == pytest.approx(1.13)
    assert not [k for k in header if k.endswith(("PRSCX", "OVSCY"))] and "ESO INS MODE" not in header
    assert header["ESO DRS MUSE FLAT FLUX LAMP"] == 2.2e11
    assert header["ESO DRS MUSE FLAT FLUX SKY"] == 2.9e10  # IFU 7's, not IFU 1's


def test_lamp_flux_of_a_single_ifu_drs_flat_and_absent_inputs():
    header = fits.Header()
    drs_primary = fits.Header({"HIERARCH ESO QC FLAT MASTER INTFLUX": 5.0e10})
    set_ifu_keywords(header, 2, None, fits.Header(), None, drs_primary)
    assert header["ESO DRS MUSE FLAT FLUX LAMP"] == 5.0e10
    assert "ESO DRS MUSE FLAT FLUX SKY" not in header and "ESO DET OUT1 X" not in header


def test_sky_flux_spelling_new_and_old():
    assert flat_flux_sky_key(3) == "ESO DRS MUSE FLAT FLUX SKY3" and flat_flux_sky_key() == "ESO DRS MUSE FLAT FLUX SKY"
    old = fits.Header({"HIERARCH ESO DRS MUSE FLAT FLUX SKY03": 7.0})  # products of earlier musered versions
    assert flat_flux_sky(old, 3) == 7.0
    assert flat_flux_sky(fits.Header({"HIERARCH ESO DRS MUSE FLAT FLUX SKY12": 4.0}), 12) == 4.0
    assert flat_flux_sky(old, 4) is None


def test_single_ifu_table_keeps_extname_merged_tables_drop_it(tmp_path: Path):
    path = _table(5).write(tmp_path / "PIXTABLE_OBJECT_0001-05.fits")
    assert fits.getheader(path)["EXTNAME"] == "CHAN05"
    read = PixTable.read(path)
    assert read.header["EXTNAME"] == "CHAN05"
    both = PixTable.concatenate([_table(5), _table(6)])
    assert "EXTNAME" not in both.header
    merged = merge_ifus([_table(5)])  # the DRS's PIXTABLE_REDUCED has none either
    assert "EXTNAME" not in merged.header
    assert merged.header["ESO DRS MUSE PIXTABLE FFCORR"] == 1


def test_drs_ffcorr_means_the_flat_field_spectrum_is_applied():
    from astropy.table import Table

    pt = _table(1)
    pt.flat_field = Table({"lambda": [4000.0, 10000.0], "data": [2.0, 2.0]})
    pt.header["HIERARCH ESO DRS MUSE PIXTABLE FFCORR"] = 1  # a DRS table, already corrected
    before = pt.data.copy()
    assert apply_flat_field_spectrum(pt) is False
    np.testing.assert_array_equal(pt.data, before)
    pt.header.remove("ESO DRS MUSE PIXTABLE FFCORR")
    assert apply_flat_field_spectrum(pt) is True
    np.testing.assert_allclose(pt.data, 2 * before, rtol=1e-6)


def test_projected_table_has_the_celestial_wcs_the_drs_wants():
    pt = _table(1)
    cd, crpix = read_astrometry(None, "WFM-NOAO-N")
    project_to_sky(pt, cd, crpix, -1.0)
    h = pt.header
    assert (h["CTYPE1"], h["CTYPE2"], h["CUNIT1"], h["CUNIT2"]) == ("RA---TAN", "DEC--TAN", "deg", "deg")
    assert (h["CRPIX1"], h["CRPIX2"]) == crpix
    # posang 0: the astrometric CD itself, 0.2"/pixel
    np.testing.assert_allclose([[h["CD1_1"], h["CD1_2"]], [h["CD2_1"], h["CD2_2"]]], cd)
    assert abs(abs(h["CD1_1"]) * 3600 - 0.2) < 0.01
    pt = _table(1)
    pt.header["HIERARCH ESO INS DROT POSANG"] = 90.0
    project_to_sky(pt, cd, crpix, -1.0)
    assert abs(pt.header["CD1_1"]) < 1e-12 and abs(abs(pt.header["CD1_2"]) * 3600 - 0.2) < 0.01


def test_date_ancestor_science_and_param_values():
    template = fits.Header()
    template["DATE"] = "2024-03-11T00:25:00.545"
    template["DATE-OBS"] = "2024-03-11T00:25:00.545"
    template["ARCFILE"] = "MUSE.2024-03-11T00:25:00.545.fits"
    params = {"ovscsigma": 30.0, "skyhalfwidth": 5.0, "skybinsize": 0.1, "nifu": 1, "crop": True,
              "skyreject": (15.0, 15.0, 1.0), "skylines": (5577.339, 6300.304)}  # fmt: skip
    raws = [(Path("/raw/MUSE.x.fits"), "OBJECT")]
    h = product_header("PIXTABLE_OBJECT", "muse_scibasic", params, raws, template=template)
    date = datetime.strptime(h["DATE"], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    assert abs((datetime.now(timezone.utc) - date).total_seconds()) < 600
    assert h["DATE-OBS"] == "2024-03-11T00:25:00.545"
    assert h["ESO PRO ANCESTOR"] == "MUSE.2024-03-11T00:25:00.545.fits"
    assert h["ESO PRO SCIENCE"] is True
    values = {h[f"ESO PRO REC1 PARAM{i} NAME"]: h[f"ESO PRO REC1 PARAM{i} VALUE"] for i in range(1, 8)}
    assert values == {"ovscsigma": "30", "skyhalfwidth": "5", "skybinsize": "0.1", "nifu": "1", "crop": "true",
                      "skyreject": "15,15,1", "skylines": "5577.339,6300.304"}  # fmt: skip
    for catg in ("DATACUBE_FINAL", "PIXTABLE_REDUCED", "OBJECT_RED"):
        assert product_header(catg, "r", {}, raws)["ESO PRO SCIENCE"] is True
    for catg in ("MASTER_BIAS", "TWILIGHT_CUBE", "STD_RESPONSE"):
        assert product_header(catg, "r", {}, raws)["ESO PRO SCIENCE"] is False
    # no ARCFILE: the first raw's name; a product template passes its ancestor on
    assert product_header("MASTER_BIAS", "r", {}, raws)["ESO PRO ANCESTOR"] == "MUSE.x.fits"
    assert product_header("DATACUBE_FINAL", "r", {}, [], template=h)["ESO PRO ANCESTOR"] == template["ARCFILE"]
    assert format_param(0.3125) == "0.3125" and format_param(-1.0) == "-1" and format_param("x") == "x"
