"""Identifier shapes accepted from outside: GUIDs (Dataverse ids) and mailbox addresses (E3)."""
from __future__ import annotations

import re

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
EMAIL = re.compile(r"^[^@\s<>\"'(),;:\\\[\]]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")


def checked_guid(value: str) -> str:
    if not isinstance(value, str) or not GUID.match(value):
        raise ValueError(f"not a GUID: {value!r}")
    return value.lower()
