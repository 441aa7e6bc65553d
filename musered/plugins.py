"""User plugins: extra ``musered`` commands declared in the settings, in MuseRed's format.

.. code-block:: yaml

    plugins:
      paths:                              # folders put on sys.path while the plugins load
        - ~/.musered
      commands:
        - example_plugin:my_command       # module:function, found through paths / sys.path
        - ./tools/checks.py:count_files   # or a Python file (relative: to the settings file)

A command is a click command, or a function decorated with click options and arguments
as MuseRed's plugins are (it is made into a command named as MuseRed named it:
``my_command`` -> ``my-command``). As in MuseRed, its click object is the Python API
(``mr``, a :class:`musered.api.MuseRed` of the same settings): ``@click.pass_obj def
my_command(mr, ...)``. MuseRed read the same block from ``~/.musered/plugins.yml``; that
file is read too, after the settings' block, when it exists.

The CLI loads the plugins when it needs a command it does not have, or lists its
commands (``--help``); a built-in command never waits for them. A plugin that cannot be
loaded is a one-line MuseredError naming its file (and line).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import sys
import traceback
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from .errors import MuseredError

logger = logging.getLogger(__name__)

#: The commands made of plain functions, by function (a module imported once gives the same).
_MADE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: MuseRed's plugin file (``click.get_app_dir("musered", force_posix=True)``).
MUSERED_PLUGINS_FILE = Path("~/.musered/plugins.yml")


@dataclass(frozen=True)
class PluginSpec:
    """One ``commands`` entry: ``source`` is a module name or an absolute ``.py`` path."""

    source: str
    attribute: str
    paths: tuple[str, ...]
    declared_in: str

    @property
    def is_file(self) -> bool:
        return self.source.endswith(".py") or "/" in self.source


def plugin_specs(block: Mapping[str, Any] | None, declared_in: str) -> list[PluginSpec]:
    """The entries of a checked ``plugins`` block (:meth:`Checker.plugins` form)."""
    block = block or {}
    paths = tuple(block.get("paths") or ())
    specs = []
    for entry in block.get("commands") or ():
        source, _, attribute = str(entry).rpartition(":")
        specs.append(PluginSpec(source, attribute, paths, declared_in))
    return specs


def musered_plugin_specs(path: Path | None = None) -> list[PluginSpec]:
    """The entries of MuseRed's ``~/.musered/plugins.yml``, if that file exists."""
    path = (path or MUSERED_PLUGINS_FILE).expanduser()
    if not path.is_file():
        return []
    from .settings.checks import Checker
    from .settings.yamlio import parse_yaml
    from .settings.values import where_text

    where = where_text(path)
    data = parse_yaml(path.read_text(encoding="utf-8"), where)
    if not isinstance(data, Mapping):
        raise MuseredError(f"{where}: must hold a mapping with a plugins block")
    block = Checker(where, path.parent).plugins(data.get("plugins"))
    return plugin_specs(block, where)


def load_plugin(spec: PluginSpec) -> click.Command:
    """Import one plugin and return its command; a one-line MuseredError names the file."""
    origin = spec.source
    added = [p for p in spec.paths if p not in sys.path]
    if spec.is_file:
        added.append(str(Path(spec.source).parent))
    sys.path[:0] = added
    try:
        if spec.is_file:
            if not Path(spec.source).is_file():
                raise MuseredError(f"plugin {spec.source}: file not found (declared in {spec.declared_in})")
            name = "musered_plugin_" + Path(spec.source).stem
            module_spec = importlib.util.spec_from_file_location(name, spec.source)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            found = _find_spec(spec.source)
            if found is None:
                raise MuseredError(f"plugin module {spec.source!r} not found on sys.path or in plugins.paths "
                                   f"({', '.join(spec.paths) or 'none'}; declared in {spec.declared_in})")
            origin = found.origin or spec.source
            module = importlib.import_module(spec.source)
    except MuseredError:
        raise
    except Exception as exc:  # any error of the user's code: one line naming the file
        sys.modules.pop("musered_plugin_" + Path(spec.source).stem, None)
        raise MuseredError(f"plugin {_where_failed(exc, origin)}: {type(exc).__name__}: "
                           f"{_one_line(exc)}") from None
    finally:
        for path in added:
            if path in sys.path:
                sys.path.remove(path)
    target = getattr(module, spec.attribute, None)
    if target is None:
        raise MuseredError(f"plugin {origin}: no {spec.attribute!r} in it (declared in {spec.declared_in})")
    if isinstance(target, click.Command):
        command = target
    elif callable(target):
        # click.command consumes the function's decorator params: make it once per function
        command = _MADE.get(target)
        if command is None:
            # named as click 7 named it for MuseRed (my_command -> my-command); click >= 8.2
            # would drop a "_command" suffix
            name = getattr(target, "__name__", spec.attribute).lower().replace("_", "-")
            command = click.command(name, context_settings={"help_option_names": ["-h", "--help"]})(target)
            _MADE[target] = command
    else:
        raise MuseredError(f"plugin {origin}: {spec.attribute} is not a function or a click command")
    return with_api_object(command)


def load_plugins(specs: Iterable[PluginSpec], reserved: Iterable[str] = ()) -> dict[str, click.Command]:
    """The commands of ``specs`` by name; a name of ``reserved`` (a built-in command) is
    skipped with a warning, two plugins of one name are an error."""
    reserved = set(reserved)
    commands: dict[str, click.Command] = {}
    sources: dict[str, str] = {}
    for spec in specs:
        command = load_plugin(spec)
        name = command.name
        if name in reserved:
            logger.warning("plugin %s:%s: %r is a musered command; the plugin is not used",
                           spec.source, spec.attribute, name)
            continue
        if name in commands:
            raise MuseredError(f"plugins {sources[name]} and {spec.source}:{spec.attribute} both define "
                               f"command {name!r}")
        commands[name] = command
        sources[name] = f"{spec.source}:{spec.attribute}"
    return commands


def settings_plugin_specs(settings_file: str | None) -> list[PluginSpec]:
    """The plugins of the settings file (as ``--settings`` resolves it) and of MuseRed's
    plugins.yml; none when there is no settings file.

    Only the ``plugins`` block is read and checked (with ``{key}`` substitution), not the
    whole file: checking recipe blocks loads every recipe, seconds that ``musered --help``
    should not wait for."""
    import os

    from .settings.checks import Checker
    from .settings.keys import DEFAULT_SETTINGS_FILE, SETTINGS_ENV
    from .settings.substitute import Substituter, check_top_level
    from .settings.values import where_text
    from .settings.yamlio import parse_yaml

    path = Path(settings_file or os.environ.get(SETTINGS_ENV) or DEFAULT_SETTINGS_FILE).expanduser()
    specs = []
    if path.is_file():
        path = path.resolve()
        where = where_text(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            text = ""  # the command that loads the settings says why
        data = parse_yaml(text, where)
        if isinstance(data, Mapping) and data.get("plugins"):
            tree = Substituter(check_top_level(data, where), where, path.parent).substitute_all()
            specs = plugin_specs(Checker(where, path.parent).plugins(tree["plugins"]), where)
    return specs + musered_plugin_specs()


def with_api_object(command: click.Command) -> click.Command:
    """Make the command's click object the Python API (``mr``), as MuseRed plugins expect:
    the CLI's context object gives it through its ``api`` attribute."""
    original = command.callback
    if original is None or getattr(original, "_musered_api_object", False):
        return command

    @functools.wraps(original)
    def callback(*args, **kwargs):
        ctx = click.get_current_context()
        api = getattr(ctx.obj, "api", None)
        if api is not None:
            ctx.obj = api
        return original(*args, **kwargs)

    callback._musered_api_object = True
    command.callback = callback
    return command


def _find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _where_failed(exc: BaseException, origin: str) -> str:
    """``file, line N`` of the error: the syntax error's, else the deepest frame in the plugin."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}, line {exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if Path(f.filename).resolve() == Path(origin).resolve()] if origin else []
    if inside:
        return f"{inside[-1].filename}, line {inside[-1].lineno}"
    return origin


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return exc.msg
    return " ".join(str(exc).split()) or "(no message)"
