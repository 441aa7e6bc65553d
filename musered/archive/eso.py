"""The parts of the archive client that go through astroquery's ``EsoClass``.

- :class:`CalSelector` — the calibration selector in raw-to-raw mode
  (``Eso.get_associated_files``);
- :class:`EsoLogin` — the OIDC token; the password comes from an environment variable or
  the keyring, never from settings, and is never printed;
- :class:`AstroqueryDownloader` — ``Eso.retrieve_data`` into a staging folder.

:func:`make_eso` points a fresh ``EsoClass`` at the configured URLs (on the instance, so
the tests can aim it at a local server); :func:`astroquery_messages` keeps astroquery's
log out of the terminal and hands its failure messages to the caller.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MuseredError
from .config import KEYRING_SERVICE, ArchiveConfig, ArchiveError
from .helpers import chunks, one_line
from .verify import Rejected

if TYPE_CHECKING:  # astroquery is imported only when the archive is used (slow import)
    from astroquery.eso import EsoClass

# One logger for the whole archive client, named as before it became a package.
logger = logging.getLogger("musered.archive")


def make_eso(config: ArchiveConfig) -> EsoClass:
    """A fresh astroquery ``EsoClass`` pointed at the configured URLs."""
    from astroquery.eso import EsoClass

    eso = EsoClass()
    # class attributes in astroquery; set on our instance only
    eso.CALSELECTOR_URL = config.calselector_url
    eso.DOWNLOAD_URL = config.download_url
    eso.AUTH_URL = config.auth_url
    return eso


class _ListHandler(logging.Handler):
    """Keeps records in a list (astroquery's log, read back by :func:`astroquery_messages`)."""

    def __init__(self, records: list[logging.LogRecord]):
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def astroquery_messages() -> Iterator[list[logging.LogRecord]]:
    """Collect astroquery's log records instead of printing them.

    astroquery reports failed downloads only in its log; we keep those messages to tell
    the user why a file is missing, and keep its chatter out of the progress bar.
    """
    from astroquery import log as aq_log

    records: list[logging.LogRecord] = []
    saved = aq_log.handlers[:], aq_log.level, aq_log.propagate
    aq_log.handlers[:] = [_ListHandler(records)]
    aq_log.setLevel(logging.INFO)
    aq_log.propagate = False
    try:
        yield records
    finally:
        aq_log.handlers[:], level, aq_log.propagate = saved
        aq_log.setLevel(level)
        for record in records:
            logger.debug("astroquery: %s", record.getMessage())


class CalSelector:
    """Raw calibrations associated with science files, from the archive's calselector."""

    def __init__(self, eso, config: ArchiveConfig):
        self.eso = eso
        self.config = config

    def associate(self, dp_ids: list[str]) -> dict[str, set[str]]:
        """For each science ``dp_id``, the ids of its associated raw files (not itself).

        Files the service returned no association tree for are absent from the result.
        """
        result: dict[str, set[str]] = {}
        for batch in chunks(sorted(set(dp_ids)), self.config.batch_size):
            with tempfile.TemporaryDirectory(prefix="musered-calsel-") as tmp, astroquery_messages():
                try:
                    union = set(self.eso.get_associated_files(batch, mode="raw", savexml=True,
                                                              destination=tmp))
                except Exception as exc:  # requests, XML and astroquery errors alike
                    raise ArchiveError(f"calibration selector failed at {self.config.calselector_url}: "
                                       f"{one_line(exc)}") from None
                trees = sorted(Path(tmp).glob("*.xml"))
                for path in trees:
                    try:
                        main, associated = parse_association(path.read_bytes())
                    except ET.ParseError as exc:
                        raise ArchiveError(f"calibration selector returned invalid XML ({path.name}): "
                                           f"{exc}") from None
                    for name in main:
                        result.setdefault(name, set()).update(associated - {name})
                parsed = set().union(*(result.get(d, set()) for d in batch)) - set(batch)
                if union - parsed:
                    logger.debug("calselector union has %d files outside the per-file trees",
                                 len(union - parsed))
        return result


def parse_association(xml: bytes) -> tuple[set[str], set[str]]:
    """(main files, all files) of one calselector association tree."""
    root = ET.fromstring(xml)
    main_files = root.find("mainFiles")
    main = {f.attrib["name"] for f in main_files.iter("file")} if main_files is not None else set()
    everything = {f.attrib["name"] for f in root.iter("file") if "name" in f.attrib}
    return main, everything


class EsoLogin:
    """Log in to the ESO portal: password from ``$MUSERED_ESO_PASSWORD`` or the keyring."""

    def __init__(self, eso, config: ArchiveConfig):
        self.eso = eso
        self.config = config

    def password(self, username: str, interactive: bool = False) -> str:
        """The password: environment variable, else keyring, else a prompt if ``interactive``."""
        env = os.environ.get(self.config.password_env)
        if env:
            return env
        import keyring
        import keyring.errors

        try:
            stored = keyring.get_password(KEYRING_SERVICE, username)
        except keyring.errors.KeyringError as exc:
            logger.debug("keyring unavailable: %s", exc)
            stored = None
        if stored:
            return stored
        if interactive:
            import click

            typed = click.prompt(f"ESO password for {username}", hide_input=True, err=True)
            if self.config.store_password:
                keyring.set_password(KEYRING_SERVICE, username, typed)
            return typed
        raise MuseredError(
            f"no password for ESO user {username}: set ${self.config.password_env} or store it in "
            f"the keyring (keyring set {KEYRING_SERVICE} {username})")

    def login(self, username: str, interactive: bool = False) -> None:
        """Obtain a token; MuseredError if refused. The password never reaches a message."""
        from astroquery import cache_conf

        password = self.password(username, interactive)
        # astroquery's public login() reads only the keyring and prompts otherwise; its
        # _authenticate() is the token request proper (same in 0.4.11 and 0.4.12.dev).
        # The password travels as a query parameter: never cache that response.
        try:
            with cache_conf.set_temp("cache_active", False), astroquery_messages():
                ok = self.eso._authenticate(username=username, password=password)
        except Exception as exc:
            reason = one_line(exc).replace(password, "***")
            reason = re.sub(r"password=[^&\s]*", "password=***", reason)
            raise ArchiveError(f"ESO login failed for {username} at {self.config.auth_url}: "
                               f"{reason}") from None
        if not ok:
            raise ArchiveError(f"ESO login refused for {username} at {self.config.auth_url} "
                               "(wrong user name or password?)")
        logger.info("Logged in to the ESO archive as %s", username)


class AstroqueryDownloader:
    """Download one file with astroquery into a staging folder (``.part`` then rename)."""

    def __init__(self, eso):
        self.eso = eso

    def fetch(self, dp_id: str, staging: Path) -> Path:
        """The delivered file in ``staging`` (``.fits.Z`` already uncompressed by astroquery).

        Raises Rejected with astroquery's reason when nothing was delivered.
        """
        with astroquery_messages() as records:
            try:
                files = self.eso.retrieve_data([dp_id], destination=str(staging),
                                               continuation=True, unzip=True)
            except Exception as exc:
                raise Rejected(one_line(exc)) from None
        if isinstance(files, str):
            files = [files]
        if not files:
            errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
            if not errors:
                raise Rejected("the archive delivered nothing")
            # "Failed to download <url>. <reason>": the url is the id again
            reason = re.sub(r"^Failed to download \S+?\.\s+", "download failed: ", one_line(errors[-1]))
            raise Rejected(reason)
        return Path(files[0])
