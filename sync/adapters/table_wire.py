"""Table Storage transactions and queries, encoded and read directly in their documented wire format.

azure-data-tables builds each transaction as nested `email` MIME messages and parses the answer with the `email`
parser; for this service that was half of the sync's CPU. The format is small and fixed (Learn, "Performing entity
group transactions", Table service REST API): one `multipart/mixed` batch holding one changeset of HTTP requests
to a single partition, answered by one part per request in order, or by the single part of the request that failed
(its message starts with the request's index). This module writes and reads exactly that, and sends it through the
TableClient's own azure-core pipeline, so authentication (SharedKey for Azurite, Entra tokens in Azure), retries,
tracing and logging are the SDK's. An entity with a value type this encoder does not write goes through the SDK's
own `submit_transaction`, so nothing is ever sent wrong.

Queries likewise ("Query Entities": `$filter`, JSON with minimal metadata, continuation by the
x-ms-continuation-NextPartitionKey / NextRowKey headers): the SDK's generated deserializer walked every property
of every row through its model layer, the largest cost after transactions. Rows come back as plain dicts with
their ETag in `metadata`, Edm.Int64 values as ints; every value this service stores is a string, a boolean or an
integer.
"""
from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.core.rest import AsyncHttpResponse, HttpRequest
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

INT32 = range(-(2**31), 2**31)
STATUS_LINE = re.compile(rb"^HTTP/1\.1 (\d{3})", re.M)
ETAG_LINE = re.compile(rb"^ETag: *(.+?)\r?$", re.M | re.I)
BOUNDARY = re.compile(r"boundary=([^;\s]+)")
_URL_ESCAPES = {c: quote(chr(c), safe="") for c in range(128) if quote(chr(c), safe="") != chr(c)}
_URL_ESCAPED = re.compile("[" + re.escape("".join(map(chr, _URL_ESCAPES))) + "]")
_URL_ESCAPE_OF = {chr(c): escape for c, escape in _URL_ESCAPES.items()}


class TransactionFailed(HttpResponseError):
    """The transaction was refused as a whole; `status_code` and `error_code` are those of the failing request."""

    def __init__(self, status: int, code: str | None, message: str):
        super().__init__(message=f"{message} (ErrorCode: {code})")
        self.status_code, self.error_code = status, code


class NotEncodable(Exception):
    """A value this encoder does not write; the SDK's own transaction path takes the operations instead."""


@dataclass(frozen=True)
class Answer:
    status: int
    etag: str | None


def _properties(entity: dict[str, Any]) -> dict[str, Any]:
    """The entity as Table JSON: strings, booleans and 32-bit integers as they are; other types with their Edm type."""
    out: dict[str, Any] = {}
    for name, value in entity.items():
        if value is None:
            continue
        if isinstance(value, (bool, str)) or (isinstance(value, int) and value in INT32):
            out[name] = value
        elif isinstance(value, int):
            out[name], out[f"{name}@odata.type"] = str(value), "Edm.Int64"
        elif isinstance(value, float):
            out[name], out[f"{name}@odata.type"] = value, "Edm.Double"
        elif isinstance(value, datetime):
            utc = value.astimezone(UTC) if value.tzinfo else value
            out[name], out[f"{name}@odata.type"] = utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "Edm.DateTime"
        else:
            raise NotEncodable(type(value).__name__)
    return out


def _quoted(text: str) -> str:
    """`quote(text, safe="")`, in one C-level pass for ASCII: it runs for every key of every operation and every
    query's filter."""
    return text.translate(_URL_ESCAPES) if text.isascii() else quote(text, safe="")


def _key_literal(value: str) -> str:
    """A key inside an entity's address: quotes doubled, every reserved character percent-encoded. A key holds
    few of them (the `@` of an address, a prefix's `|`): replacing each match costs less than translating every
    character, which pays off only for a filter's many spaces and quotes (`_quoted`)."""
    doubled = value.replace("'", "''")
    return _URL_ESCAPED.sub(_escape_of, doubled) if doubled.isascii() else quote(doubled, safe="")


def _escape_of(match: re.Match[str]) -> str:
    return _URL_ESCAPE_OF[match.group()]


def _request(base: str, table: str, operation: tuple) -> tuple[str, str, dict[str, str], bytes]:
    kind, entity = operation[0], operation[1]
    options: dict[str, Any] = operation[2] if len(operation) > 2 else {}
    address = f"{base}/{table}(PartitionKey='{_key_literal(entity['PartitionKey'])}',RowKey='{_key_literal(entity['RowKey'])}')"
    etag = options.get("etag") if options.get("match_condition") == MatchConditions.IfNotModified else None
    if kind == "create":
        return "POST", f"{base}/{table}", {"Prefer": "return-no-content"}, json.dumps(_properties(entity)).encode()
    if kind == "delete":
        return "DELETE", address, {"If-Match": etag or "*"}, b""
    merge = options.get("mode", UpdateMode.MERGE) == UpdateMode.MERGE
    body = json.dumps(_properties(entity)).encode()
    if kind == "upsert":                                  # insert or replace / insert or merge: no If-Match
        return ("MERGE" if merge else "PUT"), address, {}, body
    if kind == "update":
        return ("MERGE" if merge else "PUT"), address, {"If-Match": etag or "*"}, body
    raise NotEncodable(f"operation {kind!r}")


def encode(base: str, table: str, operations: Sequence[tuple], batch: str, changeset: str) -> bytes:
    parts: list[bytes] = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode()]
    for index, operation in enumerate(operations):
        method, url, headers, body = _request(base, table, operation)
        lines = [f"--{changeset}", "Content-Type: application/http", "Content-Transfer-Encoding: binary", f"Content-ID: {index}", "",
                 f"{method} {url} HTTP/1.1", "Accept: application/json;odata=minimalmetadata", "DataServiceVersion: 3.0",
                 *(["Content-Type: application/json", f"Content-Length: {len(body)}"] if body else []),
                 *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        parts.append("\r\n".join(lines).encode() + body + b"\r\n")
    parts.append(f"--{changeset}--\r\n\r\n--{batch}--\r\n".encode())
    return b"".join(parts)


def parse(content_type: str, body: bytes, expected: int) -> list[Answer]:
    """The answers of a changeset, in order; raises TransactionFailed for a refused one."""
    found = BOUNDARY.search(content_type)
    if found is None:
        raise TransactionFailed(0, None, "the transaction's answer is not multipart")
    inner = BOUNDARY.search(body.decode("utf-8", "replace"))    # the changeset response's own boundary
    separator = ("--" + inner.group(1)).encode() if inner else ("--" + found.group(1)).encode()
    answers = []
    for chunk in body.split(separator)[1:]:
        status = STATUS_LINE.search(chunk)
        if status is None:
            continue
        code = int(status.group(1))
        if code >= 300:
            raise _refusal(code, chunk)
        etag = ETAG_LINE.search(chunk)
        answers.append(Answer(code, etag.group(1).decode() if etag else None))
    if len(answers) != expected:
        raise TransactionFailed(0, None, f"the transaction answered {len(answers)} of {expected} requests")
    return answers


def _refusal(status: int, chunk: bytes) -> TransactionFailed:
    start = chunk.find(b"{")
    code, message = None, f"the transaction was refused with {status}"
    if start >= 0:
        try:
            error = json.loads(chunk[start:chunk.rfind(b"}") + 1]).get("odata.error", {})
            code, message = error.get("code"), (error.get("message") or {}).get("value", message)
        except (json.JSONDecodeError, AttributeError):
            pass
    return TransactionFailed(status, code, message)


async def submit(client: TableClient, operations: Sequence[tuple]) -> list[Answer]:
    """One transaction (at most 100 operations of one partition), through the client's pipeline."""
    try:
        token = uuid.uuid4()                            # one per transaction: the two boundaries differ by their prefix
        batch, changeset = f"batch_{token}", f"changeset_{token}"
        content = encode(client.url.split("?")[0].rstrip("/"), client.table_name, operations, batch, changeset)
    except NotEncodable:
        metadata = await client.submit_transaction(list(operations))
        return [Answer(204, m.get("etag")) for m in metadata]
    request = HttpRequest("POST", f"{client.url.split('?')[0].rstrip('/')}/$batch", content=content, headers={
        **_headers(client, token), "Content-Type": f"multipart/mixed; boundary={batch}", "Accept": "application/json"})
    response = await _send(client, request)
    if response.status_code != 202:
        raise _refusal(response.status_code, response.content or b"")
    return parse(response.headers.get("Content-Type", ""), response.content, len(operations))


async def send_one(client: TableClient, operation: tuple) -> Answer:
    """One entity operation ("Insert Entity", "Update Entity", "Merge Entity", "Insert Or Replace/Merge Entity",
    "Delete Entity"), written as the same request a transaction holds; raises TransactionFailed when refused."""
    base = client.url.split("?")[0].rstrip("/")
    try:
        method, url, headers, body = _request(base, client.table_name, operation)
    except NotEncodable:
        return (await submit(client, [operation]))[0]
    request = HttpRequest(method, url, content=body or None, headers={
        **_headers(client), **headers, **({"Content-Type": "application/json"} if body else {})})
    response = await _send(client, request)
    if response.status_code >= 300:
        raise _refusal(response.status_code, response.content or b"")
    return Answer(response.status_code, response.headers.get("ETag"))


class Row(dict):
    """An entity as a dict, with its ETag where the SDK's TableEntity keeps it (`metadata["etag"]`)."""

    metadata: dict[str, Any]


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}L" if value not in INT32 else str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _filter(expression: str, parameters: Mapping[str, Any]) -> str:
    """`@name` placeholders replaced by OData literals (strings quoted, quotes doubled), as the SDK substitutes them."""
    return re.sub(r"@(\w+)", lambda m: _literal(parameters[m.group(1)]), expression)


def _row(raw: dict[str, Any]) -> Row:
    row = Row(raw)
    # Minimal metadata annotates only the ETag and the values JSON has no type for ("name@odata.type"); one pass
    # over the names finds them (this runs for every row every query reads).
    for name in [n for n in raw if "odata." in n]:
        kind = row.pop(name)
        if kind == "Edm.Int64" and name.endswith("@odata.type"):
            value = name[:-len("@odata.type")]
            row[value] = int(row[value])
    row.metadata = {"etag": raw.get("odata.etag")}
    return row


async def _send(client: TableClient, request: HttpRequest) -> AsyncHttpResponse:
    """The request through the TableClient's own azure-core pipeline (its policies: authentication, retries, request
    id, tracing, logging; its transport and connections), with the answer read whole. azure-data-tables has no public
    raw-request method; its generated `send_request`, the way in before, runs this same pipeline after a deepcopy of
    the request and a re-parse of its URL, about 7 % of a request's CPU here for nothing (each request is built for
    one send, with an absolute URL). tests/contract/test_table_wire.py holds this to the pinned SDK.
    Streamed, so azure-core decodes no body: a multipart answer is parsed by `parse`, JSON by the caller."""
    pipeline = client._client._client._pipeline
    response = (await pipeline.run(request, stream=True)).http_response
    await response.read()
    return response


def _headers(client: TableClient, request_id: uuid.UUID | None = None) -> dict[str, str]:
    """A request's headers, with its own `x-ms-client-request-id`: azure-core's RequestIdPolicy leaves a request id
    that is set alone, and the one it would make is a `uuid1` (the clock, under a lock), 2 % of a small-change
    cycle's CPU in a py-spy profile. A random one serves the same purpose: it names the request in Storage's logs."""
    return {"Accept": "application/json;odata=minimalmetadata", "x-ms-version": client.api_version, "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx", "x-ms-client-request-id": str(request_id or uuid.uuid4())}


async def get(client: TableClient, partition_key: str, row_key: str) -> Row | None:
    """One entity by its keys ("Query Entities" addressing a single entity), or None when there is none."""
    url = (f"{client.url.split('?')[0].rstrip('/')}/{client.table_name}"
           f"(PartitionKey='{_key_literal(partition_key)}',RowKey='{_key_literal(row_key)}')")
    response = await _send(client, HttpRequest("GET", url, headers=_headers(client)))
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise _refusal(response.status_code, response.content or b"")
    row = _row(json.loads(response.content))
    row.metadata["etag"] = row.metadata.get("etag") or response.headers.get("ETag")
    return row


async def query(client: TableClient, expression: str, parameters: Mapping[str, Any] | None = None,
                select: Sequence[str] | None = None) -> AsyncIterator[Row]:
    """Every row matching the filter, page after page, through the client's pipeline."""
    base = f"{client.url.split('?')[0].rstrip('/')}/{client.table_name}()"
    params = {"$filter": _filter(expression, parameters or {}), **({"$select": ",".join(select)} if select else {})}
    while True:
        # azure-core passes `params` on unescaped; the filter's literals (keys hold escapes such as %2F) must be quoted.
        request = HttpRequest("GET", base + "?" + "&".join(f"{k}={_quoted(v)}" for k, v in params.items()), headers=_headers(client))
        response = await _send(client, request)
        if response.status_code != 200:
            raise _refusal(response.status_code, response.content or b"")
        for raw in json.loads(response.content).get("value", []):
            yield _row(raw)
        next_pk = response.headers.get("x-ms-continuation-NextPartitionKey")
        if not next_pk:
            return
        params = {**params, "NextPartitionKey": next_pk}
        next_rk = response.headers.get("x-ms-continuation-NextRowKey")
        if next_rk:
            params["NextRowKey"] = next_rk
        else:
            params.pop("NextRowKey", None)
