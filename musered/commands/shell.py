"""``musered shell``: an interactive Python session with the API ready as ``mr``."""

from __future__ import annotations

import sys

import click

BANNER = ("musered shell: the reduction of {settings} (version {version}) is `mr`, a "
          "musered.MuseRed;\ntry mr.info(), mr.nights, mr.raw.count(). Exit with Ctrl-D.")


@click.command("shell")
@click.option("--plain", is_flag=True, help="Use the plain Python console even when IPython is installed.")
@click.pass_obj
def command(app, plain) -> None:
    """Start an interactive Python session with `mr = MuseRed(settings)` ready.

    The session uses IPython when it is installed and the terminal is interactive, else
    the standard Python console (which also reads a script from stdin:
    `echo "print(mr.nights)" | musered shell`). --redversion and --settings apply to `mr`.
    """
    import musered

    from ..api import MuseRed

    mr = app.api
    namespace = {"mr": mr, "musered": musered, "MuseRed": MuseRed}
    banner = BANNER.format(settings=mr.settings.path, version=mr.version)
    if not plain and interactive():
        try:
            import IPython
        except ImportError:
            pass
        else:
            click.echo(banner)
            # argv given: IPython must not parse musered's own command line
            IPython.start_ipython(argv=["--no-banner", "--no-confirm-exit"], user_ns=namespace)
            return
    import code

    code.interact(banner=banner, local=namespace, exitmsg="")


def interactive() -> bool:
    """Whether stdin is a terminal (IPython needs one; a pipe goes to the plain console)."""
    return sys.stdin.isatty()
