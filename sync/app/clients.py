"""The real Services (ports.Services) built from settings: the state store, the Graph calendar and one
Dataverse client per environment, made inside the event loop that uses them (msgraph-sdk, azure-core and
azure-data-tables async clients are bound to their loop), and closed afterwards.

With MAILBOX_TENANTS set, the calendar is one Graph client per Entra tenant behind a router: the home tenant's
with the managed identity, every other one's with the federated credential of the cross-tenant app."""
from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from ..adapters.credentials import build_credential, tenant_credential
from ..adapters.dataverse import DataverseClient
from ..adapters.graph import GraphCalendar
from ..adapters.tables import TableStateStore
from ..adapters.tenant_calendars import TenantRoutedCalendar
from ..core.tenants import HOME, TenantMap
from ..ports import Calendar
from .settings import AppSettings


class Clients:
    """Use as `async with Clients(settings) as clients:`."""

    def __init__(self, settings: AppSettings):
        self.settings = settings
        self._stack = AsyncExitStack()
        self._credential: Any = None
        self._store: TableStateStore | None = None
        self._calendar: GraphCalendar | TenantRoutedCalendar | None = None
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
    def tenants(self) -> TenantMap:
        return self.settings.tenants

    @property
    def calendar(self) -> GraphCalendar | TenantRoutedCalendar:
        if self._calendar is None:
            if self.settings.tenants.domains:
                self._calendar = TenantRoutedCalendar(self.settings.tenants, self._tenant_calendar)
            else:
                self._calendar = GraphCalendar(self.settings.graph_base_url, self._credential)
            self._stack.push_async_callback(self._calendar.close)
        return self._calendar

    def _tenant_calendar(self, tenant: str) -> Calendar:
        s = self.settings
        if tenant == HOME:
            return GraphCalendar(s.graph_base_url, self._credential)
        credential = tenant_credential(s.credential, self._credential, tenant, s.cross_tenant_app_client_id or "")
        self._stack.push_async_callback(credential.close)
        return GraphCalendar(s.graph_base_url, credential, tenant=tenant)

    def source(self, environment: str) -> DataverseClient:
        if environment not in self._sources:
            self._sources[environment] = DataverseClient(environment, self._credential)
            self._stack.push_async_callback(self._sources[environment].close)
        return self._sources[environment]
