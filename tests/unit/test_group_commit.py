"""Group commit (sync/adapters/group_commit.py): concurrent merges into one partition's rows go out together."""
from __future__ import annotations

import asyncio

import pytest

from sync.adapters.group_commit import GroupCommit


class Partition:
    """Records what each send carried; a send can be held open, or made to fail."""

    def __init__(self) -> None:
        self.sends: list[dict[str, dict]] = []
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def send(self, rows: dict[str, dict]) -> int:
        self.sends.append(rows)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return 2


async def test_merges_made_together_go_in_one_send_and_share_its_requests():
    partition = Partition()
    commit = GroupCommit(partition.send, limit=100)
    shares = await asyncio.gather(*(commit.merge(f"r{i}", {"n": i}) for i in range(5)))
    assert partition.sends == [{f"r{i}": {"n": i} for i in range(5)}] and sum(shares) == pytest.approx(2)


async def test_merges_arriving_while_a_send_is_in_flight_wait_for_the_next_one_and_the_limit_splits_them():
    partition = Partition()
    partition.gate = asyncio.Event()
    commit = GroupCommit(partition.send, limit=3)
    first = asyncio.ensure_future(commit.merge("a", {"x": 1}))
    await asyncio.sleep(0.01)                                   # the first send is in flight
    later = [asyncio.ensure_future(commit.merge(k, {"x": 2})) for k in ("b", "c", "d", "a")]
    await asyncio.sleep(0.01)
    assert [list(rows) for rows in partition.sends] == [["a"]]
    partition.gate.set()
    await asyncio.gather(first, *later)
    assert [list(rows) for rows in partition.sends] == [["a"], ["b", "c", "d"], ["a"]]


async def test_merges_into_one_row_combine_in_the_order_made():
    partition = Partition()
    commit = GroupCommit(partition.send)
    await asyncio.gather(commit.merge("a", {"x": 1, "y": 1}), commit.merge("a", {"x": 2}))
    assert partition.sends == [{"a": {"x": 2, "y": 1}}]


async def test_a_failed_send_raises_in_every_caller_it_carried_and_the_next_send_still_goes():
    partition = Partition()
    partition.fail = RuntimeError("503")
    commit = GroupCommit(partition.send)
    results = await asyncio.gather(commit.merge("a", {}), commit.merge("b", {}), return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    partition.fail = None
    assert await commit.merge("c", {}) == 2
