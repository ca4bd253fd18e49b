"""Cursors' and the journals' fakes."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ...ports import Cursor, StoreConflict
from .etags import ETags


class MemoryCursors:
    def __init__(self, etags: ETags):
        self.etags = etags
        self.rows: dict[str, Cursor] = {}

    async def get(self, environment: str) -> Cursor | None:
        return self.rows.get(environment.lower())

    async def put(self, environment: str, delta_links: Mapping[str, str], horizon: datetime, etag: str | None) -> None:
        current = self.rows.get(environment.lower())
        if (current.etag if current is not None else None) != etag:
            raise StoreConflict("cursors row changed concurrently")
        self.rows[environment.lower()] = Cursor(dict(delta_links), horizon, self.etags.next())


class MemoryJournal:
    def __init__(self, at_field: str, *, by_id: bool):
        self.at_field, self.by_id = at_field, by_id
        self.entries: list[dict[str, Any]] = []

    async def record(self, entry: Mapping[str, Any]) -> None:
        if self.by_id:
            self.entries = [e for e in self.entries if e.get("id") != entry.get("id")]
        self.entries.append(dict(entry))

    async def recent(self, limit: int = 10) -> list[dict[str, Any]]:
        ordered = sorted(enumerate(self.entries), key=lambda pair: (str(pair[1][self.at_field]), pair[0]), reverse=True)
        return [dict(e) for _, e in ordered[:limit]]
