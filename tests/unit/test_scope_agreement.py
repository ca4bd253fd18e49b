"""One place for every scope rule (S1-S5, M1, M4, M5, X1-X2): for random bookings, mailboxes and links, what
diagnose (G1) answers and what the planner decides agree, code for code."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from sync.core import scope
from sync.core.actions import Kind
from sync.core.domain import LinkState, MailboxTestStatus, SyncFilter
from sync.core.explain import SYNCED, WAITING, explain
from sync.core.plan import plan
from sync.core.reasons import Reason
from sync.core.scope import MAILBOX_REASONS
from sync.core.settings import SyncSettings
from tests.factories import CANCELED, ENV, NOW, SCHEDULED, booking, link_for, mailbox, work_order

ADDRESS = "tech@contoso.example"
OTHER_ENV = "https://fabrikam.crm.dynamics.com"
TARGET_REASONS = {Reason.NO_WORK_ORDER.value, Reason.NOT_USER_RESOURCE.value, Reason.NO_MAILBOX_ADDRESS.value}

bookings = st.builds(
    lambda hours, wo, rtype, address, active, canceled, env, territory: booking(
        address, start=NOW + timedelta(hours=hours), work_order=work_order(territory=territory) if wo else None,
        resource_type=rtype, active=active, status=CANCELED if canceled else SCHEDULED, environment=env),
    hours=st.integers(-10 * 24, 20 * 24), wo=st.booleans(), rtype=st.sampled_from([3, 3, 3, 2]),
    address=st.sampled_from([ADDRESS, ADDRESS, None]), active=st.booleans(), canceled=st.booleans(),
    env=st.sampled_from([ENV, ENV, OTHER_ENV]), territory=st.sampled_from(["North", "South"]))
mailboxes = st.builds(
    lambda method, approved, status, enabled, env, filters: mailbox(
        ADDRESS, sync_method=method, approved=approved, test_status=status, enabled=enabled, environment=env,
        filters=(SyncFilter("south", territories=frozenset({"South"})),) if filters else ()),
    # mostly mailboxes that sync, so the booking rules are reached often
    method=st.sampled_from(["server-side"] * 5 + ["none"]), approved=st.sampled_from([True] * 5 + [False]),
    status=st.sampled_from([MailboxTestStatus.SUCCESS] * 4 + list(MailboxTestStatus)),
    enabled=st.sampled_from([True] * 5 + [False]), env=st.sampled_from([ENV, ENV, OTHER_ENV]),
    filters=st.booleans())
sync_settings = st.builds(lambda propagate, logical: SyncSettings(propagate_cancellations=propagate, logical_deletes=logical),
                     st.booleans(), st.sampled_from(["unlink", "delete"]))


def verdict(actions: list) -> str:
    """The planner's decision for the one booking, in diagnose's vocabulary."""
    if not actions:
        return "nothing"                                        # the mailbox does not sync (M1, M5)
    (action,) = actions
    if action.kind == Kind.CREATE:
        return WAITING
    if action.kind == Kind.SKIP:
        return SYNCED if action.reason == Reason.UNCHANGED else action.reason.value
    if action.reason == Reason.LOGICAL_DELETE:
        return action.detail                                    # the scope reason the logical delete names
    return action.reason.value                                  # canceled: cancel or delete (X2)


@settings(max_examples=500)
@given(b=bookings, mb=st.one_of(st.none(), mailboxes, mailboxes, mailboxes), linked=st.booleans(), s=sync_settings)
def test_r_g1_m4_diagnose_and_the_planner_always_agree(b, mb, linked, s):
    link = link_for(replace(b, mailbox=ADDRESS)) if linked else None
    diagnosis = explain(b, b.id, mb, link, None, s, NOW)
    if mb is None:
        assert diagnosis.code in TARGET_REASONS | {Reason.MAILBOX_NOT_REGISTERED.value}
        return
    decided = verdict(plan({b.id: b}, set(), {b.id: link} if link else {}, mb, s, NOW).actions)
    if diagnosis.code in {r.value for r in MAILBOX_REASONS}:
        assert decided == "nothing"
    elif diagnosis.code in TARGET_REASONS:                     # diagnose names the booking's flaw before the mailbox's
        assert decided in (diagnosis.code, "nothing")
    else:
        assert scope.mailbox_reason(mb) is None
        assert decided == diagnosis.code, (diagnosis.code, decided)
    assert not diagnosis.in_outlook or linked


# mostly canceled bookings in the mailbox's scope, so that left_alone holds in a good share of the examples
canceled_in_scope = st.builds(
    lambda hours, territory: booking(ADDRESS, start=NOW + timedelta(hours=hours), status=CANCELED,
                                     work_order=work_order(territory=territory)),
    hours=st.integers(-10 * 24, 20 * 24), territory=st.sampled_from(["North", "South"]))


@settings(max_examples=500)
@given(b=st.one_of(bookings, canceled_in_scope), mb=mailboxes, state=st.sampled_from([None, LinkState.LINKED, LinkState.LINKED, LinkState.UNLINKED, LinkState.REMOVED]),
       link_hours=st.integers(-10 * 24, 20 * 24), stale=st.booleans(), s=sync_settings, global_filter=st.booleans())
def test_r_x1_what_collect_leaves_alone_the_planner_skips_whatever_the_link(b, mb, state, link_hours, stale, s, global_filter):
    """scope.left_alone lets collect drop an observation without reading links: for any link the mailbox may hold
    (linked, unlinked, removed; an old time; an event in the past or the future), the plan is a skip or nothing. A
    creating link is a recovery, planned whatever was observed (its observation is still waiting: not dropped)."""
    global_filters = (SyncFilter("north", territories=frozenset({"North"})),) if global_filter else ()
    if not scope.left_alone(b, mb, s, NOW, global_filters):
        return
    link = None if state is None else link_for(replace(b, mailbox=ADDRESS), state=state,
                                               event_start=NOW + timedelta(hours=link_hours),
                                               **({"trigger_fingerprint": "old"} if stale else {}))
    actions = plan({b.id: b}, set(), {b.id: link} if link else {}, mb, s, NOW, global_filters=global_filters).actions
    assert all(a.kind == Kind.SKIP for a in actions), [a.kind for a in actions]
