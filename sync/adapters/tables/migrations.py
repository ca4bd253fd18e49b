"""State an older version left, brought up to this one when the store starts (`upgrade`), and the one step back
to a layout older than the previous version's (`downgrade_to_legacy_tables`).

Versions this reads:
- before 2026-12: observations and errors in tables `pending` and `outcomes` (not in the mailbox's partition);
- 2026-12-07 (the previous version): besides its partition rows, a mailbox row may carry an *inline set* of
  observations (`inline_mark`, `inline_pending`), applied once its mark is recorded on the lease row
  (`inline_done`). This version keeps observations in the partition only: a set not yet applied becomes rows of
  the partition (an observation recorded there since, if newer, wins), and the row's set is dropped.

The previous version reads every row this one writes (each field it knows is where it was; the `schema` column it
ignores), so a rollback by one version needs no step.
"""
from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.data.tables import UpdateMode

from .. import table_wire
from .access import LEGACY_TABLES, TableAccess
from .keys import etag_of, guarded, key
from .rows import ERROR_PREFIX, LEASE_ROW, OBSERVATION_PREFIX, observation_entity

log = logging.getLogger("sync.state")
CARRIED_FIELDS = ("inline_mark", "inline_pending", "consumed_inline")      # the previous version's, on a mailbox row


class TableMigrations:
    def __init__(self, access: TableAccess):
        self.access = access

    async def upgrade(self) -> dict[str, int]:
        """Everything an older version left, in this version's places; returns what moved (run at every start)."""
        moved = {"legacy_rows": await self._legacy_tables_to_partitions()}
        moved["carried_observations"] = await self._carried_sets_to_rows()
        if any(moved.values()):
            log.warning("state upgraded: legacy_rows=%d carried_observations=%d", moved["legacy_rows"], moved["carried_observations"])
        return moved

    async def _carried_sets_to_rows(self) -> int:
        written = 0
        async for row in self.access.query("mailboxes", "mailbox", "inline_pending ne ''"):
            if any(f in row for f in CARRIED_FIELDS):
                written += await self._carried_to_rows(row)
        return written

    async def _carried_to_rows(self, row: Any) -> int:
        partition = row["RowKey"]
        lease = await self.access.get("links", partition, LEASE_ROW)
        mark = row.get("inline_mark") or ""
        applied = bool(mark) and mark == ((lease or {}).get("inline_done") or "")
        carried = json.loads(row.get("inline_pending") or "{}") if mark and not applied else {}
        written = 0
        for booking_id, booking in sorted((carried.get("observations") or {}).items()):
            if await self._keep_newer(partition, booking_id.lower(), booking, carried.get("at")):
                written += 1
        # The row without the set (observations are personal data), only if unchanged since read; a fresh mark so
        # its mailbox's next sync reads what was carried.
        kept = {k: v for k, v in dict(row).items() if k not in CARRIED_FIELDS}
        kept["pending_mark"] = uuid.uuid4().hex if written else kept.get("pending_mark", "")
        try:
            await table_wire.send_one(self.access.table("mailboxes"), guarded("update", kept, etag_of(row)))
        except table_wire.TransactionFailed:            # changed meanwhile: the next start drops it (its rows are written)
            log.warning("carried observations written, mailbox row changed meanwhile: rows=%d", written)
        return written

    async def _keep_newer(self, partition: str, booking_id: str, booking: dict | None, at: str | None) -> bool:
        """The carried observation as a row, unless a newer one of the booking is there."""
        current = await self.access.get("links", partition, OBSERVATION_PREFIX + key(booking_id))
        if current is not None and _seen_later(current, booking, at):
            return False
        entity = observation_entity("", booking_id, booking, at)
        entity["PartitionKey"] = partition
        return await self.access.tolerant("links", guarded("update", entity, etag_of(current) if current is not None else None))

    async def _legacy_tables_to_partitions(self) -> int:
        """Rows in tables `pending` and `outcomes` move into the partitions; a row recorded since in the new place is
        newer and wins."""
        moved = 0
        for table in LEGACY_TABLES:
            try:
                rows = [e async for e in table_wire.query(self.access.table(table), "PartitionKey ne ''")]
            except HttpResponseError as exc:
                if exc.status_code == 404:                 # never made, or already dropped
                    continue
                raise
            prefix = OBSERVATION_PREFIX if table == "pending" else ERROR_PREFIX
            marked: set[str] = set()
            for e in rows:
                fields = {k: v for k, v in dict(e).items() if k not in ("PartitionKey", "RowKey")}
                moved_row = {"PartitionKey": e["PartitionKey"], "RowKey": prefix + e["RowKey"], **fields}
                try:
                    await self.access.table("links").create_entity(moved_row)
                except ResourceExistsError:
                    pass
                await self.access.delete(table, e["PartitionKey"], e["RowKey"])
                marked.add(e["PartitionKey"])
                moved += 1
            for partition in marked if table == "pending" else ():
                try:
                    await self.access.table("mailboxes").update_entity(
                        {"PartitionKey": "mailbox", "RowKey": partition, "pending_mark": uuid.uuid4().hex}, mode=UpdateMode.MERGE)
                except HttpResponseError:
                    pass                                   # no mailbox row: nothing syncs it
        return moved

    async def downgrade_to_legacy_tables(self) -> dict[str, int]:
        """Before a rollback to a version older than the partition layout (before 2026-12, which reads every row of a
        links partition as a link), with the app stopped: observations and errors go back to tables `pending` and
        `outcomes`, and the mailbox lease rows go. This version, started again, moves them forward."""
        moved = {"pending": 0, "errors": 0, "leases": 0}
        for table in LEGACY_TABLES:
            try:
                await self.access.service.create_table(self.access.prefix + table)
            except ResourceExistsError:
                pass
        # key() escapes "^", so the row keys from "^" up to "_" are exactly this layout's own rows
        own = table_wire.query(self.access.table("links"), "RowKey ge @low and RowKey lt @high", {"low": "^", "high": "_"})
        rows = [e async for e in own]
        for e in rows:
            partition, row_key = e["PartitionKey"], e["RowKey"]
            fields = {k: v for k, v in dict(e).items() if k not in ("PartitionKey", "RowKey", "schema")}
            if row_key.startswith((OBSERVATION_PREFIX, ERROR_PREFIX)):
                legacy = "pending" if row_key.startswith(OBSERVATION_PREFIX) else "outcomes"
                await self.access.write(legacy, {"PartitionKey": partition, "RowKey": row_key[len(OBSERVATION_PREFIX):], **fields}, None,
                                        create=False)
                moved["pending" if legacy == "pending" else "errors"] += 1
            else:
                moved["leases"] += 1
            await self.access.delete("links", partition, row_key)
        return moved


def _seen_later(current: Any, booking: dict | None, at: str | None) -> bool:
    """Whether the partition's observation saw a later state of the booking than the carried one: by Dataverse's
    modifiedon when both saw the row and it differs, else by when each was written."""
    current_body = json.loads(current.get("booking") or "null") if not current.get("deleted") else None
    seen_now = (current_body or {}).get("modified_on") if isinstance(current_body, dict) else None
    seen_carried = (booking or {}).get("modified_on")
    if seen_now and seen_carried and seen_now != seen_carried:
        return _after(seen_now, seen_carried)
    return _after(current.get("observed_at"), at)


def _after(a: str | None, b: str | None) -> bool:
    if not a:
        return False
    return not b or datetime.fromisoformat(a) > datetime.fromisoformat(b)
