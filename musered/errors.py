"""Errors that the command line turns into one-line messages."""


class MuseredError(Exception):
    """A user-facing error: bad input, missing file, wrong settings.

    The CLI prints ``str(error)`` on one line and exits with status 1, without a
    traceback. Raise it with a message that names the file, key or frame at fault.
    """
