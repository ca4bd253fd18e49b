"""ETags for the fakes: every write of a row gives it a new one, as Table Storage does."""
from __future__ import annotations

import itertools


class ETags:
    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self.writes = 0                 # rows written through the fakes (tests weigh a sync's writes with it)

    def next(self) -> str:
        self.writes += 1
        return f'W/"{next(self._counter)}"'
