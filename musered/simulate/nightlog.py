"""ESO night-log text files (``MUSE.<night>.NL.txt``) for simulated nights."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

CONDITIONS = ["Photometric", "Clear", "Thin cirrus", "Thick clouds"]


def weather_rows(night: dt.date, rng: np.random.Generator, seeing: float) -> list[tuple[str, str, str]]:
    """Three or four (time UT, conditions, comment) observations through the night."""
    times = ["23:05", "02:30", "05:12:30"] + (["08:40"] if rng.random() < 0.5 else [])
    rows = []
    for t in times:
        cond = CONDITIONS[int(rng.choice(3, p=[0.6, 0.3, 0.1]))]
        s = max(0.4, seeing + rng.normal(0, 0.1))
        rows.append((t, cond, f'Seeing {s:.2f}", wind {rng.uniform(2, 12):.0f} m/s'))
    return rows


def write_nightlog(folder: Path, night: dt.date, rows: list[tuple[str, str, str]]) -> Path:
    """Write ``MUSE.<night>.NL.txt`` with a header, the weather block and a summary."""
    iso = night.isoformat()
    lines = [
        "-" * 60,
        "        Night Log for UT4 - MUSE (simulated)",
        "-" * 60,
        f"Date: {iso}",
        "Observer(s): musered simulate",
        "",
        "Weather observations",
        "Time\tConditions\tComment",
    ]
    lines += ["\t".join(r) for r in rows]
    lines += ["", "Operations summary", "Twilight flats, standard star, science, daytime calibrations.", ""]
    path = folder / f"MUSE.{iso}.NL.txt"
    path.write_text("\n".join(lines))
    return path
