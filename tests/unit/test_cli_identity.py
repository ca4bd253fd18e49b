"""The audit trail names who acted as Entra ID authenticated them: on the CLI, the identity of the credential's token."""
from __future__ import annotations

import base64
import json

from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from sync.adapters.credentials import token_identity
from sync.app.clients import Clients
from sync.app.settings import load


def _jwt(claims: dict) -> str:
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJSUzI1NiJ9.{part}.c2ln"


def test_a_users_token_names_its_object_id_and_upn():
    assert token_identity(_jwt({"oid": "11111111-2222-3333-4444-555555555555", "upn": "ana@contoso.com"})) == (
        "11111111-2222-3333-4444-555555555555", "ana@contoso.com")


def test_a_managed_identitys_token_names_its_object_id():
    assert token_identity(_jwt({"oid": "aaaaaaaa-2222-3333-4444-555555555555", "appid": "bbbb"})) == (
        "aaaaaaaa-2222-3333-4444-555555555555", "bbbb")


def test_tokens_without_an_object_id_name_nobody():
    for token in ("devtenant:https://storage.azure.com/.default", _jwt({"upn": "x@y.z"}), "a.!!!.c", _jwt(["oid"])):
        assert token_identity(token) is None


class _Credential:
    def __init__(self, token: str | None):
        self.token = token

    async def get_token(self, *scopes: str, **_: object) -> AccessToken:
        if self.token is None:
            raise ClientAuthenticationError("no credential")
        return AccessToken(self.token, 0)


async def test_the_cli_operator_is_the_credentials_identity_never_an_environment_variable(monkeypatch):
    monkeypatch.setenv("USER", "ceo@contoso.example")
    settings = load({"DATAVERSE_ENVIRONMENTS": "https://contoso.crm.dynamics.com", "SYNC_CREDENTIAL": "default",
                     "STATE_STORAGE_TABLE_ENDPOINT": "https://acct.table.core.windows.net"})
    clients = Clients(settings)
    clients._credential = _Credential(_jwt({"oid": "11111111-2222-3333-4444-555555555555", "upn": "ana@contoso.com"}))
    who = await clients.operator()
    assert (who.object_id, who.name) == ("cli:11111111-2222-3333-4444-555555555555", "ana@contoso.com")
    clients._credential = _Credential(None)
    assert (await clients.operator()).object_id == "unidentified"
