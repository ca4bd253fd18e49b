"""Group commit: merges that concurrent callers make into the rows of one partition go out together.

Every mailbox's sync ends with a merge into its mailbox row, and all mailbox rows share one partition; with dozens
of syncs in flight, one request per merge is a quarter of a small cycle's Table requests. Here a merge that finds
nothing in flight goes at the next turn of the event loop, with whatever else arrived in that turn; while a
transaction is in flight, the merges that arrive wait and go together in the next, up to the transaction limit.
Each caller returns when the request holding its merge is done, or raises what that request raised. Merges into
one row are combined in the order they were made, so the row ends as if they had been sent one after another.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

Send = Callable[[dict[str, dict[str, Any]]], Awaitable[int]]     # row key -> fields; returns the requests it made


class GroupCommit:
    def __init__(self, send: Send, limit: int = 100) -> None:
        self._send, self._limit = send, limit
        self._waiting: dict[str, tuple[dict[str, Any], list[asyncio.Future[float]]]] = {}
        self._draining: asyncio.Task[None] | None = None

    async def merge(self, row_key: str, fields: Mapping[str, Any]) -> float:
        """Merges `fields` into the row; returns this merge's share of the requests that carried it."""
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        merged, callers = self._waiting.setdefault(row_key, ({}, []))
        merged.update(fields)
        callers.append(done)
        if self._draining is None or self._draining.done():
            self._draining = asyncio.get_running_loop().create_task(self._drain())
        return await done

    async def _drain(self) -> None:
        await asyncio.sleep(0)                         # the merges made in this turn of the loop go together
        while self._waiting:
            batch = dict(list(self._waiting.items())[:self._limit])
            for row_key in batch:
                del self._waiting[row_key]
            callers = [f for _, futures in batch.values() for f in futures]
            try:
                requests = await self._send({row_key: fields for row_key, (fields, _) in batch.items()})
            except Exception as exc:                   # each caller raises it; the next batch still goes
                for future in callers:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for future in callers:
                if not future.done():
                    future.set_result(requests / len(callers))
