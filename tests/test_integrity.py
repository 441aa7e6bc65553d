"""check-integrity: FITS checksums of the raw files, kept in the database (MuseRed's command)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from astropy.io import fits
from click.testing import CliRunner

from musered.cli import cli
from musered.db import Database
from musered.ingest import update_db
from musered.integrity import check_file, check_integrity, integrity_summary
from musered.settings import load_settings

from archive_server import SimFile, make_fits

GOOD = ["MUSE.2017-06-16T01:34:56.867", "MUSE.2017-06-17T01:00:00.000"]
FZ = "MUSE.2017-06-16T10:40:27.000"           # a tile-compressed bias: checksums as stored
BAD = "MUSE.2017-06-16T02:00:00.123"           # one flipped data byte
NOSUM = "MUSE.2017-06-16T03:00:00.000"          # written without CHECKSUM/DATASUM


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def project(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for dp_id in GOOD:
        write(raw / f"{dp_id}.fits", make_fits(SimFile(dp_id, dp_cat="SCIENCE", dp_type="OBJECT",
                                                       object="IC4406", delivery="fits", exposure=600.0)))
    write(raw / f"{FZ}.fits.fz", make_fits(SimFile(FZ, delivery="fz")))
    corrupt = bytearray(make_fits(SimFile(BAD, dp_cat="SCIENCE", dp_type="OBJECT", object="IC4406",
                                          delivery="fits", exposure=600.0)))
    corrupt[-100] ^= 0xFF
    write(raw / f"{BAD}.fits", bytes(corrupt))
    with fits.open(io.BytesIO(make_fits(SimFile(NOSUM, delivery="fits")))) as hdul:
        for hdu in hdul:
            for key in ("CHECKSUM", "DATASUM"):
                hdu.header.remove(key, ignore_missing=True)
        hdul.writeto(raw / f"{NOSUM}.fits")
    path = tmp_path / "settings.yml"
    path.write_text(yaml.safe_dump({"workdir": str(tmp_path),
                                    "runs": {"R1": {"start_date": "2017-06-01", "end_date": "2017-06-15"}}}))
    settings = load_settings(path)
    database = Database(settings.database_url())
    update_db(settings, database, progress=False)
    return path, settings, database


def invoke(settings_path: Path, *args: str):
    result = CliRunner().invoke(cli, ["--settings", str(settings_path), "check-integrity", *args])
    assert "Traceback" not in result.output
    return result


def test_check_file_statuses(project):
    _, settings, _ = project
    raw = settings.raw_path
    good = check_file(raw / f"{GOOD[0]}.fits")
    assert good.status == "valid" and good.reason == "4 checksums match"      # 2 HDUs x 2 keywords
    assert check_file(raw / f"{FZ}.fits.fz").status == "valid"
    bad = check_file(raw / f"{BAD}.fits")
    assert bad.status == "invalid" and "mismatch in HDU 1" in bad.reason
    assert check_file(raw / f"{NOSUM}.fits").status == "unverified"
    assert check_file(raw / "nope.fits").status == "missing"
    short = raw / "short.fits"
    short.write_bytes((raw / f"{GOOD[0]}.fits").read_bytes()[:-2880])
    assert check_file(short).status == "invalid" and "truncated" in check_file(short).reason


def test_command_reports_bad_files_and_exits_1(project):
    settings_path, settings, _ = project
    result = invoke(settings_path)
    assert result.exit_code == 1
    assert "5 files verified (3 valid, 1 invalid, 1 unverified)" in result.output
    assert f"{BAD}.fits : INVALID (DATASUM mismatch in HDU 1)" in result.output
    assert result.output.strip().splitlines()[-1] == \
        "Error: 1 raw file failed the integrity check (listed above)"


def test_second_run_verifies_only_new_or_changed_files(project):
    settings_path, settings, database = project
    first = check_integrity(settings, database)
    assert len(first.checked) == 5 and first.skipped == 0
    again = check_integrity(settings, database)
    # valid and unverified files are not read again; the invalid one is (it may have been replaced)
    assert [c.status for c in again.checked] == ["invalid"] and again.skipped == 4
    good = settings.raw_path / f"{GOOD[1]}.fits"
    data = bytearray(good.read_bytes())
    data[-50] ^= 0x01
    good.write_bytes(bytes(data))                           # changed since: verified again, now invalid
    third = check_integrity(settings, database)
    assert {Path(c.path).name: c.status for c in third.checked} == {f"{BAD}.fits": "invalid",
                                                                   f"{GOOD[1]}.fits": "invalid"}
    assert len(check_integrity(settings, database, recheck=True).checked) == 5


def test_selection_by_night_name_run_and_glob(project):
    settings_path, settings, database = project
    names = lambda report: sorted(Path(c.path).name for c in report.checked)  # noqa: E731
    assert names(check_integrity(settings, database, ["2017-06-16"], recheck=True)) == [f"{GOOD[1]}.fits"]
    assert names(check_integrity(settings, database, ["R1"], recheck=True)) == sorted(
        [f"{GOOD[0]}.fits", f"{BAD}.fits", f"{NOSUM}.fits", f"{FZ}.fits.fz"])  # night 2017-06-15
    assert names(check_integrity(settings, database, ["*.fz"], recheck=True)) == [f"{FZ}.fits.fz"]
    result = invoke(settings_path, "2017-06-16T01:34:56.867")
    assert result.exit_code == 0 and "0 files verified; 1 already verified and unchanged" in result.output
    result = invoke(settings_path, "2017-06-16T01:34:56.867", "--recheck")
    assert result.exit_code == 0 and "1 file verified (1 valid)" in result.output
    result = invoke(settings_path, "2019-01-01")
    assert result.exit_code == 1 and result.output.startswith("Error: check-integrity 2019-01-01: no raw files")


def test_report_counts_and_lists_bad_files(project):
    settings_path, settings, database = project
    result = invoke(settings_path, "--report")
    assert result.exit_code == 0 and "5 files" in result.output and "not verified: 5" in result.output
    check_integrity(settings, database, ["2017-06-15"])
    (settings.raw_path / f"{GOOD[0]}.fits").unlink()
    check_integrity(settings, database, [f"{GOOD[0]}*"], recheck=True)
    summary = integrity_summary(settings, database)
    assert (summary["files"], summary["not verified"], summary["valid"], summary["invalid"],
            summary["unverified"], summary["missing"]) == (5, 1, 1, 1, 1, 1)  # FZ valid, GOOD[1] not verified
    result = invoke(settings_path, "--report")
    assert "Invalid or missing files:" in result.output and f"{BAD}.fits" in result.output
    assert invoke(settings_path, "--report", "--recheck").exit_code == 1
