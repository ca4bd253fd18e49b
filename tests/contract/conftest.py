"""Fixtures that give each contract suite both implementations of a port."""
from __future__ import annotations

import pytest

from sync.adapters.memory import MemoryState
from sync.adapters.tables import TableState


@pytest.fixture(params=["memory", "azurite", "tablestore"])
async def state_store(request, table_prefix):
    if request.param == "memory":
        yield MemoryState()
        return
    stack = request.getfixturevalue("stack" if request.param == "azurite" else "tablestore_stack")
    store = TableState.from_settings(stack.table_connection_string, None, None, table_prefix)
    await store.ensure_tables()
    try:
        yield store
    finally:
        await store.close()
