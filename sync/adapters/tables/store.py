"""The state on Azure Table Storage (azure-data-tables, async): one repository per concern on one service client.

Tables (each name prefixed with STATE_TABLE_PREFIX): mailboxes (registry.py), links (partitions.py), bookingindex
(index.py), cursors, runs, audit (journal.py), leases (leases.py). Keys are escaped (keys.py); every update carries
its row's ETag, so a lost race raises StoreConflict instead of overwriting; transactions hold at most 100 entities
of one partition (access.py).
"""
from __future__ import annotations

from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.data.tables.aio import TableServiceClient

from ..transport import endpoint_transport, proxies_for
from .access import TABLES, TableAccess
from .index import TableBookingIndex
from .journal import TableCursors, TableJournal
from .leases import TableNamedLeases, TableWakeRows
from .migrations import TableMigrations
from .partitions import TableMailboxPartitions
from .registry import TableDeploymentConfig, TableMailboxRegistry


class TableState:
    """Async; create it inside the event loop that uses it."""

    def __init__(self, service: TableServiceClient, prefix: str):
        self.access = TableAccess(service, prefix)
        self.mailboxes = TableMailboxRegistry(self.access)
        self.config = TableDeploymentConfig(self.access)
        self.index = TableBookingIndex(self.access)
        self.partitions = TableMailboxPartitions(self.access, self.index, self.mailboxes)
        self.cursors = TableCursors(self.access)
        self.runs = TableJournal(self.access, "runs", "run", "started", by_id=True)
        self.audit = TableJournal(self.access, "audit", "audit", "at", by_id=False)
        self.leases = TableNamedLeases(self.access)
        self.wakes = TableWakeRows(self.access)
        self.migrations = TableMigrations(self.access)

    @classmethod
    def from_settings(cls, connection_string: str | None, endpoint: str | None, credential: Any, prefix: str,
                      **client_options: Any) -> TableState:
        """`client_options`: azure-core's (a `raw_request_hook`, per-call policies), passed to the service client."""
        if connection_string:
            def make(**kw: Any) -> TableServiceClient:
                return TableServiceClient.from_connection_string(connection_string, **client_options, **kw)
        elif endpoint:
            def make(**kw: Any) -> TableServiceClient:
                return TableServiceClient(endpoint=endpoint, credential=credential, **client_options, **kw)
        else:
            raise ValueError("the state store needs a Table endpoint or a connection string")
        service = make(transport=endpoint_transport())
        # The endpoint is known once the client has parsed its settings; a proxy (rare) needs a client made with it.
        proxies = proxies_for(service.url)
        return cls(make(transport=endpoint_transport(), proxies=proxies) if proxies else service, prefix)

    async def ensure_tables(self) -> None:
        for name in TABLES:
            try:
                await self.access.service.create_table(self.access.prefix + name)
            except ResourceExistsError:
                pass
        await self.migrations.upgrade()

    async def close(self) -> None:
        await self.access.close()

    async def __aenter__(self) -> TableState:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
