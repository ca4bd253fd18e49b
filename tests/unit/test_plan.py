"""The planner, rule by rule (shared/spec/behavior.md). Pure: an explicit `now`, no I/O."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from sync.core.domain import Address, BookingLocation, LinkState, MailboxTestStatus, SyncFilter
from sync.core.plan import Kind, Reason, plan
from sync.core.settings import SyncSettings
from tests.factories import CANCELED, NOW, booking, link_for, mailbox, moved, work_order

FS = SyncSettings()
ENH = SyncSettings().with_profile("enhanced")


def one(bookings=(), links=(), deleted=(), mb=None, settings=FS, now=NOW, **kw):
    p = plan({b.id: b for b in bookings}, set(deleted), {l.booking_id: l for l in links}, mb or mailbox(), settings, now, **kw)
    return p


def kinds(p):
    return [(a.kind, a.reason) for a in p.actions]


def test_r_s1_only_bookings_tied_to_a_work_order_sync():
    assert kinds(one([booking(work_order=None)])) == [(Kind.SKIP, Reason.NO_WORK_ORDER)]
    assert kinds(one([booking()]))[0][0] == Kind.CREATE


@pytest.mark.parametrize("resource_type", [1, 2, 4, 5, 6, 7, 8])
def test_r_s2_only_user_resources_sync(resource_type):
    assert kinds(one([booking(resource_type=resource_type)])) == [(Kind.SKIP, Reason.NOT_USER_RESOURCE)]


def test_r_s2_user_without_mailbox_address_does_not_sync():
    assert kinds(one([booking(mailbox=None)])) == [(Kind.SKIP, Reason.NO_MAILBOX_ADDRESS)]


def test_r_s3_window_bounds_and_entering_later():
    far = booking(start=NOW + timedelta(days=15))
    assert kinds(one([far])) == [(Kind.SKIP, Reason.OUTSIDE_WINDOW)]
    old = booking(start=NOW - timedelta(days=8))
    assert kinds(one([old])) == [(Kind.SKIP, Reason.OUTSIDE_WINDOW)]
    overlapping = booking(start=NOW - timedelta(days=7, hours=1), hours=2)
    assert kinds(one([overlapping]))[0][0] == Kind.CREATE
    # The same, unedited booking enters the window as time passes and is then created.
    assert kinds(one([far], now=NOW + timedelta(days=1, hours=1)))[0][0] == Kind.CREATE
    assert kinds(one([booking(start=NOW + timedelta(days=15))], settings=replace(FS, window_future=timedelta(days=20))))[0][0] == Kind.CREATE


def test_r_s4_only_active_bookings_sync():
    assert kinds(one([booking(active=False)])) == [(Kind.SKIP, Reason.INACTIVE)]


def test_r_s5_default_filter_is_the_mailbox_users_bookings():
    assert kinds(one([booking(mailbox="other@contoso.example")])) == [(Kind.SKIP, Reason.OTHER_MAILBOX)]


def test_r_s5_filters_combine_as_a_union_and_mailbox_filters_win():
    repair = booking(work_order=work_order(work_order_type="Repair", territory="North"))
    inspect_south = booking(work_order=work_order(work_order_type="Inspection", territory="South"))
    install_east = booking(work_order=work_order(work_order_type="Installation", territory="East"))
    filters = (SyncFilter("repairs", work_order_types=frozenset({"repair"})), SyncFilter("south", territories=frozenset({"South"})))
    p = one([repair, inspect_south, install_east], global_filters=filters)
    got = {a.booking_id: a.kind for a in p.actions}
    assert got == {repair.id: Kind.CREATE, inspect_south.id: Kind.CREATE, install_east.id: Kind.SKIP}
    only_east = mailbox(filters=(SyncFilter("east", territories=frozenset({"east"})),))
    got = {a.booking_id: a.kind for a in one([repair, install_east], mb=only_east, global_filters=filters).actions}
    assert got == {repair.id: Kind.SKIP, install_east.id: Kind.CREATE}


def test_r_s5_linked_booking_that_stops_matching_a_filter_is_a_logical_delete():
    b = booking(work_order=work_order(work_order_type="Repair"))
    mb = mailbox(filters=(SyncFilter("inspections", work_order_types=frozenset({"Inspection"})),))
    p = one([b], [link_for(b)], mb=mb)
    assert kinds(p) == [(Kind.UNLINK, Reason.LOGICAL_DELETE)] and p.actions[0].detail == Reason.EXCLUDED_BY_FILTER.value


@pytest.mark.parametrize("change", [dict(approved=False), dict(test_status=MailboxTestStatus.FAILURE), dict(test_status=MailboxTestStatus.NOT_TESTED),
                                    dict(sync_method="none")])
def test_r_m1_mailbox_syncs_only_when_server_side_approved_and_tested(change):
    b = booking()
    assert one([b], mb=mailbox(**change)).actions == []


def test_r_m5_sync_turned_off_deletes_nothing_and_creates_nothing():
    b, gone = booking(), booking()
    p = one([b], [link_for(gone)], deleted=[gone.id], mb=mailbox(enabled=False))
    assert p.actions == []


def test_r_c1_new_booking_in_scope_is_created_with_generation_zero_transaction_id():
    b = booking()
    (action,) = one([b]).actions
    assert action.kind == Kind.CREATE and action.generation == 0
    assert action.rendered.payload["transactionId"]


def test_r_c2_time_or_location_change_updates_in_place():
    b = booking()
    link = link_for(b)
    assert kinds(one([moved(b, timedelta(hours=1))], [link])) == [(Kind.UPDATE, Reason.TIME_OR_LOCATION_CHANGED)]
    assert kinds(one([replace(b, end=b.end + timedelta(minutes=30))], [link])) == [(Kind.UPDATE, Reason.TIME_OR_LOCATION_CHANGED)]


@pytest.mark.parametrize("settings", [FS, ENH], ids=["fieldservice", "enhanced"])
@pytest.mark.parametrize("location", [BookingLocation(690970000, 47.61, -122.33), BookingLocation(690970001, None, None),
                                      BookingLocation(None, 47.6, -122.4)])
def test_r_c2_the_bookings_own_location_is_the_location_that_triggers_an_update(settings, location):
    b = booking(location=BookingLocation(None, 47.6, -122.3))
    (action,) = one([replace(b, location=location)], [link_for(b)], settings=settings).actions
    assert (action.kind, action.reason) == (Kind.UPDATE, Reason.TIME_OR_LOCATION_CHANGED)
    assert action.rendered.payload_for_update()["location"]["displayName"], "the update refreshes the work order fields too"


def test_r_c2_c3_a_work_order_address_change_alone_waits_for_the_next_booking_change():
    b = booking()
    link = link_for(b)
    relocated = replace(b, work_order=replace(b.work_order, address=Address(line1="9 Elm St", city="Tacoma")))
    assert kinds(one([relocated], [link])) == [(Kind.SKIP, Reason.UNCHANGED)]                      # fieldservice: not written
    assert kinds(one([relocated], [link], settings=ENH)) == [(Kind.UPDATE, Reason.WORK_ORDER_FIELDS_CHANGED)]   # enhanced
    (later,) = one([moved(relocated, timedelta(hours=1))], [link]).actions                          # then it travels with C2
    assert later.kind == Kind.UPDATE and "Tacoma" in later.rendered.payload_for_update()["location"]["displayName"]


def test_r_c3_work_order_only_change_does_not_touch_outlook_by_default():
    b = booking()
    changed = replace(b, work_order=replace(b.work_order, summary="New summary", priority="Low"))
    assert kinds(one([changed], [link_for(b)])) == [(Kind.SKIP, Reason.UNCHANGED)]


def test_r_c3_enhanced_refreshes_work_order_fields():
    b = booking()
    changed = replace(b, work_order=replace(b.work_order, summary="New summary"))
    assert kinds(one([changed], [link_for(b)], settings=ENH)) == [(Kind.UPDATE, Reason.WORK_ORDER_FIELDS_CHANGED)]
    assert kinds(one([changed], [link_for(b)], settings=replace(FS, refresh_work_order_fields=True)))[0][0] == Kind.UPDATE


def test_r_c4_no_change_plans_no_writes():
    bookings = [booking() for _ in range(5)]
    p = one(bookings, [link_for(b) for b in bookings])
    assert p.writes == []


def test_r_c6_reassigned_booking_is_created_in_new_mailbox_and_logically_deleted_in_old():
    b = booking(mailbox="new@contoso.example")
    old_link = link_for(b, "tech@contoso.example")
    assert kinds(one([b], [old_link])) == [(Kind.UNLINK, Reason.LOGICAL_DELETE)]
    assert kinds(one([b], mb=mailbox("new@contoso.example")))[0][0] == Kind.CREATE


@pytest.mark.parametrize("moved_to", [dict(mailbox="new@contoso.example"), dict(resource_type=2, mailbox=None),
                                      dict(resource_type=4, mailbox=None), dict(mailbox=None)],
                         ids=["another technician", "equipment (Lift 12)", "facility (Depot West)", "a user without a mailbox"])
def test_r_c6_enhanced_a_booking_moved_to_any_other_resource_removes_the_old_future_event(moved_to):
    b = booking()
    link = link_for(b)
    reassigned = replace(b, **moved_to)
    assert kinds(one([reassigned], [link], settings=ENH)) == [(Kind.DELETE, Reason.REASSIGNED_FUTURE)]
    assert kinds(one([reassigned], [link])) == [(Kind.UNLINK, Reason.LOGICAL_DELETE)]       # fieldservice: D3


def test_r_c6_enhanced_removes_the_old_mailboxs_future_event():
    b = booking(mailbox="new@contoso.example")
    assert kinds(one([b], [link_for(b, "tech@contoso.example")], settings=ENH)) == [(Kind.DELETE, Reason.REASSIGNED_FUTURE)]
    past = booking(mailbox="new@contoso.example", start=NOW - timedelta(days=1))
    assert kinds(one([past], [link_for(past, "tech@contoso.example")], settings=ENH))[0][0] == Kind.UNLINK


def test_r_x1_canceled_booking_leaves_the_event_by_default():
    b = booking()
    assert kinds(one([replace(b, status=CANCELED)], [link_for(b)])) == [(Kind.SKIP, Reason.CANCELED_NOT_PROPAGATED)]
    assert kinds(one([replace(b, status=CANCELED)])) == [(Kind.SKIP, Reason.CANCELED_NOT_PROPAGATED)]


def test_r_x1_canceled_by_field_service_status_alone_counts():
    b = booking()
    fs_only = replace(b, status=replace(b.status, status=2, field_service_status=690970005))
    assert kinds(one([fs_only], [link_for(b)], settings=ENH)) == [(Kind.DELETE, Reason.CANCELED)]


def test_r_x2_propagated_cancel_uses_cancel_with_attendees_delete_without_and_leaves_past():
    b = booking()
    canceled = replace(b, status=CANCELED)
    on = replace(FS, propagate_cancellations=True)
    assert kinds(one([canceled], [link_for(b)], settings=on)) == [(Kind.DELETE, Reason.CANCELED)]
    assert kinds(one([canceled], [link_for(b, has_attendees=True)], settings=on)) == [(Kind.CANCEL, Reason.CANCELED)]
    past = booking(start=NOW - timedelta(days=1))
    assert kinds(one([replace(past, status=CANCELED)], [link_for(past)], settings=on)) == [(Kind.SKIP, Reason.CANCELED_IN_PAST)]


def test_r_d1_delete_only_future_linked_organizer():
    future, past = booking(), booking(start=NOW - timedelta(days=2))
    p = one([], [link_for(future), link_for(past)], deleted=[future.id, past.id])
    got = {a.booking_id: (a.kind, a.reason) for a in p.actions}
    assert got[future.id] == (Kind.DELETE, Reason.DELETED)
    assert got[past.id] == (Kind.UNLINK, Reason.DELETED_PAST)


def test_r_d2_unlinked_deleted_booking_touches_nothing():
    b = booking()
    assert one([], [], deleted=[b.id]).actions == []


def test_r_d3_logical_delete_unlinks_by_default_and_deletes_with_setting():
    b = booking()
    inactive = replace(b, active=False)
    assert kinds(one([inactive], [link_for(b)])) == [(Kind.UNLINK, Reason.LOGICAL_DELETE)]
    assert kinds(one([inactive], [link_for(b)], settings=replace(FS, logical_deletes="delete"))) == [(Kind.DELETE, Reason.LOGICAL_DELETE)]
    no_wo = replace(b, work_order=None)
    assert kinds(one([no_wo], [link_for(b)])) == [(Kind.UNLINK, Reason.LOGICAL_DELETE)]


def test_r_d4_past_events_are_never_deleted():
    for settings in (FS, ENH, replace(FS, logical_deletes="delete")):
        past = booking(start=NOW - timedelta(hours=3))
        for p in (one([], [link_for(past)], deleted=[past.id], settings=settings),
                  one([replace(past, active=False)], [link_for(past)], settings=settings),
                  one([replace(past, status=CANCELED)], [link_for(past)], settings=settings)):
            assert all(a.kind not in (Kind.DELETE, Kind.CANCEL) for a in p.actions)


def test_r_d5_mass_delete_guard_blocks_the_mailbox_unless_forced():
    bookings = [booking() for _ in range(20)]
    links = [link_for(b) for b in bookings]
    p = one([], links, deleted=[b.id for b in bookings[:11]])
    assert p.blocked is not None and p.writes == []
    assert "11 of 20" in p.blocked.message
    forced = one([], links, deleted=[b.id for b in bookings[:11]], force=True)
    assert forced.blocked is None and len(forced.of(Kind.DELETE)) == 11
    few = one([], links[:4], deleted=[b.id for b in bookings[:4]])
    assert few.blocked is None  # under the minimum count


def test_r_c1_interrupted_create_is_recovered_not_repeated():
    b = booking()
    p = one([b], [link_for(b, state=LinkState.CREATING, event_id=None)])
    assert kinds(p) == [(Kind.RECOVER, Reason.CREATE_IN_FLIGHT)]


def test_r_d3_unlinked_tombstone_is_relinked_when_back_in_scope_and_ignored_otherwise():
    b = booking()
    tomb = link_for(b, state=LinkState.UNLINKED)
    assert kinds(one([moved(b, timedelta(hours=1))], [tomb])) == [(Kind.UPDATE, Reason.RELINKED)]
    assert kinds(one([replace(b, active=False)], [tomb])) == [(Kind.SKIP, Reason.INACTIVE)]   # no second unlink


def test_r_d3_removed_tombstone_creates_with_the_next_generation():
    b = booking()
    (action,) = one([b], [link_for(b, state=LinkState.REMOVED, generation=2, event_id=None)]).actions
    assert (action.kind, action.generation) == (Kind.CREATE, 3)


def test_r_d2_deleting_a_booking_forgets_its_tombstones_without_graph():
    b = booking()
    for state in (LinkState.UNLINKED, LinkState.REMOVED):
        assert kinds(one([], [link_for(b, state=state)], deleted=[b.id])) == [(Kind.FORGET, Reason.DELETED)]


def test_r_d5_guard_counts_only_live_links():
    bookings = [booking() for _ in range(12)]
    links = [link_for(b) for b in bookings[:6]] + [link_for(b, state=LinkState.UNLINKED) for b in bookings[6:]]
    p = one([], links, deleted=[b.id for b in bookings])
    assert p.blocked is None      # 6 deletes < the minimum of 10; tombstones are not counted as links


OTHER_ENV = "https://fabrikam.crm.dynamics.com"


def test_r_m4_bookings_of_another_environment_are_out_of_scope_for_a_bound_mailbox():
    b = booking(environment=OTHER_ENV)
    assert kinds(one([b])) == [(Kind.SKIP, Reason.BOUND_TO_ANOTHER_ENVIRONMENT)]
    p = one([b], [link_for(b)])                 # linked before a move: a logical delete, never an update
    assert kinds(p) == [(Kind.UNLINK, Reason.LOGICAL_DELETE)] and p.actions[0].detail == Reason.BOUND_TO_ANOTHER_ENVIRONMENT.value
    assert kinds(one([b], mb=mailbox(environment=OTHER_ENV)))[0][0] == Kind.CREATE
