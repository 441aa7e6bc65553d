"""``update-qc``: the QC keywords of the reduced products into the QC tables.

For each product file of the current version (``reduced`` rows with status ``ok``), the
``ESO QC`` keywords of its primary header and of its extension headers
(:func:`musered.fitsheader.read_qc_headers`) become rows of ``qc_{PRO_CATG}``
(:mod:`musered.qctables`), one per header with QC keywords. A file is read again only
when it was not read for its current ``reduced`` row (a new run of its recipe makes a
new row) or with ``force``; its old rows are replaced. ``qc_info`` is recounted.
MuseRed's ``update-qc`` does the same from its one record per product type; it also
leaves out TWILIGHT_CUBE, TRACE_SAMPLES, STD_FLUXES and STD_TELLURIC, which here simply
have no rows when their headers hold no QC keywords.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select

from recipes.io.fitsblocks import HeaderError

from .db import Database, Reduced
from .errors import MuseredError
from .fitsheader import read_qc_headers
from .qctables import existing_keys, qc_column, qc_table_name, update_qc_info, write_qc_rows


@dataclass
class QcReport:
    """What :func:`update_qc` did: rows written per product type, files read or skipped."""

    version: str
    rows: dict[str, int] = field(default_factory=dict)  # PRO_CATG -> rows written
    files_read: int = 0
    files_skipped: int = 0  # read already for their current reduced row
    files_without_qc: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def summary(self) -> str:
        """Plain-text lines (what ``musered update-qc`` prints)."""
        lines = [f"version {self.version}: {self.files_read} product files read, {self.files_skipped} "
                 f"already read, {self.files_without_qc} without QC keywords, {len(self.failed)} failed"]
        for pro_catg, n in sorted(self.rows.items()):
            lines.append(f"  {qc_table_name(pro_catg)}: {n} rows written")
        if not self.rows and not self.failed:
            lines.append("nothing to do")
        for path, reason in self.failed:
            lines.append(f"failed: {path}: {reason}")
        return "\n".join(lines)


def update_qc(settings, database: Database, pro_catg: str | Sequence[str] | None = None, force: bool = False,
              recipe_name: str | None = None) -> QcReport:
    """Fill the QC tables from the products of ``settings.version`` (module docstring).

    ``pro_catg``: only the products of this type (or these types); ``recipe_name``: only
    those of this recipe (settings block name); MuseredError naming what there is when
    nothing matches. ``force``: read every file again.
    """
    version = str(settings.version)
    report = QcReport(version=version)
    types = [pro_catg] if isinstance(pro_catg, str) else list(pro_catg or [])
    for catg in types:
        qc_table_name(catg)  # a type name, or a one-line error
    query = select(Reduced).where(Reduced.version == version, Reduced.status == "ok")
    if types:
        query = query.where(Reduced.PRO_CATG.in_(types))
    if recipe_name is not None:
        query = query.where(Reduced.recipe_name == recipe_name)
    with database.session() as session:
        products = session.scalars(query.order_by(Reduced.PRO_CATG, Reduced.name, Reduced.path)).all()
    if (types or recipe_name is not None) and not products:
        with database.session() as session:
            there = session.execute(select(Reduced.recipe_name, Reduced.PRO_CATG).distinct().where(
                Reduced.version == version, Reduced.status == "ok")).all()
        what = " ".join(filter(None, [", ".join(types), f"{recipe_name}" if recipe_name else ""]))
        known = sorted({c for _, c in there}) if recipe_name is None else sorted({f"{r} {c}" for r, c in there})
        raise MuseredError(f"no {what} products in version {version} (there are: {', '.join(known) or 'none'})")
    by_type: dict[str, list[Reduced]] = defaultdict(list)
    for product in products:
        by_type[product.PRO_CATG].append(product)
    now = dt.datetime.now()
    for catg, items in by_type.items():
        with database.engine.begin() as conn:
            done = existing_keys(conn, catg, version)
            read_for = {key[:4]: reduced_id for key, reduced_id in done.items()}
            rows = []
            for product in items:
                path = Path(product.path)
                if not force and read_for.get((version, product.recipe_name, product.name, path.name)) == product.id:
                    report.files_skipped += 1
                    continue
                try:
                    headers = read_qc_headers(path)
                except FileNotFoundError:
                    report.failed.append((str(path), "file not found"))
                    continue
                except (HeaderError, OSError) as exc:
                    report.failed.append((str(path), str(exc)))
                    continue
                report.files_read += 1
                report.files_without_qc += not headers
                fixed = {"name": product.name, "reduced_id": product.id, "version": version,
                         "recipe_name": product.recipe_name, "date_parsed": now, "DATE_OBS": product.DATE_OBS,
                         "INS_MODE": product.INS_MODE, "run": settings.run_of(product.night) if product.night else None,
                         "filename": path.name}
                for hdu, qc in headers:
                    rows.append({**fixed, "hdu": hdu, **{qc_column(k): v for k, v in qc.items()}})
            written = write_qc_rows(conn, catg, rows)
            if written:
                report.rows[catg] = written
                update_qc_info(conn, [catg], [version], now)
    return report
