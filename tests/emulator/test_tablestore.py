"""The benchmarks' Table Storage double (devtenant/tablestore.py). The contract suites hold it to what they hold
Azurite to (tests/contract: the state store and the wire format); these tests cover what is its own: that reading
only the partitions and RowKey ranges a filter can match never drops a row the filter matches, and the refusals
Learn documents where Azurite is lenient ("Performing entity group transactions")."""
from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError
from azure.data.tables.aio import TableServiceClient
from hypothesis import given, settings
from hypothesis import strategies as st

from devtenant.tablestore import PAGE, Entity, TableStore, _FilterParser, _matches
from sync.adapters import table_wire

KEYS = st.text(alphabet="a^|}", min_size=0, max_size=3)      # "^", "|" and "}" bound the stores' key ranges


def _comparison() -> st.SearchStrategy[str]:
    literal = KEYS.map(lambda k: "'" + k + "'")
    return st.builds(lambda name, op, value, flipped: f"{value} {op} {name}" if flipped else f"{name} {op} {value}",
                     st.sampled_from(["PartitionKey", "RowKey", "n"]), st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le"]),
                     literal, st.booleans())


FILTERS = st.recursive(_comparison(), lambda inner: st.one_of(
    st.builds(lambda a, b, op: f"({a}) {op} ({b})", inner, inner, st.sampled_from(["and", "or"])),
    st.builds(lambda a: f"not ({a})", inner)), max_leaves=6)


@settings(max_examples=400)
@given(rows=st.sets(st.tuples(KEYS, KEYS), max_size=25), expression=FILTERS)
def test_a_query_reads_every_row_its_filter_matches_and_no_other(rows, expression):
    store = TableStore()
    store.tables["t"] = {}
    for pk, rk in rows:
        store.write(store.tables["t"], "PUT", pk, rk, None, {"n": pk + rk})
    node = _FilterParser(expression).parse()
    expected = sorted((pk, rk) for pk, rk in rows if _matches(node, Entity({"n": pk + rk}, "", ""), pk, rk))
    found, more = store.query("t", expression, None, None, None, None)
    assert more is None and [(r["PartitionKey"], r["RowKey"]) for r in found] == expected


def test_pages_continue_where_the_last_ended():
    store = TableStore()
    store.tables["t"] = {}
    for i in range(PAGE + 5):
        store.write(store.tables["t"], "PUT", "p" if i % 2 else "q", f"r{i:05d}", None, {})
    first, more = store.query("t", "RowKey ge 'r'", None, None, None, None)
    assert len(first) == PAGE and more is not None
    rest, end = store.query("t", "RowKey ge 'r'", None, None, *more)
    assert end is None and len(rest) == 5
    assert len({(r["PartitionKey"], r["RowKey"]) for r in first + rest}) == PAGE + 5


@pytest.fixture
async def double_table(tablestore_stack, table_prefix):
    """A new table on the double, through the SDK's client."""
    service = TableServiceClient.from_connection_string(tablestore_stack.table_connection_string)
    table = service.get_table_client(table_prefix)
    await service.create_table(table.table_name)
    try:
        yield table
    finally:
        await table.close()
        await service.close()


@pytest.mark.stack
async def test_a_transaction_over_two_partitions_or_naming_a_row_twice_is_refused_and_writes_nothing(double_table):
    table = double_table
    for operations, code in [([("upsert", {"PartitionKey": "a", "RowKey": "1"}), ("upsert", {"PartitionKey": "b", "RowKey": "1"})],
                              "CommandsInBatchActOnDifferentPartitions"),
                             ([("upsert", {"PartitionKey": "a", "RowKey": "1"}), ("delete", {"PartitionKey": "a", "RowKey": "1"})],
                              "InvalidDuplicateRow")]:
        with pytest.raises(table_wire.TransactionFailed) as refused:     # the SDK would not send the first
            await table_wire.submit(table, operations)
        assert refused.value.error_code == code and refused.value.status_code == 400
    assert [e async for e in table.list_entities()] == []
    with pytest.raises(HttpResponseError) as bad:
        [e async for e in table.query_entities("RowKey gee 'a'")]
    assert bad.value.status_code == 400


@pytest.mark.stack
async def test_a_query_answers_an_entity_as_last_written_though_its_json_is_kept(double_table):
    table = double_table
    await table_wire.send_one(table, ("upsert", {"PartitionKey": "a", "RowKey": "1", "n": "first"}))
    first = [e async for e in table_wire.query(table, "PartitionKey eq @pk", {"pk": "a"})]
    await table_wire.send_one(table, ("upsert", {"PartitionKey": "a", "RowKey": "1", "n": "second"}))
    second = [e async for e in table_wire.query(table, "PartitionKey eq @pk", {"pk": "a"})]
    selected = [e async for e in table.query_entities("PartitionKey eq 'a'", select=["n"])]
    assert [e["n"] for e in first] == ["first"] and [e["n"] for e in second] == ["second"]
    assert first[0].metadata["etag"] != second[0].metadata["etag"]
    assert [dict(e) for e in selected] == [{"n": "second"}]
