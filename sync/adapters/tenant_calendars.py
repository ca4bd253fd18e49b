"""One Calendar over mailboxes in several Microsoft Entra tenants: every call goes through the Graph client of the
mailbox's tenant (TenantMap), each with its own credential, so one tenant that refuses the app fails its own
mailboxes alone (M6) and the others go on."""
from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from ..core.operations import CalendarOp, OpResult, Outcome
from ..core.tenants import TENANT_NOT_MAPPED, TenantMap
from ..ports import Calendar, MailboxProbe, MailboxUnavailable


class TenantRoutedCalendar:
    """`calendar_for(tenant)` makes (once per tenant) the Graph calendar that reaches that tenant's mailboxes."""

    def __init__(self, tenants: TenantMap, calendar_for: Callable[[str], Calendar]):
        self.tenants = tenants
        self._calendar_for = calendar_for
        self._calendars: dict[str, Calendar] = {}

    def _calendar(self, mailbox: str) -> Calendar | None:
        tenant = self.tenants.tenant_of(mailbox)
        if tenant is None:
            return None
        if tenant not in self._calendars:
            self._calendars[tenant] = self._calendar_for(tenant)
        return self._calendars[tenant]

    def _routed(self, mailbox: str) -> Calendar:
        calendar = self._calendar(mailbox)
        if calendar is None:
            raise MailboxUnavailable(self.tenants.not_mapped_message(mailbox))
        return calendar

    @property
    def http_requests(self) -> int:
        return sum(int(getattr(c, "http_requests", 0)) for c in self._calendars.values())

    async def test_mailboxes(self, mailboxes: Sequence[str]) -> dict[str, MailboxProbe]:
        by_tenant: dict[str, list[str]] = defaultdict(list)
        probes: dict[str, MailboxProbe] = {}
        for address in mailboxes:
            tenant = self.tenants.tenant_of(address)
            if tenant is None:
                probes[address] = MailboxProbe(False, TENANT_NOT_MAPPED, self.tenants.not_mapped_message(address))
            else:
                by_tenant[tenant].append(address)
        answers = await asyncio.gather(*(self._routed(group[0]).test_mailboxes(group) for group in by_tenant.values()))
        for answer in answers:
            probes.update(answer)
        return probes

    async def apply(self, mailbox: str, ops: Sequence[CalendarOp]) -> dict[str, OpResult]:
        calendar = self._calendar(mailbox)
        if calendar is None:
            message = self.tenants.not_mapped_message(mailbox)
            return {op.key: OpResult(op.key, Outcome.MAILBOX_UNAVAILABLE, None, None, TENANT_NOT_MAPPED, message) for op in ops}
        return await calendar.apply(mailbox, ops)

    async def find_tagged(self, mailbox: str, environment: str, booking_id: str) -> list[str]:
        return await self._routed(mailbox).find_tagged(mailbox, environment, booking_id)

    async def list_events(self, mailbox: str, top: int = 50) -> list[dict[str, Any]]:
        return await self._routed(mailbox).list_events(mailbox, top)

    async def close(self) -> None:
        for calendar in self._calendars.values():
            close = getattr(calendar, "close", None)
            if close is not None:
                await close()
