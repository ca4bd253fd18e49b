"""The real Services (ports.Services) built from settings: the state store, the Graph calendar and one
Dataverse client per environment, made inside the event loop that uses them (msgraph-sdk, azure-core and
azure-data-tables async clients are bound to their loop), and closed afterwards."""
from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from ..adapters.credentials import build_credential
from ..adapters.dataverse import DataverseClient
from ..adapters.graph import GraphCalendar
from ..adapters.tables import TableStateStore
from .settings import AppSettings


class Clients:
    """Use as `async with Clients(settings) as clients:`."""

    def __init__(self, settings: AppSettings):
        self.settings = settings
        self._stack = AsyncExitStack()
        self._credential: Any = None
        self._store: TableStateStore | None = None
        self._calendar: GraphCalendar | None = None
        self._sources: dict[str, DataverseClient] = {}

    async def __aenter__(self) -> Clients:
        s = self.settings
        self._credential = build_credential(s.credential, s.managed_identity_client_id)
        self._stack.push_async_callback(self._credential.close)
        self._store = TableStateStore.from_settings(s.storage_connection_string, s.storage_table_endpoint, self._credential,
                                                    s.table_prefix)
        self._stack.push_async_callback(self._store.close)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    @property
    def store(self) -> TableStateStore:
        if self._store is None:
            raise RuntimeError("Clients is used outside `async with`")
        return self._store

    @property
    def calendar(self) -> GraphCalendar:
        if self._calendar is None:
            self._calendar = GraphCalendar(self.settings.graph_base_url, self._credential)
            self._stack.push_async_callback(self._calendar.close)
        return self._calendar

    def source(self, environment: str) -> DataverseClient:
        if environment not in self._sources:
            self._sources[environment] = DataverseClient(environment, self._credential)
            self._stack.push_async_callback(self._sources[environment].close)
        return self._sources[environment]
