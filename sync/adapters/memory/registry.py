"""MailboxRegistry's and DeploymentConfig's fakes: records in a dict, ETags from a counter."""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, Unpack

from ...core.domain import Mailbox, SyncFilter
from ...ports import MailboxFields, MailboxRecord, StoreConflict
from .etags import ETags


class MemoryMailboxRegistry:
    def __init__(self, etags: ETags):
        self.etags = etags
        self.records: dict[str, MailboxRecord] = {}

    async def get(self, address: str) -> MailboxRecord | None:
        return self.records.get(address.lower())

    async def all(self) -> list[MailboxRecord]:
        return [self.records[a] for a in sorted(self.records)]

    async def put(self, mailbox: Mailbox, *, etag: str | None = None, **fields: Unpack[MailboxFields]) -> str | None:
        current = self.records.get(mailbox.address.lower())
        if etag is not None and (current is None or current.etag != etag):
            raise StoreConflict("mailboxes row changed concurrently")
        base = current or MailboxRecord(mailbox)
        record = replace(base, mailbox=mailbox, etag=self.etags.next(), unreadable="", **_checked(fields))
        self.records[mailbox.address.lower()] = record
        return record.etag

    async def update(self, address: str, **fields: Unpack[MailboxFields]) -> None:
        current = self.records.get(address.lower())
        if current is not None:
            self.records[address.lower()] = replace(current, etag=self.etags.next(), **_checked(fields))

    async def update_many(self, addresses: Iterable[str], **fields: Unpack[MailboxFields]) -> None:
        for address in set(addresses):
            await self.update(address, **fields)

    async def mark_work(self, addresses: Iterable[str]) -> None:
        for address in set(addresses):
            await self.update(address, pending_mark=uuid.uuid4().hex)


def _checked(fields: Any) -> dict[str, Any]:
    unknown = set(fields) - set(MailboxRecord.__dataclass_fields__) | ({"mailbox", "etag", "unreadable"} & set(fields))
    if unknown:
        raise TypeError(f"not a field of a mailbox record: {sorted(unknown)}")
    return dict(fields, **({"counts": dict(fields["counts"])} if "counts" in fields else {}))


class MemoryDeploymentConfig:
    def __init__(self) -> None:
        self.filters: tuple[SyncFilter, ...] = ()
        self.key = uuid.uuid4().hex

    async def global_filters(self) -> tuple[SyncFilter, ...]:
        return self.filters

    async def put_global_filters(self, filters: tuple[SyncFilter, ...]) -> None:
        self.filters = tuple(filters)

    async def telemetry_key(self) -> str:
        return self.key
