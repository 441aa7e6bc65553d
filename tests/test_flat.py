"""Slice tracing (recipes.algorithms.tracing) on synthetic flats with known edges, and muse_flat."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.special import erf

from recipes.base import RecipeError
from recipes.algorithms.tracing import clipped_polyfit, horizontal_cuts, locate_slices, scaled_to_raw, slice_mask, trace_image

NX = 4096


def _integrated_step(x: np.ndarray, edge: np.ndarray, sigma: float) -> np.ndarray:
    def antiderivative(u: np.ndarray) -> np.ndarray:
        z = (u - edge) / sigma
        return (u - edge) * 0.5 * (1 + erf(z / np.sqrt(2))) + sigma * np.exp(-z * z / 2) / np.sqrt(2 * np.pi)

    return antiderivative(x + 0.5) - antiderivative(x - 0.5)


def synthetic_layout(ny: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """True left/right edges (0-based x) of 48 slices at every row: arrays (48, ny).

    4 stacks of 12 slices ~75.7 px wide with 7 px gaps and 20 px between stacks; each
    stack tilted by up to ±2 px (slices of a stack alike within ±0.3 px, as on MUSE CCDs)
    and curved by ~1.3 px along y, widths changing by ±0.3 px.
    """
    t = (np.arange(ny) - 0.5 * (ny - 1)) / (0.5 * ny)
    lefts, rights = [], []
    x = 42.0
    for stack in range(4):
        stack_tilt = rng.uniform(-2.0, 2.0)
        for _ in range(12):
            width = rng.uniform(75.0, 76.5)
            tilt = stack_tilt + rng.uniform(-0.3, 0.3)
            left = x + tilt * t + 1.3 * t**2 + 0.05 * t**3
            lefts.append(left)
            rights.append(left + width + 0.3 * t)
            x += width + 7.0
        x += 13.0
    return np.array(lefts), np.array(rights)


def synthetic_flat(
    ny: int = 1024, blur: float = 0.8, level: float = 20000.0, seed: int = 1, qe_rms: float = 0.0, noise: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A lamp flat (count) with illumination falloff across the IFU and along y.

    Returns (image, left edges, right edges, QE map); edges 0-based (48, ny).
    """
    rng = np.random.default_rng(seed)
    left, right = synthetic_layout(ny, rng)
    x = np.arange(NX, dtype=np.float64)
    y = np.arange(ny, dtype=np.float64)
    illum = (1 - 0.25 * ((x[None, :] - 2048) / 2048) ** 2) * (0.7 + 0.3 * np.sin(np.pi * (y[:, None] + 200) / (ny + 400)))
    light = np.zeros((ny, NX))
    for s in range(left.shape[0]):
        lo = int(left[s].min()) - 8
        hi = int(right[s].max()) + 9
        xs = x[lo:hi][None, :]
        light[:, lo:hi] += _integrated_step(xs, left[s][:, None], blur) - _integrated_step(xs, right[s][:, None], blur)
    qe = 1.0 + qe_rms * rng.standard_normal((ny, NX))
    image = level * illum * light * qe
    if noise:
        image = rng.poisson(np.clip(image, 0, None)).astype(np.float64)
    return image, left, right, qe


@pytest.fixture(scope="module")
def flat_and_trace():
    image, left, right, _ = synthetic_flat()
    return image, left, right, trace_image(image, nsum=32, order=5, edgefrac=0.5)


def test_scaled_to_raw_round_trip() -> None:
    coeffs = np.array([3.0, -1.5, 0.25, 0.7])
    y = np.linspace(1, 4112, 50)
    raw = scaled_to_raw(coeffs, 2056.5, 2055.5)
    expected = np.polynomial.polynomial.polyval((y - 2056.5) / 2055.5, coeffs)
    assert np.allclose(np.polynomial.polynomial.polyval(y, raw), expected, atol=1e-9)


def test_clipped_polyfit_rejects_outliers() -> None:
    rng = np.random.default_rng(2)
    x = np.linspace(0, 100, 200)
    y = 2 + 0.1 * x - 1e-3 * x**2 + rng.normal(0, 0.01, x.size)
    y[[10, 50, 120]] += 1.0
    coef, kept, mse = clipped_polyfit(x, y, 2)
    assert not kept[[10, 50, 120]].any() and kept.sum() >= 190
    assert np.allclose(coef, [2, 0.1, -1e-3], atol=[0.01, 5e-4, 5e-6])
    assert mse == pytest.approx(1e-4, rel=0.3)


def test_cuts_average_nsum_rows() -> None:
    image = np.arange(100 * 3, dtype=float).reshape(100, 3)
    image[5, 1] = np.nan
    cuts, ycen = horizontal_cuts(image, 32)
    assert cuts.shape == (3, 3)  # the incomplete last group is dropped
    assert ycen.tolist() == [15.5, 47.5, 79.5]
    assert cuts[0, 0] == pytest.approx(image[:32, 0].mean())
    assert np.isfinite(cuts[0, 1])


def test_locate_slices_finds_48_with_falloff(flat_and_trace) -> None:
    image, left, right, _ = flat_and_trace
    row = image.shape[0] // 2
    lo, hi = locate_slices(image[row - 16 : row + 16].mean(axis=0), 0.5)
    assert lo.size == 48
    assert np.abs(lo - left[:, row]).max() < 1.0 and np.abs(hi - right[:, row]).max() < 1.0


def test_trace_matches_truth(flat_and_trace) -> None:
    image, left, right, trace = flat_and_trace
    ny = image.shape[0]
    y1 = np.arange(ny) + 1.0
    errors = {
        "left": trace.evaluate("left", y1) - (left + 1),
        "right": trace.evaluate("right", y1) - (right + 1),
        "centre": trace.evaluate("centre", y1) - (0.5 * (left + right) + 1),
    }
    for name, err in errors.items():
        rms = np.sqrt(np.mean(err**2))
        assert rms < 0.02, f"{name} rms {rms:.4f} px"
        assert np.abs(err).max() < 0.05, f"{name} max {np.abs(err).max():.4f} px"
    assert trace.centre.shape == (48, 6)
    assert np.allclose(trace.width, (right - left).mean(axis=1), atol=0.02)
    assert (trace.mse < 0.01).all()
    assert trace.samples.left.shape == (ny // 32, 48)


def test_trace_survives_bad_columns_and_cosmics() -> None:
    image, left, right, _ = synthetic_flat(ny=512, seed=4)
    image[:, int(left[10, 0]) + 1] = np.nan  # a flagged column just inside an edge
    image[100:140, int(right[20, 0]) - 1] = 5e5  # a cosmic-ray trail on an edge
    trace = trace_image(image, nsum=32, order=3)
    err_left = np.abs(trace.evaluate("left", np.arange(512) + 1.0) - (left + 1)).max(axis=1)
    err_right = np.abs(trace.evaluate("right", np.arange(512) + 1.0) - (right + 1)).max(axis=1)
    # The interpolated column biases the cuts where it sits on the edge transition a little;
    # the cosmic ray is rejected; the other slices are untouched.
    assert err_left[10] < 0.2 and err_right[20] < 0.05
    assert np.delete(err_left, 10).max() < 0.05 and err_right.max() < 0.05


def test_slice_mask_marks_slices() -> None:
    image, left, right, _ = synthetic_flat(ny=256, seed=6, noise=False)
    trace = trace_image(image, nsum=32, order=2)
    mask = slice_mask(trace, image.shape)
    row = 128
    inside = np.arange(int(np.ceil(left[7, row])) + 1, int(right[7, row]))
    assert (mask[row, inside] == 8).all()
    assert mask[row, int(right[7, row]) + 3] == 0


def test_not_a_flat_is_a_clear_error() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(RecipeError, match="slices instead of 48"):
        trace_image(rng.normal(100, 1, (256, 1024)), nsum=32, order=2)


# --------------------------------------------------------------------------------------
# muse_flat on the simulator's mini profile, against its truth


def simulated_calibrations(tmp_path_factory) -> tuple[Path, Path]:
    """Mini-profile BIAS/FLAT/ARC frames (1 IFU) and their MASTER_BIAS, made once per session.

    Returns (simulation folder, MASTER_BIAS path).
    """
    from musered.simulate.run import simulate
    from recipes.steps import bias

    base = tmp_path_factory.getbasetemp() / "spectral-mini"
    if not (base / "truth" / "truth.json").exists():
        simulate(base, profile="mini", kinds={"BIAS", "FLAT", "ARC"}, exposures=0, ifus=1)
    master_bias = base / "bias" / "MASTER_BIAS.fits"
    if not master_bias.exists():
        (base / "bias").mkdir(exist_ok=True)
        bias.RECIPE.run({"BIAS": raw_of(base, "BIAS")}, bias.RECIPE.validate(), base / "bias")
    return base, master_bias


def raw_of(base: Path, dpr_type: str) -> list[Path]:
    from astropy.io import fits

    return [p for p in sorted((base / "raw").glob("*.fits")) if fits.getheader(p)["HIERARCH ESO DPR TYPE"] == dpr_type]


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory):
    from recipes.steps.flat import RECIPE

    base, master_bias = simulated_calibrations(tmp_path_factory)
    out = tmp_path_factory.mktemp("flat")
    frames = {
        "FLAT": raw_of(base, "FLAT,LAMP"),
        "MASTER_BIAS": [master_bias],
        "BADPIX_TABLE": [base / "muse-calib" / "badpix_table.fits"],
    }
    products = RECIPE.run(frames, RECIPE.validate({"samples": True}), out)
    return base, frames, products


def test_flat_recipe_declaration_follows_the_drs() -> None:
    from recipes.registry import get_recipe

    recipe = get_recipe("muse_flat")
    # The parameters of `esorex --params muse_flat` (DRS 2.8.7), in the same order.
    assert [p.name for p in recipe.params] == [
        "nifu", "overscan", "ovscreject", "ovscsigma", "ovscignore", "combine", "nlow", "nhigh", "nkeep",
        "lsigma", "hsigma", "scale", "normalize", "trace", "nsum", "order", "edgefrac", "losigmabadpix",
        "hisigmabadpix", "samples", "merge",
    ]  # fmt: skip
    defaults = recipe.defaults()
    assert (defaults["nsum"], defaults["order"], defaults["edgefrac"]) == (32, 5, 0.5)
    assert (defaults["combine"], defaults["losigmabadpix"], defaults["hisigmabadpix"]) == ("sigclip", 5.0, 5.0)
    assert defaults["normalize"] is True and defaults["samples"] is False and defaults["trace"] is True
    assert recipe.required_calibs == ("MASTER_BIAS",) and recipe.min_inputs == 3
    assert recipe.outputs == ("MASTER_FLAT", "TRACE_TABLE", "TRACE_SAMPLES")


def test_trace_table_matches_simulated_truth(flat_run) -> None:
    from musered.simulate.truth import load_truth
    from recipes.algorithms.instrument import polyval_y
    from recipes.io import read_table_product

    base, _, products = flat_run
    assert [p.tag for p in products] == ["MASTER_FLAT", "TRACE_TABLE", "TRACE_SAMPLES"]
    table, header = read_table_product(products[1].path, 1)
    # DRS layout (recipes.md §4.2): 48 rows, 1-based slice numbers, order-5 coefficients.
    assert len(table) == 48
    assert table["SliceNo"].dtype.kind == "i" and table["SliceNo"].dtype.itemsize == 4
    assert table["Width"].dtype.kind == "f" and table["Width"].dtype.itemsize == 4
    assert table["SliceNo"].tolist() == list(range(1, 49))
    expected = ["SliceNo", "Width"] + [f"tc{k}_{j:02d}" for k in range(3) for j in range(6)] + ["MSE0", "MSE1", "MSE2"]
    assert sorted(table.colnames) == sorted(expected)
    truth = load_truth(base).slices(1)
    ny = load_truth(base).data["trimmed_shape"][0]
    y = np.arange(1, ny + 1, dtype=float)
    for k, name in ((0, "centre"), (1, "left"), (2, "right")):
        fitted = np.array([polyval_y([table[f"tc{k}_{j:02d}"][s] for j in range(6)], y) for s in range(48)])
        true = np.array([polyval_y(getattr(truth[s], name), y) for s in range(48)])
        err = fitted - true
        assert np.sqrt(np.mean(err**2)) < 0.02, name
        assert np.abs(err).max() < 0.05, name
    widths = np.array([polyval_y(t.right, (ny + 1) / 2) - polyval_y(t.left, (ny + 1) / 2) for t in truth])
    assert header["HIERARCH ESO QC TRACE WIDTHS MEDIAN"] == pytest.approx(np.median(widths), abs=0.05)
    assert "HIERARCH ESO QC TRACE SLICE_L TILT" in header and "HIERARCH ESO QC TRACE SLICE46 WIDTH" in header
    samples, _ = read_table_product(products[2].path, 1)
    assert len(samples) == 48 * (ny // 32)
    assert set(samples.colnames) == {"slice", "y", "mid", "left", "right"}


def test_master_flat_recovers_the_pixel_qe(flat_run) -> None:
    from scipy.ndimage import median_filter

    from musered.simulate.truth import load_truth
    from recipes.algorithms.calibtables import trace_from_table
    from recipes.io import read_image_product, read_primary_header, read_table_product

    base, frames, products = flat_run
    master = read_image_product(products[0].path, 1)
    assert master.data.mean(dtype=np.float64) == pytest.approx(1.0, abs=1e-3)  # normalize=true
    header = read_primary_header(products[0].path)
    assert header["HIERARCH ESO PRO CATG"] == "MASTER_FLAT"
    assert header["HIERARCH ESO PRO DATANCOM"] == len(frames["FLAT"])
    truth = load_truth(base)
    qe = truth.qe_map(1)
    trace = trace_from_table(read_table_product(products[1].path, 1)[0], "TRACE_TABLE")
    mask = slice_mask(trace, master.data.shape)
    inner = (mask > 0) & (np.roll(mask, 2, axis=1) == mask) & (np.roll(mask, -2, axis=1) == mask)
    snr = master.data / np.sqrt(master.stat)
    good = inner & (snr > 200) & (master.dq == 0) & (qe > 0.9)
    assert good.sum() > 0.5 * inner.sum()
    # Pixel-to-pixel QE: the flat over its smooth 7x7 median, against the same of the truth.
    recovered = master.data / median_filter(master.data, size=7)
    true = qe / median_filter(qe, size=7)
    rms = np.sqrt(np.mean((recovered[good] - true[good]) ** 2))
    assert rms < 0.005
    # Dead columns (from the BADPIX_TABLE) are flagged; the gaps get BADOTHER (16384).
    dead = np.flatnonzero((qe == 0).all(axis=0))
    assert dead.size and (master.dq[:, dead] != 0).all()
    assert ((master.dq[master.data <= 0] & 16384) != 0).all() and (master.data[mask == 0] <= 0).any()


def test_flat_bad_input_is_a_one_line_error(flat_run, tmp_path) -> None:
    from recipes.steps.flat import RECIPE

    _, frames, _ = flat_run
    with pytest.raises(RecipeError, match="at least 3 FLAT frames, got 2"):
        RECIPE.run({**frames, "FLAT": frames["FLAT"][:2]}, RECIPE.validate(), tmp_path)
    with pytest.raises(RecipeError, match="needs a MASTER_BIAS"):
        RECIPE.run({"FLAT": frames["FLAT"]}, RECIPE.validate(), tmp_path)
    assert not list(tmp_path.iterdir())


def test_trace_table_reads_merged_and_drs_single_ifu_layouts(flat_run, tmp_path) -> None:
    from astropy.io import fits

    from recipes.algorithms.calibtables import read_trace, trace_table

    _, _, products = flat_run
    merged = read_trace(products[1].path, 1)
    # The DRS without merge: primary EXTNAME=CHAN01, the table in the first extension.
    drs = tmp_path / "TRACE_TABLE-01.fits"
    primary = fits.PrimaryHDU()
    primary.header["EXTNAME"] = "CHAN01"
    fits.HDUList([primary, fits.BinTableHDU(trace_table(merged))]).writeto(drs)
    single = read_trace(drs, 1)
    assert np.array_equal(single.left, merged.left) and np.array_equal(single.centre, merged.centre)
    with pytest.raises(RecipeError, match="no table extension CHAN02"):
        read_trace(products[1].path, 2)
