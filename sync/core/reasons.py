"""Reason codes: why the planner chose an action, and why diagnose (G1) says a booking is not in Outlook.

One vocabulary for both, so a diagnosis and the sync can be compared code for code.
"""
from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    # scope: the booking (S1, S2, S4, S5) and the mailbox (M1, M4, M5)
    NO_WORK_ORDER = "not_tied_to_work_order"
    NOT_USER_RESOURCE = "resource_not_user"
    NO_MAILBOX_ADDRESS = "user_has_no_mailbox_address"
    OTHER_MAILBOX = "booked_for_another_mailbox"
    MAILBOX_NOT_REGISTERED = "mailbox_not_registered"
    SYNC_METHOD_NONE = "sync_method_none"
    MAILBOX_NOT_APPROVED = "mailbox_not_approved"
    MAILBOX_NOT_TESTED = "mailbox_not_tested"
    MAILBOX_TEST_FAILED = "mailbox_test_failed"
    MAILBOX_SYNC_OFF = "mailbox_sync_off"
    BOUND_TO_ANOTHER_ENVIRONMENT = "bound_to_another_environment"
    OUTSIDE_WINDOW = "outside_window"
    INACTIVE = "inactive"
    EXCLUDED_BY_FILTER = "excluded_by_filter"
    CANCELED_NOT_PROPAGATED = "canceled_not_propagated"
    # changes
    NEW = "new_in_scope"
    TIME_OR_LOCATION_CHANGED = "time_or_location_changed"
    WORK_ORDER_FIELDS_CHANGED = "work_order_fields_changed"
    CANCELED = "canceled"
    CANCELED_IN_PAST = "canceled_event_in_past"
    DELETED = "booking_deleted"
    DELETED_PAST = "booking_deleted_event_in_past"
    LOGICAL_DELETE = "logical_delete"
    REASSIGNED_FUTURE = "reassigned_future_event"
    CREATE_IN_FLIGHT = "create_in_flight"
    RELINKED = "back_in_scope"
    UNCHANGED = "unchanged"
