"""The credential for mailboxes in another Microsoft Entra tenant: the cross-tenant app's token, requested with the
managed identity's own token for api://AzureADTokenExchange as the client assertion (workload identity federation,
"Configure an application to trust a managed identity"), never a secret.

Entra ID is the one seam no local server can stand in for (azure-identity talks to an https authority only), so
these tests give azure-identity's real ClientAssertionCredential a transport that records the token request and
answers as the Microsoft identity platform documents (client credentials flow: success and error shapes)."""
from __future__ import annotations

import json

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.core.pipeline.transport import AsyncHttpTransport

from sync.adapters.credentials import TOKEN_EXCHANGE_SCOPE, FederatedTenantCredential
from sync.adapters.graph import tenant_refusal
from sync.core.tenants import HOME, TENANT_CONSENT_MISSING, TENANT_CREDENTIAL_REFUSED

TENANT = "4b1d5e2a-7c3f-4a8e-9b6d-2f0e1c3a5b7d"
APP = "0f6c2d9e-1a4b-4c7d-8e3f-5a6b7c8d9e0f"


class EntraAnswer:
    def __init__(self, request, status: int, body: dict):
        self.request, self.status_code, self._body = request, status, json.dumps(body).encode()
        self.headers = {"Content-Type": "application/json"}
        self.reason = "OK" if status == 200 else "Bad Request"
        self.content_type = "application/json"

    def body(self) -> bytes:
        return self._body

    def text(self, encoding: str | None = None) -> str:
        return self._body.decode()

    async def load_body(self) -> None:
        return None


class RecordingEntra(AsyncHttpTransport):
    def __init__(self, status: int, body: dict):
        self.requests: list = []
        self.status, self.answer = status, body

    async def send(self, request, **kwargs):
        self.requests.append(request)
        return EntraAnswer(request, self.status, self.answer)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class ManagedIdentity:
    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("managed-identity-assertion", 4_102_444_800)


async def test_the_other_tenants_token_is_requested_with_the_managed_identitys_token_as_assertion():
    entra = RecordingEntra(200, {"token_type": "Bearer", "expires_in": 3599, "access_token": "token-for-the-other-tenant"})
    identity = ManagedIdentity()
    credential = FederatedTenantCredential(identity, TENANT, APP, transport=entra)
    token = await credential.get_token("https://graph.microsoft.com/.default")
    assert token.token == "token-for-the-other-tenant"
    assert identity.scopes == [(TOKEN_EXCHANGE_SCOPE,)]
    request = entra.requests[0]
    assert request.url == f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
    assert request.body == {"client_assertion": "managed-identity-assertion",
                            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                            "client_id": APP, "grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default"}
    assert not any("secret" in key for key in request.body)
    await credential.close()


@pytest.mark.parametrize("code,description,reason", [
    (7000229, "The client application x is missing service principal in the tenant y.", TENANT_CONSENT_MISSING),
    (65001, "The user or administrator has not consented to use the application.", TENANT_CONSENT_MISSING),
    (70021, "No matching federated identity record found for presented assertion.", TENANT_CREDENTIAL_REFUSED),
])
async def test_a_tenant_that_refuses_the_app_is_a_reason_a_person_can_act_on(code, description, reason):
    entra = RecordingEntra(400, {"error": "invalid_client", "error_description": f"AADSTS{code}: {description}", "error_codes": [code]})
    credential = FederatedTenantCredential(ManagedIdentity(), TENANT, APP, transport=entra)
    with pytest.raises(ClientAuthenticationError) as refused:
        await credential.get_token("https://graph.microsoft.com/.default")
    found = tenant_refusal(TENANT, refused.value)
    assert found is not None and found[0] == reason and found[1].startswith(reason) and TENANT in found[1]
    assert tenant_refusal(HOME, refused.value) is None          # the home tenant's failures are the deployment's own
    await credential.close()
