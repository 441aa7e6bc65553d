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

Modules: :mod:`musered.reportruns` (runs and their QC summary), :mod:`musered.reportchoice`
(the plot of each run), :mod:`musered.reportplots` (drawing); this module writes the page
and re-exports the names of the first two that callers use.
"""

from __future__ import annotations

import datetime as dt
import html
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from .db import Database
from .errors import MuseredError
from .reportchoice import PlotChoice, choose_plot, render_plot
from .reportruns import ProductRow, Run, collect_runs, recipe_order, step_label, summarize_qc

__all__ = [
    "CSS", "NO_NIGHT", "PlotChoice", "ProductRow", "Run", "build_report", "choose_plot", "collect_runs",
    "recipe_order", "render_plot", "step_label", "summarize_qc",
]

NO_NIGHT = "Datasets and runs"


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
    """Write the report of the settings' reduction ``version`` (its runs only) into ``out``
    (default ``{reduced_path}/report``); return index.html."""
    out = Path(out) if out is not None else Path(settings.reduced_path) / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MuseredError(f"cannot create the report folder {out}: {exc.strerror or exc}") from None
    plot_dir = out / "plots"
    plot_dir.mkdir(exist_ok=True)
    runs = list(collect_runs(database, str(settings.version)) if runs is None else runs)
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
    order = recipe_order()
    recipes.sort(key=lambda r: (order.get(r, 99), r))
    head = "".join(f"<th>{_e(step_label(r))}</th>" for r in recipes)
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
            "(used unless a recipe block says exclude_flags)</summary>"
            f"<table><tr><th>exposure</th><th>night</th><th>flag</th><th>comment</th></tr>{rows}</table></details>")
