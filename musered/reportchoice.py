"""Which plot a report run gets, and drawing it only when its products changed.

:func:`choose_plot` picks the most telling product of a run (master bias, traces,
wavelength residuals, response, alignment, cube...) and says how to draw it with
:mod:`musered.reportplots`; :func:`render_plot` draws it into the report's plot folder,
keeps a PNG newer than its sources, and turns a failure into a one-line note.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .reportruns import Run

# Named as before the split, so that report warnings keep their logger.
logger = logging.getLogger("musered.report")


@dataclass
class PlotChoice:
    """What to draw for a run: a description, the product files read, and how to draw."""

    caption: str
    sources: list[Path]
    draw: Callable[[Path], Path]


def choose_plot(run: Run) -> PlotChoice | None:
    """The one plot of a run, from the most telling product it has (None: nothing to draw)."""
    from . import reportplots as rp

    def first(*tags):
        return run.first(*tags)

    if (p := first("MASTER_BIAS")) is not None:
        return PlotChoice("master bias histogram", [p.path],
                          lambda out: rp.plot_ccd_histogram(p.path, out, "Master bias pixel values"))
    if (p := first("MASTER_DARK")) is not None:
        return PlotChoice("master dark histogram", [p.path],
                          lambda out: rp.plot_ccd_histogram(p.path, out, "Master dark pixel values"))
    if (p := first("TRACE_TABLE")) is not None:
        flat = first("MASTER_FLAT")
        sources = [p.path] + ([flat.path] if flat else [])
        return PlotChoice("slice traces over the master flat", sources,
                          lambda out: rp.plot_traces(p.path, out, flat.path if flat else None))
    if (p := first("WAVECAL_RESIDUALS")) is not None:
        return PlotChoice("wavelength residuals", [p.path], lambda out: rp.plot_wavecal_residuals(p.path, out))
    if (p := first("WAVECAL_TABLE")) is not None:
        qc = run.qc
        return PlotChoice("wavelength fit rms per slice", [p.path], lambda out: rp.plot_wavecal_rms(qc, out))
    if (p := first("LSF_PROFILE")) is not None:
        return PlotChoice("LSF width against wavelength", [p.path], lambda out: rp.plot_lsf_width(p.path, out))
    if (p := first("STD_RESPONSE")) is not None:
        tell = first("STD_TELLURIC")
        # std-combine records the responses it combined as its STD_RESPONSE frames
        inputs = [Path(f["path"]) for f in p.frames.get("STD_RESPONSE", []) if isinstance(f, Mapping)]
        sources = [p.path] + ([tell.path] if tell else [])
        caption = "combined response curve (inputs in grey)" if inputs else "response curve"
        return PlotChoice(caption, sources,
                          lambda out: rp.plot_response(p.path, out, tell.path if tell else None, inputs))
    if (p := first("OFFSET_LIST")) is not None:
        preview = first("PREVIEW_FOV")
        sources = sorted(x.path for x in run.products if x.PRO_CATG == "SOURCE_LIST" and x.path.is_file())
        inputs = [Path(f["path"]) for f in p.frames.get("IMAGE_FOV", []) if isinstance(f, Mapping)]
        title = run.name

        def draw(out: Path) -> Path:
            from .alignplot import plot_alignment

            return plot_alignment(out, p.path, preview=preview.path if preview else None, source_lists=sources,
                                  fov_images=[] if preview else inputs, title=title)

        return PlotChoice("alignment preview (exposures combined with the offsets applied, sources marked)",
                          [p.path] + ([preview.path] if preview else []) + sources, draw)
    if (p := first("PREVIEW_FOV")) is not None:
        return PlotChoice("alignment preview (exposures combined with the offsets applied)", [p.path],
                          lambda out: rp.plot_image(p.path, out, "Alignment preview"))
    if (p := first("DATACUBE_FINAL")) is not None:
        white = first("IMAGE_FOV")
        sources = [p.path] + ([white.path] if white else [])
        title = f"{run.recipe_name} {run.name}"
        return PlotChoice("white-light image and spectrum of the cube", sources,
                          lambda out: rp.plot_cube(p.path, out, title, white.path if white else None))
    if (p := first("IMAGE_FOV")) is not None:
        return PlotChoice("white-light image", [p.path], lambda out: rp.plot_image(p.path, out, "White-light image"))
    if (p := first("TWILIGHT_CUBE", "DATACUBE_SKYFLAT")) is not None:
        return PlotChoice(f"{p.PRO_CATG}: mean over wavelength", [p.path],
                          lambda out: rp.plot_cube_image(p.path, out, p.PRO_CATG))
    red = [x for x in run.products if x.PRO_CATG.endswith("_RED") and x.path.is_file()]
    if red:
        p = red[0]
        return PlotChoice(f"{p.PRO_CATG} (pre-processed CCD image)", [p.path],
                          lambda out: rp.plot_ccd_image(p.path, out, p.PRO_CATG))
    return None


def render_plot(run: Run, plot_dir: Path) -> tuple[str, Path | None, str | None]:
    """(caption, PNG path or None, error text or None) of a run's plot; redrawn only when
    a source product is newer than the PNG."""
    choice = choose_plot(run)
    if choice is None:
        return "", None, None
    out = plot_dir / f"{run.slug}.png"
    try:
        if out.is_file() and all(out.stat().st_mtime >= s.stat().st_mtime for s in choice.sources):
            return choice.caption, out, None
        return choice.caption, choice.draw(out), None
    except Exception as exc:  # a bad product must not stop the report; say why instead
        import matplotlib.pyplot as plt

        plt.close("all")
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        logger.warning("report: no plot for %s %s: %s", run.recipe_name, run.name, message)
        out.unlink(missing_ok=True)
        return choice.caption, None, message
