"""``musered report``: a static HTML page of the reduction, readable without a server.

:func:`collect_runs` groups the ``reduced`` table into runs — one recipe on one target
(recipe block, target name, output folder), the products it wrote — and
:func:`build_report` writes ``index.html`` with, per night and recipe, each run's status,
runtime, date, a QC summary, one plot (:mod:`musered.reportplots`) and a link to every
product file and the run log. Links are relative to the page, so the report folder can
be opened from a file browser (``file://``) or copied next to ``reduced_path``.

Runs without a night (exp-align and exp-combine on a dataset, std-combine on a run) are
listed last, under "Datasets and runs".
Plots are redrawn only when a product is newer than the PNG. A plot that fails shows a
one-line note in its place, so one bad product never hides the rest of the report.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import os
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from .db import Database, Reduced
from .errors import MuseredError

logger = logging.getLogger(__name__)

# Recipes in reduction order; others follow alphabetically.
RECIPE_ORDER = (
    "muse_bias", "muse_dark", "muse_flat", "muse_wavecal", "muse_lsf", "muse_twilight", "muse_scibasic",
    "muse_standard", "muse_std_combine", "muse_scipost", "muse_scipost_make_cube", "muse_exp_align",
    "muse_exp_combine",
)
NO_NIGHT = "Datasets and runs"
# A numbered word of a QC key (CHAN01, SLICE12, INPUT3, MASTER4, THRU0500): keys that differ
# only by such numbers are summarised together (48 slices, 24 IFUs, 4 quadrants...).
_NUMBERED = re.compile(r"\b([A-Z][A-Z_]*?)?(\d+)\b")


@dataclass
class ProductRow:
    PRO_CATG: str
    path: Path
    qc: dict
    frames: dict = field(default_factory=dict)  # input tag -> [{path, md5}]


@dataclass
class Run:
    """The products of one recipe run on one target."""

    recipe_name: str
    name: str
    night: str | None
    output_dir: str | None
    status: str
    runtime: float | None
    date_run: dt.datetime | None
    log_path: Path | None
    OBJECT: str | None
    products: list[ProductRow] = field(default_factory=list)

    @property
    def qc(self) -> dict:
        out: dict = {}
        for product in self.products:
            out.update(product.qc or {})
        return out

    def first(self, *tags: str) -> ProductRow | None:
        """The first existing product with one of ``tags`` (in the order given)."""
        for tag in tags:
            for product in self.products:
                if product.PRO_CATG == tag and product.path.is_file():
                    return product
        return None

    @property
    def slug(self) -> str:
        text = f"{self.recipe_name}_{self.output_dir or ''}_{self.name}"
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def collect_runs(database: Database) -> list[Run]:
    """Every run recorded in ``reduced``, sorted by night (dataset runs last), recipe order
    and target name."""
    with database.session() as session:
        rows = session.scalars(select(Reduced).order_by(Reduced.id)).all()
    runs: dict[tuple, Run] = {}
    for row in rows:
        key = (row.recipe_name, row.name, row.output_dir or "", row.night)
        run = runs.get(key)
        if run is None:
            run = runs[key] = Run(
                recipe_name=row.recipe_name, name=row.name, night=row.night, output_dir=row.output_dir,
                status=row.status, runtime=row.runtime, date_run=row.date_run,
                log_path=Path(row.log_path) if row.log_path else None, OBJECT=row.OBJECT,
            )
        elif row.status != "ok":
            run.status = row.status
        run.products.append(ProductRow(row.PRO_CATG, Path(row.path), dict(row.qc or {}), dict(row.frames or {})))
    order = {name: i for i, name in enumerate(RECIPE_ORDER)}
    return sorted(runs.values(), key=lambda r: (r.night is None, r.night or "", order.get(r.recipe_name, 99),
                                                r.recipe_name, r.name, r.output_dir or ""))


# --------------------------------------------------------------------------------------
# QC summary


def summarize_qc(qc: Mapping[str, object], limit: int = 40) -> list[tuple[str, str]]:
    """(key, value text) rows: keys that differ only by a number (slice, IFU, input...) are
    merged into one row ``median (min … max, N values)``; at most ``limit`` rows."""
    groups: dict[str, list] = defaultdict(list)
    for key, value in qc.items():
        groups[_NUMBERED.sub(lambda m: f"{m.group(1) or ''}*", key)].append((key, value))
    rows = []
    for pattern in sorted(groups):
        members = groups[pattern]
        values = [v for _, v in members]
        numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(members) == 1:
            rows.append((members[0][0], _fmt(values[0])))
        elif len(numbers) == len(values):
            import numpy as np

            arr = np.array(numbers)
            rows.append((pattern, f"{_fmt(float(np.median(arr)))} ({_fmt(float(arr.min()))} … "
                                  f"{_fmt(float(arr.max()))}, {arr.size} values)"))
        else:
            rows.append((pattern, ", ".join(sorted({_fmt(v) for v in values}))[:120]))
    if len(rows) > limit:
        rows = rows[:limit] + [("…", f"{len(rows) - limit} more QC rows")]
    return rows


def _fmt(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# --------------------------------------------------------------------------------------
# Plots


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


# --------------------------------------------------------------------------------------
# HTML


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 0 1.5em 3em; color: #222; line-height: 1.4; }
h1 { margin: 0.8em 0 0.2em; } h2 { border-bottom: 2px solid #ccc; margin-top: 2em; }
h3 { margin: 1.2em 0 0.4em; color: #345; }
nav { background: #f4f6f8; padding: 0.6em 1em; border-radius: 6px; }
nav a { margin-right: 1em; white-space: nowrap; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border-bottom: 1px solid #e3e3e3; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f6f8; }
.run { border: 1px solid #dde; border-radius: 6px; padding: 0.6em 1em; margin: 0.8em 0; overflow: hidden; }
.run h4 { margin: 0 0 0.4em; font-size: 1.05em; }
.meta span { margin-right: 1.4em; }
.ok { color: #176f2c; font-weight: bold; } .failed, .bad { color: #b00020; font-weight: bold; }
.cols { display: grid; grid-template-columns: minmax(0, 2fr) minmax(16em, 1fr); gap: 1.2em; align-items: start; }
@media (max-width: 800px) { .cols { grid-template-columns: minmax(0, 1fr); } }
.cols > div { min-width: 0; }
.plot img { max-width: 100%; height: auto; border: 1px solid #eee; }
.products { font-family: ui-monospace, monospace; font-size: 0.85em; word-break: break-all; }
.note { color: #777; font-style: italic; }
details summary { cursor: pointer; color: #345; }
.qc td:first-child { font-family: ui-monospace, monospace; font-size: 0.85em; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _href(path: Path, page_dir: Path) -> str:
    """A link from the page to ``path``: relative, with URL-unsafe characters quoted
    (exposure names hold ':')."""
    from urllib.parse import quote

    rel = os.path.relpath(Path(path).resolve(), page_dir.resolve())
    rel = rel.replace(os.sep, "/")
    quoted = quote(rel)
    # './' keeps a leading 'name:...' segment from reading as a URL scheme
    return quoted if quoted.startswith(".") else f"./{quoted}"


def _runtime(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _run_html(run: Run, out: Path, plot_dir: Path) -> str:
    status_class = "ok" if run.status == "ok" else "bad"
    parts = [f'<div class="run" id="{_e(run.slug)}">',
             f"<h4>{_e(run.name)}" + (f" <small>({_e(run.output_dir)})</small>" if run.output_dir else "") + "</h4>",
             '<div class="meta">',
             f'<span>status <span class="{status_class}">{_e(run.status)}</span></span>',
             f"<span>runtime {_e(_runtime(run.runtime))}</span>"]
    if run.date_run:
        parts.append(f"<span>run {_e(run.date_run.strftime('%Y-%m-%d %H:%M'))} UTC</span>")
    if run.OBJECT:
        parts.append(f"<span>OBJECT {_e(run.OBJECT)}</span>")
    parts.append("</div>")
    caption, png, error = render_plot(run, plot_dir)
    parts.append('<div class="cols">')
    if png is not None:
        parts.append(f'<div class="plot"><img src="{_href(png, out)}" alt="{_e(caption)}" loading="lazy">'
                     f'<div class="note">{_e(caption)}</div></div>')
    elif error is not None:
        parts.append(f'<div class="plot note">no {_e(caption)} plot: {_e(error)}</div>')
    parts.append("<div>")
    parts.append('<div class="products"><b>products</b><ul>')
    for product in run.products:
        missing = "" if product.path.is_file() else ' <span class="bad">(missing)</span>'
        parts.append(f'<li><a href="{_href(product.path, out)}">{_e(product.path.name)}</a> '
                     f"{_e(product.PRO_CATG)}{missing}</li>")
    if run.log_path is not None and run.log_path.is_file():
        parts.append(f'<li><a href="{_href(run.log_path, out)}">{_e(run.log_path.name)}</a> log</li>')
    parts.append("</ul></div>")
    qc_rows = summarize_qc(run.qc)
    if qc_rows:
        rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in qc_rows)
        parts.append(f'<details><summary>QC ({len(run.qc)} values)</summary>'
                     f'<table class="qc"><tr><th>key</th><th>value</th></tr>{rows}</table></details>')
    parts.append("</div></div></div>")
    return "\n".join(parts)


def _night_anchor(night: str) -> str:
    return "night-" + re.sub(r"[^A-Za-z0-9-]+", "_", night)


def build_report(settings, database: Database, out: str | Path | None = None,
                 runs: Sequence[Run] | None = None) -> Path:
    """Write the report into ``out`` (default ``{reduced_path}/report``); return index.html."""
    out = Path(out) if out is not None else Path(settings.reduced_path) / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MuseredError(f"cannot create the report folder {out}: {exc.strerror or exc}") from None
    plot_dir = out / "plots"
    plot_dir.mkdir(exist_ok=True)
    runs = list(collect_runs(database) if runs is None else runs)
    by_night: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        by_night[run.night or NO_NIGHT][run.recipe_name].append(run)
    n_products = sum(len(r.products) for r in runs)
    n_bad = sum(r.status != "ok" for r in runs)
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"musered report — version {getattr(settings, 'version', '?')}"
    body = [f"<h1>{_e(title)}</h1>",
            f"<p>{len(runs)} recipe runs, {n_products} products"
            + (f', <span class="bad">{n_bad} not ok</span>' if n_bad else "")
            + f". Reduced data: <code>{_e(settings.reduced_path)}</code>. Generated {generated}.</p>"]
    body.append(_flags_html(database))
    if not runs:
        body.append('<p class="note">No products in the database yet: run process-calib first.</p>')
    else:
        body.append("<nav>" + "".join(f'<a href="#{_night_anchor(n)}">{_e(n)}</a>' for n in by_night) + "</nav>")
        body.append(_overview_html(by_night))
    for night, recipes in by_night.items():
        body.append(f'<h2 id="{_night_anchor(night)}">{_e(night if night == NO_NIGHT else "Night " + night)}</h2>')
        for recipe, recipe_runs in recipes.items():
            body.append(f"<h3>{_e(recipe)} <small>({len(recipe_runs)} run{'s' if len(recipe_runs) > 1 else ''})"
                        "</small></h3>")
            body.extend(_run_html(run, out, plot_dir) for run in recipe_runs)
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _overview_html(by_night: Mapping[str, Mapping[str, list[Run]]]) -> str:
    """One row per night: the recipes run and how many runs are ok, linked to the runs."""
    recipes = []
    for night_recipes in by_night.values():
        recipes.extend(r for r in night_recipes if r not in recipes)
    order = {name: i for i, name in enumerate(RECIPE_ORDER)}
    recipes.sort(key=lambda r: (order.get(r, 99), r))
    head = "".join(f"<th>{_e(r.removeprefix('muse_'))}</th>" for r in recipes)
    rows = []
    for night, night_recipes in by_night.items():
        cells = []
        for recipe in recipes:
            runs = night_recipes.get(recipe, [])
            if not runs:
                cells.append("<td>–</td>")
                continue
            ok = sum(r.status == "ok" for r in runs)
            cls = "ok" if ok == len(runs) else "bad"
            cells.append(f'<td><a class="{cls}" href="#{_e(runs[0].slug)}">{ok}/{len(runs)}</a></td>')
        rows.append(f'<tr><td><a href="#{_night_anchor(night)}">{_e(night)}</a></td>{"".join(cells)}</tr>')
    return f"<h2>Overview</h2><table><tr><th>night</th>{head}</tr>{''.join(rows)}</table>"


def _flags_html(database: Database) -> str:
    from .flags import list_flags

    entries = list_flags(database)
    if not entries:
        return ""
    rows = "".join(f"<tr><td>{_e(e.name)}</td><td>{_e(e.night or '–')}</td><td>{_e(e.flag)}</td>"
                   f"<td>{_e(e.comment or '')}</td></tr>" for e in entries)
    return (f"<details><summary>{len(entries)} exposure flag{'s' if len(entries) > 1 else ''} "
            "(flagged exposures are excluded by default)</summary>"
            f"<table><tr><th>exposure</th><th>night</th><th>flag</th><th>comment</th></tr>{rows}</table></details>")
