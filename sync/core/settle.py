"""PURE: what a carried-out action means for the link store (rule: a link is committed only after the Graph
call it records succeeded).

`settle(action, result, link, now)` -> the link write, the counter, the per-booking outcome, whether the
pending observation must stay, and any follow-up action (C5: a gone event is created again).
`recovered(...)` decides what a create intent left by an interrupted run turns into. The executor only
carries these out.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from . import mailbox_reasons
from .actions import Action, Cancel, Create, Delete, Forget, Kind, Recover, Skip, Unlink, Update
from .domain import Link, LinkState
from .operations import OpResult, Outcome
from .reasons import Reason
from .render import render


@dataclass(frozen=True)
class PutLink:
    link: Link


@dataclass(frozen=True)
class DeleteLink:
    link: Link


LinkWrite = PutLink | DeleteLink | None


@dataclass(frozen=True)
class Settlement:
    write: LinkWrite = None
    count: str | None = None             # the mailbox counter this adds one to
    error: str | None = None             # recorded for diagnose (G1); None clears an old one
    record: bool = True                  # whether the outcome is recorded at all
    keep_pending: bool = False           # the observation stays for the next sync
    mailbox_failure: str | None = None   # M6: the mailbox itself failed, with the reason a person can act on
    follow_up: Create | Recover | None = None


COUNTERS = {Kind.CREATE: "created", Kind.UPDATE: "updated", Kind.DELETE: "deleted", Kind.CANCEL: "cancelled",
            Kind.UNLINK: "unlinked", Kind.FORGET: "forgotten"}


def settle(action: Action, result: OpResult | None, link: Link | None, now: datetime) -> Settlement:
    """`link` is the stored row the write must match: the intent for a create, the action's link otherwise."""
    if isinstance(action, Skip):
        return Settlement(count="skipped", record=False)
    if isinstance(action, Forget):
        return Settlement(DeleteLink(action.link), "forgotten")
    if isinstance(action, Unlink):
        if action.reason == Reason.DELETED_PAST:
            return Settlement(DeleteLink(action.link), "unlinked")       # D2: the booking is gone; the event stays
        return Settlement(PutLink(replace(action.link, state=LinkState.UNLINKED, written_at=now)), "unlinked")   # D3
    if isinstance(action, Recover) or result is None:
        raise ValueError(f"{action.kind.value} is settled through recovered(), and Graph actions need a result")
    if result.outcome == Outcome.MAILBOX_UNAVAILABLE:
        return Settlement(keep_pending=True, mailbox_failure=mailbox_failure_reason(result), record=False)
    if result.outcome == Outcome.TRANSIENT:
        return Settlement(count="failed", error=f"transient: {result.code or result.status}", keep_pending=True)
    if result.outcome == Outcome.ALREADY_CREATED:
        # Graph already made an event under this transactionId (an earlier attempt whose answer was lost): never an
        # orphan, never a loop: the event is found by its ownership tag and linked; the intent stays until it is.
        if isinstance(action, Create) and link is not None:
            return Settlement(record=False, follow_up=Recover(link, action.booking))
        return Settlement(count="failed", error="created earlier; linked on the next run", keep_pending=True)
    if result.outcome == Outcome.INVALID:
        return Settlement(_rollback(action, link), "invalid", error=f"rejected by Graph: {result.code or result.status}")
    return _succeeded(action, result, link, now)


def _rollback(action: Action, intent: Link | None) -> LinkWrite:
    """Graph refused a create: nothing was created, so the store goes back to what was there."""
    if not isinstance(action, Create) or intent is None:
        return None
    if action.previous is not None:
        return PutLink(replace(action.previous, etag=intent.etag))
    return DeleteLink(intent)


def _succeeded(action: Action, result: OpResult, link: Link | None, now: datetime) -> Settlement:
    if isinstance(action, Create):
        return Settlement(PutLink(linked(action, link, result.event_id, now)), "recreated" if action.recreate else "created")
    if isinstance(action, Update):
        if result.outcome == Outcome.GONE:                               # C5: the owner deleted it; create it again
            return Settlement(record=False, follow_up=recreate(action))
        return Settlement(PutLink(linked(action, link, result.event_id or action.link.event_id, now)), "updated")
    if isinstance(action, (Delete, Cancel)):                             # done, or already gone
        current = link or action.link
        count = COUNTERS[action.kind]
        if action.reason == Reason.DELETED:
            return Settlement(DeleteLink(current), count)                 # D1: the booking is gone for good
        # it may come back: the tombstone remembers the generation, so a return gets a fresh transactionId
        return Settlement(PutLink(replace(current, state=LinkState.REMOVED, event_id=None, written_at=now)), count)
    raise ValueError(f"nothing to settle for {action.kind.value}")


def recreate(action: Update) -> Create:
    """C5: the event is gone from Outlook; create it again under a new transactionId."""
    generation = action.link.generation + 1
    rendered = render(action.booking, action.rendered.mailbox, action.rendered.time_zone, generation)
    return Create(action.booking, rendered, generation, action.reason, previous=action.link, recreate=True)


def linked(action: Create | Update, base: Link | None, event_id: str | None, now: datetime) -> Link:
    """The link a successful create or update commits."""
    booking, rendered = action.booking, action.rendered
    etag = (base or (action.link if isinstance(action, Update) else action.previous))
    return Link(booking_id=booking.id, mailbox=rendered.mailbox, environment=booking.environment, event_id=event_id,
                generation=action.generation, trigger_fingerprint=rendered.trigger_fingerprint,
                content_fingerprint=rendered.content_fingerprint, event_start=booking.start, event_end=booking.end,
                state=LinkState.LINKED, has_attendees=False, written_at=now, etag=etag.etag if etag else None)


def intent(action: Create) -> Link:
    """The CREATING row recorded before the Graph create, so a crash between the call and its record is
    recovered by the ownership tag instead of creating a second event."""
    booking, rendered = action.booking, action.rendered
    return Link(booking_id=booking.id, mailbox=rendered.mailbox, environment=booking.environment, event_id=None,
                generation=action.generation, trigger_fingerprint=rendered.trigger_fingerprint,
                content_fingerprint=rendered.content_fingerprint, event_start=booking.start, event_end=booking.end,
                state=LinkState.CREATING, etag=action.previous.etag if action.previous else None)


@dataclass(frozen=True)
class Recovery:
    write: PutLink | None                # the event was found: link it
    plan_against: Link                   # what the planner sees for this booking next
    found: bool


def recovered(action: Recover, found: list[str], now: datetime) -> Recovery:
    intent_row = action.link
    if found:
        link = replace(intent_row, event_id=found[0], state=LinkState.LINKED, written_at=now)
        return Recovery(PutLink(link), link, True)
    # Never reached Graph: planning against a removal one generation back makes the next create reuse the
    # intent's transactionId, so a create Graph did apply but did not list is still caught.
    return Recovery(None, replace(intent_row, state=LinkState.REMOVED, generation=intent_row.generation - 1), False)


def intent_obsolete(recovery: Recovery, next_actions: list[Action]) -> bool:
    """Nothing was created and nothing will be: the intent row goes."""
    return not recovery.found and not any(a.kind in (Kind.CREATE, Kind.FORGET) for a in next_actions)


def mailbox_failure_reason(result: OpResult) -> str:
    """M6: the reason a person can act on, for a mailbox the calendar refused (its adapter names the product's
    reason, core/mailbox_reasons.py, or a tenant's refusal)."""
    return mailbox_reasons.stated(result.code, result.message)
