"""Pseudonyms for mailboxes: an HMAC of the address under a per-deployment key, so telemetry, Durable
instance ids and histories can follow one mailbox without revealing who it is."""
from __future__ import annotations

import hashlib
import hmac


def mailbox_ref(key: str, address: str) -> str:
    return "mbx-" + hmac.new(key.encode(), address.lower().encode(), hashlib.sha256).hexdigest()[:12]
