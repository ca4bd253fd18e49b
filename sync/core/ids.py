"""Identifier shapes accepted from outside (E3): GUIDs (Dataverse ids), mailbox addresses and environment URLs.

Every check is a full match of the whole value (a `$` alone would let a trailing newline through, and a stored
"<guid>\\n" is a key no link has), and every value is normalised once, here, at the edge.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from urllib.parse import urlsplit

GUID = re.compile(r"\A[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")

# RFC 5322 3.2.3 dot-atom for the local part (atext, so apostrophes, plus signs and the rest), with the UTF-8
# letters RFC 6531 adds; a host name of LDH labels with an alphabetic top-level label for the domain.
_ATEXT = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL = re.compile(rf"\A{_ATEXT}+(?:\.{_ATEXT}+)*@(?:{_LABEL}\.)+[A-Za-z]{{2,63}}\Z")
MAX_LOCAL, MAX_ADDRESS = 64, 254

# Unicode categories no address holds: controls, format characters (the bidirectional overrides such as U+202E and
# zero-width joiners, which make one address read as another in a listing), surrogates, private use, unassigned,
# and every separator.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
_REFUSED_IN_TEXT = _REFUSED_CATEGORIES - {"Zs"}                     # a name may hold spaces


def is_guid(value: object) -> bool:
    return isinstance(value, str) and GUID.fullmatch(value) is not None


def checked_guid(value: object) -> str:
    if not isinstance(value, str) or not is_guid(value):
        raise ValueError(f"not a GUID: {value!r}")
    return value.lower()


def is_address(value: object) -> bool:
    """A mailbox address as Exchange holds one: a dot-atom local part (RFC 5322), a host name, nothing invisible."""
    if not isinstance(value, str) or len(value) > MAX_ADDRESS or EMAIL.fullmatch(value) is None:
        return False
    if len(value.partition("@")[0]) > MAX_LOCAL:
        return False
    return value.isascii() or not any(unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in value)


def checked_address(value: object) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise ValueError("not a mailbox address")
    return value.lower()


def is_plain_text(value: object, max_length: int) -> bool:
    """A name a person gives (a filter, a territory): 1 to `max_length` characters, none of them a control, format
    or line separator, so what a listing shows is what is stored."""
    return (isinstance(value, str) and 0 < len(value) <= max_length and value == value.strip()
            and not any(unicodedata.category(ch) in _REFUSED_IN_TEXT for ch in value))


def environment_named(environments: Iterable[str], given: object) -> str | None:
    """The configured environment URL that `given` names, as configured (case and a trailing slash aside), or None.

    Callers key clients and caches by what this returns, never by the spelling they were given, so no outside
    value can add an entry."""
    if not isinstance(given, str):
        return None
    wanted = given.strip().rstrip("/").lower()
    return next((e for e in environments if e.rstrip("/").lower() == wanted), None)


def environment_of_domain(environments: Iterable[str], domain: object) -> str | None:
    """The configured environment whose domain name is `domain`, as configured, or None.

    Dataverse names "the domain name of the environment sending the request" in a webhook's
    `x-ms-dynamics-organization` header (Learn, "Use webhooks to create external handlers for server events"):
    `contoso.crm.dynamics.com` for `https://contoso.crm.dynamics.com`. An environment URL with a path (the local
    emulator's orgs share one host) is named by its host and path."""
    if not isinstance(domain, str) or not is_plain_text(domain, 300):
        return None
    wanted = _without_api_label(domain.strip().rstrip("/").lower())
    for environment in environments:
        parts = urlsplit(environment.strip())
        if _without_api_label((parts.netloc + parts.path).rstrip("/").lower()) == wanted:
            return environment
    return None


def _without_api_label(domain: str) -> str:
    """An environment's Web API answers at `org.crm.dynamics.com` and at `org.api.crm.dynamics.com` alike; either
    spelling in DATAVERSE_ENVIRONMENTS names the environment whose domain Dataverse sends."""
    return domain.replace(".api.crm", ".crm", 1)
