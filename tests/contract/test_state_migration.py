"""E5: state an older version left is brought forward when the store starts, and what this version writes the
previous version reads, so an upgrade or a rollback by one version loses no waiting observation and no link.

- Tables `pending` and `outcomes` (before 2026-12) move into the mailboxes' partitions.
- The previous version (2026-12-07) could carry observations on a mailbox row (an "inline set"): they become rows of
  the mailbox's partition, unless a newer observation of the booking is there, and the mailbox then syncs them.
"""
from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import ResourceExistsError

from sync.adapters.tables import TableState, key
from sync.core.domain import Link, LinkState, Mailbox, MailboxTestStatus
from sync.core.serialize import booking_to_dict
from sync.ports import LeaseHeld, MailboxCommit
from tests.compat import previous_version
from tests.factories import booking, with_work

ENV = "https://contoso.crm.dynamics.com"
BOX = "tech@contoso.example"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _store(stack, prefix: str) -> TableState:
    return TableState.from_settings(stack.table_connection_string, None, None, prefix)


async def test_rows_an_older_version_left_move_into_the_links_partition(stack, table_prefix):
    store = _store(stack, table_prefix)
    try:
        await store.ensure_tables()
        await store.mailboxes.put(Mailbox(BOX, ENV, approved=True, test_status=MailboxTestStatus.SUCCESS))
        for legacy in ("pending", "outcomes"):
            try:
                await store.access.service.create_table(table_prefix + legacy)
            except ResourceExistsError:
                pass
        pending, outcomes = store.access.table("pending"), store.access.table("outcomes")
        for b in ("b1", "b2"):
            await pending.create_entity({"PartitionKey": key(BOX), "RowKey": key(b), "booking_id": b, "deleted": False,
                                         "booking": json.dumps({"v": "old"}), "observed_at": "2026-11-30T10:00:00+00:00"})
        await outcomes.create_entity({"PartitionKey": key(BOX), "RowKey": key("b3"), "booking_id": "b3", "action": "update",
                                      "reason": "changed", "error": "rejected by Graph: 400", "at": "2026-11-30T10:00:00+00:00"})
        await store.partitions.observe({BOX: {"b2": {"v": "new"}}})          # recorded by this version before the move
        await store.mailboxes.update(BOX, consumed_mark=(await store.mailboxes.get(BOX)).pending_mark, pending_left=0)
        assert await with_work(store) == set()

        assert (await store.migrations.upgrade())["legacy_rows"] == 3
        state = await store.partitions.load(BOX)
        assert {p.booking_id: p.booking for p in state.pending} == {"b1": {"v": "old"}, "b2": {"v": "new"}}   # newer wins
        assert state.errors == {"b3"} and (await store.partitions.last_error(BOX, "b3"))["error"] == "rejected by Graph: 400"
        assert await with_work(store) == {BOX}                                # the moved observation is work
        assert [e async for e in pending.list_entities()] == []
        assert await store.migrations.upgrade() == {"legacy_rows": 0, "carried_observations": 0}
    finally:
        await store.close()


async def test_a_store_without_legacy_tables_starts(stack, table_prefix):
    store = _store(stack, table_prefix + "fresh")
    try:
        await store.ensure_tables()
        assert await store.migrations.upgrade() == {"legacy_rows": 0, "carried_observations": 0}
    finally:
        await store.close()


async def test_r_e5_state_the_previous_version_wrote_with_observations_waiting_upgrades_and_loses_none(stack, table_prefix):
    """tests/compat/state-2026-12-07.json holds the rows that version's own code wrote (tests/compat/
    write_previous_state.py: mailboxes synced, then an inline set waiting on A's row with a newer webhook observation
    in its partition, a set too large for B's row in its partition, a set C's sync applied and a second one waiting),
    and what it said each mailbox had waiting. Started on those rows, this version has exactly that waiting, in the
    partitions, every link kept, no row carrying a set, and the planner reads every observation."""
    from pathlib import Path

    from sync.engine.observed import observations
    fixture = json.loads((Path(__file__).parents[1] / "compat" / "state-2026-12-07.json").read_text())
    store = _store(stack, table_prefix)
    try:
        await store.ensure_tables()
        for table, rows in fixture["tables"].items():
            for row in rows:
                await store.access.table(table).create_entity(row)
        moved = await store.migrations.upgrade()
        assert moved["carried_observations"] > 0
        for address, waiting in fixture["waiting"].items():
            state = await store.partitions.load(address)
            assert {p.booking_id: p.booking for p in state.pending} == waiting, address
            assert sorted(state.links) == fixture["links"][address] and not state.unreadable_links
            read = observations(state.pending)
            assert not read.set_aside and set(read.bookings) | read.deleted == set(waiting)
        rows = [e async for e in store.access.table("mailboxes").query_entities("PartitionKey eq 'mailbox'")]
        assert not any(f in row for row in rows for f in ("inline_mark", "inline_pending", "consumed_inline"))
        assert await with_work(store) == {a for a, waiting in fixture["waiting"].items() if waiting}
    finally:
        await store.close()


async def test_r_e5_an_upgrade_moves_the_observations_the_previous_version_carried_on_mailbox_rows_and_loses_none(stack, table_prefix):
    """State as the previous version wrote it, with observations waiting three ways: a set carried on mailbox A's row
    not yet applied (one of its bookings also observed since in the partition, newer), rows of B's partition, and a set
    on C's row that its sync applied already (the lease row records its mark). Started, this version has every waiting
    observation in its partition, the newer one standing, the applied set not back, and no row carrying a set."""
    a, b, c = "a@contoso.example", "b@contoso.example", "c@contoso.example"
    moved, newer, kept, gone, applied = booking(a), booking(a), booking(b), booking(a), booking(c)
    store = _store(stack, table_prefix)
    try:
        await store.ensure_tables()
        mailboxes, links = store.access.table("mailboxes"), store.access.table("links")
        earlier, later = "2026-12-07T10:00:00+00:00", "2026-12-07T10:05:00+00:00"
        carried = {moved.id: booking_to_dict(moved), newer.id: booking_to_dict(newer), gone.id: None}
        # C's sync applied its set and acknowledged it (its status names the mark); A's set waits.
        for address, mark, seen, observations in ((a, "m-a", "", carried), (c, "m-c", "m-c", {applied.id: booking_to_dict(applied)})):
            await mailboxes.create_entity({"PartitionKey": "mailbox", "RowKey": key(address), "address": address, "environment": ENV,
                                           "approved": True, "test_status": "success", "enabled": True, "filters": "[]",
                                           "pending_mark": mark, "consumed_mark": seen, "inline_mark": mark, "consumed_inline": seen,
                                           "inline_pending": json.dumps({"at": earlier, "observations": observations})})
        await mailboxes.create_entity({"PartitionKey": "mailbox", "RowKey": key(b), "address": b, "environment": ENV, "approved": True,
                                       "test_status": "success", "enabled": True, "filters": "[]", "pending_mark": "m-b"})
        newest = {**booking_to_dict(newer), "name": "seen later"}
        for address, observed, at in ((a, newest, later), (b, booking_to_dict(kept), earlier)):
            await links.create_entity({"PartitionKey": key(address), "RowKey": "^p|" + key(observed["id"]), "booking_id": observed["id"],
                                       "deleted": False, "booking": json.dumps(observed), "observed_at": at})
        await links.create_entity({"PartitionKey": key(c), "RowKey": "^lease", "holder": "", "expires": NOW.isoformat(), "inline_done": "m-c"})

        assert await store.migrations.upgrade() == {"legacy_rows": 0, "carried_observations": 2}
        waiting = {address: {p.booking_id: p.booking for p in await store.partitions.observations(address)} for address in (a, b, c)}
        assert waiting[a] == {moved.id: booking_to_dict(moved), newer.id: newest, gone.id: None}
        assert waiting[b] == {kept.id: booking_to_dict(kept)} and waiting[c] == {}
        rows = {e["RowKey"]: e async for e in mailboxes.query_entities("PartitionKey eq 'mailbox'")}
        assert not any(f in row for row in rows.values() for f in ("inline_mark", "inline_pending", "consumed_inline"))
        assert await with_work(store) == {a, b}
        assert await store.migrations.upgrade() == {"legacy_rows": 0, "carried_observations": 0}
    finally:
        await store.close()


async def test_r_e5_the_previous_version_reads_every_row_this_one_writes(stack, table_prefix):
    """A rollback by one version: links, waiting observations (a change and a deletion), errors, the lease and the
    mailbox's record, as this version writes them, each read by the previous version's readers (tests/compat), with
    the observations still work for it."""
    store = _store(stack, table_prefix)
    waiting, deleted = booking(BOX), booking(BOX)
    try:
        await store.ensure_tables()
        await store.mailboxes.put(Mailbox(BOX, ENV, approved=True, test_status=MailboxTestStatus.SUCCESS), needs_initial_read=False)
        [linked] = await store.partitions.write_links([Link("b1", BOX, ENV, "e1", 0, "t", "c", NOW, NOW + timedelta(hours=1),
                                                            LinkState.LINKED, written_at=NOW)])
        await store.partitions.observe({BOX: {waiting.id: booking_to_dict(waiting), deleted.id: None}})
        lease, _ = await store.partitions.claim(BOX, "h1", NOW, 30, None)
        await store.partitions.commit(BOX, MailboxCommit(LeaseHeld(lease), errors={"b1": {"action": "update", "reason": "changed",
                                                                                            "error": "rejected by Graph: 400"}}))
        await store.mailboxes.update(BOX, last_outcome="synced", counts={"created": 1})
        rows = [dict(e) async for e in store.access.table("links").query_entities(f"PartitionKey eq '{key(BOX)}'")]
        row = dict(await store.access.table("mailboxes").get_entity("mailbox", key(BOX)))
    finally:
        await store.close()
    by_key = {r["RowKey"]: r for r in rows}
    assert previous_version.link(by_key[key("b1")]) == linked.__class__(**{**vars(linked), "etag": None})
    observed = dict(previous_version.observation(r) for k, r in by_key.items() if k.startswith("^p|"))
    assert observed == {waiting.id: waiting, deleted.id: None}
    assert by_key["^e|" + key("b1")]["error"] == "rejected by Graph: 400"
    assert previous_version.lease(by_key["^lease"])[0] == ""
    assert previous_version.mailbox(row).eligible and previous_version.has_work(row) and row["count_created"] == 1


def test_a_rollback_puts_the_state_back_in_the_older_layout_and_an_upgrade_brings_it_forward(stack, table_prefix):
    """`python -m sync state downgrade` (before deploying a version before 2026-12): the links partitions hold links
    only, observations and errors are where that version reads them; starting this version again moves them back."""
    async def arrange() -> None:
        store = _store(stack, table_prefix)
        try:
            await store.ensure_tables()
            await store.mailboxes.put(Mailbox(BOX, ENV, approved=True, test_status=MailboxTestStatus.SUCCESS))
            await store.partitions.write_links([Link("b1", BOX, ENV, "e1", 0, "t", "c", NOW, NOW + timedelta(hours=1), LinkState.LINKED)])
            await store.partitions.observe({BOX: {"b2": {"v": 1}, "b4": {"v": 4}}})
            lease, _ = await store.partitions.claim(BOX, "h1", NOW, 30, None)
            await store.partitions.commit(BOX, MailboxCommit(LeaseHeld(lease, release=False), errors={
                "b3": {"action": "update", "reason": "changed", "error": "rejected by Graph: 400"}}))
        finally:
            await store.close()

    async def layout() -> tuple[list[str], int, int]:
        store = _store(stack, table_prefix)
        try:
            links = [e["RowKey"] async for e in store.access.table("links").list_entities()]
            pending = len([e async for e in store.access.table("pending").list_entities()])
            outcomes = len([e async for e in store.access.table("outcomes").list_entities()])
            return links, pending, outcomes
        finally:
            await store.close()

    asyncio.run(arrange())
    assert _state_command(stack, table_prefix, "downgrade") == {"pending": 2, "errors": 1, "leases": 1}
    links, pending, outcomes = asyncio.run(layout())
    assert links == [key("b1")] and pending == 2 and outcomes == 1

    async def upgrade() -> None:
        store = _store(stack, table_prefix)
        try:
            await store.ensure_tables()                                     # this version starting again
            state = await store.partitions.load(BOX)
            assert set(state.links) == {"b1"} and sorted(p.booking_id for p in state.pending) == ["b2", "b4"] and state.errors == {"b3"}
        finally:
            await store.close()

    asyncio.run(upgrade())


def _state_command(stack, table_prefix: str, action: str) -> dict:
    """`python -m sync --json state ACTION` with the stack's settings, as an operator runs it; its JSON answer."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO
    env = {**os.environ, **stack.environment(), "STATE_TABLE_PREFIX": table_prefix}
    ran = subprocess.run([sys.executable, "-m", "sync", "--json", "state", action], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    return json.loads(ran.stdout)
