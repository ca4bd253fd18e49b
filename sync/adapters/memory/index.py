"""BookingIndex's fake: environment -> booking -> the mailboxes holding a link for it."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from ...core.domain import Link


class MemoryBookingIndex:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, set[str]]] = {}

    async def holders(self, environment: str, booking_ids: Iterable[str]) -> dict[str, set[str]]:
        known = self.rows.get(environment.lower(), {})
        return {b: set(known[b]) for b in {b.lower() for b in booking_ids} if known.get(b)}

    async def all_holders(self, environment: str) -> dict[str, set[str]]:
        return {b: set(m) for b, m in self.rows.get(environment.lower(), {}).items() if m}

    async def add(self, links: Iterable[Link]) -> None:
        for link in links:
            self.rows.setdefault(link.environment.lower(), {}).setdefault(link.booking_id.lower(), set()).add(link.mailbox.lower())

    async def remove(self, environment: str, holders: Mapping[str, set[str]]) -> None:
        known = self.rows.get(environment.lower(), {})
        for booking_id, mailboxes in holders.items():
            known.get(booking_id.lower(), set()).difference_update(m.lower() for m in mailboxes)

    def remove_link(self, link: Link) -> None:
        self.rows.get(link.environment.lower(), {}).get(link.booking_id.lower(), set()).discard(link.mailbox.lower())
