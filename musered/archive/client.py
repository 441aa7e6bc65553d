"""The :class:`Archive` facade: the four replaceable parts of the ESO archive client.

**query** (:class:`~.query.TapQuery`), **associate** (:class:`~.eso.CalSelector`),
**login** (:class:`~.eso.EsoLogin`) and **download** (:class:`~.eso.AstroqueryDownloader`);
each can be passed in (tests, mirrors), else is built from the settings on first use.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ArchiveConfig
from .eso import AstroqueryDownloader, CalSelector, EsoLogin, make_eso
from .files import ArchiveFile
from .query import TapQuery

if TYPE_CHECKING:  # astroquery is imported only when the archive is used (slow import)
    from astroquery.eso import EsoClass


class Archive:
    """The ESO archive as musered uses it; each part can be replaced (tests, mirrors)."""

    def __init__(self, config: ArchiveConfig, *, eso=None, query=None, associator=None,
                 downloader=None, login=None):
        self.config = config
        self._eso = eso
        self.query = query or TapQuery(config)
        self._associator = associator
        self._downloader = downloader
        self._login = login

    @property
    def eso(self) -> EsoClass:
        """The astroquery instance shared by the calselector, login and download parts."""
        if self._eso is None:
            self._eso = make_eso(self.config)
        return self._eso

    @property
    def associator(self):
        """The part given to the constructor, else a :class:`CalSelector` (the same below)."""
        if self._associator is None:
            self._associator = CalSelector(self.eso, self.config)
        return self._associator

    @property
    def downloader(self):
        if self._downloader is None:
            self._downloader = AstroqueryDownloader(self.eso)
        return self._downloader

    @property
    def login_part(self):
        if self._login is None:
            self._login = EsoLogin(self.eso, self.config)
        return self._login

    def columns(self) -> list[dict[str, str]]:
        return self.query.columns()

    def science_files(self, archive_filter: dict, start: dt.date | None = None,
                      end: dt.date | None = None, ins_mode: str | None = None) -> list[ArchiveFile]:
        return self.query.science_files(archive_filter, start, end, ins_mode=ins_mode)

    def calibration_files(self, night: dt.date, cutoff: dt.time, ins_mode: str | None = None) -> list[ArchiveFile]:
        return self.query.calibration_files(night, cutoff, ins_mode=ins_mode)

    def sizes(self, dp_ids: Iterable[str]) -> dict[str, int]:
        return self.query.sizes(dp_ids)

    def associate(self, dp_ids: list[str]) -> dict[str, set[str]]:
        return self.associator.associate(dp_ids)

    def login(self, username: str, interactive: bool = False) -> None:
        """Obtain a token for ``username``; the downloads that follow use it."""
        self.login_part.login(username, interactive)

    def fetch(self, dp_id: str, staging: Path) -> Path:
        """Download one file into ``staging``; unverified (see :func:`~.verify.verify_delivery`)."""
        return self.downloader.fetch(dp_id, staging)
