"""Mailbox lifecycle (M1-M5): discover, register, approve, test & enable, disable, move between environments.

Bulk operations run concurrently (a mailbox test is two sequential Graph reads, so the per-mailbox
limit of 4 is never approached) and report progress through a callback.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ..core import mailbox_reasons
from ..core.domain import Mailbox, MailboxTestStatus, SyncFilter
from ..core.tenants import TenantMap
from ..ports import BookingSource, Calendar, MailboxFields, MailboxRegistry

Progress = Callable[[int, int], None]


class AdminError(Exception):
    """A refused operation; the message says why and what to do."""


@dataclass(frozen=True)
class TestReport:
    address: str
    ok: bool
    reason: str | None
    message: str | None
    warning: str | None = None


def _none(done: int, total: int) -> None:
    return None


def _retest_until(reason: str | None, until: str, now: datetime) -> str:
    """M8: an access denied is retested by the cycles until Exchange has surely applied the app's scope (2 hours from
    the first refusal, not from each retest); any other result ends the wait."""
    if reason != mailbox_reasons.ACCESS_DENIED:
        return ""
    if until and datetime.fromisoformat(until) > now:
        return until
    return (now + timedelta(seconds=mailbox_reasons.SCOPE_CHANGE_DELAY_S)).isoformat()


class MailboxAdmin:
    def __init__(self, registry: MailboxRegistry, calendar: Calendar | None = None, *, concurrency: int = 32,
                 tenants: TenantMap | None = None):
        self.registry, self.calendar, self.concurrency = registry, calendar, concurrency
        self.tenants = tenants or TenantMap()

    async def _require(self, address: str) -> Mailbox:
        record = await self.registry.get(address.lower())
        if record is None:
            raise AdminError(f"mailbox {address} is not registered; run `discover` or `register` first")
        if record.unreadable:
            raise AdminError(f"mailbox {address}: {record.unreadable}; register it again to rewrite it")
        return record.mailbox

    async def register(self, address: str, environment: str, *, approved: bool = False) -> Mailbox:
        address, environment = address.lower(), environment.lower()
        found = await self.registry.get(address)
        existing = found.mailbox if found is not None and not found.unreadable else None
        if existing is not None:
            if existing.environment and existing.environment != environment:
                raise AdminError(f"mailbox {address} syncs with {existing.environment}; a mailbox syncs with one environment at a time. "
                                 f"Use `move` to bind it to {environment}.")
            return existing
        if self.tenants.tenant_of(address) is None:
            raise AdminError(self.tenants.not_mapped_message(address))
        mailbox = Mailbox(address=address, environment=environment, approved=approved)
        # A new row holds no links yet; D5's guard reads the deployment's link total from these counts (an
        # undercount, should links be left from an earlier registration, only makes the guard hold sooner).
        await self.registry.put(mailbox, needs_initial_read=True, linked_count=0)
        return mailbox

    async def discover(self, source: BookingSource, progress: Progress = _none) -> dict[str, int]:
        """Register the mailboxes of the environment's user resources as pending (M3)."""
        counts = {"registered": 0, "already": 0, "bound_elsewhere": 0, "no_mailbox": 0, "invalid_address": 0, "no_tenant": 0}
        resources = await source.list_user_resources()
        for done, resource in enumerate(resources, 1):
            progress(done, len(resources))
            if resource.invalid_address and not resource.disabled:
                counts["invalid_address"] += 1                      # E3: named apart, so nobody is silently left out
                continue
            if not resource.mailbox or resource.disabled:
                counts["no_mailbox"] += 1
                continue
            found = await self.registry.get(resource.mailbox)
            existing = found.mailbox if found is not None else None
            if existing is not None:
                counts["already" if existing.environment in (None, source.environment.lower()) else "bound_elsewhere"] += 1
                continue
            if self.tenants.tenant_of(resource.mailbox) is None:      # its domain is in no tenant of MAILBOX_TENANTS
                counts["no_tenant"] += 1
                continue
            await self.register(resource.mailbox, source.environment)
            counts["registered"] += 1
        return counts

    async def approve(self, addresses: Iterable[str], progress: Progress = _none) -> int:
        addresses = list(addresses)
        for i, address in enumerate(addresses, 1):
            mailbox = await self._require(address)
            if not mailbox.approved:
                await self.registry.put(replace(mailbox, approved=True))
            progress(i, len(addresses))
        return len(addresses)

    async def test_and_enable(self, addresses: Iterable[str], now: datetime, environment: str | None = None,
                              progress: Progress = _none, *, dynamics_synced: Collection[str] = (),
                              confirmed: bool = False) -> list[TestReport]:
        """M2: check with the app's own Graph identity that each mailbox exists and its calendar can be written. M7: a
        mailbox of `dynamics_synced` (Dynamics' own server-side sync serves it) is refused unless `confirmed`."""
        addresses = [a.lower() for a in addresses]
        mailboxes = {}
        retest_until: dict[str, str] = {}
        for address in addresses:
            mailbox = await self._require(address)
            found = await self.registry.get(address)
            retest_until[address] = found.retest_until if found is not None else ""
            if environment and mailbox.environment and mailbox.environment != environment.lower():
                raise AdminError(f"mailbox {address} syncs with {mailbox.environment}; use `move` to change it")
            mailboxes[address] = mailbox
        approved = [a for a in addresses if mailboxes[a].approved and (confirmed or a not in dynamics_synced)]
        if approved and self.calendar is None:
            raise AdminError("testing mailboxes needs the Graph calendar")
        probes = await self.calendar.test_mailboxes(approved) if approved and self.calendar is not None else {}
        slots = asyncio.Semaphore(self.concurrency)
        done = [0]

        async def record(address: str) -> TestReport:
            mailbox = mailboxes[address]
            async with slots:
                if not mailbox.approved:
                    report = TestReport(address, False, "not_approved", "Approve the mailbox before testing it.")
                elif address in dynamics_synced and not confirmed:
                    reason = mailbox_reasons.DYNAMICS_SYNC
                    report = TestReport(address, False, reason, mailbox_reasons.sentence(reason))
                    await self.registry.put(replace(mailbox, test_status=MailboxTestStatus.FAILURE,
                                                    test_reason=mailbox_reasons.stated(reason)), tested_at=now.isoformat())
                else:
                    probe = probes[address]
                    report = TestReport(address, probe.ok, probe.reason, probe.message, probe.warning)
                    if not probe.transient:
                        status = MailboxTestStatus.SUCCESS if probe.ok else MailboxTestStatus.FAILURE
                        updated = replace(mailbox, test_status=status, test_reason=None if probe.ok else f"{probe.reason}: {probe.message}",
                                          time_zone=probe.time_zone or mailbox.time_zone, enabled=True if probe.ok else mailbox.enabled)
                        extra: MailboxFields = {"tested_at": now.isoformat(), "test_warning": probe.warning or "",
                                                "retest_until": _retest_until(probe.reason, retest_until[address], now)}
                        if probe.ok:
                            extra["needs_initial_read"] = True
                        await self.registry.put(updated, **extra)
                done[0] += 1
                progress(done[0], len(addresses))
                return report

        return list(await asyncio.gather(*(record(a) for a in addresses)))

    async def set_enabled(self, address: str, enabled: bool) -> Mailbox:
        """M5: off deletes nothing and syncs nothing new; on resumes without duplicates."""
        mailbox = await self._require(address)
        updated = replace(mailbox, enabled=enabled)
        await self.registry.put(updated)
        return updated

    async def set_sync_method(self, address: str, method: str) -> Mailbox:
        if method not in ("server-side", "none"):
            raise AdminError("sync method must be server-side or none")
        mailbox = await self._require(address)
        updated = replace(mailbox, sync_method=method)
        await self.registry.put(updated)
        return updated

    async def move(self, address: str, environment: str) -> Mailbox:
        """M4: the explicit command that binds a mailbox to another environment. It must be tested again."""
        mailbox = await self._require(address)
        updated = replace(mailbox, environment=environment.lower(), test_status=MailboxTestStatus.NOT_TESTED, test_reason=None)
        await self.registry.put(updated, needs_initial_read=True)
        return updated

    async def set_filters(self, address: str, filters: tuple[SyncFilter, ...]) -> Mailbox:
        mailbox = await self._require(address)
        updated = replace(mailbox, filters=filters)
        await self.registry.put(updated, needs_initial_read=True)
        return updated
