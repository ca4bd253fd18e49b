"""Table round trips per mailbox activity, counted from outside the product: the bench's Activities build their
Table client with azure-core's `raw_request_hook` (the SDK's documented per-request callback) set to
`count_request`, and each timed mailbox activity runs inside `counting()`.

A request counts for the activity in whose context it was sent. Concurrent syncs' status merges go out together in
one request (sync/adapters/tables/registry.py) sent from the task of the first of them, so each such request counts
once, for one of the mailboxes it carried: the mean over the touched mailboxes is exact, one mailbox's count is not.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Counter:
    requests: int = 0


_CURRENT: contextvars.ContextVar[Counter | None] = contextvars.ContextVar("bench_table_requests", default=None)


def count_request(_request: Any) -> None:
    counter = _CURRENT.get()
    if counter is not None:
        counter.requests += 1


@contextlib.contextmanager
def counting() -> Iterator[Counter]:
    counter = Counter()
    token = _CURRENT.set(counter)
    try:
        yield counter
    finally:
        _CURRENT.reset(token)
