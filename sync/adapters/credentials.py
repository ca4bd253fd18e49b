"""Credentials: managed identity in Azure, DefaultAzureCredential for a developer, and a development
credential for the local emulator that refuses to issue a token for anything but a loopback host."""
from __future__ import annotations

import ipaddress
import time
from urllib.parse import urlsplit

from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LoopbackDevCredential:
    """An async TokenCredential for the local tenant emulator only. It has no secret and signs nothing."""

    async def get_token(self, *scopes: str, **_: object) -> AccessToken:
        for scope in scopes:
            if not is_loopback_url(scope):
                raise ClientAuthenticationError(
                    f"LoopbackDevCredential issues tokens for loopback emulators only, not for {urlsplit(scope).hostname!r}; "
                    "set SYNC_CREDENTIAL=managed-identity (or default) for a real tenant")
        return AccessToken(f"devtenant:{' '.join(scopes)}", int(time.time()) + 3600)

    async def get_token_info(self, *scopes: str, options: dict | None = None):
        from azure.core.credentials import AccessTokenInfo
        token = await self.get_token(*scopes)
        return AccessTokenInfo(token.token, token.expires_on)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> LoopbackDevCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


def build_credential(kind: str, client_id: str | None = None):
    """The async credential for a setting value (SYNC_CREDENTIAL)."""
    if kind == "loopback-dev":
        return LoopbackDevCredential()
    if kind == "default":
        from azure.identity.aio import DefaultAzureCredential
        return DefaultAzureCredential(managed_identity_client_id=client_id) if client_id else DefaultAzureCredential()
    from azure.identity.aio import ManagedIdentityCredential
    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
