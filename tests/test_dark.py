"""muse_dark on small synthetic darks with known dark current, hot pixels and EXPTIMEs."""

import numpy as np
import pytest
from astropy.io import fits
from calib_helpers import SMALL, ext_header, make_raw_image, primary_header, smooth_structure, write_raw

from recipes.base import RecipeError
from recipes.steps.bias import RECIPE as BIAS
from recipes.steps.dark import RECIPE
from recipes.registry import get_recipe

DC = 20.0  # injected dark current, e-/pix/h
EXPTIMES = (1800.0, 3600.0, 3600.0, 2400.0, 3600.0, 3600.0, 3000.0)


@pytest.fixture(scope="module")
def dark_set(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dark")
    rng = np.random.default_rng(11)
    structure = smooth_structure(SMALL)
    biases = []
    for k in range(5):
        header = ext_header(SMALL, 1)
        image = make_raw_image(SMALL, header, rng, structure=structure, drift_amplitude=2.0)
        biases.append(write_raw(tmp / f"MUSE.bias{k}.fits", primary_header(index=k), {1: (image, header)}))
    bias_dir = tmp / "bias"
    bias_dir.mkdir()
    (master_bias,) = BIAS.run({"BIAS": biases}, BIAS.validate({}), bias_dir)
    hot_rate = np.zeros(SMALL.trimmed_shape)
    hot_idx = rng.choice(hot_rate.size, 60, replace=False)
    hot_rate.flat[hot_idx] = rng.uniform(100.0, 2000.0, hot_idx.size)  # e-/pix/h, all >= 10 sigma
    darks = []
    for k, t in enumerate(EXPTIMES):
        header = ext_header(SMALL, 1)
        signal = (DC + hot_rate) * t / 3600.0
        image = make_raw_image(SMALL, header, rng, structure=structure, drift_amplitude=2.0, signal_e=signal)
        darks.append(write_raw(tmp / f"MUSE.dark{k}.fits", primary_header("DARK", t, index=20 + k), {1: (image, header)}))
    return tmp, master_bias.path, darks, hot_idx


def _run(tmp, frames, **params):
    out = tmp / f"out{len(list(tmp.glob('out*')))}"
    out.mkdir()
    (product,) = RECIPE.run(frames, RECIPE.validate(params), out)
    return product


def test_declaration():
    recipe = get_recipe("muse_dark")
    assert recipe.required_calibs == ("MASTER_BIAS",) and recipe.min_inputs == 3
    defaults = recipe.defaults()
    assert (defaults["scale"], defaults["normalize"], defaults["hotsigma"], defaults["model"]) == (True, 3600.0, 5.0, False)


def test_dark_current_and_hot_pixels(dark_set):
    tmp, bias, darks, hot_idx = dark_set
    product = _run(tmp, {"DARK": darks, "MASTER_BIAS": [bias]})
    with fits.open(product.path) as hdul:
        data, dq = hdul["CHAN01.DATA"].data, hdul["CHAN01.DQ"].data
        assert hdul["CHAN01.DATA"].header["BUNIT"] == "count"
        assert hdul[0].header["ESO PRO CATG"] == "MASTER_DARK"
        assert hdul[0].header["ESO PRO REC1 CAL1 CATG"] == "MASTER_BIAS"
    qc = product.qc
    assert qc["CHAN01 QC DARK MASTER DC"] == pytest.approx(DC, rel=0.02)
    good = dq == 0
    assert data[good].mean() == pytest.approx(DC, rel=0.01)
    flagged = (dq.flat[hot_idx] & 256) != 0
    assert flagged.mean() >= 0.99
    false = int(((dq & 256) != 0).sum()) - int(flagged.sum())
    assert false <= max(1, int(1e-4 * dq.size))
    assert qc["CHAN01 QC DARK MASTER NBADPIX"] == int(((dq & 256) != 0).sum())


def test_normalization_choices(dark_set):
    tmp, bias, darks, _ = dark_set
    per_second = _run(tmp, {"DARK": darks, "MASTER_BIAS": [bias]}, normalize=1.0)
    data = fits.getdata(per_second.path, "CHAN01.DATA")
    dq = fits.getdata(per_second.path, "CHAN01.DQ")
    assert data[dq == 0].mean() == pytest.approx(DC / 3600.0, rel=0.01)
    assert per_second.qc["CHAN01 QC DARK MASTER DC"] == pytest.approx(DC, rel=0.02)  # QC stays per hour
    unscaled = _run(tmp, {"DARK": darks, "MASTER_BIAS": [bias]}, scale=False)
    assert unscaled.qc["CHAN01 QC DARK MASTER DC"] == pytest.approx(DC, rel=0.03)


def test_bad_input(dark_set):
    tmp, bias, darks, _ = dark_set
    with pytest.raises(RecipeError, match="needs a MASTER_BIAS"):
        _run(tmp, {"DARK": darks})
    with pytest.raises(ValueError, match="model=true"):
        RECIPE.validate({"model": True})
    with pytest.raises(RecipeError, match="made with overscan=vpoly"):
        _run(tmp, {"DARK": darks, "MASTER_BIAS": [bias]}, overscan="offset")
    with pytest.raises(RecipeError, match="at least 3 DARK frames"):
        _run(tmp, {"DARK": darks[:2], "MASTER_BIAS": [bias]})
    with pytest.raises(RecipeError, match=r"MUSE.bias0.fits: EXPTIME must be > 0"):
        _run(tmp, {"DARK": [bias.parent.parent / "MUSE.bias0.fits"] + darks[:3], "MASTER_BIAS": [bias]})
