"""MailboxRegistry and DeploymentConfig on Table Storage: table `mailboxes`, PK "mailbox" RK the address (one row
per mailbox: its settings and what collect, the sync and the admin tools record), PK "config" (global filters,
telemetry key)."""
from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterable
from typing import Any, Unpack

from ...core.domain import Mailbox, SyncFilter
from ...core.serialize import filter_from_dict, filter_to_dict
from ...ports import MailboxFields, MailboxRecord, StoreConflict
from .. import table_wire
from ..group_commit import GroupCommit
from .access import TableAccess
from .keys import TRANSACTION_LIMIT, Operation, key, merge, upsert
from .rows import field_columns, mailbox_columns, mailbox_of


class TableMailboxRegistry:
    """Concurrent syncs' status merges into the one partition go out together (group_commit): with dozens of syncs
    in flight, one request per merge was a quarter of a small cycle's Table requests."""

    def __init__(self, access: TableAccess):
        self.access = access
        self._merges = GroupCommit(self._send_merges, TRANSACTION_LIMIT)

    async def get(self, address: str) -> MailboxRecord | None:
        entity = await self.access.get("mailboxes", "mailbox", key(address))
        return None if entity is None else mailbox_of(entity)

    async def all(self) -> list[MailboxRecord]:
        return [mailbox_of(e) async for e in self.access.query("mailboxes", "mailbox")]

    async def put(self, mailbox: Mailbox, *, etag: str | None = None, **fields: Unpack[MailboxFields]) -> str | None:
        columns = mailbox_columns(mailbox)
        current = await self.access.get("mailboxes", "mailbox", key(mailbox.address)) if etag is None else None
        kept = {k: v for k, v in dict(current).items() if k not in columns} if current is not None else {}
        match = etag or (current.metadata.get("etag") if current is not None else None)
        return await self.access.write("mailboxes", {**kept, **columns, **field_columns(fields)}, match)

    async def update(self, address: str, **fields: Unpack[MailboxFields]) -> None:
        await self._merges.merge(key(address), field_columns(fields))

    async def update_many(self, addresses: Iterable[str], **fields: Unpack[MailboxFields]) -> None:
        columns = field_columns(fields)
        await self._merge_rows([merge({"PartitionKey": "mailbox", "RowKey": key(a), **columns}) for a in sorted(set(addresses))])

    async def mark_work(self, addresses: Iterable[str]) -> None:
        await self._merge_rows([merge({"PartitionKey": "mailbox", "RowKey": key(a), "pending_mark": uuid.uuid4().hex})
                                for a in sorted(set(addresses))])

    async def _send_merges(self, rows: dict[str, dict[str, Any]]) -> int:
        await self._merge_rows([merge({"PartitionKey": "mailbox", "RowKey": row_key, **columns}) for row_key, columns in rows.items()])
        return 1

    async def _merge_rows(self, merges: list[Operation]) -> None:
        """Merges into existing mailbox rows (If-Match *: a row removed meanwhile is not brought back as a fragment)."""
        async def merge_one(operation: Operation) -> None:
            try:
                await table_wire.send_one(self.access.table("mailboxes"), operation)
            except table_wire.TransactionFailed as exc:
                if exc.status_code != 404:
                    raise

        if len(merges) == 1:
            await merge_one(merges[0])
        else:
            await self.access.transact_apart("mailboxes", merges, merge_one)


class TableDeploymentConfig:
    def __init__(self, access: TableAccess):
        self.access = access

    async def telemetry_key(self) -> str:
        """The per-deployment key of mailbox_ref pseudonyms; made once, kept with the state."""
        entity = await self.access.get("mailboxes", "config", "telemetry")
        if entity is None:
            try:
                await self.access.write("mailboxes", {"PartitionKey": "config", "RowKey": "telemetry", "key": secrets.token_hex(32)}, None)
            except StoreConflict:                   # another instance made it first: read theirs
                pass
            entity = await self.access.get("mailboxes", "config", "telemetry")
        if entity is None:
            raise RuntimeError("the telemetry key row could not be read back")
        return str(entity["key"])

    async def global_filters(self) -> tuple[SyncFilter, ...]:
        entity = await self.access.get("mailboxes", "config", "filters")
        return tuple(filter_from_dict(f) for f in json.loads(entity["filters"])) if entity else ()

    async def put_global_filters(self, filters: tuple[SyncFilter, ...]) -> None:
        entity = {"PartitionKey": "config", "RowKey": "filters", "filters": json.dumps([filter_to_dict(f) for f in filters])}
        await table_wire.send_one(self.access.table("mailboxes"), upsert(entity))
