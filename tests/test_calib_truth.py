"""muse_bias and muse_dark on the simulator's mini profile, against its truth files.

Tolerances are those of issue 5 (the ESO DRS meets them on such data).
"""

import numpy as np
import pytest
from astropy.io import fits

from musered.simulate.detector import bias_structure
from musered.simulate.run import simulate
from musered.simulate.truth import load_truth
from recipes.steps.bias import RECIPE as BIAS
from recipes.steps.dark import RECIPE as DARK
from recipes.algorithms.instrument import detector_geometry


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    simulate(root, profile="mini", kinds={"BIAS", "DARK"}, dark=True, ifus=1)
    truth = load_truth(root)
    raws = {"BIAS": [], "DARK": []}
    for name, frame in sorted(truth.frames.items()):
        raws[frame["kind"]].append(root / "raw" / name)
    bias_dir = root / "bias"
    bias_dir.mkdir()
    (bias,) = BIAS.run({"BIAS": raws["BIAS"]}, BIAS.validate({}), bias_dir)
    dark_dir = root / "dark"
    dark_dir.mkdir()
    (dark,) = DARK.run({"DARK": raws["DARK"], "MASTER_BIAS": [bias.path]}, DARK.validate({}), dark_dir)
    quadrants = detector_geometry(fits.getheader(raws["BIAS"][0], "CHAN01"))
    return truth, raws, bias, dark, quadrants


def test_master_bias_against_truth(mini):
    truth, raws, bias, _, quadrants = mini
    ccd = truth.ccd(1)
    n = len(raws["BIAS"])
    assert n >= 3
    bias_frames = [f for f in truth.frames.values() if f["kind"] == "BIAS"]
    with fits.open(bias.path) as hdul:
        data, stat = hdul["CHAN01.DATA"].data, hdul["CHAN01.STAT"].data
    for p, q in enumerate(quadrants):
        port = q.out
        # raw level of the data region per output (frame level + gradient + structure)
        level = np.mean([f["bias_mean"][0][p] for f in bias_frames])
        assert abs(bias.qc[f"CHAN01 QC BIAS LEVEL{port} MEAN"] - level) < 0.1
        assert bias.qc[f"CHAN01 QC BIAS MASTER{port} RON"] == pytest.approx(ccd.ron[p], rel=0.03)
        # vpoly: the master holds the 2-D structure the overscan does not see
        structure = bias_structure(ccd.bias_pattern, (q.ny, q.nx))
        resid = data[q.trimmed] - structure
        assert abs(float(resid.mean())) < 0.05
        # residual structure on 40x40-pixel scales (pixel noise averages down to ~0.016 adu)
        b = 40
        binned = resid[: q.ny // b * b, : q.nx // b * b].reshape(q.ny // b, b, q.nx // b, b).mean(axis=(1, 3))
        assert np.sqrt(np.mean(binned**2)) < 0.05
        expected_stat = (ccd.ron[p] / ccd.gain[p]) ** 2 / n
        assert np.median(stat[q.trimmed]) == pytest.approx(expected_stat, rel=0.05)


def test_master_dark_against_truth(mini):
    truth, _, _, dark, _ = mini
    ccd = truth.ccd(1)
    qe = truth.qe_map(1)
    with fits.open(dark.path) as hdul:
        data, dq = hdul["CHAN01.DATA"].data, hdul["CHAN01.DQ"].data
    good = (dq == 0) & (qe > 0.9)
    # count per hour = e- per hour: injected dark current times the pixel QE
    assert float(data[good].mean()) == pytest.approx(ccd.dark_current * float(qe[good].mean()), rel=0.02)
    assert dark.qc["CHAN01 QC DARK MASTER DC"] == pytest.approx(ccd.dark_current, rel=0.02)
    sigma = 1.4826 * np.median(np.abs(data[good] - np.median(data[good])))
    hot = ccd.hot_pixels
    ys, xs = hot[:, 0].astype(int), hot[:, 1].astype(int)
    strong = hot[:, 2] * qe[ys, xs] >= 10 * sigma
    assert strong.sum() >= 1
    assert ((dq[ys[strong], xs[strong]] & 256) != 0).mean() >= 0.99
