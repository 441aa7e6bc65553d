"""What a DRS recipe accepts: its parameters as ``esorex --params <recipe>`` lists them.

esorex is asked once per (esorex, recipe) and process; the answer is the recipe's
parameter names with their default as esorex prints them (``nifu: 0``,
``overscan: vpoly``). :func:`drs_arguments` turns our merged parameters into
``--name=value`` arguments, keeping only those the DRS recipe knows.
"""

from __future__ import annotations

import functools
import logging
import re
import subprocess
from collections.abc import Mapping

from recipes.base import ParamValue, RecipeError, format_param

logger = logging.getLogger("recipes.drs")

# "  nifu                  : 0" in the "Recipe Parameters :" section
_PARAM_LINE = re.compile(r"^\s{2}([A-Za-z][\w.\-]*)\s*:\s?(.*)$")
# Parameters esorex's caller options or our engine set per run, never copied from settings.
ENGINE_PARAMS = ("nifu", "merge")


@functools.lru_cache(maxsize=None)
def drs_params(recipe_name: str, esorex: str = "esorex") -> dict[str, str]:
    """The parameters of DRS recipe ``recipe_name``: ``{name: default as printed}``.

    Raises RecipeError (one line) when esorex cannot be run or does not know the recipe.
    """
    try:
        proc = subprocess.run([esorex, "--params", recipe_name], capture_output=True, text=True,
                              timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RecipeError(f"cannot run {esorex} --params {recipe_name}: {exc}") from None
    text = proc.stdout + proc.stderr
    if "Recipe Parameters" not in text:
        # esorex prints the caller options, then an error for an unknown recipe
        reason = next((line.strip() for line in text.splitlines() if "ERROR" in line), "")
        raise RecipeError(f"{esorex} does not know the DRS recipe {recipe_name}"
                          + (f": {reason}" if reason else f" (exit status {proc.returncode})"))
    section = text.split("Recipe Parameters", 1)[1].splitlines()[1:]
    params: dict[str, str] = {}
    for line in section:
        match = _PARAM_LINE.match(line)
        if match:
            params[match.group(1)] = match.group(2).strip()
    return params


def drs_arguments(recipe_name: str, params: Mapping[str, ParamValue | None],
                  known: Mapping[str, str]) -> list[str]:
    """``--name=value`` for each merged parameter the DRS recipe knows (``known``, from
    :func:`drs_params`); parameters it does not know are logged as dropped. ``None``
    values (our "not set") and :data:`ENGINE_PARAMS` are left to the DRS default / engine."""
    args: list[str] = []
    dropped: list[str] = []
    for name, value in params.items():
        if name in ENGINE_PARAMS:
            continue
        if name not in known:
            dropped.append(name)
            continue
        if value is None:
            continue
        args.append(f"--{name}={format_param(value)}")
    if dropped:
        logger.info("%s: parameters unknown to the DRS recipe, not passed: %s", recipe_name, ", ".join(dropped))
    return args
