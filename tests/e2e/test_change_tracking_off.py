"""T5: a table whose change tracking is off (Dataverse answers 0x80072491; Learn, "Web service error codes":
ChangeTrackingNotEnabledForEntity, "Entity {0} isn't enabled for change tracking.") does not stop the sync: every
cycle reads the whole window, the run record names the table, and turning tracking on takes effect at the next cycle.
On 6c040fe the first cycle's collect failed with PermanentError http_400 and no mailbox ever synced."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sync.local.cycle import run_cycle
from tests.dvseed import DvSeed, iso
from tests.stack_helpers import enable_all_mailboxes, stack_settings

pytestmark = pytest.mark.stack
NOW = datetime.now(UTC).replace(microsecond=0)


def _tracking(tenant, table: str, enabled: bool) -> None:
    tenant.control("PUT", "/orgs/default/change-tracking", {"table": table, "enabled": enabled})


def test_the_emulator_answers_a_request_for_changes_of_an_untracked_table_as_dataverse_does(tenant):
    import httpx
    _tracking(tenant, "bookableresourcebooking", False)
    answer = httpx.get(tenant.environment()["DATAVERSE_ENVIRONMENTS"] + "/api/data/v9.2/bookableresourcebookings?$select=bookableresourcebookingid",
                       headers={"Prefer": "odata.track-changes", "Authorization": "Bearer dev"})
    assert answer.status_code == 400
    assert answer.json()["error"] == {"code": "0x80072491", "message": "Entity bookableresourcebooking isn't enabled for change tracking."}


@pytest.mark.parametrize("table", ["bookableresourcebooking", "msdyn_workorder"])
async def test_r_t5_with_change_tracking_off_every_cycle_reads_the_whole_window_and_says_so(tenant, table_prefix, monkeypatch, table):
    settings = stack_settings(tenant, table_prefix, monkeypatch)
    seed = DvSeed(tenant)
    tech = seed.technician("tech@contoso.example")
    first = seed.booking(tech, NOW + timedelta(days=1))
    _tracking(tenant, table, False)
    await enable_all_mailboxes(settings)
    summary = await run_cycle(settings)
    [collected] = summary["environments"]
    assert collected.get("tracking_off") == [table] and collected["mode"] == "full" and "error" not in collected
    assert summary["totals"].get("created") == 1
    start = NOW + timedelta(days=2)
    seed.update("bookableresourcebookings", first, {"starttime": iso(start), "endtime": iso(start + timedelta(hours=2))})
    second = await run_cycle(settings)                               # still off: the whole window again, and the move is seen
    assert second["environments"][0].get("tracking_off") == [table] and second["totals"].get("updated") == 1
    events = tenant.control("GET", "/mailboxes/tech@contoso.example/events")["value"]
    assert [e["start"]["dateTime"][:16] for e in events] == [start.strftime("%Y-%m-%dT%H:%M")]
    _tracking(tenant, table, True)
    third = await run_cycle(settings)                                # turned on: tracking starts, nothing changes twice
    assert "tracking_off" not in third["environments"][0] and not third["totals"].get("updated")
    fourth = await run_cycle(settings)
    assert fourth["environments"][0]["mode"] == "delta" and not fourth["totals"]
