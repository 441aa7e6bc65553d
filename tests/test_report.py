"""musered report: the HTML page over real products of a simulated night, and the plots.

The module fixture simulates a mini night (1 IFU, one exposure), ingests it and runs the
calibration recipes and muse_scibasic through the runner, so the page is built from what
the ``reduced`` table really holds. Cube, image and response plots, whose recipes come
later in the chain, are checked on small products written here.
"""

from __future__ import annotations

import os
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import yaml
from astropy.io import fits
from astropy.table import Table
from click.testing import CliRunner
from sqlalchemy import select

from musered import report, reportplots
from musered.cli import cli
from musered.db import Database, Reduced
from musered.errors import MuseredError

pytestmark = pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")

STEPS = ("muse_bias", "muse_flat", "muse_wavecal", "muse_lsf", "muse_twilight", "muse_scibasic")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """(settings, database) of a reduced mini night."""
    from recipes.registry import get_recipe

    from musered.ingest import update_db
    from musered.runner import failure_message, run_steps
    from musered.settings import load_settings
    from musered.simulate.run import simulate

    base = tmp_path_factory.mktemp("report") / "night"
    simulate(base, ifus=1, exposures=1)
    settings_file = base / "settings.yml"
    # keep the wavecal residual table so that the residual plot is drawn from it
    data = yaml.safe_load(settings_file.read_text())
    data.setdefault("recipes", {})["muse_wavecal"] = {"params": {"residuals": True}}
    settings_file.write_text(yaml.safe_dump(data, sort_keys=False))
    settings = load_settings(settings_file)
    database = Database(settings.database_url())
    update_db(settings, database, progress=False)
    summaries = run_steps(settings, database, [get_recipe(name) for name in STEPS], jobs=1, progress=False)
    assert failure_message(summaries) is None
    return settings, database


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []
        self.imgs: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href") and not attrs["href"].startswith("#"):
            self.hrefs.append(attrs["href"])
        if tag == "img":
            self.imgs.append(attrs["src"])


def _parse(index: Path) -> tuple[list[Path], list[Path]]:
    parser = _Links()
    parser.feed(index.read_text())
    resolve = lambda href: (index.parent / unquote(href)).resolve()  # noqa: E731
    return [resolve(h) for h in parser.hrefs], [resolve(s) for s in parser.imgs]


@pytest.fixture(scope="module")
def built(night, tmp_path_factory):
    settings, database = night
    index = report.build_report(settings, database)
    return index, *_parse(index)


def _valid_png(path: Path) -> bool:
    import matplotlib.image

    if path.read_bytes()[:8] != PNG_SIGNATURE:
        return False
    image = matplotlib.image.imread(path)
    return image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and float(image.std()) > 0


def test_report_is_written_under_reduced_path(night, built):
    settings, _ = night
    index, _, _ = built
    assert index == Path(settings.reduced_path) / "report" / "index.html"
    text = index.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "Night 2024-03-10" in text


def test_report_links_every_product_relatively(night, built):
    _, database = night
    index, hrefs, _ = built
    with database.session() as session:
        rows = session.execute(select(Reduced.path, Reduced.log_path)).all()
    assert len(rows) >= 10
    raw_hrefs = _Links()
    raw_hrefs.feed(index.read_text())
    assert not any(h.startswith(("/", "file:")) for h in raw_hrefs.hrefs), "links must be relative"
    linked = set(hrefs)
    for path, log_path in rows:
        assert Path(path).resolve() in linked, path
        assert Path(log_path).resolve() in linked, log_path
    assert all(p.exists() for p in hrefs)


def test_report_has_one_valid_png_per_run_plot(night, built):
    index, _, imgs = built
    runs = report.collect_runs(night[1])
    assert {r.recipe_name for r in runs} == set(STEPS)
    assert len(imgs) == len(runs) == 7  # scibasic ran on the standard star and the exposure
    assert all(p.parent == index.parent / "plots" and _valid_png(p) for p in imgs)
    text = index.read_text()
    for caption in ("master bias histogram", "slice traces over the master flat", "wavelength residuals",
                    "LSF width against wavelength", "TWILIGHT_CUBE: mean over wavelength", "OBJECT_RED"):
        assert caption in text
    assert "no " + "master bias histogram plot" not in text and "(missing)" not in text


def test_report_shows_status_runtime_and_qc_summaries(night, built):
    index, _, _ = built
    text = index.read_text()
    assert text.count('status <span class="ok">ok</span>') == 7
    assert "runtime " in text and "QC (" in text
    # 48 per-slice values become one row with their median and range
    assert "CHAN* QC WAVECAL SLICE* FIT RMS" in text and "48 values)" in text


def test_plots_are_redrawn_only_for_newer_products(night, built):
    settings, database = night
    index, _, imgs = built
    bias_png = next(p for p in imgs if "muse_bias" in p.name)
    flat_png = next(p for p in imgs if "muse_flat" in p.name)
    os.utime(bias_png, (1e9, 1e9))  # older than its product: must be redrawn
    flat_mtime = flat_png.stat().st_mtime_ns
    report.build_report(settings, database)
    assert bias_png.stat().st_mtime > 1e9 and _valid_png(bias_png)
    assert flat_png.stat().st_mtime_ns == flat_mtime


def test_a_broken_product_gives_a_note_not_a_failure(night, tmp_path):
    settings, database = night
    bad = tmp_path / "MASTER_BIAS.fits"
    bad.write_bytes(b"not a FITS file" * 200)
    broken = report.Run(recipe_name="muse_bias", name="2024-01-01T00:00:00", night="2024-01-01", output_dir="x",
                        status="ok", runtime=1.0, date_run=None, log_path=None, OBJECT=None,
                        products=[report.ProductRow("MASTER_BIAS", bad, {})])
    good = report.collect_runs(database)[0]
    index = report.build_report(settings, database, tmp_path / "out", runs=[broken, good])
    text = index.read_text()
    assert "no master bias histogram plot:" in text
    hrefs, imgs = _parse(index)
    assert bad.resolve() in hrefs and len(imgs) == 1 and _valid_png(imgs[0])


def test_summarize_qc_merges_numbered_keys():
    qc = {f"CHAN01 QC LSF SLICE{i} FWHM MEAN": 2.0 + i / 100 for i in range(1, 49)}
    qc["CHAN01 QC BIAS MASTER RON"] = 1.25
    qc.update({"QC MODE 1": "WFM", "QC MODE 2": "NFM"})
    qc.update({f"CHAN01 QC BIAS MASTER{q} RON": 2.0 + q for q in range(1, 5)})
    rows = dict(report.summarize_qc(qc))
    assert rows["CHAN* QC LSF SLICE* FWHM MEAN"] == "2.245 (2.01 … 2.48, 48 values)"
    assert rows["CHAN01 QC BIAS MASTER RON"] == "1.25"  # alone: its own name
    assert rows["CHAN* QC BIAS MASTER* RON"] == "4.5 (3 … 6, 4 values)"
    assert rows["QC MODE *"] == "NFM, WFM"
    many = {f"QC {a}{b} VALUE": 1.0 for a in "ABCDEFGH" for b in "ABCDEFGH"}  # 64 keys without numbers
    rows = report.summarize_qc(many, limit=10)
    assert len(rows) == 11 and rows[-1] == ("…", "54 more QC rows")


# --------------------------------------------------------------------------------------
# Plots of later products, on small files written here


def _cube(path: Path, ny=12, nx=10, nlam=300) -> Path:
    rng = np.random.default_rng(1)
    data = rng.normal(1.0, 0.1, (nlam, ny, nx)).astype(np.float32)
    data[:, 6, 4] += np.linspace(5, 10, nlam)  # a point source with a rising spectrum
    data[:3] = np.nan
    header = fits.Header({"CRVAL3": 4750.0, "CRPIX3": 1.0, "CD3_3": 1.25, "CUNIT3": "Angstrom",
                          "EXTNAME": "DATA", "BUNIT": "10**(-20)*erg/s/cm**2/Angstrom"})
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header=header)]).writeto(path)
    return path


def test_cube_plot_marks_the_brightest_spaxel(tmp_path):
    white, lam, spectrum, position, unit = reportplots.collapse_cube(_cube(tmp_path / "DATACUBE_FINAL.fits"))
    assert white.shape == (12, 10) and position == (4, 6)
    assert lam[0] == 4750.0 and lam[-1] == pytest.approx(4750.0 + 299 * 1.25)
    assert np.isnan(spectrum[:3]).all() and spectrum[-1] > spectrum[10] > 25 * 0.9 + 5
    assert unit.startswith("10**(-20)")
    _, _, elsewhere, position, _ = reportplots.collapse_cube(tmp_path / "DATACUBE_FINAL.fits", (0, 0))
    assert position == (0, 0) and elsewhere[-1] == pytest.approx(9 * 1.0, rel=0.2)
    out = reportplots.plot_cube(tmp_path / "DATACUBE_FINAL.fits", tmp_path / "cube.png", "cube")
    assert _valid_png(out)


def test_image_response_and_dataset_runs_in_the_report(night, tmp_path):
    settings, database = night
    folder = tmp_path / "exp_combine" / "SIMFIELD_drs"
    folder.mkdir(parents=True)
    cube = _cube(folder / "DATACUBE_FINAL.fits")
    image = folder / "IMAGE_FOV_0001.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.arange(120, dtype=np.float32).reshape(12, 10),
                                                   name="DATA")]).writeto(image)
    preview = tmp_path / "PREVIEW_FOV.fits"
    shutil.copy(image, preview)
    lam = np.linspace(4800, 9300, 200)
    response = tmp_path / "STD_RESPONSE.fits"
    Table({"lambda": lam, "response": 20 + np.sin(lam / 500), "resperr": np.full(200, 0.05)}).write(response)
    telluric = tmp_path / "STD_TELLURIC.fits"
    Table({"lambda": lam, "ftelluric": np.where(np.abs(lam - 7600) < 50, 0.6, 1.0)}).write(telluric)

    def run(recipe, name, night, products):
        return report.Run(recipe_name=recipe, name=name, night=night, output_dir=None, status="ok", runtime=2.0,
                          date_run=None, log_path=None, OBJECT="SIMFIELD",
                          products=[report.ProductRow(tag, path, {}) for tag, path in products])

    runs = [
        run("muse_standard", "2024-03-11T00:05:00.728", "2024-03-10",
            [("STD_RESPONSE", response), ("STD_TELLURIC", telluric)]),
        run("muse_exp_align", "SIMFIELD", None, [("PREVIEW_FOV", preview)]),
        run("muse_exp_combine", "SIMFIELD_drs", None, [("DATACUBE_FINAL", cube), ("IMAGE_FOV", image)]),
        run("muse_scipost", "2024-03-11T00:25:00.545", "2024-03-10", [("IMAGE_FOV", image)]),
    ]
    index = report.build_report(settings, database, tmp_path / "out", runs=runs)
    text = index.read_text()
    for caption in ("response curve", "alignment preview", "white-light image and spectrum of the cube",
                    "white-light image</div>"):
        assert caption in text
    assert f'<h2 id="night-Datasets_and_runs">{report.NO_NIGHT}</h2>' in text
    assert text.index("Night 2024-03-10") < text.index(f"{report.NO_NIGHT}</h2>")
    hrefs, imgs = _parse(index)
    assert len(imgs) == 4 and all(_valid_png(p) for p in imgs)
    assert {response, telluric, preview, cube, image} <= set(hrefs)


def _fov(path: Path, index: int, shift: tuple[float, float]) -> Path:
    """A white-light IMAGE_FOV with six stars, its WCS pointing off by ``shift`` arcsec."""
    import datetime as dt

    from recipes.algorithms.cube import CubeGrid, white_filter, write_image_fov

    n, d = 80, 0.2 / 3600.0
    stars = [(20, 22, 3000.0), (55, 30, 2000.0), (35, 60, 2500.0), (62, 64, 1500.0), (15, 50, 1800.0),
             (45, 12, 2200.0)]
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    image = np.full((n, n), 3.0) + np.random.default_rng(index).normal(0, 0.3, (n, n))
    for x, y, flux in stars:
        image += flux / (2 * np.pi * 1.5**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
    cosd = np.cos(np.deg2rad(-30.0))
    grid = CubeGrid(n, n, 1, (n + 1) / 2, (n + 1) / 2, 150.0 + shift[0] / 3600 / cosd, -30.0 + shift[1] / 3600,
                    (-d, 0.0, 0.0, d), 1, 5000.0, 1.0)
    date = dt.datetime(2024, 3, 11, 1, 0) + dt.timedelta(minutes=15 * index)
    primary = fits.Header({"DATE-OBS": date.isoformat(timespec="milliseconds"), "MJD-OBS": 60380.0 + index / 96,
                           "EXPTIME": 600.0, "OBJECT": "SIMFIELD", "HIERARCH ESO INS MODE": "WFM-NOAO-N"})
    return write_image_fov(path, primary, grid, image.astype(np.float32), white_filter(), 100.0)


def test_alignment_run_shows_the_alignment_preview(night, tmp_path):
    from recipes.steps.exp_align import RECIPE

    settings, database = night
    fovs = [_fov(tmp_path / f"IMAGE_FOV_{i}.fits", i, shift) for i, shift in enumerate([(0, 0), (0.6, -0.4)])]
    outdir = tmp_path / "exp_align"
    outdir.mkdir()
    products = RECIPE.run({"IMAGE_FOV": fovs}, RECIPE.validate(), outdir)
    frames = {"IMAGE_FOV": [{"path": str(p), "md5": None} for p in fovs]}
    run = report.Run(recipe_name="muse_exp_align", name="SIMFIELD_OFFSET_LIST_drs", night=None, output_dir=None,
                     status="ok", runtime=3.0, date_run=None, log_path=None, OBJECT="SIMFIELD",
                     products=[report.ProductRow(p.tag, Path(p.path), dict(p.qc), frames) for p in products])
    assert report.choose_plot(run).caption.startswith("alignment preview")
    index = report.build_report(settings, database, tmp_path / "out", runs=[run])
    text = index.read_text()
    assert "alignment preview (exposures combined with the offsets applied, sources marked)" in text
    assert "no alignment preview" not in text
    hrefs, imgs = _parse(index)
    assert len(imgs) == 1 and _valid_png(imgs[0])
    assert {Path(p.path).resolve() for p in products} <= set(hrefs)


# --------------------------------------------------------------------------------------
# The command


def test_cli_report(night, tmp_path):
    settings, _ = night
    out = tmp_path / "my report"
    result = CliRunner().invoke(cli, ["--settings", str(settings.path), "report", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"Report written to {out / 'index.html'}" in result.output
    _, imgs = _parse(out / "index.html")
    assert len(imgs) == 7 and all(p.is_file() for p in imgs)


def test_cli_report_error_is_one_line(night, tmp_path):
    settings, _ = night
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = CliRunner().invoke(cli, ["--settings", str(settings.path), "report", "--out", str(blocker)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot create the report folder")
    with pytest.raises(MuseredError):
        report.build_report(settings, Database("sqlite://"), blocker)
