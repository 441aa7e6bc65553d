"""update-qc: the QC keywords of real products (a small muse_bias run) in qc_MASTER_BIAS."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from calib_helpers import SMALL, ext_header, make_raw_image, primary_header, write_raw
from click.testing import CliRunner
from sqlalchemy import select

from musered.cli import cli
from musered.db import QcInfo, Reduced
from musered.errors import MuseredError
from musered.fitsheader import read_qc_headers
from musered.ingest import update_db
from musered.qctables import qc_column, qc_table_names, read_qc, update_qc
from musered.runner import run_step
from musered.settings import settings_from_dict
from recipes.registry import get_recipe


@pytest.fixture
def reduced(tmp_path, database):
    """Five 2-IFU biases of one sequence, ingested and reduced by muse_bias (merged file)."""
    rng = np.random.default_rng(1)
    raw = tmp_path / "raw"
    raw.mkdir()
    for k in range(5):
        images = {}
        for ifu in (1, 2):
            header = ext_header(SMALL, ifu)
            images[ifu] = (make_raw_image(SMALL, header, rng), header)
        write_raw(raw / f"MUSE.2017-06-16T10:40:{30 + k:02d}.000.fits", primary_header(index=k), images)
    settings = settings_from_dict({"workdir": str(tmp_path)}, base_dir=tmp_path)
    assert update_db(settings, database, progress=False).added == 5
    summary = run_step(settings, database, get_recipe("muse_bias"), progress=False, report=False)
    assert [r.status for r in summary.results] == ["ok"], summary.results
    return settings, database


def product_qc(path) -> dict[str, dict]:
    """hdu -> {QC column: value} straight from astropy, the reference."""
    out = {}
    with fits.open(path) as hdul:
        for hdu in hdul:
            name = "PRIMARY" if hdu is hdul[0] else hdu.name
            if name.endswith((".DQ", ".STAT")):
                continue
            cards = {qc_column(k): v for k, v in hdu.header.items() if k.startswith("ESO QC ")}
            if cards:
                out[name.removesuffix(".DATA")] = cards
    return out


def test_qc_values_equal_the_product_headers(reduced):
    settings, database = reduced
    report = update_qc(settings, database)
    with database.session() as session:
        (product,) = session.scalars(select(Reduced).where(Reduced.PRO_CATG == "MASTER_BIAS")).all()
    expected = product_qc(product.path)
    assert set(expected) == {"CHAN01", "CHAN02"}  # our muse_bias writes QC in each CHANnn.DATA
    assert report.rows == {"MASTER_BIAS": 2} and report.files_read >= 1 and not report.failed
    assert "qc_MASTER_BIAS" in qc_table_names(database)
    rows = read_qc(database, "MASTER_BIAS", version="0.1")
    assert [r["hdu"] for r in rows] == ["CHAN01", "CHAN02"]
    for row in rows:
        assert (row["name"], row["reduced_id"], row["recipe_name"], row["filename"], row["INS_MODE"]) == (
            product.name, product.id, "muse_bias", "MASTER_BIAS.fits", "WFM-NOAO-N")
        qc = {k: v for k, v in row.items() if k.startswith("QC_")}
        assert qc.keys() == expected[row["hdu"]].keys()
        for key, value in expected[row["hdu"]].items():
            assert qc[key] == pytest.approx(value, rel=1e-12) if isinstance(value, float) else qc[key] == value
    with database.session() as session:
        assert session.scalars(select(QcInfo.nrows).where(QcInfo.DPR_TYPE == "MASTER_BIAS")).all() == [2]

    # a second run reads nothing; --force reads again and replaces, not duplicates
    again = update_qc(settings, database)
    assert again.files_read == 0 and again.files_skipped == report.files_read + report.files_skipped
    forced = update_qc(settings, database, pro_catg="MASTER_BIAS", force=True)
    assert forced.files_read == 1 and forced.rows == {"MASTER_BIAS": 2}
    assert len(read_qc(database, "MASTER_BIAS")) == 2


def test_new_keyword_adds_a_column_and_errors(reduced, tmp_path):
    settings, database = reduced
    update_qc(settings, database)
    with database.session() as session:
        product = session.scalars(select(Reduced).where(Reduced.PRO_CATG == "MASTER_BIAS")).one()
    with fits.open(product.path, mode="update") as hdul:
        hdul[0].header["HIERARCH ESO QC BIAS EXTRA TEST"] = 7
    assert read_qc_headers(product.path)[0] == ("PRIMARY", {"ESO QC BIAS EXTRA TEST": 7})
    update_qc(settings, database, force=True)
    rows = read_qc(database, "MASTER_BIAS")
    assert [(r["hdu"], r.get("QC_BIAS_EXTRA_TEST")) for r in rows] == [
        ("CHAN01", None), ("CHAN02", None), ("PRIMARY", 7)]
    with pytest.raises(MuseredError, match="no MASTER_FLAT products in version 0.1 .*MASTER_BIAS"):
        update_qc(settings, database, pro_catg="MASTER_FLAT")
    with pytest.raises(MuseredError, match="no muse_flat products in version 0.1 .*muse_bias MASTER_BIAS"):
        update_qc(settings, database, recipe_name="muse_flat")
    assert update_qc(settings, database, pro_catg=["MASTER_BIAS"], recipe_name="muse_bias").files_skipped == 1
    with pytest.raises(MuseredError, match="not a product type"):
        update_qc(settings, database, pro_catg="master bias")
    with pytest.raises(MuseredError, match="no QC table for MASTER_FLAT .*MASTER_BIAS"):
        read_qc(database, "MASTER_FLAT")


def test_cli_update_qc(reduced, tmp_path):
    settings, database = reduced
    if not database.is_sqlite:
        pytest.skip("the CLI test uses the SQLite file")
    (tmp_path / "settings.yml").write_text(f"workdir: {tmp_path}\ndb: {database.path}\n")
    result = CliRunner().invoke(cli, ["--settings", str(tmp_path / "settings.yml"), "update-qc", "--type", "MASTER_BIAS"])
    assert result.exit_code == 0, result.output
    assert "qc_MASTER_BIAS: 2 rows written" in result.output
    result = CliRunner().invoke(cli, ["--settings", str(tmp_path / "settings.yml"), "update-qc", "--type", "NOPE"])
    assert result.exit_code == 1 and "no NOPE products" in result.output
