"""The signed-in principal App Service Authentication (Easy Auth) passes to the app in X-MS-CLIENT-PRINCIPAL.

The platform strips any such header a client sends when authentication is on (WEBSITE_AUTH_ENABLED), so the
header is trusted only then; without it, nobody is signed in and every administrative route is refused."""
from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping

from ..core.access import Principal

OBJECT_ID = "http://schemas.microsoft.com/identity/claims/objectidentifier"


class MalformedPrincipal(Exception):
    """The principal header is there but does not read as one: answered 401, never 500 and never a sign-in."""


def principal_from(headers: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> Principal | None:
    if str(environ.get("WEBSITE_AUTH_ENABLED", "")).lower() != "true":
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    raw = lowered.get("x-ms-client-principal")
    if not raw:
        return None
    try:
        body = json.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError, RecursionError):
        raise MalformedPrincipal("the sign-in header (X-MS-CLIENT-PRINCIPAL) is not base64-encoded JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("claims", []), list):
        raise MalformedPrincipal("the sign-in header (X-MS-CLIENT-PRINCIPAL) is not a client principal")
    role_type = body.get("role_typ") if isinstance(body.get("role_typ"), str) else "roles"
    claims = [c for c in body.get("claims") or [] if isinstance(c, dict) and isinstance(c.get("typ"), str)
              and isinstance(c.get("val"), str)]
    roles = frozenset(c["val"] for c in claims if c["typ"] in (role_type, "roles"))
    object_id = next((c["val"] for c in claims if c["typ"] in (OBJECT_ID, "oid")), lowered.get("x-ms-client-principal-id", ""))
    name = lowered.get("x-ms-client-principal-name") or next((c["val"] for c in claims if c["typ"] == "name"), "")
    return Principal(object_id or "unknown", name, roles)


def easy_auth_header(object_id: str, name: str, roles: list[str]) -> dict[str, str]:
    """The headers Easy Auth sends for a principal (tests and the local host build requests with them)."""
    body = {"auth_typ": "aad", "name_typ": "name", "role_typ": "roles",
            "claims": [{"typ": OBJECT_ID, "val": object_id}, {"typ": "name", "val": name}, *({"typ": "roles", "val": r} for r in roles)]}
    return {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(body).encode()).decode(), "X-MS-CLIENT-PRINCIPAL-ID": object_id,
            "X-MS-CLIENT-PRINCIPAL-NAME": name}
