"""The vendored reference slice matches Microsoft's reference, and the demo org holds every edge case."""
from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

from devtenant import demo
from devtenant.schema import DATAVERSE
from tests.conftest import REPO, shared_reference


def test_vendored_reference_is_current():
    shared_reference()
    result = subprocess.run([sys.executable, "tools/vendor_reference.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_demo_rows_use_only_real_columns():
    org = demo.generate(now=datetime(2026, 11, 23, 12, tzinfo=UTC))
    for entity_set, rows in org.tables.items():
        table = DATAVERSE.by_entity_set[entity_set]
        for row in rows:
            assert set(row) <= table.web_api_properties, (entity_set, set(row) - table.web_api_properties)


def test_demo_org_is_realistic_and_has_every_edge_case():
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    org = demo.generate(now=now)
    bookings = {b["bookableresourcebookingid"]: b for b in org.tables["bookableresourcebookings"]}
    resources = {r["bookableresourceid"]: r for r in org.tables["bookableresources"]}
    assert len(bookings) == 300
    assert sum(r["resourcetype"] == 3 for r in resources.values()) >= 25
    starts = [datetime.fromisoformat(b["starttime"].replace("Z", "+00:00")) for b in bookings.values()]
    assert max(starts) - min(starts) >= timedelta(weeks=4)
    cases = org.edge_cases
    for name in ["no_work_order", "crew_resource", "equipment_resource", "user_without_mailbox", "canceled", "inactive",
                 "outside_window_past", "two_weeks_ahead", "reassigned", "hostile_text", "mailbox_not_found",
                 "mailbox_access_denied"]:
        assert cases.get(name), name
    assert bookings[cases["no_work_order"][0]]["_msdyn_workorder_value"] is None
    assert resources[bookings[cases["crew_resource"][0]]["_resource_value"]]["resourcetype"] == 6
    assert bookings[cases["inactive"][0]]["statecode"] == 1
    ahead = datetime.fromisoformat(bookings[cases["two_weeks_ahead"][0]]["starttime"].replace("Z", "+00:00"))
    assert ahead > now + timedelta(days=14)
    assert demo.generate(now=now).tables == org.tables  # deterministic for a seed and a now
