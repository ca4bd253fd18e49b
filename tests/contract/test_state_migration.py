"""An older version kept observations and errors in tables `pending` and `outcomes`; the store moves them into
the mailboxes' links partitions when it starts, and a mailbox with moved observations is found to have work."""
from __future__ import annotations

import json

from azure.core.exceptions import ResourceExistsError

from sync.adapters.tables import TableStateStore, key
from sync.core.domain import Mailbox, MailboxTestStatus

ENV = "https://contoso.crm.dynamics.com"
BOX = "tech@contoso.example"


async def test_rows_an_older_version_left_move_into_the_links_partition(stack, table_prefix):
    store = TableStateStore.from_settings(stack.table_connection_string, None, None, table_prefix)
    try:
        await store.ensure_tables()
        await store.put_mailbox(Mailbox(BOX, ENV, approved=True, test_status=MailboxTestStatus.SUCCESS))
        for legacy in ("pending", "outcomes"):
            try:
                await store.service.create_table(table_prefix + legacy)
            except ResourceExistsError:
                pass
        await store.table("pending").create_entity({"PartitionKey": key(BOX), "RowKey": key("b1"), "booking_id": "b1", "deleted": False,
                                                    "booking": json.dumps({"v": "old"}), "observed_at": "2026-11-30T10:00:00+00:00"})
        await store.table("pending").create_entity({"PartitionKey": key(BOX), "RowKey": key("b2"), "booking_id": "b2", "deleted": False,
                                                    "booking": json.dumps({"v": "old"}), "observed_at": "2026-11-30T10:00:00+00:00"})
        await store.table("outcomes").create_entity({"PartitionKey": key(BOX), "RowKey": key("b3"), "booking_id": "b3", "action": "update",
                                                     "reason": "changed", "error": "rejected by Graph: 400", "at": "2026-11-30T10:00:00+00:00"})
        await store.add_pending(BOX, {"b2": {"v": "new"}})                # recorded by the new version before the move
        assert await store.pending_mailboxes() == {BOX}
        await store.update_mailbox_fields(BOX, consumed_mark=(await store.get_mailbox_row(BOX))["pending_mark"], pending_left=0)
        assert await store.pending_mailboxes() == set()

        assert await store.migrate_legacy_rows() == 3
        state = await store.mailbox_state(BOX)
        assert {p["booking_id"]: p["booking"] for p in state.pending} == {"b1": {"v": "old"}, "b2": {"v": "new"}}   # newer wins
        assert state.errors == {"b3"} and (await store.outcome(BOX, "b3"))["error"] == "rejected by Graph: 400"
        assert await store.pending_mailboxes() == {BOX}                     # the moved observation is work
        assert [e async for e in store.table("pending").list_entities()] == []
        assert await store.migrate_legacy_rows() == 0                       # once moved, nothing more
    finally:
        await store.close()


async def test_a_store_without_legacy_tables_starts(stack, table_prefix):
    store = TableStateStore.from_settings(stack.table_connection_string, None, None, table_prefix + "fresh")
    try:
        await store.ensure_tables()
        assert await store.migrate_legacy_rows() == 0
    finally:
        await store.close()


def test_a_rollback_puts_the_state_back_in_the_older_layout_and_an_upgrade_brings_it_forward(stack, table_prefix):
    """`python -m sync state downgrade` (before deploying an older version): the links partitions hold links only,
    observations and errors are where the older version reads them; starting this version again moves them back."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    from sync.core.domain import Link, LinkState

    async def arrange() -> None:
        store = TableStateStore.from_settings(stack.table_connection_string, None, None, table_prefix)
        try:
            await store.ensure_tables()
            await store.put_mailbox(Mailbox(BOX, ENV, approved=True, test_status=MailboxTestStatus.SUCCESS))
            now = datetime(2026, 12, 1, tzinfo=UTC)
            await store.put_link(Link("b1", BOX, ENV, "e1", 0, "t", "c", now, now + timedelta(hours=1), LinkState.LINKED))
            await store.add_pending(BOX, {"b2": {"v": 1}})
            await store.add_pending_batch({BOX: {"b4": {"v": 4}}}, {BOX: await store.get_mailbox_row(BOX)})   # inline
            assert (await store.get_mailbox_row(BOX))["inline_mark"]
            await store.record_outcomes(BOX, {"b3": {"action": "update", "reason": "changed", "error": "rejected by Graph: 400"}})
            assert await store.acquire_lease(f"mailbox:{BOX}", "h1", now, 30)
        finally:
            await store.close()

    async def layout() -> tuple[list[str], int, int]:
        store = TableStateStore.from_settings(stack.table_connection_string, None, None, table_prefix)
        try:
            links = [e["RowKey"] async for e in store.table("links").list_entities()]
            pending = len([e async for e in store.table("pending").list_entities()])
            outcomes = len([e async for e in store.table("outcomes").list_entities()])
            return links, pending, outcomes
        finally:
            await store.close()

    asyncio.run(arrange())
    assert _state_command(stack, table_prefix, "downgrade") == {"pending": 2, "errors": 1, "leases": 1}
    links, pending, outcomes = asyncio.run(layout())
    assert links == [key("b1")] and pending == 2 and outcomes == 1            # what an older version reads (no inline sets)

    async def upgrade() -> None:
        store = TableStateStore.from_settings(stack.table_connection_string, None, None, table_prefix)
        try:
            await store.ensure_tables()                                     # this version starting again
            state = await store.mailbox_state(BOX)
            assert set(state.links) == {"b1"} and sorted(p["booking_id"] for p in state.pending) == ["b2", "b4"] and state.errors == {"b3"}
            assert not (await store.get_mailbox_row(BOX)).get("inline_mark")
        finally:
            await store.close()

    asyncio.run(upgrade())


def test_before_a_rollback_past_inline_sets_the_observations_on_mailbox_rows_become_partition_rows(stack, table_prefix):
    """`python -m sync state inline-to-rows` (before deploying a version older than 2026-12-07, which reads only the
    partition): an inline set no sync applied yet becomes rows of its mailbox's partition, and the row drops it."""
    import asyncio

    async def arrange() -> None:
        store = TableStateStore.from_settings(stack.table_connection_string, None, None, table_prefix)
        try:
            await store.ensure_tables()
            await store.put_mailbox(Mailbox(BOX, ENV, approved=True, test_status=MailboxTestStatus.SUCCESS))
            await store.add_pending_batch({BOX: {"b5": {"v": 5}, "b6": None}}, {BOX: await store.get_mailbox_row(BOX)})
            assert (await store.mailbox_state(BOX)).pending == []
        finally:
            await store.close()

    async def after() -> tuple[list, dict]:
        store = TableStateStore.from_settings(stack.table_connection_string, None, None, table_prefix)
        try:
            rows = sorted((p["booking_id"], p["booking"]) for p in (await store.mailbox_state(BOX)).pending)
            return rows, await store.get_mailbox_row(BOX)
        finally:
            await store.close()

    asyncio.run(arrange())
    assert _state_command(stack, table_prefix, "inline-to-rows") == {"observations": 2}
    rows, row = asyncio.run(after())
    assert rows == [("b5", {"v": 5}), ("b6", None)] and not row.get("inline_mark") and row["pending_mark"] != row.get("consumed_mark")


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
