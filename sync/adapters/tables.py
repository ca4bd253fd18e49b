"""StateStore on Azure Table Storage (azure-data-tables, async).

Tables (each name prefixed with STATE_TABLE_PREFIX):
- mailboxes     PK "mailbox"            RK mailbox            status, binding, filters, last cycle (M1-M6, G2)
- links         PK mailbox              RK booking            event id, generation, fingerprints, event time, state
- bookingindex  PK environment          RK booking|mailbox    which mailboxes hold a link for a booking (routing deletes and reassignments)
- pending       PK mailbox              RK booking            observations waiting for the mailbox's next sync
- cursors       PK "cursor"             RK environment        delta links and the window horizon already read (T4)
- outcomes      PK mailbox              RK booking            the last write or error per booking (G1)
- runs          PK "run"                RK inverted time      one row per cycle
- leases        PK "lease"              RK name               the singleton-cycle lease (T1)

Keys are escaped so no id or address can break them (Table keys may not hold / \\ # ? or control
characters). Updates carry the row's ETag: a lost race raises StoreConflict instead of overwriting.
Transactions are chunked to 100 entities of one partition.
"""
from __future__ import annotations

import contextvars
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from ..core.domain import Link, LinkState, Mailbox, MailboxTestStatus, SyncFilter
from ..core.serialize import filter_from_dict, filter_to_dict
from ..ports import CursorRow, PendingRow, StoreConflict
from . import table_wire

# Table requests made in the current context (an activity sets a fresh counter): what one mailbox's sync costs.
ROUND_TRIPS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("table_round_trips", default=None)


def count_round_trips() -> list[int]:
    """Starts counting this context's Table requests; the returned one-item list holds the count."""
    counter = [0]
    ROUND_TRIPS.set(counter)
    return counter


def _counted(_request: Any) -> None:
    counter = ROUND_TRIPS.get()
    if counter is not None:
        counter[0] += 1


TABLES = ("mailboxes", "links", "bookingindex", "pending", "cursors", "outcomes", "runs", "leases", "audit")
TRANSACTION_LIMIT = 100
WAKE_ATTEMPTS = 20
KEY_SAFE = "@.-_+!$&'()*,;=:~|"


def key(value: str) -> str:
    """A Table key for any string: lower case, and every character Table keys refuse percent-escaped."""
    return quote(value.lower(), safe=KEY_SAFE)


def unkey(value: str) -> str:
    return unquote(value)


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat() if dt else None


def _dt(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value))


def _required_dt(value: Any) -> datetime:
    dt = _dt(value)
    if dt is None:
        raise ValueError("a required time is missing from a stored row")
    return dt


def _newest_first(at: datetime) -> str:
    """A row key that sorts newer times first, to the microsecond: two operations in one millisecond keep their order.
    (Keys written with millisecond resolution share the first 13 digits, so old and new rows still sort together.)"""
    return f"{(10**16 - int(at.timestamp() * 1_000_000)):016d}"


def _etag(entity: Any) -> str | None:
    return (getattr(entity, "metadata", None) or {}).get("etag")


def normalized(link: Link) -> Link:
    """Ids and addresses compare case-insensitively everywhere; links store them lower case."""
    from dataclasses import replace
    return replace(link, booking_id=link.booking_id.lower(), mailbox=link.mailbox.lower(), environment=link.environment.lower())


def link_to_entity(link: Link) -> dict:
    return {"PartitionKey": key(link.mailbox), "RowKey": key(link.booking_id), "booking_id": link.booking_id.lower(),
            "mailbox": link.mailbox.lower(), "environment": link.environment.lower(), "event_id": link.event_id or "",
            "generation": link.generation, "trigger_fp": link.trigger_fingerprint, "content_fp": link.content_fingerprint,
            "event_start": _iso(link.event_start), "event_end": _iso(link.event_end), "state": link.state.value,
            "has_attendees": link.has_attendees, "written_at": _iso(link.written_at)}


def link_from_entity(e: Any) -> Link:
    return Link(booking_id=e["booking_id"], mailbox=e["mailbox"], environment=e["environment"], event_id=e.get("event_id") or None,
                generation=int(e["generation"]), trigger_fingerprint=e["trigger_fp"], content_fingerprint=e["content_fp"],
                event_start=_required_dt(e["event_start"]), event_end=_required_dt(e["event_end"]), state=LinkState(e["state"]),
                has_attendees=bool(e.get("has_attendees")), written_at=_dt(e.get("written_at")), etag=_etag(e))


def mailbox_to_entity(m: Mailbox, extra: dict | None = None) -> dict:
    return {"PartitionKey": "mailbox", "RowKey": key(m.address), "address": m.address.lower(), "environment": m.environment or "",
            "sync_method": m.sync_method, "approved": m.approved, "test_status": m.test_status.value, "test_reason": m.test_reason or "",
            "enabled": m.enabled, "time_zone": m.time_zone, "filters": json.dumps([filter_to_dict(f) for f in m.filters]),
            **(extra or {})}


def mailbox_from_entity(e: Any) -> Mailbox:
    return Mailbox(address=e["address"], environment=e.get("environment") or None, sync_method=e.get("sync_method", "server-side"),
                   approved=bool(e.get("approved")), test_status=MailboxTestStatus(e.get("test_status", "not_tested")),
                   test_reason=e.get("test_reason") or None, enabled=bool(e.get("enabled", True)), time_zone=e.get("time_zone") or "UTC",
                   filters=tuple(filter_from_dict(f) for f in json.loads(e.get("filters") or "[]")))


class TableStateStore:
    """Async; create it inside the event loop that uses it."""

    def __init__(self, service: TableServiceClient, prefix: str):
        self.service, self.prefix = service, prefix
        self.writes = 0
        self._tables: dict[str, TableClient] = {name: service.get_table_client(prefix + name) for name in TABLES}
        self._leases: dict[tuple[str, str], str | None] = {}

    @classmethod
    def from_settings(cls, connection_string: str | None, endpoint: str | None, credential: Any, prefix: str) -> TableStateStore:
        if connection_string:
            service = TableServiceClient.from_connection_string(connection_string, raw_request_hook=_counted)
        elif endpoint:
            service = TableServiceClient(endpoint=endpoint, credential=credential, raw_request_hook=_counted)
        else:
            raise ValueError("the state store needs a Table endpoint or a connection string")
        return cls(service, prefix)

    async def ensure_tables(self) -> None:
        for name in TABLES:
            try:
                await self.service.create_table(self.prefix + name)
            except ResourceExistsError:
                pass

    async def close(self) -> None:
        for table in self._tables.values():
            await table.close()
        await self.service.close()

    async def __aenter__(self) -> TableStateStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def table(self, name: str) -> TableClient:
        return self._tables[name]

    # -- generic helpers ----------------------------------------------------------------------------------
    async def _get(self, table: str, pk: str, rk: str) -> Any | None:
        return await table_wire.get(self.table(table), pk, rk)

    async def _query(self, table: str, pk: str, extra: str = "", params: dict | None = None) -> AsyncIterator[Any]:
        flt = "PartitionKey eq @pk" + (f" and {extra}" if extra else "")
        async for entity in table_wire.query(self.table(table), flt, {"pk": pk, **(params or {})}):
            yield entity

    async def _write(self, table: str, entity: dict, etag: str | None, create_if_missing: bool = True) -> str | None:
        """Insert (no etag) or replace guarded by the etag; returns the new etag."""
        client = self.table(table)
        try:
            if etag:
                meta = await client.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified)
            elif create_if_missing:
                meta = await client.create_entity(entity)
            else:
                meta = await client.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except (ResourceModifiedError, ResourceExistsError) as exc:
            raise StoreConflict(f"{table} row changed concurrently") from exc
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise StoreConflict(f"{table} row changed concurrently") from exc
            raise
        self.writes += 1
        return (meta or {}).get("etag")

    async def _delete(self, table: str, pk: str, rk: str, etag: str | None = None) -> None:
        try:
            if etag:
                await self.table(table).delete_entity(pk, rk, etag=etag, match_condition=MatchConditions.IfNotModified)
            else:
                await self.table(table).delete_entity(pk, rk)
            self.writes += 1
        except ResourceNotFoundError:
            pass
        except (ResourceModifiedError, HttpResponseError) as exc:
            if getattr(exc, "status_code", 412) == 412:
                raise StoreConflict(f"{table} row changed concurrently") from exc
            raise

    async def _transact(self, table: str, operations: list[tuple]) -> list[str | None]:
        """Operations of one partition, committed in transactions of at most 100 entities; the new ETag of each."""
        etags: list[str | None] = []
        for i in range(0, len(operations), TRANSACTION_LIMIT):
            chunk = operations[i:i + TRANSACTION_LIMIT]
            try:
                answers = await table_wire.submit(self.table(table), chunk)
            except (TableTransactionError, table_wire.TransactionFailed) as exc:
                if exc.status_code == 412 or "UpdateConditionNotSatisfied" in str(exc):
                    raise StoreConflict(f"{table}: a row in the transaction changed concurrently") from exc
                raise
            etags += [a.etag for a in answers]
            self.writes += len(chunk)
        return etags

    # -- mailboxes --------------------------------------------------------------------------------------------
    async def get_mailbox(self, address: str) -> Mailbox | None:
        entity = await self._get("mailboxes", "mailbox", key(address))
        return mailbox_from_entity(entity) if entity else None

    async def get_mailbox_row(self, address: str) -> dict | None:
        entity = await self._get("mailboxes", "mailbox", key(address))
        if entity is None:
            return None
        return {**dict(entity), "etag": _etag(entity)}

    async def put_mailbox(self, mailbox: Mailbox, etag: str | None = None, **extra: Any) -> str | None:
        current = await self._get("mailboxes", "mailbox", key(mailbox.address)) if etag is None else None
        keep = {k: current[k] for k in current if k not in mailbox_to_entity(mailbox)} if current is not None else {}
        entity = mailbox_to_entity(mailbox, {**keep, **extra})
        return await self._write("mailboxes", entity, etag or (_etag(current) if current is not None else None))

    async def update_mailbox_fields(self, address: str, **fields: Any) -> None:
        """Merge a few fields (last cycle outcome, counts) without touching the rest."""
        entity = {"PartitionKey": "mailbox", "RowKey": key(address), **fields}
        await self.table("mailboxes").upsert_entity(entity, mode=UpdateMode.MERGE)
        self.writes += 1

    async def list_mailboxes(self) -> list[dict[str, Any]]:
        return [{**dict(e), "etag": _etag(e)} async for e in self._query("mailboxes", "mailbox")]

    async def telemetry_key(self) -> str:
        """The per-deployment key of mailbox_ref pseudonyms; made once, kept with the state."""
        entity = await self._get("mailboxes", "config", "telemetry")
        if entity is not None:
            return entity["key"]
        import secrets
        try:
            await self.table("mailboxes").create_entity({"PartitionKey": "config", "RowKey": "telemetry", "key": secrets.token_hex(32)})
        except ResourceExistsError:
            pass
        made = await self._get("mailboxes", "config", "telemetry")
        if made is None:
            raise RuntimeError("the telemetry key row could not be read back")
        return str(made["key"])

    async def global_filters(self) -> tuple[SyncFilter, ...]:
        entity = await self._get("mailboxes", "config", "filters")
        return tuple(filter_from_dict(f) for f in json.loads(entity["filters"])) if entity else ()

    async def put_global_filters(self, filters: tuple[SyncFilter, ...]) -> None:
        entity = {"PartitionKey": "config", "RowKey": "filters", "filters": json.dumps([filter_to_dict(f) for f in filters])}
        await self.table("mailboxes").upsert_entity(entity, mode=UpdateMode.REPLACE)
        self.writes += 1

    # -- links --------------------------------------------------------------------------------------------------
    async def links(self, mailbox: str) -> dict[str, Link]:
        return {link.booking_id: link for link in [link_from_entity(e) async for e in self._query("links", key(mailbox))]}

    async def get_link(self, mailbox: str, booking_id: str) -> Link | None:
        entity = await self._get("links", key(mailbox), key(booking_id))
        return link_from_entity(entity) if entity else None

    async def put_link(self, link: Link) -> Link:
        # The index row goes first: an index row without a link only costs a skipped observation; a link
        # without its index row would miss a delete.
        await self.table("bookingindex").upsert_entity(self._index_entity(link), mode=UpdateMode.REPLACE)
        self.writes += 1
        etag = await self._write("links", link_to_entity(link), link.etag)
        return _with_etag(link, etag)

    async def put_links(self, links: list[Link], *, index: bool = True) -> list[Link]:
        """Several links of one mailbox: index rows first (unless the caller wrote them already), then the links,
        in transactions of <= 100; returns them with the ETags their transaction answered."""
        if not links:
            return []
        if index:
            by_env: dict[str, list[tuple]] = {}
            for link in links:
                by_env.setdefault(key(link.environment), []).append(("upsert", self._index_entity(link), {"mode": UpdateMode.REPLACE}))
            for ops in by_env.values():
                await self._transact("bookingindex", ops)
        partitions: dict[str, list[tuple[int, tuple]]] = {}
        for position, link in enumerate(links):
            entity = link_to_entity(link)
            op = (("update", entity, {"mode": UpdateMode.REPLACE, "etag": link.etag, "match_condition": MatchConditions.IfNotModified})
                  if link.etag else ("create", entity))
            partitions.setdefault(entity["PartitionKey"], []).append((position, op))
        written = list(links)
        for chunk in partitions.values():
            etags = await self._transact("links", [op for _, op in chunk])
            for (position, _), etag in zip(chunk, etags, strict=True):
                written[position] = _with_etag(links[position], etag)
        return written

    async def delete_link(self, link: Link) -> None:
        await self._delete("links", key(link.mailbox), key(link.booking_id), link.etag)
        await self._delete("bookingindex", key(link.environment), f"{key(link.booking_id)}|{key(link.mailbox)}")

    @staticmethod
    def _index_entity(link: Link) -> dict:
        return {"PartitionKey": key(link.environment), "RowKey": f"{key(link.booking_id)}|{key(link.mailbox)}",
                "booking_id": link.booking_id.lower(), "mailbox": link.mailbox.lower()}

    async def mailboxes_for_bookings(self, environment: str, booking_ids: Iterable[str]) -> dict[str, set[str]]:
        """booking id -> mailboxes holding a link for it, in one partition scan per 50 ids."""
        ids = sorted({b.lower() for b in booking_ids})
        found: dict[str, set[str]] = {}
        if not ids:
            return found
        if len(ids) > 200:
            async for e in self._query("bookingindex", key(environment)):
                if e["booking_id"] in set(ids):
                    found.setdefault(e["booking_id"], set()).add(e["mailbox"])
            return found
        for booking_id in ids:
            low, high = f"{key(booking_id)}|", f"{key(booking_id)}}}"
            async for e in self._query("bookingindex", key(environment), "RowKey ge @low and RowKey lt @high", {"low": low, "high": high}):
                found.setdefault(booking_id, set()).add(e["mailbox"])
        return found

    async def linked_bookings(self, environment: str) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        async for e in self._query("bookingindex", key(environment)):
            found.setdefault(e["booking_id"], set()).add(e["mailbox"])
        return found

    # -- pending observations -----------------------------------------------------------------------------------
    async def add_pending(self, mailbox: str, observations: dict[str, dict[str, Any] | None]) -> None:
        """booking id -> booking dict (observed) or None (deleted); the latest observation wins."""
        now = _iso(datetime.now(UTC))
        ops = [("upsert", {"PartitionKey": key(mailbox), "RowKey": key(booking_id), "booking_id": booking_id,
                           "deleted": booking is None, "booking": json.dumps(booking) if booking else "", "observed_at": now},
                {"mode": UpdateMode.REPLACE})
               for booking_id, booking in sorted(observations.items())]
        await self._transact("pending", ops)

    async def pending(self, mailbox: str) -> list[PendingRow]:
        return [{"booking_id": e["booking_id"], "deleted": bool(e["deleted"]),
                 "booking": json.loads(e["booking"]) if e.get("booking") else None, "etag": _etag(e)}
                async for e in self._query("pending", key(mailbox))]

    async def pending_mailboxes(self) -> set[str]:
        found = set()
        async for e in self.table("pending").list_entities(select=["PartitionKey"]):
            found.add(unkey(e["PartitionKey"]))
        return found

    async def clear_pending(self, mailbox: str, consumed: list[PendingRow]) -> None:
        """Remove observations the sync handled, unless a newer one replaced them meanwhile (ETag)."""
        ops = [("delete", {"PartitionKey": key(mailbox), "RowKey": key(p["booking_id"])},
                {"etag": p["etag"], "match_condition": MatchConditions.IfNotModified}) for p in consumed]
        try:
            await self._transact("pending", ops)
        except StoreConflict:
            for p in consumed:  # one was replaced: delete the others one by one
                try:
                    await self._delete("pending", key(mailbox), key(p["booking_id"]), p["etag"])
                except StoreConflict:
                    pass

    # -- outcomes (for diagnose) -------------------------------------------------------------------------------------
    async def record_outcomes(self, mailbox: str, outcomes: dict[str, dict[str, Any]]) -> None:
        """Keep the last error per booking (for diagnose); a booking that succeeds loses its old error."""
        failed = {b: o for b, o in outcomes.items() if o.get("error")}
        stale = [e["booking_id"] async for e in self._query("outcomes", key(mailbox))
                 if e["booking_id"] in outcomes and e["booking_id"] not in failed] if len(failed) < len(outcomes) else []
        now = _iso(datetime.now(UTC))
        ops: list[tuple[Any, ...]] = [("upsert", {"PartitionKey": key(mailbox), "RowKey": key(booking_id), "booking_id": booking_id,
                                                  "at": now,
                           **{k: ("" if v is None else v) for k, v in outcome.items()}}, {"mode": UpdateMode.REPLACE})
               for booking_id, outcome in sorted(failed.items())]
        ops += [("delete", {"PartitionKey": key(mailbox), "RowKey": key(booking_id)}) for booking_id in stale]
        await self._transact("outcomes", ops)

    async def outcome(self, mailbox: str, booking_id: str) -> dict[str, Any] | None:
        entity = await self._get("outcomes", key(mailbox), key(booking_id))
        return dict(entity) if entity else None

    # -- cursors ------------------------------------------------------------------------------------------------------
    async def get_cursor(self, environment: str) -> CursorRow | None:
        entity = await self._get("cursors", "cursor", key(environment))
        if entity is None:
            return None
        return {"delta_links": json.loads(entity.get("delta_links") or "{}"), "horizon": _dt(entity.get("horizon")),
                "etag": _etag(entity)}

    async def put_cursor(self, environment: str, delta_links: dict[str, str], horizon: datetime, etag: str | None) -> None:
        entity = {"PartitionKey": "cursor", "RowKey": key(environment), "environment": environment.lower(),
                  "delta_links": json.dumps(delta_links), "horizon": _iso(horizon)}
        await self._write("cursors", entity, etag)


    # -- runs and leases --------------------------------------------------------------------------------------------------
    async def record_run(self, run: dict[str, Any]) -> None:
        started = _required_dt(run["started"])
        inverted = _newest_first(started)
        entity = {"PartitionKey": "run", "RowKey": f"{inverted}_{key(run['id'])}",
                  **{k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in run.items()}}
        await self.table("runs").upsert_entity(entity, mode=UpdateMode.REPLACE)
        self.writes += 1

    async def recent_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        out = []
        async for e in self._query("runs", "run"):
            # nested values were stored as JSON text (Table columns are flat); they come back as objects
            out.append({k: (json.loads(v) if isinstance(v, str) and v[:1] in ("[", "{") else v) for k, v in dict(e).items()
                        if k not in ("PartitionKey", "RowKey")})
            if len(out) >= limit:
                break
        return out

    async def acquire_lease(self, name: str, holder: str, now: datetime, ttl_s: float) -> bool:
        """Take the named lease if it is free or expired; ETag-guarded, so two callers never both win."""
        row = {"PartitionKey": "lease", "RowKey": key(name), "holder": holder,
               "expires": datetime.fromtimestamp(now.timestamp() + ttl_s, UTC).isoformat()}
        try:
            self._leases[(name, holder)] = await self._write("leases", row, None)        # free: one insert
            return True
        except StoreConflict:
            pass
        entity = await self._get("leases", "lease", key(name))
        if entity is not None and _required_dt(entity["expires"]) > now and entity["holder"] != holder:
            return False
        try:
            self._leases[(name, holder)] = await self._write("leases", row, _etag(entity) if entity is not None else None)
            return True
        except StoreConflict:
            return False

    async def renew_lease(self, name: str, holder: str, now: datetime, ttl_s: float) -> bool:
        entity = await self._get("leases", "lease", key(name))
        if entity is None or entity["holder"] != holder:
            return False
        row = {"PartitionKey": "lease", "RowKey": key(name), "holder": holder,
               "expires": datetime.fromtimestamp(now.timestamp() + ttl_s, UTC).isoformat()}
        try:
            self._leases[(name, holder)] = await self._write("leases", row, _etag(entity))
        except StoreConflict:
            return False
        return True

    async def release_lease(self, name: str, holder: str) -> None:
        etag = self._leases.pop((name, holder), None)
        if etag is None:
            entity = await self._get("leases", "lease", key(name))
            if entity is None or entity["holder"] != holder:
                return
            etag = _etag(entity)
        try:
            await self._delete("leases", "lease", key(name), etag)
        except StoreConflict:
            pass                                            # expired and taken over by someone else: theirs now

    # -- audit trail (PK "audit", RK inverted time: newest first) ----------------------------------------------------------------
    async def record_audit(self, entry: dict[str, Any]) -> None:
        at = _required_dt(entry["at"])
        row = {"PartitionKey": "audit", "RowKey": f"{_newest_first(at)}_{uuid.uuid4().hex[:8]}",
               **{k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in entry.items()}}
        await self.table("audit").create_entity(row)
        self.writes += 1

    async def recent_audit(self, limit: int = 50) -> list[dict[str, Any]]:
        out = []
        async for e in self._query("audit", "audit"):
            out.append({k: (json.loads(v) if isinstance(v, str) and v[:1] in ("[", "{") else v) for k, v in dict(e).items()
                        if k not in ("PartitionKey", "RowKey")})
            if len(out) >= limit:
                break
        return out

    # -- wake rows (WakeStore, PK "wake" in the leases table): running, dirty, generation, since --------------------------

    async def request_sync(self, mailbox: str, now: datetime, stale_after_s: float) -> int | None:
        for _ in range(WAKE_ATTEMPTS):
            entity = await self._get("leases", "wake", key(mailbox))
            etag = _etag(entity) if entity is not None else None
            generation = int(entity["generation"]) if entity is not None else 0
            since = _required_dt(entity["since"]).timestamp() if entity is not None else 0.0
            running = entity is not None and bool(entity.get("running")) and since > now.timestamp() - stale_after_s
            if running and entity is not None and entity.get("dirty"):
                return None                                   # already marked: the running sync goes round again
            row = {"PartitionKey": "wake", "RowKey": key(mailbox), "generation": generation, "running": True, "dirty": True,
                   "since": entity["since"] if running and entity is not None else _iso(now)}
            if not running:
                row.update(generation=generation + 1, dirty=False)
            try:
                await self._write("leases", row, etag)
            except StoreConflict:
                continue
            return None if running else generation + 1
        raise StoreConflict("the wake row kept changing")

    async def finish_sync(self, mailbox: str, generation: int, now: datetime, *, release: bool = False) -> bool:
        for _ in range(WAKE_ATTEMPTS):
            entity = await self._get("leases", "wake", key(mailbox))
            if entity is None or int(entity["generation"]) != generation or not entity.get("running"):
                return True                                   # taken over (or released): this sync is done
            again = bool(entity.get("dirty")) and not release
            row = {"PartitionKey": "wake", "RowKey": key(mailbox), "generation": generation, "running": again, "dirty": False,
                   "since": _iso(now)}
            try:
                await self._write("leases", row, _etag(entity))
            except StoreConflict:
                continue
            return not again
        raise StoreConflict("the wake row kept changing")


def _with_etag(link: Link, etag: str | None) -> Link:
    from dataclasses import replace
    return replace(link, etag=etag)
