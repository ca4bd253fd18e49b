"""BookingIndex on Table Storage: table `bookingindex`, PK the environment, RK booking|mailbox."""
from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from ...core.domain import Link
from .access import TableAccess
from .keys import Operation, key, upsert
from .rows import index_entity

RANGES_PER_QUERY, QUERY_CONCURRENCY, SCAN_FROM = 7, 16, 1400


class TableBookingIndex:
    def __init__(self, access: TableAccess):
        self.access = access

    async def holders(self, environment: str, booking_ids: Iterable[str]) -> dict[str, set[str]]:
        """A $filter holds at most 15 comparisons (Learn, "Querying tables and entities"): the partition key and 7
        bookings' row key ranges per query, 16 queries at once; past SCAN_FROM ids, one scan of the environment's
        partition reads less."""
        ids = sorted({b.lower() for b in booking_ids})
        if len(ids) > SCAN_FROM:
            wanted = set(ids)
            return {b: m for b, m in (await self.all_holders(environment)).items() if b in wanted}
        found: dict[str, set[str]] = {}
        slots = asyncio.Semaphore(QUERY_CONCURRENCY)

        async def look_up(group: list[str]) -> None:
            ranges = " or ".join(f"(RowKey ge @l{i} and RowKey lt @h{i})" for i in range(len(group)))
            params = {**{f"l{i}": f"{key(b)}|" for i, b in enumerate(group)}, **{f"h{i}": f"{key(b)}}}" for i, b in enumerate(group)}}
            async with slots:
                async for e in self.access.query("bookingindex", key(environment), f"({ranges})", params):
                    found.setdefault(e["booking_id"], set()).add(e["mailbox"])

        await asyncio.gather(*(look_up(ids[i:i + RANGES_PER_QUERY]) for i in range(0, len(ids), RANGES_PER_QUERY)))
        return found

    async def all_holders(self, environment: str) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        async for e in self.access.query("bookingindex", key(environment)):
            found.setdefault(e["booking_id"], set()).add(e["mailbox"])
        return found

    async def add(self, links: Iterable[Link]) -> None:
        by_env: dict[str, list[Operation]] = {}
        for link in links:
            by_env.setdefault(key(link.environment), []).append(upsert(index_entity(link)))
        for operations in by_env.values():
            await self.access.transact("bookingindex", operations)

    async def remove(self, environment: str, holders: Mapping[str, set[str]]) -> None:
        pk = key(environment)

        async def delete_one(operation: Operation) -> None:
            await self.access.delete("bookingindex", pk, operation[1]["RowKey"])

        await self.access.transact_apart("bookingindex", [("delete", {"PartitionKey": pk, "RowKey": f"{key(b)}|{key(m)}"})
                                                          for b, mailboxes in holders.items() for m in mailboxes], delete_one)

    async def remove_links(self, links: Iterable[Link]) -> None:
        by_env: dict[str, dict[str, set[str]]] = {}
        for link in links:
            by_env.setdefault(link.environment, {}).setdefault(link.booking_id, set()).add(link.mailbox)
        for environment, holders in by_env.items():
            await self.remove(environment, holders)
