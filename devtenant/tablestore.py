"""A light Table Storage double, for measuring the sync without Azurite's cost: `python -m devtenant.tablestore`.

Azurite is the Table Storage the tests hold the product to. On a small machine it is also the largest CPU cost of a
benchmark cycle (about 2 ms per request, and a scan of the whole table for every query), so a figure measured
against it says more about Azurite than about the sync. This double answers the part of the Table service REST API
the product and azure-data-tables use, as Learn documents it ("Table service REST API": Create/Delete Table, Query
Entities, Insert/Update/Merge/Delete Entity, Insert Or Replace/Merge, "Performing entity group transactions"):
the same status codes, error codes (`x-ms-error-code` and the odata.error body), ETags and continuation headers,
one changeset per batch applied all or nothing, at most 100 operations of one partition. A query with a
`PartitionKey eq` term reads that partition only, and RowKey ranges are found by bisection, as the service's
clustered index does. The state-store and wire contract suites run against it as they do against Azurite
(tests/contract), so it cannot drift from what the product needs.

What it does not do, on purpose: authentication (requests are not checked; it listens on loopback only),
persistence, CORS, SAS, table ACLs, and the service's throttling. Where Learn is silent it follows Azurite's
answers (the batch answer's layout, the ETag's form).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import json
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from aiohttp import web

PAGE = 1000                                    # Query Entities returns at most 1,000 entities a page
TRANSACTION_LIMIT = 100
_ENTITY_PATH = re.compile(r"^(?P<table>[A-Za-z][A-Za-z0-9]{2,62})\(PartitionKey='(?P<pk>(?:[^']|'')*)',\s*RowKey='(?P<rk>(?:[^']|'')*)'\)$")
_TABLE_PATH = re.compile(r"^(?P<table>[A-Za-z][A-Za-z0-9]{2,62})(?:\(\))?$")
_TABLES_ONE = re.compile(r"^Tables\('(?P<table>[^']+)'\)$")
_TYPED = {"Edm.Int64": int, "Edm.Double": float}
_KEPT_ANNOTATIONS = {"Edm.Int64", "Edm.DateTime", "Edm.Guid", "Edm.Binary"}   # JSON has no type for these


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Entity:
    properties: dict[str, Any]                 # as the client sent them, with the annotations JSON needs
    etag: str
    timestamp: str
    _encoded: str | None = field(default=None, repr=False, compare=False)

    def typed(self, name: str) -> Any:
        """A property's value for comparison: Int64 and Double as numbers, the rest as JSON gives them."""
        value = self.properties.get(name)
        kind = self.properties.get(f"{name}@odata.type")
        if kind in _TYPED and value is not None:
            return _TYPED[kind](value)
        if kind == "Edm.DateTime":
            return _instant(value)
        return value

    def wire(self, pk: str, rk: str, select: list[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"odata.etag": self.etag}
        names = select if select is not None else ["PartitionKey", "RowKey", *(n for n in self.properties if "@" not in n)]
        for name in names:
            if name in ("PartitionKey", "RowKey"):
                out[name] = pk if name == "PartitionKey" else rk
                continue
            if name == "Timestamp":
                out["Timestamp"] = self.timestamp
                continue
            if name not in self.properties:
                continue
            kind = self.properties.get(f"{name}@odata.type")
            if kind in _KEPT_ANNOTATIONS or (kind == "Edm.Double" and not isinstance(self.properties[name], float)):
                out[f"{name}@odata.type"] = kind
            out[name] = self.properties[name]
        if select is None:
            out["Timestamp"] = self.timestamp
        return out

    def encoded(self, pk: str, rk: str) -> str:
        """The whole entity as JSON, kept: a write makes a new Entity, and a partition's rows are read by every sync
        of its mailbox."""
        if self._encoded is None:
            self._encoded = json.dumps(self.wire(pk, rk))
        return self._encoded


class Partition:
    def __init__(self) -> None:
        self.rows: dict[str, Entity] = {}
        self._order: list[str] | None = []

    def keys(self) -> list[str]:
        if self._order is None:
            self._order = sorted(self.rows)
        return self._order

    def put(self, row_key: str, entity: Entity) -> None:
        if row_key not in self.rows and self._order is not None:
            bisect.insort(self._order, row_key)
        self.rows[row_key] = entity

    def remove(self, row_key: str) -> None:
        del self.rows[row_key]
        self._order = None

    def copy(self) -> Partition:
        twin = Partition()
        twin.rows, twin._order = dict(self.rows), None if self._order is None else list(self._order)
        return twin


class Clock:
    """Timestamps that strictly increase, so no two writes share an ETag."""

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> str:
        now = int(datetime.now(UTC).timestamp() * 10_000_000)
        self.last = max(now, self.last + 1)
        seconds, ticks = divmod(self.last, 10_000_000)
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ticks:07d}Z"


# -- $filter ------------------------------------------------------------------------------------------------------
_FILTER_TOKEN = re.compile(r"""\s*(?:(?P<string>'(?:[^']|'')*')|(?P<typed>(?:datetime|guid|X|binary)'[^']*')
    |(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?L?)|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[()]))""", re.VERBOSE)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b, "le": lambda a, b: a <= b}


def _instant(text: Any) -> Any:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return text


def _tokens(text: str) -> list[tuple[str, Any]]:
    out, at, end = [], 0, len(text.rstrip())
    while at < end:
        found = _FILTER_TOKEN.match(text, at)
        if found is None or found.end() == at:
            raise Refused(400, "InvalidInput", f"$filter: cannot read at {at}")
        at = found.end()
        kind = found.lastgroup
        value = found.group(kind or "")
        if kind == "string":
            out.append(("value", value[1:-1].replace("''", "'")))
        elif kind == "typed":
            prefix, literal = value.split("'", 1)
            out.append(("value", _instant(literal[:-1]) if prefix == "datetime" else literal[:-1]))
        elif kind == "number":
            out.append(("value", int(value[:-1]) if value.endswith("L") else (float(value) if "." in value or "e" in value.lower() else int(value))))
        elif kind == "word" and value in ("true", "false"):
            out.append(("value", value == "true"))
        elif kind == "word" and value in (*_COMPARE, "and", "or", "not"):
            out.append(("op", value))
        elif kind == "word":
            out.append(("name", value))
        else:
            out.append(("punct", value))
    return out


Node = tuple


class _FilterParser:
    """or_expr := and_expr ('or' and_expr)*; and_expr := unary ('and' unary)*; unary := 'not' unary | primary;
    primary := '(' or_expr ')' | operand cmp operand."""

    def __init__(self, text: str):
        self.tokens, self.at = _tokens(text), 0

    def parse(self) -> Node:
        node = self.or_expr()
        if self.at != len(self.tokens):
            raise Refused(400, "InvalidInput", "$filter: unexpected text after the expression")
        return node

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> tuple[str, Any]:
        token = self.peek()
        if token is None:
            raise Refused(400, "InvalidInput", "$filter: the expression ends early")
        self.at += 1
        return token

    def or_expr(self) -> Node:
        return self._chain("or", self.and_expr)

    def and_expr(self) -> Node:
        return self._chain("and", self.unary)

    def _chain(self, word: str, operand: Callable[[], Node]) -> Node:
        """operand (word operand)*, left to right."""
        node = operand()
        while self.peek() == ("op", word):
            self.take()
            node = (word, node, operand())
        return node

    def unary(self) -> Node:
        if self.peek() == ("op", "not"):
            self.take()
            return ("not", self.unary())
        if self.peek() == ("punct", "("):
            self.take()
            node = self.or_expr()
            if self.take() != ("punct", ")"):
                raise Refused(400, "InvalidInput", "$filter: a parenthesis is not closed")
            return node
        left, (kind, op), right = self.take(), self.take(), self.take()
        if kind != "op" or op not in _COMPARE or left[0] == "punct" or right[0] == "punct":
            raise Refused(400, "InvalidInput", "$filter: expected a comparison")
        return ("cmp", op, left, right)


def _matches(node: Node, entity: Entity, pk: str, rk: str) -> bool:
    kind = node[0]
    if kind == "and":
        return _matches(node[1], entity, pk, rk) and _matches(node[2], entity, pk, rk)
    if kind == "or":
        return _matches(node[1], entity, pk, rk) or _matches(node[2], entity, pk, rk)
    if kind == "not":
        return not _matches(node[1], entity, pk, rk)
    _, op, left, right = node

    def operand(token: tuple[str, Any]) -> Any:
        if token[0] != "name":
            return token[1]
        return pk if token[1] == "PartitionKey" else rk if token[1] == "RowKey" else (
            _instant(entity.timestamp) if token[1] == "Timestamp" else entity.typed(token[1]))

    a, b = operand(left), operand(right)
    if a is None or b is None or isinstance(a, bool) != isinstance(b, bool):
        return False                            # a missing property, or values of different types, match nothing
    try:
        return _COMPARE[op](a, b)
    except TypeError:
        return False


Interval = tuple[str | None, str | None]       # [low, high); None: unbounded


def _key_intervals(node: Node, key: str) -> list[Interval]:
    """Intervals of `key` that hold every entity the filter can match (a superset: the filter still decides)."""
    everything: list[Interval] = [(None, None)]
    kind = node[0]
    if kind == "and":
        return _intersect(_key_intervals(node[1], key), _key_intervals(node[2], key))
    if kind == "or":
        return _key_intervals(node[1], key) + _key_intervals(node[2], key)
    if kind != "cmp":
        return everything
    _, op, left, right = node
    if left == ("name", key) and right[0] == "value" and isinstance(right[1], str):
        value = right[1]
    elif right == ("name", key) and left[0] == "value" and isinstance(left[1], str):
        value, op = left[1], {"gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}.get(op, op)
    else:
        return everything
    after = value + "\x00"                      # the least string above `value`
    return {"eq": [(value, after)], "ge": [(value, None)], "gt": [(after, None)], "lt": [(None, value)],
            "le": [(None, after)]}.get(op, everything)


def _intersect(left: list[Interval], right: list[Interval]) -> list[Interval]:
    out = []
    for low_a, high_a in left:
        for low_b, high_b in right:
            low = max((x for x in (low_a, low_b) if x is not None), default=None)
            high = min((x for x in (high_a, high_b) if x is not None), default=None)
            if low is None or high is None or low < high:
                out.append((low, high))
    return out


# -- the service -------------------------------------------------------------------------------------------------
class TableStore:
    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Partition]] = {}
        self.clock = Clock()

    def table(self, name: str) -> dict[str, Partition]:
        try:
            return self.tables[name.lower()]
        except KeyError:
            raise Refused(404, "TableNotFound", "The table specified does not exist.") from None

    def query(self, name: str, text: str | None, select: list[str] | None, top: int | None,
              next_pk: str | None, next_rk: str | None) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
        matched, more = self.matching(name, text, top, next_pk, next_rk)
        return [entity.wire(pk, rk, select) for pk, rk, entity in matched], more

    def matching(self, name: str, text: str | None, top: int | None, next_pk: str | None,
                 next_rk: str | None) -> tuple[list[tuple[str, str, Entity]], tuple[str, str] | None]:
        """A page of the entities the filter matches, in key order, and where the next page starts (or None)."""
        table = self.table(name)
        node = _FilterParser(text).parse() if text else None
        pks = sorted(table) if node is None else self._partitions(table, node)
        limit = min(top or PAGE, PAGE)
        found: list[tuple[str, str, Entity]] = []
        for pk, rk, entity in self._candidates(table, pks, node, next_pk, next_rk):
            if node is None or _matches(node, entity, pk, rk):
                if len(found) == limit:
                    return found, (pk, rk)
                found.append((pk, rk, entity))
        return found, None

    @staticmethod
    def _partitions(table: dict[str, Partition], node: Node) -> list[str]:
        intervals = _key_intervals(node, "PartitionKey")
        if all(low is not None and high == low + "\x00" for low, high in intervals):
            return sorted({low for low, _ in intervals if low in table})
        return sorted(table)

    @staticmethod
    def _candidates(table: dict[str, Partition], pks: list[str], node: Node | None, next_pk: str | None,
                    next_rk: str | None) -> Iterator[tuple[str, str, Entity]]:
        intervals = _key_intervals(node, "RowKey") if node is not None else [(None, None)]
        intervals = sorted(set(intervals), key=lambda i: (i[0] or "", i[1] is None, i[1] or ""))
        for pk in pks:
            if next_pk is not None and pk < next_pk:
                continue
            partition = table.get(pk)
            if partition is None:
                continue
            keys = partition.keys()
            seen: set[str] = set()
            for low, high in intervals:
                start = 0 if low is None else bisect.bisect_left(keys, low)
                if next_pk == pk and next_rk is not None:
                    start = max(start, bisect.bisect_left(keys, next_rk))
                end = len(keys) if high is None else bisect.bisect_left(keys, high)
                for rk in keys[start:end]:
                    if rk not in seen:
                        seen.add(rk)
                        yield pk, rk, partition.rows[rk]

    def get(self, name: str, pk: str, rk: str) -> Entity:
        entity = self.table(name).get(pk, Partition()).rows.get(rk)
        if entity is None:
            raise Refused(404, "ResourceNotFound", "The specified resource does not exist.")
        return entity

    def write(self, tables: dict[str, Partition], method: str, pk: str, rk: str, if_match: str | None,
              body: dict[str, Any] | None) -> Entity | None:
        """One entity operation on `tables` (a table, or a batch's working copy of it); the entity written, or None."""
        partition = tables.setdefault(pk, Partition())
        current = partition.rows.get(rk)
        if method == "DELETE":
            self._check(current, if_match or "*")
            partition.remove(rk)
            return None
        if method == "POST" and current is not None:
            raise Refused(409, "EntityAlreadyExists", "The specified entity already exists.")
        if if_match is not None:
            self._check(current, if_match)
        properties = _properties(body or {}, pk, rk)
        if method in ("MERGE", "PATCH") and current is not None:
            properties = {**current.properties, **properties}
        entity = Entity(properties, "", self.clock.next())
        entity.etag = "W/\"datetime'" + entity.timestamp.replace(":", "%3A") + "'\""
        partition.put(rk, entity)
        return entity

    @staticmethod
    def _check(current: Entity | None, if_match: str) -> None:
        if current is None:
            raise Refused(404, "ResourceNotFound", "The specified resource does not exist.")
        if if_match != "*" and if_match != current.etag:
            raise Refused(412, "UpdateConditionNotSatisfied", "The update condition specified in the request was not satisfied.")


def _properties(body: dict[str, Any], pk: str, rk: str) -> dict[str, Any]:
    if len(pk.encode("utf-16-le")) > 2048 or len(rk.encode("utf-16-le")) > 2048:
        raise Refused(400, "KeyValueTooLarge", "The key value is larger than 1 KiB.")
    if any(c in key for key in (pk, rk) for c in "/\\#?") or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in pk + rk):
        raise Refused(400, "OutOfRangeInput", "One of the request inputs is out of range.")
    out = {k: v for k, v in body.items() if k not in ("PartitionKey", "RowKey", "Timestamp", "odata.etag", "odata.metadata")
           and not k.startswith(("PartitionKey@", "RowKey@", "Timestamp@"))
           and not (k.endswith("@odata.type") and v in ("Edm.String", "Edm.Boolean", "Edm.Int32"))}
    if len([k for k in out if "@" not in k]) > 252:
        raise Refused(400, "TooManyProperties", "The entity contains more properties than allowed.")
    return out


def _error(status: int, code: str, message: str) -> tuple[dict[str, str], bytes]:
    text = f"{message}\nRequestId:{uuid.uuid4()}\nTime:{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z"
    body = json.dumps({"odata.error": {"code": code, "message": {"lang": "en-US", "value": text}}}).encode()
    return {"x-ms-error-code": code, "Content-Type": "application/json;odata=minimalmetadata;streaming=true;charset=utf-8"}, body


def _token(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=") or "-"


def _untoken(value: str) -> str:
    return "" if value == "-" else base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()


class TableService:
    def __init__(self, store: TableStore | None = None):
        self.store = store or TableStore()

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.route("*", "/{account}/{rest:.*}", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        raw = request.raw_path.split("?", 1)[0]
        rest = raw.split("/", 2)[2] if raw.count("/") >= 2 else ""
        base = f"{request.scheme}://{request.host}/{request.match_info['account']}"
        try:
            if rest == "$batch" and request.method == "POST":
                return await self._batch(request, base)
            body = await request.read()
            status, headers, content = self.operation(request.method, rest, dict(request.headers), body, request.rel_url.raw_query_string, base)
            return web.Response(status=status, headers=headers, body=content)
        except Refused as exc:
            headers, content = _error(exc.status, exc.code, exc.message)
            return web.Response(status=exc.status, headers=headers, body=content)

    def operation(self, method: str, rest: str, headers: dict[str, str], body: bytes, query: str,
                  base: str, tables: dict[str, Partition] | None = None) -> tuple[int, dict[str, str], bytes]:
        store = self.store
        if rest == "Tables" and method == "POST":
            name = json.loads(body or b"{}").get("TableName", "")
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,62}", name):
                raise Refused(400, "InvalidResourceName", "The specifed resource name contains invalid characters.")
            if name.lower() in store.tables:
                raise Refused(409, "TableAlreadyExists", "The table specified already exists.")
            store.tables[name.lower()] = {}
            return self._created(headers, {"odata.metadata": f"{base}/$metadata#Tables/@Element", "TableName": name})
        if (one := _TABLES_ONE.match(unquote(rest))) and method == "DELETE":
            store.table(one["table"])
            del store.tables[one["table"].lower()]
            return 204, {}, b""
        if (entity_path := _ENTITY_PATH.match(rest)) is not None:
            name, pk, rk = entity_path["table"], _key(entity_path["pk"]), _key(entity_path["rk"])
            if method == "GET":
                entity = store.get(name, pk, rk)
                return 200, {"Content-Type": "application/json;odata=minimalmetadata", "ETag": entity.etag}, json.dumps(
                    {"odata.metadata": f"{base}/$metadata#{name}/@Element", **entity.wire(pk, rk)}).encode()
            if method not in ("PUT", "MERGE", "PATCH", "DELETE"):
                raise Refused(405, "UnsupportedHttpVerb", "The resource doesn't support the specified HTTP verb.")
            written = store.write(tables if tables is not None else store.table(name), method, pk, rk, _if_match(headers),
                                  _json(body) if method != "DELETE" else None)
            return 204, ({"ETag": written.etag} if written is not None else {}), b""
        if (table_path := _TABLE_PATH.match(rest)) is not None:
            name = table_path["table"]
            if method == "POST":
                document = _json(body)
                pk, rk = str(document.get("PartitionKey", "")), str(document.get("RowKey", ""))
                written = store.write(tables if tables is not None else store.table(name), "POST", pk, rk, None, document)
                assert written is not None
                answer = {"odata.metadata": f"{base}/$metadata#{name}/@Element", **written.wire(pk, rk)}
                status, out_headers, content = self._created(headers, answer)
                return status, {**out_headers, "ETag": written.etag}, content
            if method == "GET":
                return self._query(name, query, base)
        raise Refused(400, "InvalidUri", "The requested URI does not represent any resource on the server.")

    def _query(self, name: str, query: str, base: str) -> tuple[int, dict[str, str], bytes]:
        params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        select = [s.strip() for s in params["$select"].split(",")] if params.get("$select") else None
        top = int(params["$top"]) if params.get("$top") else None
        next_pk = _untoken(params["NextPartitionKey"]) if "NextPartitionKey" in params else None
        next_rk = _untoken(params["NextRowKey"]) if "NextRowKey" in params else None
        matched, more = self.store.matching(name, params.get("$filter"), top, next_pk, next_rk)
        headers = {"Content-Type": "application/json;odata=minimalmetadata"}
        if more is not None:
            headers["x-ms-continuation-NextPartitionKey"], headers["x-ms-continuation-NextRowKey"] = _token(more[0]), _token(more[1])
        rows = ", ".join(entity.encoded(pk, rk) if select is None else json.dumps(entity.wire(pk, rk, select)) for pk, rk, entity in matched)
        return 200, headers, f'{{"odata.metadata": {json.dumps(f"{base}/$metadata#{name}")}, "value": [{rows}]}}'.encode()

    @staticmethod
    def _created(headers: dict[str, str], answer: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        if "return-no-content" in {k.lower(): v for k, v in headers.items()}.get("prefer", ""):
            return 204, {"Preference-Applied": "return-no-content"}, b""
        return 201, {"Content-Type": "application/json;odata=minimalmetadata", "Preference-Applied": "return-content"}, json.dumps(answer).encode()

    async def _batch(self, request: web.Request, base: str) -> web.Response:
        body = await request.read()
        requests = _changeset(request.headers.get("Content-Type", ""), body)
        if len(requests) > TRANSACTION_LIMIT:
            raise Refused(400, "InvalidInput", "The batch request operation exceeds the maximum 100 changes per change set.")
        answers: list[bytes] = []
        working: dict[str, dict[str, Partition]] = {}
        touched: set[tuple[str, str, str]] = set()
        for index, (content_id, method, url, headers, part_body) in enumerate(requests):
            rest = urlsplit(url).path.split("/", 2)[2]
            try:
                target = _ENTITY_PATH.match(rest) or _TABLE_PATH.match(rest)
                if target is None:
                    raise Refused(400, "InvalidInput", "An operation of the batch addresses no entity.")
                name = target["table"]
                if "pk" in target.groupdict():
                    pk, rk = _key(target["pk"]), _key(target["rk"])
                else:
                    document = _json(part_body)
                    pk, rk = str(document.get("PartitionKey", "")), str(document.get("RowKey", ""))
                if touched and pk not in {p for _, p, _ in touched}:
                    raise Refused(400, "CommandsInBatchActOnDifferentPartitions",
                                  "All commands in a batch must operate on same entity group.")
                if (name.lower(), pk, rk) in touched:
                    raise Refused(400, "InvalidDuplicateRow", "The batch request contains multiple changes with same row key.")
                touched.add((name.lower(), pk, rk))
                tables = working.setdefault(name.lower(), {})      # the batch writes to copies of what it touches
                if pk not in tables:
                    original = self.store.table(name).get(pk)
                    tables[pk] = original.copy() if original is not None else Partition()
                status, out_headers, content = self.operation(method, rest, headers, part_body, "", base, tables)
            except Refused as exc:
                error_headers, content = _error(exc.status, exc.code, f"{index}:{exc.message}")
                return self._batch_answer([_part(exc.status, {"Content-ID": content_id or str(index), **error_headers}, content)])
            answers.append(_part(status, {**({"Content-ID": content_id} if content_id else {}), **out_headers}, content))
        for name, partitions in working.items():              # all or nothing: the copies replace the partitions
            self.store.tables[name].update(partitions)
        return self._batch_answer(answers)

    @staticmethod
    def _batch_answer(parts: list[bytes]) -> web.Response:
        batch, changeset = f"batchresponse_{uuid.uuid4()}", f"changesetresponse_{uuid.uuid4()}"
        inner = b"".join(f"--{changeset}\r\n".encode() + p for p in parts) + f"--{changeset}--\r\n".encode()
        body = (f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode() + inner + f"--{batch}--\r\n".encode())
        return web.Response(status=202, body=body, headers={"Content-Type": f"multipart/mixed; boundary={batch}"})


_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 404: "Not Found", 409: "Conflict",
            412: "Precondition Failed", 413: "Request Entity Too Large"}


def _part(status: int, headers: dict[str, str], body: bytes) -> bytes:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary", "", f"HTTP/1.1 {status} {_REASONS.get(status, '')}",
             "DataServiceVersion: 3.0;", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode() + body + b"\r\n"


def _changeset(content_type: str, body: bytes) -> list[tuple[str, str, str, dict[str, str], bytes]]:
    """The requests of a batch's one changeset: (Content-ID, method, URL, headers, body)."""
    outer = re.search(r"boundary=([^;\s]+)", content_type)
    inner = re.search(rb"boundary=([^;\s]+)", body)
    if outer is None or inner is None:
        raise Refused(400, "InvalidInput", "The batch request body is not a multipart changeset.")
    requests = []
    for chunk in body.split(b"--" + inner.group(1))[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, http = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        content_id = next((line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n") if line.lower().startswith(b"content-id:")), "")
        request_head, _, part_body = http.partition(b"\r\n\r\n")
        lines = request_head.decode().split("\r\n")
        method, url, _ = lines[0].split(" ", 2)
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        requests.append((content_id, method, url, headers, part_body.rstrip(b"\r\n")))
    if not requests:
        raise Refused(400, "InvalidInput", "The batch request holds no operation.")
    return requests


def _key(literal: str) -> str:
    return unquote(literal).replace("''", "'")


def _if_match(headers: dict[str, str]) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == "if-match"), None)


def _json(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        raise Refused(400, "InvalidInput", "The request body is not valid JSON.") from None
    if not isinstance(document, dict):
        raise Refused(400, "InvalidInput", "The request body is not an entity.")
    return document


def build_app(store: TableStore | None = None) -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024 + 64 * 1024)   # a transaction's payload: at most 4 MiB
    app.add_routes(TableService(store).routes())
    return app


def main(argv: list[str] | None = None) -> int:
    from .__main__ import loopback, serve
    parser = argparse.ArgumentParser(prog="python -m devtenant.tablestore", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", type=loopback, default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, build_app(), "tablestore"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
