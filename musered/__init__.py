"""musered: a reduction manager for VLT/MUSE data with its own recipes.

``from musered import MuseRed`` gives the Python API (:mod:`musered.api`); it is imported
on first use, so that ``import musered`` (and the command line) stays cheap.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["MuseRed", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "MuseRed":
        from .api import MuseRed

        return MuseRed
    raise AttributeError(f"module 'musered' has no attribute {name!r}")
