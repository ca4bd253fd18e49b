"""A cycle's activities share one listing of the mailbox rows: its collect's last (made after every mark was written),
so no activity lists the rows again (T2), and every sync sees the work collect marked in that same cycle."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sync.adapters.tables.registry import TableMailboxRegistry
from sync.app.settings import load
from sync.local.cycle import run_cycle
from tests.dvseed import iso
from tests.stack_helpers import enable_all_mailboxes

pytestmark = pytest.mark.stack


async def test_r_t2_a_cycle_lists_the_mailbox_rows_at_its_collect_only(tenant, table_prefix, monkeypatch):
    tenant.control("POST", "/demo", {"technicians": 4, "bookings": 24})
    for key, value in {**tenant.environment(), "STATE_TABLE_PREFIX": table_prefix}.items():
        monkeypatch.setenv(key, value)
    settings = load()
    await enable_all_mailboxes(settings)
    assert (await run_cycle(settings))["totals"].get("created")
    listings: list[int] = []
    listed = TableMailboxRegistry.all

    async def counted(self):
        listings.append(1)
        return await listed(self)

    monkeypatch.setattr(TableMailboxRegistry, "all", counted)
    rows = [r for r in tenant.control("GET", "/orgs/default/tables/bookableresourcebookings")["value"]
            if r.get("statecode") == 0 and r["starttime"] > iso(datetime.now(UTC) + timedelta(hours=2))]
    start = datetime.now(UTC) + timedelta(days=2, hours=3)
    tenant.control("PATCH", f"/orgs/default/tables/bookableresourcebookings/{rows[0]['bookableresourcebookingid']}",
                   {"starttime": iso(start), "endtime": iso(start + timedelta(hours=1))})
    second = await run_cycle(settings)
    assert second["totals"].get("updated") == 1, second["totals"]             # the sync saw the work collect marked
    assert len(listings) == 2                                                   # collect's first and last, nobody else's
