"""Header-reading speed of update-db against a plain astropy ``getheader`` loop.

Usage: ``.venv/bin/python bench/ingest.py [N]`` (default N = 2000).

Writes N realistic header-only MUSE raw files (about 260 cards, as tests/conftest.py
makes them; every 50th file with a small primary data array) into a temporary folder,
then, in the same run and on the same files:

1. the floor: ``astropy.io.fits.getheader(path)`` for every file;
2. ours: ``musered.fitsheader.read_primary_values(path)`` for every file (reads and parses
   every card into a dict, with the truncation checks update-db does);
3. the full ``update_db`` into a new SQLite database (walk, read, derive columns, write).

Each timing is the best of 3 passes (the first pass also warms the OS file cache).
Prints headers/s for each and the time ratio ours / astropy (goal: >= 2000 headers/s
and a ratio <= 1.5).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from astropy.io import fits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from conftest import write_raw_fits  # noqa: E402

from musered.db import Database, sqlite_url  # noqa: E402
from musered.fitsheader import read_primary_values  # noqa: E402
from musered.ingest import update_db  # noqa: E402
from musered.settings import settings_from_dict  # noqa: E402

KINDS = ("BIAS", "FLAT", "ARC", "OBJECT", "OBJECT", "ILLUM")


def make_files(raw: Path, n: int) -> list[Path]:
    files = []
    for i in range(n):
        night = 10 + (i // 400)
        stamp = f"2017-06-{night:02d}T{(i // 60) % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}.{i % 1000:03d}"
        files.append(write_raw_fits(raw / f"night{night}" / f"MUSE.{stamp}.fits", kind=KINDS[i % len(KINDS)],
                                    data=i % 50 == 0))
    return files


def best_of(passes: int, action) -> float:
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def main(n: int = 2000) -> None:
    with tempfile.TemporaryDirectory(prefix="musered-bench-") as tmp:
        tmp = Path(tmp)
        files = make_files(tmp / "raw", n)
        cards = len(fits.getheader(files[1]))
        print(f"{n} header-only raw files, {cards} cards each, in {tmp}")

        t_astropy = best_of(3, lambda: [fits.getheader(f) for f in files])
        t_ours = best_of(3, lambda: [read_primary_values(f) for f in files])
        print(f"astropy getheader loop : {n / t_astropy:8.0f} headers/s")
        print(f"musered header reader  : {n / t_ours:8.0f} headers/s")
        print(f"time ratio ours/astropy: {t_ours / t_astropy:8.2f}  (goal <= 1.5)")

        settings = settings_from_dict({"workdir": str(tmp)}, base_dir=tmp)

        def full_ingest() -> None:
            db_file = tmp / "bench.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db_file}{suffix}").unlink(missing_ok=True)
            database = Database(sqlite_url(db_file))
            report = update_db(settings, database, progress=False)
            assert report.added == n and not report.failed, report.summary()
            database.dispose()

        t_full = best_of(3, full_ingest)
        print(f"update_db (new SQLite) : {n / t_full:8.0f} files/s ({t_full:.2f} s for {n} files)")

        def incremental() -> None:
            database = Database(sqlite_url(tmp / "bench.db"))
            report = update_db(settings, database, progress=False)
            assert report.skipped == n
            database.dispose()

        t_again = best_of(3, incremental)
        print(f"update_db (unchanged)  : {n / t_again:8.0f} files/s ({t_again:.2f} s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
