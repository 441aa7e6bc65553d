"""Cross-check with the ESO DRS: `esorex muse_flat` traces the simulated slices.

One IFU of the full format, 3 biases and 3 lamp flats, plus the simulator's BADPIX_TABLE
(without it the DRS first-guess slice search is derailed by the dead columns). Marked
``drs``; skipped where esorex is absent.
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
from musered.simulate.statics import badpix_table
from recipes.algorithms.instrument import polyval_y

pytestmark = [
    pytest.mark.drs,
    pytest.mark.skipif(shutil.which("esorex") is None,
                       reason="esorex not on PATH (apt-get install esorex cpl-plugin-muse)"),
]


def _esorex(tmp_path, recipe: str, sof_lines: list[str], *params: str):
    sof = tmp_path / f"{recipe}.sof"
    sof.write_text("".join(line + "\n" for line in sof_lines))
    proc = subprocess.run(["esorex", f"--output-dir={tmp_path}", recipe, "--nifu=1", *params, str(sof)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_drs_traces_simulated_slices(tmp_path):
    sim = Simulator(dataclasses.replace(FULL, n_ifus=1), seed=31)
    plan = night_plan(dt.date(2024, 3, 10), Target("F", 150.0, -30.0), Target("S", 140.0, -30.0),
                      np.random.default_rng(0), n_exposures=0)
    raw = tmp_path / "raw"
    raw.mkdir()
    frames = {"BIAS": [], "FLAT": []}
    for kind in frames:
        for i, f in enumerate([f for f in plan if f.kind == kind][:3]):
            write_frame(sim, f, len(frames["BIAS"]) + i + 1, raw / f.filename)
            frames[kind].append(raw / f.filename)
    badpix_table(tmp_path / "badpix.fits", sim)
    _esorex(tmp_path, "muse_bias", [f"{p} BIAS" for p in frames["BIAS"]])
    log = _esorex(tmp_path, "muse_flat",
                  [f"{p} FLAT" for p in frames["FLAT"]]
                  + [f"{tmp_path / 'MASTER_BIAS-01.fits'} MASTER_BIAS",
                     f"{tmp_path / 'badpix.fits'} BADPIX_TABLE"])
    assert "Found 48 slices" in log
    table = fits.getdata(tmp_path / "TRACE_TABLE-01.fits", 1)
    y = np.linspace(20.0, 4092.0, 100)
    errors = []
    for s in sim.layouts[0].slices:
        row = table[table["SliceNo"] == s.slice_ccd][0]
        for i, truth in enumerate((s.centre, s.left, s.right)):
            coeffs = np.array([row[f"tc{i}_{k:02d}"] for k in range(6)])
            errors.append(polyval_y(coeffs, y) - polyval_y(truth, y))
    errors = np.array(errors)
    # the DRS traced the injected 50 % edges: 0.001 px rms, 0.014 px max in our runs
    assert np.sqrt(np.mean(errors**2)) < 0.02
    assert np.abs(errors).max() < 0.1
