"""Cross-check with the ESO DRS: `esorex muse_bias` on simulated full-format BIAS frames.

Runs only where esorex and cpl-plugin-muse are installed (marked ``drs``). One IFU of the
real 4224 x 4240 format keeps it to a few seconds of simulation and ~15 s of DRS time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import subprocess

import numpy as np
import pytest
from astropy.io import fits

from musered.simulate.exposure import Simulator
from musered.simulate.plan import Target, night_plan
from musered.simulate.profiles import FULL
from musered.simulate.run import write_frame

pytestmark = [
    pytest.mark.drs,
    pytest.mark.skipif(shutil.which("esorex") is None,
                       reason="esorex not on PATH (apt-get install esorex cpl-plugin-muse)"),
]


def _muse_bias(tmp_path, sim, n=3):
    plan = night_plan(dt.date(2024, 3, 10), Target("F", 150.0, -30.0), Target("S", 140.0, -30.0),
                      np.random.default_rng(0), n_exposures=0)
    biases = [f for f in plan if f.kind == "BIAS"][:n]
    raw = tmp_path / "raw"
    raw.mkdir()
    truths = []
    for i, f in enumerate(biases):
        truths.append(write_frame(sim, f, i + 1, raw / f.filename)["frame"])
    sof = tmp_path / "bias.sof"
    sof.write_text("".join(f"{raw / f.filename} BIAS\n" for f in biases))
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(["esorex", f"--output-dir={out}", "muse_bias", "--nifu=1", str(sof)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    products = list(out.glob("MASTER_BIAS*.fits"))
    assert products, proc.stdout[-2000:]
    return fits.getheader(products[0]), truths


def test_drs_master_bias_levels_match_injected(tmp_path):
    """Integer, flat levels (no gradient, structure or drift): the DRS per-quadrant levels,
    overscan means and read noise must reproduce what was injected."""
    sim = Simulator(dataclasses.replace(FULL, n_ifus=1), seed=21)
    ccd = sim.ccds[0]
    ccd.bias_level = np.array([1010.0, 1020.0, 1030.0, 1040.0])
    ccd.bias_gradient = np.zeros(4)
    ccd.bias_pattern = 0.0
    sim.bias_drift = 0.0
    h, _ = _muse_bias(tmp_path, sim)
    for n in range(1, 5):
        level = ccd.bias_level[n - 1]
        assert h[f"ESO QC BIAS LEVEL{n} MEDIAN"] == pytest.approx(level, abs=0.1)
        assert h[f"ESO QC BIAS LEVEL{n} MEAN"] == pytest.approx(level, abs=0.1)
        assert h[f"ESO DRS MUSE OVSC{n} MEAN"] == pytest.approx(level, abs=0.1)
        assert h[f"ESO QC BIAS MASTER{n} MEDIAN"] == pytest.approx(0.0, abs=0.1)
        # the DRS reports RON in electrons (count): compare with the injected e- value
        assert h[f"ESO QC BIAS MASTER{n} RON"] == pytest.approx(ccd.ron[n - 1], rel=0.06)


def test_drs_master_bias_with_gradient_and_structure(tmp_path):
    """The default model (vertical gradient, 2-D structure, frame drift): the DRS levels
    follow the injected per-frame levels and vpoly leaves a master bias near zero."""
    sim = Simulator(dataclasses.replace(FULL, n_ifus=1), seed=22)
    h, truths = _muse_bias(tmp_path, sim)
    means = np.mean([t["bias_mean"][0] for t in truths], axis=0)
    for n in range(1, 5):
        # the DRS level is the mean of per-frame medians of integer data: ±0.5 adu rounding
        assert h[f"ESO QC BIAS LEVEL{n} MEAN"] == pytest.approx(means[n - 1], abs=0.6)
        assert abs(h[f"ESO QC BIAS MASTER{n} MEDIAN"]) < 0.1
        assert h[f"ESO QC BIAS MASTER{n} RON"] == pytest.approx(sim.ccds[0].ron[n - 1], rel=0.06)
