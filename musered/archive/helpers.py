"""Small helpers shared by the archive client's parts.

Batching of id lists, one-line error text for messages, the text of a VOTable cell and
byte counts for the progress bar. Nothing here talks to the network.
"""

from __future__ import annotations

from collections.abc import Iterator


def chunks(items: list, size: int) -> Iterator[list]:
    """Consecutive slices of ``items`` of at most ``size`` elements."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


def human_size(nbytes: float) -> str:
    """A byte count for people: ``512 B``, ``3.4 MB`` (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(nbytes) < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} TB"


def cell_text(value: object) -> str:
    """The text of a table cell; masked (``--``) and missing cells give ``""``."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode()
    text = str(value)
    return "" if text == "--" else text


def one_line(exc: object) -> str:
    """An error's text on one line, cut at 300 characters (tracebacks stay out of messages)."""
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def service_reason(exc: object) -> str:
    """One line for a failed HTTP service call, with its status code when it has one."""
    code = getattr(exc, "code", None)
    reason = getattr(exc, "reason", None) or str(exc)
    text = one_line(reason)
    if code and str(code) not in text:
        text = f"HTTP {code}: {text}"
    return text
