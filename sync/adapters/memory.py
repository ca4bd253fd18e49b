"""In-memory implementations of the ports, with the same semantics as the real ones (the contract suites in
tests/contract run against both). Used by unit tests, the Hypothesis state machine and dry runs."""
from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..core.domain import RESOURCE_TYPE_USER, Booking, Link, Mailbox, SkippedRow, SyncFilter
from ..core.operations import CalendarOp, OpKind, OpResult, Outcome
from ..core.render import TAG_BOOKING, TAG_ENVIRONMENT
from ..ports import (
    BookingSource,
    Calendar,
    ChangeSet,
    ChangeTokenExpired,
    CursorRow,
    MailboxCommit,
    MailboxLease,
    MailboxProbe,
    MailboxState,
    PendingRow,
    ReadResult,
    StateStore,
    StoreConflict,
    UserResource,
    has_pending_work,
    inline_fields,
    inline_free,
    inline_holders,
    with_inline,
)
from .tables import MAILBOX_LEASE, RELEASED, TRANSACTION_LIMIT, key, mailbox_to_entity, normalized


class InMemoryStateStore:
    def __init__(self) -> None:
        self.tables: dict[str, dict[tuple[str, str], dict]] = {}
        self._etags = itertools.count(1)
        self.writes = 0
        self.link_writes = 0

    # -- generic --------------------------------------------------------------------------------------------------
    def _t(self, name: str) -> dict[tuple[str, str], dict]:
        return self.tables.setdefault(name, {})

    def _put(self, table: str, pk: str, rk: str, row: dict, etag: str | None, must_be_new: bool = False) -> str:
        current = self._t(table).get((pk, rk))
        if etag is not None and (current is None or current["etag"] != etag):
            raise StoreConflict(f"{table} row changed concurrently")
        if etag is None and must_be_new and current is not None:
            raise StoreConflict(f"{table} row changed concurrently")
        new = self._new_etag()
        self._t(table)[(pk, rk)] = {**row, "etag": new}
        self.writes += 1
        if table == "links":
            self.link_writes += 1
        return new

    def _rows(self, table: str, pk: str) -> list[dict]:
        return [dict(v) for (p, _), v in sorted(self._t(table).items()) if p == pk]

    async def ensure_tables(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # -- mailboxes ------------------------------------------------------------------------------------------------------
    async def get_mailbox(self, address: str) -> Mailbox | None:
        row = self._t("mailboxes").get(("mailbox", key(address)))
        return row["mailbox"] if row else None

    async def get_mailbox_row(self, address: str) -> dict | None:
        row = self._t("mailboxes").get(("mailbox", key(address)))
        return None if row is None else self._entity(row)

    async def mailbox_entry(self, address: str) -> tuple[Mailbox, dict[str, Any]] | None:
        row = self._t("mailboxes").get(("mailbox", key(address)))
        return None if row is None else (row["mailbox"], self._entity(row))

    @staticmethod
    def _entity(row: dict) -> dict[str, Any]:
        """The row as Table Storage holds it: the mailbox's columns, the other fields, the ETag."""
        return {**mailbox_to_entity(row["mailbox"]), **row.get("fields", {}), "etag": row["etag"]}

    async def put_mailbox(self, mailbox: Mailbox, etag: str | None = None, **extra: Any) -> str | None:
        current = self._t("mailboxes").get(("mailbox", key(mailbox.address)))
        fields = {**(current or {}).get("fields", {}), **extra}
        return self._put("mailboxes", "mailbox", key(mailbox.address), {"mailbox": mailbox, "fields": fields},
                         etag if etag is not None else (current or {}).get("etag"))

    async def update_mailbox_fields(self, address: str, **fields: Any) -> None:
        current = self._t("mailboxes").get(("mailbox", key(address)))
        if current is not None:
            self._merge(current, fields)

    async def update_mailboxes_fields(self, addresses: Iterable[str], **fields: Any) -> None:
        for address in set(addresses):
            await self.update_mailbox_fields(address, **fields)

    async def list_mailboxes(self) -> list[dict[str, Any]]:
        return [self._entity(r) for r in self._rows("mailboxes", "mailbox")]

    async def telemetry_key(self) -> str:
        row = self._t("mailboxes").setdefault(("config", "telemetry"), {"key": uuid.uuid4().hex, "etag": "-"})
        return row["key"]

    async def global_filters(self) -> tuple[SyncFilter, ...]:
        return self._t("mailboxes").get(("config", "filters"), {}).get("filters", ())

    async def put_global_filters(self, filters: tuple[SyncFilter, ...]) -> None:
        self._put("mailboxes", "config", "filters", {"filters": tuple(filters)}, None)

    # -- links ------------------------------------------------------------------------------------------------------------
    async def links(self, mailbox: str) -> dict[str, Link]:
        return {r["link"].booking_id: replace(r["link"], etag=r["etag"]) for r in self._rows("links", key(mailbox))}

    async def get_link(self, mailbox: str, booking_id: str) -> Link | None:
        row = self._t("links").get((key(mailbox), key(booking_id)))
        return replace(row["link"], etag=row["etag"]) if row else None

    async def put_link(self, link: Link) -> Link:
        link = normalized(link)
        self._t("bookingindex")[(key(link.environment), f"{key(link.booking_id)}|{key(link.mailbox)}")] = {
            "booking_id": link.booking_id, "mailbox": link.mailbox, "etag": "-"}
        etag = self._put("links", key(link.mailbox), key(link.booking_id), {"link": replace(link, etag=None)}, link.etag, must_be_new=True)
        return replace(link, etag=etag)

    async def put_links(self, links: list[Link], *, index: bool = True) -> list[Link]:
        if any(self._changed(link) for link in links):   # all or nothing, as a Table transaction
            raise StoreConflict("links: a row in the transaction changed concurrently")
        return [await self.put_link(link) for link in links]

    async def delete_link(self, link: Link, *, unindex: bool = True) -> None:
        current = self._t("links").get((key(link.mailbox), key(link.booking_id)))
        if current is not None:
            if link.etag is not None and current["etag"] != link.etag:
                raise StoreConflict("links row changed concurrently")
            del self._t("links")[(key(link.mailbox), key(link.booking_id))]
            self.writes += 1
            self.link_writes += 1
        if unindex:
            self._t("bookingindex").pop((key(link.environment), f"{key(link.booking_id)}|{key(link.mailbox)}"), None)

    async def mailboxes_for_bookings(self, environment: str, booking_ids: Iterable[str]) -> dict[str, set[str]]:
        wanted = {b.lower() for b in booking_ids}
        found: dict[str, set[str]] = {}
        for r in self._rows("bookingindex", key(environment)):
            if r["booking_id"] in wanted:
                found.setdefault(r["booking_id"], set()).add(r["mailbox"])
        return found

    async def linked_bookings(self, environment: str) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for r in self._rows("bookingindex", key(environment)):
            found.setdefault(r["booking_id"], set()).add(r["mailbox"])
        return found

    # -- pending --------------------------------------------------------------------------------------------------------------
    async def add_pending(self, mailbox: str, observations: dict[str, dict[str, Any] | None]) -> None:
        await self.add_pending_batch({mailbox: observations})

    async def add_pending_batch(self, per_mailbox: Mapping[str, Mapping[str, dict[str, Any] | None]],
                                listed: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        now = datetime.now(UTC).isoformat()
        rows = {a.lower(): r for a, r in (listed or {}).items()}
        for address, row in rows.items():                 # acknowledged sets of mailboxes left alone are cleared
            if not per_mailbox.get(address) and row.get("inline_pending") and inline_free(row):
                self._merge_if_unchanged(address, row, {"inline_mark": "", "inline_pending": ""})
        for mailbox, observations in per_mailbox.items():
            if not observations:
                continue
            listed_row = rows.get(mailbox.lower())
            fields = inline_fields(uuid.uuid4().hex, observations, now) if listed_row is not None and inline_free(listed_row) else None
            if fields is not None and self._merge_if_unchanged(mailbox, listed_row or {}, fields):
                continue
            for booking_id, booking in observations.items():
                self._keep(mailbox, booking_id, booking, now, None)
            await self.update_mailbox_fields(mailbox, pending_mark=uuid.uuid4().hex)

    def _merge_if_unchanged(self, address: str, listed: Mapping[str, Any], fields: dict[str, Any]) -> bool:
        current = self._t("mailboxes").get(("mailbox", key(address)))
        if current is None or current["etag"] != listed.get("etag"):
            return False
        self._merge(current, fields)
        return True

    def _merge(self, mailbox_row: dict, fields: Mapping[str, Any]) -> None:
        mailbox_row["fields"] = {**mailbox_row.get("fields", {}), **fields}
        mailbox_row["etag"] = self._new_etag()            # a merge changes the row's ETag, as in Table Storage
        self.writes += 1

    def _new_etag(self) -> str:
        return f"W/\"{next(self._etags)}\""

    def _keep(self, mailbox: str, booking_id: str, booking: dict[str, Any] | None, at: str | None, etag: str | None,
              must_be_new: bool = False) -> None:
        copied = json.loads(json.dumps(booking)) if booking else None
        row = {"booking_id": booking_id, "deleted": booking is None, "booking": copied, "observed_at": at}
        self._put("pending", key(mailbox), key(booking_id), row, etag, must_be_new=must_be_new)

    async def pending(self, mailbox: str) -> list[PendingRow]:
        entry = await self.mailbox_entry(mailbox)
        return with_inline(self._state(mailbox), entry[1] if entry else None).pending

    def _pending_rows(self, mailbox: str) -> list[PendingRow]:
        return [{"booking_id": r["booking_id"], "deleted": r["deleted"], "booking": r["booking"], "etag": r["etag"],
                 "observed_at": r.get("observed_at")} for r in self._rows("pending", key(mailbox))]

    async def pending_mailboxes(self) -> set[str]:
        return {row["address"] for row in await self.list_mailboxes() if has_pending_work(row)}

    async def pending_holders(self, mailboxes: Iterable[str], booking_ids: Iterable[str],
                              listed: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, set[str]]:
        wanted = {b.lower() for b in booking_ids}
        mailboxes = sorted({m.lower() for m in mailboxes})
        if listed is None:
            listed = {r["address"]: r for r in await self.list_mailboxes()}
        found = inline_holders(mailboxes, wanted, listed) if wanted else {}
        for mailbox in mailboxes if wanted else []:
            for p in self._pending_rows(mailbox):
                if p["booking_id"] in wanted:
                    found.setdefault(p["booking_id"], set()).add(mailbox)
        return found

    async def clear_pending(self, mailbox: str, consumed: list[PendingRow]) -> None:
        for p in consumed:
            if not p["etag"]:                              # an inline observation that stands for no row
                continue
            current = self._t("pending").get((key(mailbox), key(p["booking_id"])))
            if current is not None and current["etag"] == p["etag"]:
                del self._t("pending")[(key(mailbox), key(p["booking_id"]))]
                self.writes += 1

    # -- one mailbox's sync (MailboxStateStore) -----------------------------------------------------------------------------
    async def mailbox_state(self, mailbox: str) -> MailboxState:
        return self._state(mailbox)

    def _state(self, mailbox: str) -> MailboxState:
        lease = self._t("leases").get(("lease", key(MAILBOX_LEASE + mailbox)))
        links = {r["link"].booking_id: replace(r["link"], etag=r["etag"]) for r in self._rows("links", key(mailbox))}
        return MailboxState(links, self._pending_rows(mailbox),
                            {b for (p, b) in self._t("outcomes") if p == key(mailbox)},
                            MailboxLease(lease["holder"], lease["expires"], lease["etag"], lease.get("inline_done", "")) if lease else None)

    async def claim_mailbox(self, mailbox: str, holder: str, now: datetime, ttl_s: float, seen: MailboxLease | None,
                            intents: Sequence[Link] = ()) -> tuple[MailboxLease, list[Link]] | None:
        if (seen is not None and seen.held_by_other(holder, now)) or not self._lease_as_read(mailbox, seen):
            return None
        if any(self._changed(link) for link in intents):
            return None
        expires = now + timedelta(seconds=ttl_s)
        inline_done = seen.inline_done if seen else ""
        etag = self._put_lease(mailbox, holder, expires, inline_done, seen.etag if seen else None)
        return MailboxLease(holder, expires, etag, inline_done), await self.put_links(list(intents))

    def _put_lease(self, mailbox: str, holder: str, expires: datetime, inline_done: str, etag: str | None) -> str:
        """A mailbox's lease row as every write makes it (holder, expiry, the last inline set applied), matched by
        `etag` or created when there is none, as the Table adapter's conditioned writes are."""
        row = {"holder": holder, "expires": expires, "inline_done": inline_done}
        return self._put("leases", "lease", key(MAILBOX_LEASE + mailbox), row, etag, must_be_new=etag is None)

    def _lease_as_read(self, mailbox: str, seen: MailboxLease | None) -> bool:
        """Whether the mailbox's lease row is the one read (None: there was none), as an ETag condition checks."""
        return (self._t("leases").get(("lease", key(MAILBOX_LEASE + mailbox))) or {}).get("etag") == (seen.etag if seen else None)

    def _links_changed(self, commit: MailboxCommit) -> bool:
        return any(self._changed(link) for link in commit.puts) or any(link.etag and self._changed(link) for link in commit.deletes)

    def _changed(self, link: Link) -> bool:
        """Whether a write of this link would fail its ETag condition (no ETag: the row must not exist)."""
        current = self._t("links").get((key(link.mailbox), key(link.booking_id)))
        return (current is not None) if link.etag is None else (current is None or current["etag"] != link.etag)

    async def renew_mailbox(self, mailbox: str, lease: MailboxLease, now: datetime, ttl_s: float) -> MailboxLease | None:
        current = self._t("leases").get(("lease", key(MAILBOX_LEASE + mailbox)))
        if current is None or current["etag"] != lease.etag:
            return None
        expires = now + timedelta(seconds=ttl_s)
        return MailboxLease(lease.holder, expires, self._put_lease(mailbox, lease.holder, expires, lease.inline_done, lease.etag),
                            lease.inline_done)

    async def commit_mailbox(self, mailbox: str, commit: MailboxCommit) -> bool:
        if self._links_changed(commit):
            raise StoreConflict("links: a row in the transaction changed concurrently")     # all or nothing, as the transaction
        for link in commit.puts:
            await self.put_link(link)
        for link in commit.deletes:
            await self.delete_link(link, unindex=link in commit.unindex)
        for p in commit.kept_inline:                     # each only if no newer observation came (tolerant, as the rows')
            try:
                self._keep(mailbox, p["booking_id"], p["booking"], p.get("observed_at"), p["etag"], must_be_new=p["etag"] is None)
            except StoreConflict:
                pass
        await self.clear_pending(mailbox, commit.consumed)
        await self.record_outcomes(mailbox, commit.outcomes)
        lease = commit.release
        current = self._t("leases").get(("lease", key(MAILBOX_LEASE + mailbox)))
        if lease is not None and current is not None and current["etag"] == lease.etag:
            self._put_lease(mailbox, "", RELEASED, commit.inline_done or lease.inline_done, lease.etag)
            return True
        return False

    async def commit_unclaimed(self, mailbox: str, commit: MailboxCommit, seen: MailboxLease | None, holder: str, now: datetime) -> bool:
        if commit.unindex or commit.release is not None:
            raise ValueError("an unclaimed commit neither removes index rows nor releases a lease it holds")
        errors_gone = [b for b, o in commit.outcomes.items() if not o.get("error") and b.lower() in commit.known_errors]
        recorded = sum(1 for o in commit.outcomes.values() if o.get("error")) + len(errors_gone)
        rows = [p for p in commit.consumed if p["etag"]]
        operations = len(commit.puts) + len(commit.deletes) + len(rows) + len(commit.kept_inline) + recorded + 1
        pending = self._t("pending")
        if (operations > TRANSACTION_LIMIT or (seen is not None and seen.held_by_other(holder, now))
                or not self._lease_as_read(mailbox, seen) or self._links_changed(commit)
                or any((pending.get((key(mailbox), key(p["booking_id"]))) or {}).get("etag") != p["etag"]
                       for p in [*rows, *commit.kept_inline])
                or any((key(mailbox), key(b)) not in self._t("outcomes") for b in errors_gone)):
            return False                                  # all or nothing, as the transaction
        etag = seen.etag if seen is not None else None
        self._put_lease(mailbox, "", RELEASED, commit.inline_done or (seen.inline_done if seen else ""), etag)
        await self.commit_mailbox(mailbox, commit)
        return True

    async def unindex_deleted(self, environment: str, holders: Mapping[str, set[str]]) -> None:
        for booking_id, mailboxes in holders.items():
            for mailbox in mailboxes:
                self._t("bookingindex").pop((key(environment), f"{key(booking_id)}|{key(mailbox)}"), None)

    # -- outcomes, cursors, runs, leases ------------------------------------------------------------------------------------------
    async def record_outcomes(self, mailbox: str, outcomes: dict[str, dict[str, Any]]) -> None:
        for booking_id, outcome in outcomes.items():
            if outcome.get("error"):
                self._put("outcomes", key(mailbox), key(booking_id), {"booking_id": booking_id, **outcome}, None)
            elif self._t("outcomes").pop((key(mailbox), key(booking_id)), None) is not None:
                self.writes += 1

    async def outcome(self, mailbox: str, booking_id: str) -> dict[str, Any] | None:
        row = self._t("outcomes").get((key(mailbox), key(booking_id)))
        return dict(row) if row else None

    async def get_cursor(self, environment: str) -> CursorRow | None:
        row = self._t("cursors").get(("cursor", key(environment)))
        return None if row is None else {"delta_links": row["delta_links"], "horizon": row["horizon"], "etag": row["etag"]}

    async def put_cursor(self, environment: str, delta_links: dict[str, str], horizon: datetime, etag: str | None) -> None:
        self._put("cursors", "cursor", key(environment), {"delta_links": dict(delta_links), "horizon": horizon}, etag, must_be_new=True)


    async def record_run(self, run: dict[str, Any]) -> None:
        self._put("runs", "run", f"{run['started']}_{run['id']}", dict(run), None)

    async def recent_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        rows = sorted(self._rows("runs", "run"), key=lambda r: r["started"], reverse=True)
        return [{k: v for k, v in r.items() if k != "etag"} for r in rows[:limit]]

    async def acquire_lease(self, name: str, holder: str, now: datetime, ttl_s: float) -> bool:
        row = self._t("leases").get(("lease", key(name)))
        if row is not None and row["holder"] and row["expires"] > now and row["holder"] != holder:
            return False
        self._put("leases", "lease", key(name), {"holder": holder, "expires": now + timedelta(seconds=ttl_s), **_carried(row)},
                  row["etag"] if row else None)
        return True

    async def record_audit(self, entry: dict[str, Any]) -> None:
        self._put("audit", "audit", f"{len(self._t('audit')):013d}", {"entry": dict(entry)}, None)

    async def recent_audit(self, limit: int = 50) -> list[dict[str, Any]]:
        return [r["entry"] for r in self._rows("audit", "audit")][::-1][:limit]

    async def request_sync(self, mailbox: str, now: datetime, stale_after_s: float) -> int | None:
        row = self._t("wake").get(("wake", key(mailbox)))
        if row is not None and row["running"] and row["since"] > now - timedelta(seconds=stale_after_s):
            row["dirty"] = True
            return None
        generation = (row["generation"] if row else 0) + 1
        self._t("wake")[("wake", key(mailbox))] = {"generation": generation, "running": True, "dirty": False, "since": now, "etag": "-"}
        return generation

    async def finish_sync(self, mailbox: str, generation: int, now: datetime, *, release: bool = False) -> bool:
        row = self._t("wake").get(("wake", key(mailbox)))
        if row is None or row["generation"] != generation or not row["running"]:
            return True
        again = row["dirty"] and not release
        row.update(running=again, dirty=False, since=now)
        return not again

    async def renew_lease(self, name: str, holder: str, now: datetime, ttl_s: float) -> bool:
        row = self._t("leases").get(("lease", key(name)))
        if row is None or row["holder"] != holder:
            return False
        self._put("leases", "lease", key(name), {"holder": holder, "expires": now + timedelta(seconds=ttl_s), **_carried(row)}, row["etag"])
        return True

    async def release_lease(self, name: str, holder: str) -> None:
        row = self._t("leases").get(("lease", key(name)))
        if row is not None and row["holder"] == holder:
            if name.startswith(MAILBOX_LEASE):             # as in Table Storage: the row stays, its holder cleared
                self._put("leases", "lease", key(name), {"holder": "", "expires": RELEASED, **_carried(row)}, row["etag"])
            else:
                del self._t("leases")[("lease", key(name))]


def _carried(lease_row: dict | None) -> dict[str, Any]:
    """What every write of a mailbox's lease row keeps: the last inline set applied (PendingStore)."""
    return {"inline_done": lease_row["inline_done"]} if lease_row and "inline_done" in lease_row else {}


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
        if m is None or m.state == "missing":
            return MailboxProbe(False, "mailbox_not_found", "Exchange Online has no mailbox for this address.")
        if m.state == "denied":
            return MailboxProbe(False, "access_denied", "Access denied by the app's Exchange RBAC scope.")
        if m.state == "disabled":
            return MailboxProbe(False, "mailbox_disabled", "The mailbox is inactive.")
        return MailboxProbe(True, time_zone=m.time_zone)

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
                results[op.key] = OpResult(op.key, Outcome.MAILBOX_UNAVAILABLE, status=404 if m is None or m.state != "denied" else 403)
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


class FakeBookingSource:
    """Dataverse in memory, with change tracking (versions and tombstones) and token expiry."""

    def __init__(self, environment: str):
        self.environment = environment.lower()
        self.bookings: dict[str, Booking] = {}
        self.skipped: dict[str, SkippedRow] = {}
        self._versions: dict[str, int] = {}
        self._tombstones: list[tuple[int, str]] = []
        self._version = 0
        self.min_valid = 0
        self.requests = 0

    def _bump(self) -> int:
        self._version += 1
        return self._version

    def put(self, booking: Booking) -> None:
        self.bookings[booking.id] = booking
        self._versions[booking.id] = self._bump()

    def delete(self, booking_id: str) -> None:
        if self.bookings.pop(booking_id, None) is not None:
            self._tombstones.append((self._bump(), booking_id))

    def expire_tokens(self) -> None:
        self.min_valid = self._bump()

    async def read_window(self, start: datetime, end: datetime) -> ReadResult:
        self.requests += 1
        return ReadResult([b for b in self.bookings.values() if b.start < end and b.end > start], list(self.skipped.values()))

    async def read_window_for(self, start: datetime, end: datetime, mailboxes: Iterable[str]) -> ReadResult:
        wanted = {m.lower() for m in mailboxes}
        window = await self.read_window(start, end)
        return ReadResult([b for b in window.bookings if (b.mailbox or "").lower() in wanted], [])

    async def read_bookings(self, ids: Iterable[str]) -> ReadResult:
        self.requests += 1
        ids = set(ids)
        return ReadResult([b for i, b in self.bookings.items() if i in ids], [s for i, s in self.skipped.items() if i in ids])

    async def read_bookings_for_work_orders(self, work_order_ids: Iterable[str], start: datetime, end: datetime) -> ReadResult:
        self.requests += 1
        ids = set(work_order_ids)
        return ReadResult([b for b in self.bookings.values()
                           if b.work_order and b.work_order.id in ids and b.start < end and b.end > start])

    async def filter_values(self) -> dict[str, set[str]]:
        self.requests += 1
        work_orders = [b.work_order for b in self.bookings.values() if b.work_order]
        return {"booking_statuses": {b.status.name for b in self.bookings.values() if b.status.name},
                "work_order_types": {w.work_order_type for w in work_orders if w.work_order_type},
                "territories": {w.territory for w in work_orders if w.territory}}

    async def list_user_resources(self) -> list[UserResource]:
        """The user resources the bookings name (discovery, M3)."""
        self.requests += 1
        found = {(b.resource_id or "", b.mailbox) for b in self.bookings.values() if b.resource_type == RESOURCE_TYPE_USER}
        return [UserResource(resource_id, None, address, False) for resource_id, address in sorted(found, key=str)]

    async def read_booking(self, booking_id: str) -> Booking | SkippedRow | None:
        self.requests += 1
        return self.bookings.get(booking_id) or self.skipped.get(booking_id)

    async def read_cycle(self, delta_links: dict[str, str], slice_start: datetime | None, slice_end: datetime) -> tuple[ChangeSet,
                                                                                                                        ReadResult]:
        changes = await self.read_changes(delta_links)
        entered = await self.read_window(slice_start, slice_end) if slice_start is not None and slice_end > slice_start else ReadResult()
        self.requests -= 1 if slice_start is not None and slice_end > slice_start else 0    # one batched request, as the real source
        return changes, entered

    async def read_changes(self, delta_links: dict[str, str] | None) -> ChangeSet:
        self.requests += 1
        changes = ChangeSet(delta_links={"bookableresourcebookings": str(self._version), "msdyn_workorders": str(self._version)})
        if not delta_links:
            return changes
        since = int(delta_links["bookableresourcebookings"])
        if since < self.min_valid:
            raise ChangeTokenExpired("Version stamp associated with the client has expired. Please perform a full sync.")
        changes.changed_bookings = {i for i, v in self._versions.items() if v > since and i in self.bookings}
        changes.deleted_bookings = {i for v, i in self._tombstones if v > since and i not in self.bookings}
        return changes


if TYPE_CHECKING:   # mypy holds the fakes to the ports they stand in for
    _state: StateStore = InMemoryStateStore()
    _calendar: Calendar = FakeCalendar()
    _source: BookingSource = FakeBookingSource("")
