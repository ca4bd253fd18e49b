"""Table keys and values: any string as a key, times as ISO 8601 text, operations matched by ETag.

Table keys may not hold / \\ # ? or control characters (Learn, "Understanding the Table service data model"):
`key()` percent-escapes them, and "^" too, so the partition's own rows (prefixed "^") never meet a booking's key.
"""
from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from azure.core import MatchConditions
from azure.data.tables import UpdateMode

TRANSACTION_LIMIT = 100                # entities of one partition in one transaction
KEY_SAFE = "@.-_+!$&'()*,;=:~|"
_KEY_ESCAPES = {c: quote(chr(c), safe=KEY_SAFE) for c in range(128) if quote(chr(c), safe=KEY_SAFE) != chr(c)}
_KEY_ESCAPED = re.compile("[" + re.escape("".join(map(chr, _KEY_ESCAPES))) + "]")
RELEASED = datetime(1970, 1, 1, tzinfo=UTC)

Operation = tuple            # a table_wire transaction operation: (kind, entity[, options])


def key(value: str) -> str:
    """A Table key for any string: lower case, and every character Table keys refuse percent-escaped."""
    lowered = value.lower()
    if lowered.isascii():                  # what quote() makes of ASCII, in C (keys are made for every row)
        # Most keys (ids, addresses) need no escape, and a search is cheaper than a translate that changes nothing.
        return lowered if _KEY_ESCAPED.search(lowered) is None else lowered.translate(_KEY_ESCAPES)
    return quote(lowered, safe=KEY_SAFE)


def unkey(value: str) -> str:
    return unquote(value)


def iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat() if dt else None


def when(value: Any) -> datetime | None:
    """A stored time (ISO 8601 text, or a datetime the SDK decoded); None when missing or empty."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value))


def required_when(value: Any) -> datetime:
    dt = when(value)
    if dt is None:
        raise ValueError("a required time is missing from a stored row")
    return dt


def newest_first(at: datetime) -> str:
    """A row key that sorts newer times first, to the microsecond: two operations in one millisecond keep their order.
    (Keys written with millisecond resolution share the first 13 digits, so old and new rows still sort together.)"""
    return f"{(10**16 - int(at.timestamp() * 1_000_000)):016d}"


def etag_of(entity: Any) -> str | None:
    return (getattr(entity, "metadata", None) or {}).get("etag")


def guarded(kind: str, entity: dict, etag: str | None) -> Operation:
    """A transaction operation matched by ETag (a create when there is none to match)."""
    if kind == "create" or (kind == "update" and etag is None):
        return ("create", entity)
    if kind == "update":
        return ("update", entity, {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified})
    return (kind, entity, {"etag": etag, "match_condition": MatchConditions.IfNotModified}) if etag else (kind, entity)


def upsert(entity: dict) -> Operation:
    return ("upsert", entity, {"mode": UpdateMode.REPLACE})


def merge(entity: dict, etag: str | None = None) -> Operation:
    """A merge into an existing row: matched by `etag`, or If-Match * (a row removed meanwhile is not brought back)."""
    if etag:
        return ("update", entity, {"mode": UpdateMode.MERGE, "etag": etag, "match_condition": MatchConditions.IfNotModified})
    return ("update", entity, {"mode": UpdateMode.MERGE})
