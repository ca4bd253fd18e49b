"""M4 and D1 when two environments share booking ids: a sandbox copied from production keeps its record ids, so a
booking deleted in the copy has the id of one that still exists in production. The copy's deletion reaches no
mailbox bound to production, not even through that mailbox's waiting work (collect, like the webhook, asks
scope.hears_deletions_from)."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sync.adapters.memory import FakeBookingSource
from sync.engine.collect import collect
from tests.factories import NOW, booking
from tests.world import World

COPY = "https://contoso-sandbox.crm.dynamics.com"
A = "tech@contoso.example"


async def test_r_m4_d1_a_deletion_in_a_copied_environment_never_reaches_a_mailbox_bound_to_the_original():
    w = World()
    mailbox = await w.enable(A)                                       # bound to ENV (production)
    original = booking(A, NOW + timedelta(days=1))
    w.put(original)
    await w.cycle()
    assert len(w.events(A)) == 1

    copy = FakeBookingSource(COPY)
    copy.put(replace(original, environment=COPY))                     # the sandbox holds the same id
    await collect(copy, w.store, w.settings, w.now)                   # the copy starts tracking

    await w.store.mailboxes.put(replace(mailbox, enabled=False))        # production's change waits for the mailbox
    moved = replace(original, start=NOW + timedelta(days=3), end=NOW + timedelta(days=3, hours=2))
    w.put(moved)
    await collect(w.source, w.store, w.settings, w.now)
    assert [p.booking_id for p in await w.store.partitions.observations(A)] == [original.id]

    copy.delete(original.id)                                          # deleted in the sandbox only
    result = await collect(copy, w.store, w.settings, w.now)
    assert result.deleted == 1 and A not in result.routed
    assert [p.booking is not None for p in await w.store.partitions.observations(A)] == [True]

    await w.store.mailboxes.put(mailbox)
    await w.cycle()
    assert [e["start"] for e in w.events(A)] == [moved.start]
