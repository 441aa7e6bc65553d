"""Archive files: the record of one file, and the files already in ``raw_path``.

``dp_id`` is the archive identifier, the file name without extension
(``MUSE.2017-06-16T01:34:56.867``; night logs ``MUSE.2017-06-16T01:34:56.867.NL``,
delivered as ``<dp_id>.txt``). Sizes are bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

FITS_SUFFIXES = (".fits.fz", ".fits.Z", ".fits.gz", ".fits")
NIGHTLOG_SUFFIX = ".NL.txt"


@dataclass(frozen=True)
class ArchiveFile:
    """One file known to the archive; ``size`` in bytes (the archive's estimate) or None."""

    dp_id: str
    dp_cat: str = ""
    dp_type: str = ""
    object: str = ""
    date_obs: str = ""
    size: int | None = None

    @property
    def kind(self) -> str:
        """``night log``, ``science`` or the lower-case category (``calib``) for messages."""
        if self.dp_id.endswith(".NL"):
            return "night log"
        return "science" if self.dp_cat == "SCIENCE" else (self.dp_cat.lower() or "calib")


def local_files(raw_path: Path) -> dict[str, Path]:
    """Files already in ``raw_path`` by archive id (any of .fits/.fits.fz/.fits.Z/.fits.gz,
    night logs ``<id>.NL.txt`` as ``<id>.NL``); hidden folders (staging) are skipped."""
    found: dict[str, Path] = {}
    if not raw_path.is_dir():
        return found
    for folder, dirs, names in os.walk(raw_path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.endswith(NIGHTLOG_SUFFIX):
                found[name[: -len(".txt")]] = Path(folder, name)
                continue
            for suffix in FITS_SUFFIXES:
                if name.endswith(suffix):
                    found[name[: -len(suffix)]] = Path(folder, name)
                    break
    return found
