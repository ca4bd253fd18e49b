"""A whole small deployment in memory: a booking source, Exchange, the state store and the engine."""
from __future__ import annotations

from datetime import datetime

from sync.adapters.memory import FakeBookingSource, FakeCalendar, MemoryState
from sync.app.activities import MAILBOX_LEASE_S
from sync.core.domain import Booking, Mailbox, MailboxTestStatus
from sync.core.settings import SyncSettings
from sync.engine.collect import collect
from sync.engine.mailbox import MailboxSync
from tests.factories import ENV, NOW, with_work


class World:
    def __init__(self, settings: SyncSettings | None = None, now: datetime = NOW):
        self.source = FakeBookingSource(ENV)
        self.calendar = FakeCalendar()
        self.store = MemoryState()
        self.settings = settings or SyncSettings()
        self.now = now

    async def enable(self, address: str, **mailbox_kw) -> Mailbox:
        self.calendar.mailbox(address)
        mailbox = Mailbox(address=address.lower(), environment=ENV, approved=True, test_status=MailboxTestStatus.SUCCESS, **mailbox_kw)
        await self.store.mailboxes.put(mailbox)
        return mailbox

    def put(self, *bookings: Booking) -> None:
        for b in bookings:
            self.source.put(b)

    async def cycle(self, crash=None, force: bool = False) -> dict[str, dict]:
        """One cycle; each mailbox's sync takes its lease, as in the activity (a held lease: busy, work kept); the
        lease's clock is the world's, so a test can let a dead holder's lease run out."""
        await collect(self.source, self.store, self.settings, self.now)
        results = {}
        kwargs = {"crash": crash} if crash else {}
        global_filters = await self.store.config.global_filters()             # as the activity passes them
        for mailbox in await with_work(self.store):
            sync = MailboxSync(self.store, self.calendar, self.settings, self.now, holder="world", lease_ttl_s=MAILBOX_LEASE_S,
                               clock=lambda: self.now, global_filters=global_filters, **kwargs)
            results[mailbox] = (await sync.run(mailbox, force=force)).to_dict()
        return results

    def events(self, address: str) -> list[dict]:
        return sorted(self.calendar.mailbox(address).events.values(), key=lambda e: (e["start"], e["id"]))

    def tagged(self, address: str) -> list[dict]:
        return [e for e in self.events(address) if e["tags"]]
