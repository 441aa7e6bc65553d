"""retrieve-data against a fake ESO archive on 127.0.0.1 (real HTTP through astroquery and pyvo)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import keyring
import keyring.backend
import pytest
import yaml
from astropy.io import fits
from click.testing import CliRunner
from sqlalchemy import func, select

from musered.archive import (
    ArchiveConfig,
    Rejected,
    adql_condition,
    filter_terms,
    local_files,
    verify_delivery,
)
from musered.cli import cli
from musered.db import Database, sqlite_url
from musered.db.models import Raw, Retrieved
from musered.errors import MuseredError

from archive_server import FakeArchive, SimFile, lzw_compress, make_fits

SCI1 = "MUSE.2017-06-16T01:34:56.867"
SCI2 = "MUSE.2017-06-16T02:00:00.123"
BIASES = [f"MUSE.2017-06-16T10:40:{s:02d}.000" for s in (27, 29, 31)]
FLAT_FITS = "MUSE.2017-06-16T11:00:00.000"
FLAT_Z = "MUSE.2017-06-16T11:01:00.000"
ARC_Z = "MUSE.2017-06-16T11:10:00.000"
DARK = "MUSE.2017-06-16T12:00:00.000"  # a calibration of night 2017-06-15 nobody associates
PRIV = "MUSE.2017-06-18T03:00:00.000"
PRIV_BIAS = "MUSE.2017-06-18T10:40:00.000"
AO_FLAT = "MUSE.2017-06-16T12:30:00.000"  # the only WFM-AO-N file: a calibration of night 2017-06-15
CALIBS = [*BIASES, FLAT_FITS, FLAT_Z, ARC_Z]
PASSWORD = "s3cr3t-Pa55"


def simulated_files() -> list[SimFile]:
    files = [
        SimFile(SCI1, dp_cat="SCIENCE", dp_type="OBJECT", object="IC4406", target="IC4406",
                exposure=600.0, calibs=[*CALIBS, SCI1 + ".NL"]),
        SimFile(SCI2, dp_cat="SCIENCE", dp_type="OBJECT", object="IC4406", target="IC4406",
                exposure=600.0, calibs=[*CALIBS, SCI2 + ".NL"]),
        SimFile(SCI1 + ".NL", dp_cat="", dp_type="NIGHTLOG", delivery="nightlog"),
        SimFile(SCI2 + ".NL", dp_cat="", dp_type="NIGHTLOG", delivery="nightlog"),
        *[SimFile(b, dp_type="BIAS", object="BIAS") for b in BIASES],
        SimFile(FLAT_FITS, dp_type="FLAT,LAMP", object="FLAT,LAMP", delivery="fits", exposure=15.0),
        SimFile(FLAT_Z, dp_type="FLAT,LAMP", object="FLAT,LAMP", delivery="Z", exposure=15.0),
        SimFile(ARC_Z, dp_type="WAVE", object="WAVE", delivery="Z", exposure=10.0),
        SimFile(DARK, dp_type="DARK", object="DARK", exposure=1800.0),
        SimFile(PRIV, dp_cat="SCIENCE", dp_type="OBJECT", object="NGC1234", target="NGC1234",
                proprietary=True, calibs=[PRIV_BIAS]),
        SimFile(PRIV_BIAS, dp_type="BIAS", object="BIAS"),
        SimFile(AO_FLAT, dp_type="FLAT,LAMP", object="FLAT,LAMP", ins_mode="WFM-AO-N", exposure=15.0),
    ]
    return files


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring that lives in memory, so tests never touch the user's keyring."""

    priority = 1

    def __init__(self):
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.store.get((service, username))

    def set_password(self, service, username, password):
        self.store[(service, username)] = password

    def delete_password(self, service, username):
        self.store.pop((service, username), None)


@pytest.fixture(autouse=True)
def memory_keyring(monkeypatch):
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    monkeypatch.delenv("MUSERED_ESO_PASSWORD", raising=False)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def fake():
    with FakeArchive(simulated_files(), users={"alice": PASSWORD}) as archive:
        yield archive


@pytest.fixture
def project(tmp_path, fake) -> Path:
    settings = {
        "workdir": str(tmp_path),
        "datasets": {
            "IC4406": {"archive_filter": {"target": "IC4406"}},
            "NGC1234": {"archive_filter": {"target": "NGC1234"}},
        },
        "retrieve_data": fake.settings_block(),
    }
    path = tmp_path / "settings.yml"
    path.write_text(yaml.safe_dump(settings))
    return path


def run(project: Path, *args: str):
    result = CliRunner().invoke(cli, ["--settings", str(project), "retrieve-data", *args])
    output = result.output
    assert "Traceback" not in output, output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def raw_dir(project: Path) -> Path:
    return project.parent / "raw"


def database(project: Path) -> Database:
    return Database(sqlite_url(project.parent / "musered.db"))


def recorded(project: Path) -> set[str]:
    with database(project).session() as session:
        return set(session.scalars(select(Retrieved.dp_id)))


def expected_names() -> set[str]:
    return ({f"{SCI1}.fits.fz", f"{SCI2}.fits.fz", f"{SCI1}.NL.txt", f"{SCI2}.NL.txt"}
            | {f"{b}.fits.fz" for b in BIASES}
            | {f"{FLAT_FITS}.fits", f"{FLAT_Z}.fits", f"{ARC_Z}.fits"})


def names_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file()} if folder.exists() else set()


# --------------------------------------------------------------------------------------
# the command


def test_first_retrieval_gets_science_calibrations_and_night_logs(project, fake):
    result = run(project, "IC4406", "--no-update-db")
    assert result.exit_code == 0, result.output
    raw = raw_dir(project)
    assert names_in(raw) == expected_names()
    assert not (raw / ".retrieve-incoming").exists()
    # .fits.Z deliveries were uncompressed by astroquery and are valid FITS
    with fits.open(raw / f"{ARC_Z}.fits") as hdul:
        assert hdul[0].header["ARCFILE"] == f"{ARC_Z}.fits"
        assert hdul[0].header["HIERARCH ESO DPR TYPE"] == "WAVE"
    with fits.open(raw / f"{SCI1}.fits.fz") as hdul:
        assert hdul[0].header["OBJECT"] == "IC4406"
    assert "Weather observations" in (raw / f"{SCI1}.NL.txt").read_text()
    assert recorded(project) == {SCI1, SCI2}
    assert DARK not in fake.downloads and PRIV not in fake.downloads
    assert "Downloaded 10 files" in result.output


def test_progress_bars_over_files_and_bytes(project, fake):
    result = run(project, "IC4406", "--no-update-db", "--progress")
    assert result.exit_code == 0, result.output
    assert names_in(raw_dir(project)) == expected_names()


def test_one_science_file_per_calselector_request(project, fake):
    data = yaml.safe_load(project.read_text())
    data["retrieve_data"]["batch_size"] = 1  # single XML answers instead of multipart
    project.write_text(yaml.safe_dump(data))
    result = run(project, "IC4406", "--no-update-db")
    assert result.exit_code == 0, result.output
    assert fake.calselector_requests == [[SCI1], [SCI2]]
    assert names_in(raw_dir(project)) == expected_names()
    assert recorded(project) == {SCI1, SCI2}


def test_second_run_downloads_nothing(project, fake):
    assert run(project, "IC4406", "--no-update-db").exit_code == 0
    downloads, calsel = len(fake.downloads), len(fake.calselector_requests)
    result = run(project, "IC4406", "--no-update-db")
    assert result.exit_code == 0, result.output
    assert len(fake.downloads) == downloads
    # both science files are recorded complete: the calibration selector is not asked again
    assert len(fake.calselector_requests) == calsel
    assert "Downloaded 0 files" in result.output
    assert "IC4406: 2 science files in the archive, 2 already in raw_path; calibrations asked for 0" \
        in result.output
    result = run(project, "IC4406", "--dry-run")
    assert "Would download 0 files" in result.output
    assert len(fake.calselector_requests) == calsel
    # --force asks the calibration selector again, still downloading nothing
    result = run(project, "IC4406", "--no-update-db", "--force")
    assert result.exit_code == 0, result.output
    assert len(fake.calselector_requests) == calsel + 1
    assert len(fake.downloads) == downloads


def test_interrupted_after_science_file_resumes_with_its_calibrations(project, fake):
    # a previous run stopped right after writing the science file: no calibrations, no record
    raw = raw_dir(project)
    raw.mkdir()
    (raw / f"{SCI1}.fits.fz").write_bytes(fake.content(fake.files[SCI1]))
    result = run(project, "IC4406", "--no-update-db")
    assert result.exit_code == 0, result.output
    assert names_in(raw) == expected_names()
    assert "1 already in raw_path; calibrations asked for 2 of them" in result.output
    assert SCI1 not in fake.downloads  # already there
    assert set(CALIBS) <= set(fake.downloads)
    assert recorded(project) == {SCI1, SCI2}


def test_interrupted_download_resumes(project, fake):
    """Ctrl-C in the middle of the downloads: nothing partial stays, the next run resumes."""
    from musered.archive import Archive, AstroqueryDownloader, Retriever, make_eso
    from musered.settings import load_settings

    settings = load_settings(project)
    config = ArchiveConfig.from_settings(settings.retrieve_data)
    real = AstroqueryDownloader(make_eso(config))

    class InterruptedDownloader:
        calls = 0

        def fetch(self, dp_id, staging):
            self.calls += 1
            if self.calls == 4:
                raise KeyboardInterrupt
            return real.fetch(dp_id, staging)

    retriever = Retriever(Archive(config, downloader=InterruptedDownloader()), settings.raw_path,
                          database(project), progress=False)
    with pytest.raises(KeyboardInterrupt):
        retriever.retrieve_dataset("IC4406", settings.datasets["IC4406"].archive_filter)
    raw = raw_dir(project)
    assert len(names_in(raw)) == 3
    assert not (raw / ".retrieve-incoming").exists()
    assert recorded(project) == set()
    before = len(fake.downloads)
    result = run(project, "IC4406", "--no-update-db")
    assert result.exit_code == 0, result.output
    assert len(fake.downloads) - before == len(expected_names()) - 3
    assert names_in(raw) == expected_names()
    assert recorded(project) == {SCI1, SCI2}


def test_stale_staging_of_a_killed_run_is_removed(project, fake):
    stale = raw_dir(project) / ".retrieve-incoming" / "999999999"
    stale.mkdir(parents=True)
    (stale / f"{SCI1}.fits.fz.part").write_bytes(b"partial")
    result = run(project, "IC4406", "--no-update-db")
    assert result.exit_code == 0, result.output
    assert not (raw_dir(project) / ".retrieve-incoming").exists()


def test_failed_calibration_is_fetched_by_the_next_run(project, fake):
    fake.faults[ARC_Z] = "error500"
    result = run(project, "IC4406", "--no-update-db")
    assert result.exit_code == 1
    assert f"{ARC_Z}:" in result.output and "500" in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: 1 requested files were not retrieved")
    # everything else was downloaded, and nothing is recorded complete
    assert names_in(raw_dir(project)) == expected_names() - {f"{ARC_Z}.fits"}
    assert recorded(project) == set()
    del fake.faults[ARC_Z]
    before = list(fake.downloads)
    result = run(project, "IC4406", "--no-update-db")
    assert result.exit_code == 0, result.output
    assert fake.downloads[len(before):] == [ARC_Z]
    assert recorded(project) == {SCI1, SCI2}


@pytest.mark.parametrize("fault", ["truncate", "truncate-nolength"])
def test_truncated_download_never_reaches_raw(project, fake, fault):
    fake.faults[BIASES[0]] = fault
    fake.faults[FLAT_Z] = fault
    result = run(project, "IC4406", "--no-update-db")
    assert result.exit_code == 1
    raw = raw_dir(project)
    assert not any(name.startswith((BIASES[0], FLAT_Z)) for name in names_in(raw))
    assert not list(raw.rglob("*.part"))
    assert BIASES[0] in result.output and FLAT_Z in result.output
    assert recorded(project) == set()
    fake.faults.clear()
    assert run(project, "IC4406", "--no-update-db").exit_code == 0
    assert names_in(raw) == expected_names()


def test_login_page_is_detected_deleted_and_reported(project, fake):
    result = run(project, "NGC1234", "--no-update-db")
    assert result.exit_code == 1
    assert f"{PRIV}: the archive sent an HTML page" in result.output
    raw = raw_dir(project)
    assert names_in(raw) == {f"{PRIV_BIAS}.fits.fz"}
    assert recorded(project) == set()
    # also for a public file that the portal answers with its login page
    fake.faults[BIASES[1]] = "login"
    result = run(project, "IC4406", "--no-update-db")
    assert result.exit_code == 1
    assert f"{BIASES[1]}: the archive sent an HTML page" in result.output
    assert f"{BIASES[1]}.fits.fz" not in names_in(raw)


def test_login_with_password_from_keyring(project, fake, memory_keyring):
    memory_keyring.set_password("astroquery:www.eso.org", "alice", PASSWORD)
    result = run(project, "NGC1234", "--no-update-db", "--username", "alice")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    assert names_in(raw_dir(project)) == {f"{PRIV}.fits.fz", f"{PRIV_BIAS}.fits.fz"}
    assert fake.tokens  # a token was issued and used
    assert recorded(project) == {PRIV}


def test_login_with_password_from_environment(project, fake, monkeypatch):
    monkeypatch.setenv("MUSERED_ESO_PASSWORD", PASSWORD)
    result = run(project, "NGC1234", "--no-update-db", "--username", "alice")
    assert result.exit_code == 0, result.output
    assert f"{PRIV}.fits.fz" in names_in(raw_dir(project))


def test_wrong_password_is_one_line_error_without_the_password(project, fake, monkeypatch):
    monkeypatch.setenv("MUSERED_ESO_PASSWORD", "wrong-" + PASSWORD)
    result = run(project, "NGC1234", "--no-update-db", "--username", "alice")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: ESO login refused for alice at {fake.base_url}/sso/oidc/token "
        "(wrong user name or password?)"]
    assert PASSWORD not in result.output


def test_password_never_in_debug_output(project, fake, monkeypatch):
    monkeypatch.setenv("MUSERED_ESO_PASSWORD", PASSWORD)
    result = CliRunner().invoke(cli, ["--loglevel", "debug", "--settings", str(project),
                                      "retrieve-data", "NGC1234", "--no-update-db", "--username", "alice"])
    assert result.exit_code == 0, result.output
    assert "Logged in to the ESO archive as alice" in result.output
    assert PASSWORD not in result.output


def test_missing_password_is_a_clear_error(project, fake):
    result = run(project, "NGC1234", "--no-update-db", "--username", "bob")
    assert result.exit_code == 1
    assert "no password for ESO user bob: set $MUSERED_ESO_PASSWORD" in result.output


def test_query_service_error_is_one_line(project, fake):
    fake.tap_error = True
    result = run(project, "IC4406", "--no-update-db")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: archive query failed at {fake.base_url}/tap_obs")
    assert "500" in lines[0]


def test_unreachable_archive_is_one_line(project, fake):
    data = yaml.safe_load(project.read_text())
    fake.stop()  # nothing listens on that port any more
    result = run(project, "IC4406", "--no-update-db")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    tap_url = data["retrieve_data"]["tap_url"]
    assert len(lines) == 1 and lines[0].startswith(f"Error: archive query failed at {tap_url}")


def test_calselector_error_is_one_line(project, fake):
    fake.calselector_error = True
    result = run(project, "IC4406", "--no-update-db")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: calibration selector failed at")
    assert "500" in lines[-1]


def test_bad_filter_column_is_reported_by_the_archive(project, fake, tmp_path):
    data = yaml.safe_load(project.read_text())
    data["datasets"]["IC4406"]["archive_filter"] = {"no_such_column": "x"}
    project.write_text(yaml.safe_dump(data))
    result = run(project, "IC4406", "--no-update-db")
    assert result.exit_code == 1
    assert result.output.startswith("Error: archive query rejected by")
    assert "no_such_column" in result.output


def test_wdb_form_names_in_archive_filter_are_translated(project, fake):
    """A MuseRed settings file queries with WDB form names: obs_targ_name, stime, etime."""
    data = yaml.safe_load(project.read_text())
    data["datasets"]["IC4406"]["archive_filter"] = {"obs_targ_name": "IC4406", "stime": "2017-06-01",
                                                   "etime": "2017-06-30", "max_rows_returned": 5000}
    project.write_text(yaml.safe_dump(data))
    result = run(project, "IC4406", "--no-update-db", "--dry-run")
    assert result.exit_code == 0, result.output
    science = [q for q in fake.queries if "SCIENCE" in q][-1]
    assert "target = 'IC4406'" in science and "obs_targ_name" not in science
    assert "exp_start >= '2017-06-01'" in science and "exp_start < '2017-07-01'" in science
    assert "max_rows_returned" not in science
    assert SCI1 in result.output


def test_wdb_date_filter_must_be_a_date():
    with pytest.raises(MuseredError, match="archive_filter stime: 'soon' is not a date"):
        filter_terms({"stime": "soon"})


def test_help_query_lists_the_archive_columns(project, fake):
    result = run(project, "--help-query")
    assert result.exit_code == 0, result.output
    assert "Queryable columns of dbo.raw" in result.output
    for column in ("dp_id", "target", "prog_id", "ins_mode", "exp_start"):
        assert f"  {column} " in result.output
    assert any("TAP_SCHEMA.columns" in q for q in fake.queries)


def test_dry_run_lists_and_downloads_nothing(project, fake):
    result = run(project, "IC4406", "--dry-run")
    assert result.exit_code == 0, result.output
    assert fake.downloads == []
    assert not raw_dir(project).exists()
    assert "Would download 10 files" in result.output
    for dp_id in (SCI1, SCI2, *CALIBS, SCI1 + ".NL"):
        assert f"  {dp_id}  " in result.output
    assert f"  {SCI1}  science" in result.output
    assert f"  {SCI1}.NL  night log  ?" in result.output
    assert DARK not in result.output


def test_calib_night_retrieves_all_calibrations_of_that_night(project, fake):
    result = run(project, "--calib", "2017-06-15", "--no-update-db")
    assert result.exit_code == 0, result.output
    names = names_in(raw_dir(project))
    assert f"{DARK}.fits.fz" in names
    assert {f"{b}.fits.fz" for b in BIASES} <= names
    assert f"{SCI1}.fits.fz" not in names and f"{PRIV_BIAS}.fits.fz" not in names


def test_ins_mode_restricts_calib_nights_and_science_files(project, fake):
    result = run(project, "--calib", "2017-06-15", "--ins-mode", "WFM-AO-N", "--no-update-db")
    assert result.exit_code == 0, result.output
    assert "night 2017-06-15: 1 calibration file of mode WFM-AO-N in the archive" in result.output
    assert names_in(raw_dir(project)) == {f"{AO_FLAT}.fits.fz"}
    assert "ins_mode = 'WFM-AO-N'" in fake.queries[-1]
    # MuseRed's comma-separated nights, the other mode: the night's other calibrations, not the AO flat again
    result = run(project, "--calib", "2017-06-15,2017-06-17", "--ins-mode", "WFM-NOAO-N", "--no-update-db")
    assert result.exit_code == 0, result.output
    assert "night 2017-06-15: 7 calibration files of mode WFM-NOAO-N" in result.output
    assert "night 2017-06-17: 1 calibration file of mode WFM-NOAO-N" in result.output
    names = names_in(raw_dir(project))
    assert {f"{DARK}.fits.fz", f"{PRIV_BIAS}.fits.fz", *(f"{b}.fits.fz" for b in BIASES)} <= names
    assert fake.downloads.count(AO_FLAT) == 1
    # science files of a dataset: filtered by mode too
    result = run(project, "IC4406", "--ins-mode", "WFM-AO-N", "--dry-run")
    assert result.exit_code == 0 and "IC4406: 0 science files in the archive" in result.output
    result = run(project, "IC4406", "--ins-mode", "WFM-NOAO-N", "--dry-run")
    assert result.exit_code == 0 and "IC4406: 2 science files in the archive" in result.output


def test_start_end_restrict_the_query(project, fake):
    result = run(project, "IC4406", "--start", "2017-06-17", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "IC4406: 0 science files" in result.output
    assert "exp_start >= '2017-06-17'" in fake.queries[-1]
    result = run(project, "IC4406", "--end", "2017-06-16", "--start", "2017-06-16", "--dry-run")
    assert "IC4406: 2 science files" in result.output
    result = run(project, "IC4406", "--start", "2017-06-17", "--end", "2017-06-16")
    assert result.exit_code == 1 and "is before --start" in result.output


def test_unknown_dataset_is_a_clear_error(project, fake):
    result = run(project, "NOPE")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: dataset 'NOPE' is not in the settings (known: IC4406, NGC1234)"


def test_update_db_runs_after_retrieval(project, fake):
    result = run(project, "IC4406")
    assert result.exit_code == 0, result.output
    with database(project).session() as session:
        assert session.scalar(select(func.count()).select_from(Raw)) == 8  # 2 science, 6 calibrations
        types = set(session.scalars(select(Raw.DPR_TYPE)))
    assert {"OBJECT", "BIAS", "WAVE", "FLAT,LAMP"} <= types


# --------------------------------------------------------------------------------------
# the parts


def test_adql_conditions():
    assert adql_condition("target", "IC4406") == "target = 'IC4406'"
    assert adql_condition("target", "O'Neil") == "target = 'O''Neil'"
    assert adql_condition("ins_mode", ["WFM-NOAO-N", "WFM-AO-N"]) == "ins_mode in ('WFM-NOAO-N', 'WFM-AO-N')"
    assert adql_condition("exposure", 600) == "exposure = 600"
    assert adql_condition("target", "like 'IC44%'") == "target like 'IC44%'"
    assert adql_condition("exp_start", ">= '2017-06-01'") == "exp_start >= '2017-06-01'"
    with pytest.raises(MuseredError, match="not a column name"):
        adql_condition("target; drop table", "x")


def test_config_from_settings():
    config = ArchiveConfig.from_settings({"tap_url": "http://mirror/tap", "username": "u"}, username="v")
    assert config.tap_url == "http://mirror/tap" and config.username == "v"
    assert config.calselector_url.startswith("https://archive.eso.org/calselector")
    with pytest.raises(MuseredError, match="unknown key.*tap_ulr"):
        ArchiveConfig.from_settings({"tap_ulr": "x"})
    with pytest.raises(MuseredError, match="batch_size must be a positive integer"):
        ArchiveConfig.from_settings({"batch_size": 0})


def test_local_files_by_archive_id(tmp_path):
    for name in ("MUSE.A.fits", "MUSE.B.fits.fz", "MUSE.C.fits.Z", "MUSE.D.fits.gz", "MUSE.E.NL.txt",
                 "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".retrieve-incoming").mkdir()
    (tmp_path / ".retrieve-incoming" / "MUSE.F.fits").write_bytes(b"")
    assert set(local_files(tmp_path)) == {"MUSE.A", "MUSE.B", "MUSE.C", "MUSE.D", "MUSE.E.NL"}


def test_verify_delivery(tmp_path):
    item = SimFile("MUSE.2017-06-16T01:00:00.000", delivery="fits")
    good = make_fits(item)
    path = tmp_path / f"{item.dp_id}.fits"
    path.write_bytes(good)
    verify_delivery(path, item.dp_id)
    for data, reason in [
        (b"<!DOCTYPE html><html><body>login</body></html>", "HTML page"),
        (good[: len(good) - 2880], "truncated"),
        (good[:-10], "truncated"),
        (b"x" * 2880, "not a FITS file"),
    ]:
        path.write_bytes(data)
        with pytest.raises(Rejected, match=reason):
            verify_delivery(path, item.dp_id)
    corrupt = bytearray(good)
    corrupt[-100] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    with pytest.raises(Rejected, match="(CHECKSUM|DATASUM) mismatch in HDU 1"):
        verify_delivery(path, item.dp_id)
    with pytest.raises(Rejected, match="expected a file named after"):
        verify_delivery(path, "MUSE.other")


@pytest.mark.skipif(shutil.which("gunzip") is None, reason="needs gunzip")
def test_fake_server_lzw_is_what_gunzip_reads(tmp_path):
    data = make_fits(SimFile("MUSE.2017-06-16T01:00:00.000", delivery="fits")) * 5
    path = tmp_path / "x.fits.Z"
    path.write_bytes(lzw_compress(data))
    out = subprocess.run(["gunzip", "-c", str(path)], capture_output=True, check=True).stdout
    assert out == data

