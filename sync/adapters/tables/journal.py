"""Cursors (table `cursors`, PK "cursor" RK the environment) and the journals: runs (table `runs`, PK "run") and
the audit trail (table `audit`, PK "audit"), each keyed newest first."""
from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ...ports import ROW_SCHEMA, Cursor
from .. import table_wire
from .access import TableAccess
from .keys import etag_of, iso, key, newest_first, required_when, upsert, when
from .rows import journal_entity, journal_of


class TableCursors:
    def __init__(self, access: TableAccess):
        self.access = access

    async def get(self, environment: str) -> Cursor | None:
        entity = await self.access.get("cursors", "cursor", key(environment))
        if entity is None:
            return None
        return Cursor(json.loads(entity.get("delta_links") or "{}"), when(entity.get("horizon")), etag_of(entity))

    async def put(self, environment: str, delta_links: Mapping[str, str], horizon: datetime, etag: str | None) -> None:
        entity = {"PartitionKey": "cursor", "RowKey": key(environment), "schema": ROW_SCHEMA, "environment": environment.lower(),
                  "delta_links": json.dumps(dict(delta_links)), "horizon": iso(horizon)}
        await self.access.write("cursors", entity, etag)


class TableJournal:
    """`at_field`: the entry's time, which orders it; runs are rewritten under their id (a cycle's row is replaced
    when it finishes), audit entries only ever added."""

    def __init__(self, access: TableAccess, table: str, partition: str, at_field: str, *, by_id: bool):
        self.access, self.table, self.partition, self.at_field, self.by_id = access, table, partition, at_field, by_id

    async def record(self, entry: Mapping[str, Any]) -> None:
        at = required_when(entry[self.at_field])
        suffix = key(str(entry["id"])) if self.by_id else uuid.uuid4().hex[:8]
        row = journal_entity(self.partition, f"{newest_first(at)}_{suffix}", entry)
        await table_wire.send_one(self.access.table(self.table), upsert(row) if self.by_id else ("create", row))

    async def recent(self, limit: int = 10) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        async for e in self.access.query(self.table, self.partition):
            out.append(journal_of(e))
            if len(out) >= limit:
                break
        return out
