"""What the app and the admin tools are handed: the state, the calendar, a booking source per environment."""
from __future__ import annotations

from typing import Any, Protocol

from ..core.tenants import TenantMap
from .calendar import Calendar
from .source import BookingSource
from .state import State


class DurableClient(Protocol):
    """The part of the Durable Functions client the app uses: the Functions host's, or the local runner's."""

    async def get_status(self, instance_id: str) -> Any: ...

    async def start_new(self, orchestration_function_name: str, instance_id: str, client_input: Any) -> str: ...


class Services(Protocol):
    """What the admin tools and the app are handed: the state, the calendar, a booking source per environment."""

    @property
    def store(self) -> State: ...

    @property
    def calendar(self) -> Calendar: ...

    @property
    def tenants(self) -> TenantMap:
        """Which Entra tenant holds each mailbox (MAILBOX_TENANTS)."""
        ...

    def source(self, environment: str) -> BookingSource: ...
