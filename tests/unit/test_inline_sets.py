"""PendingStore's inline sets, the pure part (sync/ports.py): which observation of a booking stands when the mailbox's
partition and its row both hold one."""
from __future__ import annotations

from datetime import UTC, datetime

from sync.ports import MailboxLease, MailboxState, inline_fields, with_inline

RELEASED = datetime(1970, 1, 1, tzinfo=UTC)


def _state(row_observation: dict | None, at: str, inline_done: str = "") -> MailboxState:
    pending = [{"booking_id": "b1", "deleted": row_observation is None, "booking": row_observation, "etag": 'W/"1"', "observed_at": at}]
    return MailboxState({}, pending, set(), MailboxLease("", RELEASED, 'W/"9"', inline_done))


def _row(observation: dict | None, at: str) -> dict:
    return inline_fields("m1", {"b1": observation}, at) or {}


def test_r_t3_dataverse_modifiedon_decides_over_our_clocks():
    """A webhook's host whose clock runs behind wrote its row 'before' collect's set by our clocks, yet saw the
    later state: Dataverse's modifiedon says so, and it stands."""
    state = _state({"v": "webhook", "modified_on": "2026-12-07T08:00:05+00:00"}, "2026-12-07T08:00:01+00:00")
    merged = with_inline(state, _row({"v": "collect", "modified_on": "2026-12-07T08:00:02+00:00"}, "2026-12-07T08:00:03+00:00"))
    assert [p["booking"]["v"] for p in merged.pending] == ["webhook"] and merged.inline_mark == "m1"


def test_r_t3_the_later_write_decides_when_modifiedon_cannot():
    """Two changes within one second of modifiedon, or a deletion (which has none): the later write stands, and an
    inline observation standing for a row takes the row's ETag (so consuming it removes that row)."""
    same = "2026-12-07T08:00:02+00:00"
    merged = with_inline(_state({"v": "row", "modified_on": same}, "2026-12-07T08:00:01+00:00"),
                         _row({"v": "inline", "modified_on": same}, "2026-12-07T08:00:03+00:00"))
    assert [(p["booking"]["v"], p["etag"], p.get("inline")) for p in merged.pending] == [("inline", 'W/"1"', True)]
    merged = with_inline(_state({"v": "row", "modified_on": same}, "2026-12-07T08:00:04+00:00"), _row(None, "2026-12-07T08:00:03+00:00"))
    assert [p["booking"] for p in merged.pending] == [{"v": "row", "modified_on": same}]


def test_r_t3_a_set_the_lease_row_records_as_applied_is_left_out():
    state = _state({"v": "row"}, "2026-12-07T08:00:01+00:00", inline_done="m1")
    assert with_inline(state, _row({"v": "inline"}, "2026-12-07T08:00:09+00:00")) is state
