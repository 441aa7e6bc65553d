"""The musered database: models and connection."""

from .models import (SCHEMA_VERSION, Base, Flag, GtoLog, QcInfo, Raw, Reduced, SchemaVersion,
                     WeatherCondition)
from .session import Database, sqlite_url

__all__ = [
    "SCHEMA_VERSION", "Base", "Database", "Flag", "GtoLog", "QcInfo", "Raw", "Reduced", "SchemaVersion",
    "WeatherCondition", "sqlite_url",
]
