"""The set-of-frames file esorex reads: one ``<absolute path> <TAG>`` line per frame."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def write_sof(frames: Mapping[str, Sequence[Path]], path: Path) -> Path:
    """Write ``frames`` (tag -> files, inputs and calibrations alike) as a SOF at ``path``.

    Paths are made absolute: esorex runs in the output folder, not where musered runs.
    Tags keep the order given; a tag without files writes nothing. Returns ``path``.
    """
    lines = [f"{Path(p).resolve()} {tag}\n" for tag, paths in frames.items() for p in paths]
    path = Path(path)
    path.write_text("".join(lines), encoding="utf-8")
    return path


def read_sof(path: Path) -> list[tuple[Path, str]]:
    """The (path, tag) lines of a SOF (blank and ``#`` lines skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, tag = line.rsplit(None, 1)
            out.append((Path(name), tag))
    return out
