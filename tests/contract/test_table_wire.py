"""The direct transaction encoder against Azurite (and the benchmarks' Table double): every operation the stores send, every value type and key they
use, and every refusal, give the rows and errors the SDK's own `submit_transaction` gives (Learn, "Performing
entity group transactions"). It reaches the TableClient's own azure-core pipeline through private attributes of the
pinned azure-data-tables (`table_wire._send`); this suite is what notices if an upgrade moves them, and the request-id
test that every request still runs through the client's policies (its raw_request_hook sees each one)."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from azure.core import MatchConditions
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableServiceClient

from sync.adapters import table_wire
from sync.adapters.tables import key

pytestmark = pytest.mark.stack
HOSTILE = key("https://contoso.crm.dynamics.com/x|o'brien+1@x.example#?&=;:~!$()*,%")    # as the stores key any value


@pytest.fixture
async def tables(table_connection_string, table_prefix):
    service = TableServiceClient.from_connection_string(table_connection_string)
    fast, sdk = (service.get_table_client(table_prefix + name) for name in ("fast", "sdk"))
    for client in (fast, sdk):
        await service.create_table(client.table_name)
    yield fast, sdk
    for client in (fast, sdk):
        await client.close()
    await service.close()


async def rows_of(client) -> list[dict]:
    return sorted([dict(e) async for e in client.list_entities()], key=lambda r: r["RowKey"])


async def test_every_operation_and_value_type_writes_what_the_sdk_writes(tables):
    fast, sdk = tables
    values = {"s": "h\u00e9 <b>&amp;</b> \"q\"", "yes": True, "no": False, "n": 7, "x": 1.5, "when": datetime(2026, 12, 1, tzinfo=UTC),
              "empty": ""}
    for client in (fast, sdk):
        await client.create_entity({"PartitionKey": HOSTILE, "RowKey": "replace-me", "old": "gone"})
        await client.create_entity({"PartitionKey": HOSTILE, "RowKey": "merge-me", "kept": "yes"})
        await client.create_entity({"PartitionKey": HOSTILE, "RowKey": "delete-me"})
    for client, send in ((fast, table_wire.submit), (sdk, None)):
        operations = [("create", {"PartitionKey": HOSTILE, "RowKey": HOSTILE, **values}),
                      ("upsert", {"PartitionKey": HOSTILE, "RowKey": "replace-me", "new": 1}, {"mode": UpdateMode.REPLACE}),
                      ("upsert", {"PartitionKey": HOSTILE, "RowKey": "merge-me", "added": 2}, {"mode": UpdateMode.MERGE}),
                      ("delete", {"PartitionKey": HOSTILE, "RowKey": "delete-me"})]
        if send is None:
            await client.submit_transaction(operations)
        else:
            answers = await send(client, operations)
            stored = {r["RowKey"]: r.metadata["etag"] async for r in client.list_entities()}
            assert [a.etag for a in answers[:3]] == [stored[HOSTILE], stored["replace-me"], stored["merge-me"]]
    assert await rows_of(fast) == await rows_of(sdk)
    await table_wire.submit(fast, [("upsert", {"PartitionKey": "p", "RowKey": "big", "big": 2**40}, {"mode": UpdateMode.REPLACE})])
    assert [r["big"].value for r in await rows_of(fast) if r["RowKey"] == "big"] == [2**40]    # Edm.Int64; the SDK refuses a bare int over 32 bits


async def test_a_stale_etag_refuses_the_whole_transaction_with_412_as_the_sdk_does(tables):
    fast, sdk = tables
    for client in (fast, sdk):
        stale = (await client.create_entity({"PartitionKey": "p", "RowKey": "a", "v": 1}))["etag"]
        await client.update_entity({"PartitionKey": "p", "RowKey": "a", "v": 2}, mode=UpdateMode.REPLACE)
        operations = [("create", {"PartitionKey": "p", "RowKey": "b"}),
                      ("update", {"PartitionKey": "p", "RowKey": "a", "v": 3}, {"mode": UpdateMode.REPLACE, "etag": stale,
                                                                            "match_condition": MatchConditions.IfNotModified})]
        with pytest.raises((table_wire.TransactionFailed, TableTransactionError)) as refused:
            if client is fast:
                await table_wire.submit(client, operations)
            else:
                await client.submit_transaction(operations)
        assert refused.value.status_code == 412
        assert [r["RowKey"] for r in await rows_of(client)] == ["a"]          # nothing of it was applied


async def test_a_create_of_an_existing_row_and_a_delete_of_a_missing_one_are_refused(tables):
    fast, _ = tables
    await fast.create_entity({"PartitionKey": "p", "RowKey": "a"})
    with pytest.raises(table_wire.TransactionFailed) as exists:
        await table_wire.submit(fast, [("create", {"PartitionKey": "p", "RowKey": "a"})])
    assert exists.value.status_code == 409 and exists.value.error_code == "EntityAlreadyExists"
    with pytest.raises(table_wire.TransactionFailed) as missing:
        await table_wire.submit(fast, [("delete", {"PartitionKey": "p", "RowKey": "zz"}, {"etag": "W/\"datetime'2020-01-01T00%3A00%3A00Z'\"",
                                                                                          "match_condition": MatchConditions.IfNotModified})])
    assert missing.value.status_code == 404


async def test_a_hundred_operations_in_one_transaction(tables):
    fast, _ = tables
    answers = await table_wire.submit(fast, [("upsert", {"PartitionKey": "p", "RowKey": f"r{i:03d}", "i": i}, {"mode": UpdateMode.REPLACE})
                                              for i in range(100)])
    assert len(answers) == 100 and all(a.status == 204 and a.etag for a in answers)
    assert len(await rows_of(fast)) == 100


async def test_a_value_the_encoder_does_not_write_goes_through_the_sdk(tables):
    fast, _ = tables
    answers = await table_wire.submit(fast, [("upsert", {"PartitionKey": "p", "RowKey": "bytes", "b": b"\x00\x01"}, {"mode": UpdateMode.REPLACE})])
    assert len(answers) == 1 and (await rows_of(fast))[0]["b"] == b"\x00\x01"


async def test_queries_page_on_and_read_what_the_sdk_reads(tables):
    fast, _ = tables
    for start in range(0, 1500, 100):
        await table_wire.submit(fast, [("upsert", {"PartitionKey": HOSTILE, "RowKey": f"r{i:04d}", "i": i, "big": 2**40 + i, "o'k": "it's"},
                                        {"mode": UpdateMode.REPLACE}) for i in range(start, start + 100)])
    found = [r async for r in table_wire.query(fast, "PartitionKey eq @pk and RowKey ge @low", {"pk": HOSTILE, "low": "r0000"})]
    assert len(found) == 1500                                  # more than one page (the service pages at 1,000)
    by_sdk = {e["RowKey"]: e async for e in fast.query_entities("PartitionKey eq @pk", parameters={"pk": HOSTILE})}
    assert all(r.metadata["etag"] == by_sdk[r["RowKey"]].metadata["etag"] for r in found)
    assert found[7]["big"] == 2**40 + 7 and found[7]["i"] == 7 and found[7]["o'k"] == "it's"
    one = await table_wire.get(fast, HOSTILE, "r0007")
    assert one is not None and one["big"] == 2**40 + 7 and one.metadata["etag"] == by_sdk["r0007"].metadata["etag"]
    assert await table_wire.get(fast, HOSTILE, "missing") is None
    quoted = [r async for r in table_wire.query(fast, "PartitionKey eq @pk and RowKey eq @rk", {"pk": HOSTILE, "rk": "x' or RowKey ne '"})]
    assert quoted == []                                        # a quote in a value stays inside its literal


async def test_single_operations_write_and_refuse_as_the_sdk_does(tables):
    fast, sdk = tables
    entity = {"PartitionKey": HOSTILE, "RowKey": HOSTILE, "text": "é'x", "n": 7, "flag": True}
    created = await table_wire.send_one(fast, ("create", entity))
    await sdk.create_entity(entity)
    assert created.etag and await rows_of(fast) == await rows_of(sdk)
    with pytest.raises(table_wire.TransactionFailed) as exists:
        await table_wire.send_one(fast, ("create", entity))
    assert exists.value.status_code == 409
    merged = await table_wire.send_one(fast, ("upsert", {**entity, "text": "merged", "extra": "x"}, {"mode": UpdateMode.MERGE}))
    await sdk.upsert_entity({**entity, "text": "merged", "extra": "x"}, mode=UpdateMode.MERGE)
    assert await rows_of(fast) == await rows_of(sdk)
    with pytest.raises(table_wire.TransactionFailed) as stale:              # the etag of before the merge
        await table_wire.send_one(fast, ("update", entity, {"mode": UpdateMode.REPLACE, "etag": created.etag,
                                                            "match_condition": MatchConditions.IfNotModified}))
    assert stale.value.status_code == 412
    await table_wire.send_one(fast, ("delete", entity, {"etag": merged.etag, "match_condition": MatchConditions.IfNotModified}))
    assert await rows_of(fast) == []
    with pytest.raises(table_wire.TransactionFailed) as missing:
        await table_wire.send_one(fast, ("delete", entity))
    assert missing.value.status_code == 404


async def test_every_request_names_itself_with_its_own_client_request_id(table_connection_string, table_prefix, monkeypatch):
    """Each request carries a fresh x-ms-client-request-id (Storage logs it), set here, so azure-core's RequestIdPolicy
    never makes its uuid1 for these requests."""
    import uuid
    made_by_the_policy = []
    real_uuid1 = uuid.uuid1
    monkeypatch.setattr(uuid, "uuid1", lambda *a, **k: made_by_the_policy.append(1) or real_uuid1(*a, **k))
    sent: list[str | None] = []
    service = TableServiceClient.from_connection_string(
        table_connection_string, raw_request_hook=lambda request: sent.append(request.http_request.headers.get("x-ms-client-request-id")))
    client = service.get_table_client(table_prefix + "ids")
    await service.create_table(client.table_name)
    sent.clear()
    made_by_the_policy.clear()
    await table_wire.submit(client, [("upsert", {"PartitionKey": "p", "RowKey": "a", "v": 1})])
    await table_wire.send_one(client, ("upsert", {"PartitionKey": "p", "RowKey": "b", "v": 2}))
    assert [r["RowKey"] async for r in table_wire.query(client, "PartitionKey eq @pk", {"pk": "p"})] == ["a", "b"]
    assert await table_wire.get(client, "p", "a") is not None
    await client.close()
    await service.close()
    assert len(sent) == 4 and all(sent) and len(set(sent)) == 4
    assert made_by_the_policy == []


def test_keys_and_key_literals_escape_as_quote_does():
    """key(), the address literal and a query's parameters take a C-level path for ASCII; it must give exactly what
    quote() gives."""
    from urllib.parse import quote

    from hypothesis import given
    from hypothesis import strategies as st

    from sync.adapters.tables.keys import KEY_SAFE

    @given(st.text(alphabet=st.characters(max_codepoint=0x2FF), max_size=40))
    def same(value: str) -> None:
        assert key(value) == quote(value.lower(), safe=KEY_SAFE)
        assert table_wire._key_literal(value) == quote(value.replace("'", "''"), safe="")
        assert table_wire._quoted(value) == quote(value, safe="")

    same()


def test_the_one_private_sdk_attribute_is_pinned_to_the_locked_sdk_version():
    """table_wire._send runs requests through `TableClient._client._client._pipeline` (azure-data-tables has no public
    raw-request method). That path is the SDK's private layout: this test names the version it was read from, as
    requirements.txt locks it, so an upgrade that moves it fails here first, and checks the path is that pipeline."""
    import re as _re
    from importlib.metadata import version

    from azure.core.pipeline import AsyncPipeline
    from azure.data.tables.aio import TableClient

    from tests.conftest import REPO
    locked = _re.search(r"^azure-data-tables==([\d.]+)", (REPO / "requirements.txt").read_text(), _re.M)
    assert locked is not None and version("azure-data-tables") == locked.group(1) == "12.7.0"
    client = TableClient.from_connection_string("UseDevelopmentStorage=true", "pinned")
    assert isinstance(client._client._client._pipeline, AsyncPipeline)
