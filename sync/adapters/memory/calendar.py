"""The calendar's fake: mailboxes with events in memory, tagged as Graph tags them, answering as Graph does."""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ...core import mailbox_reasons
from ...core.operations import CalendarOp, OpKind, OpResult, Outcome
from ...core.render import TAG_BOOKING, TAG_ENVIRONMENT
from ...ports import MailboxProbe


@dataclass
class FakeMailbox:
    state: str = "ok"                      # ok | missing | denied | disabled
    time_zone: str = "UTC"
    events: dict[str, dict] = field(default_factory=dict)
    cancellations: list[str] = field(default_factory=list)


class FakeCalendar:
    """Exchange calendars in memory. `faults` maps a booking id (or '*') to outcomes to return once each."""

    def __init__(self) -> None:
        self.mailboxes: dict[str, FakeMailbox] = {}
        self.writes = 0
        self.faults: dict[str, list[Outcome]] = {}
        self.lose_answers: set[str] = set()       # applied, but the answer is lost (as a dropped connection)
        self.touched_untagged = 0
        self.lookup_faults: list[Exception] = []   # raised by find_tagged, one each, before it answers
        self.lagging_lookups = 0                   # find_tagged calls that do not see the newest events yet
        self.repeated_transaction = "400"          # a create repeating a transactionId: 400, 409 (errors) or 201 (the event)

    def mailbox(self, address: str, **kw: Any) -> FakeMailbox:
        return self.mailboxes.setdefault(address.lower(), FakeMailbox(**kw))

    def add_personal_event(self, address: str, start: datetime, end: datetime, subject: str = "Personal") -> str:
        event_id = "personal-" + uuid.uuid4().hex[:12]
        self.mailbox(address).events[event_id] = {"id": event_id, "subject": subject, "start": start, "end": end, "tags": {},
                                                  "attendees": []}
        return event_id

    async def test_mailbox(self, mailbox: str) -> MailboxProbe:
        m = self.mailboxes.get(mailbox.lower())
        if m is None or m.state != "ok":
            reason = self._refusal(m)
            return MailboxProbe(False, reason, mailbox_reasons.sentence(reason))
        return MailboxProbe(True, time_zone=m.time_zone)

    @staticmethod
    def _refusal(m: FakeMailbox | None) -> str:
        """The product's reason, as the Graph adapter names it (adapters/graph_errors.py)."""
        if m is not None and m.state == "denied":
            return mailbox_reasons.ACCESS_DENIED
        if m is not None and m.state == "disabled":
            return mailbox_reasons.MAILBOX_DISABLED
        return mailbox_reasons.MAILBOX_NOT_FOUND

    async def test_mailboxes(self, mailboxes: Sequence[str]) -> dict[str, MailboxProbe]:
        return {m: await self.test_mailbox(m) for m in mailboxes}

    async def list_events(self, mailbox: str, top: int = 50) -> list[dict[str, Any]]:
        m = self.mailboxes.get(mailbox.lower())
        events = sorted((m.events.values() if m else []), key=lambda e: (e["start"], e["id"]))[:top]
        return [{"id": e["id"], "subject": e["subject"], "start": e["start"].isoformat(), "end": e["end"].isoformat(),
                 "tagged": bool(e["tags"])} for e in events]

    async def find_tagged(self, mailbox: str, environment: str, booking_id: str) -> list[str]:
        if self.lookup_faults:                     # as the Graph adapter classifies a failed read
            raise self.lookup_faults.pop(0)
        if self.lagging_lookups > 0:
            self.lagging_lookups -= 1
            return []
        m = self.mailboxes.get(mailbox.lower())
        return [e["id"] for e in (m.events.values() if m else [])
                if e["tags"].get(TAG_BOOKING) == booking_id.lower() and e["tags"].get(TAG_ENVIRONMENT) == environment.lower()]

    async def apply(self, mailbox: str, ops: Sequence[CalendarOp]) -> dict[str, OpResult]:
        m = self.mailboxes.get(mailbox.lower())
        results: dict[str, OpResult] = {}
        for op in ops:
            if m is None or m.state != "ok":
                reason = self._refusal(m)
                status = 403 if reason == mailbox_reasons.ACCESS_DENIED else 404
                results[op.key] = OpResult(op.key, Outcome.MAILBOX_UNAVAILABLE, status=status, code=reason,
                                           message=mailbox_reasons.sentence(reason))
                continue
            queued = self.faults.get(op.key) or self.faults.get("*")
            if queued:
                outcome = queued.pop(0)
                results[op.key] = OpResult(op.key, outcome, status=503 if outcome == Outcome.TRANSIENT else 400)
                continue
            results[op.key] = self._apply_one(m, op)
            if op.key in self.lose_answers:
                self.lose_answers.discard(op.key)
                results[op.key] = OpResult(op.key, Outcome.TRANSIENT, status=503, code="network")
        return results

    def _apply_one(self, m: FakeMailbox, op: CalendarOp) -> OpResult:
        payload = op.payload or {}
        if op.kind == OpKind.CREATE:
            txn = payload["transactionId"]
            for e in m.events.values():
                if e.get("transactionId") == txn:
                    if self.repeated_transaction == "201":
                        return OpResult(op.key, Outcome.OK, e["id"], 201)
                    return OpResult(op.key, Outcome.ALREADY_CREATED, status=int(self.repeated_transaction),
                                    code="ErrorDuplicateTransactionId")
            event_id = "evt-" + uuid.uuid4().hex[:16]
            m.events[event_id] = self._event(event_id, payload)
            self.writes += 1
            return OpResult(op.key, Outcome.OK, event_id, 201)
        event = m.events.get(op.event_id or "")
        if event is None:
            return OpResult(op.key, Outcome.GONE, status=404, code="ErrorItemNotFound")
        if not event["tags"]:
            self.touched_untagged += 1
        self.writes += 1
        if op.kind == OpKind.UPDATE:
            kept = {"id": event["id"], "transactionId": event.get("transactionId"), "tags": event["tags"]}
            m.events[event["id"]] = {**self._event(event["id"], payload), **kept}
            return OpResult(op.key, Outcome.OK, event["id"], 200)
        if op.kind == OpKind.CANCEL:
            if not event["attendees"]:
                return OpResult(op.key, Outcome.INVALID, status=400, code="ErrorInvalidRequest")
            m.cancellations.append(event["id"])
        del m.events[event["id"]]
        return OpResult(op.key, Outcome.OK, event["id"], 202 if op.kind == OpKind.CANCEL else 204)

    @staticmethod
    def _event(event_id: str, payload: dict) -> dict:
        def dt(v: dict) -> datetime:
            return datetime.fromisoformat(v["dateTime"]).replace(tzinfo=UTC)
        tags = {p["id"]: p["value"] for p in payload.get("singleValueExtendedProperties", [])}
        return {"id": event_id, "subject": payload.get("subject"), "start": dt(payload["start"]), "end": dt(payload["end"]),
                "location": payload.get("location"), "body": payload.get("body", {}).get("content"), "tags": tags,
                "attendees": payload.get("attendees", []), "transactionId": payload.get("transactionId")}
