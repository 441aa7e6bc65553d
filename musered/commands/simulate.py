"""``musered simulate OUTDIR``: write simulated MUSE raw data with their ground truth."""

from __future__ import annotations

import datetime as dt
import time

import click


@click.command("simulate")
@click.argument("outdir", type=click.Path(file_okay=False, path_type=str))
@click.option("--profile", type=click.Choice(["mini", "full"]), default="mini", show_default=True,
              help="mini: 2 IFUs, small CCD, 5950-6950 A (tests); full: the real 24-IFU format.")
@click.option("--nights", type=click.IntRange(1, 60), default=1, show_default=True,
              help="Number of consecutive nights.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same files).")
@click.option("--dataset", default="SIMFIELD", show_default=True, help="OBJECT name of the science field.")
@click.option("--exposures", type=click.IntRange(0, 100), default=4, show_default=True,
              help="Dithered OBJECT exposures per night (rotations 0/90/180/270).")
@click.option("--dark", is_flag=True, help="Also take 3 DARK frames of 1800 s each morning.")
@click.option("--start", "start", default="2024-03-10", show_default=True,
              help="ISO date of the first night.")
@click.option("--ifus", type=click.IntRange(1, 24), default=None,
              help="Write only the first N IFUs (default: all of the profile).")
def command(outdir: str, profile: str, nights: int, seed: int, dataset: str, exposures: int,
            dark: bool, start: str, ifus: int | None) -> None:
    """Simulate MUSE raw data, static calibrations and ground truth into OUTDIR.

    OUTDIR gets raw/ (MUSE.<DATE-OBS>.fits and a night log per night), muse-calib/
    (LINE_CATALOG, GEOMETRY_TABLE, ... in DRS formats), truth/ (truth.json and FITS
    arrays) and a settings.yml, so that `cd OUTDIR; musered update-db; musered info`
    works. Each night: twilight SKYFLATs, one STD, ILLUM flats, the dithered OBJECT
    exposures, then 11 BIAS, 11 FLAT and 15 ARC (Ne, Xe, HgCd) in the morning.
    """
    from ..errors import MuseredError
    from ..simulate import simulate

    try:
        start_date = dt.date.fromisoformat(start)
    except ValueError:
        raise MuseredError(f"simulate: --start '{start}' is not an ISO date (YYYY-MM-DD)") from None
    t0 = time.perf_counter()
    res = simulate(outdir, profile=profile, nights=nights, seed=seed, dataset=dataset,
                   exposures=exposures, dark=dark, start=start_date, ifus=ifus,
                   progress=lambda msg: click.echo(f"  {msg}"))
    click.echo(f"Wrote {len(res.raw_files)} raw files for night(s) {', '.join(res.nights)}, "
               f"{len(res.statics)} static calibrations and the truth into {res.outdir} "
               f"in {time.perf_counter() - t0:.1f} s.")
    click.echo(f"Next: cd {res.outdir}; musered update-db; musered info")
