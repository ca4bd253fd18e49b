"""settle(): what a carried-out action means for the link store, decided without I/O (like the planner).

The rule it serves: a link is committed only after the Graph call it records succeeded; a create is
rolled back when Graph refuses it; a gone event is created again (C5); a delete leaves a tombstone unless
the booking is gone for good (D1, D2)."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from sync.core import mailbox_reasons
from sync.core import settle as s
from sync.core.actions import Cancel, Create, Delete, Forget, Recover, Skip, Unlink, Update
from sync.core.domain import LinkState
from sync.core.operations import OpResult, Outcome
from sync.core.reasons import Reason
from sync.core.render import render
from tests.factories import NOW, booking, link_for

B = booking()
LINK = link_for(B, etag='W/"1"')


def create(previous=None, generation=0, recreate=False):
    return Create(B, render(B, B.mailbox, "UTC", generation), generation, Reason.NEW, previous=previous, recreate=recreate)


def ok(event_id="evt-new"):
    return OpResult(B.id, Outcome.OK, event_id, 201)


def test_skip_counts_and_writes_nothing():
    got = s.settle(Skip(B.id, Reason.UNCHANGED), None, None, NOW)
    assert (got.write, got.count, got.record) == (None, "skipped", False)


def test_r_d2_unlink_of_a_deleted_booking_drops_the_link_and_leaves_the_event():
    got = s.settle(Unlink(LINK, Reason.DELETED_PAST), None, None, NOW)
    assert got.write == s.DeleteLink(LINK) and got.count == "unlinked"


def test_r_d3_logical_delete_keeps_an_unlinked_row_so_a_return_takes_the_event_up_again():
    got = s.settle(Unlink(LINK, Reason.LOGICAL_DELETE, detail="inactive"), None, None, NOW)
    assert isinstance(got.write, s.PutLink) and got.write.link.state == LinkState.UNLINKED and got.write.link.written_at == NOW


def test_forget_drops_the_tombstone():
    tomb = replace(LINK, state=LinkState.REMOVED)
    assert s.settle(Forget(tomb), None, None, NOW).write == s.DeleteLink(tomb)


def test_r_c1_a_create_commits_the_link_over_its_intent_with_the_intents_etag():
    intent = replace(s.intent(create()), etag='W/"7"')
    got = s.settle(create(), ok(), intent, NOW)
    assert isinstance(got.write, s.PutLink) and got.count == "created"
    link = got.write.link
    assert (link.state, link.event_id, link.etag, link.written_at) == (LinkState.LINKED, "evt-new", 'W/"7"', NOW)


def test_an_intent_carries_the_etag_of_the_row_it_replaces():
    tomb = replace(LINK, state=LinkState.REMOVED, etag='W/"3"')
    assert s.intent(create(previous=tomb, generation=1)).etag == 'W/"3"'
    assert s.intent(create()).state == LinkState.CREATING


@pytest.mark.parametrize("outcome", [Outcome.TRANSIENT, Outcome.MAILBOX_UNAVAILABLE])
def test_r_e1_m6_nothing_is_committed_without_success_and_the_observation_stays(outcome):
    intent = s.intent(create())
    got = s.settle(create(), OpResult(B.id, outcome, status=503), intent, NOW)
    assert got.write is None and got.keep_pending


def test_r_m6_a_refused_mailbox_carries_a_reason_a_person_can_act_on():
    got = s.settle(Update(B, LINK, render(B, B.mailbox, "UTC", 0), Reason.TIME_OR_LOCATION_CHANGED),
                   OpResult(B.id, Outcome.MAILBOX_UNAVAILABLE, status=403, code="access_denied"), LINK, NOW)
    assert got.mailbox_failure == "access_denied: " + mailbox_reasons.SENTENCES["access_denied"]


def test_r_e3_a_refused_create_rolls_back_to_what_was_there():
    intent = replace(s.intent(create()), etag='W/"9"')
    fresh = s.settle(create(), OpResult(B.id, Outcome.INVALID, status=400, code="RequestBodyRead"), intent, NOW)
    assert fresh.write == s.DeleteLink(intent) and fresh.count == "invalid" and "RequestBodyRead" in (fresh.error or "")
    tomb = replace(LINK, state=LinkState.REMOVED)
    again = s.settle(create(previous=tomb, generation=1), OpResult(B.id, Outcome.INVALID, status=400), intent, NOW)
    assert again.write == s.PutLink(replace(tomb, etag='W/"9"'))


def test_r_c5_an_update_that_finds_the_event_gone_creates_it_again_under_a_new_transaction_id():
    update = Update(B, LINK, render(B, B.mailbox, "UTC", 0), Reason.TIME_OR_LOCATION_CHANGED)
    got = s.settle(update, OpResult(B.id, Outcome.GONE, status=404), LINK, NOW)
    assert got.write is None and got.follow_up is not None
    follow = got.follow_up
    assert follow.recreate and follow.generation == 1 and follow.previous == LINK
    assert follow.rendered.payload["transactionId"] != update.rendered.payload["transactionId"]
    assert s.settle(follow, ok(), s.intent(follow), NOW).count == "recreated"


def test_r_d1_a_deleted_booking_drops_its_link_and_a_removal_keeps_a_tombstone():
    gone = s.settle(Delete(LINK, Reason.DELETED), OpResult(B.id, Outcome.OK, status=204), LINK, NOW)
    assert gone.write == s.DeleteLink(LINK) and gone.count == "deleted"
    moved_away = s.settle(Delete(LINK, Reason.REASSIGNED_FUTURE), OpResult(B.id, Outcome.GONE, status=404), LINK, NOW)
    assert isinstance(moved_away.write, s.PutLink) and moved_away.write.link.state == LinkState.REMOVED
    assert moved_away.write.link.event_id is None and moved_away.write.link.generation == LINK.generation


def test_r_x2_a_cancel_counts_as_cancelled_and_keeps_a_tombstone():
    got = s.settle(Cancel(LINK, Reason.CANCELED), OpResult(B.id, Outcome.OK, status=202), LINK, NOW)
    assert got.count == "cancelled" and isinstance(got.write, s.PutLink) and got.write.link.state == LinkState.REMOVED


def test_recovery_links_a_found_event_and_otherwise_plans_one_generation_back():
    intent = s.intent(create(generation=2))
    found = s.recovered(Recover(intent, B), ["evt-found"], NOW)
    assert found.found and isinstance(found.write, s.PutLink) and found.write.link.event_id == "evt-found"
    assert found.plan_against.state == LinkState.LINKED
    lost = s.recovered(Recover(intent, B), [], NOW)
    assert lost.write is None and (lost.plan_against.state, lost.plan_against.generation) == (LinkState.REMOVED, 1)
    assert s.intent_obsolete(lost, [Skip(B.id, Reason.OUTSIDE_WINDOW)])
    assert not s.intent_obsolete(lost, [create(generation=2)])


def test_recover_is_not_settled_like_a_graph_call():
    with pytest.raises(ValueError):
        s.settle(Recover(LINK, B), None, None, NOW + timedelta(days=1))
