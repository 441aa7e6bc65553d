"""The archive client's settings: the ``retrieve_data`` block, the archive URLs, the error.

:class:`ArchiveConfig` is the validated ``retrieve_data`` settings block; URLs left
unset come from the installed astroquery (:func:`astroquery_defaults`). Every failure of
an archive service is an :class:`ArchiveError` with a one-line message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from ..errors import MuseredError

# Used when astroquery has no TAP configuration (0.4.11; 0.4.12.dev has conf.tap_obs_url).
DEFAULT_TAP_URL = "https://archive.eso.org/tap_obs"
DEFAULT_TAP_TABLE = "dbo.raw"
# astroquery stores ESO passwords under this keyring service (Eso.login(store_password=True)).
KEYRING_SERVICE = "astroquery:www.eso.org"
PASSWORD_ENV = "MUSERED_ESO_PASSWORD"
# A column or table name as ADQL accepts it unquoted (also guards the query text).
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


class ArchiveError(MuseredError):
    """The archive failed or refused a request (one-line message naming the service)."""


@dataclass(frozen=True)
class ArchiveConfig:
    """The ``retrieve_data`` settings block, with the archive's defaults.

    ``username`` may also come from ``--username``; ``password_env`` names the
    environment variable read before the keyring; ``store_password`` stores a password
    typed at the prompt in the keyring. ``batch_size`` is the number of science files per
    calselector request and per download batch.
    """

    instrument: str = "MUSE"
    tap_url: str | None = None          # None: astroquery's, see astroquery_defaults()
    tap_table: str = DEFAULT_TAP_TABLE
    calselector_url: str | None = None
    download_url: str | None = None
    auth_url: str | None = None
    username: str | None = None
    password_env: str = PASSWORD_ENV
    store_password: bool = False
    row_limit: int = 100_000
    batch_size: int = 100

    def __post_init__(self) -> None:
        for key, value in astroquery_defaults().items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)

    @classmethod
    def from_settings(cls, block: dict | None, username: str | None = None) -> ArchiveConfig:
        """The checked settings block; ``username`` (``--username``) wins over the block's."""
        block = dict(block or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(block) - set(known))
        if unknown:
            raise MuseredError(
                f"unknown key(s) in settings retrieve_data: {', '.join(unknown)} "
                f"(valid: {', '.join(known)})")
        for key in ("row_limit", "batch_size"):
            if key in block and (not isinstance(block[key], int) or block[key] < 1):
                raise MuseredError(f"settings retrieve_data.{key} must be a positive integer, "
                                   f"not {block[key]!r}")
        if username:
            block["username"] = username
        for key in ("instrument", "tap_url", "tap_table", "calselector_url", "download_url",
                    "auth_url", "password_env"):
            if key in block and (not isinstance(block[key], str) or not block[key]):
                raise MuseredError(f"settings retrieve_data.{key} must be a non-empty string")
        if not IDENTIFIER.match(block.get("tap_table", DEFAULT_TAP_TABLE)):
            raise MuseredError(f"settings retrieve_data.tap_table is not a table name: "
                               f"{block['tap_table']!r}")
        return cls(**block)


def astroquery_defaults() -> dict[str, str]:
    """The archive URLs of the installed astroquery (its class attributes and config)."""
    from astroquery.eso import EsoClass, conf

    return {
        "tap_url": getattr(conf, "tap_obs_url", None) or DEFAULT_TAP_URL,
        "calselector_url": EsoClass.CALSELECTOR_URL,
        "download_url": EsoClass.DOWNLOAD_URL,
        "auth_url": EsoClass.AUTH_URL,
    }
