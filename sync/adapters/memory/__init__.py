"""In-memory fakes of the ports, holding the same contracts as the real ones (the contract suites in tests/contract
run against both). Used by unit tests, the Hypothesis state machine and dry runs."""
from typing import TYPE_CHECKING

from .calendar import FakeCalendar, FakeMailbox
from .source import FakeBookingSource
from .store import MemoryState

__all__ = ["FakeBookingSource", "FakeCalendar", "FakeMailbox", "MemoryState"]

if TYPE_CHECKING:   # mypy holds the fakes to the ports they stand in for
    from ...ports import BookingSource, Calendar, State
    from ..tables import TableState
    _state: State = MemoryState()
    _real: State = TableState(None, "")  # type: ignore[arg-type]
    _calendar: Calendar = FakeCalendar()
    _source: BookingSource = FakeBookingSource("")
