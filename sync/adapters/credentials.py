"""Credentials: managed identity in Azure, DefaultAzureCredential for a developer, and a development
credential for the local emulator that refuses to issue a token for anything but a loopback host.

Mailboxes in another Microsoft Entra tenant are reached without a secret (workload identity federation,
"Configure an application to trust a managed identity"): a multi-tenant app registration carries a federated
identity credential whose subject is the managed identity, and the app's token for the other tenant is
requested with the managed identity's own token for `api://AzureADTokenExchange` as the client assertion.
"""
from __future__ import annotations

import base64
import ipaddress
import json
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

TOKEN_EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LoopbackDevCredential:
    """An async TokenCredential for the local tenant emulator only. It has no secret and signs nothing.

    For the home tenant it issues its token itself. For another tenant (`tenant_id`) it asks the emulator's
    stand-in for the Entra token endpoint, as the federated credential asks Entra ID, so that a tenant without
    consent refuses the token the way Entra does (ClientAuthenticationError naming the AADSTS code)."""

    def __init__(self, tenant_id: str | None = None, client_id: str | None = None):
        self.tenant_id, self.client_id = tenant_id, client_id
        self._cache: dict[str, AccessToken] = {}            # as azure-identity does: a token until shortly before it expires

    async def get_token(self, *scopes: str, **_: object) -> AccessToken:
        for scope in scopes:
            if not is_loopback_url(scope):
                raise ClientAuthenticationError(
                    f"LoopbackDevCredential issues tokens for loopback emulators only, not for {urlsplit(scope).hostname!r}; "
                    "set SYNC_CREDENTIAL=managed-identity (or default) for a real tenant")
        if self.tenant_id is None:
            return AccessToken(f"devtenant:{' '.join(scopes)}", int(time.time()) + 3600)
        cached = self._cache.get(scopes[0])
        if cached is None or cached.expires_on - time.time() < 300:
            cached = self._cache[scopes[0]] = await self._exchange(scopes[0])
        return cached

    async def _exchange(self, scope: str) -> AccessToken:
        import httpx
        parts = urlsplit(scope)
        form = {"grant_type": "client_credentials", "client_id": self.client_id or "", "scope": scope,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": f"devtenant:{TOKEN_EXCHANGE_SCOPE}"}
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await http.post(f"{parts.scheme}://{parts.netloc}/_entra/{self.tenant_id}/oauth2/v2.0/token",
                                   content=urlencode(form), headers={"Content-Type": "application/x-www-form-urlencoded"})
        body: dict[str, Any] = json.loads(resp.content or b"{}")
        if resp.status_code != 200:
            raise ClientAuthenticationError(f"{body.get('error')}: {body.get('error_description')}")
        return AccessToken(body["access_token"], int(time.time()) + int(body.get("expires_in", 3600)))

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


class FederatedTenantCredential:
    """The cross-tenant app's token for another tenant, with the managed identity's token as its client assertion.

    azure-identity's ClientAssertionCredential takes a synchronous assertion callback; the managed identity's token is
    fetched (from its cache, mostly) asynchronously first, and the callback hands it over. Both cache their tokens."""

    def __init__(self, home: Any, tenant_id: str, client_id: str, **kwargs: Any):
        from azure.identity.aio import ClientAssertionCredential
        self.home, self.tenant_id = home, tenant_id
        self._assertion = ""
        self._inner = ClientAssertionCredential(tenant_id, client_id, lambda: self._assertion, **kwargs)

    async def _refresh_assertion(self) -> None:
        self._assertion = (await self.home.get_token(TOKEN_EXCHANGE_SCOPE)).token

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        await self._refresh_assertion()
        return await self._inner.get_token(*scopes, **kwargs)

    async def get_token_info(self, *scopes: str, options: dict | None = None):
        await self._refresh_assertion()
        return await self._inner.get_token_info(*scopes, options=options)  # type: ignore[arg-type]

    async def close(self) -> None:
        await self._inner.close()       # the home credential belongs to its owner

    async def __aenter__(self) -> FederatedTenantCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def token_identity(token: str) -> tuple[str, str] | None:
    """(object id, display name) from an Entra access token's claims; None for a token that carries none (the local
    emulator's). Read, not verified: the token is the caller's own credential's, fresh from Entra ID."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, RecursionError):
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("oid"), str):
        return None
    name = next((claims[k] for k in ("upn", "preferred_username", "unique_name", "app_displayname", "appid")
                 if isinstance(claims.get(k), str)), claims["oid"])
    return claims["oid"], name


def tenant_credential(kind: str, home: Any, tenant_id: str, app_client_id: str):
    """The credential for mailboxes of another tenant: federated through the cross-tenant app, never a secret."""
    if kind == "loopback-dev":
        return LoopbackDevCredential(tenant_id=tenant_id, client_id=app_client_id)
    return FederatedTenantCredential(home, tenant_id, app_client_id)


def build_credential(kind: str, client_id: str | None = None):
    """The async credential for a setting value (SYNC_CREDENTIAL)."""
    if kind == "loopback-dev":
        return LoopbackDevCredential()
    if kind == "default":
        from azure.identity.aio import DefaultAzureCredential
        return DefaultAzureCredential(managed_identity_client_id=client_id) if client_id else DefaultAzureCredential()
    from azure.identity.aio import ManagedIdentityCredential
    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
