"""The real Services (ports.Services) built from settings: the state store, the Graph calendar and one
Dataverse client per environment, made inside the event loop that uses them (msgraph-sdk, azure-core and
azure-data-tables async clients are bound to their loop), and closed afterwards.

With MAILBOX_TENANTS set, the calendar is one Graph client per Entra tenant behind a router: the home tenant's
with the managed identity, every other one's with the federated credential of the cross-tenant app."""
from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from azure.core.exceptions import ClientAuthenticationError

from ..adapters.credentials import build_credential, tenant_credential, token_identity
from ..adapters.dataverse import DataverseClient
from ..adapters.graph import GraphCalendar
from ..adapters.tables import TableState
from ..adapters.tenant_calendars import TenantRoutedCalendar
from ..core.access import EITHER, Principal
from ..core.ids import environment_named
from ..core.tenants import HOME, TenantMap
from ..ports import Calendar, State
from .settings import AppSettings

# Any scope the credential may ask for names its identity; Table Storage's is one every deployment's credential holds.
IDENTITY_SCOPE = "https://storage.azure.com/.default"


class Clients:
    """Use as `async with Clients(settings) as clients:`. `table_options`: azure-core client options for the state's
    Table client (a `raw_request_hook`, per-call policies), for a caller that watches its requests (the bench)."""

    def __init__(self, settings: AppSettings, **table_options: Any):
        self.settings = settings
        self._table_options = table_options
        self._stack = AsyncExitStack()
        self._credential: Any = None
        self._store: TableState | None = None
        self._calendar: GraphCalendar | TenantRoutedCalendar | None = None
        self._sources: dict[str, DataverseClient] = {}

    async def __aenter__(self) -> Clients:
        s = self.settings
        self._credential = build_credential(s.credential, s.managed_identity_client_id)
        self._stack.push_async_callback(self._credential.close)
        self._store = TableState.from_settings(s.storage_connection_string, s.storage_table_endpoint, self._credential,
                                               s.table_prefix, **self._table_options)
        self._stack.push_async_callback(self._store.close)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    @property
    def store(self) -> State:
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

    async def operator(self) -> Principal:
        """Who runs an administrative command in process (the CLI), for the audit trail: the identity of the credential
        the command works with, as Entra ID issued its token; "local", marked unauthenticated, on the loopback emulator.
        Never an environment variable: USER and LOGNAME say what anyone sets them to."""
        if self.settings.credential == "loopback-dev":
            return Principal("local", "local (unauthenticated)", EITHER)
        try:
            token = await self._credential.get_token(IDENTITY_SCOPE)
        except ClientAuthenticationError:
            return Principal("unidentified", "unidentified (the credential issued no token)", EITHER)
        found = token_identity(token.token)
        if found is None:
            return Principal("unidentified", "unidentified (the token names no object id)", EITHER)
        return Principal(f"cli:{found[0]}", found[1], EITHER)

    def source(self, environment: str) -> DataverseClient:
        """The configured environment's one client, whatever the spelling it is asked by; so the cache holds at most one
        client (one connection pool, one token scope) per DATAVERSE_ENVIRONMENTS entry, never one per spelling."""
        configured = environment_named(self.settings.environments, environment)
        if configured is None:
            raise ValueError("the environment is not one of DATAVERSE_ENVIRONMENTS")
        if configured not in self._sources:
            self._sources[configured] = DataverseClient(configured, self._credential)
            self._stack.push_async_callback(self._sources[configured].close)
        return self._sources[configured]
