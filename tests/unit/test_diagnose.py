"""G1 on the pure explain(): every code, in the order the sync applies the rules."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sync.core.domain import LinkState, MailboxTestStatus, SkippedRow, SyncFilter
from sync.core.explain import CODES, explain
from sync.core.settings import SyncSettings
from tests.factories import CANCELED, NOW, booking, link_for, mailbox

S = SyncSettings()


def code(b, mb=..., link=None, outcome=None, registered=True, settings=S, filters=()):
    mb = mailbox() if mb is ... else mb
    booking_id = b.booking_id if isinstance(b, SkippedRow) else (b.id if b else "x")
    return explain(b, booking_id, mb if registered else None, link, outcome, settings, NOW, filters)


def test_r_g1_every_code_is_reachable_with_a_sentence():
    b = booking()
    past = booking(start=NOW - timedelta(days=1))
    cases = {
        "booking_not_found": code(None),
        "malformed_booking": code(SkippedRow(b.id, "end_before_start")),
        "not_tied_to_work_order": code(replace(b, work_order=None)),
        "resource_not_user": code(replace(b, resource_type=6)),
        "user_has_no_mailbox_address": code(replace(b, mailbox=None)),
        "mailbox_not_registered": code(b, mb=None, registered=False),
        "sync_method_none": code(b, mb=mailbox(sync_method="none")),
        "mailbox_not_approved": code(b, mb=mailbox(approved=False)),
        "mailbox_not_tested": code(b, mb=mailbox(test_status=MailboxTestStatus.NOT_TESTED)),
        "mailbox_test_failed": code(b, mb=mailbox(test_status=MailboxTestStatus.FAILURE, test_reason="access_denied: scope")),
        "mailbox_sync_off": code(b, mb=mailbox(enabled=False)),
        "bound_to_another_environment": code(b, mb=mailbox(environment="https://other.crm.dynamics.com")),
        "outside_window": code(booking(start=NOW + timedelta(days=30))),
        "inactive": code(replace(b, active=False)),
        "excluded_by_filter": code(b, filters=(SyncFilter("south", territories=frozenset({"South"})),)),
        "canceled_not_propagated": code(replace(b, status=CANCELED)),
        "canceled": code(replace(b, status=CANCELED), settings=replace(S, propagate_cancellations=True)),
        "canceled_event_in_past": code(replace(past, status=CANCELED), link=link_for(past), settings=replace(S, propagate_cancellations=True)),
        "last_attempt_failed": code(b, outcome={"error": "transient: 503"}),
        "waiting_for_next_cycle": code(b),
        "synced": code(b, link=link_for(b, written_at=NOW)),
    }
    assert set(cases) == set(CODES)
    for expected, diagnosis in cases.items():
        assert diagnosis.code == expected and diagnosis.sentence.endswith(".") and len(diagnosis.sentence) > 20, expected
    assert cases["outside_window"].details["window_end"].startswith((NOW + timedelta(days=14)).strftime("%Y-%m-%d"))
    assert "south" in cases["excluded_by_filter"].sentence
    assert "access_denied" in cases["mailbox_test_failed"].sentence
    assert cases["synced"].in_outlook and cases["synced"].details["event_id"]


def test_r_g1_first_reason_wins_in_contract_order():
    b = replace(booking(start=NOW + timedelta(days=30)), active=False, work_order=None)
    assert code(b).code == "not_tied_to_work_order"
    # the planner's order: an inactive booking is out of scope (S4) before the window is looked at (S3)
    assert code(replace(booking(start=NOW + timedelta(days=30)), active=False)).code == "inactive"
    assert code(booking(start=NOW + timedelta(days=30))).code == "outside_window"


def test_r_g1_canceled_linked_event_is_still_in_outlook():
    b = booking()
    d = code(replace(b, status=CANCELED), link=link_for(b))
    assert d.code == "canceled_not_propagated" and d.in_outlook


def test_r_g1_unlinked_event_is_not_reported_as_synced():
    b = booking()
    assert code(b, link=link_for(b, state=LinkState.UNLINKED)).code == "waiting_for_next_cycle"
