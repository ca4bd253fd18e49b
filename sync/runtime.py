"""Builds the real clients from settings, inside the event loop that will use them (msgraph-sdk, azure-core
and azure-data-tables async clients are bound to their loop), and closes them afterwards."""
from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from .credentials import build_credential
from .dataverse import DataverseClient
from .graph import GraphCalendar
from .settings import AppSettings
from .store import TableStateStore


class Runtime:
    def __init__(self, settings: AppSettings):
        self.settings = settings
        self._stack = AsyncExitStack()
        self.credential: Any = None
        self.store: TableStateStore | None = None
        self._calendar: GraphCalendar | None = None
        self._sources: dict[str, DataverseClient] = {}

    async def __aenter__(self) -> "Runtime":
        s = self.settings
        self.credential = build_credential(s.credential, s.managed_identity_client_id)
        self._stack.push_async_callback(self.credential.close)
        self.store = TableStateStore.from_settings(s.storage_connection_string, s.storage_table_endpoint, self.credential, s.table_prefix)
        self._stack.push_async_callback(self.store.close)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    @property
    def calendar(self) -> GraphCalendar:
        if self._calendar is None:
            self._calendar = GraphCalendar(self.settings.graph_base_url, self.credential)
            self._stack.push_async_callback(self._calendar.close)
        return self._calendar

    def source(self, environment: str) -> DataverseClient:
        if environment not in self._sources:
            self._sources[environment] = DataverseClient(environment, self.credential)
            self._stack.push_async_callback(self._sources[environment].close)
        return self._sources[environment]
