"""The tables of one deployment's state and the requests every repository makes of them: a point read, a query, a
write matched by ETag, and transactions of at most 100 operations of one partition (each refused as a whole).

Every request goes through table_wire (the documented wire format, the TableClient's own pipeline); a refusal for a
changed or missing row becomes StoreConflict, which every port documents.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.data.tables import TableTransactionError
from azure.data.tables.aio import TableClient, TableServiceClient

from ...ports import StoreConflict
from .. import table_wire
from .keys import TRANSACTION_LIMIT, Operation, guarded, upsert

TABLES = ("mailboxes", "links", "bookingindex", "cursors", "runs", "leases", "audit")
LEGACY_TABLES = ("pending", "outcomes")        # an older layout's (migrations)
TRANSACTIONS_AT_ONCE = 8                       # independent ≤100-row transactions of one call sent together


class TableAccess:
    """The deployment's tables (each name prefixed), on one Table service client."""

    def __init__(self, service: TableServiceClient, prefix: str):
        self.service, self.prefix = service, prefix
        self._tables: dict[str, TableClient] = {name: service.get_table_client(prefix + name) for name in TABLES + LEGACY_TABLES}

    def table(self, name: str) -> TableClient:
        return self._tables[name]

    async def close(self) -> None:
        for table in self._tables.values():
            await table.close()
        await self.service.close()

    async def get(self, table: str, pk: str, rk: str) -> Any | None:
        return await table_wire.get(self.table(table), pk, rk)

    async def query(self, table: str, pk: str, extra: str = "", params: dict | None = None) -> AsyncIterator[Any]:
        flt = "PartitionKey eq @pk" + (f" and {extra}" if extra else "")
        async for entity in table_wire.query(self.table(table), flt, {"pk": pk, **(params or {})}):
            yield entity

    async def write(self, table: str, entity: dict, etag: str | None, *, create: bool = True) -> str | None:
        """Insert (no etag; with `create=False`, insert or replace) or replace matched by the etag; the new etag."""
        operation = guarded("update", entity, etag) if etag or create else upsert(entity)
        try:
            answer = await table_wire.send_one(self.table(table), operation)
        except table_wire.TransactionFailed as exc:
            if exc.status_code in (409, 412):
                raise StoreConflict(f"{table} row changed concurrently") from exc
            raise
        return answer.etag

    async def delete(self, table: str, pk: str, rk: str, etag: str | None = None) -> None:
        """Deletes the row (matched by `etag` when given); a row already gone is no error."""
        try:
            await table_wire.send_one(self.table(table), guarded("delete", {"PartitionKey": pk, "RowKey": rk}, etag))
        except table_wire.TransactionFailed as exc:
            if exc.status_code == 404:
                return
            if exc.status_code == 412:
                raise StoreConflict(f"{table} row changed concurrently") from exc
            raise

    async def transact(self, table: str, operations: list[Operation]) -> list[str | None]:
        """Operations of one partition, committed in transactions of at most 100 entities; the new ETag of each."""
        etags: list[str | None] = []
        for i in range(0, len(operations), TRANSACTION_LIMIT):
            chunk = operations[i:i + TRANSACTION_LIMIT]
            try:
                # One operation needs no $batch: the plain request is as atomic, and costs less to build and read.
                answers = [await table_wire.send_one(self.table(table), chunk[0])] if len(chunk) == 1 else \
                    await table_wire.submit(self.table(table), chunk)
            except (TableTransactionError, table_wire.TransactionFailed) as exc:
                if exc.status_code in (409, 412) or "UpdateConditionNotSatisfied" in str(exc):
                    raise StoreConflict(f"{table}: a row in the transaction changed concurrently") from exc
                raise
            etags += [a.etag for a in answers]
        return etags

    async def transact_apart(self, table: str, operations: list[Operation], one_by_one: Callable[[Operation], Awaitable[None]]) -> None:
        """Operations on independent rows of one partition, in transactions of at most 100 sent together (at most
        TRANSACTIONS_AT_ONCE): no row depends on another, so nothing orders them. A transaction refused because one
        of its rows is gone or changed is carried out row by row through `one_by_one`."""
        slots = asyncio.Semaphore(TRANSACTIONS_AT_ONCE)

        async def send(chunk: list[Operation]) -> None:
            async with slots:
                try:
                    await self.transact(table, chunk)
                except (StoreConflict, HttpResponseError):
                    for operation in chunk:
                        await one_by_one(operation)

        await asyncio.gather(*(send(operations[i:i + TRANSACTION_LIMIT]) for i in range(0, len(operations), TRANSACTION_LIMIT)))

    async def tolerant(self, table: str, operation: Operation) -> bool:
        """One operation that may be refused because something newer replaced its row (or it is gone): whether it went."""
        try:
            await self.transact(table, [operation])
        except (StoreConflict, HttpResponseError):
            return False
        return True
