"""The processing methods of :class:`musered.api.MuseRed`: the commands, from Python.

Each method calls what its command calls, with MuseRed's argument names:

- ``update_db`` → :func:`musered.ingest.update_db`;
- ``process_calib`` / ``process_exp`` / ``process_standard`` → the steps of
  ``process-calib`` / ``process-exp`` (:mod:`musered.commands.steps`); ``recipe_name`` is
  a recipe (``muse_bias``), a step (``bias``) or a list of them, None for the default
  steps; ``dates``: nights, runs, exposure names, TPL_STARTs, globs;
- ``std_combine`` → :func:`musered.commands.std_combine.std_combine`;
- ``clean`` → :func:`musered.clean.clean` (a dry run unless ``force``);
- ``copy_reduced`` → :func:`musered.copyreduced.copy_reduced`;
- ``update_qc`` → :func:`musered.qctables.update_qc`;
- ``exp_align`` → :func:`musered.expalign.exp_align`; ``exp_combine`` →
  :func:`musered.expcombine.exp_combine`; ``retrieve_data`` →
  :func:`musered.retrievedata.retrieve_data`;
- ``import_musered`` runs its command with the equivalent options.

A failed target raises a :class:`~musered.errors.MuseredError` naming every failure, once
all targets have run, as the commands exit non-zero. ``dry_run=True`` prints what each
target would use (frames, search log, parameters) and runs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import MuseredError


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def chosen_recipes(command: str, names: str | Sequence[str] | None) -> list:
    """The recipes of ``command`` meant by ``names`` (recipe names, step names or MuseRed's
    ``muse_``-less names; None: the default steps), in step order, each with the step it
    needs first (as the command's step flags do)."""
    from .commands.steps import chosen_steps, command_recipes

    recipes = command_recipes(command)
    flags: dict[str, bool] = {}
    for name in _as_list(names):
        # MuseRed's normalize_recipe_name added the DRS prefix: its short name is the
        # recipe name after the first "_" (as musered.clean.resolve_recipes reads it)
        hits = [r for r in recipes if name in (r.name, r.step_name, r.name.partition("_")[2])]
        if not hits:
            known = ", ".join(f"{r.step_name} ({r.name})" for r in recipes)
            raise MuseredError(f"{command}: unknown recipe {name!r}; steps: {known}")
        flags[hits[0].step_name] = True
    return chosen_steps(command, flags)


class RunMixin:
    """Processing methods (module docstring); needs ``settings`` and ``database``."""

    settings: Any
    database: Any
    db: Any

    def update_db(self, force: bool = False):
        """Ingest new and changed raw files (``musered update-db``); the
        :class:`~musered.ingest.IngestReport` (``print(report.summary())``)."""
        from .ingest import update_db

        report = update_db(self.settings, self.database, force=force, progress=False)
        self.db.refresh()
        return report

    def process_calib(self, recipe_name: str | Sequence[str] | None = None, dates: str | Sequence[str] | None = None,
                      params_name: str | None = None, force: bool = False, dry_run: bool = False,
                      jobs: int | None = None) -> None:
        """Run calibration steps on their sequences (``musered process-calib``)."""
        from .commands.steps import run_selected_steps

        run_selected_steps(self, chosen_recipes("process-calib", recipe_name), _as_list(dates),
                           params_block=params_name, force=force, dry_run=dry_run, jobs=jobs)

    def process_exp(self, recipe_name: str | Sequence[str] | None = None, dates: str | Sequence[str] | None = None,
                    dataset: str | Sequence[str] | None = None, params_name: str | None = None,
                    force: bool = False, dry_run: bool = False, jobs: int | None = None) -> None:
        """Run exposure steps (``musered process-exp``); ``dataset``: its exposures."""
        from .commands.steps import run_selected_steps

        run_selected_steps(self, chosen_recipes("process-exp", recipe_name), _as_list(dates) + _as_list(dataset),
                           params_block=params_name, force=force, dry_run=dry_run, jobs=jobs)

    def process_standard(self, dates: str | Sequence[str] | None = None, **kwargs: Any) -> None:
        """Reduce the standard stars, scibasic first (``musered process-exp --standard``)."""
        self.process_exp("standard", dates, **kwargs)

    def std_combine(self, runs: str | Sequence[str] | None = None, name: str | None = None,
                    params_name: str | None = None, mode: str | None = None, method: str | None = None,
                    force: bool = False, dry_run: bool = False):
        """Combine the standards of each run (or of the nights given) (``musered
        std-combine``); the runner's :class:`~musered.runner.StepSummary`."""
        from .commands.std_combine import std_combine

        summary = std_combine(self.settings, self.database, tuple(_as_list(runs)), name=name, mode=mode,
                              method=method, params_block=params_name, force=force, dry_run=dry_run)
        if summary.failed:
            raise MuseredError(summary.failure_message())
        return summary

    def exp_align(self, dataset: str | Sequence[str], method: str | None = None, filt: str | None = None,
                  params_name: str | None = None, name: str | None = None, exps: str | Sequence[str] | None = None,
                  njobs: int | None = None, force: bool = False, dry_run: bool = False):
        """Offsets between the exposures of a dataset (``musered exp-align``); ``method``
        as ``--method`` (drs, image), ``exps``: only these exposures, nights, runs or
        globs (``--date``); the :class:`~musered.expalign.AlignReport` (``.summary``: the
        runner's results, ``.previews``: dataset -> alignment.png)."""
        from .expalign import exp_align

        report = exp_align(self.settings, self.database, _as_list(dataset), method=method, name=name,
                           params_block=params_name, filt=filt, dates=_as_list(exps), njobs=njobs, force=force,
                           dry_run=dry_run)
        if report.failed:
            raise MuseredError(report.summary.failure_message())
        return report

    def exp_combine(self, dataset: str | Sequence[str], method: str | None = None, name: str | None = None,
                    params_name: str | None = None, force: bool = False, dry_run: bool = False):
        """Combine the exposures of a dataset (``musered exp-combine``); ``method`` as
        ``--method`` (drs, mpdaf), ``name`` one entry of the block's names_with_selection;
        the runner's :class:`~musered.runner.StepSummary` (one result per product, with
        the exposures ``left_out`` and why)."""
        from .expcombine import combine_problem, exp_combine

        summary = exp_combine(self.settings, self.database, _as_list(dataset), method=method,
                              params_block=params_name, name=name, force=force, dry_run=dry_run)
        problem = combine_problem(summary)
        if problem:
            raise MuseredError(problem)
        return summary

    def retrieve_data(self, dataset: str | Sequence[str] | None = None, start: str | None = None,
                      end: str | None = None, calib: str | Sequence[str] | None = None, ins_mode: str | None = None,
                      force: bool = False, dry_run: bool = False, update_db: bool = True,
                      username: str | None = None):
        """Fetch raw files and their calibrations from the ESO archive (``musered
        retrieve-data``); ``calib``: also every calibration of these nights. Prints what
        the command prints; the :class:`~musered.retrievedata.RetrieveDataReport`."""
        from .retrievedata import retrieve_data

        report = retrieve_data(self.settings, self.database, _as_list(dataset), start=start, end=end,
                               calib_nights=_as_list(calib), ins_mode=ins_mode, force=force, dry_run=dry_run,
                               update_db=update_db, username=username, progress=False, echo=print)
        if not dry_run and update_db:
            self.db.refresh()
        problem = report.failure_message()
        if problem:
            raise MuseredError(problem)
        return report

    def clean(self, recipe_list: str | Sequence[str] | None = None, date_list: str | Sequence[str] | None = None,
              night_list: str | Sequence[str] | None = None, remove_files: bool = True, force: bool = False):
        """Remove products of this version and their records (``musered clean``): a dry run
        unless ``force``; the :class:`~musered.clean.CleanReport` (``report.lines()``)."""
        from .clean import clean

        return clean(self.settings, self.database, recipes=_as_list(recipe_list), dates=_as_list(date_list),
                     nights=_as_list(night_list), remove_files=remove_files, force=force)

    def copy_reduced(self, version: str, recipes: str | Sequence[str] | None = None,
                     names: str | Sequence[str] | None = None, dry_run: bool = False):
        """Copy the records of ``version`` (only these recipes, these targets/nights/runs)
        to this version, the files staying where they are (``musered copy-reduced``); the
        :class:`~musered.copyreduced.CopyReport`."""
        from .copyreduced import copy_reduced

        return copy_reduced(self.settings, self.database, version, recipes=_as_list(recipes) or None,
                            names=_as_list(names) or None, dry_run=dry_run)

    def update_qc(self, dpr_types: str | Sequence[str] | None = None, recipe_name: str | None = None,
                  force: bool = False) -> list:
        """Read the QC keywords of this version's products into the QC tables (``musered
        update-qc``): every product type, or the types ``dpr_types`` names, or those
        ``recipe_name`` made; one :class:`~musered.qcupdate.QcReport` per type asked for
        (a single one for every type)."""
        from .qctables import update_qc

        types = _as_list(dpr_types)
        if recipe_name is not None:
            types += [t for t in self.reduced.values("PRO_CATG", recipe_name=recipe_name, distinct=True)
                      if t not in types]
            if not types:
                raise MuseredError(f"update_qc: no products of {recipe_name} in version {self.settings.version}")
        if not types:
            return [update_qc(self.settings, self.database, force=force)]
        return [update_qc(self.settings, self.database, pro_catg=t, force=force) for t in types]

    def _run_command(self, name: str, args: list[str]) -> None:
        """Run a registered command on this object's settings and database."""
        run_command(name, args, self)

    @staticmethod
    def import_musered(settings_file: str | Path | None = "settings.yml", source: str | Path | None = None,
                       to: str | Path | None = None, versions: str | Sequence[str] | None = None,
                       dry_run: bool = False) -> None:
        """Import a MuseRed database, never altering it (``musered import-musered``):
        ``source`` (default: the settings' ``db``) into ``to`` (default: next to it,
        ``musered.db`` → ``musered.musered.db``); then set ``db:`` in the settings to that
        file. A static method: ``MuseRed("settings.yml")`` refuses a MuseRed database."""
        from .cli import AppContext

        args = ([str(source)] if source is not None else []) + _options(to=to, version=_as_list(versions),
                                                                         dry_run=dry_run)
        run_command("import-musered", args, AppContext(None if settings_file is None else str(settings_file), None))


def run_command(name: str, args: list[str], app: Any) -> None:
    """Run the registered command ``name`` with command-line ``args`` on ``app`` (what the
    commands read: ``settings`` and ``database``); its usage errors as MuseredError."""
    import click

    from .cli import cli

    command = cli.commands[name]
    try:
        with command.make_context(name, args, obj=app) as ctx:
            command.invoke(ctx)
    except click.ClickException as exc:
        raise MuseredError(f"{name}: {exc.format_message()}") from None


def _options(**options: Any) -> list[str]:
    """Command-line options for keyword values: None and False are left out, True is a
    flag, a list repeats the option."""
    args: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, list):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args
