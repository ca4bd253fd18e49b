"""Helpers for tests that run on the local stack."""
from __future__ import annotations

import json
from datetime import UTC, datetime

from devtenant.webhooks import remote_execution_context
from sync.admin.mailboxes import MailboxAdmin
from sync.app.clients import Clients


async def enable_all_mailboxes(settings) -> dict:
    """What an administrator does first: discover, approve, test & enable. Returns test reports by address."""
    async with Clients(settings) as rt:
        await rt.store.ensure_tables()
        admin = MailboxAdmin(rt.store.mailboxes, rt.calendar, tenants=rt.tenants)
        await admin.discover(rt.source(settings.environments[0]))
        addresses = [m.address for m in await rt.store.mailboxes.all()]
        await admin.approve(addresses)
        return {r.address: r for r in await admin.test_and_enable(addresses, datetime.now(UTC))}


def webhook_payload(stack, booking_id: str, message: str = "Create") -> str:
    """The RemoteExecutionContext Dataverse would post for this booking."""
    row = next(r for r in stack.control("GET", "/orgs/default/tables/bookableresourcebookings")["value"]
               if r["bookableresourcebookingid"] == booking_id)
    return json.dumps(remote_execution_context("default", message, row, None))


def stack_settings(stack, table_prefix: str, monkeypatch, **extra: str):
    """The app's settings pointed at the local stack (and its own tables), as the Functions host would load them."""
    from sync.app.settings import load
    for key, value in {**stack.environment(), "STATE_TABLE_PREFIX": table_prefix, **extra}.items():
        monkeypatch.setenv(key, value)
    return load()
