"""The emulator's filter evaluation: a query works its filter out once (`odata.compiled`) and applies it to every
row; it must answer exactly as the tree walk (`odata.evaluate`) does, errors included."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from devtenant import odata

WHEN = datetime(2026, 12, 7, 8, tzinfo=UTC)
FILTERS = [
    "starttime lt 2026-12-08T00:00:00Z and endtime gt 2026-12-07T09:00:00Z",
    "(starttime ge 2026-12-07T08:00:00Z or statecode eq 1) and not (name eq 'B')",
    "name ne null and statecode le 0",
    "name gt 3",                                              # text against a number: the same error either way
    "contains(name, 'a') or startswith(name, 'B')",
    "id eq 'E616FA54-3B61-4663-9D05-52B671AE9CE3' or id eq 'x'",
]


def _answer(function, *args):
    try:
        return ("value", bool(function(*args)))
    except odata.ODataSyntaxError as exc:
        return ("error", str(exc))


rows = st.fixed_dictionaries({
    "starttime": st.one_of(st.none(), st.integers(-48, 48).map(lambda h: (WHEN + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ"))),
    "endtime": st.one_of(st.none(), st.integers(-48, 48).map(lambda h: (WHEN + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ"))),
    "statecode": st.one_of(st.none(), st.integers(0, 2)),
    "name": st.one_of(st.none(), st.sampled_from(["A", "B", "abc", "Bob"])),
    "id": st.sampled_from(["e616fa54-3b61-4663-9d05-52b671ae9ce3", "x", "y"]),
})


@given(row=rows, text=st.sampled_from(FILTERS))
def test_a_compiled_filter_answers_as_the_tree_walk_does(row, text):
    expr = odata.parse_filter(text)

    def resolve(parts):
        return row.get(parts[-1])

    assert _answer(odata.compiled(expr, odata.BASIC_FUNCTIONS), resolve) == _answer(odata.evaluate, expr, resolve, odata.BASIC_FUNCTIONS)
