"""StateStore on Azure Table Storage (azure-data-tables, async).

Tables (each name prefixed with STATE_TABLE_PREFIX):
- mailboxes     PK "mailbox"            RK mailbox            status, binding, filters, last cycle (M1-M6, G2)
- links         PK mailbox              RK booking            event id, generation, fingerprints, event time, state
                                        RK ^p|booking         an observation waiting for the mailbox's next sync
                                        RK ^e|booking         the last error per booking (G1)
                                        RK ^lease             the mailbox's sync lease (T2)
- bookingindex  PK environment          RK booking|mailbox    which mailboxes hold a link for a booking (routing deletes and reassignments)
- cursors       PK "cursor"             RK environment        delta links and the window horizon already read (T4)
- runs          PK "run"                RK inverted time      one row per cycle
- leases        PK "lease"              RK name               the singleton-cycle lease (T1); PK "wake": webhook syncs (T3)

A mailbox's observations, errors and lease share its links' partition, so one sync reads them in one query and
commits in one transaction (with the lease's release) what several tables took before. `key()` escapes "^", so
no booking's key can start with it. Tables `pending` and `outcomes` held those rows before; `migrate_legacy_rows`
moves what an older version left there.

Keys are escaped so no id or address can break them (Table keys may not hold / \\ # ? or control
characters). Updates carry the row's ETag: a lost race raises StoreConflict instead of overwriting.
Transactions are chunked to 100 entities of one partition.
"""
from __future__ import annotations

import asyncio
import contextvars
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from ..core.domain import Link, LinkState, Mailbox, SyncFilter
from ..core.serialize import filter_from_dict, filter_to_dict, mailbox_from_row
from ..ports import (
    UNREADABLE_OBSERVATION,
    CursorRow,
    MailboxCommit,
    MailboxLease,
    MailboxState,
    PendingRow,
    StoreConflict,
    has_pending_work,
    inline_fields,
    inline_free,
    inline_holders,
    inline_set,
    with_inline,
)
from . import table_wire
from .group_commit import GroupCommit
from .transport import endpoint_transport, proxies_for

# Table requests made in the current context (an activity sets a fresh counter): what one mailbox's sync costs.
ROUND_TRIPS: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("table_round_trips", default=None)


def count_round_trips() -> list[float]:
    """Starts counting this context's Table requests; the returned one-item list holds the count (a request shared
    with other syncs' writes counts its share)."""
    counter: list[float] = [0]
    ROUND_TRIPS.set(counter)
    return counter


def _counted(_request: Any) -> None:
    counter = ROUND_TRIPS.get()
    if counter is not None:
        counter[0] += 1


TABLES = ("mailboxes", "links", "bookingindex", "cursors", "runs", "leases", "audit")
LEGACY_TABLES = ("pending", "outcomes")        # rows moved into the links partitions (migrate_legacy_rows)
PENDING_PREFIX, ERROR_PREFIX, LEASE_ROW = "^p|", "^e|", "^lease"
INDEX_RANGES_PER_QUERY, INDEX_QUERY_CONCURRENCY, INDEX_SCAN_FROM = 7, 16, 1400
PENDING_WRITE_CONCURRENCY = 16                 # mailboxes whose observations are written at once
TRANSACTIONS_AT_ONCE = 8                       # independent ≤100-row transactions of one call sent together
MAILBOX_LEASE = "mailbox:"                     # LeaseStore names of this form are the mailbox's own lease row
RELEASED = datetime(1970, 1, 1, tzinfo=UTC)
TRANSACTION_LIMIT = 100
WAKE_ATTEMPTS = 20
KEY_SAFE = "@.-_+!$&'()*,;=:~|"
_KEY_ESCAPES = {c: quote(chr(c), safe=KEY_SAFE) for c in range(128) if quote(chr(c), safe=KEY_SAFE) != chr(c)}
_KEY_ESCAPED = re.compile("[" + re.escape("".join(map(chr, _KEY_ESCAPES))) + "]")


def key(value: str) -> str:
    """A Table key for any string: lower case, and every character Table keys refuse percent-escaped."""
    lowered = value.lower()
    if lowered.isascii():                  # what quote() makes of ASCII, in C (keys are made for every row)
        # Most keys (ids, addresses) need no escape, and a search is cheaper than a translate that changes nothing.
        return lowered if _KEY_ESCAPED.search(lowered) is None else lowered.translate(_KEY_ESCAPES)
    return quote(lowered, safe=KEY_SAFE)


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


def _observation(raw: Any) -> dict[str, Any] | None:
    """A stored observation's booking: None for a deletion, UNREADABLE_OBSERVATION for text that is not a JSON object."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except (TypeError, ValueError, RecursionError):
        return UNREADABLE_OBSERVATION
    return value if isinstance(value, dict) else UNREADABLE_OBSERVATION


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


class TableStateStore:
    """Async; create it inside the event loop that uses it."""

    def __init__(self, service: TableServiceClient, prefix: str):
        self.service, self.prefix = service, prefix
        self.writes = 0
        self._tables: dict[str, TableClient] = {name: service.get_table_client(prefix + name) for name in TABLES + LEGACY_TABLES}
        self._leases: dict[tuple[str, str], str | None] = {}
        self._mailbox_merges = GroupCommit(self._send_mailbox_merges, TRANSACTION_LIMIT)

    @classmethod
    def from_settings(cls, connection_string: str | None, endpoint: str | None, credential: Any, prefix: str) -> TableStateStore:
        if connection_string:
            def make(**kw: Any) -> TableServiceClient:
                return TableServiceClient.from_connection_string(connection_string, raw_request_hook=_counted, **kw)
        elif endpoint:
            def make(**kw: Any) -> TableServiceClient:
                return TableServiceClient(endpoint=endpoint, credential=credential, raw_request_hook=_counted, **kw)
        else:
            raise ValueError("the state store needs a Table endpoint or a connection string")
        service = make(transport=endpoint_transport())
        # The endpoint is known once the client has parsed its settings; a proxy (rare) needs a client made with it.
        proxies = proxies_for(service.url)
        return cls(make(transport=endpoint_transport(), proxies=proxies) if proxies else service, prefix)

    async def ensure_tables(self) -> None:
        for name in TABLES:
            try:
                await self.service.create_table(self.prefix + name)
            except ResourceExistsError:
                pass

        await self.migrate_legacy_rows()

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
        if etag:
            operation = _guarded("update", entity, etag)
        elif create_if_missing:
            operation = ("create", entity)
        else:
            operation = ("upsert", entity, {"mode": UpdateMode.REPLACE})
        try:
            answer = await table_wire.send_one(self.table(table), operation)
        except table_wire.TransactionFailed as exc:
            if exc.status_code in (409, 412):
                raise StoreConflict(f"{table} row changed concurrently") from exc
            raise
        self.writes += 1
        return answer.etag

    async def _delete(self, table: str, pk: str, rk: str, etag: str | None = None) -> None:
        try:
            await table_wire.send_one(self.table(table), _guarded("delete", {"PartitionKey": pk, "RowKey": rk}, etag))
            self.writes += 1
        except table_wire.TransactionFailed as exc:
            if exc.status_code == 404:
                return
            if exc.status_code == 412:
                raise StoreConflict(f"{table} row changed concurrently") from exc
            raise

    async def _transact(self, table: str, operations: list[tuple]) -> list[str | None]:
        """Operations of one partition, committed in transactions of at most 100 entities; the new ETag of each."""
        etags: list[str | None] = []
        for i in range(0, len(operations), TRANSACTION_LIMIT):
            chunk = operations[i:i + TRANSACTION_LIMIT]
            try:
                # One operation needs no $batch: the plain request is as atomic, and costs less to build and read.
                answers = [await table_wire.send_one(self.table(table), chunk[0])] if len(chunk) == 1 else \
                    await table_wire.submit(self.table(table), chunk)
            except (TableTransactionError, table_wire.TransactionFailed) as exc:
                if exc.status_code == 412 or "UpdateConditionNotSatisfied" in str(exc):
                    raise StoreConflict(f"{table}: a row in the transaction changed concurrently") from exc
                raise
            etags += [a.etag for a in answers]
            self.writes += len(chunk)
        return etags

    async def _transact_apart(self, table: str, operations: list[tuple], one_by_one: Callable[[tuple], Awaitable[None]]) -> None:
        """Operations on independent rows of one partition, in transactions of at most 100 sent together (at most
        TRANSACTIONS_AT_ONCE): no row depends on another, so nothing orders them. A transaction refused because one
        of its rows is gone or changed is carried out row by row through `one_by_one`."""
        slots = asyncio.Semaphore(TRANSACTIONS_AT_ONCE)

        async def send(chunk: list[tuple]) -> None:
            async with slots:
                try:
                    await self._transact(table, chunk)
                except (StoreConflict, HttpResponseError):
                    for operation in chunk:
                        await one_by_one(operation)

        await asyncio.gather(*(send(operations[i:i + TRANSACTION_LIMIT]) for i in range(0, len(operations), TRANSACTION_LIMIT)))

    # -- mailboxes --------------------------------------------------------------------------------------------
    async def get_mailbox(self, address: str) -> Mailbox | None:
        entity = await self._get("mailboxes", "mailbox", key(address))
        return mailbox_from_row(entity) if entity else None

    async def get_mailbox_row(self, address: str) -> dict | None:
        entity = await self._get("mailboxes", "mailbox", key(address))
        if entity is None:
            return None
        return {**dict(entity), "etag": _etag(entity)}

    async def mailbox_entry(self, address: str) -> tuple[Mailbox, dict[str, Any]] | None:
        entity = await self._get("mailboxes", "mailbox", key(address))
        return None if entity is None else (mailbox_from_row(entity), {**dict(entity), "etag": _etag(entity)})

    async def put_mailbox(self, mailbox: Mailbox, etag: str | None = None, **extra: Any) -> str | None:
        current = await self._get("mailboxes", "mailbox", key(mailbox.address)) if etag is None else None
        keep = {k: current[k] for k in current if k not in mailbox_to_entity(mailbox)} if current is not None else {}
        entity = mailbox_to_entity(mailbox, {**keep, **extra})
        return await self._write("mailboxes", entity, etag or (_etag(current) if current is not None else None))

    async def update_mailbox_fields(self, address: str, **fields: Any) -> None:
        """Merge a few fields (last cycle outcome, counts) without touching the rest. Concurrent syncs' merges go
        together (group_commit); each counts its share of the requests that carried it."""
        share = await self._mailbox_merges.merge(key(address), fields)
        counter = ROUND_TRIPS.get()
        if counter is not None:
            counter[0] += share

    async def _send_mailbox_merges(self, rows: dict[str, dict[str, Any]]) -> int:
        counter = count_round_trips()          # this batch's own count (a task's context: not the callers')
        if len(rows) == 1:
            [(row_key, fields)] = rows.items()
            entity = {"PartitionKey": "mailbox", "RowKey": row_key, **fields}
            try:                               # If-Match *: a mailbox removed meanwhile is not brought back as a fragment
                await table_wire.send_one(self.table("mailboxes"), ("update", entity, {"mode": UpdateMode.MERGE}))
                self.writes += 1
            except table_wire.TransactionFailed as exc:
                if exc.status_code != 404:
                    raise
        else:
            await self._merge_mailbox_rows([("update", {"PartitionKey": "mailbox", "RowKey": row_key, **fields}, {"mode": UpdateMode.MERGE})
                                            for row_key, fields in rows.items()])
        return int(counter[0])

    async def update_mailboxes_fields(self, addresses: Iterable[str], **fields: Any) -> None:
        await self._merge_mailbox_rows([("update", {"PartitionKey": "mailbox", "RowKey": key(a), **fields}, {"mode": UpdateMode.MERGE})
                                        for a in sorted(set(addresses))])

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

    # -- links ------------------------------------------------------------------------------------------------------
    async def links(self, mailbox: str) -> dict[str, Link]:
        return {link.booking_id: link for link in [link_from_entity(e) async for e in self._query("links", key(mailbox))
                                                   if not e["RowKey"].startswith("^")]}

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
            await self._index(links)
        partitions: dict[str, list[tuple[int, tuple]]] = {}
        for position, link in enumerate(links):
            partitions.setdefault(key(link.mailbox), []).append((position, _link_op(link)))
        written = list(links)
        for chunk in partitions.values():
            etags = await self._transact("links", [op for _, op in chunk])
            for (position, _), etag in zip(chunk, etags, strict=True):
                written[position] = _with_etag(links[position], etag)
        return written

    async def _index(self, links: Iterable[Link]) -> None:
        by_env: dict[str, list[tuple]] = {}
        for link in links:
            by_env.setdefault(key(link.environment), []).append(("upsert", self._index_entity(link), {"mode": UpdateMode.REPLACE}))
        for ops in by_env.values():
            await self._transact("bookingindex", ops)

    async def _unindex(self, links: Iterable[Link]) -> None:
        by_env: dict[str, dict[str, set[str]]] = {}
        for link in links:
            by_env.setdefault(link.environment, {}).setdefault(link.booking_id, set()).add(link.mailbox)
        for environment, holders in by_env.items():
            await self.unindex_deleted(environment, holders)

    async def delete_link(self, link: Link) -> None:
        await self._delete("links", key(link.mailbox), key(link.booking_id), link.etag)
        await self._delete("bookingindex", key(link.environment), f"{key(link.booking_id)}|{key(link.mailbox)}")

    @staticmethod
    def _index_entity(link: Link) -> dict:
        return {"PartitionKey": key(link.environment), "RowKey": f"{key(link.booking_id)}|{key(link.mailbox)}",
                "booking_id": link.booking_id.lower(), "mailbox": link.mailbox.lower()}

    async def mailboxes_for_bookings(self, environment: str, booking_ids: Iterable[str]) -> dict[str, set[str]]:
        """booking id -> mailboxes holding a link for it. A $filter holds at most 15 comparisons (Learn, "Querying
        tables and entities"): the partition key and 7 bookings' row key ranges per query, 16 queries at once; past
        INDEX_SCAN_FROM ids, one scan of the environment's partition reads less."""
        ids = sorted({b.lower() for b in booking_ids})
        found: dict[str, set[str]] = {}
        if len(ids) > INDEX_SCAN_FROM:
            wanted = set(ids)
            async for e in self._query("bookingindex", key(environment)):
                if e["booking_id"] in wanted:
                    found.setdefault(e["booking_id"], set()).add(e["mailbox"])
            return found
        slots = asyncio.Semaphore(INDEX_QUERY_CONCURRENCY)

        async def look_up(group: list[str]) -> None:
            ranges = " or ".join(f"(RowKey ge @l{i} and RowKey lt @h{i})" for i in range(len(group)))
            params = {**{f"l{i}": f"{key(b)}|" for i, b in enumerate(group)}, **{f"h{i}": f"{key(b)}}}" for i, b in enumerate(group)}}
            async with slots:
                async for e in self._query("bookingindex", key(environment), f"({ranges})", params):
                    found.setdefault(e["booking_id"], set()).add(e["mailbox"])

        await asyncio.gather(*(look_up(ids[i:i + INDEX_RANGES_PER_QUERY]) for i in range(0, len(ids), INDEX_RANGES_PER_QUERY)))
        return found

    async def unindex_deleted(self, environment: str, holders: Mapping[str, set[str]]) -> None:
        rows = [(b.lower(), m.lower()) for b, mailboxes in holders.items() for m in mailboxes]

        async def delete_one(operation: tuple) -> None:
            await self._delete("bookingindex", key(environment), operation[1]["RowKey"])

        await self._transact_apart("bookingindex", [("delete", {"PartitionKey": key(environment), "RowKey": f"{key(b)}|{key(m)}"})
                                                    for b, m in rows], delete_one)

    async def linked_bookings(self, environment: str) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        async for e in self._query("bookingindex", key(environment)):
            found.setdefault(e["booking_id"], set()).add(e["mailbox"])
        return found

    # -- pending observations (RK ^p|booking in the mailbox's links partition) ---------------------------------------------
    async def add_pending(self, mailbox: str, observations: dict[str, dict[str, Any] | None]) -> None:
        """booking id -> booking dict (observed) or None (deleted); the latest observation wins."""
        await self.add_pending_batch({mailbox: observations})

    async def add_pending_batch(self, per_mailbox: Mapping[str, Mapping[str, dict[str, Any] | None]],
                                listed: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        now = _iso(datetime.now(UTC)) or ""
        filled = {m.lower(): obs for m, obs in sorted(per_mailbox.items()) if obs}
        rows = {a.lower(): r for a, r in (listed or {}).items()}
        inline: dict[str, dict[str, Any]] = {}
        for mailbox, observations in filled.items():
            row = rows.get(mailbox)
            if row is not None and row.get("etag") and inline_free(row):
                fields = inline_fields(uuid.uuid4().hex, observations, now)
                if fields is not None:
                    inline[mailbox] = fields
        # A set acknowledged on a mailbox this cycle leaves alone is cleared (its observations are personal data).
        cleared = {a: {"inline_mark": "", "inline_pending": ""} for a, r in rows.items()
                   if a not in filled and r.get("inline_pending") and r.get("etag") and inline_free(r)}
        refused = await self._merge_listed_rows({**inline, **cleared}, rows)
        apart = {m: obs for m, obs in filled.items() if m not in inline or m in refused}
        slots = asyncio.Semaphore(PENDING_WRITE_CONCURRENCY)

        async def add(mailbox: str, observations: Mapping[str, dict[str, Any] | None]) -> None:
            async with slots:
                await self._transact("links", [("upsert", _pending_entity(mailbox, b, booking, now), {"mode": UpdateMode.REPLACE})
                                               for b, booking in sorted(observations.items())])

        # Each mailbox's rows are independent of the others' (concurrently); the marks only after all the rows, so
        # a sync that saw a mark reads the rows it covers (PendingStore).
        await asyncio.gather(*(add(m, obs) for m, obs in apart.items()))
        await self._merge_mailbox_rows([("update", {"PartitionKey": "mailbox", "RowKey": key(m), "pending_mark": uuid.uuid4().hex},
                                         {"mode": UpdateMode.MERGE}) for m in apart])

    async def _merge_listed_rows(self, merges: Mapping[str, dict[str, Any]], rows: Mapping[str, Mapping[str, Any]]) -> set[str]:
        """Merges into mailbox rows, each only if the row is still as listed (If-Match its ETag): 100 to a transaction,
        and row by row when a transaction is refused. Returns the mailboxes whose merge was refused (changed or gone)."""
        refused: set[str] = set()
        operations = [("update", {"PartitionKey": "mailbox", "RowKey": key(a), **fields},
                       {"mode": UpdateMode.MERGE, "etag": rows[a]["etag"], "match_condition": MatchConditions.IfNotModified})
                      for a, fields in sorted(merges.items())]
        addresses = {key(a): a for a in merges}

        async def merge_one(operation: tuple) -> None:
            try:
                await self._transact("mailboxes", [operation])
            except (StoreConflict, HttpResponseError):
                refused.add(addresses[operation[1]["RowKey"]])

        await self._transact_apart("mailboxes", operations, merge_one)
        return refused

    async def _merge_mailbox_rows(self, merges: list[tuple]) -> None:
        """Merges into existing mailbox rows (If-Match *: a row removed meanwhile is not brought back as a fragment)."""
        async def merge_one(operation: tuple) -> None:
            try:
                await self.table("mailboxes").update_entity(operation[1], mode=UpdateMode.MERGE)
                self.writes += 1
            except ResourceNotFoundError:
                pass

        await self._transact_apart("mailboxes", merges, merge_one)

    async def pending(self, mailbox: str) -> list[PendingRow]:
        state, entry = await asyncio.gather(self.mailbox_state(mailbox), self.mailbox_entry(mailbox))
        return with_inline(state, entry[1] if entry else None).pending

    async def pending_mailboxes(self) -> set[str]:
        return {row["address"] for row in await self.list_mailboxes() if has_pending_work(row)}

    async def pending_holders(self, mailboxes: Iterable[str], booking_ids: Iterable[str],
                              listed: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, set[str]]:
        wanted = {b.lower() for b in booking_ids}
        mailboxes = sorted({m.lower() for m in mailboxes})
        if wanted and mailboxes and listed is None:
            listed = {r["address"]: r for r in await self.list_mailboxes()}
        found = inline_holders(mailboxes, wanted, listed or {})
        slots = asyncio.Semaphore(PENDING_WRITE_CONCURRENCY)

        async def look(mailbox: str) -> None:
            async with slots:
                async for e in self._query("links", key(mailbox), "RowKey ge @low and RowKey lt @high",
                                           {"low": PENDING_PREFIX, "high": PENDING_PREFIX[:-1] + chr(ord(PENDING_PREFIX[-1]) + 1)}):
                    if (booking_id := str(e["booking_id"]).lower()) in wanted:
                        found.setdefault(booking_id, set()).add(mailbox)

        await asyncio.gather(*(look(m) for m in mailboxes if wanted))
        return found

    def _pending_deletes(self, mailbox: str, consumed: Iterable[PendingRow]) -> list[tuple]:
        """Each consumed observation's row, unless a newer observation replaced it (an inline observation that stands
        for no row has none to remove)."""
        return [("delete", {"PartitionKey": key(mailbox), "RowKey": PENDING_PREFIX + key(p["booking_id"])},
                 {"etag": p["etag"], "match_condition": MatchConditions.IfNotModified}) for p in consumed if p["etag"]]

    def _pending_keeps(self, mailbox: str, kept: Iterable[PendingRow]) -> list[tuple]:
        """Inline observations a sync keeps, as rows: each replaces the row it stands for only if that row is still as
        read, or is created only if none came meanwhile (a newer observation wins either way)."""
        return [_guarded("update", _pending_entity(mailbox, p["booking_id"], p["booking"], p.get("observed_at")), p["etag"])
                for p in kept]

    async def clear_pending(self, mailbox: str, consumed: list[PendingRow]) -> None:
        """Remove observations the sync handled, unless a newer one replaced them meanwhile (ETag)."""
        try:
            await self._transact("links", self._pending_deletes(mailbox, consumed))
        except StoreConflict:
            for p in consumed:  # one was replaced: delete the others one by one
                if not p["etag"]:
                    continue
                try:
                    await self._delete("links", key(mailbox), PENDING_PREFIX + key(p["booking_id"]), p["etag"])
                except StoreConflict:
                    pass

    async def _keep_pending(self, mailbox: str, kept: list[PendingRow]) -> None:
        for operation in self._pending_keeps(mailbox, kept):
            try:
                await self._transact("links", [operation])
            except (StoreConflict, HttpResponseError):
                pass                                      # a newer observation of the booking is there: it stands

    # -- outcomes (RK ^e|booking: the last error per booking, for diagnose) ----------------------------------------------
    async def record_outcomes(self, mailbox: str, outcomes: dict[str, dict[str, Any]]) -> None:
        """Keep the last error per booking (for diagnose); a booking that succeeds loses its old error."""
        await self._transact("links", self._outcome_ops(mailbox, outcomes, await self._known_errors(mailbox, outcomes)))

    def _outcome_ops(self, mailbox: str, outcomes: Mapping[str, Mapping[str, Any]], known_errors: set[str]) -> list[tuple]:
        now = _iso(datetime.now(UTC))
        ops: list[tuple] = []
        for booking_id, outcome in sorted(outcomes.items()):
            row_key = ERROR_PREFIX + key(booking_id)
            if outcome.get("error"):
                ops.append(("upsert", {"PartitionKey": key(mailbox), "RowKey": row_key, "booking_id": booking_id, "at": now,
                                       **{k: ("" if v is None else v) for k, v in outcome.items()}}, {"mode": UpdateMode.REPLACE}))
            elif booking_id.lower() in known_errors:
                ops.append(("delete", {"PartitionKey": key(mailbox), "RowKey": row_key}))
        return ops

    async def outcome(self, mailbox: str, booking_id: str) -> dict[str, Any] | None:
        entity = await self._get("links", key(mailbox), ERROR_PREFIX + key(booking_id))
        return {k: v for k, v in dict(entity).items() if k not in ("PartitionKey", "RowKey")} if entity else None

    # -- one mailbox's sync: read, claim, commit (MailboxStateStore) ----------------------------------------------------
    async def mailbox_state(self, mailbox: str) -> MailboxState:
        state = MailboxState(links={}, pending=[], errors=set(), lease=None)
        async for e in self._query("links", key(mailbox)):
            row_key = e["RowKey"]
            if not row_key.startswith("^"):
                try:
                    link = link_from_entity(e)
                except (KeyError, TypeError, ValueError):
                    state.unreadable_links.add(str(e.get("booking_id") or unkey(row_key)).lower())
                    continue
                state.links[link.booking_id] = link
            elif row_key.startswith(PENDING_PREFIX):
                deleted = e.get("deleted")
                readable = isinstance(deleted, bool)           # without the flag, a missing body is no deletion
                state.pending.append({"booking_id": str(e.get("booking_id") or unkey(row_key[len(PENDING_PREFIX):])),
                                      "deleted": bool(deleted) if readable else False,
                                      "booking": _observation(e.get("booking")) if readable else UNREADABLE_OBSERVATION,
                                      "etag": _etag(e), "observed_at": e.get("observed_at")})
            elif row_key.startswith(ERROR_PREFIX):
                state.errors.add(str(e["booking_id"]).lower())
            elif row_key == LEASE_ROW:
                state.lease = _lease_from(e)
        return state

    async def claim_mailbox(self, mailbox: str, holder: str, now: datetime, ttl_s: float, seen: MailboxLease | None,
                            intents: Sequence[Link] = ()) -> tuple[MailboxLease, list[Link]] | None:
        if seen is not None and seen.held_by_other(holder, now):
            return None
        expires = datetime.fromtimestamp(now.timestamp() + ttl_s, UTC)
        inline_done = seen.inline_done if seen is not None else ""
        lease_op = _guarded("update" if seen is not None else "create", _lease_row(mailbox, holder, expires, inline_done),
                            seen.etag if seen is not None else None)
        together = len(intents) < TRANSACTION_LIMIT          # the lease and the intents in one transaction when they fit
        if intents:
            await self._index(intents)
        try:
            etags = await self._transact("links", [lease_op, *(_link_op(link) for link in intents)] if together else [lease_op])
        except StoreConflict:
            return None
        except HttpResponseError as exc:
            if exc.status_code in (404, 409):              # the lease row went, or came, since the read
                return None
            raise
        lease = MailboxLease(holder, expires, etags[0], inline_done)
        self._leases[(MAILBOX_LEASE + mailbox.lower(), holder)] = lease.etag
        if together:
            return lease, [_with_etag(link, etag) for link, etag in zip(intents, etags[1:], strict=True)]
        return lease, await self.put_links(list(intents), index=False)

    async def renew_mailbox(self, mailbox: str, lease: MailboxLease, now: datetime, ttl_s: float) -> MailboxLease | None:
        expires = datetime.fromtimestamp(now.timestamp() + ttl_s, UTC)
        try:
            etag = await self._write("links", _lease_row(mailbox, lease.holder, expires, lease.inline_done), lease.etag)
        except StoreConflict:
            return None
        self._leases[(MAILBOX_LEASE + mailbox.lower(), lease.holder)] = etag
        return MailboxLease(lease.holder, expires, etag, lease.inline_done)

    async def commit_mailbox(self, mailbox: str, commit: MailboxCommit) -> bool:
        if commit.unindex:
            await self._unindex(commit.unindex)
        links_ops, tolerant = self._commit_ops(mailbox, commit)
        release = [self._release_op(mailbox, commit.release, commit.inline_done)] if commit.release is not None else []
        try:
            if len(links_ops) + len(tolerant) + len(release) > TRANSACTION_LIMIT:
                raise _Split                               # more than one transaction: no longer all or nothing
            await self._transact("links", links_ops + tolerant + release)
            released = bool(release)
        except (_Split, StoreConflict, HttpResponseError) as exc:
            # Too large, or something besides the links changed (a newer observation, the lease lost): the links
            # still commit, strictly; the rest goes one part at a time.
            if not isinstance(exc, _Split) and not tolerant and not release:
                raise _conflict(exc) from exc
            await self._transact("links", links_ops)
            await self._keep_pending(mailbox, commit.kept_inline)      # before the lease row records their set as applied
            await self.clear_pending(mailbox, commit.consumed)
            await self._transact("links", self._outcome_ops(mailbox, commit.outcomes, await self._known_errors(mailbox, commit.outcomes)))
            released = commit.release is not None and await self._release_mailbox(mailbox, commit.release, commit.inline_done)
        if commit.release is not None:
            self._leases.pop((MAILBOX_LEASE + mailbox.lower(), commit.release.holder), None)
        return released

    def _commit_ops(self, mailbox: str, commit: MailboxCommit) -> tuple[list[tuple], list[tuple]]:
        """A commit's operations: the links' (strict, by ETag), and the observations' and errors' (which may fail
        only because something newer replaced them)."""
        links_ops = [_link_op(link) for link in commit.puts] + [
            _guarded("delete", {"PartitionKey": key(link.mailbox), "RowKey": key(link.booking_id)}, link.etag) for link in commit.deletes]
        return links_ops, (self._pending_keeps(mailbox, commit.kept_inline) + self._pending_deletes(mailbox, commit.consumed)
                           + self._outcome_ops(mailbox, commit.outcomes, commit.known_errors))

    async def commit_unclaimed(self, mailbox: str, commit: MailboxCommit, seen: MailboxLease | None, holder: str, now: datetime) -> bool:
        if commit.unindex or commit.release is not None:
            raise ValueError("an unclaimed commit neither removes index rows nor releases a lease it holds")
        if seen is not None and seen.held_by_other(holder, now):
            return False
        released = _lease_row(mailbox, "", RELEASED, commit.inline_done or (seen.inline_done if seen is not None else ""))
        links_ops, tolerant = self._commit_ops(mailbox, commit)
        operations = [*links_ops, *tolerant, _guarded("update", released, seen.etag) if seen is not None else ("create", released)]
        if len(operations) > TRANSACTION_LIMIT:
            return False
        try:
            await self._transact("links", operations)
        except StoreConflict:
            return False
        except HttpResponseError as exc:
            if exc.status_code in (404, 409):          # a row the commit names went, or the lease row came, since the read
                return False
            raise
        return True

    async def _known_errors(self, mailbox: str, outcomes: Mapping[str, Mapping[str, Any]]) -> set[str]:
        """The error rows a success may have to remove; read only when some outcome is a success."""
        return (await self.mailbox_state(mailbox)).errors if any(not o.get("error") for o in outcomes.values()) else set()

    @staticmethod
    def _release_op(mailbox: str, lease: MailboxLease, inline_done: str | None = None) -> tuple:
        # Released, the row stays with its holder cleared: a claim made against a read from before this commit
        # then fails on the ETag, where a deleted and re-created row would let it through.
        return _guarded("update", _lease_row(mailbox, "", RELEASED, inline_done or lease.inline_done), lease.etag)

    async def _release_mailbox(self, mailbox: str, lease: MailboxLease, inline_done: str | None = None) -> bool:
        try:
            await self._transact("links", [self._release_op(mailbox, lease, inline_done)])
        except (StoreConflict, HttpResponseError):
            return False                                    # expired and taken over by someone else: theirs now
        return True

    # -- legacy layout --------------------------------------------------------------------------------------------------
    async def move_to_legacy_layout(self) -> dict[str, int]:
        """Before a rollback to a version older than this layout (it reads every row of a links partition as a link):
        observations and errors go back to tables `pending` and `outcomes`, and the mailbox lease rows go. Run it with
        the app stopped; this version, started again, moves them forward (migrate_legacy_rows)."""
        moved = {"pending": 0, "errors": 0, "leases": 0}
        await self.inline_sets_to_rows()
        for table in LEGACY_TABLES:
            try:
                await self.service.create_table(self.prefix + table)
            except ResourceExistsError:
                pass
        # key() escapes "^", so the row keys from "^" up to "_" are exactly this layout's own rows
        rows = [e async for e in table_wire.query(self.table("links"), "RowKey ge @low and RowKey lt @high", {"low": "^", "high": "_"})]
        for e in rows:
            partition, row_key = e["PartitionKey"], e["RowKey"]
            fields = {k: v for k, v in dict(e).items() if k not in ("PartitionKey", "RowKey")}
            if row_key.startswith((PENDING_PREFIX, ERROR_PREFIX)):
                legacy = "pending" if row_key.startswith(PENDING_PREFIX) else "outcomes"
                await self._write(legacy, {"PartitionKey": partition, "RowKey": row_key[len(PENDING_PREFIX):], **fields}, None,
                                  create_if_missing=False)
                moved["pending" if legacy == "pending" else "errors"] += 1
            else:
                moved["leases"] += 1
            await self._delete("links", partition, row_key)
        return moved

    async def inline_sets_to_rows(self) -> int:
        """Before a rollback to a version that knows no inline sets (older than 2026-12-07), with the app stopped: a
        set not yet applied becomes rows of its partition (where no newer observation of the booking is), and every
        mailbox row drops its set. Returns the observations written as rows."""
        written = 0
        for row in await self.list_mailboxes():
            if inline_set(row) is None:
                continue
            address = row["address"]
            kept = [p for p in with_inline(await self.mailbox_state(address), row).pending if p.get("inline")]
            await self._keep_pending(address, kept)
            written += len(kept)
            await self._merge_mailbox_rows([("update", {"PartitionKey": "mailbox", "RowKey": key(address), "inline_mark": "",
                                                        "inline_pending": ""}, {"mode": UpdateMode.MERGE})])
        return written

    async def migrate_legacy_rows(self) -> int:
        """Observations and errors an older version kept in tables `pending` and `outcomes` move into the links
        partitions; an observation recorded since in the new place is newer and wins. Returns the rows moved."""
        moved = 0
        for table in LEGACY_TABLES:
            try:
                rows = [e async for e in table_wire.query(self.table(table), "PartitionKey ne ''")]
            except HttpResponseError as exc:
                if exc.status_code == 404:                 # never made, or already dropped
                    continue
                raise
            by_mailbox: dict[str, list[Any]] = {}
            for e in rows:
                by_mailbox.setdefault(e["PartitionKey"], []).append(e)
            for partition, entities in by_mailbox.items():
                prefix = PENDING_PREFIX if table == "pending" else ERROR_PREFIX
                for e in entities:
                    moved_row = {k: v for k, v in dict(e).items() if k not in ("PartitionKey", "RowKey")}
                    try:
                        await self.table("links").create_entity({"PartitionKey": partition, "RowKey": prefix + e["RowKey"], **moved_row})
                    except ResourceExistsError:
                        pass
                    await self._delete(table, partition, e["RowKey"])
                    moved += 1
                if table == "pending":
                    await self._merge_mailbox_rows([("update", {"PartitionKey": "mailbox", "RowKey": partition,
                                                                "pending_mark": uuid.uuid4().hex}, {"mode": UpdateMode.MERGE})])
        return moved

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

    def _lease_place(self, name: str) -> tuple[str, str, str]:
        """(table, partition, row) of a named lease: a mailbox's lives with its links, others in `leases`."""
        if name.startswith(MAILBOX_LEASE):
            return "links", key(name[len(MAILBOX_LEASE):]), LEASE_ROW
        return "leases", "lease", key(name)

    async def acquire_lease(self, name: str, holder: str, now: datetime, ttl_s: float) -> bool:
        """Take the named lease if it is free or expired; ETag-guarded, so two callers never both win."""
        table, pk, rk = self._lease_place(name)
        row = {"PartitionKey": pk, "RowKey": rk, "holder": holder,
               "expires": datetime.fromtimestamp(now.timestamp() + ttl_s, UTC).isoformat()}
        try:
            self._leases[(name, holder)] = await self._write(table, row, None)        # free: one insert
            return True
        except StoreConflict:
            pass
        entity = await self._get(table, pk, rk)
        if entity is not None and entity["holder"] and _required_dt(entity["expires"]) > now and entity["holder"] != holder:
            return False
        try:
            carried = {**row, **_carried(entity)}
            self._leases[(name, holder)] = await self._write(table, carried, _etag(entity) if entity is not None else None)
            return True
        except StoreConflict:
            return False

    async def renew_lease(self, name: str, holder: str, now: datetime, ttl_s: float) -> bool:
        table, pk, rk = self._lease_place(name)
        entity = await self._get(table, pk, rk)
        if entity is None or entity["holder"] != holder:
            return False
        row = {"PartitionKey": pk, "RowKey": rk, "holder": holder,
               "expires": datetime.fromtimestamp(now.timestamp() + ttl_s, UTC).isoformat(), **_carried(entity)}
        try:
            self._leases[(name, holder)] = await self._write(table, row, _etag(entity))
        except StoreConflict:
            return False
        return True

    async def release_lease(self, name: str, holder: str) -> None:
        table, pk, rk = self._lease_place(name)
        etag = self._leases.pop((name, holder), None)
        if table == "links":
            etag = None                                     # a mailbox's lease row: read it, to keep what it carries
        for _ in range(2):
            if etag is None:
                entity = await self._get(table, pk, rk)
                if entity is None or entity["holder"] != holder:
                    return                                  # expired and taken over by someone else: theirs now
                etag = _etag(entity)
            try:
                if table == "links":
                    await self._transact("links", [self._release_op(name[len(MAILBOX_LEASE):], _lease_from(entity))])
                else:
                    await self._delete(table, pk, rk, etag)
                return
            except StoreConflict:
                # A renewal cancelled in flight (KeptLease stops its keeper before releasing) may have landed with
                # its answer unseen, so the kept ETag is stale: read the row again; it is still ours if it names us.
                etag = None
            except HttpResponseError as exc:
                if exc.status_code == 404:                  # the row is gone: nothing is held
                    return
                raise

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


class _Split(Exception):
    """A commit too large for one transaction."""


def _pending_entity(mailbox: str, booking_id: str, booking: dict[str, Any] | None, now: str | None) -> dict[str, Any]:
    return {"PartitionKey": key(mailbox), "RowKey": PENDING_PREFIX + key(booking_id), "booking_id": booking_id, "deleted": booking is None,
            "booking": json.dumps(booking) if booking else "", "observed_at": now}


def _guarded(kind: str, entity: dict, etag: str | None) -> tuple:
    """A transaction operation matched by ETag (a create when there is none to match)."""
    if kind == "create" or (kind == "update" and etag is None):
        return ("create", entity)
    if kind == "update":
        return ("update", entity, {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified})
    return (kind, entity, {"etag": etag, "match_condition": MatchConditions.IfNotModified}) if etag else (kind, entity)


def _link_op(link: Link) -> tuple:
    return _guarded("update", link_to_entity(link), link.etag)


def _lease_row(mailbox: str, holder: str, expires: datetime, inline_done: str) -> dict[str, Any]:
    """A mailbox's lease row as every write makes it: holder, expiry, and the last inline set applied (kept)."""
    return {"PartitionKey": key(mailbox), "RowKey": LEASE_ROW, "holder": holder, "expires": _iso(expires), "inline_done": inline_done}


def _carried(lease_row: Any) -> dict[str, Any]:
    """What every write of a mailbox's lease row keeps: the last inline set applied (PendingStore)."""
    return {"inline_done": lease_row["inline_done"]} if lease_row is not None and lease_row.get("inline_done") else {}


def _lease_from(entity: Any) -> MailboxLease:
    return MailboxLease(str(entity.get("holder") or ""), _dt(entity.get("expires")) or RELEASED, _etag(entity),
                        str(entity.get("inline_done") or ""))


def _conflict(exc: Exception) -> Exception:
    return exc if isinstance(exc, StoreConflict) else StoreConflict(f"links: a row in the transaction changed concurrently ({exc})")


def _with_etag(link: Link, etag: str | None) -> Link:
    from dataclasses import replace
    return replace(link, etag=etag)
