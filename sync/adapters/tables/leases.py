"""NamedLeases (table `leases`, PK "lease" RK the name: the singleton cycle, T1) and WakeRows (same table, PK
"wake" RK the mailbox: webhook-started syncs, T3). Every write is matched by the ETag of the row it read."""
from __future__ import annotations

from datetime import UTC, datetime

from azure.core.exceptions import HttpResponseError

from ...ports import ROW_SCHEMA, StoreConflict
from .access import TableAccess
from .keys import etag_of, iso, key, required_when

WAKE_ATTEMPTS = 20


class TableNamedLeases:
    def __init__(self, access: TableAccess):
        self.access = access

    def _row(self, name: str, holder: str, now: datetime, ttl_s: float) -> dict[str, object]:
        return {"PartitionKey": "lease", "RowKey": key(name), "schema": ROW_SCHEMA, "holder": holder,
                "expires": datetime.fromtimestamp(now.timestamp() + ttl_s, UTC).isoformat()}

    async def acquire(self, name: str, holder: str, now: datetime, ttl_s: float) -> bool:
        """Takes the lease if it is free or expired (or this holder's); ETag-guarded, so two callers never both win."""
        row = self._row(name, holder, now, ttl_s)
        try:
            await self.access.write("leases", row, None)             # free: one insert
            return True
        except StoreConflict:
            pass
        entity = await self.access.get("leases", "lease", key(name))
        if entity is not None and entity["holder"] and required_when(entity["expires"]) > now and entity["holder"] != holder:
            return False
        try:
            await self.access.write("leases", row, etag_of(entity) if entity is not None else None)
            return True
        except StoreConflict:
            return False

    async def renew(self, name: str, holder: str, now: datetime, ttl_s: float) -> bool:
        entity = await self.access.get("leases", "lease", key(name))
        if entity is None or entity["holder"] != holder:
            return False
        try:
            await self.access.write("leases", self._row(name, holder, now, ttl_s), etag_of(entity))
        except StoreConflict:
            return False
        return True

    async def release(self, name: str, holder: str) -> None:
        # Read first: a renewal cancelled in flight (KeptLease stops its keeper before releasing) may have landed with
        # its answer unseen, so no kept ETag can be trusted; the row is still ours if it names us.
        for _ in range(2):
            entity = await self.access.get("leases", "lease", key(name))
            if entity is None or entity["holder"] != holder:
                return                                  # expired and taken over by someone else: theirs now
            try:
                await self.access.delete("leases", "lease", key(name), etag_of(entity))
                return
            except StoreConflict:
                continue
            except HttpResponseError as exc:
                if exc.status_code == 404:
                    return
                raise


class TableWakeRows:
    def __init__(self, access: TableAccess):
        self.access = access

    async def request(self, mailbox: str, now: datetime, stale_after_s: float) -> int | None:
        for _ in range(WAKE_ATTEMPTS):
            entity = await self.access.get("leases", "wake", key(mailbox))
            generation = int(entity["generation"]) if entity is not None else 0
            since = required_when(entity["since"]).timestamp() if entity is not None else 0.0
            running = entity is not None and bool(entity.get("running")) and since > now.timestamp() - stale_after_s
            if running and entity is not None and entity.get("dirty"):
                return None                                   # already marked: the running sync goes round again
            row = {"PartitionKey": "wake", "RowKey": key(mailbox), "schema": ROW_SCHEMA, "generation": generation, "running": True,
                   "dirty": True,
                   "since": entity["since"] if running and entity is not None else iso(now)}
            if not running:
                row.update(generation=generation + 1, dirty=False)
            try:
                await self.access.write("leases", row, etag_of(entity) if entity is not None else None)
            except StoreConflict:
                continue
            return None if running else generation + 1
        raise StoreConflict("the wake row kept changing")

    async def finish(self, mailbox: str, generation: int, now: datetime, *, release: bool = False) -> bool:
        for _ in range(WAKE_ATTEMPTS):
            entity = await self.access.get("leases", "wake", key(mailbox))
            if entity is None or int(entity["generation"]) != generation or not entity.get("running"):
                return True                                   # taken over (or released): this sync is done
            again = bool(entity.get("dirty")) and not release
            row = {"PartitionKey": "wake", "RowKey": key(mailbox), "schema": ROW_SCHEMA, "generation": generation, "running": again,
                   "dirty": False,
                   "since": iso(now)}
            try:
                await self.access.write("leases", row, etag_of(entity))
            except StoreConflict:
                continue
            return not again
        raise StoreConflict("the wake row kept changing")
