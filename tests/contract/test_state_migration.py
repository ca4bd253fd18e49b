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
