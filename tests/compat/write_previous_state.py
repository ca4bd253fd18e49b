"""Writes tests/compat/state-2026-12-07.json: Table rows as the previous version (commit 6c040fe) leaves them, with
observations waiting every way it could hold them, and what that version said was waiting. Run with that version's
code on the path, against Azurite (the fixture is committed; this script documents how it was made):

    git worktree add /tmp/previous 6c040fe && cd /tmp/previous && \\
      python -m devtenant.stack -- python /path/to/tests/compat/write_previous_state.py /path/to/state-2026-12-07.json

Not collected by pytest (no test_ prefix); it imports the previous version's modules, which this version no longer has.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import timedelta

from sync.adapters.memory import FakeCalendar  # type: ignore[attr-defined]
from sync.adapters.tables import TableStateStore  # type: ignore[attr-defined]
from sync.core.serialize import booking_to_dict
from sync.core.settings import SyncSettings
from sync.engine.mailbox import MailboxSync
from tests.factories import NOW, booking, mailbox

PREFIX = "compat"
A, B, C = "a@contoso.example", "b@contoso.example", "c@contoso.example"


async def main(out: str) -> None:
    store = TableStateStore.from_settings(os.environ["STATE_STORAGE_CONNECTION_STRING"], None, None, PREFIX)
    await store.ensure_tables()
    calendar, settings = FakeCalendar(), SyncSettings()
    for address in (A, B, C):
        calendar.mailbox(address)
        await store.put_mailbox(mailbox(address), needs_initial_read=False, linked_count=0)
    synced = {m: [booking(m, start=NOW + timedelta(days=1, hours=h)) for h in range(2)] for m in (A, C)}
    await store.add_pending_batch({m: {b.id: booking_to_dict(b) for b in bs} for m, bs in synced.items()})
    for m in (A, C):
        await MailboxSync(store, calendar, settings, NOW, holder="previous").run(m)

    def listed() -> dict:
        return {r["address"]: r for r in rows}

    rows = await store.list_mailboxes()
    moved = {b.id: booking_to_dict(b.__class__(**{**vars(b), "start": b.start + timedelta(hours=1), "end": b.end + timedelta(hours=1)}))
             for b in synced[A][:1]}
    new_one = booking(A, start=NOW + timedelta(days=2))
    # A: an inline set (a move, a new booking, a deletion) waiting; then a webhook's newer observation of the new one
    await store.add_pending_batch({A: {**moved, new_one.id: booking_to_dict(new_one), synced[A][1].id: None}}, listed())
    newer = booking_to_dict(new_one.__class__(**{**vars(new_one), "name": "seen later"}))
    await store.add_pending(A, {new_one.id: newer})
    # B: a set too large to ride on its row: partition rows
    await store.add_pending_batch({B: {b.id: booking_to_dict(b) for b in (booking(B) for _ in range(12))}}, listed())
    # C: its inline set applied by its sync (the lease row records it), then a second one waiting
    rows = await store.list_mailboxes()
    await store.add_pending_batch({C: {synced[C][0].id: None}}, listed())
    await MailboxSync(store, calendar, settings, NOW, holder="previous").run(C)
    rows = await store.list_mailboxes()
    later = booking(C, start=NOW + timedelta(days=3))
    await store.add_pending_batch({C: {later.id: booking_to_dict(later)}}, listed())

    waiting = {m: {p["booking_id"]: p["booking"] for p in await store.pending(m)} for m in (A, B, C)}
    links = {m: sorted(await store.links(m)) for m in (A, B, C)}
    dumped = {}
    for table in ("mailboxes", "links"):
        dumped[table] = [dict(e) async for e in store.table(table).list_entities()]
    await store.close()
    carried = sum(1 for r in dumped["mailboxes"] if r.get("inline_pending"))
    assert carried == 2, "A's and C's rows carry a set"
    with open(out, "w") as f:
        json.dump({"written_by": "6c040fe", "tables": dumped, "waiting": waiting, "links": links}, f, indent=1, sort_keys=True, default=str)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
