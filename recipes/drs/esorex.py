"""Run a recipe with the ESO DRS (esorex) instead of ours: same frames, parameters, folder.

:func:`run_esorex` is a drop-in for ``recipe.run(frames, params, outdir)``: it writes the
SOF, passes the merged parameters the DRS recipe knows (:mod:`recipes.drs.params`),
runs esorex in ``outdir`` (esorex writes its products to its cwd first, so cwd and
``--output-dir`` are both the output folder) and returns what it wrote as Products
(:mod:`recipes.drs.collect`). esorex's messages go to the ``recipes.drs`` logger, so into
the run's log; its ``[ ERROR ]`` lines as warnings (the DRS logs errors that it recovers
from, e.g. muse_wavecal's "No lines with quality >= 1 found", and still exits 0).

Per-IFU recipes (a ``nifu`` parameter in ``esorex --params``) run once per IFU found in
the raw or pixel-table inputs, ``--nifu=k`` (``--nifu=-1`` when all 24 are there: on a
file with fewer IFUs, -1 logs an error for each absent one) and ``--merge=false``;
their per-IFU files are merged into our one-file-per-tag layout afterwards.
"""

from __future__ import annotations

import functools
import logging
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from astropy.io import fits

from recipes.base import ParamValue, Product, Recipe, RecipeError
from recipes.drs.collect import collect_products
from recipes.drs.params import drs_arguments, drs_params
from recipes.drs.sof import write_sof
from recipes.io.hdus import fits_index, is_compressed

logger = logging.getLogger("recipes.drs")

SOF_NAME = "esorex.sof"
ALL_IFUS = tuple(range(1, 25))
_ERROR = re.compile(r"\[\s*ERROR\s*\]\s*(?P<who>[\w.\-]+):\s*(?:\[tid=\d+\]\s*)?(?P<msg>.*)$")
_CHAN = re.compile(r"^CHAN(\d\d)$")
_VERSION = re.compile(r"version\s+(\d[\w.\-]*)")


def run_esorex(recipe: Recipe, frames: Mapping[str, Sequence[Path]], params: Mapping[str, ParamValue | None],
               outdir: Path, esorex: str = "esorex") -> list[Product]:
    """Run DRS recipe ``recipe.name`` on ``frames`` (tag -> files) with ``params`` (our
    merged, validated parameters) in ``outdir``; return its products.

    Raises RecipeError with the DRS's own error line when esorex exits non-zero, and
    when it writes no product of the recipe's declared outputs.
    """
    outdir = Path(outdir)
    known = drs_params(recipe.name, esorex)
    sof = write_sof(frames, outdir / SOF_NAME)
    args = drs_arguments(recipe.name, params, known)
    if "merge" in known:
        args.append("--merge=false")  # we merge per-IFU files ourselves, after all IFUs ran
    runs: list[int | None] = [None]
    if "nifu" in known:
        ifus = input_ifus([p for tag in recipe.inputs for p in frames.get(tag, [])])
        if not ifus:
            raise RecipeError(f"{recipe.name}: no IFU found in the input frames for the DRS's --nifu")
        runs = [-1] if tuple(ifus) == ALL_IFUS else list(ifus)
    before = set(outdir.glob("*.fits"))
    for nifu in runs:
        # --log-level=off: no esorex.log; its messages come through stdout into our log
        cmd = [esorex, "--log-level=off", f"--output-dir={outdir}", recipe.name,
               *([f"--nifu={nifu}"] if nifu is not None else []), *args, str(sof)]
        _run(cmd, outdir, recipe.name if nifu is None else f"{recipe.name} (IFU {nifu})")
    products = collect_products(outdir, recipe.outputs, skip=before)
    if not products:
        raise RecipeError(f"esorex {recipe.name} exited 0 but wrote no product "
                          f"({', '.join(recipe.outputs)}); see the run log")
    return products


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    """Run one esorex command, its output line by line into the log; RecipeError on failure."""
    logger.info("running %s", " ".join(cmd))
    first_error = None
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
    except OSError as exc:
        raise RecipeError(f"cannot run {cmd[0]}: {exc.strerror or exc}") from None
    with proc:
        for line in proc.stdout:
            line = line.rstrip()
            if not line.strip():
                continue
            message = error_message(line)
            if message is not None:
                logger.warning("%s", line)
                first_error = first_error or message
            else:
                logger.info("%s", line)
    if proc.returncode != 0:
        raise RecipeError(f"esorex {what} failed (exit status {proc.returncode}): "
                          f"{first_error or 'no ERROR line; see the run log'}")


def error_message(line: str) -> str | None:
    """The message of an esorex ``[ ERROR ]`` line worth reporting, else None.

    Headers of the DRS's error dump ("Dumping the 20 most recent error(s)...") carry no
    message; esorex's closing "Execution of recipe ... failed" is kept only as a last
    resort (the caller takes the first message it gets).

    >>> error_message("00:05:33 [ ERROR ] muse_bias: [tid=000] No valid raw tag(s) found!")
    'muse_bias: No valid raw tag(s) found!'
    >>> error_message("[ ERROR ] muse_bias: [tid=000] Dumping the 2 most recent error(s) out of 2:") is None
    True
    """
    match = _ERROR.search(line)
    if not match:
        return None
    msg = match.group("msg").strip()
    if not msg or msg.startswith("Dumping the"):
        return None
    return f"{match.group('who')}: {msg}"


def input_ifus(paths: Sequence[Path]) -> list[int]:
    """The IFUs in raw frames (``CHANnn`` extensions) and single-IFU files such as pixel
    tables (primary ``EXTNAME = CHANnn``), sorted."""
    ifus: set[int] = set()
    for path in paths:
        if is_compressed(Path(path)):
            with fits.open(path) as hdul:
                names = [str(h.header.get("EXTNAME", "")).strip() for h in hdul]
        else:
            index = fits_index(Path(path))
            names = [h.name for h in index]
            if not names[0]:  # fits_index names the primary by EXTNAME only when it has one
                names[0] = str(fits.getheader(path).get("EXTNAME", "")).strip()
        primary = _CHAN.match(names[0] or "")
        if primary:
            ifus.add(int(primary.group(1)))
        else:
            ifus.update(int(m.group(1)) for m in map(_CHAN.match, names[1:]) if m)
    return sorted(ifus)


@functools.lru_cache(maxsize=None)
def esorex_version(esorex: str = "esorex") -> str:
    """esorex's version (``3.13.6``), ``?`` when it cannot be told."""
    try:
        proc = subprocess.run([esorex, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    match = _VERSION.search(proc.stdout + proc.stderr)
    return match.group(1) if match else "?"


def engine_versions(products: Sequence[Product], recipe_name: str, esorex: str = "esorex") -> dict[str, str]:
    """What to record of the DRS that made ``products``: esorex's version and the
    pipeline's (``muse/2.8.7``): the ``ESO PRO RECi PIPE ID`` of the REC that is
    ``recipe_name`` (a DRS product carries its chain: REC1 may be our muse_scibasic)."""
    pipe = "?"
    for product in products:
        try:
            header = fits.getheader(product.path)
        except (OSError, ValueError):
            continue
        i = 1
        while f"ESO PRO REC{i} ID" in header:
            if str(header[f"ESO PRO REC{i} ID"]).strip() == recipe_name:
                pipe = str(header.get(f"ESO PRO REC{i} PIPE ID", "?")).strip()
            i += 1
        break
    return {"esorex": esorex_version(esorex), "drs": pipe}
